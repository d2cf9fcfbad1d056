"""The VLF-MSC backend the app and flowgraph tests run.

``SEMCOM_VLF_TEST_BACKEND``: "auto" (default: the shipped embedded models when models/ lists all
six VLF models, else the tiny random backend of tests/vlf_tiny.py), "tiny", "embedded", or a
models directory. The tiny backend's outputs mean nothing (random weights, empty or random
captions), so tests on it check the plumbing: every frame decoded, every line printed.
"""
import os

VLF_MODELS = ("vlf_enc", "vlf_cap_prefix", "vlf_cap_lm", "vlf_img_cond", "vlf_unet", "vlf_vae_dec")


def shipped() -> bool:
    """models/ lists every model of the VLF contract."""
    from gnuradio.semcom.runtime.manifest import default_models_dir, load_manifest

    try:
        manifest = load_manifest(default_models_dir())
    except (OSError, ValueError):
        return False
    return all(name in manifest for name in VLF_MODELS)


def backend(tmp_path_factory) -> str:
    """The backend string to pass as ``backend=`` / ``--backend``."""
    choice = os.environ.get("SEMCOM_VLF_TEST_BACKEND", "auto").strip() or "auto"
    if choice == "embedded" or (choice == "auto" and shipped()):
        return "embedded"
    if choice not in ("auto", "tiny"):
        return choice
    import vlf_tiny

    return str(vlf_tiny.build(tmp_path_factory.mktemp("vlf_tiny_backend")))
