"""Small estimators used to check channel statistics (and handy in experiments)."""
from __future__ import annotations

import numpy as np

__all__ = ["measure_snr_db", "rician_k_moments", "autocorr", "jakes_autocorr"]


def measure_snr_db(tx, rx) -> float:
    """Es/N0 in dB measured as mean|tx|² / mean|rx − tx|² (tx and rx aligned, same length)."""
    tx = np.asarray(tx, np.complex128)
    rx = np.asarray(rx, np.complex128)
    if tx.shape != rx.shape:
        raise ValueError(f"tx and rx differ in shape: {tx.shape} vs {rx.shape}")
    return float(10 * np.log10(np.mean(np.abs(tx) ** 2) / np.mean(np.abs(rx - tx) ** 2)))


def rician_k_moments(h) -> float:
    """Rician K (linear) from the 2nd and 4th moments of |h| (Greenstein et al., 1999).

    With Ga = E|h|², Gv = var(|h|²): K = sqrt(1 − Gv/Ga²) / (1 − sqrt(1 − Gv/Ga²)); 0 for Rayleigh.
    """
    p = np.abs(np.asarray(h)) ** 2
    ga, gv = p.mean(), p.var()
    s = np.sqrt(max(0.0, 1.0 - gv / ga ** 2))
    return float(s / (1.0 - s)) if s < 1 else float("inf")


def autocorr(h, lags) -> np.ndarray:
    """Normalised time-average autocorrelation E[h[n+τ] h*[n]] / E|h|² at integer ``lags`` (complex)."""
    h = np.asarray(h, np.complex128)
    p = np.mean(np.abs(h) ** 2)
    out = []
    for t in np.atleast_1d(lags):
        t = int(t)
        out.append(np.mean(h[t:] * np.conj(h[:h.size - t])) / p)
    return np.array(out)


def jakes_autocorr(fdts, lags) -> np.ndarray:
    """Clarke/Jakes reference J0(2π fdts τ)."""
    from scipy.special import j0

    return j0(2 * np.pi * float(fdts) * np.asarray(lags, float))
