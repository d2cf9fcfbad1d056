"""Channel models: the numpy core (semcom.channels) and its GNU Radio twins (semcom.*_channel).

Proves the SNR convention (Es/N0 with Es = 1, σ² = 10^(-SNR/10)), fading statistics (unit power,
Rician K, amplitude distributions, Doppler autocorrelation J0), multipath power delay profiles
against the 3GPP tables, exact impairments, and GR-vs-numpy statistical agreement.
All flowgraphs are finite (vector sources with finite data).
"""
import ast
import math
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from scipy import stats

import gnuradio.semcom.channels as ch
from gnuradio import blocks, gr, semcom

ROOT = pathlib.Path(__file__).resolve().parents[1]
SNRS = [-5.0, 0.0, 10.0, 20.0, 30.0]


def qpsk(n, rng):
    """Unit-power random QPSK symbols (Es = 1)."""
    b = rng.integers(0, 2, (n, 2)) * 2 - 1
    return ((b[:, 0] + 1j * b[:, 1]) / np.sqrt(2)).astype(np.complex64)


def run_gr(blk, x):
    tb = gr.top_block()
    src = blocks.vector_source_c(np.asarray(x, np.complex64).tolist(), False)
    snk = blocks.vector_sink_c()
    tb.connect(src, blk, snk)
    tb.run()
    return np.array(snk.data(), np.complex64)


def run_gr_parallel(blks, x):
    """One finite top block with one chain per block (same input), outputs in order."""
    tb = gr.top_block()
    data = np.asarray(x, np.complex64).tolist()
    sinks = []
    for b in blks:
        src, snk = blocks.vector_source_c(data, False), blocks.vector_sink_c()
        tb.connect(src, b, snk)
        sinks.append(snk)
    tb.run()
    return [np.array(s.data(), np.complex64) for s in sinks]


# ----------------------------------------------------------------------------- import hygiene

CORE_DIR = ROOT / "python" / "semcom" / "channels"


