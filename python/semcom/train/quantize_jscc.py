"""Post-training int8 quantization of the JSCC decoder (``jscc_dec`` → ``jscc_dec_int8``).

    PYTHONPATH=python .venv/bin/python -m semcom.train.quantize_jscc --data path/to/photos --models models

Static QDQ quantization with ONNX Runtime's toolchain: every Conv of the decoder gets int8
weights (per output channel, symmetric) and uint8 activations whose ranges are calibrated
(99.999th percentile of each activation's histogram: plain min/max followed single outliers of
the calibration draw, and its fidelity moved between 37 and 42 dB from one draw to another) on
decoder inputs made the way the link makes them: random 256×256 crops of the
training photos through the shipped float codec, AWGN at an SNR uniform in
[−5, 20] dB, ρ cycling through the three rates (``JsccCodec.encode``, ``channels.awgn``,
``JsccCodec.decoder_inputs``). Only Convs are quantized (the SM modules' convs included); the
AF modules' MLPs, the element-wise ops and the output stay float. The encoder is not
quantized: its first conv (the image's range) and its latent output lost 10–20 % of relative
accuracy that way (docs/jscc.md).

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

from ..channels.awgn import awgn
from ..codecs import Csi
from .jscc import load_folder
from .jscc_model import CHANNELS, rho_of

SRC, DST = "jscc_dec", "jscc_dec_int8"


def decoder_feeds(codecs, images, rng, size: int = 256) -> list[dict]:
    """Decoder inputs made as the link makes them: a random ``size``² crop of each image encoded
    by ``codecs[i % len(codecs)]`` (float ``JsccCodec``s) at an SNR uniform over the model's
    range, AWGN at that SNR, and the codec's own ``decoder_inputs``."""
    feeds = []
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        if h < size or w < size:
            continue
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        codec = codecs[i % len(codecs)]
        snr = float(rng.uniform(*codec.snr_range))
        enc = codec.encode(img[y:y + size, x:x + size], {"snr_db": snr})
        feeds.append(codec.decoder_inputs(awgn(enc.symbols, snr, rng), enc.side_info, Csi(snr))[0])
    return feeds


def quantize(src: str, dst: str, calib: list[dict]) -> None:
    """Static QDQ int8 quantization of the Convs of ``src`` calibrated on ``calib``."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

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
                        op_types_to_quantize=["Conv"], calibrate_method=CalibrationMethod.Percentile)


def fidelity_db(fp32, int8, feeds) -> float:
    """Mean PSNR (dB, images in [0, 1]) of ``int8(feeds)`` against ``fp32(feeds)`` (callables
    returning the decoder's image)."""
    out = []
    for f in feeds:
        a, b = fp32(f), int8(f)
        out.append(10 * np.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-12)))
    return float(np.mean(out))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="calibration photos (e.g. the Sun-Hays 80 scene photos)")
    ap.add_argument("--val", required=True, help="held-out photos for the fidelity check (e.g. Set5)")
    ap.add_argument("--models", default="models", help="models folder (reads jscc_enc/jscc_dec, writes jscc_dec_int8)")
    ap.add_argument("--crops", type=int, default=64, help="calibration crops (one per photo, cycling)")
    ap.add_argument("--min-psnr", type=float, default=40.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import onnxruntime as ort

    from ..codecs.jscc import JsccCodec
    from ..runtime import load_model, register_model

    rng = np.random.default_rng(args.seed)
    codecs = [JsccCodec(rate=f"1/{round(1 / rho_of(c))}", models_dir=args.models) for c in CHANNELS]
    dec = load_model(SRC, models_dir=args.models)
    photos = [img for _, img in load_folder(args.data)]
    calib = decoder_feeds(codecs, [photos[i % len(photos)] for i in range(args.crops)], rng)
    val = decoder_feeds(codecs, [img for _, img in load_folder(args.val)] * 3, rng)
    with open(os.path.join(args.models, "manifest.json"), encoding="utf-8") as f:
        src_entry = next(m for m in json.load(f)["models"] if m["name"] == SRC)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, DST + ".onnx")
        quantize(str(dec.path), out, calib)
        cand = ort.InferenceSession(out, providers=["CPUExecutionProvider"])  # not registered yet
        fid = fidelity_db(lambda f: dec.run(f)["image"], lambda f: cand.run(["image"], f)[0], val)
        print(f"int8 vs fp32 decoder output: {fid:.1f} dB PSNR over {len(val)} held-out crops")
        if fid < args.min_psnr:
            raise SystemExit(f"int8 decoder too far from fp32 ({fid:.1f} dB < {args.min_psnr:g} dB); not registered")
        entry = dict(src_entry)
        entry.update(name=DST, file=DST + ".onnx", task="image-jscc-decoder-int8")
        entry["training"] = {
            "data": f"calibration: {len(calib)} random 256² crops of {args.data} through the float JsccCodec + AWGN; "
                    f"check: {len(val)} crops of {args.val}",
            "command": f"python -m semcom.train.quantize_jscc --crops {args.crops} --seed {args.seed}",
            "notes": f"post-training static QDQ int8 (Conv weights per channel, uint8 activations, percentile "
                     f"calibration) of {SRC} sha256 {src_entry['sha256'][:12]}; output vs fp32: {fid:.1f} dB PSNR",
        }
        register_model(args.models, entry, out)
        print(f"{DST}.onnx: {os.path.getsize(os.path.join(args.models, DST + '.onnx')) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
