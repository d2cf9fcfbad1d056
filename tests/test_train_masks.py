"""Training with guidance masks (semcom.train.guidance_masks, semcom.train.jscc): the masks the
guidance module draws, stored and loaded, and cropped together with the training patches."""
import numpy as np
import pytest
import skimage.data

pytest.importorskip("torch")

from gnuradio.semcom.train.guidance_masks import load_masks, photo_masks, save_masks  # noqa: E402
from gnuradio.semcom.train.jscc import CropSampler, importance_sample  # noqa: E402
from gnuradio.semcom.train.jscc_model import C_MAX, STRIDE  # noqa: E402


def test_masks_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    masks = {"a": {"church": rng.random((37, 53)) < 0.3, "tower": rng.random((37, 53)) < 0.6},
             "b": {"valley": rng.random((8, 9)) < 0.5}, "c": {}}
    save_masks(tmp_path / "m.npz", masks)
    back = load_masks(tmp_path / "m.npz")
    assert set(back) == {"a", "b"}
    for name, per in masks.items():
        got = back.get(name, [])
        assert len(got) == len(per)
        for want in per.values():
            assert any(g.shape == want.shape and np.array_equal(g, want) for g in got)


def test_photo_masks_come_from_the_guidance_module():
    from gnuradio.semcom.guidance.embedded import EmbeddedSegmenter

    seg = EmbeddedSegmenter(threads=1)
    img = skimage.data.coffee()
    masks = photo_masks(seg, img, 3, 0.02)
    assert masks, "no mask on the coffee photo"
    for phrase, m in masks.items():
        assert m.shape == img.shape[:2] and m.dtype == bool
        assert 0.02 <= m.mean() <= 0.8
        heat = seg.heatmap(img, phrase)
        assert np.array_equal(m, heat >= 0.5)           # make_guidance's threshold
    assert len({m.tobytes() for m in masks.values()}) == len(masks)   # different phrases, different regions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crop_sampler_keeps_masks_aligned(seed):
    rng = np.random.default_rng(seed)
    img = (rng.random((200, 300, 3)) * 255).astype(np.uint8)
    mask = img[..., 0] >= 128                            # a mask that can be read back from the pixels
    s = CropSampler([img], 64, np.random.default_rng(seed), masks=[[mask]])
    x, crops = s.batch(12)
    assert x.shape == (12, 3, 64, 64) and len(crops) == 12
    exact = 0
    for i, m in enumerate(crops):
        red = (x[i, 0].numpy() * 255).round()
        if m.shape == (64, 64) and np.array_equal(m, red >= 128):
            exact += 1
            continue
        # half-size patches: the mask was subsampled, the photo resampled; most pixels agree
        assert m.shape == (64, 64) and (m == (red >= 128)).mean() > 0.6
    assert exact >= 2                                    # full-size patches: pixel-exact
    none = CropSampler([img], 64, np.random.default_rng(seed))
    assert all(m is None for m in none.batch(4)[1])
    with pytest.raises(SystemExit):
        CropSampler([img], 64, rng, masks=[[mask[:10]]])


def test_importance_sample_follows_the_mask():
    rng = np.random.default_rng(3)
    size = 64
    mask = np.zeros((size, size), bool)
    mask[:, : size // 2] = True
    for _ in range(5):
        alloc, w = importance_sample(size, rng, mask)
        assert alloc.shape == (size // STRIDE, size // STRIDE) and w.shape == (size, size)
        assert np.all(w[mask] == w[mask][0]) and w[mask][0] >= 1.5 and np.all(w[~mask] == 1.0)
        planes = alloc * C_MAX / 2
        assert planes[:, : size // 2 // STRIDE].mean() > planes[:, size // 2 // STRIDE:].mean()
