"""Metrics (no GNU Radio import)."""
from .symbols import nmse_db, measured_snr_db  # noqa: F401
