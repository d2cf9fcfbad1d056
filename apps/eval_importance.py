#!/usr/bin/env python3
"""MLLM-SC scenario I evaluation: question-guided, importance-aware image link through GNU Radio.

For every case (image, question, target phrase) of the cases file, every importance weight
and every SNR, the image goes through the GNU Radio flowgraph image source →
semantic_guidance → semantic_encoder (importance_jscc) → OFDM TX → channel → OFDM RX →
semantic_decoder → image sink, at one fixed channel-use budget ρ. One CSV row per (image,
question, weight, SNR, channel) with PSNR inside the critical mask, of the background and
overall, and the IoU of the segmenter's mask on the received image against its mask on the
original (the IoU degeneration). The mask is the guidance segmenter's, on the original.

Cases file: CSV with columns ``image,question,target``; ``image`` is a file name under
--data, or ``sample:<name>`` for scikit-image's sample photos. ``apps/importance_cases.csv``
covers the images gr-semcom ships (with the MLLM-SC paper's "What is across the sea?");
``apps/importance_cases_set5.csv`` covers Set5.

Example:  python3 apps/eval_importance.py --data ../shared/data/val --cases apps/importance_cases_set5.csv --out imp.csv
"""
import argparse
import csv
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from gnuradio.semcom import report  # noqa: E402
from gnuradio.semcom.blocks.image_link import CHANNELS, LinkConfig, parse_rate, run_image_link  # noqa: E402
from gnuradio.semcom.codecs import make_codec  # noqa: E402
from gnuradio.semcom.guidance import make_segmenter  # noqa: E402
from gnuradio.semcom.images import load_images  # noqa: E402
from gnuradio.semcom.metrics import iou, psnr  # noqa: E402
from gnuradio.semcom.blocks.grlog import gr_log_option  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIELDS = ("image", "question", "target", "weight", "snr_db", "channel", "rho", "seed", "status", "snr_est_db",
          "psnr", "psnr_in", "psnr_bg", "iou", "coverage", "guidance_ms", "policy", "fallback", "file")


def read_cases(path: str) -> list[dict]:
    """Cases CSV → list of dicts (image, question, target); ValueError when malformed or empty."""
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if any((v or "").strip() for v in r.values())]
    if not rows:
        raise ValueError(f"no cases in {path}")
    missing = {"image", "question", "target"} - set(rows[0])
    if missing:
        raise ValueError(f"cases file {path} lacks column(s): {', '.join(sorted(missing))}")
    return [{k: (r[k] or "").strip() for k in ("image", "question", "target")} for r in rows]


def case_source(data: str, image: str) -> str:
    if image.startswith("sample:"):
        return image
    for base in (data, HERE):
        p = os.path.join(base, image) if base else image
        if os.path.isfile(p):
            return p
    raise ValueError(f"case image {image!r} not found under {data or '.'} or {HERE}")


def case_id(case) -> str:
    """File-name-safe, stable identity of a case: image stem, question (shortened) and a short
    hash of (image, question, target), e.g. ``coffee_How_full_is_the_cup_of_coffee_3fa2c1``."""
    import hashlib
    import re

    def slug(text, n):
        return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:n].rstrip("_")

    stem = slug(os.path.splitext(os.path.basename(case["image"].split(":", 1)[-1]))[0], 24) or "image"
    digest = hashlib.sha1("\0".join((case["image"], case["question"], case["target"])).encode()).hexdigest()[:6]
    return "_".join(x for x in (stem, slug(case["question"], 40), digest) if x)


def point_dir(images_out: str, case, weight: float, seed: int) -> str:
    """Folder of one point's received images: ``<images_out>/<case_id>/w<weight>_seed<seed>``; the
    image sink's file names add the codec, SNR and channel, so every point has its own files."""
    return os.path.join(images_out, case_id(case), f"w{weight:g}_seed{seed}")


def options(ap):
    ap.add_argument("--data", default="", help="folder the cases' image names are relative to")
    ap.add_argument("--cases", default=os.path.join(HERE, "importance_cases.csv"), help="cases CSV")
    ap.add_argument("--weights", type=float, nargs="+", default=[1.0, 2.33, 4.0], help="importance weights")
    ap.add_argument("--snr", type=float, nargs="+", default=[0.0, 5.0, 10.0], help="channel SNRs (dB)")
    ap.add_argument("--channel", nargs="+", default=["awgn"], choices=CHANNELS)
    ap.add_argument("--rho", default="1/12", help="total channel-use budget ρ (side information included)")
    ap.add_argument("--size", type=int, default=256, help="centre-crop and resize to size×size (0 = native)")
    ap.add_argument("--segmenter", default="embedded", help='"embedded" or "clipseg:<models dir>"')
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--profile", default="wide256")
    ap.add_argument("--images-out", default="",
                    help="folder for the received images, one subfolder per case / weight / seed "
                         "(default: next to --out)")
    ap.add_argument("--quiet", action="store_true")


