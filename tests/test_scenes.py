"""semcom.datasets.scenes: the synthetic multimodal scene benchmark."""
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from gnuradio.semcom.datasets import scenes as S


def _digest(seed, size=64):
    sc = S.generate(seed)
    h = hashlib.sha256(S.render(sc, size).tobytes())
    h.update(json.dumps([sc.to_dict(), S.captions(sc), S.questions(sc)], sort_keys=True).encode())
    return h.hexdigest()


def test_deterministic():
    for seed in (0, 1, 12345, 2_000_007):
        assert _digest(seed) == _digest(seed)
    assert _digest(1) != _digest(2)


def test_scene_contents():
    for seed in range(300):
        sc = S.generate(seed)
        assert 1 <= len(sc.objects) <= 4
        combos = [(o.shape, o.colour) for o in sc.objects]
        assert len(set(combos)) == len(combos)
        for o in sc.objects:
            assert o.shape in S.SHAPES and o.colour in S.COLOURS and o.size in S.SIZES
            r = o.scale / 2
            assert r <= o.cx <= 1 - r and r <= o.cy <= 1 - r
        for i, a in enumerate(sc.objects):
            for b in sc.objects[i + 1:]:
                assert np.hypot(a.cx - b.cx, a.cy - b.cy) >= (a.scale + b.scale) / 2


def test_render_shapes_and_sizes():
    sc = S.generate(7)
    for size in (32, 64, 128, 256, 100):
        img = S.render(sc, size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8


def test_to_dict_round_trip():
    for seed in range(20):
        sc = S.generate(seed)
        d = json.loads(json.dumps(sc.to_dict()))
        assert S.Scene.from_dict(d) == sc
        assert [tuple(r) for r in d["relations"]] == sc.relations
        assert np.array_equal(S.render(S.Scene.from_dict(d), 64), S.render(sc, 64))


def test_splits_disjoint_and_dataset():
    names = list(S.SPLITS)
    assert set(names) == {"train", "val", "test"}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ra, rb = S.SPLITS[a], S.SPLITS[b]
            assert ra.stop <= rb.start or rb.stop <= ra.start
    ds = S.dataset("val", n=3, size=64)
    assert len(ds) == 3
    items = list(ds)
    assert [it.seed for it in items] == list(S.SPLITS["val"][:3])
    it = items[0]
    assert it.image.shape == (64, 64, 3)
    assert it.captions == S.captions(it.scene) and it.qa == S.questions(it.scene)
    assert np.array_equal(it.image, S.render(S.generate(it.seed), 64))
    with pytest.raises(ValueError):
        S.dataset("nope")


def test_captions_and_vocabulary():
    vocab = set(S.vocabulary())
    for seed in range(200):
        sc = S.generate(seed)
        caps = S.captions(sc)
        assert len(caps) >= 3 and len(set(caps)) >= 3
        for c in caps:
            assert set(S.tokenize(c)) <= vocab, c
        for q in S.questions(sc):
            assert set(S.tokenize(q["question"])) <= vocab
            assert set(S.tokenize(q["answer"])) <= vocab


def test_no_gnuradio_import(repo_root):
    code = (
        "import sys; sys.path.insert(0, 'tests'); import conftest;"
        "from gnuradio.semcom.datasets import scenes as S;"
        "S.render(S.generate(3), 64); S.captions(S.generate(3));"
        "from gnuradio import semcom; assert semcom.datasets.scenes is S;"
        "bad = [m for m in ('gnuradio.gr', 'pmt', 'torch') if m in sys.modules]; assert not bad, bad"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
