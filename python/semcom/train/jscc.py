"""Train the SNR-adaptive deep JSCC image codec on CPU.

    PYTHONPATH=python .venv/bin/python -m semcom.train.jscc --steps 4000 --crop 128 --batch 16 --seed 0 \\
        --data path/to/photos --val path/to/Set5 --work out/jscc

Random crops (with random flips, from each photo at full and half size) of the training
photos; per sample a channel SNR uniform in [-5, 20] dB and either a uniform channel count
c ∈ {16, 32, 64} (ρ = 1/24, 1/12, 1/6) or, with probability ``--importance-frac``, an
importance allocation: a critical region (with ``--masks``, a share ``--guidance-frac`` of
them the patch's crop of a mask the guidance module drew on the photo,
``semcom.train.guidance_masks``; otherwise 1–3 random ellipses covering about 5–50 % of the
crop), an importance weight uniform in [1.5, 6] and a budget of 4–24 symbol planes per
block on average, turned into planes per block by the codec's own
``semcom.codecs.importance.allocate_planes``. The encoder sees the true SNR (the
transmitter's CSI); the decoder sees it with a uniform ±``--snr-jitter`` dB error, as a
receiver's estimate would be. Loss: importance-weighted MSE (weight w inside the critical
region, 1 outside, normalised by the mean weight; plain MSE for uniform samples). Adam with
a cosine learning-rate decay over ``--steps``. ``--init CKPT`` starts from the weights of
another checkpoint (layers it lacks keep their initialisation) with a fresh optimiser.

Every ``--val-every`` steps the PSNR on the validation photos is logged for every rate at
0, 10 and 20 dB (fixed noise seed), and a checkpoint ``<work>/ckpt.pt`` is written; a
second run with the same ``--work`` resumes from it. ``python -m semcom.train.export_jscc``
turns the checkpoint into the shipped ONNX models.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from ..codecs.importance import allocate_planes, block_levels
from .jscc_model import CHANNELS, C_MAX, STRIDE, DeepJSCC, rho_of

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VAL_SNRS = (0.0, 10.0, 20.0)
SNR_RANGE = (-5.0, 20.0)


def load_folder(path: str) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 HxWx3) for every image file in ``path``, sorted by name."""
    out = []
    for name in sorted(os.listdir(path)):
        if name.lower().endswith(IMAGE_EXTENSIONS):
            with Image.open(os.path.join(path, name)) as im:
                out.append((os.path.splitext(name)[0], np.array(im.convert("RGB"))))
    if not out:
        raise SystemExit(f"no images in {path}")
    return out


