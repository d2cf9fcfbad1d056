"""gr_modtool can add a Python block to gr-semcom, and the tree still configures, builds,
installs and imports.

On a copy of the tracked files: ``gr_modtool add -t sync -l python`` (non-interactive), then
the template's placeholders are filled in as a user would, then CMake configure, build,
install into the copy, ctest (the generated QA file), and an import of the installed
package: the new block and the existing ones must both be reachable from
``gnuradio.semcom`` (gr_modtool appends ``from .NAME import NAME`` to ``__init__.py``,
next to its lazy ``__getattr__``).
"""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
GR_MODTOOL = shutil.which("gr_modtool")
CMAKE = shutil.which("cmake")

pytestmark = [
    pytest.mark.skipif(GR_MODTOOL is None, reason="gr_modtool is not installed (it comes with gnuradio-dev)"),
    pytest.mark.skipif(CMAKE is None, reason="cmake is not installed"),
]


def _run(args, cwd, timeout=180, env=None):
    res = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert res.returncode == 0, f"{' '.join(map(str, args))} exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def _copy_tree(dst):
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if not src.is_file():
            continue  # deleted in the working tree
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / f)


def test_gr_modtool_add_python_block(tmp_path):
    tree = tmp_path / "gr-semcom"
    tree.mkdir()
    _copy_tree(tree)
    name = "modtool_blk"
    res = _run([GR_MODTOOL, "add", "-t", "sync", "-l", "python", "--argument-list=", "--add-python-qa",
                "--copyright", "gr-semcom authors", "--license-file", os.devnull, "--scm-mode", "no",
                name], cwd=tree, timeout=120)
    assert "GNU Radio module name identified: semcom" in res.stdout
    pkg = tree / "python" / "semcom"
    assert (pkg / f"{name}.py").is_file() and (pkg / f"qa_{name}.py").is_file()
    assert (tree / "grc" / f"semcom_{name}.block.yml").is_file()
    assert f"from .{name} import {name}" in (pkg / "__init__.py").read_text()
    assert f"GR_ADD_TEST(qa_{name}" in (pkg / "CMakeLists.txt").read_text()

    # What a user does next: fill in the template's io signature placeholders.
    block = pkg / f"{name}.py"
    block.write_text(block.read_text().replace("<+numpy.float32+>", "numpy.float32"))

    prefix = tmp_path / "prefix"
    build = tmp_path / "build"
    _run([CMAKE, "-S", tree, "-B", build, f"-DCMAKE_INSTALL_PREFIX={prefix}",
          f"-DPYTHON_EXECUTABLE={sys.executable}"], cwd=tree, timeout=120)
    _run([CMAKE, "--build", build, "-j2"], cwd=tree, timeout=240)
    _run([CMAKE, "--install", build], cwd=tree, timeout=120)
    ctest = shutil.which("ctest")
    if ctest:
        _run([ctest, "--output-on-failure", "-R", f"qa_{name}"], cwd=build, timeout=120)

    installed = list(prefix.glob("lib/python3*/*-packages/gnuradio/semcom"))
    assert len(installed) == 1, f"installed package not found under {prefix}"
    inst = installed[0]
    src_py = {p.relative_to(pkg) for p in pkg.rglob("*.py") if not p.name.startswith("qa_")}
    inst_py = {p.relative_to(inst) for p in inst.rglob("*.py")}
    assert src_py == inst_py, f"not installed: {sorted(map(str, src_py - inst_py))}; extra: {sorted(map(str, inst_py - src_py))}"
    assert (prefix / "share/gnuradio/grc/blocks" / f"semcom_{name}.block.yml").is_file()
    assert (prefix / "share/gnuradio/grc/blocks" / "semcom_ofdm_tx.block.yml").is_file()

    code = (
        "import gnuradio, sys\n"
        f"gnuradio.__path__.insert(0, {str(inst.parent)!r})\n"
        "sys.modules.pop('gnuradio.semcom', None)\n"
        "from gnuradio import semcom\n"
        f"assert semcom.__file__.startswith({str(inst)!r}), semcom.__file__\n"
        f"b = semcom.{name}()\n"
        "assert semcom.ofdm_tx is not None and semcom.awgn_channel is not None\n"
        "import gnuradio.semcom.phy\n"
        "print('ok', b.name())\n")
    res = _run([sys.executable, "-c", code], cwd=tmp_path, timeout=120)
    assert res.stdout.startswith("ok")
