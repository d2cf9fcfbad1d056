"""IQ recording/replay helpers (SigMF) without GNU Radio."""
