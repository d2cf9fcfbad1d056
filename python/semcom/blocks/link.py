"""Test-traffic blocks for link experiments: a random feature-frame source and a monitor."""
from __future__ import annotations

import threading
import time

import numpy as np
import pmt
from gnuradio import gr

from ..metrics import nmse_db
from ..summary import Tally, frame_line, frame_summary
from ._guard import MessageGuard, c32_array, message_handler, meta_dict, meta_int, meta_number
from ._history import DEFAULT_HISTORY, history_buffer
from .pmtvec import c32_to_pmt

__all__ = ["feature_source", "link_monitor", "threaded_source"]


def random_features(seed: int, seq: int, length: int) -> np.ndarray:
    """Unit-power complex Gaussian feature symbols, reproducible from (seed, seq)."""
    r = np.random.default_rng([int(seed), int(seq)])
    return ((r.standard_normal(length) + 1j * r.standard_normal(length)) / np.sqrt(2)).astype(np.complex64)


class threaded_source(MessageGuard, gr.basic_block):
    """Base of message sources that publish on ``out`` from a worker thread (``_run``)
    between the flowgraph's start() and stop(); ``_stop`` is set when it must end.

    When ``_run`` returns on its own (everything sent), the source waits ``linger_s`` seconds
    and then ends: it posts "done" to its own system port, GNU Radio passes it on to every
    block downstream (message and stream) once they have handled what is queued, and a
    finite flowgraph ends by itself (``tb.wait()`` returns, GRC's Run to Completion).
    ``linger_s`` < 0: the source never ends the flowgraph (it runs until stopped).
    ``ended``: the source has posted "done".
    """

    def __init__(self, name, linger_s=0.0):
        gr.basic_block.__init__(self, name, None, None)
        self._stop = threading.Event()
        self._thread = None
        self.linger_s = float(linger_s)
        self.ended = False
        self.message_port_register_out(pmt.intern("out"))

    def _run(self):
        raise NotImplementedError

    def _wake(self):
        """Called by stop() after ``_stop`` is set: release anything ``_run`` waits on."""

    def _body(self):
        self._run()
        if self._stop.is_set() or self.linger_s < 0 or (self.linger_s and self._stop.wait(self.linger_s)):
            return
        self.ended = True
        self._post(pmt.intern("system"), pmt.cons(pmt.intern("done"), pmt.from_long(1)))

    def start(self):
        self._stop.clear()
        self.ended = False
        self._thread = threading.Thread(target=self._body, daemon=True)
        self._thread.start()
        return True

    def stop(self):
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=2)
        return True


class paced_source(threaded_source):
    """Base of sources that emit ``total`` PDUs (``_pdu(k)``, k = 0 … total − 1) one at a time.

    ``pace`` "ack": at most ``window`` PDUs in flight; the next goes when any message arrives
    on ``next`` (connect the sink's ``ack``; window 1 = stop-and-wait) or after ``timeout_s``
    without one (a lost frame: counted in ``timeouts``, logged unless ``warn_timeouts`` is
    False). "interval": one every ``interval_s`` seconds (0 = as fast as possible). After the
    last PDU (acknowledged or timed out with "ack") the flowgraph ends ``linger_s`` later
    (``threaded_source``).
    """

    warn_timeouts = True

    def __init__(self, name, pace="ack", interval_s=0.0, timeout_s=10.0, window=1, linger_s=0.0):
        threaded_source.__init__(self, name, linger_s)
        if pace not in ("ack", "interval"):
            raise ValueError(f"pace must be 'ack' or 'interval', got {pace!r}")
        if float(interval_s) < 0 or float(timeout_s) <= 0 or int(window) < 1:
            raise ValueError("interval_s >= 0, timeout_s > 0 and window >= 1 required")
        self.pace, self.interval_s, self.timeout_s, self.window = pace, float(interval_s), float(timeout_s), int(window)
        self.sent = self.timeouts = 0
        self._slots = threading.Semaphore(self.window)
        self.message_port_register_in(pmt.intern("next"))
        self.set_msg_handler(pmt.intern("next"), self._on_next)

    @property
    def total(self) -> int:
        raise NotImplementedError

    def _pdu(self, k):
        raise NotImplementedError

    @message_handler("next")
    def _on_next(self, _msg):
        self._slots.release()

    def _wake(self):
        self._slots.release()

    def _run(self):
        for k in range(self.total):
            if self.pace == "ack":
                self._acked(f"going on with PDU {k}")
            if self._stop.is_set():
                return
            self.message_port_pub(pmt.intern("out"), self._pdu(k))
            self.sent += 1
            if self.pace == "interval" and self.interval_s:
                self._stop.wait(self.interval_s)
        if self.pace == "ack":  # wait for the last PDUs' acks (or their timeouts)
            for _ in range(min(self.window, self.total)):
                if self._stop.is_set() or not self._acked("the last PDUs sent"):
                    return

    def _acked(self, then) -> bool:
        """Wait for an ack (a free slot); False after ``timeout_s`` without one (counted)."""
        if self._slots.acquire(timeout=self.timeout_s):
            return True
        self.timeouts += 1
        if self.warn_timeouts:
            gr.log.warn(f"{self.name().replace('_', ' ', 1)}: no ack within {self.timeout_s} s, {then}")
        return False

    def done(self) -> bool:
        """All PDUs have been sent."""
        return self.sent >= self.total

    def finished(self) -> bool:
        """All PDUs sent and the last ones acknowledged or timed out."""
        return self.done() and self._thread is not None and not self._thread.is_alive()


