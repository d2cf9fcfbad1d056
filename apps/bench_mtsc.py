#!/usr/bin/env python3
"""LAM multi-task latency benchmark: each stage per item and each task's decoder on this CPU.

For each system (the LAM-based link and the U-DeepSC-like baseline; ONNX Runtime with
``--threads`` intra-op threads, 2 by default: the two cores of a small edge box), median over
``--reps`` runs on ``--items`` test items of the multi-task benchmark:

- transmitter: input preparation (log-mel, frame resizing, tokenising), the encoder graph
  (modality encoders + LAM encoder + JSC encoder + importance), the rate allocation;
- receiver: the JSC decoder (received symbols → the LAM decoder's memory), then each task's
  decoder on its own (VQA answer, the three captions: greedy decoding; the reconstruction),
  and all five tasks as the decoder block runs them (the four text tasks in one batch);
- printed side by side: the five tasks from one transmission vs five single-task runs
  (each paying the JSC decoder again), as a ratio.

Example:  python3 apps/bench_mtsc.py --reps 5 --threads 2
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vlf import median_ms  # noqa: E402

from gnuradio.semcom.blocks.grlog import gr_log_option  # noqa: E402


def bench(system, a):
    from gnuradio.semcom.blocks.mtsc import mtsc_codec
    from gnuradio.semcom.codecs import Csi
    from gnuradio.semcom.codecs.mtsc import TASKS, allocate
    from gnuradio.semcom.datasets import multitask

    c = mtsc_codec(a.models, system, a.budget, "adaptive" if system == "mtsc" else "fixed", threads=a.threads)
    items = multitask.items("test", a.items)
    rows = {}
    for it in items:
        raw = (it.image, it.question, it.audio.audio, it.video.frames)
        feeds = c.prepare(*raw)
        enc = c._model("enc").run(feeds)
        e = c.encode(feeds, 6.0)
        csi = Csi(6.0, 10 ** -0.6)
        mem = c.memory(e.symbols, e.side_info, csi)
        stages = {
            "tx: prepare inputs": lambda: c.prepare(*raw),
            "tx: encoder graph": lambda: c._model("enc").run(feeds),
            "tx: rate allocation": lambda: allocate(enc["importance"][0], enc["valid"][0], c.payload_budget, 6.0,
                                                    c.table, c.snr_grid, c.rate, c.group, c.levels),
            "rx: JSC decoder": lambda: c.memory(e.symbols, e.side_info, csi),
        }
        for task in TASKS[:4]:
            stages[f"rx: {task}"] = lambda task=task: c.generate(*mem, tasks=(task,))
        stages["rx: reconstruction"] = lambda: c.reconstruct(*mem)
        stages["rx: all five tasks (decoder block)"] = lambda: c.decode(e.symbols, e.side_info, csi)
        for name, fn in stages.items():
            rows.setdefault(name, []).append(median_ms(fn, a.reps))
    return {k: float(np.median(v)) for k, v in rows.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="runs per measurement (median)")
    ap.add_argument("--items", type=int, default=4, help="test items (median over them)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    ap.add_argument("--budget", type=int, default=1024, help="channel uses per item")
    ap.add_argument("--models", default="", help="models directory ('' = the shipped models)")
    gr_log_option(ap)
    a = ap.parse_args(argv)
    res = {s: bench(s, a) for s in ("mtsc", "udeepsc")}
    names = list(res["mtsc"])
    print(f"latency per item [ms], median of {a.reps} runs × {a.items} items, {a.threads} ONNX threads")
    print(f"{'stage':40s} {'mtsc':>10s} {'udeepsc':>10s}")
    for n in names:
        print(f"{n:40s} {res['mtsc'][n]:10.2f} {res['udeepsc'][n]:10.2f}")
    for s, r in res.items():
        single = sum(r[f"rx: {t}"] + r["rx: JSC decoder"] for t in ("vqa", "caption_image", "caption_audio",
                                                                  "caption_video", "reconstruction"))
        print(f"{s}: five single-task decodes / one multi-task decode = {single / r['rx: all five tasks (decoder block)']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
