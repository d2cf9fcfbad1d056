"""apps/zmq_link and apps/hardware: GRC flowgraphs compile, the ZMQ two-hop link works.

* every .grc under apps/zmq_link and apps/hardware compiles with grcc (the hardware ones need
  no hardware to compile) and the generated Python byte-compiles;
* tx.py -> channel.py -> rx.py as three processes over tcp://127.0.0.1 (free ports): 20
  frames at 20 dB with CFO and a fractional timing offset all arrive with the right header
  fields and a sensible NMSE;
* run_all.py does the same on its own;
* the GRC-generated versions of the three ZMQ flowgraphs carry frames too.

Every subprocess runs in its own session and its whole process group is killed at the end,
also when a test fails. The subprocesses find ``gnuradio.semcom`` in this checkout through a
sitecustomize.py on PYTHONPATH (or the installed module with SEMCOM_TEST_INSTALLED=1).
"""
import json
import os
import pathlib
import py_compile
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from apprun import free_ports

ROOT = pathlib.Path(__file__).resolve().parents[1]
ZMQ_DIR = ROOT / "apps" / "zmq_link"
HW_DIR = ROOT / "apps" / "hardware"
GRC_FILES = sorted(ZMQ_DIR.glob("*.grc")) + sorted(HW_DIR.glob("*.grc"))
INSTALLED = os.environ.get("SEMCOM_TEST_INSTALLED") == "1"


