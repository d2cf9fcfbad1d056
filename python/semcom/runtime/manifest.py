"""The model manifest: ``<models_dir>/manifest.json``.

Schema (version 1)::

    {"version": 1,
     "models": [
       {"name": "jscc_enc",                      # unique key used by load_model()
        "file": "jscc_enc.onnx",                 # relative to the models directory
        "task": "image-encoder",                 # free text: what the model does
        "inputs":  [{"name": "image", "shape": [1, 3, "H", "W"], "dtype": "float32"}],
        "outputs": [{"name": "z", "shape": [1, "C", "H/16", "W/16"], "dtype": "float32"}],
        "channel_uses": {"formula": "C*H*W/512",  # complex channel uses per input, or null
                         "symbols": {"C": "latent channels", "H": "image height", "W": "image width"}},
        "training": {"data": "...", "command": "...", "notes": "..."},
        "sha256": "<hex of the .onnx file>",
        "size_bytes": 123456,
        "external_data": [{"file": "jscc_enc.onnx.data", "sha256": "<hex>", "size_bytes": 789}],
        "extra": {}}                             # free-form, model-specific configuration
     ]}

A shape entry is an int (fixed) or a string (symbolic: any size, the same string meaning the
same size across the model's inputs). ``dtype`` is a numpy dtype name. ``channel_uses`` is null
for models that do not put symbols on the air; otherwise ``formula`` is an arithmetic
expression (numbers, the listed symbols, ``+ - * / // %``, ``ceil``, ``floor``, ``min``,
``max``) evaluated by :meth:`ModelEntry.channel_uses_for`. ``external_data`` is optional.

:func:`register_model` fills ``sha256``, ``size_bytes`` and ``external_data`` (and ``inputs`` /
``outputs`` from the graph when absent) and rewrites the manifest atomically.
"""
from __future__ import annotations

import ast
import contextlib
import copy
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import pathlib
import shutil
import sys
import tempfile
from fractions import Fraction

import numpy as np

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
ENV_MODELS_DIR = "SEMCOM_MODELS_DIR"

_REQUIRED = ("name", "file", "task", "inputs", "outputs", "sha256", "size_bytes")
_OPTIONAL = ("channel_uses", "training", "external_data", "extra")
_COMPUTED = ("sha256", "size_bytes", "external_data")


class ModelNotFoundError(FileNotFoundError):
    """A manifest, model file or external-data file is missing."""


class ModelIntegrityError(ValueError):
    """A model or external-data file does not match its manifest (checksum or size)."""