class CropSampler:
    """Random ``crop``×``crop`` patches with random flips, from each photo at two scales.

    ``masks``: optional critical-region masks per photo (a list of bool (H, W) arrays each,
    e.g. from ``semcom.train.guidance_masks``); every patch then comes with the same crop of
    one of its photo's masks, chosen at random (None when the photo has none)."""

    def __init__(self, images: list[np.ndarray], crop: int, rng: np.random.Generator, masks=None):
        self.crop = crop
        self.rng = rng
        self.pool = []
        for i, img in enumerate(images):
            ms = list(masks[i]) if masks is not None else []
            for m in ms:
                if m.shape != img.shape[:2]:
                    raise SystemExit(f"mask of shape {m.shape} for a photo of shape {img.shape[:2]}")
            self.pool.append((img, ms))
            h, w = img.shape[:2]
            half = np.asarray(Image.fromarray(img).resize((w // 2, h // 2), Image.BICUBIC))
            self.pool.append((half, [m[:2 * (h // 2):2, :2 * (w // 2):2] for m in ms]))
        self.pool = [p for p in self.pool if min(p[0].shape[:2]) >= crop]
        if not self.pool:
            raise SystemExit(f"no training image is at least {crop} pixels on each side")

    def batch(self, n: int) -> tuple[torch.Tensor, list]:
        """(n, 3, crop, crop) float32 in [0, 1], and per patch its mask crop (bool) or None."""
        out = np.empty((n, self.crop, self.crop, 3), np.uint8)
        crops = []
        for i in range(n):
            img, ms = self.pool[self.rng.integers(len(self.pool))]
            y = self.rng.integers(img.shape[0] - self.crop + 1)
            x = self.rng.integers(img.shape[1] - self.crop + 1)
            win = (slice(y, y + self.crop), slice(x, x + self.crop))
            p = img[win]
            m = ms[self.rng.integers(len(ms))][win] if ms else None
            if self.rng.random() < 0.5:
                p, m = p[:, ::-1], None if m is None else m[:, ::-1]
            if self.rng.random() < 0.5:
                p, m = p[::-1], None if m is None else m[::-1]
            out[i] = p
            crops.append(m)
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0), crops


def random_region(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random critical region on a size×size crop: the union of 1–3 ellipses (bool)."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    mask = np.zeros((size, size), bool)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(0.08, 0.35, 2) * size
        mask |= ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
    return mask


def importance_sample(size: int, rng: np.random.Generator, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """(alloc map (size/8, size/8) = channels per block / C_MAX, pixel loss weights (size, size))
    for critical region ``mask`` (bool (size, size); None: ``random_region``)."""
    mask = random_region(size, rng) if mask is None else mask
    lv = block_levels(mask, STRIDE, 2)
    weight = float(rng.uniform(1.5, 6.0))
    n = lv.size
    budget = int(round(rng.uniform(4, 24) * n))
    planes = allocate_planes(lv, weight, budget, C_MAX // 2, 2)
    return (2 * planes / C_MAX).astype(np.float32), np.where(mask, weight, 1.0).astype(np.float32)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 → (1, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0


def pad_to_stride(x: torch.Tensor) -> torch.Tensor:
    """Reflect-pad H and W (bottom/right) up to a multiple of ``STRIDE``."""
    h, w = x.shape[2:]
    ph, pw = -h % STRIDE, -w % STRIDE
    return F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two [0, 1] tensors after rounding to 8 bits."""
    a = torch.round(a.clamp(0, 1) * 255)
    b = torch.round(b.clamp(0, 1) * 255)
    mse = torch.mean((a - b) ** 2).item()
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-10))


@torch.no_grad()
def validate(model: DeepJSCC, val: list[tuple[str, np.ndarray]], snrs=VAL_SNRS, seed: int = 1234) -> dict:
    """Mean PSNR over ``val`` for every (channel count, SNR), fixed noise seed."""
    model.eval()
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    res = {}
    for c in CHANNELS:
        for snr in snrs:
            vals = []
            for _, img in val:
                x = to_tensor(img)
                s = torch.full((1, 1), snr)
                y = model(pad_to_stride(x), s, s, torch.tensor([c]))
                vals.append(psnr(y[:, :, :x.shape[2], :x.shape[3]], x))
            res[(c, snr)] = float(np.mean(vals))
    for weight in (1.0, 4.0):  # a centred ellipse as critical region, 16 planes per block on average, 5 dB
        vin, vout = [], []
        for _, img in val:
            x = pad_to_stride(to_tensor(img))
            hh, ww = x.shape[2:]
            y, xx = np.mgrid[0:hh, 0:ww] + 0.5
            mask = ((y - hh / 2) / (hh / 4)) ** 2 + ((xx - ww / 2) / (ww / 4)) ** 2 <= 1
            lv = block_levels(mask, STRIDE, 2)
            planes = allocate_planes(lv, weight, 16 * lv.size, C_MAX // 2, 2)
            alloc = torch.from_numpy((2 * planes / C_MAX).astype(np.float32))[None, None]
            s = torch.full((1, 1), 5.0)
            out = model(x, s, s, alloc=alloc)
            m = torch.from_numpy(mask)
            vin.append(psnr(out[..., m], x[..., m]))
            vout.append(psnr(out[..., ~m], x[..., ~m]))
        res[("in", weight)], res[("bg", weight)] = float(np.mean(vin)), float(np.mean(vout))
    torch.set_rng_state(gen_state)
    model.train()
    return res


def format_val(res: dict) -> str:
    """One log line of ``validate`` results."""
    return "  ".join(f"ρ=1/{round(1 / rho_of(c))}@{snr:g}dB {v:.2f}" if isinstance(c, int)
                     else f"{c}@w{snr:g},5dB {v:.2f}" for (c, snr), v in res.items())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder of training photos (e.g. the Sun-Hays 80 scene photos)")
    ap.add_argument("--val", required=True, help="folder of validation photos (e.g. Set5)")
    ap.add_argument("--work", default="out/jscc", help="checkpoint and log folder (resumes from it)")
    ap.add_argument("--steps", type=int, default=4000, help="optimizer steps (cosine schedule length)")
    ap.add_argument("--crop", type=int, default=128, help="training crop size (multiple of 8)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--snr-jitter", type=float, default=0.5, help="± dB error on the decoder's SNR input")
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--importance-frac", type=float, default=0.5,
                    help="share of samples with an importance allocation (the rest uniform c)")
    ap.add_argument("--masks", default="",
                    help="critical-region masks of the training photos (python -m semcom.train.guidance_masks)")
    ap.add_argument("--guidance-frac", type=float, default=0.5,
                    help="with --masks: share of importance samples whose region is the patch's guidance mask "
                         "(when it covers 2–80 %% of the patch; a random region otherwise)")
    ap.add_argument("--refine", action="store_true",
                    help="decoder with Refine blocks at 1/4 and 1/2 resolution (zero-initialised: with --init "
                         "from a model without them, training starts from the same outputs)")
    ap.add_argument("--attn", action="store_true",
                    help="GuideAttn cross-attention (image features ↔ allocation map) in encoder and decoder "
                         "(zero-initialised like --refine)")
    ap.add_argument("--init", default="", help="start from this checkpoint's weights (fresh optimiser)")
    args = ap.parse_args(argv)
    if args.crop % STRIDE:
        ap.error(f"--crop must be a multiple of {STRIDE}")

    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    ckpt_path = os.path.join(args.work, "ckpt.pt")
    log_path = os.path.join(args.work, "train.log")

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    photos = load_folder(args.data)
    masks = None
    if args.masks:
        from .guidance_masks import load_masks

        table = load_masks(args.masks)
        masks = [table.get(name, []) for name, _ in photos]
        print(f"{sum(map(len, masks))} guidance masks for {sum(1 for m in masks if m)} of {len(photos)} photos")
    train = CropSampler([img for _, img in photos], args.crop, rng, masks)
    val = load_folder(args.val)

    model = DeepJSCC(refine=args.refine, attn=args.attn)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    warmup = min(100, args.steps // 10)

    def lr_at(step):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))

    step, elapsed = 0, 0.0
    if args.init and not os.path.exists(ckpt_path):
        missing, unexpected = model.load_state_dict(torch.load(args.init, weights_only=False)["model"], strict=False)
        print(f"initialised from {args.init}; new layers: {len(missing)} tensors, dropped: {len(unexpected)}")
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, elapsed = ck["step"], ck.get("elapsed_s", 0.0)
        torch.set_rng_state(ck["torch_rng"])
        rng.bit_generator.state = ck["np_rng"]
        print(f"resumed from {ckpt_path} at step {step}")

    def save():
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "elapsed_s": elapsed, "args": vars(args), "torch_rng": torch.get_rng_state(),
                    "np_rng": rng.bit_generator.state, "c_max": C_MAX}, ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)

    def log(msg):
        with open(log_path, "a") as f:
            f.write(msg + "\n")
        tqdm.write(msg)

    log(f"start step {step}/{args.steps} {vars(args)} params {sum(p.numel() for p in model.parameters())}")
    choices = torch.tensor(CHANNELS)
    model.train()
    bar = tqdm(total=args.steps, initial=step, unit="step", dynamic_ncols=True)
    t0 = time.time() - elapsed
    ema = None
    while step < args.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, crops = train.batch(args.batch)
        snr_tx = torch.empty(args.batch, 1).uniform_(*SNR_RANGE)
        snr_rx = snr_tx + torch.empty_like(snr_tx).uniform_(-args.snr_jitter, args.snr_jitter)
        c = choices[torch.randint(len(CHANNELS), (args.batch,))]
        h8 = args.crop // STRIDE
        alloc = (c.float() / C_MAX)[:, None, None, None].repeat(1, 1, h8, h8)
        wmap = torch.ones(args.batch, 1, args.crop, args.crop)
        for i in np.flatnonzero(rng.random(args.batch) < args.importance_frac):
            m = crops[i]
            use = m is not None and 0.02 <= m.mean() <= 0.8 and rng.random() < args.guidance_frac
            a, wpix = importance_sample(args.crop, rng, m if use else None)
            alloc[i, 0], wmap[i, 0] = torch.from_numpy(a), torch.from_numpy(wpix)
        err = (model(x, snr_tx, snr_rx, alloc=alloc) - x) ** 2
        loss = (err * wmap).mean() / wmap.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.5f}", psnr=f"{10 * math.log10(1 / ema):.2f}", lr=f"{lr_at(step):.1e}")
        if step % args.val_every == 0 or step == args.steps:
            elapsed = time.time() - t0
            res = validate(model, val)
            log(f"step {step} train_psnr {10 * math.log10(1 / ema):.2f} elapsed {elapsed / 60:.1f} min | val {format_val(res)}")
            save()
    bar.close()
    log(f"done: {step} steps in {(time.time() - t0) / 60:.1f} min → {ckpt_path}")


if __name__ == "__main__":
    main()
