"""SigMF recordings of complex baseband IQ (numpy + the ``sigmf`` package, no GNU Radio).

A recording is the SigMF file pair ``<base>.sigmf-data`` (raw interleaved samples) and
``<base>.sigmf-meta`` (JSON: global info, captures, annotations). Each semcom frame
(TX burst) is one annotation with ``core:sample_start`` / ``core:sample_count``,
``core:label`` "semcom frame" and the frame's header fields under the ``semcom:`` namespace
(``semcom:seq``, ``semcom:codec``, …), declared in ``core:extensions``.
"""
from __future__ import annotations

import hashlib
import json
import numbers
import os
import warnings
from pathlib import Path

import numpy as np
from sigmf import hashing as _hashing
from sigmf import keys as _k
from sigmf.error import SigMFError
from sigmf.sigmffile import SigMFFile, dtype_info, get_sigmf_filenames
from sigmf.utils import get_sigmf_iso8601_datetime_now

__all__ = [
    "SigMFRecordingError",
    "NAMESPACE",
    "FRAME_LABEL",
    "SUPPORTED_DATATYPES",
    "sigmf_paths",
    "frame_annotation",
    "annotation_fields",
    "frames",
    "build_sigmffile",
    "write_metafile",
    "write_sigmf",
    "open_sigmf",
    "read_sigmf",
]

NAMESPACE = "semcom"
EXTENSION_VERSION = "0.1.0"
FRAME_LABEL = "semcom frame"
SUPPORTED_DATATYPES = ("cf32_le", "ci16_le")
_GENERATOR = "gr-semcom"
_CI16_SCALE = 32768.0


class SigMFRecordingError(ValueError):
    """A SigMF recording is inconsistent, corrupted or of an unsupported kind.

    ``path`` is the offending file (``.sigmf-meta`` or ``.sigmf-data``).
    """

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = None if path is None else str(path)


# --------------------------------------------------------------------------- paths
def sigmf_paths(path) -> tuple[Path, Path, Path]:
    """``(base, meta_path, data_path)`` for a base name or a ``.sigmf-meta``/``.sigmf-data`` path."""
    fns = get_sigmf_filenames(os.fspath(path))
    return fns["base_fn"], fns["meta_fn"], fns["data_fn"]


