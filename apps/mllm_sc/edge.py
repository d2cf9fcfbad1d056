#!/usr/bin/env python3
"""MLLM-SC over ZMQ, the edge server: question in (uplink), guided images out (downlink IQ).

    zeromq.pull_msg_source (bind tcp://127.0.0.1:UPLINK_PORT) -> question_gate "uplink"
    image_source (stop-and-wait) -> question_gate -> semantic_guidance -> semantic_encoder
      (importance_jscc) -> ofdm_tx -> zeromq.push_sink (bind tcp://127.0.0.1:DOWNLINK_PORT)
    question_gate: "question" -> guidance; "csi" -> guidance + encoder; "next" -> image_source

The images are held until the device's question has arrived (or ``--question-timeout`` s
passed: then ``--default-question`` is used), so every image is guided by the question. The
device's CSI reports (its receiver's estimated SNR) update the encoder and the guidance policy;
``--tx-snr`` is the channel state before the first report. Its acks pace the image source
(stop-and-wait; ``--ack-timeout`` s without one = the frame was lost: counted, the next image goes).

Prints the question used and one line per image (target, weight, policy, TX SNR); exits
``--linger`` s after the last image was acknowledged (-1: until killed), on SIGINT/SIGTERM or
after ``--timeout`` s, with a summary. ``--json FILE`` saves it. Exit status 0 when every
image was sent.
"""
import argparse
import json
import os
import sys
import time

from gnuradio import gr, zeromq
from gnuradio import semcom
from gnuradio.semcom.blocks.image_link import LinkConfig, parse_rate
from gnuradio.semcom.blocks.ofdm import make_params
from gnuradio.semcom.blocks.grlog import gr_log_option

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(1, os.path.join(HERE, os.pardir, "zmq_link"))
import common  # noqa: E402  (apps/zmq_link/common.py: ports, StopFlag, run_until)

DEFAULT_UPLINK_PORT = 5611    # device push_msg_sink (connect) -> edge pull_msg_source (bind)
DEFAULT_DOWNLINK_PORT = 5612  # edge push_sink (bind) -> device pull_source (connect)
CODEC = "importance_jscc"


def frame_limits(codec, sizes):
    """ofdm_tx/ofdm_rx limits for these image sizes (as in image_link_flowgraph)."""
    max_len = max([1024] + [codec.channel_uses(h, w) for h, w in sizes])
    max_side = max([64] + [codec.max_side_len(h, w) for h, w in sizes])
    return max_len, max_side


class mllm_sc_edge(gr.top_block):
    def __init__(self, cfg: LinkConfig, uplink_port=DEFAULT_UPLINK_PORT, downlink_port=DEFAULT_DOWNLINK_PORT,
                 default_question="", question_timeout_s=30.0, ack_timeout_s=5.0, tail_symbols=8):
        gr.top_block.__init__(self, "MLLM-SC edge")
        p = make_params(cfg.profile)
        self.uplink = zeromq.pull_msg_source(common.address(uplink_port), 100, True)
        self.src = semcom.image_source(cfg.images, cfg.size, cfg.limit, repeat=cfg.repeat, pace="ack",
                                       timeout_s=ack_timeout_s, window=1, linger_s=-1)  # main() ends the run
        self.gate = semcom.question_gate(default_question, cfg.target, question_timeout_s)
        self.guide = semcom.semantic_guidance("", cfg.segmenter, cfg.mllm_url, rate=cfg.rate, weight=cfg.weight,
                                              snr_db=cfg.tx_snr_db)
        self.enc = semcom.semantic_encoder(CODEC, cfg.rate, tx_snr_db=cfg.tx_snr_db,
                                           sounding_frames=cfg.sounding_frames)
        max_len, max_side = frame_limits(self.enc.codec, [it.pixels.shape[:2] for it in self.src.images])
        self.tx = semcom.ofdm_tx(profile=p, tail_symbols=tail_symbols, max_payload_len=max_len, max_side_len=max_side)
        self.downlink = zeromq.push_sink(gr.sizeof_gr_complex, 1, common.address(downlink_port), 100, False, -1)
        self.msg_connect(self.uplink, "out", self.gate, "uplink")
        self.msg_connect(self.src, "out", self.gate, "in")
        self.msg_connect(self.gate, "out", self.guide, "in")
        self.msg_connect(self.gate, "question", self.guide, "question")
        self.msg_connect(self.gate, "csi", self.guide, "csi")
        self.msg_connect(self.gate, "csi", self.enc, "csi")
        self.msg_connect(self.gate, "next", self.src, "next")
        self.msg_connect(self.guide, "out", self.enc, "in")
        self.msg_connect(self.enc, "out", self.tx, "in")
        self.connect(self.tx, self.downlink)

    def rows(self):
        """One dict per encoded image: the question it was guided by and what the guidance decided."""
        asked = dict(self.gate.released)
        guide = {e["image_id"]: e for e in list(self.guide.log)}
        out = []
        for e in list(self.enc.log):
            g = guide.get(e["image_id"], {})
            out.append(dict(image_id=e["image_id"], name=e["name"], question=asked.get(e["image_id"], ""),
                            target=g.get("target", ""), weight=e.get("weight", g.get("weight", float("nan"))),
                            policy=g.get("policy", ""), fallback=g.get("fallback", ""),
                            coverage=g.get("coverage", float("nan")), guidance_ms=g.get("guidance_ms", float("nan")),
                            tx_snr_db=e["tx_snr_db"], n_symbols=e["n_symbols"]))
        return out


