"""Critical-region masks from the guidance module, for importance-aware JSCC training.

    PYTHONPATH=python .venv/bin/python -m semcom.train.guidance_masks --data path/to/photos --out out/guidance_masks.npz

For every training photo, the embedded segmenter's CNN names the ``--phrases`` ImageNet
classes it sees most (e.g. "church", "valley", "lakeside"); each becomes a target phrase
for ``semcom.guidance.policy.make_guidance`` (the same path the flowgraph's guidance block takes:
heatmap, threshold, coverage and confidence rules), and every mask it keeps (critical region
covering ``--min-coverage`` … ``max_coverage`` of the photo, no fallback) is stored at the
photo's resolution. ``semcom.train.jscc --masks`` then crops the training samples and their
masks together, so the codec learns on the regions the guidance module marks, not only on
random shapes. Output: an ``.npz`` with, per photo ``<name>``, ``<name>|<phrase>`` → bit-packed
mask and ``<name>|<phrase>|shape``; a summary line per photo is printed.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
from tqdm import tqdm

from ..guidance.policy import make_guidance
from ..guidance.embedded import EmbeddedSegmenter
from .jscc import load_folder


def photo_masks(seg: EmbeddedSegmenter, img: np.ndarray, phrases: int, min_coverage: float) -> dict:
    """``{phrase: bool mask (H, W)}`` for the ``phrases`` classes the CNN sees most in ``img``."""
    out = {}
    for label, _ in seg.image_classes(img, phrases):
        g = make_guidance(img, f"Where is the {label}?", 10.0, 1 / 12, seg, target=label)
        if g.fallback is None and g.coverage >= min_coverage:
            out[label] = g.mask
    return out


def save_masks(path: str, masks: dict) -> None:
    """``masks``: ``{name: {phrase: bool (H, W)}}`` → bit-packed ``.npz``."""
    arrays = {}
    for name, per in masks.items():
        for phrase, m in per.items():
            arrays[f"{name}|{phrase}"] = np.packbits(m.ravel())
            arrays[f"{name}|{phrase}|shape"] = np.asarray(m.shape, np.int64)
    np.savez_compressed(path, **arrays)


def load_masks(path: str) -> dict:
    """Inverse of ``save_masks``: ``{name: [bool (H, W), ...]}``."""
    out: dict = {}
    with np.load(path) as z:
        for key in z.files:
            if key.endswith("|shape"):
                continue
            name = key.split("|", 1)[0]
            shape = tuple(z[key + "|shape"])
            out.setdefault(name, []).append(np.unpackbits(z[key], count=int(np.prod(shape))).reshape(shape) > 0)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder of training photos (e.g. the Sun-Hays 80 scene photos)")
    ap.add_argument("--out", default="out/guidance_masks.npz")
    ap.add_argument("--phrases", type=int, default=4, help="classes asked about per photo")
    ap.add_argument("--min-coverage", type=float, default=0.02, help="smallest critical region kept (fraction)")
    a = ap.parse_args(argv)
    if a.phrases < 1 or not 0 <= a.min_coverage < 1:
        ap.error("--phrases >= 1 and 0 <= --min-coverage < 1 required")
    seg = EmbeddedSegmenter()
    masks, n = {}, 0
    for name, img in tqdm(load_folder(a.data), unit="photo"):
        per = photo_masks(seg, img, a.phrases, a.min_coverage)
        masks[name] = per
        n += len(per)
        tqdm.write(f"{name}: " + ", ".join(f"{p} {m.mean():.0%}" for p, m in per.items()))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    save_masks(a.out, masks)
    print(f"{n} masks for {sum(1 for v in masks.values() if v)} of {len(masks)} photos → {a.out}")


if __name__ == "__main__":
    main()
