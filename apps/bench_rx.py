#!/usr/bin/env python3
"""Receiver robustness tables: truncated bursts, sample-rate offset, fast fading, delay spread.

Runs the frame receiver (``semcom.phy.FrameReceiver``, the one inside ``semcom.ofdm_rx``) on
numpy buffers, no GNU Radio flowgraph. Payloads are unit-power complex Gaussian symbols.
For every case it prints

* ``nmse``: the payload's actual error, 10·log10 mean|x̂ − x|² (x has unit power), over the
  symbols the receiver did not mark as lost;
* ``reported``: the receiver's own noise report, 10·log10 of the mean of its per-symbol noise
  variances (``noise_var_sym``) over the same symbols — the decoders weight symbols by it;
* ``calib``: 10·log10 mean(|x̂ − x|² / reported variance), 0 dB when the report is honest
  symbol by symbol;
* ``genie``: the error of a zero-forcing receiver that knows the channel (window-averaged
  frequency response of each OFDM symbol) and has perfect timing: σ²·mean 1/|H|² (fading
  and multipath cases), or σ² (AWGN).

Tables: ``--table truncate`` (a burst cut at 10…95 % of its payload, then noise and a good
frame: is the cut noticed, what is reported for the lost part, is the next frame received),
``sro`` (±10/50/100 ppm on 60 000-symbol payloads), ``fading`` (fD·Ts 1e-4 and 1e-3, per
sample, three-path channel), ``delay`` (two equal paths, second at 0.6…1.0 CP), or ``all``.
Each row is one profile; ``--quick`` runs shorter frames (a smoke run).
"""
import argparse
import sys
import time

import numpy as np

from gnuradio.semcom.channels import SosFader, complex_noise, sample_rate_offset, snr_to_noise_var
from gnuradio.semcom.phy import FrameReceiver, build_frame, profile
from gnuradio.semcom.phy import modem
from gnuradio.semcom.blocks.grlog import gr_log_option

PROFILE_NAMES = ("wifi64", "wide256", "wide512")


def db(v) -> float:
    return float(10 * np.log10(max(float(v), 1e-30)))


def payload(n: int, rng) -> np.ndarray:
    return ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)).astype(np.complex64)


def frame_burst(p, x, seq: int) -> np.ndarray:
    return modem.frame_samples(p, build_frame(p, x, codec_id=1, seq=seq))


def gap(n: int, nv: float, rng) -> np.ndarray:
    return complex_noise(n, nv, rng)


def receive(p, rx_in):
    r = FrameReceiver(p)
    out = r.push(rx_in)
    return r, {f.header.seq: f for f in out}


def score(x, f):
    """(nmse, reported, calib, kept) over the symbols the receiver kept (not marked lost)."""
    valid = np.ones(len(x), bool) if getattr(f, "lost", None) is None else ~f.lost
    e = np.abs(f.symbols[valid] - x[valid]) ** 2
    nv = f.noise_var[valid].astype(np.float64)
    return db(e.mean()), db(nv.mean()), db((e / nv).mean()), int(valid.sum())


def fading_genie(p, gains, delays, starts, nv):
    """σ²·mean 1/|H|² of the payload symbols: H the window-averaged response of each symbol.

    gains: (n_samples, n_paths) path gains as applied; starts: sample index of each payload
    OFDM symbol's start (CP first)."""
    r = modem._rx(p)
    k = p.data_idx - p.fft_len // 2
    w0 = r.start
    inv = []
    for s in starts:
        g = gains[s + w0: s + w0 + p.fft_len].mean(axis=0)
        h = (g[None, :] * np.exp(-2j * np.pi * np.outer(k, delays) / p.fft_len)).sum(axis=1)
        inv.append(1.0 / np.maximum(np.abs(h) ** 2, 1e-12))
    return nv * float(np.mean(inv))


def multipath(x, gains, delays):
    y = np.zeros(len(x), np.complex128)
    for i, d in enumerate(delays):
        y[d:] += gains[d:, i] * x[: len(x) - d]
    return y.astype(np.complex64)


def payload_starts(p, f_start, n_pl_sym):
    first = f_start + (2 + modem.n_header_symbols(p)) * p.symbol_len
    return first + p.symbol_len * np.arange(n_pl_sym)


