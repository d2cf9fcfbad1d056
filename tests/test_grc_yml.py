"""GNU Radio Companion block descriptions (grc/*.block.yml).

Checks every file as YAML (what GRC's loader sees), against the Python blocks it instantiates
(class, keyword arguments, run-time setters) and, once, through GNU Radio's own Platform (the
loader of GRC and grcc). ``SEMCOM_GRC_DIR`` points the checks at another folder of block YAMLs.
"""
import ast
import builtins
import inspect
import logging
import os
import pathlib
import re
import textwrap

import pytest

yaml = pytest.importorskip("yaml")

ROOT = pathlib.Path(__file__).resolve().parents[1]
GRC_DIR = pathlib.Path(os.environ.get("SEMCOM_GRC_DIR", ROOT / "grc"))
FILES = sorted(GRC_DIR.glob("*.block.yml"))

REQUIRED = ("id", "label", "category", "templates", "documentation", "file_format")
# Block labels: "Semcom" then words starting with a capital letter or a digit (acronyms such as
# OFDM, AWGN, MLLM-SC, SigMF allowed), no parentheses; the category groups the blocks.
LABEL_SCHEME = re.compile(r"^Semcom( [A-Z0-9][A-Za-z0-9-]*)+$")
# parameters GRC adds to every block (usable in templates)
GRC_BUILTIN_PARAMS = {"id", "alias", "comment", "affinity", "minoutbuf", "maxoutbuf"}
PY_NAMES = set(dir(builtins))
EXPR = re.compile(r"\$\{(.*?)\}", re.S)
MAKO_CODE = re.compile(r"<%(.*?)%>\\?\n?", re.S)  # <% python %> blocks (GUI blocks name their widget there)


def _load(path):
    with open(path) as f:
        return yaml.safe_load(f)


DATA = {p.name: _load(p) for p in FILES}


@pytest.fixture(params=sorted(DATA), scope="module")
def block(request):
    return request.param, DATA[request.param]


def _params(data):
    return data.get("parameters") or []


def _enums(data):
    """Parameters that show a choice: dtype enum, or any parameter with options."""
    return [p for p in _params(data) if p.get("dtype") == "enum" or "options" in p]


def _callbacks(data):
    cb = data["templates"].get("callbacks") or []
    return [cb] if isinstance(cb, str) else list(cb)


def _names(template):
    """Python names used inside the ${...} expressions of a Mako template (less those that
    its <% %> code blocks assign)."""
    local = set()
    for code in MAKO_CODE.findall(template):
        tree = ast.parse(textwrap.dedent(code).strip())
        local |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    names = set()
    for expr in EXPR.findall(MAKO_CODE.sub("", template)):
        tree = ast.parse(expr.strip(), mode="eval")
        names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return names - local


def _as_python(template):
    """Template without its <% %> blocks, every ${...} replaced by a placeholder, parsed as Python."""
    return ast.parse(EXPR.sub(lambda m: "_grc_param", MAKO_CODE.sub("", template)).strip())


def _semcom_calls(template):
    return [n for n in ast.walk(_as_python(template))
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and isinstance(n.func.value, ast.Name) and n.func.value.id == "semcom"]


@pytest.fixture(scope="module")
def semcom():
    from gnuradio import semcom as mod  # conftest puts the source tree first

    return mod


def _block_class(semcom, data):
    calls = _semcom_calls(data["templates"]["make"])
    assert calls, f"{data['id']}: make has no semcom.<block>(...) call"
    attr = calls[-1].func.attr
    assert hasattr(semcom, attr), f"{data['id']}: semcom.{attr} does not exist"
    return getattr(semcom, attr)


def test_files_found():
    assert FILES, f"no *.block.yml in {GRC_DIR}"


def test_required_keys(block):
    name, data = block
    assert isinstance(data, dict), name
    missing = [k for k in REQUIRED if k not in data]
    assert not missing, f"{name}: missing {missing}"
    assert isinstance(data["templates"], dict) and data["templates"].get("make"), f"{name}: no templates.make"
    assert data["templates"].get("imports"), f"{name}: no templates.imports"
    assert data["file_format"] == 1, name
    assert name == data["id"] + ".block.yml", f"{name}: id {data['id']!r} differs from the file name"
    assert str(data["category"]).startswith("[Semantic Comms]"), name
    assert isinstance(data["documentation"], str) and data["documentation"].strip(), name


