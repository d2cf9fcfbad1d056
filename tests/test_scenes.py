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


def test_ground_truth_is_pinned():
    """The scene graphs, captions and questions of a seed never change (numpy's PCG64 streams
    and float arithmetic are the same on every platform); a change here breaks every trained
    model's data and must be deliberate."""
    h = hashlib.sha256()
    for seed in list(range(20)) + [1_000_000, 2_000_000]:
        sc = S.generate(seed)
        h.update(json.dumps([sc.to_dict(), S.captions(sc), S.questions(sc)], sort_keys=True).encode())
    assert h.hexdigest() == "e60822ee12db85a452195001fad0f8bfe4519fe9a190fcf9a54d6fdccd3089ce"


def test_image_bytes_same_in_a_fresh_process(repo_root):
    code = (
        "import sys, hashlib; sys.path.insert(0, 'tests'); import conftest;"
        "from gnuradio.semcom.datasets import scenes as S;"
        "print(hashlib.sha256(b''.join(S.render(S.generate(s), 64).tobytes() for s in range(30))).hexdigest())"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    here = hashlib.sha256(b"".join(S.render(S.generate(s), 64).tobytes() for s in range(30))).hexdigest()
    assert r.stdout.strip() == here


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


def test_vocabulary_is_exactly_the_generated_tokens():
    seen = set()
    for seed in range(1200):
        sc = S.generate(seed)
        for c in S.captions(sc):
            seen.update(S.tokenize(c))
        for q in S.questions(sc):
            seen.update(S.tokenize(q["question"]) + S.tokenize(q["answer"]))
    empty = S.Scene(0, [])
    seen.update(*map(S.tokenize, S.captions(empty)))
    assert all(q["answer"] in ("zero", "no") for q in S.questions(empty))
    assert seen == set(S.vocabulary())
    assert S.vocabulary() == sorted(S.vocabulary()) and all(w == w.lower() for w in S.vocabulary())


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


def test_everything_reachable():
    shapes, colours, sizes, kinds, counts, rels, positions = set(), set(), set(), set(), set(), set(), set()
    for seed in range(600):
        sc = S.generate(seed)
        shapes |= {o.shape for o in sc.objects}
        colours |= {o.colour for o in sc.objects}
        sizes |= {o.size for o in sc.objects}
        kinds.add(sc.background["kind"])
        counts.add(len(sc.objects))
        rels |= {r for _, r, _ in sc.relations}
        positions |= {S.position(o) for o in sc.objects}
    assert len(S.SHAPES) >= 8 and shapes == set(S.SHAPES)
    assert len(S.COLOURS) >= 10 and colours == set(S.COLOURS)
    assert sizes == set(S.SIZES) and counts == {1, 2, 3, 4}
    assert kinds == set(S.BACKGROUNDS) and rels == set(S.RELATIONS)
    assert positions - {None} == set(S.POSITIONS)


def test_sizes_have_clearly_different_areas():
    areas = {s: [] for s in S.SIZES}
    for seed in range(150):
        sc = S.generate(seed)
        m = S.masks(sc, 128)
        for o, mk in zip(sc.objects, m):
            if o.shape == "circle":
                areas[o.size].append(mk.sum())
    small, medium, large = (np.array(areas[s]) for s in S.SIZES)
    assert small.max() * 1.6 < medium.min() and medium.max() * 1.6 < large.min()


def test_background_light_and_far_from_object_colours():
    cols = np.array(list(S.COLOURS.values()), float)
    for seed in range(200):
        sc = S.generate(seed)
        img = S.render(S.Scene(sc.seed, [], sc.background), 32).reshape(-1, 3).astype(float)
        d = np.linalg.norm(img[:, None, :] - cols[None], axis=2)
        assert d.min() > 60, (seed, sc.background)


def test_masks_match_rendered_pixels():
    for seed in range(60):
        sc = S.generate(seed)
        for size in (64, 128):
            img = S.render(sc, size)
            m = S.masks(sc, size)
            assert m.shape == (len(sc.objects), size, size) and m.dtype == bool
            assert not np.any(m.sum(0) > 1)  # visible masks are disjoint
            # fully covered pixels carry exactly the object's colour
            full = S.masks(sc, size, threshold=1.0)
            for o, mk, fk in zip(sc.objects, m, full):
                assert mk.sum() > 0 and fk.sum() > 0, (seed, o)
                assert np.all(img[fk] == S.COLOURS[o.colour]), (seed, o)
                err = np.abs(img[mk].astype(float) - S.COLOURS[o.colour]).mean()
                assert err < 40, (seed, o, err)
            # outside every mask (and away from edges) the background shows: no object colour
            bg = ~S.masks(sc, size, threshold=0.01).any(0)
            cols = np.array(list(S.COLOURS.values()), float)
            assert np.linalg.norm(img[bg][:, None].astype(float) - cols[None], axis=2).min() > 60


def test_relations_true_by_geometry():
    for seed in range(300):
        sc = S.generate(seed)
        rels = set(sc.relations)
        for i, r, j in rels:
            a, b = sc.objects[i], sc.objects[j]
            dx, dy = b.cx - a.cx, b.cy - a.cy
            need = {"left of": dx, "right of": -dx, "above": dy, "below": -dy}[r]
            other = abs(dy) if r in ("left of", "right of") else abs(dx)
            assert need >= S.RELATION_MARGIN and need >= other / 2
            inverse = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}[r]
            assert (j, inverse, i) in rels and (i, inverse, j) not in rels
        # the rendered masks agree: the centroid of i's mask is on the stated side of j's
        m = S.masks(sc, 128)
        cen = [np.argwhere(mk).mean(0)[::-1] / 128 for mk in m]  # (x, y)
        for i, r, j in rels:
            d = cen[j] - cen[i]
            assert {"left of": d[0], "right of": -d[0], "above": d[1], "below": -d[1]}[r] > 0.08


