#!/usr/bin/env python3
"""Soak benchmark: memory of the image link over thousands of images (is it bounded?).

Pushes ``--images`` small synthetic images (``--size``×``--size``, generated here, a few
distinct ones repeated) through the whole GNU Radio image link (image_source → semantic
encoder → OFDM TX → AWGN → OFDM RX → semantic decoder → image sink, stop-and-wait), and
samples the process's resident memory (RSS, ``/proc/self/status`` VmRSS) every ``--every``
images. It prints a table (images done, seconds, RSS) and the RSS slope after warm-up: the
least-squares line through the samples of the second half of the run (``--warmup``), in MB
per 1000 images. A link
that keeps nothing per image has a slope near 0 (goal: < 0.1 MB / 1000 images); the
exit status is 1 when the slope exceeds ``--max-slope`` (or images went missing). The blocks
keep their latest ``--history`` records (ring buffers); the default is smaller than the run
so that they are full before the fit starts.

``--tracemalloc`` also traces Python allocations and prints the places whose memory grew
most between the first sample after warm-up and the end (to find what grows; slower, and its
own bookkeeping adds to the RSS, so judge the slope without it).

Last line of output: ``rss_slope_mb_per_1000_images: <value>``.
"""
import argparse
import gc
import math
import os
import resource
import sys
import tempfile
import time

import numpy as np

from gnuradio.semcom import codecs
from gnuradio.semcom.blocks.grlog import gr_log_option
from gnuradio.semcom.blocks.image_link import LinkConfig, image_link_flowgraph, parse_rate


def rss_mb() -> float:
    """Resident set size of this process [MB] (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def slope_per_1000(xs, ys) -> float:
    """Least-squares slope of ys over xs, times 1000 (nan with fewer than 2 points)."""
    if len(xs) < 2:
        return math.nan
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0]) * 1000.0


def write_images(folder: str, n: int, size: int, seed: int = 0) -> None:
    """n smooth synthetic colour images (gradients + a few blobs) as PNGs in ``folder``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    for k in range(n):
        chans = []
        for _ in range(3):
            a, b, c = rng.uniform(-1, 1, 3)
            v = 0.5 + 0.3 * (a * x + b * y) + 0.2 * np.sin(2 * np.pi * (c * x + rng.uniform() * y) * 2)
            chans.append(v)
        img = np.clip(np.stack(chans, -1) * 255, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(folder, f"soak{k:02d}.png"))


