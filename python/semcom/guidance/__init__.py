"""Semantic guidance: question + image + channel state → importance map and allocation policy
(no GNU Radio import). See docs/guidance.md."""
from .base import Guidance, GuidanceError, QuestionAnalysis, Segmenter

__all__ = ["Guidance", "GuidanceError", "QuestionAnalysis", "Segmenter", "make_reasoner", "make_segmenter"]

SEGMENTERS = ("embedded", "clipseg:<models dir>")


def make_segmenter(spec="embedded", **kwargs) -> Segmenter:
    """A segmenter by name: ``"embedded"`` (offline, ships with gr-semcom) or
    ``"clipseg:<dir>"`` (the reference CLIPSeg exported into ``<dir>``); a ``Segmenter``
    instance is returned as is."""
    if isinstance(spec, Segmenter):
        return spec
    name, _, arg = str(spec).partition(":")
    if name == "embedded":
        from .embedded import EmbeddedSegmenter

        return EmbeddedSegmenter(**kwargs)
    if name == "clipseg" and arg:
        from .clipseg import ClipSegSegmenter

        return ClipSegSegmenter(arg, **kwargs)
    raise ValueError(f"unknown segmenter {spec!r}; choose one of {', '.join(SEGMENTERS)}")


def make_reasoner(url: str = "", model: str = "default", **kwargs):
    """An MLLM client for an OpenAI-compatible endpoint, or None (rule-based analysis) for ""."""
    if not url:
        return None
    from .mllm import MllmClient

    return MllmClient(url, model=model, **kwargs)