def _find(sc, words):
    """Objects whose attributes include all of ``words``."""
    return [o for o in sc.objects if set(words) <= {o.size, o.colour, o.shape}]


def test_questions_consistent_with_graph():
    kinds = set()
    for seed in range(300):
        sc = S.generate(seed)
        qa = S.questions(sc)
        assert qa == S.questions(sc)
        for q in qa:
            kinds.add(q["kind"])
            text, ans = q["question"], q["answer"]
            assert set(q) == {"question", "answer", "kind"}
            words = S.tokenize(text)
            if q["kind"] == "count":
                if text == "how many shapes are there?":
                    assert ans == S.NUMBERS[len(sc.objects)]
                else:
                    assert ans == S.NUMBERS[sum(o.colour == words[2] for o in sc.objects)]
            elif q["kind"] == "colour":
                objs = _find(sc, words[4:-1])
                assert len(objs) == 1 and objs[0].colour == ans
            elif q["kind"] == "shape":
                objs = _find(sc, words[4:-2])
                assert len(objs) == 1 and objs[0].shape == ans
            elif q["kind"] == "presence":
                c, s = words[3], words[4]
                assert ans == ("yes" if any(o.colour == c and o.shape == s for o in sc.objects) else "no")
            elif q["kind"] == "position":
                objs = _find(sc, words[3:5])
                assert len(objs) == 1 and S.position(objs[0]) == ans
            elif q["kind"] == "relation":
                a = sc.objects.index(_find(sc, words[2:4])[0])
                b = sc.objects.index(_find(sc, words[-3:-1])[0])
                rel = " ".join(w for w in words[4:-4] if w not in ("to", "the"))
                assert rel in S.RELATIONS
                assert ans == ("yes" if (a, rel, b) in sc.relations else "no")
                inverse = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}[rel]
                assert ((a, rel, b) in sc.relations) != ((a, inverse, b) in sc.relations)
    assert kinds == {"colour", "shape", "presence", "count", "relation", "position"}


