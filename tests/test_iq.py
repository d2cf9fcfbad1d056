"""SigMF IQ recording/replay: the numpy core (semcom.iq) and the GNU Radio sink/source blocks."""
import json
import os
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest

from gnuradio.semcom import iq
from gnuradio.semcom.iq import SigMFRecordingError

sigmf = pytest.importorskip("sigmf")


def cnoise(rng, n, scale=0.5):
    return (scale * (rng.standard_normal(n) + 1j * rng.standard_normal(n))).astype(np.complex64)


def load_meta(base):
    with open(f"{base}.sigmf-meta") as fp:
        return json.load(fp)


# ------------------------------------------------------------------------------------------ numpy core
def test_numpy_round_trip_with_annotations(tmp_path, rng):
    x = cnoise(rng, 5000)
    anns = [iq.frame_annotation(10, 400, {"semcom_seq": 7, "semcom_codec": np.int64(2)}),
            {"sample_start": 1000, "sample_count": 300, "fields": {"seq": 8}, "comment": "second"},
            (2000, 50)]
    meta_path, data_path = iq.write_sigmf(tmp_path / "rec", x, 2e6, 915e6, annotations=anns,
                                          description="unit test", hw="simulated")
    assert meta_path.name == "rec.sigmf-meta" and data_path.name == "rec.sigmf-data"
    assert data_path.stat().st_size == 8 * len(x)

    for p in (tmp_path / "rec", meta_path, data_path):  # base, meta or data path all work
        y, meta = iq.read_sigmf(p)
        assert y.dtype == np.complex64 and np.array_equal(y, x)
    g = meta.get_global_info()
    assert g["core:datatype"] == "cf32_le" and g["core:sample_rate"] == 2e6
    assert g["core:description"] == "unit test" and g["core:hw"] == "simulated"
    assert g["core:version"] == sigmf.__specification__
    assert g["core:sha512"] == sigmf.hashing.calculate_sha512(filename=data_path)
    assert {"name": "semcom", "version": iq.sigmf_io.EXTENSION_VERSION, "optional": True} in g["core:extensions"]
    (cap,) = meta.get_captures()
    assert cap["core:sample_start"] == 0 and cap["core:frequency"] == 915e6 and "core:datetime" in cap

    a = meta.get_annotations()
    assert [(d["core:sample_start"], d["core:sample_count"]) for d in a] == [(10, 400), (1000, 300), (2000, 50)]
    assert all(d["core:label"] == "semcom frame" for d in a)
    assert a[0]["semcom:seq"] == 7 and a[0]["semcom:codec"] == 2 and a[1]["core:comment"] == "second"
    assert iq.frames(meta) == [(10, 400, {"seq": 7, "codec": 2}), (1000, 300, {"seq": 8}), (2000, 50, {})]

    # interoperable: the reference sigmf reader opens, hashes and validates it
    sf = sigmf.fromfile(str(meta_path))
    sf.validate()
    assert np.array_equal(sf.read_samples(), x)


def test_numpy_ci16_read_scales_by_1_over_32768(tmp_path, rng):
    ints = rng.integers(-32768, 32768, size=(300, 2)).astype("<i2")
    (tmp_path / "c.sigmf-data").write_bytes(ints.tobytes())
    sf = sigmf.SigMFFile(global_info={"core:datatype": "ci16_le", "core:sample_rate": 1e6, "core:extensions": [
        {"name": "semcom", "version": "0.1.0", "optional": True}]})
    sf.set_data_file(tmp_path / "c.sigmf-data")  # records core:sha512
    sf.add_capture(0, metadata={"core:frequency": 1e9})
    sf.add_annotation(5, 20, metadata={"core:label": "semcom frame", "semcom:seq": 1})
    sf.tofile(tmp_path / "c")

    y, meta = iq.read_sigmf(tmp_path / "c")
    assert y.dtype == np.complex64 and len(y) == 300
    ref = (ints[:, 0].astype(np.float32) / 32768 + 1j * (ints[:, 1].astype(np.float32) / 32768)).astype(np.complex64)
    assert np.array_equal(y, ref)
    assert iq.frames(meta) == [(5, 20, {"seq": 1})]

    # write_sigmf can produce ci16_le too (quantised to 1/32768)
    x = cnoise(rng, 100, 0.3)
    iq.write_sigmf(tmp_path / "w", x, 1e6, datatype="ci16_le")
    y2, m2 = iq.read_sigmf(tmp_path / "w")
    assert m2.get_global_field("core:datatype") == "ci16_le" and np.abs(y2 - x).max() <= 1 / 32768


