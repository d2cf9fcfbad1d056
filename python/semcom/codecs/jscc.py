"""SNR-adaptive deep JSCC image codec (embedded model, ONNX Runtime, no torch).

One fully convolutional network (stride 8, ``models/jscc_enc.onnx`` + ``jscc_dec.onnx``)
serves three bandwidth ratios and every SNR from -5 to 20 dB. The encoder turns an image
into a 64-channel latent at 1/8 resolution; the codec sends only the first ``c`` channels
(an ordered latent: c = 64, 32, 16 → ρ = c/384 = 1/6, 1/12, 1/24) as ``c/2`` complex
symbol planes. Attention-feature modules condition both halves on the SNR: the encoder on
the transmitter's CSI (``ctx["snr_db"]``), the decoder on the SNR the receiver *estimated*
(``Csi.snr_db``). Training, export and figures: ``docs/jscc.md``.

Symbol layout: plane ``k`` pairs latent channels ``2k`` (real) and ``2k+1`` (imaginary);
symbols run plane by plane, each plane row-major, so symbol ``(k·h8 + y)·w8 + x`` is
``latent[2k, y, x] + 1j·latent[2k+1, y, x]`` with ``h8 = ceil(H/8)``, ``w8 = ceil(W/8)``.
The encoder output is scaled to unit mean power per complex symbol over what is sent.

The model also takes the number of channels sent at each 8×8 block (``alloc``); this codec
sends the same ``c`` everywhere, ``importance.ImportanceJsccCodec`` varies it.

Side information (5 bytes): image height and width (``pack_shape``) and the number of
latent channels sent ``c``. Images whose sides are not multiples of 8 are reflect-padded at
the bottom/right before encoding and cropped after decoding, so they cost the channel uses
of the padded size.

Bad input: malformed side information or a non-finite ``Csi.snr_db`` raise ValueError;
too few received symbols are zero-filled (erasures), too many are truncated, and
non-finite symbols are zeroed, each with a logged warning, so a damaged payload still
yields an image. A payload with no symbols at all, or with no finite one, carries nothing
of the image: ``decode`` then returns None and ``last_status`` says why ("no_symbols",
"nonfinite_symbols"; "ok" after a decoded image), as the separation baseline reports its
failures. SNRs outside the trained range are clipped to -5…20 dB.
"""
from __future__ import annotations

import logging
import math
from fractions import Fraction

import numpy as np

from ..runtime import load_model
from .base import Codec, Csi, Encoded, as_rgb_uint8, pack_shape, rho, unpack_shape

__all__ = ["JsccCodec", "STATUSES"]

log = logging.getLogger("gr-semcom.codecs.jscc")

ENC_NAME, DEC_NAME = "jscc_enc", "jscc_dec"
DECODERS = (DEC_NAME, "jscc_dec_int8")
DEFAULT_SNR_DB = 10.0
#: values of ``JsccCodec.last_status`` after ``decode``
STATUSES = ("ok", "no_symbols", "nonfinite_symbols")


def _as_ratio(rate) -> float:
    """A rate given as a number, a Fraction or a string such as ``"1/12"`` → float."""
    if isinstance(rate, str):
        return float(Fraction(rate.strip()))
    return float(rate)