def test_captions_parse_back_to_the_graph():
    for seed in range(300):
        sc = S.generate(seed)
        gt = sorted((o.colour, o.shape) for o in sc.objects)
        for cap in S.captions(sc):
            p = S.caption_attributes(cap)
            assert sorted((m["colour"], m["shape"]) for m in p["objects"]) == gt, cap
            assert p["count"] == len(sc.objects)
            by = {(o.colour, o.shape): k for k, o in enumerate(sc.objects)}
            idx = [by[(m["colour"], m["shape"])] for m in p["objects"]]
            for m, k in zip(p["objects"], idx):
                assert m["size"] in (None, sc.objects[k].size)
            for i, r, j in p["relations"]:
                assert (idx[i], r, idx[j]) in sc.relations, cap
            acc = S.caption_accuracy(cap, sc)
            assert acc["overall"] == acc["shape"] == acc["colour"] == acc["count"] == acc["relation"] == 1.0


def test_caption_parser_grammar():
    p = S.caption_attributes("there is a small teal star above a large brown ring")
    assert p["objects"] == [{"size": "small", "colour": "teal", "shape": "star"},
                            {"size": "large", "colour": "brown", "shape": "ring"}]
    assert p["relations"] == [(0, "above", 1)] and p["count"] == 2 and not p["count_stated"]
    p = S.caption_attributes("three shapes: a red circle, a blue square and a green star")
    assert p["count"] == 3 and p["count_stated"] and p["relations"] == [] and len(p["objects"]) == 3
    p = S.caption_attributes("a red circle to the left of a blue square, and a star right of a large ring")
    assert p["relations"] == [(0, "left of", 1), (2, "right of", 3)]
    assert p["objects"][2] == {"size": None, "colour": None, "shape": "star"}
    p = S.caption_attributes("a large red to the left of a blue")  # missing shapes
    assert [m["colour"] for m in p["objects"]] == ["red", "blue"] and p["relations"] == [(0, "left of", 1)]


def test_caption_parser_never_raises():
    rng = np.random.default_rng(0)
    vocab = S.vocabulary() + ["xyz", "!!", "12", "\u00e9t\u00e9", "\n", "of", "left"]
    samples = ["", " ", ":::", "left of of left above", "red red red", "a" * 10000, "\x00\udcff", "🙂 red 🙂 star"]
    samples += [" ".join(rng.choice(vocab, int(rng.integers(0, 40)))) for _ in range(300)]
    for t in samples + [None, 123, b"red circle"]:
        p = S.caption_attributes(t)
        assert set(p) == {"objects", "count", "count_stated", "relations"}
        acc = S.caption_accuracy(t, S.generate(5))
        for k in ("shape", "colour", "size", "count", "relation", "overall"):
            assert 0.0 <= acc[k] <= 1.0


def test_wrong_colour_loses_exactly_that_objects_colour_credit():
    checked = 0
    for seed in range(200):
        sc = S.generate(seed)
        n = len(sc.objects)
        cap = S.captions(sc)[0]
        good = S.caption_accuracy(cap, sc)
        assert good["overall"] == 1.0
        o = sc.objects[0]
        wrong = next(c for c in S.COLOURS if c not in {p.colour for p in sc.objects})
        bad_cap = cap.replace(f" {o.colour} {o.shape}", f" {wrong} {o.shape}")
        assert bad_cap != cap
        bad = S.caption_accuracy(bad_cap, sc)
        assert bad["colour"] == pytest.approx(1 - 1 / n)
        for k in ("shape", "count", "relation", "size"):
            assert bad[k] == good[k], (k, cap, bad_cap)
        kinds = 4 if bad["n_relations"] else 3
        assert bad["overall"] == pytest.approx(1 - 1 / n / kinds)
        checked += 1
    assert checked == 200