class feature_source(threaded_source):
    """Emits ``n_frames`` PDUs of random unit-power feature symbols, then ends the flowgraph
    ``linger_s`` seconds after the last one (``threaded_source``; < 0: keeps running).

    Message output ``out``: PDU with metadata ``seq`` and ``codec_id`` and a c32vector of
    ``payload_len`` symbols, one every ``interval_s`` seconds (0 = as fast as possible,
    all at once).
    The symbols are reproducible from (seed, seq): the monitor regenerates them.
    """

    def __init__(self, n_frames=100, payload_len=1024, seed=0, interval_s=0.0, codec_id=0, linger_s=0.0):
        threaded_source.__init__(self, "semcom_feature_source", linger_s)
        if int(n_frames) < 0 or int(payload_len) < 1 or float(interval_s) < 0:
            raise ValueError("n_frames >= 0, payload_len >= 1, interval_s >= 0 required")
        self.n_frames, self.payload_len = int(n_frames), int(payload_len)
        self.seed, self.interval_s, self.codec_id = int(seed), float(interval_s), int(codec_id)
        self.sent = 0

    def _run(self):
        for seq in range(self.n_frames):
            if self._stop.is_set():
                return
            x = random_features(self.seed, seq, self.payload_len)
            meta = pmt.dict_add(pmt.make_dict(), pmt.intern("seq"), pmt.from_long(seq & 0xFFFF))
            meta = pmt.dict_add(meta, pmt.intern("codec_id"), pmt.from_long(self.codec_id))
            self.message_port_pub(pmt.intern("out"), pmt.cons(meta, c32_to_pmt(x)))
            self.sent += 1
            if self.interval_s:
                self._stop.wait(self.interval_s)

    def done(self) -> bool:
        return self.sent >= self.n_frames


class link_monitor(MessageGuard, gr.basic_block):
    """Per-frame link report: symbol NMSE, estimated vs true SNR, header failures.

    Message input ``in``: PDUs from ``ofdm_rx``. Regenerates the sent symbols of a
    ``feature_source`` with the same seed and prints one line per frame (``verbose``).
    ``true_snr_db`` is only printed beside the estimate, never given to the receiver.
    When the flowgraph ends (``stop()``) it prints a summary line (``verbose``): frames
    received of ``expected`` (0: judged from the highest seq seen), lost, mean NMSE and
    estimated SNR, header failures. Malformed PDUs (not a PDU, not a non-empty finite
    c32vector, wrong-typed ``seq``/``codec_id``/``payload_len``/``header_failures``/
    ``snr_est_db``/``cfo``) are logged, counted (``dropped()``) and skipped.
    ``rows``: one dict per frame, the newest ``history`` of them (a ring buffer, default 10000;
    0 keeps none); ``count()`` and the summary cover every frame.
    """

    def __init__(self, seed=0, true_snr_db=float("nan"), verbose=True, rx=None, expected=0, history=DEFAULT_HISTORY):
        gr.basic_block.__init__(self, "semcom_link_monitor", None, None)
        self.seed, self.true_snr_db, self.verbose, self.rx = int(seed), float(true_snr_db), bool(verbose), rx
        self.expected = int(expected)
        self.rows = history_buffer(history)
        self.tally = Tally()  # every frame, in constant memory (count and summary)
        self._header_failures = 0
        self._lock = threading.Lock()
        self.message_port_register_in(pmt.intern("in"))
        self.set_msg_handler(pmt.intern("in"), self._handle)

    @message_handler("in")
    def _handle(self, msg):
        meta = meta_dict(msg)
        y = c32_array(pmt.cdr(msg), what="PDU vector of received symbols")
        seq = meta_int(meta, "seq", -1, -1, 0xFFFF)
        nmse = nmse_db(y, random_features(self.seed, seq, len(y))) if seq >= 0 else np.nan
        row = dict(seq=seq, codec_id=meta_int(meta, "codec_id", -1), hdr_payload_len=meta_int(meta, "payload_len", -1),
                   payload_len=len(y), nmse_db=nmse, snr_est_db=meta_number(meta, "snr_est_db", np.nan, finite=False),
                   true_snr_db=self.true_snr_db, cfo=meta_number(meta, "cfo", np.nan, finite=False),
                   header_failures=meta_int(meta, "header_failures", 0), t=time.time())
        with self._lock:
            self.rows.append(row)
            self.tally.add(row)
            self._header_failures = row["header_failures"]
        if self.verbose:
            print(frame_line(row), flush=True)

    def set_true_snr_db(self, snr_db):
        """The channel SNR printed beside the estimate (e.g. from a GUI slider); display only."""
        self.true_snr_db = float(snr_db)

    def count(self) -> int:
        """Frames received since the block was made (also those no longer in ``rows``)."""
        with self._lock:
            return self.tally.rows

    def summary(self) -> str:
        """The run's one-line summary over every frame received (not only the rows kept)."""
        with self._lock:
            return frame_summary(self.tally, self.expected, self._header_failures)

    def stop(self):
        if self.verbose:
            print(self.summary(), flush=True)
        return True