def test_write_rejects_bad_input(tmp_path, rng):
    x = cnoise(rng, 10)
    with pytest.raises(SigMFRecordingError, match="datatype 'ri8'"):
        iq.write_sigmf(tmp_path / "a", x, 1e6, datatype="ri8")
    with pytest.raises(ValueError, match="after the last"):
        iq.write_sigmf(tmp_path / "a", x, 1e6, annotations=[(5, 6)])
    with pytest.raises(ValueError, match="sample_rate"):
        iq.write_sigmf(tmp_path / "a", x, 0)
    iq.write_sigmf(tmp_path / "a", x, 1e6)
    with pytest.raises(FileExistsError):
        iq.write_sigmf(tmp_path / "a", x, 1e6, overwrite=False)


def test_missing_files_name_the_file(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match=r"nothing\.sigmf-meta"):
        iq.read_sigmf(tmp_path / "nothing")
    iq.write_sigmf(tmp_path / "r", cnoise(rng, 10), 1e6)
    os.remove(tmp_path / "r.sigmf-data")
    with pytest.raises(FileNotFoundError, match=r"r\.sigmf-data"):
        iq.read_sigmf(tmp_path / "r")
    iq.write_sigmf(tmp_path / "m", cnoise(rng, 10), 1e6)
    os.remove(tmp_path / "m.sigmf-meta")
    with pytest.raises(FileNotFoundError, match=r"m\.sigmf-meta"):
        iq.read_sigmf(tmp_path / "m.sigmf-data")


def test_unsupported_datatype_and_bad_json(tmp_path, rng):
    iq.write_sigmf(tmp_path / "r", cnoise(rng, 10), 1e6)
    md = load_meta(tmp_path / "r")
    md["global"]["core:datatype"] = "rf32_le"
    (tmp_path / "r.sigmf-meta").write_text(json.dumps(md))
    with pytest.raises(SigMFRecordingError, match=r"datatype 'rf32_le' in .*r\.sigmf-meta") as e:
        iq.read_sigmf(tmp_path / "r")
    assert e.value.path.endswith("r.sigmf-meta")
    (tmp_path / "r.sigmf-meta").write_text("{not json")
    with pytest.raises(SigMFRecordingError, match=r"r\.sigmf-meta is not valid SigMF JSON"):
        iq.read_sigmf(tmp_path / "r")


def test_corrupted_data_is_detected(tmp_path, rng):
    x = cnoise(rng, 200)
    _, data = iq.write_sigmf(tmp_path / "r", x, 1e6, annotations=[(100, 100)])
    raw = data.read_bytes()

    data.write_bytes(raw[:-3])  # not a whole number of samples
    with pytest.raises(SigMFRecordingError, match=r"r\.sigmf-data is 1597 bytes, not a whole number of 8-byte"):
        iq.read_sigmf(tmp_path / "r")

    data.write_bytes(raw[:-80])  # whole samples, but the last annotation runs past the end
    with pytest.raises(SigMFRecordingError, match=r"r\.sigmf-data holds 190 samples .* ends at sample 200"):
        iq.read_sigmf(tmp_path / "r")

    bad = bytearray(raw)
    bad[123] ^= 0x40  # same size, one bit flipped
    data.write_bytes(bytes(bad))
    with pytest.raises(SigMFRecordingError, match=r"checksum mismatch: sha512 of .*r\.sigmf-data") as e:
        iq.read_sigmf(tmp_path / "r")
    assert e.value.path.endswith("r.sigmf-data")
    y, _ = iq.read_sigmf(tmp_path / "r", skip_checksum=True)
    assert len(y) == 200 and not np.array_equal(y, x)


def test_empty_recording(tmp_path):
    iq.write_sigmf(tmp_path / "e", np.zeros(0, np.complex64), 1e6)
    y, meta = iq.read_sigmf(tmp_path / "e")
    assert y.dtype == np.complex64 and len(y) == 0 and meta.get_annotations() == []


# ------------------------------------------------------------------------------------------ GNU Radio blocks
pmt = pytest.importorskip("pmt")
from gnuradio import blocks, gr, pdu  # noqa: E402
from gnuradio import semcom  # noqa: E402


def tag(offset, key, value):
    return gr.python_to_tag((offset, pmt.intern(key), pmt.to_pmt(value), pmt.intern("test")))


