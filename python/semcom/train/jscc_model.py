"""The SNR-adaptive deep JSCC network (torch): encoder, AWGN channel, decoder.

Fully convolutional with stride 8: an image (B, 3, H, W) in [0, 1], H and W multiples of 8,
maps to a latent (B, C_MAX, H/8, W/8). Channels ``2k`` and ``2k+1`` of the latent form the
real and imaginary parts of complex symbol plane ``k``; sending only the first ``c``
channels gives ``c·H·W/128`` complex channel uses, ρ = c / 384 (ordered latent: one model
serves every rate, the decoder sees zeros for the channels that were not sent).

SNR (and rate) conditioning uses attention-feature (AF) modules in the style of ADJSCC
(Xu et al., 2021): global average pooling of a feature map, concatenated with the SNR and
the rate, goes through a small MLP and a sigmoid that rescales every channel. The encoder is
fed the transmitter's CSI SNR, the decoder the SNR the receiver estimated.

Spatial allocation (importance-aware coding, MLLM-SC): the number of channels sent may
differ per 8×8 block. Both halves get the allocation map ``alloc`` (B, 1, H/8, W/8) =
channels sent at each block / C_MAX, and spatial modulation (SM) modules at 1/8 resolution
turn it into a per-position scale and shift of the features (FiLM; zero-initialised, so a
model trained without them starts unchanged). A uniform map is the plain codec.
"""
from __future__ import annotations

import torch
from torch import nn

STRIDE = 8
C_MAX = 64
#: channel counts the codec offers, largest first: ρ = c / 384 → 1/6, 1/12, 1/24
CHANNELS = (64, 32, 16)
SNR_SCALE = 10.0  # the AF modules see snr_db / SNR_SCALE
POS_PERIODS = (4.0, 16.0, 64.0)  # GuideAttn position code periods, in latent blocks


def rho_of(c: int) -> float:
    """Bandwidth ratio of sending ``c`` latent channels (complex uses / 3·H·W)."""
    return c / (2.0 * 3.0 * STRIDE * STRIDE)


def _act():
    return nn.LeakyReLU(0.1)


class AF(nn.Module):
    """Attention-feature module: channel scaling from pooled features, SNR and rate."""

    def __init__(self, ch: int, hidden: int = 32):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(ch + 2, hidden), nn.ReLU(), nn.Linear(hidden, ch), nn.Sigmoid())

    def forward(self, x, cond):
        """``x`` (B, C, H, W); ``cond`` (B, 2) = [snr_db / SNR_SCALE, rate]."""
        ctx = torch.cat([x.mean(dim=(2, 3)), cond], dim=1)
        return x * self.mlp(ctx)[:, :, None, None]


class SM(nn.Module):
    """Spatial modulation: per-position FiLM of features from the allocation map."""

    def __init__(self, ch: int, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, hidden, 3, padding=1), nn.LeakyReLU(0.1),
                                 nn.Conv2d(hidden, 2 * ch, 3, padding=1))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, x, alloc):
        """``x`` (B, C, h, w); ``alloc`` (B, 1, h, w) = channels sent / C_MAX per block."""
        g, b = self.net(alloc).chunk(2, dim=1)
        return x * (1.0 + g) + b


