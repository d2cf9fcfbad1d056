#!/usr/bin/env python3
"""Starts the three ZMQ link processes on this machine and checks that the RX got the frames.

    tx.py --tx-port A  ->  channel.py --tx-port A --rx-port B  ->  rx.py --rx-port B

Ports are picked free on 127.0.0.1 unless given. The RX is started first (it only connects),
then the channel and the TX; the TX stays up until the RX has finished (so ZMQ never drops
queued samples), then the TX and the channel are terminated. Exit status: the RX's (0 when at
least --min-fraction of the frames arrived). Needs ``from gnuradio import semcom`` to work
(installed module, e.g. ``make install``).
"""
import argparse
import os
import sys

from gnuradio.semcom.blocks.grlog import gr_log_option

import common

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--payload-len", type=int, default=1024)
    p.add_argument("--snr", type=float, default=20.0, help="Es/N0 (dB) of the channel")
    p.add_argument("--cfo", type=float, default=0.0, help="carrier offset (Hz, at --samp-rate)")
    p.add_argument("--samp-rate", type=float, default=1e6)
    p.add_argument("--timing-offset", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--interval", type=float, default=0.01)
    p.add_argument("--tx-port", type=int, default=0, help="0: pick a free port")
    p.add_argument("--rx-port", type=int, default=0, help="0: pick a free port")
    p.add_argument("--timeout", type=float, default=60.0, help="RX timeout (s)")
    p.add_argument("--min-fraction", type=float, default=1.0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", help="passed to rx.py")
    gr_log_option(p)
    a = p.parse_args(argv)
    tx_port = a.tx_port or common.free_port()
    rx_port = a.rx_port or common.free_port()
    while rx_port == tx_port:
        rx_port = common.free_port()

    py = [sys.executable, "-u"]
    rx_cmd = py + [os.path.join(HERE, "rx.py"), "--rx-port", str(rx_port), "--frames", str(a.frames),
                   "--payload-len", str(a.payload_len), "--seed", str(a.seed), "--snr", str(a.snr),
                   "--timeout", str(a.timeout), "--min-fraction", str(a.min_fraction)]
    rx_cmd += ["--quiet"] if a.quiet else []
    rx_cmd += ["--json", a.json] if a.json else []
    ch_cmd = py + [os.path.join(HERE, "channel.py"), "--tx-port", str(tx_port), "--rx-port", str(rx_port),
                   "--snr", str(a.snr), "--cfo", str(a.cfo), "--samp-rate", str(a.samp_rate),
                   "--timing-offset", str(a.timing_offset), "--seed", str(a.seed + 1),
                   "--timeout", str(a.timeout + 30)]
    tx_cmd = py + [os.path.join(HERE, "tx.py"), "--tx-port", str(tx_port), "--frames", str(a.frames),
                   "--payload-len", str(a.payload_len), "--seed", str(a.seed), "--interval", str(a.interval),
                   "--linger", "-1", "--timeout", str(a.timeout + 30)]
    return common.supervise((rx_cmd, ch_cmd, tx_cmd), a.timeout + 30, "run_all", "rx")


if __name__ == "__main__":
    sys.exit(main())
