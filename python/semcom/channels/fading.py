"""Flat fading: Rayleigh / Rician, block fading or time-varying (sum of sinusoids, Doppler).

All gains have unit average power, E|h|^2 = 1, so the average received Es/N0 equals the SNR
setting of the noise stage.

Time-varying model (``fdts > 0``): the statistical sum-of-sinusoids model of Zheng & Xiao
(IEEE Trans. Commun. 2003) — per complex process ``M`` sinusoids on each quadrature,

    hI[n] = sqrt(1/M) * sum_m cos(2π fdts cos(α_m) n + φ_m)
    hQ[n] = sqrt(1/M) * sum_m cos(2π fdts sin(α_m) n + ψ_m),   α_m = (2πm − π + θ) / (4M),

with θ, φ_m, ψ_m uniform. The ensemble autocorrelation E[h[n+τ] h*[n]] is J0(2π fdts τ)
(Clarke/Jakes spectrum) for any M; one realisation approaches it as M grows. The Rician LOS
term is ``sqrt(K/(K+1)) exp(j(2π fdts cos(θ0) n + φ0))`` (θ0, φ0 uniform), the scattered part
is scaled by ``sqrt(1/(K+1))``. Phases are carried from call to call, so splitting a stream
into chunks gives exactly the same gains as one call.

Block model (``fdts == 0``): i.i.d. coefficients, CN(0, 1) for Rayleigh and
``sqrt(K/(K+1)) e^{jφ} + sqrt(1/(K+1)) CN(0, 1)`` with uniform φ per block for Rician.
"""
from __future__ import annotations

import numpy as np

from ._util import as_c64, check_block_len, check_fdts, check_k, make_rng

__all__ = ["SosFader", "draw_gains", "FlatFading", "flat_fading", "FADING_KINDS"]

FADING_KINDS = ("rayleigh", "rician")
_TWO_PI = 2.0 * np.pi
_CHUNK_ELEMS = 1 << 21


def _check_kind(kind, k):
    if not isinstance(kind, str) or kind.lower() not in FADING_KINDS:
        raise ValueError(f"unknown fading kind {kind!r}; valid: {', '.join(FADING_KINDS)}")
    kind = kind.lower()
    k = check_k(k if k is not None else 0.0)
    if kind == "rayleigh" and k != 0.0:
        raise ValueError(f"k={k!r} given with kind='rayleigh': the K factor applies to kind='rician' only "
                         "(rician with k=0 is Rayleigh)")
    return kind, k


