"""CLIPSeg reference segmenter: (image, phrase) → importance heatmap, run with ONNX Runtime.

Export (needs torch, transformers, onnx, onnxscript; never downloads anything)::

    python -m semcom.guidance.clipseg export --model /path/to/clipseg-rd64-refined --out models

Inference (:class:`ClipSegSegmenter`) needs onnxruntime, numpy, Pillow and ``tokenizers`` only::

    seg = ClipSegSegmenter("models")
    heat = seg.heatmap(rgb_uint8, "the red car")      # float32 (H, W) in [0, 1]

Graph contract (also in the manifest entry):

- inputs: ``pixel_values`` float32 [1, 3, S, S] (RGB resized to S×S, scaled to [0, 1], then
  CLIP-normalised per channel), ``input_ids`` int64 [1, "T"] (BOS … EOS, T ≤ the text
  model's position count, 77 for CLIP), ``attention_mask`` int64 [1, "T"] (ones);
- output: ``logits`` float32 [1, S, S] (pre-sigmoid; ``sigmoid(logits)`` is the probability
  that a pixel shows the phrase).

``manifest.json`` ``extra`` holds the preprocessing facts (size, mean, std, resample,
rescale factor), the tokenizer file (``<name>.tokenizer.json``, saved next to the ONNX and
checked against its SHA-256 on load) and the measured ONNX Runtime vs torch difference.
See docs/guidance_reference.md.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pathlib
import sys
import tempfile
import warnings

import numpy as np

from ..codecs.base import as_rgb_uint8
from ..runtime import (ModelIntegrityError, ModelNotFoundError, default_models_dir, load_model, sha256_file)
from .base import GuidanceError, Segmenter

__all__ = ["ClipSegSegmenter", "export_clipseg", "CLIP_MEAN", "CLIP_STD", "TOLERANCE"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_IMAGE_SIZE = 352          # CIDAS/clipseg-rd64-refined's processor size
TOLERANCE = 1e-2                  # max |ORT - torch| on the logits accepted at export (≤ 0.0025 on the map)
TASK = "text-conditioned-segmentation"
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}  # PIL codes


# -- inference ---------------------------------------------------------------------------

class ClipSegSegmenter(Segmenter):
    """CLIPSeg from a models directory (see :func:`export_clipseg`), as a :class:`Segmenter`.

    ``tokenizer``: None (the tokenizer file registered with the model, verified against its
    SHA-256), a path to a ``tokenizers`` JSON file, an object with ``encode(text)`` returning
    ids or an Encoding with ``.ids`` (a ``tokenizers.Tokenizer``, a transformers tokenizer),
    or a callable ``text -> sequence of int`` (ids including BOS/EOS). Loading checks the
    model's checksum (``ModelIntegrityError`` / ``ModelNotFoundError`` from
    ``semcom.runtime``); :meth:`heatmap` raises :class:`GuidanceError` when it cannot answer.
    """

    name = "clipseg"

    def __init__(self, models_dir=None, name: str = "clipseg", tokenizer=None, providers=None, threads=None):
        self.models_dir = pathlib.Path(models_dir) if models_dir is not None else default_models_dir()
        self.model = load_model(name, self.models_dir, providers=providers, threads=threads)
        extra = self.model.entry.extra
        try:
            self.image_size = int(extra["image_size"])
            self.mean = np.asarray(extra.get("image_mean", CLIP_MEAN), np.float32).reshape(3, 1, 1)
            self.std = np.asarray(extra.get("image_std", CLIP_STD), np.float32).reshape(3, 1, 1)
            self.rescale = float(extra.get("rescale_factor", 1 / 255))
            self.resample = str(extra.get("resample", "bilinear"))
            self.max_tokens = int(extra.get("max_text_tokens", 77))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"model {name!r}: manifest extra lacks CLIPSeg preprocessing facts ({e!r}); "
                             "re-export with export_clipseg") from None
        self._encode = self._make_tokenizer(tokenizer, extra)

    # tokenizer ------------------------------------------------------------------------
    def _make_tokenizer(self, tokenizer, extra):
        if tokenizer is None:
            tok = extra.get("tokenizer")
            if not isinstance(tok, dict) or "file" not in tok:
                raise ValueError(f"model {self.model.entry.name!r} has no registered tokenizer file; "
                                 "pass tokenizer=")
            path = self.models_dir / tok["file"]
            if not path.is_file():
                raise ModelNotFoundError(f"tokenizer file of model {self.model.entry.name!r} missing: {path}")
            if tok.get("sha256") and sha256_file(path) != str(tok["sha256"]).lower():
                raise ModelIntegrityError(f"tokenizer file {path} does not match its manifest SHA-256")
            tokenizer = path
        if isinstance(tokenizer, (str, os.PathLike)):
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(tokenizer))
            tokenizer.no_padding()
            tokenizer.no_truncation()
        if hasattr(tokenizer, "encode"):
            def encode(text, _t=tokenizer):
                out = _t.encode(text)
                return getattr(out, "ids", out)
            return encode
        if callable(tokenizer):
            return tokenizer
        raise TypeError(f"tokenizer must be None, a path, an object with encode() or a callable, got {tokenizer!r}")

    def tokenize(self, phrase: str) -> np.ndarray:
        """Token ids (int64, shape (1, T)) of ``phrase``, truncated to the model's limit (EOS kept)."""
        if not isinstance(phrase, str) or not phrase.strip():
            raise GuidanceError("clipseg: empty target phrase")
        try:
            ids = [int(i) for i in self._encode(phrase.strip())]
        except Exception as e:  # a tokenizer is third-party code: report, don't crash the link
            raise GuidanceError(f"clipseg: tokenizer failed on {phrase!r}: {e}") from None
        if len(ids) < 2:
            raise GuidanceError(f"clipseg: tokenizer gave {len(ids)} token(s) for {phrase!r}")
        if len(ids) > self.max_tokens:
            ids = ids[:self.max_tokens - 1] + ids[-1:]
        return np.asarray(ids, np.int64).reshape(1, -1)

    # image ----------------------------------------------------------------------------
    def preprocess(self, image) -> np.ndarray:
        """RGB image → ``pixel_values`` float32 (1, 3, S, S)."""
        from PIL import Image

        rgb = as_rgb_uint8(image)
        s = self.image_size
        pil = Image.fromarray(rgb)
        if pil.size != (s, s):
            pil = pil.resize((s, s), _pil_filter(self.resample))
        x = np.asarray(pil, np.float32).transpose(2, 0, 1) * np.float32(self.rescale)
        return ((x - self.mean) / self.std)[None].astype(np.float32)

    def logits(self, image, phrase: str) -> np.ndarray:
        """The model's logits, float32 (S, S)."""
        ids = self.tokenize(phrase)
        try:
            pixels = self.preprocess(image)
        except ValueError as e:
            raise GuidanceError(f"clipseg: bad image: {e}") from None
        try:
            out = self.model.run({"pixel_values": pixels, "input_ids": ids,
                                  "attention_mask": np.ones_like(ids)})["logits"]
        except Exception as e:  # onnxruntime raises its own exception types
            raise GuidanceError(f"clipseg: inference failed: {e}") from None
        out = np.asarray(out, np.float32)
        return out.reshape(out.shape[-2:])

    def heatmap(self, image, phrase: str) -> np.ndarray:
        """float32 (H, W) in [0, 1]: sigmoid of the logits, resized (bilinear) to the image."""
        from PIL import Image

        z = self.logits(image, phrase)
        prob = (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)  # sigmoid without overflow
        h, w = np.asarray(image).shape[:2]
        if prob.shape != (h, w):
            prob = np.asarray(Image.fromarray(prob).resize((w, h), Image.Resampling.BILINEAR), np.float32)
        return np.clip(prob, 0.0, 1.0).astype(np.float32)

    def __repr__(self):
        return f"ClipSegSegmenter({self.model.entry.name!r}, size={self.image_size}, models_dir={str(self.models_dir)!r})"


