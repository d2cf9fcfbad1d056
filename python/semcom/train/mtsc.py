"""Train the LAM multi-task semantic codec (``semcom.train.mtsc_model``) on the multi-task
benchmark (``semcom.datasets.multitask``).

Phases (each resumable from ``OUT/ckpt.pt``; every flag goes to ``OUT/config.json``):

- ``pretrain`` — phase I of the paper: the LAM (a small BART) with its modality encoders and
  task decoders learns the five tasks from clean inputs (no channel).
- ``jsc`` — the JSC encoder/decoder learn to carry the LAM's semantic sequence over Rician
  fading + AWGN at random SNRs and random per-token rates (any prefix of a token's ``r_max``
  symbols), starting from ``--init`` (the pre-trained LAM, modality encoders and task
  decoders, fine-tuned at ``--lam-lr``).
- ``udeepsc`` — the U-DeepSC-like baseline (SemCom without a LAM): per-modality encoding,
  trained from scratch with the channel on from the first step, at one fixed rate per item, on
  the task losses alone (no feature loss: there is no pre-trained sequence to match).

    python -m semcom.train.mtsc pretrain --out out/mtsc/pretrain --steps 2800
    python -m semcom.train.mtsc jsc --init out/mtsc/pretrain/ckpt.pt --out out/mtsc/jsc --steps 1200
    python -m semcom.train.mtsc udeepsc --out out/mtsc/udeepsc --steps 4000

The item cache (``--cache``, default ``out/mtsc_data/<split>_<n>.npz``) holds the rendered
inputs and the reference token ids; it is made once (two processes) and reused.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import time

import numpy as np

from ..codecs.mtsc_inputs import EOS, GROUP, LEVELS, PAD, Layout, Vocab, log_mel, video_input
from ..datasets import multitask

TEXT_TASKS = multitask.TEXT_TASKS
REC_WEIGHT = 40.0   # the reconstruction MSE's weight against the four text cross-entropies


def vocab() -> Vocab:
    return Vocab(multitask.vocabulary())


def _target(v: Vocab, task: str, text: str, max_target: int) -> np.ndarray:
    ids = [v.task_id(task)] + v.encode(text)[: max_target - 2] + [EOS]
    out = np.full(max_target, PAD, np.int64)
    out[:len(ids)] = ids
    return out


def _one(args):
    seed, max_target, layout = args
    v = vocab()
    it = multitask.item(seed)
    q, qm = v.question_ids(it.question, layout.question)
    tg = np.stack([np.stack([_target(v, t, r, max_target) for r in (it.references(t) * 5)[:5]]) for t in TEXT_TASKS])
    vid = np.round(video_input(it.video.frames) * 255).astype(np.uint8)
    return (it.image, q, qm, log_mel(it.audio.audio), vid, tg)


def build_cache(split: str, n: int, path: pathlib.Path, max_target: int = 24, layout: Layout | None = None,
                workers: int = 2) -> dict:
    """Rendered inputs and target ids of the first ``n`` items of ``split`` → ``path`` (npz)."""
    import multiprocessing as mp

    from tqdm import tqdm

    layout = layout or Layout()
    seeds = list(multitask.media.split_seeds(split, n))
    with mp.get_context("fork").Pool(workers) as pool:
        rows = list(tqdm(pool.imap(_one, [(s, max_target, layout) for s in seeds], chunksize=16),
                         total=len(seeds), desc=f"items {split}", mininterval=5))
    data = {k: np.stack([r[i] for r in rows]) for i, k in enumerate(("image", "q_ids", "q_mask", "mel", "video", "targets"))}
    data["seed"] = np.asarray(seeds, np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(path)
    return data


def load_cache(split, n, cache=None, max_target=24) -> dict:
    path = pathlib.Path(cache or f"out/mtsc_data/{split}_{n}.npz")
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    return build_cache(split, n, path, max_target)


def batch_tensors(data, idx, rng, torch):
    """One batch: model inputs + one random reference per caption task."""
    b = {
        "image": torch.from_numpy(data["image"][idx].transpose(0, 3, 1, 2).astype(np.float32) / 255.0),
        "q_ids": torch.from_numpy(data["q_ids"][idx]),
        "q_mask": torch.from_numpy(data["q_mask"][idx]),
        "mel": torch.from_numpy(data["mel"][idx]),
        "video": torch.from_numpy(data["video"][idx].astype(np.float32) / 255.0),
    }
    pick = rng.integers(0, 5, size=(len(idx), len(TEXT_TASKS)))
    tg = data["targets"][idx]                                                   # B,4,5,T
    b["targets"] = torch.from_numpy(np.take_along_axis(tg, pick[:, :, None, None], 2)[:, :, 0])  # B,4,T
    return b


def sample_rates(valid, rng, mode, torch):
    """Per-token rates (symbols kept) for training, one level (``LEVELS``) per group of
    ``GROUP`` tokens as the variable-rate coder allocates them: ``mixed`` — 30 % of the items
    one level for all groups, 70 % a random level per group (0 in 10 % of the groups);
    ``fixed`` — one level per item."""
    B, L = valid.shape
    G = L // GROUP
    lv = np.asarray(LEVELS)
    uni = lv[rng.integers(1, len(lv), size=(B, 1))].repeat(G, 1)
    if mode == "fixed":
        r = uni
    else:
        per = np.where(rng.random((B, G)) < 0.1, 0, lv[rng.integers(1, len(lv), size=(B, G))])
        r = np.where(rng.random((B, 1)) < 0.3, uni, per)
    return torch.from_numpy(r.repeat(GROUP, 1).astype(np.float32)) * valid


def losses(model, b, channel, rng, torch, rate_mode="mixed", snr_range=(-8.0, 20.0), feat=True):
    """The five task losses (+ with ``channel`` and ``feat``, the JSC decoder's feature loss
    against the LAM encoder's sequence: only with a pre-trained LAM, since without one the
    encoder collapses onto a constant sequence that is trivially easy to predict)."""
    import torch.nn.functional as F

    from .mtsc_model import apply_channel

    v = vocab()
    h, valid, _ = model.lam_encode(b["image"], b["q_ids"], b["q_mask"], b["mel"], b["video"])
    out = {}
    if channel:
        B = h.shape[0]
        rates = sample_rates(valid, rng, rate_mode, torch)
        snr = torch.from_numpy(rng.uniform(*snr_range, size=B).astype(np.float32))
        k = np.where(rng.random(B) < 0.5, 1e4, rng.uniform(0, 10, size=B)).astype(np.float32)
        y, sm, lnv = apply_channel(model.jsc_encode(h), rates, snr, torch.from_numpy(k))
        memory = model.jsc_decode(y, sm, lnv, snr)
        mem_mask = model.memory_mask(sm)
        if feat:
            out["feat"] = F.mse_loss(memory, h.detach())
    else:
        memory, mem_mask = h, valid
    T = len(TEXT_TASKS)
    tg = b["targets"]                                                           # B,4,T
    dec_in = tg[:, :, :-1].reshape(-1, tg.shape[-1] - 1)
    labels = tg[:, :, 1:].reshape(-1, tg.shape[-1] - 1).clone()
    labels[labels == PAD] = -100
    logits = model.text_logits(memory.repeat_interleave(T, 0), mem_mask.repeat_interleave(T, 0), dec_in)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
    ce = ce.reshape(-1, T, labels.shape[-1])
    n = (labels.reshape(-1, T, labels.shape[-1]) != -100).sum((0, 2)).clamp_min(1)
    for k_, task in enumerate(TEXT_TASKS):
        out[task] = ce[:, k_].sum() / n[k_]
    rec = model.reconstruct(memory, mem_mask, v.task_id("reconstruction"))
    out["reconstruction"] = F.mse_loss(rec, b["image"])
    total = sum(out[t] for t in TEXT_TASKS) + REC_WEIGHT * out["reconstruction"] + out.get("feat", 0.0)
    return total, {k_: float(x.detach()) for k_, x in out.items()}


def greedy(model, memory, mem_mask, task_id, max_len, torch):
    B = memory.shape[0]
    ids = torch.full((B, 1), task_id, dtype=torch.long)
    done = torch.zeros(B, dtype=torch.bool)
    for _ in range(max_len - 1):
        nxt = model.text_logits(memory, mem_mask, ids)[:, -1].argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        ids = torch.cat([ids, nxt[:, None]], 1)
        done |= nxt == EOS
        if bool(done.all()):
            break
    return ids[:, 1:]


def evaluate(model, data, torch, snr_db=None, n=64, rate=None):
    """Quick check on cached items: VQA exact match, exact-template accuracy of the three
    captions, reconstruction PSNR; ``snr_db`` None: clean (no channel)."""
    from ..datasets import media, scenes
    from .mtsc_model import apply_channel

    v = vocab()
    model.eval()
    rng = np.random.default_rng(0)
    idx = np.arange(min(n, len(data["seed"])))
    b = batch_tensors(data, idx, rng, torch)
    res = {}
    with torch.no_grad():
        h, valid, _ = model.lam_encode(b["image"], b["q_ids"], b["q_mask"], b["mel"], b["video"])
        if snr_db is None:
            memory, mm = h, valid
        else:
            rates = valid * float(rate or model.cfg.r_max)
            snr = torch.full((len(idx),), float(snr_db))
            y, sm, lnv = apply_channel(model.jsc_encode(h), rates, snr, torch.full((len(idx),), 3.0),
                                       generator=torch.Generator().manual_seed(0))
            memory, mm = model.jsc_decode(y, sm, lnv, snr), model.memory_mask(sm)
        items = [multitask.item(int(s)) for s in data["seed"][idx]]
        for task in TEXT_TASKS:
            out = greedy(model, memory, mm, v.task_id(task), model.cfg.max_target, torch)
            texts = [v.decode(o) for o in out.tolist()]
            if task == "vqa":
                res[task] = float(np.mean([t == it.answer for t, it in zip(texts, items)]))
            elif task == "caption_image":
                res[task] = float(np.mean([scenes.caption_accuracy(t, it.scene)["overall"] for t, it in zip(texts, items)]))
            elif task == "caption_audio":
                res[task] = float(np.mean([media.audio_accuracy(t, it.audio) for t, it in zip(texts, items)]))
            else:
                res[task] = float(np.mean([media.video_accuracy(t, it.video) for t, it in zip(texts, items)]))
        rec = model.reconstruct(memory, mm, v.task_id("reconstruction"))
        mse = ((rec - b["image"]) ** 2).mean((1, 2, 3)).clamp_min(1e-10)
        res["reconstruction_psnr"] = float((10 * torch.log10(1 / mse)).mean())
    model.train()
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m semcom.train.mtsc", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=("pretrain", "jsc", "udeepsc"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lam-lr", type=float, default=2e-4,
                    help="phase jsc: learning rate of the pre-trained parts (LAM, modality encoders, task decoders)")
    ap.add_argument("--init", default=None, help="phase jsc: the pre-trained checkpoint")
    ap.add_argument("--n-train", type=int, default=8000)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--lam", default="", help="reference tier: a local BART directory (e.g. facebook/bart-base saved "
                    "with save_pretrained) whose weights start the LAM (phase pretrain); its d_model and layers are used")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=500)
    a = ap.parse_args(argv)
    import torch
    from tqdm import tqdm

    from .mtsc_model import MtscConfig, MtscModel

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_cache("train", a.n_train, a.cache)
    val = load_cache("val", 64)
    ckpt_path = out / "ckpt.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        cfg = MtscConfig(**ck["cfg"])
    elif a.phase == "jsc":
        if not a.init:
            ap.error("phase jsc needs --init (the pre-trained checkpoint)")
        ck = torch.load(a.init, map_location="cpu", weights_only=False)
        cfg = MtscConfig(**ck["cfg"])
        ck = {"model": ck["model"], "step": 0}
    elif a.lam:
        from .mtsc_model import load_lam

        bart, lam_cfg, how = load_lam(a.lam, vocab().tokens)
        bc = bart.config
        cfg = MtscConfig(vocab_size=len(vocab()), d_model=bc.d_model, encoder_layers=bc.encoder_layers,
                         decoder_layers=bc.decoder_layers, heads=bc.encoder_attention_heads, ffn=bc.encoder_ffn_dim,
                         fuse=a.phase != "udeepsc", lam_config=lam_cfg, lam_path=str(a.lam))
        tqdm.write(f"LAM from {a.lam}: d_model {bc.d_model}, {bc.encoder_layers}+{bc.decoder_layers} layers, "
                   f"word embeddings from the {how}")
        ck = {"model": MtscModel(cfg, bart).state_dict(), "step": 0}
    else:
        cfg = MtscConfig(vocab_size=len(vocab()), d_model=a.d_model, encoder_layers=a.layers,
                         decoder_layers=a.layers, fuse=a.phase != "udeepsc")
        ck = None
    model = MtscModel(cfg)
    # phase jsc: the JSC encoder/decoder learn at --lr, everything pre-trained (the LAM, the
    # modality encoders, the task decoders) is fine-tuned at --lam-lr
    pre = (lambda n_: not n_.startswith("jsc_")) if a.phase == "jsc" else (lambda n_: n_.startswith("lam."))
    lam_params = [p for n_, p in model.named_parameters() if pre(n_)]
    other = [p for n_, p in model.named_parameters() if not pre(n_)]
    lam_lr = a.lam_lr if a.phase == "jsc" else a.lr
    opt = torch.optim.AdamW([{"params": lam_params, "lr": lam_lr}, {"params": other, "lr": a.lr}], weight_decay=0.01)
    base = [lam_lr, a.lr]
    step = 0
    if ck is not None:
        model.load_state_dict(ck["model"])
        step = ck.get("step", 0)
        if "opt" in ck:
            opt.load_state_dict(ck["opt"])
    (out / "config.json").write_text(json.dumps({"phase": a.phase, "args": vars(a), "model": cfg.to_dict()}, indent=1))
    rng = np.random.default_rng([a.seed, step])
    channel = a.phase != "pretrain"
    rate_mode = "fixed" if a.phase == "udeepsc" else "mixed"
    log = open(out / "log.jsonl", "a")
    t0 = time.time()
    bar = tqdm(total=a.steps, initial=step, desc=a.phase, mininterval=10)
    while step < a.steps:
        warm = min(1.0, (step + 1) / 200)
        cos = 0.5 * (1 + math.cos(math.pi * step / a.steps))
        for g, lr in zip(opt.param_groups, base):
            g["lr"] = lr * warm * (0.05 + 0.95 * cos)
        idx = rng.integers(0, len(data["seed"]), a.batch)
        b = batch_tensors(data, idx, rng, torch)
        loss, parts = losses(model, b, channel, rng, torch, rate_mode, feat=a.phase == "jsc")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        if step % 50 == 0:
            log.write(json.dumps({"step": step, "loss": float(loss), **parts, "t": round(time.time() - t0, 1)}) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{float(loss):.3f}")
        if step % 250 == 0 or step == a.steps:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "cfg": cfg.to_dict()},
                       ckpt_path.with_suffix(".tmp"))
            ckpt_path.with_suffix(".tmp").replace(ckpt_path)
        if step % a.eval_every == 0 or step == a.steps:
            ev = evaluate(model, val, torch, None if not channel else 5.0)
            log.write(json.dumps({"step": step, "eval": ev}) + "\n")
            log.flush()
            tqdm.write(f"step {step}: {ev}")
    bar.close()


if __name__ == "__main__":
    main()
