"""VLF-MSC blocks: one vision-language feature over the air, a caption and an image from it.

``vlf_encoder`` (image PDU → symbol PDU for ``ofdm_tx``), ``vlf_caption_decoder`` and
``vlf_image_decoder`` (``ofdm_rx`` PDU → caption PDU / image PDU). Connect ``ofdm_rx``'s
``out`` to both decoders: one received frame feeds both. The models (``semcom.codecs.vlf``,
ONNX Runtime) run in the blocks' message handlers, i.e. in each block's own thread, never
in ``work()``: while the diffusion model draws an image, the receiver and the caption
decoder go on (frames wait in the image decoder's message queue and are decoded in order).

Caption PDU: metadata ``seq``, ``image_id`` (when the frame had one), ``codec``
("vlf_msc"), ``status`` (``semcom.codecs.vlf.STATUSES``, or "error"), ``snr_est_db``,
``caption`` (str, "" when nothing was decoded), ``latency_s`` + u8vector of the caption's
UTF-8 bytes. Image PDU: the ``semantic_decoder`` format (metadata ``seq``, ``codec``,
``status``, ``snr_est_db``, ``height``, ``width``, ``latency_s``; u8vector of RGB pixels,
empty when nothing was decoded), so ``image_sink`` and ``qt_image_view`` take it.
"""
from __future__ import annotations

import time

import numpy as np
import pmt
from gnuradio import gr

from .. import codecs as _codecs
from ..codecs.vlf import DECODED, VlfCodec, backend_dir
from ..images import DEFAULT_MAX_PIXELS
from ._guard import MessageGuard, message_handler, meta_int, reject
from ._history import DEFAULT_HISTORY, history_buffer
from .image import image_pdu, refuse_oversized, rx_frame, semantic_encoder

__all__ = ["vlf_encoder", "vlf_caption_decoder", "vlf_image_decoder", "vlf_codec"]


def vlf_codec(backend="embedded", steps=0, seed=0, min_snr_db=-10.0, threads=0, providers="auto") -> VlfCodec:
    """The ``VlfCodec`` the blocks use, from their GRC parameters (0 = the model's default)."""
    return VlfCodec(models_dir=backend_dir(backend), providers=providers, threads=int(threads) or None,
                    steps=int(steps) or None, seed=int(seed), min_snr_db=float(min_snr_db))


class vlf_encoder(semantic_encoder):
    """Image PDU → VLF symbol PDU for ``ofdm_tx`` (VLF-MSC transmitter).

    The image is resized to the encoder's input size, turned into its N×d vision-language
    feature and mapped onto ⌈N·d/2⌉ unit-power complex symbols (no bits, no tokens). The PDU
    metadata carries ``codec_id`` (8), ``seq``, ``side_info`` (image size, N, d, feature scale),
    ``image_id``, ``name``, ``rho`` and ``bcr`` (both n_ch/(3·H·W) of the source image).
    ``backend``: "embedded" (the shipped models) or "reference:PATH" (a directory written by
    ``semcom.train.export_vlf_reference``). The ``csi`` port and the other parameters are
    ``semantic_encoder``'s (the VLF encoder does not adapt to the SNR: the paper's feature is
    the same at every SNR).
    """

    def __init__(self, backend="embedded", threads=0, providers="auto", max_pixels=DEFAULT_MAX_PIXELS,
                 history=DEFAULT_HISTORY, codec=None):
        codec = codec if codec is not None else vlf_codec(backend, threads=threads, providers=providers)
        semantic_encoder.__init__(self, codec=codec, max_pixels=max_pixels, history=history)


class _vlf_decoder(MessageGuard, gr.basic_block):
    """Common part of the two VLF decoders: frame parsing, counters, records."""

    _kind = ""

    def __init__(self, name, codec, max_pixels, history):
        gr.basic_block.__init__(self, name, None, None)
        if int(max_pixels) < 0:
            raise ValueError(f"max_pixels must be >= 0 (0: no limit), got {max_pixels!r}")
        self.codec = codec
        self.max_pixels = int(max_pixels)
        self.decoded = self.failures = self.ignored = self.refused = 0
        self.busy_s = 0.0
        self.rows = history_buffer(history)  # newest records: seq, status, snr_est_db, latency_s, …
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("in"), self._handle)

    @message_handler("in")
    def _handle(self, msg):
        # NaN/Inf and empty payloads reach the codec, which gives them a status of their own
        frame = rx_frame(self, msg, finite=False)
        if frame is None:
            return
        meta, seq, snr, y, side, equalizer = frame
        out = dict(seq=seq, codec=self.codec.name, snr_est_db=snr)
        image_id = meta_int(meta, "image_id", None)
        if image_id is not None:
            out["image_id"] = image_id
        t0 = time.perf_counter()
        status, result = "error", None
        try:
            refuse_oversized(self, self.codec.image_shape(side))
            csi = _codecs.Csi.from_meta(meta, y.size)
            y = csi.unbias(y, equalizer)
            result = self._decode(y, side, csi)
            status = self.codec.last_status
        except Exception as e:  # channel-corrupted input must not stop the flowgraph
            reject(self, "in", f"cannot decode ({self.codec.name}): {e}")
            result = None
        out["status"] = status
        out["latency_s"] = time.perf_counter() - t0
        self.busy_s += out["latency_s"]
        if result is None or status not in DECODED:
            result = None
            self.failures += 1
        else:
            self.decoded += 1
        self.rows.append(self._record(out, result))
        self.message_port_pub(pmt.intern("out"), self._pdu(out, result))

    def _decode(self, y, side, csi):
        raise NotImplementedError

    def _record(self, out, result):
        return dict(out)

    def _pdu(self, out, result):
        raise NotImplementedError