# --------------------------------------------------------------------------- annotations
def _json_safe(value):
    """Tag/field value → something json (and the SigMF schema) accepts."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        return v if np.isfinite(v) else str(v)
    if isinstance(value, numbers.Complex):
        return [_json_safe(value.real), _json_safe(value.imag)]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return list(bytes(value))
    if isinstance(value, np.ndarray):
        return [_json_safe(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return str(value)


def _field_key(name: str) -> str:
    """``semcom_seq`` / ``seq`` / ``semcom:seq`` → ``semcom:seq``."""
    name = str(name)
    if name.startswith(NAMESPACE + ":"):
        return name
    if name.startswith(NAMESPACE + "_"):
        name = name[len(NAMESPACE) + 1:]
    return f"{NAMESPACE}:{name}"


def frame_annotation(sample_start, sample_count, fields=None, label=FRAME_LABEL, comment=None) -> dict:
    """One SigMF annotation dict for a frame: core keys + ``semcom:<field>`` for each field.

    ``fields`` keys may be tag keys (``semcom_seq``), bare names (``seq``) or already
    namespaced (``semcom:seq``).
    """
    start, count = int(sample_start), int(sample_count)
    if start < 0 or count < 0:
        raise ValueError(f"annotation start/count must be >= 0, got {start}/{count}")
    ann = {_k.SAMPLE_START_KEY: start, _k.SAMPLE_COUNT_KEY: count}
    if label is not None:
        ann[_k.LABEL_KEY] = str(label)
    if comment:
        ann[_k.COMMENT_KEY] = str(comment)
    for name, value in (fields or {}).items():
        ann[_field_key(name)] = _json_safe(value)
    return ann


def _normalise_annotation(a) -> dict:
    """Accept a SigMF annotation dict (``core:`` keys) or the short form
    ``{"sample_start", "sample_count", "label", "comment", "fields"}`` / a ``(start, count)`` or
    ``(start, count, fields)`` tuple."""
    if isinstance(a, (tuple, list)):
        return frame_annotation(*a)
    if not isinstance(a, dict):
        raise TypeError(f"annotation must be a dict or a (start, count[, fields]) tuple, got {type(a).__name__}")
    if _k.SAMPLE_START_KEY in a:
        out = {k: _json_safe(v) for k, v in a.items()}
        out[_k.SAMPLE_START_KEY] = int(a[_k.SAMPLE_START_KEY])
        if _k.SAMPLE_COUNT_KEY in a:
            out[_k.SAMPLE_COUNT_KEY] = int(a[_k.SAMPLE_COUNT_KEY])
        return out
    unknown = set(a) - {"sample_start", "sample_count", "label", "comment", "fields"}
    if unknown or "sample_start" not in a:
        raise ValueError(f"bad annotation {a!r}: need core:sample_start or sample_start "
                         f"(+ sample_count, label, comment, fields)")
    return frame_annotation(a["sample_start"], a.get("sample_count", 0), a.get("fields"),
                            a.get("label", FRAME_LABEL), a.get("comment"))


def annotation_fields(annotation: dict) -> dict:
    """The ``semcom:`` fields of an annotation, without the namespace: ``{"seq": 3, ...}``."""
    p = NAMESPACE + ":"
    return {k[len(p):]: v for k, v in annotation.items() if k.startswith(p)}


def frames(meta, label=FRAME_LABEL) -> list[tuple[int, int, dict]]:
    """``[(sample_start, sample_count, fields), ...]`` of the annotations with ``label``
    (all annotations having a ``core:sample_count`` when label is None). ``meta`` is a
    ``SigMFFile`` or a metadata dict."""
    anns = meta.get_annotations() if isinstance(meta, SigMFFile) else meta.get("annotations", [])
    out = []
    for a in anns:
        if _k.SAMPLE_COUNT_KEY not in a:
            continue
        if label is not None and a.get(_k.LABEL_KEY) != label:
            continue
        out.append((int(a[_k.SAMPLE_START_KEY]), int(a[_k.SAMPLE_COUNT_KEY]), annotation_fields(a)))
    return out


# --------------------------------------------------------------------------- writing
def _check_datatype(datatype, path=None, what="writing"):
    if datatype not in SUPPORTED_DATATYPES:
        raise SigMFRecordingError(
            f"unsupported SigMF datatype {datatype!r}{'' if path is None else f' in {path}'} "
            f"({what} supports {', '.join(SUPPORTED_DATATYPES)})", path)


def build_sigmffile(sample_rate, center_freq=None, annotations=(), description="", hw="", datatype="cf32_le",
                    datetime=None, author=None, sha512=None) -> SigMFFile:
    """The metadata of a single-channel recording as a ``sigmf.SigMFFile`` (no data attached)."""
    _check_datatype(datatype)
    sample_rate = float(sample_rate)
    if not np.isfinite(sample_rate) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number, got {sample_rate!r}")
    info = {
        _k.DATATYPE_KEY: datatype,
        _k.SAMPLE_RATE_KEY: sample_rate,
        _k.NUM_CHANNELS_KEY: 1,
        _k.RECORDER_KEY: _GENERATOR,
        _k.EXTENSIONS_KEY: [{"name": NAMESPACE, "version": EXTENSION_VERSION, "optional": True}],
    }
    if description:
        info[_k.DESCRIPTION_KEY] = str(description)
    if hw:
        info[_k.HW_KEY] = str(hw)
    if author:
        info[_k.AUTHOR_KEY] = str(author)
    if sha512:
        info[_k.SHA512_KEY] = sha512
    sf = SigMFFile(global_info=info)
    capture = {_k.DATETIME_KEY: datetime or get_sigmf_iso8601_datetime_now()}
    if center_freq is not None:
        capture[_k.FREQUENCY_KEY] = float(center_freq)
    sf.add_capture(0, metadata=capture)
    for a in annotations or ():
        a = _normalise_annotation(a)
        sf.add_annotation(a.pop(_k.SAMPLE_START_KEY), a.pop(_k.SAMPLE_COUNT_KEY, None), metadata=a)
    return sf


def write_metafile(sf: SigMFFile, meta_path) -> Path:
    """Validate ``sf`` and write it to ``meta_path`` atomically (temp file + rename)."""
    meta_path = Path(meta_path)
    try:
        sf.validate()
    except Exception as e:  # jsonschema.ValidationError
        raise SigMFRecordingError(f"invalid SigMF metadata for {meta_path}: {e}", meta_path) from e
    tmp = meta_path.with_name(meta_path.name + ".tmp")
    with open(tmp, "w") as fp:
        sf.dump(fp, pretty=True)
        fp.write("\n")
    os.replace(tmp, meta_path)
    return meta_path


def _to_datatype(samples, datatype) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim != 1:
        x = x.reshape(-1)
    if datatype == "cf32_le":
        return x.astype("<c8", copy=False)
    # ci16_le: interleaved int16 I/Q, full scale 1.0 <-> 32768
    x = x.astype(np.complex128, copy=False)
    iq = np.empty((len(x), 2), np.float64)
    iq[:, 0], iq[:, 1] = x.real, x.imag
    return np.clip(np.round(iq * _CI16_SCALE), -32768, 32767).astype("<i2")


def write_sigmf(path_base, samples, sample_rate, center_freq=None, annotations=(), description="", hw="",
                datatype="cf32_le", author=None, overwrite=True) -> tuple[Path, Path]:
    """Write ``samples`` (complex) as ``<path_base>.sigmf-data`` + ``.sigmf-meta``.

    ``annotations``: SigMF annotation dicts, ``frame_annotation(...)`` results, short-form
    dicts ``{"sample_start", "sample_count", "label", "comment", "fields": {"seq": 3}}`` or
    ``(start, count[, fields])`` tuples. ``datatype``: "cf32_le" (default) or "ci16_le"
    (scaled by 32768, clipped). Returns ``(meta_path, data_path)``.
    """
    _, meta_path, data_path = sigmf_paths(path_base)
    _check_datatype(datatype)
    if not overwrite:
        for p in (meta_path, data_path):
            if p.exists():
                raise FileExistsError(f"{p} already exists (overwrite=False)")
    sf = build_sigmffile(sample_rate, center_freq, annotations, description, hw, datatype, author=author)
    raw = _to_datatype(samples, datatype)
    n = len(raw)
    for a in sf.get_annotations():
        end = a[_k.SAMPLE_START_KEY] + a.get(_k.SAMPLE_COUNT_KEY, 0)
        if end > n:
            raise ValueError(f"annotation at sample {a[_k.SAMPLE_START_KEY]} ends at {end}, "
                             f"after the last of the {n} samples")
    with open(data_path, "wb") as fp:
        raw.tofile(fp)
    if n:
        sf.set_data_file(data_path)  # counts samples and records core:sha512 (sigmf's hashing)
    else:  # numpy cannot memory-map an empty file
        sf.set_global_field(_k.SHA512_KEY, _hashing.calculate_sha512(filename=data_path))
    write_metafile(sf, meta_path)
    return meta_path, data_path


# --------------------------------------------------------------------------- reading
def open_sigmf(path, skip_checksum=False, validate=True) -> SigMFFile:
    """Open and check a recording; returns the ``sigmf.SigMFFile`` with its data file attached.

    Checks: both files exist; the meta is JSON (and schema-valid when ``validate``); one
    channel, datatype cf32_le or ci16_le, no header/trailing bytes; the data size is a whole
    number of samples and covers every annotation; the data's sha512 equals ``core:sha512``
    (unless ``skip_checksum``). Raises ``FileNotFoundError`` / ``SigMFRecordingError`` naming
    the offending file.
    """
    _, meta_path, data_path = sigmf_paths(path)
    if not meta_path.is_file():
        raise FileNotFoundError(2, f"SigMF metadata file not found: {meta_path}", str(meta_path))
    try:
        with open(meta_path, "rb") as fp:
            md = json.loads(fp.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise SigMFRecordingError(f"{meta_path} is not valid SigMF JSON: {e}", meta_path) from e
    if not isinstance(md, dict) or not isinstance(md.get("global"), dict):
        raise SigMFRecordingError(f"{meta_path} has no SigMF 'global' object", meta_path)
    md.setdefault("captures", [])
    md.setdefault("annotations", [])
    g = md["global"]
    if g.get(_k.DATASET_KEY) or g.get(_k.METADATA_ONLY_KEY):
        raise SigMFRecordingError(f"{meta_path}: non-conforming or metadata-only recordings are not supported "
                                  f"(need a {data_path.name} next to it)", meta_path)
    datatype = g.get(_k.DATATYPE_KEY)
    _check_datatype(datatype, meta_path, what="reading")
    if int(g.get(_k.NUM_CHANNELS_KEY, 1)) != 1:
        raise SigMFRecordingError(f"{meta_path}: only single-channel recordings are supported "
                                  f"(core:num_channels = {g.get(_k.NUM_CHANNELS_KEY)})", meta_path)
    if g.get(_k.TRAILING_BYTES_KEY, 0) or any(c.get(_k.HEADER_BYTES_KEY, 0) for c in md["captures"]):
        raise SigMFRecordingError(f"{meta_path}: header/trailing bytes (non-conforming dataset) are not supported",
                                  meta_path)
    if not data_path.is_file():
        raise FileNotFoundError(2, f"SigMF data file not found: {data_path} (for {meta_path.name})", str(data_path))
    size = data_path.stat().st_size
    sample_size = dtype_info(datatype)["sample_size"]
    n, rem = divmod(size, sample_size)
    if rem:
        raise SigMFRecordingError(
            f"{data_path} is {size} bytes, not a whole number of {sample_size}-byte {datatype} samples "
            f"(truncated or wrong datatype)", data_path)
    for a in md["annotations"]:
        if not isinstance(a, dict) or _k.SAMPLE_START_KEY not in a:
            raise SigMFRecordingError(f"{meta_path}: annotation without core:sample_start: {a!r}", meta_path)
        end = int(a[_k.SAMPLE_START_KEY]) + int(a.get(_k.SAMPLE_COUNT_KEY, 0))
        if end > n:
            raise SigMFRecordingError(
                f"{data_path} holds {n} samples but an annotation in {meta_path.name} ends at sample {end} "
                f"(data file truncated?)", data_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # undeclared extensions in 3rd-party files
            if n:
                sf = SigMFFile(metadata=md, data_file=data_path, skip_checksum=True, autoscale=True)
            else:  # an empty recording: numpy cannot memory-map an empty file
                sf = SigMFFile(metadata=md, autoscale=True)
                sf.data_file, sf.sample_count = data_path, 0
            if validate:
                sf.validate()
    except SigMFError as e:
        raise SigMFRecordingError(f"cannot open {meta_path}: {e}", meta_path) from e
    except Exception as e:  # jsonschema.ValidationError
        if validate and type(e).__name__ == "ValidationError":
            raise SigMFRecordingError(f"{meta_path} is not valid SigMF metadata: {e.message}", meta_path) from e
        raise
    if not skip_checksum and g.get(_k.SHA512_KEY):
        actual = _hashing.calculate_sha512(filename=data_path)
        if actual != g[_k.SHA512_KEY]:
            raise SigMFRecordingError(
                f"checksum mismatch: sha512 of {data_path} does not match core:sha512 in {meta_path.name} "
                f"(data file corrupted or modified)", data_path)
    return sf


def read_sigmf(path, skip_checksum=False, validate=True) -> tuple[np.ndarray, SigMFFile]:
    """Read a recording: ``(samples, meta)``.

    ``samples`` is a complex64 array (ci16_le scaled by 1/32768); ``meta`` the checked
    ``sigmf.SigMFFile`` (``meta.get_global_info()``, ``meta.get_captures()``,
    ``meta.get_annotations()``; ``frames(meta)`` lists the semcom frames). ``path``: base
    name, ``.sigmf-meta`` or ``.sigmf-data``. Errors as ``open_sigmf``.
    """
    sf = open_sigmf(path, skip_checksum=skip_checksum, validate=validate)
    n = sf.sample_count
    if n == 0:
        return np.zeros(0, np.complex64), sf
    x = sf.read_samples(0, n)
    return np.ascontiguousarray(x, dtype=np.complex64), sf


def sha512_hasher():
    """A fresh ``hashlib.sha512`` (the hash SigMF uses for ``core:sha512``), for streaming writers."""
    return hashlib.sha512()

