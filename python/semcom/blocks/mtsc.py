"""LAM multi-task blocks: one transmission carrying an image, a question, an audio clip and a
video clip; one PDU per task at the receiver.

``mtsc_source`` (multi-task benchmark items → multimodal PDUs) → ``mtsc_encoder`` (→ symbol PDU
for ``ofdm_tx``) … ``ofdm_rx`` → ``mtsc_decoder`` (→ one PDU per task: the VQA answer, the image,
audio and video captions, the reconstructed image) → ``mtsc_sink``. The models
(``semcom.codecs.mtsc``, ONNX Runtime) run in the blocks' message handlers (each block's own
thread), never in ``work()``.

**Multimodal PDU** (:func:`mtsc_pdu`): metadata ``item_id``, ``name``, ``question`` (str),
``height``, ``width``, ``audio`` (f32vector), ``sample_rate``, ``video`` (u8vector of
``video_frames`` × ``video_height`` × ``video_width`` × 3 RGB bytes) + u8vector of the image's
RGB pixels. **Task PDU**: metadata ``seq``, ``item_id`` (when the frame had one), ``task``,
``codec``, ``status`` (``semcom.codecs.mtsc.STATUSES``, or "error"), ``snr_est_db``,
``latency_s`` (the whole frame's decode), and ``text`` (str, "" when nothing was decoded) for
the text tasks or ``height``/``width`` for the image; u8vector of the text's UTF-8 bytes or of
the image's RGB pixels (empty when nothing was decoded), so ``image_sink`` and
``qt_image_view`` take the ``reconstruction`` port.
"""
from __future__ import annotations

import time

import numpy as np
import pmt
from gnuradio import gr

from ..codecs import Csi
from ..codecs.mtsc import DECODED, TASKS, TEXT_TASKS, MtscCodec
from ..datasets import media, multitask
from ._guard import MessageGuard, meta_int, meta_number, message_handler, reject
from ._guard import meta_dict as _meta_dict
from ._history import DEFAULT_HISTORY, history_buffer
from .image import csi_snr_db, image_pdu, pdu_image, rx_frame
from .link import paced_source
from .pmtvec import c32_to_pmt, f32_to_pmt, pmt_to_f32, pmt_to_u8, u8_to_pmt
from .vlf_link import frame_collector

__all__ = ["mtsc_source", "mtsc_encoder", "mtsc_decoder", "mtsc_sink", "mtsc_codec", "mtsc_pdu", "pdu_mtsc",
           "parse_items"]


def mtsc_codec(models="", prefix="mtsc", budget=1024, rate="adaptive", min_snr_db=-15.0, threads=0) -> MtscCodec:
    """The ``MtscCodec`` the blocks use, from their GRC parameters ("" = the shipped models)."""
    return MtscCodec(models_dir=models or None, prefix=prefix, budget=int(budget), rate=rate,
                     min_snr_db=float(min_snr_db), threads=int(threads) or None)


def mtsc_pdu(image, question, audio, video, meta=None, sample_rate=media.SAMPLE_RATE):
    """Raw inputs of one item → multimodal PDU."""
    v = np.ascontiguousarray(video, np.uint8)
    if v.ndim != 4 or v.shape[-1] != 3:
        raise ValueError(f"video must be (T, H, W, 3) uint8, got {v.shape}")
    pdu = image_pdu(np.asarray(image, np.uint8), dict(meta or {}, question=str(question),
                                                      sample_rate=int(sample_rate), video_frames=v.shape[0],
                                                      video_height=v.shape[1], video_width=v.shape[2]))
    d = pmt.car(pdu)
    d = pmt.dict_add(d, pmt.intern("audio"), f32_to_pmt(np.asarray(audio, np.float32).ravel()))
    d = pmt.dict_add(d, pmt.intern("video"), u8_to_pmt(v.ravel()))
    return pmt.cons(d, pmt.cdr(pdu))


