"""Frame assembly and frame-level receiver processing, plus a numpy reference modem.

The functions ``build_frame``, ``decode_header`` and ``demod_payload`` are shared: the GNU
Radio blocks call them at frame level (after GNU Radio's C++ sync, FFT and channel
estimator), and ``ReferenceModem`` wraps them with a numpy Schmidl & Cox synchroniser so
that tests and fast sweeps run the very same frame format without GNU Radio.

Scaling: the payload is normalised to unit mean power per complex symbol (the gain used is
sent in the header and undone by the receiver), the IFFT is unitary (× 1/√N), so a data
subcarrier carries Es = 1 and a channel that adds CN(0, σ²) per sample gives Es/N0 = 1/σ²
per channel use — the project's single SNR convention.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

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
    return n_coded_symbols(p, hdr.HEADER_CODED_LEN)


def n_side_symbols(p: OfdmParams, side_len: int) -> int:
    return n_coded_symbols(p, hdr.side_coded_len(side_len))


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
    """Quantised gain (0.25 dB steps) that brings the payload to unit mean power."""
    pw = float(np.mean(np.abs(payload) ** 2)) if len(payload) else 1.0
    if not np.isfinite(pw):
        raise ValueError("payload contains NaN or Inf")
    if pw <= 0:
        return 0
    code = int(np.round(-10 * np.log10(pw) / hdr.GAIN_STEP_DB))
    return int(np.clip(code, -128, 127))


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
    h_grid = _chips_to_grid(p, hdr.encode_bits_block(hdr.header_to_bits(h)))
    s_grid = (_chips_to_grid(p, hdr.encode_bits_block(hdr.side_to_bits(side))) if side
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
    t = np.fft.ifft(np.fft.ifftshift(grid, axes=1), axis=1) * np.sqrt(n)
    t = np.concatenate([t[:, n - p.cp_len:], t], axis=1)
    return t.reshape(-1).astype(np.complex64)


# ---------------------------------------------------------------------------------------
# Receiver, frame level
@dataclass
class HeaderRx:
    header: hdr.Header
    chan: np.ndarray  # refined channel estimate, shifted domain (N,)
    noise_var: float  # per-subcarrier noise variance σ²
    phase0: float  # common phase model φ(t) = phase0 + dphi·t, t counted from the first header symbol
    dphi: float
    n_header: int


_OMEGA_GRID = np.linspace(-0.8, 0.8, 321)


def _fit_phase(c: np.ndarray):
    """Linear phase model φ(t) = φ0 + Δφ·t from per-symbol complex correlations c_t.

    Δφ maximises |Σ c_t e^{-jΔφ t}| (the ML estimate of a tone in noise) on a grid of
    ±0.8 rad/symbol (residual CFO up to ±0.1 subcarrier), then φ0 follows.
    """
    t = np.arange(len(c))
    if len(c) > 2:
        s = np.exp(-1j * np.outer(_OMEGA_GRID, t)) @ c
        dphi = float(_OMEGA_GRID[int(np.argmax(np.abs(s)))])
    elif len(c) == 2:
        dphi = float(np.angle(c[1] * np.conj(c[0])))
    else:
        dphi = 0.0
    phase0 = float(np.angle(np.sum(c * np.exp(-1j * dphi * t))))
    return phase0, dphi


def delay_projection(p: OfdmParams) -> np.ndarray:
    """Projection of active-carrier channel vectors onto impulse responses inside the CP.

    A channel whose impulse response fits in the cyclic prefix (the only kind an OFDM
    receiver can equalise without ISI) lives in a ``cp_len``-dimensional subspace of the
    active carriers; projecting a noisy estimate onto it removes (1 - cp/N_active) of the
    noise. Delays span [-cp/4, 3cp/4) around the FFT window, matching the window backoff.
    """
    P = p._cache.get("delay_proj")
    if P is None:
        k = (p.active_idx - p.fft_len // 2).astype(np.float64)
        d = np.arange(p.cp_len) - fft_window_backoff(p)
        F = np.exp(-2j * np.pi * np.outer(k, d) / p.fft_len)
        P = (F @ np.linalg.pinv(F)).astype(np.complex64)
        p._cache["delay_proj"] = P
    return P


def decode_header(p: OfdmParams, y_hdr: np.ndarray, chan0: np.ndarray) -> Optional[HeaderRx]:
    """Decode the coded header from its OFDM symbols.

    y_hdr: (n_header × N) received header symbols after a unitary FFT, shifted domain.
    chan0: (N,) channel estimate from the second sync symbol (same scaling).
    Returns None when the CRC (or version) fails — the frame must then be dropped.
    """
    n_h = n_header_symbols(p)
    y = np.asarray(y_hdr, dtype=np.complex64)
    h0 = np.asarray(chan0, dtype=np.complex64)
    if y.shape != (n_h, p.fft_len) or h0.shape != (p.fft_len,):
        raise ValueError(f"header block must be ({n_h}, {p.fft_len}), channel ({p.fft_len},)")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(h0))):
        return None
    di, pi = p.data_idx, p.pilot_idx
    act = p.active_idx
    pil = p.pilot_values(0, n_h)
    proj = delay_projection(p)
    h0 = h0.copy()
    h0[act] = proj @ h0[act]
    # 1. common phase from pilots, linear model over the header
    c = np.sum(y[:, pi] * np.conj(h0[pi] * pil), axis=1)
    ph0, dph = _fit_phase(c)
    rot = np.exp(-1j * (ph0 + dph * np.arange(n_h)))[:, None]
    # 2. MRC soft chips, ML decoding, CRC
    z = y[:, di] * rot * np.conj(h0[di])
    bits = hdr.decode_bits_block(_grid_to_soft(p, z), hdr.HEADER_INFO_BITS)
    h = hdr.bits_to_header(bits)
    if h is None:
        return None
    # 3. the header is now known: refine phase, channel and noise variance with it
    x = np.zeros((n_h, p.fft_len), np.complex64)
    x[:, di] = _chips_to_grid(p, hdr.encode_bits_block(bits))
    x[:, pi] = pil
    c = np.sum(y[:, act] * np.conj(h0[act] * x[:, act]), axis=1)
    ph0, dph = _fit_phase(c)
    rot = np.exp(-1j * (ph0 + dph * np.arange(n_h)))[:, None]
    yr = y[:, act] * rot
    obs = yr / x[:, act]  # unit-magnitude known symbols → per-symbol channel observations
    m = n_h + 1
    chan = np.zeros(p.fft_len, np.complex64)
    chan[act] = proj @ ((h0[act] + obs.sum(axis=0)) / m)
    resid = yr - chan[act] * x[:, act]
    # the residual misses the part of the noise that went into the (projected, averaged) estimate
    nvar = float(np.mean(np.abs(resid) ** 2) / (1.0 - p.cp_len / (len(act) * m)))
    return HeaderRx(h, chan, max(nvar, 1e-12), ph0, dph, n_h)


@dataclass
class PayloadRx:
    header: hdr.Header
    symbols: np.ndarray  # equalised analog payload (complex64), gain undone
    noise_var: np.ndarray  # per-symbol noise variance of ``symbols`` (float32)
    side: bytes
    snr_db: float  # estimated Es/N0 per channel use
    noise_var_sc: float  # per-subcarrier noise variance σ² (transmit scale)
    chan: np.ndarray = field(repr=False, default=None)  # per-subcarrier channel (data carriers)
    cfo: float = 0.0  # estimated carrier frequency offset, subcarrier spacings


def demod_payload(p: OfdmParams, hrx: HeaderRx, y_pl: np.ndarray, equalizer: str = "zf",
                  pilot_window: int = 7) -> Optional[PayloadRx]:
    """Side information + analog payload from the OFDM symbols that follow the header.

    Preamble/header channel estimate, pilot-tracked common complex gain (smoothed over
    ``pilot_window`` symbols around each symbol), then ZF (unbiased; noise variance
    σ²/|H|² per symbol) or MMSE equalisation. No decision feedback: the payload has no
    constellation to decide on. Returns None if the side information fails its CRC.
    """
    if equalizer not in ("zf", "mmse"):
        raise ValueError(f"equalizer must be 'zf' or 'mmse', got {equalizer!r}")
    h = hrx.header
    n_s, n_p = n_side_symbols(p, h.side_len), n_payload_symbols(p, h.payload_len)
    y = np.asarray(y_pl, dtype=np.complex64)
    if y.shape != (n_s + n_p, p.fft_len):
        raise ValueError(f"payload block must be ({n_s + n_p}, {p.fft_len}), got {y.shape}")
    y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    n = n_s + n_p
    t = hrx.n_header + np.arange(n)
    di, pi = p.data_idx, p.pilot_idx
    pred = np.exp(1j * (hrx.phase0 + hrx.dphi * t)).astype(np.complex64)
    pil = p.pilot_values(hrx.n_header, n)
    hp = hrx.chan[pi]
    g = np.sum(y[:, pi] * np.conj(hp * pil), axis=1) / pred / max(float(np.sum(np.abs(hp) ** 2)), 1e-30)
    w = max(1, int(pilot_window))
    if w > 1 and n > 1:
        k = np.ones(min(w, n))
        g = np.convolve(g, k, mode="same") / np.convolve(np.ones(n), k, mode="same")
    hch = hrx.chan[di][None, :] * (g * pred)[:, None]  # (n × n_data)
    s2 = hrx.noise_var
    side = b""
    if n_s:
        z = y[:n_s, di] * np.conj(hch[:n_s])
        bits = hdr.decode_bits_block(_grid_to_soft(p, z), 8 * h.side_len + 16)
        side = hdr.bits_to_side(bits, h.side_len)
        if side is None:
            return None
    yp, hp_ = y[n_s:, di].reshape(-1)[: h.payload_len], hch[n_s:].reshape(-1)[: h.payload_len]
    mag2 = np.maximum(np.abs(hp_) ** 2, 1e-30)
    if equalizer == "zf":
        xs = yp * np.conj(hp_) / mag2  # = y/H, and 0 (not NaN) where the channel estimate is 0
        nv = np.minimum(s2 / mag2, 1e12)  # a dead subcarrier reports a huge, finite noise variance
    else:
        xs = np.conj(hp_) * yp / (mag2 + s2)
        nv = s2 / (mag2 + s2)  # MMSE error variance
    a = 10 ** (-h.gain_db / 20)
    snr = 10 * np.log10(max(float(np.mean(np.abs(hrx.chan[di]) ** 2)), 1e-30) / s2)
    return PayloadRx(h, (xs * a).astype(np.complex64), (nv * a * a).astype(np.float32), side, float(snr), s2,
                     hrx.chan[di].copy())


# ---------------------------------------------------------------------------------------
# Time-domain front end shared by the GNU Radio receiver and the reference modem.
#
# Frame timing comes from a matched filter on the known preamble (sync symbols 1 and 2
# with their cyclic prefixes): its peak marks the preamble's last sample. Everything below
# works on blocks of whole symbols (CP included) that start at the frame start.
def preamble(p: OfdmParams) -> np.ndarray:
    """Time-domain preamble (both sync symbols with cyclic prefixes), unit power per subcarrier."""
    pre = p._cache.get("preamble")
    if pre is None:
        pre = grid_to_time(p, frame_grid(p, np.zeros((0, p.n_data), np.complex64)))
        p._cache["preamble"] = pre
    return pre


def fft_window_backoff(p: OfdmParams) -> int:
    """Samples of the cyclic prefix kept before each FFT window (margin for early/late timing)."""
    return p.cp_len // 4


def symbols_fft(p: OfdmParams, blk: np.ndarray, first_symbol: int, cfo: float) -> np.ndarray:
    """CFO-correct and FFT whole symbols.

    blk: (n × symbol_len) samples of symbols ``first_symbol…`` counted from the frame start
    (symbol 0 = sync 1); cfo in subcarrier spacings, phase referenced to the frame start.
    Returns (n × N) unitary FFT outputs in the shifted domain.
    """
    n, sl = p.fft_len, p.symbol_len
    start = p.cp_len - fft_window_backoff(p)
    x = np.asarray(blk, dtype=np.complex64).reshape(-1, sl)[:, start:start + n]
    if cfo:
        idx = (first_symbol + np.arange(x.shape[0]))[:, None] * sl + start + np.arange(n)[None, :]
        x = x * np.exp(-2j * np.pi * cfo / n * idx).astype(np.complex64)
    y = np.fft.fft(x, axis=1)
    y = np.fft.fftshift(y, axes=1)
    # undo the linear phase of the early window so that channel estimates stay smooth
    y *= (_window_phase(p) / np.float32(np.sqrt(n)))[None, :]
    return y


def _window_phase(p: OfdmParams) -> np.ndarray:
    w = p._cache.get("winph")
    if w is None:
        k = np.arange(p.fft_len) - p.fft_len // 2
        w = np.exp(2j * np.pi * k * fft_window_backoff(p) / p.fft_len).astype(np.complex64)
        p._cache["winph"] = w
    return w


def estimate_cfo(p: OfdmParams, blk: np.ndarray) -> float:
    """CFO (subcarrier spacings, |cfo| < 1) from the two sync symbols.

    Coarse: Schmidl & Cox half-symbol correlation of sync 1. Fine: phase advance of the
    channel seen on sync 1's carriers between sync 1 and sync 2 (one symbol apart).
    """
    n, sl, L = p.fft_len, p.symbol_len, p.fft_len // 2
    x = np.asarray(blk[: 2 * sl], dtype=np.complex64)
    u = x[p.cp_len: p.cp_len + n]
    coarse = float(np.angle(np.vdot(u[:L], u[L:])) / np.pi)
    y = symbols_fft(p, x, 0, coarse)
    sw1, sw2 = p.sync_word1, p.sync_word2
    ks = np.flatnonzero(sw1)
    h1 = y[0, ks] / sw1[ks]
    h2 = y[1, ks] / sw2[ks]
    fine = float(np.angle(np.vdot(h1, h2))) / (2 * np.pi * sl / n)
    return coarse + fine


def rx_header_block(p: OfdmParams, blk: np.ndarray):
    """Header block → (HeaderRx or None, cfo). ``blk``: (2 + n_header) symbols from the frame start."""
    n_h = n_header_symbols(p)
    x = np.asarray(blk, dtype=np.complex64).reshape(-1)[: (2 + n_h) * p.symbol_len]
    if len(x) < (2 + n_h) * p.symbol_len or not np.all(np.isfinite(x)):
        return None, 0.0
    cfo = estimate_cfo(p, x)
    y = symbols_fft(p, x, 0, cfo)
    return decode_header(p, y[2:], sync_channel(p, y[0], y[1])), cfo


def sync_channel(p: OfdmParams, y1: np.ndarray, y2: np.ndarray) -> np.ndarray:
    """Channel estimate from both sync symbols, inverse-variance weighted (sync 1 has 2× power)."""
    act = p.active_idx
    sw1, sw2 = p.sync_word1, p.sync_word2
    h = np.zeros(p.fft_len, np.complex64)
    h[act] = y2[act] / sw2[act]
    e = np.flatnonzero(sw1)
    h[e] = (h[e] + 2 * (y1[e] / sw1[e])) / 3
    return h


def rx_payload_block(p: OfdmParams, hrx: HeaderRx, cfo: float, blk: np.ndarray, equalizer: str = "zf",
                     pilot_window: int = 7) -> Optional[PayloadRx]:
    """Payload block (side + payload symbols, CP included, right after the header) → PayloadRx."""
    h = hrx.header
    n_rest = n_side_symbols(p, h.side_len) + n_payload_symbols(p, h.payload_len)
    x = np.nan_to_num(np.asarray(blk, dtype=np.complex64).reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
    if len(x) != n_rest * p.symbol_len:
        raise ValueError(f"payload block must hold {n_rest} symbols of {p.symbol_len} samples")
    y = symbols_fft(p, x, 2 + hrx.n_header, cfo)
    out = demod_payload(p, hrx, y, equalizer, pilot_window)
    if out is not None:
        out.cfo = cfo
    return out


def frame_len_symbols(p: OfdmParams, h: hdr.Header) -> int:
    """OFDM symbols after the header (side information + payload)."""
    return n_side_symbols(p, h.side_len) + n_payload_symbols(p, h.payload_len)


def detect_preamble(p: OfdmParams, x: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    """Indices of the preamble's last sample (peaks of the normalised matched filter)."""
    pre = preamble(p)
    L = len(pre)
    if len(x) < L:
        return np.zeros(0, np.int64)
    from scipy.signal import fftconvolve
    x = np.asarray(x, dtype=np.complex128)  # float32 running sums lose the small windows
    c = fftconvolve(x, np.conj(pre[::-1]).astype(np.complex128), mode="valid")  # c[d] ↔ window x[d:d+L]
    en = np.convolve(np.abs(x) ** 2, np.ones(L), mode="valid")  # exact local window energies
    # silence (all-zero gaps) must not look like a match; the floor is far below any real
    # signal even next to a very strong burst
    floor = 1e-14 * float(en.max()) + 1e-30
    m = np.abs(c) ** 2 / (np.maximum(en, floor) * float(np.sum(np.abs(pre) ** 2)))
    from scipy.ndimage import maximum_filter1d
    local = maximum_filter1d(m, size=2 * L + 1, mode="constant")
    peaks = np.flatnonzero((m > threshold) & (m >= local))
    if len(peaks) > 1:  # plateaus: keep the first sample of equal neighbouring maxima
        peaks = peaks[np.concatenate([[True], np.diff(peaks) > L])]
    return (peaks + L - 1).astype(np.int64)


