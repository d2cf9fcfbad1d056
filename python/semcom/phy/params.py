"""OFDM frame parameters for the hybrid digital-header / analog-payload PHY.

No GNU Radio import: the same object configures the numpy reference modem and the
GNU Radio hier blocks, so both speak exactly the same frame format.

Carrier indices are relative to DC (negative = below DC), as in gr-digital. Vectors
"in the shifted domain" have DC at index ``fft_len // 2`` (gr-digital's
``fft_vcc(..., shift=True)`` / ``ofdm_carrier_allocator_cvc`` convention).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Tuple

import numpy as np

HEADER_MODULATIONS = ("bpsk", "qpsk")
MAX_HEADER_REPETITION = 16


def lfsr_bits(n: int, seed: int = 0x5D, taps: Tuple[int, int] = (7, 4)) -> np.ndarray:
    """Deterministic pseudo-random bits from a 7-bit Fibonacci LFSR (x^7 + x^4 + 1).

    Used for sync words, pilot polarity and pad symbols so that the frame format never
    depends on a random-number library's algorithm.
    """
    state = seed & 0x7F
    if state == 0:
        raise ValueError("LFSR seed must be non-zero")
    out = np.empty(n, dtype=np.uint8)
    a, b = taps
    for i in range(n):
        bit = ((state >> (a - 1)) ^ (state >> (b - 1))) & 1
        out[i] = state & 1
        state = ((state << 1) | bit) & 0x7F
    return out


def _bpsk(bits: np.ndarray) -> np.ndarray:
    return (1.0 - 2.0 * bits.astype(np.float64)).astype(np.complex64)


@dataclass(frozen=True)
class OfdmParams:
    """Frame format of the semantic OFDM PHY.

    Parameters
    ----------
    fft_len: FFT size (power of two, 16…4096).
    cp_len: cyclic prefix in samples (1 … fft_len/2).
    occupied_carriers: data carriers (indices relative to DC, DC itself excluded).
    pilot_carriers: pilot carriers (disjoint from data carriers, at least 2).
    pilot_symbols: one tuple of pilot values per OFDM symbol, cycled; each tuple has one
        unit-magnitude value per pilot carrier. ``None`` → a pseudo-random BPSK pattern.
    header_modulation: "bpsk" (default, decodes at 0 dB) or "qpsk" (half the header
        length, about 3 dB less robust).
    header_repetition: copies of the coded header and side-information chips (1…16); the
        receiver adds them before decoding, 10·log10(R) dB of gain (4: decodes at −5 dB).
    name: profile name (informational).
    """

    fft_len: int = 64
    cp_len: int = 16
    occupied_carriers: Tuple[int, ...] = ()
    pilot_carriers: Tuple[int, ...] = ()
    pilot_symbols: Tuple[Tuple[complex, ...], ...] | None = None
    header_modulation: str = "bpsk"
    name: str = "custom"
    header_repetition: int = 1
    _cache: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self):
        n = self.fft_len
        if not isinstance(n, (int, np.integer)) or n < 16 or n > 4096 or (n & (n - 1)):
            raise ValueError(f"fft_len must be a power of two in 16…4096, got {n!r}")
        if not isinstance(self.cp_len, (int, np.integer)) or not 1 <= self.cp_len <= n // 2:
            raise ValueError(f"cp_len must be an integer in 1…fft_len/2 ({n // 2}), got {self.cp_len!r}")
        occ = tuple(int(k) for k in self.occupied_carriers)
        pil = tuple(int(k) for k in self.pilot_carriers)
        object.__setattr__(self, "occupied_carriers", occ)
        object.__setattr__(self, "pilot_carriers", pil)
        if len(occ) < 8:
            raise ValueError(f"need at least 8 occupied (data) carriers, got {len(occ)}")
        if len(pil) < 2:
            raise ValueError("need at least 2 pilot carriers for phase tracking")
        for name, ks in (("occupied_carriers", occ), ("pilot_carriers", pil)):
            if len(set(ks)) != len(ks):
                raise ValueError(f"{name} has duplicate entries")
            bad = [k for k in ks if k == 0 or not -n // 2 < k < n // 2]
            if bad:
                raise ValueError(f"{name} must lie in (-fft_len/2, fft_len/2) without DC; bad: {bad}")
        both = set(occ) & set(pil)
        if both:
            raise ValueError(f"carriers both data and pilot: {sorted(both)}")
        if self.header_modulation not in HEADER_MODULATIONS:
            raise ValueError(f"header_modulation must be one of {HEADER_MODULATIONS}, got {self.header_modulation!r}")
        r = self.header_repetition
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1 <= r <= MAX_HEADER_REPETITION:
            raise ValueError(f"header_repetition must be an integer in 1…{MAX_HEADER_REPETITION}, got {r!r}")
        object.__setattr__(self, "header_repetition", int(r))
        if self.pilot_symbols is None:
            bits = lfsr_bits(127 * len(pil), seed=0x2B)
            sets = _bpsk(bits).reshape(127, len(pil))
            object.__setattr__(self, "pilot_symbols", tuple(tuple(complex(v) for v in row) for row in sets))
        else:
            sets = tuple(tuple(complex(v) for v in row) for row in self.pilot_symbols)
            if not sets or any(len(row) != len(pil) for row in sets):
                raise ValueError("pilot_symbols must be a non-empty list of tuples, one value per pilot carrier")
            if any(abs(abs(v) - 1.0) > 1e-6 for row in sets for v in row):
                raise ValueError("pilot symbols must have unit magnitude")
            object.__setattr__(self, "pilot_symbols", sets)

    # ---- derived quantities (indices in the shifted domain) -------------------------------
    @property
    def n_data(self) -> int:
        """Data carriers per OFDM symbol (complex channel uses per OFDM symbol)."""
        return len(self.occupied_carriers)

    @property
    def symbol_len(self) -> int:
        """Samples per OFDM symbol including the cyclic prefix."""
        return self.fft_len + self.cp_len

    def _cached(self, key, make):
        """Derived array computed once per parameter set (read-only: it is shared)."""
        v = self._cache.get(key)
        if v is None:
            v = make()
            v.setflags(write=False)
            self._cache[key] = v
        return v

    @property
    def data_idx(self) -> np.ndarray:
        return self._cached("data_idx", lambda: np.asarray(self.occupied_carriers, np.int64) + self.fft_len // 2)

    @property
    def pilot_idx(self) -> np.ndarray:
        return self._cached("pilot_idx", lambda: np.asarray(self.pilot_carriers, np.int64) + self.fft_len // 2)

    @property
    def active_idx(self) -> np.ndarray:
        return self._cached("active_idx", lambda: np.sort(np.concatenate([self.data_idx, self.pilot_idx])))

    @property
    def header_bits_per_symbol(self) -> int:
        return self.n_data * (1 if self.header_modulation == "bpsk" else 2)

    def pilot_values(self, first_symbol: int, n_symbols: int) -> np.ndarray:
        """Pilot values (n_symbols × n_pilots) for OFDM symbols counted from the first header symbol."""
        sets = self._cached("pilot_array", lambda: np.asarray(self.pilot_symbols, dtype=np.complex64))
        rows = (first_symbol + np.arange(n_symbols)) % len(sets)
        return sets[rows]

    @property
    def sync_word1(self) -> np.ndarray:
        """Schmidl & Cox symbol (shifted domain): √2·BPSK on even carriers → two equal halves in time."""
        sw = self._cache.get("sw1")
        if sw is None:
            n = self.fft_len
            sw = np.zeros(n, dtype=np.complex64)
            act = self.active_idx
            ks = act[((act - n // 2) % 2) == 0]
            sw[ks] = np.sqrt(2.0) * _bpsk(lfsr_bits(len(ks), seed=0x3A))
            self._cache["sw1"] = sw
        return sw

    @property
    def sync_word2(self) -> np.ndarray:
        """Channel-estimation symbol (shifted domain): BPSK on every active carrier."""
        sw = self._cache.get("sw2")
        if sw is None:
            sw = np.zeros(self.fft_len, dtype=np.complex64)
            act = self.active_idx
            sw[act] = _bpsk(lfsr_bits(len(act), seed=0x65))
            self._cache["sw2"] = sw
        return sw

    # ---- GNU Radio argument forms ----------------------------------------------------------
    def gr_occupied(self):
        return (list(self.occupied_carriers),)

    def gr_pilots(self):
        return (list(self.pilot_carriers),)

    def gr_pilot_symbols(self):
        return [list(row) for row in self.pilot_symbols]


def _profile_64() -> OfdmParams:
    occ = [k for k in range(-26, 27) if k != 0 and k not in (-21, -7, 7, 21)]
    return OfdmParams(64, 16, tuple(occ), (-21, -7, 7, 21), name="wifi64")


def _profile_wide(fft_len: int, cp_len: int, half: int, pilot_step: int, name: str) -> OfdmParams:
    active = [k for k in range(-half, half + 1) if k != 0]
    pilots = tuple(k for k in active if (k + half) % pilot_step == pilot_step // 2)
    occ = tuple(k for k in active if k not in pilots)
    return OfdmParams(fft_len, cp_len, occ, pilots, name=name, header_repetition=4)


# wifi64 keeps a single header copy (10 symbols, decodes at 0 dB); the wide profiles send 4
# (10 and 5 symbols: a 4000-symbol payload takes 23 and 12) and decode down to −5 dB.
PROFILES = {
    "wifi64": _profile_64,  # 802.11a/g-like: 48 data + 4 pilots, CP 1/4
    "wide256": lambda: _profile_wide(256, 32, 100, 10, "wide256"),  # 180 data + 20 pilots
    "wide512": lambda: _profile_wide(512, 64, 200, 10, "wide512"),  # 360 data + 40 pilots
}


def profile(name: str = "wifi64", **overrides) -> OfdmParams:
    """A named parameter profile, optionally with fields overridden (e.g. header_modulation,
    header_repetition)."""
    try:
        base = PROFILES[name]()
    except KeyError:
        raise ValueError(f"unknown OFDM profile {name!r}; choose one of {sorted(PROFILES)}") from None
    if not overrides:
        return base
    kw = dict(
        fft_len=base.fft_len, cp_len=base.cp_len, occupied_carriers=base.occupied_carriers,
        pilot_carriers=base.pilot_carriers, pilot_symbols=None, header_modulation=base.header_modulation,
        name=base.name, header_repetition=base.header_repetition,
    )
    unknown = set(overrides) - set(kw)
    if unknown:
        raise ValueError(f"unknown OFDM parameter(s): {sorted(unknown)}")
    kw.update(overrides)
    return OfdmParams(**kw)


def as_carriers(x: Sequence) -> Tuple[int, ...]:
    """Accept GR-style ((k0, k1, ...),) or a flat list of carriers."""
    if len(x) and isinstance(x[0], (list, tuple)):
        if len(x) != 1:
            raise ValueError("only one carrier set per frame is supported")
        x = x[0]
    return tuple(int(k) for k in x)
