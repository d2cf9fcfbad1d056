"""The LAM multi-task link through GNU Radio: the flowgraph (closed-loop CSI, lost and refused
items), the headless app and the evaluation app."""
import csv
import dataclasses

import pytest

from apprun import run_app
from gnuradio.semcom.blocks.mtsc_link import MtscLinkConfig, run_mtsc_link
from gnuradio.semcom.codecs.mtsc import TASKS


def test_link_serves_every_task_with_the_receivers_csi(mtsc_models):
    cfg = MtscLinkConfig(items="multitask:test:3", snr_db=25.0, channel="awgn", models=mtsc_models, tx_snr_db=-3.0)
    res = run_mtsc_link(cfg, timeout_s=300)
    rows = res["rows"]
    assert len(rows) == 3 and res["header_failures"] == 0
    for r in rows:
        assert all(r[f"{t}_status"] == "ok" for t in TASKS), r
        assert r["reconstruction"].shape == (64, 64, 3) and 0 < r["channel_uses"] <= cfg.budget
        assert all(isinstance(r[t], str) for t in TASKS[:4])
    assert rows[0]["tx_snr_db"] == -3.0  # no report yet: the initial SNR
    for prev, cur in zip(rows, rows[1:]):  # then the receiver's estimate of the previous frame
        assert cur["tx_snr_db"] == pytest.approx(prev["snr_est_db"], abs=1e-6)
        assert abs(cur["tx_snr_db"] - 25.0) < 3.0


def test_refused_and_lost_items_keep_the_link_going(mtsc_models, monkeypatch):
    from gnuradio.semcom.datasets import multitask

    real = multitask.item
    bad_seed = 2_000_001

    def item(seed, size=64):
        it = real(seed, size)
        return dataclasses.replace(it, question="") if seed == bad_seed else it

    monkeypatch.setattr(multitask, "item", item)
    cfg = MtscLinkConfig(items="multitask:test:3", snr_db=25.0, channel="awgn", models=mtsc_models)
    rows = run_mtsc_link(cfg, timeout_s=300)["rows"]
    assert [r["vqa_status"] for r in rows] == ["ok", "bad_input", "ok"]
    assert "question" in rows[1]["reason"] and rows[1]["channel_uses"] == 0
    # far below the PHY's floor every frame is lost; the sink declares it and the source goes on
    cfg = dataclasses.replace(cfg, items="multitask:test:3", snr_db=-25.0, lost_after_s=1.0)
    res = run_mtsc_link(cfg, timeout_s=120)
    assert [r["caption_audio_status"] for r in res["rows"]] == ["lost", "bad_input", "lost"]
    assert res["source_timeouts"] == 0


def test_headless_app(tmp_path, mtsc_models):
    r = run_app(["apps/mtsc_link.py", "--limit", "2", "--snr", "20", "--channel", "awgn", "--models", mtsc_models,
                 "--out", str(tmp_path / "o")], tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2/2 frames received, lost 0" in r.stdout and r.stdout.count("  Q: ") == 2
    with open(tmp_path / "o" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(TASKS) and {r["task"] for r in rows} == set(TASKS)
    assert len(list((tmp_path / "o").glob("*_rec.png"))) == 2
    r = run_app(["apps/mtsc_link.py", "--items", "nope:1", "--models", mtsc_models], tmp_path, timeout=120)
    assert r.returncode != 0 and "multitask:SPLIT" in r.stderr


def test_eval_app_columns_and_resume(tmp_path, mtsc_models):
    out = tmp_path / "mtsc.csv"
    args = ["apps/eval_mtsc.py", "--out", str(out), "--limit", "2", "--snr", "3", "--models", mtsc_models, "--quiet",
            "--soundings", "2"]
    r = run_app(args, tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    head = ("item,task,system,channel,k_factor,snr_db,seed,status,channel_uses,prediction,reference,bleu,exact,cider,"
            "psnr,ssim").split(",")
    assert list(rows[0])[:len(head)] == head
    assert len(rows) == 3 * 2 * len(TASKS)  # systems × items × tasks
    assert {r["system"] for r in rows} == {"mtsc", "baseline1_separation", "baseline2_udeepsc"}
    for r in rows:
        assert r["channel"] == "rician" and float(r["k_factor"]) == 3.0
        if r["task"] == "reconstruction":
            assert float(r["psnr"]) > 0 and -1 <= float(r["ssim"]) <= 1 and r["bleu"] == ""
        else:
            assert 0 <= float(r["bleu"]) <= 100 and r["exact"] in ("0", "1") and float(r["cider"]) >= 0
    uses = {r["system"]: int(r["channel_uses"]) for r in rows}
    assert uses["baseline1_separation"] > 4 * uses["mtsc"] and uses["mtsc"] <= 1024
    r = run_app(args, tmp_path, timeout=300)  # every point done: nothing is added
    assert r.returncode == 0
    with open(out, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
