"""Importance-aware JSCC (MLLM-SC): allocation, side information, budget, policy."""
import numpy as np
import pytest

from gnuradio.semcom.codecs import Csi, make_codec
from gnuradio.semcom.codecs.importance import allocate_planes, block_levels, side_cost
from gnuradio.semcom.guidance import GuidanceError, QuestionAnalysis, Segmenter
from gnuradio.semcom.guidance.policy import WEIGHTS, analyse_question, choose_weight, make_guidance


@pytest.fixture(scope="module")
def codec():
    return make_codec("importance_jscc", "1/12")


@pytest.fixture(scope="module")
def astronaut():
    from gnuradio.semcom.images import load_images

    return load_images("sample:astronaut", size=128).items[0].pixels


def _box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), np.float32)
    m[y0:y1, x0:x1] = 1
    return m


@pytest.mark.parametrize("weight", [1.0, 2.33, 4.0, 9.0])
def test_allocation_is_exact_capped_and_weighted(weight):
    lv = np.zeros((16, 16), np.int8)
    lv[4:8, 4:10] = 1
    budget = 16 * lv.size
    planes = allocate_planes(lv, weight, budget, 32, 2)
    assert planes.sum() == budget and planes.min() >= 1 and planes.max() <= 32
    ratio = planes[lv == 1].mean() / planes[lv == 0].mean()
    if weight * 16 * lv.size / (lv.sum() * weight + (lv == 0).sum()) <= 32:  # not capped
        assert ratio == pytest.approx(weight, rel=0.05)
    else:
        assert planes[lv == 1].min() == 32 and ratio < weight


def test_allocation_rejects_impossible_budgets():
    lv = np.zeros((4, 4), np.int8)
    with pytest.raises(ValueError):
        allocate_planes(lv, 2.0, 15, 32)
    with pytest.raises(ValueError):
        allocate_planes(lv, 2.0, 16 * 32 + 1, 32)


def test_block_levels():
    heat = np.zeros((20, 20), np.float32)
    heat[:8, :8] = 1
    heat[8:16, 8:16] = 0.4
    lv = block_levels(heat, 8, 2)
    assert lv.shape == (3, 3) and lv[0, 0] == 1 and lv.sum() == 1
    assert block_levels(heat, 8, 4)[1, 1] == 1
    with pytest.raises(ValueError):
        block_levels(np.full((4, 4), np.nan), 8, 2)


@pytest.mark.parametrize("weight", [1.0, 2.33, 4.0])
def test_fixed_budget_and_roundtrip(codec, astronaut, weight):
    h, w = astronaut.shape[:2]
    imp = _box(h, w, 16, 64, 32, 96)
    enc = codec.encode(astronaut, {"snr_db": 10, "importance": imp, "weight": weight})
    total = codec.channel_uses(h, w)
    assert enc.symbols.size + side_cost(len(enc.side_info)) == total  # one budget for every weight
    assert np.mean(np.abs(enc.symbols) ** 2) == pytest.approx(1.0, rel=1e-3)
    hh, ww, planes, wt, budget = codec.parse_side_info(enc.side_info)
    assert (hh, ww, wt, budget) == (h, w, weight, enc.symbols.size)
    assert np.array_equal(planes, enc.meta["planes"])
    out = codec.decode(enc.symbols, enc.side_info, Csi(snr_db=30.0))
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    if weight > 1:
        assert codec.levels_map(enc.side_info)[40, 64] == 1 and codec.levels_map(enc.side_info)[120, 10] == 0


def test_weight_moves_channel_uses_out_of_the_background():
    """At a tight budget the background, which loses planes at weight 4, is reconstructed
    clearly worse than at 1 : 1 (the decoder follows the allocation the header carries)."""
    from gnuradio.semcom.images import load_images

    codec = make_codec("importance_jscc", "1/48")
    img = load_images("sample:astronaut", size=256).items[0].pixels
    imp = _box(256, 256, 32, 128, 64, 192)
    m = imp > 0
    err = {}
    for weight in (1.0, 4.0):
        enc = codec.encode(img, {"snr_db": 20, "importance": imp, "weight": weight})
        assert enc.meta["planes"][4:16, 8:24].mean() > (weight - 0.5) * enc.meta["planes"][20:, :].mean()
        out = codec.decode(enc.symbols, enc.side_info, Csi(snr_db=20.0)).astype(float)
        err[weight] = ((out - img) ** 2)[~m].mean()
    assert err[4.0] > 1.5 * err[1.0]


def test_uniform_and_bad_input(codec, astronaut):
    enc = codec.encode(astronaut, {"snr_db": 5})  # no importance → uniform, no map sent
    assert codec.parse_side_info(enc.side_info)[2].ptp() <= 1
    with pytest.raises(ValueError):
        codec.encode(astronaut, {"importance": np.ones((3, 3)), "weight": 2})
    with pytest.raises(ValueError):
        codec.encode(astronaut, {"importance": _box(128, 128, 0, 8, 0, 8), "weight": 0.5})
    with pytest.raises(ValueError):
        codec.parse_side_info(b"\x00\x01")
    with pytest.raises(ValueError):
        make_codec("importance_jscc", "1/2")
    enc = codec.encode(astronaut, {"importance": _box(128, 128, 0, 64, 0, 64), "weight": 4})
    # a truncated map (the PHY's side-information CRC catches bit errors; the codec checks structure)
    for broken in (enc.side_info[:13], enc.side_info[:11] + bytes([enc.side_info[11] | 6]) + enc.side_info[12:]):
        with pytest.raises(ValueError):
            codec.decode(enc.symbols, broken, Csi(snr_db=10))
    out = codec.decode(enc.symbols[:100], enc.side_info, Csi(snr_db=10))  # damaged payload still decodes
    assert out.shape == astronaut.shape


