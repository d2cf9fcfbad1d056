"""IQ recording/replay helpers (SigMF) without GNU Radio.

``write_sigmf`` / ``read_sigmf`` store and load complex baseband recordings as SigMF file
pairs (``<base>.sigmf-meta`` + ``<base>.sigmf-data``), one annotation per semcom frame.
The GNU Radio blocks ``semcom.sigmf_sink`` / ``semcom.sigmf_source`` use the same format.
"""
from .sigmf_io import *  # noqa: F401,F403
from .sigmf_io import __all__ as _sigmf_all, sha512_hasher  # noqa: F401

__all__ = list(_sigmf_all)