def test_wrong_shape_count_and_relation_cost():
    sc = S.Scene(0, [S.SceneObject("circle", "red", "large", 0.2, 0.5, 0.35),
                     S.SceneObject("square", "blue", "small", 0.8, 0.5, 0.16)])
    assert sc.relations == [(0, "left of", 1), (1, "right of", 0)]
    acc = S.caption_accuracy
    assert acc("a large red circle to the left of a small blue square", sc)["overall"] == 1.0
    r = acc("a large red circle to the right of a small blue square", sc)
    assert r["relation"] == 0.0 and r["shape"] == r["colour"] == r["count"] == 1.0
    assert r["overall"] == pytest.approx(0.75)
    r = acc("a large red star to the left of a small blue square", sc)
    assert r["shape"] == 0.5 and r["colour"] == 1.0 and r["relation"] == 1.0
    r = acc("three shapes: a red circle, a blue square and a green star", sc)
    assert r["count"] == 0.0 and r["shape"] == r["colour"] == pytest.approx(2 / 3)
    r = acc("a red circle", sc)  # a missing object costs shape, colour and count
    assert r["shape"] == r["colour"] == 0.5 and r["count"] == 0.0
    r = acc("a small red circle and a large blue square", sc)
    assert r["size"] == 0.0 and r["overall"] == 1.0  # size is reported, not part of overall
    assert acc("", sc)["overall"] == 0.0
    assert acc("", S.Scene(0, []))["overall"] == 1.0
    assert acc("a red circle", sc.to_dict()) == acc("a red circle", sc)


def test_caption_of_another_scene_scores_low():
    own, other = [], []
    for seed in range(300):
        sc, sc2 = S.generate(seed), S.generate(seed + 1000)
        cap = S.captions(sc2)[int(seed % 5)]
        other.append(S.caption_accuracy(cap, sc)["overall"])
        own.append(S.caption_accuracy(S.captions(sc)[int(seed % 5)], sc)["overall"])
    assert np.mean(own) == 1.0
    assert np.mean(other) < 0.35 and np.percentile(other, 90) < 0.6
    # relations stated about objects that are not in the scene are not credited
    rel = [S.caption_accuracy(S.captions(S.generate(s + 1000))[0], S.generate(s)) for s in range(300)]
    rel = [a["relation"] for a in rel if a["n_relations"]]
    assert len(rel) > 100 and np.mean(rel) < 0.2


def test_render_speed():
    import time

    scenes = [S.generate(s) for s in range(100)]
    S.render(scenes[0], 128)
    t = time.perf_counter()
    for sc in scenes:
        S.render(sc, 128)
    ms = (time.perf_counter() - t) / len(scenes) * 1e3
    assert ms < 20, f"{ms:.1f} ms per 128-px scene"


def test_hand_built_scenes_with_duplicates_and_overlap():
    """Scenes built by hand may repeat an object or overlap: questions skip what they cannot
    refer to uniquely, masks stay the visible (disjoint) parts."""
    sc = S.Scene(0, [S.SceneObject("circle", "red", "large", 0.3, 0.3, 0.35),
                     S.SceneObject("circle", "red", "large", 0.4, 0.35, 0.35),
                     S.SceneObject("square", "blue", "small", 0.8, 0.8, 0.16)])
    for q in S.questions(sc):
        assert "None" not in q["question"]
        if q["kind"] == "count" and "red" in q["question"]:
            assert q["answer"] == "two"
    m = S.masks(sc, 64)
    assert not np.any(m.sum(0) > 1) and m[0].sum() < S.masks(S.Scene(0, sc.objects[:1]), 64)[0].sum()
    img = S.render(sc, 64)
    assert np.all(img[S.masks(sc, 64, threshold=1.0)[2]] == S.COLOURS["blue"])
    assert S.caption_accuracy(S.captions(sc)[3], sc)["overall"] == 1.0
