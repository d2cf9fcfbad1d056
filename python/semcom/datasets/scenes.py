"""Synthetic multimodal scene benchmark: shapes, colours, sizes and spatial relations.

Every scene is generated from an integer seed (``numpy.random.default_rng(seed)``) and comes
with its ground truth as data: a scene graph (objects, background, relations), captions from
several templates, question/answer pairs, and per-object masks at any resolution. Because the
ground truth is exact, the semantic accuracy of a caption is exactly measurable
(:func:`caption_attributes`, :func:`caption_accuracy`).

Only numpy and PIL are used (no GNU Radio, no torch). Rendering draws at 4x the requested size
with PIL and box-filters down (anti-aliasing); a 128-pixel scene takes a few milliseconds.

See docs/scenes.md for the caption grammar, the metric and the splits.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "SHAPES", "COLOURS", "SIZES", "RELATIONS", "POSITIONS", "NUMBERS", "SPLITS", "SIZE_SCALE",
    "SceneObject", "Scene", "Item", "SceneDataset",
    "generate", "render", "masks", "relations", "position", "captions", "questions", "dataset",
    "vocabulary", "tokenize", "caption_attributes", "caption_accuracy",
]

SHAPES = ("circle", "square", "rectangle", "triangle", "star", "cross", "ring", "diamond", "heart", "arrow")

#: Object colours: saturated or dark, all far from the light, desaturated backgrounds.
COLOURS = {
    "red": (215, 30, 30),
    "green": (30, 150, 45),
    "blue": (35, 70, 215),
    "yellow": (240, 205, 0),
    "orange": (245, 125, 0),
    "purple": (125, 40, 170),
    "black": (20, 20, 20),
    "gray": (125, 125, 125),
    "teal": (0, 135, 135),
    "brown": (125, 70, 25),
    "pink": (245, 95, 180),
}

SIZES = ("small", "medium", "large")
#: Nominal diameter of an object's bounding circle as a fraction of the image side (jittered by ±4 %).
#: Areas grow about 2.2x from one size to the next.
SIZE_SCALE = {"small": 0.16, "medium": 0.24, "large": 0.35}
_SCALE_JITTER = 0.04

RELATIONS = ("left of", "right of", "above", "below")
#: A relation holds when the centres differ by at least this much (fraction of the side) along its
#: axis, and along its axis by at least half the displacement along the other axis.
RELATION_MARGIN = 0.15

#: 3x3 grid positions (row, column) -> name.
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
#: A position is stated only when the centre is at least this far from the grid lines at 1/3, 2/3.
POSITION_MARGIN = 0.04

NUMBERS = ("zero", "one", "two", "three", "four")

SPLITS = {
    "train": range(0, 100_000),
    "val": range(1_000_000, 1_010_000),
    "test": range(2_000_000, 2_010_000),
}

BACKGROUNDS = ("solid", "gradient", "stripes", "checker", "noise")

_SS = 4  # supersampling factor of the renderer
_PLACE_GAP = 0.02  # minimum gap between the bounding circles of two objects
_BORDER = 0.02  # minimum gap between a bounding circle and the image border
_PLACE_TRIES = 60


# ----------------------------------------------------------------------------- geometry

def _regular(n, r, start_deg=-90.0):
    a = np.deg2rad(start_deg) + 2 * np.pi * np.arange(n) / n
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _star():
    a = np.deg2rad(-90.0) + np.pi * np.arange(10) / 5
    r = np.where(np.arange(10) % 2 == 0, 0.97, 0.42)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _heart():
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))  # y down
    pts = np.stack([x, y], 1)
    pts -= (pts.max(0) + pts.min(0)) / 2
    return pts * (0.94 / np.hypot(pts[:, 0], pts[:, 1]).max())


def _cross(w=0.27, L=0.85):
    return np.array([(-w, -L), (w, -L), (w, -w), (L, -w), (L, w), (w, w), (w, L), (-w, L), (-w, w),
                     (-L, w), (-L, -w), (-w, -w)], float)


# Polygons in units of the bounding-circle radius (all inside it), image coordinates (y down).
_POLYGONS = {
    "square": np.array([(-0.64, -0.64), (0.64, -0.64), (0.64, 0.64), (-0.64, 0.64)]),
    "rectangle": np.array([(-0.88, -0.44), (0.88, -0.44), (0.88, 0.44), (-0.88, 0.44)]),
    "triangle": _regular(3, 0.92) + np.array([0.0, 0.12]),
    "star": _star(),
    "cross": _cross(),
    "diamond": np.array([(0.0, -0.95), (0.6, 0.0), (0.0, 0.95), (-0.6, 0.0)]),
    "heart": _heart(),
    "arrow": np.array([(-0.9, -0.26), (0.1, -0.26), (0.1, -0.62), (0.92, 0.0), (0.1, 0.62), (0.1, 0.26),
                       (-0.9, 0.26)]),
}
_CIRCLE_R = 0.82
_RING_R, _RING_W = 0.85, 0.36
_MAX_ANGLE = 15.0  # degrees; small so that a square never becomes a diamond


# ----------------------------------------------------------------------------- data classes

@dataclass
class SceneObject:
    """One object. ``cx``, ``cy`` (centre) and ``scale`` (diameter of the bounding circle) are
    fractions of the image side; y grows downwards; ``angle`` is a rotation in degrees."""
    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    scale: float
    angle: float = 0.0

    def describe(self, size=True):
        return f"{self.size} {self.colour} {self.shape}" if size else f"{self.colour} {self.shape}"


@dataclass
class Scene:
    """A scene graph: its seed, its objects (in drawing order) and its background."""
    seed: int
    objects: list
    background: dict = field(default_factory=lambda: {"kind": "solid", "colours": [[235, 235, 235]],
                                                        "params": {}})

    @property
    def relations(self):
        """Clear pairwise relations ``[(i, rel, j), ...]``: object i is ``rel`` object j."""
        return relations(self)

    def to_dict(self):
        """JSON-able scene graph: seed, objects, background and relations."""
        return {
            "seed": int(self.seed),
            "objects": [dataclasses.asdict(o) for o in self.objects],
            "background": _jsonable(self.background),
            "relations": [[i, r, j] for i, r, j in self.relations],
        }

    @classmethod
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict` (``relations`` is recomputed from the geometry)."""
        objs = [SceneObject(**{k: o[k] for k in ("shape", "colour", "size", "cx", "cy", "scale", "angle")
                               if k in o}) for o in d["objects"]]
        return cls(seed=int(d.get("seed", 0)), objects=objs, background=_jsonable(d.get("background", {
            "kind": "solid", "colours": [[235, 235, 235]], "params": {}})))


