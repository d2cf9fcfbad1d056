"""Additive white Gaussian noise with the project's SNR convention (Es/N0, Es = 1)."""
from __future__ import annotations

import numpy as np

from ._util import as_c64, make_rng, noise_var_to_snr, snr_to_noise_var

__all__ = ["snr_to_noise_var", "noise_var_to_snr", "complex_noise", "awgn", "AwgnChannel"]


def complex_noise(n: int, noise_var: float, rng=None) -> np.ndarray:
    """``n`` samples of circular complex Gaussian noise CN(0, noise_var), complex64."""
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    noise_var = float(noise_var)
    if not noise_var >= 0.0:
        raise ValueError(f"noise_var must be >= 0, got {noise_var!r}")
    rng = make_rng(rng)
    if noise_var == 0.0:
        return np.zeros(n, np.complex64)
    w = rng.standard_normal((n, 2), dtype=np.float32)
    w *= np.float32(np.sqrt(noise_var / 2.0))
    return w.view(np.complex64)[:, 0]


def awgn(x, snr_db, rng=None) -> np.ndarray:
    """``x + CN(0, σ²)`` with ``σ² = 10**(-snr_db/10)`` (complex64 in, complex64 out).

    The signal power is NOT measured: the transmitter is assumed to send Es = 1 per complex
    symbol (the OFDM TX normalises each data subcarrier to Es = 1 and uses a unitary IFFT, so
    per-subcarrier Es/N0 equals ``snr_db``). ``snr_db=None`` or ``inf`` adds nothing.
    ``rng``: numpy Generator, int seed, or None (fresh entropy).
    """
    x = as_c64(x)
    var = snr_to_noise_var(snr_db)
    if var == 0.0:
        return x.copy()
    return x + complex_noise(x.size, var, rng)


class AwgnChannel:
    """Stateful AWGN stage (one Generator across calls); ``__call__(x) -> x + noise``."""

    def __init__(self, snr_db=None, seed=None, rng=None):
        self.rng = make_rng(rng, seed)
        self.set_snr_db(snr_db)

    def set_snr_db(self, snr_db):
        self.noise_var = snr_to_noise_var(snr_db)
        self.snr_db = float("inf") if self.noise_var == 0.0 else float(snr_db)

    def __call__(self, x) -> np.ndarray:
        x = as_c64(x)
        if self.noise_var == 0.0:
            return x.copy()
        return x + complex_noise(x.size, self.noise_var, self.rng)

    def __repr__(self):
        return f"AwgnChannel(snr_db={self.snr_db!r})"
