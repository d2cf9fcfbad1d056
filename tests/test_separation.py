"""Separation baseline: QAM, channel codes (Hamming, LDPC numpy and gr-fec), image formats, the codec."""
import numpy as np
import pytest

from gnuradio.semcom import codecs
from gnuradio.semcom.codecs import Csi, channel_codes as cc, imagecodec
from gnuradio.semcom.codecs.qam import MODULATIONS, Qam
from gnuradio.semcom.codecs.separation import MCS_TABLES, STATUSES, SeparationCodec


@pytest.fixture(scope="module")
def image():
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((128, 128), Image.LANCZOS), np.uint8)


def awgn(x, snr_db, rng):
    nv = 10.0 ** (-snr_db / 10.0)
    return (x + np.sqrt(nv / 2) * (rng.standard_normal(x.size) + 1j * rng.standard_normal(x.size))).astype(np.complex64), nv


def psnr(a, b):
    return 10 * np.log10(255.0 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


# ----------------------------------------------------------------------------- QAM

@pytest.mark.parametrize("order", sorted(MODULATIONS.values()))
def test_qam_unit_power_gray_and_roundtrip(order, rng):
    q = Qam(order)
    pts = q.constellation()
    assert np.isclose(np.mean(np.abs(pts) ** 2), 1.0)
    labels = np.arange(order)
    bits = ((labels[:, None] >> np.arange(q.bits_per_symbol)[::-1]) & 1).astype(np.uint8).reshape(-1)
    assert np.allclose(q.modulate(bits), pts.astype(np.complex64), atol=1e-6)
    if order > 2:  # Gray: nearest neighbours differ in exactly one bit
        d = np.abs(pts[:, None] - pts[None])
        dmin = d[d > 1e-9].min()
        i, j = np.nonzero(np.isclose(d, dmin))
        assert all(bin(a ^ b).count("1") == 1 for a, b in zip(i, j))
    b = rng.integers(0, 2, 6000 * q.bits_per_symbol).astype(np.uint8)
    y, nv = awgn(q.modulate(b), 40.0, rng)
    llr = q.demap(y, nv)
    assert llr.dtype == np.float32 and llr.size == b.size
    assert np.array_equal((llr < 0).astype(np.uint8), b)


def test_qam_llr_matches_exact_max_log(rng):
    q = Qam(16)
    pts = q.constellation()
    y = (rng.standard_normal(50) + 1j * rng.standard_normal(50)).astype(np.complex64)
    nv = rng.uniform(0.05, 1.0, 50).astype(np.float32)
    llr = q.demap(y, nv).reshape(50, 4)
    d = np.abs(y[:, None] - pts[None]) ** 2 / nv[:, None]
    for j in range(4):
        bit = (np.arange(16) >> (3 - j)) & 1
        ref = d[:, bit == 1].min(1) - d[:, bit == 0].min(1)
        assert np.allclose(llr[:, j], ref, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- channel codes

def test_hamming74_corrects_every_single_error():
    h = cc.Hamming74()
    msgs = ((np.arange(16)[:, None] >> np.arange(3, -1, -1)) & 1).astype(np.uint8).reshape(-1)
    cw = h.encode(msgs).reshape(16, 7)
    for pos in range(7):
        bad = cw.copy()
        bad[:, pos] ^= 1
        llr = 1.0 - 2.0 * bad.reshape(-1)      # hard decisions as ±1 LLRs
        assert np.array_equal(h.decode(llr), msgs)
    # the code's 16 words are at Hamming distance ≥ 3 from each other
    dist = (cw[:, None] != cw[None]).sum(-1)
    assert dist[~np.eye(16, dtype=bool)].min() == 3


def test_gallager_matrices_are_deterministic_full_rank_without_4_cycles():
    text = cc.gallager_alist(720, 3, 12, 7)
    assert text == cc.gallager_alist(720, 3, 12, 7)
    m = cc.LdpcMatrix(text)
    assert m.rank == m.m and m.k == 720 - m.m
    overlap = m.H.astype(int) @ m.H.T.astype(int)
    assert overlap[~np.eye(m.m, dtype=bool)].max() <= 1       # no two rows share two columns
    assert cc.parse_alist(cc.format_alist(m.n, m.rows))[2][5].tolist() == m.rows[5].tolist()


@pytest.mark.parametrize("rate", list(cc.LDPC_CODES))
def test_ldpc_code_set(rate):
    code = cc.ldpc_code(rate, "numpy")
    num, den = map(int, rate.split("/"))
    assert abs(code.k / code.n - num / den) < 0.01
    u = np.random.default_rng(3).integers(0, 2, 2 * code.k).astype(np.uint8)
    c = code.encode(u).reshape(2, -1)
    assert not ((code.mat.H.astype(int) @ c.T) % 2).any()      # codewords satisfy H
    assert np.array_equal(code.mat.info_bits(c).reshape(-1), u)


def _bpsk_llr(c, snr_db, rng):
    y, nv = awgn(1.0 - 2.0 * c, snr_db, rng)
    return (4.0 * y.real / nv).astype(np.float32)


@pytest.mark.parametrize("backend", ["numpy", "gr-fec"])
def test_ldpc_roundtrip_and_failure(backend, rng):
    if backend == "gr-fec":
        pytest.importorskip("gnuradio.fec")
        from gnuradio.semcom.blocks import fec_ldpc  # noqa: F401  (registers "gr-fec")
    code = cc.ldpc_code("1/2", backend)
    u = rng.integers(0, 2, 4 * code.k).astype(np.uint8)
    c = code.encode(u)
    assert np.array_equal(c, cc.ldpc_code("1/2", "numpy").encode(u))   # both backends encode alike
    llr = _bpsk_llr(c, 1.0, rng)
    assert (llr < 0).astype(np.uint8).tolist() != c.tolist()           # the channel did flip bits
    assert np.array_equal(code.decode(llr), u)
    assert not np.array_equal(code.decode(_bpsk_llr(c, -8.0, rng)), u)  # far below threshold
    assert np.array_equal(code.decode(1000.0 * (1.0 - 2.0 * c)), u)    # huge LLRs stay stable
    # reliable and near-erased bits mixed (what equalised fading gives): still decodes
    low = cc.ldpc_code("1/4", backend)
    u = rng.integers(0, 2, 4 * low.k).astype(np.uint8)
    c = low.encode(u)
    nv = np.where(rng.random(c.size) < 0.5, 10.0, 10.0 ** (-12 / 10))
    y = 1.0 - 2.0 * c + np.sqrt(nv / 2) * rng.standard_normal(c.size)
    assert np.array_equal(low.decode((4.0 * y / nv).astype(np.float32)), u)


def test_ldpc_backends_interoperate(rng):
    pytest.importorskip("gnuradio.fec")
    from gnuradio.semcom.blocks import fec_ldpc  # noqa: F401

    assert cc.ldpc_backends()[0] == "gr-fec"
    gr, npy = cc.ldpc_code("3/4", "gr-fec"), cc.ldpc_code("3/4", "numpy")
    u = rng.integers(0, 2, 3 * gr.k).astype(np.uint8)
    q = Qam(16)
    y, nv = awgn(q.modulate(gr.encode(u)), 14.0, rng)
    assert np.array_equal(npy.decode(q.demap(y, nv)), u)


# ----------------------------------------------------------------------------- image formats

def test_formats_available_and_fit_respects_budget(image):
    avail = imagecodec.available_formats()
    assert "jpeg" in avail and "webp" in avail
    for cap in (700, 2500):
        c = imagecodec.fit(image, cap)
        assert c is not None and len(c.data) <= cap
        assert c.fmt in avail
        assert np.isclose(psnr(image, imagecodec.reconstruct(c.data, c.fmt, c.scale, 128, 128)), c.psnr)
    assert imagecodec.fit(image, 20) is None


# ----------------------------------------------------------------------------- the codec

def test_mcs_tables_are_calibrated_and_selection_is_monotone():
    codec = SeparationCodec()
    n = codec.channel_uses(256, 256)
    assert n == round(3 * 256 * 256 / 12)
    caps = [codec.capacity(codec.select_mcs(s, n), n) for s in np.arange(-10, 30, 0.25)]
    assert all(a <= b for a, b in zip(caps, caps[1:]))
    assert caps[0] > 0 and caps[-1] > 10 * caps[0]
    for table in MCS_TABLES.values():
        assert len({m.name for m in table}) == len(table)


def test_codec_high_snr_reconstructs_the_file_exactly(image, rng):
    codec = codecs.make_codec("separation", 1 / 12)
    enc = codec.encode(image, {"snr_db": 25.0})
    n = codec.channel_uses(128, 128)
    assert enc.symbols.dtype == np.complex64 and enc.symbols.size == n
    assert abs(np.mean(np.abs(enc.symbols) ** 2) - 1.0) < 0.05
    assert len(enc.side_info) == 11
    assert enc.meta["tx_mcs"] == "64qam-5/6" and enc.meta["tx_file_bytes"] <= enc.meta["tx_capacity_bytes"]
    y, nv = awgn(enc.symbols, 25.0, rng)
    out = codec.decode(y, enc.side_info, Csi(25.0, nv))
    assert codec.last_status == "ok"
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.isclose(psnr(image, out), enc.meta["tx_file_psnr"])


def test_codec_cliff_low_snr_with_high_mcs_fails_crc(image, rng):
    codec = SeparationCodec(mcs="64qam-3/4")
    enc = codec.encode(image, {})
    y, nv = awgn(enc.symbols, 3.0, rng)
    assert codec.decode(y, enc.side_info, Csi(3.0, nv)) is None
    assert codec.last_status == "crc_fail"


def test_codec_uses_per_symbol_noise_variance(rng):
    """Half the symbols drowned: the LLRs of those must be discounted for the frame to decode."""
    from PIL import Image
    from skimage import data

    image = np.asarray(Image.fromarray(data.chelsea()).resize((256, 256), Image.LANCZOS), np.uint8)
    codec = SeparationCodec(mcs="bpsk-1/4", image_format="webp")
    enc = codec.encode(image, {})
    assert enc.meta["tx_file_bytes"] > 0
    nv = np.full(enc.symbols.size, 10.0 ** (-12 / 10), np.float32)
    nv[::2] = 10.0 ** (10 / 10)                                    # −10 dB on every other symbol
    y = enc.symbols + np.sqrt(nv / 2) * (rng.standard_normal(nv.size) + 1j * rng.standard_normal(nv.size))
    y = y.astype(np.complex64)
    assert codec.decode(y, enc.side_info, Csi(0.0, noise_var_sym=nv)) is not None
    assert codec.decode(y, enc.side_info, Csi(0.0, noise_var=float(nv.mean()))) is None


def test_codec_hamming_family(image, rng):
    codec = SeparationCodec(channel_code="hamming74", image_format="jpeg")
    enc = codec.encode(image, {"snr_db": 30.0})
    assert enc.meta["tx_mcs"] == "64qam-hamming74" and enc.meta["tx_format"] == "jpeg"
    y, nv = awgn(enc.symbols, 30.0, rng)
    out = codec.decode(y, enc.side_info, Csi(30.0, nv))
    assert codec.last_status == "ok" and np.isclose(psnr(image, out), enc.meta["tx_file_psnr"])


def test_codec_tiny_budget_sends_padding_and_reports_no_mcs(image):
    codec = SeparationCodec(rate=1 / 400)
    enc = codec.encode(image, {"snr_db": 0.0})
    assert enc.symbols.size == codec.channel_uses(128, 128)
    assert np.isclose(np.mean(np.abs(enc.symbols) ** 2), 1.0)
    assert codec.decode(enc.symbols, enc.side_info, Csi(0.0)) is None and codec.last_status == "no_mcs"


def test_codec_never_raises_on_garbage(image, rng):
    codec = SeparationCodec()
    enc = codec.encode(image, {"snr_db": 10.0})
    noise = (rng.standard_normal(enc.symbols.size) + 1j * rng.standard_normal(enc.symbols.size)).astype(np.complex64)
    assert codec.decode(noise, enc.side_info, Csi(-5.0)) is None and codec.last_status == "crc_fail"
    assert codec.decode(enc.symbols[:-1], enc.side_info, Csi(20.0)) is None and codec.last_status == "bad_length"
    assert codec.decode(enc.symbols, b"\x00", Csi(20.0)) is None and codec.last_status == "bad_side_info"
    bad = bytearray(enc.side_info)
    bad[5] = 14                                                  # unknown format id
    assert codec.decode(enc.symbols, bytes(bad), Csi(20.0)) is None and codec.last_status == "bad_side_info"
    assert set(STATUSES) >= {"ok", "crc_fail", "no_mcs", "image_decode_error"}


def test_codec_validates_arguments():
    with pytest.raises(ValueError):
        SeparationCodec(rate=0)
    with pytest.raises(ValueError):
        SeparationCodec(channel_code="turbo")
    with pytest.raises(ValueError):
        SeparationCodec(image_format="gif")
    with pytest.raises(ValueError):
        SeparationCodec(mcs="256qam-9/10")
    with pytest.raises(ValueError):
        SeparationCodec(scales=(1, 3))
    with pytest.raises(ValueError):
        SeparationCodec(ldpc_backend="cuda")
    with pytest.raises(ValueError):
        SeparationCodec().encode(np.zeros((16, 16, 3), np.uint8), {})   # adaptive codec needs CSI