class ReferenceModem:
    """TX and RX of the semantic OFDM frame in plain numpy (no GNU Radio).

    Same frame format and the same frame-level receiver as the GNU Radio blocks; the
    matched-filter detector here mirrors ``digital.corr_est_cc`` in the GR receiver.
    """

    def __init__(self, params: OfdmParams, threshold: float = 0.2, equalizer: str = "zf",
                 pilot_window: int = 7):
        self.p = params
        self.threshold = threshold
        self.equalizer = equalizer
        self.pilot_window = pilot_window
        self.header_failures = 0
        self.side_failures = 0

    def tx(self, payload, codec_id: int = 0, seq: int = 0, side: bytes = b"") -> np.ndarray:
        f = build_frame(self.p, payload, codec_id, seq, side)
        return grid_to_time(self.p, frame_grid(self.p, f.data))

    def frame_samples(self, payload_len: int, side_len: int = 0) -> int:
        p = self.p
        return (2 + n_header_symbols(p) + n_side_symbols(p, side_len) + n_payload_symbols(p, payload_len)) \
            * p.symbol_len

    def rx(self, x: np.ndarray) -> List[PayloadRx]:
        p = self.p
        sl, n_h = p.symbol_len, n_header_symbols(p)
        x = np.nan_to_num(np.asarray(x, dtype=np.complex64), nan=0.0, posinf=0.0, neginf=0.0)
        out: List[PayloadRx] = []
        busy_until = -1
        for peak in detect_preamble(p, x, self.threshold):
            start = peak - 2 * sl  # one sample early, like the GR receiver (trigger = peak)
            if start < busy_until:
                continue
            if start < 0 or start + (2 + n_h) * sl > len(x):
                continue
            hrx, cfo = rx_header_block(p, x[start: start + (2 + n_h) * sl])
            busy_until = start + (2 + n_h) * sl
            if hrx is None:
                self.header_failures += 1
                continue
            n_rest = frame_len_symbols(p, hrx.header)
            a = start + (2 + n_h) * sl
            if a + n_rest * sl > len(x):
                self.header_failures += 1
                continue
            prx = rx_payload_block(p, hrx, cfo, x[a: a + n_rest * sl], self.equalizer, self.pilot_window)
            busy_until = a + n_rest * sl
            if prx is None:
                self.side_failures += 1
                continue
            out.append(prx)
        return out
