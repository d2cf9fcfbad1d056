#!/usr/bin/env python3
"""VLF-MSC evaluation through GNU Radio: one row per (item, system, channel, SNR, seed).

Systems (``--systems``), all over the same OFDM PHY (``ofdm_tx`` → channel → ``ofdm_rx``) and
the same test items of the synthetic scene benchmark (``semcom.datasets.scenes``, test split,
256×256 renders):

* ``vlf_msc``: the VLF-MSC blocks (``vlf_encoder`` → … → ``vlf_caption_decoder`` +
  ``vlf_image_decoder``): one analog feature, a caption and an image from it;
* ``ascii_hamming``: the caption (written at the transmitter from the same image by the
  backend's captioner, the clean feature) as 7-bit ASCII + Hamming(7,4) + 16-QAM, hard decisions;
* ``deepsc``: the same caption through the DeepSC transformer text JSCC;
* ``img2img_sc``: the same caption (digital, as ascii_hamming) + the image's compact latent
  (analog), drawn by the latent diffusion decoder conditioned on the received caption.

Text systems leave the image columns empty and vice versa. Metrics: BLEU (sacrebleu) and
BERTScore (all-MiniLM-L6-v2 backbone, raw F1) against the scene's five reference captions; the
exact attribute accuracy of the caption (``scenes.caption_accuracy``); for images the
EfficientNet-Lite0 feature distance (the LPIPS stand-in, not LPIPS), the CLIP-style score of
the scene contrastive model trained on the benchmark (not CLIP score) against the first
reference caption, the attribute accuracy recognised in the image (``metrics.scene``), PSNR.

Rows of points already in the CSV are kept and those points skipped (resumable).

Example:  python3 apps/eval_vlf.py --out vlf.csv --limit 20 --snr -5 0 5 10
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys

import numpy as np

from gnuradio.semcom.blocks.grlog import gr_log_option

FIELDS = ("item", "system", "channel", "snr_db", "seed", "status", "channel_uses", "bcr", "caption", "reference",
          "bleu", "bertscore", "attr_acc_text", "lpips_standin", "clip_standin", "attr_acc_image", "psnr",
          "snr_est_db", "file")
SYSTEMS = ("vlf_msc", "deepsc", "ascii_hamming", "img2img_sc")
TEXT_SYSTEMS = ("vlf_msc", "deepsc", "ascii_hamming")
IMAGE_SYSTEMS = ("vlf_msc", "img2img_sc")
SNRS = (-5.0, -2.5, 0.0, 2.5, 5.0, 7.5, 10.0)
CHANNELS = ("awgn", "rayleigh")


def options(ap: argparse.ArgumentParser, limit: int = 20):
    """The options shared by eval_vlf and sweep_vlf."""
    ap.add_argument("--snr", type=float, nargs="+", default=list(SNRS), help="channel SNRs, Es/N0 per channel use [dB]")
    ap.add_argument("--channel", nargs="+", default=["awgn"], choices=CHANNELS, help="channels (rayleigh: flat fading)")
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS, help="systems to run")
    ap.add_argument("--limit", type=int, default=limit, help="test-split scenes (the first N)")
    ap.add_argument("--size", type=int, default=256, help="image side of the scenes [pixels]")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="channel/diffusion seeds")
    ap.add_argument("--backend", default="embedded", help="'embedded' (shipped models) or 'reference:PATH'")
    ap.add_argument("--steps", type=int, default=0, help="DDIM steps of the image decoders (0: the model's default)")
    ap.add_argument("--profile", default="wide256", help="OFDM profile (semcom.phy.params)")
    ap.add_argument("--images-dir", default="", help="save every received image here (PNG)")
    ap.add_argument("--no-bertscore", action="store_true", help="skip BERTScore (it loads torch)")
    ap.add_argument("--captions-only", action="store_true",
                    help="VLF-MSC without its image decoder (no diffusion: fast text-only runs)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


class Bench:
    """The test items and the transmitters' shared facts (captions the text systems send)."""

    def __init__(self, a):
        from gnuradio.semcom.blocks.vlf import vlf_codec
        from gnuradio.semcom.datasets import scenes
        from gnuradio.semcom.images import load_images

        self.a = a
        self.spec = f"scenes:test:{a.limit}"
        self.items = load_images(self.spec, a.size).items
        self.scenes = [scenes.generate(int(it.name[6:-4])) for it in self.items]
        self.refs = [scenes.captions(s) for s in self.scenes]
        self.vlf = vlf_codec(a.backend, steps=a.steps)
        self._tx_captions = None
        self._codecs = {}

    def tx_captions(self) -> list[str]:
        """What the text systems send: the backend's caption of each image from its clean feature."""
        if self._tx_captions is None:
            self._tx_captions = [self.vlf.caption(it.pixels) for it in self.items]
        return self._tx_captions

    def codec(self, system):
        if system not in self._codecs:
            if system in ("ascii_hamming", "deepsc"):
                from gnuradio.semcom.codecs import make_text_codec

                self._codecs[system] = make_text_codec(system)
            elif system == "img2img_sc":
                from gnuradio.semcom.codecs.img2img_sc import Img2ImgScCodec

                self._codecs[system] = Img2ImgScCodec(models_dir=self.vlf.models_dir, steps=self.a.steps or None)
        return self._codecs[system]


