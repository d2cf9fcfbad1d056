"""Frequency-selective multipath: standard tapped-delay-line profiles and a custom n-path model.

Tables (relative delay, relative power in dB):

* EPA / EVA / ETU — 3GPP TS 36.104 Annex B.2 (delays in ns, fixed; no delay-spread scaling).
* TDL-A / TDL-B / TDL-C (NLOS) and TDL-D / TDL-E (LOS) — 3GPP TR 38.901 Tables 7.7.2-1…5
  (normalised delays, scaled by the wanted rms delay spread, §7.7.3). For TDL-D/E the first
  tap is Rician: its LOS and Rayleigh entries (same delay) are merged into one tap of their
  total power with K = P_LOS / P_Rayleigh (13.3 dB for TDL-D, 22 dB for TDL-E).

Path powers are normalised to a total of 1 (unit average power gain). Each path fades
independently (Rayleigh, or Rician for the LOS tap), block-wise or with Doppler
(:class:`~.fading.SosFader`), and is put on the sample grid either by rounding its delay to the
nearest sample (``interp="round"``; paths that land on the same sample add in power) or by
band-limited (sinc) interpolation onto integer taps ``0…ntaps-1`` (``interp="sinc"``, as
gr-channels' selective_fading_model does; each path's truncated sinc is renormalised so that it
keeps its table power).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._util import as_c64, check_block_len, check_fdts, make_rng, real
from .fading import SosFader, _BlockGains

__all__ = ["PROFILES", "profile_names", "TapProfile", "tap_profile", "TapGrid", "discretize",
           "MultipathChannel", "NPathChannel", "npath_taps", "n_path", "rms_delay_spread"]

# name: (delay unit, [(delay, power_dB), ...], LOS K of first tap in dB or None)
# TDL-D / TDL-E: first two rows are the LOS (specular) and Rayleigh parts of tap 1.
PROFILES = {
    "EPA": ("ns", [(0, 0.0), (30, -1.0), (70, -2.0), (90, -3.0), (110, -8.0), (190, -17.2), (410, -20.8)], None),
    "EVA": ("ns", [(0, 0.0), (30, -1.5), (150, -1.4), (310, -3.6), (370, -0.6), (710, -9.1), (1090, -7.0),
                   (1730, -12.0), (2510, -16.9)], None),
    "ETU": ("ns", [(0, -1.0), (50, -1.0), (120, -1.0), (200, 0.0), (230, 0.0), (500, 0.0), (1600, -3.0),
                   (2300, -5.0), (5000, -7.0)], None),
    "TDL-A": ("norm", [(0.0000, -13.4), (0.3819, 0.0), (0.4025, -2.2), (0.5868, -4.0), (0.4610, -6.0),
                       (0.5375, -8.2), (0.6708, -9.9), (0.5750, -10.5), (0.7618, -7.5), (1.5375, -15.9),
                       (1.8978, -6.6), (2.2242, -16.7), (2.1718, -12.4), (2.4942, -15.2), (2.5119, -10.8),
                       (3.0582, -11.3), (4.0810, -12.7), (4.4579, -16.2), (4.5695, -18.3), (4.7966, -18.9),
                       (5.0066, -16.6), (5.3043, -19.9), (9.6586, -29.7)], None),
    "TDL-B": ("norm", [(0.0000, 0.0), (0.1072, -2.2), (0.2155, -4.0), (0.2095, -3.2), (0.2870, -9.8),
                       (0.2986, -1.2), (0.3752, -3.4), (0.5055, -5.2), (0.3681, -7.6), (0.3697, -3.0),
                       (0.5700, -8.9), (0.5283, -9.0), (1.1021, -4.8), (1.2756, -5.7), (1.5474, -7.5),
                       (1.7842, -1.9), (2.0169, -7.6), (2.8294, -12.2), (3.0219, -9.8), (3.6187, -11.4),
                       (4.1067, -14.9), (4.2790, -9.2), (4.7834, -11.3)], None),
    "TDL-C": ("norm", [(0.0000, -4.4), (0.2099, -1.2), (0.2219, -3.5), (0.2329, -5.2), (0.2176, -2.5),
                       (0.6366, 0.0), (0.6448, -2.2), (0.6560, -3.9), (0.6584, -7.4), (0.7935, -7.1),
                       (0.8213, -10.7), (0.9336, -11.1), (1.2285, -5.1), (1.3083, -6.8), (2.1704, -8.7),
                       (2.7105, -13.2), (4.2589, -13.9), (4.6003, -13.9), (5.4902, -15.8), (5.6077, -17.1),
                       (6.3065, -16.0), (6.6374, -15.7), (7.0427, -21.6), (8.6523, -22.8)], None),
    "TDL-D": ("norm", [(0.0, -0.2), (0.0, -13.5), (0.035, -18.8), (0.612, -21.0), (1.363, -22.8),
                       (1.405, -17.9), (1.804, -20.1), (2.596, -21.9), (1.775, -22.9), (4.042, -27.8),
                       (7.937, -23.6), (9.424, -24.8), (9.708, -30.0), (12.525, -27.7)], 13.3),
    "TDL-E": ("norm", [(0.0, -0.03), (0.0, -22.03), (0.5133, -15.8), (0.5440, -18.1), (0.5630, -19.8),
                       (0.5440, -22.9), (0.7112, -22.4), (1.9092, -18.6), (1.9293, -20.8), (1.9589, -22.6),
                       (2.6426, -22.3), (3.7136, -25.6), (5.4524, -20.2), (12.0034, -29.8),
                       (20.6519, -29.2)], 22.0),
}


def profile_names():
    return tuple(PROFILES)


def _lookup(name):
    if not isinstance(name, str):
        raise ValueError(f"profile must be a name or a TapProfile, got {name!r}; valid names: "
                         f"{', '.join(PROFILES)}")
    key = name.upper().replace("_", "").replace("-", "").replace(" ", "")
    for n in PROFILES:
        if n.replace("-", "") == key:
            return n
    raise ValueError(f"unknown multipath profile {name!r}; valid: {', '.join(PROFILES)} "
                     "(or a TapProfile / custom delays)")


@dataclass(frozen=True)
class TapProfile:
    """Paths of a multipath channel: delays in samples (float), powers (linear, sum 1), K of path 0."""

    delays: np.ndarray
    powers: np.ndarray
    k_first: float = 0.0
    name: str = "custom"

    @staticmethod
    def custom(delays, mags=None, powers_db=None, k_first=0.0, name="custom"):
        """Custom paths: ``delays`` in samples (>= 0) and either amplitudes ``mags`` or ``powers_db``."""
        d = np.asarray(delays, float).ravel()
        if d.size == 0:
            raise ValueError("need at least one path")
        if (mags is None) == (powers_db is None):
            raise ValueError("give exactly one of mags (amplitudes) or powers_db")
        if mags is not None:
            p = np.abs(np.asarray(mags, complex).ravel()) ** 2
        else:
            p = 10.0 ** (np.asarray(powers_db, float).ravel() / 10.0)
        if p.shape != d.shape:
            raise ValueError(f"delays and {'mags' if mags is not None else 'powers_db'} differ in length "
                             f"({d.size} vs {p.size})")
        if np.any(~np.isfinite(d)) or np.any(d < 0):
            raise ValueError(f"path delays must be finite and >= 0 samples, got {d}")
        if np.any(~np.isfinite(p)) or p.sum() <= 0:
            raise ValueError("path powers must be finite and not all zero")
        k = real("k_first", k_first)
        if k < 0:
            raise ValueError(f"Rician K factor must be >= 0, got {k_first!r}")
        return TapProfile(d, p / p.sum(), k, name)


def tap_profile(profile, sample_rate=None, delay_spread=None) -> TapProfile:
    """Paths of a standard profile on a sample grid: delays in samples at ``sample_rate`` (Hz).

    TDL-* profiles need ``delay_spread`` (rms, seconds; TR 38.901 Table 7.7.3-1 examples:
    10 ns very short, 30 ns short, 100 ns nominal, 300 ns long, 1000 ns very long).
    EPA/EVA/ETU have fixed delays and reject ``delay_spread``.
    """
    if isinstance(profile, TapProfile):
        return profile
    name = _lookup(profile)
    unit, rows, k_db = PROFILES[name]
    fs = real("sample_rate", sample_rate) if sample_rate is not None else None
    if fs is None or fs <= 0:
        raise ValueError(f"sample_rate (Hz, > 0) is required for profile {name}, got {sample_rate!r}")
    d = np.array([r[0] for r in rows], float)
    p = 10.0 ** (np.array([r[1] for r in rows], float) / 10.0)
    if unit == "ns":
        if delay_spread is not None:
            raise ValueError(f"{name} has fixed delays (TS 36.104); delay_spread applies to TDL-* only")
        d = d * 1e-9 * fs
    else:
        ds = real("delay_spread", delay_spread) if delay_spread is not None else None
        if ds is None or ds <= 0:
            raise ValueError(f"{name} needs delay_spread (rms, seconds, > 0; e.g. 100e-9 nominal), "
                             f"got {delay_spread!r}")
        d = d * ds * fs
    k = 0.0
    if k_db is not None:  # merge the LOS and Rayleigh rows of tap 1 into one Rician path
        k = 10.0 ** (k_db / 10.0)
        d = d[1:]
        p = np.concatenate([[p[0] + p[1]], p[2:]])
    return TapProfile(d, p / p.sum(), k, name)


def rms_delay_spread(delays, powers) -> float:
    """RMS delay spread of a power delay profile (same unit as ``delays``)."""
    d = np.asarray(delays, float)
    p = np.asarray(powers, float)
    p = p / p.sum()
    mean = (p * d).sum()
    return float(np.sqrt((p * (d - mean) ** 2).sum()))


@dataclass(frozen=True)
class TapGrid:
    """Paths mapped onto integer taps: ``taps[n, :] = gains[n, :] @ weights`` (weights: (P, ntaps)).

    ``delays``/``mags`` are the per-path delay (samples, rounded in "round" mode) and amplitude
    as handed to gr-channels' selective_fading_model, which builds the same ``weights``.
    """

    delays: np.ndarray
    mags: np.ndarray
    weights: np.ndarray
    k_first: float
    interp: str

    @property
    def ntaps(self) -> int:
        return self.weights.shape[1]

    def pdp(self) -> np.ndarray:
        """Expected power per tap (sums to 1)."""
        return (self.weights ** 2).sum(0)


def discretize(profile: TapProfile, interp: str = "round", sinc_margin: int = 8) -> TapGrid:
    """Put the paths of ``profile`` onto the sample grid (see module docstring)."""
    if interp not in ("round", "sinc"):
        raise ValueError(f"interp must be 'round' or 'sinc', got {interp!r}")
    d = np.asarray(profile.delays, float)
    amp = np.sqrt(np.asarray(profile.powers, float))
    if interp == "round":
        d = np.floor(d + 0.5)
        ntaps = int(d.max()) + 1
    else:
        m = int(sinc_margin)
        if m < 0:
            raise ValueError(f"sinc_margin must be >= 0, got {sinc_margin!r}")
        ntaps = int(math.ceil(d.max())) + 1 + m
    dist = np.arange(ntaps)[None, :] - d[:, None]
    sinc = np.where(dist == np.round(dist), (dist == 0).astype(float), np.sinc(dist))  # exact at integers
    norm = np.sqrt((sinc ** 2).sum(1))                       # truncated sinc energy of each path
    mags = amp / norm                                        # what selective_fading_model gets
    weights = mags[:, None] * sinc                           # each path keeps its table power
    return TapGrid(d, mags, weights, float(profile.k_first), interp)


class _TapFilter:
    """Causal time-varying FIR ``y[n] = Σ_k taps[n, k] x[n-k]`` with input history across calls."""

    def __init__(self, ntaps):
        self.ntaps = ntaps
        self.hist = np.zeros(ntaps - 1, np.complex64)

    def __call__(self, x, taps_fn, cols):
        n, L = x.size, self.ntaps
        xe = np.concatenate([self.hist, x])
        y = np.zeros(n, np.complex128)
        chunk = max(1, (1 << 20) // max(1, len(cols)))
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            t = taps_fn(s, e)                                # (e-s, len(cols))
            for j, k in enumerate(cols):
                y[s:e] += t[:, j] * xe[L - 1 - k + s: L - 1 - k + e]
        self.hist = xe[xe.size - (L - 1):] if L > 1 else self.hist
        return y.astype(np.complex64)


class MultipathChannel:
    """Tapped-delay-line fading channel with a standard or custom profile, E[Σ|taps|²] = 1.

    Parameters
    ----------
    profile : "EPA" | "EVA" | "ETU" | "TDL-A" … "TDL-E", or a :class:`TapProfile`
        (``TapProfile.custom(delays_samples, mags=…)`` for an n-path fading channel).
    sample_rate : Hz (required for named profiles).
    delay_spread : rms delay spread in seconds (TDL-* only).
    fdts : normalised max Doppler fD·Ts; > 0 time-varying (each path its own sum-of-sinusoids
        process, continuous across calls), 0 block fading.
    block_len : block fading only: None new taps per call, 0 static, B > 0 every B samples.
    interp : "round" (delays rounded to samples) or "sinc" (band-limited interpolation).
    k_first : override the K factor of the first path (default: the profile's; TDL-D/E LOS).

    The filter is causal and keeps its input history across calls (a stream).
    """

    def __init__(self, profile="EVA", sample_rate=None, delay_spread=None, fdts=0.0, block_len=None,
                 interp="round", n_sinusoids: int = 16, sinc_margin: int = 8, k_first=None,
                 seed=None, rng=None):
        tp = tap_profile(profile, sample_rate, delay_spread)
        if k_first is not None:
            kf = real("k_first", k_first)
            if kf < 0:
                raise ValueError(f"Rician K factor must be >= 0, got {k_first!r}")
            tp = TapProfile(tp.delays, tp.powers, kf, tp.name)
        self.profile = tp
        self.grid = discretize(tp, interp, sinc_margin)
        self.fdts = check_fdts(fdts)
        self.block_len = check_block_len(block_len)
        self.rng = make_rng(rng, seed)
        p = tp.delays.size
        k = np.zeros(p)
        k[0] = tp.k_first
        if self.fdts > 0:
            self._gen = SosFader(self.fdts, p, k, n_sinusoids, self.rng)
        else:
            self._gen = _BlockGains(self.block_len, p, k, self.rng)
        w = self.grid.weights
        self._cols = np.flatnonzero(np.any(w != 0, axis=0))
        self._w = w[:, self._cols]
        self._filt = _TapFilter(self.grid.ntaps)

    @property
    def ntaps(self):
        return self.grid.ntaps

    def set_fdts(self, fdts):
        fdts = check_fdts(fdts)
        if (fdts > 0) != (self.fdts > 0):
            raise ValueError("set_fdts cannot switch between block fading (fdts=0) and Doppler fading (fdts>0)")
        self.fdts = fdts
        if fdts > 0:
            self._gen.set_fdts(fdts)

    def expected_pdp(self) -> np.ndarray:
        """Average power of each integer tap 0…ntaps-1 (from the table; sums to 1)."""
        return self.grid.pdp()

    def __call__(self, x) -> np.ndarray:
        x = as_c64(x)
        g = self._gen.generate(x.size)
        return self._filt(x, lambda s, e: g[s:e] @ self._w, self._cols)

    def __repr__(self):
        return (f"MultipathChannel(profile={self.profile.name!r}, paths={self.profile.delays.size}, "
                f"ntaps={self.ntaps}, fdts={self.fdts!r}, block_len={self.block_len!r}, "
                f"interp={self.grid.interp!r})")


def npath_taps(delays, gains, interp="sinc", normalize=True, ntaps=None, sinc_margin: int = 8) -> np.ndarray:
    """Complex FIR taps of a static n-path channel ``Σ_p gains[p] δ(t - delays[p])``.

    ``delays`` in samples (>= 0, fractional allowed); "sinc" places fractional delays by
    band-limited interpolation (causal taps 0…ntaps-1), "round" rounds them. ``normalize``
    scales the taps to unit energy (unit power gain).
    """
    d = np.asarray(delays, float).ravel()
    g = np.asarray(gains, complex).ravel()
    if d.size == 0 or d.shape != g.shape:
        raise ValueError(f"delays and gains must be non-empty and of equal length ({d.size} vs {g.size})")
    if np.any(~np.isfinite(d)) or np.any(d < 0):
        raise ValueError(f"delays must be finite and >= 0 samples, got {d}")
    if np.any(~np.isfinite(g)):
        raise ValueError("gains must be finite")
    if interp not in ("round", "sinc"):
        raise ValueError(f"interp must be 'round' or 'sinc', got {interp!r}")
    if interp == "round":
        d = np.floor(d + 0.5)
    n = ntaps if ntaps is not None else int(math.ceil(d.max())) + 1 + (int(sinc_margin) if interp == "sinc"
                                                                        and np.any(d != np.round(d)) else 0)
    n = int(n)
    if n < int(math.ceil(d.max())) + 1:
        raise ValueError(f"ntaps={n} is shorter than the largest delay {d.max()}")
    dist = np.arange(n)[None, :] - d[:, None]
    h = (g[:, None] * np.where(dist == np.round(dist), (dist == 0).astype(float), np.sinc(dist))).sum(0)
    if normalize:
        e = np.sqrt((np.abs(h) ** 2).sum())
        if e == 0:
            raise ValueError("the n-path taps are all zero")
        h = h / e
    return h.astype(np.complex64)


class NPathChannel:
    """Static n-path channel (FIR with :func:`npath_taps`), input history kept across calls."""

    def __init__(self, delays=(0.0,), gains=(1.0,), interp="sinc", normalize=True, ntaps=None):
        self.taps = npath_taps(delays, gains, interp, normalize, ntaps)
        self._hist = np.zeros(self.taps.size - 1, np.complex64)

    def __call__(self, x) -> np.ndarray:
        x = as_c64(x)
        xe = np.concatenate([self._hist, x])
        y = np.convolve(xe, self.taps)[self.taps.size - 1: xe.size]
        if self.taps.size > 1:
            self._hist = xe[xe.size - (self.taps.size - 1):]
        return y.astype(np.complex64)


def n_path(x, delays, gains, interp="sinc", normalize=True) -> np.ndarray:
    """One-shot static n-path channel (zero initial state), same length as ``x``."""
    return NPathChannel(delays, gains, interp, normalize)(x)
