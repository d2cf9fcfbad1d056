"""Validation PSNR of the shipped deep JSCC codec through its ONNX Runtime path.

    PYTHONPATH=python .venv/bin/python -m semcom.train.eval_jscc --val path/to/Set5

Runs ``JsccCodec`` (numpy + ONNX Runtime, the code the flowgraphs use) on every validation
photo for each rate and SNR, with the channel simulated directly by ``channels.awgn``
(Es = 1, σ² = 10^(-SNR/10); no GNU Radio, no OFDM). The encoder is told the channel SNR,
the decoder is told the same value, as a perfect receiver estimate would. Prints a
Markdown table of mean PSNR (dB) over the photos. Needs no torch.
"""
from __future__ import annotations

import argparse
import math
import os

import numpy as np
from PIL import Image

from ..channels.awgn import awgn
from ..codecs.base import Csi
from ..codecs.jscc import JsccCodec

SNRS = (-5.0, 0.0, 5.0, 10.0, 20.0)
RATES = ("1/6", "1/12", "1/24")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10.0 * math.log10(255.0 ** 2 / max(mse, 1e-10))


def evaluate(images, rates=RATES, snrs=SNRS, seed: int = 0, models_dir=None, threads=None,
             decoder: str = "jscc_dec") -> dict:
    """{(rate, snr): mean PSNR} over ``images`` (uint8 HxWx3 arrays)."""
    rng = np.random.default_rng(seed)
    res = {}
    for rate in rates:
        codec = JsccCodec(rate=rate, models_dir=models_dir, threads=threads, decoder=decoder)
        for snr in snrs:
            scores = []
            for img in images:
                enc = codec.encode(img, {"snr_db": snr})
                out = codec.decode(awgn(enc.symbols, snr, rng), enc.side_info, Csi(snr))
                scores.append(psnr(out, img))
            res[(rate, snr)] = float(np.mean(scores))
    return res


def markdown(res: dict, rates=RATES, snrs=SNRS) -> str:
    lines = ["| ρ | " + " | ".join(f"{s:g} dB" for s in snrs) + " |",
             "| --- |" + " --- |" * len(snrs)]
    for rate in rates:
        lines.append(f"| {rate} | " + " | ".join(f"{res[(rate, s)]:.2f}" for s in snrs) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", required=True, help="folder of validation photos (e.g. Set5)")
    ap.add_argument("--models", default=None, help="models folder (default: the runtime's)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--decoder", default="jscc_dec", help="decoder model: jscc_dec or jscc_dec_int8")
    args = ap.parse_args(argv)
    names = sorted(n for n in os.listdir(args.val) if n.lower().endswith(IMAGE_EXTENSIONS))
    images = []
    for n in names:
        with Image.open(os.path.join(args.val, n)) as im:
            images.append(np.array(im.convert("RGB")))
    res = evaluate(images, seed=args.seed, models_dir=args.models, threads=args.threads, decoder=args.decoder)
    print(f"mean PSNR (dB), decoder {args.decoder}, over {len(images)} images in {args.val}: {', '.join(names)}")
    print(markdown(res))


if __name__ == "__main__":
    main()
