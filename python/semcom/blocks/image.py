"""Image-link blocks: image source, semantic encoder/decoder (any ``semcom.codecs`` codec), image sink.

All four are message blocks; the codecs (ONNX sessions, image codecs, channel codes) run
in message handlers, never in ``work()``. PDU formats:

* image PDU: metadata ``image_id``, ``name``, ``height``, ``width`` (+ ``importance``,
  ``weight`` … from the ``semantic_guidance`` block) + u8vector of the row-major RGB pixels (H·W·3 bytes);
* symbol PDU (encoder → ``ofdm_tx``): metadata ``codec_id``, ``seq`` (= image_id mod 2^16),
  ``side_info`` (u8vector), ``image_id``, ``name``, ``tx_snr_db``, ``rho`` + c32vector;
* decoded PDU (decoder → sink): metadata ``seq``, ``codec``, ``status``, ``snr_est_db``,
  ``height``, ``width`` (+ ``importance_levels``, u8vector H·W, for the importance codec)
  + u8vector (empty when the receiver has nothing).

Limits: images of more than ``max_pixels`` pixels (width × height, default
``images.DEFAULT_MAX_PIXELS`` = 4096 × 4096) are refused by the source (from the file
header, before decoding), the encoder and the decoder (from the size the frame's side
information claims), each logged and counted, so one huge image cannot keep a codec busy
for minutes. The records kept for reports (``semantic_encoder.log``, ``image_sink.rows``)
are ring buffers of the newest ``history`` entries; the counters, the sink's summary and
its CSV cover every image.
"""
from __future__ import annotations

import csv
import os
import threading
import time

import numpy as np
import pmt
from gnuradio import gr

from .. import codecs as _codecs
from ..images import DEFAULT_MAX_PIXELS, ImageTooLarge, check_pixels, load_images
from ..summary import Tally, image_line, image_summary
from ._guard import MessageGuard, c32_array, message_handler, meta_bytes, meta_int, meta_number, reject
from ._guard import meta_dict as _meta_dict
from ._history import DEFAULT_HISTORY, history_buffer
from .link import paced_source, random_features
from .pmtvec import c32_to_pmt, pmt_to_u8, u8_to_pmt

__all__ = ["image_source", "semantic_encoder", "semantic_decoder", "image_sink", "image_pdu", "pdu_image", "score",
           "overlay"]

SOUNDING_CODEC_ID = 0


def image_pdu(pixels: np.ndarray, meta: dict):
    """(H, W, 3) uint8 + metadata dict → image PDU."""
    h, w = pixels.shape[:2]
    d = pmt.make_dict()
    for k, v in dict(meta, height=h, width=w).items():
        d = pmt.dict_add(d, pmt.intern(k), pmt.to_pmt(v))
    flat = np.ascontiguousarray(pixels, np.uint8).ravel()
    return pmt.cons(d, u8_to_pmt(flat))


def pdu_image(msg, max_pixels: int = 0) -> tuple[np.ndarray | None, dict]:
    """Image PDU → ((H, W, 3) uint8 or None when empty, metadata dict). Bad PDUs raise ValueError;
    an image of more than ``max_pixels`` pixels (0: no limit) raises ``images.ImageTooLarge``
    (a ValueError) before its pixels are copied out of the PDU."""
    if not pmt.is_pair(msg) or not pmt.is_u8vector(pmt.cdr(msg)):
        raise ValueError("expected a PDU with a u8vector of RGB pixels")
    meta = _meta_dict(msg)
    n = pmt.length(pmt.cdr(msg))
    if n == 0:
        return None, meta
    h, w = meta_int(meta, "height", 0, 0), meta_int(meta, "width", 0, 0)
    if h * w * 3 != n:
        raise ValueError(f"image PDU of {n} bytes does not match height×width×3 = {h}×{w}×3")
    check_pixels(h, w, max_pixels)
    return pmt_to_u8(pmt.cdr(msg)).reshape(h, w, 3), meta


