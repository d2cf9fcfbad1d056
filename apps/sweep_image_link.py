#!/usr/bin/env python3
"""Resumable sweep: codec × ρ × channel (AWGN, Rayleigh, TDL …) × SNR grid × seeds → CSV + plots.

Each finished grid point is appended to the CSV at once; a rerun with the same CSV skips
the points already there, so an interrupted sweep resumes where it stopped. Plots
(PSNR and MS-SSIM vs SNR) and an HTML report are rebuilt from the whole CSV at the end.

Example:  python3 apps/sweep_image_link.py --out sweep --channel awgn rayleigh tdl-a --rho 1/6 1/12 1/24 --seeds 0 1
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from image_link import configs, options  # noqa: E402

from gnuradio.semcom import report  # noqa: E402
from gnuradio.semcom.blocks.image_link import point_key, run_points  # noqa: E402
from gnuradio.semcom.blocks.grlog import gr_log_option  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    options(ap, snrs=(-5, 0, 5, 10, 15, 20), limit=2)
    ap.add_argument("--out", default="semcom_sweep", help="output folder (results.csv, plots, report.html)")
    ap.add_argument("--scenario", default="image_link", choices=["image_link"], help="scenario to sweep")
    gr_log_option(ap)
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    a.image_dir = ""
    csv_path = os.path.join(a.out, "results.csv")
    done = {point_key(r) for r in report.read_rows(csv_path)} if os.path.exists(csv_path) else set()
    todo = [c for c in configs(a) if point_key(c) not in done]
    print(f"sweep: {len(todo)} grid points to run, {len(done)} already in {csv_path}")
    run_points(todo, on_result=lambda cfg, res: report.write_rows(res["rows"], csv_path, append=True),
               progress=not a.quiet)
    rows = report.read_rows(csv_path)
    summary = report.summarize(rows)
    for metric, label in (("psnr", "PSNR (dB)"), ("ms_ssim", "MS-SSIM")):
        with open(os.path.join(a.out, f"{metric}_vs_snr.png"), "wb") as f:
            f.write(report.plot_vs_snr(summary, metric, label, f"{a.scenario}: {label}"))
    path = report.write_report(rows, a.out, f"gr-semcom sweep: {a.scenario}", vars(a))
    print(report.format_summary(summary))
    print(f"csv: {os.path.abspath(csv_path)}\nreport: {os.path.abspath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
