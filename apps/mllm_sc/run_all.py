#!/usr/bin/env python3
"""Starts the MLLM-SC device and edge as two processes on this machine (ZMQ over loopback).

    device.py --uplink-port U --downlink-port D   (question ->, <- images)
    edge.py   --uplink-port U --downlink-port D

Ports are picked free on 127.0.0.1 unless given. The device is started first, then the edge.
A lost frame does not stall the run: the edge sends the next image ``--frame-timeout`` s
without an ack, the device ends once all images are in or no frame came for a while
(2 × ``--frame-timeout`` + 1 s), counting what is missing as lost. Once the device has exited,
the edge is stopped (Ctrl-C: it prints its summary). Both processes print to this terminal;
the last line sums up the run (images decoded, lost, failed, time). Exit status: the
device's (0 when the run completed, lost frames counted; 1 when nothing arrived in --timeout).
"""
import argparse
import json
import os
import sys
import tempfile
import time

from gnuradio.semcom.blocks.grlog import gr_log_option

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(1, os.path.join(HERE, os.pardir, "zmq_link"))
import common  # noqa: E402  (apps/zmq_link/common.py)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default="sample:astronaut", help="image set of the edge (and the device's reference)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--question", default="What color is the helmet?", help="the device's question")
    p.add_argument("--target", default="", help="forces the target phrase")
    p.add_argument("--snr", type=float, default=10.0, help="Es/N0 (dB) of the device's channel")
    p.add_argument("--channel", default="awgn", help="awgn, rayleigh, rician, epa, ... (device.py --help)")
    p.add_argument("--rate", default="1/12")
    p.add_argument("--segmenter", default="embedded")
    p.add_argument("--mllm-url", default="")
    p.add_argument("--weight", type=float, default=-1.0)
    p.add_argument("--tx-snr", type=float, default=10.0)
    p.add_argument("--out", default="mllm_sc_received", help="device: folder of the received images")
    p.add_argument("--uplink-port", type=int, default=0, help="0: pick a free port")
    p.add_argument("--downlink-port", type=int, default=0, help="0: pick a free port")
    p.add_argument("--frame-timeout", type=float, default=5.0,
                   help="per-frame timeout (s): the edge's --ack-timeout; the device gives up on missing images "
                        "2x this + 1 s after the last frame (default %(default)s)")
    p.add_argument("--timeout", type=float, default=120.0, help="device timeout for the whole run (s)")
    p.add_argument("--json", help="prefix of the JSON summaries: PREFIX_device.json, PREFIX_edge.json")
    gr_log_option(p)
    a = p.parse_args(argv)
    up = a.uplink_port or common.free_port()
    down = a.downlink_port or common.free_port()
    while down == up:
        down = common.free_port()

    py = [sys.executable, "-u"]
    ports = ["--uplink-port", str(up), "--downlink-port", str(down)]
    images = ["--images", a.images, "--size", str(a.size), "--limit", str(a.limit), "--rate", a.rate]
    dev_cmd = py + [os.path.join(HERE, "device.py"), *ports, *images, "--question", a.question, "--target", a.target,
                    "--snr", str(a.snr), "--channel", a.channel, "--out", a.out, "--timeout", str(a.timeout),
                    "--frame-timeout", str(2 * a.frame_timeout + 1)]
    edge_cmd = py + [os.path.join(HERE, "edge.py"), *ports, *images, "--segmenter", a.segmenter, "--mllm-url",
                     a.mllm_url, "--weight", str(a.weight), "--tx-snr", str(a.tx_snr), "--linger", "-1",
                     "--timeout", str(a.timeout + 30), "--ack-timeout", str(a.frame_timeout)]
    with tempfile.TemporaryDirectory(prefix="mllm_sc_") as tmp:
        prefix = a.json or os.path.join(tmp, "run")
        dev_cmd += ["--json", f"{prefix}_device.json"]
        edge_cmd += ["--json", f"{prefix}_edge.json"]
        print(f"[run_all] uplink tcp://127.0.0.1:{up}, downlink tcp://127.0.0.1:{down}", flush=True)
        t0 = time.monotonic()
        rc = common.supervise((dev_cmd, edge_cmd), a.timeout + 30, "run_all", "device")
        print(f"[run_all] {_summary(f'{prefix}_device.json', f'{prefix}_edge.json')}, {time.monotonic() - t0:.1f} s",
              flush=True)
    return rc


def _summary(dev_json: str, edge_json: str) -> str:
    """One line from the device's (and the edge's) JSON summaries."""
    try:
        with open(dev_json) as f:
            d = json.load(f)["summary"]
    except (OSError, ValueError, KeyError):
        return "no summary from the device"
    text = (f"images: {d['decoded']}/{d['expected']} decoded, lost {d['lost']}"
            + (f" (seq {', '.join(map(str, d['lost_seqs'][:20]))})" if d.get("lost_seqs") else "")
            + f", failed to decode {d.get('failed', 0)}"
            + (f", mean PSNR {d['mean_psnr']:.2f} dB over the decoded" if d.get("decoded") else ""))
    try:
        with open(edge_json) as f:
            e = json.load(f)["summary"]
        text += f"; edge: {e['encoded']}/{e['images']} sent, {e.get('not_acked', 0)} not acknowledged"
    except (OSError, ValueError, KeyError):
        pass
    return text


if __name__ == "__main__":
    sys.exit(main())
