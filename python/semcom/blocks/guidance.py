"""MLLM-SC semantic guidance block: image PDU → the same PDU with an importance map attached.

The guidance (segmenter network, optional MLLM call) runs in a worker thread, never in a
message handler or ``work()``: images queue up in order and leave with their guidance, so a
slow backend delays images but never stalls the scheduler or the other blocks.

Metadata added to each image PDU (``semantic_encoder`` hands them to the codec as ``ctx``):
``importance`` (f32vector, H·W heatmap in [0, 1], row-major), ``weight`` (critical :
background channel uses per pixel), ``target``, ``policy``, ``fallback`` ("" when none),
``guidance_ms``, ``question``.
"""
from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pmt
from gnuradio import gr

from ..guidance import make_reasoner, make_segmenter
from ..guidance.policy import make_guidance, uniform_guidance
from ._guard import MessageGuard, message_handler, reject
from ._history import DEFAULT_HISTORY, history_buffer
from .image import csi_snr_db, image_pdu, pdu_image

__all__ = ["semantic_guidance"]


class semantic_guidance(MessageGuard, gr.basic_block):
    """Importance guidance for each image (see the module docstring).

    ``question``: the user's task request; a message on ``question`` replaces it (a PMT
    string/symbol, or a PDU/dict with key ``question``; an optional ``target`` key forces
    the phrase). ``segmenter``: "embedded" (offline, ships with gr-semcom) or
    "clipseg:<models dir>" (reference CLIPSeg ONNX export). ``mllm_url``: an
    OpenAI-compatible endpoint for the question analysis ("" = the rule-based parser).
    ``rate``: the link's budget ρ (the policy uses it). ``weight`` < 1 = the policy decides,
    else forced (sweeps). ``snr_db``: the channel state until the receiver reports one on
    ``csi`` (connect ``ofdm_rx``'s ``out``). ``threshold``: heatmap level of the critical
    mask. Counters: ``processed``, ``fallbacks``, ``dropped()`` (rejected messages: an image
    PDU that is malformed or empty, a question that is none of the forms above, a CSI report
    without a finite numeric ``snr_est_db``; each is logged and skipped). ``log``: one dict per
    guided image (``image_id``, ``target``, ``weight``, ``policy``, ``fallback``, ``coverage``,
    ``guidance_ms``), the newest ``history`` of them (a ring buffer, default 10000; ``processed``
    counts them all).
    """

    def __init__(self, question="", segmenter="embedded", mllm_url="", mllm_model="default", rate=1 / 12,
                 weight=-1.0, snr_db=10.0, threshold=0.5, target="", mllm_timeout_s=10.0, history=DEFAULT_HISTORY):
        gr.basic_block.__init__(self, "semcom_semantic_guidance", None, None)
        self.segmenter = make_segmenter(segmenter)
        self.reasoner = make_reasoner(mllm_url, mllm_model, timeout=mllm_timeout_s)
        self.question, self.target = str(question), str(target)
        self.rate, self.threshold = float(rate), float(threshold)
        self.weight = None if float(weight) < 1.0 else float(weight)
        self.snr_db = float(snr_db)
        self.processed = self.fallbacks = 0
        self.log = history_buffer(history)
        self._q = queue.Queue()
        self._thread = None
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_in(pmt.intern("question"))
        self.message_port_register_in(pmt.intern("csi"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("in"), self._on_image)
        self.set_msg_handler(pmt.intern("question"), self._on_question)
        self.set_msg_handler(pmt.intern("csi"), self._on_csi)

    def start(self):
        self._thread = threading.Thread(target=self._run, name="semcom-guidance", daemon=True)
        self._thread.start()
        return True

    def stop(self):
        self._q.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        return True

    @message_handler("in")
    def _on_image(self, msg):
        pixels, meta = pdu_image(msg)  # decoded here, so that a bad PDU is rejected at once
        if pixels is None:
            raise ValueError("empty image PDU")
        self._q.put((pixels, meta))  # the worker thread does the guidance

    @message_handler("question")
    def _on_question(self, msg):
        if pmt.is_symbol(msg):
            self.question, self.target = pmt.symbol_to_string(msg), ""
            return
        d = pmt.to_python(msg if pmt.is_dict(msg) else pmt.car(msg) if pmt.is_pair(msg) else msg)
        if not isinstance(d, dict) or "question" not in d:
            raise ValueError("'question' expects a string or a dict with key 'question'")
        question, target = d["question"], d.get("target", "")
        if not isinstance(question, str) or not isinstance(target, str):
            raise ValueError(f"question and target must be strings, got {question!r}, {target!r}")
        self.question, self.target = question, target

    @message_handler("csi")
    def _on_csi(self, msg):
        self.snr_db = csi_snr_db(msg)

    def _run(self):
        while True:
            item = self._q.get()
            if item is None:
                return
            try:
                self._process(*item)
            except Exception as e:  # never let one image kill the worker
                reject(self, "in", e)

    def _process(self, pixels, meta):
        t0 = time.perf_counter()
        try:
            g = make_guidance(pixels, self.question, self.snr_db, self.rate, self.segmenter, self.reasoner,
                              threshold=self.threshold, weight=self.weight, target=self.target or None)
        except Exception as e:  # a backend bug: documented fallback, the link keeps running
            g = uniform_guidance(pixels.shape, why=f"guidance failed: {e}", backend=getattr(self.segmenter, "name", ""))
        ms = (time.perf_counter() - t0) * 1e3
        self.processed += 1
        self.fallbacks += g.fallback is not None and g.weight == 1.0
        self.log.append(dict(image_id=meta.get("image_id"), target=g.target, weight=g.weight, policy=g.policy,
                             fallback=g.fallback or "", coverage=g.coverage, guidance_ms=ms))
        out = dict(meta, importance=np.ascontiguousarray(g.heatmap, np.float32).ravel(), weight=g.weight,
                   target=g.target, policy=g.policy, fallback=g.fallback or "", guidance_ms=ms, question=self.question)
        self.message_port_pub(pmt.intern("out"), image_pdu(pixels, out))
