"""Composable channel: a chain of stages built from a plain dict (for sweeps and configs).

Stage order of a single spec (physical order): fading (flat or multipath) → timing offset →
carrier frequency offset → sample-rate offset → AWGN. Noise comes last, so the SNR
convention holds exactly (σ² = 10^(−snr/10) per output sample) whatever the impairments.

Example::

    ch = make_channel({"model": "rician", "k": 4, "fdts": 1e-4, "snr_db": 10}, seed=1)
    y = ch(x)                       # stateful: Doppler / block fading continue on the next call
    make_channel({"model": "EVA", "sample_rate": 15.36e6, "fdts": 1e-3, "cfo": 0.01, "snr_db": 5})
    make_channel([{"model": "npath", "delays": [0, 3.5], "gains": [1, 0.5]}, {"model": "awgn", "snr_db": 8}])
"""
from __future__ import annotations

import numpy as np

from ._util import as_c64, check_seed
from .awgn import AwgnChannel
from .fading import FlatFading
from .impairments import CarrierFrequencyOffset, SampleRateOffset, TimingOffset, _norm_freq
from .multipath import PROFILES, MultipathChannel, NPathChannel, TapProfile, _lookup

__all__ = ["ChannelChain", "make_channel", "MODELS", "SPEC_KEYS"]

_COMMON = {"model", "snr_db", "seed", "cfo", "cfo_hz", "sample_rate", "timing_offset", "sro_ppm"}
_FADE = {"k", "fdts", "block_len", "n_sinusoids"}
SPEC_KEYS = {
    "awgn": _COMMON,
    "none": _COMMON,
    "rayleigh": _COMMON | (_FADE - {"k"}),
    "rician": _COMMON | _FADE,
    "multipath": _COMMON | (_FADE - {"k"}) | {"profile", "delay_spread", "interp", "delays", "mags",
                                             "powers_db", "k_first", "sinc_margin"},
    "npath": _COMMON | {"delays", "gains", "interp", "normalize"},
}
MODELS = tuple(SPEC_KEYS) + tuple(PROFILES)


class ChannelChain:
    """Sequence of stateful stages (callables complex64 → complex64) applied in order."""

    def __init__(self, stages, spec=None):
        self.stages = list(stages)
        for s in self.stages:
            if not callable(s):
                raise ValueError(f"channel stage {s!r} is not callable")
        self.spec = spec

    def __call__(self, x) -> np.ndarray:
        y = as_c64(x)
        for s in self.stages:
            y = s(y)
        return y

    def _awgn(self):
        st = [s for s in self.stages if isinstance(s, AwgnChannel)]
        st += [a for c in self.stages if isinstance(c, ChannelChain) for a in [c._awgn()] if a is not None]
        return st[-1] if st else None

    @property
    def snr_db(self):
        a = self._awgn()
        return None if a is None else a.snr_db

    @property
    def noise_var(self) -> float:
        a = self._awgn()
        return 0.0 if a is None else a.noise_var

    def set_snr_db(self, snr_db):
        a = self._awgn()
        if a is None:
            raise ValueError("this channel has no noise stage (build it with snr_db)")
        a.set_snr_db(snr_db)

    def __repr__(self):
        return "ChannelChain([" + ", ".join(map(repr, self.stages)) + "])"


def _canon_model(model):
    if not isinstance(model, str):
        raise ValueError(f"spec 'model' must be a string; valid: {', '.join(MODELS)}")
    m = model.lower()
    if m in ("tdl", "selective"):
        m = "multipath"
    if m in ("identity", "ideal"):
        m = "none"
    if m in SPEC_KEYS:
        return m, None
    try:
        return "multipath", _lookup(model)
    except ValueError:
        raise ValueError(f"unknown channel model {model!r}; valid: {', '.join(MODELS)}") from None


