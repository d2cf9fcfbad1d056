"""ONNX runtime core: manifest, checksums, external data, input checks, providers, threads,
session cache. Every model is a tiny graph built here with the onnx helper API."""
import json
import os
import stat
import subprocess
import sys
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from gnuradio.semcom import runtime as rt


@pytest.fixture(autouse=True)
def _fresh_cache():
    rt.clear_session_cache()
    yield
    rt.clear_session_cache()


def _affine_model(weight=None, shape=("N", 4), dtype=TensorProto.FLOAT):
    """y = x * w + 1 (w: a (4,) initializer); x of `shape`, plus a second output z = -x."""
    w = np.arange(1, 5, dtype=np.float32) if weight is None else weight
    x = helper.make_tensor_value_info("x", dtype, list(shape))
    y = helper.make_tensor_value_info("y", dtype, list(shape))
    z = helper.make_tensor_value_info("z", dtype, list(shape))
    nodes = [helper.make_node("Mul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "one"], ["y"]),
             helper.make_node("Neg", ["x"], ["z"])]
    graph = helper.make_graph(nodes, "affine", [x], [y, z],
                              initializer=[numpy_helper.from_array(w, "w"),
                                           numpy_helper.from_array(np.ones(1, np.float32), "one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _entry(name="affine", **kw):
    e = {"name": name, "task": "test", "training": {"data": "none", "command": "built in the test", "notes": ""}}
    e.update(kw)
    return e


@pytest.fixture
def models(tmp_path):
    """A models directory holding one registered model 'affine' (file affine.onnx)."""
    d = tmp_path / "models"
    d.mkdir()
    onnx.save_model(_affine_model(), str(d / "affine.onnx"))
    rt.register_model(d, _entry(), d / "affine.onnx")
    return d


def _external_model(dirpath, n=4096):
    """A model whose weight lives in an external-data file 'big.onnx.data' next to it."""
    w = np.linspace(-1, 1, n, dtype=np.float32)
    model = _affine_model(weight=w, shape=("N", n))
    onnx.save_model(model, str(dirpath / "big.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="big.onnx.data", size_threshold=0)
    return w


# -- manifest & registration --------------------------------------------------------------

def test_register_load_run(models):
    data = json.loads((models / "manifest.json").read_text())
    assert data["version"] == 1 and [m["name"] for m in data["models"]] == ["affine"]
    m = data["models"][0]
    assert m["file"] == "affine.onnx" and m["size_bytes"] == (models / "affine.onnx").stat().st_size
    assert m["sha256"] == rt.sha256_file(models / "affine.onnx") and "external_data" not in m
    # inputs/outputs were taken from the graph, symbolic dims kept
    assert m["inputs"] == [{"name": "x", "shape": ["N", 4], "dtype": "float32"}]
    assert [o["name"] for o in m["outputs"]] == ["y", "z"]
    assert stat.S_IMODE((models / "manifest.json").stat().st_mode) == 0o644
    assert sorted(p.name for p in models.iterdir()) == ["affine.onnx", "manifest.json"]  # no temp/lock files

    model = rt.load_model("affine", models_dir=models)
    assert model.inputs == ["x"] and model.outputs == ["y", "z"] and model.entry.name == "affine"
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    out = model.run({"x": x})
    np.testing.assert_allclose(out["y"], x * np.arange(1, 5) + 1)
    np.testing.assert_allclose(out["z"], -x)
    assert list(model.run({"x": x}, outputs=["z"])) == ["z"]


def test_register_checks_given_io_against_graph(models):
    ok = _entry(inputs=[{"name": "x", "shape": ["batch", 4], "dtype": "float32"}])
    assert rt.register_model(models, ok, models / "affine.onnx").inputs[0].shape == ("batch", 4)
    with pytest.raises(ValueError, match="names"):
        rt.register_model(models, _entry(inputs=[{"name": "img", "shape": ["N", 4], "dtype": "float32"}]),
                          models / "affine.onnx")
    with pytest.raises(ValueError, match="float64"):
        rt.register_model(models, _entry(inputs=[{"name": "x", "shape": ["N", 4], "dtype": "float64"}]),
                          models / "affine.onnx")


def test_register_replaces_and_appends(models):
    rt.register_model(models, _entry(task="changed"), models / "affine.onnx")
    onnx.save_model(_affine_model(), str(models / "other.onnx"))
    rt.register_model(models, _entry("other"), models / "other.onnx")
    man = rt.load_manifest(models)
    assert man.names == ["affine", "other"] and man.entry("affine").task == "changed"
    assert "other" in man and len(man) == 2 and man.model_path("other") == models / "other.onnx"


def test_register_copies_outside_file(tmp_path):
    src = tmp_path / "export"
    src.mkdir()
    w = _external_model(src)
    d = tmp_path / "models"
    e = rt.register_model(d, _entry("big", file="sub/big.onnx"), src / "big.onnx")
    assert (d / "sub" / "big.onnx").is_file() and (d / "sub" / "big.onnx.data").is_file()
    assert e.external_data[0]["file"] == "sub/big.onnx.data"
    x = np.ones((1, w.size), np.float32)
    np.testing.assert_allclose(rt.load_model("big", d).run({"x": x})["y"], x * w + 1, rtol=1e-6)


def test_register_rejects_missing_or_garbage(tmp_path):
    with pytest.raises(rt.ModelNotFoundError, match="nothere.onnx"):
        rt.register_model(tmp_path, _entry(), tmp_path / "nothere.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xffnot a model" * 10)
    with pytest.raises(ValueError, match="junk.onnx"):
        rt.register_model(tmp_path, _entry(), tmp_path / "junk.onnx")


def test_concurrent_registration_keeps_every_entry(models):
    def reg(i):
        rt.register_model(models, _entry(f"m{i}", file="affine.onnx"), models / "affine.onnx")

    threads = [threading.Thread(target=reg, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(rt.load_manifest(models).names) == sorted(["affine"] + [f"m{i}" for i in range(8)])


def test_entry_keyerror_lists_names(models):
    with pytest.raises(KeyError, match="available: affine"):
        rt.load_manifest(models).entry("nope")
    with pytest.raises(KeyError, match="affine"):
        rt.load_model("nope", models_dir=models)


def test_missing_manifest(tmp_path):
    with pytest.raises(rt.ModelNotFoundError, match="manifest.json"):
        rt.load_manifest(tmp_path)
    with pytest.raises(FileNotFoundError):
        rt.load_model("x", models_dir=tmp_path)


def _edit_manifest(models, fn):
    path = models / "manifest.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edit,msg", [
    (lambda d: d.update(version=2), "version"),
    (lambda d: d["models"][0].update(colour="red"), "unknown field.*colour"),
    (lambda d: d["models"][0].pop("sha256"), "missing field.*sha256"),
    (lambda d: d["models"][0].update(sha256="abc"), "64 hex"),
    (lambda d: d["models"][0].update(file="/etc/passwd"), "relative path"),
    (lambda d: d["models"][0].update(file="../affine.onnx"), "relative path"),
    (lambda d: d["models"].append(dict(d["models"][0])), "duplicate model name"),
    (lambda d: d["models"][0]["inputs"][0].update(dtype="floaty"), "unknown dtype"),
    (lambda d: d["models"][0]["inputs"][0].update(shape=[-1, 4]), "shape"),
    (lambda d: d["models"][0].update(channel_uses="C*H*W"), "channel_uses"),
    (lambda d: d["models"][0].update(channel_uses={"formula": "C*Q", "symbols": {"C": ""}}), "'Q' not allowed"),
])
def test_manifest_validation(models, edit, msg):
    _edit_manifest(models, edit)
    with pytest.raises(ValueError, match=msg):
        rt.load_manifest(models)


def test_invalid_json(models):
    (models / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        rt.load_manifest(models)


def test_channel_uses_formula(models):
    cu = {"formula": "C*H*W/128", "symbols": {"C": "latent channels", "H": "height", "W": "width"}}
    e = rt.register_model(models, _entry(channel_uses=cu), models / "affine.onnx")
    assert e.channel_uses_for(C=16, H=32, W=32) == 128
    assert rt.load_manifest(models).entry("affine").channel_uses == cu
    with pytest.raises(ValueError, match="needs W"):
        e.channel_uses_for(C=16, H=32)
    with pytest.raises(ValueError, match="not a non-negative integer"):
        e.channel_uses_for(C=1, H=3, W=5)
    f = rt.register_model(models, _entry(channel_uses={"formula": "ceil(H/16)*max(W//16, 1)*2",
                                                       "symbols": {"H": "", "W": ""}}), models / "affine.onnx")
    assert f.channel_uses_for(H=33, W=8) == 6
    with pytest.raises(ValueError, match="no channel-use formula"):
        rt.register_model(models, _entry(), models / "affine.onnx").channel_uses_for()
    g = rt.register_model(models, _entry(channel_uses={"formula": "W / H", "symbols": {"H": "", "W": ""}}),
                          models / "affine.onnx")
    with pytest.raises(ValueError, match="divides by zero"):
        g.channel_uses_for(H=0, W=4)
    for bad in ("__import__('os').getcwd()", "H.real", "[H]", "ceil", "H if H else 1", "H ** 99"):
        with pytest.raises(ValueError, match="channel_uses"):
            rt.register_model(models, _entry(channel_uses={"formula": bad, "symbols": {"H": ""}}),
                              models / "affine.onnx")


# -- integrity ---------------------------------------------------------------------------

def test_tampered_model_refused(models):
    raw = bytearray((models / "affine.onnx").read_bytes())
    raw[-5] ^= 0x01  # same size, one bit flipped
    (models / "affine.onnx").write_bytes(bytes(raw))
    with pytest.raises(rt.ModelIntegrityError, match=r"sha256 mismatch for .*affine\.onnx"):
        rt.load_model("affine", models)


def test_tamper_after_load_is_caught_on_next_load(models):
    rt.load_model("affine", models)
    with open(models / "affine.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(rt.ModelIntegrityError, match="affine.onnx"):
        rt.load_model("affine", models)


def test_truncated_model_refused(models):
    raw = (models / "affine.onnx").read_bytes()
    (models / "affine.onnx").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(rt.ModelIntegrityError, match=r"affine\.onnx is \d+ bytes.*truncated"):
        rt.load_model("affine", models)


def test_missing_model_refused(models):
    (models / "affine.onnx").unlink()
    with pytest.raises(rt.ModelNotFoundError, match=r"file missing: .*affine\.onnx"):
        rt.load_model("affine", models)


def test_external_data_roundtrip_and_integrity(tmp_path):
    w = _external_model(tmp_path)
    assert (tmp_path / "big.onnx").stat().st_size < 1000  # the weights really are outside
    e = rt.register_model(tmp_path, _entry("big"), tmp_path / "big.onnx")
    data_file = tmp_path / "big.onnx.data"
    assert e.external_data == ({"file": "big.onnx.data", "sha256": rt.sha256_file(data_file),
                                "size_bytes": data_file.stat().st_size},)
    x = np.full((2, w.size), 2.0, np.float32)
    np.testing.assert_allclose(rt.load_model("big", tmp_path).run({"x": x})["y"], np.tile(2 * w + 1, (2, 1)), rtol=1e-6)

    good = data_file.read_bytes()
    raw = bytearray(good)
    raw[100] ^= 0xFF
    data_file.write_bytes(bytes(raw))
    with pytest.raises(rt.ModelIntegrityError, match=r"sha256 mismatch for .*big\.onnx\.data"):
        rt.load_model("big", tmp_path)
    data_file.write_bytes(good[:-16])
    with pytest.raises(rt.ModelIntegrityError, match=r"big\.onnx\.data is \d+ bytes"):
        rt.load_model("big", tmp_path)
    data_file.unlink()
    with pytest.raises(rt.ModelNotFoundError, match=r"file missing: .*big\.onnx\.data"):
        rt.load_model("big", tmp_path)
    data_file.write_bytes(good)
    assert rt.load_model("big", tmp_path).run({"x": x})["y"].shape == (2, w.size)


def test_manifest_disagreeing_with_graph(models):
    _edit_manifest(models, lambda d: d["models"][0]["inputs"][0].update(name="image"))
    with pytest.raises(rt.ModelIntegrityError, match="graph inputs"):
        rt.load_model("affine", models)
    _edit_manifest(models, lambda d: d["models"][0]["inputs"][0].update(name="x", shape=["N", 4, 1]))
    with pytest.raises(rt.ModelIntegrityError, match="'x'"):
        rt.load_model("affine", models)


# -- inputs ------------------------------------------------------------------------------

@pytest.fixture
def two_input_model(tmp_path):
    """z = a + b with a: (N, 3), b: (N, 3) float32 and k: (2,) int64 (unused but checked)."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3])
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [2])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3])
    kz = helper.make_tensor_value_info("kz", TensorProto.INT64, [2])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["z"]), helper.make_node("Identity", ["k"], ["kz"])],
                              "add", [a, b, k], [z, kz])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(tmp_path / "add.onnx"))
    rt.register_model(tmp_path, _entry("add"), tmp_path / "add.onnx")
    return rt.load_model("add", tmp_path)


def _feeds(n=2, **kw):
    f = {"a": np.ones((n, 3), np.float32), "b": np.ones((n, 3), np.float32), "k": np.array([1, 2], np.int64)}
    f.update(kw)
    return f


def test_run_ok(two_input_model):
    out = two_input_model.run(_feeds())
    np.testing.assert_array_equal(out["z"], 2 * np.ones((2, 3)))
    np.testing.assert_array_equal(out["kz"], [1, 2])


@pytest.mark.parametrize("feeds,msg", [
    ({"a": np.ones((2, 3), np.float32)}, r"missing \['b', 'k'\]"),
    (_feeds(extra=np.ones(1)), r"unknown \['extra'\]"),
    (_feeds(a=np.ones((2, 3))), "'a' must be float32, got float64"),
    (_feeds(k=np.array([1, 2], np.int32)), "'k' must be int64, got int32"),
    (_feeds(a=np.ones((2, 3, 1), np.float32)), "'a' must have rank 2"),
    (_feeds(a=np.ones((2, 4), np.float32)), "'a' axis 1 must be 3"),
    (_feeds(k=np.array([1, 2, 3], np.int64)), "'k' axis 0 must be 2"),
    (_feeds(a=np.ones((5, 3), np.float32)), "size 'N' is 5 elsewhere but 2"),
    ([1, 2], "must be a dict"),
])
def test_input_checks(two_input_model, feeds, msg):
    with pytest.raises(rt.ModelInputError, match=msg):
        two_input_model.run(feeds)


def test_unknown_output(two_input_model):
    with pytest.raises(rt.ModelInputError, match="unknown output"):
        two_input_model.run(_feeds(), outputs=["q"])


# -- providers, threads, cache -----------------------------------------------------------

def test_providers_auto_and_explicit(models, monkeypatch):
    import onnxruntime as ort

    cpu = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert rt.resolve_providers() == cpu and rt.resolve_providers("auto") == cpu
        assert rt.load_model("affine", models).providers == cpu
        with pytest.raises(ValueError, match="not available in this onnxruntime build"):
            rt.resolve_providers(["CUDAExecutionProvider"])
    assert rt.resolve_providers("CPUExecutionProvider") == cpu
    assert rt.load_model("affine", models, providers=cpu).providers == cpu
    with pytest.raises(ValueError, match="unknown execution provider 'GPU'"):
        rt.load_model("affine", models, providers=["GPU"])
    with pytest.raises(ValueError, match="empty"):
        rt.resolve_providers([])
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert rt.resolve_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_threads(models, monkeypatch):
    monkeypatch.delenv("SEMCOM_ORT_THREADS", raising=False)
    assert rt.resolve_threads() is None and rt.resolve_threads(0) is None and rt.resolve_threads(3) == 3
    monkeypatch.setenv("SEMCOM_ORT_THREADS", "2")
    assert rt.resolve_threads() == 2 and rt.resolve_threads(1) == 1
    opts = rt.load_model("affine", models).session.get_session_options()
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
    monkeypatch.setenv("SEMCOM_ORT_THREADS", "many")
    with pytest.raises(ValueError, match="SEMCOM_ORT_THREADS"):
        rt.load_model("affine", models)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            rt.resolve_threads(bad)


def test_session_cache_shared_and_thread_safe(models):
    a = rt.load_model("affine", models, threads=1)
    b = rt.load_model("affine", models, threads=1)
    c = rt.load_model("affine", models, threads=2)
    assert a is not b and a.session is b.session and c.session is not a.session
    sessions, results, errors = [], [], []

    def work(i):
        try:
            m = rt.load_model("affine", models, threads=1)
            sessions.append(m.session)
            x = np.full((3, 4), float(i), np.float32)
            results.append(np.allclose(m.run({"x": x})["y"], x * np.arange(1, 5) + 1))
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(results) and len(results) == 8
    assert all(s is a.session for s in sessions)
    rt.clear_session_cache()
    assert rt.load_model("affine", models, threads=1).session is not a.session


# -- models directory ----------------------------------------------------------------------

def test_default_models_dir(monkeypatch, tmp_path, repo_root):
    monkeypatch.setenv("SEMCOM_MODELS_DIR", str(tmp_path))
    assert rt.default_models_dir() == tmp_path
    monkeypatch.delenv("SEMCOM_MODELS_DIR")
    if os.environ.get("SEMCOM_TEST_INSTALLED") != "1":
        assert rt.default_models_dir() == repo_root / "models"


def test_shipped_manifest_is_valid(repo_root):
    man = rt.load_manifest(repo_root / "models")
    for e in man:
        rt.verify_files(man.models_dir, e)


def test_core_imports_without_torch_or_gnuradio_runtime(repo_root):
    code = (
        "import sys; sys.modules.update(torch=None, pmt=None); sys.modules['gnuradio.gr'] = None;"
        "sys.path.insert(0, 'tests'); import conftest;"
        "import gnuradio.semcom.runtime, gnuradio.semcom.metrics;"
        "bad = [m for m in ('torch', 'gnuradio.gr', 'pmt') if sys.modules.get(m) is not None]; assert not bad, bad"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
