"""MLLM-SC through GNU Radio: semantic_guidance → importance_jscc → OFDM → channel → decoder → sink."""
import os
import time

import numpy as np
import pmt
import pytest

from gnuradio.semcom.blocks.image_link import LinkConfig, run_image_link
from gnuradio.semcom.guidance import GuidanceError, Segmenter


class BoxSegmenter(Segmenter):
    """Top-left quarter for any phrase; optionally slow or failing."""

    name = "box"

    def __init__(self, delay_s=0.0, fail=False):
        self.delay_s, self.fail, self.calls = delay_s, fail, 0

    def heatmap(self, image, phrase):
        self.calls += 1
        time.sleep(self.delay_s)
        if self.fail:
            raise GuidanceError("segmenter offline")
        h, w = image.shape[:2]
        m = np.zeros((h, w), np.float32)
        m[: h // 2, : w // 2] = 1
        return m


def _cfg(tmp_path, **kw):
    base = dict(codec="importance_jscc", rate=1 / 12, snr_db=15.0, images="sample:astronaut", size=128,
                out_dir=str(tmp_path), question="What color is the helmet?")
    base.update(kw)
    return LinkConfig(**base)


def test_guided_link_sends_the_map_and_the_weight(tmp_path):
    seg = BoxSegmenter()
    res = run_image_link(_cfg(tmp_path, segmenter=seg, weight=4.0), timeout_s=60)
    (row,) = res["rows"]
    assert row["status"] == "ok" and row["weight"] == 4.0 and row["target"] == "helmet"
    assert row["coverage"] == pytest.approx(0.25) and seg.calls == 1
    assert os.path.exists(row["file"]) and os.path.exists(row["file"][:-4] + "_mask.png")
    assert abs(row["snr_est_db"] - 15.0) < 1.5 and row["psnr"] > 15


def test_policy_weight_and_fallbacks(tmp_path):
    row = run_image_link(_cfg(tmp_path, segmenter=BoxSegmenter(), snr_db=0.0, tx_snr_db=0.0), timeout_s=60)["rows"][0]
    assert row["weight"] == 4.0 and "poor channel" in row["policy"]  # the policy, from the TX CSI
    for kw in (dict(question=""), dict(question="?!"), dict(segmenter=BoxSegmenter(fail=True))):
        args = {"segmenter": BoxSegmenter(), **kw}
        row = run_image_link(_cfg(tmp_path, **args), timeout_s=60)["rows"][0]
        assert row["status"] == "ok" and row["weight"] == 1.0 and row["fallback"]  # uniform, link runs


def test_slow_guidance_does_not_stall_the_flowgraph(tmp_path):
    """A 1.5 s segmenter delays the image, but the block keeps serving its other ports."""
    from gnuradio import blocks, gr

    from gnuradio.semcom.blocks.guidance import semantic_guidance
    from gnuradio.semcom.blocks.image import image_pdu

    tb = gr.top_block()
    g = semantic_guidance("What color is the flag?", BoxSegmenter(delay_s=1.5))
    dbg = blocks.message_debug()
    tb.msg_connect(g, "out", dbg, "store")
    tb.start()
    try:
        img = np.zeros((32, 32, 3), np.uint8)
        t0 = time.time()
        g.to_basic_block()._post(pmt.intern("in"), image_pdu(img, dict(image_id=0, name="x")))
        time.sleep(0.1)
        g.to_basic_block()._post(pmt.intern("question"), pmt.intern("What is on the left?"))
        while g.question != "What is on the left?" and time.time() - t0 < 5:
            time.sleep(0.01)
        assert time.time() - t0 < 1.0 and dbg.num_messages() == 0  # served while the guidance runs
        while dbg.num_messages() < 1 and time.time() - t0 < 10:
            time.sleep(0.05)
        assert dbg.num_messages() == 1 and time.time() - t0 >= 1.4
        meta = pmt.to_python(pmt.car(dbg.get_message(0)))
        assert meta["weight"] > 1 and len(meta["importance"]) == 32 * 32
        d = pmt.dict_add(pmt.make_dict(), pmt.intern("question"), pmt.intern("Is it a cat?"))
        g.to_basic_block()._post(pmt.intern("question"), pmt.dict_add(d, pmt.intern("target"), pmt.intern("cat")))
        while g.question != "Is it a cat?" and time.time() - t0 < 12:
            time.sleep(0.01)
        assert (g.question, g.target) == ("Is it a cat?", "cat")  # a bare dict works too
    finally:
        tb.stop()
        tb.wait()


def _rows(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_eval_importance_app(tmp_path):
    from apprun import run_app

    cases = tmp_path / "cases.csv"
    cases.write_text("image,question,target\nsample:coffee,How full is the cup of coffee?,coffee cup\n"
                     "data/city_across_sea.png,What is across the sea?,city\n")
    out = tmp_path / "imp.csv"
    r = run_app(["apps/eval_importance.py", "--cases", cases, "--out", out, "--snr", "10", "--weights", "1", "4",
                 "--size", "128", "--quiet"], tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = _rows(out)
    assert {(x["image"], float(x["weight"])) for x in rows} == {(i, w) for i in ("sample:coffee",
                                                                             "data/city_across_sea.png") for w in (1, 4)}
    for x in rows:
        assert x["status"] == "ok" and 0 <= float(x["iou"]) <= 1 and 0 < float(x["coverage"]) < 1
        assert float(x["psnr_in"]) > 12 and float(x["psnr_bg"]) > 12 and abs(float(x["snr_est_db"]) - 10) < 1.5
    assert "PSNR_in" in r.stdout and "csv:" in r.stdout


def test_sweep_importance_resumes_and_reports(tmp_path):
    from apprun import run_app

    cases = tmp_path / "cases.csv"
    cases.write_text("image,question,target\nsample:chelsea,What color are the cat's eyes?,cat\n")
    args = ["apps/sweep_importance.py", "--cases", cases, "--out", tmp_path / "sw", "--snr", "5", "--weights", "1",
            "2.33", "--size", "128", "--quiet"]
    r = run_app(args, tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(_rows(tmp_path / "sw" / "results.csv")) == 2
    html = (tmp_path / "sw" / "report.html").read_text()
    assert html.count("<img") >= 3 + 4 and "PSNR inside the mask" in html  # original + 2 received, 4 plots
    r = run_app(args, tmp_path, timeout=300)
    assert r.returncode == 0 and "2 points already" in r.stdout
    assert len(_rows(tmp_path / "sw" / "results.csv")) == 2


def test_eval_importance_bad_cases(tmp_path):
    from apprun import run_app

    bad = tmp_path / "bad.csv"
    bad.write_text("image,prompt\nx.png,hello\n")
    r = run_app(["apps/eval_importance.py", "--cases", bad, "--out", tmp_path / "x.csv", "--quiet"], tmp_path)
    assert r.returncode == 2 and "lacks column" in r.stderr
    missing = tmp_path / "missing.csv"
    missing.write_text("image,question,target\nnope.png,What?,thing\n")
    r = run_app(["apps/eval_importance.py", "--cases", missing, "--out", tmp_path / "x.csv", "--quiet"], tmp_path)
    assert r.returncode == 2 and "not found" in r.stderr


def test_guidance_log_keeps_the_newest_records(tmp_path):
    """semantic_guidance.log is a ring buffer of `history` records (processed counts all); a link
    run longer than that still gives every image a row and says which records are gone."""
    from gnuradio.semcom.blocks.guidance import semantic_guidance

    g = semantic_guidance("What color is the flag?", BoxSegmenter(), history=2)
    for k in range(5):
        g._process(np.zeros((32, 32, 3), np.uint8), dict(image_id=k, name="x"))
    assert g.processed == 5 and [e["image_id"] for e in g.log] == [3, 4]
    res = run_image_link(_cfg(tmp_path, segmenter=BoxSegmenter(), size=64, repeat=3, history=2, out_dir=""),
                         timeout_s=60)
    assert [r["status"] for r in res["rows"]] == ["ok"] * 3
    assert any("guidance kept the records of its newest 2 of 3" in n for n in res["notes"]), res["notes"]
    assert [r.get("target", "") for r in res["rows"]] == ["", "helmet", "helmet"]
