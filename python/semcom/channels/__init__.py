"""Channel models in numpy (no GNU Radio import)."""
