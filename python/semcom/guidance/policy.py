"""The allocation policy: question + channel state + budget → importance weight (no GNU Radio).

Everything here is explicit rules, so a reader can predict the weight:

**Question analysis** (``analyse_question``, the offline reasoner; an MLLM can replace it,
``mllm.MllmClient``): the target phrase is the question's content words (wh-words,
auxiliaries, articles, pronouns and prepositions removed; "of the image/picture/photo"
dropped); the question *needs context* when it asks about relations or the wider scene
(where, why, how many, across, behind, next to, between, near, around, describe, scene,
happening, doing…). No content word → no target.

**Weight ladder** ``WEIGHTS = (1.0, 2.33, 4.0)`` (channel uses per pixel, critical :
background, the MLLM-SC paper's settings). ``choose_weight`` starts on the ladder from the
channel the receiver reported:

| estimated SNR | start |
| --- | --- |
| < 5 dB (poor: concentrate on what was asked) | 4.0 |
| ≥ 5 dB, or unknown | 2.33 |

then moves one step down (towards 1:1) when the question needs context, one step up when
the budget is tight (ρ < 1/16) and one step down when it is generous (ρ > 1/8), clamped to
the ladder. Uniform allocation (1.0) is used whatever the ladder says when there is no
target, the segmenter's confidence is below ``min_confidence``, the critical region is
empty or covers more than ``max_coverage`` of the image (nothing to favour), or a backend
failed (``fallback`` says why).
"""
from __future__ import annotations

import logging
import math
import re

import numpy as np

from .base import Guidance, GuidanceError, QuestionAnalysis, Segmenter

__all__ = ["WEIGHTS", "analyse_question", "choose_weight", "make_guidance", "uniform_guidance"]

log = logging.getLogger("gr-semcom.guidance")

WEIGHTS = (1.0, 2.33, 4.0)
POOR_SNR_DB = 5.0
TIGHT_RHO, GENEROUS_RHO = 1 / 16, 1 / 8

_STOP = set("""
a an the this that these those there here it its is are was were be been being am do does did
what which who whom whose when where why how whats wheres whos can could would should will shall may
might must of in on at to from by with for about into onto over under across behind above below
near between around beside besides next through and or but not no any some all image picture photo
photograph scene me you we they he she i my your our their his her them us see seen shown show
visible there's is there in front kind type color colour many much way doing happening
""".split())
_CONTEXT = re.compile(r"\b(where|why|how many|count|across|behind|beyond|next to|between|near|around|beside|"
                      r"surround\w*|describe|scene|happening|doing|relation\w*|left of|right of|in front of|"
                      r"background|overall|everything)\b")
_DROP = re.compile(r"\b(of|in) (the|this) (image|picture|photo|photograph|scene)\b")


def analyse_question(question: str) -> QuestionAnalysis:
    """Rule-based question analysis (see the module docstring); never raises on text."""
    q = _DROP.sub(" ", str(question or "").lower())
    words = re.findall(r"[a-z][a-z'-]*", q)
    content = [w.strip("'") for w in words if w.strip("'") not in _STOP and len(w) > 1]
    return QuestionAnalysis(target=" ".join(content), needs_context=bool(_CONTEXT.search(q)), source="rules")


def choose_weight(analysis: QuestionAnalysis, snr_db: float, rho: float) -> tuple[float, str]:
    """Ladder weight and the reason, from the question, the estimated SNR and the budget ρ."""
    if not analysis.target:
        return 1.0, "no target in the question: uniform"
    if snr_db is None or not math.isfinite(snr_db):
        i, why = 1, "no channel estimate"
    elif snr_db < POOR_SNR_DB:
        i, why = 2, f"poor channel ({snr_db:.1f} dB < {POOR_SNR_DB:g})"
    else:
        i, why = 1, f"channel {snr_db:.1f} dB"
    if analysis.needs_context:
        i, why = i - 1, why + ", question needs the scene"
    if rho < TIGHT_RHO:
        i, why = i + 1, why + f", tight budget (ρ={rho:.4g})"
    elif rho > GENEROUS_RHO:
        i, why = i - 1, why + f", generous budget (ρ={rho:.4g})"
    i = min(max(i, 0), len(WEIGHTS) - 1)
    return WEIGHTS[i], why


def uniform_guidance(shape, target: str = "", why: str = "", backend: str = "") -> Guidance:
    """The documented fallback: uniform allocation (weight 1, empty mask)."""
    h, w = shape[:2]
    if why:
        log.warning("guidance: uniform allocation: %s", why)
    return Guidance(target=target, heatmap=np.zeros((h, w), np.float32), mask=np.zeros((h, w), bool),
                    weight=1.0, policy="uniform", backend=backend, fallback=why or None)


def make_guidance(image: np.ndarray, question: str, snr_db: float | None, rho: float, segmenter: Segmenter,
                  reasoner=None, threshold: float = 0.5, min_confidence: float = 0.0, max_coverage: float = 0.8,
                  weight: float | None = None, target: str | None = None) -> Guidance:
    """Question + image + channel state → :class:`Guidance` (never raises on backend failures).

    ``reasoner``: an object with ``analyse(image, question, snr_db) -> QuestionAnalysis``
    (e.g. ``MllmClient``); when it fails, the rule-based ``analyse_question`` is used and the
    failure is logged. ``weight`` forces the weight (sweeps) instead of the policy; ``target``
    forces the phrase to segment (evaluation cases), the question still decides the context.
    """
    image = np.asarray(image)
    analysis, notes = None, []
    if target:
        analysis = QuestionAnalysis(target=str(target).strip(), needs_context=analyse_question(question).needs_context,
                                    source="given")
    elif reasoner is not None:
        try:
            analysis = reasoner.analyse(image, question, snr_db)
        except GuidanceError as e:
            notes.append(f"reasoner failed ({e}); rule-based analysis used")
            log.warning("guidance: %s", notes[-1])
    if analysis is None:
        analysis = analyse_question(question)
    name = getattr(segmenter, "name", "segmenter")
    if not analysis.target:
        return uniform_guidance(image.shape, why="; ".join(notes + ["no target phrase in the question"]),
                                backend=name)
    try:
        if hasattr(segmenter, "analyse"):
            heat, info = segmenter.analyse(image, analysis.target)
        else:
            heat, info = segmenter.heatmap(image, analysis.target), {}
    except GuidanceError as e:
        return uniform_guidance(image.shape, analysis.target, "; ".join(notes + [f"segmenter failed: {e}"]), name)
    heat = np.clip(np.nan_to_num(np.asarray(heat, np.float32)), 0.0, 1.0)
    mask = heat >= threshold
    conf = float(info.get("confidence", 1.0))
    if conf < min_confidence:
        return uniform_guidance(image.shape, analysis.target,
                                f"segmenter confidence {conf:.2f} < {min_confidence:g} for {analysis.target!r}", name)
    cover = float(mask.mean())
    if cover == 0.0 or cover > max_coverage:
        g = uniform_guidance(image.shape, analysis.target,
                             f"critical region covers {cover:.0%} of the image: nothing to favour", name)
        g.heatmap, g.mask = heat, mask
        return g
    if weight is None:
        weight, why = choose_weight(analysis, snr_db, rho)
    else:
        why = "weight set by the caller"
    return Guidance(target=analysis.target, heatmap=heat, mask=mask, weight=float(weight), policy=why,
                    backend=name, fallback="; ".join(notes) or None,
                    extra={"needs_context": analysis.needs_context, "analysis": analysis.source, **info})
