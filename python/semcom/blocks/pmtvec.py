"""PMT uniform vectors ↔ numpy arrays without a per-element conversion.

``pmt.init_c32vector(n, array)`` and ``pmt.c32vector_elements(v)`` convert element by element
through Python objects (about 25 % of the image link's CPU time at 256×256 went there). A
serialised uniform vector is: type tag (2 bytes), length (u32, big-endian), 1 pad count + 1 pad
byte, then the elements in big-endian order; ``pmt.deserialize_str`` / ``pmt.serialize_str``
parse and write that in C++, so building the bytes with numpy is a copy, not a loop.
"""
from __future__ import annotations

import numpy as np
import pmt

__all__ = ["c32_to_pmt", "pmt_to_c32", "f32_to_pmt", "pmt_to_f32", "u8_to_pmt", "pmt_to_u8"]


def _uvec_codec(make, dtype):
    head = pmt.serialize_str(make(0, []))[:2]

    def to_pmt(x):
        if isinstance(x, (bytes, bytearray, memoryview)):
            x = np.frombuffer(x, np.uint8)
        x = np.asarray(x, dtype=dtype).ravel()
        return pmt.deserialize_str(head + len(x).to_bytes(4, "big") + b"\x01\x00" + x.tobytes())

    def from_pmt(v):
        s = pmt.serialize_str(v)
        if s[:2] != head:
            raise ValueError("not a uniform vector of the expected type")
        return np.frombuffer(s, dtype, offset=8).astype(dtype[1:])

    return to_pmt, from_pmt


#: complex64 array ↔ c32vector
c32_to_pmt, pmt_to_c32 = _uvec_codec(pmt.init_c32vector, ">c8")
#: float32 array ↔ f32vector
f32_to_pmt, pmt_to_f32 = _uvec_codec(pmt.init_f32vector, ">f4")
#: uint8 array (or bytes) ↔ u8vector
u8_to_pmt, pmt_to_u8 = _uvec_codec(pmt.init_u8vector, ">u1")