def make_channel(spec, seed=None) -> ChannelChain:
    """Build a :class:`ChannelChain` from a dict (or a list of dicts, applied in order).

    Keys: ``model`` ("awgn"/"none", "rayleigh", "rician", "multipath" or a profile name such as
    "EVA"/"TDL-C", "npath"); ``snr_db`` (None/absent: no noise); fading: ``k``, ``fdts``,
    ``block_len``, ``n_sinusoids``; multipath: ``profile``, ``sample_rate``, ``delay_spread``,
    ``interp``, or custom ``delays`` (samples) with ``mags``/``powers_db``, ``k_first``; npath
    (static): ``delays``, ``gains``, ``interp``, ``normalize``; impairments: ``timing_offset``
    (samples), ``cfo`` (cycles/sample) or ``cfo_hz`` (+ ``sample_rate``), ``sro_ppm``; ``seed``.
    Unknown keys raise ValueError (catches typos in sweep grids).

    Seeding: the fading and noise stages get independent child seeds of ``seed`` (or
    spec["seed"]), so changing e.g. the SNR keeps the fading realisation.
    """
    if isinstance(spec, ChannelChain):
        return spec
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ValueError("empty channel spec list")
        seed = check_seed(seed)
        kids = np.random.SeedSequence(seed).spawn(len(spec)) if seed is not None else [None] * len(spec)
        return ChannelChain([make_channel(s, _child_int(k)) for s, k in zip(spec, kids)], spec=list(spec))
    if not isinstance(spec, dict):
        raise ValueError(f"channel spec must be a dict or a list of dicts, got {type(spec).__name__}")
    if "model" not in spec:
        raise ValueError(f"channel spec needs a 'model' key; valid models: {', '.join(MODELS)}")
    model, profile = _canon_model(spec["model"])
    bad = sorted(set(spec) - SPEC_KEYS[model])
    if bad:
        raise ValueError(f"unknown key(s) {bad} for model {spec['model']!r}; valid: {sorted(SPEC_KEYS[model])}")
    if "seed" in spec and seed is not None and spec["seed"] != seed:
        raise ValueError("seed given both in the spec and as an argument")
    seed = check_seed(spec.get("seed", seed))
    ss = np.random.SeedSequence(seed) if seed is not None else np.random.SeedSequence()
    fade_ss, noise_ss = ss.spawn(2)
    g = spec.get
    stages = []
    if model in ("rayleigh", "rician"):
        stages.append(FlatFading(model, g("k", 0.0), g("fdts", 0.0), g("block_len"), g("n_sinusoids", 16),
                                 rng=np.random.default_rng(fade_ss)))
    elif model == "multipath":
        prof = profile or g("profile")
        if g("delays") is not None:
            if prof not in (None, "custom"):
                raise ValueError("give either a named profile or custom 'delays', not both")
            prof = TapProfile.custom(g("delays"), g("mags"), g("powers_db"))
        elif prof is None:
            raise ValueError(f"multipath needs 'profile' ({', '.join(PROFILES)}) or custom 'delays'")
        stages.append(MultipathChannel(prof, g("sample_rate"), g("delay_spread"), g("fdts", 0.0),
                                       g("block_len"), g("interp", "round"), g("n_sinusoids", 16),
                                       g("sinc_margin", 8), g("k_first"), rng=np.random.default_rng(fade_ss)))
    elif model == "npath":
        if g("delays") is None or g("gains") is None:
            raise ValueError("npath needs 'delays' (samples) and 'gains'")
        stages.append(NPathChannel(g("delays"), g("gains"), g("interp", "sinc"), g("normalize", True)))
    if g("timing_offset", 0.0):
        stages.append(TimingOffset(g("timing_offset")))
    if "cfo" in spec and "cfo_hz" in spec:
        raise ValueError("give either cfo (cycles/sample) or cfo_hz (with sample_rate), not both")
    if "cfo_hz" in spec:
        if g("sample_rate") is None:
            raise ValueError("cfo_hz needs sample_rate")
        _norm_freq(g("cfo_hz"), g("sample_rate"))
        if g("cfo_hz"):
            stages.append(CarrierFrequencyOffset(g("cfo_hz"), g("sample_rate")))
    elif g("cfo", 0.0):
        stages.append(CarrierFrequencyOffset(g("cfo")))
    if g("sro_ppm", 0.0):
        stages.append(SampleRateOffset(g("sro_ppm")))
    if g("snr_db") is not None:
        stages.append(AwgnChannel(g("snr_db"), rng=np.random.default_rng(noise_ss)))
    return ChannelChain(stages, spec=dict(spec))


def _child_int(ss):
    return None if ss is None else int(ss.generate_state(1, np.uint32)[0])
