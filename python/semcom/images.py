"""Image sets for the image links: folders, files, or the sample photos scikit-image ships.

No GNU Radio import. ``load_images`` is shared by the image source block (what is sent)
and the image sink (the reference it scores against), so both see identical pixels.

Image size limit: a file whose width × height exceeds ``max_pixels`` (default
``DEFAULT_MAX_PIXELS`` = 4096 × 4096) is refused from its header, before its pixels are
decoded, and skipped like an unreadable file (``ImageTooLarge``, a ValueError). Pillow's own
decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 M pixels, refused above
twice that) still applies on top: a file over it is refused with the same kind of error.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from .codecs.base import as_rgb_uint8

__all__ = ["ImageItem", "ImageSet", "load_images", "scene_seed", "check_pixels", "ImageTooLarge", "SAMPLE_NAMES",
           "IMAGE_EXTENSIONS", "DEFAULT_MAX_PIXELS"]

log = logging.getLogger("gr-semcom.images")

#: colour photographs that ship inside scikit-image (no download needed)
SAMPLE_NAMES = ("astronaut", "coffee", "chelsea", "rocket")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: largest image (width × height) loaded or encoded unless told otherwise: 4096 × 4096
DEFAULT_MAX_PIXELS = 4096 * 4096


class ImageTooLarge(ValueError):
    """An image with more pixels than the ``max_pixels`` limit."""


def check_pixels(height: int, width: int, max_pixels: int, what: str = "image") -> None:
    """ImageTooLarge when height × width exceeds ``max_pixels`` (0 or None: no limit)."""
    if max_pixels and int(height) * int(width) > int(max_pixels):
        raise ImageTooLarge(f"{what} of {int(width)}x{int(height)} = {int(height) * int(width)} pixels exceeds "
                            f"the limit of {int(max_pixels)} pixels (max_pixels); refused")


def _max_pixels(max_pixels) -> int:
    try:
        n = int(max_pixels or 0)
    except (TypeError, ValueError):
        raise ValueError(f"max_pixels must be an integer >= 0 (0: no limit), got {max_pixels!r}") from None
    if n < 0:
        raise ValueError(f"max_pixels must be an integer >= 0 (0: no limit), got {max_pixels!r}")
    return n


@dataclass
class ImageItem:
    name: str
    pixels: np.ndarray  # uint8 (H, W, 3)


@dataclass
class ImageSet:
    """Loaded images plus the files that could not be read (name → reason), and which of
    those were refused for their size."""

    items: list
    skipped: dict = field(default_factory=dict)
    too_large: list = field(default_factory=list)  # names of the skipped files over max_pixels

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return iter(self.items)


def _fit(a: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to size×size (Pillow, Lanczos); size 0 = as is."""
    if not size:
        return a
    from PIL import Image

    h, w = a.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    im = Image.fromarray(a[y0:y0 + s, x0:x0 + s])
    return np.asarray(im.resize((size, size), Image.LANCZOS), np.uint8)