@dataclass
class Item:
    """One benchmark item: the seed, the scene graph, the rendered image (uint8 HxWx3), its
    captions and its question/answer pairs."""
    seed: int
    scene: Scene
    image: np.ndarray
    captions: list
    qa: list


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return x


# ----------------------------------------------------------------------------- generation

def _background(rng):
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    level = 205 + 35 * rng.random()
    tint = (rng.random(3) - 0.5) * 24
    c0 = np.clip(level + tint, 185, 250)
    delta = (14 + 14 * rng.random()) * (1 if level < 228 else -1)
    tint2 = (rng.random(3) - 0.5) * 10
    c1 = np.clip(c0 + delta + tint2, 185, 250)
    cols = [[int(round(v)) for v in c0], [int(round(v)) for v in c1]]
    params = {}
    if kind == "solid":
        cols = cols[:1]
    elif kind == "gradient":
        params["angle"] = float(360 * rng.random())
    elif kind == "stripes":
        params["period"] = float(0.06 + 0.1 * rng.random())
        params["orientation"] = ("horizontal", "vertical", "diagonal")[int(rng.integers(3))]
    elif kind == "checker":
        params["cells"] = int(rng.integers(4, 11))
    elif kind == "noise":
        params["grid"] = int(rng.integers(3, 9))
        params["seed"] = int(rng.integers(2 ** 31))
    return {"kind": kind, "colours": cols, "params": params}


