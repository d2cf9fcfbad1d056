#!/usr/bin/env python3
"""LAM multi-task evaluation through GNU Radio: one row per (item, task, system, SNR, seed).

Every system crosses the same OFDM PHY (``ofdm_tx`` → channel → ``ofdm_rx``, the receiver's own
CSI) with the same test items of the multi-task benchmark (``semcom.datasets.multitask``: an
image, a question, an audio clip and a video clip each), and serves the five tasks ``vqa``,
``caption_image``, ``caption_audio``, ``caption_video``, ``reconstruction``:

* ``mtsc``: the LAM-based link (``mtsc_encoder`` → … → ``mtsc_decoder``, the flowgraph of
  ``apps/mtsc_link.py``): one transmission of ``--budget`` channel uses per item, the
  importance-aware variable-rate coder allocating for the SNR the receiver reported on the
  previous frame (``--rate fixed``: the fixed-rate coder at the same budget);
* ``baseline2_udeepsc``: SemCom without a LAM (U-DeepSC-like: per-modality encoders trained
  from scratch with the channel, one fixed rate), same flowgraph and budget;
* ``baseline1_separation``: the LAM without SemCom (``semcom.codecs.mtsc_separation``): image
  and video by the separation codec, question as UTF-8 and audio as Opus, each + CRC + LDPC +
  QAM at the best MCS for the SNR, one frame per modality, then the LAM on what arrived. Its
  MCS follows the mean SNR the receiver estimated on ``--soundings`` sounding frames sent first
  at each point (a link's slow adaptation loop).

Metrics: ``bleu`` — sentence BLEU (sacrebleu, 0…100) against the references (for VQA, the
paper's BLEU-based answer accuracy); ``exact`` — 1 when the prediction equals a reference
(after lower-casing and dropping punctuation); ``cider`` — CIDEr-D (pycocoevalcap) of the
item, with document frequencies from the references of all items at the same (task, system,
SNR, seed); ``psnr``/``ssim`` of the reconstructed image against the source image (64 × 64).
``status`` is the receiver's (``semcom.codecs.mtsc.STATUSES``, "lost", "bad_input"; for
baseline 1 the statuses of its four frames). ``channel_uses``: the item's whole transmission
(all tasks share it), side information included.

Rows of points already in the CSV are kept and those points skipped (resumable).

Example:  python3 apps/eval_mtsc.py --out mtsc.csv --limit 20 --snr -6 0 6 12
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys

import numpy as np

from gnuradio.semcom.blocks.grlog import gr_log_option

FIELDS = ("item", "task", "system", "channel", "k_factor", "snr_db", "seed", "status", "channel_uses", "prediction",
          "reference", "bleu", "exact", "cider", "psnr", "ssim", "snr_est_db", "tx_snr_db", "rate", "source_psnr",
          "latency_s", "file")
SYSTEMS = ("mtsc", "baseline1_separation", "baseline2_udeepsc")
TASKS = ("vqa", "caption_image", "caption_audio", "caption_video", "reconstruction")
SNRS = tuple(float(s) for s in range(-6, 19, 3))
NUMERIC = ("k_factor", "snr_db", "bleu", "exact", "cider", "psnr", "ssim", "snr_est_db", "tx_snr_db", "source_psnr",
           "latency_s")


def options(ap: argparse.ArgumentParser, limit: int = 20):
    """The options shared by eval_mtsc and sweep_mtsc."""
    ap.add_argument("--snr", type=float, nargs="+", default=list(SNRS), help="channel SNRs, Es/N0 per channel use [dB]")
    ap.add_argument("--channel", default="rician", choices=("rician", "awgn", "rayleigh"), help="channel model")
    ap.add_argument("--k-factor", type=float, default=3.0, help="Rician K factor (linear)")
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS, help="systems to run")
    ap.add_argument("--limit", type=int, default=limit, help="test-split items (the first N)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="channel seeds")
    ap.add_argument("--budget", type=int, default=1024, help="channel uses per item of mtsc and baseline 2")
    ap.add_argument("--rate", default="adaptive", choices=("adaptive", "fixed"), help="rate coder of mtsc")
    ap.add_argument("--models", default="", help="models directory ('' = the shipped models)")
    ap.add_argument("--profile", default="wide256", help="OFDM profile (semcom.phy.params)")
    ap.add_argument("--soundings", type=int, default=4, help="baseline 1: sounding frames per point for its MCS")
    ap.add_argument("--images-dir", default="", help="save every reconstructed image here (PNG)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")


def _norm(text: str) -> str:
    from gnuradio.semcom.metrics.text import cider_tokens

    return cider_tokens(text)


def _cfg(a, system, snr, seed):
    from gnuradio.semcom.blocks.mtsc_link import MtscLinkConfig

    prefix = "udeepsc" if system == "baseline2_udeepsc" else "mtsc"
    rate = a.rate if system == "mtsc" else "fixed"
    return MtscLinkConfig(items=f"multitask:test:{a.limit}", snr_db=snr, channel=a.channel, k=a.k_factor,
                          profile=a.profile, models=a.models, prefix=prefix, budget=a.budget, rate=rate,
                          tx_snr_db=snr, seed=seed)


def run_link(a, system, snr, seed) -> list[dict]:
    """mtsc / baseline 2 through the multi-task flowgraph → one result per item."""
    from gnuradio.semcom.blocks.mtsc_link import run_mtsc_link

    cfg = _cfg(a, system, snr, seed)
    res = run_mtsc_link(cfg)
    out = []
    for r in res["rows"]:
        pred = {t: r.get(t) for t in TASKS}
        status = {t: r.get(f"{t}_status", "lost") for t in TASKS}
        out.append(dict(item=r["item"], pred=pred, status=status, channel_uses=r["channel_uses"],
                        snr_est_db=r.get("snr_est_db", math.nan), tx_snr_db=r.get("tx_snr_db", math.nan),
                        latency_s=r.get(f"{TASKS[0]}_latency_s", math.nan), rate=cfg.rate))
    return out


def run_separation(a, snr, seed) -> list[dict]:
    """Baseline 1: four digital frames per item through the PHY, then the LAM on what arrived."""
    import time

    from gnuradio.semcom.blocks.mtsc import mtsc_codec
    from gnuradio.semcom.blocks.vlf_link import run_frames
    from gnuradio.semcom.codecs import Csi
    from gnuradio.semcom.codecs.mtsc_separation import FRAMES, MtscSeparation
    from gnuradio.semcom.datasets import media, multitask

    cfg = _cfg(a, "baseline1_separation", snr, seed)
    cfg.frame_timeout_s = 1.0
    rng = np.random.default_rng([seed, 77])
    sounding = [(0, ((rng.standard_normal(1024) + 1j * rng.standard_normal(1024)) / np.sqrt(2)).astype(np.complex64),
                 b"") for _ in range(max(1, a.soundings))]
    got = run_frames(sounding, cfg)
    est = [m["snr_est_db"] for m, _ in (g for g in got if g is not None)]
    tx_snr = float(10 * np.log10(np.mean(10 ** (np.asarray(est) / 10)))) if est else snr
    sep = MtscSeparation()
    lam = mtsc_codec(a.models, "mtsc")
    items = [multitask.item(s) for s in media.split_seeds("test", a.limit)]
    frames, spans, uses = [], [], []
    for it in items:
        enc = sep.encode(it.image, it.question, it.audio.audio, it.audio.sample_rate, it.video.frames, tx_snr)
        spans.append(len(frames))
        frames += [(sep.codec_id, enc[k][0], enc[k][1]) for k in FRAMES]
        uses.append(sep.channel_uses(enc))
    cfg.seed = seed + 1000  # the data frames see other channel noise than the soundings
    got = run_frames(frames, cfg)
    out = []
    for it, k0, n_uses in zip(items, spans, uses):
        rec = {}
        for j, kind in enumerate(FRAMES):
            g = got[k0 + j]
            if g is None:
                rec[kind] = None
                continue
            meta, y = g
            side = bytes(np.asarray(meta.get("side_info", []), np.uint8))
            csi = Csi.from_meta(meta, y.size)
            rec[kind] = (csi.unbias(y, meta.get("equalizer", "zf")), side, csi)
        t0 = time.perf_counter()
        src = sep.decode(rec, it.audio.audio.size)
        st = dict(sep.last_status)
        feeds = lam.prepare(src["image"], src["question"], src["audio"], src["video"], strict=False)
        pred = lam.decode_clean(feeds)
        if st["question"] != "ok":
            pred["vqa"] = ""
        from gnuradio.semcom.metrics import image as im

        status = {t: ("ok" if all(v == "ok" for v in st.values()) else
                      "/".join(f"{k}:{v}" for k, v in st.items() if v != "ok")) for t in TASKS}
        ests = [got[k0 + j][0]["snr_est_db"] for j in range(len(FRAMES)) if got[k0 + j] is not None]
        out.append(dict(item=it, pred=pred, status=status, channel_uses=n_uses,
                        snr_est_db=float(np.mean(ests)) if ests else math.nan, tx_snr_db=tx_snr,
                        latency_s=time.perf_counter() - t0, rate="mcs",
                        source_psnr=float(im.psnr(it.image, src["image"])) if st["image"] == "ok" else math.nan))
    return out


def score(results, system, a, snr, seed) -> list[dict]:
    """Results of one point → CSV rows (CIDEr over the point's items per caption task)."""
    from gnuradio.semcom.metrics import image as im
    from gnuradio.semcom.metrics.text import cider, sentence_bleu

    rows = []
    for task in TASKS:
        part = []
        for r in results:
            it = r["item"]
            row = dict(item=it.seed, task=task, system=system, channel=a.channel,
                       k_factor=a.k_factor if a.channel == "rician" else math.nan, snr_db=snr, seed=seed,
                       status=r["status"][task], channel_uses=r["channel_uses"], snr_est_db=r["snr_est_db"],
                       tx_snr_db=r["tx_snr_db"], rate=r["rate"], latency_s=r["latency_s"],
                       source_psnr=r.get("source_psnr", math.nan))
            p = r["pred"].get(task)
            if task == "reconstruction":
                if isinstance(p, np.ndarray) and p.size:
                    row.update(psnr=float(im.psnr(it.image, p)), ssim=float(im.ssim(it.image, p)))
                    if getattr(a, "images_dir", ""):
                        from PIL import Image

                        d = os.path.join(a.images_dir, system, f"{a.channel}_snr{snr:g}_seed{seed}")
                        os.makedirs(d, exist_ok=True)
                        row["file"] = os.path.join(d, f"item{it.seed}.png")
                        Image.fromarray(p).save(row["file"])
                else:  # nothing decoded: scored as a mid-grey image
                    grey = np.full_like(it.image, 128)
                    row.update(psnr=float(im.psnr(it.image, grey)), ssim=float(im.ssim(it.image, grey)))
            else:
                refs = it.references(task)
                text = p if isinstance(p, str) else ""
                row.update(prediction=text, reference=" | ".join(refs), bleu=sentence_bleu(text, refs),
                           exact=float(_norm(text) in {_norm(x) for x in refs}))
                part.append((row, text, refs))
            rows.append(row)
        if part:
            _, per = cider([t for _, t, _ in part], [r for _, _, r in part])
            for (row, _, _), c in zip(part, per):
                row["cider"] = float(c)
    return rows


def point_key(row) -> tuple:
    return (str(row["system"]), str(row["channel"]), round(float(row["snr_db"]), 3), int(row["seed"]))


def read_csv(path: str) -> list[dict]:
    """Rows of an eval CSV, numbers parsed (empty cells → NaN)."""
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            for k in NUMERIC:
                r[k] = float(r[k]) if r.get(k) not in (None, "") else math.nan
            r["seed"], r["channel_uses"], r["item"] = int(r["seed"]), int(float(r["channel_uses"] or 0)), int(r["item"])
            out.append(r)
    return out


def run(a, on_rows=None) -> list[dict]:
    """The whole grid (points already in ``a.out`` skipped); returns the new CSV rows."""
    from tqdm import tqdm

    from gnuradio.semcom import report

    done = {point_key(r) for r in read_csv(a.out)} if os.path.exists(a.out) else set()
    grid = [(s, float(snr), sd) for snr in a.snr for sd in a.seeds for s in a.systems]
    todo = [g for g in grid if (g[0], a.channel, round(g[1], 3), g[2]) not in done]
    new = []
    bar = tqdm(todo, desc="mtsc eval", unit="point", disable=a.quiet, dynamic_ncols=True)
    for system, snr, seed in bar:
        bar.set_postfix_str(f"{system} {snr:g} dB")
        res = run_separation(a, snr, seed) if system == "baseline1_separation" else run_link(a, system, snr, seed)
        rows = score(res, system, a, snr, seed)
        report.write_rows(rows, a.out, append=True, fields=FIELDS)
        new += rows
        if on_rows is not None:
            on_rows(rows)
    return new


def summarize(rows) -> list[dict]:
    """Mean per (system, task, SNR) over items and seeds: bleu, exact, cider, psnr, ssim,
    channel uses and the share of items decoded ("ok")."""
    from collections import defaultdict

    groups = defaultdict(list)
    for r in rows:
        groups[(r["system"], r["task"], float(r["snr_db"]))].append(r)
    out = []
    for (system, task, snr), rs in sorted(groups.items()):
        s = dict(system=system, task=task, snr_db=snr, n=len(rs), ok=float(np.mean([r["status"] == "ok" for r in rs])),
                 channel_uses=float(np.mean([r["channel_uses"] for r in rs])))
        for m in ("bleu", "exact", "cider", "psnr", "ssim"):
            v = [float(r[m]) for r in rs if r[m] not in ("", None) and math.isfinite(float(r[m]))]
            s[m] = float(np.mean(v)) if v else math.nan
        out.append(s)
    return out


def format_summary(summary) -> str:
    cols = ("system", "task", "snr_db", "n", "ok", "channel_uses", "bleu", "exact", "cider", "psnr", "ssim")
    lines = ["  ".join(f"{c:>20}" if c in ("system", "task") else f"{c:>12}" for c in cols)]
    for s in summary:
        lines.append("  ".join((f"{s[c]:>20}" if c in ("system", "task") else
                                f"{s[c]:>12.4g}" if isinstance(s[c], (float, np.floating)) else f"{s[c]!s:>12}")
                               for c in cols))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="CSV file (appended; points already there are skipped)")
    options(ap)
    gr_log_option(ap)
    a = ap.parse_args(argv)
    if a.limit < 1:
        ap.error("--limit must be >= 1")
    run(a)
    print(format_summary(summarize(read_csv(a.out))))
    print(f"csv: {os.path.abspath(a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
