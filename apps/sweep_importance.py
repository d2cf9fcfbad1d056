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
from gnuradio.semcom.blocks.grlog import gr_log_option  # noqa: E402

LABELS = {"psnr_in": "PSNR inside the mask (dB)", "psnr_bg": "PSNR of the background (dB)",
          "psnr": "overall PSNR (dB)", "iou": "IoU of the received mask vs the original's"}


def _num(v) -> float:
    return float("nan") if v in ("", None) else float(v)


def _examples(rows, data, size, out_dir, limit=12):
    """Report rows: per case the original, then every received image (mask overlay when sent),
    one grid column per (weight, SNR, channel); thumbnails link to the saved PNG."""
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
        img, href = None, ""
        if report.received(r) and shown and os.path.exists(shown):
            with Image.open(shown) as im:
                img = np.asarray(im.convert("RGB"))
            href = os.path.relpath(os.path.abspath(shown), os.path.abspath(out_dir)).replace(os.sep, "/")
        column = f"w {_num(r['weight']):g}, {_num(r['snr_db']):g} dB {r['channel']}".replace("-", "−") + (
            f", seed {r['seed']}" if len({x['seed'] for x in rows}) > 1 else "")
        cap = (f"in {_num(r['psnr_in']):.1f} / bg {_num(r['psnr_bg']):.1f} dB, IoU {_num(r['iou']):.2f}"
               if img is not None else "not counted in the means")
        out[key]["cells"].append((cap, img, dict(column=column, href=href, status=str(r.get("status", "")))))
    return list(out.values())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="semcom_importance", help="output folder")
    options(ap)
    gr_log_option(ap)
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
        lines, lost = defaultdict(list), defaultdict(list)
        for m in summary:
            label = f"{m['channel']} {m['snr_db']:g} dB"
            if m["received"] == 0:  # nothing received: marked apart, not on the line
                lost[label].append(m["weight"])
                lines.setdefault(label, [])  # keeps the label's colour
            elif np.isfinite(m[metric]):
                lines[label].append((m["weight"], m[metric]))
        png = report.plot_lines(lines, "importance weight (critical : background channel uses per pixel)",
                                LABELS[metric] + " ↑", f"MLLM-SC: {LABELS[metric]}", lost=lost)
        with open(os.path.join(a.out, f"{metric}_vs_weight.png"), "wb") as f:
            f.write(png)
        plots.append((LABELS[metric], png))

    def cell(m, key, fmt):
        return "lost" if m["received"] == 0 else f"{m[key]:{fmt}}" if np.isfinite(m[key]) else "–"

    table = (["channel", "SNR (dB)", "weight", "received", "PSNR in mask (dB) ↑", "PSNR background (dB) ↑",
              "PSNR (dB) ↑", "IoU ↑", "nothing received"],
             [[m["channel"], f"{m['snr_db']:g}", f"{m['weight']:g}", f"{m['received']}/{m['n']}",
               cell(m, "psnr_in", ".2f"), cell(m, "psnr_bg", ".2f"), cell(m, "psnr", ".2f"), cell(m, "iou", ".3f"),
               f"{m['lost']} lost" if m["lost"] else "0"] for m in summary])
    config = {k: v for k, v in vars(a).items() if k != "quiet"}
    page = report.html_report("gr-semcom: MLLM-SC importance-aware image link", config, (),
                              _examples(rows, a.data, a.size, a.out), plots, notes=["Budget fixed per image (side information included); the mask is the "
                                            "guidance segmenter's on the original image; received images show the "
                                            "importance map the frame header carried (red tint). Means are over the "
                                            "received runs; runs with nothing received (lost frame, failed "
                                            "decode) are counted apart (red X in the plots). ↑: higher is better."],
                              table=table)
    path = os.path.join(a.out, "report.html")
    with open(path, "w") as f:
        f.write(page)
    print(summary_table(rows))
    print(f"csv: {os.path.abspath(csv_path)}\nreport: {os.path.abspath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
