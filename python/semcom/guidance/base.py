"""The guidance contract (no GNU Radio import): what a backend computes and what the link gets.

A *segmenter* backend turns (image, target phrase) into an importance heatmap. A *reasoner*
(an MLLM behind an OpenAI-compatible endpoint, or the offline rule-based parser in
``policy.py``) turns (image, question) into a :class:`QuestionAnalysis`: the target phrase and
whether the answer needs the wider scene. ``policy.py`` combines both with the channel state
into a :class:`Guidance`: heatmap, binary mask and the importance weight (channel uses per
pixel, critical : background).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["GuidanceError", "QuestionAnalysis", "Guidance", "Segmenter"]


class GuidanceError(RuntimeError):
    """A guidance backend could not answer (unreachable endpoint, malformed reply, refusal…).

    Callers fall back to uniform allocation and log the message; the link keeps running."""


@dataclass
class QuestionAnalysis:
    """What a question asks about."""

    target: str                    # the target phrase to segment ("" = nothing specific)
    needs_context: bool = False    # the answer needs the wider scene (relations, counting, "where")
    answer: str | None = None      # the reasoner's own answer, when it gives one
    source: str = "rules"          # "rules", "mllm", …


@dataclass
class Guidance:
    """Importance guidance for one image."""

    target: str
    heatmap: np.ndarray            # float32 (H, W) in [0, 1], image resolution
    mask: np.ndarray               # bool (H, W): the critical region
    weight: float                  # channel uses per pixel, critical : background (1.0 = uniform)
    policy: str = ""               # why this weight, in words (logged, reported)
    backend: str = ""
    fallback: str | None = None    # why uniform allocation was used instead, when it was
    extra: dict = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        """Fraction of pixels in the critical region."""
        return float(self.mask.mean()) if self.mask.size else 0.0


class Segmenter:
    """Text-conditioned importance: ``heatmap(image, phrase)`` → float32 (H, W) in [0, 1].

    ``image`` is RGB uint8 (H, W, 3) of any size; the map has the image's size. Subclasses
    set ``name`` and raise :class:`GuidanceError` when they cannot answer."""

    name = "segmenter"

    def heatmap(self, image: np.ndarray, phrase: str) -> np.ndarray:
        raise NotImplementedError
