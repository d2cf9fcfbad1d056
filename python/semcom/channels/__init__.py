"""Channel models in numpy (no GNU Radio import): AWGN, flat and multipath fading, impairments.

SNR convention (the only one in gr-semcom): SNR is Es/N0 per complex channel use with the
transmit power normalised to Es = 1 per complex symbol; the channel adds CN(0, σ²) with
σ² = 10^(−SNR_dB/10) per complex sample (:func:`snr_to_noise_var`). Signal power is never
measured. Fading channels have unit average power gain (E Σ|h|² = 1).

Every function/class takes and returns 1-D complex64 arrays and is seeded through a numpy
Generator (``rng=``) or an integer ``seed=``. The GNU Radio twins are in
``gnuradio.semcom.blocks.channels`` (``semcom.awgn_channel`` etc.).
"""
from ._util import snr_to_noise_var, noise_var_to_snr, make_rng
from .awgn import complex_noise, awgn, AwgnChannel
from .fading import FADING_KINDS, SosFader, draw_gains, FlatFading, flat_fading
from .multipath import (PROFILES, profile_names, TapProfile, tap_profile, TapGrid, discretize,
                        MultipathChannel, NPathChannel, npath_taps, n_path, rms_delay_spread)
from .impairments import (cfo, CarrierFrequencyOffset, interp_kernel, delay_taps, timing_offset, TimingOffset,
                          sample_rate_offset, SampleRateOffset, sro_length)
from .chain import ChannelChain, make_channel, MODELS, SPEC_KEYS
from .estimators import measure_snr_db, rician_k_moments, autocorr, jakes_autocorr

__all__ = [
    "snr_to_noise_var", "noise_var_to_snr", "make_rng",
    "complex_noise", "awgn", "AwgnChannel",
    "FADING_KINDS", "SosFader", "draw_gains", "FlatFading", "flat_fading",
    "PROFILES", "profile_names", "TapProfile", "tap_profile", "TapGrid", "discretize",
    "MultipathChannel", "NPathChannel", "npath_taps", "n_path", "rms_delay_spread",
    "cfo", "CarrierFrequencyOffset", "interp_kernel", "delay_taps", "timing_offset", "TimingOffset",
    "sample_rate_offset", "SampleRateOffset", "sro_length",
    "ChannelChain", "make_channel", "MODELS", "SPEC_KEYS",
    "measure_snr_db", "rician_k_moments", "autocorr", "jakes_autocorr",
]
