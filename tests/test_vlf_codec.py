"""VLF-MSC runtime: symbol mapping, noise model, numpy DDIM vs diffusers, codec statuses, blocks and
the GNU Radio link, on a tiny random backend (tests/vlf_tiny.py)."""
import math
import sys
import time

import numpy as np
import pmt
import pytest

sys.path.insert(0, __import__("os").path.dirname(__file__))
import vlf_tiny  # noqa: E402

from gnuradio.semcom.codecs import Csi  # noqa: E402
from gnuradio.semcom.codecs.diffusion import DdimSampler  # noqa: E402
from gnuradio.semcom.codecs.vlf import (VlfCodec, backend_dir, features_to_symbols, noisy_feature,  # noqa: E402
                                        symbols_to_features)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return vlf_tiny.build(tmp_path_factory.mktemp("vlf_tiny"))


@pytest.fixture
def image():
    return (np.random.default_rng(3).random((48, 64, 3)) * 255).astype(np.uint8)


# -- symbol mapping and noise model ----------------------------------------------------------
def test_features_symbols_round_trip_and_unit_power(rng):
    v = rng.standard_normal((5, 7)).astype(np.float32) * 3 + 1  # odd N·d: one zero pads
    sym, scale = features_to_symbols(v)
    assert sym.size == math.ceil(35 / 2) and abs(np.mean(np.abs(sym) ** 2) - 1) < 1e-5
    back = symbols_to_features(sym, np.zeros(sym.size), scale, 5, 7)
    np.testing.assert_allclose(back, v, rtol=1e-5, atol=1e-5)
    # lost symbols (σ² = ∞) come back as 0, finite noise shrinks by 1/(1+σ²)
    nv = np.zeros(sym.size)
    nv[0], nv[1] = np.inf, 1.0
    back = symbols_to_features(sym, nv, scale, 5, 7).ravel()
    assert back[0] == 0 and back[1] == 0
    np.testing.assert_allclose(back[2:4], v.ravel()[2:4] / 2, rtol=1e-5)
    with pytest.raises(ValueError):
        features_to_symbols(np.zeros((2, 2)))


def test_noisy_feature_matches_the_channel_plus_lmmse(rng):
    """The training noise model equals AWGN on the unit-power symbols followed by the receiver's
    unscale + LMMSE shrink: same error power."""
    v = rng.standard_normal((32, 96)).astype(np.float32)
    snr = 0.0
    nv = 10 ** (-snr / 10)
    sym, scale = features_to_symbols(v)
    errs_train, errs_chan = [], []
    for k in range(20):
        r = np.random.default_rng(k)
        errs_train.append(np.mean((noisy_feature(v, snr, r) - v) ** 2))
        w = (r.standard_normal(sym.size) + 1j * r.standard_normal(sym.size)) * math.sqrt(nv / 2)
        errs_chan.append(np.mean((symbols_to_features(sym + w, np.full(sym.size, nv), scale, 32, 96) - v) ** 2))
    assert abs(np.mean(errs_train) / np.mean(errs_chan) - 1) < 0.05
    # per-item SNRs broadcast over a batch
    b = noisy_feature(np.stack([v, v]), np.array([30.0, -5.0]), rng)
    assert np.mean((b[0] - v) ** 2) < 0.01 < np.mean((b[1] - v) ** 2)