def _grey_to_rgb8(a: np.ndarray, mode: str) -> np.ndarray:
    """A greyscale image of more than 8 bits → (H, W, 3) uint8, its full range kept.

    Pillow's convert("RGB") clips such images at 255 instead of scaling them (a 16-bit PNG
    came out 99.6 % white). 16-bit modes ("I;16…", and "I" holding 16-bit values, as 16-bit
    PNGs load) are scaled by 255/65535; float images ("F") in [0, 1] by 255."""
    a = a.astype(np.float64)
    if mode == "F" and np.nanmax(a) <= 1.0:
        a = a * 255.0
    elif mode.startswith("I;16") or np.nanmax(a) > 255:
        a = a * (255.0 / 65535.0)
    g = np.clip(np.rint(np.nan_to_num(a)), 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def _read(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only: the size is known before any pixel is decoded
            check_pixels(im.height, im.width, max_pixels, f"image {path!r}")
            im.load()
            if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit integer or float greyscale
                return _grey_to_rgb8(np.asarray(im), im.mode)
            return np.asarray(im.convert("RGB"), np.uint8)  # grayscale, palette, RGBA, CMYK → RGB
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as e:  # over twice PIL.Image.MAX_IMAGE_PIXELS, refused by Pillow at open
        raise ImageTooLarge(f"image {path!r} refused: {e}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path!r}: {e}") from e


def _sample(name: str) -> np.ndarray:
    import skimage.data

    if name not in SAMPLE_NAMES:
        raise ValueError(f"unknown sample image {name!r}; available: {', '.join(SAMPLE_NAMES)}")
    return as_rgb_uint8(getattr(skimage.data, name)())


def scene_seed(name: str) -> int | None:
    """The scene seed of an image named ``scene_<seed>[.png]`` (a ``scenes:`` set), else None."""
    stem = os.path.splitext(os.path.basename(str(name)))[0]
    if stem.startswith("scene_") and stem[6:].isdigit():
        return int(stem[6:])
    return None


def _scenes(spec: str, size: int, limit: int) -> ImageSet:
    from .datasets import scenes

    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[1] not in scenes.SPLITS:
        raise ValueError(f"bad scene set {spec!r}: use scenes:SPLIT[:N] with SPLIT one of {', '.join(scenes.SPLITS)}")
    try:
        n = int(parts[2]) if len(parts) == 3 else 100
    except ValueError:
        raise ValueError(f"bad scene count in {spec!r}") from None
    if n < 1:
        raise ValueError(f"scene count must be >= 1 in {spec!r}")
    n = min(n, limit) if limit else n
    data = scenes.dataset(parts[1], n, size or 256)
    return ImageSet([ImageItem(f"scene_{it.seed}.png", it.image) for it in data])


def load_images(path=None, size: int = 0, limit: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageSet:
    """Load an image set.

    ``path``: None/"" → scikit-image's sample photos; a folder → every image file in it
    (sorted, extensions in ``IMAGE_EXTENSIONS``); a file; a list of files; or
    ``"sample:astronaut,coffee"``; or ``"scenes:SPLIT[:N]"``, the first N (default 100) scenes of
    a split of the synthetic benchmark (``semcom.datasets.scenes``), named ``scene_<seed>.png``
    and rendered at ``size`` (default 256; rendered, not resized). ``size`` > 0 centre-crops to a square and resizes to
    size×size. ``limit`` > 0 keeps the first ``limit`` images. ``max_pixels``: files of more
    pixels (width × height, native size) are refused from their header without being decoded
    (0: no limit of gr-semcom's own; Pillow's ``MAX_IMAGE_PIXELS`` still applies).

    Grayscale and RGBA images are converted to RGB. Files that cannot be decoded or are over
    ``max_pixels`` are skipped, logged and listed in ``ImageSet.skipped`` (name → reason). A
    missing path, a folder with no image files, or a set in which no image could be read
    raises ValueError.
    """
    if size < 0 or (size and size < 8):
        raise ValueError(f"size must be 0 (keep) or >= 8, got {size}")
    max_pixels = _max_pixels(max_pixels)
    sources: list[tuple[str, object]] = []
    if isinstance(path, str) and path.startswith("scenes:"):
        return _scenes(path, size, limit)
    if path is None or path == "" or (isinstance(path, str) and path.startswith("sample:")):
        names = SAMPLE_NAMES if not path else [n.strip() for n in path[len("sample:"):].split(",") if n.strip()]
        sources = [(n, ("sample", n)) for n in names]
    else:
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        for p in map(os.fspath, paths):
            if os.path.isdir(p):
                files = sorted(f for f in os.listdir(p) if f.lower().endswith(IMAGE_EXTENSIONS))
                if not files:
                    raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {p!r}")
                sources += [(f, ("file", os.path.join(p, f))) for f in files]
            elif os.path.isfile(p):
                sources.append((os.path.basename(p), ("file", p)))
            else:
                raise ValueError(f"image path {p!r} does not exist")
    if limit:
        sources = sources[:limit]
    items, skipped, too_large = [], {}, []
    for name, (kind, ref) in sources:
        try:
            a = _sample(ref) if kind == "sample" else _read(ref, max_pixels)
        except ValueError as e:
            if kind == "sample":
                raise
            log.warning("skipping %s", e)
            skipped[name] = str(e)
            if isinstance(e, ImageTooLarge):
                too_large.append(name)
            continue
        items.append(ImageItem(name, _fit(a, size)))
    if not items:
        raise ValueError(f"no readable images in {path!r} (skipped: {skipped})")
    return ImageSet(items, skipped, too_large)