class JsccCodec(Codec):
    """Deep JSCC image codec; ``rate`` is the bandwidth ratio ρ (1/6, 1/12 or 1/24).

    ``decoder``: the decoder model, ``"jscc_dec"`` (float32) or ``"jscc_dec_int8"`` (its int8
    quantization, ``semcom.train.quantize_jscc``: faster, output ~42 dB PSNR from the float one's)."""

    codec_id = 1
    name = "jscc"
    last_status = ""  # outcome of the latest decode (one of STATUSES)

    def __init__(self, rate=1 / 12, models_dir=None, providers=None, threads=None, decoder=DEC_NAME):
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        self._enc = load_model(ENC_NAME, models_dir=models_dir, providers=providers, threads=threads)
        self._dec = load_model(decoder, models_dir=models_dir, providers=providers, threads=threads)
        extra = self._enc.entry.extra
        self.stride = int(extra["stride"])
        self.c_max = int(extra["c_max"])
        self.channels = tuple(int(c) for c in extra["channels"])
        self.snr_range = tuple(float(s) for s in extra["snr_db_range"])
        rates = {c: c / (6.0 * self.stride ** 2) for c in self.channels}
        try:
            want = _as_ratio(rate)
        except (TypeError, ValueError, ZeroDivisionError):
            want = math.nan
        match = [c for c, r in rates.items() if math.isclose(want, r, rel_tol=1e-2)]
        if not match:
            supported = ", ".join(f"1/{round(1 / r)}" for r in rates.values())
            raise ValueError(f"rate {rate!r} not supported by the JSCC model; choose one of {supported}")
        self.c = match[0]
        self.rate = rates[self.c]

    @property
    def supported_rates(self) -> tuple[float, ...]:
        """Bandwidth ratios ρ this model serves (largest first)."""
        return tuple(c / (6.0 * self.stride ** 2) for c in self.channels)

    def _grid(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.stride), -(-width // self.stride)

    def _n_symbols(self, c: int, height: int, width: int) -> int:
        h8, w8 = self._grid(height, width)
        return c // 2 * h8 * w8

    def channel_uses(self, height: int, width: int) -> int:
        """Complex symbols for an image of this size: c/2 · ceil(H/8) · ceil(W/8)."""
        if height < 1 or width < 1:
            raise ValueError(f"image size {height}x{width} must be positive")
        return self._n_symbols(self.c, height, width)

    def _clip_snr(self, snr_db: float, what: str) -> float:
        if not math.isfinite(snr_db):
            raise ValueError(f"{what} must be finite, got {snr_db!r}")
        lo, hi = self.snr_range
        return min(max(snr_db, lo), hi)

    def _cond(self, snr_db: float, channels: np.ndarray) -> dict:
        """Model conditioning: SNR, and the channels sent per block (h8, w8) as ``alloc``/``rate``."""
        alloc = (np.asarray(channels, np.float32) / self.c_max)[None, None]
        return {"snr_db": np.full((1, 1), snr_db, np.float32),
                "rate": np.full((1, 1), alloc.mean(), np.float32), "alloc": np.ascontiguousarray(alloc)}

    def encode(self, image, ctx: dict | None = None) -> Encoded:
        """RGB image (grayscale is replicated) → unit-power complex symbols + 5 bytes side info.

        ``ctx["snr_db"]``: the channel SNR the transmitter expects (default 10 dB).
        """
        img = as_rgb_uint8(image)
        h, w = img.shape[:2]
        snr = self._tx_snr(ctx)
        latent = self._encode_latent(img, snr, np.full(self._grid(h, w), self.c))[:self.c]
        sym, power = _unit_power((latent[0::2] + 1j * latent[1::2]).ravel())
        h8, w8 = self._grid(h, w)
        meta = {"rho": rho(sym.size, h, w), "channels": self.c, "snr_db": snr,
                "padded_shape": (h8 * self.stride, w8 * self.stride), "latent_power": power}
        return Encoded(sym, pack_shape(h, w) + bytes([self.c]), meta)

    def _tx_snr(self, ctx: dict | None) -> float:
        snr = (ctx or {}).get("snr_db")
        return self._clip_snr(DEFAULT_SNR_DB if snr is None else float(snr), "ctx['snr_db']")

    def _encode_latent(self, img: np.ndarray, snr_db: float, channels: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) → the encoder's full latent (c_max, ceil(H/8), ceil(W/8)); sides that
        are not multiples of the stride are reflect-padded. ``channels``: latent channels that
        will be sent at each block (h8, w8)."""
        h, w = img.shape[:2]
        h8, w8 = self._grid(h, w)
        pad = ((0, h8 * self.stride - h), (0, w8 * self.stride - w), (0, 0))
        if pad[0][1] or pad[1][1]:
            img = np.pad(img, pad, mode="reflect" if min(h, w) > 1 else "edge")
        x = np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)
        return self._enc.run({"image": x, **self._cond(snr_db, channels)})["latent"][0]

    def _decode_latent(self, latent: np.ndarray, snr_db: float, channels: np.ndarray, h: int, w: int) -> np.ndarray:
        """(c_max, h8, w8) latent, zeros where nothing was sent → uint8 (H, W, 3)."""
        return self._run_decoder(self._decoder_feeds(latent, snr_db, channels), h, w)

    def _decoder_feeds(self, latent: np.ndarray, snr_db: float, channels: np.ndarray) -> dict:
        return {"latent": latent[None].astype(np.float32), **self._cond(snr_db, channels)}

    def _run_decoder(self, feeds: dict, h: int, w: int) -> np.ndarray:
        out = self._dec.run(feeds)["image"]
        return np.clip(np.rint(out[0, :, :h, :w].transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)

    @staticmethod
    def _clean(symbols, n: int, what: str) -> np.ndarray:
        """Received symbols as complex64 of length ``n``: non-finite ones zeroed, missing ones
        zero-filled (erasures), extra ones dropped, each with a logged warning."""
        y = np.asarray(symbols).ravel().astype(np.complex64)
        bad = ~np.isfinite(y)
        if bad.any():
            log.warning("%s: %d non-finite received symbols zeroed", what, int(bad.sum()))
            y[bad] = 0
        if y.size != n:
            log.warning("%s: got %d symbols, expected %d; %s", what, y.size, n,
                        "zero-filling the missing ones" if y.size < n else "dropping the extra ones")
            y = np.concatenate([y[:n], np.zeros(max(0, n - y.size), np.complex64)])
        return y

    @staticmethod
    def _unusable(symbols, what: str) -> str:
        """"" when the payload has at least one finite symbol, else the status that says why
        there is nothing to decode ("no_symbols", "nonfinite_symbols"), logged."""
        y = np.asarray(symbols).ravel()
        if y.size == 0:
            log.warning("%s: the payload has no symbols; nothing to decode", what)
            return "no_symbols"
        if not np.isfinite(y).any():
            log.warning("%s: none of the %d received symbols is finite; nothing to decode", what, y.size)
            return "nonfinite_symbols"
        return ""

    def _fail(self, status: str) -> None:
        self.last_status = status
        return None

    def image_shape(self, side_info: bytes) -> tuple[int, int]:
        """(height, width) from the first 4 bytes of the side information (``unpack_shape``)."""
        return unpack_shape(bytes(side_info))

    def parse_side_info(self, side_info: bytes) -> tuple[int, int, int]:
        """Side information → (height, width, channels sent); ValueError when malformed."""
        side_info = bytes(side_info)
        if len(side_info) != 5:
            raise ValueError(f"JSCC side information must be 5 bytes, got {len(side_info)}")
        h, w = unpack_shape(side_info)
        c = side_info[4]
        if h < 1 or w < 1:
            raise ValueError(f"side information carries an empty image size {h}x{w}")
        if c not in self.channels:
            raise ValueError(f"side information names {c} latent channels; the model sends {self.channels}")
        return h, w, c

    def decoder_inputs(self, symbols, side_info: bytes, csi: Csi) -> tuple[dict, tuple[int, int]]:
        """A received frame → (the decoder model's feeds, image (H, W)): what ``decode`` runs
        (also the calibration data of ``semcom.train.quantize_jscc``)."""
        h, w, c = self.parse_side_info(side_info)
        snr = self._clip_snr(float(csi.snr_db), "csi.snr_db")
        y = self._clean(symbols, self._n_symbols(c, h, w), f"jscc {h}x{w} c={c}")
        h8, w8 = self._grid(h, w)
        planes = y.reshape(c // 2, h8, w8)
        latent = np.zeros((self.c_max, h8, w8), np.float32)
        latent[0:c:2] = planes.real
        latent[1:c:2] = planes.imag
        return self._decoder_feeds(latent, snr, np.full((h8, w8), c)), (h, w)

    def decode(self, symbols, side_info: bytes, csi: Csi) -> np.ndarray | None:
        """Received symbols → uint8 (H, W, 3), decoded at the receiver's SNR estimate ``csi.snr_db``;
        None (``last_status`` "no_symbols" / "nonfinite_symbols") when the payload holds no finite symbol."""
        h, w, c = self.parse_side_info(side_info)
        why = self._unusable(symbols, f"jscc {h}x{w} c={c}")
        if why:
            return self._fail(why)
        feeds, (h, w) = self.decoder_inputs(symbols, side_info, csi)
        image = self._run_decoder(feeds, h, w)
        self.last_status = "ok"
        return image


def _unit_power(sym: np.ndarray) -> tuple[np.ndarray, float]:
    """Scale complex symbols to unit mean power; returns (complex64 symbols, power before)."""
    sym = np.asarray(sym).astype(np.complex64)
    power = float(np.mean(np.abs(sym) ** 2)) if sym.size else 0.0
    if power > 0:
        sym *= np.float32(1.0 / math.sqrt(power))
    return sym, power
