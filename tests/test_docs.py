"""The user documentation's commands run as written from a fresh clone.

Scans README.md, docs/*.md, apps/*/README.md and models/README.md for shell commands
(fenced ``sh``/``bash``/``console`` blocks, and inline code spans that start with
``.venv/bin/python `` or ``make ``) and checks that

* Python commands use the venv's interpreter (``.venv/bin/python``), not ``python3`` or a
  bare ``apps/x.py``;
* every ``.venv/bin/python SCRIPT …`` / ``.venv/bin/python -m MODULE …`` answers ``--help``
  with exit status 0 and lists every ``--option`` the documented command uses;
* every ``make TARGET`` names a target of the Makefile;
* input files a command names under ``apps/``, ``models/``, ``python/`` or ``docs/`` exist;
* no document points at a developer's checkout (``../shared``, absolute ``/work``, ``/home``).
"""
import functools
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile

import pytest

from apprun import app_env

ROOT = pathlib.Path(__file__).resolve().parents[1]
VENV_PY = ".venv/bin/python"


def user_docs():
    docs = [ROOT / "README.md", ROOT / "models" / "README.md"]
    docs += sorted((ROOT / "docs").glob("*.md"))
    docs += sorted((ROOT / "apps").glob("*/README.md"))
    return [d for d in docs if d.exists()]


def rel(path):
    return str(path.relative_to(ROOT))


FENCE = re.compile(r"^```[ \t]*([\w+-]*)[^\n]*\n(.*?)^```", re.M | re.S)
SHELL_LANGS = {"sh", "bash", "shell", "console", "zsh"}
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
ENV_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")


