"""QT GUI blocks of gr-semcom: the received image and the receiver's readouts in a Qt window.

Both are message blocks with a widget, used like GNU Radio's own qtgui sinks: the block
object has ``qwidget()`` (the QWidget to place; GRC's ``gui_hint`` puts it into the grid of
a ``qt_gui`` flowgraph). They are thread-safe: the message handler (a GNU Radio thread) only
parses the PDU and emits a Qt signal; the widget is updated in the Qt GUI thread by the
queued slot. Malformed PDUs are logged and counted (``dropped()``, also ``malformed``), never raised.

* ``qt_image_view``: decoded image PDUs (``semantic_decoder`` → this block; format in
  ``semcom.blocks.image``) → the image, scaled to the widget, with a caption (seq, status,
  estimated SNR). A frame of the importance codec carries ``importance_levels``: ``mask``
  "overlay" tints it red on the image, "beside" shows the tinted copy next to it, "off"
  ignores it. An empty PDU (nothing decoded) keeps the last image and says so in the caption.
* ``qt_rx_readout``: ``ofdm_rx`` PDUs (or any PDU with scalar metadata) → a live table of
  chosen metadata keys (default ``snr_est_db``, ``header_failures``, ``cfo``) plus a frame
  counter. The stock ``qtgui number sink`` takes streams; this reads the PDU metadata
  directly, one update per frame.

``verbose`` prints one line per item to stdout (handy in logs and tests). PyQt5 is imported
only by this module: ``from gnuradio import semcom`` loads it on first use of these names.
"""
from __future__ import annotations

import sys
import threading

import numpy as np
import pmt
from gnuradio import gr
from PyQt5 import QtCore, QtGui, QtWidgets

from ._guard import MessageGuard, message_handler, meta_int, meta_number
from .image import overlay, pdu_image

__all__ = ["qt_image_view", "qt_rx_readout", "rgb_qimage"]


def rgb_qimage(pixels: np.ndarray) -> QtGui.QImage:
    """(H, W, 3) uint8 → QImage (RGB888, owning a copy of the pixels)."""
    a = np.ascontiguousarray(pixels, np.uint8)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 pixels, got shape {a.shape}")
    h, w = a.shape[:2]
    return QtGui.QImage(a.data, w, h, 3 * w, QtGui.QImage.Format_RGB888).copy()


_SAY_LOCK = threading.Lock()


def _say(line):
    """One whole log line to stdout: views in several flowgraph threads never interleave."""
    with _SAY_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class _Bridge(QtCore.QObject):
    """Lives in the GUI thread: ``update`` emitted from a GNU Radio thread is queued to the
    GUI thread's event loop, where ``callback`` (the widget update) runs."""
    update = QtCore.pyqtSignal(object)

    def __init__(self, callback, parent):
        super().__init__(parent)
        self._callback = callback
        self.update.connect(self._run, QtCore.Qt.QueuedConnection)

    @QtCore.pyqtSlot(object)
    def _run(self, item):
        self._callback(item)


class _ImageLabel(QtWidgets.QLabel):
    """A label that keeps its pixmap's aspect ratio when resized."""

    def __init__(self, min_size):
        super().__init__()
        self._pix = None
        self.setAlignment(QtCore.Qt.AlignCenter)
        self.setMinimumSize(min_size, min_size)
        self.setSizePolicy(QtWidgets.QSizePolicy.Expanding, QtWidgets.QSizePolicy.Expanding)

    def set_image(self, qimg: QtGui.QImage):
        self._pix = QtGui.QPixmap.fromImage(qimg)
        self._rescale()

    def image_size(self):
        """(width, height) of the image held (not the scaled copy shown), or None."""
        return None if self._pix is None else (self._pix.width(), self._pix.height())

    def resizeEvent(self, ev):
        super().resizeEvent(ev)
        self._rescale()

    def _rescale(self):
        if self._pix is not None:
            self.setPixmap(self._pix.scaled(self.size(), QtCore.Qt.KeepAspectRatio, QtCore.Qt.FastTransformation))