def run_finite(tb, timeout=20.0, max_noutput_items=None):
    """tb.run() that cannot hang the test suite."""
    tb.start(max_noutput_items) if max_noutput_items else tb.start()
    t = threading.Thread(target=tb.wait, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        tb.stop()
        tb.wait()
        pytest.fail(f"flowgraph did not end within {timeout} s")


# start, length, seq, codec: bursts cover the whole 7000-sample stream, as in a TX output
BURSTS = [(0, 700, 1, 0), (700, 1500, 2, 3), (2200, 333, 3, 0), (2533, 2467, 4, 1), (5000, 2000, 5, 2)]


def burst_tags():
    tags = []
    for start, length, seq, codec in BURSTS:
        tags += [tag(start, "packet_len", length), tag(start, "semcom_seq", seq), tag(start, "semcom_codec", codec),
                 tag(start, "other_tag", 1.5)]
    return tags + [tag(900, "semcom_seq", 99)]  # a field tag away from any burst start: ignored


def record(path, x, tags=(), max_noutput_items=None, **kw):
    tb = gr.top_block()
    src = blocks.vector_source_c(x.tolist(), False, 1, list(tags))
    snk = semcom.sigmf_sink(str(path), 1e6, 2.45e9, **kw)
    tb.connect(src, snk)
    run_finite(tb, max_noutput_items=max_noutput_items)
    return snk


def test_sink_records_tagged_stream(tmp_path, rng):
    x = cnoise(rng, 7000)
    snk = record(tmp_path / "rec", x, burst_tags(), max_noutput_items=256, description="tx bursts")
    assert snk.nsamples() == len(x)
    raw = np.fromfile(tmp_path / "rec.sigmf-data", dtype="<c8")
    assert np.array_equal(raw, x)  # bit-exact

    md = load_meta(tmp_path / "rec")
    assert md["global"]["core:sha512"] == sigmf.hashing.calculate_sha512(filename=tmp_path / "rec.sigmf-data")
    assert md["global"]["core:description"] == "tx bursts" and md["captures"][0]["core:frequency"] == 2.45e9
    anns = md["annotations"]
    assert len(anns) == len(BURSTS)
    for a, (start, length, seq, codec) in zip(anns, BURSTS):
        assert a == {"core:sample_start": start, "core:sample_count": length, "core:label": "semcom frame",
                     "semcom:seq": seq, "semcom:codec": codec}
    y, meta = iq.read_sigmf(tmp_path / "rec")
    assert np.array_equal(y, x) and iq.frames(meta) == [(s, n, {"seq": q, "codec": c}) for s, n, q, c in BURSTS]


def test_sink_untagged_stream_and_no_length_key(tmp_path, rng):
    x = cnoise(rng, 3000)
    record(tmp_path / "plain", x)
    y, meta = iq.read_sigmf(tmp_path / "plain")
    assert np.array_equal(y, x) and meta.get_annotations() == []
    record(tmp_path / "nokey", x, burst_tags(), length_tag_key="")
    y, meta = iq.read_sigmf(tmp_path / "nokey")
    assert np.array_equal(y, x) and meta.get_annotations() == []


def test_sink_meta_exists_from_construction_and_truncated_burst(tmp_path, rng):
    snk = semcom.sigmf_sink(str(tmp_path / "early.sigmf-meta"), 1e6, 0)  # extension is stripped
    y, _ = iq.read_sigmf(tmp_path / "early")
    assert len(y) == 0 and snk.nsamples() == 0

    x = cnoise(rng, 1000)
    record(tmp_path / "cut", x, [tag(0, "packet_len", 400), tag(400, "packet_len", 900), tag(400, "semcom_seq", 2)])
    y, meta = iq.read_sigmf(tmp_path / "cut")
    assert np.array_equal(y, x)
    a = meta.get_annotations()
    assert [(d["core:sample_start"], d["core:sample_count"]) for d in a] == [(0, 400), (400, 600)]
    assert a[1]["semcom:truncated"] is True and a[1]["semcom:seq"] == 2 and "semcom:truncated" not in a[0]


def test_sink_bad_directory_fails_at_construction(tmp_path):
    with pytest.raises(OSError):
        semcom.sigmf_sink(str(tmp_path / "no" / "such" / "dir" / "rec"), 1e6, 0)


def tag_list(tags):
    return sorted((t.offset, pmt.symbol_to_string(t.key), pmt.to_python(t.value)) for t in tags)


def expected_tags(period=None, n=None):
    out = []
    for cycle in range(1 if period is None else -(-n // period)):
        base = 0 if period is None else cycle * period
        for start, length, seq, codec in BURSTS:
            if period is None or base + start < n:
                out += [(base + start, "packet_len", length), (base + start, "semcom_codec", codec),
                        (base + start, "semcom_seq", seq)]
    return sorted(out)


def test_source_replays_bit_exact_with_length_tags(tmp_path, rng):
    x = cnoise(rng, 7000)
    record(tmp_path / "rec", x, burst_tags())
    tb = gr.top_block()
    src = semcom.sigmf_source(str(tmp_path / "rec.sigmf-meta"))
    assert src.datatype == "cf32_le" and src.sample_rate == 1e6 and src.nsamples == len(x)
    vs = blocks.vector_sink_c()
    to_pdu = pdu.tagged_stream_to_pdu(gr.types.complex_t, "packet_len")  # a tagged-stream consumer
    dbg = blocks.message_debug()
    tb.connect(src, vs)
    tb.connect(src, to_pdu)
    tb.msg_connect(to_pdu, "pdus", dbg, "store")
    run_finite(tb)
    y = np.asarray(vs.data(), np.complex64)
    assert np.array_equal(y, x)
    assert tag_list(vs.tags()) == expected_tags()
    assert dbg.num_messages() == len(BURSTS)
    for k, (start, length, seq, codec) in enumerate(BURSTS):
        msg = dbg.get_message(k)
        meta = pmt.to_python(pmt.car(msg))
        assert meta["semcom_seq"] == seq and meta["semcom_codec"] == codec
        assert np.array_equal(np.asarray(pmt.c32vector_elements(pmt.cdr(msg)), np.complex64),
                              x[start:start + length])


def test_source_repeat_and_no_tags(tmp_path, rng):
    x = cnoise(rng, 7000)
    record(tmp_path / "rec", x, burst_tags())
    n = 17500
    tb = gr.top_block()
    src = semcom.sigmf_source(str(tmp_path / "rec"), repeat=True)
    head = blocks.head(gr.sizeof_gr_complex, n)
    vs = blocks.vector_sink_c()
    tb.connect(src, head, vs)
    run_finite(tb)
    y = np.asarray(vs.data(), np.complex64)
    assert np.array_equal(y, np.tile(x, 3)[:n])
    assert tag_list(vs.tags()) == expected_tags(period=len(x), n=n)

    tb = gr.top_block()
    src = semcom.sigmf_source(str(tmp_path / "rec"), length_tag_key="")
    vs = blocks.vector_sink_c()
    tb.connect(src, vs)
    run_finite(tb)
    assert np.array_equal(np.asarray(vs.data(), np.complex64), x) and vs.tags() == []


def test_source_ci16(tmp_path, rng):
    x = cnoise(rng, 1000, 0.3)
    iq.write_sigmf(tmp_path / "c", x, 1e6, datatype="ci16_le", annotations=[(100, 200, {"seq": 5})])
    ref, _ = iq.read_sigmf(tmp_path / "c")
    tb = gr.top_block()
    src = semcom.sigmf_source(str(tmp_path / "c"))
    vs = blocks.vector_sink_c()
    tb.connect(src, vs)
    run_finite(tb)
    assert np.array_equal(np.asarray(vs.data(), np.complex64), ref)
    assert tag_list(vs.tags()) == [(100, "packet_len", 200), (100, "semcom_seq", 5)]


def test_source_errors(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match=r"gone\.sigmf-meta"):
        semcom.sigmf_source(str(tmp_path / "gone"))
    _, data = iq.write_sigmf(tmp_path / "r", cnoise(rng, 100), 1e6)
    bad = bytearray(data.read_bytes())
    bad[0] ^= 1
    data.write_bytes(bytes(bad))
    with pytest.raises(SigMFRecordingError, match=r"checksum mismatch: sha512 of .*r\.sigmf-data"):
        semcom.sigmf_source(str(tmp_path / "r"))
    semcom.sigmf_source(str(tmp_path / "r"), skip_checksum=True)  # explicitly allowed
    data.write_bytes(bytes(bad[:-4]))
    with pytest.raises(SigMFRecordingError, match=r"r\.sigmf-data is 796 bytes"):
        semcom.sigmf_source(str(tmp_path / "r"), skip_checksum=True)
    iq.write_sigmf(tmp_path / "e", np.zeros(0, np.complex64), 1e6)
    with pytest.raises(SigMFRecordingError, match="no samples"):
        semcom.sigmf_source(str(tmp_path / "e"))


def test_ofdm_tx_bursts_record_and_replay(tmp_path, rng):
    """The real TX output: record it, check the annotations against the TX's own tags, replay it."""
    tb = gr.top_block()
    tx = semcom.ofdm_tx()
    ref = blocks.vector_sink_c()
    snk = semcom.sigmf_sink(str(tmp_path / "tx"), 1e6, 2.4e9, description="ofdm_tx")
    tb.connect(tx, ref)
    tb.connect(tx, snk)
    tb.start()
    for seq in range(3):
        m = pmt.dict_add(pmt.make_dict(), pmt.intern("seq"), pmt.from_long(10 + seq))
        m = pmt.dict_add(m, pmt.intern("codec_id"), pmt.from_long(4))
        tx.framer.to_basic_block()._post(pmt.intern("in"), pmt.cons(m, pmt.init_c32vector(96, cnoise(rng, 96))))
    t0 = time.time()
    while time.time() - t0 < 10 and len([t for t in ref.tags() if pmt.symbol_to_string(t.key) == "packet_len"]) < 3:
        time.sleep(0.02)
    time.sleep(0.1)
    tb.stop()
    tb.wait()
    x = np.asarray(ref.data(), np.complex64)
    len_tags = sorted((t.offset, pmt.to_long(t.value)) for t in ref.tags() if pmt.symbol_to_string(t.key) == "packet_len")
    assert len(len_tags) == 3

    y, meta = iq.read_sigmf(tmp_path / "tx")
    assert np.array_equal(y, x)
    fr = iq.frames(meta)
    assert [(s, n) for s, n, _ in fr] == len_tags
    assert [f["seq"] for _, _, f in fr] == [10, 11, 12] and all(f["codec"] == 4 for _, _, f in fr)

    tb = gr.top_block()
    src = semcom.sigmf_source(str(tmp_path / "tx"))
    vs = blocks.vector_sink_c()
    tb.connect(src, vs)
    run_finite(tb)
    assert np.array_equal(np.asarray(vs.data(), np.complex64), x)
    want = sorted((t.offset, pmt.symbol_to_string(t.key), pmt.to_python(t.value)) for t in ref.tags()
                  if pmt.symbol_to_string(t.key) in ("packet_len", "semcom_seq", "semcom_codec"))
    got = [t for t in tag_list(vs.tags()) if t[1] in ("packet_len", "semcom_seq", "semcom_codec")]
    assert got == want


# ------------------------------------------------------------------------------------------ GRC
@pytest.mark.skipif(shutil.which("grcc") is None, reason="grcc not installed")
def test_grc_blocks_compile(tmp_path, repo_root):
    grc = tmp_path / "t.grc"
    grc.write_text(f"""options:
  parameters: {{id: sigmf_loop, generate_options: no_gui, output_language: python, title: t}}
  states: {{coordinate: [8, 8], rotation: 0, state: enabled}}
blocks:
- name: samp_rate
  id: variable
  parameters: {{value: '1e6'}}
  states: {{coordinate: [200, 8], rotation: 0, state: enabled}}
- name: src
  id: semcom_sigmf_source
  parameters: {{path: "'{tmp_path}/in.sigmf-meta'", repeat: 'False', length_tag_key: packet_len, skip_checksum: 'False'}}
  states: {{coordinate: [8, 100], rotation: 0, state: enabled}}
- name: snk
  id: semcom_sigmf_sink
  parameters: {{path_base: "'{tmp_path}/out'", sample_rate: samp_rate, center_freq: '2.4e9', length_tag_key: packet_len,
    description: from grc, hw: ''}}
  states: {{coordinate: [300, 100], rotation: 0, state: enabled}}
connections:
- [src, '0', snk, '0']
metadata: {{file_format: 1}}
""")
    env = dict(os.environ, GRC_BLOCKS_PATH=str(repo_root / "grc"))
    r = subprocess.run(["grcc", str(grc), "-o", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    out = (tmp_path / "sigmf_loop.py")
    assert r.returncode == 0 and out.is_file(), r.stdout + r.stderr
    code = out.read_text()
    assert "from gnuradio import semcom" in code
    assert "semcom.sigmf_source(" in code and "semcom.sigmf_sink(" in code

    # and the generated flowgraph runs: copy in.sigmf -> out.sigmf
    x = cnoise(np.random.default_rng(1), 500)
    iq.write_sigmf(tmp_path / "in", x, 1e6, annotations=[(0, 200, {"seq": 1}), (200, 300, {"seq": 2})])
    ns = {}
    exec(compile(code, str(out), "exec"), ns)  # noqa: S102  (defines the top block class; main() is not run)
    tb = ns["sigmf_loop"]()
    run_finite(tb)
    y, meta = iq.read_sigmf(tmp_path / "out")
    assert np.array_equal(y, x) and iq.frames(meta) == [(0, 200, {"seq": 1}), (200, 300, {"seq": 2})]
    assert meta.get_global_field("core:description") == "from grc"
