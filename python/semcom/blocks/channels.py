"""GNU Radio channel blocks (complex in → complex out) with numpy twins in ``semcom.channels``.

SNR convention (the only one in gr-semcom): SNR is Es/N0 per complex channel use, transmit
power normalised to Es = 1 per complex symbol; every block adds CN(0, σ²) with
σ² = 10^(−snr_db/10) per complex sample and never measures the signal power. The OFDM TX
normalises each data subcarrier to Es = 1 and uses a unitary IFFT, so per-subcarrier Es/N0
equals ``snr_db``. ``snr_db=None`` or ``inf`` adds no noise (the noise source stays in the
graph with amplitude 0, so ``set_snr_db`` can turn it on at run time).

Which GNU Radio blocks do the work:

* noise: analog.noise_source_c(GR_GAUSSIAN, sqrt(σ²)) + blocks.add_cc. Measured: amplitude a
  gives total complex variance a² (a²/2 per real dimension), i.e. exactly CN(0, σ²).
  channels.channel_model is NOT used: it resamples (changes sample count and alignment) and
  adds a multipath FIR.
* Doppler flat fading: channels.fading_model (Zheng–Xiao sum of sinusoids, E|h|² = 1 measured,
  Rician LOS with K in linear units). Its twin is semcom.channels.FlatFading (same model family
  and statistics, not the same random numbers).
* Doppler multipath: channels.selective_fading_model with the delays/amplitudes computed by
  semcom.channels.discretize (same taps; each path an independent fading_model-like process).
* block fading (fdts = 0): no GR block does it; a Python sync_block runs the numpy core.
* static n-path: filter.fir_filter_ccc with the taps of semcom.channels.npath_taps (exact twin).
* impairments: filter.fir_filter_ccf (integer + fractional delay, taps of
  semcom.channels.delay_taps) + blocks.skiphead, blocks.rotator_cc (CFO), blocks.delay +
  filter.mmse_resampler_cc (SRO).

Seeds: an integer >= 0 (every GR random block is deterministic for a given seed — in GR 3.10
seed 0 is a fixed seed too, not "random"); ``seed=None`` draws a random one. The noise source
gets ``seed + 1_000_003``, multipath path i gets ``seed + i`` (gr-channels' own rule).
"""
from __future__ import annotations

import importlib
import math

import numpy as np
from gnuradio import analog, blocks, channels as gr_channels, filter as gr_filter, gr

# the numpy core package gnuradio.semcom.channels (explicit: this module is blocks.channels)
core = importlib.import_module("..channels", __package__)

__all__ = ["awgn_channel", "flat_fading_channel", "multipath_channel", "n_path_channel", "impairments",
           "numpy_channel"]

_NOISE_SEED_OFFSET = 1_000_003
_C = gr.sizeof_gr_complex


def _seed(seed):
    if seed is None:
        return int(np.random.default_rng().integers(0, 2 ** 31 - 1 - 2 * _NOISE_SEED_OFFSET))
    return core._util.check_seed(seed)


def _hier(self, name):
    gr.hier_block2.__init__(self, name, gr.io_signature(1, 1, _C), gr.io_signature(1, 1, _C))


class _Noise:
    """Mixin: noise_source_c + add_cc at the end of a hier block, with set_snr_db."""

    def _build_noise(self, upstream, snr_db, seed):
        self._noise_var = core.snr_to_noise_var(snr_db)
        self._snr_db = math.inf if self._noise_var == 0.0 else float(snr_db)
        self._noise = analog.noise_source_c(analog.GR_GAUSSIAN, math.sqrt(self._noise_var),
                                            int(seed) + _NOISE_SEED_OFFSET)
        self._add = blocks.add_cc()
        self.connect(upstream, (self._add, 0))
        self.connect(self._noise, (self._add, 1))
        self.connect(self._add, self)

    def set_snr_db(self, snr_db):
        """Change the SNR at run time (σ² = 10^(−snr_db/10); None/inf: no noise)."""
        self._noise_var = core.snr_to_noise_var(snr_db)
        self._snr_db = math.inf if self._noise_var == 0.0 else float(snr_db)
        self._noise.set_amplitude(math.sqrt(self._noise_var))

    def snr_db(self):
        return self._snr_db

    def noise_var(self):
        return self._noise_var


