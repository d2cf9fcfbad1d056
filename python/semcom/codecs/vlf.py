"""VLF-MSC: one vision-language feature sent as analog symbols, decoded into a caption and an image.

Ahn, Seo, Kang, *VLF-MSC: Vision-Language Feature-Based Multimodal Semantic Communication
System* (arXiv 2511.10074). The transmitter turns an image into one compact vision-language
feature (VLF) of N query embeddings of dimension d and maps it directly onto ⌈N·d/2⌉ complex
symbols (no tokens, no bits). The receiver hands the same noisy feature to two decoders: a
language model that writes a caption from the soft prompt e₀ = W_proj(mean ỹᵢ), and a
VLF-conditioned latent diffusion model that draws the image (no text prompt).

This module is the runtime (ONNX Runtime + numpy, no torch, no GNU Radio). A *backend* is a
models directory whose manifest names the models of the VLF contract (``docs/vlf.md``):
``vlf_enc`` (image → VLF), ``vlf_cap_prefix`` + ``vlf_cap_lm`` (+ a ``tokenizers`` JSON) for
the caption, ``vlf_img_cond`` + ``vlf_unet`` + ``vlf_vae_dec`` for the image. The shipped
embedded tier lives in ``models/``; the reference tier (BLIP-2 + OPT + Stable Diffusion 1.5)
is exported by ``semcom.train.export_vlf_reference`` into a directory of the user's.

Symbol mapping: the VLF (N, d) is flattened row-major and consecutive pairs become one
complex symbol, ``s_k = v[2k] + j·v[2k+1]`` (a zero pads an odd N·d), scaled to unit mean
power; the scale travels in the side information. Channel uses ⌈N·d/2⌉ per image whatever
its size: BCR = N·d / (2·3·H·W) (1/16 for a 256×256 RGB image with N = 32, d = 768).

Receiver: the symbols are unscaled and shrunk by the LMMSE factor 1/(1 + σ²ₖ) with the
receiver's own per-symbol noise variance (``Csi.per_symbol``; lost symbols, σ² = ∞, become
0). The decoders were trained on features with exactly that noise model over −7.5…12.5 dB.

Side information (12 bytes): image height, width (``pack_shape``), N, d (uint16 each) and
the feature's RMS scale (float32).

Status of the latest decode (``last_status``), one of ``STATUSES``:
``ok``; ``truncated`` (fewer symbols than the feature has: the missing part is decoded as
erased, the output is produced but flagged); ``no_symbols``; ``nonfinite_symbols`` (none is
finite); ``below_snr_floor`` (the receiver's SNR estimate is under ``min_snr_db``, nothing
is decoded); ``not_a_feature`` (the received feature does not look like a VLF: its energy in the span
of the encoder's mean feature and principal directions is what noise alone gives; see
``feature_check``).
"""
from __future__ import annotations

import logging
import math
import re
import struct

import numpy as np

from ..runtime import load_model
from ..runtime.manifest import ModelNotFoundError, default_models_dir, load_manifest
from .base import Codec, Csi, Encoded, as_rgb_uint8, pack_shape, unpack_shape
from .diffusion import DdimSampler

__all__ = ["VlfCodec", "STATUSES", "DECODED", "backend_dir", "features_to_symbols", "symbols_to_features", "noisy_feature", "resize_rgb"]

log = logging.getLogger("gr-semcom.codecs.vlf")

ENC, CAP_PREFIX, CAP_LM = "vlf_enc", "vlf_cap_prefix", "vlf_cap_lm"
IMG_COND, UNET, VAE_DEC = "vlf_img_cond", "vlf_unet", "vlf_vae_dec"
STATUSES = ("ok", "truncated", "no_symbols", "nonfinite_symbols", "below_snr_floor", "not_a_feature")
#: statuses that still carry a decoded output
DECODED = ("ok", "truncated")
_SIDE = struct.Struct(">HHf")
SIDE_LEN = 4 + _SIDE.size


def backend_dir(backend="embedded"):
    """A backend name → its models directory: ``"embedded"`` (or "") is the shipped tier
    (``default_models_dir()``), ``"reference:PATH"`` or a bare ``PATH`` a directory the user
    exported (``semcom.train.export_vlf_reference``). ValueError for a missing directory."""
    import pathlib

    b = str(backend or "embedded").strip()
    if b == "embedded":
        return default_models_dir()
    path = pathlib.Path(b.split(":", 1)[1] if b.startswith("reference:") else b).expanduser()
    if not path.is_dir():
        raise ValueError(f"VLF backend {backend!r}: {path} is not a directory (use 'embedded' or "
                         "'reference:PATH' with the directory export_vlf_reference wrote)")
    return path


def resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3) → uint8 (height, width, 3) with PIL's bicubic filter (antialiased)."""
    from PIL import Image

    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def feature_channel_uses(n_queries: int, dim: int) -> int:
    """Complex channel uses of an N × d feature sent two reals per symbol: ⌈N·d/2⌉."""
    return -(-int(n_queries) * int(dim) // 2)


def features_to_symbols(vlf: np.ndarray) -> tuple[np.ndarray, float]:
    """(N, d) feature → (unit-power complex64 symbols ⌈N·d/2⌉, RMS scale per complex symbol)."""
    flat = np.asarray(vlf, np.float32).ravel()
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.float32)])
    sym = (flat[0::2] + 1j * flat[1::2]).astype(np.complex64)
    scale = float(np.sqrt(np.mean(np.abs(sym) ** 2))) if sym.size else 0.0
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError("the feature is all zeros or not finite: nothing to send")
    return (sym / np.float32(scale)).astype(np.complex64), scale


def symbols_to_features(y: np.ndarray, noise_var: np.ndarray, scale: float, n: int, d: int) -> np.ndarray:
    """Received unit-power symbols + per-symbol noise variance → LMMSE feature estimate (n, d):
    ``scale · y/(1+σ²)`` interleaved back into real values (σ² = ∞ gives 0)."""
    shrink = 1.0 / (1.0 + np.asarray(noise_var, np.float64))
    z = (np.asarray(y, np.complex128) * shrink * scale)
    flat = np.empty(2 * z.size, np.float32)
    flat[0::2], flat[1::2] = z.real, z.imag
    return flat[: n * d].reshape(n, d)


def noisy_feature(vlf: np.ndarray, snr_db, rng: np.random.Generator) -> np.ndarray:
    """What the receiver hands the decoders after an AWGN channel at ``snr_db`` (Es/N0 per
    complex symbol) when it knows σ²: ``(v + √P·n)/(1+σ²)``, n ~ N(0, σ²/2) per real value,
    P = the feature's mean complex-symbol power. ``vlf``: (..., N, d); ``snr_db`` scalar or one
    per leading index. The training noise model of the VLF decoders (numpy reference)."""
    v = np.asarray(vlf, np.float64)
    snr = np.asarray(snr_db, np.float64).reshape(np.shape(snr_db) + (1,) * (v.ndim - np.ndim(snr_db)))
    nv = 10.0 ** (-snr / 10.0)
    p = 2.0 * np.mean(v ** 2, axis=(-2, -1), keepdims=True)
    out = (v + np.sqrt(p * nv / 2.0) * rng.standard_normal(v.shape)) / (1.0 + nv)
    return out.astype(np.float32)


