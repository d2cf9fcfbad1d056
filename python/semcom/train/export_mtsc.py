"""Export a trained multi-task codec (``semcom.train.mtsc``) to ONNX for ``semcom.codecs.mtsc``.

Four graphs per system (``--prefix``: "mtsc" for the LAM-based link, "udeepsc" for the
U-DeepSC-like baseline): ``<prefix>_enc`` (image, question ids + mask, log-mel, video → JSC
symbols per token, token importance, valid mask), ``<prefix>_jscdec`` (received symbols, masks,
log noise variance, SNR → the LAM decoder's memory), ``<prefix>_lm`` (memory + token ids →
logits) and ``<prefix>_rec`` (memory → image). Before registering them, the export checks that
ONNX Runtime gives what torch gives (≤ ``TOLERANCE``) and calibrates the variable-rate coder's
distortion table D(level, SNR) on validation items (``semcom.codecs.mtsc``), stored with the
vocabulary and the layout in the encoder's manifest entry.

    python -m semcom.train.export_mtsc --ckpt out/mtsc/jsc/ckpt.pt --models models --prefix mtsc
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import tempfile

import numpy as np
import torch

from ..codecs.mtsc_inputs import GROUP, LEVELS
from .mtsc import evaluate, load_cache, vocab
from .mtsc_model import MtscConfig, MtscModel, apply_channel

TOLERANCE = 2e-3
CAL_SNR = tuple(float(s) for s in range(-9, 22, 3))


def load_checkpoint(path):
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = MtscModel(MtscConfig(**ck["cfg"]))
    model.load_state_dict(ck["model"])
    return model.eval(), ck


class _Enc(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, image, q_ids, q_mask, mel, video):
        h, valid, imp = self.m.lam_encode(image, q_ids, q_mask, mel, video, attentions=True)
        return self.m.jsc_encode(h), imp, valid


class _JscDec(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, y, sym_mask, log_nv, snr_db):
        return self.m.jsc_decode(y, sym_mask, log_nv, snr_db), self.m.memory_mask(sym_mask)


class _Lm(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, memory, memory_mask, input_ids):
        return self.m.text_logits(memory, memory_mask, input_ids)


class _Rec(torch.nn.Module):
    def __init__(self, m, rec_id):
        super().__init__()
        self.m, self.rec_id = m, rec_id

    def forward(self, memory, memory_mask):
        return self.m.reconstruct(memory, memory_mask, self.rec_id)


def example_inputs(cfg: MtscConfig, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    lay = cfg.lay
    qm = torch.zeros(batch, lay.question)
    qm[:, :5] = 1
    return (torch.rand(batch, 3, cfg.image_size, cfg.image_size, generator=g),
            torch.randint(4, cfg.vocab_size, (batch, lay.question), generator=g), qm,
            torch.randn(batch, 64, cfg.audio_frames, generator=g) - 3,
            torch.rand(batch, cfg.video_frames, 3, cfg.video_size, cfg.video_size, generator=g))


def _export(module, args, path, input_names, output_names, dynamic_shapes=None):
    with torch.no_grad():
        torch.onnx.export(module, tuple(args), str(path), input_names=input_names, output_names=output_names,
                          dynamic_shapes=dynamic_shapes, dynamo=True, external_data=False, verbose=False)


def calibrate(model, data, snrs=CAL_SNR, n=64, seed=0):
    """D(level, SNR): mean over valid tokens of ‖memory − h‖² / mean ‖h‖², every token at the
    level, AWGN at each SNR (the receiver's LMMSE input as at run time)."""
    g = torch.Generator().manual_seed(seed)
    from .mtsc import batch_tensors

    b = batch_tensors(data, np.arange(min(n, len(data["seed"]))), np.random.default_rng(seed), torch)
    out = np.zeros((len(LEVELS), len(snrs)))
    with torch.no_grad():
        h, valid, _ = model.lam_encode(b["image"], b["q_ids"], b["q_mask"], b["mel"], b["video"])
        z = model.jsc_encode(h)
        ref = float(((h ** 2).sum(-1) * valid).sum() / valid.sum())
        B = h.shape[0]
        for i, lv in enumerate(LEVELS):
            for j, s in enumerate(snrs):
                snr = torch.full((B,), float(s))
                rates = valid * float(max(lv, 1))
                y, sm, lnv = apply_channel(z, rates, snr, None, generator=g)
                if lv == 0:
                    y, sm, lnv = y * 0, sm * 0, lnv * 0
                mem = model.jsc_decode(y, sm, lnv, snr)
                err = ((mem - h) ** 2).sum(-1)
                out[i, j] = float((err * valid).sum() / valid.sum()) / ref
    # a distortion that rises with the rate is noise of the estimate: make it non-increasing
    return np.minimum.accumulate(out, axis=0)


def export(model, ckpt_meta, models_dir, prefix="mtsc", training=None, val=None, check=True, train_args=None):
    from ..runtime.manifest import register_model
    from ..runtime.session import OnnxModel  # noqa: F401  (import check: onnxruntime present)
    import onnxruntime as ort

    cfg = model.cfg
    v = vocab()
    models_dir = pathlib.Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    B, T = torch.export.Dim("B", min=1, max=64), torch.export.Dim("T", min=1, max=cfg.max_target)
    ex = example_inputs(cfg)
    with torch.no_grad():
        z, imp, valid = _Enc(model)(*ex)
        L, r = z.shape[1], cfg.r_max
        y = torch.randn(1, L, 2 * r)
        sm = (torch.rand(1, L, r) < 0.6).float()
        lnv = -torch.rand(1, L, r) * sm
        snr = torch.tensor([5.0])
        mem, mm = _JscDec(model)(y, sm, lnv, snr)
        ids = torch.tensor([[v.task_id("vqa"), 10, 11]])
    graphs = {
        "enc": (_Enc(model), ex, ["image", "q_ids", "q_mask", "mel", "video"], ["z", "importance", "valid"], None),
        "jscdec": (_JscDec(model), (y, sm, lnv, snr), ["y", "sym_mask", "log_nv", "snr_db"], ["memory", "memory_mask"], None),
        "lm": (_Lm(model), (mem.repeat(2, 1, 1), mm.repeat(2, 1), ids.repeat(2, 1)), ["memory", "memory_mask", "input_ids"],
               ["logits"], ({0: B}, {0: B}, {0: B, 1: T})),
        "rec": (_Rec(model, v.task_id("reconstruction")), (mem, mm), ["memory", "memory_mask"], ["image"], None),
    }
    cal = calibrate(model, val) if val is not None else None
    extra = {"vocab": v.tokens, "layout": cfg.layout, "r_max": cfg.r_max, "max_target": cfg.max_target,
             "image_size": cfg.image_size, "levels": list(LEVELS), "group": GROUP, "fuse": cfg.fuse,
             "distortion": None if cal is None else np.round(cal, 5).tolist(), "distortion_snr_db": list(CAL_SNR),
             "config": cfg.to_dict(), "step": ckpt_meta.get("step"), "train_args": train_args}
    report = {}
    with tempfile.TemporaryDirectory() as td:
        for part, (mod, args, ins, outs, dyn) in graphs.items():
            path = pathlib.Path(td) / f"{prefix}_{part}.onnx"
            _export(mod.eval(), args, path, ins, outs, dyn)
            if check:
                sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                got = sess.run(None, {n: a.numpy() for n, a in zip(ins, args)})
                with torch.no_grad():
                    want = mod(*args)
                want = want if isinstance(want, tuple) else (want,)
                err = max(float(np.max(np.abs(g_ - w.numpy()))) if g_.size else 0.0 for g_, w in zip(got, want))
                report[part] = err
                if err > TOLERANCE:
                    raise RuntimeError(f"{prefix}_{part}: ONNX Runtime differs from torch by {err:.2e}")
            entry = {"name": f"{prefix}_{part}", "file": f"{prefix}_{part}.onnx",
                     "task": f"mtsc-{part}" if cfg.fuse else f"udeepsc-{part}",
                     "channel_uses": None, "training": training or {}, "extra": extra if part == "enc" else {}}
            register_model(models_dir, entry, path)
    return report, cal


def training_record(conf, ckpt, notes="", step=None):
    """The manifest's ``training`` object (keys data, command, notes) from the run's config.json."""
    args = conf.get("args") or {}
    flags = [f"--{k.replace('_', '-')} {v}" for k, v in args.items()
             if k not in ("phase", "threads", "eval_every") and v not in (None, "")]
    command = f"python -m semcom.train.mtsc {args.get('phase', '?')} " + " ".join(flags) if args else ""
    sha = hashlib.sha256(pathlib.Path(ckpt).read_bytes()).hexdigest()
    init = f"; initialised from {args['init']}" if args.get("init") else ""
    return {"data": "semcom.datasets.multitask: train split items (seeds from 0); validation: val split",
            "command": command,
            "notes": f"checkpoint sha256 {sha}, step {step if step is not None else args.get('steps')}{init}. {notes}".strip()}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m semcom.train.export_mtsc", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--models", default="models")
    ap.add_argument("--prefix", default="mtsc", choices=("mtsc", "udeepsc"))
    ap.add_argument("--n-val", type=int, default=64)
    ap.add_argument("--notes", default="")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    model, ck = load_checkpoint(a.ckpt)
    cfg_path = pathlib.Path(a.ckpt).with_name("config.json")
    conf = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    val = load_cache("val", a.n_val)
    training = training_record(conf, a.ckpt, a.notes, ck.get("step"))
    report, cal = export(model, ck, a.models, a.prefix, training, val, train_args=conf.get("args"))
    print("max |ONNX − torch|:", {k: f"{e:.1e}" for k, e in report.items()})
    print("distortion D(level, SNR) rows=levels", LEVELS, "cols=SNR", CAL_SNR)
    print(np.round(cal, 3))
    for s in (None, -3.0, 3.0, 12.0):
        print("val", "clean" if s is None else f"{s:+.0f} dB", evaluate(model, val, torch, s))


if __name__ == "__main__":
    main()