# -- numpy DDIM against diffusers --------------------------------------------------------------
CONFIGS = [
    dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=False,
         steps_offset=1, timestep_spacing="leading", prediction_type="epsilon"),
    dict(beta_schedule="linear", clip_sample=True, set_alpha_to_one=True, timestep_spacing="trailing",
         prediction_type="v_prediction"),
    dict(beta_schedule="squaredcos_cap_v2", clip_sample=False, timestep_spacing="linspace",
         prediction_type="epsilon"),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_ddim_matches_diffusers(cfg):
    torch = pytest.importorskip("torch")
    from diffusers import DDIMScheduler

    ref = DDIMScheduler(num_train_timesteps=1000, **cfg)
    ours = DdimSampler(dict(ref.config))
    steps = 10
    ref.set_timesteps(steps)
    np.testing.assert_array_equal(ours.timesteps(steps), ref.timesteps.numpy())
    w = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32) * 0.3

    def model(x, t):  # a deterministic stand-in for a U-Net
        return np.tanh(np.einsum("ij,bjhw->bihw", w, x) + t / 1000.0).astype(np.float32)

    x0 = np.random.default_rng(1).standard_normal((1, 4, 6, 6)).astype(np.float32)
    x, xt = x0.copy(), torch.from_numpy(x0.copy())
    for t in ref.timesteps:
        xt = ref.step(torch.from_numpy(model(xt.numpy(), int(t))), t, xt, eta=0.0).prev_sample
        x = ours.step(model(x, int(t)), int(t), x, steps)
    np.testing.assert_allclose(x, xt.numpy(), rtol=1e-4, atol=1e-4)
    # the full sampler from the same noise, and img2img's start (diffusers' get_timesteps)
    rng = np.random.default_rng(5)
    noise = np.random.default_rng(5).standard_normal(x0.shape).astype(np.float32)
    full = ours.sample(model, x0.shape, steps, rng)
    xt = torch.from_numpy(noise)
    for t in ref.timesteps:
        xt = ref.step(torch.from_numpy(model(xt.numpy(), int(t))), t, xt).prev_sample
    np.testing.assert_allclose(full, xt.numpy(), rtol=1e-4, atol=1e-4)
    init = np.ones(x0.shape, np.float32) * 0.5
    part = ours.sample(model, x0.shape, steps, np.random.default_rng(5), init=init, strength=0.3)
    ts = ref.timesteps[steps - int(steps * 0.3):]
    xt = ref.add_noise(torch.from_numpy(init), torch.from_numpy(noise), ts[:1])
    for t in ts:
        xt = ref.step(torch.from_numpy(model(xt.numpy(), int(t))), t, xt).prev_sample
    np.testing.assert_allclose(part, xt.numpy(), rtol=1e-4, atol=1e-4)


def test_ddim_refuses_what_it_does_not_implement():
    with pytest.raises(ValueError, match="beta_schedule"):
        DdimSampler({"beta_schedule": "sigmoid"})
    with pytest.raises(ValueError, match="prediction_type"):
        DdimSampler({"prediction_type": "flow"})
    with pytest.raises(ValueError, match="steps"):
        DdimSampler({}).timesteps(0)


# -- codec ------------------------------------------------------------------------------------
def test_codec_encode_decode_and_statuses(tiny, image):
    c = VlfCodec(models_dir=tiny, steps=3)
    enc = c.encode(image)
    n = vlf_tiny.N * vlf_tiny.D // 2
    assert enc.symbols.size == n == c.channel_uses(48, 64) == c.channel_uses(480, 640)
    assert math.isclose(enc.meta["bcr"], n / (3 * 48 * 64))
    assert abs(np.mean(np.abs(enc.symbols) ** 2) - 1) < 1e-5
    csi = Csi(20.0, 0.01)
    cap = c.decode_caption(enc.symbols, enc.side_info, csi)
    assert isinstance(cap, str) and c.last_status == "ok"
    img = c.decode_image(enc.symbols, enc.side_info, csi)
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8 and c.last_status == "ok"
    # same frame, same seed → same image; another seed → another image
    assert np.array_equal(img, c.decode_image(enc.symbols, enc.side_info, csi))
    other = VlfCodec(models_dir=tiny, steps=3, seed=1).decode_image(enc.symbols, enc.side_info, csi)
    assert not np.array_equal(img, other)
    # bad input: clear statuses, nothing decoded as if it were fine
    assert c.decode_caption(enc.symbols[:3], enc.side_info, csi) is not None and c.last_status == "truncated"
    assert c.decode_caption(np.full(n, np.nan, np.complex64), enc.side_info, csi) is None
    assert c.last_status == "nonfinite_symbols"
    assert c.decode_image(np.zeros(0, np.complex64), enc.side_info, csi) is None and c.last_status == "no_symbols"
    assert c.decode_caption(enc.symbols, enc.side_info, Csi(-20.0)) is None and c.last_status == "below_snr_floor"
    part = enc.symbols.copy()
    part[:2] = np.nan
    assert c.decode_caption(part, enc.side_info, csi) is not None and c.last_status == "ok"
    with pytest.raises(ValueError, match="12 bytes"):
        c.decode_caption(enc.symbols, enc.side_info[:5], csi)
    bad = enc.side_info[:4] + (7).to_bytes(2, "big") + enc.side_info[6:]
    with pytest.raises(ValueError, match="feature"):
        c.decode_caption(enc.symbols, bad, csi)


