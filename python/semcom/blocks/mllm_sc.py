"""MLLM-SC edge–device message blocks: the edge's question gate and the device's uplink.

Both only route messages (no signal processing, no models); apps/mllm_sc uses them on either
side of a ZMQ uplink (device ``push_msg_sink`` → edge ``pull_msg_source``).

``question_gate`` (edge): demultiplexes the uplink into the question, the CSI reports and the
acks, and holds the images until the question is there, so that ``semantic_guidance`` guides
every image by it. ``device_uplink`` (device): sends the question (repeated until the first
image), one CSI report per received frame and one ack per image, as PMT dicts.
"""
import threading
import time

import pmt
from gnuradio import gr

from ._guard import MessageGuard, message_handler, meta_bytes, meta_dict, meta_int, meta_number

__all__ = ["question_gate", "device_uplink"]


def _dict_pmt(d):
    out = pmt.make_dict()
    for k, v in d.items():
        out = pmt.dict_add(out, pmt.intern(k), pmt.to_pmt(v))
    return out


def _pdu(d):
    """PDU with the dict ``d`` as metadata and an empty u8vector (the form the guidance reads)."""
    return pmt.cons(_dict_pmt(d), pmt.init_u8vector(0, []))


def _as_dict(msg):
    """Uplink message -> python dict (None when it is none of the accepted forms)."""
    if pmt.is_symbol(msg):
        return {"question": pmt.symbol_to_string(msg)}
    if pmt.is_pdu(msg):
        msg = pmt.car(msg)
    if pmt.is_bool(msg):
        return {"ack": 1}
    if pmt.is_dict(msg) and not pmt.is_null(msg):
        d = pmt.to_python(msg)
        return d if isinstance(d, dict) else None
    return None


class question_gate(MessageGuard, gr.basic_block):
    """MLLM-SC edge: uplink demultiplexer and question gate.

    Message input ``uplink`` (connect a ZMQ ``pull_msg_source``): PMT dicts from the device (a
    PDU whose metadata is such a dict, or a bare string = a question, are accepted too):

    * ``{"question": str, "target": str (optional)}`` → ``question`` as a PDU (the form
      ``semantic_guidance`` reads on its ``question`` port); the first one opens the gate, a
      later different one is published again (a repeated one is not);
    * ``{"snr_est_db": float, ...}`` (the device receiver's estimate) → ``csi`` as a PDU whose
      metadata has ``snr_est_db`` and ``t`` (connect the guidance's and the encoder's ``csi``);
    * ``{"ack": n}`` or ``PMT_T`` (the device's image sink got an image) → ``PMT_T`` on
      ``next`` (connect the image source's ``next``: stop-and-wait across the link).

    Message input ``in``: image PDUs, held until the first question has arrived, or until
    ``question_timeout_s`` passed after start (then ``default_question`` / ``default_target``
    are published as the question); they leave on ``out`` (connect ``semantic_guidance``'s
    ``in``) ``settle_s`` after the question was published, so that the guidance has the
    question before the first image.

    Prints ``[edge] question (<source>): '...'`` when the question is set. State for reports:
    ``question``, ``target``, ``question_source`` ("device", "default", "" before either),
    ``questions``, ``csi_reports``, ``last_snr_db``, ``acks``, ``held``, ``released`` (list of
    (image_id, question)). Malformed messages (an uplink message of none of the forms above or
    with a wrong-typed value, an image message that is not a PDU of a u8vector) are logged,
    counted (``dropped()``) and skipped.
    """

    def __init__(self, default_question="", default_target="", question_timeout_s=30.0, settle_s=0.2):
        gr.basic_block.__init__(self, name="semcom_question_gate", in_sig=None, out_sig=None)
        self.default_question, self.default_target = str(default_question), str(default_target)
        self.question_timeout_s, self.settle_s = float(question_timeout_s), float(settle_s)
        self.question, self.target, self.question_source = None, "", ""
        self.questions = self.csi_reports = self.acks = 0
        self.last_snr_db = float("nan")
        self.released = []
        self._held = []
        self._open = False
        self._lock = threading.Lock()
        self._timers = []
        for port in ("uplink", "in"):
            self.message_port_register_in(pmt.intern(port))
        for port in ("out", "question", "csi", "next"):
            self.message_port_register_out(pmt.intern(port))
        self.set_msg_handler(pmt.intern("uplink"), self._on_uplink)
        self.set_msg_handler(pmt.intern("in"), self._on_image)

    @property
    def held(self):
        """Images waiting for the question."""
        with self._lock:
            return len(self._held)

    def start(self):
        self._after(self.question_timeout_s, self._on_timeout)
        return True

    def stop(self):
        for t in self._timers:
            t.cancel()
        return True

    def _after(self, seconds, fn):
        t = threading.Timer(max(0.0, seconds), fn)
        t.daemon = True
        self._timers.append(t)
        t.start()

    def _log(self, text):
        print(f"[edge] {text}", flush=True)

    def _set_question(self, question, target, source):
        with self._lock:
            if (question, target) == (self.question, self.target):
                return
            first = self.question is None
            self.question, self.target, self.question_source = question, target, source
        self.message_port_pub(pmt.intern("question"), _pdu({"question": question, "target": target}))
        self._log(f"question ({source}): {question!r}" + (f", target {target!r}" if target else ""))
        if first:
            self._after(self.settle_s, self._release)

    def _on_timeout(self):
        if self.question is None:
            self._log(f"no question from the device within {self.question_timeout_s:g} s: "
                      f"using the default question")
            self._set_question(self.default_question, self.default_target, "default")

    def _release(self):
        with self._lock:
            held, self._held, self._open = self._held, [], True
        for msg in held:
            self._forward(msg)

    def _forward(self, msg):
        image_id = pmt.to_python(pmt.dict_ref(pmt.car(msg), pmt.intern("image_id"), pmt.from_long(-1)))
        self.released.append((image_id, self.question))
        self.message_port_pub(pmt.intern("out"), msg)

    @message_handler("in")
    def _on_image(self, msg):
        meta_dict(msg)
        if not pmt.is_u8vector(pmt.cdr(msg)):
            raise ValueError("expected an image PDU (u8vector of RGB pixels)")
        with self._lock:
            if not self._open:
                self._held.append(msg)
                return
        self._forward(msg)

    @message_handler("uplink")
    def _on_uplink(self, msg):
        d = _as_dict(msg)
        if d is None or not {"question", "snr_est_db", "ack"} & set(d):
            raise ValueError("uplink message is neither a question, a CSI report nor an ack")
        question, target = d.get("question"), d.get("target", "") or ""
        if "question" in d and (not isinstance(question, str) or not isinstance(target, str)):
            raise ValueError(f"question and target must be strings, got {question!r}, {target!r}")
        snr = meta_number(d, "snr_est_db") if "snr_est_db" in d else None  # checked before anything is used
        if "question" in d:
            self.questions += 1
            self._set_question(question, target, "device")
        if snr is not None:
            self.csi_reports += 1
            self.last_snr_db = snr
            self.message_port_pub(pmt.intern("csi"), _pdu({"snr_est_db": snr, "t": time.time()}))
        if "ack" in d:
            self.acks += 1
            self.message_port_pub(pmt.intern("next"), pmt.PMT_T)