# ------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Environment for subprocesses: gnuradio.semcom from this checkout, unbuffered output."""
    e = dict(os.environ, PYTHONUNBUFFERED="1")
    if not INSTALLED:
        site = tmp_path_factory.mktemp("site")
        (site / "sitecustomize.py").write_text(
            "import gnuradio\n"
            f"gnuradio.__path__.insert(0, {str(ROOT / 'python')!r})\n")
        e["PYTHONPATH"] = os.pathsep.join([str(site)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        e["GRC_BLOCKS_PATH"] = str(ROOT / "grc")
    return e




class Procs:
    """Starts subprocesses in their own sessions; kills every process group on exit."""

    def __init__(self, env, logdir):
        self.env, self.logdir, self.procs = env, pathlib.Path(logdir), []

    def start(self, name, cmd):
        log = open(self.logdir / f"{name}.log", "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=str(ROOT),
                             start_new_session=True)
        p.name, p.log, p.logpath = name, log, self.logdir / f"{name}.log"
        self.procs.append(p)
        return p

    def text(self, name):
        return next(p for p in self.procs if p.name == name).logpath.read_text()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            for p in self.procs:
                if p.poll() is None:
                    try:
                        os.killpg(p.pid, sig)
                    except ProcessLookupError:
                        pass
            t_end = time.monotonic() + wait
            for p in self.procs:
                try:
                    p.wait(timeout=max(0.1, t_end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for p in self.procs:
            try:  # anything left in the group (children of a finished leader)
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.log.close()
        return False

    def dump(self):
        return "\n".join(f"----- {p.name} (rc={p.poll()}) -----\n{p.logpath.read_text()[-3000:]}"
                         for p in self.procs)


# ------------------------------------------------------------------------------- GRC compile
def test_grc_files_present():
    names = {p.relative_to(ROOT).as_posix() for p in GRC_FILES}
    for need in ("apps/zmq_link/tx.grc", "apps/zmq_link/channel.grc", "apps/zmq_link/rx.grc",
                 "apps/hardware/uhd_tx.grc", "apps/hardware/uhd_rx.grc",
                 "apps/hardware/soapy_tx.grc", "apps/hardware/soapy_rx.grc"):
        assert need in names


@pytest.fixture(scope="module")
def compiled(env, tmp_path_factory):
    """grcc every .grc once: {path: (returncode, output, generated .py path)}."""
    grcc = shutil.which("grcc")
    if grcc is None:
        pytest.skip("grcc not installed")
    out = tmp_path_factory.mktemp("grc_out")
    res = {}
    procs = []
    for f in GRC_FILES:  # compile in parallel (each grcc loads all block yml, ~1 s)
        d = out / f.parent.name / f.stem
        d.mkdir(parents=True)
        procs.append((f, d, subprocess.Popen([grcc, str(f), "-o", str(d)], stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, env=env, text=True)))
    for f, d, p in procs:
        try:
            text, _ = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            text, _ = p.communicate()
        gid = yaml.safe_load(f.read_text())["options"]["parameters"]["id"]
        res[f] = (p.returncode, text, d / f"{gid}.py")
    return res


@pytest.mark.parametrize("grc", GRC_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_grc_compiles(grc, compiled):
    rc, text, py = compiled[grc]
    assert rc == 0, text
    assert py.is_file(), f"{py} not generated:\n{text}"
    py_compile.compile(str(py), doraise=True)
    src = py.read_text()
    assert "from gnuradio import semcom" in src
    if grc.parent == ZMQ_DIR:
        assert "tcp://127.0.0.1:" in src and "zeromq." in src
    if grc.name.startswith("uhd_"):
        assert "uhd.usrp_" in src
        if "tx" in grc.stem or "loopback" in grc.stem:
            assert '"packet_len"' in src  # burst mode
    if grc.name.startswith("soapy_"):
        assert "soapy." in src


# ------------------------------------------------------------------------------- ZMQ link
N_FRAMES, PAYLOAD, SNR, CODEC = 20, 1024, 20.0, 3


def test_zmq_link_three_processes(env, tmp_path):
    tx_port, rx_port = free_ports(2)
    out = tmp_path / "rx.json"
    py = [sys.executable, "-u"]
    with Procs(env, tmp_path) as pr:
        rx = pr.start("rx", py + [str(ZMQ_DIR / "rx.py"), "--rx-port", str(rx_port), "--frames", str(N_FRAMES),
                                  "--payload-len", str(PAYLOAD), "--seed", "7", "--snr", str(SNR),
                                  "--timeout", "40", "--min-fraction", "0.95", "--json", str(out)])
        pr.start("channel", py + [str(ZMQ_DIR / "channel.py"), "--tx-port", str(tx_port), "--rx-port",
                                  str(rx_port), "--snr", str(SNR), "--cfo", "2500", "--samp-rate", "1e6",
                                  "--timing-offset", "2.3", "--seed", "11", "--timeout", "60"])
        pr.start("tx", py + [str(ZMQ_DIR / "tx.py"), "--tx-port", str(tx_port), "--frames", str(N_FRAMES),
                             "--payload-len", str(PAYLOAD), "--seed", "7", "--codec-id", str(CODEC),
                             "--interval", "0.01", "--linger", "-1", "--timeout", "60"])
        try:
            rc = rx.wait(timeout=50)
        except subprocess.TimeoutExpired:
            rc = None
        logs = pr.dump()
    assert rc == 0, logs
    res = json.loads(out.read_text())
    s, rows, hdr = res["summary"], res["frames"], res["headers"]
    seqs = [r["seq"] for r in rows]
    assert len(set(seqs)) >= 0.95 * N_FRAMES, logs
    assert set(seqs) <= set(range(N_FRAMES)) and len(seqs) == len(set(seqs)), seqs
    for h in hdr:  # decoded header fields
        assert h["codec_id"] == CODEC and h["payload_len"] == PAYLOAD and h["n_symbols"] == PAYLOAD, h
    for r in rows:  # 20 dB Es/N0 with ZF: NMSE ~ -20 dB; CFO 2500 Hz = 0.16 subcarrier
        assert r["payload_len"] == PAYLOAD
        assert r["nmse_db"] < -15.0, r
        assert abs(r["snr_est_db"] - SNR) < 2.0, r
        assert abs(r["cfo"] - 2500 / (1e6 / 64)) < 0.03, r
    assert s["header_failures"] <= 1
    assert s["mean_nmse_db"] < -17.0, s
    assert re.search(r"frame seq=\s*0 ", logs) and "[rx] summary:" in logs


def test_run_all(env, tmp_path):
    out = tmp_path / "rx.json"
    with Procs(env, tmp_path) as pr:
        p = pr.start("run_all", [sys.executable, "-u", str(ZMQ_DIR / "run_all.py"), "--frames", "5",
                                 "--snr", "25", "--timeout", "30", "--quiet", "--json", str(out)])
        try:
            rc = p.wait(timeout=45)
        except subprocess.TimeoutExpired:
            rc = None
        logs = pr.dump()
    assert rc == 0, logs
    s = json.loads(out.read_text())["summary"]
    assert s["received"] == 5 and s["missing"] == [] and s["mean_nmse_db"] < -20.0, s
    assert "[run_all] OK" in logs


def test_grc_generated_zmq_link(env, compiled, tmp_path):
    """The GRC versions of tx/channel/rx (channel and RX run until killed, the TX ends by itself
    after its frames): frames reach the monitor."""
    gen = {f.stem: compiled[f][2] for f in GRC_FILES if f.parent == ZMQ_DIR}
    for k in ("tx", "channel", "rx"):
        if compiled[ZMQ_DIR / f"{k}.grc"][0] != 0:
            pytest.fail(f"{k}.grc does not compile")
    tx_port, rx_port = free_ports(2)
    py = [sys.executable, "-u"]
    n = 8
    with Procs(env, tmp_path) as pr:
        pr.start("grc_rx", py + [str(gen["rx"]), "--rx-port", str(rx_port), "--seed", "0", "--snr", "20"])
        pr.start("grc_channel", py + [str(gen["channel"]), "--tx-port", str(tx_port), "--rx-port", str(rx_port),
                                      "--snr", "20", "--cfo", "1000"])
        pr.start("grc_tx", py + [str(gen["tx"]), "--tx-port", str(tx_port), "--frames", str(n), "--seed", "0"])
        t_end = time.monotonic() + 30
        lines = []
        while time.monotonic() < t_end:
            lines = re.findall(r"frame seq=\s*(\d+) .*nmse=\s*(\S+) dB", pr.text("grc_rx"))
            if len(lines) >= n or any(p.poll() not in (None, 0) or (p.poll() == 0 and p.name != "grc_tx")
                                      for p in pr.procs):
                break
            time.sleep(0.2)
        logs = pr.dump()
    assert sorted(int(s) for s, _ in lines) == list(range(n)), logs
    assert all(float(v) < -15.0 for _, v in lines), lines
