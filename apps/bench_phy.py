#!/usr/bin/env python3
"""PHY throughput benchmark: semantic OFDM TX+RX vs GNU Radio's stock ofdm_tx/ofdm_rx.

Both chains run in this process, one after the other, ``--rounds`` times interleaved
(best round of each is reported), on the same kind of flowgraph:

    source → TX → gap of --gap samples after each burst (digital.burst_shaper_cc)
           → blocks.tag_gate → semcom.awgn_channel(--snr) → RX → count frames

* Same frames: ``--frame-symbols`` OFDM symbols per frame for both (preamble and headers
  included), same FFT size, CP and carrier layout (``--profile``; the stock blocks get the
  profile's carriers and pilots), hence the same samples per frame and in total. The stock
  TX output is scaled by 1/√N so that both use the project's SNR convention (Es = 1 per
  subcarrier); the tag gate keeps the stock TX's length tags from reaching the stock RX's
  header parser (the stock QA tests feed its RX untagged samples).
* Stock: bytes from a vector source in ``packet_len``-tagged packets, BPSK header and
  payload, CRC-32; a packet counts when it arrives with the right bytes.
* Semantic: pre-built PDUs of unit-power feature symbols, published by a paced source that
  keeps at most ``--window`` frames in flight (a real source paces; flooding the TX would
  also move the framing out of the timed window); a frame counts when its symbol NMSE is
  below -20 dB (at the default 30 dB SNR every frame is near -30 dB).
* Rate: steady state, samples of the frames delivered after the first one over the time
  from the first to the last delivery (flowgraph start-up excluded for both); the rate from
  the start is printed too, and the same samples per CPU second of the process (all
  threads: the cost, independent of how many cores the chain can occupy). A frame that
  never arrives ends the run after 2 s without news; it is counted as lost, not timed.

The stock chain moves bits through CRC, scrambling, constellation mapping, header parsing,
a decision-feedback equaliser and demapping; the semantic chain carries analog symbols
behind an RM-coded header and equalises with channel tracking. Last output lines:
``cpu_efficiency_vs_stock_ofdm: <ratio>`` (samples per CPU second, semantic over stock) and
``phy_speedup_vs_stock_ofdm: <ratio>`` (steady-state MS/s, semantic over stock).
"""
import argparse
import time

import numpy as np
import pmt
from gnuradio import blocks, digital, gr, pdu

from gnuradio import semcom
from gnuradio.semcom.phy import modem
from gnuradio.semcom.blocks.grlog import gr_log_option

LEN_KEY = "packet_len"
DRAIN_S = 0.5  # after the count is reached: PDUs still on their way to the store (not timed)
# Polling period of the harness threads. They share the interpreter lock with the semantic
# chain's Python blocks: polling every millisecond costs that chain a third of its rate.
POLL_S = 0.01


def stock_packet_bytes(p, frame_symbols: int) -> int:
    """Stock packet size whose frame (2 sync + 1 header symbol + BPSK payload with CRC-32) has
    exactly ``frame_symbols`` OFDM symbols."""
    bits = (frame_symbols - 3) * p.n_data
    if bits % 8:
        raise ValueError(f"{frame_symbols} symbols of {p.n_data} BPSK carriers are not whole bytes")
    n = bits // 8 - 4
    if not 1 <= n <= 4095:
        raise ValueError(f"--frame-symbols {frame_symbols} gives a stock packet of {n} bytes (1…4095 possible)")
    return n


def semantic_payload_len(p, frame_symbols: int) -> int:
    """Feature symbols that fill a semantic frame of ``frame_symbols`` OFDM symbols."""
    n = (frame_symbols - 2 - modem.n_header_symbols(p)) * p.n_data
    if n < 1:
        raise ValueError(f"--frame-symbols {frame_symbols} leaves no room for a semantic payload")
    return n


class PacedPdus(semcom.threaded_source):
    """Publishes a list of PDUs, keeping at most ``window`` of them in flight (sent but not
    yet accounted for by ``done()``, e.g. the frames' worth of samples the RX has read)."""

    def __init__(self, pdus, done, window=8):
        semcom.threaded_source.__init__(self, "paced_pdus")
        self.pdus, self.done, self.window = pdus, done, int(window)
        self.sent = 0

    def _run(self):
        port = pmt.intern("out")
        for msg in self.pdus:
            while self.sent - self.done() >= self.window:
                if self._stop.wait(POLL_S):
                    return
            self.message_port_pub(port, msg)
            self.sent += 1


def _link(tb, tx, gap, channel, rx):
    """TX → gap after each burst → tag gate → channel → RX (references kept on tb)."""
    tb.shaper = digital.burst_shaper_cc([1.0], 0, int(gap), False, LEN_KEY)
    tb.gate = blocks.tag_gate(gr.sizeof_gr_complex, False)
    tb.chan = channel
    tb.connect(tx, tb.shaper, tb.gate, tb.chan, rx)