def _dict_pmt(d: dict):
    out = pmt.make_dict()
    for k, v in d.items():
        out = pmt.dict_add(out, pmt.intern(k), pmt.to_pmt(v))
    return out


class vlf_caption_decoder(_vlf_decoder):
    """``ofdm_rx`` PDU → caption PDU (VLF-MSC receiver, language branch).

    The received symbols are turned back into the VLF with the receiver's own per-symbol
    noise variance (LMMSE), average-pooled and projected into the language model's embedding
    space as a soft prompt; the LM writes the caption greedily. Frames of other codecs are
    ignored (``ignored``). Frames with nothing decodable get a status (``no_symbols``,
    ``nonfinite_symbols``, ``below_snr_floor``, ``not_a_feature``) and an empty caption; a
    truncated payload is decoded with its missing part erased and flagged ``truncated``.
    Malformed PDUs are logged, counted in ``dropped()`` and answered with status "error".
    ``rows``: the newest ``history`` records (seq, status, snr_est_db, caption, latency_s).
    ``max_new_tokens``: caption length limit (0: the model's).
    """

    _kind = "caption"

    def __init__(self, backend="embedded", min_snr_db=-10.0, max_new_tokens=0, threads=0, providers="auto",
                 max_pixels=DEFAULT_MAX_PIXELS, history=DEFAULT_HISTORY, codec=None):
        codec = codec if codec is not None else vlf_codec(backend, min_snr_db=min_snr_db, threads=threads,
                                                          providers=providers)
        if int(max_new_tokens) < 0:
            raise ValueError(f"max_new_tokens must be >= 0 (0: the model's limit), got {max_new_tokens!r}")
        codec.max_new_tokens = int(max_new_tokens) or codec.max_new_tokens
        _vlf_decoder.__init__(self, "semcom_vlf_caption_decoder", codec, max_pixels, history)

    def _decode(self, y, side, csi):
        return self.codec.decode_caption(y, side, csi)

    def _record(self, out, result):
        return dict(out, caption=result or "")

    def _pdu(self, out, result):
        text = result or ""
        data = np.frombuffer(text.encode("utf-8"), np.uint8)
        return pmt.cons(_dict_pmt(dict(out, caption=text)), pmt.init_u8vector(data.size, data.tolist()))


class vlf_image_decoder(_vlf_decoder):
    """``ofdm_rx`` PDU → image PDU (VLF-MSC receiver, image branch).

    The received VLF (LMMSE with the receiver's own noise estimate) is projected into the
    text-encoder space and conditions the latent diffusion U-Net's cross-attention at every
    DDIM step (no text prompt); the VAE decoder draws the image, resized to the size the frame
    announces. ``steps``: DDIM steps (0: the model's default); ``seed``: seed of the initial
    noise (the same frame gives the same image). Statuses, counters and malformed-PDU
    handling as ``vlf_caption_decoder``; ``on_failure`` = "previous" re-emits the last image
    (status "previous") when a frame gives none, "nothing" emits an empty image PDU.
    """

    _kind = "image"

    def __init__(self, backend="embedded", steps=0, seed=0, min_snr_db=-10.0, on_failure="nothing", threads=0,
                 providers="auto", max_pixels=DEFAULT_MAX_PIXELS, history=DEFAULT_HISTORY, codec=None):
        if on_failure not in ("nothing", "previous"):
            raise ValueError(f"on_failure must be 'nothing' or 'previous', got {on_failure!r}")
        codec = codec if codec is not None else vlf_codec(backend, steps=steps, seed=seed, min_snr_db=min_snr_db,
                                                          threads=threads, providers=providers)
        self.on_failure = on_failure
        self._previous = None
        _vlf_decoder.__init__(self, "semcom_vlf_image_decoder", codec, max_pixels, history)

    def _decode(self, y, side, csi):
        return self.codec.decode_image(y, side, csi)

    def _pdu(self, out, result):
        if result is None and self.on_failure == "previous" and self._previous is not None:
            result, out = self._previous, dict(out, status="previous")
        if result is None:
            return pmt.cons(_dict_pmt(dict(out, height=0, width=0)), pmt.init_u8vector(0, []))
        if out["status"] != "previous":
            self._previous = result
        return image_pdu(result, out)