def _cfg(bench, channel, snr, seed):
    from gnuradio.semcom.blocks.vlf_link import VlfLinkConfig

    a = bench.a
    return VlfLinkConfig(images=bench.spec, size=a.size, snr_db=float(snr), channel=channel, profile=a.profile,
                         backend=a.backend, steps=a.steps, seed=int(seed), draw_images=not a.captions_only)


def _encode_text(codec, caption):
    """A caption → Encoded; one the codec cannot send (empty, no known word) → no symbols."""
    from gnuradio.semcom.codecs import Encoded

    try:
        return codec.encode(caption)
    except ValueError:
        return Encoded(np.zeros(0, np.complex64), b"", {})


def run_point(bench, system, channel, snr, seed) -> list[dict]:
    """One grid point through GNU Radio → raw rows (item, status, caption, image, channel uses …)."""
    from gnuradio.semcom.blocks.vlf_link import run_frames, run_vlf_link
    from gnuradio.semcom.codecs import Csi

    cfg = _cfg(bench, channel, snr, seed)
    base = dict(system=system, channel=channel, snr_db=float(snr), seed=int(seed))
    if system == "vlf_msc":
        res = run_vlf_link(cfg, codec=bench.vlf)
        out = []
        for k, r in enumerate(res["rows"]):
            h, w = r["source"].shape[:2]
            ist = r.get("image_status", "")
            st = r["caption_status"] if r["caption_status"] == ist or not ist else f"{r['caption_status']}/{ist}"
            out.append(dict(base, k=k, status=st, caption=r["caption"], image=r.get("image"),
                            channel_uses=r["n_symbols"] or bench.vlf.n_symbols, bcr=bench.vlf.bcr(h, w),
                            snr_est_db=r["snr_est_db"]))
        return out
    codec = bench.codec(system)
    caps = bench.tx_captions()
    if system == "img2img_sc":
        encs = [codec.encode(it.pixels, caption=c) for it, c in zip(bench.items, caps)]
    else:
        encs = [_encode_text(codec, c) for c in caps]
    cfg.frame_timeout_s = 2.0  # the receiver hands a frame over within milliseconds; later means lost
    sendable = [k for k, e in enumerate(encs) if e.symbols.size]
    got = dict(zip(sendable, run_frames([(codec.codec_id, encs[k].symbols, encs[k].side_info) for k in sendable],
                                        cfg)))
    out = []
    for k, e in enumerate(encs):
        g = got.get(k)
        h, w = bench.items[k].pixels.shape[:2]
        row = dict(base, k=k, channel_uses=int(e.symbols.size), bcr=e.symbols.size / (3.0 * h * w),
                   caption="", image=None, snr_est_db=math.nan)
        if not e.symbols.size:
            out.append(dict(row, status="nothing_to_send"))  # an empty caption
            continue
        if g is None:
            out.append(dict(row, status="lost"))
            continue
        meta, y = g
        csi = Csi.from_meta(meta, y.size)
        y = csi.unbias(y, meta.get("equalizer", "zf"))
        side = bytes(np.asarray(meta.get("side_info", []), np.uint8))  # as the receiver's header carried it
        try:
            if system == "img2img_sc":
                row["image"] = codec.decode(y, side, csi)
                row["caption"] = codec.last_caption
            else:
                row["caption"] = codec.decode(y, side, csi)
        except ValueError as err:  # e.g. side information that does not fit the model
            out.append(dict(row, status=f"error: {err}"))
            continue
        out.append(dict(row, status=codec.last_status, snr_est_db=csi.snr_db))
    return out


