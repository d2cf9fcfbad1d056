#!/usr/bin/env python3
"""ZMQ link, process 1/3: random feature frames -> Semantic OFDM TX -> ZMQ PUSH.

    feature_source -> ofdm_tx (tail symbols) -> zeromq.push_sink (bind tcp://127.0.0.1:TX_PORT)

The PUSH socket has back-pressure: while no channel/RX is connected the samples wait in the
flowgraph, so the processes can start in any order. The TX output is bursty (one burst per
frame, nothing in between); ``--tail-symbols`` appends empty OFDM symbols to every burst so
the receiver releases the last frame of a finite transmission.

Exits ``--linger`` seconds after the last frame was handed to the TX (so that ZMQ can deliver
it), on SIGINT/SIGTERM or after ``--timeout`` s. ``--linger -1`` keeps it running until killed.
"""
import argparse
import sys
import time

from gnuradio import gr, zeromq
from gnuradio import semcom
from gnuradio.semcom.blocks.grlog import gr_log_option

import common


class zmq_tx(gr.top_block):
    def __init__(self, frames=20, payload_len=1024, seed=0, interval=0.01, codec_id=0, scale=1.0,
                 tail_symbols=10, profile="wifi64", header_modulation="bpsk", port=common.DEFAULT_TX_PORT):
        gr.top_block.__init__(self, "semcom ZMQ TX")
        self.src = semcom.feature_source(n_frames=frames, payload_len=payload_len, seed=seed,
                                         interval_s=interval, codec_id=codec_id)
        self.tx = semcom.ofdm_tx(profile=profile, header_modulation=header_modulation, codec_id=codec_id,
                                 scale=scale, tail_symbols=tail_symbols, max_payload_len=payload_len)
        self.sink = zeromq.push_sink(gr.sizeof_gr_complex, 1, common.address(port), 100, False, -1)
        self.msg_connect(self.src, "out", self.tx, "in")
        self.connect(self.tx, self.sink)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=20, help="frames to send (default %(default)s)")
    p.add_argument("--payload-len", type=int, default=1024, help="feature symbols per frame")
    p.add_argument("--seed", type=int, default=0, help="feature seed (the RX monitor must use the same)")
    p.add_argument("--codec-id", type=int, default=0, help="codec id written in every header")
    p.add_argument("--interval", type=float, default=0.01, help="seconds between frames (0: all at once)")
    p.add_argument("--scale", type=float, default=1.0, help="TX output scale (receiver is scale-invariant)")
    p.add_argument("--tail-symbols", type=int, default=10,
                   help="empty OFDM symbols after every burst (>= 8 for wifi64 so the last frame flushes)")
    p.add_argument("--linger", type=float, default=3.0,
                   help="seconds to keep running after the last frame (-1: until killed/timeout)")
    common.add_common_args(p, ports=("tx",))
    gr_log_option(p)
    a = p.parse_args(argv)

    tb = zmq_tx(a.frames, a.payload_len, a.seed, a.interval, a.codec_id, a.scale, a.tail_symbols,
                a.profile, a.header_modulation, a.tx_port)
    stop = common.StopFlag()
    t_done = [None]

    def done():
        if not tb.src.done():
            return False
        if t_done[0] is None:
            t_done[0] = time.monotonic()
            print(f"[tx] {tb.src.sent} frames handed to the TX", flush=True)
        return a.linger >= 0 and time.monotonic() - t_done[0] >= a.linger

    print(f"[tx] {a.frames} frames x {a.payload_len} symbols -> PUSH {common.address(a.tx_port)}", flush=True)
    common.run_until(tb, done, a.timeout, stop)
    print(f"[tx] stopped: {tb.src.sent} frames, {tb.sink.nitems_read(0)} samples pushed, "
          f"{tb.tx.dropped()} dropped", flush=True)
    return 0 if tb.src.sent == a.frames else 1


if __name__ == "__main__":
    sys.exit(main())
