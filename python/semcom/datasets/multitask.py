"""The multi-task benchmark of the LAM multi-task link (no GNU Radio import).

One item of seed ``s`` bundles what one transmission carries and what the receiver is asked
for: the scene image of ``s`` (for image captioning, VQA and reconstruction), one question
about it with its answer, the audio clip of ``s`` and the video clip of ``s``
(:mod:`semcom.datasets.media`; each has its own random stream, so the three modalities are
independent). Deterministic from the seed; the splits are ``scenes.SPLITS``.

Tasks (``TASKS``): ``vqa`` (the answer, one word), ``caption_image``, ``caption_audio``,
``caption_video`` (five reference captions each) and ``reconstruction`` (the image).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import media, scenes

__all__ = ["TASKS", "TEXT_TASKS", "IMAGE_SIZE", "Item", "item", "items", "vocabulary", "tokenize"]

TASKS = ("vqa", "caption_image", "caption_audio", "caption_video", "reconstruction")
TEXT_TASKS = TASKS[:4]
IMAGE_SIZE = 64
_QUESTION_STREAM = 13
tokenize = scenes.tokenize


@dataclass
class Item:
    """One multi-task item: ``image`` uint8 (IMAGE_SIZE, IMAGE_SIZE, 3) of ``scene``; the
    question asked, its ``answer`` and ``qa_kind``; ``audio`` and ``video`` clips."""
    seed: int
    scene: scenes.Scene
    image: np.ndarray
    question: str
    answer: str
    qa_kind: str
    image_captions: list
    audio: media.AudioClip
    video: media.VideoClip

    def references(self, task: str) -> list:
        """The reference texts of a text task (one answer for VQA, five captions otherwise)."""
        if task == "vqa":
            return [self.answer]
        if task == "caption_image":
            return list(self.image_captions)
        if task == "caption_audio":
            return list(self.audio.captions)
        if task == "caption_video":
            return list(self.video.captions)
        raise ValueError(f"{task!r} is not a text task; choose from {TEXT_TASKS}")


def item(seed, size: int = IMAGE_SIZE) -> Item:
    """The item of ``seed``; its question is drawn uniformly from the scene's questions."""
    seed = int(seed)
    scene = scenes.generate(seed)
    qa = scenes.questions(scene)
    q = qa[int(np.random.default_rng([seed & 0xFFFFFFFF, _QUESTION_STREAM]).integers(len(qa)))]
    return Item(seed, scene, scenes.render(scene, size), q["question"], q["answer"], q["kind"],
                scenes.captions(scene), media.audio_clip(seed), media.video_clip(seed))


def items(split: str, n: int | None = None, size: int = IMAGE_SIZE) -> list:
    """The first ``n`` items of ``split``."""
    return [item(s, size) for s in media.split_seeds(split, n)]


def vocabulary() -> list:
    """Every token the benchmark's questions, answers and image, audio and video captions can
    produce (sorted); a tokenizer adds its own special tokens."""
    words = set(scenes.vocabulary())
    phrases = ["moves to the left right up upwards down downwards stays still while and the",
               "tone pitched chirp rising falling going up down a burst of noise short beeps",
               "followed by , then and someone says the spoken word",
               " ".join(media.PITCHES), " ".join(media.WORDS), " ".join(scenes.NUMBERS)]
    for p in phrases:
        words.update(tokenize(p))
    return sorted(words)