def _line(r):
    fb = f", fallback: {r['fallback']}" if r["fallback"] else ""
    return (f"[edge] image {r['image_id']} ({r['name']}): question {r['question']!r} -> target {r['target']!r}, "
            f"weight {r['weight']:g} ({r['policy']}{fb}), TX SNR {r['tx_snr_db']:.1f} dB, "
            f"{r['n_symbols']} symbols, guidance {r['guidance_ms']:.0f} ms")


def main(argv=None):
    d = LinkConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--uplink-port", type=int, default=DEFAULT_UPLINK_PORT,
                   help="uplink (questions, CSI, acks) port on 127.0.0.1; the edge binds (default %(default)s)")
    p.add_argument("--downlink-port", type=int, default=DEFAULT_DOWNLINK_PORT,
                   help="downlink IQ port on 127.0.0.1; the edge binds (default %(default)s)")
    p.add_argument("--images", default="sample:astronaut",
                   help='image set: "" = all scikit-image samples, a folder, a file, "sample:astronaut,coffee"')
    p.add_argument("--size", type=int, default=d.size, help="centre-crop + resize to NxN (0: native)")
    p.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    p.add_argument("--repeat", type=int, default=1, help="times the image set is sent")
    p.add_argument("--rate", default="1/12", help="bandwidth ratio rho (default %(default)s)")
    p.add_argument("--segmenter", default="embedded", help='"embedded" (offline) or "clipseg:<models dir>"')
    p.add_argument("--mllm-url", default="", help="OpenAI-compatible endpoint ('' = rule-based question parser)")
    p.add_argument("--weight", type=float, default=-1.0, help="importance weight (< 1: the policy decides)")
    p.add_argument("--default-question", default="",
                   help="question used when the device sends none in time ('' = uniform allocation)")
    p.add_argument("--target", default="", help="forces the target phrase of the default question")
    p.add_argument("--question-timeout", type=float, default=30.0,
                   help="seconds to wait for the device's question before the default one (default %(default)s)")
    p.add_argument("--tx-snr", type=float, default=d.tx_snr_db,
                   help="channel state (dB) until the device's first CSI report (default %(default)s)")
    p.add_argument("--sounding-frames", type=int, default=d.sounding_frames,
                   help="short frames sent first so that the device reports CSI (default %(default)s)")
    p.add_argument("--ack-timeout", type=float, default=5.0,
                   help="seconds without the device's ack before the frame counts as lost and the next image "
                        "goes (default %(default)s)")
    p.add_argument("--profile", default=d.profile, choices=["wifi64", "wide256", "wide512"])
    p.add_argument("--tail-symbols", type=int, default=8, help="empty OFDM symbols after every burst")
    p.add_argument("--linger", type=float, default=2.0,
                   help="seconds to keep running after the last image (-1: until killed/timeout)")
    p.add_argument("--timeout", type=float, default=300.0, help="stop after this many seconds in any case")
    p.add_argument("--json", help="write the summary and the per-image rows to this file")
    gr_log_option(p)
    a = p.parse_args(argv)
    try:
        rate = parse_rate(a.rate)
    except ValueError as e:
        p.error(str(e))
    cfg = LinkConfig(codec=CODEC, rate=rate, images=a.images, size=a.size, limit=a.limit, repeat=a.repeat,
                     profile=a.profile, tx_snr_db=a.tx_snr, sounding_frames=a.sounding_frames,
                     segmenter=a.segmenter, target=a.target, weight=a.weight, mllm_url=a.mllm_url)
    tb = mllm_sc_edge(cfg, a.uplink_port, a.downlink_port, a.default_question, a.question_timeout, a.ack_timeout,
                      a.tail_symbols)
    print(f"[edge] {tb.src.total} image(s) {a.images!r} at {a.size} px, {CODEC} rho={rate:.4g}, segmenter "
          f"{a.segmenter!r}; uplink PULL {common.address(a.uplink_port)}, downlink PUSH "
          f"{common.address(a.downlink_port)}; waiting up to {a.question_timeout:g} s for the question", flush=True)
    printed, t_done = [0], [None]

    def done():
        rows = tb.rows()
        for r in rows[printed[0]:]:
            print(_line(r), flush=True)
        printed[0] = len(rows)
        if not tb.src.finished():
            return False
        if t_done[0] is None:
            t_done[0] = time.monotonic()
        return a.linger >= 0 and time.monotonic() - t_done[0] >= a.linger

    t0 = time.monotonic()
    common.run_until(tb, done, a.timeout, common.StopFlag())
    rows = tb.rows()
    for r in rows[printed[0]:]:
        print(_line(r), flush=True)
    summary = dict(images=tb.src.total, sent=tb.src.sent, encoded=tb.enc.encoded, question=tb.gate.question,
                   question_source=tb.gate.question_source or "none", target=tb.gate.target,
                   csi_reports=tb.gate.csi_reports, acks=tb.gate.acks, ack_timeouts=tb.src.timeouts,
                   not_acked=max(0, tb.enc.encoded - tb.gate.acks),  # frames the device did not get
                   guidance_fallbacks=tb.guide.fallbacks, encoder_failures=tb.enc.failed, tx_dropped=tb.tx.dropped(),
                   samples_pushed=int(tb.downlink.nitems_read(0)), wall_s=time.monotonic() - t0)
    print(f"[edge] summary: {summary['encoded']}/{summary['images']} image(s) encoded and sent, question "
          f"{summary['question']!r} ({summary['question_source']}), {summary['csi_reports']} CSI report(s), "
          f"{summary['acks']} ack(s), {summary['not_acked']} image(s) not acknowledged (lost), "
          f"{summary['ack_timeouts']} ack timeout(s), "
          f"{summary['samples_pushed']} samples pushed", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(summary=summary, images=rows), f, indent=1, default=str)
    return 0 if tb.enc.encoded >= tb.src.total else 1


if __name__ == "__main__":
    sys.exit(main())
