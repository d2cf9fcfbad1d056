#!/usr/bin/env python3
"""Benchmark: sustained sample rate of the full image link with the codec in the loop.

image_source → semantic encoder (deep JSCC, ONNX) → OFDM TX → AWGN → OFDM RX → semantic
decoder → image sink, 256×256 images, ρ = 1/12, through GNU Radio, with ``--window``
images in flight. The rate is the number of complex baseband samples that reached the
receiver divided by the wall time of the run (flowgraph start to last decoded image), so
it includes model inference, framing, synchronisation and equalisation (the sink's image
metrics, a measurement and not part of the link, are off). A link running at
≥ 2 MS/s keeps up with a 2 MS/s radio in real time.

Last line of output: ``link_msps: <value>``.
"""
import argparse
import os
import sys

from gnuradio.semcom import codecs
from gnuradio.semcom.blocks.image_link import LinkConfig, parse_rate, run_image_link
from gnuradio.semcom.blocks.grlog import gr_log_option


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", default="jscc", choices=list(codecs.CODECS))
    ap.add_argument("--rho", default="1/12")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--images", type=int, default=40, help="images sent (the 4 sample photos repeated)")
    ap.add_argument("--window", type=int, default=4, help="images in flight")
    ap.add_argument("--snr", type=float, default=10.0)
    ap.add_argument("--profile", default="wide256")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("SEMCOM_ORT_THREADS", "0")) or None,
                    help="onnxruntime intra-op threads (default: onnxruntime's choice)")
    gr_log_option(ap)
    a = ap.parse_args(argv)
    rate = parse_rate(a.rho)
    kw = {"threads": a.threads} if a.codec == "jscc" and a.threads else {}
    codec = codecs.make_codec(a.codec, rate, **kw)
    cfg = LinkConfig(codec=a.codec, rate=rate, size=a.size, snr_db=a.snr, profile=a.profile, window=a.window,
                     repeat=-(-a.images // 4), limit=4, metrics=False)
    run_image_link(LinkConfig(codec=a.codec, rate=rate, size=a.size, snr_db=a.snr, profile=a.profile, limit=1),
                   codec)  # warm-up: sessions, allocations
    res = run_image_link(cfg, codec, timeout_s=600)
    ok = sum(r["status"] == "ok" for r in res["rows"])
    msps = res["samples"] / res["wall_s"] / 1e6
    print(f"{a.codec} rho={a.rho} {a.size}x{a.size} profile={a.profile} window={a.window}: "
          f"{ok}/{len(res['rows'])} images decoded, {res['samples']} samples in {res['wall_s']:.2f} s "
          f"({len(res['rows']) / res['wall_s']:.1f} images/s)")
    print(f"link_msps: {msps:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