def test_core_sources_import_no_gnuradio_runtime():
    for path in sorted(CORE_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            for n in names:
                assert not (n.startswith("gnuradio") or n.split(".")[0] == "pmt"), f"{path.name} imports {n}"


def test_core_never_imports_gnuradio_runtime(repo_root):
    code = (
        "import sys; sys.path.insert(0, 'tests'); import conftest;"
        "import numpy as np; import gnuradio.semcom.channels as ch;"
        "assert ch.__name__ == 'gnuradio.semcom.channels';"
        "y = ch.make_channel({'model': 'EVA', 'sample_rate': 15.36e6, 'fdts': 1e-3, 'cfo': 0.01,"
        " 'snr_db': 5, 'seed': 1})(np.ones(1000, np.complex64));"
        "bad = [m for m in ('gnuradio.gr', 'pmt') if m in sys.modules]; print(bad); assert not bad"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_from_import_form_gives_numpy_core(repo_root):
    code = (
        "import sys; sys.path.insert(0, 'tests'); import conftest;"
        "from gnuradio.semcom import channels;"
        "assert channels.__name__ == 'gnuradio.semcom.channels', channels.__name__;"
        "bad = [m for m in ('gnuradio.gr', 'pmt') if m in sys.modules]; assert not bad, bad"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_blocks_exported():
    import gnuradio.semcom.blocks.channels as bc

    for name in ("awgn_channel", "flat_fading_channel", "multipath_channel", "n_path_channel",
                 "impairments", "numpy_channel"):
        assert name in bc.__all__
        assert getattr(semcom, name) is getattr(bc, name)
    assert bc.core is ch


# ----------------------------------------------------------------------------- SNR convention

def test_snr_to_noise_var():
    assert ch.snr_to_noise_var(0) == 1.0
    assert ch.snr_to_noise_var(10) == pytest.approx(0.1)
    assert ch.snr_to_noise_var(-3) == pytest.approx(1.99526, rel=1e-5)
    assert ch.snr_to_noise_var(None) == 0.0 and ch.snr_to_noise_var(math.inf) == 0.0
    assert ch.noise_var_to_snr(ch.snr_to_noise_var(7.5)) == pytest.approx(7.5)


@pytest.mark.parametrize("snr", SNRS)
def test_numpy_awgn_es_n0(snr, rng):
    x = qpsk(200_000, rng)
    y = ch.awgn(x, snr, rng)
    assert y.dtype == np.complex64 and y.shape == x.shape
    assert abs(ch.measure_snr_db(x, y) - snr) < 0.2
    n = (y - x).astype(np.complex128)
    var = ch.snr_to_noise_var(snr)
    assert np.var(n.real) == pytest.approx(var / 2, rel=0.02)       # σ²/2 per real dimension
    assert abs(np.mean(n * n)) < 0.02 * var                           # circular


@pytest.mark.parametrize("snr", SNRS)
def test_gr_awgn_es_n0(snr, rng):
    x = qpsk(200_000, rng)
    y = run_gr(semcom.awgn_channel(snr_db=snr, seed=11), x)
    assert y.shape == x.shape                                          # no resampling
    assert abs(ch.measure_snr_db(x, y) - snr) < 0.2
    n = (y - x).astype(np.complex128)
    assert np.var(n.real) == pytest.approx(np.var(n.imag), rel=0.03)


def test_gr_awgn_alignment_setter_and_twin(rng):
    x = qpsk(100_000, rng)
    assert np.array_equal(run_gr(semcom.awgn_channel(snr_db=math.inf), x), x)
    blk = semcom.awgn_channel(snr_db=30.0, seed=3)
    blk.set_snr_db(3.0)
    assert blk.snr_db() == 3.0 and blk.noise_var() == pytest.approx(10 ** -0.3)
    y = run_gr(blk, x)
    assert abs(ch.measure_snr_db(x, y) - 3.0) < 0.2
    # same seed -> same noise; GR and numpy twin have the same noise variance
    assert np.array_equal(run_gr(semcom.awgn_channel(3.0, seed=3), x), y)
    v_gr = np.mean(np.abs(y - x) ** 2)
    v_np = np.mean(np.abs(ch.AwgnChannel(3.0, seed=3)(x) - x) ** 2)
    assert v_gr == pytest.approx(v_np, rel=0.03)


# ----------------------------------------------------------------------------- flat fading (numpy)

def test_block_rayleigh_distribution():
    h = ch.FlatFading("rayleigh", block_len=1, seed=5).gains(200_000)
    assert np.mean(np.abs(h) ** 2) == pytest.approx(1.0, abs=0.02)
    assert abs(np.mean(h)) < 0.01
    assert stats.kstest(np.abs(h), stats.rayleigh(scale=np.sqrt(0.5)).cdf).pvalue > 0.01
    assert stats.kstest(np.angle(h), stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 0.01


@pytest.mark.parametrize("k", [1.0, 4.0, 10.0])
def test_block_rician_k_and_distribution(k):
    h = ch.FlatFading("rician", k=k, block_len=1, seed=7).gains(200_000)
    assert np.mean(np.abs(h) ** 2) == pytest.approx(1.0, abs=0.02)
    assert ch.rician_k_moments(h) == pytest.approx(k, rel=0.1)
    nu, sigma = np.sqrt(k / (k + 1)), np.sqrt(1 / (2 * (k + 1)))
    assert stats.kstest(np.abs(h), stats.rice(nu / sigma, scale=sigma).cdf).pvalue > 0.01


def test_block_len_semantics():
    g = ch.FlatFading("rayleigh", block_len=100, seed=1).gains(1000).reshape(10, 100)
    assert np.all(g == g[:, :1]) and len(np.unique(g[:, 0])) == 10
    a = ch.FlatFading("rician", k=2.0, block_len=64, seed=2)
    b = ch.FlatFading("rician", k=2.0, block_len=64, seed=2)
    assert np.array_equal(a.gains(1000), np.concatenate([b.gains(30), b.gains(500), b.gains(470)]))
    per_call = ch.FlatFading("rayleigh", block_len=None, seed=3)
    y1, y2 = per_call(np.ones(50)), per_call(np.ones(50))
    assert np.all(y1 == y1[0]) and np.all(y2 == y2[0]) and y1[0] != y2[0]
    assert np.array_equal(per_call.last_gains.astype(np.complex64), y2)
    static = ch.FlatFading("rayleigh", block_len=0, seed=3)
    assert static(np.ones(10))[0] == static(np.ones(10))[-1]


def test_doppler_autocorrelation_numpy():
    fd, lags = 0.01, np.array([5, 10, 20, 30, 38, 50])
    hs = [ch.FlatFading("rayleigh", fdts=fd, seed=s).gains(40_000) for s in range(12)]
    r = np.mean([ch.autocorr(h, lags).real for h in hs], 0)
    assert np.max(np.abs(r - ch.jakes_autocorr(fd, lags))) < 0.03
    assert np.mean([np.mean(np.abs(h) ** 2) for h in hs]) == pytest.approx(1.0, abs=0.03)


def test_doppler_continuity_and_rician_k():
    a = ch.FlatFading("rician", k=2.0, fdts=0.003, seed=9)
    b = ch.FlatFading("rician", k=2.0, fdts=0.003, seed=9)
    x = np.ones(5000, np.complex64)
    assert np.allclose(a(x), np.concatenate([b(x[:1234]), b(x[1234:4000]), b(x[4000:])]), atol=1e-6)
    h = ch.FlatFading("rician", k=4.0, fdts=0.01, seed=4).gains(300_000)
    assert np.mean(np.abs(h) ** 2) == pytest.approx(1.0, abs=0.03)
    assert ch.rician_k_moments(h) == pytest.approx(4.0, rel=0.15)


# ----------------------------------------------------------------------------- flat fading (GR vs numpy)

def test_gr_fading_model_power_and_doppler_match_twin():
    fd, n, seeds, lags = 0.01, 50_000, range(1, 9), np.array([5, 10, 20, 30, 38, 50])
    outs = run_gr_parallel([semcom.flat_fading_channel("rayleigh", 0.0, fd, seed=s) for s in seeds],
                           np.ones(n, np.complex64))
    r_gr = np.mean([ch.autocorr(h, lags).real for h in outs], 0)
    p_gr = np.mean([np.mean(np.abs(h) ** 2) for h in outs])
    twins = [ch.FlatFading("rayleigh", fdts=fd, seed=s).gains(n) for s in seeds]
    r_np = np.mean([ch.autocorr(h, lags).real for h in twins], 0)
    p_np = np.mean([np.mean(np.abs(h) ** 2) for h in twins])
    j0 = ch.jakes_autocorr(fd, lags)
    assert p_gr == pytest.approx(1.0, abs=0.05) and p_np == pytest.approx(1.0, abs=0.05)
    assert np.max(np.abs(r_gr - j0)) < 0.05
    assert np.max(np.abs(r_gr - r_np)) < 0.05


def test_gr_rician_k_matches_twin():
    n = 300_000
    h_gr = run_gr(semcom.flat_fading_channel("rician", 4.0, 0.01, seed=2), np.ones(n, np.complex64))
    h_np = ch.FlatFading("rician", k=4.0, fdts=0.01, seed=2).gains(n)
    k_gr, k_np = ch.rician_k_moments(h_gr), ch.rician_k_moments(h_np)
    assert k_gr == pytest.approx(4.0, rel=0.15) and k_np == pytest.approx(4.0, rel=0.15)
    assert k_gr == pytest.approx(k_np, rel=0.15)
    assert np.mean(np.abs(h_gr) ** 2) == pytest.approx(np.mean(np.abs(h_np) ** 2), abs=0.05)


def test_gr_block_fading_is_numpy_core():
    n, bl = 20_000, 100
    blk = semcom.flat_fading_channel("rician", k=4.0, fdts=0.0, block_len=bl, seed=6)
    h = run_gr(blk, np.ones(n, np.complex64))
    ref = ch.FlatFading("rician", k=4.0, block_len=bl, seed=6).gains(n).astype(np.complex64)
    assert np.array_equal(h, ref)                          # same core, same seed, chunking invariant
    assert np.all(h.reshape(-1, bl) == h.reshape(-1, bl)[:, :1])


def test_gr_flat_fading_noise_level(rng):
    x = qpsk(100_000, rng)
    blk = semcom.flat_fading_channel("rayleigh", fdts=0.0, block_len=0, snr_db=5.0, seed=1)
    y = run_gr(blk, x)
    h = ch.FlatFading("rayleigh", block_len=0, seed=1).gains(1)[0]
    assert np.var(y - h * x) == pytest.approx(ch.snr_to_noise_var(5.0), rel=0.03)


# ----------------------------------------------------------------------------- multipath

def test_profile_tables_delay_spread():
    for name in ("TDL-A", "TDL-B", "TDL-C", "TDL-D", "TDL-E"):
        tp = ch.tap_profile(name, 1.0, 1.0)                # delays in units of the delay spread
        assert ch.rms_delay_spread(tp.delays, tp.powers) == pytest.approx(1.0, abs=0.01), name
    for name, ds_ns in (("EPA", 43), ("EVA", 357), ("ETU", 991)):   # TS 36.104 Table B.2-1
        tp = ch.tap_profile(name, 1e9)                     # 1 GHz: delays in ns
        assert ch.rms_delay_spread(tp.delays, tp.powers) == pytest.approx(ds_ns, abs=1), name
    assert ch.tap_profile("TDL-D", 1e9, 1e-9).k_first == pytest.approx(10 ** 1.33)
    assert ch.tap_profile("tdl_e", 1e9, 1e-9).k_first == pytest.approx(10 ** 2.2)


def _table_pdp(name, fs):
    unit, rows, _ = ch.PROFILES[name]
    d = np.array([r[0] for r in rows]) * 1e-9 * fs
    p = 10 ** (np.array([r[1] for r in rows]) / 10)
    idx = np.floor(d + 0.5).astype(int)
    out = np.zeros(idx.max() + 1)
    np.add.at(out, idx, p / p.sum())
    return out


def test_multipath_block_pdp_matches_table():
    fs = 15.36e6
    mc = ch.MultipathChannel("EVA", fs, block_len=None, seed=3)
    ref = _table_pdp("EVA", fs)                            # EVA 0 and 30 ns both land on tap 0
    assert mc.ntaps == ref.size == 40
    imp = np.zeros(mc.ntaps, np.complex64)
    imp[0] = 1
    taps = np.array([mc(imp) for _ in range(4000)])        # one block (new taps) per call
    pdp = np.mean(np.abs(taps) ** 2, 0)
    assert np.all(pdp[ref == 0] == 0)
    assert np.allclose(10 * np.log10(pdp[ref > 0]), 10 * np.log10(ref[ref > 0]), atol=0.3)
    assert pdp.sum() == pytest.approx(1.0, abs=0.03)


def test_multipath_sinc_doppler_pdp_and_continuity():
    mc = ch.MultipathChannel("TDL-C", 30.72e6, 300e-9, fdts=0.02, interp="sinc", seed=4)
    L = mc.ntaps + 8
    x = np.zeros(L * 1500, np.complex64)
    x[::L] = 1
    y = mc(x).reshape(-1, L)[:, :mc.ntaps]
    pdp, ref = np.mean(np.abs(y) ** 2, 0), mc.expected_pdp()
    assert pdp.sum() == pytest.approx(1.0, abs=0.05) and ref.sum() == pytest.approx(1.0)
    big = ref > 0.01
    assert np.allclose(10 * np.log10(pdp[big]), 10 * np.log10(ref[big]), atol=0.6)
    a = ch.MultipathChannel("TDL-C", 30.72e6, 300e-9, fdts=0.02, interp="sinc", seed=4)
    b = ch.MultipathChannel("TDL-C", 30.72e6, 300e-9, fdts=0.02, interp="sinc", seed=4)
    z = ch.awgn(np.zeros(3000, np.complex64), 0.0, 1)
    assert np.allclose(a(z), np.concatenate([b(z[:700]), b(z[700:])]), atol=1e-5)


def test_tdl_d_first_tap_is_rician():
    mc = ch.MultipathChannel("TDL-D", 100e6, 300e-9, block_len=None, seed=8)
    assert mc.grid.delays[1] == 1                           # second path on its own tap
    imp = np.zeros(mc.ntaps, np.complex64)
    imp[0] = 1
    h0 = np.array([mc(imp)[0] for _ in range(20_000)])
    assert ch.rician_k_moments(h0) == pytest.approx(10 ** 1.33, rel=0.15)


def test_gr_selective_fading_pdp_matches_table_and_twin():
    fs, L, n_imp = 15.36e6, 48, 4000
    x = np.zeros(L * n_imp, np.complex64)
    x[::L] = 1
    blk = semcom.multipath_channel("EVA", fs, fdts=0.01, seed=5)
    y = run_gr(blk, x).reshape(-1, L)[:, :blk.grid.ntaps]
    pdp_gr = np.mean(np.abs(y) ** 2, 0)
    mc = ch.MultipathChannel("EVA", fs, fdts=0.01, seed=5)
    pdp_np = np.mean(np.abs(mc(x).reshape(-1, L)[:, :mc.ntaps]) ** 2, 0)
    ref = _table_pdp("EVA", fs)
    on = ref > 0
    assert np.allclose(10 * np.log10(pdp_gr[on]), 10 * np.log10(ref[on]), atol=0.7)
    assert np.allclose(10 * np.log10(pdp_np[on]), 10 * np.log10(ref[on]), atol=0.7)
    assert np.all(pdp_gr[~on] < 1e-5)                      # sin/x table leakage only
    assert pdp_gr.sum() == pytest.approx(pdp_np.sum(), abs=0.06)


def test_gr_multipath_block_mode_is_numpy_core():
    x = ch.awgn(np.zeros(5000, np.complex64), 0.0, 2)
    y = run_gr(semcom.multipath_channel("ETU", 7.68e6, fdts=0.0, block_len=500, seed=9), x)
    ref = ch.MultipathChannel("ETU", 7.68e6, block_len=500, seed=9)(x)
    assert np.allclose(y, ref, atol=1e-5)


def test_npath_numpy_and_gr_exact(rng):
    taps = ch.npath_taps([0, 3], [1.0, 0.5j], normalize=False)
    assert np.allclose(taps, [1, 0, 0, 0.5j])
    x = qpsk(5000, rng)
    npc = ch.NPathChannel([0.0, 2.5, 7.0], [1.0, 0.4, 0.2 - 0.1j])
    assert np.sum(np.abs(npc.taps) ** 2) == pytest.approx(1.0, rel=1e-5)
    y_np = np.concatenate([npc(x[:1000]), npc(x[1000:])])
    y_gr = run_gr(semcom.n_path_channel([0.0, 2.5, 7.0], [1.0, 0.4, 0.2 - 0.1j], snr_db=None), x)
    assert np.allclose(y_gr, y_np, atol=1e-5)


# ----------------------------------------------------------------------------- impairments

def test_cfo_exact_phase_ramp(rng):
    x = qpsk(10_000, rng)
    n = np.arange(x.size)
    y = ch.cfo(x, 250.0, sample_rate=1e5)                  # 0.0025 cycles/sample
    assert np.allclose(y / x, np.exp(2j * np.pi * 0.0025 * n), atol=1e-5)
    c = ch.CarrierFrequencyOffset(0.0025)
    assert np.allclose(np.concatenate([c(x[:3333]), c(x[3333:])]), y, atol=1e-5)
    y_gr = run_gr(semcom.impairments(cfo=250.0, sample_rate=1e5), x)
    assert np.allclose(y_gr, y[:y_gr.size], atol=2e-4)


def test_timing_offset_exact_delays():
    n = np.arange(4000)
    x = np.exp(2j * np.pi * 0.1 * n).astype(np.complex64)
    y = ch.timing_offset(x, 5)
    assert np.array_equal(y[:5], np.zeros(5)) and np.array_equal(y[5:], x[:-5])
    for d in (0.3, 7.25, 20.6):
        y = ch.timing_offset(x, d)
        ok = slice(int(d) + 40, x.size - 40)
        assert np.max(np.abs(y[ok] - np.exp(2j * np.pi * 0.1 * (n[ok] - d)))) < 1e-3


@pytest.mark.parametrize("d", [0.0, 4.0, 0.5, 7.3, 20.25])
def test_gr_timing_offset_is_sample_exact_twin(d, rng):
    x = ch.awgn(np.zeros(3000, np.complex64), 0.0, rng)
    y_gr = run_gr(semcom.impairments(timing_offset=d), x)
    y_np = ch.timing_offset(x, d)
    assert y_gr.size >= x.size - 30
    assert np.allclose(y_gr, y_np[:y_gr.size], atol=1e-5)


@pytest.mark.parametrize("ppm", [200.0, -500.0, 2000.0])
def test_sample_rate_offset(ppm):
    f0, n_in = 0.05, 20_000
    x = np.exp(2j * np.pi * f0 * np.arange(n_in)).astype(np.complex64)
    y = ch.sample_rate_offset(x, ppm)
    assert y.size == ch.sro_length(n_in, ppm) == math.floor((n_in - 1) * (1 + ppm * 1e-6)) + 1
    ref = lambda m: np.exp(2j * np.pi * f0 * m / (1 + ppm * 1e-6))
    m = np.arange(y.size)
    assert np.max(np.abs(y[40:-40] - ref(m[40:-40]))) < 1e-3
    y_gr = run_gr(semcom.impairments(sro_ppm=ppm), x)
    # the impairments block keeps half_len = 16 samples in its delay filter, mmse_resampler ~5
    assert abs(y_gr.size - (n_in - 16) * (1 + ppm * 1e-6)) < 8
    mg = np.arange(y_gr.size)
    assert np.max(np.abs(y_gr[8:] - ref(mg[8:]))) < 5e-3
    k = min(y.size, y_gr.size) - 40
    assert np.max(np.abs(y_gr[8:k] - y[8:k])) < 5e-3


def test_gr_impairments_setters(rng):
    x = ch.awgn(np.zeros(3000, np.complex64), 0.0, rng)
    blk = semcom.impairments()
    blk.set_timing_offset(3.5)
    blk.set_cfo(0.01)
    assert blk.timing_offset() == 3.5 and blk.cfo_normalized() == 0.01
    with pytest.raises(ValueError, match="max_timing_offset"):
        blk.set_timing_offset(65.0)
    y_gr = run_gr(blk, x)
    y_np = ch.cfo(ch.timing_offset(x, 3.5), 0.01)
    assert np.allclose(y_gr, y_np[:y_gr.size], atol=1e-4)


# ----------------------------------------------------------------------------- chain / spec

def test_make_channel_from_dict(rng):
    spec = {"model": "rician", "k": 4, "fdts": 1e-4, "snr_db": 10}
    a, b = ch.make_channel(spec, seed=1), ch.make_channel(spec, seed=1)
    assert [type(s).__name__ for s in a.stages] == ["FlatFading", "AwgnChannel"]
    x = qpsk(20_000, rng)
    ya = a(x)
    assert np.array_equal(ya, b(x))
    assert not np.array_equal(ya, ch.make_channel(spec, seed=2)(x))
    clean = ch.make_channel(dict(spec, snr_db=None), seed=1)
    yc = clean(x)                                           # same fading realisation, no noise
    assert np.allclose(clean.stages[0].last_gains, a.stages[0].last_gains)
    assert np.var(ya - yc) == pytest.approx(0.1, rel=0.05)
    assert a.snr_db == 10 and a.noise_var == pytest.approx(0.1)
    a.set_snr_db(0.0)
    assert a.noise_var == 1.0


def test_make_channel_full_and_list_specs(rng):
    c = ch.make_channel({"model": "EVA", "sample_rate": 15.36e6, "fdts": 1e-3, "timing_offset": 2.5,
                         "cfo_hz": 1e3, "sro_ppm": 50, "snr_db": 5}, seed=3)
    assert [type(s).__name__ for s in c.stages] == ["MultipathChannel", "TimingOffset", "CarrierFrequencyOffset",
                                                    "SampleRateOffset", "AwgnChannel"]
    x = qpsk(10_000, rng)
    assert c(x).size == ch.sro_length(x.size, 50)
    lst = ch.make_channel([{"model": "npath", "delays": [0, 3.5], "gains": [1, 0.5]},
                           {"model": "awgn", "snr_db": 8}], seed=4)
    assert lst.snr_db == 8 and lst(x).size == x.size
    y = ch.make_channel({"model": "multipath", "delays": [0, 2, 5], "powers_db": [0, -3, -6], "fdts": 0.0,
                         "block_len": 100}, seed=5)(x)
    assert y.size == x.size


def test_numpy_channel_block_matches_chain(rng):
    spec = {"model": "rician", "k": 3.0, "fdts": 0.002, "snr_db": 12.0}
    x = qpsk(30_000, rng)
    y_gr = run_gr(semcom.numpy_channel(spec, seed=7), x)
    y_np = ch.make_channel(spec, seed=7)(x)
    assert np.allclose(y_gr, y_np, atol=1e-5)


# ----------------------------------------------------------------------------- bad parameters

@pytest.mark.parametrize("make,msg", [
    (lambda: ch.FlatFading("rician", k=-1.0), "K factor must be >= 0"),
    (lambda: ch.FlatFading("rician", k=float("nan")), "finite"),
    (lambda: ch.FlatFading("rayleigh", fdts=0.5), "fdts"),
    (lambda: ch.FlatFading("rayleigh", fdts=-0.01), "fdts"),
    (lambda: ch.FlatFading("rayleigh", k=2.0), "kind='rician' only"),
    (lambda: ch.FlatFading("nakagami"), "rayleigh, rician"),
    (lambda: ch.FlatFading("rayleigh", block_len=-4), "block_len"),
    (lambda: ch.awgn(np.ones(4), float("nan")), "NaN"),
    (lambda: ch.awgn(np.ones(4), -math.inf), "infinite noise"),
    (lambda: ch.awgn(np.ones((2, 2)), 10), "1-D"),
    (lambda: ch.MultipathChannel("EXA", 1e6), "EPA, EVA, ETU, TDL-A"),
    (lambda: ch.MultipathChannel("TDL-A", 1e6), "delay_spread"),
    (lambda: ch.MultipathChannel("EPA", 1e6, delay_spread=1e-7), "TDL-\\* only"),
    (lambda: ch.MultipathChannel("EVA"), "sample_rate"),
    (lambda: ch.MultipathChannel("EVA", 1e6, interp="linear"), "interp"),
    (lambda: ch.TapProfile.custom([0, 1], mags=[1.0]), "differ in length"),
    (lambda: ch.npath_taps([-1], [1]), ">= 0"),
    (lambda: ch.cfo(np.ones(4), 0.5), "< 0.5"),
    (lambda: ch.cfo(np.ones(4), 1e3, sample_rate=0), "sample_rate"),
    (lambda: ch.timing_offset(np.ones(4), -1), ">= 0"),
    (lambda: ch.sample_rate_offset(np.ones(4), 1e6), "sro_ppm"),
    (lambda: ch.make_channel({"model": "rician", "snr": 3}), "unknown key"),
    (lambda: ch.make_channel({"model": "fancy"}), "valid: awgn"),
    (lambda: ch.make_channel({"k": 1}), "'model'"),
    (lambda: ch.make_channel({"model": "awgn", "cfo": 0.1, "cfo_hz": 3}), "not both"),
    (lambda: ch.make_channel({"model": "awgn", "snr_db": 1}, seed=-3), "seed"),
])
def test_numpy_bad_parameters(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


@pytest.mark.parametrize("make,msg", [
    (lambda: semcom.awgn_channel(snr_db=float("nan")), "NaN"),
    (lambda: semcom.flat_fading_channel("rician", k=-2.0), "K factor"),
    (lambda: semcom.flat_fading_channel("rayleigh", fdts=0.7), "fdts"),
    (lambda: semcom.flat_fading_channel("weibull"), "rayleigh, rician"),
    (lambda: semcom.multipath_channel("TDL-Z", 1e6), "TDL-A"),
    (lambda: semcom.multipath_channel("EVA", -5.0), "sample_rate"),
    (lambda: semcom.impairments(timing_offset=-2), ">= 0"),
    (lambda: semcom.impairments(cfo=0.6), "< 0.5"),
    (lambda: semcom.numpy_channel({"model": "awgn", "sro_ppm": 5}), "impairments block"),
    (lambda: semcom.numpy_channel({"model": "rayleigh"}), "block_len"),
])
def test_gr_bad_parameters(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def test_gr_setters_validate():
    blk = semcom.flat_fading_channel("rician", 4.0, fdts=0.01)
    blk.set_fdts(0.02)
    blk.set_k(2.0)
    assert blk.fdts() == 0.02 and blk.k() == 2.0
    with pytest.raises(ValueError, match="cannot switch"):
        blk.set_fdts(0.0)
    with pytest.raises(ValueError, match="NaN"):
        blk.set_snr_db(float("nan"))


# ----------------------------------------------------------------------------- GRC

GRC_FILES = sorted((ROOT / "grc").glob("semcom_channel_*.block.yml"))


def test_grc_yml_files():
    ids = {p.name.split(".")[0] for p in GRC_FILES}
    assert {"semcom_channel_awgn", "semcom_channel_flat_fading", "semcom_channel_multipath",
            "semcom_channel_n_path", "semcom_channel_impairments", "semcom_channel_numpy"} <= ids
    for p in GRC_FILES:
        d = yaml.safe_load(p.read_text())
        assert d["id"] == p.name.split(".")[0] and d["file_format"] == 1
        assert d["category"] == "[Semantic Comms]/Channels"
        assert d["templates"]["imports"] == "from gnuradio import semcom"
        name = d["templates"]["make"].split("(")[0].split(".")[1]
        assert hasattr(semcom, name), name
        for cb in d["templates"].get("callbacks", []):
            assert hasattr(getattr(semcom, name), cb.split("(")[0]), cb
        doc = d["documentation"]
        assert "Es/N0" in doc and "Input" in doc and "Output" in doc and "Parameters" in doc


@pytest.mark.skipif(shutil.which("grcc") is None, reason="grcc not installed")
def test_grc_flowgraph_compiles_and_runs(tmp_path):
    def blk(bid, name, params):
        p = {"alias": "", "comment": "", "affinity": "", "maxoutbuf": "0", "minoutbuf": "0", **params}
        return {"name": name, "id": bid, "parameters": p,
                "states": {"coordinate": [0, 0], "rotation": 0, "state": "enabled"}}

    blocks_ = [
        blk("variable", "samp_rate", {"value": "15.36e6"}),
        blk("variable", "snr", {"value": "12.0"}),
        blk("blocks_vector_source_x", "src", {"type": "complex", "vector": "[1+0j]*20000", "repeat": "False",
                                               "tags": "[]", "vlen": "1"}),
        blk("semcom_channel_flat_fading", "ff", {"kind": "'rician'", "k": "4.0", "fdts": "0.001", "block_len": "0",
                                                 "snr_db": "snr", "seed": "1", "n_sinusoids": "8"}),
        blk("semcom_channel_multipath", "mp", {"profile": "'TDL-C'", "sample_rate": "samp_rate",
                                               "delay_spread": "100e-9", "fdts": "0.0", "block_len": "1000",
                                               "interp": "'sinc'", "snr_db": "float('inf')", "seed": "2",
                                               "n_sinusoids": "8"}),
        blk("semcom_channel_n_path", "np0", {"delays": "(0.0, 2.5)", "gains": "(1.0, 0.3j)", "interp": "'sinc'",
                                             "normalize": "True", "snr_db": "30.0", "seed": "3"}),
        blk("semcom_channel_impairments", "imp", {"cfo": "1000.0", "sample_rate": "samp_rate",
                                                  "timing_offset": "3.5", "sro_ppm": "20.0", "half_len": "16"}),
        blk("semcom_channel_numpy", "npc", {"spec": "{'model': 'rayleigh', 'fdts': 1e-3}", "seed": "5"}),
        blk("semcom_channel_awgn", "aw", {"snr_db": "snr", "seed": "4"}),
        blk("blocks_vector_sink_x", "snk", {"type": "complex", "vlen": "1", "reserve_items": "1024"}),
    ]
    chain = ["src", "ff", "mp", "np0", "imp", "npc", "aw", "snk"]
    opts = {"author": "", "catch_exceptions": "True", "category": "[GRC Hier Blocks]", "cmake_opt": "",
            "comment": "", "copyright": "", "description": "", "gen_cmake": "Off", "gen_linking": "dynamic",
            "generate_options": "no_gui", "hier_block_src_path": ".:", "id": "chan_test", "max_nouts": "0",
            "output_language": "python", "placement": "(0,0)", "qt_qss_theme": "", "realtime_scheduling": "",
            "run": "True", "run_command": "{python} -u {filename}", "run_options": "run", "sizing_mode": "fixed",
            "thread_safe_setters": "", "title": "chan test", "window_size": "(1000,1000)"}
    doc = {"options": {"parameters": opts, "states": {"coordinate": [0, 0], "rotation": 0, "state": "enabled"}},
           "blocks": blocks_, "connections": [[a, "0", b, "0"] for a, b in zip(chain, chain[1:])],
           "metadata": {"file_format": 1}}
    grc = tmp_path / "chan_test.grc"
    grc.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = dict(os.environ, GRC_BLOCKS_PATH=str(ROOT / "grc"))
    r = subprocess.run(["grcc", str(grc), "-o", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    out_py = tmp_path / "chan_test.py"
    assert out_py.exists(), r.stdout + r.stderr
    assert "semcom.impairments(" in out_py.read_text()
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import conftest, importlib.util;"
        f"s = importlib.util.spec_from_file_location('chan_test', {str(out_py)!r});"
        "m = importlib.util.module_from_spec(s); s.loader.exec_module(m);"
        "tb = m.chan_test(); tb.set_snr(5.0); tb.start(); tb.wait(); n = len(tb.snk.data());"
        "print(n); assert 19900 < n <= 20000, n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
