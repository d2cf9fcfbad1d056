"""The LAM multi-task link as one GNU Radio flowgraph.

``mtsc_link_flowgraph``: mtsc_source → mtsc_encoder → ofdm_tx → channel → ofdm_rx →
mtsc_decoder (every task from the same received frame) → mtsc_sink, whose ``ack`` paces the
source (stop-and-wait); the receiver's ``out`` also feeds the encoder's ``csi`` (the SNR the
variable-rate coder allocates for: an ideal feedback channel carrying the receiver's own
estimate). ``apps/mtsc_link.grc`` is the GRC form.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from gnuradio import gr

from ._history import DEFAULT_HISTORY
from .image_link import make_channel
from .mtsc import mtsc_codec, mtsc_decoder, mtsc_encoder, mtsc_sink, mtsc_source
from .ofdm import make_params, ofdm_rx, ofdm_tx
from .vlf_link import run_to_completion

__all__ = ["MtscLinkConfig", "mtsc_link_flowgraph", "run_mtsc_link"]


@dataclass
class MtscLinkConfig:
    """One run of the multi-task link (channel fields as ``image_link.LinkConfig``)."""

    items: str = "multitask:test:8"
    snr_db: float = 6.0
    channel: str = "rician"
    k: float = 3.0                  # Rician K factor (linear)
    profile: str = "wide256"
    models: str = ""                # "" = the shipped models
    prefix: str = "mtsc"            # or "udeepsc" (the baseline without a LAM)
    budget: int = 1024              # complex channel uses per item, side information included
    rate: str = "adaptive"          # or "fixed"
    tx_snr_db: float = 6.0          # the allocation's SNR until the receiver reports one
    tasks: str = "all"
    min_snr_db: float = -15.0
    equalizer: str = "zf"
    seed: int = 0
    fdts: float = 1e-5
    sample_rate: float = 15.36e6
    delay_spread: float = 100e-9
    frame_timeout_s: float = 120.0
    lost_after_s: float = 3.0
    history: int = DEFAULT_HISTORY


class mtsc_link_flowgraph(gr.top_block):
    """One multi-task link run; the blocks are attributes (``src``, ``enc``, ``tx``, ``chan``,
    ``rx``, ``dec``, ``sink``)."""

    def __init__(self, cfg: MtscLinkConfig):
        gr.top_block.__init__(self, "semcom LAM multi-task link")
        self.cfg = cfg
        p = make_params(cfg.profile)
        self.src = mtsc_source(cfg.items, pace="ack", timeout_s=cfg.frame_timeout_s)
        self.enc = mtsc_encoder(codec=mtsc_codec(cfg.models, cfg.prefix, cfg.budget, cfg.rate, cfg.min_snr_db),
                                tx_snr_db=cfg.tx_snr_db, history=cfg.history)
        n = max(cfg.budget, 1024)
        self.tx = ofdm_tx(profile=p, tail_symbols=8, max_payload_len=n, max_side_len=64)
        self.chan = make_channel(cfg)
        self.rx = ofdm_rx(profile=p, equalizer=cfg.equalizer, max_payload_len=n, max_side_len=64)
        self.dec = mtsc_decoder(codec=mtsc_codec(cfg.models, cfg.prefix, cfg.budget, cfg.rate, cfg.min_snr_db),
                                tasks=cfg.tasks, history=cfg.history)
        self.sink = mtsc_sink(cfg.tasks, lost_after_s=cfg.lost_after_s, history=cfg.history)
        self.msg_connect(self.src, "out", self.enc, "in")
        self.msg_connect(self.enc, "out", self.tx, "in")
        self.connect(self.tx, self.chan, self.rx)
        self.msg_connect(self.rx, "out", self.dec, "in")
        self.msg_connect(self.rx, "out", self.enc, "csi")
        self.msg_connect(self.dec, "out", self.sink, "in")
        self.msg_connect(self.enc, "out", self.sink, "tx")
        self.msg_connect(self.enc, "rejected", self.sink, "rejected")
        self.msg_connect(self.rx, "out", self.sink, "rx")
        self.msg_connect(self.sink, "ack", self.src, "next")


def run_mtsc_link(cfg: MtscLinkConfig, timeout_s: float = 900.0) -> dict:
    """Run one configuration to completion. ``rows``: one per item sent, in order, with the
    item (``item``: ``multitask.Item``), the TX facts (``tx_snr_db``, ``channel_uses``,
    ``rates``) and what the sink got (frames that never arrived: every status "lost"; items the
    encoder refused: "bad_input" with the ``reason``); plus the receiver's counters."""
    tb = mtsc_link_flowgraph(cfg)
    t0 = time.time()
    run_to_completion(tb, tb.sink.count, tb.src.total, timeout_s, tb.src.finished)
    got = {r["seq"]: r for r in tb.sink.rows}
    tx = {e["item_id"]: e for e in tb.enc.log}
    rows = []
    for k in range(tb.src.total):
        e = tx.get(k)
        r = got.get(k & 0xFFFF)
        if r is None:
            r = {"seq": k & 0xFFFF, "snr_est_db": np.nan, **{f"{t}_status": "lost" for t in tb.sink.branches}}
        rows.append(dict(r, item_id=k, item=tb.src.item(k), tx_snr_db=(e or {}).get("tx_snr_db", np.nan),
                         channel_uses=(e or {}).get("channel_uses", 0), rates=(e or {}).get("rates")))
    return dict(rows=rows, wall_s=time.time() - t0, header_failures=tb.rx.header_failures(),
                frames_received=tb.rx.frames_received(), encoder_failures=tb.enc.failed,
                source_timeouts=tb.src.timeouts, decoder_busy_s=tb.dec.busy_s)