def _pil_filter(name):
    from PIL import Image

    try:
        return getattr(Image.Resampling, str(name).upper())
    except AttributeError:
        raise ValueError(f"unknown resample filter {name!r}") from None


# -- export (torch) -------------------------------------------------------------------------

def _load_source(source, image_size, tokenizer, seed):
    """(model, image size, preprocessing extra, tokenizers.Tokenizer or None, provenance text)."""
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    pre = {"image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "rescale_factor": 1 / 255,
           "resample": "bilinear"}
    if isinstance(source, CLIPSegConfig):
        torch.manual_seed(seed)
        model = CLIPSegForImageSegmentation(source)
        size = int(image_size or source.vision_config.image_size)
        origin = f"randomly initialised CLIPSegConfig (torch seed {seed})"
    elif isinstance(source, (str, os.PathLike)):
        src = pathlib.Path(source)
        if not (src / "config.json").is_file():
            raise FileNotFoundError(f"{src}: not a CLIPSeg checkpoint directory (no config.json)")
        model = CLIPSegForImageSegmentation.from_pretrained(str(src), local_files_only=True, dtype=torch.float32)
        size = image_size
        proc = src / "preprocessor_config.json"
        if proc.is_file():
            p = json.loads(proc.read_text())
            s = p.get("size")
            if size is None and s is not None:
                size = s if isinstance(s, int) else s.get("height", s.get("shortest_edge"))
            for k in ("image_mean", "image_std", "rescale_factor"):
                if k in p:
                    pre[k] = p[k]
            if "resample" in p:
                pre["resample"] = _RESAMPLE.get(p["resample"], "bilinear")
        size = int(size or DEFAULT_IMAGE_SIZE)
        if tokenizer is None:
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
            tokenizer = getattr(hf, "backend_tokenizer", None) or getattr(hf, "_tokenizer", None)
            if tokenizer is None:
                raise ValueError(f"{src}: no fast (tokenizers) tokenizer could be built from the checkpoint")
        origin = f"checkpoint directory {src.resolve().name}"
    else:
        raise TypeError(f"source must be a checkpoint directory or a transformers.CLIPSegConfig, got {type(source)}")
    if isinstance(tokenizer, (str, os.PathLike)):
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer))
    patch = model.config.vision_config.patch_size
    if size % patch:
        raise ValueError(f"image_size {size} must be a multiple of the patch size {patch}")
    return model.eval(), size, pre, tokenizer, origin