def pdu_mtsc(msg) -> dict:
    """Multimodal PDU → {image, question, audio, sample_rate, video, meta}; ValueError for a
    malformed one (the codec then says what is wrong with its content)."""
    image, meta = pdu_image(msg)
    if image is None:
        raise ValueError("multimodal PDU without an image")
    question = meta.get("question", "")
    if not isinstance(question, str):
        raise ValueError(f"metadata 'question' must be a string, got {question!r}")
    d = pmt.car(msg)
    audio = pmt.dict_ref(d, pmt.intern("audio"), pmt.PMT_NIL)
    video = pmt.dict_ref(d, pmt.intern("video"), pmt.PMT_NIL)
    if not pmt.is_f32vector(audio):
        raise ValueError("metadata 'audio' must be an f32vector")
    if not pmt.is_u8vector(video):
        raise ValueError("metadata 'video' must be a u8vector")
    t, h, w = (meta_int(meta, k, 0, 1) for k in ("video_frames", "video_height", "video_width"))
    vid = pmt_to_u8(video)
    if vid.size != t * h * w * 3:
        raise ValueError(f"video of {vid.size} bytes does not match {t}x{h}x{w}x3")
    sr = meta_int(meta, "sample_rate", media.SAMPLE_RATE, 1000, 384000)
    return dict(image=image, question=question, audio=pmt_to_f32(audio), sample_rate=sr,
                video=vid.reshape(t, h, w, 3), meta=meta)


def parse_items(spec: str) -> list:
    """"multitask:SPLIT[:N]" (default "multitask:test:8") → the benchmark's seeds."""
    parts = (spec or "multitask:test:8").split(":")
    if parts[0] != "multitask" or len(parts) not in (2, 3):
        raise ValueError(f"items must be 'multitask:SPLIT[:N]', got {spec!r}")
    n = int(parts[2]) if len(parts) == 3 else None
    return list(media.split_seeds(parts[1], n))


class mtsc_source(paced_source):
    """Emits multimodal PDUs of the multi-task benchmark (``items``: "multitask:SPLIT[:N]").

    ``pace`` "ack": the next item when a message arrives on ``next`` (connect the sink's
    ``ack``) or after ``timeout_s`` without one; "interval": one every ``interval_s``.
    ``repeat``: times the set is sent. Then the flowgraph ends ``linger_s`` later (< 0: never).
    """

    def __init__(self, items="multitask:test:8", repeat=1, pace="ack", interval_s=0.0, timeout_s=30.0, linger_s=0.0):
        paced_source.__init__(self, "semcom_mtsc_source", pace, interval_s, timeout_s, 1, linger_s)
        if int(repeat) < 1:
            raise ValueError("repeat >= 1 required")
        self.seeds = parse_items(items)
        self.repeat = int(repeat)

    @property
    def total(self) -> int:
        return len(self.seeds) * self.repeat

    def item(self, k) -> multitask.Item:
        return multitask.item(self.seeds[k % len(self.seeds)])

    def _pdu(self, k):
        it = self.item(k)
        return mtsc_pdu(it.image, it.question, it.audio.audio, it.video.frames, dict(item_id=k, name=f"item{it.seed}"))