def default_models_dir() -> pathlib.Path:
    """The models directory used when none is given.

    In order: ``$SEMCOM_MODELS_DIR``; the source tree's ``models/`` (when this package runs
    from a checkout); ``<sys.prefix>/share/gnuradio/semcom/models``; the share directory of
    the prefix the package is installed under (e.g. ``/usr/local`` while ``sys.prefix`` is
    ``/usr``). The first that exists wins; if none does, the ``sys.prefix`` one is returned
    (loading from it then fails with :class:`ModelNotFoundError`).
    """
    env = os.environ.get(ENV_MODELS_DIR)
    if env:
        return pathlib.Path(env)
    here = pathlib.Path(__file__).resolve()
    root = here.parents[3]  # python/semcom/runtime/manifest.py -> repository root
    source = root / "models"
    if source.is_dir() and (root / "python" / "semcom").is_dir():
        return source
    share = pathlib.Path("share", "gnuradio", "semcom", "models")
    installed = pathlib.Path(sys.prefix) / share
    candidates = [installed]
    for parent in here.parents:  # <prefix>/lib/python3/dist-packages/gnuradio/semcom/...
        if parent.name in ("lib", "lib64"):
            candidates.append(parent.parent / share)
            break
    for c in candidates:
        if c.is_dir():
            return c
    return installed


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, shape (ints and symbolic strings) and numpy dtype name."""

    name: str
    shape: tuple
    dtype: str

    @classmethod
    def from_dict(cls, d, where: str) -> "TensorSpec":
        if not isinstance(d, dict) or set(d) != {"name", "shape", "dtype"}:
            raise ValueError(f"{where}: expected an object with keys name, shape, dtype, got {d!r}")
        name, shape, dtype = d["name"], d["shape"], d["dtype"]
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: name must be a non-empty string, got {name!r}")
        if not isinstance(shape, list) or not all(
                (isinstance(s, int) and not isinstance(s, bool) and s >= 0) or (isinstance(s, str) and s)
                for s in shape):
            raise ValueError(f"{where} ({name}): shape must be a list of ints >= 0 or symbol strings, got {shape!r}")
        try:
            if not isinstance(dtype, str):
                raise TypeError
            dtype = np.dtype(dtype).name
        except TypeError:
            raise ValueError(f"{where} ({name}): unknown dtype {dtype!r}") from None
        return cls(name, tuple(shape), dtype)

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One manifest entry (see the module docstring for the fields)."""

    name: str
    file: str
    task: str
    inputs: tuple
    outputs: tuple
    sha256: str
    size_bytes: int
    channel_uses: dict | None = None
    training: dict | None = None
    external_data: tuple = ()
    extra: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, d) -> "ModelEntry":
        """Validate and build an entry; ValueError names the entry and the offending field."""
        if not isinstance(d, dict):
            raise ValueError(f"manifest entry must be an object, got {type(d).__name__}")
        label = f"manifest entry {d.get('name', '?')!r}"
        missing = [k for k in _REQUIRED if k not in d]
        unknown = sorted(set(d) - set(_REQUIRED) - set(_OPTIONAL))
        if missing:
            raise ValueError(f"{label}: missing field(s) {', '.join(missing)}")
        if unknown:
            raise ValueError(f"{label}: unknown field(s) {', '.join(unknown)} (free-form data goes in 'extra')")
        for k in ("name", "file", "task"):
            if not isinstance(d[k], str) or not d[k]:
                raise ValueError(f"{label}: {k} must be a non-empty string")
        _check_relative(d["file"], label)
        _check_sha(d["sha256"], f"{label}: sha256")
        if not isinstance(d["size_bytes"], int) or d["size_bytes"] < 0:
            raise ValueError(f"{label}: size_bytes must be an int >= 0")
        specs = {}
        for k in ("inputs", "outputs"):
            if not isinstance(d[k], list) or not d[k]:
                raise ValueError(f"{label}: {k} must be a non-empty list")
            specs[k] = tuple(TensorSpec.from_dict(t, f"{label} {k}[{i}]") for i, t in enumerate(d[k]))
            names = [t.name for t in specs[k]]
            if len(set(names)) != len(names):
                raise ValueError(f"{label}: duplicate {k} names {names}")
        cu = d.get("channel_uses")
        if cu is not None:
            if not isinstance(cu, dict) or set(cu) != {"formula", "symbols"} or not isinstance(cu["symbols"], dict):
                raise ValueError(f"{label}: channel_uses must be null or "
                                 "{'formula': str, 'symbols': {name: description}}")
            _parse_formula(cu["formula"], set(cu["symbols"]), label)
        training = d.get("training")
        if training is not None and not (isinstance(training, dict) and set(training) <= {"data", "command", "notes"}):
            raise ValueError(f"{label}: training must be an object with keys data, command, notes")
        ext = d.get("external_data") or []
        if not isinstance(ext, list):
            raise ValueError(f"{label}: external_data must be a list")
        for i, e in enumerate(ext):
            if not isinstance(e, dict) or not {"file", "sha256"} <= set(e) <= {"file", "sha256", "size_bytes"}:
                raise ValueError(f"{label}: external_data[{i}] must be {{'file', 'sha256'[, 'size_bytes']}}")
            _check_relative(e["file"], label)
            _check_sha(e["sha256"], f"{label}: external_data[{i}].sha256")
        extra = d.get("extra", {})
        if not isinstance(extra, dict):
            raise ValueError(f"{label}: extra must be an object")
        return cls(name=d["name"], file=d["file"], task=d["task"], inputs=specs["inputs"],
                   outputs=specs["outputs"], sha256=d["sha256"].lower(), size_bytes=d["size_bytes"],
                   channel_uses=copy.deepcopy(cu), training=copy.deepcopy(training),
                   external_data=tuple(dict(e) for e in ext), extra=copy.deepcopy(extra))

    def to_dict(self) -> dict:
        d = {"name": self.name, "file": self.file, "task": self.task,
             "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
             "channel_uses": copy.deepcopy(self.channel_uses), "training": copy.deepcopy(self.training),
             "sha256": self.sha256, "size_bytes": self.size_bytes}
        if self.external_data:
            d["external_data"] = [dict(e) for e in self.external_data]
        d["extra"] = copy.deepcopy(self.extra)
        return d

    def channel_uses_for(self, **symbols) -> int:
        """Evaluate the channel-use formula, e.g. ``entry.channel_uses_for(C=16, H=64, W=64)``.

        Raises ValueError when the model has no formula, a symbol is missing, or the result is
        not a non-negative integer.
        """
        if self.channel_uses is None:
            raise ValueError(f"model {self.name!r} has no channel-use formula")
        cu = self.channel_uses
        tree = _parse_formula(cu["formula"], set(cu["symbols"]), f"model {self.name!r}")
        missing = sorted(set(cu["symbols"]) - set(symbols))
        if missing:
            raise ValueError(f"model {self.name!r}: channel_uses formula {cu['formula']!r} needs {', '.join(missing)}")
        try:
            value = _eval_formula(tree, {k: Fraction(v) for k, v in symbols.items()})
        except ZeroDivisionError:
            raise ValueError(f"model {self.name!r}: channel_uses {cu['formula']!r} divides by zero "
                             f"for {symbols}") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"model {self.name!r}: channel_uses {cu['formula']!r} for {symbols}: {e}") from None
        if value < 0 or Fraction(value).denominator != 1:
            raise ValueError(f"model {self.name!r}: channel_uses {cu['formula']!r} = {float(value)} "
                             f"for {symbols} is not a non-negative integer")
        return int(value)


