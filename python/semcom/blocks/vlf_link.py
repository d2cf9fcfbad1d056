"""The VLF-MSC link as one GNU Radio flowgraph, and a frame link for the baselines.

``vlf_link_flowgraph``: image_source → vlf_encoder → ofdm_tx → channel → ofdm_rx →
vlf_caption_decoder + vlf_image_decoder (the same received frame feeds both) → vlf_sink,
whose ``ack`` paces the source (stop-and-wait). ``apps/vlf_link.grc`` is the GRC form.

``run_frames``: any list of symbol frames (the text and image baselines' transmitters are
numpy cores) through the same ofdm_tx → channel → ofdm_rx, one at a time; returns what the
receiver handed over per frame (symbols + metadata, or nothing when the frame was lost), so
every system of the evaluation crosses the same PHY and channel.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pmt
from gnuradio import gr

from ._guard import MessageGuard, c32_array, message_handler, meta_int
from ._guard import meta_dict as _meta_dict
from ._history import DEFAULT_HISTORY, history_buffer
from .image import image_source
from .image_link import make_channel
from .link import paced_source
from .ofdm import make_params, ofdm_rx, ofdm_tx
from .pmtvec import c32_to_pmt, pmt_to_u8, u8_to_pmt
from .vlf import vlf_caption_decoder, vlf_codec, vlf_encoder, vlf_image_decoder

__all__ = ["VlfLinkConfig", "vlf_sink", "vlf_link_flowgraph", "run_vlf_link", "run_frames"]


@dataclass
class VlfLinkConfig:
    """One run of the VLF-MSC link (channel fields as ``image_link.LinkConfig``)."""

    images: str = "scenes:test:4"  # image_source path ("scenes:SPLIT[:N]", a folder, files)
    size: int = 256
    limit: int = 0
    snr_db: float = 5.0
    channel: str = "awgn"
    profile: str = "wide256"
    backend: str = "embedded"      # or "reference:PATH"
    steps: int = 0                 # DDIM steps (0: the model's default)
    draw_images: bool = True       # run the image decoder (False: captions only)
    min_snr_db: float = -10.0
    equalizer: str = "zf"
    seed: int = 0
    k: float = 4.0
    fdts: float = 1e-5
    sample_rate: float = 15.36e6
    delay_spread: float = 100e-9
    frame_timeout_s: float = 600.0  # the source goes on after this long without an ack (decoders stuck)
    lost_after_s: float = 3.0       # a frame the receiver did not hand over this long after it was sent is lost
    history: int = DEFAULT_HISTORY


class frame_collector(MessageGuard, gr.basic_block):
    """Base of the sinks that gather the outputs decoded from one frame in several branches
    (tasks) and acknowledge the frame once every branch in ``branches`` has answered.

    Input ports ``tx`` and ``rx`` (connect the encoder's and the receiver's ``out``) declare a
    frame lost when the receiver did not hand it over within ``lost_after_s`` seconds of its
    sending (missed preamble, header CRC failure): it gets a row with every branch's status
    "lost" and is acknowledged at once, so a stop-and-wait source goes on. Output ``ack``.
    ``rows``: the newest ``history`` frames (``seq``, ``snr_est_db``, per branch its value
    fields, ``<branch>_status`` and ``<branch>_latency_s``, ``t``: seconds since the first
    answer); ``count()`` counts every frame, ``lost`` the frames declared lost, ``heard`` the
    frames the receiver handed over. Subclasses register their branch ports and call
    ``_part(meta, branch, **values)``; ``_lost_values()`` gives the value fields of a lost row.
    """

    def __init__(self, name, branches, allowed, lost_after_s=5.0, history=DEFAULT_HISTORY):
        gr.basic_block.__init__(self, name, None, None)
        if not float(lost_after_s) > 0:
            raise ValueError(f"lost_after_s must be > 0 [s], got {lost_after_s!r}")
        self.lost_after_s = float(lost_after_s)
        self.lost = self.heard = 0
        self._timers = {}
        if isinstance(branches, str):
            branches = [b.strip() for b in branches.split(",") if b.strip()]
        self.branches = tuple(branches)
        if not self.branches or any(b not in allowed for b in self.branches):
            raise ValueError(f"branches must be a non-empty subset of {tuple(allowed)}, got {branches!r}")
        self.rows = history_buffer(history)
        self._count = 0
        self._open = {}
        self._t0 = None
        self._lock = threading.Lock()
        for b in ("tx", "rx"):
            self.message_port_register_in(pmt.intern(b))
        self.message_port_register_out(pmt.intern("ack"))
        self.set_msg_handler(pmt.intern("tx"), self._on_tx)
        self.set_msg_handler(pmt.intern("rx"), self._on_rx)

    def stop(self):
        with self._lock:
            timers, self._timers = list(self._timers.values()), {}
        for t in timers:
            t.cancel()
        return True

    @message_handler("tx")
    def _on_tx(self, msg):
        seq = meta_int(_meta_dict(msg), "seq", -1, -1, 0xFFFF)
        if seq < 0:
            raise ValueError("transmitted PDU without a seq")
        timer = threading.Timer(self.lost_after_s, self._declare_lost, (seq,))
        timer.daemon = True
        with self._lock:
            old = self._timers.pop(seq, None)
            self._timers[seq] = timer
        if old is not None:
            old.cancel()
        timer.start()

    @message_handler("rx")
    def _on_rx(self, msg):
        seq = meta_int(_meta_dict(msg), "seq", -1, -1, 0xFFFF)
        with self._lock:
            self.heard += 1
            timer = self._timers.pop(seq, None)
        if timer is not None:
            timer.cancel()

    def _lost_values(self) -> dict:
        return {}

    def _declare_lost(self, seq):
        with self._lock:
            if self._timers.pop(seq, None) is None or seq in self._open:
                return
            if self._t0 is None:
                self._t0 = time.monotonic()
            row = {"seq": seq, "snr_est_db": np.nan, **self._lost_values(), "t": time.monotonic() - self._t0}
            for b in self.branches:
                row[f"{b}_status"] = "lost"
                row[f"{b}_latency_s"] = np.nan
            self.rows.append(row)
            self._count += 1
            self.lost += 1
        self.message_port_pub(pmt.intern("ack"), pmt.PMT_T)

    def count(self) -> int:
        """Frames completed (every branch answered, or lost)."""
        return self._count

    def _part(self, meta, branch, **value):
        if branch not in self.branches:
            return
        seq = meta_int(meta, "seq", -1, -1, 0xFFFF)
        now = time.monotonic()
        with self._lock:
            if self._t0 is None:
                self._t0 = now
            row = self._open.setdefault(seq, {"seq": seq, "snr_est_db": meta.get("snr_est_db", np.nan)})
            row.update(value)
            row[f"{branch}_status"] = meta.get("status", "")
            row[f"{branch}_latency_s"] = meta.get("latency_s", np.nan)
            row.setdefault("done", set()).add(branch)
            if not row["done"].issuperset(self.branches):
                return
            del self._open[seq]
            row.pop("done")
            row["t"] = now - self._t0
            self.rows.append(row)
            self._count += 1
        self.message_port_pub(pmt.intern("ack"), pmt.PMT_T)


class vlf_sink(frame_collector):
    """Collects the caption and the image decoded from each frame and acknowledges the frame.

    Message inputs ``caption`` (``vlf_caption_decoder``'s ``out``) and ``image``
    (``vlf_image_decoder``'s ``out``); output ``ack`` (connect the image source's ``next``):
    one message per frame once every branch in ``branches`` ("caption", "image") has
    answered for its ``seq``. ``rows``: the newest ``history`` frames, dicts with ``seq``,
    ``snr_est_db``, ``caption``, ``caption_status``, ``caption_latency_s``, ``image``
    (uint8 array or None), ``image_status``, ``image_latency_s``, ``t`` (seconds since the
    first answer); ``count()`` counts every frame. Malformed PDUs are logged, counted in
    ``dropped()`` and skipped.

    Lost frames: connect the encoder's ``out`` to ``tx`` and the receiver's ``out`` to ``rx``;
    a frame that was sent (``tx``) but that the receiver did not hand over (``rx``, same
    ``seq``) within ``lost_after_s`` seconds (missed preamble, header CRC failure) gets a row
    with both statuses "lost" and is acknowledged, so a stop-and-wait source goes on at once
    instead of waiting out its own timeout. ``lost`` counts them. Without ``tx`` connected
    nothing is declared lost.
    """

    def __init__(self, branches=("caption", "image"), lost_after_s=5.0, history=DEFAULT_HISTORY):
        frame_collector.__init__(self, "semcom_vlf_sink", branches, ("caption", "image"), lost_after_s, history)
        for b in ("caption", "image"):
            self.message_port_register_in(pmt.intern(b))
        self.set_msg_handler(pmt.intern("caption"), self._on_caption)
        self.set_msg_handler(pmt.intern("image"), self._on_image)

    def _lost_values(self):
        return {"caption": "", "image": None}

    @message_handler("caption")
    def _on_caption(self, msg):
        meta = _meta_dict(msg)
        caption = meta.get("caption", "")
        if not isinstance(caption, str):
            raise ValueError(f"metadata 'caption' must be a string, got {caption!r}")
        self._part(meta, "caption", caption=caption)

    @message_handler("image")
    def _on_image(self, msg):
        meta = _meta_dict(msg)
        vec = pmt.cdr(msg)
        if not pmt.is_u8vector(vec):
            raise ValueError("image PDU vector must be a u8vector")
        h, w = meta_int(meta, "height", 0, 0), meta_int(meta, "width", 0, 0)
        n = pmt.length(vec)
        if n != h * w * 3:
            raise ValueError(f"image PDU of {n} bytes does not match {h}x{w}x3")
        self._part(meta, "image", image=pmt_to_u8(vec).reshape(h, w, 3) if n else None)


class vlf_link_flowgraph(gr.top_block):
    """One VLF-MSC link run; the blocks are attributes (``src``, ``enc``, ``tx``, ``chan``,
    ``rx``, ``cap``, ``img``, ``sink``). ``codec``: the transmitter's ``VlfCodec`` (default:
    built from ``cfg``); the decoders build their own from ``cfg``."""

    def __init__(self, cfg: VlfLinkConfig, codec=None):
        gr.top_block.__init__(self, "semcom VLF-MSC link")
        self.cfg = cfg
        p = make_params(cfg.profile)
        self.codec = codec or vlf_codec(cfg.backend, steps=cfg.steps, seed=cfg.seed, min_snr_db=cfg.min_snr_db)
        self.src = image_source(cfg.images, cfg.size, cfg.limit, pace="ack", timeout_s=cfg.frame_timeout_s)
        self.enc = vlf_encoder(codec=self.codec, history=cfg.history)
        n = self.codec.n_symbols
        self.tx = ofdm_tx(profile=p, tail_symbols=8, max_payload_len=max(n, 1024), max_side_len=64)
        self.chan = make_channel(cfg)
        self.rx = ofdm_rx(profile=p, equalizer=cfg.equalizer, max_payload_len=max(n, 1024), max_side_len=64)
        # each decoder has a codec of its own (their handlers run in two threads at once); the
        # ONNX sessions are shared through the runtime's cache
        self.cap = vlf_caption_decoder(codec=self._codec(cfg), history=cfg.history)
        branches = ("caption", "image") if cfg.draw_images else ("caption",)
        self.sink = vlf_sink(branches, lost_after_s=cfg.lost_after_s, history=cfg.history)
        self.msg_connect(self.src, "out", self.enc, "in")
        self.msg_connect(self.enc, "out", self.tx, "in")
        self.connect(self.tx, self.chan, self.rx)
        self.msg_connect(self.rx, "out", self.cap, "in")
        self.msg_connect(self.cap, "out", self.sink, "caption")
        self.img = None
        if cfg.draw_images:
            self.img = vlf_image_decoder(codec=self._codec(cfg), history=cfg.history)
            self.msg_connect(self.rx, "out", self.img, "in")
            self.msg_connect(self.img, "out", self.sink, "image")
        self.msg_connect(self.enc, "out", self.sink, "tx")
        self.msg_connect(self.rx, "out", self.sink, "rx")
        self.msg_connect(self.sink, "ack", self.src, "next")

    @staticmethod
    def _codec(cfg):
        return vlf_codec(cfg.backend, steps=cfg.steps, seed=cfg.seed, min_snr_db=cfg.min_snr_db)


def _wait(tb, done, total, timeout_s, finished):
    t0 = time.time()
    finished_at = None
    while time.time() - t0 < timeout_s and done() < total:
        if finished_at is None and finished():
            finished_at = time.time()
        if finished_at is not None and time.time() - finished_at > 2.0:
            break  # the source gave up waiting on its last frame: lost
        time.sleep(0.02)


def run_to_completion(tb, done, total, timeout_s, finished) -> None:
    """Start ``tb``, wait until ``done()`` reaches ``total`` (or the source has ``finished()``
    and nothing more came for 2 s, or ``timeout_s``), then stop it."""
    tb.start()
    try:
        _wait(tb, done, total, timeout_s, finished)
    finally:
        tb.stop()
        tb.wait()


def run_vlf_link(cfg: VlfLinkConfig, codec=None, timeout_s: float = 600.0) -> dict:
    """Run one configuration to completion. Returns ``rows`` (one per image sent, in order,
    with ``name`` and ``image_id``; frames that never arrived get status "lost" in both
    branches), the TX facts (``n_symbols``, ``bcr``) and the receiver's counters."""
    tb = vlf_link_flowgraph(cfg, codec)
    t0 = time.time()
    run_to_completion(tb, tb.sink.count, tb.src.total, timeout_s, tb.src.finished)
    got = {r["seq"]: r for r in tb.sink.rows}
    tx = {e["image_id"]: e for e in tb.enc.log}
    rows = []
    for k in range(tb.src.total):
        item = tb.src.images.items[k % len(tb.src.images)]
        r = got.get(k & 0xFFFF) or {"seq": k & 0xFFFF, "snr_est_db": np.nan, "caption": "", "caption_status": "lost",
                                   "image": None, "image_status": "lost" if cfg.draw_images else ""}
        e = tx.get(k, {})
        rows.append(dict(r, image_id=k, name=item.name, source=item.pixels, n_symbols=e.get("n_symbols", 0),
                         bcr=e.get("bcr", np.nan)))
    return dict(rows=rows, wall_s=time.time() - t0, header_failures=tb.rx.header_failures(),
                frames_received=tb.rx.frames_received(), encoder_failures=tb.enc.failed,
                source_timeouts=tb.src.timeouts)


