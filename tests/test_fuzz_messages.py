"""Malformed messages on every message input port of every gr-semcom block.

Each block runs in a started top_block; bad messages (PMT_NIL, numbers, symbols, pairs with a
non-dict car, metadata with wrong-typed values for every key the block reads, vectors of the
wrong type, empty, NaN/Inf or too long) are posted to its port, then a good one. The good one
must still have its effect (the block's message thread is alive) and ``dropped()`` must have
gone up by the number of bad ones the block cannot use. Every block class with a message input
(found in ``semcom.blocks.__all__`` and the QT names, and in the grc/*.block.yml files) must
have a case here.
"""
import inspect
import os
import pathlib
import time

import numpy as np
import pytest

pmt = pytest.importorskip("pmt")
yaml = pytest.importorskip("yaml")
from gnuradio import blocks, gr  # noqa: E402
from gnuradio import semcom  # noqa: E402
from gnuradio.semcom import codecs  # noqa: E402
from gnuradio.semcom.blocks.image import image_pdu  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = 32
IMG = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
RESULTS = {}


# ---------------------------------------------------------------------------------------
# messages
def P(v):
    return v if isinstance(v, pmt.pmt_base) else pmt.to_pmt(v)


def pdu(meta, vec):
    d = pmt.make_dict()
    for k, v in meta.items():
        d = pmt.dict_add(d, pmt.intern(k), P(v))
    return pmt.cons(d, vec)


def c32(x):
    x = np.asarray(x, np.complex64)
    return pmt.init_c32vector(len(x), x.tolist())


def u8(x):
    x = np.asarray(x, np.uint8).ravel()
    return pmt.init_u8vector(len(x), x)


SYM, LIST = pmt.intern("x"), pmt.to_pmt([1, 2])
# not PDUs at all (every port that reads a PDU or a dict)
NOT_PDU = [("nil", pmt.PMT_NIL), ("int", pmt.from_long(3)), ("double", pmt.from_double(2.5)),
           ("symbol", SYM), ("true", pmt.PMT_T), ("list", LIST),
           ("pair int car", pmt.cons(pmt.from_long(1), c32(np.ones(8)))),
           ("pair symbol car", pmt.cons(SYM, u8(IMG)))]
# wrong-typed values per metadata key
BAD_VALUES = {
    "snr_est_db": [SYM, LIST, "x", pmt.from_double(float("nan")), pmt.from_double(float("inf"))],
    "codec_id": ["jscc", 2.7, LIST],
    "seq": [pmt.from_long(1 << 40), "x", -5],
    "side_info": [pmt.from_long(3), "x", pmt.init_f32vector(2, [1.0, 2.0])],
    "height": ["x", SIZE + 1],
    "width": [LIST],
    "image_id": ["x", -1],
    "name": [pmt.from_long(5)],
    "importance": [pmt.from_long(1), pmt.init_f32vector(3, [1, 2, 3])],
    "weight": ["x"],
    "noise_var": ["x"],
    "equalizer": [pmt.from_long(1)],
    "codec": [pmt.from_long(1)],
    "status": [LIST],
    "importance_levels": [pmt.from_long(2)],
    "payload_len": ["x"],
    "cfo": ["x"],
    "header_failures": [2.5],
    "question": [pmt.from_long(1)],
    "target": [LIST],
}


def bad_meta(good_meta, keys, vec):
    """One PDU per wrong value of each key (the other keys as in the good message)."""
    out = []
    for k in keys:
        for v in BAD_VALUES[k]:
            out.append((f"{k}={v}", pdu(dict(good_meta, **{k: v}), vec)))
    return out


def bad_c32(meta, n=64, too_long=None):
    out = [("u8 vector", pdu(meta, u8(np.ones(n)))), ("f32 vector", pdu(meta, pmt.init_f32vector(n, [1.0] * n))),
           ("empty c32", pdu(meta, c32([]))), ("NaN c32", pdu(meta, c32(np.full(n, np.nan)))),
           ("Inf c32", pdu(meta, c32(np.full(n, np.inf)))), ("nil vector", pdu(meta, pmt.PMT_NIL))]
    if too_long:
        out.append((f"{too_long} symbols", pdu(meta, c32(np.ones(too_long)))))
    return out


