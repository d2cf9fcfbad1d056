"""Export a trained deep JSCC checkpoint to ONNX and register it in the models manifest.

    PYTHONPATH=python .venv/bin/python -m semcom.train.export_jscc --ckpt out/jscc/ckpt.pt --models models

Writes ``jscc_enc.onnx`` and ``jscc_dec.onnx`` (dynamic H and W, batch 1) after folding every
``RepConv`` into a single 3×3 conv, checks that ONNX Runtime reproduces the torch outputs
on two image sizes, registers both files with ``semcom.runtime.register_model``. Latency:
``apps/bench_codec.py``.

Graph contract (also in the manifest entries):
- ``jscc_enc``: ``image`` float32 [1, 3, H, W] in [0, 1] (H, W multiples of 8), ``snr_db``
  float32 [1, 1] (transmitter CSI), ``rate`` float32 [1, 1] = mean channels sent / 64,
  ``alloc`` float32 [1, 1, H/8, W/8] = channels sent at each 8×8 block / 64 → ``latent``
  float32 [1, 64, H/8, W/8], not yet power-normalised (the codec keeps the channels it
  sends and normalises them).
- ``jscc_dec``: ``latent`` float32 [1, 64, H/8, W/8] (received symbols at unit power,
  zeros where nothing was sent), ``snr_db`` (the receiver's estimate), ``rate``, ``alloc``
  → ``image`` float32 [1, 3, H, W] in [0, 1].
"""
from __future__ import annotations

import argparse
import copy
import os
import tempfile

import numpy as np
import torch

from .jscc_model import CHANNELS, C_MAX, SNR_SCALE, STRIDE, DeepJSCC, fuse_repconvs, rho_of

ENC_NAME, DEC_NAME = "jscc_enc", "jscc_dec"
TOLERANCE = 1e-4


def load_checkpoint(path: str) -> tuple[DeepJSCC, dict]:
    """The trained model (training graph, eval mode) and the raw ``semcom.train.jscc`` checkpoint."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    keys = ck["model"]
    model = DeepJSCC(refine=any(k.startswith("decoder.r1.") for k in keys),
                     attn=any(k.startswith("decoder.ga.") for k in keys))
    model.load_state_dict(ck["model"])
    return model.eval(), ck


def export_onnx(model: DeepJSCC, enc_path: str, dec_path: str) -> DeepJSCC:
    """Fold the RepConvs and write the two ONNX graphs; returns the fused torch model."""
    fused = fuse_repconvs(copy.deepcopy(model)).eval()
    h8 = torch.export.Dim("h8", min=1, max=2048)
    w8 = torch.export.Dim("w8", min=1, max=2048)
    image = torch.rand(1, 3, 64, 96)
    snr = torch.full((1, 1), 10.0)
    rate = torch.full((1, 1), 0.5)
    latent = torch.randn(1, C_MAX, 8, 12)
    alloc = torch.full((1, 1, 8, 12), 0.5)
    with torch.no_grad():
        torch.onnx.export(fused.encoder, (image, snr, rate, alloc), enc_path, dynamo=True, external_data=False,
                          input_names=["image", "snr_db", "rate", "alloc"], output_names=["latent"],
                          dynamic_shapes=({2: STRIDE * h8, 3: STRIDE * w8}, None, None, {2: h8, 3: w8}),
                          verbose=False)
        torch.onnx.export(fused.decoder, (latent, snr, rate, alloc), dec_path, dynamo=True, external_data=False,
                          input_names=["latent", "snr_db", "rate", "alloc"], output_names=["image"],
                          dynamic_shapes=({2: h8, 3: w8}, None, None, {2: h8, 3: w8}), verbose=False)
    return fused


def torch_from_onnx(enc_path, dec_path) -> DeepJSCC:
    """The fused torch model (RepConvs folded, eval mode) holding the weights of an exported pair.

    The architecture (``refine``, ``attn``) is read off the initializer names, which are the
    fused modules' state-dict keys; every parameter must be found (KeyError otherwise)."""
    import onnx
    from onnx import numpy_helper

    weights = {}
    for part, path in (("encoder", enc_path), ("decoder", dec_path)):
        for t in onnx.load(str(path)).graph.initializer:
            weights[f"{part}.{t.name}"] = torch.from_numpy(numpy_helper.to_array(t).copy())
    model = DeepJSCC(refine="decoder.r1.c1.weight" in weights, attn="decoder.ga.gamma" in weights)
    fused = fuse_repconvs(model).eval()
    state = fused.state_dict()
    missing = [k for k in state if k not in weights]
    if missing:
        raise KeyError(f"{len(missing)} parameters not in the ONNX files, e.g. {missing[:3]}")
    fused.load_state_dict({k: weights[k] for k in state})
    return fused