def progress(total: int, quiet: bool):
    """A tqdm bar when tqdm is installed (and not --quiet), else None (plain prints)."""
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="soak", unit="img", dynamic_ncols=True, file=sys.stderr)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000, help="images pushed through the link (default 5000)")
    ap.add_argument("--size", type=int, default=32, help="side of the square synthetic images [pixels] (default 32)")
    ap.add_argument("--distinct", type=int, default=8, help="distinct synthetic images, repeated (default 8)")
    ap.add_argument("--codec", default="jscc", choices=list(codecs.CODECS))
    ap.add_argument("--rho", default="1/12")
    ap.add_argument("--snr", type=float, default=10.0)
    ap.add_argument("--profile", default="wide256")
    ap.add_argument("--window", type=int, default=2, help="images in flight (default 2)")
    ap.add_argument("--history", type=int, default=1000,
                    help="records each block keeps in memory (default 1000: their ring buffers fill during "
                         "the warm-up, so the fit sees the steady state)")
    ap.add_argument("--every", type=int, default=0, help="RSS sample every N images (default: images / 20)")
    ap.add_argument("--warmup", type=float, default=0.5,
                    help="fraction of the run before the slope fit starts (default 0.5: the second half)")
    ap.add_argument("--max-slope", type=float, default=0.1,
                    help="largest acceptable RSS slope [MB per 1000 images] (default 0.1); above it: exit status 1")
    ap.add_argument("--metrics", action="store_true", help="score every image at the sink (slower)")
    ap.add_argument("--tracemalloc", action="store_true", help="also report the Python allocations that grew most")
    ap.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    gr_log_option(ap)
    a = ap.parse_args(argv)
    if a.images < 10 or a.size < 8 or a.distinct < 1 or not 0 <= a.warmup < 1:
        raise SystemExit("error: --images >= 10, --size >= 8, --distinct >= 1 and 0 <= --warmup < 1 required")
    every = a.every or max(1, a.images // 20)
    rate = parse_rate(a.rho)
    codec = codecs.make_codec(a.codec, rate)
    if a.tracemalloc:
        import tracemalloc

        tracemalloc.start(8)
    with tempfile.TemporaryDirectory(prefix="semcom_soak_") as folder:
        write_images(folder, a.distinct, a.size)
        cfg = LinkConfig(codec=a.codec, rate=rate, images=folder, size=0, snr_db=a.snr, profile=a.profile,
                         window=a.window, repeat=-(-a.images // a.distinct), metrics=a.metrics, history=a.history)
        tb = image_link_flowgraph(cfg, codec)
        total = tb.src.total
        samples = []  # (images done, seconds, RSS MB, traced Python MB)
        snap0 = None
        bar = progress(total, a.quiet)
        gc.collect()
        t0 = time.time()
        samples.append((0, 0.0, rss_mb(), 0.0))
        tb.start()
        try:
            shown, next_at, idle_since = 0, every, None
            while time.time() - t0 < a.timeout:
                done = tb.sink.count()
                if bar is not None and done > shown:
                    bar.update(done - shown)
                shown = done
                if done >= next_at or done >= total:
                    gc.collect()
                    traced = tracemalloc.get_traced_memory()[0] / 2**20 if a.tracemalloc else math.nan
                    samples.append((done, time.time() - t0, rss_mb(), traced))
                    if a.tracemalloc and snap0 is None and done >= a.warmup * total:
                        snap0 = tracemalloc.take_snapshot()
                    if bar is None and not a.quiet:
                        print(f"{done:7d}/{total} images  {samples[-1][1]:7.1f} s  RSS {samples[-1][2]:8.1f} MB",
                              flush=True)
                    next_at = (done // every + 1) * every
                if done >= total:
                    break
                if tb.src.finished():  # the source has given up on its last images: lost frames
                    idle_since = idle_since or time.time()
                    if time.time() - idle_since > 2.0:
                        break
                time.sleep(0.01)
        finally:
            tb.stop()
            tb.wait()
            if bar is not None:
                bar.close()
    wall = time.time() - t0
    done = tb.sink.count()
    ok = tb.dec.decoded
    print(f"\n{a.codec} rho={a.rho} {a.size}x{a.size} profile={a.profile} window={a.window}: "
          f"{done}/{total} images in {wall:.1f} s ({done / max(wall, 1e-9):.1f} images/s), {ok} decoded, "
          f"{tb.sink.dropped()} dropped at the sink, {tb.enc.failed} encoder failures")
    traced_col = a.tracemalloc
    print(f"{'images':>8} {'seconds':>9} {'RSS MB':>9}" + (f" {'py MB':>8}" if traced_col else ""))
    for n, t, r, p in samples:
        print(f"{n:8d} {t:9.1f} {r:9.1f}" + (f" {p:8.2f}" if traced_col else ""))
    fit = [s for s in samples if s[0] >= a.warmup * total]
    slope = slope_per_1000([s[0] for s in fit], [s[2] for s in fit])
    print(f"RSS {samples[0][2]:.1f} MB at start, {samples[-1][2]:.1f} MB at the end; fit over {len(fit)} samples "
          f"from image {fit[0][0] if fit else 0}")
    if traced_col:
        print(f"traced Python heap slope: {slope_per_1000([s[0] for s in fit], [s[3] for s in fit]):.3f} MB / 1000 images")
        if snap0 is not None:
            import tracemalloc

            print("largest growth of Python allocations since warm-up:")
            for st in tracemalloc.take_snapshot().compare_to(snap0, "traceback")[:8]:
                where = " < ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(st.traceback[-3:]))
                print(f"  {st.size_diff / 1024:+9.1f} KiB {st.count_diff:+7d} blocks  {where}")
    print(f"rss_slope_mb_per_1000_images: {slope:.3f}")
    if done < total:
        print(f"error: only {done} of {total} images reached the sink", file=sys.stderr)
        return 1
    if not slope <= a.max_slope:
        print(f"error: RSS grows {slope:.3f} MB per 1000 images (> --max-slope {a.max_slope})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