def codec_ctx(meta: dict, shape, snr_db: float) -> dict:
    """Codec context of an image PDU: the TX CSI, plus the importance map and weight that
    the ``semantic_guidance`` block attached (codecs that do not use them ignore them)."""
    ctx = {"snr_db": snr_db}
    imp = meta.get("importance")
    if imp is not None and not isinstance(imp, (np.ndarray, list, tuple)):
        raise ValueError(f"importance map must be an f32vector, got {type(imp).__name__}")
    if imp is not None and len(imp):
        imp = np.asarray(imp, np.float32)
        if imp.size != shape[0] * shape[1]:
            raise ValueError(f"importance map of {imp.size} values does not match the {shape[0]}x{shape[1]} image")
        if not np.all(np.isfinite(imp)):
            raise ValueError("importance map holds NaN/Inf")
        ctx["importance"] = imp.reshape(shape[:2])
        ctx["weight"] = meta_number(meta, "weight", 1.0)
    return ctx


def csi_snr_db(msg) -> float:
    """``snr_est_db`` of a CSI report (a PDU whose metadata has it, e.g. ``ofdm_rx``'s ``out``);
    ValueError when it is not a PDU or the value is missing or not a finite number."""
    return meta_number(_meta_dict(msg), "snr_est_db", required=True)


class image_source(paced_source):
    """Emits image PDUs from a folder, files, or scikit-image's sample photos.

    Parameters: ``path`` ("" = sample photos; a folder; a file; "sample:astronaut,coffee"),
    ``size`` (0 = native size, else centre-crop + resize to size×size), ``limit`` (0 = all),
    ``repeat`` (times the set is sent), ``pace``: "ack" keeps at most ``window`` images in
    flight, sending the next one when a message arrives on ``next`` (connect the image
    sink's ``ack``; window 1 = stop-and-wait) or after ``timeout_s`` without one (a lost
    frame); "interval" sends one every ``interval_s``.
    After the last image (acknowledged or timed out with "ack") the source ends the
    flowgraph ``linger_s`` seconds later (``paced_source``; < 0: keeps it running).
    Unreadable files are skipped and listed in ``skipped``; an empty folder or missing
    path raises ValueError when the block is built. ``max_pixels``: files of more pixels
    (width × height at native size; default 4096 × 4096; 0 = no limit of its own) are refused
    from their header without being decoded, logged, listed in ``skipped`` and counted in
    ``refused``; the other images are sent. Any message on ``next`` is an ack
    (``dropped()`` stays 0; it is there for the blocks' common interface).
    """

    def __init__(self, path="", size=0, limit=0, repeat=1, pace="ack", interval_s=0.0, timeout_s=10.0, window=1,
                 linger_s=0.0, max_pixels=DEFAULT_MAX_PIXELS):
        paced_source.__init__(self, "semcom_image_source", pace, interval_s, timeout_s, window, linger_s)
        if int(repeat) < 1:
            raise ValueError("repeat >= 1 required")
        self.images = load_images(path or None, int(size), int(limit), max_pixels)
        self.skipped = self.images.skipped
        self.refused = len(self.images.too_large)
        for name in self.images.too_large:
            gr.log.warn(f"semcom image_source: skipped {name}: {self.skipped[name]}")
        self.repeat = int(repeat)

    @property
    def total(self) -> int:
        """Images this source will emit."""
        return len(self.images) * self.repeat

    def _pdu(self, k):
        item = self.images.items[k % len(self.images)]
        return image_pdu(item.pixels, dict(image_id=k, name=item.name))


