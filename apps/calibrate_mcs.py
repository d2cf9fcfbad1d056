#!/usr/bin/env python3
"""Measure the SNR thresholds of the separation baseline's MCS table (``MCS_TABLES``).

For every MCS, frames of ``--symbols`` channel uses (default 16384: a 256×256 image at
ρ = 1/12) are filled with as many codewords as fit, carrying random bytes, and sent
through the codec's own bit path (channel code, interleaver, scrambler, Gray QAM,
padding) over AWGN with the project's SNR convention (Es/N0 per complex symbol, complex
noise CN(0, σ²), σ² = 10^(−SNR/10)); the receiver demaps with the true σ² and decodes. A
frame fails when any decoded byte differs (what the CRC-32 would catch).

Search per MCS: 1 dB steps up from just below the Shannon limit of its spectral efficiency
until a point passes, then 0.25 dB steps from 0.75 dB below that point. A point passes
when at most ``--target`` × ``--frames`` of ``--frames`` frames fail (stopped as soon as
more have failed). The threshold is the first passing point on the fine grid.

Prints one line per measured point and, at the end, the table as Python to paste into
``python/semcom/codecs/separation.py``.
"""
import argparse
import math
import time

import numpy as np

from gnuradio.semcom.codecs.qam import MODULATIONS, Qam
from gnuradio.semcom.codecs.separation import MCS_TABLES, SeparationCodec
from gnuradio.semcom.blocks.grlog import gr_log_option


def frame_errors(codec, index, snr_db, n_symbols, frames, max_errors, rng):
    """(errors, frames run): stops once errors exceed max_errors."""
    nv = 10.0 ** (-snr_db / 10.0)
    nbytes = codec.capacity(index, n_symbols) + 4
    errors = run = 0
    while run < frames and errors <= max_errors:
        payload = rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()
        x = codec.modulate(payload, index, n_symbols)
        noise = np.sqrt(nv / 2) * (rng.standard_normal(x.size) + 1j * rng.standard_normal(x.size))
        got = codec.demodulate((x + noise).astype(np.complex64), np.float32(nv), index, nbytes)
        errors += got != payload
        run += 1
    return errors, run


def threshold(codec, index, args, rng):
    m = codec.table[index]
    code = codec.code(index)
    eff = Qam(MODULATIONS[m.modulation]).bits_per_symbol * code.k / code.n
    max_errors = int(math.floor(args.target * args.frames))

    def passes(snr):
        t0 = time.time()
        e, n = frame_errors(codec, index, snr, args.symbols, args.frames, max_errors, rng)
        ok = e <= max_errors and n == args.frames
        print(f"  {m.name:<14} {snr:+7.2f} dB  {e:3d}/{n:<3d} frames failed  {'pass' if ok else 'fail'}"
              f"  ({time.time() - t0:.1f} s)", flush=True)
        return ok

    snr = math.floor(10 * math.log10(2 ** eff - 1))
    while not passes(snr):
        snr += 1.0
    for fine in np.arange(snr - 0.75, snr, 0.25):
        if passes(float(fine)):
            return float(fine)
    return float(snr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code", default="ldpc", choices=sorted(MCS_TABLES), help="channel code family")
    ap.add_argument("--backend", default="gr-fec", choices=("gr-fec", "numpy"), help="LDPC decoder")
    ap.add_argument("--mcs", nargs="*", help="only these MCS names (default: the whole table)")
    ap.add_argument("--symbols", type=int, default=16384, help="channel uses per frame")
    ap.add_argument("--frames", type=int, default=40, help="frames per SNR point")
    ap.add_argument("--target", type=float, default=0.1, help="frame error rate a threshold must reach")
    ap.add_argument("--seed", type=int, default=1)
    gr_log_option(ap)
    args = ap.parse_args()
    if args.backend == "gr-fec":
        from gnuradio.semcom.blocks import fec_ldpc  # noqa: F401  (registers the backend)
    codec = SeparationCodec(channel_code=args.code, ldpc_backend=args.backend)
    rng = np.random.default_rng(args.seed)
    names = [m.name for m in codec.table]
    chosen = args.mcs or names
    results = {}
    for name in chosen:
        if name not in names:
            raise SystemExit(f"unknown MCS {name!r}; choose from {', '.join(names)}")
        results[name] = threshold(codec, names.index(name), args, rng)
    decoder = f"{args.backend} LDPC decoder" if args.code == "ldpc" else "soft ML Hamming decoder"
    print(f"\n# {args.code}, {decoder}, {args.symbols} symbols/frame, FER ≤ {args.target:g} of {args.frames} frames")
    for m in codec.table:
        if m.name in results:
            print(f'        Mcs("{m.modulation}", "{m.code}", {results[m.name]:g}),')


if __name__ == "__main__":
    main()