class qt_image_view(MessageGuard, gr.basic_block):
    """Decoded image PDUs → the received image in a Qt widget (see the module docstring).

    ``label``: title above the image; ``mask``: "overlay", "beside" or "off" (importance
    map of the MLLM-SC codec); ``min_size``: minimum edge of the image area in pixels;
    ``verbose``: print one line per PDU. Counters: ``received``, ``shown``, ``empty``,
    ``dropped()`` (malformed PDUs: logged and skipped; ``malformed`` is the same count).
    """

    MASK_MODES = ("overlay", "beside", "off")

    def __init__(self, label="Received image", mask="overlay", min_size=256, verbose=False, parent=None):
        gr.basic_block.__init__(self, "semcom_qt_image_view", None, None)
        if mask not in self.MASK_MODES:
            raise ValueError(f"mask must be one of {self.MASK_MODES}, got {mask!r}")
        if int(min_size) < 16:
            raise ValueError("min_size >= 16 required")
        self.mask, self.verbose = mask, bool(verbose)
        self.received = self.shown = self.empty = 0
        self._lock = threading.Lock()
        self._widget = QtWidgets.QGroupBox(str(label), parent)
        lay = QtWidgets.QVBoxLayout(self._widget)
        row = QtWidgets.QHBoxLayout()
        self.image_label = _ImageLabel(int(min_size))
        self.mask_label = _ImageLabel(int(min_size))
        self.mask_label.setVisible(mask == "beside")
        row.addWidget(self.image_label)
        row.addWidget(self.mask_label)
        lay.addLayout(row)
        self.caption = QtWidgets.QLabel("waiting for the first image")
        self.caption.setAlignment(QtCore.Qt.AlignCenter)
        lay.addWidget(self.caption)
        self._bridge = _Bridge(self._show, self._widget)
        self.message_port_register_in(pmt.intern("in"))
        self.set_msg_handler(pmt.intern("in"), self._handle)

    def qwidget(self) -> QtWidgets.QWidget:
        """The widget to place in the window (GRC: ``gui_hint``)."""
        return self._widget

    @property
    def malformed(self) -> int:
        """Malformed PDUs (= ``dropped()``)."""
        return self.dropped()

    # GNU Radio message thread: parse, then hand over to the GUI thread
    @message_handler("in")
    def _handle(self, msg):
        image, meta = pdu_image(msg)
        # the caption's fields, checked here (an exception in the Qt slot would abort the GUI)
        meta = dict(meta, seq=meta_int(meta, "seq", -1, -1, 0xFFFF), snr_est_db=meta_number(meta, "snr_est_db", np.nan, finite=False),
                    status=str(meta.get("status", "ok")))
        item = dict(meta=meta, image=None, masked=None, top_level=0)
        if image is not None:
            item["image"] = rgb_qimage(image)
            levels = meta.get("importance_levels")
            if levels is not None and not isinstance(levels, (np.ndarray, list, tuple)):
                raise ValueError(f"metadata 'importance_levels' must be a u8vector, got {type(levels).__name__}")
            if self.mask != "off" and levels is not None and len(levels) == image.shape[0] * image.shape[1]:
                levels = np.asarray(levels).reshape(image.shape[:2])
                item["masked"] = rgb_qimage(overlay(image, levels))
                item["top_level"] = int(levels.max())
        with self._lock:
            self.received += 1
            if image is None:
                self.empty += 1
            else:
                self.shown += 1
        if self.verbose:
            h, w = (0, 0) if image is None else image.shape[:2]
            _say(f"semcom qt_image_view: seq {meta.get('seq', -1)} {meta.get('status', 'ok')} "
                 f"{w}x{h} snr_est {float(meta.get('snr_est_db', np.nan)):.1f} dB")
        self._bridge.update.emit(item)

    # Qt GUI thread
    def _show(self, item):
        meta = item["meta"]
        if item["image"] is not None:
            main = item["masked"] if (self.mask == "overlay" and item["masked"] is not None) else item["image"]
            self.image_label.set_image(main)
            if self.mask == "beside" and item["masked"] is not None:
                self.mask_label.set_image(item["masked"])
        snr = float(meta.get("snr_est_db", np.nan))
        text = f"seq {int(meta.get('seq', -1))} · {meta.get('status', 'ok')} · est. SNR {snr:.1f} dB"
        if item["image"] is None:
            text += " · nothing decoded (last image kept)"
        elif item["masked"] is not None:
            text += " · important regions in red" if item["top_level"] > 0 else " · uniform importance"
        self.caption.setText(text)


