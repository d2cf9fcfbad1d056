"""Message handlers that never die: one decorator catches, logs and counts a bad message.

GNU Radio runs each block's message handlers in the block's thread; an exception escaping a
handler ends that thread (``thread_body_wrapper :error:`` in the log) and the block ignores
every later message while the flowgraph keeps running. Every message handler of gr-semcom is
therefore wrapped by ``message_handler(port)``:

    class my_block(MessageGuard, gr.basic_block):
        @message_handler("in")
        def _handle(self, msg):
            meta, vec = pdu_parts(msg)           # raise ValueError/TypeError on what is unusable
            ...

An exception in the handler rejects the message: it is counted (``dropped()``, one counter per
block for all its ports) and logged with GNU Radio's logger, one line per message with the
block, the port and the reason (``semcom <block>: dropped malformed message on '<port>': …``);
a flood of the same reason is rate-limited in the log (the first ``LOG_FIRST`` lines, then every
``LOG_EVERY``-th with its running count) but always counted. The per-reason counts of the rate
limit are kept for the ``MAX_REASONS`` most recent distinct reasons of a block (reasons that quote
a varying value are all distinct), so a long flood of bad messages holds bounded memory. The handler then returns and the
block goes on with the next message. Work done outside a handler (a worker thread, a timer)
calls ``reject(block, port, reason)`` for the same counting and logging.

The validators below (``pdu_parts``, ``meta_dict``, ``meta_number``, ``meta_int``,
``meta_bytes``, ``c32_array``) raise ``ValueError`` with a readable reason, so that handlers
check what they read instead of letting ``int('x')`` fail somewhere later.
"""
from __future__ import annotations

import functools
import numbers
import threading

import numpy as np
import pmt
from gnuradio import gr

__all__ = ["MessageGuard", "message_handler", "reject", "pdu_parts", "meta_dict", "meta_number", "meta_int",
           "meta_bytes", "c32_array", "LOG_FIRST", "LOG_EVERY", "MAX_REASONS"]

LOG_FIRST = 10  # log lines per (block, port, reason) before the rate limit …
LOG_EVERY = 100  # … then one line every LOG_EVERY rejections of that reason
MAX_REASONS = 1000  # distinct (port, reason) counts kept per block for the rate limit (oldest dropped)

_lock = threading.Lock()


class MessageGuard:
    """Mixin of the gr-semcom message blocks: ``dropped()``, the messages they rejected."""

    #: name in the log lines ("semcom <_log_name>: …"); the class name when None
    _log_name = None

    def dropped(self) -> int:
        """Messages rejected (malformed or unusable, on any input port) since the block was made."""
        return self.__dict__.get("_guard_dropped", 0)


def reject(block, port: str, reason) -> None:
    """Count one rejected message of ``block`` and log it (rate-limited per port and reason)."""
    text = f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
    with _lock:
        d = block.__dict__
        d["_guard_dropped"] = d.get("_guard_dropped", 0) + 1
        seen = d.setdefault("_guard_seen", {})
        key = (port, text[:200])
        n = seen[key] = seen.pop(key, 0) + 1  # re-inserted: the dict runs from least to most recent
        if len(seen) > MAX_REASONS:  # forget the least recent reason (it logs its first lines again if it recurs)
            del seen[next(iter(seen))]
    if n <= LOG_FIRST or n % LOG_EVERY == 0:
        name = getattr(block, "_log_name", None) or type(block).__name__
        more = f" ({n} times so far; logging every {LOG_EVERY}th)" if n > LOG_FIRST else ""
        gr.log.error(f"semcom {name}: dropped malformed message on '{port}': {text}{more}")


def message_handler(port: str):
    """Decorator of a message-handler method for ``port``: an exception rejects the message
    (``reject``) instead of ending the block's message thread."""

    def wrap(fn):
        @functools.wraps(fn)
        def handler(self, msg):
            try:
                return fn(self, msg)
            except Exception as e:  # a bad message must never take the block down
                reject(self, port, e)
                return None

        handler.semcom_port = port
        return handler

    return wrap


# ---------------------------------------------------------------------------------------
# validators: raise ValueError with the reason
def pdu_parts(msg):
    """PDU → (metadata dict PMT, vector PMT); anything else raises ValueError."""
    if not pmt.is_pair(msg):
        raise ValueError("not a PDU (pair of metadata dict and vector)")
    meta = pmt.car(msg)
    if not pmt.is_dict(meta):
        raise ValueError("PDU metadata is not a dict")
    return meta, pmt.cdr(msg)


def meta_dict(msg) -> dict:
    """The metadata of a PDU as a python dict (ValueError when ``msg`` is not a PDU)."""
    meta, _ = pdu_parts(msg)
    d = pmt.to_python(meta)
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ValueError("PDU metadata is not a dict")
    return d


def meta_number(meta: dict, key: str, default=None, finite: bool = True, required: bool = False):
    """``meta[key]`` as a float (``default`` when absent; ValueError when absent and
    ``required``); ValueError unless a real number (finite unless ``finite`` is False)."""
    v = meta.get(key)
    if v is None:
        if required:
            raise ValueError(f"metadata has no {key!r}")
        return default
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.number)) or isinstance(
            v, np.complexfloating):
        raise ValueError(f"metadata {key!r} must be a number, got {v!r}")
    v = float(v)
    if finite and not np.isfinite(v):
        raise ValueError(f"metadata {key!r} must be finite, got {v!r}")
    return v


def meta_int(meta: dict, key: str, default=None, lo: int | None = None, hi: int | None = None):
    """``meta[key]`` as an int (``default`` when absent); ValueError unless an integer
    (an integral float passes) within [lo, hi]."""
    v = meta.get(key)
    if v is None:
        return default
    if isinstance(v, (bool, np.bool_)):
        raise ValueError(f"metadata {key!r} must be an integer, got {v!r}")
    if isinstance(v, (numbers.Integral, np.integer)):
        v = int(v)
    elif isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer():
        v = int(v)
    else:
        raise ValueError(f"metadata {key!r} must be an integer, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"metadata {key!r} = {v} outside {lo}…{hi}")
    return v


def meta_bytes(meta: dict, key: str) -> bytes:
    """``meta[key]`` (u8vector, bytes) as bytes, b"" when absent; ValueError otherwise."""
    v = meta.get(key)
    if v is None:
        return b""
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, np.ndarray) and v.dtype == np.uint8:
        return v.tobytes()
    if isinstance(v, (list, tuple)) and all(isinstance(b, (numbers.Integral, np.integer)) and not isinstance(b, bool)
                                            and 0 <= b <= 255 for b in v):
        return bytes(int(b) for b in v)
    raise ValueError(f"metadata {key!r} must be a u8vector, got {type(v).__name__}")


def c32_array(vec, nonempty: bool = True, finite: bool = True, what: str = "PDU vector") -> np.ndarray:
    """c32vector PMT → complex64 array; ValueError when of another type, empty or NaN/Inf."""
    from .pmtvec import pmt_to_c32

    if not pmt.is_c32vector(vec):
        raise ValueError(f"{what} must be a c32vector")
    x = pmt_to_c32(vec)
    if nonempty and not x.size:
        raise ValueError(f"{what} is empty")
    if finite and not np.all(np.isfinite(x)):
        raise ValueError(f"{what} holds NaN/Inf")
    return x
