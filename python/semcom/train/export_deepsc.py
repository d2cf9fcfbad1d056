"""Export a trained DeepSC checkpoint to ONNX, register it, and measure the shipped codec.

    PYTHONPATH=python .venv/bin/python -m semcom.train.export_deepsc --ckpt out/deepsc/ckpt.pt --models models
    PYTHONPATH=python .venv/bin/python -m semcom.train.export_deepsc --sweep-only --models models --n 300

Export writes ``deepsc_enc.onnx`` and ``deepsc_dec.onnx`` (batch 1, any caption length up to
``max_len`` tokens), checks that ONNX Runtime reproduces the torch outputs, registers both with
``semcom.runtime.register_model`` and writes the tokenizer ``deepsc_tokenizer.json`` next to
them. ``--sweep`` (or ``--sweep-only``, which needs no torch) then runs the ONNX codec
``semcom.codecs.deepsc.DeepScCodec`` over ``--n`` test-split captions through the numpy AWGN
channel at each SNR and prints corpus BLEU (sacrebleu), sentence accuracy, channel uses and
latency; ``--out`` saves them as JSON.

Graph contract (also in the manifest entries):
- ``deepsc_enc``: ``input_ids`` int64 [1, T] (word tokens, no [BOS]/[EOS]) → ``symbols``
  float32 [1, T, 2k]: k complex symbols per token as (real, imaginary) pairs, already scaled
  to unit mean power per complex symbol over the caption.
- ``deepsc_dec``: ``received`` float32 [1, T, 2k] (the same layout, y = x + n), ``snr_db``
  float32 [1, 1] (the receiver's Es/N0 estimate), ``input_ids`` int64 [1, L] ([BOS] and the
  words decoded so far) → ``logits`` float32 [1, L, V]; ``logits[0, t]`` is the distribution of
  token t+1. The codec decodes greedily: ids = [BOS]; repeat argmax(logits[0, -1]) until [EOS].
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

ENC_NAME, DEC_NAME = "deepsc_enc", "deepsc_dec"
TOKENIZER_FILE = "deepsc_tokenizer.json"
TOLERANCE = 1e-4
SWEEP_SNRS = (-5.0, -2.5, 0.0, 2.5, 5.0, 7.5, 10.0)


def load_checkpoint(path):
    import torch

    from .deepsc import DeepSC

    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = DeepSC(**ck["config"])
    model.load_state_dict(ck["model"])
    return model.eval(), ck


def _wrappers(model):
    import torch

    class Enc(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return self.m.encode(input_ids)

    class Dec(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, received, snr_db, input_ids):
            return self.m.decode(received, snr_db, input_ids)

    return Enc(model).eval(), Dec(model).eval()


def export_onnx(model, enc_path, dec_path):
    """Write the two graphs (dynamic T and L, batch 1)."""
    import torch

    enc, dec = _wrappers(model)
    max_len = model.max_len
    T = torch.export.Dim("T", min=1, max=max_len)
    L = torch.export.Dim("L", min=1, max=max_len + 1)
    ids = torch.randint(4, model.config["vocab_size"], (1, 7))
    rec = torch.randn(1, 7, 2 * model.k)
    snr = torch.full((1, 1), 5.0)
    tin = torch.randint(4, model.config["vocab_size"], (1, 5))
    with torch.no_grad():
        torch.onnx.export(enc, (ids,), enc_path, dynamo=True, external_data=False, input_names=["input_ids"],
                          output_names=["symbols"], dynamic_shapes=({1: T},), verbose=False)
        torch.onnx.export(dec, (rec, snr, tin), dec_path, dynamo=True, external_data=False,
                          input_names=["received", "snr_db", "input_ids"], output_names=["logits"],
                          dynamic_shapes=({1: T}, None, {1: L}), verbose=False)
    for path in (enc_path, dec_path):
        _strip(path)


def _strip(path):
    """Drop what the exporter records for debugging (per-node source locations, doc strings,
    intermediate value_info): a third of the file size at this model size, no effect on results."""
    import onnx

    m = onnx.load(str(path))
    for node in m.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del m.graph.value_info[:]
    onnx.save(m, str(path))


def _session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def check_ort(model, enc_path, dec_path, lengths=(1, 9, 23)) -> float:
    """Largest |ORT − torch| over encoder symbols and decoder logits for a few lengths."""
    import torch

    enc, dec = _session(enc_path), _session(dec_path)
    g = torch.Generator().manual_seed(0)
    V = model.config["vocab_size"]
    worst = 0.0
    for T in lengths:
        T = min(T, model.max_len)
        ids = torch.randint(4, V, (1, T), generator=g)
        rec = torch.randn(1, T, 2 * model.k, generator=g)
        snr = torch.full((1, 1), float(torch.empty(1).uniform_(-7.5, 12.5, generator=g)))
        tin = torch.randint(4, V, (1, min(T + 1, model.max_len + 1)), generator=g)
        with torch.no_grad():
            x_t = model.encode(ids).numpy()
            l_t = model.decode(rec, snr, tin).numpy()
        x_o = enc.run(None, {"input_ids": ids.numpy()})[0]
        l_o = dec.run(None, {"received": rec.numpy(), "snr_db": snr.numpy(), "input_ids": tin.numpy()})[0]
        worst = max(worst, float(np.abs(x_o - x_t).max()), float(np.abs(l_o - l_t).max()))
    return worst


def manifest_entries(config, training, tokenizer_sha):
    from .deepsc import BOS_ID, EOS_ID, PAD_ID, SNR_SCALE, SPECIALS, UNK_ID

    k = config["k"]
    extra = {
        "architecture": "DeepSC (Xie et al., IEEE TSP 2021): word embedding, transformer encoder, dense channel "
                        "encoder, power normalisation, AWGN, dense channel decoder (SNR-conditioned), transformer "
                        "decoder",
        "config": config,
        "symbols_per_token": k,
        "max_tokens": config["max_len"],
        "tokenizer": TOKENIZER_FILE,
        "tokenizer_sha256": tokenizer_sha,
        "special_tokens": list(SPECIALS),
        "pad_id": PAD_ID, "unk_id": UNK_ID, "bos_id": BOS_ID, "eos_id": EOS_ID,
        "snr_db_range": [-7.5, 12.5],
        "snr_scale": SNR_SCALE,
        "symbols": "token t, symbol i = symbols[0, t, 2i] + 1j*symbols[0, t, 2i+1]; sent token-major "
                   "(T*k complex symbols); unit mean power per complex symbol over the caption",
        "snr_convention": "Es/N0 per complex symbol, Es = 1, noise CN(0, 10^(-SNR/10))",
        "encoder": ENC_NAME, "decoder": DEC_NAME,
    }
    uses = {"formula": f"{k} * T", "symbols": {"T": "word tokens of the caption (scenes.tokenize; no [BOS]/[EOS])"}}
    f32, i64 = "float32", "int64"
    enc = {"name": ENC_NAME, "file": ENC_NAME + ".onnx", "task": "text-jscc-encoder",
           "inputs": [{"name": "input_ids", "shape": [1, "T"], "dtype": i64}],
           "outputs": [{"name": "symbols", "shape": [1, "T", 2 * k], "dtype": f32}],
           "channel_uses": uses, "training": training, "extra": extra}
    dec = {"name": DEC_NAME, "file": DEC_NAME + ".onnx", "task": "text-jscc-decoder",
           "inputs": [{"name": "received", "shape": [1, "T", 2 * k], "dtype": f32},
                      {"name": "snr_db", "shape": [1, 1], "dtype": f32},
                      {"name": "input_ids", "shape": [1, "L"], "dtype": i64}],
           "outputs": [{"name": "logits", "shape": [1, "L", config["vocab_size"]], "dtype": f32}],
           "channel_uses": uses, "training": training, "extra": extra}
    return enc, dec


def training_record(ck) -> dict:
    a = ck["args"]
    flags = " ".join(f"--{k.replace('_', '-')} {a[k]}" for k in
                     ("steps", "minutes", "batch", "lr", "warmup", "seed", "threads", "snr_min", "snr_max",
                      "snr_jitter", "d_model", "heads", "d_ff", "enc_layers", "dec_layers", "k", "chan_hidden",
                      "max_len"))
    last = ck["history"][-1]["val"] if ck.get("history") else {}
    runs = ck.get("runs", [])
    resumed = "; ".join(f"from step {r['start_step']}: --steps {r['args']['steps']} --minutes {r['args']['minutes']}"
                        + (" --resume" if r["args"].get("resume") else "") for r in runs)
    val = ", ".join(f"{float(s):g} dB {v[0]:.3f}" for s, v in last.items())
    return {
        "data": "captions of the synthetic scene benchmark semcom.datasets.scenes: per example a random seed of the "
                "'train' split (seeds 0-99999) and one of its five captions at random; validation: the first "
                f"{a['val_n']} scenes of the 'val' split",
        "command": f"OMP_NUM_THREADS=1 python -m semcom.train.deepsc {flags} && python -m semcom.train.export_deepsc",
        "notes": f"{ck['step']} steps (batch {a['batch']}) in {ck['elapsed_s'] / 60:.1f} min of CPU wall time on "
                 f"{a['threads']} thread; token cross-entropy only (no mutual-information term); per caption an "
                 f"SNR uniform in [{a['snr_min']}, {a['snr_max']}] dB (Es/N0, project convention), decoder SNR "
                 f"input with ±{a['snr_jitter']} dB error; Adam, warm-up + cosine; validation sentence accuracy "
                 f"(greedy) at the end: {val}" + (f"; runs of the checkpoint: {resumed}" if len(runs) > 1 else ""),
    }


def export(ckpt, models):
    from ..runtime import register_model, sha256_file
    from .deepsc import build_tokenizer

    model, ck = load_checkpoint(ckpt)
    os.makedirs(models, exist_ok=True)
    tok_path = os.path.join(models, TOKENIZER_FILE)
    tmp_tok = tok_path + ".tmp"
    build_tokenizer(tmp_tok, ck["words"])  # the vocabulary the model was trained with
    os.replace(tmp_tok, tok_path)
    from ..datasets import scenes

    if list(scenes.vocabulary()) != list(ck["words"]):
        print("warning: scenes.vocabulary() differs from the checkpoint's vocabulary; the tokenizer follows "
              "the checkpoint")
    with tempfile.TemporaryDirectory() as tmp:
        enc_tmp, dec_tmp = os.path.join(tmp, ENC_NAME + ".onnx"), os.path.join(tmp, DEC_NAME + ".onnx")
        export_onnx(model, enc_tmp, dec_tmp)
        err = check_ort(model, enc_tmp, dec_tmp)
        print(f"max |ORT - torch| = {err:.2e}")
        if err > TOLERANCE:
            raise SystemExit(f"ONNX Runtime differs from torch by {err:.2e} (> {TOLERANCE:g}); not registered")
        enc_e, dec_e = manifest_entries(model.config, training_record(ck), sha256_file(tok_path))
        register_model(models, enc_e, enc_tmp)
        register_model(models, dec_e, dec_tmp)
        for p in (enc_tmp, dec_tmp):
            print(f"{os.path.basename(p)}: {os.path.getsize(p) / 1e6:.2f} MB")


# ----------------------------------------------------------------------------- sweep (no torch)

def test_captions(n: int, split="test", with_scenes=False):
    """n captions of ``split``: scene i's caption i mod 5 (every template equally often); with
    ``with_scenes`` also the scenes."""
    from ..datasets import scenes

    out, scs = [], []
    for i, seed in enumerate(scenes.SPLITS[split][:n]):
        sc = scenes.generate(int(seed))
        caps = scenes.captions(sc)
        out.append(caps[i % len(caps)])
        scs.append(sc)
    return (out, scs) if with_scenes else out


def sweep(models=None, n=300, snrs=SWEEP_SNRS, seed=7, threads=1) -> dict:
    """Corpus BLEU (sacrebleu, default settings), sentence accuracy (exact match), the scenes'
    semantic caption accuracy (``scenes.caption_accuracy`` "overall", against the scene the caption
    describes), mean channel uses and mean latency (encode, decode per caption) of the ONNX codec
    over AWGN at each SNR; the receiver's SNR estimate is the true SNR (perfect CSI)."""
    import sacrebleu

    from ..channels.awgn import awgn
    from ..codecs.base import Csi
    from ..codecs.deepsc import DeepScCodec
    from ..datasets import scenes

    codec = DeepScCodec(models_dir=models, threads=threads)
    caps, scs = test_captions(n, with_scenes=True)
    rng = np.random.default_rng(seed)
    rows = {}
    for snr in snrs:
        hyps, uses, t_enc, t_dec = [], [], 0.0, 0.0
        for c in caps:
            t0 = time.perf_counter()
            e = codec.encode(c)
            t1 = time.perf_counter()
            y = awgn(e.symbols, snr, rng)
            t2 = time.perf_counter()
            hyps.append(codec.decode(y, e.side_info, Csi(snr_db=snr)))
            t3 = time.perf_counter()
            uses.append(e.symbols.size)
            t_enc += t1 - t0
            t_dec += t3 - t2
        bleu = sacrebleu.corpus_bleu(hyps, [caps]).score
        acc = float(np.mean([h == c for h, c in zip(hyps, caps)]))
        sem = float(np.mean([scenes.caption_accuracy(h, sc)["overall"] for h, sc in zip(hyps, scs)]))
        rows[snr] = {"bleu": bleu, "sentence_acc": acc, "semantic_acc": sem, "channel_uses_mean": float(np.mean(uses)),
                     "enc_ms": 1e3 * t_enc / n, "dec_ms": 1e3 * t_dec / n, "example": hyps[0]}
        print(f"{snr:6.1f} dB  BLEU {bleu:6.2f}  acc {acc:.3f}  semantic {sem:.3f}  uses {np.mean(uses):.1f}  "
              f"enc {rows[snr]['enc_ms']:.2f} ms  dec {rows[snr]['dec_ms']:.2f} ms", flush=True)
    return {"n": n, "seed": seed, "threads": threads, "reference": caps[0], "rows": rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default="out/deepsc/ckpt.pt")
    ap.add_argument("--models", default="models", help="models folder holding manifest.json")
    ap.add_argument("--sweep", action="store_true", help="after exporting, measure the codec (BLEU etc.)")
    ap.add_argument("--sweep-only", action="store_true", help="only measure the registered models (no torch)")
    ap.add_argument("--n", type=int, default=300, help="test captions in the sweep")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads in the sweep")
    ap.add_argument("--out", default="", help="write the sweep results as JSON here")
    args = ap.parse_args(argv)
    if not args.sweep_only:
        export(args.ckpt, args.models)
    if args.sweep or args.sweep_only:
        res = sweep(args.models, args.n, threads=args.threads)
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
