"""VLF-MSC quality vs the number of queries N and their dimension d (a BCR sweep).

    PYTHONPATH=python .venv/bin/python -m semcom.train.vlf_bcr --out out/vlf_bcr \\
        --configs 32x768 8x768 32x192 2x768 32x48 --steps 900

The paper's stated future work: how the caption quality depends on the shape of the
vision-language feature. The feature is sent as ⌈N·d/2⌉ analog complex symbols, so N and d
set the bandwidth compression ratio BCR = N·d / (2·3·H·W) (1/16 for N = 32, d = 768 at
256 × 256). For each ``NxD`` in ``--configs`` this trains the embedded VLF encoder and caption
decoder (``semcom.train.vlf``, identical flags apart from ``--n-queries`` and ``--dim``, the
same seed, the same ``--steps``: an A/B at equal training), exports them to ONNX
(``semcom.train.export_vlf``, checked against torch) and measures them with ONNX Runtime on
``--n-eval`` test scenes at feature SNRs −5, 0, 5, 10 dB and clean, through the codec's channel
model (the AWGN link's per-symbol noise and LMMSE shrink, ``semcom.codecs.vlf.noisy_feature``).

Each configuration lives in ``<out>/N<N>_d<d>/`` (checkpoint, log, exported models,
``eval.json``); an interrupted sweep resumes where it stopped (training resumes from its
checkpoint, finished evaluations are kept). All configurations share one cache of EfficientNet
features (``--cache``, by default ``<out>/cache``). Outputs: ``<out>/bcr.csv`` (one row per
configuration and SNR), ``<out>/bcr.md`` (a table) and ``<out>/bcr.png`` (caption accuracy and
BLEU vs channel uses, one line per SNR and family: N varied at the first configuration's d,
d varied at its N).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import time

from ..codecs.vlf import feature_channel_uses as channel_uses

COLUMNS = ("n_queries", "dim", "channel_uses", "bcr_256", "steps", "snr_db", "caption_accuracy", "bleu",
           "shape", "colour", "size", "count", "relation", "train_min")
SOURCE_PIXELS = 3 * 256 * 256


def parse_config(text: str) -> tuple[int, int]:
    """'32x768' → (32, 768); ValueError otherwise."""
    try:
        n, d = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"configuration {text!r}: expected NxD, e.g. 32x768") from None
    if n < 1 or d < 2 or d % 2:
        raise ValueError(f"configuration {text!r}: N >= 1 and an even d >= 2 are needed")
    return n, d


def run_config(n, d, args, log=print) -> dict:
    from . import export_vlf, vlf

    work = os.path.join(args.out, f"N{n}_d{d}")
    models = os.path.join(work, "models")
    result = os.path.join(work, "eval.json")
    if os.path.exists(result):
        with open(result) as f:
            res = json.load(f)
        if res.get("steps") == args.steps and res.get("n") == args.n_eval:
            log(f"N={n} d={d}: kept {result}")
            return res
    log(f"N={n} d={d}: training {args.steps} steps in {work}")
    vlf.main(["--work", work, "--cache", args.cache, "--n-train", str(args.n_train), "--n-val", str(args.n_val),
              "--batch", str(args.batch), "--steps", str(args.steps),
              "--seed", str(args.seed), "--threads", str(args.threads), "--n-queries", str(n), "--dim", str(d),
              "--val-every", str(args.steps)])
    ckpt = os.path.join(work, "ckpt.pt")
    export_vlf.export(ckpt, models, feature_models_dir=args.models)
    log(f"N={n} d={d}: evaluating on {args.n_eval} test scenes")
    res = export_vlf.evaluate(models, args.n_eval, seed=args.seed, threads=args.threads)
    import torch

    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    res.update(steps=int(ck["step"]), train_min=ck["elapsed_s"] / 60, n_queries=n, dim=d)
    with open(result + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(result + ".tmp", result)
    return res


def rows_of(res: dict) -> list[dict]:
    n, d = res["n_queries"], res["dim"]
    out = []
    for key, r in res["snr"].items():
        a = r["accuracy"]
        out.append({"n_queries": n, "dim": d, "channel_uses": channel_uses(n, d),
                    "bcr_256": channel_uses(n, d) / SOURCE_PIXELS, "steps": res["steps"],
                    "snr_db": "clean" if key == "clean" else float(key), "caption_accuracy": a["overall"],
                    "bleu": r["bleu"], **{k: a[k] for k in ("shape", "colour", "size", "count", "relation")},
                    "train_min": round(res["train_min"], 1)})
    return out


def write_outputs(rows: list[dict], out: str) -> None:
    with open(os.path.join(out, "bcr.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    snrs = list(dict.fromkeys(r["snr_db"] for r in rows))
    cfgs = list(dict.fromkeys((r["n_queries"], r["dim"]) for r in rows))
    by = {(r["n_queries"], r["dim"], r["snr_db"]): r for r in rows}
    lab = [("clean" if s == "clean" else f"{s:g} dB") for s in snrs]
    lines = ["| N × d | channel uses | BCR (256²) | " + " | ".join(lab) + " |",
             "|---" * (3 + len(snrs)) + "|"]
    for n, d in cfgs:
        cu = channel_uses(n, d)
        cells = [f"{by[(n, d, s)]['caption_accuracy']:.3f} / {by[(n, d, s)]['bleu']:.1f}" for s in snrs]
        lines.append(f"| {n} × {d} | {cu} | 1/{SOURCE_PIXELS / cu:.0f} | " + " | ".join(cells) + " |")
    with open(os.path.join(out, "bcr.md"), "w") as f:
        f.write("caption attribute accuracy / BLEU per feature SNR\n\n" + "\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # two families through the first configuration: N varies at its d (solid), d varies at its N (dashed)
    n0, d0 = cfgs[0]
    fams = ((sorted(c for c in cfgs if c[1] == d0), "-", f"N varies, d = {d0}"),
            (sorted(c for c in cfgs if c[0] == n0), "--", f"d varies, N = {n0}"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in zip(axes, ("caption_accuracy", "bleu"), ("caption attribute accuracy", "BLEU")):
        for j, (s, name) in enumerate(zip(snrs, lab)):
            colour = f"C{j}"
            for fam, style, fam_name in fams:
                if len(fam) > 1:
                    ax.plot([channel_uses(*c) for c in fam], [by[(*c, s)][key] for c in fam], "o" + style,
                            color=colour, label=f"{name}, {fam_name}")
            rest = [c for c in cfgs if c[1] != d0 and c[0] != n0]
            ax.plot([channel_uses(*c) for c in rest], [by[(*c, s)][key] for c in rest], "x", color=colour)
        for n, d in cfgs:
            ax.annotate(f"{n}×{d}", (channel_uses(n, d), by[(n, d, snrs[0])][key]), fontsize=7,
                        textcoords="offset points", xytext=(3, -10))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("channel uses per image (N·d/2)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    if axes[1].get_legend_handles_labels()[0]:  # no family has two shapes: points only, no legend
        axes[1].legend(fontsize=6, title="feature SNR", title_fontsize=7)
    fig.suptitle("VLF-MSC caption quality vs the feature's shape N × d (equal training steps)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "bcr.png"), dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/vlf_bcr", help="work and result folder (a second run resumes)")
    ap.add_argument("--configs", nargs="+", default=["32x768", "8x768", "32x192", "2x768", "32x48"],
                    help="NxD feature shapes to train and compare")
    ap.add_argument("--steps", type=int, default=900, help="training steps of every configuration")
    ap.add_argument("--n-train", type=int, default=20000, help="training scenes (first n of the train split)")
    ap.add_argument("--n-val", type=int, default=200, help="validation scenes (the training log's check)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--n-eval", type=int, default=200, help="test scenes of the evaluation")
    ap.add_argument("--cache", default="", help="shared EfficientNet feature cache (default: <out>/cache)")
    ap.add_argument("--models", default=None, help="models folder with effnet_lite0_features (default: the checkout's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        configs = [parse_config(c) for c in args.configs]
    except ValueError as e:
        ap.error(str(e))
    if args.models is None:
        from ..runtime import default_models_dir

        args.models = str(default_models_dir())
    args.cache = args.cache or os.path.join(args.out, "cache")
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    rows = []
    for k, (n, d) in enumerate(configs):
        print(f"[{k + 1}/{len(configs)}] N={n} d={d} ({channel_uses(n, d)} channel uses)", flush=True)
        rows += rows_of(run_config(n, d, args))
        write_outputs(rows, args.out)
    with open(os.path.join(args.out, "bcr.md")) as f:
        print(f.read())
    print(f"sweep done in {(time.time() - t0) / 60:.1f} min -> {args.out}/bcr.csv, bcr.md, bcr.png")


if __name__ == "__main__":
    main()
