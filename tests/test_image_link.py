"""Image-link blocks and flowgraph: source, encoder, decoder, sink, CSI feedback, failures.

Uses a small analog test codec defined here (pixels of a 2×-downsampled image as symbols)
so the block plumbing is tested apart from the trained models; test_jscc/test_separation
cover the real codecs, and one test runs the real JSCC end to end.
"""
import os

import numpy as np
import pmt
import pytest

from gnuradio import semcom
from gnuradio.semcom import codecs
from gnuradio.semcom.blocks.image_link import LinkConfig, grid, parse_rate, point_key, run_image_link


class ToyAnalogCodec(codecs.Codec):
    """2×2 mean-pooled pixels, zero-mean, pairs → complex symbols; decode by upsampling."""

    codec_id, name = 7, "toy"

    def channel_uses(self, h, w):
        return ((h + 1) // 2) * ((w + 1) // 2) * 3 // 2 + 1

    def encode(self, image, ctx=None):
        h, w = image.shape[:2]
        a = np.pad(image.astype(np.float32), ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        small = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2, 3).mean(axis=(1, 3)).ravel() / 127.5 - 1.0
        if small.size % 2:
            small = np.append(small, 0.0)
        z = (small[0::2] + 1j * small[1::2]).astype(np.complex64)
        g = np.sqrt(np.mean(np.abs(z) ** 2))
        self.last_ctx = ctx
        return codecs.Encoded(z / g, codecs.pack_shape(h, w) + np.float32(g).tobytes())

    def decode(self, symbols, side_info, csi):
        h, w = codecs.unpack_shape(side_info)
        g = np.frombuffer(side_info[4:8], np.float32)[0]
        hh, ww = (h + 1) // 2, (w + 1) // 2
        v = np.empty(2 * symbols.size, np.float32)
        v[0::2], v[1::2] = symbols.real * g, symbols.imag * g
        small = ((v[: hh * ww * 3] + 1.0) * 127.5).reshape(hh, ww, 3)
        big = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)[:h, :w]
        return np.clip(np.rint(big), 0, 255).astype(np.uint8)


def test_parse_rate_and_grid():
    assert parse_rate("1/12") == pytest.approx(1 / 12)
    assert parse_rate("0.5") == 0.5
    for bad in ("0", "2", "x", "1/0"):
        with pytest.raises(ValueError):
            parse_rate(bad)
    cfgs = grid(LinkConfig(), ("jscc", "separation"), (1 / 6, 1 / 12), ("awgn",), (0, 10), (0, 1))
    assert len(cfgs) == 16 and len({point_key(c) for c in cfgs}) == 16


def test_image_pdu_roundtrip_and_bad_pdu():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    back, meta = semcom.pdu_image(semcom.image_pdu(img, dict(image_id=3, name="x")))
    assert np.array_equal(back, img) and meta["image_id"] == 3 and meta["name"] == "x"
    bad = pmt.cons(pmt.to_pmt(dict(height=5, width=5)), pmt.init_u8vector(3, [1, 2, 3]))
    with pytest.raises(ValueError):
        semcom.pdu_image(bad)


def test_image_source_errors(tmp_path):
    with pytest.raises(ValueError, match="no image files"):
        semcom.image_source(str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        semcom.image_source(str(tmp_path / "missing"))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="no readable images"):
        semcom.image_source(str(tmp_path))


def _write_set(folder):
    from PIL import Image

    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:37, 0:53]
    smooth = np.stack([x * 4, y * 6, (x + y) * 2], -1).astype(np.uint8)
    Image.fromarray(smooth).save(folder / "a_rgb.png")                        # odd size
    Image.fromarray(smooth[:, :, 0]).save(folder / "b_gray.png")              # grayscale
    Image.fromarray(np.dstack([smooth, np.full((37, 53), 200, np.uint8)])).save(folder / "c_rgba.png")
    (folder / "d_corrupt.jpg").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())


