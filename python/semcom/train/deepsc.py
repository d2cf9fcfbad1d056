"""DeepSC (Xie, Qin, Li, Juang, IEEE TSP 2021): transformer text JSCC, trained on CPU on the
captions of the synthetic scene benchmark ``semcom.datasets.scenes``.

    OMP_NUM_THREADS=1 PYTHONPATH=python .venv/bin/python -m semcom.train.deepsc --minutes 20 --work out/deepsc

Model (``DeepSC``), as the paper with the sizes below (``--d-model`` etc.):
word embedding (+ sinusoidal positions) → transformer encoder (the semantic encoder,
``--enc-layers``) → dense channel encoder (d → 256 → 2k, ReLU) giving 2k real values per
token → power normalisation (unit mean power per complex symbol over the caption) → AWGN →
dense channel decoder (2k + 1 → d → 256 → d, ReLU, residual + LayerNorm, as the paper's public
code; the extra input is the receiver's SNR estimate / 10 dB) → transformer decoder
(``--dec-layers``, teacher forcing here, greedy at inference) → logits over the vocabulary.
Pre-LayerNorm transformer layers (trains faster than the paper's post-LN at this budget).
k = 8 complex symbols (16 real values) per token, as the paper.

What is sent: the caption's word tokens only (no [BOS]/[EOS]); the decoder starts from
[BOS] and is trained to end with [EOS] (``tgt_in = [BOS] w_1..w_n``, ``tgt_out = w_1..w_n [EOS]``).

Channel, in the project's one convention (``semcom.channels.awgn``): the symbols have unit
mean power per complex symbol and the channel adds CN(0, σ²), σ² = 10^(-SNR/10), i.e.
σ²/2 per real dimension (``awgn_channel``). The public DeepSC code instead normalises to unit
power per *real* value (Es = 2 per complex symbol) and adds σ²/2 per real value
(``SNR_to_noise``: std = 1/sqrt(2·10^(SNR/10))): its "SNR" is 3 dB below the Es/N0 it actually
simulates. See docs/deepsc.md.

Training: per caption an SNR uniform in [``--snr-min``, ``--snr-max``] = [-7.5, 12.5] dB (the
paper trains at one SNR); the decoder's SNR input carries a uniform ±``--snr-jitter`` dB error
(a receiver's estimate). Loss: token cross-entropy only (the paper's optional mutual-information
term is not used). Adam, linear warm-up then cosine decay over ``--steps`` or until
``--minutes`` of wall time have passed (whichever first). Data: random seeds of the scenes
"train" split, one of the scene's five captions at random; validation on the first
``--val-n`` "val" scenes. ``<work>/ckpt.pt`` is written every ``--val-every`` steps and at the
end; ``--resume`` continues from it (optimizer, RNG states, step, elapsed time). ``python -m
semcom.train.export_deepsc`` turns the checkpoint into the shipped ONNX models.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..datasets import scenes

SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
TOKEN_PATTERN = r"[a-z]+|[^\sa-z]"  # scenes.tokenize: runs of letters, any other non-space char alone
SNR_SCALE = 10.0  # the decoder's SNR input is snr_db / SNR_SCALE
DEFAULTS = dict(d_model=128, heads=8, d_ff=256, enc_layers=3, dec_layers=2, k=8, chan_hidden=256, max_len=48)


# ----------------------------------------------------------------------------- tokenizer

def build_tokenizer(path=None, words=None):
    """The word-level tokenizer of ``words`` (default ``scenes.vocabulary()``): [PAD], [UNK],
    [BOS], [EOS] first, then the words in vocabulary order, as an HF ``tokenizers.Tokenizer``;
    saved to ``path`` if given.
    Lowercases, splits on white space and then into runs of letters and single other characters
    (the same tokens as ``scenes.tokenize``); unknown words map to [UNK]. No post-processor: the
    caller adds [BOS]/[EOS]."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    words = list(scenes.vocabulary() if words is None else words)
    vocab = {t: i for i, t in enumerate(list(SPECIALS) + words)}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(TOKEN_PATTERN), behavior="isolated"),
    ])
    if path is not None:
        tok.save(str(path))
    return tok