def _scene_models() -> bool:
    """Are the scene metric models (attribute recogniser, CLIP-style dual encoder) installed?
    Without them the clip_standin and attr_acc_image columns stay empty (warned once)."""
    global _SCENE_MODELS
    if _SCENE_MODELS is None:
        from gnuradio.semcom.metrics import scene as scene_metrics
        from gnuradio.semcom.runtime import load_manifest

        names = set(load_manifest().names)
        need = {scene_metrics.ATTR_MODEL, scene_metrics.CLIP_IMAGE_MODEL, scene_metrics.CLIP_TEXT_MODEL}
        _SCENE_MODELS = need <= names
        if not _SCENE_MODELS:
            print(f"eval_vlf: warning: scene metric models {sorted(need - names)} are not installed; "
                  "clip_standin and attr_acc_image are left empty", file=sys.stderr)
    return _SCENE_MODELS


_SCENE_MODELS = None


def score(bench, rows, images_dir="", bertscore=True) -> list[dict]:
    """Raw rows → CSV rows with every metric (text columns empty for image systems, and vice versa)."""
    from gnuradio.semcom import metrics
    from gnuradio.semcom.datasets import scenes
    from gnuradio.semcom.metrics import scene as scene_metrics

    text_rows = [r for r in rows if r["system"] in TEXT_SYSTEMS]
    f1 = {}
    if bertscore and text_rows:
        vals = metrics.bertscore([r["caption"] for r in text_rows], [bench.refs[r["k"]] for r in text_rows])
        f1 = {id(r): float(v) for r, v in zip(text_rows, vals)}
    out = []
    for r in rows:
        k = r["k"]
        it, scene, refs = bench.items[k], bench.scenes[k], bench.refs[k]
        row = {f: "" for f in FIELDS}
        row.update(item=it.name, system=r["system"], channel=r["channel"], snr_db=r["snr_db"], seed=r["seed"],
                   status=r["status"], channel_uses=r["channel_uses"], bcr=r["bcr"], reference=refs[0],
                   snr_est_db=r["snr_est_db"])
        if r["system"] in TEXT_SYSTEMS:
            cap = r["caption"] or ""
            row.update(caption=cap, bleu=metrics.sentence_bleu(cap, refs), bertscore=f1.get(id(r), math.nan),
                       attr_acc_text=scenes.caption_accuracy(cap, scene)["overall"])
        if r["system"] in IMAGE_SYSTEMS:
            img = r["image"]
            if img is not None:
                row.update(lpips_standin=float(metrics.effnet_feature_distance(it.pixels, img)),
                           psnr=float(metrics.psnr(it.pixels, img)))
                if _scene_models():
                    row.update(clip_standin=float(scene_metrics.clip_style_score(img, refs[0])),
                               attr_acc_image=scene_metrics.image_attribute_accuracy(img, scene)["overall"])
                if images_dir:
                    from PIL import Image

                    d = os.path.join(images_dir, r["system"], f"{r['channel']}_snr{r['snr_db']:g}_seed{r['seed']}")
                    os.makedirs(d, exist_ok=True)
                    row["file"] = os.path.join(d, it.name)
                    Image.fromarray(img).save(row["file"])
        out.append(row)
    return out


