"""DDIM sampling in numpy for ONNX-exported latent diffusion models (no torch, no GNU Radio).

The receivers of gr-semcom run their diffusion U-Nets with ONNX Runtime; the sampler that
drives them is this module, built from the model's ``diffusers`` scheduler configuration
(stored in the manifest entry's ``extra["scheduler"]`` at export time). It reproduces
``diffusers.DDIMScheduler`` with ``eta = 0`` (deterministic DDIM): the same noise schedule
(``linear``, ``scaled_linear``, ``squaredcos_cap_v2``), the same timestep spacings
(``leading``, ``trailing``, ``linspace``), epsilon / v / sample prediction, ``clip_sample``
and ``set_alpha_to_one``; ``tests/test_vlf_codec.py`` checks it step by step against
diffusers.

Img2img (``strength`` < 1) starts from a given latent noised to the first of the last
``int(steps · strength)`` timesteps, as ``diffusers``' img2img pipelines do.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

__all__ = ["DdimSampler"]

_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
_SPACINGS = ("leading", "trailing", "linspace")
_PREDICTIONS = ("epsilon", "v_prediction", "sample")


def _betas(cfg: Mapping) -> np.ndarray:
    n = int(cfg.get("num_train_timesteps", 1000))
    schedule = cfg.get("beta_schedule", "linear")
    b0, b1 = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
    if cfg.get("trained_betas") is not None:
        return np.asarray(cfg["trained_betas"], np.float64)
    if schedule == "linear":
        return np.linspace(b0, b1, n, dtype=np.float64)
    if schedule == "scaled_linear":
        return np.linspace(math.sqrt(b0), math.sqrt(b1), n, dtype=np.float64) ** 2
    if schedule == "squaredcos_cap_v2":
        def abar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.array([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)], np.float64)
    raise ValueError(f"beta_schedule {schedule!r} not supported; one of {_SCHEDULES}")


class DdimSampler:
    """Deterministic DDIM (η = 0) from a ``diffusers`` scheduler config dict.

    ``diffusers`` computes the schedule in float32 torch tensors; this class does the same
    arithmetic in float32 so that the two agree to float rounding.
    """

    def __init__(self, config: Mapping):
        cfg = dict(config)
        self.config = cfg
        self.num_train_timesteps = int(cfg.get("num_train_timesteps", 1000))
        self.prediction_type = cfg.get("prediction_type", "epsilon")
        if self.prediction_type not in _PREDICTIONS:
            raise ValueError(f"prediction_type {self.prediction_type!r} not supported; one of {_PREDICTIONS}")
        self.spacing = cfg.get("timestep_spacing", "leading")
        if self.spacing not in _SPACINGS:
            raise ValueError(f"timestep_spacing {self.spacing!r} not supported; one of {_SPACINGS}")
        if cfg.get("thresholding"):
            raise ValueError("dynamic thresholding is not supported")
        self.steps_offset = int(cfg.get("steps_offset", 0))
        self.clip_sample = bool(cfg.get("clip_sample", True))
        self.clip_range = float(cfg.get("clip_sample_range", 1.0))
        betas = _betas(cfg).astype(np.float32)
        self.alphas_cumprod = np.cumprod(np.float32(1.0) - betas, dtype=np.float32)
        self.final_alpha_cumprod = np.float32(1.0) if cfg.get("set_alpha_to_one", True) else self.alphas_cumprod[0]

    def timesteps(self, steps: int) -> np.ndarray:
        """The ``steps`` timesteps of a full run, descending (``DDIMScheduler.set_timesteps``)."""
        n = self.num_train_timesteps
        steps = int(steps)
        if not 1 <= steps <= n:
            raise ValueError(f"steps must be in 1…{n}, got {steps}")
        if self.spacing == "linspace":
            t = np.linspace(0, n - 1, steps).round()[::-1].copy()
        elif self.spacing == "leading":
            t = (np.arange(0, steps) * (n // steps)).round()[::-1].copy() + self.steps_offset
        else:  # trailing
            t = np.round(np.arange(n, 0, -n / steps)) - 1
        return t.astype(np.int64)

    def _alpha(self, t: int) -> np.float32:
        return self.alphas_cumprod[t] if t >= 0 else self.final_alpha_cumprod

    def step(self, model_output: np.ndarray, t: int, sample: np.ndarray, steps: int) -> np.ndarray:
        """One DDIM update x_t → x_{t−Δ} (``DDIMScheduler.step`` with η = 0)."""
        prev_t = int(t) - self.num_train_timesteps // int(steps)
        return self._update(model_output, sample, self._alpha(int(t)), self._alpha(prev_t))

    def _update(self, model_output, sample, a_t, a_prev) -> np.ndarray:
        b_t = np.float32(1.0) - a_t
        x, out = sample.astype(np.float32), model_output.astype(np.float32)
        if self.prediction_type == "epsilon":
            x0 = (x - np.sqrt(b_t) * out) / np.sqrt(a_t)
            eps = out
        elif self.prediction_type == "sample":
            x0 = out
            eps = (x - np.sqrt(a_t) * x0) / np.sqrt(b_t)
        else:  # v_prediction
            x0 = np.sqrt(a_t) * x - np.sqrt(b_t) * out
            eps = np.sqrt(a_t) * out + np.sqrt(b_t) * x
        if self.clip_sample:
            x0 = np.clip(x0, -self.clip_range, self.clip_range)
        return (np.sqrt(a_prev) * x0 + np.sqrt(np.float32(1.0) - a_prev) * eps).astype(np.float32)

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, t: int) -> np.ndarray:
        """q(x_t | x_0): √ᾱ_t·x0 + √(1−ᾱ_t)·noise (``DDIMScheduler.add_noise``)."""
        a = self.alphas_cumprod[int(t)]
        return (np.sqrt(a) * x0 + np.sqrt(np.float32(1.0) - a) * noise).astype(np.float32)

    def timestep_for_noise(self, noise_var: float) -> int:
        """The training timestep whose noise-to-signal ratio (1 − ᾱ_t)/ᾱ_t is closest to
        ``noise_var`` (0 → the first timestep): √ᾱ_t·(x₀ + n), n of that variance, is then a
        sample of q(x_t | x₀), the reverse process can start there."""
        nsr = (1.0 - self.alphas_cumprod.astype(np.float64)) / self.alphas_cumprod
        return int(np.argmin(np.abs(np.log(nsr) - math.log(max(float(noise_var), 1e-12)))))

    def run_from(self, model: Callable[[np.ndarray, int], np.ndarray], x_t: np.ndarray, t: int, steps: int,
                 progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Reverse process from a sample ``x_t`` at training timestep ``t``: one DDIM hop from
        ``t`` to the first timestep of the ``steps``-step schedule below it (none when ``t`` is
        on the schedule), then the schedule's own steps (``step``). Returns x̂₀ (``x_t`` itself
        when ``t`` is below the schedule)."""
        ts = [int(u) for u in self.timesteps(steps) if u <= int(t)]
        x = np.asarray(x_t, np.float32)
        n = len(ts) + (bool(ts) and ts[0] != int(t))
        i = 0
        if ts and ts[0] != int(t):
            x = self._update(model(x, int(t)), x, self._alpha(int(t)), self._alpha(ts[0]))
            i += 1
            if progress is not None:
                progress(i, n)
        for u in ts:
            x = self.step(model(x, u), u, x, steps)
            i += 1
            if progress is not None:
                progress(i, n)
        return x

    def sample(self, model: Callable[[np.ndarray, int], np.ndarray], shape, steps: int,
               rng: np.random.Generator, init: np.ndarray | None = None, strength: float = 1.0,
               progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Run the reverse process. ``model(x_t, t)`` returns the network's prediction.

        ``init`` + ``strength`` < 1: img2img from the latent ``init`` (the last
        ``int(steps·strength)`` timesteps run); ``strength`` = 1 starts from pure noise.
        ``progress(i, n)`` is called after each step.
        """
        ts = self.timesteps(steps)
        if not 0.0 < float(strength) <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        noise = rng.standard_normal(shape).astype(np.float32)
        if init is None or strength >= 1.0:
            x, run = noise, ts
        else:
            k = min(int(steps * float(strength)), steps)
            run = ts[steps - k:]
            if not len(run):
                return np.asarray(init, np.float32)
            x = self.add_noise(np.asarray(init, np.float32), noise, int(run[0]))
        for i, t in enumerate(run):
            x = self.step(model(x, int(t)), int(t), x, steps)
            if progress is not None:
                progress(i + 1, len(run))
        return x