def _session(path: str, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def check_ort(model: DeepJSCC, enc_path: str, dec_path: str, sizes=((64, 96), (136, 80))) -> float:
    """Largest |ORT − torch| over encoder and decoder outputs (training graph as reference)."""
    enc, dec = _session(enc_path), _session(dec_path)
    worst = 0.0
    g = torch.Generator().manual_seed(0)
    for (h, w), c, snr in zip(sizes, CHANNELS, (-3.0, 17.0)):
        image = torch.rand(1, 3, h, w, generator=g)
        s = torch.full((1, 1), snr)
        # a non-uniform allocation: c channels on the left half, c/2 on the right
        a = torch.full((1, 1, h // STRIDE, w // STRIDE), c / C_MAX)
        a[..., w // STRIDE // 2:] /= 2
        r = a.mean(dim=(2, 3))[:, 0:1]
        latent = torch.randn(1, C_MAX, h // STRIDE, w // STRIDE, generator=g)
        latent[:, c:] = 0
        with torch.no_grad():
            z_t = model.encoder(image, s, r, a).numpy()
            x_t = model.decoder(latent, s, r, a).numpy()
        feeds = {"snr_db": s.numpy(), "rate": r.numpy(), "alloc": a.numpy()}
        z_o = enc.run(None, {"image": image.numpy(), **feeds})[0]
        x_o = dec.run(None, {"latent": latent.numpy(), **feeds})[0]
        worst = max(worst, float(np.abs(z_o - z_t).max()), float(np.abs(x_o - x_t).max()))
    return worst


def manifest_entries(enc_file: str, dec_file: str, training: dict) -> tuple[dict, dict]:
    """Manifest entries (without sha256/size, which ``register_model`` adds)."""
    extra = {
        "stride": STRIDE,
        "c_max": C_MAX,
        "channels": list(CHANNELS),
        "rates": [f"1/{round(1 / rho_of(c))}" for c in CHANNELS],
        "rho": [rho_of(c) for c in CHANNELS],
        "rate_input": "mean channels sent / c_max",
        "alloc_input": "channels sent at each 8x8 block / c_max (uniform for the plain codec)",
        "snr_db_range": [-5.0, 20.0],
        "snr_scale": SNR_SCALE,
        "symbols": "complex symbol k at (y, x) = latent[2k, y, x] + 1j*latent[2k+1, y, x], "
                   "ordered k-major then row-major (y, x); unit mean power over the c sent channels",
        "encoder": ENC_NAME,
        "decoder": DEC_NAME,
    }
    uses = {"formula": "C * ceil(H / 8) * ceil(W / 8) / 2",
            "symbols": {"C": "latent channels sent: 64, 32 or 16 (rho = C/384: 1/6, 1/12, 1/24)",
                        "H": "image height (padded up to a multiple of 8)",
                        "W": "image width (padded up to a multiple of 8)"}}
    f32 = "float32"
    enc = {
        "name": ENC_NAME, "file": enc_file, "task": "image-jscc-encoder",
        "inputs": [{"name": "image", "shape": [1, 3, "H", "W"], "dtype": f32},
                   {"name": "snr_db", "shape": [1, 1], "dtype": f32},
                   {"name": "rate", "shape": [1, 1], "dtype": f32},
                   {"name": "alloc", "shape": [1, 1, "H/8", "W/8"], "dtype": f32}],
        "outputs": [{"name": "latent", "shape": [1, C_MAX, "H/8", "W/8"], "dtype": f32}],
        "channel_uses": uses, "training": training, "extra": extra,
    }
    dec = {
        "name": DEC_NAME, "file": dec_file, "task": "image-jscc-decoder",
        "inputs": [{"name": "latent", "shape": [1, C_MAX, "H/8", "W/8"], "dtype": f32},
                   {"name": "snr_db", "shape": [1, 1], "dtype": f32},
                   {"name": "rate", "shape": [1, 1], "dtype": f32},
                   {"name": "alloc", "shape": [1, 1, "H/8", "W/8"], "dtype": f32}],
        "outputs": [{"name": "image", "shape": [1, 3, "H", "W"], "dtype": f32}],
        "channel_uses": uses, "training": training, "extra": extra,
    }
    return enc, dec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default="out/jscc/ckpt.pt")
    ap.add_argument("--models", default="models", help="models folder holding manifest.json")
    args = ap.parse_args(argv)

    from ..runtime import register_model

    model, ck = load_checkpoint(args.ckpt)
    targs = ck["args"]
    training = {
        "data": f"{len(os.listdir(targs['data']))} photos of the folder {os.path.basename(os.path.normpath(targs['data']))!r} "
                f"(random {targs['crop']}² crops, flips, full and half size); validation: the folder "
                f"{os.path.basename(os.path.normpath(targs['val']))!r}",
        "command": ((f"python -m semcom.train.guidance_masks --data PHOTOS --out {targs['masks']} && " if targs.get("masks") else "")
                    + f"python -m semcom.train.jscc --data PHOTOS --val VAL --steps {targs['steps']} --crop {targs['crop']} "
                    f"--batch {targs['batch']} --seed {targs['seed']} --lr {targs['lr']} "
                    f"--importance-frac {targs.get('importance_frac', 0)}"
                    + (f" --masks {targs['masks']} --guidance-frac {targs['guidance_frac']}" if targs.get("masks") else "")
                    + (" --refine" if targs.get("refine") else "")
                    + (" --attn" if targs.get("attn") else "")
                    + (f" --init {targs['init']}" if targs.get("init") else "")
                    + " && python -m semcom.train.export_jscc"),
        "notes": (f"{ck['step']} steps in {ck.get('elapsed_s', 0) / 60:.0f} min of CPU wall time; "
                  "MSE loss, SNR uniform in [-5, 20] dB, c uniform in {16, 32, 64}, decoder SNR input with "
                  f"±{targs['snr_jitter']} dB error; share {targs.get('importance_frac', 0)} of samples with "
                  "importance allocations and importance-weighted MSE"
                  + (f" (critical regions: guidance-module masks for a share {targs['guidance_frac']}, random "
                     "ellipses otherwise)" if targs.get("masks") else " (random elliptic critical regions)")
                  + (f"; initialised from {targs['init']}" if targs.get("init") else "")
                  + "; earlier stages and budgets in docs/jscc.md"),
    }
    os.makedirs(args.models, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        enc_tmp, dec_tmp = os.path.join(tmp, ENC_NAME + ".onnx"), os.path.join(tmp, DEC_NAME + ".onnx")
        export_onnx(model, enc_tmp, dec_tmp)
        err = check_ort(model, enc_tmp, dec_tmp)
        print(f"max |ORT - torch| = {err:.2e}")
        if err > TOLERANCE:
            raise SystemExit(f"ONNX Runtime differs from torch by {err:.2e} (> {TOLERANCE:g}); not registered")
        enc_entry, dec_entry = manifest_entries(ENC_NAME + ".onnx", DEC_NAME + ".onnx", training)
        register_model(args.models, enc_entry, enc_tmp)
        register_model(args.models, dec_entry, dec_tmp)
        for p in (enc_tmp, dec_tmp):
            print(f"{os.path.basename(p)}: {os.path.getsize(p) / 1e6:.2f} MB")
    print("latency: python apps/bench_codec.py")


if __name__ == "__main__":
    main()
