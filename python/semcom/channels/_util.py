"""Shared helpers of the channel core: argument checks, RNG handling, the SNR convention."""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["snr_to_noise_var", "noise_var_to_snr", "make_rng", "as_c64", "check_fdts", "check_k",
           "check_block_len", "check_seed"]


def snr_to_noise_var(snr_db) -> float:
    """Noise variance per complex sample for an SNR in dB — the one place for the convention.

    SNR means Es/N0 per complex channel use with the transmit power normalised to Es = 1 per
    complex symbol, so the channel adds CN(0, σ²) with ``σ² = 10**(-snr_db/10)`` (total complex
    variance; σ²/2 per real dimension). ``None`` or ``+inf`` means no noise (σ² = 0).
    NaN, -inf and non-numbers raise ValueError.
    """
    if snr_db is None:
        return 0.0
    if isinstance(snr_db, (bool, np.bool_)) or not isinstance(snr_db, numbers.Real):
        raise ValueError(f"snr_db must be a real number in dB (or None/inf for no noise), got {snr_db!r}")
    s = float(snr_db)
    if math.isnan(s):
        raise ValueError("snr_db is NaN")
    if s == math.inf:
        return 0.0
    if s == -math.inf:
        raise ValueError("snr_db = -inf means infinite noise power")
    return 10.0 ** (-s / 10.0)


def noise_var_to_snr(noise_var) -> float:
    """Inverse of :func:`snr_to_noise_var` (σ² = 0 → +inf dB)."""
    v = float(noise_var)
    if not v >= 0.0:
        raise ValueError(f"noise variance must be >= 0, got {noise_var!r}")
    return math.inf if v == 0.0 else -10.0 * math.log10(v)


def check_seed(seed):
    """None (fresh entropy) or an integer >= 0."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be None or an integer >= 0, got {seed!r}")
    return int(seed)


def make_rng(rng=None, seed=None) -> np.random.Generator:
    """A numpy Generator from ``rng`` (Generator, int seed or None) or ``seed``.

    Passing a Generator shares it (its state advances); an int or ``seed`` gives a fresh,
    reproducible generator; both None draw fresh OS entropy.
    """
    if rng is not None and seed is not None:
        raise ValueError("give either rng or seed, not both")
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is not None:
        if isinstance(rng, np.random.SeedSequence):
            return np.random.default_rng(rng)
        return np.random.default_rng(check_seed(rng))
    return np.random.default_rng(check_seed(seed))


def as_c64(x, name: str = "x") -> np.ndarray:
    """1-D complex64 view/copy of ``x`` (ValueError for other shapes or non-finite values)."""
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of complex samples, got shape {a.shape}")
    if a.dtype != np.complex64:
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
        a = a.astype(np.complex64)
    return a


def _real(name, v):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v!r}")
    return v


def check_fdts(fdts) -> float:
    """Normalised maximum Doppler fD·Ts: 0 <= fdts < 0.5 (0 = no time variation)."""
    v = _real("fdts", fdts)
    if not 0.0 <= v < 0.5:
        raise ValueError(f"fdts (normalised Doppler fD*Ts) must satisfy 0 <= fdts < 0.5, got {fdts!r}")
    return v


def check_k(k) -> float:
    """Rician K factor (linear, LOS power / scattered power): finite and >= 0."""
    v = _real("k", k)
    if v < 0.0:
        raise ValueError(f"Rician K factor must be >= 0 (linear, not dB), got {k!r}")
    return v


def check_block_len(block_len):
    """None (one coefficient per call), 0 (static) or a positive integer."""
    if block_len is None:
        return None
    if isinstance(block_len, (bool, np.bool_)) or not isinstance(block_len, numbers.Integral) or block_len < 0:
        raise ValueError(f"block_len must be None (new coefficient per call), 0 (static) or a positive "
                         f"integer, got {block_len!r}")
    return int(block_len)


def real(name, v):
    return _real(name, v)
