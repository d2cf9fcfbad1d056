"""Bounded in-memory records of the gr-semcom blocks.

Blocks that keep one record per image or frame for reports (``image_sink.rows``,
``semantic_encoder.log``, ``semantic_guidance.log``, ``link_monitor.rows``) keep them in a
ring buffer of ``history`` entries (``collections.deque(maxlen=history)``): the newest
``history`` records, the oldest dropped first, so that a link running for hours holds a
fixed amount of memory. Their counters and summaries cover every record, not only the
ones kept; the image sink's CSV file gets every row.
"""
from __future__ import annotations

from collections import deque

__all__ = ["DEFAULT_HISTORY", "history_buffer"]

#: records a block keeps in memory unless told otherwise
DEFAULT_HISTORY = 10000


def history_buffer(history) -> deque:
    """An empty ring buffer of ``history`` records (an integer >= 0; 0 keeps none)."""
    try:
        n = int(history)
    except (TypeError, ValueError):
        raise ValueError(f"history must be an integer >= 0, got {history!r}") from None
    if n < 0 or n != float(history):
        raise ValueError(f"history must be an integer >= 0, got {history!r}")
    return deque(maxlen=n)
