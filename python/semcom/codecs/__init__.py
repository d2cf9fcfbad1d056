"""Semantic codecs and baselines (no GNU Radio import). See ``base.Codec`` for the contract."""
from .base import Codec, Csi, Encoded, as_rgb_uint8, pack_shape, rho, unpack_shape

__all__ = ["Codec", "Csi", "Encoded", "as_rgb_uint8", "pack_shape", "rho", "unpack_shape"]
