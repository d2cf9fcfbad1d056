"""Video and audio clips with ground truth, for the multi-task benchmark (no GNU Radio import).

The scene benchmark (:mod:`semcom.datasets.scenes`) gives images, captions and questions. The
multi-task link also captions short video and audio clips, so this module adds both, with the
same rules: deterministic from a seed, the ground truth as data, several caption templates,
exact accuracy from a parser of the template language, and the same train / val / test seed
ranges (``scenes.SPLITS``).

**Video** (:func:`video_clip`): the scene of the seed (at most two objects), one or two of them
moving in a straight line (left, right, up or down, by 25–40 % of the side) over ``frames``
frames, the others still. Captions: "a red circle moves to the right", "the small red circle
moves right while the blue square stays still", ...

**Audio** (:func:`audio_clip`): 1 s at 16 kHz, one to three sound events one after another, each
a tone (low 300 Hz, mid 800 Hz, high 2000 Hz), a chirp (rising or falling between 300 and
2500 Hz), a burst of white noise, two to four short beeps at one pitch, or a spoken word (one of
``WORDS``, synthesised by eSpeak NG at a pitch and speed of the seed), with 50 ms fades and
short silences between. Captions: "a high tone followed by a rising chirp", "a burst of noise,
then three short beeps", "someone says stop, then a low tone", ...

Spoken words need the ``espeak-ng`` program (Debian package ``espeak-ng``, installed by the
set-up); without it :func:`audio_clip` raises RuntimeError for a clip with a word.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass

import numpy as np

from . import scenes

# ----------------------------------------------------------------------------- video

DIRECTIONS = ("left", "right", "up", "down")
_STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
_DIR_PHRASES = {"left": ("to the left", "left"), "right": ("to the right", "right"),
                "up": ("up", "upwards"), "down": ("down", "downwards")}
VIDEO_FRAMES = 8
VIDEO_SIZE = 64
_VIDEO_STREAM = 11
_AUDIO_STREAM = 12


@dataclass
class Motion:
    """Object ``index`` of the clip's first-frame scene moves in ``direction`` by ``distance``
    (a fraction of the side) over the clip; ``direction`` None: it stays still."""
    index: int
    direction: str | None
    distance: float = 0.0


@dataclass
class VideoClip:
    """A clip: its seed, the first frame's scene graph, one motion per object, the frames
    (uint8 ``(T, H, W, 3)``) and the captions."""
    seed: int
    scene: scenes.Scene
    motions: list
    frames: np.ndarray
    captions: list

    def scene_at(self, t: float) -> scenes.Scene:
        return scene_at(self.scene, self.motions, t)


def scene_at(scene: scenes.Scene, motions: list, t: float) -> scenes.Scene:
    """The scene at time ``t`` ∈ [0, 1] of the clip (objects moved linearly)."""
    objs = []
    for o, m in zip(scene.objects, motions):
        dx, dy = _STEP[m.direction] if m.direction else (0, 0)
        objs.append(dataclasses.replace(o, cx=o.cx + dx * m.distance * t, cy=o.cy + dy * m.distance * t))
    return scenes.Scene(seed=scene.seed, objects=objs, background=scene.background)


def video_motions(seed) -> tuple[scenes.Scene, list]:
    """(first-frame scene, motions) of ``seed``: at most two objects, one or two moving, each
    in a direction with room for its whole path inside the frame."""
    scene = scenes.generate(int(seed))
    scene = scenes.Scene(seed=scene.seed, objects=scene.objects[:2], background=scene.background)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _VIDEO_STREAM])
    n = len(scene.objects)
    n_moving = 1 if n == 1 else int(rng.integers(1, 3))
    moving = set(rng.choice(n, size=n_moving, replace=False).tolist())
    motions = []
    for i, o in enumerate(scene.objects):
        if i not in moving:
            motions.append(Motion(i, None))
            continue
        dist = float(round(0.25 + 0.15 * rng.random(), 4))
        r = o.scale / 2 + 0.01
        room = {"left": o.cx - r, "right": 1 - r - o.cx, "up": o.cy - r, "down": 1 - r - o.cy}
        ok = [d for d in DIRECTIONS if room[d] >= dist]
        if not ok:  # no room for the full path: take the roomiest direction, shortened
            d = max(DIRECTIONS, key=lambda k: room[k])
            dist = float(round(max(0.0, room[d]), 4))
            ok = [d]
        motions.append(Motion(i, ok[int(rng.integers(len(ok)))], dist))
    return scene, motions


def video_captions(scene: scenes.Scene, motions: list) -> list:
    """Five captions of the clip (templates vary the article, the size word and the phrasing)."""
    rng = np.random.default_rng([int(scene.seed) & 0xFFFFFFFF, _VIDEO_STREAM, 1])
    out = []
    for k in range(5):
        size = k % 2 == 1
        phr = [f"{scenes._a(o.describe(size))} moves {_DIR_PHRASES[m.direction][k % 2]}"
               for o, m in zip(scene.objects, motions) if m.direction]
        still = [f"{scenes._a(o.describe(size))} stays still" for o, m in zip(scene.objects, motions)
                 if not m.direction]
        if k == 2:
            phr = ["the " + p.split(" ", 1)[1] for p in phr]
            still = ["the " + s.split(" ", 1)[1] for s in still]
        if k == 4 and still:
            text = " and ".join(phr) + " while " + still[0]
        elif k == 3:
            text = " and ".join(phr + still)
        else:
            parts = phr + still
            if rng.random() < 0.5:
                parts = parts[::-1]
            text = " and ".join(parts)
        out.append(text)
    return out


def video_clip(seed, size: int = VIDEO_SIZE, frames: int = VIDEO_FRAMES) -> VideoClip:
    """The clip of ``seed``: ``frames`` uint8 frames of ``size`` × ``size`` pixels."""
    if int(frames) < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {frames}")
    scene, motions = video_motions(seed)
    ts = np.linspace(0.0, 1.0, int(frames))
    stack = np.stack([scenes.render(scene_at(scene, motions, float(t)), size) for t in ts])
    return VideoClip(int(seed), scene, motions, stack, video_captions(scene, motions))


_MOVE = re.compile(r"(?:(small|medium|large) )?(\w+) (\w+) (moves (?:to the )?(left|right|up|down)(?:wards)?|stays still)")


def parse_video_caption(text: str) -> list:
    """[(colour, shape, direction or None), ...] stated by a caption of the template language."""
    out = []
    for m in _MOVE.finditer(str(text).lower()):
        colour, shape = m.group(2), m.group(3)
        if colour in scenes.COLOURS and shape in scenes.SHAPES:
            out.append((colour, shape, m.group(5)))
    return out


def video_accuracy(text: str, clip: VideoClip) -> float:
    """Share of the clip's objects whose colour, shape and motion (or stillness) the caption
    states correctly; a statement about an object the clip does not hold counts as an error
    (the score is hits / max(objects, statements))."""
    said = parse_video_caption(text)
    truth = {(o.colour, o.shape): m.direction for o, m in zip(clip.scene.objects, clip.motions)}
    hits = sum(1 for c, s, d in said if (c, s) in truth and truth[(c, s)] == d)
    return hits / max(len(truth), len(said), 1)


# ----------------------------------------------------------------------------- audio

SAMPLE_RATE = 16000
AUDIO_SECONDS = 1.0
PITCHES = {"low": 300.0, "mid": 800.0, "high": 2000.0}
CHIRP_RANGE = (300.0, 2500.0)
EVENT_KINDS = ("tone", "chirp", "noise", "beeps", "word")
WORDS = ("yes", "no", "stop", "go", "hello", "seven")
_FADE_S = 0.05


@dataclass
class SoundEvent:
    """One event: ``kind`` ∈ EVENT_KINDS; ``pitch`` (tone, beeps) ∈ PITCHES; ``sweep`` (chirp)
    "rising" or "falling"; ``count`` (beeps); ``word`` (word) ∈ WORDS, spoken at ``voice``
    (eSpeak NG pitch 0–99) and ``speed`` (words per minute); ``start`` and ``duration`` in
    seconds (a word's duration is the length of its speech, cut to the event's slot)."""
    kind: str
    start: float
    duration: float
    pitch: str | None = None
    sweep: str | None = None
    count: int = 0
    amplitude: float = 0.5
    word: str | None = None
    voice: int = 50
    speed: int = 170

    def phrase(self, variant: int = 0) -> str:
        if self.kind == "tone":
            return (f"a {self.pitch} tone", f"a {self.pitch} pitched tone")[variant % 2]
        if self.kind == "chirp":
            return (f"a {self.sweep} chirp", f"a chirp {'going up' if self.sweep == 'rising' else 'going down'}")[
                variant % 2]
        if self.kind == "noise":
            return ("a burst of noise", "a noise burst")[variant % 2]
        if self.kind == "word":
            return (f"someone says {self.word}", f"the spoken word {self.word}")[variant % 2]
        return f"{scenes.NUMBERS[self.count]} short {self.pitch} beeps" if variant % 2 else \
            f"{scenes.NUMBERS[self.count]} short beeps"


@dataclass
class AudioClip:
    """A clip: its seed, the events in time order, the waveform (float32 in [-1, 1] at
    ``SAMPLE_RATE``) and the captions."""
    seed: int
    events: list
    audio: np.ndarray
    captions: list
    sample_rate: int = SAMPLE_RATE


def audio_events(seed) -> list:
    """The events of ``seed`` (1–3, in time order, inside ``AUDIO_SECONDS``)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _AUDIO_STREAM])
    n = int(rng.integers(1, 4))
    slot = AUDIO_SECONDS / n
    events = []
    for k in range(n):
        kind = EVENT_KINDS[int(rng.integers(len(EVENT_KINDS)))]
        dur = float(round(min(slot - 0.06, 0.2 + 0.15 * rng.random()), 4))
        start = float(round(k * slot + 0.02 + (slot - 0.04 - dur) * rng.random(), 4))
        ev = SoundEvent(kind, start, dur, amplitude=float(round(0.3 + 0.4 * rng.random(), 3)))
        if kind in ("tone", "beeps"):
            ev.pitch = tuple(PITCHES)[int(rng.integers(len(PITCHES)))]
        if kind == "chirp":
            ev.sweep = ("rising", "falling")[int(rng.integers(2))]
        if kind == "beeps":
            ev.count = int(rng.integers(2, 5))
        if kind == "word":
            ev.word = WORDS[int(rng.integers(len(WORDS)))]
            ev.voice, ev.speed = int(rng.integers(30, 71)), int(rng.integers(150, 211))
            ev.amplitude = float(round(0.6 + 0.3 * rng.random(), 3))
            speech = spoken_word(ev.word, ev.voice, ev.speed)
            ev.duration = float(round(min(slot - 0.06, len(speech) / SAMPLE_RATE), 4))
            ev.start = float(round(k * slot + 0.02 + (slot - 0.04 - ev.duration) * rng.random(), 4))
        events.append(ev)
    return events