def draw_gains(shape, k=0.0, rng=None) -> np.ndarray:
    """I.i.d. block-fading gains (complex128) of unit mean power; ``k`` is the Rician K (0: Rayleigh).

    ``k`` may be a scalar or broadcast against ``shape`` (e.g. one K per path, last axis).
    Every gain consumes exactly three uniforms, in order (CN(0,1) by the polar Box-Muller form,
    plus the LOS phase), so drawing (n1,) then (n2,) gives the same gains as drawing (n1+n2,):
    block fading does not depend on how a stream is cut into calls.
    """
    rng = make_rng(rng)
    k = np.asarray(k, float)
    if np.any(~np.isfinite(k)) or np.any(k < 0):
        raise ValueError(f"Rician K factor must be finite and >= 0, got {k!r}")
    shape = tuple(np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
    u = rng.random(shape + (3,))
    g = np.sqrt(-np.log1p(-u[..., 0])) * np.exp(2j * np.pi * u[..., 1])       # CN(0, 1)
    if np.any(k > 0):
        phi = 2 * np.pi * u[..., 2] - np.pi
        g = np.sqrt(k / (k + 1.0)) * np.exp(1j * phi) + np.sqrt(1.0 / (k + 1.0)) * g
    return g


class SosFader:
    """Bank of ``n_paths`` independent unit-power fading processes with max Doppler ``fdts``.

    ``generate(n)`` returns an ``(n, n_paths)`` complex128 array and advances the state, so
    consecutive calls form one continuous process. ``k``: Rician K per path (scalar or array;
    0 = Rayleigh). ``n_sinusoids``: M per quadrature (16 by default; accuracy of one realisation
    improves with M, cost is linear in M).
    """

    def __init__(self, fdts, n_paths: int = 1, k=0.0, n_sinusoids: int = 16, rng=None, seed=None):
        self.fdts = check_fdts(fdts)
        n_paths = int(n_paths)
        m = int(n_sinusoids)
        if n_paths < 1:
            raise ValueError(f"n_paths must be >= 1, got {n_paths}")
        if m < 1:
            raise ValueError(f"n_sinusoids must be >= 1, got {n_sinusoids!r}")
        k = np.broadcast_to(np.asarray(k, float), (n_paths,)).copy()
        if np.any(~np.isfinite(k)) or np.any(k < 0):
            raise ValueError(f"Rician K factor must be finite and >= 0, got {k!r}")
        self.k = k
        self.n_paths, self.n_sinusoids = n_paths, m
        rng = make_rng(rng, seed)
        theta = rng.uniform(-np.pi, np.pi, (n_paths, 1))
        alpha = (_TWO_PI * np.arange(1, m + 1)[None, :] - np.pi + theta) / (4.0 * m)
        self._cos_a, self._sin_a = np.cos(alpha), np.sin(alpha)        # (P, M) Doppler factors
        self._ph_i = rng.uniform(-np.pi, np.pi, (n_paths, m))
        self._ph_q = rng.uniform(-np.pi, np.pi, (n_paths, m))
        self._cos_los = np.cos(rng.uniform(-np.pi, np.pi, n_paths))
        self._ph_los = rng.uniform(-np.pi, np.pi, n_paths)
        self._a_los = np.sqrt(k / (k + 1.0))
        self._b_nlos = np.sqrt(1.0 / (k + 1.0))
        self._scale = np.sqrt(1.0 / m)
        self.n_generated = 0

    def set_fdts(self, fdts):
        """Change the Doppler; the process stays continuous (phases are kept)."""
        self.fdts = check_fdts(fdts)

    def set_k(self, k):
        """Change the Rician K of every path (scalar or per-path array); phases are kept."""
        k = np.broadcast_to(np.asarray(k, float), (self.n_paths,)).copy()
        if np.any(~np.isfinite(k)) or np.any(k < 0):
            raise ValueError(f"Rician K factor must be finite and >= 0, got {k!r}")
        self.k = k
        self._a_los = np.sqrt(k / (k + 1.0))
        self._b_nlos = np.sqrt(1.0 / (k + 1.0))

    def generate(self, n: int) -> np.ndarray:
        n = int(n)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        p, m = self.n_paths, self.n_sinusoids
        out = np.empty((n, p), np.complex128)
        w = _TWO_PI * self.fdts
        wi, wq, wl = w * self._cos_a, w * self._sin_a, w * self._cos_los     # rad/sample
        chunk = max(1, _CHUNK_ELEMS // (p * m))
        for s in range(0, n, chunk):
            L = min(chunk, n - s)
            t = np.arange(L, dtype=float)[:, None, None]
            hi = np.cos(self._ph_i[None] + wi[None] * t).sum(-1)
            hq = np.cos(self._ph_q[None] + wq[None] * t).sum(-1)
            h = (hi + 1j * hq) * self._scale
            if np.any(self._a_los > 0):
                los = np.exp(1j * (self._ph_los[None] + wl[None] * t[:, :, 0]))
                h = self._b_nlos * h + self._a_los * los
            out[s:s + L] = h
            self._ph_i = np.mod(self._ph_i + wi * L, _TWO_PI)
            self._ph_q = np.mod(self._ph_q + wq * L, _TWO_PI)
            self._ph_los = np.mod(self._ph_los + wl * L, _TWO_PI)
        self.n_generated += n
        return out


class _BlockGains:
    """Piecewise-constant gains for ``n_paths`` paths: per call (None), static (0) or per block."""

    def __init__(self, block_len, n_paths, k, rng):
        self.block_len = check_block_len(block_len)
        self.n_paths, self.k, self.rng = n_paths, k, rng
        self._cur = None
        self._left = 0
        if self.block_len == 0:
            self._cur = draw_gains((n_paths,), k, rng)

    def generate(self, n):
        p = self.n_paths
        if self.block_len == 0:
            return np.broadcast_to(self._cur, (n, p)).copy()
        if self.block_len is None:
            return np.broadcast_to(draw_gains((p,), self.k, self.rng), (n, p)).copy()
        B = self.block_len
        out = np.empty((n, p), np.complex128)
        first = min(self._left, n)
        if first:
            out[:first] = self._cur
        rem = n - first
        if rem:
            nb = -(-rem // B)
            g = draw_gains((nb, p), self.k, self.rng)
            out[first:] = np.repeat(g, B, axis=0)[:rem]
            self._cur = g[-1]
            self._left = nb * B - rem
        else:
            self._left -= first
        return out


class FlatFading:
    """Flat (frequency non-selective) fading stage: ``y[n] = h[n] x[n]``, E|h|² = 1.

    Parameters
    ----------
    kind : "rayleigh" or "rician"
    k : Rician K factor, linear (LOS power / scattered power); must be 0 for Rayleigh.
    fdts : normalised maximum Doppler fD·Ts in [0, 0.5). ``> 0``: time-varying sum-of-sinusoids
        process, continuous across calls (``block_len`` is ignored). ``0``: block fading.
    block_len : block fading only. None: one new coefficient per call (per packet);
        0: one coefficient for ever (static channel); B > 0: a new coefficient every B samples,
        block boundaries continue across calls.
    n_sinusoids : sinusoids per quadrature of the Doppler model.
    seed / rng : reproducibility (see :func:`make_rng`).

    After each call ``last_gains`` holds the gains applied (complex128), e.g. for a genie receiver.
    """

    def __init__(self, kind="rayleigh", k=0.0, fdts=0.0, block_len=None, n_sinusoids: int = 16,
                 seed=None, rng=None):
        self.kind, self.k = _check_kind(kind, k)
        self.fdts = check_fdts(fdts)
        self.block_len = check_block_len(block_len)
        self.rng = make_rng(rng, seed)
        if self.fdts > 0:
            self._gen = SosFader(self.fdts, 1, self.k, n_sinusoids, self.rng)
        else:
            self._gen = _BlockGains(self.block_len, 1, self.k, self.rng)
        self.last_gains = np.zeros(0, np.complex128)

    def set_fdts(self, fdts):
        """Change the Doppler of a time-varying channel (continuous); cannot switch block <-> Doppler."""
        fdts = check_fdts(fdts)
        if (fdts > 0) != (self.fdts > 0):
            raise ValueError("set_fdts cannot switch between block fading (fdts=0) and Doppler fading "
                             "(fdts>0); build a new FlatFading")
        self.fdts = fdts
        if fdts > 0:
            self._gen.set_fdts(fdts)

    def set_k(self, k):
        """Change the Rician K (kind='rician' only); applies from the next sample / block."""
        if self.kind != "rician":
            raise ValueError("set_k applies to kind='rician' only")
        self.k = check_k(k)
        if self.fdts > 0:
            self._gen.set_k(self.k)
        else:
            self._gen.k = self.k

    def gains(self, n: int) -> np.ndarray:
        """Next ``n`` gains (advances the state, as a call with ``n`` samples would)."""
        return self._gen.generate(int(n))[:, 0]

    def __call__(self, x) -> np.ndarray:
        x = as_c64(x)
        h = self.gains(x.size)
        self.last_gains = h
        return (x * h).astype(np.complex64)

    def __repr__(self):
        return (f"FlatFading(kind={self.kind!r}, k={self.k!r}, fdts={self.fdts!r}, "
                f"block_len={self.block_len!r})")


def flat_fading(x, kind="rayleigh", k=0.0, fdts=0.0, block_len=None, rng=None, return_gains=False):
    """One-shot :class:`FlatFading` (fresh state): ``y = h·x``; optionally also return ``h``."""
    ch = FlatFading(kind, k, fdts, block_len, rng=rng)
    y = ch(x)
    return (y, ch.last_gains) if return_gains else y
