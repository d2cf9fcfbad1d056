"""Export the embedded-tier VLF image decoder (latent diffusion) to ONNX and register it.

    PYTHONPATH=python .venv/bin/python -m semcom.train.export_ldm --ae out/ldm_ae/ckpt.pt \\
        --unet out/ldm_unet/ckpt.pt --models models

Writes (EMA weights, batch 1) and checks each against torch with ONNX Runtime:
- ``vlf_vae_enc``: ``image`` float32 [1,3,128,128] RGB in [0,1] → ``latent`` [1,4,16,16] in
  diffusion space (autoencoder latent × scaling_factor; the Img2Img-SC transmitter sends it);
- ``vlf_vae_dec``: ``latent`` [1,4,16,16] (diffusion space; 1/scaling_factor inside) →
  ``image`` [1,3,128,128] in [0,1];
- ``vlf_img_cond``: ``vlf`` [1,N,d] → ``context`` [1,N,C];
- ``img2img_text_cond``: ``input_ids`` int64 [1,T] ([BOS] caption words [EOS]) → ``context`` [1,T,C];
- ``vlf_unet``: ``latent`` [1,4,16,16], ``timestep`` int64 [1], ``context`` [1,L,C] (any L ≤ 64)
  → ``noise_pred`` [1,4,16,16] (epsilon). ``extra``: latent_shape, scheduler (diffusers
  DDIMScheduler config), steps (default DDIM steps), scaling_factor, img2img settings.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np
import torch

from .ldm import LATENT_SHAPE, IMAGE_SIZE, MAX_TOKENS, SCHEDULER, WordTokenizer, build_ldm, load_ae, _torch_models

TOLERANCE = 2e-3
NAMES = ("vlf_vae_enc", "vlf_vae_dec", "vlf_img_cond", "img2img_text_cond", "vlf_unet")


def load_unet(path: str):
    """(unet, vlf_cond, text_cond, checkpoint) with the EMA weights, eval mode."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    unet, vc, tc = build_ldm(ck["cfg"])
    unet.load_state_dict(ck["ema"]["unet"], strict=False)
    if vc is not None:
        vc.load_state_dict(ck["ema"]["vlf_cond"])
        vc.eval()
    if tc is not None:
        tc.load_state_dict(ck["ema"]["text_cond"])
        tc.eval()
    return unet.eval(), vc, tc, ck


def remap_text_vocab(tc, words: list, tok: WordTokenizer) -> int:
    """Reorder the caption embedding rows from the training vocabulary ``words`` to the ids of
    ``tok`` (same words, possibly other ids). Returns the number of words not found (→ [UNK])."""
    old = tc.emb.weight.data.clone()
    idx = {w: i for i, w in enumerate(words)}
    new = torch.empty(len(tok), old.shape[1])
    missing = 0
    for w, i in tok.vocab.items():
        j = idx.get(w)
        if j is None:
            missing += 1
            j = idx["[UNK]"]
        new[i] = old[j]
    tc.emb = torch.nn.Embedding.from_pretrained(new, freeze=True)
    return missing


def guided(unet, scale: float):
    """The U-Net as exported: with classifier-free guidance inside the graph when scale != 1."""
    if scale == 1.0:
        return unet
    return _torch_models()["GuidedUNet"](unet, scale).eval()