def generate(seed) -> Scene:
    """The scene of ``seed`` (deterministic): 1-4 objects, no two with the same colour and shape,
    bounding circles disjoint; a light procedural background."""
    seed = int(seed)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5))
    objects = []
    used = set()
    for _ in range(n):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        while (shape, colour) in used:
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        size_i = int(rng.integers(len(SIZES)))
        jitter = 1 + _SCALE_JITTER * (2 * rng.random() - 1)
        angle = 0.0 if shape in ("circle", "ring") else float(round(_MAX_ANGLE * (2 * rng.random() - 1), 3))
        placed = None
        while placed is None and size_i >= 0:
            scale = SIZE_SCALE[SIZES[size_i]] * jitter
            r = scale / 2
            lo, hi = r + _BORDER, 1 - r - _BORDER
            for _t in range(_PLACE_TRIES):
                cx, cy = lo + (hi - lo) * rng.random(), lo + (hi - lo) * rng.random()
                if all(math.hypot(cx - o.cx, cy - o.cy) >= r + o.scale / 2 + _PLACE_GAP for o in objects):
                    placed = (cx, cy, scale)
                    break
            else:
                size_i -= 1
        if placed is None:
            continue
        cx, cy, scale = placed
        used.add((shape, colour))
        objects.append(SceneObject(shape, colour, SIZES[size_i], float(round(cx, 5)), float(round(cy, 5)),
                                   float(round(scale, 5)), angle))
    return Scene(seed=seed, objects=objects, background=_background(rng))


def relations(scene):
    """All clear relations ``(i, rel, j)`` between ordered pairs of objects, from the centres:
    i is "left of" j when ``cx_j - cx_i >= RELATION_MARGIN`` and ``|dx| >= |dy| / 2`` (and alike for
    the other three). A diagonal pair can hold one horizontal and one vertical relation."""
    out = []
    objs = scene.objects
    for i, a in enumerate(objs):
        for j, b in enumerate(objs):
            if i == j:
                continue
            dx, dy = b.cx - a.cx, b.cy - a.cy
            if abs(dx) >= RELATION_MARGIN and abs(dx) >= abs(dy) / 2:
                out.append((i, "left of" if dx > 0 else "right of", j))
            if abs(dy) >= RELATION_MARGIN and abs(dy) >= abs(dx) / 2:
                out.append((i, "above" if dy > 0 else "below", j))
    return out


def position(obj):
    """The 3x3-grid position name of an object's centre, or None when it is within
    ``POSITION_MARGIN`` of a grid line (not clear)."""
    def cell(v):
        for k, edge in enumerate((1 / 3, 2 / 3)):
            if abs(v - edge) < POSITION_MARGIN:
                return None
        return 0 if v < 1 / 3 else (1 if v < 2 / 3 else 2)
    r, c = cell(obj.cy), cell(obj.cx)
    if r is None or c is None:
        return None
    return POSITIONS[3 * r + c]


# ----------------------------------------------------------------------------- rendering

def _pattern_image(kind, p, c0, c1, n):
    """Solid colour, stripes or checkerboard drawn with PIL at ``n`` pixels."""
    col0 = tuple(int(round(float(v))) for v in c0)
    col1 = tuple(int(round(float(v))) for v in c1)
    img = Image.new("RGB", (n, n), col0)
    if kind == "solid":
        return img
    draw = ImageDraw.Draw(img)
    if kind == "checker":
        k = int(p.get("cells", 6))
        edges = [round(n * e / k) for e in range(k + 1)]
        for r in range(k):
            for c in range(k):
                if (r + c) % 2:
                    draw.rectangle((edges[c], edges[r], edges[c + 1] - 1, edges[r + 1] - 1), fill=col1)
        return img
    per = float(p.get("period", 0.1)) * n
    o = p.get("orientation", "vertical")
    if o == "diagonal":
        per *= 1.4142135623730951  # stripes of the same width across the diagonal
        k = 1
        while k * per < 2 * n:
            x0, x1 = k * per, (k + 1) * per
            draw.polygon([(x0, 0), (x1, 0), (x1 - n, n), (x0 - n, n)], fill=col1)
            k += 2
        return img
    k = 1
    while k * per < n:
        a0, a1 = round(k * per), round((k + 1) * per) - 1
        draw.rectangle((a0, 0, a1, n) if o == "vertical" else (0, a0, n, a1), fill=col1)
        k += 2
    return img