class numpy_channel(gr.sync_block):
    """Python block running a numpy channel model (any length-preserving stateful callable).

    ``model``: an object ``f(x: complex64[n]) -> complex64[n]`` (e.g. semcom.channels.FlatFading,
    MultipathChannel, NPathChannel, or a ChannelChain) or a spec dict for
    semcom.channels.make_channel (no timing_offset/sro_ppm: those act per burst; block fading
    needs an explicit block_len, since "one coefficient per call" means per work() here). The model is
    called once per work() with all available samples (vectorised) and keeps its state, so the
    output is the same as calling the model on the whole stream in chunks.
    """

    def __init__(self, model, seed=None):
        gr.sync_block.__init__(self, "semcom_numpy_channel", [np.complex64], [np.complex64])
        if isinstance(model, (dict, list, tuple)):
            specs = model if isinstance(model, (list, tuple)) else [model]
            for s in specs:
                if not isinstance(s, dict):
                    continue
                if s.get("timing_offset") or s.get("sro_ppm"):
                    raise ValueError("numpy_channel needs a length-preserving stream model: use the "
                                     "impairments block for timing_offset / sro_ppm")
                fading = str(s.get("model", "")).lower() not in ("awgn", "none", "identity", "ideal", "npath")
                if fading and not s.get("fdts") and "block_len" not in s:
                    raise ValueError("block fading (fdts=0) in a stream needs an explicit block_len "
                                     "(0 = static, B > 0 = new gains every B samples)")
            model = core.make_channel(model, seed)
        if not callable(model):
            raise ValueError(f"model must be callable or a channel spec dict, got {model!r}")
        self.model = model

    def work(self, input_items, output_items):
        x = input_items[0]
        y = self.model(x)
        if y.shape != x.shape:
            raise RuntimeError("numpy_channel: the model changed the number of samples")
        output_items[0][:] = y
        return len(x)


class _Doppler:
    """Run-time Doppler control shared by the fading hier blocks (needs _fdts and _fader)."""

    def set_fdts(self, fdts):
        fdts = core._util.check_fdts(fdts)
        if (fdts > 0) != (self._fdts > 0):
            raise ValueError("set_fdts cannot switch between block fading (fdts=0) and Doppler fading (fdts>0)")
        self._fdts = fdts
        if fdts > 0:
            self._fader.set_fDTs(fdts)

    def fdts(self):
        return self._fdts


class awgn_channel(gr.hier_block2, _Noise):
    """AWGN: ``y = x + CN(0, σ²)``, σ² = 10^(−snr_db/10) (Es/N0 with Es = 1; power not measured).

    Built from analog.noise_source_c + blocks.add_cc (sample count and alignment unchanged).
    Numpy twin: semcom.channels.awgn / AwgnChannel.
    """

    def __init__(self, snr_db=20.0, seed=0):
        _hier(self, "semcom_awgn_channel")
        self._seed = _seed(seed)
        self._build_noise(self, snr_db, self._seed)


class flat_fading_channel(gr.hier_block2, _Noise, _Doppler):
    """Flat Rayleigh/Rician fading + AWGN: ``y[n] = h[n] x[n] + CN(0, σ²)``, E|h|² = 1.

    kind: "rayleigh" | "rician"; k: Rician K (linear; ignored for Rayleigh); fdts: normalised
    max Doppler fD·Ts in [0, 0.5). fdts > 0 → gr-channels fading_model(n_sinusoids, fdts,
    LOS=kind=="rician", K, seed) (time-varying, continuous); fdts = 0 → block fading with a
    numpy_channel running semcom.channels.FlatFading: a new coefficient every ``block_len``
    samples, or one for the whole run with block_len = 0 (static).

    Differences from the numpy twin FlatFading: fading_model uses n_sinusoids = 8 by default
    with the same frequencies on I and Q and a slowly random-walking angle θ, FlatFading uses 16
    per quadrature (cos α on I, sin α on Q); both have E|h|² = 1 and autocorrelation
    J0(2π fdts τ) and their Rician LOS term has a random Doppler fdts·cos θ0, but the random
    numbers differ (statistical, not sample-exact, agreement).
    """

    def __init__(self, kind="rayleigh", k=4.0, fdts=0.0, block_len=0, snr_db=None, seed=0, n_sinusoids=8):
        _hier(self, "semcom_flat_fading_channel")
        kind = str(kind).lower()
        if kind not in core.FADING_KINDS:
            raise ValueError(f"unknown fading kind {kind!r}; valid: {', '.join(core.FADING_KINDS)}")
        k = core._util.check_k(k) if kind == "rician" else 0.0
        self._kind, self._k = kind, k
        self._fdts = core._util.check_fdts(fdts)
        self._seed = _seed(seed)
        if self._fdts > 0:
            if int(n_sinusoids) < 1:
                raise ValueError(f"n_sinusoids must be >= 1, got {n_sinusoids!r}")
            self._fader = gr_channels.fading_model(int(n_sinusoids), self._fdts, kind == "rician", k, self._seed)
        else:
            bl = core._util.check_block_len(block_len)
            if bl is None:
                raise ValueError("block_len must be 0 (static) or a positive integer in a stream block")
            self._model = core.FlatFading(kind, k, 0.0, bl, seed=self._seed)
            self._fader = numpy_channel(self._model)
        self.connect(self, self._fader)
        self._build_noise(self._fader, snr_db, self._seed)

    def set_k(self, k):
        """Rician K at run time (fading_model.set_K, or the numpy block model); ignored for Rayleigh."""
        k = core._util.check_k(k)
        if self._kind != "rician":
            return
        self._k = k
        if self._fdts > 0:
            self._fader.set_K(k)
        else:
            self._model.set_k(k)

    def k(self):
        return self._k


