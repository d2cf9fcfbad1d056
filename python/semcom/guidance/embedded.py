"""The embedded, offline, text-conditioned segmenter (``EmbeddedSegmenter``, name ``embedded-cam``).

Text–image attention through the ImageNet class space (no GNU Radio, no torch; onnxruntime,
``tokenizers``, Pillow and numpy only). See docs/guidance_embedded.md.

* **Text.** The phrase is embedded with all-MiniLM-L6-v2 (ONNX ``minilm_l6_v2_text``: mean
  pooling over tokens + L2 normalisation, as sentence-transformers does). Its similarity to
  ImageNet class ``k`` is ``s_k = ½·(max over the class's WordNet lemmas of cos(t, lemma) +
  cos(t, "lemma: definition"))`` against a table of class-text embeddings made at export time.
* **Image.** EfficientNet-Lite0 (ONNX ``effnet_lite0_cam``) gives the class activation maps of
  all 1000 classes at stride 32, ``CAM_k(p) = w_k·f(p) + b_k`` (their spatial mean is the
  class logit). The image is run with its shorter side at ``short_side`` pixels (aspect ratio
  kept, both sides multiples of 32); the maps are cached per image, so more phrases on the
  same image cost no CNN pass.
* **Attention.** Over the ``top_k`` classes with the largest ``s_k``:
  ``a_k = softmax_k(s_k/τ + β·log P(k|image))`` (β = ``image_prior``, 0 by default), query
  ``q = Σ a_k w_k``; ``m(p) = q·f(p) + Σ a_k b_k = Σ a_k CAM_k(p)``. The heatmap is
  ``(m − min m) / (max m − min m)``, upsampled bilinearly to the image size.
* **Confidence** (``analyse``): how well the phrase maps onto ImageNet's vocabulary
  (``text_score = max_k s_k``) times how strongly the map peaks compared with the peaks of
  all 1000 class maps on the same image (``peak_z``). A heuristic, for the policy layer.
"""
from __future__ import annotations

import collections
import hashlib
import math
import pathlib
import threading
import time

import numpy as np

from .base import GuidanceError, Segmenter

__all__ = ["EmbeddedSegmenter", "TEXT_MODEL", "CAM_MODEL", "EXPORT_COMMAND", "read_class_labels", "class_forms"]

TEXT_MODEL = "minilm_l6_v2_text"
CAM_MODEL = "effnet_lite0_cam"
EXPORT_COMMAND = "python python/semcom/guidance/export_embedded.py --models-dir models"

NUM_CLASSES = 1000
STRIDE = 32

# Confidence heuristic (docs/guidance_embedded.md): text factor ramps from 0 at s = 0.35
# (a phrase outside ImageNet's vocabulary) to 1 at s = 0.60; image factor is a logistic of
# the map's peak, in IQRs above the median peak of the 1000 class maps, centred on 1.25.
TEXT_FLOOR, TEXT_FULL = 0.35, 0.60
PEAK_Z0, PEAK_Z_GAIN = 1.25, 2.0


def read_class_labels(path) -> list:
    """Rows of the shipped ImageNet class list (``imagenet_classes.tsv``): one
    ``(index, wnid, lemmas, definition)`` per class, in classifier order. ``#`` lines are comments."""
    rows = []
    for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 4:
            raise ValueError(f"{path}: expected 4 tab-separated fields, got {line!r}")
        rows.append((int(parts[0]), parts[1], parts[2], parts[3]))
    if [r[0] for r in rows] != list(range(NUM_CLASSES)):
        raise ValueError(f"{path}: expected classes 0..{NUM_CLASSES - 1} in order")
    return rows


def class_forms(rows) -> tuple:
    """The texts of the class-text table, in its row order: ``(glosses, forms, form_class)``.

    ``glosses[k] = "<first lemma>: <definition>"``; ``forms`` are every lemma of every class
    (the lemmas field split at ", "), ``form_class[i]`` the class of ``forms[i]``."""
    glosses = [f"{lemmas.split(', ')[0]}: {definition}" for _, _, lemmas, definition in rows]
    forms, form_class = [], []
    for k, _, lemmas, _ in rows:
        for form in lemmas.split(", "):
            forms.append(form)
            form_class.append(k)
    return glosses, forms, np.asarray(form_class, dtype=np.int64)


def _checked_file(models_dir, spec, what) -> pathlib.Path:
    """An auxiliary file named in a manifest entry's ``extra`` as {file, sha256, size_bytes}."""
    from ..runtime import ModelIntegrityError, ModelNotFoundError, sha256_file

    path = pathlib.Path(models_dir) / spec["file"]
    if not path.is_file():
        raise ModelNotFoundError(f"{what}: file missing: {path}")
    if path.stat().st_size != spec["size_bytes"] or sha256_file(path) != spec["sha256"]:
        raise ModelIntegrityError(f"{what}: {path} does not match the manifest (size or sha256)")
    return path