@functools.lru_cache(maxsize=256)
def spoken_word(word: str, voice: int = 50, speed: int = 170) -> np.ndarray:
    """``word`` spoken by eSpeak NG (voice "en", pitch ``voice``, ``speed`` words per minute) at
    ``SAMPLE_RATE``: float32, leading and trailing silence cut, peak 1. RuntimeError when the
    ``espeak-ng`` program is missing or fails."""
    import io
    import shutil
    import subprocess

    from scipy.signal import resample_poly

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("spoken words need the espeak-ng program (Debian: apt install espeak-ng)")
    r = subprocess.run([exe, "-v", "en", "-p", str(int(voice)), "-s", str(int(speed)), "--stdout", str(word)],
                       capture_output=True, timeout=30)
    if r.returncode != 0 or len(r.stdout) < 64:
        raise RuntimeError(f"espeak-ng failed for {word!r}: {r.stderr.decode(errors='replace').strip()}")
    import wave

    with wave.open(io.BytesIO(r.stdout)) as w:
        rate, raw = w.getframerate(), w.readframes(w.getnframes())
    x = np.frombuffer(raw, "<i2").astype(np.float64) / 32768.0
    g = math.gcd(SAMPLE_RATE, rate)
    x = resample_poly(x, SAMPLE_RATE // g, rate // g)
    on = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    x = x[on[0]:on[-1] + 1]
    return (x / np.abs(x).max()).astype(np.float32)


def synthesize(events: list, seed: int = 0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The waveform of ``events`` (float32, ``AUDIO_SECONDS`` long)."""
    n = round(AUDIO_SECONDS * sample_rate)
    out = np.zeros(n, np.float64)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _AUDIO_STREAM, 1])
    for ev in events:
        i0, m = round(ev.start * sample_rate), round(ev.duration * sample_rate)
        t = np.arange(m) / sample_rate
        if ev.kind == "tone":
            x = np.sin(2 * np.pi * PITCHES[ev.pitch] * t)
        elif ev.kind == "chirp":
            f0, f1 = CHIRP_RANGE if ev.sweep == "rising" else CHIRP_RANGE[::-1]
            k = np.log(f1 / f0) / ev.duration  # exponential sweep
            x = np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)
        elif ev.kind == "noise":
            x = np.clip(rng.standard_normal(m) / 3, -1, 1)
        elif ev.kind == "word":
            x = spoken_word(ev.word, ev.voice, ev.speed)[:m].astype(np.float64)
            x = np.pad(x, (0, m - x.size))
        else:  # beeps: equal on/off times
            on = np.floor(t / (ev.duration / (2 * ev.count - 1))).astype(int) % 2 == 0
            x = np.sin(2 * np.pi * PITCHES[ev.pitch] * t) * on
        fade = np.minimum(1.0, np.minimum(t, ev.duration - t) / _FADE_S) if ev.kind in ("tone", "chirp", "noise") \
            else 1.0
        out[i0:i0 + m] += ev.amplitude * x * fade
    return np.clip(out, -1, 1).astype(np.float32)


def audio_captions(events: list) -> list:
    """Five captions of the clip (the events in order; connectives and phrasings vary)."""
    joins = (" followed by ", ", then ", " and then ", " followed by ", ", then ")
    out = []
    for k in range(5):
        parts = [ev.phrase(k) for ev in events]
        out.append(joins[k].join(parts) if len(parts) > 1 else parts[0])
    return out


def audio_clip(seed) -> AudioClip:
    """The audio clip of ``seed``."""
    events = audio_events(seed)
    return AudioClip(int(seed), events, synthesize(events, seed), audio_captions(events))


_EVENT = re.compile(r"(low|mid|high) (?:pitched )?tone|(rising|falling) chirp|chirp going (up|down)|"
                    r"(?:burst of noise|noise burst)|(two|three|four) short (?:(low|mid|high) )?beeps|"
                    r"(?:someone says|the spoken word) (" + "|".join(WORDS) + r")\b")


def parse_audio_caption(text: str) -> list:
    """[(kind, detail), ...] in the caption's order: ("tone", pitch), ("chirp", sweep),
    ("noise", None), ("beeps", count), ("word", word)."""
    out = []
    for m in _EVENT.finditer(str(text).lower()):
        if m.group(1):
            out.append(("tone", m.group(1)))
        elif m.group(2) or m.group(3):
            out.append(("chirp", m.group(2) or ("rising" if m.group(3) == "up" else "falling")))
        elif m.group(4):
            out.append(("beeps", scenes.NUMBERS.index(m.group(4))))
        elif m.group(6):
            out.append(("word", m.group(6)))
        else:
            out.append(("noise", None))
    return out


def audio_accuracy(text: str, clip: AudioClip) -> float:
    """Share of the clip's events stated at their position in the caption with the right kind
    and detail; hits / max(events, statements)."""
    truth = [(e.kind, {"tone": e.pitch, "chirp": e.sweep, "noise": None, "beeps": e.count, "word": e.word}[e.kind])
             for e in clip.events]
    said = parse_audio_caption(text)
    hits = sum(1 for a, b in zip(said, truth) if a == b)
    return hits / max(len(truth), len(said), 1)


# ----------------------------------------------------------------------------- splits

def split_seeds(split: str, n: int | None = None) -> range:
    """The seeds of ``split`` (``scenes.SPLITS``), the first ``n`` of them."""
    if split not in scenes.SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(scenes.SPLITS)}")
    r = scenes.SPLITS[split]
    return r if n is None else r[:int(n)]