class multipath_channel(gr.hier_block2, _Noise, _Doppler):
    """Frequency-selective fading (3GPP profile) + AWGN, unit average power gain.

    profile: EPA/EVA/ETU (TS 36.104, fixed delays) or TDL-A…E (TR 38.901, delays × delay_spread);
    sample_rate (Hz) puts the delays on the sample grid, rounded (interp="round") or sinc-
    interpolated (interp="sinc"). fdts > 0 → gr-channels selective_fading_model(n_sinusoids,
    fdts, LOS, K, seed, delays, mags, ntaps) with delays/mags from semcom.channels.discretize
    (TDL-D/E: LOS on the first tap with the table K); fdts = 0 → block fading via numpy_channel
    running semcom.channels.MultipathChannel (new taps every block_len samples; 0 = static).
    delay_spread is only used by TDL-* profiles.

    Differences from the numpy twin MultipathChannel: same profile, same taps/weights and same
    per-path power; the per-path fading processes differ as for flat_fading_channel.
    selective_fading_model interpolates sin(x)/x from a 1024-entry table (tap weights exact to ~1e-3).
    """

    def __init__(self, profile="EVA", sample_rate=15.36e6, delay_spread=100e-9, fdts=0.0, block_len=0,
                 interp="round", snr_db=None, seed=0, n_sinusoids=8):
        _hier(self, "semcom_multipath_channel")
        name = core.multipath._lookup(profile) if isinstance(profile, str) else profile
        ds = delay_spread if isinstance(name, str) and name.startswith("TDL") else None
        self._profile = core.tap_profile(name, sample_rate, ds)
        self._grid = core.discretize(self._profile, interp)
        self._fdts = core._util.check_fdts(fdts)
        self._seed = _seed(seed)
        if self._fdts > 0:
            g = self._grid
            self._fader = gr_channels.selective_fading_model(
                int(n_sinusoids), self._fdts, g.k_first > 0, float(g.k_first), self._seed,
                [float(d) for d in g.delays], [float(m) for m in g.mags], int(g.ntaps))
        else:
            bl = core._util.check_block_len(block_len)
            if bl is None:
                raise ValueError("block_len must be 0 (static) or a positive integer in a stream block")
            self._model = core.MultipathChannel(self._profile, fdts=0.0, block_len=bl, interp=interp,
                                                seed=self._seed)
            self._fader = numpy_channel(self._model)
        self.connect(self, self._fader)
        self._build_noise(self._fader, snr_db, self._seed)

    @property
    def grid(self):
        """semcom.channels.TapGrid: path delays (samples), amplitudes, tap weights, ntaps."""
        return self._grid


class n_path_channel(gr.hier_block2, _Noise):
    """Static n-path channel ``Σ_p g_p x(n − d_p)`` + AWGN: filter.fir_filter_ccc with the taps of
    semcom.channels.npath_taps (delays in samples, fractional ones sinc-interpolated with
    interp="sinc"; normalize=True scales to unit energy). Exact twin: semcom.channels.NPathChannel.
    """

    def __init__(self, delays=(0.0, 3.0), gains=(1.0, 0.5), interp="sinc", normalize=True, snr_db=None, seed=0):
        _hier(self, "semcom_n_path_channel")
        self._taps = core.npath_taps(delays, gains, interp, normalize)
        self._seed = _seed(seed)
        self._fir = gr_filter.fir_filter_ccc(1, [complex(t) for t in self._taps])
        self.connect(self, self._fir)
        self._build_noise(self._fir, snr_db, self._seed)

    def taps(self):
        return self._taps.copy()