class RepConv(nn.Module):
    """3×3 conv trained as three parallel branches: 3×3 conv + 1×1 conv (+ identity).

    Over-parameterised while training (RepVGG, Ding et al., 2021: easier optimisation of
    plain conv stacks); all branches are linear, so ``fused()`` folds them into one 3×3
    conv with identical output. The ONNX export uses the fused form.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.k3 = nn.Conv2d(cin, cout, 3, padding=1)
        self.k1 = nn.Conv2d(cin, cout, 1, bias=False)
        self.identity = cin == cout

    def forward(self, x):
        y = self.k3(x) + self.k1(x)
        return y + x if self.identity else y

    def fused(self) -> nn.Conv2d:
        """One 3×3 conv equal to the sum of the branches."""
        conv = nn.Conv2d(self.k3.in_channels, self.k3.out_channels, 3, padding=1)
        w = self.k3.weight.detach().clone()
        w[:, :, 1:2, 1:2] += self.k1.weight.detach()
        if self.identity:
            w[:, :, 1, 1] += torch.eye(w.shape[0], dtype=w.dtype)
        conv.weight.data.copy_(w)
        conv.bias.data.copy_(self.k3.bias.detach())
        return conv


def fuse_repconvs(module: nn.Module) -> nn.Module:
    """Replace every ``RepConv`` in ``module`` (in place) by its fused 3×3 conv; returns it."""
    for name, child in module.named_children():
        if isinstance(child, RepConv):
            setattr(module, name, child.fused())
        else:
            fuse_repconvs(child)
    return module


class ResBlock(nn.Module):
    """conv3×3 → act → conv3×3, plus the input, then act (convs are ``RepConv``)."""

    def __init__(self, ch: int):
        super().__init__()
        self.c1 = RepConv(ch, ch)
        self.c2 = RepConv(ch, ch)
        self.a1 = _act()
        self.a2 = _act()

    def forward(self, x):
        return self.a2(x + self.c2(self.a1(self.c1(x))))


class Up(nn.Module):
    """Sub-pixel ×2 upsampling: conv3×3 to 4·out channels, activation, pixel shuffle.

    The (element-wise) activation runs before the shuffle, so that ONNX Runtime fuses it
    into the conv.
    """

    def __init__(self, cin: int, cout: int, act: nn.Module | None = None):
        super().__init__()
        self.conv = RepConv(cin, 4 * cout)
        self.act = _act() if act is None else act
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.act(self.conv(x)))


class Refine(nn.Module):
    """Residual refinement ``x + conv3×3(act(conv3×3(x)))`` whose last conv starts at zero, so
    adding it to a trained decoder leaves the decoder's output unchanged until it trains."""

    def __init__(self, ch: int):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.act = _act()
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.c2.weight)
        nn.init.zeros_(self.c2.bias)

    def forward(self, x):
        return x + self.c2(self.act(self.c1(x)))


def _pos_code(h, w, step: float, like: torch.Tensor) -> torch.Tensor:
    """(1, 4·len(POS_PERIODS), h, w) sin/cos code of grid positions ``(i + ½)·step`` in latent blocks."""
    per = torch.tensor(POS_PERIODS, dtype=like.dtype, device=like.device)[:, None]
    ay = 2 * torch.pi * ((torch.arange(h, dtype=like.dtype, device=like.device) + 0.5) * step)[None, :] / per
    ax = 2 * torch.pi * ((torch.arange(w, dtype=like.dtype, device=like.device) + 0.5) * step)[None, :] / per
    cy = torch.cat([ay.sin(), ay.cos()], dim=0)[:, :, None].expand(-1, -1, w)  # (2P, h, w)
    cx = torch.cat([ax.sin(), ax.cos()], dim=0)[:, None, :].expand(-1, h, -1)
    return torch.cat([cy, cx], dim=0)[None]