# ---------------------------------------------------------------------------------------
# any symbol frames through the PHY (baselines)
class _frame_source(paced_source):
    """Emits the given frames (codec_id, symbols, side_info) one at a time, the next on
    ``next`` or after ``timeout_s`` (a lost frame: counted in ``timeouts``, not logged)."""

    warn_timeouts = False

    def __init__(self, frames, timeout_s):
        paced_source.__init__(self, "semcom_frame_source", "ack", 0.0, timeout_s)
        self.frames = list(frames)

    @property
    def total(self) -> int:
        return len(self.frames)

    def _pdu(self, seq):
        codec_id, symbols, side = self.frames[seq]
        d = pmt.make_dict()
        d = pmt.dict_add(d, pmt.intern("codec_id"), pmt.from_long(int(codec_id)))
        d = pmt.dict_add(d, pmt.intern("seq"), pmt.from_long(seq & 0xFFFF))
        d = pmt.dict_add(d, pmt.intern("side_info"), u8_to_pmt(np.frombuffer(bytes(side), np.uint8)))
        return pmt.cons(d, c32_to_pmt(np.ascontiguousarray(symbols, np.complex64)))


class frame_capture(MessageGuard, gr.basic_block):
    """Keeps every ``ofdm_rx`` PDU (metadata dict, received symbols) by ``seq`` and acks it on
    ``ack``. Malformed PDUs are logged, counted in ``dropped()`` and skipped."""

    def __init__(self):
        gr.basic_block.__init__(self, "semcom_frame_capture", None, None)
        self.frames = {}
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("ack"))
        self.set_msg_handler(pmt.intern("in"), self._handle)

    @message_handler("in")
    def _handle(self, msg):
        meta = _meta_dict(msg)
        y = c32_array(pmt.cdr(msg), nonempty=False, finite=False)
        self.frames[meta_int(meta, "seq", -1, -1, 0xFFFF)] = (meta, y)
        self.message_port_pub(pmt.intern("ack"), pmt.PMT_T)

    def count(self) -> int:
        return len(self.frames)


