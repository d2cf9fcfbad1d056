"""ONNX Runtime sessions for manifest models: providers, threads, a shared session cache."""
from __future__ import annotations

import os
import threading
from collections.abc import Mapping

import numpy as np

from .manifest import ModelEntry, ModelIntegrityError, load_manifest, verify_files

ENV_THREADS = "SEMCOM_ORT_THREADS"
_CUDA, _CPU = "CUDAExecutionProvider", "CPUExecutionProvider"

# onnxruntime type strings -> numpy dtype names (types without a numpy equivalent are not checked)
_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
              "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
              "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32",
              "tensor(uint64)": "uint64", "tensor(bool)": "bool"}

_cache: dict = {}
_cache_lock = threading.Lock()


class ModelInputError(ValueError):
    """Feeds that do not match the model's manifest (names, dtypes, ranks, fixed sizes)."""


def resolve_providers(providers=None) -> list:
    """Execution providers to request.

    ``None`` or ``"auto"``: CUDA (then CPU as fallback) when onnxruntime-gpu is installed and
    reports ``CUDAExecutionProvider``, else CPU only. A provider name or a list of names is
    taken as given, in order. ValueError for a name onnxruntime does not know, or one this
    onnxruntime build does not offer.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers is None or providers == "auto":
        return [_CUDA, _CPU] if _CUDA in available else [_CPU]
    names = [providers] if isinstance(providers, str) else list(providers)
    if not names:
        raise ValueError("providers: empty list (use 'auto' or e.g. ['CPUExecutionProvider'])")
    known = ort.get_all_providers()
    for p in names:
        if p not in known:
            raise ValueError(f"unknown execution provider {p!r}; known: {', '.join(known)}")
        if p not in available:
            raise ValueError(f"execution provider {p!r} is not available in this onnxruntime build "
                             f"(available: {', '.join(available)})")
    return list(dict.fromkeys(names))


def resolve_threads(threads=None):
    """Intra-op thread count: ``threads`` if given, else ``$SEMCOM_ORT_THREADS``, else None
    (onnxruntime's default). 0 also means onnxruntime's default."""
    if threads is None:
        env = os.environ.get(ENV_THREADS, "").strip()
        if not env:
            return None
        try:
            threads = int(env)
        except ValueError:
            raise ValueError(f"${ENV_THREADS} must be an integer, got {env!r}") from None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
        raise ValueError(f"threads must be an integer >= 0, got {threads!r}")
    return int(threads) or None


def _file_identity(path):
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _session(path, files, providers, threads, sha256):
    """A cached InferenceSession per (path, providers, threads, checksum, identity of ``files``).

    onnxruntime memory-maps external data, so a file rewritten in place under a live session
    must never be served from the cache again: the key includes every file's inode, size and
    modification time, and a rewritten file gets a fresh session.
    """
    import onnxruntime as ort

    key = (os.path.realpath(path), tuple(providers), threads, sha256, tuple(_file_identity(f) for f in files))
    with _cache_lock:
        sess = _cache.get(key)
        if sess is None:
            opts = ort.SessionOptions()
            opts.inter_op_num_threads = 1
            # No busy-waiting worker threads: the encoder's and decoder's sessions (and GNU
            # Radio's threads) share few cores; spinning pools measured 50-54 ms vs 39-43 ms
            # per JSCC encode+decode at 256x256 on 2 cores.
            opts.add_session_config_entry("session.intra_op.allow_spinning", os.environ.get("SEMCOM_ORT_SPIN", "0"))
            if threads:
                opts.intra_op_num_threads = threads
            # Given the path (not bytes), onnxruntime reads external data next to the model.
            sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
            _cache[key] = sess
        return sess


def clear_session_cache() -> None:
    """Drop every cached session (models loaded afterwards get fresh sessions)."""
    with _cache_lock:
        _cache.clear()


class OnnxModel:
    """A manifest model bound to an onnxruntime session (shared with other OnnxModel objects
    of the same file, providers and thread count). ``run`` is thread-safe."""

    def __init__(self, entry: ModelEntry, session, path):
        self.entry = entry
        self.session = session
        self.path = path
        self._specs = {t.name: t for t in entry.inputs}
        self._check_graph()

    @property
    def inputs(self) -> list:
        """Input names, in manifest order."""
        return [t.name for t in self.entry.inputs]

    @property
    def outputs(self) -> list:
        """Output names, in manifest order."""
        return [t.name for t in self.entry.outputs]

    @property
    def providers(self) -> list:
        """Execution providers the session actually uses (CUDA may have fallen back to CPU)."""
        return self.session.get_providers()

    def run(self, feeds: Mapping, outputs=None) -> dict:
        """Run the model: ``feeds`` maps every input name to an array of the manifest dtype and
        rank (fixed sizes must match; a symbolic size must be equal wherever it recurs).
        Returns ``{output name: array}`` for ``outputs`` (default: all)."""
        if not isinstance(feeds, Mapping):
            raise ModelInputError(f"model {self.entry.name!r}: feeds must be a dict name -> array")
        missing = [n for n in self._specs if n not in feeds]
        unknown = [n for n in feeds if n not in self._specs]
        if missing or unknown:
            raise ModelInputError(f"model {self.entry.name!r}: inputs are {self.inputs}; "
                                  f"missing {missing}, unknown {unknown}")
        arrays, bound = {}, {}
        for name, spec in self._specs.items():
            a = np.asarray(feeds[name])
            if a.dtype != np.dtype(spec.dtype):
                raise ModelInputError(f"model {self.entry.name!r}: input {name!r} must be {spec.dtype}, got {a.dtype}")
            if a.ndim != len(spec.shape):
                raise ModelInputError(f"model {self.entry.name!r}: input {name!r} must have rank {len(spec.shape)} "
                                      f"{list(spec.shape)}, got shape {a.shape}")
            for axis, (want, got) in enumerate(zip(spec.shape, a.shape)):
                if isinstance(want, int) and want != got:
                    raise ModelInputError(f"model {self.entry.name!r}: input {name!r} axis {axis} must be {want}, "
                                          f"got shape {a.shape}")
                if isinstance(want, str) and bound.setdefault(want, got) != got:
                    raise ModelInputError(f"model {self.entry.name!r}: size {want!r} is {bound[want]} elsewhere "
                                          f"but {got} in input {name!r} axis {axis}")
            arrays[name] = np.ascontiguousarray(a)
        names = self.outputs if outputs is None else list(outputs)
        bad = [n for n in names if n not in self.outputs]
        if bad:
            raise ModelInputError(f"model {self.entry.name!r}: unknown output(s) {bad}; outputs are {self.outputs}")
        return dict(zip(names, self.session.run(names, arrays)))

    def _check_graph(self):
        """The manifest must describe the file: same input/output names, ranks and dtypes."""
        for kind, specs, graph in (("inputs", self.entry.inputs, self.session.get_inputs()),
                                   ("outputs", self.entry.outputs, self.session.get_outputs())):
            g = {v.name: v for v in graph}
            if set(g) != {t.name for t in specs}:
                raise ModelIntegrityError(f"model {self.entry.name!r} ({self.path}): manifest {kind} "
                                          f"{[t.name for t in specs]} != graph {kind} {list(g)}")
            for t in specs:
                v = g[t.name]
                dtype = _ORT_TYPES.get(v.type)
                if len(v.shape) != len(t.shape) or (dtype is not None and dtype != t.dtype):
                    raise ModelIntegrityError(f"model {self.entry.name!r} ({self.path}): {kind} {t.name!r} is "
                                              f"{t.dtype}{list(t.shape)} in the manifest but {v.type}{v.shape} "
                                              "in the graph")

    def __repr__(self):
        return f"OnnxModel({self.entry.name!r}, path={str(self.path)!r}, providers={self.providers})"


def load_model(name: str, models_dir=None, providers=None, threads=None) -> OnnxModel:
    """Load a manifest model.

    Every call re-checks the size and SHA-256 of the model file and of each external-data file
    (ModelNotFoundError / ModelIntegrityError name the file); the onnxruntime session is then
    taken from a process-wide cache keyed by (path, providers, threads, checksum, file
    identities), so blocks that load the same model share one session. Replace model files
    atomically (write elsewhere, then rename, as :func:`register_model` does): onnxruntime
    memory-maps external data, and a file truncated under a live session can crash the process.
    ``providers``: see :func:`resolve_providers`; ``threads``: see :func:`resolve_threads`
    (inter-op threads are always 1).
    """
    manifest = load_manifest(models_dir)
    entry = manifest.entry(name)
    providers = resolve_providers(providers)
    threads = resolve_threads(threads)
    path = verify_files(manifest.models_dir, entry)
    files = [path] + [manifest.models_dir / e["file"] for e in entry.external_data]
    return OnnxModel(entry, _session(path, files, providers, threads, entry.sha256), path)
