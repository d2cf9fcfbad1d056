#!/usr/bin/env python3
"""LAM multi-task link: one transmission per item serving VQA, three captioning tasks and image
reconstruction at the edge.

Headless twin of apps/mtsc_link.grc (the same options, the same graph, built by
``semcom.blocks.mtsc_link``): items of the multi-task benchmark (default: the first 8 of the
test split; each an image, a question, an audio clip and a video clip) → MTSC encoder (the LAM
fuses the modalities, the importance-aware variable-rate JSC coder maps them onto ``--budget``
channel uses for the SNR the receiver reported) → OFDM TX → Rician fading + AWGN → OFDM RX →
MTSC decoder (the answer, the three captions and the image, all from the same received
symbols) → MTSC sink, whose ack sends the next item (stop-and-wait).

Prints per item the receiver's SNR estimate, the status, the answer beside the question and
the truth, and the captions; writes results.csv (one row per item and task: prediction,
reference, status) and the reconstructed images (<item>_rec.png) to --out. Exit status 0 when
every item got through, 1 otherwise.

Example:  python3 apps/mtsc_link.py --snr 0 --k-factor 3 --limit 4
"""
import argparse
import csv
import math
import os
import sys
import time

from gnuradio import semcom
from gnuradio.semcom.blocks.grlog import gr_log_option
from gnuradio.semcom.blocks.mtsc_link import MtscLinkConfig, run_mtsc_link

TASKS = ("vqa", "caption_image", "caption_audio", "caption_video", "reconstruction")
FIELDS = ("item_id", "seed", "task", "status", "snr_est_db", "tx_snr_db", "channel_uses", "prediction", "reference",
          "file", "latency_s")


def options(ap: argparse.ArgumentParser):
    """The options of apps/mtsc_link.grc (same names), plus the headless ones."""
    ap.add_argument("--snr", type=float, default=6.0, help="channel SNR, Es/N0 per channel use [dB] (default 6)")
    ap.add_argument("--channel", default="rician", choices=("rician", "awgn", "rayleigh"),
                    help="channel model (default rician; flat fading with fD*Ts --fdts)")
    ap.add_argument("--k-factor", type=float, default=3.0, help="Rician K factor, linear (default 3)")
    ap.add_argument("--items", default="multitask:test:8", help="multitask:SPLIT[:N] (default multitask:test:8)")
    ap.add_argument("--limit", type=int, default=0, help="use the first N items, 0 = all (default 0)")
    ap.add_argument("--budget", type=int, default=1024, help="complex channel uses per item (default 1024)")
    ap.add_argument("--rate", default="adaptive", choices=("adaptive", "fixed"), help="rate coder (default adaptive)")
    ap.add_argument("--system", default="mtsc", choices=("mtsc", "udeepsc"),
                    help="mtsc (LAM-based) or udeepsc (the baseline without a LAM)")
    ap.add_argument("--models", default="", help="models directory ('' = the shipped models)")
    ap.add_argument("--out", default="received_mtsc", help="folder for results.csv and the images "
                                                           "(default ./received_mtsc)")
    ap.add_argument("--profile", default="wide256", choices=sorted(semcom.phy.PROFILES), help="OFDM profile")
    ap.add_argument("--fdts", type=float, default=1e-5, help="normalised Doppler fD*Ts of the fading channels")
    ap.add_argument("--seed", type=int, default=0, help="channel seed (default 0)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="stop after this many seconds in any case [s]")


def config(a) -> MtscLinkConfig:
    """The link configuration of the parsed options; bad values exit with a clear error."""
    if a.limit < 0 or a.budget < 1:
        raise SystemExit("error: --limit must be >= 0 and --budget >= 1")
    if not math.isfinite(a.snr) or not a.k_factor >= 0:
        raise SystemExit("error: --snr must be finite and --k-factor >= 0")
    items = a.items
    try:
        seeds = semcom.parse_items(items)
        if a.limit:
            split = items.split(":")[1]
            items = f"multitask:{split}:{min(a.limit, len(seeds))}"
        semcom.mtsc_codec(a.models, a.system, a.budget, a.rate)  # missing models or a bad budget fail here
    except (ValueError, OSError, KeyError) as e:
        raise SystemExit(f"error: {e}")
    return MtscLinkConfig(items=items, snr_db=a.snr, channel=a.channel, k=a.k_factor, profile=a.profile,
                          models=a.models, prefix=a.system, budget=a.budget, rate=a.rate, tx_snr_db=a.snr,
                          seed=a.seed, fdts=a.fdts)


def write_outputs(rows, out):
    """results.csv (one row per item and task) and <item>_rec.png; returns the CSV path."""
    from PIL import Image

    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "results.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            it = r["item"]
            for task in TASKS:
                rec = dict(item_id=r["item_id"], seed=it.seed, task=task, status=r.get(f"{task}_status", ""),
                           snr_est_db=r["snr_est_db"], tx_snr_db=r["tx_snr_db"], channel_uses=r["channel_uses"],
                           latency_s=r.get(f"{task}_latency_s", ""))
                if task == "reconstruction":
                    img = r.get("reconstruction")
                    if img is not None:
                        rec["file"] = f"item{it.seed}_rec.png"
                        Image.fromarray(img).save(os.path.join(out, rec["file"]))
                else:
                    rec.update(prediction=r.get(task, ""), reference=" | ".join(it.references(task)))
                w.writerow(rec)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    options(ap)
    gr_log_option(ap)
    a = ap.parse_args(argv)
    cfg = config(a)
    print(f"semcom LAM multi-task link: {cfg.items}, {a.system} ({a.rate} rate, {a.budget} channel uses per item), "
          f"channel {a.channel}" + (f" K={a.k_factor:g}" if a.channel == "rician" else "") + f" at {a.snr:g} dB",
          flush=True)
    t0 = time.time()
    res = run_mtsc_link(cfg, timeout_s=a.timeout)
    rows = res["rows"]
    for r in rows:
        it = r["item"]
        print(f"item{it.seed} snr_est_db={r['snr_est_db']:.2f} status={r.get('vqa_status', '')} "
              f"channel_uses={r['channel_uses']}", flush=True)
        print(f"  Q: {it.question}  A: \"{r.get('vqa', '')}\" (truth: {it.answer})")
        for task in ("caption_image", "caption_audio", "caption_video"):
            print(f"  {task}: \"{r.get(task, '')}\"")
    csv_path = write_outputs(rows, a.out)
    lost = sum(r.get("vqa_status") == "lost" for r in rows)
    bad = sum(r.get("vqa_status") == "bad_input" for r in rows)
    right = sum(r.get("vqa", "") == r["item"].answer for r in rows)
    print(f"--- {len(rows) - lost}/{len(rows)} frames received, lost {lost}, refused {bad}, header failures "
          f"{res['header_failures']}; VQA {right}/{len(rows)} right; {time.time() - t0:.1f} s")
    print(f"results: {os.path.abspath(a.out)}  ({os.path.basename(csv_path)})")
    return 0 if rows and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