class device_uplink(MessageGuard, gr.basic_block):
    """MLLM-SC device: question, CSI feedback and acks to the edge.

    Everything leaves on ``out`` (connect a ZMQ ``push_msg_sink``) as a PMT dict:

    * ``{"question": str, "target": str}``: when the flowgraph starts and again every
      ``repeat_s`` seconds until the first image arrived (a message on ``ack``), so that a
      question sent before the edge was listening is not lost; ``repeat_s`` <= 0 sends it once;
    * ``{"snr_est_db": float, "seq": int, "codec_id": int}``: one per frame the receiver decoded
      (connect ``ofdm_rx``'s ``out`` to ``csi``; only these header fields travel, not the
      symbols), the CSI feedback for the edge's encoder and guidance;
    * ``{"ack": n}``: one per message on ``ack`` (connect ``image_sink``'s ``ack``), which
      paces the edge's image source (stop-and-wait across the link).

    State for reports: ``questions_sent``, ``acks`` and ``frames``: per received frame a dict
    of ``seq``, ``codec_id``, ``snr_est_db`` and ``side_info`` (bytes; the importance codec's
    side information carries the weight used). Malformed CSI messages (not a PDU, no finite
    numeric ``snr_est_db``, wrong-typed ``seq``/``codec_id``/``side_info``) are logged, counted
    (``dropped()``) and skipped; any message on ``ack`` is an ack.
    """

    def __init__(self, question="", target="", repeat_s=1.0):
        gr.basic_block.__init__(self, name="semcom_device_uplink", in_sig=None, out_sig=None)
        self.question, self.target, self.repeat_s = str(question), str(target), float(repeat_s)
        self.questions_sent = self.acks = 0
        self.frames = []
        self._first_image = threading.Event()
        self._thread = None
        self.message_port_register_in(pmt.intern("csi"))
        self.message_port_register_in(pmt.intern("ack"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("csi"), self._on_csi)
        self.set_msg_handler(pmt.intern("ack"), self._on_ack)

    def start(self):
        self._first_image.clear()
        self._thread = threading.Thread(target=self._send_question, name="semcom-device-uplink", daemon=True)
        self._thread.start()
        return True

    def stop(self):
        self._first_image.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        return True

    def _send_question(self):
        msg = _dict_pmt({"question": self.question, "target": self.target})
        while True:
            self.message_port_pub(pmt.intern("out"), msg)
            self.questions_sent += 1
            if self.repeat_s <= 0 or self._first_image.wait(self.repeat_s):
                return

    @message_handler("csi")
    def _on_csi(self, msg):
        meta = meta_dict(msg)
        snr = meta_number(meta, "snr_est_db", required=True)
        seq, codec_id = meta_int(meta, "seq", -1, -1, 0xFFFF), meta_int(meta, "codec_id", -1, -1, 255)
        side = meta_bytes(meta, "side_info")
        self.frames.append(dict(seq=seq, codec_id=codec_id, snr_est_db=snr, side_info=side))
        self.message_port_pub(pmt.intern("out"), _dict_pmt({"snr_est_db": snr, "seq": seq, "codec_id": codec_id}))

    @message_handler("ack")
    def _on_ack(self, _msg):
        self.acks += 1
        self._first_image.set()
        self.message_port_pub(pmt.intern("out"), _dict_pmt({"ack": self.acks}))
