"""apps/vlf_link.py, the headless VLF-MSC link (twin of apps/vlf_link.grc).

Run as a user runs it (a subprocess) on two scenes with few DDIM steps, on the backend of
tests/vlf_backend.py (the shipped models when models/ has them, else the tiny random one): one
line per image, a summary, the received PNGs and captions.csv in --out; bad options and a
missing backend are refused before a flowgraph starts.
"""
import csv
import math
import re

import pytest
from PIL import Image

import vlf_backend
from apprun import run_app

LINE = re.compile(r'^(scene_\d+\.png) snr_est_db=(-?[\d.]+) status=(\S+) caption="(.*)"$', re.M)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    return vlf_backend.backend(tmp_path_factory)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_two_scenes_lines_images_and_csv(backend, tmp_path):
    out = tmp_path / "out"
    r = run_app(["apps/vlf_link.py", "--images", "scenes:test:2", "--size", "64", "--snr", "10", "--steps", "2",
                 "--backend", backend, "--out", out], tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = LINE.findall(r.stdout)
    assert [st for _, _, st, _ in lines] == ["ok/ok", "ok/ok"], r.stdout
    assert all(abs(float(snr) - 10) < 3 for _, snr, _, _ in lines), r.stdout  # the receiver's own estimate
    assert "--- 2/2 frames received, lost 0, captions decoded 2" in r.stdout, r.stdout
    assert "mean caption accuracy" in r.stdout, r.stdout
    rows = _rows(out / "captions.csv")
    assert [(row["name"], row["caption"]) for row in rows] == [(n, c) for n, _, _, c in lines]
    for row in rows:
        assert row["caption_status"] == "ok" and row["image_status"] == "ok", row
        assert 0.0 <= float(row["caption_accuracy"]) <= 1.0, row
        assert int(row["n_symbols"]) > 0 and math.isfinite(float(row["bcr"])), row
        with Image.open(out / row["file"]) as im:
            assert im.size == (64, 64)  # drawn at the size the frame announced


def test_captions_only(backend, tmp_path):
    out = tmp_path / "out"
    r = run_app(["apps/vlf_link.py", "--images", "scenes:test:1", "--size", "64", "--snr", "10", "--captions-only",
                 "--backend", backend, "--out", out], tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [st for _, _, st, _ in LINE.findall(r.stdout)] == ["ok"], r.stdout
    rows = _rows(out / "captions.csv")
    assert len(rows) == 1 and rows[0]["image_status"] == "" and rows[0]["file"] == ""
    assert not list(out.glob("*.png"))


@pytest.mark.parametrize("args, message", [
    (["--limit", "-1"], "--limit must be >= 0"),
    (["--steps", "-2"], "--steps must be >= 0"),
    (["--images", "no/such/folder"], "does not exist"),
    (["--backend", "reference:no/such/dir"], "is not a directory"),
    (["--channel", "moon"], "invalid choice"),
])
def test_bad_options_refused(args, message, tmp_path):
    r = run_app(["apps/vlf_link.py", *args, "--out", tmp_path / "out"], tmp_path, timeout=120)
    assert r.returncode != 0 and message in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "out").exists()