def test_link_with_bad_inputs_and_csi_feedback(tmp_path):
    """Odd-sized, grayscale and RGBA images go through; the corrupt file is skipped and reported;
    the encoder's TX CSI comes from the receiver's estimate, the decoder's from the RX metadata."""
    data = tmp_path / "imgs"
    data.mkdir()
    _write_set(data)
    codec = ToyAnalogCodec()
    cfg = LinkConfig(codec="toy", images=str(data), size=0, snr_db=25.0, profile="wifi64", out_dir=str(tmp_path / "o"),
                     tx_snr_db=-3.0)
    res = run_image_link(cfg, codec, timeout_s=60)
    rows = res["rows"]
    assert res["skipped"] and "d_corrupt.jpg" in res["skipped"]
    assert [r["name"] for r in rows] == ["a_rgb.png", "b_gray.png", "c_rgba.png"]
    assert all(r["status"] == "ok" for r in rows)
    assert all(r["psnr"] > 25 for r in rows)  # 2× pooling of smooth ramps at 25 dB
    assert all(abs(r["snr_est_db"] - 25.0) < 1.5 for r in rows)
    # sounding frames gave the TX a measured SNR before the first image (not the -3 dB guess)
    assert all(abs(r["tx_snr_db"] - 25.0) < 1.5 for r in rows)
    assert all(os.path.exists(r["file"]) for r in rows)
    assert res["header_failures"] == 0 and res["encoder_failures"] == 0


def test_decoder_failure_policy_and_lost_frames():
    """A codec that has nothing to show → status and grey scoring; 'previous' re-emits the last image."""

    class Flaky(ToyAnalogCodec):
        calls = 0

        def decode(self, symbols, side_info, csi):
            Flaky.calls += 1
            if Flaky.calls % 2 == 0:
                self.last_status = "crc_fail"
                return None
            return super().decode(symbols, side_info, csi)

    for policy, expect in (("nothing", "crc_fail"), ("previous", "previous")):
        Flaky.calls = 0
        cfg = LinkConfig(codec="toy", images="sample:astronaut,coffee", size=64, snr_db=30, profile="wifi64",
                         on_failure=policy, sounding_frames=0)
        res = run_image_link(cfg, Flaky(), timeout_s=60)
        st = [r["status"] for r in res["rows"]]
        assert st == ["ok", expect], st
        assert res["decoder_failures"] == 1
        grey_psnr = res["rows"][1]["psnr"]
        assert (grey_psnr < 15) if policy == "nothing" else (grey_psnr < res["rows"][0]["psnr"])


def test_decoder_ignores_other_codecs_and_garbage():
    dec = semcom.semantic_decoder(ToyAnalogCodec())
    dec._handle(pmt.PMT_NIL)
    dec._handle(pmt.cons(pmt.to_pmt(dict(codec_id=0)), pmt.init_c32vector(4, [0j] * 4)))
    assert dec.ignored == 2 and dec.decoded == 0
    # right codec id, garbage side info: counted failure, no exception
    dec._handle(pmt.cons(pmt.to_pmt(dict(codec_id=7, snr_est_db=10.0)), pmt.init_c32vector(4, [0j] * 4)))
    assert dec.failures == 1


def test_encoder_rejects_bad_image_without_stopping():
    enc = semcom.semantic_encoder(ToyAnalogCodec())
    enc._on_image(pmt.cons(pmt.to_pmt(dict(height=2, width=2)), pmt.init_u8vector(3, [1, 2, 3])))
    enc._on_image(pmt.cons(pmt.make_dict(), pmt.init_u8vector(0, [])))
    assert enc.failed == 2 and enc.encoded == 0


def test_mmse_output_is_unbiased_for_the_codecs():
    """MMSE shrinks y by (1 − e); Csi.unbias restores y = x + n with noise e/(1 − e)."""
    rng = np.random.default_rng(3)
    n, snr_db = 200000, -5.0
    x = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)).astype(np.complex64)
    s2 = 10 ** (-snr_db / 10)
    y = x + np.sqrt(s2 / 2) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    e = s2 / (1 + s2)
    csi = codecs.Csi(snr_db, s2, np.full(n, e, np.float32))
    u = csi.unbias((y / (1 + s2)).astype(np.complex64), "mmse")
    gain = np.vdot(x, u).real / np.vdot(x, x).real
    assert abs(gain - 1) < 0.02 and np.allclose(csi.noise_var_sym, s2, rtol=1e-4)
    csi2 = codecs.Csi(snr_db, s2, np.full(n, e, np.float32))
    assert csi2.unbias(y, "zf") is y
