#!/usr/bin/env python3
"""ZMQ link, process 3/3: ZMQ PULL -> Semantic OFDM RX -> Link Monitor.

    zeromq.pull_source (connect tcp://127.0.0.1:RX_PORT) -> ofdm_rx -> link_monitor

Prints one line per received frame (seq, length, symbol NMSE against the regenerated
features, the receiver's *estimated* SNR beside the channel's setting, CFO, header failures)
and a summary. Exits after ``--frames`` frames or ``--timeout`` seconds; exit status 0 when at
least ``--min-fraction`` of the frames arrived, 1 otherwise. ``--json FILE`` writes the
summary and the per-frame rows.
"""
import argparse
import json
import math
import sys

import numpy as np
from gnuradio import gr, zeromq
from gnuradio import semcom
from gnuradio.semcom.blocks.grlog import gr_log_option

import common


class zmq_rx(gr.top_block):
    def __init__(self, seed=0, true_snr_db=float("nan"), verbose=True, profile="wifi64",
                 header_modulation="bpsk", equalizer="zf", max_payload_len=65536, port=common.DEFAULT_RX_PORT,
                 history=10000):
        gr.top_block.__init__(self, "semcom ZMQ RX")
        self.src = zeromq.pull_source(gr.sizeof_gr_complex, 1, common.address(port), 100, False, -1)
        self.rx = semcom.ofdm_rx(profile=profile, header_modulation=header_modulation, equalizer=equalizer,
                                 max_payload_len=max_payload_len)
        self.monitor = semcom.link_monitor(seed=seed, true_snr_db=true_snr_db, verbose=verbose, history=history)
        self.connect(self.src, self.rx)
        self.msg_connect(self.rx, "out", self.monitor, "in")


def _mean(v):
    v = [x for x in v if math.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=20, help="frames expected (exit once received)")
    p.add_argument("--payload-len", type=int, default=1024,
                   help="largest payload expected (sizes the RX buffers; must be >= the TX's)")
    p.add_argument("--seed", type=int, default=0, help="feature seed of the TX (for the NMSE)")
    p.add_argument("--snr", type=float, default=float("nan"), help="true SNR, for display only")
    p.add_argument("--equalizer", default="zf", choices=["zf", "mmse"])
    p.add_argument("--min-fraction", type=float, default=1.0,
                   help="fraction of --frames needed for exit status 0 (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no per-frame lines")
    p.add_argument("--json", help="write the summary and per-frame rows to this file")
    common.add_common_args(p, ports=("rx",))
    gr_log_option(p)
    a = p.parse_args(argv)

    tb = zmq_rx(a.seed, a.snr, not a.quiet, a.profile, a.header_modulation, a.equalizer, a.payload_len,
                a.rx_port, history=max(2 * a.frames, 10000))  # every frame's row, for the summary and --json
    print(f"[rx] PULL {common.address(a.rx_port)}: waiting for {a.frames} frames "
          f"(timeout {a.timeout:g} s)", flush=True)
    common.run_until(tb, lambda: tb.monitor.count() >= a.frames, a.timeout, common.StopFlag())

    rows = list(tb.monitor.rows)
    hdr = [dict(seq=r["seq"], codec_id=r["codec_id"], payload_len=r["hdr_payload_len"], n_symbols=r["payload_len"])
           for r in rows]  # decoded header fields beside the symbols actually received
    seqs = sorted({r["seq"] for r in rows})
    summary = dict(expected=a.frames, received=tb.monitor.count(), unique_seqs=len(seqs),
                   missing=sorted(set(range(a.frames)) - set(seqs)),
                   header_failures=int(tb.rx.header_failures()),
                   mean_nmse_db=_mean([r["nmse_db"] for r in rows]),
                   max_nmse_db=max((r["nmse_db"] for r in rows), default=float("nan")),
                   mean_snr_est_db=_mean([r["snr_est_db"] for r in rows]), true_snr_db=a.snr)
    print(f"[rx] summary: {summary['received']}/{a.frames} frames, header failures "
          f"{summary['header_failures']}, mean NMSE {summary['mean_nmse_db']:.2f} dB "
          f"(worst {summary['max_nmse_db']:.2f}), mean estimated SNR {summary['mean_snr_est_db']:.2f} dB "
          f"(true {a.snr:g}), missing seqs {summary['missing'][:20]}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(summary=summary, frames=rows, headers=hdr), f, indent=1, default=float)
    ok = len(seqs) >= math.ceil(a.min_fraction * a.frames)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
