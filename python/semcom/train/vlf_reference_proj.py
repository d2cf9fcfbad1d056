"""Train the VLF → text-encoder-space projection of the VLF-MSC reference image decoder.

The reference tier's image decoder is Stable Diffusion 1.5 conditioned on the received
vision-language feature (VLF, BLIP-2's N = 32 Q-Former query states of d = 768) instead of a
text prompt. Everything in that path is a frozen pretrained model except the map that puts the
VLF where SD's U-Net expects its cross-attention context, :class:`VlfTextProjection`::

    context = LN_clip(W ỹ + b)        ỹ: [N, d] received VLF  →  context: [N, C]

``W, b`` (d → C, C = the CLIP text encoder's hidden size, 768 for SD 1.5) are trained;
``LN_clip`` is a frozen copy of the CLIP text encoder's final layer norm. SD 1.5's U-Net was
trained on contexts that are the output of exactly that layer norm (its ``last_hidden_state``),
so the frozen norm puts every projected query token on the per-token statistics (including
CLIP's uneven per-channel gains) that the cross-attention was trained on, and the linear map
only has to choose directions. The N query tokens stay N context tokens (L = N: no padding to
77 and no text prompt), one key/value per query in every cross-attention layer at every
denoising step.

Objective: the latent-diffusion loss with everything else frozen (the VAE encoder, the U-Net,
BLIP-2). For an image x: z0 = scaling_factor · VAE(x), t ~ U{0 … T−1}, ε ~ N(0, I),
z_t = √ᾱ_t z0 + √(1−ᾱ_t) ε, and

    loss = ‖ε − ε_θ(z_t, t, LN_clip(W ỹ + b))‖²     (prediction_type "v_prediction": v target)

where ỹ is the VLF of x after the analog link at an SNR drawn uniformly from [−7.5, 12.5] dB
(:func:`vlf_channel_noise`, the model the receiver sees). This is the objective of a
VLF-conditioned latent diffusion model: the paper's image decoder draws the image from the
received feature alone, so the condition is learnt from images, not from captions; matching
CLIP text states of a caption would need captions and would tie the 32 query tokens to 77 text
positions they do not correspond to.

Run (CUDA when available)::

    python -m gnuradio.semcom.train.vlf_reference_proj --blip2 BLIP2_DIR --sd SD15_DIR \
        --images IMAGE_DIR --steps 20000 --batch-size 16 --out vlf_proj.pt

and export with ``python -m gnuradio.semcom.train.export_vlf_reference … --proj vlf_proj.pt``.
See docs/vlf_reference.md.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time

import numpy as np
import torch
from torch import nn

SNR_RANGE_DB = (-7.5, 12.5)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

__all__ = ["VlfTextProjection", "vlf_channel_noise", "train_projection", "load_projection", "save_projection",
           "SNR_RANGE_DB"]


class VlfTextProjection(nn.Module):
    """``context = LN(W v + b)``: the VLF [B, N, d] → SD text-encoder space [B, N, C].

    ``layer_norm``: the CLIP text encoder's ``final_layer_norm`` (copied and frozen); None
    builds a plain LayerNorm(C) (gain 1, bias 0; for a checkpoint about to be loaded).
    The linear map starts as the identity when d == C (the VLF unchanged, then the CLIP norm),
    otherwise with ``nn.Linear``'s default initialisation under ``torch.manual_seed(seed)``.
    """

    def __init__(self, vlf_dim: int, text_dim: int, layer_norm: nn.LayerNorm | None = None, seed: int = 0):
        super().__init__()
        self.vlf_dim, self.text_dim = int(vlf_dim), int(text_dim)
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Linear(self.vlf_dim, self.text_dim)
        with torch.no_grad():
            if self.vlf_dim == self.text_dim:
                self.proj.weight.copy_(torch.eye(self.text_dim))
            else:
                bound = 1.0 / math.sqrt(self.vlf_dim)
                self.proj.weight.uniform_(-bound, bound, generator=g)
            self.proj.bias.zero_()
        eps = layer_norm.eps if layer_norm is not None else 1e-5
        self.norm = nn.LayerNorm(self.text_dim, eps=eps)
        if layer_norm is not None:
            if tuple(layer_norm.normalized_shape) != (self.text_dim,):
                raise ValueError(f"text encoder layer norm is over {tuple(layer_norm.normalized_shape)}, "
                                 f"expected ({self.text_dim},)")
            self.norm.load_state_dict({k: v.detach().float().cpu() for k, v in layer_norm.state_dict().items()})
        self.norm.requires_grad_(False)

    @classmethod
    def from_text_encoder(cls, vlf_dim: int, text_encoder, seed: int = 0) -> "VlfTextProjection":
        """Projection into the space of a ``transformers.CLIPTextModel`` (its final layer norm)."""
        text = getattr(text_encoder, "text_model", text_encoder)  # transformers < 5 wraps the text model
        return cls(vlf_dim, text_encoder.config.hidden_size, text.final_layer_norm, seed)

    def forward(self, vlf: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(vlf))

    def config(self) -> dict:
        return {"vlf_dim": self.vlf_dim, "text_dim": self.text_dim, "eps": self.norm.eps}


def save_projection(proj: VlfTextProjection, path, **info) -> None:
    """Checkpoint: ``{"state_dict", "config", **info}`` (torch.save)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in proj.state_dict().items()},
                "config": proj.config(), **info}, str(path))


