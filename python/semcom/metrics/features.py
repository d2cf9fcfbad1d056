"""Deep-feature image distance on EfficientNet-Lite0 (onnxruntime; no torch).

This is *not* LPIPS: there are no learned per-channel weights and the network is an ImageNet
classifier truncated after stage 5 (``models/effnet_lite0_features.onnx``, exported once by
``export_feature_net.py``). It is the LPIPS recipe without the learned layer: unit-normalise
each feature vector along channels, take the squared difference, average over space, then
average over the five stages.
"""
import functools

import numpy as np

from ..runtime import load_model

FEATURE_MODEL = "effnet_lite0_features"
_EPS = 1e-10


@functools.lru_cache(maxsize=8)
def _model(models_dir, providers, threads):
    return load_model(FEATURE_MODEL, models_dir=models_dir, providers=providers, threads=threads)


def _batch(images, data_range, what):
    """N×H×W×3 float32 on [0, 255] from H×W, H×W×C (C = 1 or 3) or N×H×W×C."""
    x = np.asarray(images)
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{what} image must be integer or float, got {x.dtype}")
    if x.ndim == 2:
        x = x[None, ..., None]
    elif x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or min(x.shape[1:3]) == 0:
        raise ValueError(f"{what}: expected H×W, H×W×C or N×H×W×C with C = 1 or 3, got {np.shape(images)}")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return x.astype(np.float32) * np.float32(255.0 / data_range)


def _pad(x, multiple):
    """Symmetric padding at the bottom/right up to multiples of ``multiple`` (at least one)."""
    h, w = x.shape[1:3]
    ph = max(multiple, -(-h // multiple) * multiple) - h
    pw = max(multiple, -(-w // multiple) * multiple) - w
    return np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="symmetric") if ph or pw else x


def effnet_feature_distance(ref, test, data_range=255, models_dir=None, providers=None, threads=None):
    """EfficientNet-Lite0 feature distance between two images (0 for identical images).

    ``ref``/``test``: H×W (grey), H×W×C (C = 1 or 3; grey is replicated to RGB) or a batch
    N×H×W×C, uint8 or float on [0, ``data_range``]. Both are padded (symmetric, bottom and
    right) to sizes divisible by 16, the network's stride, and run through the ImageNet
    EfficientNet-Lite0 stages 1–5. For each stage s with features f (C_s channels):
    ``d_s = mean over positions of ‖f_ref/‖f_ref‖ − f_test/‖f_test‖‖²`` (norms along
    channels), and the distance is the mean of d_1 … d_5, in [0, 4].

    Returns a float, or an array of N floats for a batch. ValueError when the shapes differ.
    The model is loaded (and its checksum verified) once per process per
    ``(models_dir, providers, threads)``; see :func:`gnuradio.semcom.runtime.load_model`.
    """
    if np.shape(ref) != np.shape(test):
        raise ValueError(f"shape mismatch: reference {np.shape(ref)} vs test {np.shape(test)}")
    single = np.ndim(ref) in (2, 3)
    a, b = _batch(ref, data_range, "reference"), _batch(test, data_range, "test")
    hashable = tuple(providers) if isinstance(providers, (list, tuple)) else providers
    model = _model(None if models_dir is None else str(models_dir), hashable, threads)
    multiple = int(model.entry.extra.get("size_multiple", 16))
    x = _pad(np.concatenate([a, b]), multiple).transpose(0, 3, 1, 2)
    n = a.shape[0]
    feats = model.run({"image": np.ascontiguousarray(x)})
    per_stage = []
    for f in feats.values():
        f = f.astype(np.float64)
        f = f / (np.sqrt(np.sum(f * f, axis=1, keepdims=True)) + _EPS)
        per_stage.append(np.mean(np.sum((f[:n] - f[n:]) ** 2, axis=1), axis=(1, 2)))
    d = np.mean(per_stage, axis=0)
    return float(d[0]) if single else d
