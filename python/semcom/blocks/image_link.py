"""The image link as one GNU Radio flowgraph (shared by the main job, eval, sweep and bench apps).

image_source → [semantic_guidance →] semantic_encoder → ofdm_tx → impairments → channel →
ofdm_rx → semantic_decoder → image_sink, with the receiver's reports fed back to the encoder
(and the guidance) as CSI (``csi`` port) and the sink's ``ack`` pacing the source
(stop-and-wait). The guidance stage (MLLM-SC) is there when ``LinkConfig.segmenter`` is set.
``apps/image_link.grc`` is the GRC form (MLLM-SC edge and device: ``apps/mllm_sc/``).
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
from gnuradio import gr

from .. import codecs as _codecs
from ..images import DEFAULT_MAX_PIXELS
from ._history import DEFAULT_HISTORY
from .channels import awgn_channel, flat_fading_channel, impairments, multipath_channel
from .image import image_sink, image_source, score, semantic_decoder, semantic_encoder
from .ofdm import make_params, ofdm_rx, ofdm_tx

__all__ = ["image_link_flowgraph", "LinkConfig", "CHANNELS", "make_channel", "run_image_link", "run_points", "grid",
           "parse_rate", "point_key"]

log = logging.getLogger("gr-semcom.image_link")

#: channel names the image-link apps accept (flat fading is Doppler-varying, fD·Ts = ``fdts``)
CHANNELS = ("awgn", "rayleigh", "rician", "epa", "eva", "etu", "tdl-a", "tdl-c", "tdl-d")


@dataclass
class LinkConfig:
    """Everything that defines one run of the image link."""

    codec: str = "jscc"
    rate: float = 1 / 12
    snr_db: float = 10.0
    channel: str = "awgn"
    images: str = ""            # "" = scikit-image sample photos
    size: int = 256             # 0 = native size
    limit: int = 0
    profile: str = "wide256"
    cfo: float = 0.0            # subcarrier spacings
    fdts: float = 1e-5          # fading channels
    k: float = 4.0              # Rician K
    sample_rate: float = 15.36e6
    delay_spread: float = 100e-9
    seed: int = 0
    out_dir: str = ""
    sounding_frames: int = 2
    window: int = 1             # images in flight (1 = stop-and-wait)
    repeat: int = 1
    metrics: bool = True        # score every image at the sink (off for throughput runs)
    tx_snr_db: float = 10.0     # TX CSI before the first receiver report
    equalizer: str = "zf"         # unbiased: the codecs expect y = x + noise (MMSE shrinks x)
    on_failure: str = "nothing"
    codec_args: dict = field(default_factory=dict)
    segmenter: str = ""         # MLLM-SC guidance: "" = none, "embedded", "clipseg:<dir>"
    question: str = ""
    target: str = ""            # forces the target phrase (evaluation cases)
    weight: float = -1.0        # importance weight; < 1 = the guidance policy decides
    mllm_url: str = ""
    history: int = DEFAULT_HISTORY        # records each block keeps in memory (ring buffers)
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are refused (source, encoder, decoder); 0 = no limit


def make_channel(cfg: LinkConfig):
    """The channel block of a config (SNR convention: Es/N0 per channel use, README)."""
    name = cfg.channel.lower()
    if name == "awgn":
        return awgn_channel(snr_db=cfg.snr_db, seed=cfg.seed + 1)
    if name in ("rayleigh", "rician"):
        return flat_fading_channel(kind=name, k=cfg.k, fdts=cfg.fdts, snr_db=cfg.snr_db, seed=cfg.seed + 1)
    if name in ("epa", "eva", "etu"):
        return multipath_channel(profile=name.upper(), sample_rate=cfg.sample_rate, fdts=cfg.fdts,
                                 snr_db=cfg.snr_db, seed=cfg.seed + 1)
    if name.startswith("tdl-"):
        return multipath_channel(profile=name.upper(), sample_rate=cfg.sample_rate, delay_spread=cfg.delay_spread,
                                 fdts=cfg.fdts, snr_db=cfg.snr_db, seed=cfg.seed + 1)
    raise ValueError(f"unknown channel {cfg.channel!r}; choose one of {', '.join(CHANNELS)}")


class image_link_flowgraph(gr.top_block):
    """One image link run: the blocks are attributes (``src``, ``enc``, ``tx``, ``imp``,
    ``chan``, ``rx``, ``dec``, ``sink``) so callers can read their counters."""

    def __init__(self, cfg: LinkConfig, codec: _codecs.Codec | None = None):
        gr.top_block.__init__(self, f"semcom image link ({cfg.codec})")
        self.cfg = cfg
        p = make_params(cfg.profile)
        self.codec = codec or _codecs.make_codec(cfg.codec, cfg.rate, **cfg.codec_args)
        self.src = image_source(cfg.images, cfg.size, cfg.limit, repeat=cfg.repeat, pace="ack", window=cfg.window,
                                max_pixels=cfg.max_pixels)
        sizes = [it.pixels.shape[:2] for it in self.src.images]
        max_len = max(self.codec.channel_uses(h, w) for h, w in sizes)
        max_len = max(max_len, 1024)
        max_side = max([64] + [self.codec.max_side_len(h, w) for h, w in sizes if hasattr(self.codec, "max_side_len")])
        self.enc = semantic_encoder(self.codec, tx_snr_db=cfg.tx_snr_db, sounding_frames=cfg.sounding_frames,
                                    max_pixels=cfg.max_pixels, history=cfg.history)
        self.guide = None
        if cfg.segmenter:
            from .guidance import semantic_guidance

            self.guide = semantic_guidance(cfg.question, cfg.segmenter, cfg.mllm_url, rate=cfg.rate,
                                           weight=cfg.weight, snr_db=cfg.tx_snr_db, target=cfg.target,
                                           history=cfg.history)
        self.tx = ofdm_tx(profile=p, tail_symbols=8, max_payload_len=max_len, max_side_len=max_side)
        self.imp = impairments(cfo=cfg.cfo / p.fft_len, sample_rate=1.0, timing_offset=0.0)
        self.chan = make_channel(cfg)
        self.rx = ofdm_rx(profile=p, equalizer=cfg.equalizer, max_payload_len=max_len, max_side_len=max_side)
        self.dec = semantic_decoder(self.codec, on_failure=cfg.on_failure, max_pixels=cfg.max_pixels)
        self.sink = image_sink(cfg.images, cfg.size, cfg.limit, out_dir=cfg.out_dir,
                               label=f"_snr{cfg.snr_db:g}_{cfg.channel}", metrics=cfg.metrics,
                               verbose=False, history=cfg.history, max_pixels=cfg.max_pixels)
        if self.guide is None:
            self.msg_connect(self.src, "out", self.enc, "in")
        else:
            self.msg_connect(self.src, "out", self.guide, "in")
            self.msg_connect(self.guide, "out", self.enc, "in")
            self.msg_connect(self.rx, "out", self.guide, "csi")
        self.msg_connect(self.enc, "out", self.tx, "in")
        self.connect(self.tx, self.imp, self.chan, self.rx)
        self.msg_connect(self.rx, "out", self.dec, "in")
        self.msg_connect(self.rx, "out", self.enc, "csi")
        self.msg_connect(self.dec, "out", self.sink, "in")
        self.msg_connect(self.sink, "ack", self.src, "next")


def run_image_link(cfg: LinkConfig, codec: _codecs.Codec | None = None, timeout_s: float = 120.0) -> dict:
    """Run one configuration to completion; returns the sink rows plus link counters
    (``samples``: complex baseband samples that reached the receiver, ``wall_s``).

    Every image the source sends gets a row: images whose frame never arrived (missed
    preamble, header or side-info CRC failure) are added with status "lost" and scored
    against the mid-grey image, like every other case where the receiver has nothing.

    A run of more images than ``cfg.history`` (the records the blocks keep in memory): the
    sink writes every row to a temporary CSV file, read back here, so every image still gets
    its row; the encoder's (and guidance's) records of the oldest images are gone, so those
    rows lack the TX facts (``rho_actual``, ``tx_snr_db`` NaN, ``n_symbols`` 0). The result's
    ``notes`` then says so (also logged), and ``tx_records_missing`` counts those rows.
    """
    tb = image_link_flowgraph(cfg, codec)
    spill = None
    if tb.src.total > cfg.history:  # the sink's ring cannot hold the run: its CSV keeps every row
        spill = tempfile.TemporaryDirectory(prefix="semcom_image_link_")
        tb.sink.csv_path, tb.sink.csv_mode = os.path.join(spill.name, "rows.csv"), "w"
    t0 = time.time()
    tb.start()
    try:
        finished_at = None
        while time.time() - t0 < timeout_s and tb.sink.count() < tb.src.total:
            if finished_at is None and tb.src.finished():
                finished_at = time.time()
            if finished_at is not None and time.time() - finished_at > 2.0:
                break  # the source gave up waiting on its last image: that frame was lost
            time.sleep(0.02)
    finally:
        tb.stop()
        tb.wait()
    wall = time.time() - t0
    if spill is not None:
        with spill:
            rows = tb.sink.read_csv(tb.sink.csv_path)
        tb.sink.csv_path = ""
    else:
        rows = list(tb.sink.rows)
    got = {r["seq"] for r in rows}
    for k in range(tb.src.total):
        if k & 0xFFFF not in got:
            it = tb.src.images.items[k % len(tb.src.images)]
            rows.append(dict(seq=k, name=it.name, codec=tb.codec.name, status="lost", snr_est_db=np.nan, file="",
                             t=np.nan, **score(it.pixels, np.full_like(it.pixels, 128))))
    tx_log = {e["image_id"]: e for e in list(tb.enc.log)}
    guide_log = {e["image_id"]: e for e in list(tb.guide.log)} if tb.guide is not None else {}
    notes = []
    tx_missing = sum(r["seq"] not in tx_log for r in rows) if tb.enc.encoded > len(tx_log) else 0
    if tx_missing:
        notes.append(f"the encoder kept the records of its newest {len(tx_log)} of {tb.enc.encoded} images "
                     f"(history {cfg.history}): {tx_missing} rows have no TX facts (rho_actual, tx_snr_db NaN)")
    if tb.guide is not None and tb.guide.processed > len(guide_log):
        notes.append(f"the guidance kept the records of its newest {len(guide_log)} of {tb.guide.processed} images "
                     f"(history {cfg.history}): the older rows have no guidance fields")
    for note in notes:
        log.warning("image link: %s", note)
    for r in rows:
        e = tx_log.get(r["seq"], {})
        r.update(rho=cfg.rate, rho_actual=e.get("rho", np.nan), tx_snr_db=e.get("tx_snr_db", np.nan), n_symbols=e.get("n_symbols", 0),
                 channel=cfg.channel, snr_db=cfg.snr_db, seed=cfg.seed)
        r.update({k: v for k, v in e.items() if k.startswith("tx_") and k not in r})
        if tb.guide is not None:  # what the guidance decided for this image
            r.update({k: v for k, v in guide_log.get(r["seq"], {}).items() if k != "image_id"})
    rows.sort(key=lambda r: r["seq"])
    return dict(rows=rows, wall_s=wall, samples=int(tb.rx.corr.nitems_read(0)), header_failures=tb.rx.header_failures(), side_failures=tb.rx.side_failures(),
                frames_received=tb.rx.frames_received(), decoder_failures=tb.dec.failures,
                encoder_failures=tb.enc.failed, source_timeouts=tb.src.timeouts, skipped=dict(tb.src.skipped),
                tx_records_missing=tx_missing, notes=notes)


def parse_rate(text) -> float:
    """"1/12" or "0.0833" → float ρ (> 0, ≤ 1)."""
    s = str(text).strip()
    try:
        num, _, den = s.partition("/")
        r = float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"bad bandwidth ratio {text!r}: use e.g. 1/12 or 0.083") from None
    if not 0 < r <= 1:
        raise ValueError(f"bandwidth ratio must be in (0, 1], got {text!r}")
    return r


def grid(base: LinkConfig, codecs=("jscc", "separation"), rates=(1 / 12,), channels=("awgn",),
         snrs=(0.0,), seeds=(0,)) -> list[LinkConfig]:
    """The cartesian product codec × ρ × channel × SNR × seed as configs (``base`` gives the rest)."""
    from dataclasses import replace

    return [replace(base, codec=c, rate=r, channel=ch, snr_db=float(s), seed=int(sd))
            for c in codecs for r in rates for ch in channels for s in snrs for sd in seeds]


def point_key(item) -> tuple:
    """Identity of a grid point (codec, ρ, channel, SNR, seed) of a LinkConfig or a result row."""
    if isinstance(item, LinkConfig):
        item = dict(codec=item.codec, rho=item.rate, channel=item.channel, snr_db=item.snr_db, seed=item.seed)
    return (str(item["codec"]), round(float(item["rho"]), 6), str(item["channel"]), round(float(item["snr_db"]), 3),
            int(item["seed"]))


def run_points(configs, on_result=None, progress=True, timeout_s=300.0) -> list[dict]:
    """Run each config through the GNU Radio link; ``on_result(cfg, result)`` after each.

    Codecs are built once per (codec, ρ) and reused across SNRs/channels/seeds (their ONNX
    sessions are cached). Returns all rows.
    """
    from tqdm import tqdm

    cache, rows = {}, []
    bar = tqdm(configs, desc="image link", unit="run", disable=not progress, dynamic_ncols=True)
    for cfg in bar:
        bar.set_postfix_str(f"{cfg.codec} ρ={cfg.rate:.4g} {cfg.channel} {cfg.snr_db:g} dB")
        key = (cfg.codec, cfg.rate, tuple(sorted(cfg.codec_args.items())))
        if key not in cache:
            cache[key] = _codecs.make_codec(cfg.codec, cfg.rate, **cfg.codec_args)
        res = run_image_link(cfg, cache[key], timeout_s=timeout_s)
        rows += res["rows"]
        if on_result is not None:
            on_result(cfg, res)
    return rows