def load_projection(path) -> tuple[VlfTextProjection, dict]:
    """The projection stored by :func:`save_projection` and the checkpoint's other fields."""
    ck = torch.load(str(path), map_location="cpu", weights_only=False)
    cfg = ck["config"]
    proj = VlfTextProjection(cfg["vlf_dim"], cfg["text_dim"])
    proj.norm.eps = float(cfg.get("eps", 1e-5))
    proj.load_state_dict(ck["state_dict"])
    return proj.eval(), {k: v for k, v in ck.items() if k not in ("state_dict", "config")}


def vlf_channel_noise(v: torch.Tensor, snr_db, generator: torch.Generator | None = None) -> torch.Tensor:
    """The VLF the receiver gets: ``ỹ = (v + √P·n) / (1 + σ²)``.

    The analog link: v [B, N, d] flattened, pairs of reals → one complex symbol, scaled to unit
    mean power (P = 2·mean(v²) per image, the mean complex-symbol power), complex AWGN
    CN(0, σ²) with σ² = 10^(−SNR/10) (Es/N0 per complex channel use), the scale undone, then
    the LMMSE shrink 1/(1 + σ²). ``snr_db``: a number or a tensor [B] (one SNR per image).
    """
    b = v.shape[0]
    snr = torch.as_tensor(snr_db, dtype=torch.float32, device=v.device).reshape(-1)
    if snr.numel() == 1:
        snr = snr.expand(b)
    if snr.numel() != b:
        raise ValueError(f"snr_db: one value or one per image ({b}), got {snr.numel()}")
    shape = (b,) + (1,) * (v.dim() - 1)
    sigma2 = (10.0 ** (-snr / 10.0)).reshape(shape).to(v.dtype)
    power = 2.0 * v.detach().pow(2).flatten(1).mean(1).reshape(shape)
    n = torch.randn(v.shape, generator=generator, device=v.device, dtype=v.dtype) * torch.sqrt(sigma2 / 2.0)
    return (v + torch.sqrt(power) * n) / (1.0 + sigma2)


# -- data ----------------------------------------------------------------------------------