# ----------------------------------------------------------------------------- channel (project convention)

def power_normalize(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[B, T, 2k] real/imag pairs → unit mean power per complex symbol over each caption's
    tokens (``mask`` [B, T] bool: real tokens; None: all). Padding stays as it is (ignored)."""
    k = x.shape[-1] // 2
    sq = (x * x).sum(-1)  # [B, T]: power of the k symbols of a token, summed
    if mask is None:
        p = sq.mean(-1, keepdim=True) / k
    else:
        m = mask.to(x.dtype)
        p = (sq * m).sum(-1, keepdim=True) / (m.sum(-1, keepdim=True).clamp_min(1.0) * k)
    return x / torch.sqrt(p.clamp_min(1e-12))[..., None]


def noise_var(snr_db: torch.Tensor) -> torch.Tensor:
    """σ² = 10^(-SNR/10): complex noise variance per complex symbol (σ²/2 per real dimension)."""
    return torch.pow(10.0, -snr_db / 10.0)


def awgn_channel(x: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
    """x [B, T, 2k] (unit power per complex symbol) + CN(0, σ²) per complex symbol, σ² =
    10^(-snr_db/10) per caption (``snr_db`` [B] or [B, 1]): N(0, σ²/2) on each real value."""
    std = torch.sqrt(noise_var(snr_db.reshape(-1, 1, 1)) / 2.0)
    return x + torch.randn_like(x) * std


# ----------------------------------------------------------------------------- model

def sinusoid_table(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, mem, mask=None):
        """``mask``: bool, broadcastable to [B, h, Tq, Tk], True where attention is NOT allowed."""
        b, tq, d = x.shape
        tk = mem.shape[1]
        q = self.q(x).view(b, tq, self.h, self.dk).transpose(1, 2)
        k = self.k(mem).view(b, tk, self.h, self.dk).transpose(1, 2)
        v = self.v(mem).view(b, tk, self.h, self.dk).transpose(1, 2)
        s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.dk))
        if mask is not None:
            s = s.masked_fill(mask, -1e9)
        a = torch.softmax(s, dim=-1)
        return self.o(torch.matmul(a, v).transpose(1, 2).reshape(b, tq, d))


class FeedForward(nn.Module):
    def __init__(self, d, d_ff):
        super().__init__()
        self.l1, self.l2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)

    def forward(self, x):
        return self.l2(F.relu(self.l1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, d, heads, d_ff):
        super().__init__()
        self.n1, self.att = nn.LayerNorm(d), Attention(d, heads)
        self.n2, self.ff = nn.LayerNorm(d), FeedForward(d, d_ff)

    def forward(self, x, mask=None):
        h = self.n1(x)
        x = x + self.att(h, h, mask)
        return x + self.ff(self.n2(x))


class DecoderLayer(nn.Module):
    def __init__(self, d, heads, d_ff):
        super().__init__()
        self.n1, self.self_att = nn.LayerNorm(d), Attention(d, heads)
        self.n2, self.cross = nn.LayerNorm(d), Attention(d, heads)
        self.n3, self.ff = nn.LayerNorm(d), FeedForward(d, d_ff)

    def forward(self, x, mem, self_mask, mem_mask=None):
        h = self.n1(x)
        x = x + self.self_att(h, h, self_mask)
        x = x + self.cross(self.n2(x), mem, mem_mask)
        return x + self.ff(self.n3(x))


class DeepSC(nn.Module):
    """DeepSC: semantic + channel encoder (``encode``), channel decoder + semantic decoder (``decode``)."""

    def __init__(self, vocab_size, d_model=128, heads=8, d_ff=256, enc_layers=3, dec_layers=2, k=8,
                 chan_hidden=256, max_len=48):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, d_model=d_model, heads=heads, d_ff=d_ff, enc_layers=enc_layers,
                           dec_layers=dec_layers, k=k, chan_hidden=chan_hidden, max_len=max_len)
        self.d, self.k, self.max_len = d_model, k, max_len
        self.register_buffer("pe", sinusoid_table(max_len + 1, d_model), persistent=False)
        self.src_emb = nn.Embedding(vocab_size, d_model)
        self.enc = nn.ModuleList(EncoderLayer(d_model, heads, d_ff) for _ in range(enc_layers))
        self.enc_norm = nn.LayerNorm(d_model)
        self.ch_enc = nn.Sequential(nn.Linear(d_model, chan_hidden), nn.ReLU(), nn.Linear(chan_hidden, 2 * k))
        self.cd1 = nn.Linear(2 * k + 1, d_model)
        self.cd2 = nn.Linear(d_model, chan_hidden)
        self.cd3 = nn.Linear(chan_hidden, d_model)
        self.cd_norm = nn.LayerNorm(d_model)
        self.tgt_emb = nn.Embedding(vocab_size, d_model)
        self.dec = nn.ModuleList(DecoderLayer(d_model, heads, d_ff) for _ in range(dec_layers))
        self.dec_norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def _embed(self, emb, ids):
        return emb(ids) * math.sqrt(self.d) + self.pe[: ids.shape[1]]

    def encode(self, src, src_mask=None):
        """src [B, T] int64 (``src_mask`` [B, T] bool real tokens) → symbols [B, T, 2k], unit
        mean power per complex symbol (pairs (2i, 2i+1) = real, imaginary of symbol i)."""
        att = None if src_mask is None else ~src_mask[:, None, None, :]
        x = self._embed(self.src_emb, src)
        for layer in self.enc:
            x = layer(x, att)
        return power_normalize(self.ch_enc(self.enc_norm(x)), src_mask)

    def channel_decode(self, y, snr_db):
        """y [B, T, 2k] received, snr_db [B, 1] the receiver's estimate → memory [B, T, d]."""
        s = (snr_db / SNR_SCALE).reshape(-1, 1, 1).expand(y.shape[0], y.shape[1], 1)
        x1 = self.cd1(torch.cat([y, s.to(y.dtype)], dim=-1))
        x5 = self.cd3(F.relu(self.cd2(F.relu(x1))))
        return self.cd_norm(x1 + x5)

    def decode(self, y, snr_db, tgt_in, src_mask=None, tgt_mask=None):
        """Received y, SNR estimate, decoder input ids [B, L] → logits [B, L, V] (logits[:, t]:
        the distribution of token t+1 given tokens 0..t)."""
        mem = self.channel_decode(y, snr_db)
        L = tgt_in.shape[1]
        causal = torch.ones(L, L, dtype=torch.bool, device=tgt_in.device).triu(1)[None, None]
        self_mask = causal if tgt_mask is None else (causal | ~tgt_mask[:, None, None, :])
        mem_mask = None if src_mask is None else ~src_mask[:, None, None, :]
        x = self._embed(self.tgt_emb, tgt_in)
        for layer in self.dec:
            x = layer(x, mem, self_mask, mem_mask)
        return self.out(self.dec_norm(x))

    def forward(self, src, tgt_in, snr_db, snr_rx_db=None, src_mask=None, tgt_mask=None):
        x = self.encode(src, src_mask)
        y = awgn_channel(x, snr_db)
        return self.decode(y, snr_db if snr_rx_db is None else snr_rx_db, tgt_in, src_mask, tgt_mask)


@torch.no_grad()
def greedy(model: DeepSC, y, snr_db, max_new: int):
    """Greedy decoding of one received caption y [1, T, 2k] → list of ids (without [BOS]/[EOS])."""
    ids = [BOS_ID]
    mem = model.channel_decode(y, snr_db)
    for _ in range(max_new):
        x = model._embed(model.tgt_emb, torch.tensor([ids]))
        L = x.shape[1]
        causal = torch.ones(L, L, dtype=torch.bool).triu(1)[None, None]
        for layer in model.dec:
            x = layer(x, mem, causal)
        nxt = int(model.out(model.dec_norm(x))[0, -1].argmax())
        if nxt == EOS_ID:
            break
        ids.append(nxt)
    return ids[1:]


# ----------------------------------------------------------------------------- data

def encode_text(tok, text: str) -> list[int]:
    return tok.encode(text).ids


def batch_from_texts(tok, texts, max_len):
    """Padded tensors (src, src_mask, tgt_in, tgt_out, tgt_mask) for a list of captions."""
    seqs = [encode_text(tok, t)[:max_len] for t in texts]
    T = max(len(s) for s in seqs)
    B = len(seqs)
    src = torch.full((B, T), PAD_ID, dtype=torch.long)
    tgt_in = torch.full((B, T + 1), PAD_ID, dtype=torch.long)
    tgt_out = torch.full((B, T + 1), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s)
        src[i, :n] = torch.tensor(s)
        tgt_in[i, 0] = BOS_ID
        tgt_in[i, 1:n + 1] = torch.tensor(s)
        tgt_out[i, :n] = torch.tensor(s)
        tgt_out[i, n] = EOS_ID
    return src, src != PAD_ID, tgt_in, tgt_out, tgt_in != PAD_ID


def sample_captions(rng: np.random.Generator, n: int, split="train") -> list[str]:
    """n captions: random seeds of ``split``, one of each scene's captions at random."""
    seeds = scenes.SPLITS[split]
    out = []
    for s in rng.integers(0, len(seeds), n):
        caps = scenes.captions(scenes.generate(int(seeds[int(s)])))
        out.append(caps[int(rng.integers(len(caps)))])
    return out


def val_captions(n: int, split="val") -> list[str]:
    """The first caption of each of the first n scenes of ``split`` (plus the k-th caption of
    the k-th scene, cycling through the five templates)."""
    out = []
    for i, seed in enumerate(scenes.SPLITS[split][:n]):
        caps = scenes.captions(scenes.generate(int(seed)))
        out.append(caps[i % len(caps)])
    return out


def detokenize(words) -> str:
    """Tokens → caption text: words joined by spaces, ',' ':' '?' attached to the word before."""
    text = " ".join(words)
    for p in (",", ":", "?"):
        text = text.replace(" " + p, p)
    return text


@torch.no_grad()
def validate(model, tok, texts, snrs=(-5.0, 0.0, 10.0), seed=1234):
    """Sentence accuracy and token accuracy (teacher forcing) at each SNR, fixed noise seed."""
    model.eval()
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    res = {}
    vocab = {i: t for t, i in tok.get_vocab().items()}
    for snr in snrs:
        exact = 0
        src, sm, tin, tout, tm = batch_from_texts(tok, texts, model.max_len)
        s = torch.full((len(texts), 1), snr)
        logits = model(src, tin, s, src_mask=sm, tgt_mask=tm)
        ok = (logits.argmax(-1) == tout) | (tout == PAD_ID)
        tok_acc = float(((logits.argmax(-1) == tout) & (tout != PAD_ID)).sum() / (tout != PAD_ID).sum())
        x = model.encode(src, sm)
        y = awgn_channel(x, s)
        for i, t in enumerate(texts):
            n = int(sm[i].sum())
            ids = greedy(model, y[i:i + 1, :n], s[i:i + 1], n + 4)
            exact += detokenize(vocab[j] for j in ids) == t
        res[snr] = (exact / len(texts), tok_acc, float(ok.all(-1).float().mean()))
    torch.set_rng_state(state)
    model.train()
    return res


# ----------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="out/deepsc", help="checkpoint and log folder")
    ap.add_argument("--resume", action="store_true", help="continue from <work>/ckpt.pt")
    ap.add_argument("--steps", type=int, default=6000, help="optimizer steps (cosine schedule length)")
    ap.add_argument("--minutes", type=float, default=20.0, help="stop after this much training wall time")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--snr-min", type=float, default=-7.5, help="training SNR range, dB (Es/N0)")
    ap.add_argument("--snr-max", type=float, default=12.5)
    ap.add_argument("--snr-jitter", type=float, default=0.5, help="± dB error on the decoder's SNR input")
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--val-n", type=int, default=200)
    for key, val in DEFAULTS.items():
        ap.add_argument("--" + key.replace("_", "-"), type=int, default=val)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    ckpt_path = os.path.join(args.work, "ckpt.pt")
    log_path = os.path.join(args.work, "train.log")
    tok_path = os.path.join(args.work, "deepsc_tokenizer.json")
    words = list(scenes.vocabulary())
    ck = None
    if args.resume:
        if not os.path.exists(ckpt_path):
            raise SystemExit(f"--resume: no checkpoint at {ckpt_path}")
        ck = torch.load(ckpt_path, weights_only=False)
        if ck["words"] != words:
            print("--resume: scenes.vocabulary() changed since the checkpoint; keeping the checkpoint's")
            words = ck["words"]
    elif os.path.exists(ckpt_path):
        raise SystemExit(f"{ckpt_path} exists: pass --resume to continue it, or another --work")

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    cfg = {k: getattr(args, k) for k in DEFAULTS}
    model = DeepSC(len(SPECIALS) + len(words), **cfg)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98))
    step, elapsed = 0, 0.0
    if ck is not None:
        if ck["config"] != model.config:
            raise SystemExit(f"--resume: checkpoint config {ck['config']} differs from {model.config}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, elapsed = ck["step"], ck["elapsed_s"]
        torch.set_rng_state(ck["torch_rng"])
        rng.bit_generator.state = ck["np_rng"]
        print(f"resumed from {ckpt_path} at step {step} ({elapsed / 60:.1f} min)")

    tok = build_tokenizer(tok_path, words)
    val = val_captions(args.val_n)
    history = [] if ck is None else ck.get("history", [])
    # every run of this --work: the step it started at and its flags (resumed runs may change e.g. --steps)
    runs = [] if ck is None else ck.get("runs", [{"start_step": 0, "args": ck["args"]}])
    runs.append({"start_step": step, "args": vars(args)})

    def lr_at(s):
        if s < args.warmup:
            return args.lr * (s + 1) / args.warmup
        t = min(1.0, (s - args.warmup) / max(1, args.steps - args.warmup))
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))

    def save():
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed_s": elapsed,
                    "args": vars(args), "config": model.config, "words": words, "runs": runs,
                    "torch_rng": torch.get_rng_state(), "np_rng": rng.bit_generator.state, "history": history},
                   ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)

    def log(msg):
        with open(log_path, "a") as f:
            f.write(msg + "\n")
        print(msg, flush=True)

    n_params = sum(p.numel() for p in model.parameters())
    log(f"start step {step} {json.dumps(vars(args))} params {n_params}")
    model.train()
    t0 = time.time() - elapsed
    ema = None
    budget = args.minutes * 60.0
    while step < args.steps and time.time() - t0 < budget:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        src, sm, tin, tout, tm = batch_from_texts(tok, sample_captions(rng, args.batch), args.max_len)
        snr = torch.empty(args.batch, 1).uniform_(args.snr_min, args.snr_max)
        snr_rx = snr + torch.empty_like(snr).uniform_(-args.snr_jitter, args.snr_jitter)
        logits = model(src, tin, snr, snr_rx, src_mask=sm, tgt_mask=tm)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tout.reshape(-1), ignore_index=PAD_ID)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 50 == 0:
            print(f"step {step} loss {ema:.4f} lr {lr_at(step):.2e} {(time.time() - t0) / 60:.1f} min", flush=True)
        if step % args.val_every == 0:
            elapsed = time.time() - t0
            res = validate(model, tok, val)
            history.append({"step": step, "elapsed_s": elapsed, "loss": ema,
                            "val": {str(k): v for k, v in res.items()}})
            log(f"step {step} loss {ema:.4f} {elapsed / 60:.1f} min | val sentence acc / token acc: "
                + "  ".join(f"{k:g} dB {v[0]:.3f}/{v[1]:.3f}" for k, v in res.items()))
            elapsed = time.time() - t0
            save()
    elapsed = time.time() - t0
    res = validate(model, tok, val)
    history.append({"step": step, "elapsed_s": elapsed, "loss": ema, "val": {str(k): v for k, v in res.items()}})
    save()
    log(f"done: {step} steps in {elapsed / 60:.1f} min → {ckpt_path} | val: "
        + "  ".join(f"{k:g} dB {v[0]:.3f}/{v[1]:.3f}" for k, v in res.items()))


if __name__ == "__main__":
    main()
