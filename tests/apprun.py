"""Run the project's apps and GRC tools from tests (source tree or installed module)."""
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (held together while chosen, so all differ)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def app_env(tmp_path):
    """Environment in which a subprocess imports gnuradio.semcom from what is under test."""
    env = dict(os.environ)
    grc_dirs = [str(ROOT / "grc")]
    if os.environ.get("SEMCOM_TEST_INSTALLED") != "1":
        shim = pathlib.Path(tmp_path) / "semcom_shim"
        shim.mkdir(exist_ok=True)
        (shim / "sitecustomize.py").write_text(
            "import gnuradio\n"
            f"gnuradio.__path__.insert(0, {str(ROOT / 'python')!r})\n")
        env["PYTHONPATH"] = os.pathsep.join([str(shim), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    elif env.get("GRC_BLOCKS_PATH"):
        grc_dirs = [env["GRC_BLOCKS_PATH"]]
    env["GRC_BLOCKS_PATH"] = os.pathsep.join(grc_dirs)
    return env


def run_app(args, tmp_path, timeout=120):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=app_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


def grcc(grc_file, out_dir, tmp_path):
    """grcc run by the interpreter `make grc` runs GRC with (the venv's), as GRC itself generates."""
    return subprocess.run([sys.executable, shutil.which("grcc"), str(grc_file), "-o", str(out_dir)], cwd=ROOT,
                          env=app_env(tmp_path), capture_output=True, text=True, timeout=120)


def generate(grc_file, tmp_path) -> pathlib.Path:
    """Generate a flowgraph with grcc; returns the Python script GRC's Run button would execute."""
    out = pathlib.Path(tmp_path) / ("gen_" + pathlib.Path(grc_file).stem)
    out.mkdir(parents=True, exist_ok=True)
    r = grcc(grc_file, out, tmp_path)
    assert r.returncode == 0, f"grcc {grc_file} failed:\n{r.stdout}\n{r.stderr}"
    scripts = sorted(out.glob("*.py"))
    assert len(scripts) == 1, f"grcc {grc_file} wrote {scripts}"
    return scripts[0]


def run_flowgraph(script, tmp_path, args=(), timeout=120, run_s=None, gui=False, cwd=None):
    """Run a generated flowgraph as GRC's Run (F6) does: the same interpreter and environment.

    ``run_s=None``: wait for it to end by itself (a finite flowgraph), killed after ``timeout``.
    ``run_s=T``: let it run T seconds, then SIGTERM (GRC's Kill; the generated script's signal
    handler stops the flowgraph) and wait up to 30 s for it to exit.
    ``gui``: a QT GUI flowgraph, shown on Qt's offscreen platform.
    Returns (returncode, stdout, stderr); returncode None means it had to be killed.
    """
    env = app_env(tmp_path)
    if gui:
        env["QT_QPA_PLATFORM"] = "offscreen"
    p = subprocess.Popen([sys.executable, "-u", str(script), *map(str, args)], cwd=cwd or tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rc = None
    try:
        if run_s is None:
            out, err = p.communicate(timeout=timeout)
            return p.returncode, out, err
        try:
            out, err = p.communicate(timeout=run_s)  # ended early: report it as it is
            return p.returncode, out, err
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return rc, out, err
