"""apps/eval_importance.py and apps/sweep_importance.py outputs: one PNG per evaluation point
(cases that share an image do not overwrite each other's), report counts what was lost."""
import csv
import os

from apprun import run_app


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_eval_importance_names_outputs_per_case_weight_snr_seed(tmp_path):
    cases = tmp_path / "cases.csv"
    cases.write_text("image,question,target\nsample:coffee,How full is the cup of coffee?,coffee cup\n"
                     "sample:coffee,What is on the saucer?,spoon\n")
    out = tmp_path / "imp.csv"
    r = run_app(["apps/eval_importance.py", "--cases", cases, "--out", out, "--snr", "10", "--weights", "1",
                 "--seeds", "0", "1", "--size", "64", "--quiet"], tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = _rows(out)
    assert len(rows) == 4 and all(x["status"] == "ok" for x in rows), rows
    files = [x["file"] for x in rows]
    assert len(set(files)) == 4 and all(os.path.isfile(f) for f in files), files  # no case overwrote another's
    for x in rows:
        f = os.path.basename(x["file"])
        assert "w1" in x["file"] and "snr10" in f and f"seed{x['seed']}" in x["file"], x["file"]
    assert any("How_full" in f for f in files) and any("saucer" in f for f in files), files
