"""Metrics (no GNU Radio, no torch): link metrics on symbols; image metrics (PSNR, SSIM,
MS-SSIM, mask IoU); the EfficientNet-Lite0 feature distance (onnxruntime); text metrics (BLEU via
sacrebleu, BERTScore on all-MiniLM-L6-v2: torch is imported only when a BERTScore is computed);
semantic image metrics on the scene benchmark (attribute accuracy, CLIP-style score; onnxruntime).
See docs/metrics.md."""
from .features import effnet_feature_distance
from .image import iou, ms_ssim, ms_ssim_scales, psnr, ssim
from .symbols import measured_snr_db, nmse_db
from .text import BERTSCORE_NAME, BertScore, bertscore, bertscore_prf, bleu, sentence_bleu
from .scene import CLIP_STYLE_NAME, clip_style_score, image_attribute_accuracy

__all__ = ["effnet_feature_distance", "iou", "measured_snr_db", "ms_ssim", "ms_ssim_scales", "nmse_db", "psnr",
           "ssim"]
__all__ += ["BERTSCORE_NAME", "BertScore", "bertscore", "bertscore_prf", "bleu", "sentence_bleu"]
__all__ += ["CLIP_STYLE_NAME", "clip_style_score", "image_attribute_accuracy"]
