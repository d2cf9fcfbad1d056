"""Gray-mapped square QAM (BPSK, QPSK, 16-QAM, 64-QAM) with max-log soft demapping (no GNU Radio import).

Conventions: unit mean power over the constellation; ``bits_per_symbol`` bits per symbol,
most significant first; a square M-QAM symbol carries its first half of bits on the
in-phase axis and the second half on the quadrature axis, each half Gray-coded over the
√M amplitude levels. BPSK maps bit 0 → +1 and bit 1 → −1 on the real axis.

LLRs are log P(b=0 | y) / P(b=1 | y): positive favours 0. With complex noise CN(0, σ²)
(the project's SNR convention, σ² = 10^(−SNR/10)), the max-log LLR of a bit is
(min over points with bit 1 of |y − x|² − min over points with bit 0 of |y − x|²) / σ²;
for square QAM the minimisation separates into the two axes.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Qam", "MODULATIONS"]

#: modulation name → order
MODULATIONS = {"bpsk": 2, "qpsk": 4, "16qam": 16, "64qam": 64}


class Qam:
    """One Gray-mapped constellation: ``modulate`` bits → symbols, ``demap`` symbols → LLRs."""

    def __init__(self, order: int):
        if order not in MODULATIONS.values():
            raise ValueError(f"QAM order must be one of {sorted(MODULATIONS.values())}, got {order}")
        self.order = int(order)
        self.bits_per_symbol = int(np.log2(order))
        self.name = next(k for k, v in MODULATIONS.items() if v == order)
        if order == 2:
            self._levels = np.array([1.0, -1.0])           # level index = bit value
            self._axis_bits = 1
        else:
            per_axis = int(np.sqrt(order))
            self._axis_bits = self.bits_per_symbol // 2
            d = np.sqrt(3.0 / (2.0 * (order - 1)))         # unit mean power for the square grid
            amp = (2 * np.arange(per_axis) - (per_axis - 1)) * d
            gray = np.arange(per_axis) ^ (np.arange(per_axis) >> 1)
            self._levels = np.empty(per_axis)
            self._levels[gray] = amp                        # label → amplitude
        nb = self._axis_bits
        labels = np.arange(self._levels.size)
        # bit j (MSB first) of every label: (levels, nb) booleans for the demapper
        self._label_bits = ((labels[:, None] >> (nb - 1 - np.arange(nb))) & 1).astype(bool)
        self._weights = 1 << (nb - 1 - np.arange(nb))

    def __repr__(self):
        return f"Qam({self.name})"

    def constellation(self) -> np.ndarray:
        """All points, indexed by their bit label (complex128)."""
        if self.order == 2:
            return self._levels.astype(np.complex128)
        n = self._levels.size
        return (self._levels[np.arange(self.order) >> self._axis_bits]
                + 1j * self._levels[np.arange(self.order) & (n - 1)])

    def modulate(self, bits: np.ndarray) -> np.ndarray:
        """0/1 array (length a multiple of ``bits_per_symbol``) → complex64 symbols."""
        b = np.asarray(bits, np.uint8).reshape(-1, self.bits_per_symbol)
        if self.order == 2:
            return self._levels[b[:, 0]].astype(np.complex64)
        nb = self._axis_bits
        i_lab = b[:, :nb] @ self._weights
        q_lab = b[:, nb:] @ self._weights
        return (self._levels[i_lab] + 1j * self._levels[q_lab]).astype(np.complex64)

    def _axis_llr(self, y: np.ndarray, inv_nv: np.ndarray) -> np.ndarray:
        """Max-log LLRs of one axis: y (N,) real, inv_nv (N,) = 1/σ² → (N, axis bits)."""
        dist = (y[:, None] - self._levels[None, :]) ** 2                      # (N, levels)
        big = np.float32(np.inf)
        d0 = np.where(~self._label_bits[None], dist[:, :, None], big).min(axis=1)
        d1 = np.where(self._label_bits[None], dist[:, :, None], big).min(axis=1)
        return (d1 - d0) * inv_nv[:, None]

    def demap(self, symbols: np.ndarray, noise_var) -> np.ndarray:
        """Received symbols + noise variance (scalar or per symbol, complex CN(0, σ²)) → float32 LLRs."""
        y = np.asarray(symbols, np.complex64)
        nv = np.broadcast_to(np.asarray(noise_var, np.float32), y.shape)
        inv = 1.0 / np.maximum(nv, np.float32(1e-12))
        if self.order == 2:
            return (4.0 * y.real * inv).astype(np.float32)
        li = self._axis_llr(y.real.astype(np.float32), inv)
        lq = self._axis_llr(y.imag.astype(np.float32), inv)
        return np.concatenate([li, lq], axis=1).reshape(-1).astype(np.float32)
