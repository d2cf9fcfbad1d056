"""Digital frame header: fields, CRC-16 and a biorthogonal Reed–Muller RM(1,5) code.

The header must survive where the analog payload is already poor (0 dB Es/N0 and below),
so it is strongly coded: every 6 information bits become a 32-bit biorthogonal
Reed–Muller codeword (minimum distance 16), decoded with a maximum-likelihood soft decoder
(one 32×32 Hadamard correlation per codeword). Codeword bits are block-interleaved across
carriers and OFDM symbols for frequency diversity.

Header fields (84 bits, 14 codewords, 448 coded bits):

====================  =====  ==================================================
field                 bits   meaning
====================  =====  ==================================================
version               4      frame format version (1)
codec_id              8      which semantic codec produced the payload
seq                   16     sequence number (wraps)
payload_len           20     analog payload length in complex symbols (≤ 1 048 575)
side_len              12     side-information length in bytes (≤ 4095)
gain_code             8      TX power-normalisation gain, 0.25 dB steps, signed
crc16                 16     CRC-16/CCITT-FALSE over the 68 bits above
====================  =====  ==================================================

Side information (e.g. a compressed importance mask) is sent right after the header in
the same code, with its own CRC-16.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VERSION = 1
MAX_PAYLOAD_LEN = (1 << 20) - 1
MAX_SIDE_LEN = (1 << 12) - 1
GAIN_STEP_DB = 0.25
_FIELDS = (("version", 4), ("codec_id", 8), ("seq", 16), ("payload_len", 20), ("side_len", 12), ("gain_code", 8))
HEADER_INFO_BITS = sum(w for _, w in _FIELDS) + 16  # 84
RM_K, RM_N = 6, 32


@dataclass(frozen=True)
class Header:
    codec_id: int
    seq: int
    payload_len: int
    side_len: int = 0
    gain_code: int = 0
    version: int = VERSION

    @property
    def gain_db(self) -> float:
        """Gain the TX applied to the payload (dB); the RX divides it out."""
        return self.gain_code * GAIN_STEP_DB

    def validate(self):
        for name, width in _FIELDS:
            v = getattr(self, name)
            if name == "gain_code":
                if not -(1 << (width - 1)) <= v < (1 << (width - 1)):
                    raise ValueError(f"gain_code {v} out of range")
            elif not 0 <= v < (1 << width):
                raise ValueError(f"header field {name}={v} does not fit in {width} bits (max {(1 << width) - 1})")


# ---------------------------------------------------------------------------------------
# CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over a bit array, table-driven on bytes.
_CRC_TABLE = np.zeros(256, dtype=np.uint16)
for _i in range(256):
    _c = _i << 8
    for _ in range(8):
        _c = ((_c << 1) ^ 0x1021) if _c & 0x8000 else (_c << 1)
    _CRC_TABLE[_i] = _c & 0xFFFF


def crc16_bytes(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ int(_CRC_TABLE[((crc >> 8) ^ b) & 0xFF])
    return crc


def crc16_bits(bits: np.ndarray) -> int:
    """CRC-16 of a bit array (MSB first), zero-padded on the left to whole bytes."""
    bits = np.asarray(bits, dtype=np.uint8)
    pad = (-len(bits)) % 8
    return crc16_bytes(np.packbits(np.concatenate([np.zeros(pad, np.uint8), bits])).tobytes())


def _int_to_bits(v: int, width: int) -> np.ndarray:
    v &= (1 << width) - 1
    return np.array([(v >> (width - 1 - i)) & 1 for i in range(width)], dtype=np.uint8)


def _bits_to_int(bits: np.ndarray) -> int:
    v = 0
    for b in bits:
        v = (v << 1) | int(b)
    return v


# ---------------------------------------------------------------------------------------
# Biorthogonal RM(1,5): 6 bits -> 32 bits.  Codeword = (-1)^msb * Hadamard row (5 bits).
def _hadamard(n: int) -> np.ndarray:
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


_H32 = _hadamard(RM_N).astype(np.float32)


def rm_encode(bits: np.ndarray) -> np.ndarray:
    """Encode bits (length multiple of 6) into ±1 chips (length multiple of 32)."""
    b = np.asarray(bits, dtype=np.uint8).reshape(-1, RM_K)
    row = b[:, 1:] @ (1 << np.arange(RM_K - 2, -1, -1))
    sign = 1.0 - 2.0 * b[:, 0]
    return (sign[:, None] * _H32[row]).reshape(-1).astype(np.float32)


def rm_decode(soft: np.ndarray) -> np.ndarray:
    """ML soft decoding. ``soft``: real metrics, positive ↔ chip +1 (bit 0). Returns bits."""
    s = np.nan_to_num(np.asarray(soft, dtype=np.float32).reshape(-1, RM_N), nan=0.0, posinf=0.0, neginf=0.0)
    corr = s @ _H32.T  # (n_cw, 32)
    row = np.argmax(np.abs(corr), axis=1)
    neg = corr[np.arange(len(row)), row] < 0
    out = np.empty((len(row), RM_K), dtype=np.uint8)
    out[:, 0] = neg
    for i in range(RM_K - 1):
        out[:, 1 + i] = (row >> (RM_K - 2 - i)) & 1
    return out.reshape(-1)


def interleave_perm(n_chips: int, n_rows: int) -> np.ndarray:
    """Block interleaver: chip i of codeword c goes to position i*n_rows + c (column read)."""
    return np.arange(n_chips).reshape(n_rows, RM_N).T.reshape(-1)


def encode_bits_block(info_bits: np.ndarray) -> np.ndarray:
    """Info bits (+CRC already appended) → interleaved ±1 chips."""
    bits = np.asarray(info_bits, dtype=np.uint8)
    pad = (-len(bits)) % RM_K
    bits = np.concatenate([bits, np.zeros(pad, np.uint8)])
    chips = rm_encode(bits)
    perm = interleave_perm(len(chips), len(chips) // RM_N)
    out = np.empty_like(chips)
    out[perm] = chips
    return out


def decode_bits_block(soft_chips: np.ndarray, n_info_bits: int) -> np.ndarray:
    n_cw = -(-n_info_bits // RM_K)
    soft = np.asarray(soft_chips, dtype=np.float32)[: n_cw * RM_N]
    perm = interleave_perm(n_cw * RM_N, n_cw)
    return rm_decode(soft[perm])[:n_info_bits]


def coded_len(n_info_bits: int) -> int:
    return -(-n_info_bits // RM_K) * RM_N


HEADER_CODED_LEN = coded_len(HEADER_INFO_BITS)  # 448


def header_to_bits(h: Header) -> np.ndarray:
    h.validate()
    fields = np.concatenate([_int_to_bits(getattr(h, n), w) for n, w in _FIELDS])
    return np.concatenate([fields, _int_to_bits(crc16_bits(fields), 16)])


def bits_to_header(bits: np.ndarray) -> Header | None:
    """Parse 84 header bits; None if the CRC or the version does not check."""
    bits = np.asarray(bits, dtype=np.uint8)
    n = HEADER_INFO_BITS - 16
    if crc16_bits(bits[:n]) != _bits_to_int(bits[n:HEADER_INFO_BITS]):
        return None
    vals, pos = {}, 0
    for name, w in _FIELDS:
        vals[name] = _bits_to_int(bits[pos:pos + w])
        pos += w
    if vals["gain_code"] >= 128:
        vals["gain_code"] -= 256
    if vals["version"] != VERSION:
        return None
    return Header(**vals)


def side_to_bits(side: bytes) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(bytes(side), dtype=np.uint8)) if side else np.zeros(0, np.uint8)
    return np.concatenate([bits, _int_to_bits(crc16_bytes(bytes(side)), 16)])


def bits_to_side(bits: np.ndarray, side_len: int) -> bytes | None:
    bits = np.asarray(bits, dtype=np.uint8)
    data = np.packbits(bits[: 8 * side_len]).tobytes() if side_len else b""
    if crc16_bytes(data) != _bits_to_int(bits[8 * side_len: 8 * side_len + 16]):
        return None
    return data


def side_coded_len(side_len: int) -> int:
    return coded_len(8 * side_len + 16) if side_len else 0