class Manifest:
    """A parsed manifest: ``entry(name)``, ``names``, iteration and ``name in manifest``."""

    def __init__(self, models_dir, entries):
        self.models_dir = pathlib.Path(models_dir)
        self._entries = {}
        for e in entries:
            if e.name in self._entries:
                raise ValueError(f"{self.path}: duplicate model name {e.name!r}")
            self._entries[e.name] = e

    @property
    def path(self) -> pathlib.Path:
        return self.models_dir / MANIFEST_NAME

    @property
    def names(self) -> list:
        return list(self._entries)

    def entry(self, name: str) -> ModelEntry:
        try:
            return self._entries[name]
        except KeyError:
            available = ", ".join(self._entries) or "(none)"
            raise KeyError(f"no model {name!r} in {self.path}; available: {available}") from None

    def model_path(self, name: str) -> pathlib.Path:
        """Absolute path of a model's .onnx file."""
        return self.models_dir / self.entry(name).file

    def __iter__(self):
        return iter(self._entries.values())

    def __len__(self):
        return len(self._entries)

    def __contains__(self, name):
        return name in self._entries

    def to_dict(self) -> dict:
        return {"version": MANIFEST_VERSION, "models": [e.to_dict() for e in self]}


def load_manifest(models_dir=None) -> Manifest:
    """Read and validate ``<models_dir>/manifest.json`` (default: :func:`default_models_dir`)."""
    models_dir = pathlib.Path(models_dir) if models_dir is not None else default_models_dir()
    path = models_dir / MANIFEST_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ModelNotFoundError(f"model manifest not found: {path} "
                                 f"(set ${ENV_MODELS_DIR} or pass models_dir)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON: {e}") from None
    return _manifest_from_dict(models_dir, data)