class VlfCodec(Codec):
    """VLF-MSC codec over a backend (a models directory; default: the shipped embedded tier).

    ``steps``: DDIM steps of the image decoder (default: the U-Net's manifest ``steps``);
    ``seed``: seed of the diffusion's initial noise (the same frame gives the same image);
    ``min_snr_db``: below this receiver SNR estimate nothing is decoded (status
    ``below_snr_floor``); ``max_new_tokens``: caption length limit (default: the LM's);
    ``check_features``: refuse features that look like noise (``not_a_feature``) when the
    backend ships the encoder's feature statistics. Models load on first use, so a
    transmitter loads only the encoder and each decoder only its own models.
    """

    codec_id = 8
    name = "vlf_msc"
    last_status = ""
    pdu_meta = ("bcr",)  # Encoded.meta keys the encoder block puts in the symbol PDU

    def __init__(self, models_dir=None, providers=None, threads=None, steps=None, seed=0, min_snr_db=-10.0,
                 max_new_tokens=None, check_features=True):
        self.models_dir = default_models_dir() if models_dir is None else models_dir
        self.providers, self.threads = providers, threads
        self._models = {}
        self.manifest = load_manifest(self.models_dir)
        extra = self._entry(ENC).extra
        self.n_queries, self.dim = int(extra["n_queries"]), int(extra["dim"])
        self.image_size = int(extra["image_size"])
        self.tier = str(extra.get("tier", "embedded"))
        self.steps = None if steps is None else int(steps)
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.seed = int(seed)
        self.min_snr_db = float(min_snr_db)
        self.max_new_tokens = None if max_new_tokens is None else int(max_new_tokens)
        self.check_features = bool(check_features)
        self._tokenizer = None
        self._stats = None
        self.last_check = None   # feature_check() result of the latest decode (None: not checked)

    # -- models ---------------------------------------------------------------------------
    def _entry(self, name):
        """The manifest entry of a model of the backend (no session is created)."""
        if name not in self.manifest:
            raise ModelNotFoundError(f"the VLF backend in {self.models_dir} has no model {name!r}")
        return self.manifest.entry(name)

    def _model(self, name):
        m = self._models.get(name)
        if m is None:
            m = self._models[name] = load_model(name, models_dir=self.models_dir, providers=self.providers,
                                                threads=self.threads)
        return m

    @property
    def n_symbols(self) -> int:
        """Complex channel uses per image: ⌈N·d/2⌉."""
        return feature_channel_uses(self.n_queries, self.dim)

    def channel_uses(self, height: int, width: int) -> int:
        """⌈N·d/2⌉ whatever the image size (the encoder resizes to its input size)."""
        if height < 1 or width < 1:
            raise ValueError(f"image size {height}x{width} must be positive")
        return self.n_symbols

    def bcr(self, height: int, width: int) -> float:
        """Bandwidth compression ratio n_ch / (3·H·W) of an RGB image of this size."""
        return self.channel_uses(height, width) / (3.0 * height * width)

    # -- transmitter ----------------------------------------------------------------------
    def features(self, image) -> np.ndarray:
        """RGB image → the VLF (N, d) float32 (the clean transmitted feature)."""
        img = resize_rgb(as_rgb_uint8(image), self.image_size, self.image_size)
        x = np.ascontiguousarray(img.transpose(2, 0, 1)[None], np.float32) / np.float32(255.0)
        v = self._model(ENC).run({"image": x})["vlf"][0]
        if v.shape != (self.n_queries, self.dim):
            raise ValueError(f"the encoder gave a feature of shape {v.shape}, its manifest says "
                             f"({self.n_queries}, {self.dim})")
        return v

    def encode(self, image, ctx: dict | None = None) -> Encoded:
        """RGB image → ⌈N·d/2⌉ unit-power symbols + 12 bytes of side information."""
        img = as_rgb_uint8(image)
        h, w = img.shape[:2]
        sym, scale = features_to_symbols(self.features(img))
        side = pack_shape(h, w) + _SIDE.pack(self.n_queries, self.dim, scale)
        return Encoded(sym, side, {"bcr": self.bcr(h, w), "n_queries": self.n_queries, "dim": self.dim,
                                   "feature_scale": scale})

    # -- receiver -------------------------------------------------------------------------
    def image_shape(self, side_info: bytes) -> tuple[int, int]:
        return unpack_shape(bytes(side_info))

    def parse_side_info(self, side_info: bytes) -> tuple[int, int, float]:
        """Side information → (height, width, feature scale); ValueError when malformed or
        when it announces a feature of another shape than this backend's."""
        side_info = bytes(side_info)
        if len(side_info) != SIDE_LEN:
            raise ValueError(f"VLF side information must be {SIDE_LEN} bytes, got {len(side_info)}")
        h, w = unpack_shape(side_info)
        n, d, scale = _SIDE.unpack_from(side_info, 4)
        if h < 1 or w < 1:
            raise ValueError(f"side information carries an empty image size {h}x{w}")
        if (n, d) != (self.n_queries, self.dim):
            raise ValueError(f"the frame carries a {n}x{d} feature; this backend decodes "
                             f"{self.n_queries}x{self.dim}")
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"side information carries an invalid feature scale {scale!r}")
        return h, w, scale

    def received_feature(self, symbols, side_info: bytes, csi: Csi) -> np.ndarray | None:
        """Received frame → LMMSE feature estimate (N, d), or None with ``last_status`` saying
        why nothing can be decoded. Sets ``last_status`` ("ok" or "truncated" when a feature
        comes back)."""
        _, _, scale = self.parse_side_info(side_info)
        n = self.n_symbols
        y = np.asarray(symbols).ravel().astype(np.complex64)
        self.last_check = None
        if y.size == 0:
            return self._fail("no_symbols", "the payload has no symbols")
        finite = np.isfinite(y)
        if not finite.any():
            return self._fail("nonfinite_symbols", f"none of the {y.size} received symbols is finite")
        snr = float(csi.snr_db)
        if not math.isfinite(snr):
            raise ValueError(f"csi.snr_db must be finite, got {snr!r}")
        if snr < self.min_snr_db:
            return self._fail("below_snr_floor", f"receiver SNR estimate {snr:.1f} dB is under the "
                              f"decoder's floor {self.min_snr_db:.1f} dB")
        nv = csi.per_symbol(y.size).astype(np.float64)
        if not finite.all():
            log.warning("vlf: %d non-finite received symbols decoded as erased", int((~finite).sum()))
        status = "ok"
        if y.size != n:
            log.warning("vlf: got %d symbols, the feature has %d; %s", y.size, n,
                        "decoding the missing ones as erased" if y.size < n else "dropping the extra ones")
            if y.size < n:
                status = "truncated"
            keep = min(y.size, n)
            y = np.concatenate([y[:keep], np.zeros(n - keep, np.complex64)])
            finite = np.concatenate([finite[:keep], np.zeros(n - keep, bool)])
            nv = np.concatenate([nv[:keep], np.full(n - keep, np.inf)])
        if not finite.all():
            y = np.where(finite, y, 0)
            nv = np.where(finite, nv, np.inf)
        v = symbols_to_features(y, nv, scale, self.n_queries, self.dim)
        if self.check_features:
            self.last_check = self.feature_check(v, float(np.mean(np.minimum(nv, 1e6))))
            if self.last_check is not None and not self.last_check["is_feature"]:
                return self._fail("not_a_feature", "the received feature looks like noise (energy share in "
                                  f"the encoder's feature subspace {self.last_check['fraction']:.4f}, noise alone "
                                  f"gives {self.last_check['noise_only']:.4f})")
        self.last_status = status
        return v

    def _fail(self, status, why):
        log.warning("vlf: %s; nothing decoded", why)
        self.last_status = status
        return None

    # -- feature plausibility -------------------------------------------------------------
    def _feature_stats(self):
        """(orthonormal basis (N·d, k+1) of the mean feature μ and the top-k principal directions,
        share g of a feature's energy in their span) from the file the encoder's manifest entry
        names in ``extra["feature_stats"]`` (``semcom.train.vlf_stats``); None when the backend
        has none. g = (1 − r) + r·f with f the mean share of the energy of v − μ in the principal
        directions and r the mean share of the energy of v that is not μ."""
        if self._stats is None:
            name = self._entry(ENC).extra.get("feature_stats")
            self._stats = False
            if name:
                import pathlib

                with np.load(pathlib.Path(self.models_dir) / name) as z:
                    mean, basis = z["mean"].astype(np.float64), z["basis"].astype(np.float64)
                    f = float(z["signal_fraction"])
                    r = float(z["centred_fraction"]) if "centred_fraction" in z else 1.0
                q, _ = np.linalg.qr(np.concatenate([mean[:, None], basis], axis=1))
                self._stats = (q.astype(np.float32), (1.0 - r) + r * f)
        return self._stats or None

    def feature_check(self, v: np.ndarray, noise_var: float) -> dict | None:
        """Does a received feature look like a VLF? The share of its energy in the span of the
        encoder's mean feature and top-k principal directions (computed on training images) is
        compared with what a feature at the receiver's noise level gives, (g + σ²·K/D)/(1 + σ²),
        and with what noise alone gives, K/D (K = k + 1 directions, D = N·d); the threshold is
        their geometric mean. The LMMSE shrink scales both alike. None when the backend has no
        statistics."""
        stats = self._feature_stats()
        if stats is None:
            return None
        basis, g = stats
        x = v.ravel().astype(np.float32)
        e = float(x @ x)
        k_over_d = basis.shape[1] / basis.shape[0]
        expected = (g + noise_var * k_over_d) / (1.0 + noise_var)
        threshold = math.sqrt(max(expected, 1e-12) * k_over_d)
        frac = float(np.sum((x @ basis) ** 2) / e) if e > 0 else 0.0
        return {"fraction": frac, "expected": expected, "noise_only": k_over_d, "threshold": threshold,
                "is_feature": frac > threshold}

    # -- caption decoder ------------------------------------------------------------------
    def tokenizer(self):
        if self._tokenizer is None:
            import pathlib

            from tokenizers import Tokenizer

            name = self._entry(CAP_LM).extra["tokenizer"]
            self._tokenizer = Tokenizer.from_file(str(pathlib.Path(self.models_dir) / name))
        return self._tokenizer

    def caption_from_feature(self, v: np.ndarray) -> str:
        """Greedy decoding of the LM from the soft prompt W_proj(mean ỹ) of a feature (N, d)."""
        lm = self._model(CAP_LM)
        extra = lm.entry.extra
        prefix = self._model(CAP_PREFIX).run({"vlf": np.ascontiguousarray(v[None], np.float32)})["prefix_embeds"]
        bos, eos = int(extra["bos_id"]), int(extra["eos_id"])
        limit = self.max_new_tokens or int(extra.get("max_new_tokens", 32))
        ids = [bos]
        for _ in range(limit):
            logits = lm.run({"prefix_embeds": prefix, "input_ids": np.asarray([ids], np.int64)})["logits"]
            nxt = int(np.argmax(logits[0, -1]))
            if nxt == eos:
                break
            ids.append(nxt)
        return _tidy(self.tokenizer().decode(ids[1:], skip_special_tokens=True))

    def decode_caption(self, symbols, side_info: bytes, csi: Csi) -> str | None:
        """Received frame → caption, or None (``last_status`` says why)."""
        v = self.received_feature(symbols, side_info, csi)
        return None if v is None else self.caption_from_feature(v)

    def caption(self, image) -> str:
        """The caption of an image from its clean feature (what a transmitter-side captioner
        gives: the text baselines send it)."""
        return self.caption_from_feature(self.features(image))

    # -- image decoder --------------------------------------------------------------------
    def image_from_feature(self, v: np.ndarray, height: int | None = None, width: int | None = None,
                           progress=None) -> np.ndarray:
        """VLF-conditioned latent diffusion: context = W(ỹ), DDIM from seeded noise, VAE decode;
        uint8 (height, width, 3) (the model's own size when not given)."""
        context = self._model(IMG_COND).run({"vlf": np.ascontiguousarray(v[None], np.float32)})["context"]
        unet = self._model(UNET)
        extra = unet.entry.extra
        sampler = DdimSampler(extra["scheduler"])
        steps = self.steps or int(extra.get("steps", 50))
        shape = (1, *(int(s) for s in extra["latent_shape"]))
        z = sampler.sample(unet_function(unet, context), shape, steps, np.random.default_rng(self.seed),
                           progress=progress)
        return latent_image(self._model(VAE_DEC), z, height, width)

    def decode_image(self, symbols, side_info: bytes, csi: Csi, progress=None) -> np.ndarray | None:
        """Received frame → uint8 image at the announced size, or None (``last_status``)."""
        h, w, _ = self.parse_side_info(side_info)
        v = self.received_feature(symbols, side_info, csi)
        return None if v is None else self.image_from_feature(v, h, w, progress=progress)

    def decode(self, symbols, side_info: bytes, csi: Csi) -> np.ndarray | None:
        """The ``Codec`` contract: the image decoder."""
        return self.decode_image(symbols, side_info, csi)


def unet_function(unet, context):
    """An ONNX U-Net of the VLF contract as the ``model(x_t, t)`` that ``DdimSampler`` calls."""
    def model(x, t):
        return unet.run({"latent": x, "timestep": np.asarray([t], np.int64), "context": context})["noise_pred"]

    return model


def latent_image(vae_dec, z, height=None, width=None) -> np.ndarray:
    """Diffusion-space latent → uint8 image through the ONNX VAE decoder, resized to
    (height, width) when given."""
    img = vae_dec.run({"latent": z})["image"][0]
    out = np.clip(np.rint(img.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
    return out if height is None or width is None else resize_rgb(out, int(height), int(width))


_SPACE_BEFORE = re.compile(r"\s+([:,.;!?])")


def _tidy(text: str) -> str:
    """Word-level tokenizers decode with a space before punctuation; remove it."""
    return _SPACE_BEFORE.sub(r"\1", " ".join(text.split()))