def image_folder(path):
    """RGB uint8 arrays of every image file under ``path`` (sorted, recursive)."""
    from PIL import Image

    files = sorted(p for p in pathlib.Path(path).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {path}")

    class Folder:
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            with Image.open(files[i]) as im:
                return np.asarray(im.convert("RGB"))

    return Folder()


def scene_images(n: int, size: int = 256):
    """``n`` images of the training split of ``semcom.datasets.scenes`` (the synthetic benchmark)."""
    try:
        from ..datasets import scenes
    except ImportError as e:
        raise ImportError(f"semcom.datasets.scenes is not available ({e}); pass --images DIR") from None
    return [item.image for item in scenes.dataset("train", n=n, size=size)]


def _batch(images, idx, size, device):
    """uint8/float HxWx3 images → float32 [B, 3, size, size] in [0, 1] (centre square crop,
    bicubic antialiased resize)."""
    out = []
    for i in idx:
        a = np.asarray(images[int(i)])
        x = torch.from_numpy(np.array(a)).float()  # a copy: images may be read-only views
        if a.dtype == np.uint8:
            x = x / 255.0
        if x.dim() == 2:
            x = x[..., None].expand(-1, -1, 3)
        x = x[..., :3].permute(2, 0, 1)[None]
        h, w = x.shape[-2:]
        if h != w:  # centre square crop, then resize (no aspect distortion)
            m = min(h, w)
            x = x[..., (h - m) // 2:(h - m) // 2 + m, (w - m) // 2:(w - m) // 2 + m]
        if x.shape[-2:] != (size, size):
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", antialias=True,
                                                align_corners=False)
        out.append(x.clamp(0, 1))
    return torch.cat(out).to(device)


# -- training ------------------------------------------------------------------------------

def train_projection(blip2, sd, images, *, steps: int = 1000, batch_size: int = 8, lr: float = 1e-4,
                     snr_db=SNR_RANGE_DB, device: str | None = None, seed: int = 0, proj=None,
                     weight_decay: float = 0.0, log_every: int = 50, log=print, fp16: bool = False):
    """Train :class:`VlfTextProjection` with the diffusion loss (module docstring).

    ``blip2``: a BLIP-2 checkpoint directory or a loaded ``Blip2ForConditionalGeneration``;
    ``sd``: an SD 1.5 (diffusers layout) directory or a dict with ``unet``, ``vae``,
    ``text_encoder`` and ``scheduler`` (a diffusers scheduler or its config dict), as for
    ``export_vlf_reference``. ``images``: a sequence of RGB images (uint8 HxWx3 or float in
    [0, 1]). ``device``: "cuda" when available by default. ``fp16``: frozen models in half
    precision on CUDA (the projection and its optimiser stay float32).
    Returns ``(projection (eval, CPU), history)`` with ``history["loss"]`` per step.
    """
    from diffusers import DDPMScheduler

    from .export_vlf_reference import VlfEncoder, load_blip2, load_sd

    torch.manual_seed(seed)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if fp16 and device.startswith("cuda") else torch.float32
    b2 = load_blip2(blip2, device=device, dtype=dtype)
    parts = load_sd(sd, device=device, dtype=dtype)
    unet, vae = parts["unet"], parts["vae"]
    if vae.config.get("force_upcast", False) and dtype != torch.float32:
        vae = vae.float()
    encoder = VlfEncoder(b2["model"], b2["mean"], b2["std"], b2["image_size"]).to(device).eval()
    vlf_dim, blip_size = b2["dim"], b2["image_size"]
    if not isinstance(blip2, nn.Module):  # loaded here: drop the LM, only the ViT and Q-Former are used
        b2["model"].language_model = None
    b2 = None
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    for m in (encoder, unet, vae):
        m.requires_grad_(False)
    if proj is None:
        if parts["text_encoder"] is None:
            raise ValueError("a new projection needs SD's text_encoder (its final layer norm)")
        proj = VlfTextProjection.from_text_encoder(vlf_dim, parts["text_encoder"], seed=seed)
    proj = proj.to(device).float().train()
    proj.norm.requires_grad_(False)
    noise_sched = DDPMScheduler.from_config(parts["scheduler_config"])
    pred_type = noise_sched.config.prediction_type
    sf = float(vae.config.scaling_factor)
    vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    sd_size = int(unet.config.sample_size) * vae_factor
    opt = torch.optim.AdamW([p for p in proj.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    n = len(images)
    if n == 0:
        raise ValueError("no training images")
    g = torch.Generator().manual_seed(seed)
    lo, hi = float(snr_db[0]), float(snr_db[1])
    history = {"loss": [], "snr_db": [lo, hi], "device": device, "objective": f"diffusion ({pred_type})"}
    t0 = time.monotonic()
    for step in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=g)
        with torch.no_grad():
            x_blip = _batch(images, idx, blip_size, device)
            x_sd = _batch(images, idx, sd_size, device)
            v = encoder(x_blip).float()
            snr = lo + (hi - lo) * torch.rand(batch_size, generator=g)
            y = vlf_channel_noise(v, snr.to(device))
            z0 = vae.encode((x_sd * 2 - 1).to(vae.dtype)).latent_dist.sample() * sf
            z0 = z0.to(dtype)
            eps = torch.randn(z0.shape, generator=g).to(device, dtype)
            t = torch.randint(0, noise_sched.config.num_train_timesteps, (batch_size,), generator=g).to(device)
            zt = noise_sched.add_noise(z0, eps, t)
            target = eps if pred_type == "epsilon" else noise_sched.get_velocity(z0, eps, t)
        ctx = proj(y)
        pred = unet(zt, t, encoder_hidden_states=ctx.to(dtype)).sample
        loss = torch.nn.functional.mse_loss(pred.float(), target.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history["loss"].append(float(loss.detach()))
        if log and (step % max(1, log_every) == 0 or step == steps - 1):
            log(f"step {step + 1}/{steps} loss {history['loss'][-1]:.4f} ({time.monotonic() - t0:.0f} s)")
    history["seconds"] = time.monotonic() - t0
    return proj.cpu().eval(), history


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gnuradio.semcom.train.vlf_reference_proj",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--blip2", required=True, help="local BLIP-2 checkpoint directory (e.g. blip2-opt-2.7b)")
    ap.add_argument("--sd", required=True, help="local Stable Diffusion 1.5 directory (diffusers layout)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of training images (searched recursively)")
    src.add_argument("--scenes", type=int, help="use N images of the synthetic scenes training split")
    ap.add_argument("--out", required=True, help="checkpoint file to write (torch)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--snr-min", type=float, default=SNR_RANGE_DB[0], help="lowest training SNR [dB]")
    ap.add_argument("--snr-max", type=float, default=SNR_RANGE_DB[1], help="highest training SNR [dB]")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--fp16", action="store_true", help="frozen models in float16 (CUDA only)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=50)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    images = image_folder(args.images) if args.images else scene_images(args.scenes)
    proj, hist = train_projection(args.blip2, args.sd, images, steps=args.steps, batch_size=args.batch_size,
                                  lr=args.lr, snr_db=(args.snr_min, args.snr_max), device=args.device,
                                  seed=args.seed, weight_decay=args.weight_decay, log_every=args.log_every,
                                  fp16=args.fp16)
    save_projection(proj, args.out, history=hist,
                    training={"images": args.images or f"scenes train split, {args.scenes} images",
                              "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                              "snr_db": [args.snr_min, args.snr_max], "seed": args.seed,
                              "blip2": pathlib.Path(args.blip2).name, "sd": pathlib.Path(args.sd).name})
    print(f"wrote {args.out}: final loss {hist['loss'][-1]:.4f} after {args.steps} steps ({hist['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
