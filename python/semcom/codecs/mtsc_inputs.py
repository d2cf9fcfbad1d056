"""The inputs of the LAM multi-task link as the models take them (numpy only, no GNU Radio).

One place for what both the trainer and the runtime compute from an item: the image, the
video frames, the audio's log-mel spectrogram and the question's token ids. The layout of the
semantic sequence the LAM encoder makes of them (``Layout``) is also here, because the
transmitter and the receiver must agree on it.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import numpy as np

__all__ = ["Layout", "LEVELS", "GROUP", "SPECIALS", "TASK_TOKENS", "Vocab", "image_input", "video_input", "log_mel", "MODALITIES"]

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
BOS, PAD, EOS, UNK = range(4)
TASK_TOKENS = {"vqa": "<vqa>", "caption_image": "<cap_image>", "caption_audio": "<cap_audio>",
               "caption_video": "<cap_video>", "reconstruction": "<rec>"}
MODALITIES = ("image", "question", "audio", "video")
#: rate levels (complex symbols per token) the variable-rate coder chooses from, one per group
#: of GROUP consecutive tokens of the semantic sequence
LEVELS = (0, 1, 2, 4, 6, 8, 12, 16)
GROUP = 4
N_MELS = 64
N_FFT = 512
HOP = 250  # 16 kHz / 250 = 64 frames per second


@dataclass(frozen=True)
class Layout:
    """Token counts of the semantic sequence: image patches, question words (padded),
    audio frames, video frames, in this order."""
    image: int = 16
    question: int = 16
    audio: int = 16
    video: int = 8

    @property
    def length(self) -> int:
        return self.image + self.question + self.audio + self.video

    def spans(self) -> dict:
        """modality → slice of the sequence."""
        out, k = {}, 0
        for m in MODALITIES:
            n = getattr(self, m)
            out[m] = slice(k, k + n)
            k += n
        return out

    def modality_ids(self) -> np.ndarray:
        return np.concatenate([np.full(getattr(self, m), i, np.int64) for i, m in enumerate(MODALITIES)])

    def to_dict(self) -> dict:
        return {m: getattr(self, m) for m in MODALITIES}


class Vocab:
    """Word-level vocabulary: the specials, the task tokens, then the words (``words``)."""

    def __init__(self, words):
        self.tokens = list(SPECIALS) + list(TASK_TOKENS.values()) + [w for w in words]
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("vocabulary has duplicate tokens")
        self.index = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self):
        return len(self.tokens)

    def task_id(self, task: str) -> int:
        if task not in TASK_TOKENS:
            raise ValueError(f"unknown task {task!r}; choose from {tuple(TASK_TOKENS)}")
        return self.index[TASK_TOKENS[task]]

    def encode(self, text: str, max_len: int | None = None) -> list:
        from ..datasets.scenes import tokenize

        ids = [self.index.get(t, UNK) for t in tokenize(text)]
        return ids if max_len is None else ids[:max_len]

    def decode(self, ids) -> str:
        words = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i < len(SPECIALS) + len(TASK_TOKENS):
                continue
            words.append(self.tokens[i])
        text = " ".join(words)
        for p in (" ,", " ?", " :"):
            text = text.replace(p, p[1:])
        return text

    def question_ids(self, text: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 (n,), mask float32 (n,)) of a question padded or cut to ``n`` tokens."""
        ids = self.encode(text, n)
        out = np.full(n, PAD, np.int64)
        out[:len(ids)] = ids
        mask = np.zeros(n, np.float32)
        mask[:len(ids)] = 1
        return out, mask

    def to_json(self) -> str:
        return json.dumps({"tokens": self.tokens})

    @classmethod
    def from_json(cls, text: str) -> "Vocab":
        tokens = json.loads(text)["tokens"]
        n = len(SPECIALS) + len(TASK_TOKENS)
        if tuple(tokens[:n]) != SPECIALS + tuple(TASK_TOKENS.values()):
            raise ValueError("not a gr-semcom multi-task vocabulary (specials differ)")
        return cls(tokens[n:])


def image_input(image: np.ndarray, size: int = 64) -> np.ndarray:
    """uint8 (H, W, 3) → float32 (3, size, size) in [0, 1] (resized when needed)."""
    from .vlf import resize_rgb

    a = resize_rgb(np.ascontiguousarray(image[..., :3]), size, size)
    return (a.astype(np.float32) / 255.0).transpose(2, 0, 1).copy()


def video_input(frames: np.ndarray, n_frames: int = 8, size: int = 32) -> np.ndarray:
    """uint8 (T, H, W, 3) → float32 (n_frames, 3, size, size) in [0, 1]: ``n_frames`` frames
    evenly spaced over the clip, each resized."""
    f = np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] < 3 or f.shape[0] < 1:
        raise ValueError(f"video must be (T, H, W, 3), got {f.shape}")
    idx = np.round(np.linspace(0, f.shape[0] - 1, n_frames)).astype(int)
    return np.stack([image_input(f[i], size) for i in idx])


@functools.lru_cache(maxsize=4)
def _mel_filters(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    def hz2mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    pts = 700.0 * (10 ** (np.linspace(hz2mel(50.0), hz2mel(sr / 2), n_mels + 2) / 2595.0) - 1.0)
    bins = np.fft.rfftfreq(n_fft, 1.0 / sr)
    fb = np.zeros((n_mels, bins.size), np.float32)
    for m in range(n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        fb[m] = np.clip(np.minimum((bins - lo) / (c - lo), (hi - bins) / (hi - c)), 0, None)
    return fb


def log_mel(audio: np.ndarray, sample_rate: int = 16000, seconds: float = 1.0) -> np.ndarray:
    """float waveform → float32 (N_MELS, frames) log-mel spectrogram (Hann window of N_FFT,
    hop HOP, log10(ε + power), ε = 1e-6); the clip is cut or zero-padded to ``seconds``."""
    x = np.asarray(audio, np.float64).ravel()
    n = int(round(seconds * sample_rate))
    x = np.pad(x[:n], (0, max(0, n - x.size)))
    if not np.all(np.isfinite(x)):
        raise ValueError("audio has non-finite samples")
    frames = n // HOP
    xp = np.pad(x, (N_FFT // 2, N_FFT // 2))
    idx = np.arange(frames)[:, None] * HOP + np.arange(N_FFT)[None, :]
    spec = np.abs(np.fft.rfft(xp[idx] * np.hanning(N_FFT), axis=1)) ** 2
    mel = spec @ _mel_filters(sample_rate, N_FFT, N_MELS).T
    return np.log10(1e-6 + mel).T.astype(np.float32)
