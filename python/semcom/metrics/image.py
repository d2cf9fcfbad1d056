"""Image metrics (numpy + scipy): PSNR, SSIM, MS-SSIM, mask IoU.

Images are H×W (grey) or H×W×C arrays, uint8 or float. ``data_range`` is the span of the
pixel scale: 255 for uint8 or float images on [0, 255], 1.0 for float images on [0, 1].
Reference and test must have the same shape (ValueError otherwise).
"""
import numpy as np
from scipy import ndimage

SSIM_SIGMA = 1.5
SSIM_WIN = 11  # taps of the Gaussian window: radius int(3.5 * 1.5 + 0.5) = 5
SSIM_K1, SSIM_K2 = 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _pair(ref, test):
    a = np.asarray(ref)
    b = np.asarray(test)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: reference {a.shape} vs test {b.shape}")
    if a.ndim not in (2, 3) or min(a.shape[:2]) == 0:
        raise ValueError(f"expected an H×W or H×W×C image, got shape {a.shape}")
    for name, x in (("reference", a), ("test", b)):
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise ValueError(f"{name} image must be integer or float, got {x.dtype}")
    return a.astype(np.float64), b.astype(np.float64)


def _channels(x):
    return x[..., None] if x.ndim == 2 else x


def psnr(ref, test, data_range=255, mask=None) -> float:
    """Peak signal-to-noise ratio in dB: 10·log10(data_range² / MSE) over all pixels and
    channels, or only over the pixels where the boolean H×W ``mask`` is true (region PSNR;
    NaN for an empty mask). Identical images give ``inf``."""
    a, b = _pair(ref, test)
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != np.bool_ or m.shape != a.shape[:2]:
            raise ValueError(f"mask must be a boolean {a.shape[:2]} array, got {m.dtype} {m.shape}")
        if not m.any():
            return float("nan")
        a, b = a[m], b[m]
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))


def _ssim_cs(x, y, data_range):
    """Mean SSIM and mean contrast-structure term of one channel (2-D arrays).

    Gaussian window σ = 1.5, 11 taps, population (co)variances; the maps are averaged over
    the pixels whose window lies fully inside the image (a 5-pixel border is excluded),
    exactly as skimage ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)`` and the 'valid' filtering of Wang et al. 2004.
    """
    def blur(z):
        return ndimage.gaussian_filter(z, SSIM_SIGMA, truncate=3.5, mode="reflect")

    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    cs = (2 * cxy + c2) / (vx + vy + c2)
    s = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs
    r = (SSIM_WIN - 1) // 2
    inner = (slice(r, x.shape[0] - r), slice(r, x.shape[1] - r))
    return float(s[inner].mean()), float(cs[inner].mean())


def _check_window(shape, what):
    if min(shape[:2]) < SSIM_WIN:
        raise ValueError(f"{what}: image {shape[0]}×{shape[1]} is smaller than the {SSIM_WIN}×{SSIM_WIN} SSIM window")


def ssim(ref, test, data_range=255) -> float:
    """Structural similarity (Wang et al. 2004): Gaussian window σ = 1.5 (11 taps),
    K1 = 0.01, K2 = 0.03, computed per channel and averaged over channels. Matches
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range, channel_axis=-1)``.
    Images must be at least 11×11 (ValueError otherwise)."""
    a, b = _pair(ref, test)
    _check_window(a.shape, "ssim")
    a, b = _channels(a), _channels(b)
    return float(np.mean([_ssim_cs(a[..., c], b[..., c], data_range)[0] for c in range(a.shape[2])]))


def _downsample(x):
    """2×2 average; an odd last row/column is averaged with itself (edge replication), as the
    symmetric-padded 2×2 filter-and-subsample of Wang's reference MS-SSIM code."""
    if x.shape[0] % 2:
        x = np.concatenate([x, x[-1:]], axis=0)
    if x.shape[1] % 2:
        x = np.concatenate([x, x[:, -1:]], axis=1)
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def ms_ssim_scales(height: int, width: int, max_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """Number of MS-SSIM scales used for an image: the most (≤ 5) whose coarsest level is
    still at least 11×11. 0 when the image itself is smaller than 11×11."""
    m = 0
    h, w = height, width
    while m < max_scales and min(h, w) >= SSIM_WIN:
        m += 1
        h, w = (h + 1) // 2, (w + 1) // 2
    return m


def ms_ssim(ref, test, data_range=255) -> float:
    """Multi-scale SSIM (Wang, Simoncelli, Bovik 2003).

    Five scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333); 2×2 average
    downsampling between scales (odd sizes: edge row/column replicated); the contrast-
    structure term at scales 1…M−1 and the full SSIM at scale M, each clipped at 0 (as
    pytorch_msssim) and raised to its weight; computed per channel, then averaged over
    channels. SSIM window and constants as in :func:`ssim`.

    Small images: when the image is too small for five scales (the coarsest level must be at
    least 11×11; all five need 161×161 or more), only the first M = :func:`ms_ssim_scales`
    scales are used and their weights are renormalised to sum to 1 (with all five, the
    standard weights are used as published; they sum to 1.0001); with M = 1 the result is
    max(SSIM, 0). Images smaller than 11×11 raise ValueError.
    """
    a, b = _pair(ref, test)
    _check_window(a.shape, "ms_ssim")
    m = ms_ssim_scales(*a.shape[:2])
    w = np.asarray(MS_SSIM_WEIGHTS[:m])
    if m < len(MS_SSIM_WEIGHTS):
        w = w / w.sum()
    a, b = _channels(a), _channels(b)
    values = []
    for c in range(a.shape[2]):
        x, y = a[..., c], b[..., c]
        terms = []
        for scale in range(m):
            s, cs = _ssim_cs(x, y, data_range)
            terms.append(s if scale == m - 1 else cs)
            if scale < m - 1:
                x, y = _downsample(x), _downsample(y)
        values.append(np.prod(np.maximum(terms, 0.0) ** w))
    return float(np.mean(values))


def iou(mask_a, mask_b) -> float:
    """Intersection over union of two boolean masks of the same shape. Two empty masks
    give 1.0 (they agree perfectly). Non-boolean input raises ValueError."""
    a = np.asarray(mask_a)
    b = np.asarray(mask_b)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    if a.dtype != np.bool_ or b.dtype != np.bool_:
        raise ValueError(f"masks must be boolean arrays, got {a.dtype} and {b.dtype}")
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union