def point_key(row) -> tuple:
    """Identity of an evaluation point (image, question, weight, SNR, channel, seed)."""
    return (str(row["image"]), str(row["question"]), round(float(row["weight"]), 3), round(float(row["snr_db"]), 3),
            str(row["channel"]), int(row["seed"]))


def evaluate(a, on_row=None, done=frozenset()) -> list[dict]:
    """Run every (case, weight, SNR, channel, seed) through GNU Radio, except the points whose
    ``point_key`` is in ``done``; returns the new rows."""
    from tqdm import tqdm

    rate = parse_rate(a.rho)
    codec = make_codec("importance_jscc", rate)
    seg = make_segmenter(a.segmenter)
    cases = read_cases(a.cases)
    points = [(c, w, s, ch, sd) for c in cases for w in a.weights for s in a.snr for ch in a.channel for sd in a.seeds
              if point_key(dict(c, weight=w, snr_db=s, channel=ch, seed=sd)) not in done]
    rows, ref_cache = [], {}
    bar = tqdm(points, desc="importance link", unit="run", disable=a.quiet, dynamic_ncols=True)
    for case, weight, snr, channel, seed in bar:
        src = case_source(a.data, case["image"])
        key = (src, case["target"])
        if key not in ref_cache:
            pixels = load_images(src, a.size).items[0].pixels
            heat = seg.heatmap(pixels, case["target"]) if case["target"] else np.zeros(pixels.shape[:2], np.float32)
            ref_cache[key] = (pixels, heat >= 0.5)
        pixels, mask = ref_cache[key]
        cfg = LinkConfig(codec="importance_jscc", rate=rate, snr_db=snr, channel=channel, images=src, size=a.size,
                         profile=a.profile, seed=seed, out_dir=point_dir(a.images_out, case, weight, seed),
                         segmenter=a.segmenter, question=case["question"], target=case["target"], weight=weight)
        res = run_image_link(cfg, codec)
        r = res["rows"][0]
        row = dict(image=case["image"], question=case["question"], target=case["target"], weight=weight, snr_db=snr,
                   channel=channel, rho=rate, seed=seed, status=r["status"], snr_est_db=r["snr_est_db"],
                   psnr=r["psnr"], psnr_in=np.nan, psnr_bg=np.nan, iou=np.nan, coverage=float(mask.mean()),
                   guidance_ms=r.get("guidance_ms", np.nan), policy=r.get("policy", ""),
                   fallback=r.get("fallback", ""), file=r.get("file", ""))
        if row["file"]:
            from PIL import Image

            with Image.open(row["file"]) as im:
                got = np.asarray(im.convert("RGB"))
            row.update(psnr_in=psnr(pixels, got, mask=mask), psnr_bg=psnr(pixels, got, mask=~mask))
            if case["target"]:
                row["iou"] = iou(mask, seg.heatmap(got, case["target"]) >= 0.5)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


METRICS = ("psnr_in", "psnr_bg", "psnr", "iou")


def summarize(rows) -> list[dict]:
    """Per (channel, SNR, weight): ``n`` runs, ``received`` (status "ok"), ``lost`` (nothing
    received: lost frame, failed decode) and the mean of the ``METRICS`` over the received runs
    only (NaN when none was received)."""
    out = []
    for ch, s, w in sorted({(str(r["channel"]), float(r["snr_db"]), float(r["weight"])) for r in rows}):
        sel = [r for r in rows if (str(r["channel"]), float(r["snr_db"]), float(r["weight"])) == (ch, s, w)]
        ok = [r for r in sel if report.received(r)]
        m = {k: report.mean_finite(r[k] for r in ok) for k in METRICS}
        out.append(dict(channel=ch, snr_db=s, weight=w, n=len(sel), received=len(ok), lost=len(sel) - len(ok), **m))
    return out


def summary_table(rows) -> str:
    """``summarize`` as a fixed-width text table (means over the received runs; ↑ higher is better)."""
    out = ["channel  SNR  weight  PSNR_in↑ PSNR_bg↑  PSNR↑   IoU↑  received"]
    for m in summarize(rows):
        if m["received"] == 0:
            vals = f"{'lost':>8} {'lost':>8} {'lost':>6} {'lost':>6}"
        else:
            vals = f"{m['psnr_in']:8.2f} {m['psnr_bg']:8.2f} {m['psnr']:6.2f} {m['iou']:6.3f}"
        out.append(f"{m['channel']:<7}{m['snr_db']:5.1f} {m['weight']:6.2f}  {vals}  {m['received']}/{m['n']}"
                   + (f" ({m['lost']} lost)" if m["lost"] else ""))
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="CSV to write")
    options(ap)
    gr_log_option(ap)
    a = ap.parse_args(argv)
    a.images_out = a.images_out or os.path.splitext(os.path.abspath(a.out))[0] + "_images"
    try:
        rows = evaluate(a)
    except ValueError as e:
        ap.error(str(e))
    report.write_rows(rows, a.out, fields=FIELDS)
    print(summary_table(rows))
    print(f"csv: {os.path.abspath(a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
