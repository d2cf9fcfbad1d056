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


# ---------------------------------------------------------------------------------------
# bounded records (ring buffers) and the image size limit

def _image_msg(h, w, image_id=0, seed=0):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return semcom.image_pdu(img, dict(image_id=image_id, name=f"img{image_id}"))


def test_encoder_and_sink_keep_the_newest_records_and_count_them_all(tmp_path):
    """semantic_encoder.log and image_sink.rows are ring buffers of `history` records; the
    counters, the sink's summary and its CSV cover every image."""
    from gnuradio.semcom.blocks._history import DEFAULT_HISTORY

    assert semcom.semantic_encoder(ToyAnalogCodec()).log.maxlen == DEFAULT_HISTORY == 10000
    enc = semcom.semantic_encoder(ToyAnalogCodec(), history=3)
    for k in range(10):
        enc._on_image(_image_msg(8, 8, image_id=k))
    assert enc.encoded == 10 and enc.failed == 0
    assert [e["image_id"] for e in enc.log] == [7, 8, 9]

    csv_path = tmp_path / "rows.csv"
    sink = semcom.image_sink("sample:astronaut", size=16, metrics=False, csv_path=str(csv_path), verbose=False,
                             expected=6, history=2)
    sink.start()
    for seq in range(5):
        status = "ok" if seq != 3 else "crc_fail"
        img = np.zeros((16, 16, 3), np.uint8) if status == "ok" else np.zeros((0, 0, 3), np.uint8)
        meta = dict(seq=seq, codec="toy", status=status, snr_est_db=float(seq))
        sink._handle(semcom.image_pdu(img, meta) if img.size else
                     pmt.cons(pmt.to_pmt(dict(meta, height=0, width=0)), pmt.init_u8vector(0, [])))
    assert len(sink.rows) == 2 and [r["seq"] for r in sink.rows] == [3, 4]
    assert sink.count() == 5
    assert sink.summary().startswith("images: received 5/6, ok 4, lost 1,")
    assert "mean est. SNR 2.00 dB" in sink.summary()
    back = semcom.image_sink.read_csv(str(csv_path))
    assert [r["seq"] for r in back] == [0, 1, 2, 3, 4] and back[3]["status"] == "crc_fail"
    assert back[2]["snr_est_db"] == 2.0 and np.isnan(back[2]["psnr"])
    with pytest.raises(ValueError):
        semcom.image_sink("sample:astronaut", size=16, history=-1)