def _background_array(bg, n, ss=1):
    """The background at ``n`` pixels (uint8 array, or a PIL image for the solid and two-colour
    kinds); smooth kinds are computed at ``n // ss`` and repeated (exact under the final
    ``ss``-box filter)."""
    kind = bg.get("kind", "solid")
    cols = np.asarray(bg.get("colours", [[235, 235, 235]]), np.float32)
    p = bg.get("params", {})
    c0 = cols[0]
    c1 = cols[1] if len(cols) > 1 else cols[0]
    if kind in ("solid", "stripes", "checker"):
        return _pattern_image(kind, p, c0, c1, n)
    m = n // ss if n % ss == 0 else n
    u = (np.arange(m, dtype=np.float32) + 0.5) / m
    if kind == "gradient":
        a = np.deg2rad(p.get("angle", 0.0))
        ca, sa = np.float32(math.cos(a)), np.float32(math.sin(a))
        t = (u[None, :] - 0.5) * ca + (u[:, None] - 0.5) * sa
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif kind == "noise":
        g = int(p.get("grid", 4))
        grid = np.random.default_rng(int(p.get("seed", 0))).random((g + 1, g + 1)).astype(np.float32)
        x = u * g
        i0 = np.minimum(np.floor(x).astype(np.int32), g - 1)
        f = x - i0
        f = f * f * (3 - 2 * f)  # smoothstep
        rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]  # (m, g+1)
        t = rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]
    else:
        raise ValueError(f"unknown background kind {kind!r}")
    t = np.asarray(t, np.float32)[..., None]
    img = np.clip(np.rint(c0 * (1 - t) + c1 * t), 0, 255).astype(np.uint8)
    if m != n:
        img = np.repeat(np.repeat(img, ss, 0), ss, 1)
    return img