def _wait(count, n, timeout, stall=2.0):
    """Poll ``count()`` until it reaches n, or stops growing for ``stall`` s (a frame lost at the
    end), or ``timeout``. Returns (start, time of the first frame, of the last frame, count,
    process CPU time at the first frame, at the last frame)."""
    t0 = time.perf_counter()
    first = last = cpu_first = cpu_last = None
    c = 0
    while True:
        now, cpu = time.perf_counter(), time.process_time()
        c_new = count()
        if c_new > c:
            c, last, cpu_last = c_new, now, cpu
            if first is None:
                first, cpu_first = now, cpu
        if c >= n or now - t0 > timeout or (last is not None and now - last > stall):
            return t0, first, last, c, cpu_first, cpu_last
        time.sleep(POLL_S)


def run_semantic(p, n_frames, frame_symbols, channel, gap, window=16, seed=1, timeout=120.0, equalizer="zf",
                 threshold=0.0, stall=2.0):
    """Semantic TX → channel → RX. Returns dict(frames, delivered, rows (seq, nmse_db, snr_est_db), times).
    The run ends as run_stock's does."""
    L = semantic_payload_len(p, frame_symbols)
    rng = np.random.default_rng(seed)
    sent = [((rng.standard_normal(L) + 1j * rng.standard_normal(L)) / np.sqrt(2)).astype(np.complex64)
            for _ in range(n_frames)]
    pdus = [pmt.cons(pmt.dict_add(pmt.make_dict(), pmt.intern("seq"), pmt.from_long(i)),
                     pmt.init_c32vector(L, x)) for i, x in enumerate(sent)]
    tb = gr.top_block()
    tb.tx = semcom.ofdm_tx(profile=p, max_payload_len=L)
    tb.rx = semcom.ofdm_rx(profile=p, max_payload_len=L, equalizer=equalizer, threshold=threshold)
    fs = frame_symbols * p.symbol_len + gap
    tb.src = PacedPdus(pdus, lambda: tb.rx.samples_read() // fs, window)  # lost frames still advance
    tb.store = blocks.message_debug()
    tb.msg_connect(tb.src, "out", tb.tx, "in")
    _link(tb, tb.tx, gap, channel, tb.rx)
    tb.msg_connect(tb.rx, "out", tb.store, "store")
    tb.start()
    times = _wait(tb.rx.frames_received, n_frames, timeout, stall)
    time.sleep(DRAIN_S)
    tb.stop()
    tb.wait()
    rows = []
    for k in range(tb.store.num_messages()):
        msg = tb.store.get_message(k)
        meta = pmt.to_python(pmt.car(msg))
        y = np.asarray(pmt.c32vector_elements(pmt.cdr(msg)), np.complex64)
        x = sent[meta["seq"]] if 0 <= meta["seq"] < n_frames else None
        err = np.mean(np.abs(y - x) ** 2) / np.mean(np.abs(x) ** 2) if x is not None and len(y) == L else np.inf
        rows.append((meta["seq"], 10 * np.log10(max(err, 1e-30)), meta["snr_est_db"]))
    return dict(frames=n_frames, rows=rows, header_failures=tb.rx.header_failures(), times=times, samples=fs)


def _stock_kwargs(p):
    """Stock ofdm_tx/ofdm_rx arguments that reproduce the profile's FFT, CP, carriers and pilots."""
    return dict(fft_len=p.fft_len, cp_len=p.cp_len, occupied_carriers=(list(p.occupied_carriers),),
                pilot_carriers=(list(p.pilot_carriers),), pilot_symbols=[list(r) for r in p.pilot_symbols],
                packet_length_tag_key=LEN_KEY)


def run_stock(p, n_frames, frame_symbols, channel, gap, seed=1, timeout=120.0, stall=2.0):
    """Stock digital.ofdm_tx → channel → digital.ofdm_rx. Returns dict(frames, delivered, times).
    The run ends when every frame arrived, after ``stall`` s without a new one, or at ``timeout``."""
    nb = stock_packet_bytes(p, frame_symbols)
    data = np.random.default_rng(seed).integers(0, 256, n_frames * nb, dtype=np.uint8)
    tb = gr.top_block()
    # repeated, so the stream never ends: at the end of a finite stream the stock RX may drop the
    # last frame (its header/payload demux can finish before the header parser's answer arrives)
    tb.src = blocks.vector_source_b(data.tolist(), repeat=True)
    tb.s2ts = blocks.stream_to_tagged_stream(gr.sizeof_char, 1, nb, LEN_KEY)
    kw = _stock_kwargs(p)
    tb.tx = digital.ofdm_tx(rolloff=0, **kw)
    tb.rx = digital.ofdm_rx(**kw)
    # tagged-stream blocks handle whole packets: every buffer must hold two packets' items
    buf = max(8192, 1 << int(np.ceil(np.log2(4 * 8 * (nb + 4)))))
    tb.tx.set_min_output_buffer(buf)
    tb.rx.set_min_output_buffer(buf)
    tb.unit = blocks.multiply_const_cc(1 / np.sqrt(p.fft_len))  # unitary IFFT: Es = 1 per subcarrier
    tb.t2p = pdu.tagged_stream_to_pdu(gr.types.byte_t, LEN_KEY)
    tb.store = blocks.message_debug()
    tb.connect(tb.src, tb.s2ts, tb.tx, tb.unit)
    _link(tb, tb.unit, gap, channel, tb.rx)
    tb.connect(tb.rx, tb.t2p)
    tb.msg_connect(tb.t2p, "pdus", tb.store, "store")
    tb.start()
    times = _wait(tb.store.num_messages, n_frames, timeout, stall)
    time.sleep(DRAIN_S)
    tb.stop()
    tb.wait()
    sent = {bytes(data[i * nb:(i + 1) * nb]): i for i in range(n_frames)}
    # packets of the first pass only (indices rise until the repeat starts): a frame lost in the
    # first pass is not made up by its repeat
    delivered, last = 0, -1
    for k in range(tb.store.num_messages()):
        i = sent.get(bytes(pmt.u8vector_elements(pmt.cdr(tb.store.get_message(k)))))
        if i is None:
            continue
        if i <= last:
            break
        delivered, last = delivered + 1, i
    return dict(frames=n_frames, delivered=delivered, times=times, samples=frame_symbols * p.symbol_len + gap,
                packet_bytes=nb)


def rates(r):
    """(steady-state MS/s: samples of the frames delivered after the first one over the time from
    the first to the last delivery; the same samples per CPU second of the whole process (all
    threads, all cores); MS/s from the flowgraph start)."""
    t0, first, last, c, cpu_first, cpu_last = r["times"]
    if c < 2 or last <= first:
        return 0.0, 0.0, 0.0
    ms = (c - 1) * r["samples"] / 1e6
    return ms / (last - first), ms / max(cpu_last - cpu_first, 1e-9), c * r["samples"] / (last - t0) / 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="wifi64", choices=sorted(semcom.phy.PROFILES))
    ap.add_argument("--frames", type=int, default=400, help="frames per chain and round")
    ap.add_argument("--frame-symbols", type=int, default=100,
                    help="OFDM symbols per frame, both chains (100 → wifi64: 8000 samples, 4224 feature symbols, "
                         "578-byte stock packets)")
    ap.add_argument("--gap", type=int, default=None, help="samples between bursts (default: one OFDM symbol)")
    ap.add_argument("--snr", type=float, default=30.0, help="Es/N0 per subcarrier of both chains, dB")
    ap.add_argument("--window", type=int, default=16,
                    help="semantic source: frames in flight (sent, not yet read by the RX)")
    ap.add_argument("--rounds", type=int, default=3)
    gr_log_option(ap)
    a = ap.parse_args(argv)
    if a.frames < 2 or a.rounds < 1 or a.window < 1:
        ap.error("--frames >= 2, --rounds >= 1 and --window >= 1 required")
    p = semcom.make_params(a.profile)
    gap = p.symbol_len if a.gap is None else a.gap
    try:
        nb, L = stock_packet_bytes(p, a.frame_symbols), semantic_payload_len(p, a.frame_symbols)
    except ValueError as e:
        ap.error(str(e))
    fs = a.frame_symbols * p.symbol_len + gap
    print(f"profile {a.profile}: {a.frame_symbols} OFDM symbols + {gap} gap = {fs} samples per frame; "
          f"semantic payload {L} feature symbols, stock packet {nb} bytes; {a.frames} frames, {a.snr:g} dB")
    best = {"semantic": (0.0, 0.0), "stock": (0.0, 0.0)}
    for r in range(a.rounds):
        s = run_semantic(p, a.frames, a.frame_symbols, semcom.awgn_channel(snr_db=a.snr, seed=r), gap, a.window,
                         seed=r)
        k = run_stock(p, a.frames, a.frame_symbols, semcom.awgn_channel(snr_db=a.snr, seed=r), gap, seed=r)
        ok = len({seq for seq, nm, _ in s["rows"] if nm < -20.0})
        nmse = np.mean([nm for _, nm, _ in s["rows"]]) if s["rows"] else float("nan")
        for name, res, got, extra in (("semantic", s, f"{ok}/{a.frames} frames", f", mean NMSE {nmse:.2f} dB"),
                                      ("stock", k, f"{k['delivered']}/{a.frames} packets", "")):
            steady, per_cpu, total = rates(res)
            print(f"round {r}: {name:8s} TX+RX: {got}, {steady:.3f} MS/s steady ({total:.3f} from start), "
                  f"{per_cpu:.3f} MS per CPU second{extra}")
            best[name] = (max(best[name][0], steady), max(best[name][1], per_cpu))
    (sem, sem_cpu), (stock, stock_cpu) = best["semantic"], best["stock"]
    print(f"semantic_msps: {sem:.3f}")
    print(f"stock_msps: {stock:.3f}")
    print(f"semantic_ms_per_cpu_s: {sem_cpu:.3f}")
    print(f"stock_ms_per_cpu_s: {stock_cpu:.3f}")
    print(f"cpu_efficiency_vs_stock_ofdm: {sem_cpu / stock_cpu if stock_cpu > 0 else float('nan'):.2f}")
    print(f"phy_speedup_vs_stock_ofdm: {sem / stock if stock > 0 else float('nan'):.2f}")

if __name__ == "__main__":
    main()