def test_link_monitor_keeps_the_newest_rows_and_summarises_all():
    mon = semcom.link_monitor(seed=0, verbose=False, expected=6, history=2)
    for seq in range(5):
        x = semcom.blocks.link.random_features(0, seq, 16)
        meta = dict(seq=seq, codec_id=0, payload_len=16, snr_est_db=20.0, cfo=0.0, header_failures=seq // 2)
        mon._handle(pmt.cons(pmt.to_pmt(meta), semcom.blocks.pmtvec.c32_to_pmt(x)))
    assert mon.count() == 5 and [r["seq"] for r in mon.rows] == [3, 4]
    line = mon.summary()
    assert line.startswith("frames: received 5/6, lost 1,") and line.endswith("header failures 2"), line


def test_run_longer_than_the_history_still_has_every_row(caplog):
    """run_image_link over more images than the blocks keep: every image still gets its row
    (the sink's rows come back through its CSV), none is marked lost, and the result says that
    the oldest rows have no encoder records."""
    cfg = LinkConfig(codec="toy", images="sample:astronaut,coffee", size=32, snr_db=30, profile="wifi64",
                     sounding_frames=0, repeat=3, history=2, metrics=False)
    res = run_image_link(cfg, ToyAnalogCodec(), timeout_s=60)
    rows = res["rows"]
    assert [r["seq"] for r in rows] == list(range(6))
    assert all(r["status"] == "ok" for r in rows), [r["status"] for r in rows]
    assert res["tx_records_missing"] == 4
    assert [np.isfinite(r["tx_snr_db"]) for r in rows] == [False] * 4 + [True] * 2
    assert res["notes"] and "newest 2 of 6 images" in res["notes"][0]
    short = run_image_link(LinkConfig(codec="toy", images="sample:astronaut", size=32, snr_db=30, profile="wifi64",
                                      sounding_frames=0, metrics=False), ToyAnalogCodec(), timeout_s=60)
    assert short["notes"] == [] and short["tx_records_missing"] == 0


def test_encoder_refuses_an_oversized_image_and_goes_on(monkeypatch):
    """An image over max_pixels never reaches the codec: refused, logged with the reason,
    counted; the next image is encoded."""
    import types

    from gnuradio.semcom.blocks import _guard

    logged = []
    monkeypatch.setattr(_guard, "gr", types.SimpleNamespace(log=types.SimpleNamespace(error=logged.append)))
    codec = ToyAnalogCodec()
    enc = semcom.semantic_encoder(codec, max_pixels=64 * 64)
    enc._on_image(_image_msg(100, 100, image_id=0))
    assert enc.refused == 1 and enc.failed == 1 and enc.dropped() == 1 and enc.encoded == 0
    assert not hasattr(codec, "last_ctx")  # the codec never saw it
    assert len(logged) == 1 and "100x100 = 10000 pixels exceeds the limit of 4096 pixels (max_pixels)" in logged[0]
    enc._on_image(_image_msg(64, 64, image_id=1))
    assert enc.encoded == 1 and enc.refused == 1 and [e["image_id"] for e in enc.log] == [1]
    assert semcom.semantic_encoder(ToyAnalogCodec()).max_pixels == 4096 * 4096


def test_oversized_image_in_a_running_flowgraph_and_stop_returns():
    """A running source → encoder graph: the oversized image is refused, the next one encoded,
    and stop() returns at once (the encoder is not stuck in a codec)."""
    import time

    from gnuradio import blocks, gr

    class Sizes(semcom.image_source):  # sends a 100×100 image, then a 32×32 one
        def __init__(self):
            super().__init__("sample:astronaut", size=32, pace="interval", interval_s=0.01, linger_s=-1)
            big = np.zeros((100, 100, 3), np.uint8)
            self.images.items.insert(0, type(self.images.items[0])("big", big))

    tb = gr.top_block()
    src, enc = Sizes(), semcom.semantic_encoder(ToyAnalogCodec(), max_pixels=64 * 64)
    dbg = blocks.message_debug()
    tb.msg_connect(src, "out", enc, "in")
    tb.msg_connect(enc, "out", dbg, "store")
    tb.start()
    t0 = time.time()
    while (enc.encoded < 1 or enc.refused < 1 or dbg.num_messages() < 1) and time.time() - t0 < 20:
        time.sleep(0.01)
    t1 = time.time()
    tb.stop()
    tb.wait()
    assert enc.refused == 1 and enc.encoded == 1 and dbg.num_messages() == 1
    assert time.time() - t1 < 5.0


def test_decoder_refuses_a_frame_announcing_an_oversized_image():
    class Sized(ToyAnalogCodec):
        def image_shape(self, side_info):
            return codecs.unpack_shape(side_info)

    dec = semcom.semantic_decoder(Sized(), max_pixels=64 * 64)
    side = semcom.blocks.pmtvec.u8_to_pmt(np.frombuffer(codecs.pack_shape(1000, 1000) + b"\0\0\0\0", np.uint8))
    meta = pmt.dict_add(pmt.to_pmt(dict(codec_id=7, seq=0, snr_est_db=10.0)), pmt.intern("side_info"), side)
    dec._handle(pmt.cons(meta, pmt.init_c32vector(4, [1 + 0j] * 4)))
    assert dec.refused == 1 and dec.dropped() == 1 and dec.decoded == 0 and dec.failures == 1


def test_source_and_loader_refuse_big_images_before_decoding(tmp_path, monkeypatch):
    """Files over max_pixels are refused from their header (size known before decoding):
    skipped, listed and counted; the other images go on. A PNG header announcing a huge image
    is refused without any pixel being decoded, also beyond Pillow's own bomb limit."""
    import struct
    import zlib

    from PIL import Image, PngImagePlugin

    from gnuradio.semcom.images import ImageTooLarge, load_images

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(folder / "a_big.png")
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(folder / "b_small.png")
    src = semcom.image_source(str(folder), max_pixels=64 * 64)
    assert [it.name for it in src.images] == ["b_small.png"] and src.refused == 1
    assert "max_pixels" in src.skipped["a_big.png"]
    assert len(semcom.image_source(str(folder)).images) == 2  # the default limit takes both
    with pytest.raises(ValueError, match="no readable images"):
        semcom.image_source(str(folder / "a_big.png"), max_pixels=64 * 64)

    def header_only_png(path, w, h):
        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                         + chunk(b"IEND", b""))

    def no_decoding(self, *a, **k):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decoding)
    huge = tmp_path / "huge"
    huge.mkdir()
    header_only_png(huge / "a5000.png", 5000, 5000)  # over the default 4096 × 4096
    header_only_png(huge / "b20000.png", 20000, 20000)  # over twice PIL.Image.MAX_IMAGE_PIXELS
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(huge / "c_ok.bmp")
    got = load_images(str(huge))
    assert [it.name for it in got] == ["c_ok.bmp"] and got.too_large == ["a5000.png", "b20000.png"]
    assert "5000x5000 = 25000000 pixels exceeds the limit of 16777216 pixels (max_pixels)" in got.skipped["a5000.png"]
    assert "decompression bomb" in got.skipped["b20000.png"]
    with pytest.raises(ValueError, match="max_pixels"):
        load_images(str(huge / "a5000.png"))
    assert issubclass(ImageTooLarge, ValueError)
