#!/usr/bin/env python3
"""MLLM-SC sweep, single process, headless: images × questions × importance weight × SNR × channel.

Runs the cases of ``eval_importance.py`` through the GNU Radio importance link and writes
``<out>/results.csv`` (resumable: a rerun skips the points already there), plots of PSNR in
the critical mask, PSNR of the background, overall PSNR and mask IoU against the importance
weight (one line per channel and SNR), and ``<out>/report.html`` with the table, the plots
and every case's original, received images and mask overlays.

Example:  python3 apps/sweep_importance.py --out imp_sweep --snr 0 5 10 --channel awgn rayleigh
"""
import argparse
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
from eval_importance import FIELDS, METRICS, case_source, evaluate, options, point_key, summarize, summary_table  # noqa: E402

from gnuradio.semcom import report  # noqa: E402
from gnuradio.semcom.images import load_images  # noqa: E402

LABELS = {"psnr_in": "PSNR inside the mask (dB)", "psnr_bg": "PSNR of the background (dB)",
          "psnr": "overall PSNR (dB)", "iou": "IoU of the received mask vs the original's"}


def _num(v) -> float:
    return float("nan") if v in ("", None) else float(v)


def _examples(rows, data, size, limit=12):
    """Report rows: per case the original, then every received image (mask overlay when sent)."""
    from PIL import Image

    out = {}
    for r in rows:
        key = (r["image"], r["question"])
        if key not in out:
            if len(out) >= limit:
                continue
            out[key] = dict(name=f"{r['image']}: {r['question']} → {r['target']}",
                            original=load_images(case_source(data, r["image"]), size).items[0].pixels, cells=[])
        f = str(r.get("file") or "")
        shown = f[:-4] + "_mask.png" if f and os.path.exists(f[:-4] + "_mask.png") else f
        img = None
        if shown and os.path.exists(shown):
            with Image.open(shown) as im:
                img = np.asarray(im.convert("RGB"))
        out[key]["cells"].append((f"w {_num(r['weight']):g}, {_num(r['snr_db']):g} dB {r['channel']}: in "
                                  f"{_num(r['psnr_in']):.1f} / bg {_num(r['psnr_bg']):.1f} dB", img))
    return list(out.values())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="semcom_importance", help="output folder")
    options(ap)
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    a.images_out = a.images_out or os.path.join(os.path.abspath(a.out), "images")
    csv_path = os.path.join(a.out, "results.csv")
    done = {point_key(r) for r in report.read_rows(csv_path)} if os.path.exists(csv_path) else set()
    print(f"sweep: {len(done)} points already in {csv_path}")
    try:
        evaluate(a, on_row=lambda row: report.write_rows([row], csv_path, append=True, fields=FIELDS), done=done)
    except ValueError as e:
        ap.error(str(e))
    rows = report.read_rows(csv_path)
    summary = summarize(rows)
    plots = []
    for metric in METRICS:
        lines = defaultdict(list)
        for m in summary:
            lines[f"{m['channel']} {m['snr_db']:g} dB"].append((m["weight"], m[metric]))
        png = report.plot_lines(lines, "importance weight (critical : background channel uses per pixel)",
                                LABELS[metric], f"MLLM-SC: {LABELS[metric]}")
        with open(os.path.join(a.out, f"{metric}_vs_weight.png"), "wb") as f:
            f.write(png)
        plots.append((LABELS[metric], png))
    table = (["channel", "SNR (dB)", "weight", "PSNR in mask", "PSNR background", "PSNR", "IoU", "runs"],
             [[m["channel"], f"{m['snr_db']:g}", f"{m['weight']:g}", f"{m['psnr_in']:.2f}", f"{m['psnr_bg']:.2f}",
               f"{m['psnr']:.2f}", f"{m['iou']:.3f}", m["n"]] for m in summary])
    config = {k: v for k, v in vars(a).items() if k != "quiet"}
    page = report.html_report("gr-semcom: MLLM-SC importance-aware image link", config, (), _examples(rows, a.data, a.size),
                              plots, notes=["Budget fixed per image (side information included); the mask is the "
                                            "guidance segmenter's on the original image; received images show the "
                                            "importance map the frame header carried (red tint)."], table=table)
    path = os.path.join(a.out, "report.html")
    with open(path, "w") as f:
        f.write(page)
    print(summary_table(rows))
    print(f"csv: {os.path.abspath(csv_path)}\nreport: {os.path.abspath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
