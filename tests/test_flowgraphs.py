"""The no-GUI flowgraphs under apps/ as GRC runs them: options, ending by themselves, layout.

Each .grc is generated with grcc and run as GRC's Run button does (tests/apprun.py). Finite
flowgraphs must end on their own (the sources post "done"), print a line per received item
and a summary; the ZMQ and MLLM-SC ones run as a set on 127.0.0.1; the hardware ones are only
generated (no radio here). The layout check reads each .grc and asserts that no two blocks
overlap, with a conservative size estimate of what GRC draws.
"""
import csv
import pathlib
import re
import subprocess
import sys
import time

import pytest
import yaml

from apprun import ROOT, app_env, free_ports, generate, run_flowgraph

APPS = ROOT / "apps"
NO_GUI = sorted(p for p in APPS.rglob("*.grc") if not p.name.endswith("_qt.grc"))

# ---------------------------------------------------------------------------------------
# Layout: estimated block rectangles (GRC draws ~6 px per character, ~15 px per parameter
# line + a title; the estimate is larger on purpose)
COMMON = {"alias", "comment", "affinity", "maxoutbuf", "minoutbuf"}
CHAR_W, LINE_H, TITLE_H, MIN_W, MAX_LINES = 6.5, 20, 30, 120, 12


def _yml_blocks():
    out = {}
    for p in [*pathlib.Path("/usr/share/gnuradio/grc/blocks").glob("*.block.yml"), *(ROOT / "grc").glob("*.block.yml")]:
        d = yaml.safe_load(p.read_text())
        out[d["id"]] = d
    return out


def _shown(block, ymls):
    """(label, value) lines GRC shows for a block of a .grc file (hidden ones left out)."""
    bid, params = block["id"], block.get("parameters", {})
    if bid == "parameter":
        lines = [("ID", block["name"]), ("Label", params.get("label", "")), ("Type", params.get("type", "")),
                 ("Value", params.get("value", ""))]
        return lines + ([("Short ID", params["short_id"])] if params.get("short_id") else [])
    if bid in ("variable", "import"):
        return [("ID", block["name"]), ("Value", str(params.get("value", params.get("imports", ""))))]
    if bid == "options":
        return [(k, str(params.get(k, ""))[:24]) for k in ("title", "author", "description", "output_language",
                                                           "generate_options", "run_options")]
    spec = {p["id"]: p for p in ymls.get(bid, {}).get("parameters", [])}
    lines = []
    for key, value in params.items():
        if key in COMMON:
            continue
        p = spec.get(key, {})
        if str(p.get("hide", "none")).strip() in ("all",):
            continue
        shown = str(value)
        for opt, lab in zip(p.get("options", []), p.get("option_labels", [])):
            if str(opt) == shown:
                shown = max(shown, str(lab), key=len)
        lines.append((str(p.get("label", key)), shown))
    if bid not in ymls or len(lines) > MAX_LINES:  # radio blocks: most of their many parameters are hidden
        lines = sorted(lines, key=lambda kv: -len(kv[0]) - len(kv[1]))[:MAX_LINES]
    return lines


def block_rects(grc_path, ymls=None):
    """{name: (x0, y0, x1, y1)} of every enabled block (its comment below it included)."""
    ymls = _yml_blocks() if ymls is None else ymls
    g = yaml.safe_load(pathlib.Path(grc_path).read_text())
    blocks = [dict(g["options"], name="options", id="options")] + list(g.get("blocks", []))
    rects = {}
    for b in blocks:
        st = b.get("states", {})
        if st.get("state", "enabled") == "disabled":
            continue
        x, y = st["coordinate"]
        lines = _shown(b, ymls)
        title = ymls.get(b["id"], {}).get("label", b["id"])
        w = max([MIN_W, CHAR_W * len(title) + 20] + [CHAR_W * (len(k) + len(v) + 2) + 20 for k, v in lines])
        h = TITLE_H + LINE_H * len(lines)
        comment = str(b.get("parameters", {}).get("comment", "") or "")
        if comment:
            h += 5 + 15 * (comment.count("\n") + 1)
            w = max(w, CHAR_W * max(len(c) for c in comment.splitlines()))
        if st.get("rotation", 0) in (90, 270):
            w, h = h, w
        rects[b["name"]] = (x, y, x + w, y + h)
    return rects


