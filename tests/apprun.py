"""Run the project's apps and GRC tools from tests (source tree or installed module)."""
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


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
    return subprocess.run(["grcc", str(grc_file), "-o", str(out_dir)], cwd=ROOT, env=app_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
