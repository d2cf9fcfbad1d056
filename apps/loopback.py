#!/usr/bin/env python3
"""Loopback link demo: random feature frames → semantic OFDM TX → channel → OFDM RX.

Headless twin of apps/loopback.grc. Prints one line per received frame (symbol NMSE,
estimated vs true SNR, CFO estimate, header failures) and a summary: frames received and
lost (never detected or failed header CRC), mean NMSE (beside the AWGN bound -SNR on the
AWGN channel) and the estimated SNR. The receiver never sees the true SNR: it reports its
own estimate. The run ends when every frame is in, or ``--drain`` s after the last frame was
sent and no further frame arrived (the rest are counted lost), or at ``--timeout``. Exit
status 0 when the run completed and at least one frame arrived.

Example:  python3 apps/loopback.py --snr 10 --cfo 0.1 --channel epa --frames 20
"""
import argparse
import sys
import time

import numpy as np
from gnuradio import gr

from gnuradio import semcom
from gnuradio.semcom.blocks.grlog import gr_log_option
from gnuradio.semcom.summary import frame_line, missing


def build(a):
    """The flowgraph of apps/loopback.grc, parameterised from the CLI options."""
    tb = gr.top_block("semcom loopback")
    p = semcom.make_params(a.profile)
    rng = np.random.default_rng(a.seed)
    timing = a.timing_offset if a.timing_offset is not None else float(rng.uniform(0, 63))
    # linger_s=-1: the app ends the run itself once the channel has drained (main)
    tb.src = semcom.feature_source(a.frames, a.payload_len, seed=a.seed, interval_s=0.0, linger_s=-1)
    tb.tx = semcom.ofdm_tx(profile=a.profile, tail_symbols=a.tail_symbols, max_payload_len=a.payload_len)
    # CFO in subcarrier spacings → cycles/sample; fractional+integer timing offset in samples
    tb.imp = semcom.impairments(cfo=a.cfo / p.fft_len, sample_rate=1.0, timing_offset=timing)
    if a.channel == "awgn":
        tb.chan = semcom.awgn_channel(snr_db=a.snr, seed=a.seed + 1)
    elif a.channel in ("rayleigh", "rician"):
        tb.chan = semcom.flat_fading_channel(kind=a.channel, k=a.k, fdts=a.fdts, snr_db=a.snr, seed=a.seed + 1)
    else:
        tb.chan = semcom.multipath_channel(profile=a.channel.upper(), sample_rate=a.sample_rate, fdts=a.fdts,
                                           snr_db=a.snr, seed=a.seed + 1)
    tb.rx = semcom.ofdm_rx(profile=a.profile, equalizer=a.equalizer, max_payload_len=a.payload_len)
    # history: every frame's row stays in memory (the summary at the end reads them all)
    tb.mon = semcom.link_monitor(seed=a.seed, true_snr_db=a.snr, verbose=False, expected=a.frames,
                                 history=max(2 * a.frames, 10000))
    tb.msg_connect(tb.src, "out", tb.tx, "in")
    tb.connect(tb.tx, tb.imp, tb.chan, tb.rx)
    tb.msg_connect(tb.rx, "out", tb.mon, "in")
    return tb, timing


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="wifi64", choices=sorted(semcom.phy.PROFILES))
    ap.add_argument("--snr", type=float, default=30.0, help="Es/N0 per channel use, dB (default 30)")
    ap.add_argument("--cfo", type=float, default=0.1, help="carrier offset, subcarrier spacings (default 0.1)")
    ap.add_argument("--timing-offset", type=float, default=None,
                    help="samples of delay (fractional allowed, < 64); default: random")
    ap.add_argument("--channel", default="awgn", choices=["awgn", "rayleigh", "rician", "epa", "eva", "etu"])
    ap.add_argument("--k", type=float, default=4.0, help="Rician K factor (linear)")
    ap.add_argument("--fdts", type=float, default=1e-5, help="normalised Doppler fD·Ts of fading channels")
    ap.add_argument("--sample-rate", type=float, default=15.36e6, help="for multipath profiles (Hz)")
    ap.add_argument("--equalizer", default="zf", choices=["zf", "mmse"])
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--payload-len", type=int, default=1024, help="feature symbols per frame")
    ap.add_argument("--tail-symbols", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--drain", type=float, default=2.0,
                    help="seconds to wait, after the last frame was sent, for one more to arrive (default 2)")
    ap.add_argument("--timeout", type=float, default=60.0, help="stop after this many seconds in any case (default 60)")
    ap.add_argument("--quiet", action="store_true", help="summary only")
    gr_log_option(ap)
    a = ap.parse_args(argv)
    if a.frames < 1 or a.payload_len < 1:
        ap.error("--frames and --payload-len must be >= 1")

    tb, timing = build(a)
    print(f"semcom loopback: {a.frames} frames × {a.payload_len} symbols, profile {a.profile}, channel {a.channel}, "
          f"SNR {a.snr} dB, CFO {a.cfo} subcarriers, timing offset {timing:.2f} samples", flush=True)
    t0 = time.time()
    printed, last_change, timed_out = 0, time.time(), False
    tb.start()
    try:
        while tb.mon.count() < a.frames:
            now = time.time()
            if tb.mon.count() > printed:
                for r in list(tb.mon.rows)[printed:]:
                    if not a.quiet:
                        print(frame_line(r), flush=True)
                printed, last_change = len(tb.mon.rows), now
            if not tb.src.done():
                last_change = now
            elif now - last_change > a.drain:
                break  # all sent, nothing more came within --drain s: the rest are lost
            if now - t0 > a.timeout:
                timed_out = True
                break
            time.sleep(0.02)
    finally:
        tb.stop()
        tb.wait()
    rows = sorted(tb.mon.rows, key=lambda r: r["seq"])
    if not a.quiet:
        for r in list(tb.mon.rows)[printed:]:
            print(frame_line(r), flush=True)
    n = len({r["seq"] for r in rows})
    lost = missing([r["seq"] for r in rows], a.frames)
    lost_s = f" (seq {', '.join(map(str, lost[:20]))}{', …' if len(lost) > 20 else ''})" if lost else ""
    print(f"--- received {n}/{a.frames} frames, lost {len(lost)}{lost_s}, in {time.time() - t0:.2f} s"
          f"{' (timeout)' if timed_out else ''}, header failures {tb.rx.header_failures()}, "
          f"side-info failures {tb.rx.side_failures()}", flush=True)
    if n:
        nm = np.mean([r["nmse_db"] for r in rows])
        est = np.mean([r["snr_est_db"] for r in rows])
        bound = f" (AWGN bound at this SNR: {-a.snr:.2f} dB)" if a.channel == "awgn" else ""
        print(f"    mean symbol NMSE {nm:.2f} dB over the received frames{bound}, "
              f"estimated SNR {est:.2f} dB (true {a.snr:.2f} dB)")
    return 0 if n else 1


if __name__ == "__main__":
    sys.exit(main())