class semantic_encoder(MessageGuard, gr.basic_block):
    """Image PDU → symbol PDU for ``ofdm_tx``, with any codec of ``semcom.codecs``.

    ``codec``: a name of ``semcom.codecs.CODECS`` ("jscc", "separation", "importance_jscc") or a
    codec object; ``rate``: bandwidth ratio ρ; ``codec_args``: extra keyword arguments of the
    codec (e.g. ``{"map_block": 16}`` for importance_jscc). ``tx_snr_db`` is the
    TX's channel-state information until the receiver reports one: every PDU arriving on
    ``csi`` (connect ``ofdm_rx``'s ``out``: its ``snr_est_db``) updates it, i.e. an ideal
    feedback channel carrying the receiver's own estimate. With ``sounding_frames`` > 0
    the encoder first sends that many short sounding frames (codec id 0, random symbols)
    and holds images until the first CSI report arrives or ``csi_timeout_s`` passes.
    Images that cannot be encoded are logged and counted (``failed``). Images of more than
    ``max_pixels`` pixels (width × height; default 4096 × 4096; 0 = no limit) are refused before
    the codec sees them, logged and counted in ``refused`` (and ``failed``). Every rejected message
    (an image that cannot be encoded, a CSI report without a finite numeric ``snr_est_db``) is
    logged and counted in ``dropped()``; the encoder goes on with the next one.
    Codecs that name ``pdu_meta`` keys of their ``Encoded.meta`` (the VLF codec: ``bcr``) have
    them added to the symbol PDU's metadata.
    ``log``: one dict per encoded image (TX-side facts for reports: ``image_id``, ``name``,
    ``tx_snr_db``, ``rho``, ``n_symbols`` and the codec's ``Encoded.meta``), the newest
    ``history`` of them (a ring buffer; ``encoded`` counts them all).
    """

    def __init__(self, codec="jscc", rate=1 / 12, tx_snr_db=10.0, sounding_frames=0, sounding_len=1024,
                 csi_timeout_s=5.0, codec_args=None, max_pixels=DEFAULT_MAX_PIXELS, history=DEFAULT_HISTORY):
        gr.basic_block.__init__(self, "semcom_semantic_encoder", None, None)
        self.codec = codec if isinstance(codec, _codecs.Codec) else _codecs.make_codec(codec, rate, **(codec_args or {}))
        if int(sounding_frames) < 0 or int(sounding_len) < 1 or float(csi_timeout_s) <= 0 or int(max_pixels) < 0:
            raise ValueError("sounding_frames >= 0, sounding_len >= 1, csi_timeout_s > 0 and max_pixels >= 0 required")
        self.tx_snr_db = float(tx_snr_db)
        self.sounding_frames, self.sounding_len = int(sounding_frames), int(sounding_len)
        self.csi_timeout_s = float(csi_timeout_s)
        self.max_pixels = int(max_pixels)
        self.encoded = self.failed = self.refused = self.csi_reports = 0
        self.log = history_buffer(history)  # the newest TX-side records, one dict per encoded image
        self._lock = threading.Lock()
        self._held = []
        self._holding = False
        self._timer = None
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_in(pmt.intern("csi"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("in"), self._on_image)
        self.set_msg_handler(pmt.intern("csi"), self._on_csi)

    def start(self):
        if self.sounding_frames:
            self._holding = True
            for k in range(self.sounding_frames):
                x = random_features(0xC51, k, self.sounding_len)
                meta = pmt.dict_add(pmt.make_dict(), pmt.intern("codec_id"), pmt.from_long(SOUNDING_CODEC_ID))
                self.message_port_pub(pmt.intern("out"), pmt.cons(meta, c32_to_pmt(x)))
            self._timer = threading.Timer(self.csi_timeout_s, self._release)
            self._timer.daemon = True
            self._timer.start()
        return True

    def stop(self):
        if self._timer is not None:
            self._timer.cancel()
        return True

    def _release(self):
        with self._lock:
            held, self._held, self._holding = self._held, [], False
        for msg in held:
            self._encode(msg)

    @message_handler("csi")
    def _on_csi(self, msg):
        self.tx_snr_db = csi_snr_db(msg)
        self.csi_reports += 1
        if self._holding:
            if self._timer is not None:
                self._timer.cancel()
            self._release()

    @message_handler("in")
    def _on_image(self, msg):
        with self._lock:
            if self._holding:
                self._held.append(msg)
                return
        self._encode(msg)

    def _encode(self, msg):
        try:
            try:
                pixels, meta = pdu_image(msg, self.max_pixels)
            except ImageTooLarge:
                self.refused += 1
                raise
            if pixels is None:
                raise ValueError("empty image PDU")
            image_id = meta_int(meta, "image_id", self.encoded, 0, 2**53)
            name = meta.get("name", "")
            if not isinstance(name, str):
                raise ValueError(f"metadata 'name' must be a string, got {name!r}")
            snr = self.tx_snr_db
            enc = self.codec.encode(pixels, codec_ctx(meta, pixels.shape, snr))
        except Exception as e:  # a bad image must not stop the flowgraph (also called from the CSI timer)
            self.failed += 1
            reject(self, "in", f"cannot encode ({self.codec.name}): {e}")
            return
        h, w = pixels.shape[:2]
        rho = _codecs.rho(enc.symbols.size, h, w)
        out = dict(codec_id=self.codec.codec_id, seq=image_id & 0xFFFF, image_id=image_id,
                   name=name, tx_snr_db=snr, rho=rho)
        out.update({k: enc.meta[k] for k in getattr(self.codec, "pdu_meta", ()) if k in enc.meta})
        d = pmt.make_dict()
        for k, v in out.items():
            d = pmt.dict_add(d, pmt.intern(k), pmt.to_pmt(v))
        side = np.frombuffer(enc.side_info, np.uint8)
        d = pmt.dict_add(d, pmt.intern("side_info"), u8_to_pmt(side))
        sym = np.ascontiguousarray(enc.symbols, np.complex64)
        self.encoded += 1
        self.log.append(dict(out, n_symbols=int(sym.size), **enc.meta))
        self.message_port_pub(pmt.intern("out"), pmt.cons(d, c32_to_pmt(sym)))


def rx_frame(block, msg, finite: bool = True):
    """An ``ofdm_rx`` PDU for a decoder block → (metadata, seq, snr_est_db, symbols, side_info,
    equalizer), or None when the frame is another codec's (``block.ignored`` counts it and
    messages that are not PDUs, which raise). ValueError for wrong-typed metadata; symbols must be
    a c32vector (non-empty and finite unless ``finite`` is False: the codec then reports them)."""
    try:
        meta = _meta_dict(msg)
    except ValueError:
        block.ignored += 1
        raise
    if meta_int(meta, "codec_id", -1) != block.codec.codec_id:
        block.ignored += 1
        return None
    seq = meta_int(meta, "seq", -1, -1, 0xFFFF)
    snr = meta_number(meta, "snr_est_db", required=True)
    meta_number(meta, "noise_var", finite=False)
    y = c32_array(pmt.cdr(msg), nonempty=finite, finite=finite, what="PDU vector of received symbols")
    side = meta_bytes(meta, "side_info")
    equalizer = meta.get("equalizer", "zf")
    if not isinstance(equalizer, str):
        raise ValueError(f"metadata 'equalizer' must be a string, got {equalizer!r}")
    return meta, seq, snr, y, side, equalizer


def refuse_oversized(block, shape) -> None:
    """ImageTooLarge, counted in ``block.refused``, when a frame announces an image ``shape``
    (height, width) of more than ``block.max_pixels`` pixels (0: no limit; None: not known)."""
    if shape is None or not block.max_pixels:
        return
    try:
        check_pixels(shape[0], shape[1], block.max_pixels, "frame announcing an image")
    except ImageTooLarge:
        block.refused += 1
        raise


class semantic_decoder(MessageGuard, gr.basic_block):
    """``ofdm_rx`` PDU → decoded image PDU, with the receiver's own channel estimates.

    Only frames whose header ``codec_id`` is this codec's are decoded (others, e.g. sounding
    frames, are ignored). The decoder gets the RX's ``snr_est_db`` and per-symbol noise
    variance, never the simulator's SNR; the output of an MMSE equaliser is unbiased first
    (``Csi.unbias``), so the codecs always see y = x + n. When the codec has nothing to show (e.g. the
    separation baseline's CRC fails), ``on_failure`` = "nothing" emits an empty image PDU
    with ``status`` "failed", "previous" re-emits the last decoded image with status
    "previous" (what a real receiver shows). Failures are counted (``failures``).
    Malformed PDUs (not a PDU, ``codec_id``/``seq`` not integers, ``snr_est_db`` not a finite
    number, ``side_info`` not a u8vector, the vector not a non-empty finite c32vector) are
    logged, counted in ``dropped()`` (with frames the codec raised on, which still emit
    status "error") and skipped; ``ignored`` counts the frames of other codecs and non-PDUs.
    A frame whose side information announces an image of more than ``max_pixels`` pixels
    (default 4096 × 4096; 0 = no limit; codecs that start their side information with the
    image size, as gr-semcom's do) is not decoded: logged, counted in ``refused`` and
    ``dropped()``, emitted with status "error".
    """

    def __init__(self, codec="jscc", rate=1 / 12, on_failure="nothing", codec_args=None,
                 max_pixels=DEFAULT_MAX_PIXELS):
        gr.basic_block.__init__(self, "semcom_semantic_decoder", None, None)
        if on_failure not in ("nothing", "previous"):
            raise ValueError(f"on_failure must be 'nothing' or 'previous', got {on_failure!r}")
        if int(max_pixels) < 0:
            raise ValueError(f"max_pixels must be >= 0 (0: no limit), got {max_pixels!r}")
        self.codec = codec if isinstance(codec, _codecs.Codec) else _codecs.make_codec(codec, rate, **(codec_args or {}))
        self.on_failure = on_failure
        self.max_pixels = int(max_pixels)
        self.decoded = self.failures = self.ignored = self.refused = 0
        self._previous = None
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("in"), self._handle)

    def _announced_shape(self, side: bytes):
        """(height, width) the side information announces; None when the codec cannot tell or the
        side information is malformed (the codec's decode then reports that)."""
        try:
            return self.codec.image_shape(side)
        except ValueError:
            return None

    @message_handler("in")
    def _handle(self, msg):
        frame = rx_frame(self, msg)
        if frame is None:
            return
        meta, seq, snr, y, side, equalizer = frame
        status, image = "ok", None
        try:
            refuse_oversized(self, self._announced_shape(side) if self.max_pixels else None)
            csi = _codecs.Csi.from_meta(meta, y.size)
            y = csi.unbias(y, equalizer)
            image = self.codec.decode(y, side, csi)
            if image is None:
                status = getattr(self.codec, "last_status", "failed") or "failed"
        except Exception as e:  # channel-corrupted input must not stop the flowgraph
            reject(self, "in", f"cannot decode ({self.codec.name}): {e}")
            status = "error"
        if image is None:
            self.failures += 1
            if self.on_failure == "previous" and self._previous is not None:
                image, status = self._previous, "previous"
        else:
            self.decoded += 1
            self._previous = image
        out = dict(seq=seq, codec=self.codec.name, status=status, snr_est_db=snr)
        if image is not None and hasattr(self.codec, "levels_map"):  # importance map the frame carried
            out["importance_levels"] = self.codec.levels_map(side).ravel()
        if image is None:
            d = pmt.make_dict()
            for k, v in dict(out, height=0, width=0).items():
                d = pmt.dict_add(d, pmt.intern(k), pmt.to_pmt(v))
            self.message_port_pub(pmt.intern("out"), pmt.cons(d, pmt.init_u8vector(0, [])))
        else:
            self.message_port_pub(pmt.intern("out"), image_pdu(image, out))


