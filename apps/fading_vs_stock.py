#!/usr/bin/env python3
"""Frame loss over 3-path frequency-selective Doppler fading: semantic PHY vs stock ofdm_rx.

Both chains run through the same flowgraph as apps/bench_phy.py, with the channel
replaced by ``semcom.multipath_channel``: 3 paths at delays 0, 1.5, 3 samples with
amplitudes 1, 0.7, 0.5 (sinc-interpolated, normalised to unit average power), each path
fading with Doppler fD·Ts = --fdts (gr-channels selective_fading_model), then AWGN at
--snr dB Es/N0 per subcarrier. Same seed, hence the same fading processes, for both; same
frames (--frame-symbols OFDM symbols each, same FFT/CP/carriers, same gap), same number
offered.

Lost = offered - delivered with the right content. The stock chain (BPSK header and
payload, CRC-32) loses a packet when detection, header or payload CRC fails; the semantic
chain loses a frame when detection or its header CRC fails (its analog payload has no CRC:
it arrives degraded, not lost; its symbol NMSE is reported).
"""
import argparse

import numpy as np

from gnuradio import semcom
from gnuradio.semcom.channels import TapProfile
from gnuradio.semcom.blocks.grlog import gr_log_option

import bench_phy

DELAYS, MAGS = (0.0, 1.5, 3.0), (1.0, 0.7, 0.5)


def fading(snr, fdts, seed):
    """The channel both chains see (a fresh block per run, same seed → same fading processes)."""
    return semcom.multipath_channel(profile=TapProfile.custom(DELAYS, mags=MAGS), fdts=fdts, interp="sinc",
                                    snr_db=snr, seed=seed)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--snr", type=float, default=20.0)
    ap.add_argument("--fdts", type=float, default=1e-4)
    ap.add_argument("--frame-symbols", type=int, default=20,
                    help="OFDM symbols per frame, both chains (20 → 98-byte stock packets, 384 feature symbols)")
    ap.add_argument("--profile", default="wifi64", choices=sorted(semcom.phy.PROFILES))
    ap.add_argument("--gap", type=int, default=None, help="samples between bursts (default: one OFDM symbol)")
    ap.add_argument("--seed", type=int, default=3)
    gr_log_option(ap)
    a = ap.parse_args(argv)
    if a.frames < 2:
        ap.error("--frames >= 2 required")
    p = semcom.make_params(a.profile)
    gap = p.symbol_len if a.gap is None else a.gap
    try:
        nb, L = bench_phy.stock_packet_bytes(p, a.frame_symbols), bench_phy.semantic_payload_len(p, a.frame_symbols)
    except ValueError as e:
        ap.error(str(e))
    print(f"3-path fading (delays {DELAYS}, amplitudes {MAGS}), fD·Ts {a.fdts:g}, {a.snr:g} dB; {a.frames} frames "
          f"of {a.frame_symbols} OFDM symbols ({a.profile}): stock packets {nb} bytes, semantic payloads {L} symbols")
    k = bench_phy.run_stock(p, a.frames, a.frame_symbols, fading(a.snr, a.fdts, a.seed), gap, seed=a.seed)
    s = bench_phy.run_semantic(p, a.frames, a.frame_symbols, fading(a.snr, a.fdts, a.seed), gap, seed=a.seed)
    got = {seq for seq, _, _ in s["rows"]}
    nmse = np.array([nm for _, nm, _ in s["rows"]])
    snr_est = np.array([e for _, _, e in s["rows"]])
    lost_k, lost_s = a.frames - k["delivered"], a.frames - len(got)
    print(f"stock ofdm_rx:  {k['delivered']}/{a.frames} packets, lost {lost_k} ({100 * lost_k / a.frames:.1f} %)")
    print(f"semantic rx:    {len(got)}/{a.frames} frames, lost {lost_s} ({100 * lost_s / a.frames:.1f} %), "
          f"{s['header_failures']} header CRC failures; payload NMSE median {np.median(nmse):.2f} dB, "
          f"mean {np.mean(nmse):.2f} dB; estimated SNR median {np.median(snr_est):.2f} dB")
    print(f"frame_loss_stock_pct: {100 * lost_k / a.frames:.1f}")
    print(f"frame_loss_semantic_pct: {100 * lost_s / a.frames:.1f}")


if __name__ == "__main__":
    main()