class GuideAttn(nn.Module):
    """Cross-attention between image features and the guidance (allocation) map.

    Queries: every latent position's features, its allocation and position. Keys/values: one
    token per map region of ``pool``×``pool`` latent blocks (32 px, the importance map's
    block): the region's mean features and mean allocation, and its position; the attention
    logits get a learned bias ``γ·alloc`` per key, so regions with more channel uses can draw
    attention. The result is added to the features through a zero-initialised projection
    (a model trained without it starts with identical output). Positions are sin/cos codes in
    latent-block units (periods ``POS_PERIODS``), so any image size works. Projections are
    1×1 convs (their weights keep their names through the ONNX export).
    """

    def __init__(self, ch: int, dim: int = 64, heads: int = 2, pool: int = 4):
        super().__init__()
        npe = 4 * len(POS_PERIODS)
        self.heads, self.pool = heads, pool
        self.q = nn.Conv2d(ch + 1 + npe, dim, 1)
        self.k = nn.Conv2d(ch + 1 + npe, dim, 1)
        self.v = nn.Conv2d(ch + 1, dim, 1)
        self.gamma = nn.Parameter(torch.zeros(1, heads, 1, 1))
        self.proj = nn.Conv2d(dim, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x, alloc):
        """``x`` (B, C, h, w); ``alloc`` (B, 1, h, w) → (B, C, h, w)."""
        b, c, h, w = x.shape
        xa = torch.cat([x, alloc], dim=1)
        reg = nn.functional.avg_pool2d(xa, self.pool, self.pool, ceil_mode=True)
        hp, wp = reg.shape[2], reg.shape[3]
        nh = self.heads
        q = self.q(torch.cat([xa, _pos_code(h, w, 1.0, x).expand(b, -1, -1, -1)], dim=1))
        k = self.k(torch.cat([reg, _pos_code(hp, wp, float(self.pool), x).expand(b, -1, -1, -1)], dim=1))
        v = self.v(reg)
        q = q.reshape(b, nh, -1, h * w).transpose(2, 3)  # (B, heads, h·w, d)
        k = k.reshape(b, nh, -1, hp * wp)  # (B, heads, d, n)
        v = v.reshape(b, nh, -1, hp * wp).transpose(2, 3)  # (B, heads, n, d)
        logits = q @ k / (q.shape[-1] ** 0.5) + self.gamma * reg[:, c:].reshape(b, 1, 1, hp * wp)
        y = (logits.softmax(dim=-1) @ v).transpose(2, 3).reshape(b, -1, h, w)
        return x + self.proj(y)


def _cond(snr_db, rate):
    return torch.cat([snr_db / SNR_SCALE, rate], dim=1)


class Encoder(nn.Module):
    """image (B,3,H,W) in [0,1], snr_db (B,1), rate (B,1) = mean channels sent / C_MAX,
    alloc (B,1,H/8,W/8) = channels sent per block / C_MAX → latent (B,C_MAX,H/8,W/8)."""

    def __init__(self, widths=(32, 64, 96), c_max: int = C_MAX, attn: bool = False):
        super().__init__()
        w1, w2, w3 = widths
        self.attn = bool(attn)
        if self.attn:
            self.ga = GuideAttn(w3)
        self.d1 = nn.Sequential(nn.Conv2d(3, w1, 5, stride=2, padding=2), _act())
        self.d2 = nn.Sequential(nn.Conv2d(w1, w2, 5, stride=2, padding=2), _act())
        self.af2 = AF(w2)
        self.d3 = nn.Sequential(nn.Conv2d(w2, w3, 5, stride=2, padding=2), _act())
        self.res1 = ResBlock(w3)
        self.af3 = AF(w3)
        self.res2 = ResBlock(w3)
        self.af4 = AF(w3)
        self.sm3 = SM(w3)
        self.sm4 = SM(w3)
        self.out = RepConv(w3, c_max)

    def forward(self, image, snr_db, rate, alloc):
        cond = _cond(snr_db, rate)
        x = self.af2(self.d2(self.d1(image * 2.0 - 1.0)), cond)
        x = self.sm3(self.af3(self.res1(self.d3(x)), cond), alloc)
        x = self.sm4(self.af4(self.res2(x), cond), alloc)
        if self.attn:
            x = self.ga(x, alloc)
        return self.out(x)


