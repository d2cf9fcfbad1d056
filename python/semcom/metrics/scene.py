"""Semantic image metrics on the synthetic scene benchmark (onnxruntime; no torch, no GNU Radio).

Both metrics rest on small networks trained here on renders of the train split of
:mod:`semcom.datasets.scenes` (``python -m gnuradio.semcom.train.scene_metrics``); they are
meaningful on images of that benchmark only, and a metric is only as good as its network: the
recogniser's own accuracy on clean renders is the ceiling of the attribute accuracy (see
docs/metrics.md for the measured figures).

Attribute accuracy (``scene_attr``)
    :func:`recognise_scene` reads a predicted scene graph off an image: the object count (1-4) and,
    per object, shape, colour, size and centre; objects are listed left to right by centre x.
    :func:`attribute_accuracy` compares a predicted graph with the ground truth and
    :func:`image_attribute_accuracy` does both for an image and its scene.

CLIP-style score (``scene_clip_image`` / ``scene_clip_text``)
    :func:`clip_style_score` = ``100 · max(cos(E_img(image), E_txt(caption)), 0)``: the w = 1
    form of CLIPScore (Hessel et al. 2021 scale ``max(cos, 0)`` by w = 2.5; torchmetrics'
    ``CLIPScore`` by 100, as here) computed with a small contrastive dual encoder trained on
    the benchmark's (render, caption) pairs. It is *not* CLIPScore: the encoders are not
    OpenAI's CLIP and know nothing beyond the benchmark's shapes, colours and caption templates.
    Name it :data:`CLIP_STYLE_NAME`.
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from ..runtime import load_model

__all__ = ["ATTR_MODEL", "CLIP_IMAGE_MODEL", "CLIP_TEXT_MODEL", "CLIP_STYLE_NAME", "ATTRIBUTE_KINDS",
           "recognise_scene", "attribute_accuracy", "image_attribute_accuracy",
           "clip_image_embedding", "clip_text_embedding", "clip_style_score"]

ATTR_MODEL = "scene_attr"
CLIP_IMAGE_MODEL, CLIP_TEXT_MODEL = "scene_clip_image", "scene_clip_text"
#: the name to print next to every value of :func:`clip_style_score`
CLIP_STYLE_NAME = "CLIP-style score (scene contrastive model, trained on the synthetic benchmark)"
#: the kinds averaged into ``overall`` by :func:`attribute_accuracy`
ATTRIBUTE_KINDS = ("count", "shape", "colour", "size")
_RELATION_MARGIN = 0.15  # as semcom.datasets.scenes.RELATION_MARGIN
_MAX_OBJECTS = 8


@functools.lru_cache(maxsize=16)
def _model(name, models_dir, providers, threads):
    return load_model(name, models_dir=models_dir, providers=providers, threads=threads)


def _get(name, models_dir, providers, threads):
    hashable = tuple(providers) if isinstance(providers, (list, tuple)) else providers
    return _model(name, None if models_dir is None else str(models_dir), hashable, threads)


def _images(image, data_range, size):
    """float32 [N, 3, size, size] on [0, 1] from H×W×3 or N×H×W×3 (uint8 or float on
    [0, data_range]); resized (PIL bilinear with antialiasing) when not size×size."""
    x = np.asarray(image)
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"image must be integer or float, got {x.dtype}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[1:3]) < 8:
        raise ValueError(f"expected an H×W×3 or N×H×W×3 RGB image (H, W >= 8), got shape {np.shape(image)}")
    x = np.clip(x.astype(np.float32) / np.float32(data_range), 0.0, 1.0)
    if x.shape[1:3] != (size, size):
        from PIL import Image

        x = np.stack([np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(im[..., c]), "F")
                                           .resize((size, size), Image.BILINEAR)) for c in range(3)], -1)
                      for im in x]).clip(0, 1)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


# ----------------------------------------------------------------------------- attributes

def _relations(objs):
    """Relations (i, rel, j) between object centres, by the rule of ``scenes.relations``."""
    out = []
    for i, a in enumerate(objs):
        for j, b in enumerate(objs):
            if i == j:
                continue
            dx, dy = b["cx"] - a["cx"], b["cy"] - a["cy"]
            if abs(dx) >= _RELATION_MARGIN and abs(dx) >= abs(dy) / 2:
                out.append((i, "left of" if dx > 0 else "right of", j))
            if abs(dy) >= _RELATION_MARGIN and abs(dy) >= abs(dx) / 2:
                out.append((i, "above" if dy > 0 else "below", j))
    return out


def recognise_scene(image, data_range=255, models_dir=None, providers=None, threads=None):
    """The scene graph that ``scene_attr`` reads off an image.

    ``image``: H×W×3 (or a batch N×H×W×3) RGB, uint8 or float on [0, ``data_range``]; resized to
    128×128 when needed. Returns ``{"count", "objects", "relations"}`` (a list of them for a
    batch): ``objects`` are ``count`` dicts ``{"shape", "colour", "size", "cx", "cy", "score"}``
    ordered left to right by centre x (fractions of the side, y down; ``score`` is the detection
    probability), ``relations`` the clear relations ``(i, rel, j)`` between them by the rule of
    :func:`semcom.datasets.scenes.relations`.
    """
    model = _get(ATTR_MODEL, models_dir, providers, threads)
    extra = model.entry.extra
    single = np.ndim(image) == 3
    out = model.run({"image": _images(image, data_range, int(extra["image_size"]))})
    shapes, colours, sizes = extra["shapes"], extra["colours"], extra["sizes"]
    counts = extra["counts"]
    preds = []
    for b in range(out["count_logits"].shape[0]):
        c = int(counts[int(np.argmax(out["count_logits"][b]))])
        objs = [{"shape": shapes[int(np.argmax(out["shape_logits"][b, k]))],
                 "colour": colours[int(np.argmax(out["colour_logits"][b, k]))],
                 "size": sizes[int(np.argmax(out["size_logits"][b, k]))],
                 "cx": float(out["slot_xy"][b, k, 0]), "cy": float(out["slot_xy"][b, k, 1]),
                 "score": float(out["slot_score"][b, k])} for k in range(c)]
        preds.append({"count": c, "objects": objs, "relations": _relations(objs)})
    return preds[0] if single else preds


def _ground_truth(scene):
    """Objects (dicts) and relations of a Scene, a ``Scene.to_dict()`` dict or a seed."""
    from ..datasets import scenes

    if isinstance(scene, dict):
        scene = scenes.Scene.from_dict(scene)
    elif not isinstance(scene, scenes.Scene):
        scene = scenes.generate(int(scene))
    objs = [{"shape": o.shape, "colour": o.colour, "size": o.size, "cx": o.cx, "cy": o.cy} for o in scene.objects]
    return objs, list(scenes.relations(scene))


def attribute_accuracy(pred, scene) -> dict:
    """Accuracy of a predicted scene graph against a scene's ground truth, per kind, in [0, 1].

    ``pred``: ``{"count", "objects": [{"shape", "colour", "size", "cx", "cy"}, ...]}`` (as
    :func:`recognise_scene` returns; only the first ``count`` objects are used); ``scene``: a
    :class:`~semcom.datasets.scenes.Scene`, its ``to_dict()`` or a seed. Predicted objects P are
    matched one-to-one to the scene's objects G by the assignment that maximises the number of
    equal attributes (shape, colour, size), ties broken by the smallest total centre distance.
    With ``D = max(|P|, |G|)`` (missing and extra objects cost):

    * ``count``: 1 if ``count`` equals |G|, else 0;
    * ``shape``, ``colour``, ``size``: number of matched pairs with that attribute equal / D;
    * ``overall``: the mean of count, shape, colour and size (:data:`ATTRIBUTE_KINDS`);
    * ``relation`` (not in ``overall``): the fraction of the scene's relations ``(i, rel, j)``
      that also hold between the centres of the predicted objects matched to i and j (by the
      rule of :func:`semcom.datasets.scenes.relations`); 1.0 for a scene without relations.

    Also returned: ``n_predicted``, ``n_objects``, ``n_relations`` (the scene's).
    """
    G, gt_rel = _ground_truth(scene)
    P = list(pred["objects"])[:max(0, int(pred.get("count", len(pred["objects"]))))][:_MAX_OBJECTS]
    n_pred = int(pred.get("count", len(P)))
    ng, npd = len(G), len(P)
    D = max(ng, npd)
    out = {"n_predicted": n_pred, "n_objects": ng, "n_relations": len(gt_rel)}
    if D == 0:
        out.update(count=float(n_pred == 0), shape=1.0, colour=1.0, size=1.0, relation=1.0)
        out["overall"] = float(np.mean([out[k] for k in ATTRIBUTE_KINDS]))
        return out
    S = [[sum(p[a] == g[a] for a in ("shape", "colour", "size")) for p in P] for g in G]
    dist = [[math.hypot(p["cx"] - g["cx"], p["cy"] - g["cy"]) for p in P] for g in G]
    best, best_key = {}, None
    k = min(ng, npd)
    for perm in itertools.permutations(range(npd), k) if ng <= npd else itertools.permutations(range(ng), k):
        assign = dict(zip(range(ng), perm)) if ng <= npd else dict(zip(perm, range(npd)))  # gt -> pred
        key = (sum(S[g][p] for g, p in assign.items()), -sum(dist[g][p] for g, p in assign.items()))
        if best_key is None or key > best_key:
            best_key, best = key, assign
    for a in ("shape", "colour", "size"):
        out[a] = float(sum(P[p][a] == G[g][a] for g, p in best.items()) / D)
    out["count"] = float(n_pred == ng)
    if gt_rel:
        pr = set(_relations(P))
        out["relation"] = float(np.mean([i in best and j in best and (best[i], r, best[j]) in pr
                                         for i, r, j in gt_rel]))
    else:
        out["relation"] = 1.0
    out["overall"] = float(np.mean([out[k] for k in ATTRIBUTE_KINDS]))
    return out


def image_attribute_accuracy(image, scene, data_range=255, models_dir=None, providers=None, threads=None):
    """Fraction of a scene's attributes that ``scene_attr`` recognises in an image.

    :func:`recognise_scene` on ``image`` scored by :func:`attribute_accuracy` against ``scene``:
    a dict with ``count``, ``shape``, ``colour``, ``size``, ``relation`` and ``overall`` (mean of
    count, shape, colour and size) in [0, 1]. For a batch N×H×W×3, ``scene`` is a sequence of
    N scenes and a list of dicts is returned. Bounded by the recogniser's own accuracy on clean
    renders (docs/metrics.md).
    """
    pred = recognise_scene(image, data_range, models_dir, providers, threads)
    if isinstance(pred, dict):
        return attribute_accuracy(pred, scene)
    scene = list(scene)
    if len(scene) != len(pred):
        raise ValueError(f"{len(pred)} images but {len(scene)} scenes")
    return [attribute_accuracy(p, s) for p, s in zip(pred, scene)]


# ----------------------------------------------------------------------------- CLIP-style score

@functools.lru_cache(maxsize=8)
def _tokenizer(path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def clip_image_embedding(image, data_range=255, models_dir=None, providers=None, threads=None) -> np.ndarray:
    """Unit-norm image embeddings of ``scene_clip_image``: [N, d] for H×W×3 or N×H×W×3 input."""
    model = _get(CLIP_IMAGE_MODEL, models_dir, providers, threads)
    x = _images(image, data_range, int(model.entry.extra["image_size"]))
    return np.concatenate([model.run({"image": x[i:i + 64]})["embedding"] for i in range(0, len(x), 64)])


def clip_text_embedding(texts, models_dir=None, providers=None, threads=None) -> np.ndarray:
    """Unit-norm caption embeddings of ``scene_clip_text``: [N, d] for a string or a list of N.

    Text is lowercased and split into words and punctuation by the word-level tokenizer of the
    benchmark vocabulary (unknown words become [UNK]); at most ``max_tokens`` tokens are read."""
    model = _get(CLIP_TEXT_MODEL, models_dir, providers, threads)
    extra = model.entry.extra
    tok = _tokenizer(str(model.path.parent / extra["tokenizer"]))
    texts = [texts] if isinstance(texts, str) else list(texts)
    out = []
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"caption must be str, got {type(t).__name__}")
        ids = tok.encode(t).ids
        m = int(extra["max_tokens"])
        if len(ids) > m:
            ids = ids[:m - 1] + [ids[-1]]
        out.append(model.run({"input_ids": np.asarray([ids], np.int64)})["embedding"][0])
    return np.stack(out)


def clip_style_score(image, caption, data_range=255, models_dir=None, providers=None, threads=None):
    """CLIP-style score (scene contrastive model, trained on the synthetic benchmark) of an image
    and a caption: ``100 · max(cos, 0)`` of their embeddings, in [0, 100].

    The w = 1 form of CLIPScore, scaled by 100 as torchmetrics' ``CLIPScore`` does (Hessel et
    al. use 2.5 · max(cos, 0)); not comparable with CLIPScore values of OpenAI CLIP models.
    ``image``: H×W×3 RGB, uint8 or float on [0, ``data_range``] (resized to 128×128 when
    needed), ``caption``: a string. For a batch N×H×W×3 and a list of N captions, returns the N
    scores of the aligned pairs as an array.
    """
    zi = clip_image_embedding(image, data_range, models_dir, providers, threads)
    zt = clip_text_embedding(caption, models_dir, providers, threads)
    if len(zi) != len(zt):
        raise ValueError(f"{len(zi)} images but {len(zt)} captions")
    s = 100.0 * np.maximum(np.sum(zi.astype(np.float64) * zt, axis=1), 0.0)
    return float(s[0]) if np.ndim(image) == 3 else s