def export_all(ae, unet, vc, tc, out_dir: str) -> dict:
    """Write the five graphs into ``out_dir``; returns {name: path} (those that exist)."""
    M = _torch_models()
    paths = {}
    c, h, w = LATENT_SHAPE
    ctx_dim = (unet.unet if hasattr(unet, "unet") else unet).d1t.ca.k.in_features

    def ex(mod, args, name, inames, onames, dyn=None):
        p = os.path.join(out_dir, name + ".onnx")
        with torch.no_grad():
            torch.onnx.export(mod, args, p, dynamo=True, external_data=False, input_names=inames,
                              output_names=onames, dynamic_shapes=dyn, verbose=False)
        paths[name] = p

    ex(M["DiffEnc"](ae).eval(), (torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE),), "vlf_vae_enc", ["image"], ["latent"])
    ex(M["DiffDec"](ae).eval(), (torch.randn(1, c, h, w),), "vlf_vae_dec", ["latent"], ["image"])
    L = torch.export.Dim("L", min=2, max=MAX_TOKENS)
    ex(unet, (torch.randn(1, c, h, w), torch.tensor([500], dtype=torch.int64), torch.randn(1, 32, ctx_dim)),
       "vlf_unet", ["latent", "timestep", "context"], ["noise_pred"], (None, None, {1: L}))
    if vc is not None:
        ex(vc, (torch.randn(1, vc.pos.shape[1], vc.proj.in_features),), "vlf_img_cond", ["vlf"], ["context"])
    if tc is not None:
        T = torch.export.Dim("T", min=2, max=MAX_TOKENS)
        ex(tc, (torch.randint(0, tc.emb.num_embeddings, (1, 12)),), "img2img_text_cond", ["input_ids"], ["context"],
           ({1: T},))
    return paths


def round_to_fp16(*mods):
    """Round every floating parameter to float16 precision (kept float32), so that the torch
    reference equals the graph whose weights are stored as float16 (:func:`fp16_initializers`)."""
    for m in mods:
        if m is None:
            continue
        with torch.no_grad():
            for p in m.parameters():
                if p.numel() >= FP16_MIN:
                    p.copy_(p.half().float())


FP16_MIN = 256


def strip_metadata(m) -> None:
    """Drop the exporter's per-node metadata (source stack traces, FX names) and value_info."""
    for n in m.graph.node:
        del n.metadata_props[:]
        n.doc_string = ""
    del m.graph.value_info[:]