class _frames_flowgraph(gr.top_block):
    def __init__(self, frames, cfg: VlfLinkConfig):
        gr.top_block.__init__(self, "semcom frame link")
        p = make_params(cfg.profile)
        n = max([1024] + [len(f[1]) for f in frames])
        side = max([64] + [len(f[2]) for f in frames])
        self.src = _frame_source(frames, cfg.frame_timeout_s)
        self.tx = ofdm_tx(profile=p, tail_symbols=8, max_payload_len=n, max_side_len=side)
        self.chan = make_channel(cfg)
        self.rx = ofdm_rx(profile=p, equalizer=cfg.equalizer, max_payload_len=n, max_side_len=side)
        self.cap = frame_capture()
        self.msg_connect(self.src, "out", self.tx, "in")
        self.connect(self.tx, self.chan, self.rx)
        self.msg_connect(self.rx, "out", self.cap, "in")
        self.msg_connect(self.cap, "ack", self.src, "next")


class vlf_decoders_flowgraph(_frames_flowgraph):
    """Given VLF frames sent back to back (each ``frame_timeout_s`` after the previous, acks or
    not) through the PHY into both VLF decoders and a ``vlf_sink`` (``capd``, ``imgd``,
    ``sink``): how the receiver and the caption decoder keep up while the image decoder draws
    (``apps/bench_vlf.py``). The source never ends the flowgraph: stop it."""

    def __init__(self, frames, cfg: VlfLinkConfig, threads=0):
        _frames_flowgraph.__init__(self, frames, cfg)
        self.src.linger_s = -1  # the last images are still being drawn when the source is done
        self.capd = vlf_caption_decoder(backend=cfg.backend, threads=threads)
        self.imgd = vlf_image_decoder(backend=cfg.backend, steps=cfg.steps, threads=threads)
        self.sink = vlf_sink()
        self.msg_connect(self.rx, "out", self.capd, "in")
        self.msg_connect(self.rx, "out", self.imgd, "in")
        self.msg_connect(self.capd, "out", self.sink, "caption")
        self.msg_connect(self.imgd, "out", self.sink, "image")


def run_frames(frames, cfg: VlfLinkConfig, timeout_s: float = 600.0) -> list:
    """Send ``frames`` — (codec_id, complex symbols, side_info bytes) each — through ofdm_tx →
    ``cfg``'s channel → ofdm_rx. Returns one entry per frame: (metadata dict, received
    symbols) as the receiver handed them over, or None for a lost frame (missed preamble,
    header or side-information CRC failure). ``frame_timeout_s`` should be short here (the
    frames are sent back to back, a second is plenty)."""
    tb = _frames_flowgraph(frames, cfg)
    run_to_completion(tb, tb.cap.count, len(frames), timeout_s, tb.src.finished)
    return [tb.cap.frames.get(k & 0xFFFF) for k in range(len(frames))]