class Decoder(nn.Module):
    """noisy latent (B,C_MAX,h,w) zero beyond the sent channels, snr_db, rate, alloc → image in [0,1].

    ``refine``: a ``Refine`` block after each of the first two upsamplers (1/4 and 1/2 resolution)."""

    def __init__(self, widths=(32, 64, 96), c_max: int = C_MAX, refine: bool = False, attn: bool = False):
        super().__init__()
        w1, w2, w3 = widths
        self.attn = bool(attn)
        if self.attn:
            self.ga = GuideAttn(w3)
        self.inp = nn.Sequential(RepConv(c_max, w3), _act())
        self.af1 = AF(w3)
        self.res1 = ResBlock(w3)
        self.af2 = AF(w3)
        self.res2 = ResBlock(w3)
        self.af3 = AF(w3)
        self.sm1 = SM(w3)
        self.sm2 = SM(w3)
        self.u1 = Up(w3, w2)
        self.af4 = AF(w2)
        self.u2 = Up(w2, w1)
        self.u3 = Up(w1, 3, act=nn.Sigmoid())
        self.refine = bool(refine)
        if self.refine:
            self.r1 = Refine(w2)
            self.r2 = Refine(w1)

    def forward(self, latent, snr_db, rate, alloc):
        cond = _cond(snr_db, rate)
        x = self.sm1(self.af1(self.inp(latent), cond), alloc)
        if self.attn:
            x = self.ga(x, alloc)
        x = self.sm2(self.af2(self.res1(x), cond), alloc)
        x = self.af3(self.res2(x), cond)
        x = self.af4(self.u1(x), cond)
        if self.refine:
            return self.u3(self.r2(self.u2(self.r1(x))))
        return self.u3(self.u2(x))


def alloc_mask(alloc: torch.Tensor, c_max: int = C_MAX) -> torch.Tensor:
    """(B, 1, h, w) allocation map (channels sent / C_MAX) → (B, C_MAX, h, w) mask of sent channels."""
    idx = torch.arange(c_max, device=alloc.device, dtype=alloc.dtype)[None, :, None, None]
    return (idx < torch.round(alloc * c_max)).float()


def power_normalize(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scale the sent channels of each latent to unit mean power per complex symbol.

    Complex symbols are channel pairs, so unit power per symbol is a mean square of 1/2 per
    real value. Channels outside ``mask`` come out zero.
    """
    zm = z * mask
    n = mask.expand_as(z).sum(dim=(1, 2, 3), keepdim=True)
    p = zm.pow(2).sum(dim=(1, 2, 3), keepdim=True) / n
    return zm / torch.sqrt(2.0 * p + 1e-12)


def awgn(z: torch.Tensor, snr_db: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Add CN(0, σ²) per complex symbol (σ²/2 per real part), σ² = 10^(-SNR/10), on the sent channels."""
    sigma2 = torch.pow(10.0, -snr_db / 10.0)[:, :, None, None]
    return z + torch.randn_like(z) * torch.sqrt(sigma2 / 2.0) * mask


class DeepJSCC(nn.Module):
    """Encoder + power normalisation + AWGN + decoder, for training and validation."""

    def __init__(self, widths=(32, 64, 96), c_max: int = C_MAX, refine: bool = False, attn: bool = False):
        super().__init__()
        self.c_max = c_max
        self.encoder = Encoder(widths, c_max, attn)
        self.decoder = Decoder(widths, c_max, refine, attn)

    def forward(self, image, snr_tx, snr_rx, c=None, alloc=None):
        """``snr_tx``/``snr_rx`` (B,1) dB: channel SNR seen by the encoder / told to the decoder;
        ``c`` (B,) channel counts (uniform) or ``alloc`` (B,1,H/8,W/8) channels per block /
        C_MAX. The channel itself runs at ``snr_tx``."""
        if alloc is None:
            h8, w8 = image.shape[2] // STRIDE, image.shape[3] // STRIDE
            alloc = (c.float() / self.c_max)[:, None, None, None].expand(-1, 1, h8, w8)
        rate = alloc.mean(dim=(1, 2, 3))[:, None]
        mask = alloc_mask(alloc, self.c_max)
        z = power_normalize(self.encoder(image, snr_tx, rate, alloc), mask)
        y = awgn(z, snr_tx, mask)
        return self.decoder(y, snr_rx, rate, alloc)
