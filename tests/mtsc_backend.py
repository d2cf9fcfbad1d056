"""The multi-task models the codec, block, flowgraph and app tests run.

``SEMCOM_MTSC_TEST_MODELS``: "auto" (default: the shipped models when models/ lists the eight
models of both systems, else a tiny random export), "tiny", "embedded", or a models directory.
The tiny models' outputs mean nothing (random weights: empty or random texts), so tests on them
check the plumbing; tests that need trained models check ``trained(models)``.
"""
import os
import pathlib

PARTS = ("enc", "jscdec", "lm", "rec")
SYSTEMS = ("mtsc", "udeepsc")


def shipped() -> bool:
    from gnuradio.semcom.runtime.manifest import default_models_dir, load_manifest

    try:
        manifest = load_manifest(default_models_dir())
    except (OSError, ValueError):
        return False
    return all(f"{s}_{p}" in manifest for s in SYSTEMS for p in PARTS)


def build_tiny(models_dir, seed=0) -> str:
    """Export a tiny random model of each system (d_model 32, one layer) into ``models_dir``,
    its rate-distortion table calibrated on 8 validation items, and keep its torch checkpoint
    (``<system>_tiny.pt``) for comparisons; returns the directory."""
    import torch

    from gnuradio.semcom.train import export_mtsc, mtsc
    from gnuradio.semcom.train.mtsc_model import MtscConfig, MtscModel

    out = pathlib.Path(models_dir)
    val = mtsc.build_cache("val", 8, out / "val_8.npz")
    for k, system in enumerate(SYSTEMS):
        torch.manual_seed(seed + k)
        cfg = MtscConfig(vocab_size=len(mtsc.vocab()), d_model=32, encoder_layers=1, decoder_layers=1, heads=2,
                         ffn=64, fuse=system == "mtsc")
        model = MtscModel(cfg).eval()
        export_mtsc.export(model, {"step": 0}, out, system, {"notes": "tiny random test model"}, val)
        torch.save({"model": model.state_dict(), "cfg": cfg.to_dict(), "step": 0}, out / f"{system}_tiny.pt")
    return str(out)


def models(tmp_path_factory) -> str:
    """The models directory to pass as ``models=`` / ``--models`` ("" = the shipped ones)."""
    choice = os.environ.get("SEMCOM_MTSC_TEST_MODELS", "auto").strip() or "auto"
    if choice == "embedded" or (choice == "auto" and shipped()):
        return ""
    if choice not in ("auto", "tiny"):
        return choice
    return build_tiny(tmp_path_factory.mktemp("mtsc_tiny"))


def trained(models_dir) -> bool:
    """The models are the shipped, trained ones (not a tiny random export)."""
    return models_dir == ""