def fp16_initializers(path: str, min_size: int = FP16_MIN) -> None:
    """Store the float32 initializers of at least ``min_size`` elements as float16, each followed
    by a Cast back to float32 (ONNX Runtime folds the casts at load: the arithmetic stays float32,
    the file halves)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(path)
    g = m.graph
    casts, keep = [], []
    for t in g.initializer:
        if t.data_type == onnx.TensorProto.FLOAT and int(np.prod(t.dims)) >= min_size:
            arr = numpy_helper.to_array(t).astype(np.float16)
            keep.append(numpy_helper.from_array(arr, t.name + "__fp16"))
            casts.append(helper.make_node("Cast", [t.name + "__fp16"], [t.name], to=onnx.TensorProto.FLOAT,
                                          name=t.name + "__cast"))
        else:
            keep.append(t)
    del g.initializer[:]
    g.initializer.extend(keep)
    strip_metadata(m)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)
    onnx.checker.check_model(m)
    onnx.save(m, path)


def session(path: str, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def check_ort(ae, unet, vc, tc, paths: dict) -> dict:
    """max |ORT − torch| per exported model."""
    M = _torch_models()
    g = torch.Generator().manual_seed(0)
    c, h, w = LATENT_SHAPE
    ctx_dim = (unet.unet if hasattr(unet, "unet") else unet).d1t.ca.k.in_features
    res = {}
    with torch.no_grad():
        x = torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
        z = torch.randn(1, c, h, w, generator=g)
        cases = {
            "vlf_vae_enc": (M["DiffEnc"](ae).eval(), {"image": x}),
            "vlf_vae_dec": (M["DiffDec"](ae).eval(), {"latent": z}),
            "vlf_unet": (unet, {"latent": z, "timestep": torch.tensor([371], dtype=torch.int64),
                                "context": torch.randn(1, 17, ctx_dim, generator=g)}),
        }
        if vc is not None:
            cases["vlf_img_cond"] = (vc, {"vlf": torch.randn(1, vc.pos.shape[1], vc.proj.in_features, generator=g)})
        if tc is not None:
            cases["img2img_text_cond"] = (tc, {"input_ids": torch.randint(0, tc.emb.num_embeddings, (1, 9), generator=g)})
        for name, (mod, feeds) in cases.items():
            ref = mod(*feeds.values()).numpy()
            out = session(paths[name]).run(None, {k: v.numpy() for k, v in feeds.items()})[0]
            res[name] = float(np.abs(out - ref).max())
    return res


def manifest_entries(files: dict, ae_ck: dict, unet_ck: dict, steps: int, training: dict, tok: WordTokenizer | None,
                     img2img: dict) -> dict:
    cfg = unet_ck["cfg"]
    sf = float(ae_ck["extra"]["scaling_factor"])
    c, h, w = LATENT_SHAPE
    f32 = "float32"
    common = {"tier": "embedded", "latent_shape": [c, h, w], "scaling_factor": sf, "image_size": IMAGE_SIZE}
    no_uses = None
    latent_uses = {"formula": "C * H * W / 2",
                   "symbols": {"C": f"latent channels ({c})", "H": f"latent height ({h})", "W": f"latent width ({w})"}}
    ent = {}
    ent["vlf_vae_enc"] = {
        "name": "vlf_vae_enc", "file": "vlf_vae_enc.onnx",
        "task": "image-to-latent encoder of the embedded latent diffusion model (Img2Img-SC transmitter)",
        "inputs": [{"name": "image", "shape": [1, 3, IMAGE_SIZE, IMAGE_SIZE], "dtype": f32}],
        "outputs": [{"name": "latent", "shape": [1, c, h, w], "dtype": f32}],
        "channel_uses": latent_uses, "training": training["ae"],
        "extra": {**common, "output": "diffusion-space latent (autoencoder latent x scaling_factor)"}}
    ent["vlf_vae_dec"] = {
        "name": "vlf_vae_dec", "file": "vlf_vae_dec.onnx",
        "task": "latent-to-image decoder of the embedded latent diffusion model",
        "inputs": [{"name": "latent", "shape": [1, c, h, w], "dtype": f32}],
        "outputs": [{"name": "image", "shape": [1, 3, IMAGE_SIZE, IMAGE_SIZE], "dtype": f32}],
        "channel_uses": no_uses, "training": training["ae"],
        "extra": {**common, "input": "diffusion-space latent (1/scaling_factor is inside the graph)",
                  "val_psnr_db": ae_ck["extra"].get("val_psnr")}}
    ent["vlf_unet"] = {
        "name": "vlf_unet", "file": "vlf_unet.onnx",
        "task": "conditional latent diffusion U-Net (epsilon prediction), VLF or caption context",
        "inputs": [{"name": "latent", "shape": [1, c, h, w], "dtype": f32},
                   {"name": "timestep", "shape": [1], "dtype": "int64"},
                   {"name": "context", "shape": [1, "L", cfg["ctx_dim"]], "dtype": f32}],
        "outputs": [{"name": "noise_pred", "shape": [1, c, h, w], "dtype": f32}],
        "channel_uses": no_uses, "training": training["unet"],
        "extra": {**common, "scheduler": dict(SCHEDULER), "steps": int(steps),
                  "context_dim": cfg["ctx_dim"], "max_context_len": MAX_TOKENS, "img2img": img2img,
                  "decoder": "vlf_vae_dec", "vlf_context": "vlf_img_cond", "caption_context": "img2img_text_cond"}}
    if cfg.get("vlf"):
        ent["vlf_img_cond"] = {
            "name": "vlf_img_cond", "file": "vlf_img_cond.onnx",
            "task": "VLF to diffusion context (the VLF projected into the U-Net's text-encoder space)",
            "inputs": [{"name": "vlf", "shape": [1, cfg["n_queries"], cfg["vlf_dim"]], "dtype": f32}],
            "outputs": [{"name": "context", "shape": [1, cfg["n_queries"], cfg["ctx_dim"]], "dtype": f32}],
            "channel_uses": no_uses, "training": training["unet"],
            "extra": {"tier": "embedded", "n_queries": cfg["n_queries"], "dim": cfg["vlf_dim"],
                      "context_dim": cfg["ctx_dim"], "unet": "vlf_unet",
                      "noise_training": "received VLF at SNR uniform in [-7.5, 12.5] dB (y=(v+sqrt(P)n)/(1+s2)), "
                                        "plus clean samples"}}
    if cfg.get("text") and tok is not None:
        ent["img2img_text_cond"] = {
            "name": "img2img_text_cond", "file": "img2img_text_cond.onnx",
            "task": "caption to diffusion context (Img2Img-SC baseline: the caption sent digitally)",
            "inputs": [{"name": "input_ids", "shape": [1, "T"], "dtype": "int64"}],
            "outputs": [{"name": "context", "shape": [1, "T", cfg["ctx_dim"]], "dtype": f32}],
            "channel_uses": no_uses, "training": training["unet"],
            "extra": {"tier": "embedded", "tokenizer": os.path.basename(tok.path) if tok.path else None,
                      "input_ids": "[bos_id] + tokenizer.encode(caption, add_special_tokens=False).ids + [eos_id]",
                      "bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
                      "max_len": MAX_TOKENS, "context_dim": cfg["ctx_dim"], "unet": "vlf_unet"}}
    return ent


def training_records(ae_ck: dict, unet_ck: dict) -> dict:
    a, u = ae_ck["args"], unet_ck["args"]

    from .ldm import command_line

    ae_cmd, un_cmd = command_line(a, ae_ck["step"]), command_line(u, unet_ck["step"])
    exp = "python -m gnuradio.semcom.train.export_ldm"
    ae_rec = {"data": f"semcom.datasets.scenes 'train' split, first {a['n_train']} seeds rendered at 128 px "
                      f"(random {a['crop']}-px crops, horizontal flips); validation: first {a['n_val']} 'val' scenes",
              "command": f"{ae_cmd} && {exp}",
              "notes": f"{ae_ck['step']} steps in {ae_ck['elapsed_s'] / 60:.1f} min CPU wall time (1 thread); "
                       "MSE + image-gradient L1 + latent L2; EMA weights exported; scaling_factor = 1/std of the "
                       f"training latents = {ae_ck['extra']['scaling_factor']:.4f}; val PSNR "
                       f"{ae_ck['extra']['val_psnr']:.2f} dB"}
    init = unet_ck["args"].get("init")
    stages = []  # the --init chain of the U-Net stages, oldest first, with the steps each made
    path = u.get("init")
    while path and os.path.exists(path):
        ck = torch.load(path, map_location="cpu", weights_only=False)
        stages.insert(0, f"{command_line(ck['args'], ck['step'])}  # {ck['step']} steps, {ck['elapsed_s'] / 60:.1f} min")
        path = ck["args"].get("init")
    if not stages:
        stages = unet_ck.get("extra", {}).get("stages", [])
    un_rec = {"data": f"semcom.datasets.scenes 'train' split, first {u['n_train']} seeds at 128 px: autoencoder "
                      "latents; captions (5 templates per scene, one drawn per sample); VLFs of the images from "
                      "the embedded vlf_enc (ONNX Runtime), received over the VLF link's noise model at SNR uniform "
                      f"in [-7.5, 12.5] dB with a share {u['clean_frac']} clean",
              "command": " && ".join([ae_cmd] + [s.split("  #")[0] for s in stages] + [un_cmd, exp]),

              "notes": f"{unet_ck['step']} optimizer steps (batch {u['batch']}) in {unet_ck['elapsed_s'] / 60:.1f} "
                       f"min CPU wall time (1 thread) for the last stage; DDPM epsilon loss, "
                       f"{SCHEDULER['beta_schedule']} schedule, {SCHEDULER['num_train_timesteps']} steps, "
                       f"min-SNR-{u['min_snr']} weighting; batches conditioned on the VLF with probability "
                       f"{u['vlf_frac']}, else on a caption (one U-Net serves VLF-MSC and Img2Img-SC); "
                       f"null-context dropout {u.get('cfg_drop', 0)} (classifier-free guidance); EMA {u['ema']} weights exported"
                       + (f"; initialised from {init}" if init else "")
                       + "; stages: " + " | ".join(
                           [f"{ae_cmd}  # {ae_ck['step']} steps, {ae_ck['elapsed_s'] / 60:.1f} min"] + stages
                           + [f"{un_cmd}  # {unet_ck['step']} steps, {unet_ck['elapsed_s'] / 60:.1f} min"])}
    return {"ae": ae_rec, "unet": un_rec}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ae", default="out/ldm_ae/ckpt.pt")
    ap.add_argument("--unet", default="out/ldm_unet/ckpt.pt")
    ap.add_argument("--models", default="models")
    ap.add_argument("--steps", type=int, default=20, help="default DDIM steps stored in the manifest")
    ap.add_argument("--img2img-strength", type=float, default=0.5, help="default img2img strength stored")
    ap.add_argument("--tokenizer", default="", help="tokenizer JSON the caption ids refer to "
                                                   "(default: <models>/vlf_tokenizer.json)")
    ap.add_argument("--notes", default="", help="appended to the U-Net entries' training notes")
    ap.add_argument("--guidance", type=float, default=1.0,
                    help="classifier-free guidance scale built into vlf_unet (1: conditional prediction only)")
    ap.add_argument("--fp32-weights", dest="fp16_weights", action="store_false",
                    help="store float32 weights (default: float16 storage, float32 arithmetic)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from ..runtime import register_model

    ae, ae_ck = load_ae(args.ae)
    unet, vc, tc, un_ck = load_unet(args.unet)
    tok = None
    if tc is not None:
        tok_path = args.tokenizer or os.path.join(args.models, "vlf_tokenizer.json")
        tok = WordTokenizer(tok_path)
        if tok.path is None:
            raise SystemExit(f"{tok_path} not found: the caption ids need the tokenizer shipped next to the model")
        words = un_ck["cfg"]["vocab_words"]
        if tok.words != words:
            missing = remap_text_vocab(tc, words, tok)
            print(f"caption embedding remapped to {tok_path} ({missing} words unknown in training)")
    if args.fp16_weights:
        round_to_fp16(ae, unet, vc, tc)
    unet = guided(unet, args.guidance)
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_all(ae, unet, vc, tc, tmp)
        for p in paths.values():
            if args.fp16_weights:
                fp16_initializers(p)
            else:
                import onnx

                m = onnx.load(p)
                strip_metadata(m)
                onnx.save(m, p)
        err = check_ort(ae, unet, vc, tc, paths)
        print("max |ORT - torch|:", json.dumps(err))
        bad = {k: v for k, v in err.items() if v > TOLERANCE}
        if bad:
            raise SystemExit(f"ONNX Runtime differs from torch: {bad}; not registered")
        img2img = {"strength": args.img2img_strength,
                   "input": "received diffusion-space latent from vlf_vae_enc (LMMSE-shrunk), caption ids"}
        records = training_records(ae_ck, un_ck)
        if args.notes:
            records["unet"]["notes"] += "; " + args.notes
        ents = manifest_entries(paths, ae_ck, un_ck, args.steps, records, tok, img2img)
        ents["vlf_unet"]["extra"]["guidance_scale"] = args.guidance
        ents["vlf_unet"]["extra"]["guidance"] = (
            "classifier-free guidance inside the graph: noise_pred = e(null) + scale * (e(context) - e(null)), "
            "null = the learned unconditional context; two U-Net evaluations per call" if args.guidance != 1.0
            else "none (conditional prediction)")
        for e in ents.values():
            if args.fp16_weights:
                e["extra"]["weights"] = "float16 storage, float32 arithmetic (Cast folded by ONNX Runtime at load)"
        for name, p in paths.items():
            register_model(args.models, ents[name], p)
            print(f"{name}: {os.path.getsize(p) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