def _wrap(model):
    """A module taking positional (pixel_values, input_ids, attention_mask) → logits, for the exporter."""
    import torch

    class ClipSegLogits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values, input_ids, attention_mask):
            return self.m(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                          return_dict=True).logits

    return ClipSegLogits(model).eval()


def _check_ort(wrapped, path, size, vocab, max_tokens, eos_id, bos_id, seed=0) -> float:
    """Largest |ORT − torch| on the logits over two images and two text lengths."""
    import onnxruntime as ort
    import torch

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    lo = min(v for v in range(vocab) if v not in (bos_id, eos_id))
    hi = max(v for v in range(vocab) if v not in (bos_id, eos_id)) + 1
    for t in (3, min(max_tokens, 9)):
        x = torch.randn(1, 3, size, size, generator=g)
        body = torch.randint(lo, hi, (1, t - 2), generator=g)
        body[body == eos_id] = lo
        ids = torch.cat([torch.tensor([[bos_id]]), body, torch.tensor([[eos_id]])], 1)
        am = torch.ones_like(ids)
        with torch.no_grad():
            ref = wrapped(x, ids, am).numpy()
        got = sess.run(["logits"], {"pixel_values": x.numpy(), "input_ids": ids.numpy(),
                                    "attention_mask": am.numpy()})[0]
        if got.shape != ref.shape:
            raise RuntimeError(f"ONNX logits shape {got.shape} != torch {ref.shape}")
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's known-harmless chatter (torchvision ops absent, pytree deprecation,
    the dynamic axis name reuse note); real errors still raise."""
    log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used", category=UserWarning)
            yield
    finally:
        log.setLevel(level)


def export_clipseg(source, out_dir, name: str = "clipseg", image_size: int | None = None, opset: int = 18,
                   tokenizer=None, tolerance: float = TOLERANCE, seed: int = 0):
    """Export ``CLIPSegForImageSegmentation`` to ``<out_dir>/<name>.onnx`` and register it.

    ``source``: a local checkpoint directory (CIDAS/clipseg-rd64-refined layout: config,
    weights, tokenizer and preprocessor files; loaded with ``local_files_only``) or a
    ``transformers.CLIPSegConfig`` (random weights from ``torch.manual_seed(seed)``; for tests).
    ``image_size``: the square input size S (default: the checkpoint's processor size, 352 for
    CIDAS; for a config, its vision ``image_size``); a multiple of the patch size.
    ``tokenizer``: a ``tokenizers.Tokenizer`` or a path to its JSON (default: built from the
    checkpoint directory; none for a bare config). It is saved as ``<name>.tokenizer.json``
    in ``out_dir`` and recorded, with its SHA-256, in the entry's ``extra``.

    ONNX Runtime is checked against torch (two images, two text lengths); above ``tolerance``
    (max abs difference of the logits) nothing is registered and RuntimeError is raised.
    Returns the registered ``ModelEntry`` (``extra["ort_max_abs_diff"]`` holds the measure).
    """
    import torch

    from ..runtime import register_model

    out_dir = pathlib.Path(out_dir)
    model, size, pre, tok, origin = _load_source(source, image_size, tokenizer, seed)
    tcfg = model.config.text_config
    max_tokens = int(tcfg.max_position_embeddings)
    vocab = int(tcfg.vocab_size)
    bos_id = int(tcfg.bos_token_id) if tcfg.bos_token_id is not None else 0
    eos_id = int(tcfg.eos_token_id) if tcfg.eos_token_id is not None else vocab - 1
    if eos_id == 2:  # configs older than transformers PR #24773: pooling takes the largest id as EOS
        eos_id = vocab - 1
    wrapped = _wrap(model)
    x = torch.zeros(1, 3, size, size)
    filler = next(v for v in range(vocab) if v not in (bos_id, eos_id))
    ids = torch.tensor([[bos_id, filler, filler, filler, eos_id]])
    T = torch.export.Dim("T", min=2, max=max_tokens)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{name}-export-") as tmp:
        tmp = pathlib.Path(tmp)
        onnx_tmp = tmp / f"{name}.onnx"
        with torch.no_grad(), _quiet_exporter():
            torch.onnx.export(wrapped, (x, ids, torch.ones_like(ids)), str(onnx_tmp), dynamo=True,
                              external_data=False, opset_version=opset,
                              input_names=["pixel_values", "input_ids", "attention_mask"], output_names=["logits"],
                              dynamic_shapes=(None, {1: T}, {1: T}), verbose=False)
        err = _check_ort(wrapped, onnx_tmp, size, vocab, max_tokens, eos_id, bos_id, seed)
        if not err <= tolerance:
            raise RuntimeError(f"ONNX Runtime differs from torch by {err:.2e} (> {tolerance:g}); {name} not registered")
        extra = {"image_size": size, **pre, "max_text_tokens": max_tokens, "output": "logits [1, S, S], pre-sigmoid; heatmap = sigmoid(logits) "
                                                  "resized to the image",
                 "ort_max_abs_diff": err, "opset": opset, "source": origin}
        if tok is not None:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(tok.to_str())  # a copy: the caller's tokenizer is left as it was
            tok.no_padding()   # one phrase per call: no pad tokens, all-ones attention mask
            tok.no_truncation()  # the segmenter truncates to max_text_tokens itself, keeping EOS
            tok_file = f"{name}.tokenizer.json"
            tok_tmp = tmp / tok_file
            tok.save(str(tok_tmp))
            os.replace(tok_tmp, out_dir / tok_file)
            extra["tokenizer"] = {"file": tok_file, "sha256": sha256_file(out_dir / tok_file),
                                  "size_bytes": (out_dir / tok_file).stat().st_size}
        f32, i64 = "float32", "int64"
        entry = {
            "name": name, "file": f"{name}.onnx", "task": TASK,
            "inputs": [{"name": "pixel_values", "shape": [1, 3, size, size], "dtype": f32},
                       {"name": "input_ids", "shape": [1, "T"], "dtype": i64},
                       {"name": "attention_mask", "shape": [1, "T"], "dtype": i64}],
            "outputs": [{"name": "logits", "shape": [1, size, size], "dtype": f32}],
            "channel_uses": None,
            "training": {"data": f"CLIPSeg weights from {origin}",
                         "command": f"python -m semcom.guidance.clipseg export --model <dir> --out {out_dir}",
                         "notes": "inference-only export of CLIPSegForImageSegmentation (no training here); "
                                  "see docs/guidance_reference.md"},
            "extra": extra,
        }
        return register_model(out_dir, entry, onnx_tmp)


# -- command line ---------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m semcom.guidance.clipseg", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="export a local CLIPSeg checkpoint to ONNX and register it")
    ex.add_argument("--model", required=True, help="local checkpoint directory (e.g. clipseg-rd64-refined)")
    ex.add_argument("--out", default="models", help="models directory holding manifest.json")
    ex.add_argument("--name", default="clipseg")
    ex.add_argument("--image-size", type=int, default=None, help="square input size (default: the checkpoint's)")
    ex.add_argument("--opset", type=int, default=18)
    ex.add_argument("--tolerance", type=float, default=TOLERANCE, help="max |ORT - torch| on the logits")
    sg = sub.add_parser("segment", help="heatmap of one image for one phrase")
    sg.add_argument("--models", default=None, help="models directory (default: the runtime's)")
    sg.add_argument("--name", default="clipseg")
    sg.add_argument("--image", required=True)
    sg.add_argument("--phrase", required=True)
    sg.add_argument("--save", default=None, help="write the heatmap as an 8-bit grayscale PNG")
    args = ap.parse_args(argv)

    if args.cmd == "export":
        entry = export_clipseg(args.model, args.out, name=args.name, image_size=args.image_size, opset=args.opset,
                               tolerance=args.tolerance)
        print(f"{entry.file}: {entry.size_bytes / 1e6:.1f} MB, input {entry.extra['image_size']}², "
              f"max |ORT - torch| = {entry.extra['ort_max_abs_diff']:.2e}; registered in {args.out}/manifest.json")
        return 0
    from PIL import Image

    seg = ClipSegSegmenter(args.models, name=args.name)
    img = np.asarray(Image.open(args.image).convert("RGB"))
    try:
        heat = seg.heatmap(img, args.phrase)
    except GuidanceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.image}: {heat.shape[1]}x{heat.shape[0]}, heatmap min {heat.min():.3f} "
          f"mean {heat.mean():.3f} max {heat.max():.3f}")
    if args.save:
        Image.fromarray(np.rint(heat * 255).astype(np.uint8)).save(args.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
