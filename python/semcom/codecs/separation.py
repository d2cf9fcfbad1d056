"""Separation baseline: image codec + CRC + channel code + Gray QAM at the semantic codec's budget.

What a conventional digital link does with the same channel uses (no GNU Radio import):

1. pick the MCS (modulation × code rate) from the TX's CSI ``ctx["snr_db"]`` — the SNR the
   receiver estimated and fed back — as an adaptive link does: among the MCSs whose
   measured threshold (``MCS_TABLES``) is at or below the SNR, the one that carries the most
   bytes in this frame; below every threshold, the most robust MCS (best effort);
2. compress the image to the largest file that fits that MCS's payload (``imagecodec.fit``:
   JPEG/WebP/AVIF/JPEG XL, binary search on quality, optional downscaling);
3. append a CRC-32, channel-code (LDPC or (7,4) Hamming), interleave the coded bits over the
   frame, scramble, map to Gray QAM with unit mean power, and fill the rest of the budget
   with scrambled padding symbols of the same constellation, so the frame is exactly
   ``channel_uses(H, W) = round(ρ·3·H·W)`` symbols, as for the semantic codec.

Side information (11 bytes, in the CRC-protected frame header): image height and width,
MCS index, format id, log2 of the downscaling factor, file length.

The receiver demaps with max-log LLRs using its own per-symbol noise variance
(``Csi.per_symbol``), decodes, and checks the CRC. A failed check leaves it with nothing:
``decode`` returns None and ``last_status`` says why — that is the cliff effect. The codec
counts nothing; the decoder block counts failures and may show the previous frame instead.
When no format fits even at the chosen MCS (tiny budgets), the frame carries padding only
and the receiver reports "no_mcs".
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .base import Codec, Csi, Encoded, as_rgb_uint8, pack_shape, unpack_shape
from .channel_codes import ChannelCode, Hamming74, ldpc_backends, ldpc_code
from .imagecodec import FORMATS, available_formats, fit, reconstruct
from .qam import MODULATIONS, Qam

__all__ = ["Mcs", "MCS_TABLES", "SeparationCodec", "STATUSES"]


@dataclass(frozen=True)
class Mcs:
    """One modulation and coding scheme and its measured AWGN threshold."""

    modulation: str       # key of qam.MODULATIONS
    code: str             # LDPC rate label (key of LDPC_CODES) or "hamming74"
    threshold_db: float   # lowest Es/N0 where a 16384-symbol frame fails ≤ 10 % of the time

    @property
    def name(self) -> str:
        return f"{self.modulation}-{self.code}"


# Thresholds measured with apps/calibrate_mcs.py (defaults): AWGN with the project's SNR
# convention (σ² = 10^(−SNR/10)), frames of 16384 symbols (a 256×256 image at ρ = 1/12)
# filled with codewords of random bytes through this codec's bit path, LLRs from the true
# noise variance, gr-fec's LDPC decoder (50 iterations) or the soft ML Hamming decoder.
# Threshold = the lowest SNR on a 0.25 dB grid where at most 4 of 40 frames failed, i.e. a
# 10 % frame error rate, the target of LTE's CQI rule. Re-run after changing a code.
MCS_TABLES = {
    "ldpc": (
        Mcs("bpsk", "1/4", -4.0),
        Mcs("bpsk", "2/5", -2.0),
        Mcs("bpsk", "1/2", -1.0),
        Mcs("qpsk", "2/5", 1.5),
        Mcs("qpsk", "1/2", 2.25),
        Mcs("qpsk", "2/3", 4.0),
        Mcs("qpsk", "3/4", 4.75),
        Mcs("qpsk", "5/6", 6.25),
        Mcs("16qam", "1/2", 7.75),
        Mcs("16qam", "2/3", 10.0),
        Mcs("16qam", "3/4", 11.0),
        Mcs("16qam", "5/6", 12.5),
        Mcs("64qam", "1/2", 12.5),
        Mcs("64qam", "2/3", 15.0),
        Mcs("64qam", "3/4", 16.75),
        Mcs("64qam", "5/6", 18.5),
    ),
    "hamming74": (
        Mcs("bpsk", "hamming74", 5.0),
        Mcs("qpsk", "hamming74", 8.25),
        Mcs("16qam", "hamming74", 15.5),
        Mcs("64qam", "hamming74", 21.5),
    ),
}

#: values of ``SeparationCodec.last_status``
STATUSES = ("ok", "crc_fail", "no_mcs", "image_decode_error", "bad_side_info", "bad_length")

_SIDE = struct.Struct(">BBBI")     # MCS index, format id, log2(scale), file length
_NO_FILE = 0xFF                    # MCS index of a frame that carries padding only
_CRC_BYTES = 4
_SCRAMBLER_SEED = 0x5E9C0
_INTERLEAVER_SEED = 0x1E4F


@lru_cache(maxsize=16)
def _scrambler(nbits: int) -> np.ndarray:
    """Fixed pseudo-random bits XORed onto the coded stream (both ends know them)."""
    return np.random.RandomState(_SCRAMBLER_SEED).randint(0, 2, nbits).astype(np.uint8)


@lru_cache(maxsize=16)
def _interleaver(nbits: int) -> np.ndarray:
    """Fixed pseudo-random permutation spreading every codeword over the whole frame."""
    return np.random.RandomState(_INTERLEAVER_SEED).permutation(nbits)


class SeparationCodec(Codec):
    """Digital baseline: adaptive MCS + image codec + CRC-32 + channel code + Gray QAM.

    ``rate``: bandwidth ratio ρ (channel uses = round(ρ·3·H·W), same as the semantic codec);
    ``image_format``: "auto" (the best PSNR among ``available_formats()``) or one of
    ``imagecodec.FORMATS``; ``channel_code``: "ldpc" or "hamming74"; ``mcs``: a fixed MCS
    name such as "64qam-5/6" (no adaptation), None = adapt to ``ctx["snr_db"]``;
    ``margin_db``: back-off subtracted from the CSI before the threshold comparison;
    ``ldpc_backend``: "auto" (gr-fec when ``gnuradio.semcom.blocks.fec_ldpc`` has been
    imported, else numpy), "gr-fec" or "numpy"; ``scales``: downscaling factors tried
    (powers of two).
    ``last_status`` holds the outcome of the latest ``decode`` (one of ``STATUSES``).
    """

    codec_id = 2
    name = "separation"

    def __init__(self, rate: float = 1 / 12, image_format: str = "auto", channel_code: str = "ldpc",
                 mcs: str | None = None, margin_db: float = 0.0, ldpc_backend: str = "auto",
                 scales=(1, 2, 4)):
        if not 0 < float(rate) <= 1:
            raise ValueError(f"rate (ρ) must be in (0, 1], got {rate}")
        if channel_code not in MCS_TABLES:
            raise ValueError(f"channel_code must be one of {', '.join(MCS_TABLES)}, got {channel_code!r}")
        if image_format != "auto" and image_format not in FORMATS:
            raise ValueError(f"image_format must be 'auto' or one of {', '.join(FORMATS)}, got {image_format!r}")
        if image_format != "auto" and image_format not in available_formats():
            raise ValueError(f"image format {image_format!r} does not work here (available: "
                             f"{', '.join(available_formats())})")
        if not scales or any(int(s) not in (1, 2, 4, 8, 16) for s in scales):
            raise ValueError(f"scales must be downscaling factors among 1, 2, 4, 8, 16, got {scales!r}")
        if ldpc_backend != "auto" and ldpc_backend not in ldpc_backends():
            raise ValueError(f"LDPC backend {ldpc_backend!r} is not registered (have {', '.join(ldpc_backends())}); "
                             "'gr-fec' needs `import gnuradio.semcom.blocks.fec_ldpc`")
        self.rate = float(rate)
        self.image_format = image_format
        self.channel_code = channel_code
        self.table = MCS_TABLES[channel_code]
        names = [m.name for m in self.table]
        if mcs is not None and mcs not in names:
            raise ValueError(f"unknown MCS {mcs!r} for {channel_code}; choose one of {', '.join(names)}")
        self.fixed_mcs = None if mcs is None else names.index(mcs)
        self.margin_db = float(margin_db)
        self.ldpc_backend = ldpc_backend
        self.scales = tuple(int(s) for s in scales)
        self.last_status = ""

    # ------------------------------------------------------------------ link budget

    def channel_uses(self, height: int, width: int) -> int:
        return max(1, int(round(self.rate * 3 * height * width)))

    def code(self, index: int) -> ChannelCode:
        """The channel code of MCS ``index``."""
        c = self.table[index].code
        return Hamming74() if c == "hamming74" else ldpc_code(c, self.ldpc_backend)

    def _codewords(self, index: int, n_symbols: int) -> int:
        bps = Qam(MODULATIONS[self.table[index].modulation]).bits_per_symbol
        return n_symbols * bps // self.code(index).n

    def capacity(self, index: int, n_symbols: int) -> int:
        """File bytes MCS ``index`` carries in ``n_symbols`` channel uses (after the CRC)."""
        code = self.code(index)
        return max(0, self._codewords(index, n_symbols) * code.k // 8 - _CRC_BYTES)

    def select_mcs(self, snr_db: float, n_symbols: int) -> int:
        """MCS index for CSI ``snr_db``: the largest capacity among the MCSs whose threshold
        ≤ snr_db − margin_db; the lowest-threshold MCS when none qualifies."""
        if self.fixed_mcs is not None:
            return self.fixed_mcs
        ok = [i for i, m in enumerate(self.table) if m.threshold_db <= snr_db - self.margin_db]
        if not ok:
            return min(range(len(self.table)), key=lambda i: self.table[i].threshold_db)
        return max(ok, key=lambda i: (self.capacity(i, n_symbols), -self.table[i].threshold_db))

    # ------------------------------------------------------------------ bits ↔ symbols

    def modulate(self, payload: bytes, index: int, n_symbols: int) -> np.ndarray:
        """Bytes (file + CRC) → exactly ``n_symbols`` unit-power symbols of MCS ``index``."""
        code, qam = self.code(index), Qam(MODULATIONS[self.table[index].modulation])
        bits = np.unpackbits(np.frombuffer(payload, np.uint8))
        used = -(-bits.size // code.k)
        if used > self._codewords(index, n_symbols):
            raise ValueError(f"{len(payload)} bytes do not fit MCS {self.table[index].name} in {n_symbols} symbols")
        info = np.zeros(used * code.k, np.uint8)
        info[:bits.size] = bits
        coded = code.encode(info)
        stream = np.zeros(n_symbols * qam.bits_per_symbol, np.uint8)
        stream[:coded.size] = coded[_interleaver(coded.size)]
        return qam.modulate(stream ^ _scrambler(stream.size))

    def demodulate(self, symbols: np.ndarray, noise_var, index: int, nbytes: int) -> bytes:
        """Symbols + noise variance (per symbol) → the first ``nbytes`` decoded bytes of MCS ``index``."""
        code, qam = self.code(index), Qam(MODULATIONS[self.table[index].modulation])
        used = -(-nbytes * 8 // code.k)
        llr = qam.demap(symbols, noise_var)
        llr = llr * (1.0 - 2.0 * _scrambler(llr.size).astype(np.float32))
        coded = np.empty(used * code.n, np.float32)
        coded[_interleaver(coded.size)] = llr[:coded.size]
        bits = code.decode(coded)
        return np.packbits(bits[:nbytes * 8]).tobytes()

    # ------------------------------------------------------------------ codec contract

    def encode(self, image, ctx: dict | None = None) -> Encoded:
        img = as_rgb_uint8(image)
        h, w = img.shape[:2]
        n = self.channel_uses(h, w)
        ctx = ctx or {}
        if self.fixed_mcs is None and ctx.get("snr_db") is None:
            raise ValueError("the separation codec adapts to the TX's CSI: pass ctx={'snr_db': …} or fix an MCS")
        index = self.select_mcs(float(ctx.get("snr_db", np.nan)), n)
        mcs = self.table[index]
        capacity = self.capacity(index, n)
        formats = None if self.image_format == "auto" else [self.image_format]
        comp = fit(img, capacity, formats, self.scales) if capacity > 0 else None
        meta = dict(tx_mcs=mcs.name, tx_capacity_bytes=capacity)
        if comp is None:
            pad = Qam(4).modulate(_scrambler(2 * n))
            side = pack_shape(h, w) + _SIDE.pack(_NO_FILE, 0, 0, 0)
            return Encoded(pad, side, dict(meta, tx_format="", tx_file_bytes=0, tx_file_psnr=float("nan")))
        payload = comp.data + struct.pack(">I", zlib.crc32(comp.data))
        symbols = self.modulate(payload, index, n)
        side = pack_shape(h, w) + _SIDE.pack(index, FORMATS[comp.fmt].fid, comp.scale.bit_length() - 1,
                                             len(comp.data))
        return Encoded(symbols, side, dict(meta, tx_format=comp.fmt, tx_scale=comp.scale, tx_quality=comp.quality,
                                           tx_file_bytes=len(comp.data), tx_file_psnr=comp.psnr))

    def image_shape(self, side_info: bytes) -> tuple[int, int]:
        """(height, width) from the first 4 bytes of the side information (``unpack_shape``)."""
        return unpack_shape(bytes(side_info))

    def decode(self, symbols, side_info: bytes, csi: Csi) -> np.ndarray | None:
        try:
            h, w = unpack_shape(side_info)
            index, fid, scale_log2, nbytes = _SIDE.unpack_from(side_info, 4)
        except (ValueError, struct.error):
            return self._fail("bad_side_info")
        if index == _NO_FILE:
            return self._fail("no_mcs")
        fmt = next((f.name for f in FORMATS.values() if f.fid == fid), None)
        if index >= len(self.table) or fmt is None or scale_log2 > 8:
            return self._fail("bad_side_info")
        y = np.asarray(symbols, np.complex64).reshape(-1)
        code = self.code(index)
        bps = Qam(MODULATIONS[self.table[index].modulation]).bits_per_symbol
        if y.size != self.channel_uses(h, w) or -(-(nbytes + _CRC_BYTES) * 8 // code.k) * code.n > y.size * bps:
            return self._fail("bad_length")
        data = self.demodulate(y, csi.per_symbol(y.size), index, nbytes + _CRC_BYTES)
        if struct.unpack(">I", data[-_CRC_BYTES:])[0] != zlib.crc32(data[:-_CRC_BYTES]):
            return self._fail("crc_fail")
        try:
            image = reconstruct(data[:-_CRC_BYTES], fmt, 1 << scale_log2, h, w)
        except Exception:  # a file that passed its CRC yet does not decode: nothing to show
            return self._fail("image_decode_error")
        self.last_status = "ok"
        return image

    def _fail(self, status: str) -> None:
        self.last_status = status
        return None
