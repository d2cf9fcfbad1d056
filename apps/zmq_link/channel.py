#!/usr/bin/env python3
"""ZMQ link, process 2/3: ZMQ PULL -> semcom channel blocks -> ZMQ PUSH.

    zeromq.pull_source (connect tcp://127.0.0.1:TX_PORT)
      -> [semcom.impairments: timing offset, CFO, SRO]   (only when one is non-zero)
      -> semcom.awgn_channel (Es/N0 = --snr dB per channel use)
      -> zeromq.push_sink (bind tcp://127.0.0.1:RX_PORT)

Noise is added to the samples that arrive: the bursty TX stream stays bursty (no noise is
generated between bursts). SNR convention: Es/N0 per complex channel use with Es = 1 (the
TX's unit-power subcarriers), i.e. noise variance 10^(-snr/10) per sample.

Runs until SIGINT/SIGTERM or ``--timeout`` seconds.
"""
import argparse
import sys

from gnuradio import gr, zeromq
from gnuradio import semcom
from gnuradio.semcom.blocks.grlog import gr_log_option

import common


class zmq_channel(gr.top_block):
    def __init__(self, snr_db=20.0, cfo=0.0, samp_rate=1e6, timing_offset=0.0, sro_ppm=0.0, seed=0,
                 tx_port=common.DEFAULT_TX_PORT, rx_port=common.DEFAULT_RX_PORT):
        gr.top_block.__init__(self, "semcom ZMQ channel")
        self.src = zeromq.pull_source(gr.sizeof_gr_complex, 1, common.address(tx_port), 100, False, -1)
        self.awgn = semcom.awgn_channel(snr_db=snr_db, seed=seed)
        self.sink = zeromq.push_sink(gr.sizeof_gr_complex, 1, common.address(rx_port), 100, False, -1)
        chain = [self.src]
        if cfo or timing_offset or sro_ppm:
            self.imp = semcom.impairments(cfo=cfo, sample_rate=samp_rate, timing_offset=timing_offset,
                                          sro_ppm=sro_ppm)
            chain.append(self.imp)
        chain += [self.awgn, self.sink]
        self.connect(*chain)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--snr", type=float, default=20.0, help="Es/N0 in dB (inf: no noise)")
    p.add_argument("--cfo", type=float, default=0.0, help="carrier offset in Hz (with --samp-rate)")
    p.add_argument("--samp-rate", type=float, default=1e6, help="sample rate in Hz, for --cfo only")
    p.add_argument("--timing-offset", type=float, default=0.0, help="delay in samples (fractional ok)")
    p.add_argument("--sro-ppm", type=float, default=0.0, help="sample-rate offset (ppm)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    common.add_common_args(p, ports=("tx", "rx"))
    gr_log_option(p)
    a = p.parse_args(argv)

    tb = zmq_channel(a.snr, a.cfo, a.samp_rate, a.timing_offset, a.sro_ppm, a.seed, a.tx_port, a.rx_port)
    print(f"[channel] PULL {common.address(a.tx_port)} -> snr={a.snr} dB cfo={a.cfo} Hz "
          f"(fs={a.samp_rate:g}) timing={a.timing_offset} sro={a.sro_ppm} ppm -> PUSH "
          f"{common.address(a.rx_port)}", flush=True)
    common.run_until(tb, lambda: False, a.timeout, common.StopFlag())
    print(f"[channel] stopped: {tb.sink.nitems_read(0)} samples forwarded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
