"""The codec contract shared by every semantic codec and baseline (no GNU Radio import).

A codec turns an RGB image into complex channel symbols plus a few bytes of side
information (carried, CRC-protected, in the frame's digital header and counted in the
channel-use budget), and turns received symbols back into an image using only what the
receiver measured (``Csi``), never the simulator's settings.

Conventions (README): symbols leave ``encode`` with unit mean power per complex symbol;
the bandwidth ratio ρ is complex channel uses / real source dimensions (3·H·W).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Encoded", "Csi", "Codec", "as_rgb_uint8", "rho", "pack_shape", "unpack_shape"]


@dataclass
class Encoded:
    """What a codec hands the PHY for one image."""

    symbols: np.ndarray            # complex64, 1-D, unit mean power
    side_info: bytes = b""         # header side information (≤ 4095 bytes)
    meta: dict = field(default_factory=dict)   # TX-side facts for logs/reports (not sent)


@dataclass
class Csi:
    """Channel state the receiver measured for one frame (from ``ofdm_rx`` metadata)."""

    snr_db: float                          # estimated Es/N0 of the payload
    noise_var: float | None = None         # mean noise variance per equalised symbol
    noise_var_sym: np.ndarray | None = None  # per-symbol noise variance (same length as payload)

    @classmethod
    def from_meta(cls, meta: dict, n: int | None = None) -> "Csi":
        """Build from ``ofdm_rx`` PDU metadata (keys ``snr_est_db``, ``noise_var``, ``noise_var_sym``)."""
        if "snr_est_db" not in meta:
            raise ValueError("receiver metadata has no 'snr_est_db'")
        nvs = meta.get("noise_var_sym")
        nvs = None if nvs is None else np.asarray(nvs, np.float32)
        if nvs is not None and n is not None and nvs.size != n:
            nvs = None
        nv = meta.get("noise_var")
        return cls(float(meta["snr_est_db"]), None if nv is None else float(nv), nvs)

    def unbias(self, symbols: np.ndarray, equalizer: str) -> np.ndarray:
        """Undo the shrinkage of an MMSE equaliser: y / (1 − e) with e the per-symbol MMSE
        error variance (``noise_var_sym``), and rescale the noise variance to e / (1 − e),
        so codecs always see y = x + n. ZF output is returned unchanged."""
        if equalizer != "mmse" or self.noise_var_sym is None or self.noise_var_sym.size != symbols.size:
            return symbols
        e = np.clip(self.noise_var_sym.astype(np.float64), 0.0, 1.0 - 1e-6)
        self.noise_var_sym = (e / (1.0 - e)).astype(np.float32)
        return (symbols / (1.0 - e)).astype(np.complex64)

    def per_symbol(self, n: int) -> np.ndarray:
        """Noise variance per symbol (float32, length n), from the finest information present."""
        if self.noise_var_sym is not None and self.noise_var_sym.size == n:
            return np.maximum(self.noise_var_sym.astype(np.float32), 1e-12)
        nv = self.noise_var if self.noise_var is not None else 10.0 ** (-self.snr_db / 10.0)
        return np.full(n, max(float(nv), 1e-12), np.float32)


class Codec:
    """Base class: subclasses set ``codec_id``/``name`` and implement the three methods."""

    codec_id: int = 0
    name: str = "codec"

    def channel_uses(self, height: int, width: int) -> int:
        """Complex channel uses of the payload for an image of this size."""
        raise NotImplementedError

    def encode(self, image: np.ndarray, ctx: dict | None = None) -> Encoded:
        """RGB uint8 image (H, W, 3) → Encoded. ``ctx`` may hold ``snr_db``: the TX's CSI."""
        raise NotImplementedError

    def decode(self, symbols: np.ndarray, side_info: bytes, csi: Csi) -> np.ndarray | None:
        """Received symbols → RGB uint8 image, or None when the receiver has nothing to show
        (then ``last_status``, where the codec has one, says why)."""
        raise NotImplementedError

    def image_shape(self, side_info: bytes) -> tuple[int, int] | None:
        """(height, width) of the image a frame's side information announces, read without
        decoding anything (the decoder block refuses frames over its ``max_pixels`` with it);
        None when the codec cannot tell. The codecs of gr-semcom start their side information
        with ``pack_shape``; ValueError when it is too short for that."""
        return None


def rho(n_symbols: int, height: int, width: int) -> float:
    """Bandwidth ratio: complex channel uses per real source dimension (3·H·W)."""
    return float(n_symbols) / (3.0 * height * width)


def as_rgb_uint8(image) -> np.ndarray:
    """Any image array → contiguous uint8 (H, W, 3).

    Grayscale (H, W) or (H, W, 1) is replicated to three channels, an alpha channel is
    dropped, floats are taken as [0, 1] when their maximum is ≤ 1 else as [0, 255].
    Anything else (wrong rank, empty, non-finite values) raises ValueError.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"empty image of shape {a.shape}")
    a = a[:, :, :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == bool:
        return np.ascontiguousarray(a.astype(np.uint8) * 255)
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError("image has non-finite values")
    if np.issubdtype(np.asarray(image).dtype, np.floating) and a.max() <= 1.0:
        a = a * 255.0
    return np.ascontiguousarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


_SHAPE = struct.Struct(">HH")


def pack_shape(height: int, width: int) -> bytes:
    """Image size as 4 bytes of side information."""
    if not (1 <= height <= 65535 and 1 <= width <= 65535):
        raise ValueError(f"image size {height}x{width} outside 1…65535")
    return _SHAPE.pack(height, width)


def unpack_shape(side: bytes) -> tuple[int, int]:
    if len(side) < _SHAPE.size:
        raise ValueError(f"side information too short for an image size ({len(side)} bytes)")
    return _SHAPE.unpack_from(side)
