"""Importance-aware dual-path deep JSCC (MLLM-SC): more channel uses where the question looks.

The deep JSCC's latent is *ordered*: at each 8×8 block the first latent channels carry the
coarse content and later ones the detail (``docs/jscc.md``). This codec sends a different
number of symbol planes (1 plane = 2 latent channels = 1 complex symbol) at each block:

* **High-fidelity path** — blocks of the critical region get ``weight`` times the planes of
* **lightweight path** — background blocks, under **one fixed channel-use budget**
  ``round(ρ·3·H·W)`` that also pays for the importance map sent as side information.

Allocation (``allocate_planes``, run identically by TX and RX): importance levels
ℓ(b) ∈ {0 … L−1} per block (L = ``levels``; 2 = critical/background) get relative shares
a(ℓ) = 1 + (weight − 1)·ℓ/(L − 1); planes n(b) = a(ℓ(b))·n₀ with n₀ set so that Σ n(b)
equals the payload budget, water-filled so no block exceeds the model's ``c_max/2`` planes
(what a capped block cannot take goes to the others) and at least one plane per block;
then rounded to integers by largest remainder (ties in raster order) so the sum is exact.
The levels come from the guidance heatmap averaged over map blocks of ``map_block`` pixels
(32 by default, i.e. 4×4 latent blocks; 8, 16 or 32) (``block_levels``): level = ⌊mean heat ·
L⌋ clipped to L−1, so with L = 2 a block is critical when at least half its heat is on; every
8×8 latent block takes its map block's level. Guidance maps are coarse anyway (the embedded
segmenter's class maps have a stride of 32 input pixels), and the map is paid for in channel
uses: for the shipped cases at 256×256 it costs 896–960 uses (incl. the 12 fixed bytes, 608
uses) with 32-pixel blocks, 1120–1984 with 16 and 1376–4416 with 8, of a 16 384-use budget.

Symbol layout: plane k of every block that has more than k planes, blocks in raster
order, plane by plane (k = 0, 1, …). Unit mean power over the sent symbols.

Side information: image size (4 bytes), payload symbols (4), weight·100 (2), levels (1),
flags (1: bit 0 = map deflated, bits 1–2 = log2(map_block / 8)), then the map-block levels,
⌈log2 L⌉ bits each (1 bit for two levels), raw-deflate compressed when that is shorter.
(No checksum of its own: the PHY's side-information CRC covers it.) Its channel cost is
counted as ``side_coded_len`` complex channel uses (the header's RM-coded bits at one bit
per channel use, one copy) and taken from the payload budget, so every weight (1:1
included) spends exactly the same channel uses.

``ctx`` for ``encode``: ``snr_db`` (TX CSI), ``importance`` (H×W heatmap in [0, 1] or a
boolean mask; absent → uniform), ``weight`` (≥ 1; 1 = uniform). Bad input raises
ValueError; a damaged payload is zero-filled like the plain JSCC, and one without a single
finite symbol decodes to None with ``last_status`` saying why, as there. When the map's side
information would leave less than one symbol per block (small images: the header code
spends about 5 channel uses per bit), the codec sends uniform allocation, logged.
"""
from __future__ import annotations

import logging
import math
import struct
import zlib

import numpy as np

from ..phy.header import MAX_SIDE_LEN, side_coded_len
from .base import Csi, Encoded, as_rgb_uint8, rho
from .jscc import JsccCodec, _as_ratio, _unit_power

__all__ = ["ImportanceJsccCodec", "allocate_planes", "block_levels", "side_cost"]

log = logging.getLogger("gr-semcom.codecs.importance")

_FIXED = struct.Struct(">HHIHBB")  # h, w, payload symbols, weight·100, levels, flags
FLAG_DEFLATE = 1
MAP_SCALE_SHIFT = 1  # flags bits 1-2: log2(map block / latent block)
MAP_BLOCKS = (8, 16, 32)
MAX_WEIGHT = 16.0


