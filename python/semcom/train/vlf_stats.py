"""Principal-subspace statistics of a VLF encoder's features: what ``VlfCodec.feature_check`` uses
to tell a received feature from noise (numpy + ONNX Runtime; no torch needed).

``python -m gnuradio.semcom.train.vlf_stats --models DIR [--images SPEC] [--n 400] [--k 64]``
encodes the images (default: the first 400 train-split scenes of ``semcom.datasets.scenes``;
a folder of photos for a reference backend), computes the mean feature μ, the top-k
principal directions of v − μ, the mean share f of the energy of v − μ in their span and the
mean share r of the energy of v that is not μ, writes ``<DIR>/vlf_enc_stats.npz`` and names it
in the encoder's manifest entry (``extra["feature_stats"]``).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

STATS_FILE = "vlf_enc_stats.npz"


def feature_stats(feats: np.ndarray, k: int) -> dict:
    """Features [n, D] → dict(mean, basis [D, k] (float16: a few hundred kB), signal_fraction f,
    centred_fraction r)."""
    feats = np.asarray(feats, np.float64)
    if feats.ndim != 2 or feats.shape[0] <= k:
        raise ValueError(f"need more than k={k} features of shape [n, D], got {feats.shape}")
    mean = feats.mean(0)
    x = feats - mean
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    basis = vt[:k].T
    f = float(np.mean(np.sum((x @ basis) ** 2, 1) / np.sum(x ** 2, 1)))
    r = float(np.mean(np.sum(x ** 2, 1) / np.sum(feats ** 2, 1)))
    return dict(mean=mean.astype(np.float16), basis=basis.astype(np.float16), signal_fraction=f, centred_fraction=r)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="models directory of the VLF backend")
    ap.add_argument("--images", default="", help="image set (semcom.images.load_images spec); default: scenes:train:N")
    ap.add_argument("--n", type=int, default=400, help="images to encode")
    ap.add_argument("--k", type=int, default=16, help="principal directions kept (stored as float16)")
    a = ap.parse_args(argv)
    from tqdm import tqdm

    from ..codecs.vlf import VlfCodec
    from ..images import load_images
    from ..runtime import register_model
    from ..runtime.manifest import load_manifest

    codec = VlfCodec(models_dir=a.models, check_features=False)
    items = load_images(a.images or f"scenes:train:{a.n}", 0, a.n).items
    feats = np.stack([codec.features(it.pixels).ravel() for it in tqdm(items, desc="features", unit="image")])
    st = feature_stats(feats, a.k)
    path = f"{a.models}/{STATS_FILE}"
    np.savez_compressed(path, **st)
    entry = load_manifest(a.models).entry("vlf_enc").to_dict()
    entry["extra"] = dict(entry.get("extra") or {}, feature_stats=STATS_FILE,
                          feature_stats_source=f"{len(items)} images of {a.images or 'scenes:train'}, k={a.k}")
    register_model(a.models, entry, f"{a.models}/{entry['file']}")
    print(f"{path}: D={feats.shape[1]} k={a.k} f={st['signal_fraction']:.3f} r={st['centred_fraction']:.3f} "
          f"(noise alone: k/D={a.k / feats.shape[1]:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