def test_feature_check_tells_noise_from_a_feature(tiny, tmp_path, rng):
    """With the encoder's principal-subspace statistics, pure noise is refused (not_a_feature)
    and a feature through the channel at 0 dB is not (the tiny feature has only 32 values: real
    ones have thousands, which makes the test far sharper)."""
    import json
    import shutil

    d = tmp_path / "b"
    shutil.copytree(tiny, d)
    c = VlfCodec(models_dir=d)
    feats = np.stack([c.features((rng.random((32, 32, 3)) * 255).astype(np.uint8)).ravel() for _ in range(60)])
    mean = feats.mean(0)
    u, s, vt = np.linalg.svd(feats - mean, full_matrices=False)
    basis = vt[:4].T
    x = feats - mean
    frac = float(np.mean(np.sum((x @ basis) ** 2, 1) / np.sum(x ** 2, 1)))
    r = float(np.mean(np.sum(x ** 2, 1) / np.sum(feats ** 2, 1)))
    np.savez(d / "stats.npz", mean=mean, basis=basis, signal_fraction=frac, centred_fraction=r)
    m = json.loads((d / "manifest.json").read_text())
    for e in m["models"]:
        if e["name"] == "vlf_enc":
            e["extra"]["feature_stats"] = "stats.npz"
    (d / "manifest.json").write_text(json.dumps(m))
    c = VlfCodec(models_dir=d)
    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    enc = c.encode(img)
    n = enc.symbols.size
    nv = 1.0
    noise = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)).astype(np.complex64)
    assert c.decode_caption(enc.symbols + np.sqrt(nv) * noise, enc.side_info, Csi(0.0, nv)) is not None
    assert c.last_check["is_feature"]
    assert c.decode_caption(noise, enc.side_info, Csi(20.0, 0.01)) is None and c.last_status == "not_a_feature"


def test_backend_dir(tiny, tmp_path):
    assert backend_dir(f"reference:{tiny}") == tiny and backend_dir(str(tiny)) == tiny
    with pytest.raises(ValueError, match="not a directory"):
        backend_dir(f"reference:{tmp_path / 'missing'}")


# -- blocks -----------------------------------------------------------------------------------
def _frame_pdu(enc, codec_id=8, snr=15.0, symbols=None):
    from gnuradio.semcom.blocks.pmtvec import c32_to_pmt, u8_to_pmt

    d = pmt.to_pmt(dict(codec_id=codec_id, seq=3, snr_est_db=snr, noise_var=10 ** (-snr / 10)))
    d = pmt.dict_add(d, pmt.intern("side_info"), u8_to_pmt(np.frombuffer(enc.side_info, np.uint8)))
    y = enc.symbols if symbols is None else symbols
    return pmt.cons(d, c32_to_pmt(np.ascontiguousarray(y, np.complex64)))


def test_decoder_blocks_statuses_and_garbage(tiny, image):
    from gnuradio import semcom

    c = VlfCodec(models_dir=tiny, steps=2)
    enc = c.encode(image)
    cap = semcom.vlf_caption_decoder(backend=str(tiny))
    img = semcom.vlf_image_decoder(backend=str(tiny), steps=2)
    got = {"cap": [], "img": []}
    for blk, key in ((cap, "cap"), (img, "img")):
        blk.message_port_pub = lambda port, msg, key=key: got[key].append(pmt.to_python(pmt.car(msg)))
        blk._handle(_frame_pdu(enc))
        blk._handle(_frame_pdu(enc, symbols=np.full(enc.symbols.size, np.nan, np.complex64)))
        blk._handle(_frame_pdu(enc, symbols=enc.symbols[:2]))
        blk._handle(_frame_pdu(enc, codec_id=1))   # another codec: ignored
        blk._handle(pmt.PMT_NIL)                   # not a PDU
        blk._handle(pmt.cons(pmt.to_pmt(dict(codec_id=8, snr_est_db=10.0)), pmt.init_c32vector(2, [0j, 0j])))
    assert [r["status"] for r in got["cap"]] == ["ok", "nonfinite_symbols", "truncated", "error"]
    assert [r["status"] for r in got["img"]] == ["ok", "nonfinite_symbols", "truncated", "error"]
    assert got["cap"][1]["caption"] == "" and got["img"][1]["height"] == 0 and got["img"][0]["height"] == 48
    assert cap.decoded == 2 and cap.failures == 2 and cap.ignored == 2 and cap.dropped() == 2