def multipath_case(p, n_payload, delays, gains_fn, nv, seeds):
    """Mean (nmse, reported, calib, genie) over the realisations (one per seed) of a frame sent
    through paths at ``delays`` with gains ``gains_fn(n_samples, rng)``; None if none arrived."""
    res = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        x = payload(n_payload, rng)
        lead = 300
        b = np.concatenate([np.zeros(lead, np.complex64), frame_burst(p, x, 1), np.zeros(300, np.complex64)])
        g = gains_fn(len(b), rng)
        y = multipath(b, g, delays)
        _, got = receive(p, y + gap(len(y), nv, rng))
        f = got.get(1)
        if f is None:
            continue
        n_sym = modem.n_payload_symbols(p, len(x))
        gen = fading_genie(p, g, delays, payload_starts(p, lead, n_sym), nv)
        res.append(score(x, f)[:3] + (db(gen),))
    return np.mean(res, axis=0) if res else None


# ---------------------------------------------------------------------------------------
def table_truncate(args):
    print("\n## Truncated bursts: a frame cut at a fraction of its payload, 2 symbols of noise, a good frame")
    print(f"Es/N0 {args.snr:g} dB, payload {args.trunc_len} symbols; 'lost': payload symbols the receiver marked as "
          "lost (should be ≈ the cut part); nmse/reported/calib over the symbols it kept; 'next': the good frame")
    print("| profile | cut at | cut frame | lost / cut | nmse | reported | calib | next frame |")
    print("|---|---|---|---|---|---|---|---|")
    nv = snr_to_noise_var(args.snr)
    for name in args.profiles:
        p = profile(name)
        for frac in args.cuts:
            rng = np.random.default_rng(int(frac * 1000) + 7)
            x1, x2 = payload(args.trunc_len, rng), payload(args.trunc_len, rng)
            b1 = frame_burst(p, x1, 1)
            n_pre = (2 + modem.n_header_symbols(p)) * p.symbol_len
            n_pl = len(b1) - n_pre
            cut = n_pre + int(round(frac * n_pl))
            b2 = frame_burst(p, x2, 2)
            sig = np.concatenate([np.zeros(200, np.complex64), b1[:cut], np.zeros(2 * p.symbol_len, np.complex64), b2,
                                  np.zeros(200, np.complex64)])
            r, got = receive(p, sig + gap(len(sig), nv, rng))
            # payload symbols cut off: those whose OFDM symbol is not entirely in the burst
            n_cut_sym = len(x1) - min(len(x1), ((cut - n_pre) // p.symbol_len) * p.n_data)
            f1, f2 = got.get(1), got.get(2)
            if f1 is None:
                row1, lost, sc = "dropped", "-", ("-", "-", "-")
            else:
                n_lost = int(f1.lost.sum()) if getattr(f1, "lost", None) is not None else 0
                row1, lost = "received", f"{n_lost} / {n_cut_sym}"
                a, b, c, _ = score(x1, f1)
                sc = (f"{a:+.1f}", f"{b:+.1f}", f"{c:+.1f}")
            nxt = "lost" if f2 is None else f"ok ({score(x2, f2)[0]:+.1f} dB)"
            print(f"| {name} | {frac:.0%} | {row1} | {lost} | {sc[0]} | {sc[1]} | {sc[2]} | {nxt} |")


def table_sro(args):
    print(f"\n## Sample-rate offset: {args.sro_len}-symbol payload, AWGN Es/N0 {args.snr:g} dB (genie {-args.snr:+.1f} dB)")
    print("| profile | ppm | nmse | loss vs 0 ppm | reported | calib | max abs(x̂) |")
    print("|---|---|---|---|---|---|---|")
    nv = snr_to_noise_var(args.snr)
    for name in args.profiles:
        p = profile(name)
        base = None
        for ppm in args.ppms:
            rng = np.random.default_rng(11)
            x = payload(args.sro_len, rng)
            b = np.concatenate([np.zeros(300, np.complex64), frame_burst(p, x, 1), np.zeros(300, np.complex64)])
            y = sample_rate_offset(b, ppm) if ppm else b
            _, got = receive(p, y + gap(len(y), nv, rng))
            f = got.get(1)
            if f is None:
                print(f"| {name} | {ppm:+g} | lost | | | | |")
                continue
            a, rep, c, _ = score(x, f)
            base = a if ppm == 0 else base
            loss = "" if base is None or ppm == 0 else f"{a - base:+.2f}"
            print(f"| {name} | {ppm:+g} | {a:+.1f} | {loss} | {rep:+.1f} | {c:+.1f} | {np.abs(f.symbols).max():.1f} |")


def table_fading(args):
    delays = np.array([0, 2, 5])
    pw = np.array([0.6, 0.3, 0.1])
    print(f"\n## Fast fading: 3 paths (delays {list(delays)} samples, powers {list(pw)}), Jakes Doppler fD·Ts per "
          f"sample, {args.fade_len}-symbol payload, Es/N0 {args.snr:g} dB, 4 realisations")
    print("| profile | fD·Ts | fD·T_sym | nmse | genie | reported | calib |")
    print("|---|---|---|---|---|---|---|")
    nv = snr_to_noise_var(args.snr)
    for name in args.profiles:
        p = profile(name)
        for fdts in args.fdts:
            m = multipath_case(p, args.fade_len, delays,
                               lambda n, rng: SosFader(fdts, len(delays), rng=rng).generate(n) * np.sqrt(pw)[None, :],
                               nv, range(100, 104))
            if m is None:
                print(f"| {name} | {fdts:g} | | lost | | | |")
                continue
            print(f"| {name} | {fdts:g} | {fdts * p.symbol_len:.3g} | {m[0]:+.1f} | {m[3]:+.1f} | {m[1]:+.1f} | "
                  f"{m[2]:+.1f} |")


def table_delay(args):
    print(f"\n## Delay spread: two equal static paths, the second at a fraction of the CP, Es/N0 {args.delay_snr:g} dB, "
          f"{args.fade_len}-symbol payload, 6 random path phases")
    print("| profile | 2nd path | nmse | genie | reported | calib |")
    print("|---|---|---|---|---|---|")
    nv = snr_to_noise_var(args.delay_snr)
    for name in args.profiles:
        p = profile(name)
        for frac in args.delays:
            d = int(round(frac * p.cp_len))
            delays = np.array([0, d])
            m = multipath_case(p, args.fade_len, delays,
                               lambda n, rng: np.broadcast_to(np.exp(2j * np.pi * rng.uniform(size=2)) / np.sqrt(2), (n, 2)),
                               nv, range(200, 206))
            if m is None:
                print(f"| {name} | {frac:.1f} CP ({d}) | lost | | | |")
                continue
            print(f"| {name} | {frac:.1f} CP ({d} samples) | {m[0]:+.1f} | {m[3]:+.1f} | {m[1]:+.1f} | {m[2]:+.1f} |")


TABLES = {"truncate": table_truncate, "sro": table_sro, "fading": table_fading, "delay": table_delay}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", choices=sorted(TABLES) + ["all"], default="all")
    ap.add_argument("--profiles", nargs="+", default=list(PROFILE_NAMES), choices=PROFILE_NAMES)
    ap.add_argument("--snr", type=float, default=20.0, help="Es/N0 in dB (truncate, sro, fading)")
    ap.add_argument("--delay-snr", type=float, default=25.0, help="Es/N0 in dB of the delay-spread table")
    ap.add_argument("--cuts", type=float, nargs="+", default=[0.1, 0.3, 0.45, 0.6, 0.8, 0.95])
    ap.add_argument("--ppms", type=float, nargs="+", default=[0, 10, 50, 100, -100])
    ap.add_argument("--fdts", type=float, nargs="+", default=[1e-4, 1e-3])
    ap.add_argument("--delays", type=float, nargs="+", default=[0.25, 0.6, 0.8, 1.0])
    ap.add_argument("--trunc-len", type=int, default=4000)
    ap.add_argument("--sro-len", type=int, default=60000)
    ap.add_argument("--fade-len", type=int, default=8000)
    ap.add_argument("--quick", action="store_true", help="short frames (a smoke run)")
    gr_log_option(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.trunc_len, args.sro_len, args.fade_len = 1000, 6000, 2000
    t0 = time.time()
    for name in (sorted(TABLES) if args.table == "all" else [args.table]):
        TABLES[name](args)
        sys.stdout.flush()
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
