"""Export the embedded VLF-MSC tier (``semcom.train.vlf``) to ONNX and register it.

    PYTHONPATH=python .venv/bin/python -m semcom.train.export_vlf --ckpt out/vlf/ckpt.pt --models models
    PYTHONPATH=python .venv/bin/python -m semcom.train.export_vlf --models models --evaluate 200 --out out/vlf_eval.json

Writes, into the models folder, with manifest entries (``semcom.runtime.register_model``):

- ``vlf_enc.onnx``: ``image`` float32 [1, 3, 128, 128] RGB in [0, 1] → ``vlf`` float32 [1, N, d].
  One graph: ×255, the shipped ``effnet_lite0_features`` graph (its (x − 127)/128
  normalisation, stem and stages 1–5, unchanged), the stage-4 ‖ stage-5 tokens, the query
  transformer. Composed with ``onnx.compose`` from the feature net's file and the exported
  transformer, so the encoder sees exactly the features it was trained on.
- ``vlf_cap_prefix.onnx``: ``vlf`` [1, N, d] → ``prefix_embeds`` [1, 1, E] (e0 = W_proj(mean_i ỹ_i)).
- ``vlf_cap_lm.onnx``: ``prefix_embeds`` [1, 1, E], ``input_ids`` int64 [1, T] → ``logits``
  [1, T, V]; logits[:, t] is the distribution of token t+1 (the LM reads [prefix, tok_0 … tok_{T-1}]).
- ``vlf_tokenizer.json``: the word-level tokenizer ([PAD]=0, [BOS]=1, [EOS]=2, [UNK]=3).

The scene-graph head used in training is not exported. Every graph is checked against torch
in ONNX Runtime before it is registered. ``--evaluate N`` runs the registered models (ONNX
Runtime, one thread) on the first N test-split scenes: caption attribute accuracy
(``scenes.caption_accuracy``) and sacrebleu corpus BLEU at feature SNRs −5, 0, 5, 10 dB and
clean, under the codec's noise model (``semcom.codecs.vlf.noisy_feature``), and the latency
of the encoder and of a greedy caption per image.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np
import torch

from .vlf import (BOS_ID, EOS_ID, FEATURE_CHANNELS, IMAGE_SIZE, PAD_ID, UNK_ID, VLFModel, bleu,
                  decode_ids, mean_accuracy)

ENC, PREFIX, LM = "vlf_enc", "vlf_cap_prefix", "vlf_cap_lm"
TOKENIZER_FILE = "vlf_tokenizer.json"
FEATURE_NET = "effnet_lite0_features"
EVAL_SNRS = (-5.0, 0.0, 5.0, 10.0, None)  # None: the clean feature
TOLERANCE = 1e-4


def load_checkpoint(path):
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = VLFModel(ck["cfg"])
    model.load_state_dict(ck["model"])
    return model.eval(), ck


class _EncoderCore(torch.nn.Module):
    def __init__(self, enc):
        super().__init__()
        self.enc = enc

    def forward(self, stage4, stage5):
        f = torch.cat([stage4, stage5], dim=1)
        return self.enc(f.flatten(2).transpose(1, 2))


def _export(module, args, path, input_names, output_names, dynamic_shapes=None):
    with torch.no_grad():
        torch.onnx.export(module, tuple(args), str(path), input_names=input_names, output_names=output_names,
                          dynamic_shapes=dynamic_shapes, dynamo=True, external_data=False, verbose=False)


def compose_encoder(feature_net_path, core_path, out_path, image_size=IMAGE_SIZE):
    """image [1,3,S,S] in [0,1] → ×255 → the feature net → (stage4, stage5) → the core graph."""
    import onnx
    from onnx import TensorProto, compose, helper

    feat = onnx.load(str(feature_net_path))
    core = onnx.load(str(core_path))
    opset = max(o.version for o in list(feat.opset_import) + list(core.opset_import) if o.domain in ("", "ai.onnx"))
    for m in (feat, core):
        if next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) != opset:
            raise RuntimeError("the feature net and the transformer graphs have different opsets; export the "
                               f"transformer at opset {opset}")
    ir = max(feat.ir_version, core.ir_version)
    feat.ir_version = core.ir_version = ir
    feat = compose.add_prefix(feat, "effnet/")
    scale = helper.make_tensor("to_255", TensorProto.FLOAT, [], [255.0])
    pre = helper.make_model(
        helper.make_graph([helper.make_node("Mul", ["image", "to_255"], ["image_255"])], "to_255",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, image_size, image_size])],
                          [helper.make_tensor_value_info("image_255", TensorProto.FLOAT,
                                                         [1, 3, image_size, image_size])], [scale]),
        opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)
    m = compose.merge_models(pre, feat, io_map=[("image_255", "effnet/image")],
                             outputs=["effnet/stage4", "effnet/stage5"])
    # the core's own domains (e.g. pkg.onnxscript.torch_lib functions) must be kept
    m = compose.merge_models(m, core, io_map=[("effnet/stage4", "stage4"), ("effnet/stage5", "stage5")],
                             outputs=["vlf"])
    m.graph.name = "vlf_enc"
    onnx.checker.check_model(m)
    onnx.save(m, str(out_path))


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12))


def export_all(model, cfg, tmp, feature_net_path):
    """Write the three graphs into ``tmp``, check them in ONNX Runtime against torch; returns
    {name: path} and the largest relative difference per graph."""
    import onnxruntime as ort

    from .vlf import effnet_tokens

    n, d, e = cfg["n_queries"], cfg["dim"], cfg["lm_width"]
    g = torch.Generator().manual_seed(0)
    s = IMAGE_SIZE // 16
    core = os.path.join(tmp, "vlf_enc_core.onnx")
    _export(_EncoderCore(model.encoder).eval(),
            (torch.randn(1, 80, s, s, generator=g), torch.randn(1, FEATURE_CHANNELS - 80, s, s, generator=g)),
            core, ["stage4", "stage5"], ["vlf"])
    paths = {ENC: os.path.join(tmp, ENC + ".onnx"), PREFIX: os.path.join(tmp, PREFIX + ".onnx"),
             LM: os.path.join(tmp, LM + ".onnx")}
    compose_encoder(feature_net_path, core, paths[ENC])
    _export(model.prefix, (torch.randn(1, n, d, generator=g),), paths[PREFIX], ["vlf"], ["prefix_embeds"])
    t_dim = torch.export.Dim("T", min=1, max=cfg["max_len"] + 1)
    _export(model.lm, (torch.randn(1, 1, e, generator=g), torch.randint(0, cfg["vocab_size"], (1, 5), generator=g)),
            paths[LM], ["prefix_embeds", "input_ids"], ["logits"], dynamic_shapes=(None, {1: t_dim}))

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = {k: ort.InferenceSession(p, so, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    feat = ort.InferenceSession(str(feature_net_path), so, providers=["CPUExecutionProvider"])

    class _F:  # effnet_tokens wants the runtime's run(feeds, outputs) signature
        def run(self, feeds, outputs):
            return dict(zip(outputs, feat.run(outputs, feeds)))

    errs = {}
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    with torch.no_grad():
        want = model.encoder(torch.from_numpy(effnet_tokens(_F(), img))).numpy()
    got = sess[ENC].run(["vlf"], {"image": img.transpose(0, 3, 1, 2).astype(np.float32) / 255.0})[0]
    errs[ENC] = _rel(want, got)
    with torch.no_grad():
        pw = model.prefix(torch.from_numpy(want)).numpy()
    errs[PREFIX] = _rel(pw, sess[PREFIX].run(["prefix_embeds"], {"vlf": want})[0])
    errs[LM] = 0.0
    for t in (1, 7, cfg["max_len"] + 1):
        ids = np.concatenate([[[BOS_ID]], rng.integers(4, cfg["vocab_size"], (1, t - 1))], 1).astype(np.int64)
        with torch.no_grad():
            lw = model.lm(torch.from_numpy(pw), torch.from_numpy(ids)).numpy()
        lg = sess[LM].run(["logits"], {"prefix_embeds": pw, "input_ids": ids})[0]
        if lg.shape != lw.shape:
            raise RuntimeError(f"{LM}: ONNX logits {lg.shape} vs torch {lw.shape} at T={t}")
        errs[LM] = max(errs[LM], _rel(lw, lg))
    return paths, errs


def manifest_entries(cfg, training, tokenizer_sha):
    n, d, e, v = cfg["n_queries"], cfg["dim"], cfg["lm_width"], cfg["vocab_size"]
    f32 = "float32"
    common = {"tier": "embedded", "source": "trained by semcom.train.vlf on semcom.datasets.scenes"}
    enc = {"name": ENC, "file": ENC + ".onnx", "task": "vlf-encoder",
           "inputs": [{"name": "image", "shape": [1, 3, IMAGE_SIZE, IMAGE_SIZE], "dtype": f32}],
           "outputs": [{"name": "vlf", "shape": [1, n, d], "dtype": f32}],
           "channel_uses": {"formula": "N*d/2", "symbols": {"N": "VLF query tokens (rows)",
                                                            "d": "VLF feature dimension"}},
           "training": training,
           "extra": {**common, "n_queries": n, "dim": d, "image_size": IMAGE_SIZE, "input_range": [0, 1],
                     "graph": "image*255 -> effnet_lite0_features (frozen ImageNet EfficientNet-Lite0, its "
                              "(x-127)/128 inside) -> stage4 || stage5 tokens (8x8 grid, 192 ch) + 2-D position "
                              f"embeddings -> {cfg['token_layers']} token self-attention block(s) -> {cfg['layers']} "
                              f"query blocks ({n} learned queries: self-attention, cross-attention to the tokens, "
                              f"MLP; width {cfg['width']}) -> Linear to {d} -> LayerNorm without affine "
                              "(each query: zero mean, unit variance over d)",
                     "feature_net": FEATURE_NET}}
    pre = {"name": PREFIX, "file": PREFIX + ".onnx", "task": "vlf-caption-prefix",
           "inputs": [{"name": "vlf", "shape": [1, n, d], "dtype": f32}],
           "outputs": [{"name": "prefix_embeds", "shape": [1, 1, e], "dtype": f32}],
           "channel_uses": None, "training": training,
           "extra": {**common, "prefix": "pooled", "P": 1, "E": e,
                     "graph": "e0 = W_proj(mean over the N queries), W_proj = LayerNorm + Linear (the VLF-MSC "
                              "soft prompt)"}}
    lm = {"name": LM, "file": LM + ".onnx", "task": "vlf-caption-lm",
          "inputs": [{"name": "prefix_embeds", "shape": [1, 1, e], "dtype": f32},
                     {"name": "input_ids", "shape": [1, "T"], "dtype": "int64"}],
          "outputs": [{"name": "logits", "shape": [1, "T", v], "dtype": f32}],
          "channel_uses": None, "training": training,
          "extra": {**common, "tokenizer": TOKENIZER_FILE, "tokenizer_sha256": tokenizer_sha,
                    "bos_id": BOS_ID, "eos_id": EOS_ID, "pad_id": PAD_ID, "unk_id": UNK_ID,
                    "max_new_tokens": cfg["max_len"] + 1, "max_input_tokens": cfg["max_len"] + 1,
                    "vocab_size": v, "prefix": "pooled", "P": 1,
                    "lm": f"causal transformer trained here: {cfg['lm_layers']} pre-LN blocks, width {e}, "
                          f"{cfg['heads']} heads, learned positions, tied input/output embedding",
                    "decoding": "greedy: ids=[bos]; repeat argmax(logits[0, -1]) until eos or max_new_tokens; "
                                "no KV cache (the full sequence every step)"}}
    return [enc, pre, lm]


def _schedule(ck) -> str:
    """The runs of a resumed training, e.g. "steps 0-2600 with --steps 2600 --lr 0.002 ..."."""
    runs = ck.get("runs") or []
    if len(runs) < 2:
        return ""
    ends = [r["from_step"] for r in runs[1:]] + [ck["step"]]
    parts = []
    for r, e in zip(runs, ends):
        how = ("" if r["from_step"] == 0 or r.get("schedule") == "restart"
               else f", continuing the cosine of steps 0-{r['steps']}")
        parts.append(f"steps {r['from_step']}-{e} with --steps {r['steps']} --lr {r['lr']}"
                     + (f" --aux-weight {r['aux_weight']}" if "aux_weight" in r else "")
                     + (f" --reinit-row-pos {r['reinit_row_pos']}" if r.get("reinit_row_pos") else "") + how)
    return ("(schedule: " + "; then ".join(parts) + "; a resumed run restarts warm-up and cosine decay over its "
            "own steps unless noted; the command above is the last run's) ")


def training_record(ck):
    a = ck["args"]
    dat = ck["data"]
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in a.items()
                     if k not in ("work", "resume", "models", "cache") and not isinstance(v, bool))
    return {
        "data": f"semcom.datasets.scenes: train split seeds {dat['train'][0]}..{dat['train'][1]} "
                f"({dat['train'][2]} scenes rendered at {IMAGE_SIZE} px, {ck.get('n_caps', 5)} reference captions "
                f"each, one drawn per step); validation: val split seeds {dat['val'][0]}..{dat['val'][1]} "
                f"({dat['val'][2]} scenes); EfficientNet features from effnet_lite0_features (ONNX Runtime)",
        "command": f"python -m gnuradio.semcom.train.vlf --work out/vlf {flags} && "
                   "python -m gnuradio.semcom.train.export_vlf --ckpt out/vlf/ckpt.pt --models models",
        "notes": f"{ck['step']} steps of batch {a['batch']} in {ck['elapsed_s'] / 60:.0f} min of CPU wall time "
                 + _schedule(ck) +
                 f"(1 torch thread, shared machine); seed {a['seed']}; loss = caption cross-entropy + "
                 f"{a['aux_weight']} x scene-graph cross-entropy (training-only head on all N queries: per slot "
                 "shape/none, colour, size, x and y bins; not exported); every feature through the codec's channel "
                 "(v + sqrt(P) n)/(1+s2), n ~ N(0, s2/2), P = 2 mean(v^2), SNR uniform in [-7.5, 12.5] dB, a share "
                 f"{a['clean_frac']} clean; AdamW lr {a['lr']} (warm-up, cosine), weight decay {a['weight_decay']}. "
                 "See docs/vlf.md.",
    }


def export(ckpt, models_dir, feature_models_dir=None):
    from ..runtime import register_model
    from ..runtime.manifest import load_manifest, sha256_file

    model, ck = load_checkpoint(ckpt)
    cfg = ck["cfg"]
    fdir = models_dir if feature_models_dir is None else feature_models_dir
    feat_path = load_manifest(fdir).models_dir / load_manifest(fdir).entry(FEATURE_NET).file
    tok_src = os.path.join(os.path.dirname(ckpt), "tokenizer.json")
    os.makedirs(models_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths, errs = export_all(model, cfg, tmp, feat_path)
        print("max relative |ORT - torch|: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
        bad = {k: v for k, v in errs.items() if v > TOLERANCE}
        if bad:
            raise SystemExit(f"ONNX Runtime differs from torch: {bad}; not registered")
        dst = os.path.join(models_dir, TOKENIZER_FILE)
        shutil.copyfile(tok_src, dst + ".tmp")
        os.replace(dst + ".tmp", dst)
        entries = manifest_entries(cfg, training_record(ck), sha256_file(dst))
        for entry in entries:
            register_model(models_dir, entry, paths[entry["name"]])
            print(f"{entry['file']}: {os.path.getsize(os.path.join(models_dir, entry['file'])) / 1e6:.2f} MB")
    return errs


# ----------------------------------------------------------------------------- evaluation (ONNX Runtime)

def greedy_caption(prefix_model, lm_model, v, max_new_tokens):
    """ids of the greedy caption of one feature (N, d) (without [BOS], up to [EOS])."""
    pre = prefix_model.run({"vlf": np.ascontiguousarray(v[None], np.float32)})["prefix_embeds"]
    ids = [BOS_ID]
    for _ in range(max_new_tokens):
        logits = lm_model.run({"prefix_embeds": pre, "input_ids": np.asarray([ids], np.int64)})["logits"]
        nxt = int(np.argmax(logits[0, -1]))
        if nxt == EOS_ID:
            break
        ids.append(nxt)
    return ids[1:]


def evaluate(models_dir, n=200, snrs=EVAL_SNRS, seed=0, split="test", threads=1, source_size=None):
    """Accuracy and BLEU per SNR, examples and latencies of the registered models on ``n`` scenes,
    rendered at the encoder's size, or at ``source_size`` and resized the way the codec does."""
    from tokenizers import Tokenizer

    from ..codecs.vlf import noisy_feature
    from ..datasets import scenes
    from ..runtime import load_model

    enc = load_model(ENC, models_dir=models_dir, threads=threads)
    pre = load_model(PREFIX, models_dir=models_dir, threads=threads)
    lm = load_model(LM, models_dir=models_dir, threads=threads)
    tok = Tokenizer.from_file(os.path.join(models_dir, lm.entry.extra["tokenizer"]))
    max_new = int(lm.entry.extra["max_new_tokens"])
    from ..codecs.vlf import resize_rgb

    size = int(enc.entry.extra["image_size"])
    items = scenes.dataset(split, n=n, size=source_size or size)
    feats, t_enc, sc, refs = [], [], [], []
    for it in items:
        img = resize_rgb(it.image, size, size)
        x = np.ascontiguousarray(img.transpose(2, 0, 1)[None], np.float32) / np.float32(255.0)
        t0 = time.perf_counter()
        feats.append(enc.run({"image": x})["vlf"][0])
        t_enc.append(time.perf_counter() - t0)
        sc.append(it.scene)
        refs.append(it.captions)
    rng = np.random.default_rng(seed)
    res = {"n": n, "split": split, "source_size": source_size or size, "snr": {}}
    t_cap = []
    for snr in snrs:
        texts = []
        for v in feats:
            y = v if snr is None else noisy_feature(v, snr, rng)
            t0 = time.perf_counter()
            ids = greedy_caption(pre, lm, y, max_new)
            t_cap.append(time.perf_counter() - t0)
            texts.append(decode_ids(tok, ids))
        key = "clean" if snr is None else f"{snr:g}"
        res["snr"][key] = {"accuracy": mean_accuracy(scenes, texts, sc), "bleu": bleu(texts, refs),
                           "examples": [{"seed": int(items.seeds[k]), "caption": texts[k],
                                         "reference": refs[k][0]} for k in range(min(4, len(texts)))]}
    res["latency_ms"] = {"encoder_median": 1e3 * float(np.median(t_enc)),
                         "caption_median": 1e3 * float(np.median(t_cap)), "threads": threads}
    res["sizes_bytes"] = {m.entry.file: int(m.entry.size_bytes) for m in (enc, pre, lm)}
    return res


