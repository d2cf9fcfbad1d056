"""ONNX model runtime (no GNU Radio, no torch): the model manifest, checksummed loading,
execution providers, thread settings and a shared session cache. See docs/runtime.md."""
from .manifest import (
    Manifest,
    ModelEntry,
    ModelIntegrityError,
    ModelNotFoundError,
    TensorSpec,
    default_models_dir,
    load_manifest,
    register_model,
    sha256_file,
    verify_files,
)
from .session import (
    ModelInputError,
    OnnxModel,
    clear_session_cache,
    load_model,
    resolve_providers,
    resolve_threads,
)

__all__ = ["Manifest", "ModelEntry", "ModelIntegrityError", "ModelNotFoundError", "ModelInputError", "OnnxModel",
           "TensorSpec", "clear_session_cache", "default_models_dir", "load_manifest", "load_model", "register_model",
           "resolve_providers", "resolve_threads", "sha256_file", "verify_files"]
