"""Img2Img-SC baseline (Cicchetti et al. 2024): a caption + a compact image latent, redrawn by diffusion.

The VLF-MSC paper's image baseline. The transmitter sends the image's caption digitally
(7-bit ASCII + Hamming(7,4) + 16-QAM, ``text_baselines.AsciiHammingCodec``, hard decisions)
and the autoencoder latent of the image (``vlf_vae_enc``: 4×16×16 for the embedded tier)
as analog symbols, in one frame. The receiver decodes the caption, conditions the latent
diffusion U-Net on it (``img2img_text_cond`` → cross-attention context) and starts the
reverse process from the received latent itself: a latent received with noise variance v
(the receiver's own estimate, in latent units) is a diffusion state at the timestep whose
noise-to-signal ratio (1 − ᾱ_t)/ᾱ_t equals v (``DdimSampler.timestep_for_noise``), so the
diffusion removes the channel noise and the caption steers what it cannot recover. The same
U-Net and VAE decoder serve VLF-MSC's image branch (one model, two conditionings).

Symbols: [caption symbols | latent symbols], each part at unit mean power (the latent part
scaled, its scale in the side information). Side information (12 bytes): image height,
width, number of caption characters (uint16), latent symbols (uint16), latent scale
(float32). ``last_caption`` is the caption the receiver decoded; ``last_status`` "ok" or,
when something failed, the caption codec's status and/or "no_symbols"/"nonfinite_symbols".
"""
from __future__ import annotations

import logging
import math
import pathlib
import struct

import numpy as np

from ..runtime import load_model
from ..runtime.manifest import default_models_dir, load_manifest
from .base import Codec, Csi, Encoded, as_rgb_uint8, pack_shape, unpack_shape
from .diffusion import DdimSampler
from .text_baselines import AsciiHammingCodec, ascii_channel_uses
from .vlf import features_to_symbols, latent_image, resize_rgb, unet_function

__all__ = ["Img2ImgScCodec"]

log = logging.getLogger("gr-semcom.codecs.img2img_sc")

VAE_ENC, TEXT_COND, UNET, VAE_DEC = "vlf_vae_enc", "img2img_text_cond", "vlf_unet", "vlf_vae_dec"
_SIDE = struct.Struct(">HHf")
SIDE_LEN = 4 + _SIDE.size


