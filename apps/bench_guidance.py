#!/usr/bin/env python3
"""Guidance latency of the embedded backend (MLLM-SC): per image, measured side by side in one run.

For each image (scikit-image's sample photos and the synthetic harbour scene, at --size and
at their native size): the first phrase on a new image (image features + text + map), a
second phrase on the same image (features cached), and the whole ``make_guidance`` (question
analysis + map + policy). Medians over --runs. The last line is
``guidance_ms_per_image: <median first-phrase latency at --size>``.
"""
import argparse
import logging
import os
import statistics
import sys
import time

from gnuradio.semcom.blocks.grlog import gr_log_option

HERE = os.path.dirname(os.path.abspath(__file__))


def _ms(fn, runs):
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: the runtime's)")
    gr_log_option(ap)
    a = ap.parse_args(argv)

    from gnuradio.semcom.guidance import make_segmenter
    from gnuradio.semcom.guidance.policy import make_guidance
    from gnuradio.semcom.images import load_images

    logging.getLogger("gr-semcom.guidance").setLevel(logging.ERROR)  # fallbacks are expected on some images
    seg = make_segmenter("embedded", threads=a.threads)
    sources = ["sample:astronaut", "sample:coffee", "sample:chelsea", "sample:rocket",
               os.path.join(HERE, "data", "city_across_sea.png")]
    firsts = []
    print(f"{'image':<22}{'size':>10}{'first phrase':>14}{'2nd phrase':>12}{'make_guidance':>15}  (ms, median of {a.runs})")
    for size in (a.size, 0):
        for src in sources:
            img = load_images(src, size).items[0].pixels
            seg.heatmap(img, "warm up")
            n = iter(range(1, 10 ** 6))

            def fresh():  # an image and a phrase the segmenter has not seen (its caches miss)
                k = next(n)
                x = img.copy()
                x[0, 0, 0] ^= k & 0xFF
                x[0, 1, 0] ^= k >> 8
                return x, f"the main object number {k}"

            def first():
                seg.heatmap(*fresh())

            def second():
                seg.heatmap(img, f"what is in the background, {next(n)}")

            def whole():
                x, _ = fresh()
                make_guidance(x, f"What color is object {next(n)}?", 5.0, 1 / 12, seg)

            t1, t2, tg = _ms(first, a.runs), _ms(second, a.runs), _ms(whole, a.runs)
            if size == a.size:
                firsts.append(t1)
            name = os.path.basename(src).replace("sample:", "")
            print(f"{name:<22}{f'{img.shape[1]}x{img.shape[0]}':>10}{t1:14.1f}{t2:12.1f}{tg:15.1f}")
    print(f"guidance_ms_per_image: {statistics.median(firsts):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
