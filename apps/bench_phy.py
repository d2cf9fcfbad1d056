#!/usr/bin/env python3
"""PHY throughput benchmark: semantic OFDM TX+RX vs GNU Radio's stock ofdm_tx/ofdm_rx.

Both chains run in this process on the same machine, one after the other (best of
``--rounds``), with frames of about the same air time (wifi64-like 64-point FFT, CP 16,
48 data carriers). Reported: mega-samples per second through TX+RX, and their ratio.
The stock chain carries bytes (CRC, scrambling, constellation mapping, header parsing,
decision-feedback equaliser, demapping); the semantic chain carries analog symbols.

Last line: ``phy_speedup_vs_stock_ofdm: <ratio>``.
"""
import argparse
import time

import numpy as np
from gnuradio import blocks, digital, gr

from gnuradio import semcom

SNR_DB = 30.0  # both chains see the same AWGN channel block


def bench_semantic(n_frames: int, payload_len: int, profile: str):
    tb = gr.top_block()
    src = semcom.feature_source(n_frames, payload_len, seed=1)
    tx = semcom.ofdm_tx(profile=profile, tail_symbols=16, max_payload_len=payload_len)
    rx = semcom.ofdm_rx(profile=profile, max_payload_len=payload_len)
    tb.msg_connect(src, "out", tx, "in")
    tb.noise = semcom.awgn_channel(snr_db=SNR_DB, seed=1)
    tb.connect(tx, tb.noise, rx)
    t0 = time.perf_counter()
    tb.start()
    while rx.frames_received() < n_frames and time.perf_counter() - t0 < 30:
        time.sleep(0.002)
    dt = time.perf_counter() - t0
    tb.stop()
    tb.wait()
    return rx.frames_received(), dt, tx


def frame_samples_semantic(params, payload_len, tail):
    from gnuradio.semcom.phy import ReferenceModem

    return ReferenceModem(params).frame_samples(payload_len) + tail * params.symbol_len


def bench_stock(n_frames: int, packet_bytes: int):
    tb = gr.top_block()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, n_frames * packet_bytes, dtype=np.uint8)
    src = blocks.vector_source_b(data.tolist())
    s2ts = blocks.stream_to_tagged_stream(gr.sizeof_char, 1, packet_bytes, "packet_len")
    tx = digital.ofdm_tx(packet_length_tag_key="packet_len", rolloff=0)
    rx = digital.ofdm_rx(packet_length_tag_key="packet_len")
    snk = blocks.null_sink(gr.sizeof_char)
    txs = blocks.vector_sink_c()
    rxs = blocks.tag_debug(gr.sizeof_char, "", "packet_len")
    rxs.set_display(False)
    tb.noise = semcom.awgn_channel(snr_db=SNR_DB, seed=2)
    tb.connect(src, s2ts, tx, tb.noise, rx, snk)
    tb.connect(tx, txs)
    tb.connect(rx, rxs)
    t0 = time.perf_counter()
    tb.run()
    dt = time.perf_counter() - t0
    return rxs.num_tags(), dt, len(txs.data())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300, help="frames per chain and round")
    ap.add_argument("--payload-len", type=int, default=800,
                    help="semantic payload, complex symbols per frame (800 ≈ 17 OFDM symbols)")
    ap.add_argument("--packet-bytes", type=int, default=96,
                    help="stock payload bytes per frame (96 B, as in GNU Radio's OFDM loopback example; ≈ 17 OFDM symbols with CRC)")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args(argv)

    best_sem = best_stock = 0.0
    for r in range(a.rounds):
        n_ok, dt, tx = bench_semantic(a.frames, a.payload_len, "wifi64")
        fs = frame_samples_semantic(tx.params, a.payload_len, 16)
        msps = n_ok * fs / dt / 1e6
        print(f"round {r}: semantic TX+RX: {n_ok}/{a.frames} frames, {fs} samples/frame, {dt:.2f} s, {msps:.2f} MS/s")
        best_sem = max(best_sem, msps)
        n_ok2, dt2, n_samp = bench_stock(a.frames, a.packet_bytes)
        msps2 = n_samp / dt2 / 1e6
        print(f"round {r}: stock ofdm_tx/rx: {n_ok2}/{a.frames} packets, {n_samp // max(a.frames, 1)} samples/frame, "
              f"{dt2:.2f} s, {msps2:.2f} MS/s")
        if n_ok2 < a.frames:  # a stalled chain's sample rate measures nothing
            print(f"round {r}: stock chain delivered {n_ok2}/{a.frames} packets: its rate is not counted")
        else:
            best_stock = max(best_stock, msps2)
    print(f"semantic_msps: {best_sem:.3f}")
    print(f"stock_msps: {best_stock:.3f}")
    ratio = best_sem / best_stock if best_stock > 0 else float("nan")
    print(f"phy_speedup_vs_stock_ofdm: {ratio:.2f}")


if __name__ == "__main__":
    main()