def overlaps(rects, gap=0):
    """Pairs of block names whose rectangles (grown by ``gap``) intersect."""
    items = sorted(rects.items())
    bad = []
    for i, (a, ra) in enumerate(items):
        for b, rb in items[i + 1:]:
            if ra[0] < rb[2] + gap and rb[0] < ra[2] + gap and ra[1] < rb[3] + gap and rb[1] < ra[3] + gap:
                bad.append((a, b))
    return bad


def _generate_options(grc):
    return yaml.safe_load(grc.read_text())["options"]["parameters"].get("generate_options")


# the QT GUI ones (the *_qt.grc and the hardware RX flowgraphs) are checked with GRC's own
# drawing code in test_qt_flowgraphs.py, which this estimate is too coarse for
@pytest.mark.parametrize("grc", [g for g in NO_GUI if _generate_options(g) == "no_gui"],
                         ids=lambda p: str(p.relative_to(APPS)))
def test_layout_no_overlaps(grc):
    rects = block_rects(grc)
    assert not overlaps(rects), f"{grc.name}: overlapping blocks {overlaps(rects)}"
    assert min(r[0] for r in rects.values()) >= 0 and min(r[1] for r in rects.values()) >= 0
    # message inputs need room on the left for their port and arrow
    g = yaml.safe_load(grc.read_text())
    for b in g["blocks"]:
        if b["id"] not in ("variable", "parameter", "import"):
            assert b["states"]["coordinate"][0] >= 64, f"{b['name']} sits at the canvas edge"


# ---------------------------------------------------------------------------------------
# Options
KEY_OPTIONS = {
    "image_link.grc": ["--snr-db", "--rate", "--images", "--size", "--limit", "--csv", "--out-dir"],
    "loopback.grc": ["--snr-db", "--n-frames", "--payload-len", "--cfo-sc", "--timing-offset", "--interval"],
    "vlf_link.grc": ["--snr", "--channel", "--images", "--size", "--limit", "--steps", "--backend", "--out", "--csv"],
    "mtsc_link.grc": ["--snr", "--channel", "--k-factor", "--items", "--budget", "--rate", "--system", "--models"],
    "zmq_link/tx.grc": ["--tx-port", "--frames", "--payload-len", "--interval", "--tail-symbols"],
    "zmq_link/channel.grc": ["--tx-port", "--rx-port", "--snr", "--cfo", "--timing-offset"],
    "zmq_link/rx.grc": ["--rx-port", "--seed", "--snr"],
    "mllm_sc/edge.grc": ["--uplink-port", "--downlink-port", "--images", "--size", "--question-timeout"],
    "mllm_sc/device.grc": ["--uplink-port", "--downlink-port", "--question", "--snr", "--out-dir", "--csv"],
    "hardware/uhd_tx.grc": [], "hardware/uhd_rx.grc": [], "hardware/uhd_loopback.grc": [],
    "hardware/soapy_tx.grc": [], "hardware/soapy_rx.grc": [],
}


def _key(grc):
    return str(grc.relative_to(APPS))


def test_every_flowgraph_is_listed():
    assert sorted(map(_key, NO_GUI)) == sorted(KEY_OPTIONS)


def _needs(grc):
    """Skip a hardware flowgraph whose radio module is not installed."""
    text = grc.read_text()
    for mod, marker in (("uhd", "uhd_usrp"), ("soapy", "soapy_")):
        if marker in text:
            r = subprocess.run([sys.executable, "-c", f"from gnuradio import {mod}"], capture_output=True)
            if r.returncode:
                pytest.skip(f"gnuradio.{mod} is not installed")


