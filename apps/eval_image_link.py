#!/usr/bin/env python3
"""Evaluate any folder of images through the GNU Radio image link, both codecs, over an SNR grid.

One CSV row per (image, codec, ρ, channel, SNR, seed) with PSNR, SSIM, MS-SSIM, the
receiver's estimated SNR and the TX's CSI. Images are used at their native size unless
--size is given (sizes that are not a multiple of the codec's stride are padded and cropped).

Example:  python3 apps/eval_image_link.py --data ../shared/data/val --out val.csv --rho 1/6 1/12 1/24
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from image_link import configs, options  # noqa: E402

from gnuradio.semcom import report  # noqa: E402
from gnuradio.semcom.blocks.image_link import run_points  # noqa: E402
from gnuradio.semcom.blocks.grlog import gr_log_option  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder (or file) of images")
    ap.add_argument("--out", required=True, help="CSV to write")
    options(ap, size=0, limit=0)
    gr_log_option(ap)
    a = ap.parse_args(argv)
    a.images = a.data
    rows = run_points(configs(a), progress=not a.quiet)
    report.write_rows(rows, a.out)
    print(report.format_summary(report.summarize(rows)))
    print(f"csv: {os.path.abspath(a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