class Img2ImgScCodec(Codec):
    """Img2Img-SC over a VLF backend with an image-latent encoder and a caption conditioning."""

    codec_id = 9
    name = "img2img_sc"
    last_status = ""
    last_caption = ""

    def __init__(self, models_dir=None, providers=None, threads=None, steps=None, seed=0):
        self.models_dir = pathlib.Path(default_models_dir() if models_dir is None else models_dir)
        self.manifest = load_manifest(self.models_dir)
        self.providers, self.threads = providers, threads
        self._models = {}
        self.text = AsciiHammingCodec()
        self.steps = None if steps is None else int(steps)
        self.seed = int(seed)
        enc = self._model(VAE_ENC)
        shape = enc.entry.inputs[0].shape
        self.image_size = int(shape[-1])
        self.latent_shape = tuple(int(s) for s in enc.entry.outputs[0].shape[1:])
        self._tokenizer = None

    def _model(self, name):
        if name not in self._models:
            self._models[name] = load_model(name, models_dir=self.models_dir, providers=self.providers,
                                            threads=self.threads)
        return self._models[name]

    @property
    def latent_symbols(self) -> int:
        return -(-int(np.prod(self.latent_shape)) // 2)

    def channel_uses(self, height: int, width: int, n_chars: int = 0) -> int:
        """Latent symbols + caption symbols (⌈7·⌈7n/4⌉/4⌉ for n characters)."""
        return self.latent_symbols + ascii_channel_uses(n_chars)

    def image_shape(self, side_info: bytes) -> tuple[int, int]:
        return unpack_shape(bytes(side_info))

    # -- TX ---------------------------------------------------------------------------------
    def encode(self, image, ctx: dict | None = None, caption: str | None = None) -> Encoded:
        """Image + its caption (``caption``, or ``ctx["caption"]``) → one frame of symbols."""
        caption = caption if caption is not None else (ctx or {}).get("caption")
        if not isinstance(caption, str):
            raise ValueError("Img2Img-SC sends the image's caption: give caption=… (the transmitter's captioner)")
        img = as_rgb_uint8(image)
        h, w = img.shape[:2]
        x = resize_rgb(img, self.image_size, self.image_size)
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32) / np.float32(255.0)
        z = self._model(VAE_ENC).run({"image": x})["latent"][0]
        zsym, scale = features_to_symbols(z.reshape(1, -1))
        t = self.text.encode(caption)
        side = pack_shape(h, w) + _SIDE.pack(len(caption), zsym.size, scale)
        return Encoded(np.concatenate([t.symbols, zsym]).astype(np.complex64), side,
                       {"caption": caption, "caption_symbols": int(t.symbols.size), "latent_symbols": int(zsym.size)})

    # -- RX ---------------------------------------------------------------------------------
    def parse_side_info(self, side_info: bytes):
        side_info = bytes(side_info)
        if len(side_info) != SIDE_LEN:
            raise ValueError(f"Img2Img-SC side information must be {SIDE_LEN} bytes, got {len(side_info)}")
        h, w = unpack_shape(side_info)
        n_chars, n_lat, scale = _SIDE.unpack_from(side_info, 4)
        if h < 1 or w < 1 or n_lat != self.latent_symbols or not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"Img2Img-SC side information does not fit this model (image {h}x{w}, "
                             f"{n_lat} latent symbols, scale {scale!r})")
        return h, w, n_chars, scale

    def _ids(self, caption: str) -> np.ndarray:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            extra = self.manifest.entry(TEXT_COND).extra
            name = extra.get("tokenizer") or self.manifest.entry("vlf_cap_lm").extra["tokenizer"]
            self._tokenizer = Tokenizer.from_file(str(self.models_dir / name))
        tok = self._tokenizer
        ids = tok.encode(caption.lower()).ids
        return np.asarray([[tok.token_to_id("[BOS]")] + ids + [tok.token_to_id("[EOS]")]], np.int64)

    def decode(self, symbols, side_info: bytes, csi: Csi) -> np.ndarray | None:
        """Received frame → uint8 image at the announced size; None when the latent part holds no
        finite symbol (``last_status``). ``last_caption``: the received caption."""
        h, w, n_chars, scale = self.parse_side_info(side_info)
        n_text = ascii_channel_uses(n_chars)
        y = np.asarray(symbols).ravel().astype(np.complex64)
        nv = csi.per_symbol(y.size).astype(np.float64)
        self.last_caption = self.text.decode(y[:n_text], side_info[4:6], csi)
        status = [] if self.text.last_status == "ok" else [f"caption_{self.text.last_status}"]
        yl = y[n_text:n_text + self.latent_symbols]
        nvl = nv[n_text:n_text + self.latent_symbols]
        if yl.size == 0 or not np.isfinite(yl).any():
            self.last_status = "+".join(status + ["no_symbols" if yl.size == 0 else "nonfinite_symbols"])
            return None
        good = np.isfinite(yl)
        if yl.size < self.latent_symbols or not good.all():
            status.append("truncated" if yl.size < self.latent_symbols else "erasures")
        zc = np.zeros(self.latent_symbols, np.complex64)
        zc[:yl.size] = np.where(good, yl, 0)
        flat = np.empty(2 * zc.size, np.float32)
        flat[0::2], flat[1::2] = zc.real * scale, zc.imag * scale
        n_lat = int(np.prod(self.latent_shape))
        z = flat[:n_lat].reshape(1, *self.latent_shape)
        # noise variance per real latent value, in latent units (the latent has unit variance)
        lat_var = float(np.mean(z ** 2)) or 1.0
        noise = float(np.mean(nvl[good])) * scale ** 2 / 2.0 if good.any() else 1.0
        unet = self._model(UNET)
        sampler = DdimSampler(unet.entry.extra["scheduler"])
        steps = self.steps or int(unet.entry.extra.get("steps", 50))
        t = sampler.timestep_for_noise(noise / max(lat_var - noise, 1e-3 * lat_var))
        context = self._model(TEXT_COND).run({"input_ids": self._ids(self.last_caption)})["context"]

        a = float(sampler.alphas_cumprod[t])
        z0 = sampler.run_from(unet_function(unet, context), (math.sqrt(a) * z).astype(np.float32), t, steps)
        self.last_status = "+".join(status) or "ok"
        return latent_image(self._model(VAE_DEC), z0, h, w)