def point_key(row) -> tuple:
    return (str(row["system"]), str(row["channel"]), round(float(row["snr_db"]), 3), int(row["seed"]))


def read_csv(path: str) -> list[dict]:
    """Rows of an eval CSV, numbers parsed (empty cells → NaN)."""
    nums = ("snr_db", "bcr", "bleu", "bertscore", "attr_acc_text", "lpips_standin", "clip_standin",
            "attr_acc_image", "psnr", "snr_est_db")
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            for k in nums:
                r[k] = float(r[k]) if r.get(k) not in (None, "") else math.nan
            r["seed"], r["channel_uses"] = int(r["seed"]), int(float(r["channel_uses"] or 0))
            out.append(r)
    return out


def write_csv(rows, path: str):
    from gnuradio.semcom import report

    report.write_rows(rows, path, append=True, fields=FIELDS)


def run(a, on_rows=None) -> list[dict]:
    """The whole grid (points already in ``a.out`` skipped); returns the new CSV rows."""
    from tqdm import tqdm

    done = {point_key(r) for r in read_csv(a.out)} if os.path.exists(a.out) else set()
    grid = [(s, ch, float(snr), sd) for ch in a.channel for snr in a.snr for sd in a.seeds for s in a.systems]
    todo = [g for g in grid if (g[0], g[1], round(g[2], 3), g[3]) not in done]
    if not todo:
        return []
    bench = Bench(a)
    new = []
    bar = tqdm(todo, desc="vlf eval", unit="point", disable=a.quiet, dynamic_ncols=True)
    for system, channel, snr, seed in bar:
        bar.set_postfix_str(f"{system} {channel} {snr:g} dB")
        rows = score(bench, run_point(bench, system, channel, snr, seed), a.images_dir, not a.no_bertscore)
        write_csv(rows, a.out)
        new += rows
        if on_rows is not None:
            on_rows(rows)
    return new


def summarize(rows) -> list[dict]:
    """Mean of every metric per (system, channel, SNR), over all items and seeds."""
    from collections import defaultdict

    groups = defaultdict(list)
    for r in rows:
        groups[(r["system"], r["channel"], float(r["snr_db"]))].append(r)
    out = []
    for (system, channel, snr), rs in sorted(groups.items()):
        s = dict(system=system, channel=channel, snr_db=snr, n=len(rs),
                 ok=sum(r["status"] in ("ok", "ok/ok") for r in rs), channel_uses=np.mean([r["channel_uses"] for r in rs]),
                 bcr=np.mean([float(r["bcr"]) for r in rs]))
        for m in ("bleu", "bertscore", "attr_acc_text", "lpips_standin", "clip_standin", "attr_acc_image", "psnr"):
            v = [float(r[m]) for r in rs if r[m] not in ("", None) and math.isfinite(float(r[m]))]
            s[m] = float(np.mean(v)) if v else math.nan
        out.append(s)
    return out


def format_summary(summary) -> str:
    cols = ("system", "channel", "snr_db", "n", "ok", "channel_uses", "bleu", "bertscore", "attr_acc_text",
            "lpips_standin", "clip_standin", "attr_acc_image", "psnr")
    lines = ["  ".join(f"{c:>13}" for c in cols)]
    for s in summary:
        lines.append("  ".join(f"{s[c]:>13.4g}" if isinstance(s[c], (float, np.floating)) else f"{s[c]!s:>13}"
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