def _draw(draw, obj, n, fill):
    cx, cy = obj.cx * n, obj.cy * n
    R = obj.scale / 2 * n
    if obj.shape == "circle":
        r = _CIRCLE_R * R
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        return
    if obj.shape == "ring":
        r = _RING_R * R
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(1, int(round(_RING_W * R))))
        return
    pts = _POLYGONS[obj.shape]
    a = np.deg2rad(obj.angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    xy = pts @ rot.T * R + (cx, cy)
    draw.polygon([tuple(p) for p in xy.tolist()], fill=fill)


def _check_size(size):
    size = int(size)
    if size < 8:
        raise ValueError(f"image size must be >= 8 (32 or more recommended), got {size}")
    return size


def render(scene, size=128) -> np.ndarray:
    """Render ``scene`` as a uint8 ``(size, size, 3)`` RGB image (drawn at 4x, box-filtered down)."""
    size = _check_size(size)
    n = size * _SS
    bg = _background_array(scene.background, n, _SS)
    img = bg if isinstance(bg, Image.Image) else Image.fromarray(bg, "RGB")
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        _draw(draw, o, n, COLOURS[o.colour])
    return np.asarray(img.reduce(_SS))


def masks(scene, size=128, threshold=0.5) -> np.ndarray:
    """Per-object visible masks, bool ``(n_objects, size, size)``: pixels at least ``threshold``
    covered by the object and not by an object drawn after it."""
    size = _check_size(size)
    n = size * _SS
    cov = []
    for o in scene.objects:
        im = Image.new("L", (n, n), 0)
        _draw(ImageDraw.Draw(im), o, n, 255)
        cov.append(np.asarray(im.reduce(_SS)))
    out = np.zeros((len(cov), size, size), bool)
    above = np.zeros((size, size), np.int32)
    for k in range(len(cov) - 1, -1, -1):
        vis = np.clip(cov[k].astype(np.int32) - above, 0, 255)
        out[k] = vis >= threshold * 255
        above = np.minimum(above + cov[k], 255)
    return out


# ----------------------------------------------------------------------------- captions

_REL_PHRASE = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_PREFIXES = ("an image of", "a picture of", "a scene with")


def _num(n):
    """Number word (hand-built scenes with more than four objects get digits)."""
    return NUMBERS[n] if n < len(NUMBERS) else str(n)


def _a(phrase):
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(items):
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _rng(scene, stream):
    return np.random.default_rng([int(scene.seed) & 0xFFFFFFFF, int(stream)])


def _relational(scene, rng, size=True):
    """Objects paired by clear relations: "A rel B, and C rel D" / "A rel B, and C"; falls back to
    a plain list when no pair is related. Every object is mentioned once."""
    objs = scene.objects
    rel = {}
    for i, r, j in relations(scene):
        rel.setdefault((i, j), []).append(r)
    order = list(rng.permutation(len(objs)))
    left = list(order)
    parts = []
    while left:
        i = left.pop(0)
        partner = next((j for j in left if (i, j) in rel), None)
        d_i = _a(objs[i].describe(size))
        if partner is None:
            parts.append(d_i)
            continue
        left.remove(partner)
        rs = rel[(i, partner)]
        r = rs[int(rng.integers(len(rs)))]
        parts.append(f"{d_i} {_REL_PHRASE[r]} {_a(objs[partner].describe(size))}")
    if len(parts) == 1:
        return parts[0]
    if all(" " + _REL_PHRASE[r] + " " not in p for p in parts for r in RELATIONS):
        return _join(parts)
    return ", and ".join(parts)


def captions(scene) -> list:
    """Five captions from different templates (deterministic per scene). Each mentions every
    object exactly once, always with its colour and shape; a lone object's list caption also
    says where it is (``a small red star in the top left``, ``on the left``, ``at the top``)."""
    objs = scene.objects
    if not objs:
        return ["an empty scene"]
    rng = _rng(scene, 1)
    n = len(objs)
    noun = "shape" if n == 1 else "shapes"
    lr = sorted(range(n), key=lambda k: (objs[k].cx, objs[k].cy))
    rand = list(rng.permutation(n))
    caps = [
        _relational(scene, rng, size=True),
        f"{_num(n)} {noun}: " + _join([_a(objs[k].describe(False)) for k in lr]),
        "there is " + _relational(scene, rng, size=bool(rng.integers(2))),
        _join([_a(objs[k].describe(True)) for k in rand]),
        f"{_PREFIXES[int(rng.integers(len(_PREFIXES)))]} {_num(n)} {noun}: "
        + _join([_a(objs[k].describe(True)) for k in lr]),
    ]
    if n == 1 and position(objs[0]) is not None:
        caps[3] = f"{caps[3]} {_POS_PHRASE[position(objs[0])]}"
    return caps


_POS_PHRASE = {p: ("in the " + p if " " in p or p == "center" else ("at the " if p in ("top", "bottom") else "on the ") + p)
               for p in POSITIONS}


# ----------------------------------------------------------------------------- questions

def _unique_ref(objs, k, attrs_order):
    """The shortest referring phrase for object k from the attribute combinations in
    ``attrs_order`` that picks it out uniquely, or None."""
    o = objs[k]
    for attrs in attrs_order:
        key = tuple(getattr(o, a) for a in attrs)
        if sum(tuple(getattr(p, a) for a in attrs) == key for p in objs) == 1:
            return " ".join(key)
    return None


def questions(scene) -> list:
    """Question/answer pairs ``{"question", "answer", "kind"}`` with kind in colour, shape,
    presence, count, relation, position. Objects are referred to only by unique descriptions;
    relation and position questions are asked only where the answer is clear."""
    objs = scene.objects
    rng = _rng(scene, 2)
    qa = []

    def add(q, a, kind):
        qa.append({"question": q, "answer": a, "kind": kind})

    add("how many shapes are there?", _num(len(objs)), "count")
    present = sorted({o.colour for o in objs})
    absent = [c for c in COLOURS if c not in present]
    if present:
        c = present[int(rng.integers(len(present)))]
        add(f"how many {c} shapes are there?", _num(sum(o.colour == c for o in objs)), "count")
    c = absent[int(rng.integers(len(absent)))]
    add(f"how many {c} shapes are there?", "zero", "count")
    for k, o in enumerate(objs):
        ref = _unique_ref(objs, k, (("shape",), ("size", "shape")))
        if ref:
            add(f"what colour is the {ref}?", o.colour, "colour")
        ref = _unique_ref(objs, k, (("colour",), ("size", "colour")))
        if ref:
            add(f"what shape is the {ref} object?", o.shape, "shape")
    # presence: one present, one absent (colour, shape) combination
    if objs:
        o = objs[int(rng.integers(len(objs)))]
        add(f"is there {_a(o.colour + ' ' + o.shape)}?", "yes", "presence")
    combos = {(o.colour, o.shape) for o in objs}
    while True:
        cc = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        ss = SHAPES[int(rng.integers(len(SHAPES)))]
        if (cc, ss) not in combos:
            break
    add(f"is there {_a(cc + ' ' + ss)}?", "no", "presence")
    refs = [_unique_ref(objs, k, (("colour", "shape"),)) for k in range(len(objs))]
    for k, o in enumerate(objs):
        p = position(o)
        if p is not None and refs[k]:
            add(f"where is the {refs[k]}?", p, "position")
    rels = [(i, r, j) for i, r, j in relations(scene) if refs[i] and refs[j]]
    if rels:
        for idx in rng.permutation(len(rels))[:2]:
            i, r, j = rels[int(idx)]
            if rng.integers(2):
                add(f"is the {refs[i]} {_REL_PHRASE[r]} the {refs[j]}?", "yes", "relation")
            else:
                add(f"is the {refs[i]} {_REL_PHRASE[_INVERSE[r]]} the {refs[j]}?", "no", "relation")
    return qa


# ----------------------------------------------------------------------------- dataset

class SceneDataset(Sequence):
    """A fixed slice of a split: ``ds[k]`` renders the ``k``-th seed's :class:`Item` on demand."""

    def __init__(self, split, n=None, size=128):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        seeds = SPLITS[split]
        if n is not None:
            if not 0 <= int(n) <= len(seeds):
                raise ValueError(f"n must be in [0, {len(seeds)}] for split {split!r}, got {n}")
            seeds = seeds[:int(n)]
        self.split, self.seeds, self.size = split, seeds, _check_size(size)

    def __len__(self):
        return len(self.seeds)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        seed = self.seeds[k]
        scene = generate(seed)
        return Item(seed=seed, scene=scene, image=render(scene, self.size), captions=captions(scene),
                    qa=questions(scene))

    def __repr__(self):
        return f"SceneDataset(split={self.split!r}, n={len(self)}, size={self.size})"


def dataset(split, n=None, size=128) -> SceneDataset:
    """The first ``n`` items (all when None) of ``split`` ("train", "val" or "test"), rendered at
    ``size`` pixels. A lazy sequence of :class:`Item`."""
    return SceneDataset(split, n, size)


# ----------------------------------------------------------------------------- vocabulary

_TOKEN = re.compile(r"[a-z]+|[^\sa-z]")
_TEMPLATE_WORDS = ("a an the there is are to of and with image picture scene shape shapes object "
                   "how many what where colour is yes no empty in on at").split()
_PUNCT = (",", ":", "?")


def tokenize(text):
    """Lowercase word-level tokens: runs of letters, and each other non-space character
    (``,``, ``:``, ``?``) on its own."""
    return _TOKEN.findall(str(text).lower())


def vocabulary() -> list:
    """Every token the caption, question and answer templates can produce (sorted; words and
    the punctuation ``,`` ``:`` ``?``). A tokenizer adds its own special tokens."""
    words = set(_TEMPLATE_WORDS) | set(_PUNCT) | set(NUMBERS) | set(SHAPES) | set(COLOURS) | set(SIZES)
    for phrase in itertools.chain(RELATIONS, _REL_PHRASE.values(), POSITIONS, _PREFIXES):
        words.update(tokenize(phrase))
    return sorted(words)


# ----------------------------------------------------------------------------- caption parsing and metric

_ATTR = {}
for _w in SIZES:
    _ATTR[_w] = ("size", 0)
for _w in COLOURS:
    _ATTR[_w] = ("colour", 1)
_ATTR["grey"] = ("colour", 1)
for _w in SHAPES:
    _ATTR[_w] = ("shape", 2)
    _ATTR[_w + "s"] = ("shape", 2)
_COUNT_NOUNS = {"shape", "shapes", "object", "objects", "thing", "things", "items", "item"}
_NUM = {w: k for k, w in enumerate(NUMBERS)}
_MAX_MENTIONS = 8


def caption_attributes(text) -> dict:
    """Parse a caption of the template language.

    Returns ``{"objects": [{"size", "colour", "shape"}, ...], "count": int, "count_stated": bool,
    "relations": [(i, rel, j), ...]}`` (unstated attributes are None; ``count`` is the stated count,
    or the number of mentioned objects when none is stated). An object mention is a run of attribute words in the
    order size, colour, shape (each optional, at most one of each); any other word ends it. A
    relation (``left of``/``right of``/``above``/``below``, with or without ``to the``) between
    two consecutive mentions relates them. ``count`` is a number word directly followed by
    shape/shapes/object/objects. Never raises: unknown words are ignored.
    """
    try:
        toks = tokenize(text)
    except Exception:  # pragma: no cover - str() of exotic objects
        return {"objects": [], "count": 0, "count_stated": False, "relations": []}
    objects, rels, count = [], [], None
    cur, cur_rank = None, -1
    pending = None

    def flush():
        nonlocal cur, cur_rank
        if cur is not None:
            objects.append(cur)
        cur, cur_rank = None, -1

    for k, t in enumerate(toks):
        nxt = toks[k + 1] if k + 1 < len(toks) else ""
        if t in _ATTR:
            kind, rank = _ATTR[t]
            val = "gray" if t == "grey" else (t[:-1] if kind == "shape" and t not in SHAPES else t)
            if cur is None or rank <= cur_rank:
                flush()
                if pending is not None and objects:
                    rels.append((len(objects) - 1, pending, len(objects)))
                pending = None
                cur = {"size": None, "colour": None, "shape": None}
            cur[kind] = val
            cur_rank = rank
            continue
        flush()
        if t in _NUM and nxt in _COUNT_NOUNS and count is None:
            count = _NUM[t]
        elif t in ("left", "right") and nxt == "of":
            pending = t + " of"
        elif t in ("above", "below"):
            pending = t
        elif t in ("and", ",", ":", ".", ";"):
            pending = None
    flush()
    stated = count is not None
    return {"objects": objects, "count": count if stated else len(objects), "count_stated": stated,
            "relations": rels}


def _as_scene(scene):
    if isinstance(scene, Scene):
        return scene
    if isinstance(scene, dict):
        return Scene.from_dict(scene)
    return generate(int(scene))


def _greedy_assignment(S):
    pairs = sorted(((-S[m][g], m, g) for m in range(len(S)) for g in range(len(S[0]) if S else 0)))
    used_m, used_g, out = set(), set(), {}
    for _s, m, g in pairs:
        if m not in used_m and g not in used_g:
            out[m] = g
            used_m.add(m)
            used_g.add(g)
    return out


def caption_accuracy(text, scene) -> dict:
    """Semantic accuracy of a caption against a scene's ground truth, per kind, in [0, 1].

    Let M be the objects the caption mentions (:func:`caption_attributes`, at most 8 counted for
    matching) and G the scene's objects. Mentions are matched one-to-one to objects by the
    assignment that maximises the number of equal attributes (shape, colour, and size where the
    caption states one), ties broken by the number of true relations. Then, with
    ``D = max(|M|, |G|)`` (so that missing and extra objects cost):

    * ``shape``: number of matched pairs with equal shape / D;
    * ``colour``: number of matched pairs with equal colour / D;
    * ``size``: among matched mentions that state a size, the fraction with the right size,
      times ``min(|M|, |G|) / D`` (1.0 if no size is stated and |M| = |G|);
    * ``count``: 1 if the stated count (or |M| when none is stated) equals |G|, else 0;
    * ``relation``: the fraction of the relations the caption states that are true: both of its
      mentions are matched, each to an object that has the mention's shape or its colour, and
      the relation holds between those objects (:func:`relations`); 1.0 if the caption states
      none;
    * ``overall``: the mean of shape, colour and count, and relation when the caption states at
      least one relation.

    Also returned: ``n_mentioned``, ``n_objects``, ``n_relations`` (relations stated). An empty
    scene scores 1.0 for an empty caption. Never raises on arbitrary text.
    """
    scene = _as_scene(scene)
    p = caption_attributes(text)
    M, G = p["objects"], scene.objects
    nm, ng = len(M), len(G)
    D = max(nm, ng)
    count_said = p["count"]
    out = {"n_mentioned": nm, "n_objects": ng, "n_relations": len(p["relations"])}
    if D == 0:
        out.update(shape=1.0, colour=1.0, size=1.0, count=1.0, relation=1.0, overall=1.0)
        return out
    Mc = M[:_MAX_MENTIONS]
    gt_rel = set(relations(scene))

    def attr_score(m, g):
        return (m["shape"] == g.shape) + (m["colour"] == g.colour) + (m["size"] is not None and m["size"] == g.size)

    def ident(m, g):  # the matched object shares the mention's shape or colour
        return Mc[m]["shape"] == G[g].shape or Mc[m]["colour"] == G[g].colour

    S = [[attr_score(m, g) for g in G] for m in Mc]
    best, best_key = {}, (-1, -1)
    k = min(len(Mc), ng)
    # injective maps from the smaller side to the larger (exhaustive; greedy for huge scenes)
    if math.perm(max(len(Mc), ng), k) > 50_000:
        cands = [_greedy_assignment(S)]
    elif len(Mc) <= ng:
        cands = (dict(zip(range(len(Mc)), perm)) for perm in itertools.permutations(range(ng), k))
    else:
        cands = (dict(zip(perm, range(ng))) for perm in itertools.permutations(range(len(Mc)), k))
    for assign in cands:
        a = sum(S[m][g] for m, g in assign.items())
        r = sum((assign[i], rel, assign[j]) in gt_rel for i, rel, j in p["relations"]
                if i in assign and j in assign and ident(i, assign[i]) and ident(j, assign[j]))
        if (a, r) > best_key:
            best_key, best = (a, r), assign
    shape = sum(Mc[m]["shape"] == G[g].shape for m, g in best.items()) / D
    colour = sum(Mc[m]["colour"] == G[g].colour for m, g in best.items()) / D
    sized = [(m, g) for m, g in best.items() if Mc[m]["size"] is not None]
    size_prec = (sum(Mc[m]["size"] == G[g].size for m, g in sized) / len(sized)) if sized else 1.0
    size = size_prec * min(nm, ng) / D
    count = float(count_said == ng)
    if p["relations"]:
        relation = best_key[1] / len(p["relations"])
    else:
        relation = 1.0
    kinds = [shape, colour, count] + ([relation] if p["relations"] else [])
    out.update(shape=float(shape), colour=float(colour), size=float(size), count=count,
               relation=float(relation), overall=float(np.mean(kinds)))
    return out
