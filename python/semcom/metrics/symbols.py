"""Symbol-level link metrics."""
import numpy as np


def nmse_db(received, sent) -> float:
    """Normalised MSE (dB) of received symbols w.r.t. the sent ones: E|y-x|² / E|x|²."""
    x = np.asarray(sent)
    y = np.asarray(received)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: received {y.shape} vs sent {x.shape}")
    err = float(np.mean(np.abs(y - x) ** 2))
    return float(10 * np.log10(max(err, 1e-30) / max(float(np.mean(np.abs(x) ** 2)), 1e-30)))


def measured_snr_db(received, sent) -> float:
    """Es/N0 (dB) measured as E|x|² / E|y-x|² (the inverse of :func:`nmse_db`)."""
    return -nmse_db(received, sent)