@pytest.mark.parametrize("grc", NO_GUI, ids=_key)
def test_help_lists_key_options(grc, tmp_path):
    _needs(grc)
    script = generate(grc, tmp_path)
    r = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, env=app_env(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for opt in KEY_OPTIONS[_key(grc)]:
        assert opt in r.stdout, f"{grc.name}: {opt} missing from --help:\n{r.stdout}"


# ---------------------------------------------------------------------------------------
# Finite flowgraphs end by themselves
IMAGE_LINE = re.compile(r"^image seq=\d+ name=\S+ codec=\S+ status=\S+ snr_est=.* psnr=", re.M)
FRAME_LINE = re.compile(r"^frame seq=\s*\d+ .*nmse=", re.M)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_image_link_ends_by_itself(tmp_path):
    script = generate(APPS / "image_link.grc", tmp_path)
    args = ["--size", "64", "--limit", "1", "--snr-db", "10", "--csv", "run.csv", "--out-dir", "png"]
    for run in range(2):  # twice: the CSV is rewritten, not appended to
        t0 = time.monotonic()
        rc, out, err = run_flowgraph(script, tmp_path, args, timeout=120)
        took = time.monotonic() - t0
        assert rc == 0, f"did not end by itself (rc {rc}, {took:.0f} s):\n{out}\n{err}"
        assert len(IMAGE_LINE.findall(out)) == 1, out
        assert "images: received 1/1, ok 1, lost 0, mean PSNR" in out, out
        rows = _rows(tmp_path / "run.csv")
        assert len(rows) == 1 and rows[0]["status"] == "ok" and float(rows[0]["psnr"]) > 15, rows
        assert len(list((tmp_path / "png").glob("*.png"))) == 1


@pytest.fixture(scope="module")
def vlf_backend(tmp_path_factory):
    import vlf_backend as vb

    return vb.backend(tmp_path_factory)


CAPTION_PRINT = re.compile(r"^\(\(caption \. .*\(status \. ok\)", re.M)  # Message Debug of a caption PDU


def test_vlf_link_ends_by_itself(tmp_path, vlf_backend):
    script = generate(APPS / "vlf_link.grc", tmp_path)
    args = ["--images", "scenes:test:2", "--size", "64", "--snr", "10", "--steps", "2", "--backend", vlf_backend,
            "--csv", "run.csv", "--out", "png"]
    t0 = time.monotonic()
    rc, out, err = run_flowgraph(script, tmp_path, args, timeout=300)
    assert rc == 0, f"did not end by itself (rc {rc}, {time.monotonic() - t0:.0f} s):\n{out}\n{err}"
    assert len(CAPTION_PRINT.findall(out)) == 2, out  # one caption per frame
    assert len(IMAGE_LINE.findall(out)) == 2, out
    assert "images: received 2/2, ok 2, lost 0" in out, out
    rows = _rows(tmp_path / "run.csv")
    assert [r["codec"] for r in rows] == ["vlf_msc"] * 2 and all(r["status"] == "ok" for r in rows), rows
    assert len(list((tmp_path / "png").glob("*.png"))) == 2


def test_vlf_link_rayleigh_option(tmp_path, vlf_backend):
    script = generate(APPS / "vlf_link.grc", tmp_path)
    rc, out, err = run_flowgraph(script, tmp_path, ["--images", "scenes:test:1", "--size", "64", "--snr", "25",
                                                    "--steps", "1", "--backend", vlf_backend, "--channel", "rayleigh",
                                                    "--csv", ""], timeout=300)
    assert rc == 0, f"{out}\n{err}"
    assert "images: received 1/1, ok 1, lost 0" in out, out
    rc, out, err = run_flowgraph(script, tmp_path, ["--backend", vlf_backend, "--channel", "moon"], timeout=120)
    assert rc != 0 and "moon" in err, err


TASK_PRINT = re.compile(r"\(task \. (vqa|caption_image|caption_audio|caption_video|reconstruction)\)")


def test_mtsc_link_ends_by_itself(tmp_path, mtsc_models):
    script = generate(APPS / "mtsc_link.grc", tmp_path)
    args = ["--items", "multitask:test:2", "--snr", "20", "--models", mtsc_models]
    t0 = time.monotonic()
    rc, out, err = run_flowgraph(script, tmp_path, args, timeout=300)
    assert rc == 0, f"did not end by itself (rc {rc}, {time.monotonic() - t0:.0f} s):\n{out}\n{err}"
    tasks = TASK_PRINT.findall(out)
    assert len(tasks) == 10 and set(tasks) == {"vqa", "caption_image", "caption_audio", "caption_video",
                                               "reconstruction"}, out  # five task PDUs per frame
    assert "(status . ok)" in out and "Traceback" not in err
    rc, out, err = run_flowgraph(script, tmp_path, ["--models", mtsc_models, "--channel", "moon"], timeout=120)
    assert rc != 0 and "moon" in err, err


def test_loopback_ends_by_itself(tmp_path):
    script = generate(APPS / "loopback.grc", tmp_path)
    t0 = time.monotonic()
    rc, out, err = run_flowgraph(script, tmp_path, ["--n-frames", "5", "--interval", "0", "--payload-len", "256"],
                                 timeout=90)
    assert rc == 0, f"did not end by itself (rc {rc}, {time.monotonic() - t0:.0f} s):\n{out}\n{err}"
    assert len(FRAME_LINE.findall(out)) == 5, out  # the last frame too
    assert "frames: received 5/5, lost 0" in out, out


# ---------------------------------------------------------------------------------------
# ZMQ flowgraphs and the MLLM-SC pair as sets of processes on 127.0.0.1


def _start(script, tmp_path, args):
    return subprocess.Popen([sys.executable, "-u", str(script), *map(str, args)], cwd=tmp_path,
                            env=app_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(p, timeout=30):
    """SIGTERM (GRC's Kill): the generated script stops the flowgraph and exits 0."""
    if p.poll() is None:
        p.terminate()
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return None, out, err
    return p.returncode, out, err


def test_zmq_link_set(tmp_path):
    tx_port, rx_port = free_ports(2)
    scripts = {k: generate(APPS / "zmq_link" / f"{k}.grc", tmp_path / k) for k in ("rx", "channel", "tx")}
    rx = _start(scripts["rx"], tmp_path, ["--rx-port", rx_port, "--snr", "20"])
    ch = _start(scripts["channel"], tmp_path, ["--tx-port", tx_port, "--rx-port", rx_port, "--snr", "20"])
    try:
        time.sleep(3)
        rc, out, err = run_flowgraph(scripts["tx"], tmp_path, ["--tx-port", tx_port, "--frames", "5"], timeout=90)
        assert rc == 0, f"the TX did not end by itself:\n{out}\n{err}"
        time.sleep(3)
    finally:
        rc_ch, out_ch, err_ch = _stop(ch)
        rc_rx, out_rx, err_rx = _stop(rx)
    assert rc_ch == 0 and rc_rx == 0, f"{err_ch}\n{err_rx}"
    assert len(FRAME_LINE.findall(out_rx)) == 5, out_rx
    assert "frames: received 5/5, lost 0" in out_rx, out_rx


def test_mllm_sc_set(tmp_path):
    up, down = free_ports(2)
    edge = generate(APPS / "mllm_sc" / "edge.grc", tmp_path / "edge")
    device = generate(APPS / "mllm_sc" / "device.grc", tmp_path / "device")
    common = ["--uplink-port", up, "--downlink-port", down, "--size", "64"]
    e = _start(edge, tmp_path, common + ["--question-timeout", "20"])
    d = _start(device, tmp_path, common + ["--csv", "device.csv"])
    try:
        t_end = time.monotonic() + 150
        while time.monotonic() < t_end and e.poll() is None and d.poll() is None:
            if (tmp_path / "device.csv").exists() and len(_rows(tmp_path / "device.csv")) >= 1:
                break
            time.sleep(0.5)
        time.sleep(1)
    finally:
        rc_d, out_d, err_d = _stop(d)
        rc_e, out_e, err_e = _stop(e)
    assert rc_e == 0 and rc_d == 0, f"{out_e}\n{err_e}\n{out_d}\n{err_d}"
    assert "[edge] question" in out_e, out_e
    assert len(IMAGE_LINE.findall(out_d)) == 1, out_d
    assert "images: received 1/1, ok 1, lost 0" in out_d, out_d
    assert len(_rows(tmp_path / "device.csv")) == 1
