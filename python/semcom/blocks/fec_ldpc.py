"""GNU Radio's gr-fec LDPC code as a ``semcom.codecs`` channel code (the "gr-fec" backend).

Importing this module registers the backend with ``semcom.codecs.channel_codes``, after
which ``ldpc_code(rate)`` (and the separation codec) use gr-fec instead of the numpy
fallback. No flowgraph is involved: the FECAPI objects ``fec.ldpc_encoder`` and
``fec.ldpc_decoder`` (C++, sum-product decoding) are called directly through their
``generic_work(in, out)`` method, which pybind11 exposes with ``void*`` buffers passed as
PyCapsules; the capsules wrap numpy arrays that stay alive for the call.

gr-fec conventions bridged here. ``ldpc_decoder`` (3.10) runs sum-product in the
likelihood-ratio domain, starting from P(1)/P(0) = exp(x / 2σ²) for an input value x: with
σ² = ½ the input is exactly log P(1)/P(0), so the codec's LLRs (log P(0)/P(1)) are negated. Its
probability-domain updates break down numerically for large LLRs (garbage decisions at
high SNR; upstream GNU Radio PR #6748), so LLRs are clipped to ±8 first. Measured here with
the separation codec's frames: at ±30 frames fail on AWGN far above the MCS thresholds; at
±10…16 they fail when reliable and unreliable symbols mix (half the symbols at −10 dB, the
rest at 12 dB, where the numpy decoder decodes every frame); ±6…8 decode those and leave
the AWGN thresholds unchanged. The decoder returns the
systematic bits of its final estimate whether or not the parity checks hold, like the
numpy decoder. Encoder and decoder keep state between calls, so each code serialises its
calls with a lock.
"""
from __future__ import annotations

import ctypes
import os
import tempfile
import threading

import numpy as np
from gnuradio import fec

from ..codecs.channel_codes import ChannelCode, register_ldpc_backend

__all__ = ["GrFecLdpc"]

_LLR_CLIP = 8.0      # see the module docstring

_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


def _ptr(a: np.ndarray):
    """A PyCapsule holding the data pointer of a C-contiguous numpy array (``void*`` for pybind11)."""
    return _capsule_new(a.ctypes.data, None, None)


class GrFecLdpc(ChannelCode):
    """``fec.ldpc_encoder`` + ``fec.ldpc_decoder`` built from alist text, one codeword per call."""

    def __init__(self, name: str, alist_text: str, max_iter: int = 50):
        self.name = name
        fd, path = tempfile.mkstemp(suffix=".alist", prefix="semcom_ldpc_")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(alist_text)
            self._enc = fec.ldpc_encoder_make(path)           # both read the file when built
            self._dec = fec.ldpc_decoder.make(path, float(np.sqrt(0.5)), int(max_iter))  # σ² = ½: input = −LLR
        finally:
            os.unlink(path)
        self.k, self.n = self._enc.get_input_size(), self._enc.get_output_size()
        if (self._dec.get_input_size(), self._dec.get_output_size()) != (self.n, self.k):
            raise RuntimeError(f"gr-fec LDPC encoder and decoder disagree on the code size of {name}")
        self._lock = threading.Lock()

    def encode(self, bits):
        u = np.ascontiguousarray(self._words(np.asarray(bits, np.uint8), self.k, "information"))
        out = np.empty((u.shape[0], self.n), np.uint8)
        with self._lock:
            for i in range(u.shape[0]):
                self._enc.generic_work(_ptr(u[i]), _ptr(out[i]))
        return out.reshape(-1)

    def decode(self, llr):
        L = self._words(np.asarray(llr, np.float32), self.n, "LLR")
        soft = np.ascontiguousarray(-np.clip(np.nan_to_num(L), -_LLR_CLIP, _LLR_CLIP), np.float32)
        out = np.empty((soft.shape[0], self.k), np.uint8)
        with self._lock:
            for i in range(soft.shape[0]):
                self._dec.generic_work(_ptr(soft[i]), _ptr(out[i]))
        return out.reshape(-1)


register_ldpc_backend("gr-fec", GrFecLdpc)