def test_question_analysis():
    a = analyse_question("What is across the sea?")
    assert a.target == "sea" and a.needs_context
    b = analyse_question("What color is the astronaut's helmet?")
    assert "helmet" in b.target and not b.needs_context
    for q in ("", "   ", "?!", "what is it?"):
        assert analyse_question(q).target == ""


def test_policy_ladder():
    obj = QuestionAnalysis(target="helmet")
    ctx = QuestionAnalysis(target="sea", needs_context=True)
    assert choose_weight(obj, 0.0, 1 / 12)[0] == 4.0
    assert choose_weight(obj, 12.0, 1 / 12)[0] == 2.33
    assert choose_weight(ctx, 12.0, 1 / 12)[0] == 1.0
    assert choose_weight(ctx, 0.0, 1 / 12)[0] == 2.33
    assert choose_weight(obj, 12.0, 1 / 24)[0] == 4.0 and choose_weight(obj, 12.0, 1 / 6)[0] == 1.0
    assert choose_weight(QuestionAnalysis(target=""), 0.0, 1 / 12)[0] == 1.0
    assert set(WEIGHTS) == {1.0, 2.33, 4.0}


class _Box(Segmenter):
    name = "box"

    def heatmap(self, image, phrase):
        if phrase == "boom":
            raise GuidanceError("backend down")
        return _box(*image.shape[:2], 0, 32, 0, 32)


class _Failing:
    def analyse(self, image, question, snr_db=None):
        raise GuidanceError("endpoint unreachable")


def test_make_guidance_and_fallbacks(astronaut, caplog):
    g = make_guidance(astronaut, "Where is the flag?", 0.0, 1 / 12, _Box())
    assert g.target == "flag" and g.weight == 2.33 and g.mask.sum() == 32 * 32 and g.fallback is None
    g = make_guidance(astronaut, "Where is the flag?", 0.0, 1 / 12, _Box(), reasoner=_Failing())
    assert g.weight == 2.33 and "unreachable" in g.fallback  # rules took over
    for q in ("", "what is it?"):
        g = make_guidance(astronaut, q, 10.0, 1 / 12, _Box())
        assert g.weight == 1.0 and g.fallback and not g.mask.any()
    g = make_guidance(astronaut, "boom", 10.0, 1 / 12, _Box())
    assert g.weight == 1.0 and "backend down" in g.fallback
    assert "uniform allocation" in caplog.text


def test_map_that_does_not_fit_falls_back_to_uniform(codec, caplog):
    img = np.zeros((56, 56, 3), np.uint8)
    imp = _box(56, 56, 0, 32, 0, 32)
    assert len(codec.encode(img, {"importance": imp, "weight": 4}).side_info) > 12  # 16-pixel map: fits
    fine = make_codec("importance_jscc", "1/12", map_block=8)
    enc = fine.encode(img, {"importance": imp, "weight": 4})                      # 8-pixel map: does not
    assert len(enc.side_info) == 12 and "does not fit" in caplog.text
    assert enc.symbols.size + side_cost(12) == fine.channel_uses(56, 56)
    with pytest.raises(ValueError, match="too small"):
        codec.encode(img[:32, :32])


@pytest.mark.parametrize("levels", [2, 3, 4])
def test_map_block_sizes(astronaut, levels):
    """Coarser map blocks: a shorter map, the same levels on every 8×8 block they cover, and a
    decoder that reads the block size from the frame."""
    h, w = astronaut.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    heat = np.clip(1.2 - np.hypot(yy - 60, xx - 70) / 50, 0, 1)   # a soft blob: several levels
    sizes = {}
    for mb in (8, 16, 32):
        c = make_codec("importance_jscc", "1/12", levels=levels, map_block=mb)
        enc = c.encode(astronaut, {"importance": heat, "weight": 3})
        sizes[mb] = len(enc.side_info)
        lv = make_codec("importance_jscc", "1/12", levels=levels).levels_map(enc.side_info)  # any map_block reads it
        assert lv.max() == levels - 1 and lv.min() == 0
        blocks = lv[: h // mb * mb, : w // mb * mb].reshape(h // mb, mb, w // mb, mb)
        assert (blocks == blocks[:, :1, :, :1]).all()                # constant over each map block
        assert enc.symbols.size + side_cost(sizes[mb]) == c.channel_uses(h, w)
        out = c.decode(enc.symbols, enc.side_info, Csi(snr_db=20.0))
        assert out.shape == astronaut.shape
    assert sizes[32] < sizes[16] < sizes[8]
    with pytest.raises(ValueError):
        make_codec("importance_jscc", "1/12", map_block=12)