def _manifest_from_dict(models_dir, data) -> Manifest:
    path = pathlib.Path(models_dir) / MANIFEST_NAME
    if not (isinstance(data, dict) and data.get("version") == MANIFEST_VERSION
            and isinstance(data.get("models"), list)):
        raise ValueError(f"{path}: expected {{'version': {MANIFEST_VERSION}, 'models': [...]}}")
    try:
        return Manifest(models_dir, [ModelEntry.from_dict(m) for m in data["models"]])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def verify_files(models_dir, entry: ModelEntry) -> pathlib.Path:
    """Check the model file and every external-data file against the manifest (existence,
    size, SHA-256). Returns the model path; raises ModelNotFoundError / ModelIntegrityError
    naming the file."""
    models_dir = pathlib.Path(models_dir)
    files = [(entry.file, entry.sha256, entry.size_bytes)]
    files += [(e["file"], e["sha256"], e.get("size_bytes")) for e in entry.external_data]
    for rel, sha, size in files:
        path = models_dir / rel
        if not path.is_file():
            raise ModelNotFoundError(f"model {entry.name!r}: file missing: {path}")
        actual_size = path.stat().st_size
        if size is not None and actual_size != size:
            raise ModelIntegrityError(f"model {entry.name!r}: {path} is {actual_size} bytes, manifest says {size} "
                                      "(truncated or replaced)")
        actual = sha256_file(path)
        if actual != sha:
            raise ModelIntegrityError(f"model {entry.name!r}: sha256 mismatch for {path}: "
                                      f"expected {sha}, got {actual} (corrupted or replaced)")
    return models_dir / entry.file


def register_model(models_dir, entry: dict, onnx_path) -> ModelEntry:
    """Add or replace a model in ``<models_dir>/manifest.json`` (created if missing).

    ``onnx_path`` is the exported model; when it is outside ``models_dir`` it is copied there
    (as ``entry["file"]``, default its file name) together with its external-data files.
    ``sha256``, ``size_bytes`` and ``external_data`` are computed (the external-data files are
    read from the graph's initializers), and ``inputs`` / ``outputs`` are taken from the graph
    when the entry omits them, or checked against it when given. The manifest is rewritten
    atomically under a lock on the models directory. Needs the ``onnx`` package. Returns the stored entry.
    """
    import onnx

    models_dir = pathlib.Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    src = pathlib.Path(onnx_path)
    if not src.is_file():
        raise ModelNotFoundError(f"ONNX file not found: {src}")
    d = copy.deepcopy(dict(entry))
    for k in _COMPUTED:
        d.pop(k, None)
    d.setdefault("file", src.name)
    _check_relative(d["file"], f"entry {d.get('name', '?')!r}")
    dst = models_dir / d["file"]

    try:
        model = onnx.load(str(src), load_external_data=False)
    except Exception as e:  # protobuf raises its own DecodeError
        raise ValueError(f"{src} is not a readable ONNX model: {e}") from None
    locations = sorted({kv.value for t in _initializers(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL
                        for kv in t.external_data if kv.key == "location"})
    for loc in locations:
        _check_relative(loc, f"{src} external data")
    if src.resolve() != dst.resolve():
        for loc in locations:  # data first: the model never points at a missing file
            _atomic_copy(src.parent / loc, dst.parent / loc)
        _atomic_copy(src, dst)
    external = []
    for loc in locations:
        f = dst.parent / loc
        if not f.is_file():
            raise ModelNotFoundError(f"external-data file of {src} missing: {f}")
        external.append({"file": f.relative_to(models_dir).as_posix(), "sha256": sha256_file(f),
                         "size_bytes": f.stat().st_size})
    graph_io = {"inputs": _graph_specs(model, model.graph.input, skip_initializers=True),
                "outputs": _graph_specs(model, model.graph.output)}
    for k, specs in graph_io.items():
        if k not in d:
            d[k] = specs
        else:
            _check_against_graph(d.get("name", "?"), k, d[k], specs)
    d.update(sha256=sha256_file(dst), size_bytes=dst.stat().st_size)
    if external:
        d["external_data"] = external
    new = ModelEntry.from_dict(d)

    with _locked(models_dir):
        path = models_dir / MANIFEST_NAME
        if path.exists():
            entries = list(load_manifest(models_dir))
        else:
            entries = []
        names = [e.name for e in entries]
        if new.name in names:
            entries[names.index(new.name)] = new
        else:
            entries.append(new)
        manifest = Manifest(models_dir, entries)
        _atomic_write(path, _dumps(manifest.to_dict()) + "\n")
    return new


# -- helpers -----------------------------------------------------------------------------

def _check_relative(rel, label):
    p = pathlib.PurePosixPath(rel) if isinstance(rel, str) else None
    if p is None or not rel or p.is_absolute() or ".." in p.parts or "\\" in rel:
        raise ValueError(f"{label}: file {rel!r} must be a relative path inside the models directory")


def _check_sha(sha, label):
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha):
        raise ValueError(f"{label} must be 64 hex digits, got {sha!r}")