class impairments(gr.hier_block2):
    """Timing offset → carrier frequency offset → sample-rate offset (no noise).

    * timing_offset (samples, >= 0, fractional allowed): fir_filter_ccf with floor(timing_offset)
      leading zeros followed by semcom.channels.delay_taps(frac, half_len), padded to
      max_timing_offset + 2·half_len + 2 taps (so set_timing_offset keeps the length; the largest
      settable offset is max(max_timing_offset, timing_offset)), then blocks.skiphead(half_len), so
      ``y[n] = x(n − timing_offset)`` exactly as semcom.channels.timing_offset (same taps). At
      the end of a finite stream the last ``half_len + 1`` samples stay in the filter.
    * cfo: Hz with sample_rate in Hz, or cycles/sample with sample_rate = 1 (default):
      blocks.rotator_cc(2π·cfo/sample_rate); ``y[n] = x[n] e^{j2πνn}`` (twin: channels.cfo).
    * sro_ppm: receiver clock fast by ppm: ``y[n] = x(n/(1+ppm·1e-6))`` with blocks.delay(3) +
      filter.mmse_resampler_cc(0, 1/(1+ppm·1e-6)) (8-tap MMSE interpolator, it drops the first
      3 samples — the delay compensates); the numpy twin channels.sample_rate_offset uses a
      windowed sinc, so they agree to interpolation accuracy, not bit-exactly.
    """

    def __init__(self, cfo=0.0, sample_rate=1.0, timing_offset=0.0, sro_ppm=0.0, half_len=16,
                 max_timing_offset=64):
        gr.hier_block2.__init__(self, "semcom_impairments", gr.io_signature(1, 1, _C), gr.io_signature(1, 1, _C))
        self._fs = core._util.real("sample_rate", sample_rate)
        self._nu = core.impairments._norm_freq(cfo, self._fs)
        self._half = core.impairments._check_half_len(half_len)
        d = core.impairments._check_delay(timing_offset)
        mx = core.impairments._check_delay(max_timing_offset)
        self._max_timing = int(math.floor(max(mx, d)))
        self._frac = gr_filter.fir_filter_ccf(1, self._timing_taps(d))
        self._skip = blocks.skiphead(_C, self._half)
        self._rot = blocks.rotator_cc(2 * math.pi * self._nu)
        self._sro_delay = blocks.delay(_C, 3)
        self._ppm = core.impairments._check_ppm(sro_ppm)
        self._resamp = gr_filter.mmse_resampler_cc(0.0, 1.0 / (1.0 + self._ppm * 1e-6))
        self._timing = d
        self.connect(self, self._frac, self._skip, self._rot, self._sro_delay, self._resamp, self)

    def _timing_taps(self, d):
        # Integer part as leading zeros, fractional part as the windowed-sinc delay_taps, padded to
        # a constant length: a fir_filter whose tap count changes (or blocks.delay.set_dly) before
        # start() shifts the stream in GR 3.10, so set_timing_offset only ever swaps equal-length taps.
        D = int(math.floor(d))
        if D > self._max_timing:
            raise ValueError(f"timing offset {d} exceeds max_timing_offset={self._max_timing} of this block")
        taps = [0.0] * D + [float(t) for t in core.delay_taps(d - D, self._half)]
        return taps + [0.0] * (self._max_timing + 2 * self._half + 2 - len(taps))

    def set_cfo(self, cfo):
        self._nu = core.impairments._norm_freq(cfo, self._fs)
        self._rot.set_phase_inc(2 * math.pi * self._nu)

    def set_timing_offset(self, timing_offset):
        d = core.impairments._check_delay(timing_offset)
        self._frac.set_taps(self._timing_taps(d))
        self._timing = d

    def set_sro_ppm(self, sro_ppm):
        self._ppm = core.impairments._check_ppm(sro_ppm)
        self._resamp.set_resamp_ratio(1.0 / (1.0 + self._ppm * 1e-6))

    def cfo_normalized(self):
        return self._nu

    def timing_offset(self):
        return self._timing

    def sro_ppm(self):
        return self._ppm