def _strip_comment(line):
    """Drop a trailing shell comment (a ``#`` that starts a word, outside quotes)."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _fenced_commands(text):
    for m in FENCE.finditer(text):
        if m.group(1).lower() not in SHELL_LANGS:
            continue
        lineno = text.count("\n", 0, m.start(2)) + 1
        pending, start = "", None
        for i, raw in enumerate(m.group(2).splitlines()):
            line = raw.strip()
            if line.startswith("$ "):
                line = line[2:]
            if start is None:
                start = lineno + i
            if line.endswith("\\"):
                pending += line[:-1].rstrip() + " "
                continue
            cmd = _strip_comment(pending + line).strip()
            pending, first = "", start
            start = None
            if cmd:
                for part in re.split(r"\s*(?:&&|\|\||;)\s*", cmd):
                    if part.strip():
                        yield first, part.strip()


def _inline_commands(text):
    # Fenced blocks are handled separately; blank them out (keeping line numbers).
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for m in INLINE.finditer(text):
        span = m.group(1).strip()
        lineno = text.count("\n", 0, m.start()) + 1
        yield lineno, span


def commands():
    """(doc, line, command) for every shell command in the user docs."""
    out = []
    for doc in user_docs():
        text = doc.read_text(encoding="utf-8")
        for line, cmd in _fenced_commands(text):
            out.append((rel(doc), line, cmd))
        for line, span in _inline_commands(text):
            words = span.split()
            if not words:
                continue
            if span.startswith(VENV_PY + " ") or span.startswith("make ") or span == "make":
                out.append((rel(doc), line, span))
            elif (words[0] in ("python", "python3") and len(words) > 1) or (
                    re.match(r"^apps/\S+\.py$", words[0]) and len(words) > 1):
                # `python3 apps/x.py`, `apps/x.py --opt …`: a command, but not runnable as written
                out.append((rel(doc), line, span))
    return out


def _split(cmd):
    try:
        words = shlex.split(cmd)
    except ValueError:
        words = cmd.split()
    env = {}
    while words and ENV_ASSIGN.match(words[0]):
        k, v = words.pop(0).split("=", 1)
        env[k] = v
    return env, words


def python_commands():
    """Commands run by a Python interpreter, as (doc, line, env, words)."""
    out = []
    for doc, line, cmd in commands():
        env, words = _split(cmd)
        if not words:
            continue
        w0 = words[0]
        if w0 in ("python", "python3", VENV_PY) or w0.endswith("/python") or w0.endswith("/python3") \
                or re.match(r"^(\./)?apps/\S+\.py$", w0):
            out.append((doc, line, env, words))
    return out


def make_commands():
    out = []
    for doc, line, cmd in commands():
        env, words = _split(cmd)
        if words and words[0] == "make":
            out.append((doc, line, words))
    return out


def _cmd_id(item):
    doc, line = item[0], item[1]
    return f"{doc}:{line}"


# ---------------------------------------------------------------------------------------

def test_docs_have_commands():
    assert len(commands()) > 20, "the command extraction found (almost) nothing"


@pytest.mark.parametrize("item", python_commands(), ids=_cmd_id)
def test_python_commands_use_the_venv(item):
    doc, line, env, words = item
    assert words[0] == VENV_PY, (
        f"{doc}:{line}: {' '.join(words)!r} must start with {VENV_PY} (the interpreter that sees "
        f"the installed module and the pinned packages)")


def _target(words):
    """The script path or ('-m', module) a documented Python command runs, or None."""
    if re.match(r"^(\./)?apps/\S+\.py$", words[0]):
        return (words[0],), words[1:]
    args = words[1:]
    while args and args[0].startswith("-") and args[0] != "-m":
        args = args[1:]  # interpreter flags such as -u, -X …
    if not args:
        return None
    if args[0] == "-m" and len(args) > 1:
        return ("-m", args[1]), args[2:]
    return (args[0],), args[1:]


@functools.lru_cache(maxsize=None)
def _help(target, pythonpath):
    env = app_env(tempfile.mkdtemp(prefix="semcom_test_docs_"))
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / p) for p in pythonpath.split(os.pathsep)] + [env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    return subprocess.run([sys.executable, *target, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def _checkable(item):
    doc, line, env, words = item
    t = _target(words)
    if t is None:
        return False
    target, _ = t
    if target[0] == "-m":
        return target[1] not in ("pytest", "pip", "venv")
    # Scripts generated at build time (grcc -o build/...) and the reader's own files (a saved
    # snippet) are not in a fresh clone; the project's scripts live under apps/ and python/.
    return target[0].startswith(("apps/", "./apps/", "python/"))


@pytest.mark.parametrize("item", [c for c in python_commands() if _checkable(c)], ids=_cmd_id)
def test_documented_options_exist(item):
    doc, line, env, words = item
    target, args = _target(words)
    if target[0] != "-m":
        assert (ROOT / target[0]).is_file(), f"{doc}:{line}: {target[0]} does not exist"
    res = _help(target, env.get("PYTHONPATH", ""))
    shown = " ".join(words)
    assert res.returncode == 0, (
        f"{doc}:{line}: {' '.join(target)} --help exited {res.returncode}\n{res.stderr[-2000:]}")
    helptext = res.stdout + res.stderr
    if args and re.match(r"^[a-z][\w-]*$", args[0]) and re.search(r"[{,]" + re.escape(args[0]) + r"[,}]", helptext):
        sub = _help((*target, args[0]), env.get("PYTHONPATH", ""))  # a subcommand: its own options
        assert sub.returncode == 0, f"{doc}:{line}: {' '.join(target)} {args[0]} --help exited {sub.returncode}"
        helptext = sub.stdout + sub.stderr
    options = {a.split("=", 1)[0] for a in args if re.match(r"^--[A-Za-z][\w-]*", a)}
    missing = sorted(o for o in options if not re.search(re.escape(o) + r"(?![\w-])", helptext))
    assert not missing, f"{doc}:{line}: {shown!r}: {', '.join(missing)} not in {' '.join(target)} --help"


INPUT_PATH = re.compile(r"^(apps|models|python|docs|grc)/[\w./-]+\.\w+$")


@pytest.mark.parametrize("item", python_commands() + [(d, l, {}, w) for d, l, w in make_commands()],
                         ids=_cmd_id)
def test_named_input_files_exist(item):
    doc, line, env, words = item
    paths = []
    for w in words[1:]:
        value = w.split("=", 1)[1] if w.startswith(("FLOWGRAPH=",)) else w
        if INPUT_PATH.match(value):
            paths.append(value)
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"{doc}:{line}: {' '.join(words)!r} names {missing}, which do not exist"


@functools.lru_cache(maxsize=None)
def makefile_targets():
    targets = set()
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    text = text.replace("\\\n", " ")
    for m in re.finditer(r"^([^\s#=:][^=:\n]*?)\s*::?(?!=)", text, re.M):
        for t in m.group(1).split():
            targets.add(t)
    return targets


@pytest.mark.parametrize("item", make_commands(), ids=_cmd_id)
def test_make_targets_exist(item):
    doc, line, words = item
    goals = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
    missing = [g for g in goals if g not in makefile_targets()]
    assert not missing, f"{doc}:{line}: {' '.join(words)!r}: no Makefile target {missing}"


LOCAL_PATH = re.compile(r"\.\./shared\b|(?<![\w.])/(?:work|home|Users)/[\w.-]+|~/[\w.-]+/gr-semcom")


@pytest.mark.parametrize("doc", user_docs(), ids=rel)
def test_no_developer_paths(doc):
    bad = []
    for i, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        for m in LOCAL_PATH.finditer(line):
            bad.append(f"{rel(doc)}:{i}: {m.group(0)}")
    assert not bad, "paths that exist only on a developer's machine:\n" + "\n".join(bad)


def test_extraction_of_a_sample():
    text = ("x `.venv/bin/python apps/a.py --foo 1` and `make demo`\n"
            "```sh\nPYTHONPATH=python .venv/bin/python -m m --bar \\\n    --baz 2   # note\n"
            "make test && make bench\n```\n")
    fenced = list(_fenced_commands(text))
    assert [c for _, c in fenced] == [
        "PYTHONPATH=python .venv/bin/python -m m --bar --baz 2", "make test", "make bench"]
    assert [s for _, s in _inline_commands(text)] == [".venv/bin/python apps/a.py --foo 1", "make demo"]
    env, words = _split(fenced[0][1])
    assert env == {"PYTHONPATH": "python"} and _target(words) == (("-m", "m"), ["--bar", "--baz", "2"])


def _python_blocks(doc):
    return re.findall(r"^```python\n(.*?)^```", doc.read_text(encoding="utf-8"), re.M | re.S)


@pytest.mark.parametrize("doc", ["README.md", "docs/tutorial.md"])
def test_first_flowgraph_runs_and_ends(doc, tmp_path):
    """The complete flowgraph each of these documents opens with runs and exits by itself."""
    blocks = [b for b in _python_blocks(ROOT / doc) if "tb.start()" in b and "tb.wait()" in b]
    assert blocks, f"{doc} has no complete (start … wait) flowgraph"
    script = tmp_path / "flowgraph.py"
    script.write_text(blocks[0])
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=app_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "nmse" in res.stdout, res.stdout[-2000:]