_FUNCS = {"ceil": math.ceil, "floor": math.floor, "min": min, "max": max}
_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: Fraction(a) / Fraction(b), ast.FloorDiv: lambda a, b: a // b,
           ast.Mod: lambda a, b: a % b}


def _parse_formula(formula, symbols, label):
    """Parse a channel-use formula, allowing only arithmetic on numbers and ``symbols``."""
    if not isinstance(formula, str):
        raise ValueError(f"{label}: channel_uses formula must be a string")
    try:
        tree = ast.parse(formula, mode="eval")
    except SyntaxError:
        raise ValueError(f"{label}: channel_uses formula {formula!r} is not an expression") from None
    callees = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        ok = isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.USub, ast.UAdd, ast.Load)) \
            or type(node) in _BINOPS \
            or (isinstance(node, ast.Constant) and type(node.value) in (int, float)) \
            or (isinstance(node, ast.Name) and id(node) not in callees and node.id in symbols) \
            or (isinstance(node, ast.Name) and id(node) in callees and node.id in _FUNCS) \
            or (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords)
        if not ok:
            what = node.id if isinstance(node, ast.Name) else type(node).__name__
            raise ValueError(f"{label}: channel_uses formula {formula!r}: {what!r} not allowed "
                             f"(symbols: {sorted(symbols)}; functions: {sorted(_FUNCS)})")
    return tree


def _eval_formula(node, env):
    if isinstance(node, ast.Expression):
        return _eval_formula(node.body, env)
    if isinstance(node, ast.Constant):
        return Fraction(node.value)
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        v = _eval_formula(node.operand, env)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        return Fraction(_BINOPS[type(node.op)](_eval_formula(node.left, env), _eval_formula(node.right, env)))
    return Fraction(_FUNCS[node.func.id](*(_eval_formula(a, env) for a in node.args)))


def _initializers(graph):
    """Initializers of a graph and of its subgraphs (If/Loop bodies)."""
    import onnx

    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _initializers(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _initializers(g)


def _graph_specs(model, values, skip_initializers=False):
    import onnx

    init = {t.name for t in model.graph.initializer} if skip_initializers else set()
    specs = []
    for v in values:
        if v.name in init:
            continue
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        specs.append({"name": v.name, "shape": shape, "dtype": dtype})
    return specs


def _check_against_graph(name, kind, given, graph):
    g = {s["name"]: s for s in graph}
    if not isinstance(given, list) or {s.get("name") for s in given if isinstance(s, dict)} != set(g):
        raise ValueError(f"entry {name!r}: {kind} names {[s.get('name') for s in given if isinstance(s, dict)]} "
                         f"do not match the graph's {list(g)}")
    for s in given:
        ref = g[s["name"]]
        if len(s.get("shape", [])) != len(ref["shape"]) or s.get("dtype") != ref["dtype"]:
            raise ValueError(f"entry {name!r}: {kind} {s['name']!r} is {s.get('dtype')}{s.get('shape')} in the entry "
                             f"but {ref['dtype']}{ref['shape']} in the graph")


@contextlib.contextmanager
def _locked(models_dir):
    """Exclusive lock on the models directory itself (no lock file left behind)."""
    fd = os.open(models_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _dumps(obj, indent=0, lead=0, width=100):
    """JSON with two-space indentation that keeps any object or list fitting the line width
    on one line (tensor specs, shapes), so that the manifest reads well and diffs cleanly.
    ``lead``: characters already on the line before this value (a key)."""
    flat = json.dumps(obj, ensure_ascii=False)
    if not isinstance(obj, (dict, list)) or not obj or indent + lead + len(flat) <= width:
        return flat
    pad = " " * (indent + 2)
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            key = json.dumps(k, ensure_ascii=False) + ": "
            items.append(pad + key + _dumps(v, indent + 2, len(key), width))
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + _dumps(v, indent + 2, 0, width) for v in obj]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def _atomic_copy(src, dst):
    """Copy via a temporary file and a rename: a session that memory-maps the old file keeps it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=dst.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _atomic_write(path, text):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
