"""Every .grc in the repository compiles with grcc; the headless loopback runs."""
import re
import shutil

import pytest

from apprun import ROOT, grcc, run_app

GRC_FILES = sorted(p.relative_to(ROOT) for p in ROOT.glob("apps/**/*.grc"))
assert GRC_FILES, "no flowgraphs found"
pytestmark = pytest.mark.skipif(shutil.which("grcc") is None, reason="grcc not installed")


@pytest.mark.parametrize("grc", GRC_FILES, ids=str)
def test_grc_compiles(grc, tmp_path):
    r = grcc(ROOT / grc, tmp_path, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(tmp_path.glob("*.py")), "grcc wrote no python file"


def test_headless_loopback_30db(tmp_path):
    r = run_app(["apps/loopback.py", "--frames", "20", "--snr", "30", "--cfo", "0.1", "--quiet", "--timeout", "60"],
                tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"received (\d+)/20 frames.*header failures (\d+)", r.stdout)
    assert m and m.group(1) == "20" and m.group(2) == "0", r.stdout
    nmse = float(re.search(r"mean symbol NMSE (-?[\d.]+) dB", r.stdout).group(1))
    assert nmse < -29.0, r.stdout


def test_loopback_cli_rejects_bad_options(tmp_path):
    r = run_app(["apps/loopback.py", "--frames", "0"], tmp_path)
    assert r.returncode != 0 and "frames" in r.stderr
