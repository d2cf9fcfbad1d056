"""Train the embedded tier of VLF-MSC: the VLF encoder and the caption decoder, on CPU.

    PYTHONPATH=python .venv/bin/python -m semcom.train.vlf --work out/vlf --n-train 20000 --steps 4000 --seed 0

VLF-MSC (vision-language feature based multimodal semantic communication) sends one compact
vision-language feature (VLF), N query vectors of dimension d, as analog symbols; at the
receiver a language model writes a caption from it and a diffusion model draws an image. This
module trains the embedded (CPU-sized) tier on the synthetic scene benchmark
``semcom.datasets.scenes``:

- **VLF encoder.** Frozen EfficientNet-Lite0 (the shipped ``effnet_lite0_features`` ONNX, ImageNet
  weights) gives the stage-4 and stage-5 feature maps (80 + 112 channels at stride 16, an 8×8
  grid for the 128×128 input); their concatenation is one token per cell (+ learned 2-D
  position embeddings, row + column). A Q-Former-style query transformer trained here: a
  token-mixing self-attention layer over the image tokens, then ``--layers`` blocks in which
  ``--n-queries`` learned queries self-attend and cross-attend to the image tokens; a linear
  map to ``--dim`` and a final LayerNorm without affine parameters (every query vector has
  zero mean and unit variance over its d entries).
- **Caption decoder.** The soft prompt of the paper, P = 1: e0 = W_proj(mean_i ỹ_i), here
  W_proj = LayerNorm + Linear (the LayerNorm makes the prompt independent of the receiver's
  1/(1+σ²) shrink), read by a small causal transformer LM trained here on the benchmark
  captions with a word-level tokenizer built from ``scenes.vocabulary()``.
- **Auxiliary scene-graph head (training only).** Mean pooling keeps only what the queries
  share, so a second small decoder reads all N noisy queries and predicts the scene graph slot
  by slot (objects sorted left to right: shape or "none", colour, size, x and y in 4 bins each).
  Its loss keeps the whole VLF informative about the layout for the image decoder; the head is
  not exported.
- **Channel.** Every training feature passes the codec's channel model: SNR uniform in
  [−7.5, 12.5] dB per sample (a share ``--clean-frac`` clean), P = 2·mean(v²) over the feature
  (the mean complex-symbol power), ỹ = (v + √P·n)/(1+σ²), n ~ N(0, σ²/2) per real dimension.

Loss: caption cross-entropy (one of the scene's reference captions, drawn per step) +
``--aux-weight`` × the scene-graph cross-entropies. AdamW, linear warm-up and cosine decay over
``--steps``. The EfficientNet features of the training and validation scenes are computed once
(ONNX Runtime) and cached in ``<work>/cache`` (or ``--cache``); ``<work>/ckpt.pt`` is written every
``--ckpt-minutes`` and at every validation, and a second run with the same ``--work`` resumes
from it (``--resume`` insists on a checkpoint). ``python -m semcom.train.export_vlf`` turns the
checkpoint into the shipped ONNX models.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SNR_RANGE = (-7.5, 12.5)
IMAGE_SIZE = 128
FEATURE_STAGES = ("stage4", "stage5")
FEATURE_CHANNELS = 80 + 112
FEATURE_STRIDE = 16
SPECIALS = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
POS_BINS = 4
CACHE_CHUNK = 1000
ACC_KINDS = ("shape", "colour", "size", "count", "relation", "overall")


# ----------------------------------------------------------------------------- tokenizer

def build_tokenizer(words):
    """A word-level HF ``tokenizers`` tokenizer: lower-cased, split on white space and on the
    punctuation , : ; . ? !, ids 0-3 = [PAD] [BOS] [EOS] [UNK], then ``words`` in order.
    Decoding joins words with spaces and removes the space before , . ? ! :"""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab = {}
    for w in list(SPECIALS) + list(words):
        if w not in vocab:
            vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(r"[,:;.?!]"), behavior="isolated")])
    tok.decoder = decoders.Sequence([decoders.WordPiece(prefix="##", cleanup=True), decoders.Replace(" :", ":")])
    return tok


def split_words(tok, text):
    return [w for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))]


def tokenizer_for_scenes(scenes, extra_texts=()):
    """The tokenizer of ``scenes.vocabulary()``, plus any word of ``extra_texts`` it lacks
    (returned as the second value, so that a gap in the vocabulary is reported, not hidden)."""
    words = [w.lower() for w in scenes.vocabulary()]
    tok = build_tokenizer(words)
    known = set(words)
    missing = []
    for t in extra_texts:
        for w in split_words(tok, t):
            if w not in known:
                known.add(w)
                missing.append(w)
    if missing:
        tok = build_tokenizer(words + missing)
    return tok, missing


def decode_ids(tok, ids) -> str:
    out = []
    for i in ids:
        i = int(i)
        if i == EOS_ID:
            break
        if i in (PAD_ID, BOS_ID):
            continue
        out.append(i)
    return tok.decode(out, skip_special_tokens=True)


# ----------------------------------------------------------------------------- models

class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.o = nn.Linear(width, width)

    def forward(self, x, ctx=None, causal: bool = False):
        ctx = x if ctx is None else ctx
        b, t, w = x.shape
        h = self.heads
        q = self.q(x).reshape(b, t, h, w // h).transpose(1, 2)
        kv = self.kv(ctx).reshape(b, ctx.shape[1], 2, h, w // h).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, kv[0], kv[1], is_causal=causal)
        return self.o(o.transpose(1, 2).reshape(b, t, w))


class Block(nn.Module):
    """Pre-LN transformer block: self-attention, optional cross-attention, MLP (GELU)."""

    def __init__(self, width: int, heads: int, mlp: int, cross: bool = False):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.cross = cross
        if cross:
            self.ln2 = nn.LayerNorm(width)
            self.xattn = Attention(width, heads)
        self.ln3 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp * width), nn.GELU(), nn.Linear(mlp * width, width))

    def forward(self, x, ctx=None, causal: bool = False):
        x = x + self.attn(self.ln1(x), causal=causal)
        if self.cross:
            x = x + self.xattn(self.ln2(x), ctx)
        return x + self.mlp(self.ln3(x))


class VLFEncoder(nn.Module):
    """EfficientNet feature tokens [B, g·g, C] → VLF [B, N, d] (Q-Former-style query transformer)."""

    def __init__(self, n_queries=32, dim=768, width=160, layers=2, token_layers=1, heads=4, mlp=2,
                 grid=IMAGE_SIZE // FEATURE_STRIDE, in_ch=FEATURE_CHANNELS):
        super().__init__()
        self.n_queries, self.dim, self.grid = n_queries, dim, grid
        self.inp = nn.Sequential(nn.LayerNorm(in_ch), nn.Linear(in_ch, width))
        self.row = nn.Parameter(torch.randn(grid, 1, width) * 0.02)
        self.col = nn.Parameter(torch.randn(1, grid, width) * 0.02)
        self.token_blocks = nn.ModuleList([Block(width, heads, mlp) for _ in range(token_layers)])
        self.ln_tokens = nn.LayerNorm(width)
        self.queries = nn.Parameter(torch.randn(1, n_queries, width) * 0.02)
        self.blocks = nn.ModuleList([Block(width, heads, mlp, cross=True) for _ in range(layers)])
        self.ln_out = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)

    def forward(self, tokens):
        t = self.inp(tokens) + (self.row + self.col).reshape(1, self.grid * self.grid, -1)
        for blk in self.token_blocks:
            t = blk(t)
        t = self.ln_tokens(t)
        q = self.queries.expand(tokens.shape[0], -1, -1)
        for blk in self.blocks:
            q = blk(q, t)
        v = self.out(self.ln_out(q))
        return F.layer_norm(v, (self.dim,))


class CaptionPrefix(nn.Module):
    """e0 = W_proj(mean_i ỹ_i): VLF [B, N, d] → prefix embeddings [B, P, E] (W_proj = LayerNorm + Linear)."""

    def __init__(self, dim=768, embed=160, prefix_len=1):
        super().__init__()
        self.prefix_len, self.embed = prefix_len, embed
        self.ln = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, embed * prefix_len)

    def forward(self, vlf):
        e = self.proj(self.ln(vlf.mean(dim=1)))
        return e.reshape(vlf.shape[0], self.prefix_len, self.embed)


class CaptionLM(nn.Module):
    """Causal transformer LM reading [prefix, tok_0 … tok_{T-1}]; logits[:, t] predicts token t+1."""

    def __init__(self, vocab_size, embed=160, layers=3, heads=4, mlp=3, max_len=64):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, embed)
        nn.init.normal_(self.tok.weight, std=0.02)
        self.pos = nn.Parameter(torch.randn(max_len, embed) * 0.02)
        self.blocks = nn.ModuleList([Block(embed, heads, mlp) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(embed)
        self.max_len = max_len

    def forward(self, prefix_embeds, input_ids):
        x = torch.cat([prefix_embeds, self.tok(input_ids)], dim=1)
        x = x + self.pos[: x.shape[1]]
        for blk in self.blocks:
            x = blk(x, causal=True)
        h = self.ln_f(x[:, prefix_embeds.shape[1]:])
        return h @ self.tok.weight.t()  # tied output embedding


class SceneGraphHead(nn.Module):
    """Training-only decoder of the full VLF: per slot (objects left to right) the logits of
    shape (+ "none"), colour, size, x bin and y bin."""

    def __init__(self, dim, n_shapes, n_colours, n_sizes, slots=8, width=128, layers=2, heads=4, bins=POS_BINS):
        super().__init__()
        self.inp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, width))
        self.slots = nn.Parameter(torch.randn(1, slots, width) * 0.02)
        self.blocks = nn.ModuleList([Block(width, heads, 2, cross=True) for _ in range(layers)])
        self.ln = nn.LayerNorm(width)
        self.sizes = (n_shapes + 1, n_colours, n_sizes, bins, bins)
        self.head = nn.Linear(width, sum(self.sizes))

    def forward(self, vlf):
        ctx = self.inp(vlf)
        s = self.slots.expand(vlf.shape[0], -1, -1)
        for blk in self.blocks:
            s = blk(s, ctx)
        return self.head(self.ln(s)).split(self.sizes, dim=-1)


class VLFModel(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = dict(cfg)
        c = self.cfg
        self.encoder = VLFEncoder(c["n_queries"], c["dim"], c["width"], c["layers"], c["token_layers"], c["heads"])
        self.prefix = CaptionPrefix(c["dim"], c["lm_width"], 1)
        self.lm = CaptionLM(c["vocab_size"], c["lm_width"], c["lm_layers"], c["heads"], 3, c["max_len"] + 2)
        self.aux = SceneGraphHead(c["dim"], c["n_shapes"], c["n_colours"], c["n_sizes"], c["slots"],
                                  c["aux_width"]) if c["aux_weight"] > 0 else None


def channel(v: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
    """The codec's feature channel: ỹ = (v + √P·n)/(1+σ²), n ~ N(0, σ²/2) per real dimension,
    P = 2·mean(v²) per sample, σ² = 10^(−SNR/10); ``snr_db`` [B] (+inf: clean)."""
    sigma2 = torch.pow(10.0, -snr_db / 10.0).reshape(-1, *([1] * (v.dim() - 1)))
    p = 2 * v.pow(2).mean(dim=tuple(range(1, v.dim())), keepdim=True)
    n = torch.randn_like(v) * torch.sqrt(sigma2 / 2)
    return (v + torch.sqrt(p) * n) / (1 + sigma2)


@torch.no_grad()
def greedy_decode(model: VLFModel, vlf: torch.Tensor, max_len: int) -> torch.Tensor:
    """Batched greedy decoding, ids [B, ≤max_len+1] starting with [BOS]."""
    prefix = model.prefix(vlf)
    ids = torch.full((vlf.shape[0], 1), BOS_ID, dtype=torch.long)
    done = torch.zeros(vlf.shape[0], dtype=torch.bool)
    for _ in range(max_len):
        nxt = model.lm(prefix, ids)[:, -1].argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, PAD_ID), nxt)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        done |= nxt == EOS_ID
        if bool(done.all()):
            break
    return ids


# ----------------------------------------------------------------------------- data

def feature_session(models_dir=None):
    """ONNX Runtime session of the shipped EfficientNet-Lite0 features (1 thread)."""
    from ..runtime import load_model

    return load_model("effnet_lite0_features", models_dir=models_dir, threads=1)


def effnet_tokens(sess, images_uint8: np.ndarray) -> np.ndarray:
    """uint8 [B, S, S, 3] → float32 tokens [B, (S/16)², 192] (stage-4 ‖ stage-5 channels, row-major cells)."""
    x = images_uint8.transpose(0, 3, 1, 2).astype(np.float32)  # the feature net takes [0, 255]
    out = sess.run({"image": x}, list(FEATURE_STAGES))
    s4, s5 = (out[k] for k in FEATURE_STAGES)
    f = np.concatenate([s4, s5], axis=1)
    return f.reshape(f.shape[0], f.shape[1], -1).transpose(0, 2, 1)


def slot_labels(scene, scenes, slots: int) -> np.ndarray:
    """int64 [slots, 5]: shape (len(SHAPES) = none), colour, size, x bin, y bin; −100 = ignore."""
    shapes, colours = list(scenes.SHAPES), list(scenes.COLOURS)
    lab = np.full((slots, 5), -100, np.int64)
    lab[:, 0] = len(shapes)
    objs = sorted(scene.objects, key=lambda o: (o.cx, o.cy))[:slots]
    for k, o in enumerate(objs):
        lab[k] = (shapes.index(o.shape), colours.index(o.colour), list(scenes.SIZES).index(o.size),
                  min(int(o.cx * POS_BINS), POS_BINS - 1), min(int(o.cy * POS_BINS), POS_BINS - 1))
    return lab


def encode_captions(tok, caps, max_len: int, n_caps: int) -> np.ndarray:
    """int32 [n_caps, max_len + 2]: [BOS] words [EOS] [PAD]…; captions cycled to ``n_caps``."""
    out = np.full((n_caps, max_len + 2), PAD_ID, np.int32)
    for k in range(n_caps):
        ids = tok.encode(caps[k % len(caps)]).ids[:max_len]
        out[k, : len(ids) + 2] = [BOS_ID] + ids + [EOS_ID]
    return out


def build_cache(d, split, n, scenes, sess, log=print):
    """Render ``n`` scenes of ``split`` and cache their feature tokens (float16) and seeds in the
    folder ``d``, in chunks of ``CACHE_CHUNK`` (resumable). Returns (tokens [n, 64, 192] float16,
    seeds)."""
    os.makedirs(d, exist_ok=True)
    toks, seeds = [], []
    items = None
    for c0 in range(0, n, CACHE_CHUNK):
        path = os.path.join(d, f"{split}_{n}_{c0:06d}.npz")
        m = min(CACHE_CHUNK, n - c0)
        if not os.path.exists(path):
            if items is None:
                items = scenes.dataset(split, n=n, size=IMAGE_SIZE)
            t0 = time.time()
            imgs, sd = [], []
            for k in range(c0, c0 + m):
                it = items[k]
                imgs.append(it.image)
                sd.append(it.seed)
            t1 = time.time()
            feats = [effnet_tokens(sess, np.stack(imgs[i:i + 50])) for i in range(0, m, 50)]
            np.savez(path + ".tmp.npz", tokens=np.concatenate(feats).astype(np.float16), seeds=np.array(sd))
            os.replace(path + ".tmp.npz", path)
            log(f"cache {split} {c0 + m}/{n}: render {t1 - t0:.1f} s, features {time.time() - t1:.1f} s")
        z = np.load(path)
        toks.append(z["tokens"])
        seeds.append(z["seeds"])
    return np.concatenate(toks), np.concatenate(seeds)


class SceneData:
    """Cached tokens + per-scene caption ids and slot labels of one split."""

    def __init__(self, tokens, seeds, scenes, tok, max_len, n_caps, slots):
        self.tokens = torch.from_numpy(tokens)
        self.seeds = seeds
        self.scenes = [scenes.generate(int(s)) for s in seeds]
        self.refs = [scenes.captions(sc) for sc in self.scenes]
        self.caps = torch.from_numpy(np.stack([encode_captions(tok, r, max_len, n_caps) for r in self.refs])).long()
        self.labels = torch.from_numpy(np.stack([slot_labels(sc, scenes, slots) for sc in self.scenes]))

    def __len__(self):
        return len(self.seeds)


# ----------------------------------------------------------------------------- evaluation

def mean_accuracy(scenes, texts, scene_list) -> dict:
    """Mean of ``scenes.caption_accuracy`` over the captions, per kind of ``ACC_KINDS``."""
    acc = {}
    for t, sc in zip(texts, scene_list):
        a = scenes.caption_accuracy(t, sc)
        for k in ACC_KINDS:
            acc.setdefault(k, []).append(float(a[k]))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def bleu(texts, refs) -> float:
    """Corpus BLEU of ``texts`` against all references of each scene (``semcom.metrics.text.bleu``:
    sacrebleu, 13a tokenizer, exp smoothing)."""
    from ..metrics.text import bleu as corpus_bleu

    return corpus_bleu(list(texts), [list(r) for r in refs])


@torch.no_grad()
def validate(model, data: SceneData, tok, scenes, snrs, max_len, seed=1234, batch=100) -> dict:
    model.eval()
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    res = {}
    for snr in snrs:
        texts = []
        for i in range(0, len(data), batch):
            v = model.encoder(data.tokens[i:i + batch].float())
            y = channel(v, torch.full((v.shape[0],), float(snr)))
            texts += [decode_ids(tok, r[1:]) for r in greedy_decode(model, y, max_len)]
        acc = mean_accuracy(scenes, texts, data.scenes)
        res[snr] = {"accuracy": acc, "bleu": bleu(texts, data.refs), "examples": texts[:3]}
    torch.set_rng_state(state)
    model.train()
    return res


@torch.no_grad()
def scene_graph_accuracy(model, data: SceneData, snr, seed=1234, batch=200) -> dict:
    """Accuracy of the training-only scene-graph head per attribute (shape/none over all slots;
    colour, size, x and y bins over the occupied slots) at feature SNR ``snr`` (inf: clean)."""
    if model.aux is None:
        return {}
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    hits = np.zeros(5)
    counts = np.zeros(5)
    for i in range(0, len(data), batch):
        v = model.encoder(data.tokens[i:i + batch].float())
        outs = model.aux(channel(v, torch.full((v.shape[0],), float(snr))))
        lab = data.labels[i:i + batch]
        for k, o in enumerate(outs):
            m = lab[..., k] != -100
            hits[k] += float((o.argmax(-1)[m] == lab[..., k][m]).sum())
            counts[k] += float(m.sum())
    torch.set_rng_state(state)
    return dict(zip(("shape", "colour", "size", "x", "y"), (hits / np.maximum(counts, 1)).round(4).tolist()))


# ----------------------------------------------------------------------------- training

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="out/vlf", help="cache, checkpoint and log folder (resumes from it)")
    ap.add_argument("--resume", action="store_true", help="require an existing checkpoint in --work")
    ap.add_argument("--models", default=None, help="models folder with effnet_lite0_features (default: the checkout's)")
    ap.add_argument("--cache", default="", help="folder of the cached EfficientNet features (default: <work>/cache; "
                                                 "runs on the same scenes can share one)")
    ap.add_argument("--n-train", type=int, default=20000, help="training scenes (first n of the train split)")
    ap.add_argument("--n-val", type=int, default=200, help="validation scenes (first n of the val split)")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--n-queries", type=int, default=32, help="N, queries of the VLF")
    ap.add_argument("--dim", type=int, default=768, help="d, dimension of each query")
    ap.add_argument("--width", type=int, default=160, help="internal width of the query transformer")
    ap.add_argument("--layers", type=int, default=2, help="query (self + cross-attention) blocks")
    ap.add_argument("--token-layers", type=int, default=1, help="self-attention blocks over the image tokens")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--lm-width", type=int, default=160, help="E, width of the caption LM")
    ap.add_argument("--lm-layers", type=int, default=3)
    ap.add_argument("--max-len", type=int, default=40, help="most caption words (without [BOS]/[EOS])")
    ap.add_argument("--aux-weight", type=float, default=0.5, help="weight of the scene-graph loss (0: no head)")
    ap.add_argument("--aux-width", type=int, default=128)
    ap.add_argument("--slots", type=int, default=4, help="scene-graph slots of the auxiliary head")
    ap.add_argument("--clean-frac", type=float, default=0.1, help="share of samples with no channel noise")
    ap.add_argument("--reinit-row-pos", type=float, default=0.0, metavar="STD",
                    help="when resuming: redraw the row (vertical) position embeddings of the encoder with this std "
                         "and start a new schedule (for a checkpoint whose VLF learned no vertical position)")
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--ckpt-minutes", type=float, default=3.0)
    args = ap.parse_args(argv)

    from ..datasets import scenes

    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    ckpt_path = os.path.join(args.work, "ckpt.pt")
    log_path = os.path.join(args.work, "train.log")
    if args.resume and not os.path.exists(ckpt_path):
        raise SystemExit(f"--resume: no checkpoint {ckpt_path}")

    def log(msg):
        with open(log_path, "a") as f:
            f.write(msg + "\n")
        print(msg, flush=True)

    arch = ("n_queries", "dim", "width", "layers", "token_layers", "heads", "lm_width", "lm_layers", "max_len",
            "aux_width", "slots")
    if os.path.exists(ckpt_path):  # the checkpoint's architecture wins over the command line
        saved = torch.load(ckpt_path, weights_only=False)["args"]
        changed = {k: saved[k] for k in arch if saved[k] != getattr(args, k)}
        if changed:
            log(f"architecture of the checkpoint kept: {changed}")
        for k in arch:
            setattr(args, k, saved[k])
    sess = feature_session(args.models)
    t0 = time.time()
    cache = args.cache or os.path.join(args.work, "cache")
    tr_tok, tr_seeds = build_cache(cache, "train", args.n_train, scenes, sess, log)
    va_tok, va_seeds = build_cache(cache, "val", args.n_val, scenes, sess, log)
    log(f"features of {len(tr_seeds)} + {len(va_seeds)} scenes ready in {time.time() - t0:.0f} s")

    ref_texts = [c for s in tr_seeds[:2000] for c in scenes.captions(scenes.generate(int(s)))]
    tok, missing = tokenizer_for_scenes(scenes, ref_texts)
    if missing:
        log(f"words of the captions missing from scenes.vocabulary(), added: {missing}")
    tok.save(os.path.join(args.work, "tokenizer.json"))
    n_caps = max(len(scenes.captions(scenes.generate(int(s)))) for s in tr_seeds[:200])
    train = SceneData(tr_tok, tr_seeds, scenes, tok, args.max_len, n_caps, args.slots)
    val = SceneData(va_tok, va_seeds, scenes, tok, args.max_len, n_caps, args.slots)
    longest = int((train.caps != PAD_ID).sum(-1).max()) - 2
    n_obj = max(len(sc.objects) for sc in train.scenes)
    log(f"{len(train)} train scenes, {n_caps} captions each, longest {longest} words (--max-len {args.max_len}), "
        f"at most {n_obj} objects (--slots {args.slots}), vocabulary {tok.get_vocab_size()}; data ready in "
        f"{time.time() - t0:.0f} s")

    cfg = {k: getattr(args, k) for k in ("n_queries", "dim", "width", "layers", "token_layers", "heads",
                                         "lm_width", "lm_layers", "max_len", "aux_weight", "aux_width", "slots")}
    cfg.update(vocab_size=tok.get_vocab_size(), n_shapes=len(scenes.SHAPES), n_colours=len(scenes.COLOURS),
               n_sizes=len(scenes.SIZES), image_size=IMAGE_SIZE)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = VLFModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    def lr_at(step):
        """Linear warm-up and cosine decay over the current run, from its first step to --steps
        (a resumed run with a new --steps or --lr restarts the schedule from where it starts)."""
        start = runs[-1]["from_step"] if runs else 0
        warmup = min(200, (args.steps - start) // 10)
        if step - start < warmup:
            return args.lr * (step - start + 1) / warmup
        t = min(1.0, (step - start - warmup) / max(1, args.steps - start - warmup))
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))

    step, elapsed, history, runs = 0, 0.0, [], []
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, elapsed, history = ck["step"], ck["elapsed_s"], ck.get("history", [])
        runs = ck.get("runs", [{"from_step": 0, "steps": ck["args"]["steps"], "lr": ck["args"]["lr"],
                                "aux_weight": ck["args"]["aux_weight"]}])
        torch.set_rng_state(ck["torch_rng"])
        rng.bit_generator.state = ck["np_rng"]
        log(f"resumed from {ckpt_path} at step {step}")
        if args.reinit_row_pos > 0 and not any(r.get("reinit_row_pos") for r in runs):
            with torch.no_grad():
                model.encoder.row.normal_(0.0, args.reinit_row_pos)
            opt.state.pop(model.encoder.row, None)
            log(f"row position embeddings redrawn with std {args.reinit_row_pos}")
    run = {"from_step": step, "steps": args.steps, "lr": args.lr, "aux_weight": args.aux_weight, "schedule": "restart",
           "reinit_row_pos": args.reinit_row_pos}
    if step < args.steps and (not runs or any(runs[-1].get(k) != run[k] for k in ("steps", "lr", "aux_weight",
                                                                                    "reinit_row_pos"))):
        runs.append(run)  # a new schedule from here

    def save():
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed_s": elapsed,
                    "args": vars(args), "cfg": cfg, "history": history, "runs": runs, "torch_rng": torch.get_rng_state(),
                    "np_rng": rng.bit_generator.state, "n_caps": n_caps,
                    "data": {"train": [int(tr_seeds[0]), int(tr_seeds[-1]), len(tr_seeds)],
                             "val": [int(va_seeds[0]), int(va_seeds[-1]), len(va_seeds)]}},
                   ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)

    n_par = {k: sum(p.numel() for p in getattr(model, k).parameters()) for k in ("encoder", "prefix", "lm")}
    log(f"start step {step}/{args.steps} {vars(args)} params {n_par}"
        + (f" aux {sum(p.numel() for p in model.aux.parameters())}" if model.aux is not None else ""))
    model.train()
    t_start = time.time() - elapsed
    last_ckpt = time.time()
    ema = {}
    while step < args.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        idx = torch.from_numpy(rng.integers(len(train), size=args.batch))
        cap = train.caps[idx, torch.from_numpy(rng.integers(n_caps, size=args.batch))]
        snr = torch.from_numpy(rng.uniform(*SNR_RANGE, size=args.batch)).float()
        snr[torch.from_numpy(rng.random(args.batch) < args.clean_frac)] = float("inf")
        v = model.encoder(train.tokens[idx].float())
        y = channel(v, snr)
        logits = model.lm(model.prefix(y), cap[:, :-1])
        loss_cap = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), cap[:, 1:].reshape(-1), ignore_index=PAD_ID)
        loss = loss_cap
        parts = {"cap": loss_cap.item()}
        if model.aux is not None:
            lab = train.labels[idx]
            outs = model.aux(y)
            la = sum(F.cross_entropy(o.reshape(-1, o.shape[-1]), lab[..., k].reshape(-1), ignore_index=-100)
                     for k, o in enumerate(outs)) / len(outs)
            loss = loss + args.aux_weight * la
            parts["aux"] = la.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        for k, x in parts.items():
            ema[k] = x if k not in ema else 0.98 * ema[k] + 0.02 * x
        if step % 50 == 0:
            log(f"step {step} " + " ".join(f"{k} {x:.4f}" for k, x in ema.items())
                + f" lr {lr_at(step):.1e} {(time.time() - t_start) / 60:.1f} min")
        if step % args.val_every == 0 or step == args.steps:
            res = validate(model, val, tok, scenes, (0.0, float("inf")), args.max_len)
            history.append({"step": step, "minutes": (time.time() - t_start) / 60,
                            **{f"acc@{s}": r["accuracy"].get("overall") for s, r in res.items()},
                            **{f"bleu@{s}": r["bleu"] for s, r in res.items()}})
            sg = scene_graph_accuracy(model, val, 0.0)
            model.train()
            history[-1]["scene_graph@0"] = sg
            log(f"val step {step}: " + "  ".join(f"{s} dB acc {r['accuracy']} bleu {r['bleu']:.1f}"
                                                 for s, r in res.items()) + f"  e.g. {res[0.0]['examples'][0]!r}"
                + f"  scene graph @0 dB {sg}")
        if step % args.val_every == 0 or step == args.steps or time.time() - last_ckpt > 60 * args.ckpt_minutes:
            elapsed = time.time() - t_start
            save()
            last_ckpt = time.time()
    log(f"done: {step} steps in {(time.time() - t_start) / 60:.1f} min")


if __name__ == "__main__":
    main()
