"""Video and audio clips of the multi-task benchmark (semcom.datasets.media): deterministic,
the pixels and the waveform do what the ground truth says, exact caption accuracy."""
import subprocess
import sys

import numpy as np
import pytest

from gnuradio.semcom.datasets import media, scenes


def _centroid(frame, colour, tol=40):
    near = np.abs(frame.astype(int) - np.array(colour)).max(-1) < tol
    ys, xs = np.nonzero(near)
    return (xs.mean() / frame.shape[1], ys.mean() / frame.shape[0]) if len(xs) else None


def test_video_is_deterministic_and_shaped():
    a, b = media.video_clip(7), media.video_clip(7)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.captions == b.captions and a.frames.shape == (media.VIDEO_FRAMES, 64, 64, 3)
    assert a.frames.dtype == np.uint8
    assert media.video_clip(7, size=128, frames=4).frames.shape == (4, 128, 128, 3)
    with pytest.raises(ValueError, match="2 frames"):
        media.video_clip(7, frames=1)


@pytest.mark.parametrize("seed", range(2_000_000, 2_000_012))
def test_objects_move_as_the_ground_truth_says(seed):
    clip = media.video_clip(seed, size=128)
    assert any(m.direction for m in clip.motions)
    for o, m in zip(clip.scene.objects, clip.motions):
        others = [p.colour for p in clip.scene.objects if p is not o]
        if o.colour in others:
            continue
        c0, c1 = _centroid(clip.frames[0], scenes.COLOURS[o.colour]), _centroid(clip.frames[-1],
                                                                              scenes.COLOURS[o.colour])
        assert c0 is not None and c1 is not None
        dx, dy = c1[0] - c0[0], c1[1] - c0[1]
        if m.direction is None:
            assert abs(dx) < 0.03 and abs(dy) < 0.03
            continue
        want = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[m.direction]
        moved = dx * want[0] + dy * want[1]
        assert moved > 0.6 * m.distance, (m, dx, dy)
        assert abs(dx * want[1] + dy * want[0]) < 0.05  # straight line
        # the object stays inside the frame over the whole path
        end = clip.scene_at(1.0).objects[m.index]
        for c in (end.cx, end.cy):
            assert o.scale / 2 - 1e-6 <= c <= 1 - o.scale / 2 + 1e-6


def test_video_accuracy_is_exact():
    clips = [media.video_clip(s) for s in range(2_000_000, 2_000_030)]
    for c in clips:
        assert all(media.video_accuracy(t, c) == 1.0 for t in c.captions), c.captions
    other = [media.video_accuracy(clips[(k + 1) % len(clips)].captions[0], c) for k, c in enumerate(clips)]
    assert np.mean(other) < 0.2
    c = clips[0]
    o, m = c.scene.objects[c.motions.index(next(x for x in c.motions if x.direction))], \
        next(x for x in c.motions if x.direction)
    wrong = {"left": "right", "right": "left", "up": "down", "down": "up"}[m.direction]
    assert media.video_accuracy(f"a {o.colour} {o.shape} moves {wrong}", c) < 1.0
    assert media.parse_video_caption("the small red circle moves to the right and a blue square stays still") == [
        ("red", "circle", "right"), ("blue", "square", None)]
    assert media.video_accuracy("", c) == 0.0


def _band_energy(x, f, sr=media.SAMPLE_RATE):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    return spec[(freqs > f * 0.9) & (freqs < f * 1.1)].sum() / spec.sum()


