"""Semantic codecs and baselines (no GNU Radio import). See ``base.Codec`` for the contract."""
from .base import Codec, Csi, Encoded, as_rgb_uint8, pack_shape, rho, unpack_shape

__all__ = ["Codec", "Csi", "Encoded", "as_rgb_uint8", "pack_shape", "rho", "unpack_shape"]

CODECS = ("jscc", "separation", "importance_jscc")


def make_codec(name: str, rate: float = 1 / 12, **kwargs) -> Codec:
    """Codec by name: ``"jscc"`` (the embedded SNR-adaptive deep JSCC) or ``"separation"``
    (image codec + channel code + QAM at the same channel-use budget) or ``"importance_jscc"``
    (the deep JSCC with importance-aware allocation, MLLM-SC). ``rate`` is ρ."""
    if name == "jscc":
        from .jscc import JsccCodec

        return JsccCodec(rate=rate, **kwargs)
    if name == "separation":
        from .separation import SeparationCodec

        return SeparationCodec(rate=rate, **kwargs)
    if name == "importance_jscc":
        from .importance import ImportanceJsccCodec

        return ImportanceJsccCodec(rate=rate, **kwargs)
    raise ValueError(f"unknown codec {name!r}; available: {', '.join(CODECS)}")


__all__ += ["CODECS", "make_codec"]

#: text codecs (caption string ⇄ symbols; ``channel_uses(n_chars)``), apart from the image codecs above
TEXT_CODECS = ("ascii_hamming", "deepsc")


def make_text_codec(name: str, **kwargs):
    """Text codec by name: ``"ascii_hamming"`` (7-bit ASCII + Hamming(7,4) + 16-QAM with hard
    decisions, the digital caption baseline of VLF-MSC; codec id 10) or ``"deepsc"`` (the
    DeepSC transformer text JSCC; codec id 11)."""
    if name == "ascii_hamming":
        from .text_baselines import AsciiHammingCodec

        return AsciiHammingCodec(**kwargs)
    if name == "deepsc":
        from .deepsc import DeepScCodec

        return DeepScCodec(**kwargs)
    raise ValueError(f"unknown text codec {name!r}; available: {', '.join(TEXT_CODECS)}")


__all__ += ["TEXT_CODECS", "make_text_codec"]