def test_block_label_scheme():
    labels = {name: data.get("label") for name, data in DATA.items()}
    bad = {n: l for n, l in labels.items() if not (isinstance(l, str) and LABEL_SCHEME.match(l))}
    assert not bad, f"block labels outside the 'Semcom <Name>' scheme: {bad}"
    dup = sorted(l for l in labels.values() if list(labels.values()).count(l) > 1)
    assert not dup, f"duplicate block labels: {dup}"


def test_parameters_well_formed(block):
    name, data = block
    ids = [p.get("id") for p in _params(data)]
    assert len(ids) == len(set(ids)), f"{name}: duplicate parameter ids {ids}"
    for p in _params(data):
        assert isinstance(p.get("id"), str) and p["id"].isidentifier(), f"{name}: bad id {p!r}"
        assert p["id"] not in GRC_BUILTIN_PARAMS - {"id"}, f"{name}: {p['id']} shadows a GRC parameter"
        label = p.get("label")
        assert isinstance(label, str) and label.strip() == label and label, f"{name}/{p['id']}: label {label!r}"
        assert "dtype" in p, f"{name}/{p['id']}: no dtype"
        assert "default" in p or p["dtype"] == "gui_hint", f"{name}/{p['id']}: no default"


def test_enum_option_labels(block):
    name, data = block
    for p in _enums(data):
        where = f"{name}/{p['id']}"
        options = p.get("options")
        labels = p.get("option_labels")
        assert isinstance(options, list) and options, f"{where}: no options"
        assert isinstance(labels, list), f"{where}: no option_labels (the canvas would show raw values)"
        assert len(labels) == len(options), (
            f"{where}: {len(labels)} option_labels for {len(options)} options: {labels} "
            "(an unquoted label containing a comma splits in two)")
        for lab in labels:
            assert isinstance(lab, str), f"{where}: label {lab!r} is not a string (quote it)"
            assert lab and lab == lab.strip(), f"{where}: label {lab!r}"
            assert not set(lab) & set("'\"[]{}"), f"{where}: stray quote/bracket in label {lab!r}"
        assert len(set(labels)) == len(labels), f"{where}: duplicate labels {labels}"
        assert all(isinstance(o, str) for o in options), f"{where}: options must be strings {options}"
        assert len(set(options)) == len(options), f"{where}: duplicate options"
        for o in options:
            ast.literal_eval(o)  # a Python literal, e.g. "'bpsk'" or 'True'
        default = str(p.get("default"))
        assert default in options, f"{where}: default {default!r} is not one of {options}"
        for attr, values in (p.get("option_attributes") or {}).items():
            assert len(values) == len(options), f"{where}: option_attributes {attr} has {len(values)} values"


def test_template_names_are_parameters(block):
    name, data = block
    known = {p["id"] for p in _params(data)} | GRC_BUILTIN_PARAMS
    for tmpl in [data["templates"]["make"]] + _callbacks(data):
        unknown = {n for n in _names(tmpl) if n not in known and n not in PY_NAMES}
        assert not unknown, f"{name}: {tmpl!r} references {sorted(unknown)}, not parameters"


def test_every_parameter_used(block):
    name, data = block
    used = set()
    for tmpl in [data["templates"]["make"]] + _callbacks(data):
        used |= _names(tmpl)
    unused = [p["id"] for p in _params(data) if p["id"] not in used]
    assert not unused, f"{name}: parameters never passed to the block: {unused}"


def test_documentation_mentions_every_parameter(block):
    name, data = block
    doc = data["documentation"]
    missing = [p["label"] for p in _params(data) if p["label"] not in doc]
    assert not missing, f"{name}: documentation does not mention {missing}"


