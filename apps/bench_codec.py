#!/usr/bin/env python3
"""Benchmark: deep JSCC encode+decode latency at 256×256, ONNX Runtime vs torch eager.

ORT runs the shipped models/jscc_enc.onnx + jscc_dec.onnx through the project runtime
(checksums verified, the session options the flowgraph uses). Torch eager runs the same
architecture (``semcom.train.jscc_model.DeepJSCC``, its options — Refine, GuideAttn — read
off the ONNX files) in two forms: with the branches merged as exported, holding the shipped
weights taken from the ONNX files (the outputs are compared with ORT's), and as it is
trained (parallel conv branches; freshly initialised weights — the training checkpoint is not
shipped, and a convolutional network's latency does not depend on its weight values). Each
figure is the best of several rounds of median timings, backends taking turns, all in one run.

When ``jscc_dec_int8`` is registered, ORT with that decoder is timed too (informational).

Last line of output: ``ort_speedup_vs_torch: <ratio>`` (torch eager as trained / ORT, both float32).
"""
import argparse
import sys
import time

import numpy as np

from gnuradio.semcom.blocks.grlog import gr_log_option


def _median_ms(fn, runs):
    fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2, help="threads for both backends")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5)
    gr_log_option(ap)
    a = ap.parse_args(argv)

    import torch

    from gnuradio.semcom.runtime import load_model
    from gnuradio.semcom.train.export_jscc import torch_from_onnx
    from gnuradio.semcom.train.jscc_model import C_MAX, STRIDE, DeepJSCC

    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    enc, dec = load_model("jscc_enc", threads=a.threads), load_model("jscc_dec", threads=a.threads)
    fused = torch_from_onnx(enc.path, dec.path)
    trained = DeepJSCC(refine=fused.decoder.refine, attn=fused.decoder.attn).eval()
    image = torch.rand(1, 3, a.size, a.size)
    snr, rate = torch.full((1, 1), 10.0), torch.full((1, 1), 0.5)
    latent = torch.randn(1, C_MAX, a.size // STRIDE, a.size // STRIDE)
    alloc = torch.full((1, 1, a.size // STRIDE, a.size // STRIDE), 0.5)
    cond = {"snr_db": snr.numpy(), "rate": rate.numpy(), "alloc": alloc.numpy()}

    def torch_fn(m):
        def f():
            with torch.inference_mode():
                m.encoder(image, snr, rate, alloc)
                m.decoder(latent, snr, rate, alloc)
        return f

    fns = {"ort": lambda: (enc.run({"image": image.numpy(), **cond}), dec.run({"latent": latent.numpy(), **cond})),
           "torch_eager": torch_fn(trained), "torch_eager_merged": torch_fn(fused)}
    try:  # the optional int8 decoder (python -m semcom.train.quantize_jscc); informational
        dec8 = load_model("jscc_dec_int8", threads=a.threads)
        fns["ort_int8_decoder"] = lambda: (enc.run({"image": image.numpy(), **cond}),
                                           dec8.run({"latent": latent.numpy(), **cond}))
    except Exception as e:  # noqa: BLE001 - not shipped / not registered: skip the line
        print(f"(no int8 decoder: {e})")
    with torch.inference_mode():
        ref = (fused.encoder(image, snr, rate, alloc).numpy(), fused.decoder(latent, snr, rate, alloc).numpy())
    out = fns["ort"]()
    diff = max(float(np.abs(out[0]["latent"] - ref[0]).max()), float(np.abs(out[1]["image"] - ref[1]).max()))
    best = {k: float("inf") for k in fns}
    for _ in range(a.rounds):
        for k, fn in fns.items():
            time.sleep(0.3)
            best[k] = min(best[k], _median_ms(fn, a.runs))
    arch = ", ".join(n for n, on in (("Refine", fused.decoder.refine), ("GuideAttn", fused.decoder.attn)) if on)
    print(f"JSCC encode+decode {a.size}x{a.size} ({arch or 'plain'}), {a.threads} threads, "
          f"providers {enc.providers}; max |ORT - torch| {diff:.1e}:")
    for k, v in best.items():
        print(f"  {k:<20} {v:8.1f} ms")
    print(f"  torch eager (merged branches) / ORT: {best['torch_eager_merged'] / best['ort']:.2f}")
    if "ort_int8_decoder" in best:
        print(f"  torch eager / ORT with the int8 decoder: {best['torch_eager'] / best['ort_int8_decoder']:.2f} "
              "(float encoder; not the float-vs-float figure below)")
    print(f"ort_speedup_vs_torch: {best['torch_eager'] / best['ort']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