class mtsc_encoder(MessageGuard, gr.basic_block):
    """Multimodal PDU → symbol PDU for ``ofdm_tx`` (the LAM multi-task transmitter).

    ``models`` ("" = the shipped models), ``prefix`` ("mtsc": the LAM-based system; "udeepsc":
    the U-DeepSC-like baseline), ``budget`` (complex channel uses per item, the rate map's
    included), ``rate`` ("adaptive": importance- and SNR-aware; "fixed"). ``tx_snr_db`` is the
    SNR the rate allocation uses until the receiver reports one on ``csi`` (connect
    ``ofdm_rx``'s ``out``: its ``snr_est_db``). Items that cannot be encoded (empty question,
    silent audio, a malformed PDU) are logged, counted in ``failed`` and ``dropped()``, and
    announced on ``rejected`` (metadata ``item_id``, ``seq``, ``status`` "bad_input",
    ``reason``; connect ``mtsc_sink``'s ``rejected``, which records and acknowledges them); the
    encoder goes on. ``log``: one record per encoded item (``item_id``, ``tx_snr_db``,
    ``channel_uses``, ``n_symbols``, ``rates``, ``levels``, ``importance``).
    """

    def __init__(self, models="", prefix="mtsc", budget=1024, rate="adaptive", tx_snr_db=10.0, threads=0,
                 history=DEFAULT_HISTORY, codec=None):
        gr.basic_block.__init__(self, "semcom_mtsc_encoder", None, None)
        self.codec = codec if codec is not None else mtsc_codec(models, prefix, budget, rate, threads=threads)
        self.tx_snr_db = float(tx_snr_db)
        self.encoded = self.failed = self.csi_reports = 0
        self.log = history_buffer(history)
        for p in ("in", "csi"):
            self.message_port_register_in(pmt.intern(p))
        for p in ("out", "rejected"):
            self.message_port_register_out(pmt.intern(p))
        self.set_msg_handler(pmt.intern("in"), self._on_item)
        self.set_msg_handler(pmt.intern("csi"), self._on_csi)

    @message_handler("csi")
    def _on_csi(self, msg):
        self.tx_snr_db = csi_snr_db(msg)
        self.csi_reports += 1

    @message_handler("in")
    def _on_item(self, msg):
        item_id = self.encoded + self.failed
        try:
            x = pdu_mtsc(msg)
            item_id = meta_int(x["meta"], "item_id", item_id, 0, 2**53)
            feeds = self.codec.prepare(x["image"], x["question"], x["audio"], x["video"], x["sample_rate"])
            snr = self.tx_snr_db
            enc = self.codec.encode(feeds, snr)
        except Exception as e:  # bad input must not stop the flowgraph
            self.failed += 1
            reject(self, "in", f"cannot encode ({self.codec.name}): {e}")
            d = pmt.make_dict()
            for k, v in dict(item_id=int(item_id), seq=int(item_id) & 0xFFFF, status="bad_input", reason=str(e)).items():
                d = pmt.dict_add(d, pmt.intern(k), pmt.to_pmt(v))
            self.message_port_pub(pmt.intern("rejected"), pmt.cons(d, pmt.PMT_NIL))
            return
        out = dict(codec_id=self.codec.codec_id, seq=item_id & 0xFFFF, item_id=item_id,
                   name=x["meta"].get("name", ""), tx_snr_db=snr, channel_uses=enc.meta["channel_uses"])
        d = pmt.make_dict()
        for k, v in out.items():
            d = pmt.dict_add(d, pmt.intern(k), pmt.to_pmt(v))
        d = pmt.dict_add(d, pmt.intern("side_info"), u8_to_pmt(np.frombuffer(enc.side_info, np.uint8)))
        self.encoded += 1
        self.log.append(dict(out, n_symbols=int(enc.symbols.size), rates=enc.meta["rates"],
                             levels=enc.meta["levels"], importance=enc.meta["importance"]))
        self.message_port_pub(pmt.intern("out"), pmt.cons(d, c32_to_pmt(enc.symbols)))


def _tasks(tasks) -> tuple:
    if isinstance(tasks, str):
        tasks = TASKS if tasks.strip() in ("", "all") else [t.strip() for t in tasks.split(",") if t.strip()]
    tasks = tuple(tasks)
    if not tasks or any(t not in TASKS for t in tasks):
        raise ValueError(f"tasks must be 'all' or a non-empty subset of {TASKS}, got {tasks!r}")
    return tasks


