"""Frame assembly, the streaming frame receiver, and a numpy reference modem.

``build_frame``/``frame_grid``/``grid_to_time`` make a frame; ``FrameReceiver`` finds and
decodes frames in a sample stream fed in chunks of any size (preamble detection, CFO,
channel estimation and tracking, header decoding, analog equalisation). The GNU Radio
blocks are thin wrappers around exactly these functions, and ``ReferenceModem`` runs them
on whole numpy buffers, so tests and sweeps use the very same code without GNU Radio.

Scaling: the payload is normalised to unit mean power per complex symbol (the gain used is
sent in the header and undone by the receiver), the IFFT is unitary (× 1/√N), so a data
subcarrier carries Es = 1 and a channel that adds CN(0, σ²) per sample gives Es/N0 = 1/σ²
per channel use — the project's single SNR convention.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import scipy.fft
import scipy.special
from scipy.ndimage import maximum_filter1d, uniform_filter1d

from . import header as hdr
from .params import OfdmParams, lfsr_bits

_PAD_BITS = lfsr_bits(4096, seed=0x71).astype(np.float32)
_PAD_CHIPS = 1.0 - 2.0 * _PAD_BITS


# ---------------------------------------------------------------------------------------
# Mapping of coded chips onto header / side-information OFDM symbols.
def _chips_per_symbol(p: OfdmParams) -> int:
    return p.header_bits_per_symbol


def n_coded_symbols(p: OfdmParams, n_chips: int) -> int:
    return -(-n_chips // _chips_per_symbol(p)) if n_chips else 0


def n_header_symbols(p: OfdmParams) -> int:
    return n_coded_symbols(p, p.header_repetition * hdr.HEADER_CODED_LEN)


def n_side_symbols(p: OfdmParams, side_len: int) -> int:
    return n_coded_symbols(p, p.header_repetition * hdr.side_coded_len(side_len))


def _copy_shift(p: OfdmParams, n_chips: int) -> int:
    """Rotation (chips) between successive copies of a repeated chip block."""
    return n_chips // p.header_repetition


def coded_chips(p: OfdmParams, info_bits: np.ndarray) -> np.ndarray:
    """Info bits → interleaved RM chips, ``header_repetition`` copies back to back.

    Copy r is rotated by r/R of its length, so the copies of a chip lie in different OFDM
    symbols and on carriers far apart (frequency diversity on top of the interleaver's).
    """
    c = hdr.encode_bits_block(info_bits)
    k = _copy_shift(p, len(c))
    return np.concatenate([np.roll(c, r * k) for r in range(p.header_repetition)])


def decode_chips(p: OfdmParams, soft: np.ndarray, n_info_bits: int) -> np.ndarray:
    """Soft chips of ``coded_chips`` (pad chips may follow) → info bits: the copies are
    added (maximum-ratio combining: the soft chips are already weighted by the channel),
    then ML-decoded."""
    n = hdr.coded_len(n_info_bits)
    k = _copy_shift(p, n)
    s = np.asarray(soft, np.float32)[: n * p.header_repetition].reshape(p.header_repetition, n)
    return hdr.decode_bits_block(sum(np.roll(s[r], -r * k) for r in range(p.header_repetition)), n_info_bits)


def n_payload_symbols(p: OfdmParams, payload_len: int) -> int:
    return -(-payload_len // p.n_data)


def _chips_to_grid(p: OfdmParams, chips: np.ndarray) -> np.ndarray:
    """±1 chips → (n_sym × n_data) unit-power symbols, tail filled with known pad chips."""
    n_sym = n_coded_symbols(p, len(chips))
    total = n_sym * _chips_per_symbol(p)
    c = np.concatenate([chips, _PAD_CHIPS[: total - len(chips)]])
    if p.header_modulation == "bpsk":
        s = c.astype(np.complex64)
    else:
        s = ((c[0::2] + 1j * c[1::2]) / np.sqrt(2)).astype(np.complex64)
    return s.reshape(n_sym, p.n_data)


def _grid_to_soft(p: OfdmParams, z: np.ndarray) -> np.ndarray:
    """Matched-filter outputs (n_sym × n_data) → real soft chips (positive ↔ +1)."""
    z = z.reshape(-1)
    if p.header_modulation == "bpsk":
        return z.real.astype(np.float32)
    return np.stack([z.real, z.imag], axis=1).reshape(-1).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Transmitter
def gain_code_for(payload: np.ndarray) -> int:
    """Quantised gain (0.25 dB steps) that brings the payload to unit mean power.

    The header's signed 8-bit field carries -32 … +31.75 dB; a payload whose mean power lies
    outside that range (it would go out too hot or too weak) is a ValueError, not clipped."""
    pw = float(np.mean(np.abs(np.asarray(payload, np.complex128)) ** 2)) if len(payload) else 1.0
    if not np.isfinite(pw):
        raise ValueError("payload contains NaN or Inf")
    if pw <= 0:
        return 0
    code = int(np.round(-10 * np.log10(pw) / hdr.GAIN_STEP_DB))
    if not -128 <= code <= 127:
        raise ValueError(f"payload mean power {10 * np.log10(pw):+.1f} dB is outside the "
                         f"{-127 * hdr.GAIN_STEP_DB:+.2f} … {128 * hdr.GAIN_STEP_DB:+.2f} dB the header's gain "
                         "field can undo: scale the symbols first")
    return code


@dataclass
class TxFrame:
    header: hdr.Header
    data: np.ndarray  # (n_sym × n_data) symbols for the data carriers, header first
    n_header: int
    n_side: int
    n_payload: int

    @property
    def n_symbols(self) -> int:
        return self.data.shape[0]


def build_frame(p: OfdmParams, payload, codec_id: int = 0, seq: int = 0, side: bytes = b"",
                normalize: bool = True) -> TxFrame:
    """Header + side information + analog payload on the data carriers of one frame."""
    x = np.asarray(payload)
    if x.ndim != 1:
        raise ValueError(f"payload must be a 1-D vector of complex symbols, got shape {x.shape}")
    x = x.astype(np.complex64)
    if len(x) == 0:
        raise ValueError("payload is empty")
    if len(x) > hdr.MAX_PAYLOAD_LEN:
        raise ValueError(f"payload of {len(x)} symbols exceeds the header limit {hdr.MAX_PAYLOAD_LEN}")
    side = bytes(side or b"")
    if len(side) > hdr.MAX_SIDE_LEN:
        raise ValueError(f"side information of {len(side)} bytes exceeds {hdr.MAX_SIDE_LEN}")
    code = gain_code_for(x) if normalize else 0
    h = hdr.Header(codec_id=int(codec_id), seq=int(seq) & 0xFFFF, payload_len=len(x), side_len=len(side),
                   gain_code=code)
    h_grid = _chips_to_grid(p, coded_chips(p, hdr.header_to_bits(h)))
    s_grid = (_chips_to_grid(p, coded_chips(p, hdr.side_to_bits(side))) if side
              else np.zeros((0, p.n_data), np.complex64))
    n_pl = n_payload_symbols(p, len(x))
    pl = np.zeros(n_pl * p.n_data, np.complex64)
    pl[: len(x)] = x * np.float32(10 ** (h.gain_db / 20))
    data = np.concatenate([h_grid, s_grid, pl.reshape(n_pl, p.n_data)])
    return TxFrame(h, data, h_grid.shape[0], s_grid.shape[0], n_pl)


def frame_grid(p: OfdmParams, data: np.ndarray) -> np.ndarray:
    """Full shifted-domain grid: 2 sync symbols, then data symbols with pilots."""
    n_sym = data.shape[0]
    g = np.zeros((n_sym + 2, p.fft_len), np.complex64)
    g[0] = p.sync_word1
    g[1] = p.sync_word2
    g[2:, p.data_idx] = data
    g[2:, p.pilot_idx] = p.pilot_values(0, n_sym)
    return g


def grid_to_time(p: OfdmParams, grid: np.ndarray) -> np.ndarray:
    """Unitary IFFT of each (shifted-domain) symbol, cyclic prefix, serialise."""
    n = p.fft_len
    t = scipy.fft.ifft(np.asarray(grid, np.complex64)[:, _rx(p).shift], axis=1, norm="ortho")
    return np.concatenate([t[:, n - p.cp_len:], t], axis=1).reshape(-1)


def frame_samples(p: OfdmParams, frame: TxFrame, tail_symbols: int = 0) -> np.ndarray:
    """Time-domain burst of a frame (preamble, data symbols, ``tail_symbols`` pilot-only symbols)."""
    data = frame.data
    if tail_symbols:
        data = np.concatenate([data, np.zeros((int(tail_symbols), p.n_data), np.complex64)])
    return grid_to_time(p, frame_grid(p, data))


# ---------------------------------------------------------------------------------------
# Receiver, frame level
@dataclass
class HeaderRx:
    header: hdr.Header
    chan: np.ndarray  # channel at the centre of the header, shifted domain (N,), delay-projected
    noise_var: float  # per-subcarrier noise variance σ²
    phase0: float  # common phase model φ(t) = phase0 + dphi·t, t counted from the first header symbol
    dphi: float
    n_header: int
    pilot_chan: np.ndarray = field(repr=False, default=None)  # (n_header × n_pilots) channel at the header's pilots
    symbols: np.ndarray = field(repr=False, default=None)  # (n_header·n_data,) equalised header symbols (decode_header)


_OMEGA_GRID = np.linspace(-0.8, 0.8, 321)


class _Rx:
    """Everything the frame-level receiver derives from one OfdmParams, computed once.

    The per-frame code then only indexes these arrays: at a few thousand samples per frame
    the number of numpy calls, not the arithmetic, is what a frame costs.
    """

    def __init__(self, p: OfdmParams):
        n = p.fft_len
        self.n, self.sl, self.cp, self.n_h = n, p.symbol_len, p.cp_len, n_header_symbols(p)
        self.start = p.cp_len - fft_window_backoff(p)  # FFT window start within a symbol
        self.di, self.pi, self.act = p.data_idx, p.pilot_idx, p.active_idx
        self.pos_p, self.pos_d = np.searchsorted(self.act, self.pi), np.searchsorted(self.act, self.di)
        self.shift = np.fft.fftshift(np.arange(n))
        k = np.arange(n) - n // 2
        # undo the linear phase of the early window (channel estimates stay smooth), unitary FFT
        self.winph = (np.exp(2j * np.pi * k * fft_window_backoff(p) / n) / np.sqrt(n)).astype(np.complex64)
        self.ramp = np.arange(n) * (-2 * np.pi / n)  # × cfo: per-sample CFO correction phase
        sw1, sw2 = p.sync_word1, p.sync_word2
        self.ks1 = np.flatnonzero(sw1)  # sync 1's carriers
        self.sw1k, self.sw2k = sw1[self.ks1], sw2[self.ks1]
        self.sw2a = sw2[self.act]
        # sync estimate (sync_channel) as an observation: weight 3 at t = -5/3 on sync 1's
        # carriers (sync 1 at t = -2 with √2 amplitude, sync 2 at t = -1), weight 1 at t = -1 elsewhere
        on1 = sw1[self.act] != 0
        self.t0 = np.where(on1, -5.0 / 3.0, -1.0)
        self.w0 = np.where(on1, 3.0, 1.0)
        # a channel whose impulse response fits in the cyclic prefix (the only kind an OFDM
        # receiver equalises without ISI) lies in the span of F: the cp + 1 delays [-b, cp - b]
        # (b the FFT window's backoff) that reach the window without ISI; projecting an estimate
        # onto it removes 1 - (cp + 1)/N_active of the noise
        d = np.arange(p.cp_len + 1) - fft_window_backoff(p)
        self.F = np.exp(-2j * np.pi * np.outer(self.act - n // 2, d) / n)
        self.Fi = np.linalg.pinv(self.F)
        self.proj = (self.F @ self.Fi).astype(np.complex64)
        self.Fp, self.Fd = self.F[self.pos_p], self.F[self.pos_d]
        self.pil_h = p.pilot_values(0, self.n_h)
        self.steer = np.exp(-1j * np.outer(_OMEGA_GRID, np.arange(self.n_h)))
        self.t_h = np.arange(self.n_h)
        self.kc = (np.arange(n) - n // 2).astype(np.float64)  # carrier index of each shifted-domain bin
        self.kp = self.kc[self.pi]


def _rx(p: OfdmParams) -> _Rx:
    r = p._cache.get("rx")
    if r is None:
        r = p._cache.setdefault("rx", _Rx(p))
    return r


def _fit_phase(c: np.ndarray, steer: Optional[np.ndarray] = None):
    """Linear phase model φ(t) = φ0 + Δφ·t from per-symbol complex correlations c_t.

    Δφ maximises |Σ c_t e^{-jΔφ t}| (the ML estimate of a tone in noise) on a grid of
    ±0.8 rad/symbol (residual CFO up to ±0.1 subcarrier), then φ0 follows. ``steer``: the
    grid's e^{-jΔφ t} matrix for len(c) symbols, if precomputed.
    """
    n = len(c)
    t = np.arange(n)
    if n > 2:
        if steer is None:
            steer = np.exp(-1j * np.outer(_OMEGA_GRID, t))
        dphi = float(_OMEGA_GRID[int(np.argmax(np.abs(steer @ c)))])
    elif n == 2:
        dphi = float(np.angle(c[1] * np.conj(c[0])))
    else:
        dphi = 0.0
    phase0 = float(np.angle(np.sum(c * np.exp(-1j * dphi * t))))
    return phase0, dphi


def decode_header(p: OfdmParams, y_hdr: np.ndarray, chan0: np.ndarray) -> Optional[HeaderRx]:
    """Decode the coded header from its OFDM symbols.

    y_hdr: (n_header × N) received header symbols after a unitary FFT, shifted domain.
    chan0: (N,) channel estimate from the sync symbols (``sync_channel``, same scaling).
    Returns None when the CRC (or version) fails — the frame must then be dropped.

    Once the header is known every header carrier is a pilot: the channel is refitted per
    carrier as A + B·(t - t_c) over the sync and header symbols (a channel that changes
    during the header does not inflate the noise estimate), A and B projected onto delays
    within the CP; σ² comes from the residual with its degrees of freedom removed.

    ``HeaderRx.symbols``: the equalised header symbols, every data carrier of every header
    symbol in transmit order (all ``header_repetition`` copies, not combined, and the known
    pad chips of the last symbol), CFO-corrected, de-rotated by the refined phase model and
    divided by the refined channel A + B·(t - t_c) of that symbol (A is where the payload's
    channel tracking starts), so the header and payload constellations compare directly.
    They lie on the unit-power BPSK points ±1 or QPSK points (±1 ± j)/√2; their EVM is the
    per-subcarrier noise σ²/|H|² (-30 dB at 30 dB Es/N0). (The decoder's own inputs, divided by
    the sync-symbol channel, spread 1-3 dB more at 0 dB Es/N0 from that estimate's error.)
    Copies rather than their combination: each point is then one channel use on a fixed
    scale (the combination is a channel-weighted sum). Cost: one complex multiply and divide
    per header carrier (about 7 µs a frame for wifi64), no FFT.
    """
    r = _rx(p)
    n_h, act, pos_p, pos_d = r.n_h, r.act, r.pos_p, r.pos_d
    y = np.asarray(y_hdr, dtype=np.complex64)
    h0 = np.asarray(chan0, dtype=np.complex64)
    if y.shape != (n_h, p.fft_len) or h0.shape != (p.fft_len,):
        raise ValueError(f"header block must be ({n_h}, {p.fft_len}), channel ({p.fft_len},)")
    if not (np.isfinite(y).all() and np.isfinite(h0).all()):
        return None
    ya = y[:, act]
    h_sync = h0[act]
    hp = r.proj @ h_sync
    # 1. common phase from pilots, linear model over the header
    ph0, dph = _fit_phase((ya[:, pos_p] * np.conj(hp[pos_p] * r.pil_h)).sum(axis=1), r.steer)
    rot = np.exp(-1j * (ph0 + dph * r.t_h))[:, None]
    # 2. MRC soft chips, ML decoding, CRC
    bits = decode_chips(p, _grid_to_soft(p, ya[:, pos_d] * rot * np.conj(hp[pos_d])), hdr.HEADER_INFO_BITS)
    h = hdr.bits_to_header(bits)
    if h is None:
        return None
    # 3. the header is now known: refine phase, channel and noise variance with it
    x = np.empty((n_h, len(act)), np.complex64)
    x[:, pos_d] = _chips_to_grid(p, coded_chips(p, bits))
    x[:, pos_p] = r.pil_h
    xc = np.conj(x)  # |x| = 1: 1/x = conj(x)
    ph0, dph = _fit_phase((ya * xc).dot(np.conj(hp)), r.steer)
    obs = ya * xc * np.exp(-1j * (ph0 + dph * r.t_h)).astype(np.complex64)[:, None]  # channel observations
    # weighted LS per carrier: sync estimate (time t0, weight w0) and one observation per header symbol
    tc = (n_h - 1) / 2.0
    th = r.t_h - tc
    u0, w0 = r.t0 - tc, r.w0
    s0, s1, s2 = w0 + n_h, w0 * u0 + th.sum(), w0 * u0 ** 2 + th.dot(th)
    y0 = w0 * h_sync + obs.sum(axis=0)
    y1 = w0 * u0 * h_sync + th @ obs
    det = s0 * s2 - s1 ** 2
    a = r.proj @ ((s2 * y0 - s1 * y1) / det).astype(np.complex64)
    b = r.proj @ ((s0 * y1 - s1 * y0) / det).astype(np.complex64)
    e = obs - (a + th[:, None] * b)
    e0 = h_sync - (a + u0 * b)
    res = e.real.ravel().dot(e.real.ravel()) + e.imag.ravel().dot(e.imag.ravel()) + w0.dot(e0.real ** 2 + e0.imag ** 2)
    nvar = float(res / max(len(act) * (n_h + 1) - 2 * r.F.shape[1], 1))
    chan = np.zeros(p.fft_len, np.complex64)
    chan[act] = a
    # equalised header symbols: x·obs = y·e^{-jφ(t)}, divided by the fitted channel of its symbol
    hf = a[pos_d] + th.astype(np.float32)[:, None] * b[pos_d]
    sym = (x * obs)[:, pos_d] / np.where(hf == 0, np.complex64(1), hf)
    # floor relative to the signal (an absolute one would swamp a weak but clean input)
    nvar = max(nvar, 1e-12 * float((a.real ** 2 + a.imag ** 2).mean()), 1e-300)
    return HeaderRx(h, chan, nvar, ph0, dph, n_h, obs[:, pos_p], sym.reshape(-1))


@dataclass
class PayloadRx:
    header: hdr.Header
    symbols: np.ndarray  # equalised analog payload (complex64), gain undone
    noise_var: np.ndarray  # per-symbol noise variance of ``symbols`` (float32), measured error included
    side: bytes
    snr_db: float  # estimated Es/N0 per channel use of the payload (measured excess error included)
    noise_var_sc: float  # per-subcarrier noise variance σ² (transmit scale), from the header
    chan: np.ndarray = field(repr=False, default=None)  # channel per data carrier at the header
    cfo: float = 0.0  # estimated carrier frequency offset, subcarrier spacings
    # the header's equalised BPSK/QPSK symbols (HeaderRx.symbols: all copies, unit power)
    header_symbols: np.ndarray = field(repr=False, default=None)
    # payload symbols after the end of the signal (a burst cut short): symbol 0, noise variance
    # LOST_NOISE_VAR (zf) or the symbol variance (mmse); None when nothing was lost
    lost: np.ndarray = field(repr=False, default=None)
    n_lost: int = 0
    # first symbol after the header (rows of the block) that looked as if the frame had ended
    # there (silent, or pilots far off the tracked channel); None if none
    suspect_row: Optional[int] = None
    sro_ppm: float = 0.0  # sample-rate offset tracked over the frame (0 when no drift was found)
    kept_symbols: int = 0  # OFDM symbols after the header that carried the frame (all but the lost ones)


LOST_NOISE_VAR = 1e12  # noise variance reported for a lost payload symbol (and a dead subcarrier), zf
NOISE_WINDOW_PILOTS = 100  # pilot observations averaged for each symbol's measured error
DRIFT_MIN_SAMPLES = 0.25  # timing drift over a frame below which no drift correction is made


PILOT_WINDOWS = (3, 5, 9, 15, 25)  # candidates of the automatic smoothing window (pilot_window=0)


@functools.lru_cache(maxsize=64)
def _smoother(T: int, windows: tuple):
    """Coefficients of the local linear regressions ``_local_linear`` runs on T rows."""
    t = np.arange(T, dtype=np.float64)
    hs = np.array([max(0, int(w) // 2) for w in windows])[:, None]
    lo, hi = np.maximum(t - hs, 0).astype(np.int64), np.minimum(t + hs + 1, T).astype(np.int64)
    c = np.concatenate([[0.0], np.cumsum(np.ones(T))]), np.concatenate([[0.0], np.cumsum(t)]), \
        np.concatenate([[0.0], np.cumsum(t * t)])
    s0, st, stt = (v[hi] - v[lo] for v in c)
    s1 = st - t * s0  # Σ(τ - t) and Σ(τ - t)² over each window
    s2 = stt - 2 * t * st + t * t * s0
    det = s0 * s2 - s1 * s1
    lin = det > 1e-9  # at least two distinct times in the window
    d = np.where(lin, det, 1.0)
    c0, c1 = np.where(lin, s2 / d, 1.0 / s0), np.where(lin, -s1 / d, 0.0)
    return t[:, None], lo, hi, c0[..., None], c1[..., None], c0  # c0 is also the hat-matrix diagonal


def _local_linear(z: np.ndarray, windows: tuple):
    """Local linear regressions of the rows of z (T × P), one per centred window length in
    ``windows`` (clipped at the ends).

    Returns the smoothed rows (len(windows) × T × P) and the noise-variance factor of each
    fitted row (len(windows) × T: its variance over one sample's, also the hat-matrix diagonal).
    """
    t, lo, hi, c0, c1, vf = _smoother(len(z), tuple(windows))
    pad = np.zeros((1, z.shape[1]), np.complex128)
    cz, ctz = np.concatenate([pad, np.cumsum(z, axis=0)]), np.concatenate([pad, np.cumsum(t * z, axis=0)])
    y0 = cz[hi] - cz[lo]
    y1 = ctz[hi] - ctz[lo] - t * y0  # Σ z and Σ (τ - t) z over each window
    return c0 * y0 + c1 * y1, vf


def _smooth_auto(z: np.ndarray):
    """``_local_linear`` with the window from ``PILOT_WINDOWS`` that predicts each held-out
    sample best (leave-one-out error, exact for a linear smoother: residual / (1 - hat value)).
    The best window grows with the SNR and shrinks with the Doppler."""
    a, vf = _local_linear(z, PILOT_WINDOWS)
    ok = (vf < 0.99).all(axis=0)  # rows every window can predict
    if not ok.any():
        return a[0], vf[0]
    e = (z[ok] - a[:, ok]) / (1 - vf[:, ok, None])
    cv = (e.real ** 2 + e.imag ** 2).sum(axis=(1, 2))
    i = int(np.argmin(cv))
    return a[i], vf[i]


def _tracking_weights(r: _Rx, chan: np.ndarray, dev: np.ndarray, dev_var: float):
    """LMMSE interpolation (n_data × n_pilots) of channel deviations from the pilots to the data
    carriers, and its error per data carrier relative to the deviation power (n_data,).

    The deviation of the channel from its header value is a sum of the same paths as the
    channel itself, so its frequency correlation is modelled from the power delay profile of
    the header estimate: R = F diag(pdp) Fᴴ. ``dev``: smoothed pilot deviations, ``dev_var``:
    their noise variance. (None, None) when the deviations are no larger than their noise.
    """
    power = float((dev.real ** 2 + dev.imag ** 2).mean()) - dev_var
    if not power > 0:
        return None, None
    g = r.Fi @ chan[r.act]
    raw = g.real ** 2 + g.imag ** 2
    pdp = raw + (1e-3 * raw.max() + 1e-30)
    pdp /= pdp.sum()
    fph = (r.Fp * pdp).conj().T  # diag(pdp) Fpᴴ
    rpp = r.Fp @ fph
    rpp[np.diag_indices_from(rpp)] += dev_var / power
    w = np.linalg.solve(rpp.T, (r.Fd @ fph).T).T  # R_dp R_pp⁻¹ (R_pp Hermitian)
    # error of these weights on a noise-free deviation with the measured profile (no floor):
    # E|F_d g - w F_p g|² = Σ_l pdp_l |F_dl - (w F_p)_dl|²
    q = raw / max(float(raw.sum()), 1e-30)
    e = r.Fd - w @ r.Fp
    return w, (e.real ** 2 + e.imag ** 2) @ q


def _pilot_obs(p: OfdmParams, hrx: HeaderRx, y: np.ndarray):
    """Channel observations at the pilots of the symbols y (rows after the header), after the
    header's common phase model, and that model's phasor per row."""
    r = _rx(p)
    n = len(y)
    pred = np.exp(1j * (hrx.phase0 + hrx.dphi * (hrx.n_header + np.arange(n)))).astype(np.complex64)
    return y[:, r.pi] * (np.conj(p.pilot_values(hrx.n_header, n)) * np.conj(pred)[:, None]), pred


#: header SNR (S/σ²) below which ``signal_end`` keeps the symbol before a cut that looks whole
WEAK_FRAME = 4.0


def _row_energy(p: OfdmParams, hrx: HeaderRx, y: np.ndarray) -> tuple:
    """(mean energy per row of y over the carriers that carry something, their count, the
    header's mean channel energy S). The last payload symbol is zero-padded: only its pilots
    and the data carriers that hold payload symbols count (a short payload would otherwise
    look cut off)."""
    r = _rx(p)
    ya = y[:, r.act]
    e = (ya.real ** 2 + ya.imag ** 2).mean(axis=1)
    n_used = np.full(len(y), len(r.act), np.float64)
    h = hrx.header
    last = n_side_symbols(p, h.side_len) + n_payload_symbols(p, h.payload_len) - 1
    k = h.payload_len - (n_payload_symbols(p, h.payload_len) - 1) * p.n_data  # payload symbols in the last row
    if 0 <= last < len(y) and 0 < k < p.n_data:
        yl = np.concatenate([y[last, r.pi], y[last, r.di[:k]]])
        e[last] = float((yl.real ** 2 + yl.imag ** 2).mean())
        n_used[last] = len(yl)
    return e, n_used, max(float(np.mean(np.abs(hrx.chan[r.act]) ** 2)), 1e-30)


def _silent_rows(p: OfdmParams, hrx: HeaderRx, y: np.ndarray) -> np.ndarray:
    """Rows of y (the symbols after the header) that look like noise alone (see
    ``signal_end``): both their energy and their pilots say so.

    Energy: below σ²(1 + 3/√N), or lower when the frame is weak: the likelihood-ratio
    threshold between noise alone (mean σ²) and noise + the header's channel energy S,
    σ²(σ²+S)/S·ln(1 + S/σ²), so that a frame near 0 dB does not look silent. Pilots: the
    magnitude of their correlation with the header's channel, |Σ obs·H*|/Σ|H|², is under
    1/2 (1 for the frame's own symbols, whatever their phase; ~0 for noise). The two tests
    err independently (data carriers vs pilots), so a weak frame's symbol is taken for silence
    far less often than by either alone."""
    e, n_used, sig = _row_energy(p, hrx, y)
    s2 = hrx.noise_var
    lrt = s2 * (s2 + sig) / sig * np.log1p(sig / s2)
    quiet = e < np.minimum(s2 * (1.0 + 3.0 / np.sqrt(n_used)), lrt)
    if quiet.any():
        hp = hrx.chan[_rx(p).pi]
        obs, _ = _pilot_obs(p, hrx, y[: int(np.flatnonzero(quiet)[-1]) + 1])  # pilots depend on the row index
        corr = np.abs(obs @ np.conj(hp)) / max(float(np.vdot(hp, hp).real), 1e-30)
        quiet[: len(corr)] &= corr < 0.5
    return quiet


def signal_end(p: OfdmParams, hrx: HeaderRx, y: np.ndarray, silent: Optional[np.ndarray] = None) -> int:
    """OFDM symbols of y (the rows after the header) that still carry the frame.

    A burst cut short leaves symbols whose energy over the carriers that carry something is
    that of noise alone (``_silent_rows``; a symbol that carries the frame is above the
    threshold unless the channel fades to −5 dB below the noise on every carrier, or the frame
    is weak and the energy happens low: near −5 dB a few per cent of the symbols). The cut is
    the start of the tail with the most more-silent-than-not symbols (a change-point sum from
    the end, so single quiet symbols inside a frame do not count); the symbol before it is
    lost too (the cut may lie inside it), except in a weak frame (S < ``WEAK_FRAME``·σ², S the
    header's mean channel energy), where the energy test errs more often than a cut happens:
    there the symbol is kept when its energy is that of a whole symbol, ≥ (σ² + S)(1 − 3/√N). Returns the number of rows kept (len(y): no cut). ``silent``:
    ``_silent_rows`` of y, when already computed.
    """
    n = len(y)
    if n == 0:
        return 0
    if silent is None:
        silent = _silent_rows(p, hrx, y)
    if not silent.any():
        return n
    tail = np.cumsum(np.where(silent, 1, -1)[::-1])[::-1]  # tail[c] = silent - loud symbols in c…n-1
    c = int(np.argmax(tail))
    if tail[c] < 1:
        return n
    if c > 0:  # a weak frame: keep the symbol before the cut when its energy is that of a whole symbol
        e, n_used, sig = _row_energy(p, hrx, y[: c])
        if sig < WEAK_FRAME * hrx.noise_var and e[c - 1] >= (hrx.noise_var + sig) * (1.0 - 3.0 / np.sqrt(n_used[c - 1])):
            return c
    return max(c - 1, 0)


def demod_payload(p: OfdmParams, hrx: HeaderRx, y_pl: np.ndarray, equalizer: str = "zf",
                  pilot_window: int = 0, n_rows: Optional[int] = None) -> Optional[PayloadRx]:
    """Side information + analog payload from the OFDM symbols that follow the header.

    Signal end: ``signal_end`` finds where a burst cut short stopped; the symbols from there
    on are marked lost (``PayloadRx.lost``: value 0, noise variance ``LOST_NOISE_VAR``) and
    take no part in the tracking. ``n_rows``: the frame is known to end after that many
    symbols (another frame's preamble was found there); the rest is lost as well.

    Channel tracking: every symbol's pilots (after the header's common phase model) give
    the channel's deviation from its header value at the pilot carriers; the deviations of
    the header and payload symbols are smoothed over time (local linear fit over
    ``pilot_window`` symbols; 0 picks the window per frame by cross-validation, see
    ``_smooth_auto``) and interpolated to the data carriers by LMMSE with the frequency
    correlation of the header's power delay profile. Then ZF (unbiased) or MMSE equalisation.
    No decision feedback: the payload has no constellation to decide on.

    Noise: per symbol, σ²_t/|H|² (ZF) with σ²_t the error the pilots measure — the
    leave-one-out residual of the tracking at the pilots, averaged over about
    ``NOISE_WINDOW_PILOTS`` pilot observations (the payload's own estimate: the header's
    also takes in how the channel changed across the header) — plus the model error of
    interpolating the channel's change from the pilots to each data carrier. It takes in what
    the noise alone does not: inter-carrier interference of fast fading, tracking lag,
    residual timing drift. Returns None if the side information fails its CRC (or was cut
    off).
    """
    if equalizer not in ("zf", "mmse"):
        raise ValueError(f"equalizer must be 'zf' or 'mmse', got {equalizer!r}")
    r = _rx(p)
    h = hrx.header
    n_s, n_p = n_side_symbols(p, h.side_len), n_payload_symbols(p, h.payload_len)
    y = np.asarray(y_pl, dtype=np.complex64)
    if y.shape != (n_s + n_p, p.fft_len):
        raise ValueError(f"payload block must be ({n_s + n_p}, {p.fft_len}), got {y.shape}")
    if not np.isfinite(y).all():
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    if n_rows is not None:
        y = y[: max(0, int(n_rows))]
    silent = _silent_rows(p, hrx, y)
    n = signal_end(p, hrx, y, silent)  # rows that carry the frame
    if n < n_s:
        return None  # the side information was cut off
    y = y[:n]
    obs, pred = _pilot_obs(p, hrx, y)
    s2 = hrx.noise_var
    win = int(np.clip(np.ceil(NOISE_WINDOW_PILOTS / len(r.pi)), 3, 25))  # symbols per noise average
    z = np.concatenate([hrx.pilot_chan, obs]) - hrx.chan[r.pi]
    if pilot_window > 0:
        dev, vf = (v[0] for v in _local_linear(z, (int(pilot_window),)))
    else:
        dev, vf = _smooth_auto(z)
    dev, vf = dev[hrx.n_header:], vf[hrx.n_header:]
    # measured error per symbol: leave-one-out residual of the tracking at the pilots, the
    # payload's own noise estimate (the header's takes in the channel's change across it)
    res = z[hrx.n_header:] - dev
    loo = (res.real ** 2 + res.imag ** 2).mean(axis=1) / np.maximum(1.0 - vf, 1e-3) ** 2
    s2m = float(loo.mean()) if n else s2
    w, ie = _tracking_weights(r, hrx.chan, dev, s2m * float(vf.mean())) if n else (None, None)
    hd = hrx.chan[r.di]
    hch = (hd if w is None else hd + (dev @ w.T).astype(np.complex64)) * pred[:, None]  # (n × n_data)
    if w is None:  # the deviations were noise: the data carriers use the header's channel
        res = z[hrx.n_header:]
        loo = (res.real ** 2 + res.imag ** 2).mean(axis=1)
    s2t = np.maximum(uniform_filter1d(loo, win, mode="nearest"), 1e-3 * s2) if n else np.zeros(0)  # (n,)
    side = b""
    if n_s:
        bits = decode_chips(p, _grid_to_soft(p, y[:n_s, r.di] * np.conj(hch[:n_s])), 8 * h.side_len + 16)
        side = hdr.bits_to_side(bits, h.side_len)
        if side is None and w is not None:  # the tracking of a short, weak frame can be noisier
            # than the header's own channel right after it: try that one (the CRC decides)
            bits = decode_chips(p, _grid_to_soft(p, y[:n_s, r.di] * np.conj(hd * pred[:n_s, None])),
                                8 * h.side_len + 16)
            side = hdr.bits_to_side(bits, h.side_len)
        if side is None:
            return None
    L = h.payload_len
    k = min(L, (n - n_s) * p.n_data)  # payload symbols kept
    yp = y[n_s:, r.di].reshape(-1)[:k]
    hp = hch[n_s:].reshape(-1)[:k]
    s2g = np.broadcast_to(s2t[:, None], (n, p.n_data))
    if ie is not None:  # + the interpolation error of the deviations to the data carriers
        # deviation power per symbol beyond its noise (averaged like the error, with a margin
        # of two standard deviations of that average, so that noise alone adds nothing); a
        # common gain/phase change α·H of all carriers interpolates exactly, only the rest counts
        hc = hrx.chan[r.pi]
        rem = dev - np.outer((dev @ np.conj(hc)) / max(float(np.vdot(hc, hc).real), 1e-30), hc)
        dpow = uniform_filter1d((rem.real ** 2 + rem.imag ** 2).mean(axis=1), win, mode="nearest")
        dp = np.maximum(dpow - s2m * vf * (1.0 + 2.0 / np.sqrt(win * len(r.pi))), 0.0)
        s2g = s2g + dp[:, None] * ie[None, :]
    s2p = s2g[n_s:].reshape(-1)[:k].astype(np.float32)
    mag2 = np.maximum(hp.real ** 2 + hp.imag ** 2, 1e-30)
    a = np.float32(10 ** (-h.gain_db / 20))
    xs = np.zeros(L, np.complex64)
    nv = np.empty(L, np.float32)
    if equalizer == "zf":
        xs[:k] = yp * (np.conj(hp) * (a / mag2))  # = y/H, and 0 (not NaN) where the channel estimate is 0
        nv[:k] = np.minimum(s2p / mag2, LOST_NOISE_VAR) * (a * a)  # a dead subcarrier: huge, finite
        nv[k:] = LOST_NOISE_VAR
    else:
        xs[:k] = yp * (np.conj(hp) * (a / (mag2 + s2p)))
        nv[:k] = s2p / (mag2 + s2p) * (a * a)  # MMSE error variance
        nv[k:] = a * a  # nothing known: the error is the symbol itself
    hpow = max(float((hd.real ** 2 + hd.imag ** 2).mean()), 1e-30)
    snr = 10 * np.log10(hpow / (float(s2t[n_s:].mean()) if n > n_s else s2))
    lost = None if k == L else np.arange(L) >= k
    odd = silent[:n].copy()
    if n:
        odd |= loo > 10.0 * float(np.median(loo))
    sus = np.flatnonzero(odd)
    return PayloadRx(h, xs, nv, side, float(snr), s2, hd.copy(), header_symbols=hrx.symbols,
                     lost=lost, n_lost=L - k, kept_symbols=n, suspect_row=int(sus[0]) if len(sus) else None)


# ---------------------------------------------------------------------------------------
# Time-domain front end.
#
# Frame timing comes from a normalised matched filter on the known preamble (sync symbols 1
# and 2 with their cyclic prefixes); everything after detection works on blocks of whole
# symbols (CP included) that start at the frame start.
def preamble(p: OfdmParams) -> np.ndarray:
    """Time-domain preamble (both sync symbols with cyclic prefixes), unit power per subcarrier."""
    pre = p._cache.get("preamble")
    if pre is None:
        pre = grid_to_time(p, frame_grid(p, np.zeros((0, p.n_data), np.complex64)))
        pre.setflags(write=False)
        pre = p._cache.setdefault("preamble", pre)
    return pre


def fft_window_backoff(p: OfdmParams) -> int:
    """Samples of the cyclic prefix kept before each FFT window (margin for early/late timing)."""
    return p.cp_len // 4


def symbols_fft(p: OfdmParams, blk: np.ndarray, first_symbol: int, cfo: float,
                delay: Optional[np.ndarray] = None) -> np.ndarray:
    """CFO-correct and FFT whole symbols.

    blk: (n × symbol_len) samples of symbols ``first_symbol…`` counted from the frame start
    (symbol 0 = sync 1); cfo in subcarrier spacings, phase referenced to the frame start.
    ``delay``: per-symbol timing drift (samples, n values; a sample-rate offset makes it grow
    linearly): each FFT window moves by the nearest whole sample (within the symbol's own
    samples) and the remainder is undone as a linear phase across the carriers, so the
    channel seen by every symbol stays the one at delay 0.
    Returns (n × N) unitary FFT outputs in the shifted domain.
    """
    r = _rx(p)
    x = np.asarray(blk, dtype=np.complex64).reshape(-1, r.sl)
    if delay is None:
        start = r.start
        x = x[:, r.start:r.start + r.n]
    else:
        tau = np.asarray(delay, np.float64)
        if tau.shape != (x.shape[0],):
            raise ValueError(f"delay must hold one value per symbol ({x.shape[0]}), got shape {tau.shape}")
        shift = np.clip(np.round(tau), -r.start, r.cp - r.start).astype(np.int64)
        start = r.start + shift
        x = np.take_along_axis(x, start[:, None] + np.arange(r.n)[None, :], axis=1)
    if cfo:  # e^{-j2π·cfo·(symbol start + k)/N}: a per-symbol times a per-sample factor
        ph = r.ramp[1] * cfo * ((first_symbol + np.arange(x.shape[0])) * r.sl + start)
        x = x * np.exp(1j * ph).astype(np.complex64)[:, None] * np.exp(1j * cfo * r.ramp).astype(np.complex64)
    y = scipy.fft.fft(x, axis=1)[:, r.shift] * r.winph  # complex64 throughout
    if delay is not None:  # the window moved by `shift`, the signal by tau: undo tau - shift
        y *= np.exp(2j * np.pi * np.outer(tau - shift, r.kc) / r.n).astype(np.complex64)
    return y


def estimate_cfo(p: OfdmParams, blk: np.ndarray) -> float:
    """CFO (subcarrier spacings, |cfo| < 1) from the two sync symbols.

    Coarse: Schmidl & Cox half-symbol correlation of sync 1. Fine: phase advance of the
    channel seen on sync 1's carriers between sync 1 and sync 2 (one symbol apart).
    """
    r = _rx(p)
    n, sl, half = r.n, r.sl, r.n // 2
    x = np.asarray(blk[: 2 * sl], dtype=np.complex64)
    u = x[r.cp: r.cp + n]
    coarse = float(np.angle(np.vdot(u[:half], u[half:])) / np.pi)
    y = symbols_fft(p, x, 0, coarse)
    fine = float(np.angle(np.vdot(y[0, r.ks1] / r.sw1k, y[1, r.ks1] / r.sw2k))) / (2 * np.pi * sl / n)
    return coarse + fine


def rx_header_block(p: OfdmParams, blk: np.ndarray):
    """Header block → (HeaderRx or None, cfo). ``blk``: (2 + n_header) symbols from the frame start."""
    r = _rx(p)
    x = np.asarray(blk, dtype=np.complex64).reshape(-1)[: (2 + r.n_h) * r.sl]
    if len(x) < (2 + r.n_h) * r.sl or not np.isfinite(x).all():
        return None, 0.0
    cfo = estimate_cfo(p, x)
    y = symbols_fft(p, x, 0, cfo)
    return decode_header(p, y[2:], sync_channel(p, y[0], y[1])), cfo


def sync_channel(p: OfdmParams, y1: np.ndarray, y2: np.ndarray) -> np.ndarray:
    """Channel estimate from both sync symbols, inverse-variance weighted (sync 1 has 2× power)."""
    r = _rx(p)
    h = np.zeros(p.fft_len, np.complex64)
    h[r.act] = y2[r.act] / r.sw2a
    h[r.ks1] = (h[r.ks1] + 2 * (y1[r.ks1] / r.sw1k)) / 3
    return h


def timing_correction(p: OfdmParams, blk: np.ndarray) -> int:
    """Whole-sample move of a detected frame start that brings its channel inside the CP.

    blk: ``2·symbol_len + 2·cp_len`` samples from one CP before the detected start (the two
    sync symbols with a CP of margin on each side). The channel's impulse response, from the
    sync symbols' estimate, is compared with the delays an FFT window takes without ISI
    ([-b, cp - b], b = ``fft_window_backoff``): the move δ (|δ| ≤ cp) puts the most energy
    there. The detector can lock on any strong path (it sums only b lags), so a channel
    with paths up to one CP apart may be detected late or early by more than the backoff;
    then δ ≠ 0. The start stays (δ = 0) unless a move gains energy well above the noise
    floor of the estimate. Returns δ in samples (new start = detected start + δ).
    """
    r = _rx(p)
    cp, n, b = r.cp, r.n, fft_window_backoff(p)
    x = np.asarray(blk, dtype=np.complex64).reshape(-1)
    if len(x) != 2 * r.sl + 2 * cp or not np.isfinite(x).all():
        return 0
    xs = x[cp: cp + 2 * r.sl]
    y = symbols_fft(p, xs, 0, estimate_cfo(p, xs))
    t = np.fft.ifft(np.fft.ifftshift(sync_channel(p, y[0], y[1])))  # taps t[d mod N], delay d from the start
    e = t.real ** 2 + t.imag ** 2
    d = np.arange(-cp - b, 2 * cp + 1)  # every delay a window of a move |δ| <= cp can cover
    ce = np.concatenate([[0.0], np.cumsum(e[d % n])])
    moves = np.arange(-cp, cp + 1)
    lo = moves - b - d[0]
    win = ce[lo + cp + 1] - ce[lo]  # energy within [δ - b, δ - b + cp]
    far = e[(np.arange(2 * cp + 1, n - cp - b)) % n] if n - cp - b > 2 * cp + 9 else np.sort(e)[: n // 4]
    nu = float(np.mean(far)) if len(far) else 0.0  # noise (and leakage) per tap
    best = float(win.max())
    if not (np.isfinite(win).all() and np.isfinite(nu)):
        return 0  # float32 overflow (input far beyond any real signal): leave it to the checks after
    tol = 0.02 * best + 4.0 * nu * np.sqrt(cp + 1)
    if win[cp] >= best - tol:
        return 0
    cand = moves[win >= best - tol]
    return int(cand[len(cand) // 2])


SRO_MAX_PPM = 250.0  # largest sample-rate offset the drift tracking searches (ppm)


def _drift_fit(r: _Rx, z: np.ndarray, D: int, eps_max: float):
    """(drift, coherence over time, alignment across carriers) of ``estimate_drift`` at lag D."""
    a, b = z[D:], np.conj(z[:-D])
    R = (a * b).sum(axis=0)
    mag = float((np.abs(a) * np.abs(b)).sum())
    ra = float(np.abs(R).sum())
    kmax = float(np.abs(r.kp).max())
    step = 0.05 * r.n / (2 * np.pi * kmax * D)
    grid = np.arange(-eps_max, eps_max + step / 2, step)
    S = np.abs(np.exp(2j * np.pi * D / r.n * np.outer(grid, r.kp)) @ R)
    i = int(np.argmax(S))
    eps = float(grid[i])
    if 0 < i < len(grid) - 1:
        den = S[i - 1] - 2 * S[i] + S[i + 1]
        if den < 0:
            eps += step * 0.5 * float(S[i - 1] - S[i + 1]) / float(den)
    return eps, ra / max(mag, 1e-30), float(S[i]) / max(ra, 1e-30)


def estimate_drift(p: OfdmParams, z: np.ndarray) -> float:
    """Timing drift (samples per OFDM symbol) from pilot channel observations over a frame.

    z: (T × n_pilots) channel observations at the pilots, one row per symbol (header first).
    A sample-rate offset ε delays symbol t by ε·t·symbol_len samples: a phase slope across the
    carriers that grows with t. The products of rows D apart add up to Σ_t z_{t+D} z_t* whose
    phase on carrier k is −2πk·drift·D/N; the drift is the one that aligns them best (the ML
    estimate of a linear phase), on a grid within ±``SRO_MAX_PPM`` and refined by a parabola.
    D: a quarter of the frame, or less where the phase at the outer pilots would be ambiguous.

    A drift is a property of the clocks, the same all through the frame; a fading channel's
    phases wander instead. So the drift is returned only when the products are coherent over
    time and across the carriers (0.7 of their magnitude) and both halves of the frame and
    half the lag give the same value; 0 otherwise (and for frames under 16 symbols).
    """
    r = _rx(p)
    T = len(z)
    kmax = float(np.abs(r.kp).max())
    eps_max = SRO_MAX_PPM * 1e-6 * r.sl
    D = int(min(T // 4, np.floor(0.45 * r.n / (kmax * eps_max))))
    if T < 16 or D < 2:
        return 0.0
    eps, coh, align = _drift_fit(r, z, D, eps_max)
    if coh < 0.7 or align < 0.7:
        return 0.0
    h, tol = T // 2, 0.3 * abs(eps) + DRIFT_MIN_SAMPLES / T
    others = [_drift_fit(r, z[:h + D], D, eps_max)[0], _drift_fit(r, z[h - D:], D, eps_max)[0]]
    if D >= 4:
        others.append(_drift_fit(r, z, D // 2, eps_max)[0])  # and at half the lag
    return 0.0 if max(abs(e - eps) for e in others) > tol else eps


def rx_payload_block(p: OfdmParams, hrx: HeaderRx, cfo: float, blk: np.ndarray, equalizer: str = "zf",
                     pilot_window: int = 0, n_rows: Optional[int] = None) -> Optional[PayloadRx]:
    """Payload block (side + payload symbols, CP included, right after the header) → PayloadRx.

    Timing drift (sample-rate offset): ``estimate_drift`` on the pilots of the whole frame;
    when the drift adds up to ``DRIFT_MIN_SAMPLES`` or more over the frame, the symbols are
    transformed again with each FFT window following it (``symbols_fft``'s ``delay``),
    referenced to the centre of the header (where the channel estimate is taken).
    """
    h = hrx.header
    n_rest = n_side_symbols(p, h.side_len) + n_payload_symbols(p, h.payload_len)
    x = np.asarray(blk, dtype=np.complex64).reshape(-1)
    if len(x) != n_rest * p.symbol_len:
        raise ValueError(f"payload block must hold {n_rest} symbols of {p.symbol_len} samples")
    first = 2 + hrx.n_header
    y = symbols_fft(p, x, first, cfo)
    m = n_rest if n_rows is None else max(0, min(n_rest, int(n_rows)))
    eps = estimate_drift(p, np.concatenate([hrx.pilot_chan, _pilot_obs(p, hrx, y[:m])[0]])) if m else 0.0
    if abs(eps) * (hrx.n_header + n_rest) >= DRIFT_MIN_SAMPLES:
        tau = eps * (hrx.n_header + np.arange(n_rest) - (hrx.n_header - 1) / 2.0)
        y = symbols_fft(p, x, first, cfo, delay=tau)
    else:
        eps = 0.0
    out = demod_payload(p, hrx, y, equalizer, pilot_window, n_rows)
    if out is not None:
        out.cfo = cfo
        out.sro_ppm = eps / p.symbol_len * 1e6
    return out


def frame_len_symbols(p: OfdmParams, h: hdr.Header) -> int:
    """OFDM symbols after the header (side information + payload)."""
    return n_side_symbols(p, h.side_len) + n_payload_symbols(p, h.payload_len)


# ---------------------------------------------------------------------------------------
# Preamble detection: energy-normalised matched filter that collects multipath energy.
THRESHOLD_CAP = 0.25  # highest default threshold (wifi64's; 0.5 at 0 dB Es/N0)
FALSE_ALARM_TAIL = 1e-12  # noise tail probability per window start the default threshold is set above
THRESHOLD_MARGIN = 1.5  # factor on that tail level


def detection_lags(p: OfdmParams) -> int:
    """Matched-filter lags summed by the detector: paths up to the FFT window backoff late."""
    return max(1, fft_window_backoff(p))


# CFO hypotheses of the matched filter (subcarrier spacings): over the two-symbol preamble a
# CFO ν costs the coherent correlation sinc²(ν·len/N) (2 dB at 0.1 for wifi64); testing
# these offsets keeps the loss below 0.5 dB up to |ν| ≈ 0.37.
DETECTION_CFOS = (-0.3, -0.15, 0.0, 0.15, 0.3)


def default_threshold(p: OfdmParams) -> float:
    """Detection threshold for ``p``'s preamble: min(THRESHOLD_CAP, THRESHOLD_MARGIN · q / L).

    On white noise the metric of a window is close to Gamma(J, 1/L) distributed (J
    ``detection_lags``, L the preamble length; the maximum over the CFO hypotheses adds
    little): q is the Gamma(J, 1) level exceeded with probability ``FALSE_ALARM_TAIL``.
    This predicts the measured noise maxima (docs/phy.md) within 10 %. Longer preambles
    average more noise, so the threshold falls (wifi64 0.25, wide256 0.120, wide512 0.081)
    and detection reaches lower SNR (the metric of a frame is about S/(S+N)).
    """
    L, J = len(preamble(p)), detection_lags(p)
    return float(min(THRESHOLD_CAP, THRESHOLD_MARGIN * scipy.special.gammainccinv(J, FALSE_ALARM_TAIL) / L))


def _mf_kernels(p: OfdmParams, nfft: int) -> np.ndarray:
    """Conjugate spectra (len(DETECTION_CFOS) × nfft) of the preamble shifted by each CFO hypothesis."""
    key = ("mf", nfft)
    k = p._cache.get(key)
    if k is None:
        pre = preamble(p).astype(np.complex128)
        t = np.arange(len(pre))
        shifted = np.exp(2j * np.pi * np.outer(DETECTION_CFOS, t) / p.fft_len) * pre
        k = p._cache.setdefault(key, np.conj(np.fft.fft(shifted, nfft, axis=1)))
    return k


def _mf_norm(p: OfdmParams) -> float:
    """Σ_{j<J} |R(j)|² / E_pre (R: preamble autocorrelation): scales the metric of a clean,
    aligned, single-path preamble to 1."""
    v = p._cache.get("mf_norm")
    if v is None:
        pre = preamble(p).astype(np.complex128)
        r = [abs(np.vdot(pre[: len(pre) - j], pre[j:])) ** 2 for j in range(detection_lags(p))]
        v = p._cache.setdefault("mf_norm", float(np.sum(r)) / float(np.sum(np.abs(pre) ** 2)))
    return v


def preamble_metric(p: OfdmParams, x: np.ndarray) -> np.ndarray:
    """Detection metric for every window start d with x[d : d + len(preamble) + J - 1] available.

    m[d] = max_ν Σ_{j<J} |c_ν[d+j]|² / (E_x(d) · Σ_{j<J} |R(j)|²), with c_ν the matched
    filter on the preamble shifted by the CFO hypothesis ν (``DETECTION_CFOS``), R the
    preamble's autocorrelation, E_x the energy of the samples involved and J =
    ``detection_lags``. Scale-invariant, 1 for a clean aligned preamble on a single path,
    and it keeps the energy of paths up to J - 1 samples late (multipath does not split
    the peak); white noise gives about J/len(preamble).
    """
    L, J = len(preamble(p)), detection_lags(p)
    n = len(x) - (L + J - 1) + 1
    if n <= 0:
        return np.zeros(0)
    x = np.asarray(x, dtype=np.complex128)
    nfft = 1 << int(np.ceil(np.log2(len(x))))
    c = np.fft.ifft(np.fft.fft(x, nfft) * _mf_kernels(p, nfft), axis=1)[:, : len(x) - L + 1]  # c[d] ↔ x[d:d+L]
    s = np.cumsum(c.real ** 2 + c.imag ** 2, axis=1)
    a = (s[:, J - 1:J - 1 + n] - np.concatenate([np.zeros((len(s), 1)), s[:, :n - 1]], axis=1)).max(axis=0)
    e = np.concatenate([[0.0], np.cumsum(np.abs(x) ** 2)])
    en = e[L + J - 1:L + J - 1 + n] - e[:n]
    # silence must not look like a match (cumulative sums leave rounding residue next to a
    # strong burst): a floor far below any real signal in this buffer
    floor = 1e-12 * float(en.max(initial=0.0)) + 1e-300
    return a / (np.maximum(en, floor) * _mf_norm(p))


def _peaks(m: np.ndarray, threshold: float, radius: int, first: int = 0, last: Optional[int] = None) -> np.ndarray:
    """Indices in [first, last) where m exceeds the threshold and is the largest within ±radius
    (the first of equal neighbouring maxima)."""
    last = len(m) if last is None else last
    if last <= first:
        return np.zeros(0, np.int64)
    mx = maximum_filter1d(m, size=2 * radius + 1, mode="constant")
    seg = m[first:last]
    idx = np.flatnonzero((seg > threshold) & (seg >= mx[first:last])) + first
    if len(idx) > 1:  # plateaus: keep the first sample of equal neighbouring maxima
        idx = idx[np.concatenate([[True], np.diff(idx) > radius])]
    return idx


def detect_preamble(p: OfdmParams, x: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Indices of the detected preambles' last samples in a whole buffer (see ``preamble_metric``;
    threshold 0: ``default_threshold``)."""
    L = len(preamble(p))
    m = preamble_metric(p, x)
    return (_peaks(m, threshold or default_threshold(p), L) + L - 1).astype(np.int64)


_SEARCH_SEGMENT = 1 << 15  # samples per matched-filter pass: bounds the work of each search step


class _SampleBuffer:
    """Growable window of a sample stream, addressed by absolute sample index."""

    def __init__(self):
        self._a = np.zeros(1 << 14, np.complex64)
        self.base = 0  # absolute index of _a[0]
        self._n = 0

    @property
    def end(self) -> int:
        """Absolute index one past the last sample held."""
        return self.base + self._n

    def append(self, x: np.ndarray):
        need = self._n + len(x)
        if need > len(self._a):
            a = np.zeros(max(need, 2 * len(self._a)), np.complex64)
            a[: self._n] = self._a[: self._n]
            self._a = a
        self._a[self._n:need] = x
        self._n = need

    def view(self, a: int, b: int) -> np.ndarray:
        return self._a[a - self.base: b - self.base]

    def discard_before(self, a: int):
        k = min(max(0, a - self.base), self._n)
        if k:
            self._a[: self._n - k] = self._a[k: self._n]
            self._n -= k
            self.base += k


def _finite_frame(prx) -> bool:
    """True when every number of a received frame that a decoder uses is finite."""
    return bool(np.isfinite(prx.snr_db) and np.isfinite(prx.noise_var_sc) and np.all(np.isfinite(prx.symbols))
                and np.all(np.isfinite(prx.noise_var)))


class FrameReceiver:
    """Streaming receiver: feed samples in chunks of any size, get each frame once its last sample is in.

    Detection: ``preamble_metric`` above ``threshold`` (0: ``default_threshold``) and largest within ± one preamble
    length (needs one preamble length of samples after the peak, which the frame itself
    provides: no trailing signal is needed). The start then moves by ``timing_correction``
    (the channel inside the CP) and the header block is decoded
    (``rx_header_block``); a frame whose header fails (CRC, or a length above
    ``max_payload_len``/``max_side_len``) is counted in ``header_failures`` and the search
    resumes one preamble length later; otherwise the receiver waits for the rest of the
    frame, equalises it (``rx_payload_block``) and resumes the search after it. NaN/Inf
    samples count as 0 for detection, and a frame that contains any is dropped and counted
    in ``header_failures`` (a corrupted capture is never decoded). A frame whose equalised
    symbols, noise variances or SNR estimate come out non-finite (input so large that float32
    arithmetic overflows) is dropped and counted in ``nonfinite_frames``: no frame with NaN/Inf
    is ever returned. A burst cut short (``signal_end``, or another frame's preamble found
    after a symbol that looked like the end) is returned with its lost symbols marked
    (``PayloadRx.lost``) and counted in ``truncated_frames`` (dropped, still counted, when
    nothing of its payload arrived); the search resumes where it ended, so the next frame is
    found.
    """

    def __init__(self, params: OfdmParams, threshold: float = 0.0, equalizer: str = "zf",
                 pilot_window: int = 0, max_payload_len: int = hdr.MAX_PAYLOAD_LEN,
                 max_side_len: int = hdr.MAX_SIDE_LEN):
        if not 0.0 <= float(threshold) < 1.0:
            raise ValueError(f"threshold must be in [0, 1) (0: the profile's default), got {threshold!r}")
        if equalizer not in ("zf", "mmse"):
            raise ValueError(f"equalizer must be 'zf' or 'mmse', got {equalizer!r}")
        if int(pilot_window) < 0:
            raise ValueError("pilot_window must be >= 0 (0: automatic)")
        self.p = params
        self.threshold = float(threshold) or default_threshold(params)
        self.equalizer = equalizer
        self.pilot_window = int(pilot_window)
        self.max_payload_len, self.max_side_len = int(max_payload_len), int(max_side_len)
        self.header_failures = 0
        self.side_failures = 0
        self.nonfinite_frames = 0
        self.truncated_frames = 0
        self.frames = 0
        self._L = len(preamble(params))
        self._J = detection_lags(params)
        self._n_hdr = (2 + n_header_symbols(params)) * params.symbol_len
        self._buf = _SampleBuffer()
        self._scan = 0  # first window start not yet searched
        self._start = None  # start of the frame being received
        self._hrx = None  # its decoded header, cfo and end
        self._cfo = 0.0
        self._end = 0
        self._bad = []  # (first, last + 1) of pushed chunks' non-finite samples still in the buffer

    @property
    def samples_in(self) -> int:
        """Samples pushed so far."""
        return self._buf.end

    def push(self, x: np.ndarray) -> List[PayloadRx]:
        """Append samples; return the frames completed by them (in order)."""
        x = np.asarray(x, dtype=np.complex64)
        buf = self._buf
        bad = ~np.isfinite(x)
        if bad.any():
            i = np.flatnonzero(bad)
            self._bad.append((buf.end + int(i[0]), buf.end + int(i[-1]) + 1))
            x = np.where(bad, np.complex64(0), x)
        buf.append(x)
        out: List[PayloadRx] = []
        while True:
            if self._start is None:
                self._start = self._find()
                if self._start is None:
                    break
            if self._hrx is None:
                if buf.end < self._start + self._n_hdr + self.p.cp_len:  # a CP of margin for the timing move
                    break
                if not self._header():
                    continue
            if buf.end < self._end:
                break
            corrupt = self._corrupt(self._start, self._end)
            blk = buf.view(self._start + self._n_hdr, self._end)
            prx = None if corrupt else rx_payload_block(self.p, self._hrx, self._cfo, blk, self.equalizer,
                                                        self.pilot_window)
            if prx is not None and prx.suspect_row is not None:
                # the burst may have ended early with another frame after it: look for its preamble
                q = self._preamble_after(self._start + self._n_hdr + max(prx.suspect_row - 1, 0) * self.p.symbol_len)
                if q is not None:
                    prx = rx_payload_block(self.p, self._hrx, self._cfo, blk, self.equalizer, self.pilot_window,
                                           n_rows=(q - self._start - self._n_hdr) // self.p.symbol_len)
            # the next frame may begin up to a CP before this one's end (timing late by a few samples)
            end = self._end
            if prx is not None and prx.n_lost:  # the burst ended early: hunt again from where it did
                end = self._start + self._n_hdr + prx.kept_symbols * self.p.symbol_len
            self._scan, self._start, self._hrx = end - self.p.cp_len, None, None
            if corrupt:
                self.header_failures += 1
            elif prx is None:
                self.side_failures += 1
            elif not _finite_frame(prx):
                self.nonfinite_frames += 1  # overflow (input far beyond float32 range): never handed on
            elif prx.n_lost == prx.header.payload_len:
                self.truncated_frames += 1  # nothing of the payload arrived
            else:
                self.truncated_frames += bool(prx.n_lost)
                self.frames += 1
                out.append(prx)
        keep = self._scan - self._L if self._start is None else min(self._start, self._scan - self._L)
        buf.discard_before(keep)
        self._bad = [b for b in self._bad if b[1] > buf.base]
        return out

    def _corrupt(self, a: int, b: int) -> bool:
        """Whether samples a…b-1 held a NaN or Inf (replaced by 0 for detection)."""
        return any(i0 < b and i1 > a for i0, i1 in self._bad)

    def _header(self) -> bool:
        s, cp = self._start, self.p.cp_len
        if s - cp >= self._buf.base:
            s += timing_correction(self.p, self._buf.view(s - cp, s + 2 * self.p.symbol_len + cp))
            self._start = s
        hrx, cfo = rx_header_block(self.p, self._buf.view(s, s + self._n_hdr))
        h = hrx.header if hrx is not None else None
        if (h is None or self._corrupt(s, s + self._n_hdr) or h.payload_len > self.max_payload_len
                or h.side_len > self.max_side_len):
            self.header_failures += 1
            self._scan, self._start = s + self._L, None
            return False
        self._hrx, self._cfo = hrx, cfo
        self._end = s + self._n_hdr + frame_len_symbols(self.p, h) * self.p.symbol_len
        return True

    def _preamble_after(self, a: int) -> Optional[int]:
        """Start of the first preamble that begins in [a, end of the current frame), if any
        (window starts with the full right context in the buffer)."""
        buf, L = self._buf, self._L
        lo = max(buf.base, a - L)
        b = min(buf.end, self._end + L + self._J - 1 + L)
        m = preamble_metric(self.p, buf.view(lo, b))
        pk = _peaks(m, self.threshold, L, a - lo, min(len(m) - L, self._end - lo))
        return lo + int(pk[0]) if len(pk) else None

    def _find(self) -> Optional[int]:
        """Start of the next preamble at or after ``_scan``, or None (``_scan`` advanced)."""
        buf, L = self._buf, self._L
        lo = max(buf.base, self._scan - L)  # left context for the local-maximum test
        seg = 4 * L
        while True:
            # window starts up to ``last`` have their full right context in this segment
            end = min(buf.end, lo + seg)
            last = end - (L + self._J - 1) - L
            if last < self._scan:
                return None
            m = preamble_metric(self.p, buf.view(lo, end))
            pk = _peaks(m, self.threshold, L, self._scan - lo, last + 1 - lo)
            if len(pk):
                return lo + int(pk[0])
            self._scan = last + 1
            lo = self._scan - L
            seg = min(2 * seg, _SEARCH_SEGMENT)  # a frame is usually found right away; gaps grow the step


class ReferenceModem:
    """TX and RX of the semantic OFDM frame on whole numpy buffers (no GNU Radio).

    ``rx`` runs a fresh ``FrameReceiver`` (the receiver inside ``semcom.ofdm_rx``) over the
    buffer; the failure counters accumulate over calls.
    """

    def __init__(self, params: OfdmParams, threshold: float = 0.0, equalizer: str = "zf",
                 pilot_window: int = 0):
        self.p = params
        self.threshold = threshold
        self.equalizer = equalizer
        self.pilot_window = pilot_window
        self.header_failures = 0
        self.side_failures = 0
        self.nonfinite_frames = 0

    def tx(self, payload, codec_id: int = 0, seq: int = 0, side: bytes = b"") -> np.ndarray:
        return frame_samples(self.p, build_frame(self.p, payload, codec_id, seq, side))

    def frame_samples(self, payload_len: int, side_len: int = 0) -> int:
        p = self.p
        return (2 + n_header_symbols(p) + n_side_symbols(p, side_len) + n_payload_symbols(p, payload_len)) \
            * p.symbol_len

    def rx(self, x: np.ndarray) -> List[PayloadRx]:
        r = FrameReceiver(self.p, self.threshold, self.equalizer, self.pilot_window)
        out = r.push(x)
        self.header_failures += r.header_failures
        self.side_failures += r.side_failures
        self.nonfinite_frames += r.nonfinite_frames
        return out
