#!/usr/bin/env python3
"""MLLM-SC over ZMQ, the AR/VR device: question out (uplink), images in (downlink IQ).

    device_uplink (question at start, repeated every --repeat-question-s s until the first
      image; CSI and acks) -> zeromq.push_msg_sink (connect tcp://127.0.0.1:UPLINK_PORT)
    zeromq.pull_source (connect tcp://127.0.0.1:DOWNLINK_PORT) -> channel (--channel, --snr)
      -> ofdm_rx -> semantic_decoder (importance_jscc) -> image_sink (--out)
    ofdm_rx "out" -> device_uplink "csi" (estimated SNR back to the edge)
    image_sink "ack" -> device_uplink "ack" (paces the edge's image source)

The channel is simulated here, on the samples that arrive (``image_link.make_channel``:
awgn, rayleigh, rician, epa/eva/etu, tdl-a/c/d; SNR = Es/N0 per channel use). ``--images`` /
``--size`` / ``--limit`` must name the same image set as the edge's: the sink scores each
received image against it (PSNR, SSIM, MS-SSIM, EfficientNet-Lite0 feature distance). The
received images are saved in ``--out``, each beside ``<file>_mask.png``, the image with the
importance map its frame carried tinted red.

Exits once ``--count`` images (0: the whole set) are in, or ``--frame-timeout`` s after the
last frame when no further frame arrives (the images still missing are counted lost: a lost
frame does not stall the run), or after ``--timeout`` s, printing one line per image (status,
estimated SNR, PSNR, weight used) and a summary (decoded, lost, failed). Exit status 0 when
the run completed — every image in, or frames stopped coming with the missing ones counted
lost — and 1 when nothing arrived before ``--timeout``. ``--json FILE`` saves the summary and
the rows.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
from gnuradio import gr, zeromq
from gnuradio import semcom
from gnuradio.semcom.blocks.image_link import CHANNELS, LinkConfig, make_channel, parse_rate
from gnuradio.semcom.blocks.ofdm import make_params
from gnuradio.semcom.blocks.grlog import gr_log_option

from edge import CODEC, DEFAULT_DOWNLINK_PORT, DEFAULT_UPLINK_PORT, common, frame_limits


class mllm_sc_device(gr.top_block):
    def __init__(self, cfg: LinkConfig, uplink_port=DEFAULT_UPLINK_PORT, downlink_port=DEFAULT_DOWNLINK_PORT,
                 repeat_question_s=1.0, csv_path=""):
        gr.top_block.__init__(self, "MLLM-SC device")
        p = make_params(cfg.profile)
        self.uplink_blk = semcom.device_uplink(cfg.question, cfg.target, repeat_question_s)
        self.uplink = zeromq.push_msg_sink(common.address(uplink_port), 100, False)
        self.downlink = zeromq.pull_source(gr.sizeof_gr_complex, 1, common.address(downlink_port), 100, False, -1)
        self.chan = make_channel(cfg)
        self.dec = semcom.semantic_decoder(CODEC, cfg.rate, on_failure=cfg.on_failure)
        self.sink = semcom.image_sink(cfg.images, cfg.size, cfg.limit, out_dir=cfg.out_dir, csv_path=csv_path,
                                      label=f"_snr{cfg.snr_db:g}_{cfg.channel}", metrics=cfg.metrics,
                                      csv_mode="a", verbose=False)  # the device prints its own lines
        max_len, max_side = frame_limits(self.dec.codec, [it.pixels.shape[:2] for it in self.sink.images])
        self.rx = semcom.ofdm_rx(profile=p, equalizer=cfg.equalizer, max_payload_len=max_len, max_side_len=max_side)
        self.connect(self.downlink, self.chan, self.rx)
        self.msg_connect(self.rx, "out", self.dec, "in")
        self.msg_connect(self.dec, "out", self.sink, "in")
        self.msg_connect(self.rx, "out", self.uplink_blk, "csi")
        self.msg_connect(self.sink, "ack", self.uplink_blk, "ack")
        self.msg_connect(self.uplink_blk, "out", self.uplink, "in")

    def weight_of(self, seq):
        """Importance weight the frame of image ``seq`` carried (NaN when unknown)."""
        for f in reversed(list(self.uplink_blk.frames)):
            if f["seq"] == seq and f["codec_id"] == self.dec.codec.codec_id and f["side_info"]:
                try:
                    return float(self.dec.codec.parse_side_info(f["side_info"])[3])
                except ValueError:
                    return float("nan")
        return float("nan")

    def rows(self):
        out = []
        for r in list(self.sink.rows):
            mask = r["file"][:-4] + "_mask.png" if r["file"] else ""
            out.append(dict(r, weight=self.weight_of(r["seq"]), mask=mask if mask and os.path.exists(mask) else ""))
        return out


def _line(r):
    return (f"[device] image {r['seq']} ({r['name']}): {r['status']}, estimated SNR {r['snr_est_db']:.1f} dB, "
            f"PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.3f}, weight {r['weight']:g}"
            + (f", saved {r['file']} + {os.path.basename(r['mask'])}" if r["mask"] else
               f", saved {r['file']}" if r["file"] else ""))


def main(argv=None):
    d = LinkConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--uplink-port", type=int, default=DEFAULT_UPLINK_PORT,
                   help="uplink port on 127.0.0.1 (the edge binds, the device connects; default %(default)s)")
    p.add_argument("--downlink-port", type=int, default=DEFAULT_DOWNLINK_PORT,
                   help="downlink IQ port on 127.0.0.1 (default %(default)s)")
    p.add_argument("--question", default="What color is the helmet?", help="the user's question (uplink)")
    p.add_argument("--target", default="", help="forces the target phrase (sent with the question)")
    p.add_argument("--repeat-question-s", type=float, default=1.0,
                   help="resend the question every N s until the first image arrives (<= 0: once)")
    p.add_argument("--images", default="sample:astronaut", help="the edge's image set (reference for the metrics)")
    p.add_argument("--size", type=int, default=d.size, help="the edge's --size")
    p.add_argument("--limit", type=int, default=0, help="the edge's --limit")
    p.add_argument("--count", type=int, default=0, help="images to wait for (0: the whole set once)")
    p.add_argument("--rate", default="1/12", help="bandwidth ratio rho, as the edge's (default %(default)s)")
    p.add_argument("--snr", type=float, default=d.snr_db, help="Es/N0 of the simulated channel (dB)")
    p.add_argument("--channel", default=d.channel, choices=CHANNELS)
    p.add_argument("--fdts", type=float, default=d.fdts, help="normalised Doppler of the fading channels")
    p.add_argument("--k", type=float, default=d.k, help="Rician K")
    p.add_argument("--seed", type=int, default=0, help="channel seed")
    p.add_argument("--equalizer", default=d.equalizer, choices=["zf", "mmse"])
    p.add_argument("--profile", default=d.profile, choices=["wifi64", "wide256", "wide512"])
    p.add_argument("--out", default="mllm_sc_received", help="folder of the received images and overlays")
    p.add_argument("--csv", default="", help="append one row per image to this CSV file")
    p.add_argument("--no-metrics", action="store_true", help="do not score the images")
    p.add_argument("--frame-timeout", type=float, default=10.0,
                   help="once frames arrive: seconds without a new one before the images still missing are "
                        "counted lost and the device ends (default %(default)s; above the edge's --ack-timeout)")
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds in any case")
    p.add_argument("--json", help="write the summary and the per-image rows to this file")
    gr_log_option(p)
    a = p.parse_args(argv)
    try:
        rate = parse_rate(a.rate)
    except ValueError as e:
        p.error(str(e))
    cfg = LinkConfig(codec=CODEC, rate=rate, snr_db=a.snr, channel=a.channel, images=a.images, size=a.size,
                     limit=a.limit, profile=a.profile, fdts=a.fdts, k=a.k, seed=a.seed, out_dir=a.out,
                     equalizer=a.equalizer, metrics=not a.no_metrics, question=a.question, target=a.target)
    tb = mllm_sc_device(cfg, a.uplink_port, a.downlink_port, a.repeat_question_s, a.csv)
    count = a.count or len(tb.sink.images)
    print(f"[device] question {a.question!r} -> PUSH {common.address(a.uplink_port)}; waiting for {count} image(s) "
          f"on PULL {common.address(a.downlink_port)}, channel {a.channel} {a.snr:g} dB (timeout {a.timeout:g} s)",
          flush=True)
    printed, state = [0], dict(activity=None, t_activity=None, ended="timeout")

    def done():
        rows = tb.rows()
        for r in rows[printed[0]:]:
            print(_line(r), flush=True)
        printed[0] = len(rows)
        seqs = {r["seq"] for r in rows}
        if len(seqs) >= count or (count - 1) in seqs:  # the edge sends in order, one image per ack: once
            state["ended"] = "complete"                 # the last is in, any image still missing was lost
            return True
        # anything from the edge: frames (sounding included), images, frames that failed their CRCs
        activity = (len(rows), len(tb.uplink_blk.frames), int(tb.rx.header_failures()), int(tb.rx.side_failures()))
        now = time.monotonic()
        if activity != state["activity"]:
            if any(activity):
                state["t_activity"] = now
            state["activity"] = activity
        if state["t_activity"] is not None and now - state["t_activity"] > a.frame_timeout:
            state["ended"] = "frame_timeout"  # frames stopped coming: the rest were lost
            return True
        return False

    t0 = time.monotonic()
    stop = common.StopFlag()
    common.run_until(tb, done, a.timeout, stop)
    if stop.is_set() and state["ended"] == "timeout":
        state["ended"] = "stopped"
    rows = tb.rows()
    for r in rows[printed[0]:]:
        print(_line(r), flush=True)
    ok = sorted({r["seq"] for r in rows if r["status"] == "ok"})
    got = {r["seq"] for r in rows}
    lost = sorted(set(range(count)) - got)  # no frame at all (never detected, header/side-info CRC failed)
    failed = sorted(got - set(ok))  # a frame came, the decoder had nothing
    finite = [r["psnr"] for r in rows if r["status"] == "ok" and math.isfinite(r["psnr"])]
    completed = state["ended"] in ("complete", "frame_timeout")
    summary = dict(expected=count, received=len(rows), decoded=len(ok), lost=len(lost), lost_seqs=lost,
                   failed=len(failed), failed_seqs=failed, missing=sorted(set(range(count)) - set(ok)),
                   ended=state["ended"], completed=completed,
                   questions_sent=tb.uplink_blk.questions_sent, frames=len(tb.uplink_blk.frames),
                   header_failures=int(tb.rx.header_failures()), side_failures=int(tb.rx.side_failures()),
                   mean_psnr=float(np.mean(finite)) if finite else float("nan"), snr_db=a.snr, channel=a.channel,
                   out_dir=a.out, wall_s=time.monotonic() - t0)
    how = {"complete": "all in" if not lost else "the last image is in", "timeout": f"timeout {a.timeout:g} s",
           "frame_timeout": f"no frame for {a.frame_timeout:g} s, the rest counted lost",
           "stopped": "stopped"}[state["ended"]]
    lost_s = f" (seq {', '.join(map(str, lost[:20]))})" if lost else ""
    psnr_s = f"mean PSNR {summary['mean_psnr']:.2f} dB over the decoded, " if finite else ""
    print(f"[device] summary: {summary['decoded']}/{count} image(s) decoded, lost {len(lost)}{lost_s}, failed to "
          f"decode {len(failed)}, {psnr_s}{summary['frames']} frame(s) received (incl. sounding), header failures "
          f"{summary['header_failures']}, question sent {summary['questions_sent']}x, missing {summary['missing'][:20]}, "
          f"ended: {how}, {summary['wall_s']:.1f} s, images in {a.out}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(summary=summary, images=rows), f, indent=1, default=str)
    return 0 if completed else 1


if __name__ == "__main__":
    sys.exit(main())