def score(ref: np.ndarray, shown: np.ndarray) -> dict:
    """PSNR, SSIM, MS-SSIM and the EfficientNet-Lite0 feature distance (``effnet_dist``, not
    LPIPS) of a shown image; SSIM/MS-SSIM are NaN below their 11×11 window."""
    from .. import metrics

    out = dict(psnr=metrics.psnr(ref, shown), ssim=np.nan, ms_ssim=np.nan,
               effnet_dist=metrics.effnet_feature_distance(ref, shown))
    if min(ref.shape[:2]) >= 11:
        out.update(ssim=metrics.ssim(ref, shown), ms_ssim=metrics.ms_ssim(ref, shown))
    return out


def overlay(image: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The image with its importance levels tinted red (level 0 untouched), for display."""
    top = max(int(levels.max()), 1)
    alpha = (0.45 * levels.astype(np.float32) / top)[..., None]
    return np.clip(image * (1 - alpha) + np.array([255.0, 0.0, 0.0]) * alpha, 0, 255).astype(np.uint8)


class image_sink(MessageGuard, gr.basic_block):
    """Decoded image PDUs → PNG files, per-image metrics and an ``ack`` for the source.

    ``reference``/``size``: the same image set as the source (scored by ``seq``, the
    image index mod 2^16). Metrics: ``score`` (PSNR, SSIM, MS-SSIM, EfficientNet-Lite0
    feature distance). A frame of the importance codec also gets ``<file>_mask.png``, the
    received image with the importance map its header carried tinted red. An empty
    PDU (the receiver has nothing) is scored against a mid-grey image of the reference's
    size, which is what a display shows with no data. ``out_dir`` "" = no files; ``csv_path``:
    one row per image, the file rewritten when the flowgraph starts (``csv_mode`` "w") or
    appended to ("a"); ``metrics=False`` skips the scoring (throughput runs).
    Every PDU triggers a message on ``ack``. ``verbose``: one line per image (seq, name,
    codec, status, estimated SNR, PSNR) and, when the flowgraph ends, a summary (images
    received of ``expected`` (0: the reference set, or the highest seq seen), lost, mean PSNR).
    Malformed PDUs (not an image PDU, size mismatch, ``seq`` not an integer in -1…65535,
    ``snr_est_db`` not a number, ``codec``/``status`` not strings) are logged, counted
    (``dropped()``) and acked, but not recorded.
    ``rows``: one dict per recorded image (the CSV columns), the newest ``history`` of them
    (a ring buffer, default 10000; 0 keeps none); the CSV file gets every row, and
    ``count()`` and the summary cover every image. When ``rows`` first drops an old row and no
    CSV file is set, the sink logs a warning once. ``max_pixels``: that of the image source
    (the reference set must skip the same files).
    """

    FIELDS = ("seq", "name", "codec", "status", "snr_est_db", "psnr", "ssim", "ms_ssim", "effnet_dist", "file", "t")
    #: type of each CSV column when the file is read back (``read_csv``); the others are strings
    NUMERIC = {"seq": int, "snr_est_db": float, "psnr": float, "ssim": float, "ms_ssim": float,
               "effnet_dist": float, "t": float}

    def __init__(self, reference="", size=0, limit=0, out_dir="", csv_path="", label="", metrics=True,
                 csv_mode="w", verbose=True, expected=0, history=DEFAULT_HISTORY, max_pixels=DEFAULT_MAX_PIXELS):
        gr.basic_block.__init__(self, "semcom_image_sink", None, None)
        if csv_mode not in ("w", "a"):
            raise ValueError(f"csv_mode must be 'w' (overwrite) or 'a' (append), got {csv_mode!r}")
        self.metrics, self.csv_mode, self.verbose = bool(metrics), csv_mode, bool(verbose)
        self.images = load_images(reference or None, int(size), int(limit), max_pixels)
        self.out_dir, self.csv_path, self.label = str(out_dir), str(csv_path), str(label)
        if self.out_dir:
            os.makedirs(self.out_dir, exist_ok=True)
        self.expected = int(expected) or len(self.images)
        self.rows = history_buffer(history)
        self.tally = Tally()  # every recorded row, in constant memory (count and summary)
        self._warned_overflow = False
        self._lock = threading.Lock()
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("ack"))
        self.set_msg_handler(pmt.intern("in"), self._handle)

    def start(self):
        if self.csv_path and (self.csv_mode == "w" or not os.path.exists(self.csv_path)
                              or os.path.getsize(self.csv_path) == 0):
            with open(self.csv_path, "w", newline="") as f:
                csv.DictWriter(f, fieldnames=self.FIELDS).writeheader()
        return True

    def stop(self):
        if self.verbose:
            print(self.summary(), flush=True)
        return True

    def summary(self) -> str:
        """The run's one-line summary over every image received (not only the rows kept)."""
        with self._lock:
            return image_summary(self.tally, self.expected)

    @classmethod
    def read_csv(cls, path: str) -> list[dict]:
        """The rows of a CSV file the sink wrote, with the numeric columns as numbers (NaN when empty)."""
        out = []
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                row = dict(r)
                for k, typ in cls.NUMERIC.items():
                    if k in row:
                        v = row[k]
                        row[k] = typ(v) if v not in ("", None) else (-1 if typ is int else np.nan)
                out.append(row)
        return out

    @message_handler("in")
    def _handle(self, msg):
        try:
            self._record(msg)
        finally:
            self.message_port_pub(pmt.intern("ack"), pmt.PMT_T)

    def _record(self, msg):
        image, meta = pdu_image(msg)
        seq = meta_int(meta, "seq", -1, -1, 0xFFFF)
        snr = meta_number(meta, "snr_est_db", np.nan, finite=False)
        codec, status = meta.get("codec", self.label), meta.get("status", "ok")
        if not isinstance(codec, str) or not isinstance(status, str):
            raise ValueError(f"metadata 'codec' and 'status' must be strings, got {codec!r}, {status!r}")
        levels = meta.get("importance_levels")
        if levels is not None and not isinstance(levels, (np.ndarray, list, tuple)):
            raise ValueError(f"metadata 'importance_levels' must be a u8vector, got {type(levels).__name__}")
        ref = self.images.items[seq % len(self.images)].pixels if seq >= 0 else None
        row = dict(seq=seq, name="", codec=codec, status=status,
                   snr_est_db=snr, psnr=np.nan, ssim=np.nan, ms_ssim=np.nan,
                   effnet_dist=np.nan, file="", t=time.time())
        if ref is not None:
            row["name"] = self.images.items[seq % len(self.images)].name
        if ref is not None and self.metrics:
            shown = image if image is not None and image.shape == ref.shape else np.full_like(ref, 128)
            row.update(score(ref, shown))
        if image is not None and self.out_dir:
            from PIL import Image

            stem = os.path.splitext(row["name"] or f"image{seq}")[0]
            row["file"] = os.path.join(self.out_dir, f"{stem}_{row['codec']}{self.label}_{seq}.png")
            Image.fromarray(image).save(row["file"])
            if levels is not None and len(levels) == image.shape[0] * image.shape[1]:
                Image.fromarray(overlay(image, np.asarray(levels).reshape(image.shape[:2]))).save(
                    row["file"][:-4] + "_mask.png")
        with self._lock:
            full = self.rows.maxlen is not None and len(self.rows) == self.rows.maxlen
            self.rows.append(row)
            self.tally.add(row)
        if full and not self._warned_overflow and not self.csv_path:
            self._warned_overflow = True
            gr.log.warn(f"semcom image_sink: keeping the newest {self.rows.maxlen} rows in memory (history); "
                        "older ones are dropped from .rows (set a CSV file to keep every row); counts and "
                        "the summary still cover every image")
        if self.verbose:
            print(image_line(row), flush=True)
        if self.csv_path:
            new = not os.path.exists(self.csv_path) or os.path.getsize(self.csv_path) == 0
            with open(self.csv_path, "a", newline="") as f:
                wr = csv.DictWriter(f, fieldnames=self.FIELDS)
                if new:
                    wr.writeheader()
                wr.writerow(row)

    def count(self) -> int:
        """Images recorded since the block was made (also those no longer in ``rows``)."""
        with self._lock:
            return self.tally.rows
