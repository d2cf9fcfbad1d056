"""Post-training int8 quantization of the JSCC decoder (``jscc_dec`` → ``jscc_dec_int8``).

    python -m semcom.train.quantize_jscc --data ../shared/data/train --models models

Static QDQ quantization with ONNX Runtime's toolchain: every Conv of the decoder gets int8
weights (per output channel, symmetric) and uint8 activations whose ranges are calibrated
(min/max) on decoder inputs made the way the link makes them: random 256×256 crops of the
training photos through the shipped fp32 encoder, power-normalised, AWGN at an SNR uniform in
[−5, 20] dB, ρ cycling through the three rates. Only Convs are quantized (the SM modules'
convs included); the AF modules' MLPs, the element-wise ops and the output stay float. The encoder is not quantized: its first conv (the image's range)
and its latent output lost 10–20 % of relative accuracy that way (docs/jscc.md).

Before registering, the int8 decoder is compared with the fp32 one on held-out crops
(``--val``): the mean PSNR of the int8 output against the fp32 output must be at least
``--min-psnr`` dB (default 40), i.e. far below the codec's own error. Use it with
``JsccCodec(decoder="jscc_dec_int8")`` (GRC: Codec options ``{'decoder': 'jscc_dec_int8'}``).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np

from .jscc import load_folder
from .jscc_model import CHANNELS, C_MAX, STRIDE

SRC, DST = "jscc_dec", "jscc_dec_int8"


def decoder_feeds(encoder, images, rng, size: int = 256) -> list[dict]:
    """Decoder input dicts: a random ``size``² crop of each image through ``encoder`` (an
    ``OnnxModel``), unit power over the sent channels, AWGN, zeros beyond them."""
    feeds = []
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        if h < size or w < size:
            continue
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        crop = np.ascontiguousarray(img[y:y + size, x:x + size].transpose(2, 0, 1)[None], np.float32) / 255.0
        c = CHANNELS[i % len(CHANNELS)]
        snr = float(rng.uniform(-5.0, 20.0))
        g = size // STRIDE
        cond = {"snr_db": np.full((1, 1), snr, np.float32), "rate": np.full((1, 1), c / C_MAX, np.float32),
                "alloc": np.full((1, 1, g, g), c / C_MAX, np.float32)}
        z = encoder.run({"image": crop, **cond})["latent"]
        z[:, c:] = 0
        z[:, :c] /= np.sqrt(2.0 * np.mean(z[:, :c] ** 2))
        z[:, :c] += rng.normal(0.0, np.sqrt(10 ** (-snr / 10) / 2), z[:, :c].shape)
        feeds.append({"latent": z.astype(np.float32), **cond})
    return feeds


def quantize(src: str, dst: str, calib: list[dict]) -> None:
    """Static QDQ int8 quantization of the Convs of ``src`` calibrated on ``calib``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(src, pre, skip_symbolic_shape=True)  # dynamic H, W: ONNX shape inference only
        quantize_static(pre, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv"])


def fidelity_db(fp32, int8, feeds) -> float:
    """Mean PSNR (dB, images in [0, 1]) of the int8 decoder's output against the fp32 one."""
    out = []
    for f in feeds:
        a, b = fp32.run(f)["image"], int8.run(f)["image"]
        out.append(10 * np.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-12)))
    return float(np.mean(out))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/train", help="calibration photos")
    ap.add_argument("--val", default="../shared/data/val", help="held-out photos for the fidelity check")
    ap.add_argument("--models", default="models", help="models folder (reads jscc_enc/jscc_dec, writes jscc_dec_int8)")
    ap.add_argument("--crops", type=int, default=64, help="calibration crops (one per photo, cycling)")
    ap.add_argument("--min-psnr", type=float, default=40.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from ..runtime import load_model, register_model

    rng = np.random.default_rng(args.seed)
    enc = load_model("jscc_enc", models_dir=args.models)
    dec = load_model(SRC, models_dir=args.models)
    photos = [img for _, img in load_folder(args.data)]
    calib = decoder_feeds(enc, [photos[i % len(photos)] for i in range(args.crops)], rng)
    val = decoder_feeds(enc, [img for _, img in load_folder(args.val)] * 3, rng)
    with open(os.path.join(args.models, "manifest.json"), encoding="utf-8") as f:
        src_entry = next(m for m in json.load(f)["models"] if m["name"] == SRC)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, DST + ".onnx")
        quantize(str(dec.path), out, calib)
        import onnxruntime as ort

        class _Plain:  # the candidate, before it has a manifest entry
            def __init__(self, path):
                self.s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

            def run(self, feeds):
                return {"image": self.s.run(["image"], feeds)[0]}

        fid = fidelity_db(dec, _Plain(out), val)
        print(f"int8 vs fp32 decoder output: {fid:.1f} dB PSNR over {len(val)} held-out crops")
        if fid < args.min_psnr:
            raise SystemExit(f"int8 decoder too far from fp32 ({fid:.1f} dB < {args.min_psnr:g} dB); not registered")
        entry = dict(src_entry)
        entry.update(name=DST, file=DST + ".onnx", task="image-jscc-decoder-int8")
        entry["training"] = {
            "data": f"calibration: {len(calib)} random 256² crops of {args.data} through jscc_enc + AWGN; "
                    f"check: {len(val)} crops of {args.val}",
            "command": f"python -m semcom.train.quantize_jscc --crops {args.crops} --seed {args.seed}",
            "notes": f"post-training static QDQ int8 (Conv weights per channel, uint8 activations, min/max "
                     f"calibration) of {SRC} sha256 {src_entry['sha256'][:12]}; output vs fp32: {fid:.1f} dB PSNR",
        }
        register_model(args.models, entry, out)
        print(f"{DST}.onnx: {os.path.getsize(os.path.join(args.models, DST + '.onnx')) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
