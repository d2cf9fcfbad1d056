"""Train the embedded-tier image decoder of VLF-MSC: a small latent diffusion model on CPU.

Two stages, both on the synthetic scene benchmark (``semcom.datasets.scenes``, 128-pixel
renders of the ``train`` split; the ``val`` split for validation):

    # 1. autoencoder: 128x128 RGB <-> 4x16x16 latent (stride 8)
    PYTHONPATH=python .venv/bin/python -m semcom.train.ldm ae --work out/ldm_ae --steps 1500 --seed 0
    # 2. conditional U-Net (epsilon prediction, DDPM training) with its two context encoders:
    #    vlf_img_cond (received VLF [N, d] -> context [N, C]) and img2img_text_cond (caption
    #    token ids [T] -> context [T, C], the Img2Img-SC baseline); one U-Net serves both
    PYTHONPATH=python .venv/bin/python -m semcom.train.ldm unet --ae out/ldm_ae/ckpt.pt --work out/ldm_unet \\
        --cond vlf+text --models models --steps 3000 --seed 0
    PYTHONPATH=python .venv/bin/python -m semcom.train.export_ldm --ae out/ldm_ae/ckpt.pt \\
        --unet out/ldm_unet/ckpt.pt --models models

Both stages checkpoint to ``<work>/ckpt.pt`` every ``--ckpt-min`` minutes and at the end, and a
second run with the same ``--work`` (or ``--resume``) continues from it (weights, optimiser, EMA,
RNG states, step). ``--minutes`` stops a run after that much wall time (the learning rate
schedule is warmup + constant, so a stopped run is a finished run).

Noise-robust conditioning (VLF-MSC, arXiv 2511.10074): the VLF that conditions the U-Net in
training carries the channel noise of the VLF link, under the link's own model: per sample
SNR uniform in [-7.5, 12.5] dB, P = 2·mean(v²), n ~ N(0, σ²/2) per real dimension,
ỹ = (v + sqrt(P)·n) / (1 + σ²) (the receiver's LMMSE shrink); a share ``--clean-frac`` of
samples is clean. The VLFs are those of the embedded VLF encoder (``models/vlf_enc.onnx``,
run with ONNX Runtime), precomputed once for the training images.

Sampling here (:func:`ddim_sample`, :func:`img2img_sample`, :func:`img2img_matched`) drives the
runtime's sampler, ``semcom.codecs.diffusion.DdimSampler`` (``diffusers.DDIMScheduler`` with
η = 0, step by step), with the U-Net given as a function.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np

from ..codecs.diffusion import DdimSampler
from ..codecs.vlf import noisy_feature

# --------------------------------------------------------------------------------------------
# constants shared with export_ldm

IMAGE_SIZE = 128
LATENT_CHANNELS = 4
STRIDE = 8
LATENT_SHAPE = (LATENT_CHANNELS, IMAGE_SIZE // STRIDE, IMAGE_SIZE // STRIDE)
SNR_RANGE = (-7.5, 12.5)
SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
MAX_TOKENS = 64

#: The DDIM/DDPM schedule of the U-Net (a diffusers scheduler config).
SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}
# Sampling starts at t = 951 (leading spacing, offset 1), not 999: the capped cosine schedule
# has ᾱ_999 ≈ 2e-9, and a DDIM step from there multiplies the model's ε error by
# sqrt(ᾱ_949/ᾱ_999) ≈ 2000 (measured: trailing spacing gives saturated noise images).


# --------------------------------------------------------------------------------------------
# numpy DDIM: the runtime's sampler (semcom.codecs.diffusion.DdimSampler, checked against
# diffusers), wrapped for the training and evaluation code here

def alphas_cumprod_np(cfg: dict) -> np.ndarray:
    """ᾱ_t of the scheduler config, float32 as diffusers computes them."""
    return DdimSampler(cfg).alphas_cumprod


def ddim_timesteps(cfg: dict, steps: int) -> np.ndarray:
    """Descending int64 timesteps of a ``steps``-step run (``DDIMScheduler.set_timesteps``)."""
    return DdimSampler(cfg).timesteps(steps)


def _unet_fn(unet, context):
    context = context.astype(np.float32)
    return lambda x, t: unet(x, np.array([t], np.int64), context)


def ddim_sample(unet, context: np.ndarray, cfg: dict, steps: int, noise: np.ndarray,
                init_latent: np.ndarray | None = None, strength: float = 1.0) -> np.ndarray:
    """Deterministic DDIM sampling in numpy.

    ``unet(latent [1,c,h,w] float32, timestep int64 [1], context [1,L,C]) -> noise_pred``.
    ``noise``: the initial Gaussian latent (strength 1) or the noise added to ``init_latent``
    (img2img: ``strength`` < 1 starts from ``init_latent`` noised to the first of the last
    ``int(steps·strength)`` timesteps, as diffusers' img2img pipelines do). Returns the final
    diffusion-space latent."""
    s = DdimSampler(cfg)
    ts = s.timesteps(steps)
    if init_latent is not None and strength < 1.0:
        ts = ts[steps - min(int(steps * strength), steps):]
        if len(ts) == 0:
            return init_latent.astype(np.float32)
    x = noise.astype(np.float32) if init_latent is None else s.add_noise(init_latent, noise, int(ts[0]))
    model = _unet_fn(unet, context)
    for t in ts:
        x = s.step(model(x, int(t)), int(t), x, steps)
    return x


def img2img_sample(unet, context, cfg, steps, received_latent, strength, seed=0):
    """The Img2Img-SC receiver: the received (noisy) diffusion-space latent, noised to the
    img2img strength, denoised by DDIM conditioned on ``context`` (the caption's)."""
    noise = np.random.default_rng(seed).standard_normal(received_latent.shape).astype(np.float32)
    return ddim_sample(unet, context, cfg, steps, noise, init_latent=received_latent, strength=strength)


def img2img_matched(unet, context, cfg, steps, z_received: np.ndarray, noise_var: float) -> np.ndarray:
    """Img2Img-SC receiver without added noise: a latent received with noise variance
    ``noise_var`` per real value (latent units, no LMMSE shrink) is a diffusion state at the
    timestep whose (1 − ᾱ_t)/ᾱ_t equals noise_var / (signal variance); start there from
    sqrt(ᾱ_t)·z and denoise (``DdimSampler.run_from``)."""
    s = DdimSampler(cfg)
    lat_var = float(np.mean(z_received ** 2)) or 1.0
    sig = max(lat_var - noise_var, 1e-3 * lat_var)
    t = s.timestep_for_noise(noise_var / sig)
    z = z_received / math.sqrt(sig)  # unit signal variance
    return s.run_from(_unet_fn(unet, context), (np.sqrt(s.alphas_cumprod[t]) * z).astype(np.float32), t, steps)


def vlf_channel_noise(v: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """The VLF link's received feature under its own model: ỹ = (v + sqrt(P)·n)/(1+σ²)
    (``semcom.codecs.vlf.noisy_feature``)."""
    return noisy_feature(v, snr_db, rng)


# --------------------------------------------------------------------------------------------
# tokenizer (word level, the scene vocabulary)

class WordTokenizer:
    """Word-level ids for captions: the VLF tokenizer JSON (``models/vlf_tokenizer.json``) when
    given, else the scene vocabulary with the special tokens [PAD] [UNK] [BOS] [EOS] first."""

    def __init__(self, path: str | None = None):
        from ..datasets import scenes

        self.path = path if path and os.path.exists(path) else None
        if self.path:
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_file(self.path)
            self.vocab = {w: i for w, i in self._tok.get_vocab().items()}
        else:
            self._tok = None
            words = list(SPECIALS) + [w for w in scenes.vocabulary() if w not in SPECIALS]
            self.vocab = {w: i for i, w in enumerate(words)}
        self.words = [w for w, _ in sorted(self.vocab.items(), key=lambda kv: kv[1])]
        for s in SPECIALS:
            if s not in self.vocab:
                raise ValueError(f"tokenizer lacks {s}")
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (self.vocab[s] for s in SPECIALS)
        self._tokenize = scenes.tokenize

    def __len__(self):
        return len(self.vocab)

    def encode(self, text: str) -> list:
        """[BOS] + word ids + [EOS]: the ``input_ids`` of img2img_text_cond."""
        if self._tok is not None:
            ids = self._tok.encode(text, add_special_tokens=False).ids
        else:
            ids = [self.vocab.get(w, self.unk_id) for w in self._tokenize(text)]
        return [self.bos_id] + ids[:MAX_TOKENS - 2] + [self.eos_id]


def write_tokenizer(path: str) -> str:
    """Write the word-level tokenizer of the scene vocabulary as a HF ``tokenizers`` JSON:
    [PAD] [UNK] [BOS] [EOS] first, then ``scenes.vocabulary()``; lowercase; words and each
    other non-space character (``scenes.tokenize``)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    from ..datasets import scenes

    words = list(SPECIALS) + [w for w in scenes.vocabulary() if w not in SPECIALS]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[a-z]+|[^\sa-z]"), "isolated")])
    tok.save(path)
    return path


# --------------------------------------------------------------------------------------------
# data

def build_cache(split: str, n: int, path: str) -> dict:
    """Render ``n`` scenes of ``split`` at 128 px once: images, seeds, captions (npz)."""
    import glob
    import re

    folder = os.path.dirname(path) or "."
    for p in [path] + sorted(glob.glob(os.path.join(folder, f"{split}_*.npz"))):  # a larger cache serves too
        m = re.fullmatch(rf"{split}_(\d+)\.npz", os.path.basename(p))
        if os.path.exists(p) and m and int(m.group(1)) >= n:
            d = dict(np.load(p, allow_pickle=False))
            return {k: v[:n] for k, v in d.items()}
    from ..datasets import scenes

    ds = scenes.dataset(split, n=n, size=IMAGE_SIZE)
    imgs = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    seeds = np.empty(n, np.int64)
    caps = []
    for i in range(n):
        it = ds[i]
        imgs[i], seeds[i] = it.image, it.seed
        caps.append(list(it.captions))
    k = max(len(c) for c in caps)
    cap = np.array([c + [""] * (k - len(c)) for c in caps])
    d = {"images": imgs, "seeds": seeds, "captions": cap, "n_captions": np.array([len(c) for c in caps])}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    np.savez(path + ".tmp.npz", **d)
    os.replace(path + ".tmp.npz", path)
    return d


def caption_ids(captions: np.ndarray, tok: WordTokenizer) -> np.ndarray:
    """[n, K, T] int64 ids ([BOS] words [EOS], [PAD]-padded) of the cached captions [n, K]."""
    enc = [[tok.encode(c) if c else [] for c in row] for row in captions]
    t = max(len(x) for row in enc for x in row)
    ids = np.full(captions.shape + (t,), tok.pad_id, np.int64)
    for i, row in enumerate(enc):
        for j, x in enumerate(row):
            ids[i, j, :len(x)] = x
    return ids


def vlf_cache_path(cache_dir: str, n: int, models_dir: str) -> str:
    """Where the training VLFs of the first ``n`` scenes are cached: the name carries the first
    12 hex digits of ``vlf_enc``'s sha256, so features of another encoder are never reused."""
    from ..runtime import load_manifest

    sha = load_manifest(models_dir).entry("vlf_enc").sha256
    return os.path.join(cache_dir, f"vlf_train_{n}_{sha[:12]}.npy")


def vlf_features(images: np.ndarray, models_dir: str, cache: str | None = None, log=print) -> np.ndarray:
    """VLFs [n, N, d] (float16) of uint8 images through ``vlf_enc`` (ONNX Runtime, 1 thread)."""
    if cache and os.path.exists(cache):
        v = np.load(cache)
        if len(v) >= len(images):
            return v[:len(images)]
    from ..runtime import load_model

    enc = load_model("vlf_enc", models_dir=models_dir, threads=1)
    out = None
    t0 = time.time()
    for i in range(len(images)):
        x = images[i].astype(np.float32).transpose(2, 0, 1)[None] / 255.0
        v = np.asarray(enc.run({"image": x})["vlf"] if hasattr(enc, "run") else enc(image=x))[0]
        if out is None:
            out = np.empty((len(images),) + v.shape, np.float16)
        out[i] = v
        if i % 1000 == 999:
            log(f"vlf_enc: {i + 1}/{len(images)} in {time.time() - t0:.0f} s")
    if cache:
        np.save(cache + ".tmp.npy", out)
        os.replace(cache + ".tmp.npy", cache)
    return out


# --------------------------------------------------------------------------------------------
# torch models (imported lazily so the numpy half of this module needs no torch)

def _torch_models():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Res(nn.Module):
        """conv3x3 → SiLU → conv3x3, + input (autoencoder)."""

        def __init__(self, c):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            return x + self.c2(F.silu(self.c1(x)))

    class Up(nn.Module):
        """conv3x3 to 4·out channels → pixel shuffle (×2)."""

        def __init__(self, cin, cout):
            super().__init__()
            self.c = nn.Conv2d(cin, 4 * cout, 3, padding=1)

        def forward(self, x):
            return F.pixel_shuffle(F.silu(self.c(x)), 2)

    class AutoEncoder(nn.Module):
        """128x128 RGB [0,1] → latent 4x16x16 → image. Plain (deterministic); the diffusion
        space is latent·scaling_factor, scaling_factor = 1/std of training latents."""

        def __init__(self, ch=(32, 64, 128), zc=LATENT_CHANNELS):
            super().__init__()
            a, b, c = ch
            self.enc = nn.Sequential(
                nn.Conv2d(3, a, 3, 2, 1), nn.SiLU(),          # 64
                nn.Conv2d(a, b, 3, 2, 1), nn.SiLU(), Res(b),  # 32
                nn.Conv2d(b, c, 3, 2, 1), nn.SiLU(), Res(c),  # 16
                Res(c), nn.Conv2d(c, zc, 3, padding=1))
            self.dec = nn.Sequential(
                nn.Conv2d(zc, c, 3, padding=1), nn.SiLU(), Res(c), Res(c),
                Up(c, b), Res(b),      # 32
                Up(b, a), Res(a),      # 64
                Up(a, a // 2),         # 128
                nn.Conv2d(a // 2, 3, 3, padding=1))
            self.register_buffer("scaling_factor", torch.tensor(1.0))

        def encode(self, x):
            return self.enc(x * 2 - 1)

        def decode_raw(self, z):
            """Unclamped image (training loss: no saturated gradients)."""
            return self.dec(z) + 0.5

        def decode(self, z):
            return self.decode_raw(z).clamp(0.0, 1.0)

        def forward(self, x):
            return self.decode(self.encode(x))

    class DiffEnc(nn.Module):
        """Export wrapper: image → diffusion-space latent (vlf_vae_enc)."""

        def __init__(self, ae):
            super().__init__()
            self.ae = ae

        def forward(self, image):
            return self.ae.encode(image) * self.ae.scaling_factor

    class DiffDec(nn.Module):
        """Export wrapper: diffusion-space latent → image in [0,1] (vlf_vae_dec)."""

        def __init__(self, ae):
            super().__init__()
            self.ae = ae

        def forward(self, latent):
            return self.ae.decode(latent / self.ae.scaling_factor)

    class Attn(nn.Module):
        """Multi-head attention (plain matmul/softmax; optional key mask [B, Lk] True = keep)."""

        def __init__(self, dim, ctx_dim=None, heads=4):
            super().__init__()
            ctx_dim = ctx_dim or dim
            self.h = heads
            self.q = nn.Linear(dim, dim, bias=False)
            self.k = nn.Linear(ctx_dim, dim, bias=False)
            self.v = nn.Linear(ctx_dim, dim, bias=False)
            self.o = nn.Linear(dim, dim)

        def forward(self, x, ctx=None, mask=None):
            ctx = x if ctx is None else ctx
            b, n, d = x.shape
            h = self.h
            q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)
            k = self.k(ctx).reshape(b, ctx.shape[1], h, d // h).transpose(1, 2)
            v = self.v(ctx).reshape(b, ctx.shape[1], h, d // h).transpose(1, 2)
            w = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d // h))
            if mask is not None:
                w = w.masked_fill(~mask[:, None, None, :], -1e4)
            y = (w.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
            return self.o(y)

    class FF(nn.Module):
        def __init__(self, dim, mult=4):
            super().__init__()
            self.a, self.b = nn.Linear(dim, dim * mult), nn.Linear(dim * mult, dim)

        def forward(self, x):
            return self.b(F.gelu(self.a(x)))

    class TokenLayer(nn.Module):
        """Pre-LN transformer encoder layer over a token sequence (context encoders)."""

        def __init__(self, dim, heads=4):
            super().__init__()
            self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.att, self.ff = Attn(dim, heads=heads), FF(dim, 2)

        def forward(self, x, mask=None):
            x = x + self.att(self.n1(x), mask=mask)
            return x + self.ff(self.n2(x))

    class VlfCond(nn.Module):
        """vlf_img_cond: VLF [B, N, d] → context [B, N, C] (LayerNorm, linear d→C, positions,
        ``layers`` transformer layers, LayerNorm)."""

        def __init__(self, n=32, d=768, ctx=128, layers=1):
            super().__init__()
            self.norm_in = nn.LayerNorm(d)
            self.proj = nn.Linear(d, ctx)
            self.pos = nn.Parameter(torch.zeros(1, n, ctx))
            self.layers = nn.ModuleList([TokenLayer(ctx) for _ in range(layers)])
            self.norm = nn.LayerNorm(ctx)

        def forward(self, vlf):
            x = self.proj(self.norm_in(vlf)) + self.pos
            for lyr in self.layers:
                x = lyr(x)
            return self.norm(x)

    class TextCond(nn.Module):
        """img2img_text_cond: caption ids [B, T] → context [B, T, C] (embedding, positions,
        ``layers`` transformer layers, LayerNorm)."""

        def __init__(self, vocab, ctx=128, layers=2, max_len=MAX_TOKENS):
            super().__init__()
            self.emb = nn.Embedding(vocab, ctx)
            self.pos = nn.Parameter(torch.zeros(1, max_len, ctx))
            nn.init.normal_(self.pos, std=0.02)
            self.layers = nn.ModuleList([TokenLayer(ctx) for _ in range(layers)])
            self.norm = nn.LayerNorm(ctx)

        def forward(self, input_ids, mask=None):
            t = input_ids.shape[1]
            x = self.emb(input_ids) + self.pos[:, :t]
            for lyr in self.layers:
                x = lyr(x, mask)
            return self.norm(x)

    class ResT(nn.Module):
        """U-Net residual block with timestep embedding (GroupNorm, SiLU)."""

        def __init__(self, cin, cout, tdim):
            super().__init__()
            self.n1, self.c1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1)
            self.t = nn.Linear(tdim, cout)
            self.n2, self.c2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
            nn.init.zeros_(self.c2.weight)
            nn.init.zeros_(self.c2.bias)
            self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

        def forward(self, x, temb):
            h = self.c1(F.silu(self.n1(x))) + self.t(temb)[:, :, None, None]
            return self.skip(x) + self.c2(F.silu(self.n2(h)))

    class Transformer2D(nn.Module):
        """GroupNorm → 1x1 → [self-attention, cross-attention to the context, MLP] → 1x1 (zero-init) + x."""

        def __init__(self, c, ctx_dim, heads):
            super().__init__()
            self.gn = nn.GroupNorm(8, c)
            self.pin = nn.Conv2d(c, c, 1)
            self.n1, self.n2, self.n3 = nn.LayerNorm(c), nn.LayerNorm(c), nn.LayerNorm(c)
            self.sa = Attn(c, heads=heads)
            self.ca = Attn(c, ctx_dim, heads=heads)
            self.ff = FF(c)
            self.pout = nn.Conv2d(c, c, 1)
            nn.init.zeros_(self.pout.weight)
            nn.init.zeros_(self.pout.bias)

        def forward(self, x, ctx, mask=None):
            b, c, h, w = x.shape
            t = self.pin(self.gn(x)).flatten(2).transpose(1, 2)
            t = t + self.sa(self.n1(t))
            t = t + self.ca(self.n2(t), ctx, mask)
            t = t + self.ff(self.n3(t))
            return x + self.pout(t.transpose(1, 2).reshape(b, c, h, w))

    class UNet(nn.Module):
        """Compact conditional U-Net for 4x16x16 latents: levels 16x16 (c0) and 8x8 (c1), a
        residual block + cross-attention transformer per level and in the middle."""

        def __init__(self, ch=(64, 128), ctx_dim=128, zc=LATENT_CHANNELS, heads=(2, 4), pos_emb=False):
            super().__init__()
            c0, c1 = ch
            td = 4 * c0
            self.c0 = c0
            self.temb = nn.Sequential(nn.Linear(c0, td), nn.SiLU(), nn.Linear(td, td))
            self.cin = nn.Conv2d(zc, c0, 3, padding=1)
            self.d1r, self.d1t = ResT(c0, c0, td), Transformer2D(c0, ctx_dim, heads[0])
            self.down = nn.Conv2d(c0, c0, 3, 2, 1)
            self.d2r, self.d2t = ResT(c0, c1, td), Transformer2D(c1, ctx_dim, heads[1])
            self.m1, self.mt, self.m2 = ResT(c1, c1, td), Transformer2D(c1, ctx_dim, heads[1]), ResT(c1, c1, td)
            self.u2r, self.u2t = ResT(2 * c1, c1, td), Transformer2D(c1, ctx_dim, heads[1])
            self.up = nn.Conv2d(c1, c1, 3, padding=1)
            self.u1r, self.u1t = ResT(c1 + c0, c0, td), Transformer2D(c0, ctx_dim, heads[0])
            self.u0r = ResT(2 * c0, c0, td)
            self.nout, self.cout = nn.GroupNorm(8, c0), nn.Conv2d(c0, zc, 3, padding=1)
            # pooled context → timestep embedding (a direct path for global content: background,
            # colours), zero-initialised
            # the context of an unconditional prediction (classifier-free guidance)
            self.null_ctx = nn.Parameter(torch.zeros(1, 1, ctx_dim))
            self.pool = nn.Linear(ctx_dim, td)
            nn.init.zeros_(self.pool.weight)
            nn.init.zeros_(self.pool.bias)
            # learned absolute position of each latent cell (zero-initialised, so a checkpoint
            # without it starts unchanged): lets the cross-attention queries say *where* they are
            self.pos = nn.Parameter(torch.zeros(1, c0, *LATENT_SHAPE[1:])) if pos_emb else None
            half = c0 // 2
            self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half).float() / half))

        def forward(self, latent, timestep, context, mask=None):
            a = timestep.float()[:, None] * self.freqs[None]
            if mask is None:
                pooled = context.mean(1)
            else:
                w = mask.float()[:, :, None]
                pooled = (context * w).sum(1) / w.sum(1).clamp(min=1.0)
            temb = F.silu(self.temb(torch.cat([torch.cos(a), torch.sin(a)], 1)) + self.pool(pooled))
            x0 = self.cin(latent)
            if self.pos is not None:
                x0 = x0 + self.pos
            x1 = self.d1t(self.d1r(x0, temb), context, mask)
            x2 = self.d2t(self.d2r(self.down(x1), temb), context, mask)
            m = self.m2(self.mt(self.m1(x2, temb), context, mask), temb)
            u = self.u2t(self.u2r(torch.cat([m, x2], 1), temb), context, mask)
            u = self.up(F.interpolate(u, scale_factor=2.0, mode="nearest"))
            u = self.u1t(self.u1r(torch.cat([u, x1], 1), temb), context, mask)
            u = self.u0r(torch.cat([u, x0], 1), temb)
            return self.cout(F.silu(self.nout(u)))

    class GuidedUNet(nn.Module):
        """Export wrapper: classifier-free guidance inside the graph,
        ε = ε(∅) + s·(ε(context) − ε(∅)), ∅ the learned null context (same inputs as UNet)."""

        def __init__(self, unet, scale):
            super().__init__()
            self.unet, self.scale = unet, float(scale)

        def forward(self, latent, timestep, context):
            e_c = self.unet(latent, timestep, context)
            e_u = self.unet(latent, timestep, self.unet.null_ctx)
            return e_u + self.scale * (e_c - e_u)

    return dict(AutoEncoder=AutoEncoder, GuidedUNet=GuidedUNet, DiffEnc=DiffEnc, DiffDec=DiffDec, VlfCond=VlfCond,
                TextCond=TextCond, UNet=UNet)


_FLAGS = {"ae": ("work", "n_train", "n_val", "steps", "minutes", "batch", "crop", "lr", "ch", "grad_w", "z_l2",
                  "latent_noise", "warmup", "ema", "seed", "threads"),
          "unet": ("ae", "work", "cond", "n_train", "steps", "minutes", "batch", "lr", "unet_ch", "ctx_dim", "pos_emb",
                   "vlf_layers", "text_layers", "n_vlf", "vlf_frac", "clean_frac", "cfg_drop", "min_snr", "warmup", "ema", "init", "seed",
                   "threads")}


def command_line(args: dict, steps: int | None = None) -> str:
    """The training command of a checkpoint's recorded arguments (every flag that matters);
    ``steps``: the steps the run actually made (replaces --steps and --minutes)."""
    out = ["python -m gnuradio.semcom.train.ldm", args["stage"]]
    for k in _FLAGS[args["stage"]]:
        v = args.get(k)
        if steps is not None and k in ("steps", "minutes"):
            v = steps if k == "steps" else None
        if v is None or v is False or v == "" or (k == "minutes" and v >= 1e8):
            continue
        f = "--" + k.replace("_", "-")
        out.append(f if v is True else f"{f} {' '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}")
    return " ".join(out)


def build_ldm(cfg: dict):
    """(unet, vlf_cond or None, text_cond or None) from a checkpoint's model config."""
    M = _torch_models()
    unet = M["UNet"](tuple(cfg["unet_ch"]), cfg["ctx_dim"], pos_emb=bool(cfg.get("pos_emb")))
    vc = M["VlfCond"](cfg["n_queries"], cfg["vlf_dim"], cfg["ctx_dim"], cfg["vlf_layers"]) if cfg.get("vlf") else None
    tc = M["TextCond"](cfg["vocab"], cfg["ctx_dim"], cfg["text_layers"]) if cfg.get("text") else None
    return unet, vc, tc


def load_ae(path: str):
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=False)
    ae = _torch_models()["AutoEncoder"](tuple(ck["cfg"]["ch"]))
    ae.load_state_dict(ck["ema"]["ae"])
    return ae.eval(), ck


# --------------------------------------------------------------------------------------------
# training helpers

def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two images in [0,1] after rounding to 8 bits."""
    a = np.round(np.clip(a, 0, 1) * 255)
    b = np.round(np.clip(b, 0, 1) * 255)
    mse = float(np.mean((a - b) ** 2))
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-10))


def colour_hist_distance(a: np.ndarray, b: np.ndarray, bins: int = 4) -> float:
    """Total-variation distance (in [0, 1]) of the joint RGB histograms (``bins``³ cells) of two
    images [3, H, W] (or [H, W, 3]) in [0, 1]."""
    def hist(x):
        x = x if x.shape[-1] == 3 else np.moveaxis(x, 0, -1)
        q = np.clip((x * bins).astype(np.int64), 0, bins - 1).reshape(-1, 3)
        h = np.bincount((q[:, 0] * bins + q[:, 1]) * bins + q[:, 2], minlength=bins ** 3)
        return h / h.sum()
    return float(0.5 * np.abs(hist(a) - hist(b)).sum())


def _stop_flag() -> list:
    """A list that becomes non-empty on SIGTERM/SIGINT: the loop ends and checkpoints."""
    import signal

    flag = []

    def handler(signum, frame):
        flag.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    return flag


class Trainer:
    """Checkpointing, EMA, logging and the time budget shared by both stages."""

    def __init__(self, args, modules: dict, params, lr):
        import copy

        import torch

        self.args, self.torch = args, torch
        os.makedirs(args.work, exist_ok=True)
        self.ckpt = os.path.join(args.work, "ckpt.pt")
        self.logf = os.path.join(args.work, "train.log")
        self.modules = modules
        self.ema = {k: copy.deepcopy(m).eval().requires_grad_(False) for k, m in modules.items()}
        self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        self.lr = lr
        self.step, self.elapsed = 0, 0.0
        self.extra = {}

    def log(self, msg):
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        with open(self.logf, "a") as f:
            f.write(line + "\n")
        print(line, flush=True)

    def try_resume(self, rng):
        torch = self.torch
        if not os.path.exists(self.ckpt):
            return False
        ck = torch.load(self.ckpt, map_location="cpu", weights_only=False)
        for k, m in self.modules.items():
            m.load_state_dict(ck["model"][k])
            self.ema[k].load_state_dict(ck["ema"][k])
        self.opt.load_state_dict(ck["opt"])
        self.step, self.elapsed = ck["step"], ck["elapsed_s"]
        torch.set_rng_state(ck["torch_rng"])
        rng.bit_generator.state = ck["np_rng"]
        self.extra = ck.get("extra", {})
        self.log(f"resumed from {self.ckpt} at step {self.step}")
        return True

    def save(self, rng, cfg, history):
        torch = self.torch
        torch.save({"model": {k: m.state_dict() for k, m in self.modules.items()},
                    "ema": {k: m.state_dict() for k, m in self.ema.items()},
                    "opt": self.opt.state_dict(), "step": self.step, "elapsed_s": self.elapsed,
                    "args": vars(self.args), "cfg": cfg, "history": history, "extra": self.extra,
                    "torch_rng": torch.get_rng_state(), "np_rng": rng.bit_generator.state}, self.ckpt + ".tmp")
        os.replace(self.ckpt + ".tmp", self.ckpt)

    def update(self, loss):
        torch = self.torch
        warm = max(1, self.args.warmup)
        for g in self.opt.param_groups:
            g["lr"] = self.lr * min(1.0, (self.step + 1) / warm)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], 1.0)
        self.opt.step()
        self.step += 1
        d = min(self.args.ema, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for k, m in self.modules.items():
                for pe, p in zip(self.ema[k].parameters(), m.parameters()):
                    pe.mul_(d).add_(p.detach(), alpha=1 - d)
                for be, b in zip(self.ema[k].buffers(), m.buffers()):
                    be.copy_(b)


# --------------------------------------------------------------------------------------------
# stage 1: autoencoder

def train_ae(args):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    data = build_cache("train", args.n_train, os.path.join(args.cache, f"train_{args.n_train}.npz"))
    val = build_cache("val", args.n_val, os.path.join(args.cache, f"val_{args.n_val}.npz"))
    imgs = data["images"]
    M = _torch_models()
    cfg = {"ch": list(args.ch), "latent_shape": list(LATENT_SHAPE)}
    ae = M["AutoEncoder"](tuple(args.ch))
    tr = Trainer(args, {"ae": ae}, list(ae.parameters()), args.lr)
    history = []
    tr.try_resume(rng)
    tr.log(f"ae start step {tr.step}/{args.steps} {vars(args)} params {sum(p.numel() for p in ae.parameters())}")
    t0 = time.time() - tr.elapsed
    last_ck = time.time()
    vx = torch.from_numpy(val["images"][:args.n_val]).permute(0, 3, 1, 2).float() / 255

    def validate(model):
        with torch.no_grad():
            y = torch.cat([model(vx[i:i + 50]) for i in range(0, len(vx), 50)])
        return float(np.mean([psnr_u8(y[i].numpy(), vx[i].numpy()) for i in range(len(vx))]))

    ema_loss = None
    stop = _stop_flag()
    while tr.step < args.steps and (time.time() - t0) < args.minutes * 60 and not stop:
        idx = rng.integers(len(imgs), size=args.batch)
        c = args.crop
        ys, xs = rng.integers(0, IMAGE_SIZE - c + 1, size=(2, args.batch)) // STRIDE * STRIDE
        x = np.stack([imgs[i, y:y + c, xx:xx + c] for i, y, xx in zip(idx, ys, xs)])
        flip = rng.random(args.batch) < 0.5
        x[flip] = x[flip, :, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255
        z = ae.encode(x)
        if args.latent_noise > 0:  # decoder robust to small latent perturbations (smooth latent space)
            z_in = z + args.latent_noise * z.detach().std() * torch.randn_like(z)
        else:
            z_in = z
        y = ae.decode_raw(z_in)
        rec = F.mse_loss(y, x)
        # gradient-domain term: sharper edges for the flat-coloured shapes
        gl = F.l1_loss(y[..., 1:, :] - y[..., :-1, :], x[..., 1:, :] - x[..., :-1, :]) + \
            F.l1_loss(y[..., 1:] - y[..., :-1], x[..., 1:] - x[..., :-1])
        loss = rec + args.grad_w * gl + args.z_l2 * (z ** 2).mean()
        tr.update(loss)
        ema_loss = rec.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * rec.item()
        if tr.step % 50 == 0:
            tr.log(f"step {tr.step} train_psnr {10 * math.log10(1 / ema_loss):.2f} {time.time() - t0:.0f}s")
        if tr.step % args.val_every == 0 or time.time() - last_ck > args.ckpt_min * 60:
            tr.elapsed = time.time() - t0
            v = validate(tr.ema["ae"])
            history.append((tr.step, tr.elapsed, v))
            tr.log(f"step {tr.step} val_psnr(ema) {v:.2f}")
            tr.save(rng, cfg, history)
            last_ck = time.time()
    tr.elapsed = time.time() - t0
    # latent scaling factor: 1/std of the (EMA) latents of the training images
    ema = tr.ema["ae"]
    with torch.no_grad():
        sub = imgs[rng.permutation(len(imgs))[:min(2000, len(imgs))]]
        zs = torch.cat([ema.encode(torch.from_numpy(sub[i:i + 100]).permute(0, 3, 1, 2).float() / 255)
                        for i in range(0, len(sub), 100)])
        std = float(zs.std())
        ema.scaling_factor.fill_(1.0 / std)
        ae.scaling_factor.fill_(1.0 / std)
        mean = float(zs.mean())
    v = validate(ema)
    history.append((tr.step, tr.elapsed, v))
    tr.extra.update(scaling_factor=1.0 / std, latent_mean=mean, latent_std=std, val_psnr=v)
    tr.save(rng, cfg, history)
    tr.log(f"ae done {tr.step} steps {tr.elapsed / 60:.1f} min; val psnr {v:.2f} dB; latent std {std:.4f} "
           f"mean {mean:.4f} -> scaling_factor {1 / std:.4f}")


# --------------------------------------------------------------------------------------------
# stage 2: conditional U-Net

def encode_latents(ae, images: np.ndarray, bs=100) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), bs):
            x = torch.from_numpy(images[i:i + bs]).permute(0, 3, 1, 2).float() / 255
            out.append((ae.encode(x) * ae.scaling_factor).numpy())
    return np.concatenate(out)


def noisy_vlf_batch(v: np.ndarray, rng: np.random.Generator, clean_frac: float, snr_range=SNR_RANGE):
    """Per sample: clean with probability ``clean_frac``, else the VLF link's received feature
    at an SNR uniform in ``snr_range`` (see :func:`vlf_channel_noise`)."""
    v = v.astype(np.float32)
    out = np.empty_like(v)
    for i in range(len(v)):
        if rng.random() < clean_frac:
            out[i] = v[i]
        else:
            out[i] = vlf_channel_noise(v[i], float(rng.uniform(*snr_range)), rng)
    return out


def train_unet(args):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    use_vlf, use_text = "vlf" in args.cond, "text" in args.cond
    tok = WordTokenizer(args.tokenizer)
    data = build_cache("train", args.n_train, os.path.join(args.cache, f"train_{args.n_train}.npz"))
    ae, ae_ck = load_ae(args.ae)
    lat_path = os.path.join(args.work, "latents.npy")
    os.makedirs(args.work, exist_ok=True)
    if os.path.exists(lat_path) and len(np.load(lat_path, mmap_mode="r")) == args.n_train:
        lat = np.load(lat_path)
    else:
        lat = encode_latents(ae, data["images"])
        np.save(lat_path, lat)
    vlf = None
    n_q, d = 32, 768
    n_vlf = min(args.n_vlf or args.n_train, args.n_train)
    if use_vlf:
        vlf = np.load(args.vlf_npy)[:n_vlf] if args.vlf_npy else \
            vlf_features(data["images"][:n_vlf], args.models, vlf_cache_path(args.cache, n_vlf, args.models))
        n_vlf = len(vlf)
        n_q, d = vlf.shape[1:]
    cfg = {"unet_ch": list(args.unet_ch), "ctx_dim": args.ctx_dim, "pos_emb": bool(args.pos_emb), "vlf": use_vlf, "text": use_text,
           "n_queries": int(n_q), "vlf_dim": int(d), "vlf_layers": args.vlf_layers, "text_layers": args.text_layers,
           "vocab": len(tok), "vocab_words": tok.words, "tokenizer": tok.path, "latent_shape": list(LATENT_SHAPE),
           "scheduler": SCHEDULER, "ae": os.path.abspath(args.ae), "ae_extra": ae_ck.get("extra", {})}
    unet, vc, tc = build_ldm(cfg)
    mods = {"unet": unet}
    if vc is not None:
        mods["vlf_cond"] = vc
    if tc is not None:
        mods["text_cond"] = tc
    if args.init and not os.path.exists(os.path.join(args.work, "ckpt.pt")):
        ck0 = torch.load(args.init, map_location="cpu", weights_only=False)
        for k, m in mods.items():
            if k in ck0["ema"]:
                missing, unexpected = m.load_state_dict(ck0["ema"][k], strict=False)
                print(f"init {k} from {args.init} (EMA weights, step {ck0['step']}); new: {missing}")
    params = [p for m in mods.values() for p in m.parameters()]
    tr = Trainer(args, mods, params, args.lr)
    history = []
    if args.init:  # the stages this one starts from, for the manifest's training record
        ck0 = torch.load(args.init, map_location="cpu", weights_only=False)
        tr.extra["stages"] = ck0.get("extra", {}).get("stages", []) + [
            f"{command_line(ck0['args'], ck0['step'])}  # {ck0['step']} steps, {ck0['elapsed_s'] / 60:.1f} min"]
    if tr.try_resume(rng):
        history = torch.load(tr.ckpt, map_location="cpu", weights_only=False).get("history", [])
    tr.log(f"unet start step {tr.step}/{args.steps} {vars(args)} params " +
           ", ".join(f"{k} {sum(p.numel() for p in m.parameters())}" for k, m in mods.items()))
    acp = torch.from_numpy(alphas_cumprod_np(SCHEDULER))
    n_t = SCHEDULER["num_train_timesteps"]
    lat_t = torch.from_numpy(lat)
    ids_all, ncap = caption_ids(data["captions"], tok), data["n_captions"]
    t0 = time.time() - tr.elapsed
    last_ck = time.time()
    ema_loss = None
    stop = _stop_flag()
    while tr.step < args.steps and (time.time() - t0) < args.minutes * 60 and not stop:
        mode = "vlf" if (use_vlf and (not use_text or rng.random() < args.vlf_frac)) else "text"
        idx = rng.integers(n_vlf if mode == "vlf" else len(lat), size=args.batch)
        z0 = lat_t[idx]
        mask = None
        if mode == "vlf":
            v = noisy_vlf_batch(vlf[idx], rng, args.clean_frac)
            ctx = vc(torch.from_numpy(v))
        else:
            j = (rng.random(args.batch) * ncap[idx]).astype(np.int64)
            ids = ids_all[idx, j]
            tlen = int((ids != tok.pad_id).sum(1).max())
            ids = torch.from_numpy(ids[:, :tlen])
            mask = ids != tok.pad_id
            ctx = tc(ids, mask)
        if args.cfg_drop > 0:  # classifier-free guidance training: drop the whole context for some samples
            drop = torch.from_numpy(rng.random(args.batch) < args.cfg_drop)
            if drop.any():
                null = unet.null_ctx.expand(args.batch, ctx.shape[1], -1)
                ctx = torch.where(drop[:, None, None], null, ctx)
                keep_first = torch.zeros(args.batch, ctx.shape[1], dtype=torch.bool)
                keep_first[:, 0] = True
                m0 = torch.ones(args.batch, ctx.shape[1], dtype=torch.bool) if mask is None else mask
                mask = torch.where(drop[:, None], keep_first, m0)
        t = torch.randint(0, n_t, (args.batch,))
        noise = torch.randn_like(z0)
        a = acp[t][:, None, None, None]
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        pred = unet(zt, t, ctx, mask)
        err = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        if args.min_snr > 0:  # min-SNR-γ weighting for epsilon prediction: min(snr, γ)/snr
            snr = a[:, 0, 0, 0] / (1 - a[:, 0, 0, 0])
            err = err * torch.clamp(snr, max=args.min_snr) / snr
        loss = err.mean()
        tr.update(loss)
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        if tr.step % 50 == 0:
            tr.log(f"step {tr.step} loss {ema_loss:.4f} ({mode}) {time.time() - t0:.0f}s")
        if time.time() - last_ck > args.ckpt_min * 60:
            tr.elapsed = time.time() - t0
            history.append((tr.step, tr.elapsed, ema_loss))
            tr.save(rng, cfg, history)
            last_ck = time.time()
            tr.log(f"checkpoint step {tr.step}")
    tr.elapsed = time.time() - t0
    history.append((tr.step, tr.elapsed, ema_loss))
    tr.save(rng, cfg, history)
    tr.log(f"unet done {tr.step} steps {tr.elapsed / 60:.1f} min")



# --------------------------------------------------------------------------------------------
# evaluation of the exported models (ONNX Runtime + numpy only)

def object_colour_hits(img: np.ndarray, scene, palette: dict) -> tuple:
    """(hits, objects): objects whose mask region in ``img`` [3,H,W] has a median colour
    nearest (among ``palette``) to the object's own colour: colour and placement/shape at once."""
    from ..datasets import scenes

    ms = scenes.masks(scene, img.shape[-1])
    names = list(palette)
    pal = np.array([palette[n] for n in names], np.float32) / 255
    hits = 0
    for o, m in zip(scene.objects, ms):
        if m.sum() < 4:
            continue
        c = np.median(img[:, m], axis=1)
        hits += names[int(np.argmin(((pal - c) ** 2).sum(1)))] == o.colour
    return hits, int(sum(m.sum() >= 4 for m in ms))


def colour_recall(img: np.ndarray, scene, palette: dict, max_dist: float = 0.2) -> tuple:
    """(found, objects): object colours of ``scene`` that ``img`` [3,H,W] shows anywhere, on at
    least a quarter of the object's true area of pixels within ``max_dist`` (RGB, [0,1]) of that
    palette colour and nearer to it than to any other: colour content regardless of placement."""
    from ..datasets import scenes

    ms = scenes.masks(scene, img.shape[-1])
    names = list(palette)
    pal = np.array([palette[n] for n in names], np.float32) / 255
    px = img.reshape(3, -1).T
    d = ((px[:, None, :] - pal[None]) ** 2).sum(-1)
    near = np.argmin(d, 1)
    ok = np.sqrt(d[np.arange(len(px)), near]) < max_dist
    counts = np.bincount(near[ok], minlength=len(names))
    need = {}
    for o, m in zip(scene.objects, ms):
        need[o.colour] = need.get(o.colour, 0) + int(m.sum())
    found = sum(counts[names.index(c)] >= 0.25 * a for c, a in need.items() if a >= 4)
    return found, sum(a >= 4 for a in need.values())


class OnnxLdm:
    """The exported models through ``semcom.runtime.load_model`` (1 thread)."""

    def __init__(self, models_dir):
        from ..runtime import load_model

        names = ("vlf_enc", "vlf_img_cond", "vlf_unet", "vlf_vae_dec", "vlf_vae_enc", "img2img_text_cond")
        self.m = {n: load_model(n, models_dir=models_dir, threads=1) for n in names}
        ex = self.m["vlf_unet"].entry.extra
        self.cfg, self.steps = ex["scheduler"], ex["steps"]
        self.tok = WordTokenizer(os.path.join(models_dir, self.m["img2img_text_cond"].entry.extra["tokenizer"]))

    def unet(self, x, t, c):
        return self.m["vlf_unet"].run({"latent": x, "timestep": t, "context": c})["noise_pred"]

    def vlf(self, x):
        return self.m["vlf_enc"].run({"image": x})["vlf"]

    def generate(self, vlf, steps=None, seed=0):
        ctx = self.m["vlf_img_cond"].run({"vlf": vlf.astype(np.float32)})["context"]
        noise = np.random.default_rng(seed).standard_normal((1,) + LATENT_SHAPE).astype(np.float32)
        z = ddim_sample(self.unet, ctx, self.cfg, steps or self.steps, noise)
        return self.m["vlf_vae_dec"].run({"latent": z})["image"][0]

    def img2img(self, image, caption, snr_db, strength, rng, steps=None, seed=0):
        z = self.m["vlf_vae_enc"].run({"image": image})["latent"]
        zr = z if snr_db is None else vlf_channel_noise(z, snr_db, rng)
        ctx = self.m["img2img_text_cond"].run({"input_ids": np.array([self.tok.encode(caption)], np.int64)})["context"]
        if strength == "matched":  # no LMMSE shrink: y = z + sqrt(P) n, noise variance P σ²/2 per value
            s2 = 10.0 ** (-snr_db / 10.0)
            p = 2.0 * float(np.mean(z ** 2))
            zr = (z + math.sqrt(p) * rng.standard_normal(z.shape) * math.sqrt(s2 / 2)).astype(np.float32)
            zo = img2img_matched(self.unet, ctx, self.cfg, steps or self.steps, zr, p * s2 / 2)
        else:
            zo = img2img_sample(self.unet, ctx, self.cfg, steps or self.steps, zr, strength, seed=seed)
        return self.m["vlf_vae_dec"].run({"latent": zo})["image"][0]


def evaluate(args):
    from PIL import Image

    from ..datasets import scenes

    L = OnnxLdm(args.models)
    items = list(scenes.dataset("test", n=args.n))
    src = [it.image.astype(np.float32).transpose(2, 0, 1)[None] / 255 for it in items]
    res = {"n_scenes": args.n, "steps": L.steps}
    # autoencoder
    rec = [L.m["vlf_vae_dec"].run({"latent": L.m["vlf_vae_enc"].run({"image": x})["latent"]})["image"][0] for x in src]
    res["ae_psnr_db"] = float(np.mean([psnr_u8(r, x[0]) for r, x in zip(rec, src)]))
    vl = [L.vlf(x) for x in src]
    rng = np.random.default_rng(args.seed)
    snrs = [None, 10.0, 5.0, 0.0, -5.0]
    grid_cols = {}
    res["vlf"] = {}

    def summary(gens):
        n = len(gens)
        ps = np.array([[psnr_u8(g, s[0]) for s in src[:n]] for g in gens])
        hd = np.array([[colour_hist_distance(g, s[0]) for s in src[:n]] for g in gens])
        off = ~np.eye(n, dtype=bool)
        hits = [object_colour_hits(g, it.scene, scenes.COLOURS) for g, it in zip(gens, items)]
        rec = [colour_recall(g, it.scene, scenes.COLOURS) for g, it in zip(gens, items)]
        return {"colour_recall": float(sum(h for h, _ in rec) / max(1, sum(k for _, k in rec))),
                "psnr_db": float(np.mean(np.diag(ps))), "psnr_other_db": float(ps[off].mean()),
                "hist_dist": float(np.mean(np.diag(hd))), "hist_dist_other": float(hd[off].mean()),
                "own_closer_hist": float(np.mean([hd[i, i] < hd[i, off[i]].mean() for i in range(n)])),
                "object_colour_acc": float(sum(h for h, _ in hits) / max(1, sum(k for _, k in hits)))}

    for snr in snrs:
        gens = []
        for k, v in enumerate(vl):
            vv = v if snr is None else vlf_channel_noise(v, snr, rng)
            gens.append(L.generate(vv, seed=k))
        key = "clean" if snr is None else f"{snr:g}"
        res["vlf"][key] = summary(gens)
        grid_cols[key] = gens
        print("vlf", key, res["vlf"][key], flush=True)
    # DDIM steps vs quality and latency (clean VLF, first scenes)
    res["steps_sweep"] = {}
    for st in args.sweep:
        t0 = time.perf_counter()
        gens = [L.generate(v, steps=st, seed=k) for k, v in enumerate(vl[:args.n_sweep])]
        dt = (time.perf_counter() - t0) / args.n_sweep
        s_ = summary(gens) if len(gens) > 1 else {}
        res["steps_sweep"][st] = {"latency_s": dt, **{k: s_[k] for k in ("psnr_db", "hist_dist", "colour_recall", "object_colour_acc")}}
        print("steps", st, res["steps_sweep"][st], flush=True)
    # Img2Img-SC baseline (latent as analog symbols + the caption, error-free)
    res["img2img"] = {}
    for strength in ["matched"] + list(args.strengths):
        for snr in snrs[1:]:
            gens = [L.img2img(x, it.captions[0], snr, strength, rng, seed=k) for k, (x, it) in
                    enumerate(zip(src, items))]
            key = f"{strength}@{snr:g}" if isinstance(strength, str) else f"s{strength:g}@{snr:g}"
            res["img2img"][key] = summary(gens)
            print("img2img", key, res["img2img"][key], flush=True)
    # latency of the full VLF decode at the default steps (1 thread)
    t0 = time.perf_counter()
    for k in range(3):
        L.generate(vl[k], seed=k)
    res["latency_s"] = (time.perf_counter() - t0) / 3
    res["sizes_mb"] = {n: round(m.entry.size_bytes / 1e6, 3) for n, m in L.m.items()}
    # grid: source | 10 dB | 0 dB | -5 dB
    rows = []
    for i in range(min(args.grid, args.n)):
        cells = [src[i][0]] + [grid_cols[k][i] for k in ("10", "0", "-5")]
        rows.append(np.concatenate([c.transpose(1, 2, 0) for c in cells], 1))
    grid = (np.clip(np.concatenate(rows, 0), 0, 1) * 255).round().astype(np.uint8)
    Image.fromarray(grid).save(args.grid_png)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="stage", required=True)

    def common(p, work):
        p.add_argument("--work", default=work, help="checkpoint and log folder (a second run resumes from it)")
        p.add_argument("--resume", action="store_true", help="resume from <work>/ckpt.pt (the default when it exists)")
        p.add_argument("--cache", default="out/ldm_data", help="folder of the rendered scene caches")
        p.add_argument("--n-train", type=int, default=8000, help="training scenes (first seeds of the train split)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
        p.add_argument("--steps", type=int, default=3000)
        p.add_argument("--minutes", type=float, default=1e9, help="wall-time budget (stops and checkpoints)")
        p.add_argument("--ckpt-min", type=float, default=3.0, help="checkpoint every this many minutes")
        p.add_argument("--warmup", type=int, default=100)
        p.add_argument("--ema", type=float, default=0.995, help="EMA decay of the exported weights")
        p.add_argument("--tokenizer", default="models/vlf_tokenizer.json",
                       help="word-level tokenizer JSON (the scene vocabulary with [PAD] [UNK] [BOS] [EOS] if missing)")

    a = sub.add_parser("ae", help="train the autoencoder")
    common(a, "out/ldm_ae")
    a.add_argument("--n-val", type=int, default=200)
    a.add_argument("--batch", type=int, default=12)
    a.add_argument("--crop", type=int, default=64, help="training crop (fully convolutional; multiple of 8)")
    a.add_argument("--lr", type=float, default=5e-4)
    a.add_argument("--ch", type=int, nargs=3, default=(32, 64, 128))
    a.add_argument("--grad-w", type=float, default=0.0, help="weight of the image-gradient L1 term")
    a.add_argument("--z-l2", type=float, default=1e-4, help="latent L2 penalty (keeps the latent scale bounded)")
    a.add_argument("--latent-noise", type=float, default=0.05, help="relative latent noise in training")
    a.add_argument("--val-every", type=int, default=250)

    u = sub.add_parser("unet", help="train the conditional U-Net and context encoders")
    common(u, "out/ldm_unet")
    u.add_argument("--ae", required=True, help="autoencoder checkpoint (stage 1)")
    u.add_argument("--cond", default="vlf+text", choices=("vlf", "text", "vlf+text"))
    u.add_argument("--models", default="models", help="models folder with vlf_enc (for the training VLFs)")
    u.add_argument("--n-vlf", type=int, default=0, help="VLF batches draw from the first n scenes (0: all)")
    u.add_argument("--vlf-npy", default="", help="precomputed training VLFs [n, N, d] (.npy) instead of vlf_enc")
    u.add_argument("--batch", type=int, default=64)
    u.add_argument("--lr", type=float, default=5e-4)
    u.add_argument("--unet-ch", type=int, nargs=2, default=(64, 128))
    u.add_argument("--ctx-dim", type=int, default=128)
    u.add_argument("--pos-emb", action="store_true",
                   help="learned position embedding of the latent cells (zero-initialised; --init may lack it)")
    u.add_argument("--vlf-layers", type=int, default=1)
    u.add_argument("--text-layers", type=int, default=2)
    u.add_argument("--vlf-frac", type=float, default=0.6, help="share of batches conditioned on the VLF (vlf+text)")
    u.add_argument("--clean-frac", type=float, default=0.2, help="share of clean (noise-free) VLFs")
    u.add_argument("--cfg-drop", type=float, default=0.1,
                   help="share of samples with the null context (classifier-free guidance training)")
    u.add_argument("--min-snr", type=float, default=5.0, help="min-SNR-γ loss weighting (0: plain MSE)")
    u.add_argument("--init", default="", help="start from this U-Net checkpoint's EMA weights (modules it has)")
    f = sub.add_parser("vlf", help="precompute the training VLFs with vlf_enc (ONNX Runtime)")
    f.add_argument("--models", default="models")
    f.add_argument("--cache", default="out/ldm_data")
    f.add_argument("--n-train", type=int, default=4000)
    e = sub.add_parser("eval", help="measure the exported models (ONNX Runtime, numpy DDIM)")
    e.add_argument("--models", default="models")
    e.add_argument("--n", type=int, default=50, help="test scenes")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--sweep", type=int, nargs="*", default=(10, 20, 30, 50), help="DDIM steps to compare")
    e.add_argument("--n-sweep", type=int, default=20)
    e.add_argument("--strengths", type=float, nargs="*", default=(0.5,),
                   help="img2img strengths (noise added to the LMMSE latent) besides the SNR-matched start")
    e.add_argument("--grid", type=int, default=8, help="rows of the grid image")
    e.add_argument("--grid-png", default="ldm_grid.png")
    e.add_argument("--out", default="ldm_eval.json")
    args = ap.parse_args(argv)
    if args.stage == "eval":
        return evaluate(args)
    if args.stage == "vlf":
        d = build_cache("train", args.n_train, os.path.join(args.cache, f"train_{args.n_train}.npz"))
        v = vlf_features(d["images"], args.models, vlf_cache_path(args.cache, args.n_train, args.models))
        return print(f"VLFs {v.shape} -> {args.cache}")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    (train_ae if args.stage == "ae" else train_unet)(args)


if __name__ == "__main__":
    main()