class mtsc_decoder(MessageGuard, gr.basic_block):
    """``ofdm_rx`` PDU → one task PDU per task (the LAM multi-task receiver).

    All tasks are decoded from the same received symbols with the receiver's own CSI
    (``snr_est_db``, per-symbol noise variance). Outputs: ``out`` (every task PDU) and one port
    per task (``vqa``, ``caption_image``, ``caption_audio``, ``caption_video``,
    ``reconstruction``). ``tasks``: "all" or a comma-separated subset (the others are not
    decoded). A frame that cannot be decoded gives one PDU per task with the status and an
    empty vector, so a sink always completes the frame. Frames of other codecs are ignored
    (``ignored``). ``rows``: one record per frame (``seq``, ``status``, ``snr_est_db``,
    ``latency_s``, the texts).
    """

    def __init__(self, models="", prefix="mtsc", tasks="all", min_snr_db=-15.0, threads=0,
                 history=DEFAULT_HISTORY, codec=None):
        gr.basic_block.__init__(self, "semcom_mtsc_decoder", None, None)
        self.codec = codec if codec is not None else mtsc_codec(models, prefix, min_snr_db=min_snr_db, threads=threads)
        self.tasks = _tasks(tasks)
        self.decoded = self.failures = self.ignored = 0
        self.busy_s = 0.0
        self.rows = history_buffer(history)
        self.message_port_register_in(pmt.intern("in"))
        for p in ("out",) + TASKS:
            self.message_port_register_out(pmt.intern(p))
        self.set_msg_handler(pmt.intern("in"), self._handle)

    @message_handler("in")
    def _handle(self, msg):
        frame = rx_frame(self, msg, finite=False)
        if frame is None:
            return
        meta, seq, snr, y, side, equalizer = frame
        base = dict(seq=seq, codec=self.codec.name, snr_est_db=snr)
        item_id = meta_int(meta, "item_id", None)
        if item_id is not None:
            base["item_id"] = item_id
        t0 = time.perf_counter()
        status, result = "error", None
        try:
            csi = Csi.from_meta(meta, y.size)
            y = csi.unbias(y, equalizer)
            result = self.codec.decode(y, side, csi, self.tasks)
            status = self.codec.last_status
        except Exception as e:  # channel-corrupted input must not stop the flowgraph
            reject(self, "in", f"cannot decode ({self.codec.name}): {e}")
        if result is None or status not in DECODED:
            result = None
            self.failures += 1
        else:
            self.decoded += 1
        base.update(status=status, latency_s=time.perf_counter() - t0)
        self.busy_s += base["latency_s"]
        self.rows.append(dict(base, **{t: v for t, v in (result or {}).items() if t in TEXT_TASKS}))
        for task in self.tasks:
            pdu = self._task_pdu(base, task, None if result is None else result.get(task))
            self.message_port_pub(pmt.intern(task), pdu)
            self.message_port_pub(pmt.intern("out"), pdu)

    @staticmethod
    def _task_pdu(base, task, value):
        if task == "reconstruction":
            img = np.zeros((0, 0, 3), np.uint8) if value is None else value
            return image_pdu(img, dict(base, task=task))
        text = value or ""
        d = pmt.make_dict()
        for k, v in dict(base, task=task, text=text).items():
            d = pmt.dict_add(d, pmt.intern(k), pmt.to_pmt(v))
        return pmt.cons(d, u8_to_pmt(np.frombuffer(text.encode(), np.uint8)))


class mtsc_sink(frame_collector):
    """Collects the task PDUs of each frame (``in``: the decoder's ``out``) and acknowledges the
    frame once every task in ``tasks`` has answered (``ack``: connect the source's ``next``).

    ``rows``: per frame ``seq``, ``snr_est_db``, the text of each text task under its name,
    ``reconstruction`` (uint8 image or None), and ``<task>_status`` / ``<task>_latency_s``.
    Lost frames (``tx``/``rx``, ``lost_after_s``) as ``frame_collector``. ``rejected`` (the
    encoder's ``rejected``): an item the transmitter refused gets a row with every status
    "bad_input" and its ``reason``, and is acknowledged (``rejected`` counts them). Malformed
    PDUs are logged, counted in ``dropped()`` and skipped.
    """

    def __init__(self, tasks="all", lost_after_s=5.0, history=DEFAULT_HISTORY):
        frame_collector.__init__(self, "semcom_mtsc_sink", _tasks(tasks), TASKS, lost_after_s, history)
        self.rejected = 0
        for p in ("in", "rejected"):
            self.message_port_register_in(pmt.intern(p))
        self.set_msg_handler(pmt.intern("in"), self._on_task)
        self.set_msg_handler(pmt.intern("rejected"), self._on_rejected)

    @message_handler("rejected")
    def _on_rejected(self, msg):
        meta = _meta_dict(msg)
        reason = meta.get("reason", "")
        self.rejected += 1
        for task in self.branches:
            value = {task: "" if task in TEXT_TASKS else None, "reason": str(reason)}
            self._part(dict(meta, status="bad_input", latency_s=0.0), task, **value)

    def _lost_values(self):
        return {t: ("" if t in TEXT_TASKS else None) for t in self.branches}

    @message_handler("in")
    def _on_task(self, msg):
        meta = _meta_dict(msg)
        task = meta.get("task")
        if task not in TASKS:
            raise ValueError(f"task PDU with task {task!r}; expected one of {TASKS}")
        meta_number(meta, "latency_s", 0.0)
        if task == "reconstruction":
            img, _ = pdu_image(msg)
            self._part(meta, task, reconstruction=img)
        else:
            text = meta.get("text", "")
            if not isinstance(text, str):
                raise ValueError(f"metadata 'text' must be a string, got {text!r}")
            self._part(meta, task, **{task: text})