def block_levels(heat: np.ndarray, stride: int, levels: int) -> np.ndarray:
    """(H, W) heat in [0, 1] (or bool) → int8 levels (ceil(H/s), ceil(W/s)), mean per block."""
    heat = np.asarray(heat, np.float32)
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"importance map must be a non-empty 2-D array, got shape {heat.shape}")
    if not np.all(np.isfinite(heat)):
        raise ValueError("importance map has non-finite values")
    h, w = heat.shape
    hb, wb = -(-h // stride), -(-w // stride)
    pad = np.pad(np.clip(heat, 0, 1), ((0, hb * stride - h), (0, wb * stride - w)), mode="edge")
    mean = pad.reshape(hb, stride, wb, stride).mean(axis=(1, 3))
    return np.clip(np.floor(mean * levels), 0, levels - 1).astype(np.int8)


def allocate_planes(lv: np.ndarray, weight: float, budget: int, max_planes: int, levels: int = 2) -> np.ndarray:
    """Block levels → symbol planes per block (int, same shape), summing exactly to ``budget``."""
    lv = np.asarray(lv)
    n = lv.size
    if not (n <= budget <= n * max_planes):
        raise ValueError(f"payload budget {budget} symbols must lie in [{n}, {n * max_planes}] "
                         f"for {n} blocks (1…{max_planes} planes each)")
    share = 1.0 + (float(weight) - 1.0) * lv.astype(np.float64).ravel() / max(1, levels - 1)
    alloc = np.zeros(n)
    free = np.ones(n, bool)
    left = float(budget)
    for _ in range(n + 1):  # water-filling between 1 and max_planes planes per block
        alloc[free] = share[free] * left / share[free].sum()
        over, under = free & (alloc > max_planes), free & (alloc < 1)
        if not over.any() and not under.any():
            break
        fix = over if over.any() else under
        alloc[fix] = np.where(over[fix], max_planes, 1)
        free &= ~fix
        left = budget - alloc[~free].sum()
        if not free.any():
            break
    planes = np.floor(alloc + 1e-9).astype(np.int64)
    rest = budget - int(planes.sum())
    if rest > 0:  # largest remainder; stable sort keeps raster order among ties
        frac = np.where(planes < max_planes, alloc - planes, -1.0)
        planes[np.argsort(-frac, kind="stable")[:rest]] += 1
    return planes.reshape(lv.shape)


def _level_bits(levels: int) -> int:
    return max(1, (int(levels) - 1).bit_length())


def _pack_levels(lv: np.ndarray, levels: int) -> tuple[int, bytes]:
    """Levels → (flags, bytes): ⌈log2 levels⌉ bits per block, raw deflate when shorter."""
    nb = _level_bits(levels)
    raw = np.packbits(np.unpackbits(lv.astype(np.uint8).ravel()[:, None], axis=1)[:, -nb:].ravel()).tobytes()
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = c.compress(raw) + c.flush()
    return (FLAG_DEFLATE, packed) if len(packed) < len(raw) else (0, raw)


def _unpack_levels(flags: int, data: bytes, shape: tuple[int, int], levels: int) -> np.ndarray:
    try:
        raw = zlib.decompress(data, -15) if flags & FLAG_DEFLATE else data
    except zlib.error as e:
        raise ValueError(f"importance map in the side information does not decompress: {e}") from None
    n, nb = shape[0] * shape[1], _level_bits(levels)
    bits = np.unpackbits(np.frombuffer(raw, np.uint8))
    if bits.size < nb * n:
        raise ValueError(f"importance map has {bits.size // nb} blocks, the image needs {n}")
    codes = bits[: nb * n].reshape(n, nb) @ (1 << np.arange(nb - 1, -1, -1))
    return codes.astype(np.int8).reshape(shape)


def side_cost(side_len: int) -> int:
    """Complex channel uses charged for ``side_len`` bytes of side information."""
    return side_coded_len(side_len)


class ImportanceJsccCodec(JsccCodec):
    """Importance-aware deep JSCC; ``rate`` is the total budget ρ (side information included).

    Any ρ from 1/192 (one plane per block) up to 1/6 (every plane) works, e.g. "1/12".
    ``levels`` (2…4) importance levels per map block of ``map_block`` (8, 16, 32) pixels;
    ``weight`` is the default importance weight when ``ctx`` gives none.
    """

    codec_id = 3
    name = "importance_jscc"

    def __init__(self, rate=1 / 12, levels=2, weight=1.0, map_block=32, models_dir=None, providers=None,
                 threads=None, decoder="jscc_dec"):
        want = _as_ratio(rate)
        super().__init__(rate=1 / 12, models_dir=models_dir, providers=providers, threads=threads, decoder=decoder)
        lo, hi = 2.0 / (6.0 * self.stride ** 2), self.c_max / (6.0 * self.stride ** 2)
        if not (math.isfinite(want) and lo <= want <= hi):
            raise ValueError(f"rate {rate!r} outside what the model can send: 1/{round(1 / lo)}…1/{round(1 / hi)}")
        if int(levels) != levels or not 2 <= int(levels) <= 4:
            raise ValueError(f"levels must be 2, 3 or 4, got {levels!r}")
        if map_block not in MAP_BLOCKS or map_block % self.stride:
            raise ValueError(f"map_block must be one of {MAP_BLOCKS} pixels, got {map_block!r}")
        self.rate, self.levels, self.map_block = want, int(levels), int(map_block)
        self.weight = self._check_weight(weight)
        self.max_planes = self.c_max // 2

    @staticmethod
    def _check_weight(weight) -> float:
        w = float(weight)
        if not (math.isfinite(w) and 1.0 <= w <= MAX_WEIGHT):
            raise ValueError(f"importance weight must be in [1, {MAX_WEIGHT:g}], got {weight!r}")
        return round(w * 100) / 100

    def channel_uses(self, height: int, width: int) -> int:
        """Total channel uses (payload + side information): round(ρ·3·H·W)."""
        if height < 1 or width < 1:
            raise ValueError(f"image size {height}x{width} must be positive")
        return int(round(self.rate * 3 * height * width))

    def max_side_len(self, height: int, width: int) -> int:
        """Most side-information bytes a frame of this image size can carry."""
        h8, w8 = self._grid(height, width)  # any map block: the finest map, sent raw, is the longest
        return min(MAX_SIDE_LEN, _FIXED.size + -(-2 * h8 * w8 // 8))

    def plan(self, height: int, width: int, importance=None, weight=None) -> dict:
        """The allocation for an image: block levels, planes per block, side information."""
        w = self.weight if weight is None else self._check_weight(weight)
        grid = self._grid(height, width)
        f = self.map_block // self.stride
        coarse = np.zeros((-(-grid[0] // f), -(-grid[1] // f)), np.int8)
        if importance is not None:
            imp = np.asarray(importance)
            if imp.shape != (height, width):
                raise ValueError(f"importance map of shape {imp.shape} does not match the image {height}x{width}")
            coarse = block_levels(imp, self.map_block, self.levels)
        if w == 1.0 or coarse.min() == coarse.max():
            coarse[:] = 0  # uniform: no map to send
        lv = _expand(coarse, f, grid)
        flags, packed = _pack_levels(coarse, self.levels) if coarse.any() else (0, b"")
        flags |= (f.bit_length() - 1) << MAP_SCALE_SHIFT
        head = _FIXED.size + len(packed)
        n_blocks = lv.size
        if lv.any() and (head > MAX_SIDE_LEN or self.channel_uses(height, width) - side_cost(head) < n_blocks):
            log.warning("importance_jscc: the importance map (%d bytes) does not fit the %dx%d image's budget; "
                        "sending uniform allocation", head, height, width)
            lv, flags, packed = np.zeros(grid, np.int8), flags & ~FLAG_DEFLATE, b""
            head = _FIXED.size
        budget = self.channel_uses(height, width) - side_cost(head)
        if budget < n_blocks:
            raise ValueError(f"image {height}x{width} too small for ρ={self.rate:.4g}: its side information alone "
                             f"costs {side_cost(head)} of {self.channel_uses(height, width)} channel uses")
        planes = allocate_planes(lv, w, budget, self.max_planes, self.levels)
        side = _FIXED.pack(height, width, budget, int(round(w * 100)), self.levels, flags) + packed
        return {"levels": lv, "planes": planes, "budget": budget, "weight": w, "side_info": side}

    def parse_side_info(self, side_info: bytes) -> tuple[int, int, np.ndarray, float, int]:
        """Side information → (height, width, planes per block, weight, payload symbols)."""
        h, w, lv, levels, weight, budget = self._read_side(side_info)
        return h, w, allocate_planes(lv, weight, budget, self.max_planes, levels), weight, budget

    def _read_side(self, side_info: bytes) -> tuple[int, int, np.ndarray, int, float, int]:
        """Side information → (height, width, latent-block levels, level count, weight, payload
        symbols); ValueError when malformed."""
        side_info = bytes(side_info)
        if len(side_info) < _FIXED.size:
            raise ValueError(f"importance-JSCC side information needs ≥ {_FIXED.size} bytes, got {len(side_info)}")
        h, w, budget, w100, levels, flags = _FIXED.unpack_from(side_info)
        if h < 1 or w < 1:
            raise ValueError(f"side information carries an empty image size {h}x{w}")
        if not 2 <= levels <= 4:
            raise ValueError(f"side information names {levels} importance levels (2…4)")
        weight = self._check_weight(w100 / 100)
        return h, w, self._levels(h, w, levels, flags, side_info[_FIXED.size:]), levels, weight, budget

    def _levels(self, h: int, w: int, levels: int, flags: int, body: bytes) -> np.ndarray:
        """Latent-block levels from the side information's map."""
        grid = self._grid(h, w)
        s = (flags >> MAP_SCALE_SHIFT) & 3
        if s >= len(MAP_BLOCKS):
            raise ValueError(f"side information names an unknown map block scale {s}")
        f = 1 << s
        shape = (-(-grid[0] // f), -(-grid[1] // f))
        coarse = _unpack_levels(flags, body, shape, levels) if body else np.zeros(shape, np.int8)
        if coarse.max(initial=0) >= levels:
            raise ValueError("importance map level outside the declared levels")
        return _expand(coarse, f, grid)

    def encode(self, image, ctx: dict | None = None) -> Encoded:
        img = as_rgb_uint8(image)
        h, w = img.shape[:2]
        ctx = ctx or {}
        snr = self._tx_snr(ctx)
        p = self.plan(h, w, ctx.get("importance"), ctx.get("weight"))
        planes = p["planes"]
        latent = self._encode_latent(img, snr, 2 * planes)
        sym, power = _unit_power(np.concatenate(
            [(latent[2 * k] + 1j * latent[2 * k + 1])[planes > k] for k in range(int(planes.max()))]))
        meta = {"rho": rho(self.channel_uses(h, w), h, w), "payload_symbols": int(sym.size), "snr_db": snr,
                "weight": p["weight"], "levels": p["levels"], "planes": planes,
                "side_cost": self.channel_uses(h, w) - p["budget"], "latent_power": power}
        return Encoded(sym, p["side_info"], meta)

    def decode(self, symbols, side_info: bytes, csi: Csi) -> np.ndarray | None:
        """Like ``JsccCodec.decode``: None (``last_status`` says why) when no symbol is finite."""
        h, w, planes, _, budget = self.parse_side_info(side_info)
        snr = self._clip_snr(float(csi.snr_db), "csi.snr_db")
        why = self._unusable(symbols, f"importance_jscc {h}x{w}")
        if why:
            return self._fail(why)
        y = self._clean(symbols, budget, f"importance_jscc {h}x{w}")
        latent = np.zeros((self.c_max,) + planes.shape, np.float32)
        pos = 0
        for k in range(int(planes.max())):
            sel = planes > k
            m = int(sel.sum())
            latent[2 * k][sel] = y[pos:pos + m].real
            latent[2 * k + 1][sel] = y[pos:pos + m].imag
            pos += m
        image = self._decode_latent(latent, snr, 2 * planes, h, w)
        self.last_status = "ok"
        return image

    def levels_map(self, side_info: bytes) -> np.ndarray:
        """The block importance levels a frame carries, upsampled to the image (uint8 (H, W))."""
        h, w, lv, *_ = self._read_side(side_info)
        return _expand(lv, self.stride, (h, w)).astype(np.uint8)


def _expand(lv: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """Each entry of ``lv`` repeated over f×f, cropped to ``shape``."""
    return np.repeat(np.repeat(lv, f, axis=0), f, axis=1)[: shape[0], : shape[1]]