@pytest.mark.parametrize("seed", range(2_000_000, 2_000_040))
def test_audio_events_are_what_the_ground_truth_says(seed):
    clip = media.audio_clip(seed)
    sr = clip.sample_rate
    assert clip.audio.shape == (sr,) and clip.audio.dtype == np.float32 and np.abs(clip.audio).max() <= 1
    busy = np.zeros(sr, bool)
    for ev in clip.events:
        i0, n = int(round(ev.start * sr)), int(round(ev.duration * sr))
        busy[i0:i0 + n] = True
        seg = clip.audio[i0:i0 + n]
        if ev.kind == "tone":
            assert _band_energy(seg, media.PITCHES[ev.pitch]) > 0.8
        elif ev.kind == "beeps":
            assert _band_energy(seg, media.PITCHES[ev.pitch]) > 0.6
            env = np.abs(seg[:len(seg) // 16 * 16]).reshape(-1, 16).max(1) > 0.05  # 1 ms envelope
            onsets = int(np.sum(env[1:] & ~env[:-1]) + env[0])
            assert onsets == ev.count
        elif ev.kind == "chirp":
            h = len(seg) // 2
            spec = [np.abs(np.fft.rfft(p)) for p in (seg[:h], seg[h:2 * h])]
            centre = [np.sum(s * np.arange(len(s))) / s.sum() for s in spec]
            assert (centre[1] > centre[0]) == (ev.sweep == "rising")
        elif ev.kind == "word":  # the word as eSpeak NG speaks it, at the event's level
            speech = media.spoken_word(ev.word, ev.voice, ev.speed)[:n]
            np.testing.assert_allclose(seg[:speech.size], np.clip(ev.amplitude * speech, -1, 1), atol=1e-6)
        else:  # white noise: energy spread over the band
            assert _band_energy(seg, 4000) < 0.2 and seg.std() > 0.05
    assert np.abs(clip.audio[~busy]).max() == 0.0  # silence between the events
    starts = [e.start for e in clip.events]
    assert starts == sorted(starts)


def test_audio_accuracy_is_exact_and_deterministic():
    clips = [media.audio_clip(s) for s in range(2_000_000, 2_000_060)]
    np.testing.assert_array_equal(clips[3].audio, media.audio_clip(2_000_003).audio)
    kinds = {e.kind for c in clips for e in c.events}
    assert kinds == set(media.EVENT_KINDS)
    for c in clips:
        assert all(media.audio_accuracy(t, c) == 1.0 for t in c.captions), c.captions
    other = [media.audio_accuracy(clips[(k + 7) % len(clips)].captions[1], c) for k, c in enumerate(clips)]
    assert np.mean(other) < 0.35
    c = next(c for c in clips if len(c.events) >= 2)
    swapped = " followed by ".join(e.phrase() for e in c.events[::-1])
    if [e.phrase() for e in c.events] != [e.phrase() for e in c.events[::-1]]:
        assert media.audio_accuracy(swapped, c) < 1.0  # the order is part of the truth
    assert media.parse_audio_caption("three short high beeps, then a chirp going down and a noise burst") == [
        ("beeps", 3), ("chirp", "falling"), ("noise", None)]
    assert media.parse_audio_caption("someone says stop, then the spoken word yes") == [("word", "stop"), ("word", "yes")]


def test_spoken_words_differ_and_need_espeak(monkeypatch):
    a, b = media.spoken_word("yes"), media.spoken_word("seven")
    assert a.dtype == np.float32 and 0.1 < a.size / media.SAMPLE_RATE < 0.8 and np.abs(a).max() == 1.0
    assert b.size > a.size  # two syllables
    assert media.spoken_word("yes", 30).size != 0 and not np.array_equal(media.spoken_word("yes", 30), a)
    media.spoken_word.cache_clear()
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(RuntimeError, match="espeak-ng"):
        media.spoken_word("no")
    media.spoken_word.cache_clear()


def test_splits_and_no_gnuradio_import(repo_root):
    assert media.split_seeds("test", 3) == range(2_000_000, 2_000_003)
    with pytest.raises(ValueError, match="unknown split"):
        media.split_seeds("nope")
    code = ("import sys; sys.path.insert(0, 'tests'); import conftest;"
            "from gnuradio.semcom.datasets import media; media.video_clip(1); media.audio_clip(1);"
            "bad = [m for m in ('gnuradio.gr', 'pmt', 'torch') if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