class TextEncoder:
    """all-MiniLM-L6-v2 sentence embeddings through onnxruntime (``minilm_l6_v2_text``)."""

    def __init__(self, models_dir=None, providers=None, threads=None):
        from tokenizers import Tokenizer

        from .. import runtime

        self.model = runtime.load_model(TEXT_MODEL, models_dir=models_dir, providers=providers, threads=threads)
        extra = self.model.entry.extra
        models_dir = pathlib.Path(self.model.path).parent
        tok_path = _checked_file(models_dir, extra["tokenizer"], f"model {TEXT_MODEL!r} tokenizer")
        self.tokenizer = Tokenizer.from_file(str(tok_path))
        self.tokenizer.no_padding()
        self.max_length = int(extra.get("max_length", 256))
        self.tokenizer.enable_truncation(self.max_length)
        self.dim = int(extra.get("dim", 384))

    def embed(self, texts, batch: int = 64) -> np.ndarray:
        """float32 (N, dim), unit-norm rows."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        for i in range(0, len(texts), batch):
            encs = self.tokenizer.encode_batch(texts[i:i + batch])
            n = max(len(e.ids) for e in encs)
            ids = np.zeros((len(encs), n), np.int64)
            mask = np.zeros((len(encs), n), np.int64)
            for j, e in enumerate(encs):
                ids[j, :len(e.ids)] = e.ids
                mask[j, :len(e.ids)] = e.attention_mask
            out[i:i + len(encs)] = self.model.run({"input_ids": ids, "attention_mask": mask})["sentence_embedding"]
        return out


class _Features:
    """What one CNN pass over one image gives (cached per image)."""

    __slots__ = ("cams", "log_probs", "peak_median", "peak_iqr", "peaks_sorted", "input_size")

    def __init__(self, cams, input_size):
        self.cams = cams                                   # (1000, h, w) float32, logit units
        logits = cams.reshape(NUM_CLASSES, -1).mean(axis=1).astype(np.float64)
        z = logits - logits.max()
        self.log_probs = z - math.log(np.exp(z).sum())     # log P(k | image)
        peaks = cams.reshape(NUM_CLASSES, -1).max(axis=1)
        q1, med, q3 = np.percentile(peaks, [25, 50, 75])
        self.peak_median, self.peak_iqr = float(med), float(max(q3 - q1, 1e-6))
        self.peaks_sorted = np.sort(peaks)
        self.input_size = input_size                       # (h, w) the CNN saw


class EmbeddedSegmenter(Segmenter):
    """Offline text-conditioned segmenter: EfficientNet-Lite0 class activation maps attended
    by a MiniLM phrase embedding through the ImageNet class names.

    ``models_dir``: the models directory (default ``runtime.default_models_dir()``, i.e.
    ``$SEMCOM_MODELS_DIR`` or the checkout's / installed ``models/``). ``providers``,
    ``threads``: as for ``runtime.load_model``. ``short_side``: the CNN input's shorter side
    in pixels (None: the image's own size), the longer side at most ``max_side``; both
    rounded to multiples of 32. ``top_k``, ``temperature`` (τ), ``image_prior`` (β): the
    class attention. ``cache_size``: images whose class maps are kept (LRU).

    Raises :class:`GuidanceError` if a model or table is missing or corrupted (the message
    names the export command) or a runtime dependency is not installed.
    """

    name = "embedded-cam"

    def __init__(self, models_dir=None, providers=None, threads=None, *, short_side: int | None = 320,
                 max_side: int = 1024, top_k: int = 10, temperature: float = 0.05, image_prior: float = 0.0,
                 cache_size: int = 8):
        if short_side is not None and short_side < STRIDE:
            raise ValueError(f"short_side must be None or >= {STRIDE}, got {short_side}")
        if max_side < STRIDE:
            raise ValueError(f"max_side must be >= {STRIDE}, got {max_side}")
        if not 1 <= top_k <= NUM_CLASSES:
            raise ValueError(f"top_k must be in 1..{NUM_CLASSES}, got {top_k}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.short_side, self.max_side = short_side, int(max_side)
        self.top_k, self.temperature, self.image_prior = int(top_k), float(temperature), float(image_prior)
        self.cache_size = max(int(cache_size), 0)
        try:
            from .. import runtime

            self.text = TextEncoder(models_dir, providers, threads)
            self.cnn = runtime.load_model(CAM_MODEL, models_dir=models_dir, providers=providers, threads=threads)
            extra = self.cnn.entry.extra
            root = pathlib.Path(self.cnn.path).parent
            rows = read_class_labels(_checked_file(root, extra["labels"], f"model {CAM_MODEL!r} labels"))
            table = np.load(_checked_file(root, extra["class_text"], f"model {CAM_MODEL!r} class-text table"))
        except ImportError as e:
            raise GuidanceError(f"embedded-cam segmenter needs onnxruntime, tokenizers and Pillow: {e}") from e
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise GuidanceError(f"embedded-cam segmenter: models unavailable ({e}); generate them with "
                                f"`{EXPORT_COMMAND}` or point models_dir / $SEMCOM_MODELS_DIR at a models "
                                "directory that has them") from e
        glosses, forms, form_class = class_forms(rows)
        if table.shape != (len(glosses) + len(forms), self.text.dim):
            raise GuidanceError(f"embedded-cam segmenter: class-text table has shape {table.shape}, expected "
                                f"{(len(glosses) + len(forms), self.text.dim)}; re-run `{EXPORT_COMMAND}`")
        table = table.astype(np.float32)
        self._gloss = table[:NUM_CLASSES]
        self._forms = table[NUM_CLASSES:]
        self._form_class = form_class
        self.wnids = [r[1] for r in rows]
        self.lemmas = [r[2] for r in rows]
        self.labels = [r[2].split(", ")[0] for r in rows]
        self._lock = threading.Lock()
        self._images: collections.OrderedDict = collections.OrderedDict()
        self._phrases: collections.OrderedDict = collections.OrderedDict()

    # -- text side ---------------------------------------------------------------------

    def embed(self, texts) -> np.ndarray:
        """MiniLM sentence embeddings, float32 (N, 384), unit norm."""
        return self.text.embed(texts)

    def class_scores(self, phrase: str) -> np.ndarray:
        """``s_k`` for the 1000 ImageNet classes, float32 (1000,) (cached per phrase)."""
        phrase = self._check_phrase(phrase)
        with self._lock:
            s = self._phrases.get(phrase)
            if s is not None:
                self._phrases.move_to_end(phrase)
                return s
        t = self.text.embed([phrase])[0]
        best = np.full(NUM_CLASSES, -1.0, np.float32)
        np.maximum.at(best, self._form_class, self._forms @ t)
        s = (0.5 * (best + self._gloss @ t)).astype(np.float32)
        with self._lock:
            self._phrases[phrase] = s
            while len(self._phrases) > 256:
                self._phrases.popitem(last=False)
        return s

    def nearest_classes(self, phrase: str, k: int = 5) -> list:
        """The ``k`` ImageNet classes nearest to ``phrase``: ``[(label, s_k), ...]``, best first."""
        s = self.class_scores(phrase)
        top = np.argsort(-s, kind="stable")[:k]
        return [(self.labels[i], float(s[i])) for i in top]

    # -- image side --------------------------------------------------------------------

    def image_classes(self, image, k: int = 5) -> list:
        """The ``k`` ImageNet classes the CNN sees most in ``image``: ``[(label, probability), ...]``,
        most probable first (phrases to ask the segmenter about, e.g. for training masks)."""
        if not 1 <= int(k) <= NUM_CLASSES:
            raise ValueError(f"k must be in 1..{NUM_CLASSES}, got {k}")
        lp = self._features(self._rgb(image))[0].log_probs
        top = np.argsort(-lp, kind="stable")[: int(k)]
        return [(self.labels[i], float(np.exp(lp[i]))) for i in top]

    def input_size(self, height: int, width: int) -> tuple:
        """(h, w) the CNN runs at for an image of ``height`` × ``width``."""
        scale = 1.0 if self.short_side is None else self.short_side / min(height, width)
        if max(height, width) * scale > self.max_side:
            scale = self.max_side / max(height, width)
        return tuple(max(STRIDE, int(round(n * scale / STRIDE)) * STRIDE) for n in (height, width))

    def class_maps(self, image) -> np.ndarray:
        """The 1000 class activation maps of ``image``, float32 (1000, h/32, w/32), logit units (cached)."""
        return self._features(self._rgb(image))[0].cams

    def _features(self, rgb):
        key = (hashlib.blake2b(rgb.tobytes(), digest_size=16).hexdigest(), rgb.shape,
               self.short_side, self.max_side)
        with self._lock:
            feats = self._images.get(key)
            if feats is not None:
                self._images.move_to_end(key)
                return feats, True
        from PIL import Image

        h, w = self.input_size(*rgb.shape[:2])
        x = rgb if (h, w) == rgb.shape[:2] else np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
        try:
            cams = self.cnn.run({"image": x})["cams"][0]
        except Exception as e:  # onnxruntime raises its own exception types
            raise GuidanceError(f"embedded-cam segmenter: CNN failed on a {h}x{w} input: {e}") from e
        feats = _Features(np.ascontiguousarray(cams, dtype=np.float32), (h, w))
        if self.cache_size:
            with self._lock:
                self._images[key] = feats
                while len(self._images) > self.cache_size:
                    self._images.popitem(last=False)
        return feats, False

    def clear_cache(self) -> None:
        """Forget the cached class maps and phrase scores."""
        with self._lock:
            self._images.clear()
            self._phrases.clear()

    # -- the map -----------------------------------------------------------------------

    def heatmap(self, image: np.ndarray, phrase: str) -> np.ndarray:
        """float32 (H, W) in [0, 1]: where ``phrase`` is in ``image``."""
        return self.analyse(image, phrase)[0]

    def analyse(self, image: np.ndarray, phrase: str) -> tuple:
        """``(heatmap, info)``. ``info``: ``classes`` (the attended classes: label, wnid, s,
        weight, image probability), ``text_score`` (max s_k), ``peak`` (max of m, logit
        units), ``peak_z`` (peak − median class-map peak, in IQRs), ``peak_rank`` (fraction
        of the 1000 class maps peaking lower), ``image_score`` (Σ a_k P(k|image)),
        ``confidence`` in [0, 1], ``grid`` (map size before upsampling), ``input_size``,
        ``cached_image``, ``flat`` (m constant: uniform map), ``timings_ms``."""
        t0 = time.perf_counter()
        phrase = self._check_phrase(phrase)
        rgb = self._rgb(image)
        s = self.class_scores(phrase)
        t1 = time.perf_counter()
        feats, cached = self._features(rgb)
        t2 = time.perf_counter()
        k = self.top_k
        top = np.argpartition(-s, k - 1)[:k] if k < NUM_CLASSES else np.arange(NUM_CLASSES)
        top = top[np.argsort(-s[top], kind="stable")]
        z = s[top].astype(np.float64) / self.temperature + self.image_prior * feats.log_probs[top]
        a = np.exp(z - z.max())
        a /= a.sum()
        m = np.tensordot(a.astype(np.float32), feats.cams[top], axes=1)
        lo, peak = float(m.min()), float(m.max())
        flat = not peak - lo > 1e-6 * max(1.0, abs(peak))
        small = np.ones_like(m) if flat else (m - lo) / (peak - lo)
        heat = self._upsample(small.astype(np.float32), rgb.shape[:2])
        text_score = float(s[top[0]])
        peak_z = (peak - feats.peak_median) / feats.peak_iqr
        text_factor = min(max((text_score - TEXT_FLOOR) / (TEXT_FULL - TEXT_FLOOR), 0.0), 1.0)
        image_factor = 1.0 / (1.0 + math.exp(-PEAK_Z_GAIN * (peak_z - PEAK_Z0)))
        probs = np.exp(feats.log_probs[top])
        t3 = time.perf_counter()
        info = {
            "phrase": phrase,
            "classes": [{"label": self.labels[i], "wnid": self.wnids[i], "index": int(i), "similarity": float(s[i]),
                         "weight": float(w), "image_prob": float(p)} for i, w, p in zip(top, a, probs)],
            "text_score": text_score,
            "peak": peak,
            "peak_z": float(peak_z),
            "peak_rank": float(np.searchsorted(feats.peaks_sorted, peak, side="left") / NUM_CLASSES),
            "image_score": float((a * probs).sum()),
            "confidence": float(text_factor * image_factor),
            "grid": tuple(m.shape),
            "input_size": feats.input_size,
            "cached_image": cached,
            "flat": flat,
            "timings_ms": {"text": 1e3 * (t1 - t0), "image": 1e3 * (t2 - t1), "map": 1e3 * (t3 - t2)},
        }
        return heat, info

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _check_phrase(phrase) -> str:
        if not isinstance(phrase, str):
            raise GuidanceError(f"embedded-cam segmenter: phrase must be a string, got {type(phrase).__name__}")
        phrase = " ".join(phrase.split())
        if not phrase:
            raise GuidanceError("embedded-cam segmenter: empty phrase (nothing to segment)")
        return phrase

    @staticmethod
    def _rgb(image) -> np.ndarray:
        from ..codecs.base import as_rgb_uint8

        return as_rgb_uint8(image)

    @staticmethod
    def _upsample(small, size) -> np.ndarray:
        from PIL import Image

        h, w = size
        if small.shape == (h, w):
            out = small
        else:
            out = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def __repr__(self):
        return (f"EmbeddedSegmenter(short_side={self.short_side}, top_k={self.top_k}, "
                f"temperature={self.temperature}, image_prior={self.image_prior})")
