"""Metrics (no GNU Radio, no torch): link metrics on symbols; image metrics (PSNR, SSIM,
MS-SSIM, mask IoU); the EfficientNet-Lite0 feature distance (onnxruntime). See docs/metrics.md."""
from .features import effnet_feature_distance
from .image import iou, ms_ssim, ms_ssim_scales, psnr, ssim
from .symbols import measured_snr_db, nmse_db

__all__ = ["effnet_feature_distance", "iou", "measured_snr_db", "ms_ssim", "ms_ssim_scales", "nmse_db", "psnr",
           "ssim"]