def test_vlf_link_through_gnu_radio(tiny):
    from gnuradio.semcom.blocks.vlf_link import VlfLinkConfig, run_vlf_link

    cfg = VlfLinkConfig(images="scenes:test:3", size=64, backend=str(tiny), snr_db=15.0, profile="wifi64", steps=2)
    res = run_vlf_link(cfg, timeout_s=120)
    rows = res["rows"]
    assert [r["name"] for r in rows] == [f"scene_{2000000 + k}.png" for k in range(3)]
    assert all(r["caption_status"] == "ok" and r["image_status"] == "ok" for r in rows)
    assert all(r["image"].shape == (64, 64, 3) for r in rows)
    n = vlf_tiny.N * vlf_tiny.D // 2
    assert all(r["n_symbols"] == n and math.isclose(r["bcr"], n / (3 * 64 * 64)) for r in rows)
    assert all(abs(r["snr_est_db"] - 15.0) < 4 for r in rows)  # 16-symbol payloads: a rough estimate
    assert res["header_failures"] == 0


def test_captions_keep_coming_while_the_image_decoder_is_busy(tiny, monkeypatch):
    """The image decoder's diffusion runs in its own block thread: while it is busy the
    receiver and the caption decoder go on, and no frame is lost."""
    from gnuradio.semcom.blocks import vlf_link as vl

    real = VlfCodec.image_from_feature

    def slow(self, *a, **k):
        time.sleep(0.4)
        return real(self, *a, **k)

    monkeypatch.setattr(VlfCodec, "image_from_feature", slow)
    cfg = vl.VlfLinkConfig(images="scenes:test:1", size=64, backend=str(tiny), snr_db=20.0, profile="wifi64",
                           steps=2, frame_timeout_s=0.05)
    c = VlfCodec(models_dir=tiny)
    enc = c.encode(np.zeros((64, 64, 3), np.uint8) + 90)
    frames = [(8, enc.symbols, enc.side_info)] * 5

    tb = vl.vlf_decoders_flowgraph(frames, cfg)
    stamps = []
    orig = tb.capd.message_port_pub

    def stamp(port, msg):
        stamps.append(time.monotonic())
        orig(port, msg)

    tb.capd.message_port_pub = stamp
    t0 = time.monotonic()
    tb.start()
    try:
        deadline = time.time() + 30
        while tb.sink.count() < 5 and time.time() < deadline:
            time.sleep(0.02)
    finally:
        tb.stop()
        tb.wait()
    assert tb.sink.count() == 5
    assert len(stamps) == 5
    # all five captions were out before the image decoder had drawn its second image
    assert stamps[-1] - t0 < 0.8, [s - t0 for s in stamps]
    assert all(r["image_status"] == "ok" for r in tb.sink.rows)


def test_ddim_run_from_a_noisy_latent():
    """A latent with channel noise of variance v is a diffusion state at the timestep whose
    noise-to-signal ratio is v: run_from there; on the schedule it is the plain DDIM tail."""
    s = DdimSampler(vlf_tiny.SCHEDULER)
    for v in (0.01, 0.3, 2.0):
        t = s.timestep_for_noise(v)
        a = float(s.alphas_cumprod[t])
        assert abs((1 - a) / a / v - 1) < 0.05
    model = lambda x, t: np.tanh(x) * 0.1 + t / 1e4  # noqa: E731
    x = np.random.default_rng(0).standard_normal((1, 4, 3, 3)).astype(np.float32)
    ts = s.timesteps(10)
    ref = x.copy()
    for u in ts[4:]:
        ref = s.step(model(ref, int(u)), int(u), ref, 10)
    np.testing.assert_allclose(s.run_from(model, x, int(ts[4]), 10), ref, rtol=1e-6)
    calls = []
    s.run_from(lambda x, t: calls.append(t) or model(x, t), x, int(ts[4]) + 7, 10)
    assert calls == [int(ts[4]) + 7] + [int(u) for u in ts[4:]]


def test_lost_frames_are_declared_at_once(tiny):
    """Below the header's operating point every frame is lost: the sink declares each lost a
    few seconds after it was sent (it never reached the receiver) instead of the source
    waiting out its long timeout."""
    from gnuradio.semcom.blocks.vlf_link import VlfLinkConfig, run_vlf_link

    cfg = VlfLinkConfig(images="scenes:test:2", size=64, backend=str(tiny), snr_db=-15.0, profile="wifi64", steps=2,
                        lost_after_s=0.5)
    t0 = time.time()
    res = run_vlf_link(cfg, timeout_s=120)
    assert time.time() - t0 < 20
    assert [r["caption_status"] for r in res["rows"]] == ["lost", "lost"]
    assert [r["image_status"] for r in res["rows"]] == ["lost", "lost"]
    assert res["source_timeouts"] == 0