def format_table(res) -> str:
    kinds = ("overall", "shape", "colour", "size", "count", "relation")
    lines = ["| feature SNR | " + " | ".join(kinds) + " | BLEU |", "|---" * (len(kinds) + 2) + "|"]
    for key, r in res["snr"].items():
        lab = "clean" if key == "clean" else f"{key} dB"
        lines.append(f"| {lab} | " + " | ".join(f"{r['accuracy'][k]:.3f}" for k in kinds) + f" | {r['bleu']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default="out/vlf/ckpt.pt")
    ap.add_argument("--models", default="models", help="models folder holding manifest.json")
    ap.add_argument("--evaluate", type=int, default=0, metavar="N",
                    help="only evaluate the registered models on N test scenes (no export)")
    ap.add_argument("--out", default="", help="with --evaluate: write the results as JSON here")
    ap.add_argument("--source-size", type=int, default=None,
                    help="with --evaluate: render the scenes at this size and resize them to the encoder's "
                         "(bicubic, as the codec does); default: render at the encoder's size")
    args = ap.parse_args(argv)
    if args.evaluate:
        res = evaluate(args.models, args.evaluate, source_size=args.source_size)
        print(format_table(res))
        for key, r in res["snr"].items():
            for ex in r["examples"][:2]:
                print(f"{key}: {ex['caption']!r}   (ref {ex['reference']!r})")
        print(json.dumps({k: res[k] for k in ("latency_ms", "sizes_bytes")}))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(res, f, indent=1)
        return
    export(args.ckpt, args.models)


if __name__ == "__main__":
    main()
