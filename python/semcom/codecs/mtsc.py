"""LAM multi-task semantic communication: one transmission serving VQA, three captioning tasks and
image reconstruction (runtime: ONNX Runtime + numpy, no torch, no GNU Radio).

Ni, Qin, Sun, Tao, Han, *Multi-Task Semantic Communications via Large Models* (Fig. 1, Fig. 4b).
The transmitter encodes an image, a question, an audio clip and a video clip with modality
encoders, fuses them with the LAM encoder into one semantic sequence of ``Layout.length`` tokens
and maps each token onto up to ``r_max`` analog complex symbols (the JSC encoder). The receiver
decodes the symbols back into a sequence (JSC decoder) which the LAM decoder and the task
decoders turn into the VQA answer, the image, audio and video captions and the reconstructed
image: every task from the same received symbols.

**Importance-aware variable-rate coding.** The JSC encoder's symbols of a token are nested: any
prefix of r of them describes the token (coarser for smaller r). For each group of ``GROUP``
consecutive tokens the transmitter picks a rate level from ``LEVELS`` (symbols per token, 0 =
the group is dropped), by a greedy allocation that maximises Σ wᵍ·nᵍ·(D(0) − D(rᵍ, SNR)) under
the payload budget, where wᵍ is the group's mean token importance (the attention its tokens
receive in the LAM encoder's last layer, normalised to mean 1), nᵍ its token count and D(r, SNR)
the measured distortion of a token sent with r symbols at that SNR (the JSC decoder's normalised
squared error, calibrated on validation items after training and stored in the encoder's
manifest entry). The SNR is the receiver's report (``ctx["snr_db"]``, the transmitter's CSI).
At low SNR the allocation concentrates symbols on important groups and drops the least
important ones; at high SNR it spreads fewer symbols over more groups. ``rate="fixed"`` gives
every group the same level instead (the fixed-rate coder the variable-rate one is compared with).

The rate map travels as 6 bytes of side information (CRC-checked by the PHY's header code, and
counted: ``channel_uses`` = payload symbols + ``importance.side_cost(6)``; the payload budget is
the item budget minus that cost): bit 0 the mode, bits 1–5 the question length, then 3 bits per
group (the level index).

Receiver: each received symbol is shrunk by the LMMSE factor 1/(1+σ²ₖ) with the receiver's own
per-symbol noise variance (``Csi.per_symbol``) and handed to the JSC decoder with its mask and
log σ²ₖ; the symbols a token did not get are zeros with mask 0. Tokens that got none are masked
out of the LAM decoder's cross-attention.

Statuses (``last_status``): ``ok``; ``truncated`` (fewer symbols than the rate map announces:
the rest count as not received; the outputs are produced but flagged); ``no_symbols``;
``nonfinite_symbols`` (none is finite); ``below_snr_floor`` (the receiver's SNR estimate is
under ``min_snr_db``: nothing decoded); ``bad_side_info`` (the rate map is not one this codec
wrote). Bad input at the transmitter (empty question, silent or non-finite audio, a video that
is not (T, H, W, 3), a non-image) raises ValueError with the reason.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from ..runtime import load_model
from ..runtime.manifest import default_models_dir, load_manifest
from .base import Csi, as_rgb_uint8
from .importance import side_cost
from .mtsc_inputs import EOS, GROUP, UNK, LEVELS, PAD, Layout, Vocab, image_input, log_mel, video_input

__all__ = ["MtscCodec", "MtscEncoded", "STATUSES", "DECODED", "SIDE_LEN", "allocate", "pack_rate_map",
           "unpack_rate_map", "prepare", "TASKS"]

log = logging.getLogger("gr-semcom.codecs.mtsc")

TASKS = ("vqa", "caption_image", "caption_audio", "caption_video", "reconstruction")
TEXT_TASKS = TASKS[:4]
STATUSES = ("ok", "truncated", "no_symbols", "nonfinite_symbols", "below_snr_floor", "bad_side_info")
DECODED = ("ok", "truncated")
SIDE_LEN = 6
MODES = ("adaptive", "fixed")
_LEVEL_BITS = 3
DEFAULT_BUDGET = 1024


@dataclass
class MtscEncoded:
    """What the transmitter hands the PHY for one item."""
    symbols: np.ndarray
    side_info: bytes
    meta: dict = field(default_factory=dict)


def pack_rate_map(mode: str, q_len: int, levels) -> bytes:
    """(mode, question length 0…31, one level index 0…7 per group) → ``SIDE_LEN`` bytes."""
    levels = [int(v) for v in levels]
    if mode not in MODES or not 0 <= int(q_len) < 32 or any(not 0 <= v < 2 ** _LEVEL_BITS for v in levels):
        raise ValueError(f"cannot pack rate map (mode {mode!r}, question length {q_len}, levels {levels})")
    bits = [MODES.index(mode)] + [(int(q_len) >> (4 - k)) & 1 for k in range(5)]
    for v in levels:
        bits += [(v >> (_LEVEL_BITS - 1 - k)) & 1 for k in range(_LEVEL_BITS)]
    if len(bits) > 8 * SIDE_LEN:
        raise ValueError(f"{len(levels)} groups do not fit in {SIDE_LEN} bytes of side information")
    bits += [0] * (8 * SIDE_LEN - len(bits))
    return np.packbits(np.asarray(bits, np.uint8)).tobytes()


def unpack_rate_map(side: bytes, n_groups: int) -> tuple[str, int, np.ndarray]:
    """Inverse of :func:`pack_rate_map`; ValueError for side information of the wrong size."""
    if len(side) != SIDE_LEN:
        raise ValueError(f"rate map must be {SIDE_LEN} bytes, got {len(side)}")
    bits = np.unpackbits(np.frombuffer(bytes(side), np.uint8)).astype(int)
    q_len = int(bits[1:6] @ (1 << np.arange(4, -1, -1)))
    lv = bits[6:6 + _LEVEL_BITS * n_groups].reshape(n_groups, _LEVEL_BITS) @ (1 << np.arange(_LEVEL_BITS - 1, -1, -1))
    return MODES[bits[0]], q_len, lv.astype(np.int64)


def _interp_distortion(table: np.ndarray, snr_grid: np.ndarray, snr_db: float) -> np.ndarray:
    """D(level) at ``snr_db`` (linear interpolation over the grid, clamped at its ends)."""
    return np.array([np.interp(snr_db, snr_grid, row) for row in table])


def allocate(importance, valid, budget: int, snr_db: float, table, snr_grid, mode: str = "adaptive",
             group: int = GROUP, levels=LEVELS) -> np.ndarray:
    """Level index per group of ``group`` tokens within ``budget`` payload symbols.

    ``importance``/``valid``: per token; ``table`` (len(levels), len(snr_grid)): D(level, SNR).
    ``adaptive``: greedy on the importance-weighted distortion drop per symbol (each step takes
    the best ratio over every higher level of every group, so non-convex steps are found);
    ``fixed``: the highest level all groups with a valid token can share, then the next level
    for groups in sequence order while the budget lasts (neither importance nor SNR used)."""
    valid = np.asarray(valid, np.float64)
    imp = np.asarray(importance, np.float64) * valid
    n_g = valid.reshape(-1, group).sum(1)
    G = n_g.size
    lv = np.asarray(levels)
    out = np.zeros(G, np.int64)
    live = n_g > 0
    if mode == "fixed":
        for k in range(len(lv) - 1, 0, -1):
            if (n_g[live] * lv[k]).sum() <= budget:
                out[live] = k
                break
        spent = int((n_g * lv[out]).sum())
        if out.max(initial=0) < len(lv) - 1:
            for g in np.flatnonzero(live):
                extra = n_g[g] * (lv[out[g] + 1] - lv[out[g]])
                if spent + extra <= budget:
                    out[g] += 1
                    spent += extra
        return out
    if mode != "adaptive":
        raise ValueError(f"rate mode must be one of {MODES}, got {mode!r}")
    mean = imp.sum() / max(valid.sum(), 1.0)
    w = imp.reshape(-1, group).sum(1) / np.maximum(n_g, 1) / (mean if mean > 0 else 1.0)
    D = _interp_distortion(np.asarray(table, np.float64), np.asarray(snr_grid, np.float64), snr_db)
    spent = 0
    while True:
        best, arg = 0.0, None
        for g in np.flatnonzero(live):
            cur = out[g]
            for k in range(cur + 1, len(lv)):
                cost = n_g[g] * (lv[k] - lv[cur])
                if spent + cost > budget:
                    break
                gain = w[g] * n_g[g] * (D[cur] - D[k]) / cost
                if gain > best:
                    best, arg = gain, (g, k, cost)
        if arg is None:
            return out
        g, k, cost = arg
        out[g] = k
        spent += cost


def prepare(image, question: str, audio, video, vocab: Vocab, layout: Layout, image_size: int = 64,
            sample_rate: int = 16000, strict: bool = True) -> dict:
    """An item's raw inputs → the encoder's feeds (batch 1). ValueError for bad input; with
    ``strict`` False an empty question and silent audio are let through (a receiver that runs
    the LAM on what arrived)."""
    if not isinstance(question, str) or (strict and not question.strip()):
        raise ValueError("empty question: the VQA task needs a question")
    q, qm = vocab.question_ids(question, layout.question)
    if strict and not (q[qm > 0] != UNK).any():
        raise ValueError(f"the question {question!r} has no word the model knows")
    a = np.asarray(audio, np.float64).ravel()
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError("audio is empty or has non-finite samples")
    if strict and np.abs(a).max() < 1e-4:
        raise ValueError("silent audio (peak below -80 dBFS): nothing to caption")
    img = image_input(as_rgb_uint8(image), image_size)
    vid = video_input(np.asarray(video))
    return {"image": img[None], "q_ids": q[None], "q_mask": qm[None],
            "mel": log_mel(a, sample_rate)[None], "video": vid[None].astype(np.float32)}


class MtscCodec:
    """The multi-task codec over a models directory (default: the shipped embedded tier).

    ``prefix``: "mtsc" (the LAM-based system) or "udeepsc" (the U-DeepSC-like baseline without
    a LAM), the name stem of the four models ``<prefix>_enc``, ``_jscdec``, ``_lm``, ``_rec``;
    ``budget``: complex channel uses per item, side information included; ``rate``:
    "adaptive" (importance- and SNR-aware) or "fixed"; ``min_snr_db``: below it nothing is
    decoded. Models load on first use (a transmitter loads only the encoder).
    """

    codec_id = 12

    def __init__(self, models_dir=None, prefix="mtsc", budget=DEFAULT_BUDGET, rate="adaptive", min_snr_db=-15.0,
                 providers=None, threads=None):
        if rate not in MODES:
            raise ValueError(f"rate must be one of {MODES}, got {rate!r}")
        self.models_dir = default_models_dir() if models_dir is None else models_dir
        self.prefix, self.rate, self.min_snr_db = str(prefix), rate, float(min_snr_db)
        self.providers, self.threads = providers, threads
        self.name = f"{self.prefix}_{rate}"
        entry = load_manifest(self.models_dir).entry(f"{self.prefix}_enc")
        x = entry.extra
        self.vocab = Vocab(x["vocab"][len(Vocab([]).tokens):])
        self.layout = Layout(**x["layout"])
        self.r_max = int(x["r_max"])
        self.max_target = int(x["max_target"])
        self.image_size = int(x["image_size"])
        self.levels = tuple(x["levels"])
        self.group = int(x["group"])
        self.table = np.asarray(x["distortion"], np.float64)
        self.snr_grid = np.asarray(x["distortion_snr_db"], np.float64)
        self.n_groups = self.layout.length // self.group
        self.budget = int(budget)
        self.side_uses = side_cost(SIDE_LEN)
        if self.budget - self.side_uses < self.n_groups:
            raise ValueError(f"budget {budget} leaves {self.budget - self.side_uses} payload symbols after the "
                             f"{self.side_uses} of the rate map; need at least {self.n_groups}")
        self._m = {}
        self.last_status = "ok"

    def _model(self, part):
        if part not in self._m:
            self._m[part] = load_model(f"{self.prefix}_{part}", self.models_dir, self.providers, self.threads)
        return self._m[part]

    @property
    def payload_budget(self) -> int:
        return self.budget - self.side_uses

    # ------------------------------------------------------------------ transmitter
    def prepare(self, image, question, audio, video, sample_rate=16000, strict=True) -> dict:
        return prepare(image, question, audio, video, self.vocab, self.layout, self.image_size, sample_rate, strict)

    def encode(self, feeds: dict, snr_db: float = 10.0, rate: str | None = None) -> MtscEncoded:
        """Encoder feeds (:meth:`prepare`) + the reported SNR → symbols + rate map."""
        mode = rate or self.rate
        out = self._model("enc").run(feeds)
        lv_idx = allocate(out["importance"][0], out["valid"][0], self.payload_budget, float(snr_db), self.table,
                          self.snr_grid, mode, self.group, self.levels)
        return self._pack(out, feeds, lv_idx, mode, snr_db)

    def decode_clean(self, feeds: dict, tasks=TASKS) -> dict:
        """The LAM on clean inputs: every token at the full rate over a noiseless channel (the
        receiver of baseline 1, which runs the LAM on the sources it recovered)."""
        out = self._model("enc").run(feeds)
        e = self._pack(out, feeds, np.full(self.n_groups, len(self.levels) - 1), "fixed", np.inf)
        return self.decode(e.symbols, e.side_info, Csi(60.0, 1e-6), tasks)

    def _pack(self, out, feeds, lv_idx, mode, snr_db) -> MtscEncoded:
        z, imp, valid = out["z"][0], out["importance"][0], out["valid"][0]
        rates = (np.asarray(self.levels)[lv_idx].repeat(self.group) * valid).astype(int)
        r = self.r_max
        sym = np.concatenate([z[t, :rates[t]] + 1j * z[t, r:r + rates[t]] for t in range(z.shape[0])])
        p = float(np.mean(np.abs(sym) ** 2)) if sym.size else 0.0
        if not (p > 0 and math.isfinite(p)):
            raise ValueError("the semantic sequence is all zeros or not finite: nothing to send")
        sym = (sym / np.sqrt(p)).astype(np.complex64)
        q_len = int(feeds["q_mask"][0].sum())
        side = pack_rate_map(mode, q_len, lv_idx)
        return MtscEncoded(sym, side, {"rates": rates, "levels": lv_idx, "importance": imp, "mode": mode,
                                       "snr_db": float(snr_db), "channel_uses": int(sym.size) + self.side_uses})

    # ------------------------------------------------------------------ receiver
    def rates_from_side(self, side: bytes) -> np.ndarray:
        mode, q_len, lv = unpack_rate_map(side, self.n_groups)
        if q_len > self.layout.question or lv.max(initial=0) >= len(self.levels):
            raise ValueError("rate map out of range")
        valid = np.ones(self.layout.length)
        sl = self.layout.spans()["question"]
        valid[sl] = (np.arange(self.layout.question) < q_len)
        return (np.asarray(self.levels)[lv].repeat(self.group) * valid).astype(int)

    def memory(self, y, side: bytes, csi: Csi):
        """Received symbols → (memory, mask) of the LAM decoder, or None with ``last_status``."""
        try:
            rates = self.rates_from_side(bytes(side))
        except ValueError as e:
            log.debug("bad rate map: %s", e)
            self.last_status = "bad_side_info"
            return None
        y = np.asarray(y, np.complex64).ravel()
        if y.size == 0:
            self.last_status = "no_symbols"
            return None
        if csi.snr_db < self.min_snr_db:
            self.last_status = "below_snr_floor"
            return None
        n = int(rates.sum())
        nv = csi.per_symbol(y.size).astype(np.float64)
        ok = np.isfinite(y) & np.isfinite(nv)
        if not ok.any():
            self.last_status = "nonfinite_symbols"
            return None
        self.last_status = "truncated" if y.size < n else "ok"
        yy = np.zeros(n, np.complex128)
        m = np.zeros(n)
        nvv = np.ones(n)
        k = min(n, y.size)
        yy[:k] = np.where(ok[:k], y[:k], 0) / (1.0 + np.where(ok[:k], nv[:k], 0))
        m[:k] = ok[:k]
        nvv[:k] = np.where(ok[:k], nv[:k], 1.0)
        L, r = self.layout.length, self.r_max
        feat = np.zeros((1, L, 2 * r), np.float32)
        mask = np.zeros((1, L, r), np.float32)
        lnv = np.zeros((1, L, r), np.float32)
        off = 0
        for t in range(L):
            q = rates[t]
            if q:
                feat[0, t, :q], feat[0, t, r:r + q] = yy[off:off + q].real, yy[off:off + q].imag
                mask[0, t, :q] = m[off:off + q]
                lnv[0, t, :q] = np.log10(np.maximum(nvv[off:off + q], 1e-12)) * m[off:off + q]
                off += q
        out = self._model("jscdec").run({"y": feat, "sym_mask": mask, "log_nv": lnv,
                                         "snr_db": np.asarray([csi.snr_db], np.float32)})
        return out["memory"], out["memory_mask"]

    def generate(self, memory, mem_mask, tasks=TEXT_TASKS, max_len=None) -> dict:
        """Greedy decoding of the text tasks, all in one batch → {task: text}."""
        tasks = [t for t in tasks if t in TEXT_TASKS]
        if not tasks:
            return {}
        B = len(tasks)
        mem, mm = np.repeat(memory, B, 0), np.repeat(mem_mask, B, 0)
        ids = np.asarray([[self.vocab.task_id(t)] for t in tasks], np.int64)
        done = np.zeros(B, bool)
        for _ in range((max_len or self.max_target) - 1):
            logits = self._model("lm").run({"memory": mem, "memory_mask": mm, "input_ids": ids})["logits"]
            nxt = np.where(done, PAD, logits[:, -1].argmax(-1))
            ids = np.concatenate([ids, nxt[:, None]], 1)
            done |= nxt == EOS
            if done.all():
                break
        return {t: self.vocab.decode(row[1:]) for t, row in zip(tasks, ids)}

    def reconstruct(self, memory, mem_mask) -> np.ndarray:
        img = self._model("rec").run({"memory": memory, "memory_mask": mem_mask})["image"][0]
        return np.clip(np.rint(img.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)

    def decode(self, y, side: bytes, csi: Csi, tasks=TASKS) -> dict | None:
        """Received symbols → {task: answer/caption text, or the image for "reconstruction"};
        None when nothing could be decoded (``last_status`` says why)."""
        mem = self.memory(y, side, csi)
        if mem is None:
            return None
        status = self.last_status
        out = self.generate(*mem, tasks=tasks)
        if "reconstruction" in tasks:
            out["reconstruction"] = self.reconstruct(*mem)
        self.last_status = status
        return out