def test_eval_vlf_app_writes_the_documented_columns(tiny, tmp_path):
    import csv
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "e.csv"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if os.environ.get("SEMCOM_TEST_INSTALLED") != "1":  # the apps import the source tree's package
        shim = tmp_path / "shim"
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(f"import gnuradio; gnuradio.__path__.insert(0, {root + '/python'!r})\n")
        env["PYTHONPATH"] = str(shim)
    r = subprocess.run([sys.executable, os.path.join(root, "apps", "eval_vlf.py"), "--out", str(out), "--limit", "2",
                        "--snr", "10", "--systems", "vlf_msc", "ascii_hamming", "--backend", str(tiny), "--steps",
                        "2", "--size", "64", "--profile", "wifi64", "--no-bertscore", "-q"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(open(out)))
    want = "item,system,channel,snr_db,seed,status,channel_uses,bcr,caption,reference,bleu,bertscore,attr_acc_text," \
           "lpips_standin,clip_standin,attr_acc_image,psnr".split(",")
    assert list(rows[0])[:len(want)] == want
    assert [(r["system"], r["item"]) for r in rows] == [("vlf_msc", "scene_2000000.png"), ("vlf_msc", "scene_2000001.png"),
                                                       ("ascii_hamming", "scene_2000000.png"),
                                                       ("ascii_hamming", "scene_2000001.png")]
    vlf = rows[0]
    assert vlf["status"] == "ok" and int(vlf["channel_uses"]) == vlf_tiny.N * vlf_tiny.D // 2
    assert float(vlf["psnr"]) > 0 and vlf["lpips_standin"] != "" and vlf["reference"]
    assert rows[2]["psnr"] == "" and rows[2]["lpips_standin"] == ""  # a text system: no image columns
    # a rerun skips the points already in the CSV
    r = subprocess.run(r.args, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and len(list(csv.DictReader(open(out)))) == 4


def test_sweep_vlf_writes_plots_and_the_report(tiny, tmp_path):
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if os.environ.get("SEMCOM_TEST_INSTALLED") != "1":
        shim = tmp_path / "shim"
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(f"import gnuradio; gnuradio.__path__.insert(0, {root + '/python'!r})\n")
        env["PYTHONPATH"] = str(shim)
    out = tmp_path / "sw"
    r = subprocess.run([sys.executable, os.path.join(root, "apps", "sweep_vlf.py"), "--out", str(out), "--limit", "2",
                        "--snr", "0", "10", "--systems", "vlf_msc", "ascii_hamming", "--backend", str(tiny),
                        "--steps", "2", "--size", "64", "--profile", "wide256", "--no-bertscore", "-q"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    html = (out / "report.html").read_text()
    assert "Received captions at 0 dB" in html and "Received captions at 10 dB" in html
    assert "vlf_msc awgn 10 dB" in html and html.count("data:image/png") >= 4  # plots + originals + received
    assert (out / "images" / "vlf_msc").is_dir() and any(p.suffix == ".png" for p in out.iterdir())


def test_shipped_backend_refuses_noise_and_decodes_weak_frames():
    """The embedded backend's feature statistics: a payload of pure noise (a frame whose header
    survived but whose payload carries nothing, at any reported SNR) is refused as
    not_a_feature; real features at -10, -5 and 10 dB are all decoded."""
    c = VlfCodec(threads=1)
    rng = np.random.default_rng(1)
    from gnuradio.semcom.datasets import scenes

    for it in scenes.dataset("test", 6, 128):
        e = c.encode(it.image)
        n = e.symbols.size
        for snr in (-10.0, -5.0, 10.0):
            nv = 10 ** (-snr / 10)
            w = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * np.sqrt(nv / 2)
            assert c.received_feature((e.symbols + w).astype(np.complex64), e.side_info, Csi(snr, nv)) is not None
        noise = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)).astype(np.complex64)
        for snr in (-5.0, 20.0):
            assert c.decode_caption(noise, e.side_info, Csi(snr, 10 ** (-snr / 10))) is None
            assert c.last_status == "not_a_feature"