def test_make_matches_python_signature(block, semcom):
    name, data = block
    calls = _semcom_calls(data["templates"]["make"])
    assert calls, f"{name}: make has no semcom.<block>(...) call"
    for call in calls:
        attr = call.func.attr
        assert hasattr(semcom, attr), f"{name}: semcom.{attr} does not exist"
        cls = getattr(semcom, attr)
        assert inspect.isclass(cls), f"{name}: semcom.{attr} is not a block class"
        sig = inspect.signature(cls.__init__)
        params = list(sig.parameters.values())[1:]  # without self
        var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
        var_pos = any(p.kind is p.VAR_POSITIONAL for p in params)
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        assert var_pos or len(call.args) <= len(positional), f"{name}: too many positional arguments for {attr}"
        given = {p.name for p in positional[:len(call.args)]}
        for kw in call.keywords:
            assert kw.arg is not None, f"{name}: **kwargs in make"
            assert var_kw or kw.arg in sig.parameters, f"{name}: semcom.{attr}() has no argument {kw.arg!r}"
            assert kw.arg not in given, f"{name}: {kw.arg!r} given twice"
            given.add(kw.arg)
        required = [p.name for p in params if p.default is p.empty
                    and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        assert not set(required) - given, f"{name}: make misses required {sorted(set(required) - given)}"


def _setters(cls):
    """Run-time setters gr-semcom defines on a block class (not those of gr's base classes)."""
    return sorted(n for n, f in inspect.getmembers(cls, inspect.isfunction)
                  if n.startswith("set_") and getattr(f, "__module__", "").startswith("gnuradio.semcom"))


def test_callbacks_exist_and_cover_setters(block, semcom):
    name, data = block
    cls = _block_class(semcom, data)
    params = {p["id"] for p in _params(data)}
    called = []
    for cb in _callbacks(data):
        tree = _as_python(cb)
        assert len(tree.body) == 1 and isinstance(tree.body[0].value, ast.Call), f"{name}: callback {cb!r}"
        func = tree.body[0].value.func
        assert isinstance(func, ast.Name), f"{name}: callback {cb!r} must be 'method(${{param}})'"
        assert hasattr(cls, func.id) and callable(getattr(cls, func.id)), (
            f"{name}: callback {cb!r}: {cls.__name__} has no method {func.id}")
        assert _names(cb) & params, f"{name}: callback {cb!r} uses no parameter"
        called.append(func.id)
    assert len(called) == len(set(called)), f"{name}: repeated callbacks {called}"
    missing = [s for s in _setters(cls) if s not in called]
    assert not missing, f"{name}: {cls.__name__} setters without a GRC callback: {missing}"


# --------------------------------------------------------------------------------------
# GNU Radio's own loader (GRC / grcc)

def _system_blocks_dir():
    from gnuradio import gr

    for path in (gr.prefs().get_string("grc", "global_blocks_path", ""), "/usr/share/gnuradio/grc/blocks"):
        for entry in path.split(os.pathsep):
            if entry and os.path.isfile(os.path.join(entry, "options.block.yml")):
                return entry
    return None


class _NoDocstrings:
    """Stand-in for GRC's docstring extractor (a subprocess importing every block module)."""

    def start(self):
        pass

    def query(self, *args, **kwargs):
        pass

    def finish(self):
        pass

    def wait(self):
        pass


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    pytest.importorskip("gnuradio.grc.core.platform")
    from gnuradio import gr
    from gnuradio.grc.core import Constants
    from gnuradio.grc.core.platform import Platform

    system = _system_blocks_dir()
    if system is None:
        pytest.skip("GNU Radio's GRC block folder not found")
    cache = Constants.CACHE_FILE
    Constants.CACHE_FILE = str(tmp_path_factory.mktemp("grc_cache") / "cache.json")
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Collect(level=logging.WARNING)
    log = logging.getLogger("gnuradio.grc")
    log.addHandler(handler)
    try:
        p = Platform(name="gr-semcom test", prefs=gr.prefs(), version=gr.version(),
                     version_parts=(gr.major_version(), gr.api_version(), gr.minor_version()))
        p._docstring_extractor = _NoDocstrings()
        p.build_library([str(GRC_DIR), system])
    finally:
        log.removeHandler(handler)
        Constants.CACHE_FILE = cache
    p.test_log = [r.getMessage() for r in records]
    return p


def test_platform_loads_every_block(platform):
    problems = [m for m in platform.test_log if "semcom" in m]
    assert not problems, "GRC reported:\n" + "\n".join(problems)
    for name, data in DATA.items():
        assert data["id"] in platform.blocks, f"GRC did not load {name}"
        cls = platform.blocks[data["id"]]
        assert cls.label == data["label"]
        assert cls.loaded_from == str(GRC_DIR / name)


def test_platform_enum_labels(platform):
    fg = platform.make_flow_graph()
    for name, data in DATA.items():
        blk = fg.new_block(data["id"])
        for p in _enums(data):
            options = blk.params[p["id"]].options
            assert list(options) == p["options"], f"{name}/{p['id']}"
            assert list(options.values()) == p["option_labels"], f"{name}/{p['id']}: GRC shows {dict(options)}"
            assert blk.params[p["id"]].get_value() == str(p["default"])


def test_grcc_compiles_loopback(platform, tmp_path):
    grc = ROOT / "apps" / "loopback.grc"
    if not grc.exists():
        pytest.skip("apps/loopback.grc not present")
    flow_graph, out = platform.load_and_generate_flow_graph(str(grc), str(tmp_path))
    assert out and os.path.exists(out), "grcc could not compile apps/loopback.grc"
    compile(pathlib.Path(out).read_text(), out, "exec")
