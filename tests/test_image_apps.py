"""The image-link apps run headless through GNU Radio: main job, eval, resumable sweep."""
import csv

import numpy as np
import pytest

from apprun import run_app

SMALL = ["--size", "64", "--limit", "1", "--quiet"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_main_job_writes_report_and_csv(tmp_path):
    out = tmp_path / "report"
    r = run_app(["apps/image_link.py", "--snr", "-5", "20", "--out", out, *SMALL], tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = _rows(out / "results.csv")
    assert {(x["codec"], float(x["snr_db"])) for x in rows} == {(c, s) for c in ("jscc", "separation")
                                                                  for s in (-5.0, 20.0)}
    html = (out / "report.html").read_text()
    assert html.count("<img") >= 3 and "PSNR vs channel SNR" in html and "MS-SSIM" in html
    assert f"report: {out.resolve() / 'report.html'}" in r.stdout
    jscc = {float(x["snr_db"]): float(x["psnr"]) for x in rows if x["codec"] == "jscc"}
    assert jscc[20.0] > jscc[-5.0] + 1  # quality follows the channel
    for x in rows:  # the decoders were fed the receiver's estimate, close to the true SNR
        if x["status"] == "ok":
            assert abs(float(x["snr_est_db"]) - float(x["snr_db"])) < 1.5


def test_eval_on_a_folder(tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:40]
    Image.fromarray(np.stack([x * 5, y * 4, (x * y) % 256], -1).astype(np.uint8)).save(data / "ramp.png")
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(data / "gray.png")
    (data / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "eval.csv"
    r = run_app(["apps/eval_image_link.py", "--data", data, "--out", out, "--snr", "10", "--rho", "1/12",
                 "--codecs", "jscc", "--quiet"], tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = _rows(out)
    assert sorted(x["name"] for x in rows) == ["gray.png", "ramp.png"]
    for x in rows:
        assert x["codec"] == "jscc" and float(x["rho"]) == pytest.approx(1 / 12)
        assert float(x["psnr"]) > 10 and 0 < float(x["ms_ssim"]) <= 1 and x["snr_est_db"]


def test_sweep_resumes(tmp_path):
    out = tmp_path / "sweep"
    args = ["apps/sweep_image_link.py", "--out", out, "--snr", "5", "--codecs", "jscc", "--channel", "awgn",
            "rayleigh", *SMALL]
    r = run_app(args, tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 grid points to run, 0 already" in r.stdout
    assert len(_rows(out / "results.csv")) == 2 and (out / "psnr_vs_snr.png").exists()
    r = run_app(args + ["--seeds", "0", "1"], tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 grid points to run, 2 already" in r.stdout
    assert len(_rows(out / "results.csv")) == 4


def test_bad_options(tmp_path):
    r = run_app(["apps/image_link.py", "--rho", "3", "--out", tmp_path / "x"], tmp_path)
    assert r.returncode != 0 and "bandwidth ratio" in r.stderr
    r = run_app(["apps/eval_image_link.py", "--data", tmp_path / "nothing", "--out", tmp_path / "x.csv"], tmp_path)
    assert r.returncode != 0 and "does not exist" in r.stderr