def bad_image(meta):
    meta = dict(meta, height=SIZE, width=SIZE)
    return [("c32 vector", pdu(meta, c32(np.ones(SIZE * SIZE * 3)))), ("short u8", pdu(meta, u8(IMG.ravel()[:-1]))),
            ("1e6 bytes", pdu(meta, u8(np.zeros(10 ** 6))))]


def good_image(**meta):
    return image_pdu(IMG, dict(dict(image_id=0, name="fuzz"), **meta))


# ---------------------------------------------------------------------------------------
# running
class _Src(gr.basic_block):
    """Message source that sends nothing: connects a block's inputs, so that it runs."""

    def __init__(self):
        gr.basic_block.__init__(self, "fuzz_src", None, None)
        self.message_port_register_out(pmt.intern("out"))


def wait_until(cond, timeout=10.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


class Rig:
    """top_block around one block: a silent source on each input, message_debug on each output."""

    def __init__(self, blk, inputs, outputs, stream_out=False):
        self.tb, self.blk = gr.top_block(), blk
        self.src = _Src()
        for port in inputs:
            self.tb.msg_connect(self.src, "out", blk, port)
        self.dbg = {}
        for port in outputs:
            self.dbg[port] = blocks.message_debug()
            self.tb.msg_connect(blk, port, self.dbg[port], "store")
        self.snk = None
        if stream_out:
            self.snk = blocks.vector_sink_c()
            self.tb.connect(blk, self.snk)

    def out(self, port):
        d = self.dbg[port]
        return [d.get_message(k) for k in range(d.num_messages())]

    def __enter__(self):
        self.tb.start()
        return self

    def __exit__(self, *exc):
        self.tb.stop()
        self.tb.wait()


def fuzz(case, target, port, bad, good, done, counter, n_unusable=None):
    """Post ``bad`` then ``good`` to ``target``'s ``port``; ``done()``: the good one arrived."""
    before = counter()
    b = target.to_basic_block()
    for _, msg in bad:
        b._post(pmt.intern(port), msg)
    b._post(pmt.intern(port), good)
    assert wait_until(done), f"{case}.{port}: the good message after {len(bad)} bad ones had no effect"
    expect = len(bad) if n_unusable is None else n_unusable
    got = counter() - before
    RESULTS[f"{case}.{port}"] = (len(bad), got)
    print(f"{case}.{port}: {len(bad)} malformed messages sent, {got} rejected, good one handled", flush=True)
    assert got == expect, f"{case}.{port}: dropped() went up by {got}, expected {expect}"


# ---------------------------------------------------------------------------------------
# cases: one per block (class names they cover)
def case_ofdm_tx():
    tx = semcom.ofdm_tx(max_payload_len=4096)
    meta = dict(codec_id=1, seq=3, side_info=pmt.init_u8vector(2, [1, 2]))
    with Rig(tx, [], [], stream_out=True) as r:
        n_tags = lambda: sum(pmt.symbol_to_string(t.key) == "packet_len" for t in r.snk.tags())  # noqa: E731
        bad = NOT_PDU + bad_c32(meta, too_long=5000) + bad_meta(meta, ["codec_id", "seq", "side_info"], c32(np.ones(64)))
        bad.append(("codec_id=300", pdu(dict(meta, codec_id=300), c32(np.ones(64)))))
        bad.append(("side_info 100 bytes", pdu(dict(meta, side_info=u8(np.ones(100))), c32(np.ones(64)))))
        fuzz("ofdm_tx", tx.framer, "in", bad, pdu(meta, c32(np.ones(64))), lambda: n_tags() == 1, tx.dropped)
        n0 = len(r.snk.data())
        bad = NOT_PDU + bad_c32({}) + [("int car", pmt.cons(pmt.from_long(1), c32(np.ones(10))))]
        fuzz("ofdm_tx", tx.bursts, "pdus", bad, pdu({}, c32(np.ones(100))),
             lambda: len(r.snk.data()) >= n0 + 100, tx.dropped)


def case_semantic_encoder():
    enc = semcom.semantic_encoder("jscc", 1 / 12, tx_snr_db=10.0)
    with Rig(enc, ["in", "csi"], ["out"]) as r:
        bad = NOT_PDU + bad_image({}) + [("empty image", pdu(dict(height=0, width=0), u8([])))]
        bad += bad_meta(dict(image_id=0, name="fuzz", height=SIZE, width=SIZE),
                        ["height", "width", "image_id", "name", "importance"], u8(IMG))
        imp = pmt.init_f32vector(SIZE * SIZE, np.ones(SIZE * SIZE, np.float32))
        bad += [("weight=x", pdu(dict(height=SIZE, width=SIZE, importance=imp, weight="x"), u8(IMG))),
                ("importance NaN", pdu(dict(height=SIZE, width=SIZE, importance=pmt.init_f32vector(
                    SIZE * SIZE, np.full(SIZE * SIZE, np.nan, np.float32))), u8(IMG)))]
        fuzz("semantic_encoder", enc, "in", bad, good_image(), lambda: len(r.out("out")) == 1, enc.dropped)
        assert enc.encoded == 1 and enc.failed == len(bad)
        good = pdu(dict(snr_est_db=7.5), c32(np.ones(4)))
        bad = NOT_PDU + bad_meta({}, ["snr_est_db"], c32(np.ones(4))) + [("no snr", pdu(dict(seq=1), c32([1])))]
        fuzz("semantic_encoder", enc, "csi", bad, good, lambda: enc.tx_snr_db == 7.5, enc.dropped)
        assert enc.csi_reports == 1


def _rx_pdu(**over):
    codec = codecs.make_codec("jscc", 1 / 12)
    e = codec.encode(IMG, {"snr_db": 20.0})
    meta = dict(codec_id=codec.codec_id, seq=0, snr_est_db=20.0, noise_var=0.01, equalizer="zf",
                side_info=u8(np.frombuffer(e.side_info, np.uint8)))
    meta.update(over)
    return meta, c32(e.symbols)


def case_semantic_decoder():
    dec = semcom.semantic_decoder("jscc", 1 / 12)
    meta, vec = _rx_pdu()
    with Rig(dec, ["in"], ["out"]) as r:
        bad = NOT_PDU + bad_c32(meta)  # (a too long payload is decoded: the codec drops the extra symbols)
        bad += bad_meta(meta, ["snr_est_db", "codec_id", "seq", "side_info", "noise_var", "equalizer"], vec)
        bad.append(("no snr_est_db", pdu({k: v for k, v in meta.items() if k != "snr_est_db"}, vec)))

        def done():
            out = r.out("out")
            return out and pmt.to_python(pmt.car(out[-1])).get("status") == "ok"

        fuzz("semantic_decoder", dec, "in", bad, pdu(meta, vec), done, dec.dropped)
        assert dec.decoded == 1


def case_image_sink():
    snk = semcom.image_sink(reference="sample:astronaut", size=SIZE, limit=1, metrics=False, verbose=False)
    with Rig(snk, ["in"], ["ack"]) as r:
        meta = dict(seq=0, codec="jscc", status="ok", snr_est_db=10.0)
        bad = NOT_PDU + bad_image(meta)
        bad += bad_meta(dict(meta, height=SIZE, width=SIZE), ["seq", "snr_est_db", "codec", "status", "height",
                                                              "importance_levels"], u8(IMG))
        bad = [b for b in bad if "snr_est_db=nan" not in b[0] and "snr_est_db=inf" not in b[0]]  # shown as is
        fuzz("image_sink", snk, "in", bad, good_image(**meta), lambda: snk.count() == 1, snk.dropped)
        assert wait_until(lambda: len(r.out("ack")) == len(bad) + 1)  # every PDU is acked


def case_link_monitor():
    mon = semcom.link_monitor(verbose=False)
    meta = dict(seq=0, codec_id=0, payload_len=64, snr_est_db=10.0, cfo=0.0, header_failures=0)
    with Rig(mon, ["in"], []):
        bad = NOT_PDU + bad_c32(meta)
        bad += bad_meta(meta, ["seq", "codec_id", "payload_len", "header_failures", "cfo"], c32(np.ones(64)))
        bad += [b for b in bad_meta(meta, ["snr_est_db"], c32(np.ones(64))) if "nan" not in b[0] and "inf" not in b[0]]
        fuzz("link_monitor", mon, "in", bad, pdu(meta, c32(np.ones(64))), lambda: mon.count() == 1, mon.dropped)


def case_image_source():
    src = semcom.image_source("sample:astronaut", size=SIZE, limit=1, repeat=100, pace="ack", window=1,
                              timeout_s=60, linger_s=-1)
    with Rig(src, ["next"], ["out"]):
        assert wait_until(lambda: src.sent == 1)
        bad = NOT_PDU + [("c32 pdu", pdu({}, c32([1])))]
        # any message on "next" is an ack: the bad ones release images too, none is rejected
        fuzz("image_source", src, "next", bad, pmt.PMT_T, lambda: src.sent == len(bad) + 2, src.dropped,
             n_unusable=0)


def case_semantic_guidance():
    g = semcom.semantic_guidance(question="where is the person", snr_db=10.0)
    with Rig(g, ["in", "question", "csi"], ["out"]) as r:
        bad = NOT_PDU + bad_image({}) + [("empty image", pdu(dict(height=0, width=0), u8([])))]
        bad += bad_meta(dict(image_id=0, height=SIZE, width=SIZE), ["height", "width"], u8(IMG))
        fuzz("semantic_guidance", g, "in", bad, good_image(), lambda: len(r.out("out")) == 1, g.dropped)
        bad = [b for b in NOT_PDU if b[0] != "symbol"] + [
            ("dict without question", pmt.to_pmt({"x": 1})),
            ("question=1", pdu(dict(question=1), u8([]))), ("target=list", pdu(dict(question="q", target=LIST), u8([])))]
        fuzz("semantic_guidance", g, "question", bad, pmt.intern("find the cup"),
             lambda: g.question == "find the cup", g.dropped)
        bad = NOT_PDU + bad_meta({}, ["snr_est_db"], c32([1])) + [("no snr", pdu({}, c32([1])))]
        fuzz("semantic_guidance", g, "csi", bad, pdu(dict(snr_est_db=3.5), c32([1])), lambda: g.snr_db == 3.5,
             g.dropped)


def case_question_gate():
    gate = semcom.question_gate(default_question="q", question_timeout_s=0.01, settle_s=0.0)
    with Rig(gate, ["uplink", "in"], ["out", "question", "csi", "next"]) as r:
        assert wait_until(lambda: gate.question_source == "default" and not gate.held)
        time.sleep(0.05)
        bad = [b for b in NOT_PDU if b[0] not in ("symbol", "true")] + [
            ("dict without keys", pmt.to_pmt({"x": 1})),
            ("question=1", pmt.to_pmt({"question": 1})), ("target=list", pmt.to_pmt({"question": "q", "target": [1]})),
            ("snr_est_db=x", pmt.to_pmt({"snr_est_db": "x"})), ("snr_est_db=nan", pmt.to_pmt({"snr_est_db": np.nan})),
            ("snr_est_db=list", pmt.to_pmt({"snr_est_db": [1.0]}))]
        fuzz("question_gate", gate, "uplink", bad, pmt.to_pmt({"snr_est_db": 5.0}),
             lambda: len(r.out("csi")) == 1, gate.dropped)
        bad = NOT_PDU + [("c32 vector", pdu({}, c32([1]))), ("f32 vector", pdu({}, pmt.init_f32vector(1, [1.0])))]
        fuzz("question_gate", gate, "in", bad, good_image(), lambda: len(r.out("out")) == 1, gate.dropped)


def case_device_uplink():
    dev = semcom.device_uplink(question="q", repeat_s=0)
    with Rig(dev, ["csi", "ack"], ["out"]) as r:
        meta = dict(snr_est_db=8.0, seq=1, codec_id=1, side_info=u8([1, 2]))
        bad = NOT_PDU + bad_meta(meta, ["snr_est_db", "seq", "codec_id", "side_info"], c32([1]))
        bad.append(("no snr", pdu(dict(seq=1), c32([1]))))

        def csi_out():
            return [m for m in r.out("out") if "snr_est_db" in (pmt.to_python(m) or {})]

        fuzz("device_uplink", dev, "csi", bad, pdu(meta, c32([1])), lambda: len(csi_out()) == 1, dev.dropped)
        assert len(dev.frames) == 1 and dev.frames[0]["side_info"] == b"\x01\x02"
        bad = list(NOT_PDU)  # any message is an ack
        fuzz("device_uplink", dev, "ack", bad, pmt.PMT_T, lambda: dev.acks == len(bad) + 1, dev.dropped, n_unusable=0)


@pytest.fixture(scope="module")
def qapp():
    pytest.importorskip("PyQt5")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PyQt5 import QtWidgets

    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


def case_qt_image_view(qapp):
    v = semcom.qt_image_view()
    meta = dict(seq=0, status="ok", snr_est_db=5.0)
    with Rig(v, ["in"], []):
        bad = NOT_PDU + bad_image(meta)
        bad += bad_meta(dict(meta, height=SIZE, width=SIZE), ["seq", "snr_est_db", "height", "importance_levels"],
                        u8(IMG))
        bad = [b for b in bad if b[0] not in ("snr_est_db=nan", "snr_est_db=inf")]  # shown as they are
        fuzz("qt_image_view", v, "in", bad, good_image(**meta), lambda: v.received == 1, v.dropped)
        assert v.malformed == v.dropped()
    qapp.processEvents()
    assert "seq 0" in v.caption.text()


def case_qt_rx_readout(qapp):
    ro = semcom.qt_rx_readout()
    with Rig(ro, ["in"], []):
        bad = [b for b in NOT_PDU if not b[0].startswith("pair")] + [
            ("pair int car", pmt.cons(pmt.from_long(1), c32([1]))), ("pair symbol car", pmt.cons(SYM, c32([1])))]
        fuzz("qt_rx_readout", ro, "in", bad, pdu(dict(snr_est_db=4.0), c32([1])), lambda: ro.received == 1,
             ro.dropped)
    qapp.processEvents()


@pytest.fixture(scope="module")
def vlf_backend(tmp_path_factory):
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    import vlf_tiny

    return vlf_tiny.build(tmp_path_factory.mktemp("vlf_fuzz"))


def case_vlf_encoder(vlf_backend):
    enc = semcom.vlf_encoder(backend=str(vlf_backend))
    with Rig(enc, ["in", "csi"], ["out"]) as r:
        bad = NOT_PDU + bad_image({}) + [("empty image", pdu(dict(height=0, width=0), u8([])))]
        bad += bad_meta(dict(image_id=0, name="fuzz", height=SIZE, width=SIZE), ["height", "width", "image_id", "name"],
                        u8(IMG))
        fuzz("vlf_encoder", enc, "in", bad, good_image(), lambda: len(r.out("out")) == 1, enc.dropped)
        meta = pmt.to_python(pmt.car(r.out("out")[0]))
        assert meta["codec_id"] == 8 and meta["bcr"] == meta["rho"] > 0


def _vlf_rx_pdu(backend):
    from gnuradio.semcom.codecs.vlf import VlfCodec

    e = VlfCodec(models_dir=backend).encode(IMG)
    meta = dict(codec_id=8, seq=0, snr_est_db=20.0, noise_var=0.01, equalizer="zf",
                side_info=u8(np.frombuffer(e.side_info, np.uint8)))
    return meta, e.symbols


def case_vlf_decoders(vlf_backend):
    meta, y = _vlf_rx_pdu(vlf_backend)
    for name, blk in (("vlf_caption_decoder", semcom.vlf_caption_decoder(backend=str(vlf_backend))),
                      ("vlf_image_decoder", semcom.vlf_image_decoder(backend=str(vlf_backend), steps=2))):
        with Rig(blk, ["in"], ["out"]) as r:
            n = y.size
            bad = NOT_PDU + [("u8 vector", pdu(meta, u8(np.ones(n)))), ("f32 vector", pdu(meta, pmt.init_f32vector(
                n, [1.0] * n))), ("nil vector", pdu(meta, pmt.PMT_NIL))]
            bad += bad_meta(meta, ["snr_est_db", "codec_id", "seq", "side_info", "noise_var", "equalizer"], c32(y))
            bad.append(("no snr_est_db", pdu({k: v for k, v in meta.items() if k != "snr_est_db"}, c32(y))))

            def statuses():
                return [pmt.to_python(pmt.car(m)).get("status") for m in r.out("out")]

            fuzz(name, blk, "in", bad, pdu(meta, c32(y)), lambda: "ok" in statuses(), blk.dropped)
            # NaN and empty payloads are not malformed: they are answered with a status of their own
            b = blk.to_basic_block()
            b._post(pmt.intern("in"), pdu(meta, c32(np.full(n, np.nan))))
            b._post(pmt.intern("in"), pdu(meta, c32([])))
            assert wait_until(lambda: statuses()[-2:] == ["nonfinite_symbols", "no_symbols"]), statuses()
            assert blk.decoded == 1


def case_vlf_sink():
    snk = semcom.vlf_sink(branches="caption")
    with Rig(snk, ["caption", "image"], ["ack"]) as r:
        meta = dict(seq=1, status="ok", snr_est_db=3.0, caption="a red circle")
        bad = NOT_PDU + bad_meta(meta, ["seq"], u8([])) + [("caption=5", pdu(dict(meta, caption=5), u8([])))]
        fuzz("vlf_sink", snk, "caption", bad, pdu(meta, u8([])), lambda: len(r.out("ack")) == 1, snk.dropped)
        assert snk.rows[0]["caption"] == "a red circle"
    snk = semcom.vlf_sink(branches="image")
    with Rig(snk, ["caption", "image"], ["ack"]) as r:
        meta = dict(seq=2, status="ok", height=SIZE, width=SIZE)
        bad = NOT_PDU + bad_image(meta) + bad_meta(meta, ["seq", "height"], u8(IMG))
        fuzz("vlf_sink", snk, "image", bad, good_image(**meta), lambda: len(r.out("ack")) == 1, snk.dropped)
        assert snk.rows[0]["image"].shape == (SIZE, SIZE, 3)
    snk = semcom.vlf_sink(branches="caption", lost_after_s=0.3)
    with Rig(snk, ["caption", "image", "tx", "rx"], ["ack"]) as r:
        bad = NOT_PDU + bad_meta(dict(seq=4), ["seq"], c32([1])) + [("no seq", pdu({}, c32([1])))]
        fuzz("vlf_sink", snk, "tx", bad, pdu(dict(seq=4), c32([1])), lambda: snk.lost == 1, snk.dropped)
        assert wait_until(lambda: len(r.out("ack")) == 1)  # the lost frame is acknowledged
    snk = semcom.vlf_sink(branches="caption", lost_after_s=600)  # no timer fires during the test
    with Rig(snk, ["caption", "image", "tx", "rx"], ["ack"]) as r:
        snk.to_basic_block()._post(pmt.intern("tx"), pdu(dict(seq=5), c32([1])))
        assert wait_until(lambda: 5 in snk._timers)
        bad = NOT_PDU + bad_meta(dict(seq=5), ["seq"], c32([1]))
        fuzz("vlf_sink", snk, "rx", bad, pdu(dict(seq=5), c32([1])), lambda: 5 not in snk._timers, snk.dropped)
        assert snk.lost == 0


def _mtsc_item():
    from gnuradio.semcom.datasets import multitask

    return multitask.item(1_000_003)


def case_mtsc_source():
    src = semcom.mtsc_source("multitask:val:1", repeat=100, pace="ack", timeout_s=60, linger_s=-1)
    with Rig(src, ["next"], ["out"]):
        assert wait_until(lambda: src.sent == 1)
        bad = NOT_PDU + [("c32 pdu", pdu({}, c32([1])))]
        fuzz("mtsc_source", src, "next", bad, pmt.PMT_T, lambda: src.sent == len(bad) + 2, src.dropped, n_unusable=0)


def case_mtsc_encoder(mtsc_models):
    it = _mtsc_item()
    good = semcom.mtsc_pdu(it.image, it.question, it.audio.audio, it.video.frames, dict(item_id=7))
    enc = semcom.mtsc_encoder(models=mtsc_models)
    with Rig(enc, ["in", "csi"], ["out", "rejected"]) as r:
        bad = NOT_PDU + bad_image({})
        bad += [(name, semcom.mtsc_pdu(*args)) for name, args in (
            ("empty question", (it.image, "", it.audio.audio, it.video.frames)),
            ("silent audio", (it.image, it.question, np.zeros(16000), it.video.frames)),
            ("NaN audio", (it.image, it.question, np.full(16000, np.nan), it.video.frames)))]
        d = pmt.car(good)
        bad += [("no audio", pmt.cons(pmt.dict_delete(d, pmt.intern("audio")), pmt.cdr(good))),
                ("video u8 short", pmt.cons(pmt.dict_add(d, pmt.intern("video"), u8(np.zeros(10))), pmt.cdr(good))),
                ("question=5", pmt.cons(pmt.dict_add(d, pmt.intern("question"), pmt.from_long(5)), pmt.cdr(good)))]
        fuzz("mtsc_encoder", enc, "in", bad, good, lambda: len(r.out("out")) == 1, enc.dropped)
        assert enc.failed == len(bad) and len(r.out("rejected")) == len(bad)
        rej = pmt.to_python(pmt.car(r.out("rejected")[-1]))
        assert rej["status"] == "bad_input" and "question" in rej["reason"]
        meta = pmt.to_python(pmt.car(r.out("out")[0]))
        assert meta["codec_id"] == 12 and meta["item_id"] == 7 and meta["channel_uses"] <= 1024
        good_csi = pdu(dict(snr_est_db=3.5), c32(np.ones(4)))
        bad = NOT_PDU + bad_meta({}, ["snr_est_db"], c32(np.ones(4)))
        fuzz("mtsc_encoder", enc, "csi", bad, good_csi, lambda: enc.tx_snr_db == 3.5, enc.dropped)


def case_mtsc_decoder(mtsc_models):
    from gnuradio.semcom.codecs.mtsc import TASKS

    c = semcom.mtsc_codec(mtsc_models)
    it = _mtsc_item()
    e = c.encode(c.prepare(it.image, it.question, it.audio.audio, it.video.frames), 10.0)
    meta = dict(codec_id=12, seq=0, snr_est_db=20.0, noise_var=0.01, equalizer="zf",
                side_info=u8(np.frombuffer(e.side_info, np.uint8)))
    dec = semcom.mtsc_decoder(models=mtsc_models)
    with Rig(dec, ["in"], ["out"] + list(TASKS)) as r:
        n = e.symbols.size
        bad = NOT_PDU + [("u8 vector", pdu(meta, u8(np.ones(n)))), ("nil vector", pdu(meta, pmt.PMT_NIL))]
        bad += bad_meta(meta, ["snr_est_db", "codec_id", "seq", "side_info", "noise_var", "equalizer"], c32(e.symbols))

        def statuses():
            return [pmt.to_python(pmt.car(m)).get("status") for m in r.out("vqa")]

        fuzz("mtsc_decoder", dec, "in", bad, pdu(meta, c32(e.symbols)), lambda: "ok" in statuses(), dec.dropped)
        assert len(r.out("out")) == len(TASKS) and len(r.out("reconstruction")) == 1
        b = dec.to_basic_block()
        b._post(pmt.intern("in"), pdu(meta, c32(np.full(n, np.nan))))
        b._post(pmt.intern("in"), pdu(meta, c32([])))
        b._post(pmt.intern("in"), pdu(dict(meta, side_info=u8([1, 2])), c32(e.symbols)))
        assert wait_until(lambda: statuses()[-3:] == ["nonfinite_symbols", "no_symbols", "bad_side_info"]), statuses()
        assert dec.decoded == 1 and len(r.out("out")) == 4 * len(TASKS)


def case_mtsc_sink():
    snk = semcom.mtsc_sink(tasks="vqa,reconstruction")
    with Rig(snk, ["in", "tx", "rx", "rejected"], ["ack"]) as r:
        meta = dict(seq=1, status="ok", snr_est_db=3.0, task="vqa", text="two", latency_s=0.1)
        bad = NOT_PDU + bad_meta(meta, ["seq"], u8([])) + [("text=5", pdu(dict(meta, text=5), u8([]))),
                                                          ("task=x", pdu(dict(meta, task="x"), u8([])))]
        snk.to_basic_block()._post(pmt.intern("in"), good_image(seq=1, status="ok", task="reconstruction"))
        fuzz("mtsc_sink", snk, "in", bad, pdu(meta, u8([])), lambda: len(r.out("ack")) == 1, snk.dropped)
        assert snk.rows[0]["vqa"] == "two" and snk.rows[0]["reconstruction"].shape == (SIZE, SIZE, 3)
        rej = pdu(dict(seq=2, item_id=2, status="bad_input", reason="empty question"), pmt.PMT_NIL)
        fuzz("mtsc_sink", snk, "rejected", NOT_PDU, rej, lambda: len(r.out("ack")) == 2, snk.dropped)
        assert snk.rows[1]["vqa_status"] == "bad_input" and snk.rows[1]["reason"] == "empty question"


CASES = {  # case → the block classes it covers
    case_ofdm_tx: ("ofdm_tx", "ofdm_framer", "burst_source"),
    case_semantic_encoder: ("semantic_encoder",),
    case_semantic_decoder: ("semantic_decoder",),
    case_image_sink: ("image_sink",),
    case_link_monitor: ("link_monitor",),
    case_image_source: ("image_source",),
    case_semantic_guidance: ("semantic_guidance",),
    case_question_gate: ("question_gate",),
    case_device_uplink: ("device_uplink",),
    case_qt_image_view: ("qt_image_view",),
    case_qt_rx_readout: ("qt_rx_readout",),
    case_vlf_encoder: ("vlf_encoder",),
    case_vlf_decoders: ("vlf_caption_decoder", "vlf_image_decoder"),
    case_vlf_sink: ("vlf_sink",),
    case_mtsc_source: ("mtsc_source",),
    case_mtsc_encoder: ("mtsc_encoder",),
    case_mtsc_decoder: ("mtsc_decoder",),
    case_mtsc_sink: ("mtsc_sink",),
}
COVERED = {name for names in CASES.values() for name in names}


def _block_classes():
    from gnuradio.semcom import blocks as b

    names = list(b.__all__) + list(b._QT_NAMES)
    return {n: getattr(b, n) for n in names if inspect.isclass(getattr(b, n))
            and issubclass(getattr(b, n), (gr.basic_block, gr.hier_block2))}


def _has_message_inputs(cls):
    for k in inspect.getmro(cls):
        if k.__module__.startswith("gnuradio.semcom") and "__init__" in vars(k):
            src = inspect.getsource(vars(k)["__init__"])
            if "message_port_register_in" in src or "message_port_register_hier_in" in src:
                return True
    return False


def test_every_block_with_message_inputs_is_covered():
    classes = _block_classes()
    with_inputs = {n for n, c in classes.items() if _has_message_inputs(c)}
    assert with_inputs, "no block with message inputs found"
    assert not with_inputs - COVERED, f"blocks with message inputs but no fuzz case: {sorted(with_inputs - COVERED)}"
    # the GRC blocks with a message input: their class must be covered too
    for path in sorted((ROOT / "grc").glob("*.block.yml")):
        data = yaml.safe_load(path.read_text())
        if not any(p.get("domain") == "message" for p in data.get("inputs") or []):
            continue
        make = data["templates"]["make"]
        cls = [n for n in classes if f"semcom.{n}(" in make]
        assert cls and set(cls) <= COVERED, f"{path.name}: message inputs, class {cls} not covered"


@pytest.mark.parametrize("case", list(CASES), ids=[c.__name__[5:] for c in CASES])
def test_malformed_messages(case, request):
    params = inspect.signature(case).parameters
    case(*(request.getfixturevalue(p) for p in params))


def test_rate_limit_memory_is_bounded(monkeypatch):
    """Rejections whose reasons quote varying values are all counted, but the rate limit keeps
    per-reason counts of the MAX_REASONS most recent reasons only (bounded memory)."""
    import types

    from gnuradio.semcom.blocks import _guard

    lines = []
    monkeypatch.setattr(_guard, "gr", types.SimpleNamespace(log=types.SimpleNamespace(error=lines.append)))

    class Block(_guard.MessageGuard):
        pass

    b = Block()
    n = 3 * _guard.MAX_REASONS
    for k in range(n):
        _guard.reject(b, "in", f"metadata 'seq' = {70000 + k} outside -1…65535")
        _guard.reject(b, "in", "the same reason")  # the most recent one: never forgotten
    assert b.dropped() == 2 * n
    assert len(b.__dict__["_guard_seen"]) == _guard.MAX_REASONS
    assert sum("the same reason" in line for line in lines) == _guard.LOG_FIRST + n // _guard.LOG_EVERY