class qt_rx_readout(MessageGuard, gr.basic_block):
    """``ofdm_rx`` PDUs → live readout of metadata keys in a Qt widget.

    ``keys``: metadata keys shown, one row each (scalars and strings, long strings such as a
    caption word-wrapped; vectors show their length);
    ``label``: title; ``precision``: decimals of float values; ``verbose``: print one line
    per PDU. Counters: ``received``, ``dropped()`` (malformed PDUs: logged and skipped;
    ``malformed`` is the same count); ``values`` holds the last value per key.
    """

    def __init__(self, keys=("snr_est_db", "header_failures", "cfo"), label="Receiver", precision=2,
                 verbose=False, parent=None):
        gr.basic_block.__init__(self, "semcom_qt_rx_readout", None, None)
        if isinstance(keys, str):
            keys = [k.strip() for k in keys.split(",") if k.strip()]
        self.keys = [str(k) for k in keys]
        if not self.keys:
            raise ValueError("at least one metadata key required")
        self.precision, self.verbose = int(precision), bool(verbose)
        self.received = 0
        self.values = {}
        self._lock = threading.Lock()
        self._widget = QtWidgets.QGroupBox(str(label), parent)
        form = QtWidgets.QFormLayout(self._widget)
        self.fields = {}
        for k in ["frames"] + self.keys:
            v = QtWidgets.QLabel("–")
            v.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
            v.setWordWrap(True)  # a long string value (e.g. a caption) wraps instead of widening the window
            f = v.font()
            f.setBold(True)
            v.setFont(f)
            form.addRow(k, v)
            self.fields[k] = v
        self._bridge = _Bridge(self._show, self._widget)
        self.message_port_register_in(pmt.intern("in"))
        self.set_msg_handler(pmt.intern("in"), self._handle)

    def qwidget(self) -> QtWidgets.QWidget:
        """The widget to place in the window (GRC: ``gui_hint``)."""
        return self._widget

    def _fmt(self, v):
        if v is None:
            return "–"
        if isinstance(v, (bool, np.bool_)):
            return str(bool(v))
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            return f"{float(v):.{self.precision}f}"
        if isinstance(v, (str, bytes)):
            return v if isinstance(v, str) else f"{len(v)} bytes"
        try:
            return f"[{len(v)}]"
        except TypeError:
            return str(v)

    @property
    def malformed(self) -> int:
        """Malformed PDUs (= ``dropped()``)."""
        return self.dropped()

    @message_handler("in")
    def _handle(self, msg):
        if not pmt.is_pair(msg) or not pmt.is_dict(pmt.car(msg)):
            raise ValueError("expected a PDU (pair of metadata dict and vector)")
        d = pmt.car(msg)
        vals = {}
        for k in self.keys:
            ref = pmt.dict_ref(d, pmt.intern(k), pmt.PMT_NIL)
            if pmt.is_uniform_vector(ref):
                vals[k] = f"[{pmt.length(ref)}]"
            else:
                vals[k] = None if pmt.is_null(ref) else pmt.to_python(ref)
        with self._lock:
            self.received += 1
            n = self.received
            self.values.update(vals)
        text = {k: self._fmt(v) for k, v in vals.items()}
        text["frames"] = str(n)
        if self.verbose:
            _say("semcom qt_rx_readout: " + " ".join(f"{k}={v}" for k, v in text.items()))
        self._bridge.update.emit(text)

    def _show(self, text):
        for k, v in text.items():
            self.fields[k].setText(v)
