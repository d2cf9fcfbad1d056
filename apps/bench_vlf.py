#!/usr/bin/env python3
"""VLF-MSC latency benchmark: each encoder and decoder per image on this CPU, and whether the
flowgraph keeps running while the language model and the diffusion model work.

Part 1 (cores, ONNX Runtime, ``--threads`` intra-op threads): the VLF encoder, the caption
decoder (soft prompt + greedy LM), the image decoder (VLF-conditioned latent diffusion, DDIM
``--steps``), and the baselines' decoders (DeepSC, ASCII + Hamming(7,4) + 16-QAM, Img2Img-SC),
median over ``--reps`` runs on benchmark scenes.

Part 2 (GNU Radio): ``--frames`` VLF frames sent back to back through ofdm_tx → AWGN →
ofdm_rx → caption and image decoders. Printed side by side: when the receiver had handed
over the last frame, when the last caption and the last image came out. The receiver and
the caption decoder finish long before the image decoder: the diffusion runs in its own
block's thread and stalls nothing.

Example:  python3 apps/bench_vlf.py --reps 3 --steps 20
"""
import argparse
import statistics
import sys
import time

import numpy as np

from gnuradio.semcom.blocks.grlog import gr_log_option


def median_ms(fn, reps):
    fn()  # warm-up (session creation, first allocation)
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(1e3 * (time.perf_counter() - t))
    return statistics.median(out)


def part1(a):
    from gnuradio.semcom.blocks.vlf import vlf_codec
    from gnuradio.semcom.codecs import Csi
    from gnuradio.semcom.codecs.vlf import noisy_feature
    from gnuradio.semcom.images import load_images

    img = load_images("scenes:test:1", 256).items[0].pixels
    c = vlf_codec(a.backend, steps=a.steps, threads=a.threads)
    v = c.features(img)
    vn = noisy_feature(v, 5.0, np.random.default_rng(0))
    rows = [("VLF encoder (image → N×d feature)", median_ms(lambda: c.features(img), a.reps)),
            ("VLF caption decoder (soft prompt + greedy LM)", median_ms(lambda: c.caption_from_feature(vn), a.reps)),
            (f"VLF image decoder (latent diffusion, {c.steps or 'default'} DDIM steps)",
             median_ms(lambda: c.image_from_feature(vn, 256, 256), max(1, a.reps // 2)))]
    cap = c.caption(img)
    from gnuradio.semcom.codecs.text_baselines import AsciiHammingCodec

    asc = AsciiHammingCodec()
    e = asc.encode(cap)
    rows.append(("ASCII + Hamming(7,4) + 16-QAM decoder", median_ms(lambda: asc.decode(e.symbols, e.side_info), a.reps)))
    try:
        from gnuradio.semcom.codecs.deepsc import DeepScCodec

        ds = DeepScCodec(threads=a.threads)
        e2 = ds.encode(cap)
        rows.append(("DeepSC decoder", median_ms(lambda: ds.decode(e2.symbols, e2.side_info, Csi(5.0)), a.reps)))
    except Exception as err:  # a backend without the model: say so
        rows.append((f"DeepSC decoder (not run: {err})", float("nan")))
    try:
        from gnuradio.semcom.codecs.img2img_sc import Img2ImgScCodec

        ii = Img2ImgScCodec(models_dir=c.models_dir, threads=a.threads, steps=a.steps or None)
        e3 = ii.encode(img, caption=cap)
        rows.append(("Img2Img-SC decoder (caption + latent, diffusion)",
                     median_ms(lambda: ii.decode(e3.symbols, e3.side_info, Csi(5.0, 10 ** -0.5)), max(1, a.reps // 2))))
    except Exception as err:
        rows.append((f"Img2Img-SC decoder (not run: {err})", float("nan")))
    print(f"\nPart 1: latency per image, median of {a.reps} (ONNX Runtime, {a.threads or 'default'} thread(s))")
    for name, ms in rows:
        print(f"  {name:62s} {ms:9.1f} ms")
    return rows


def part2(a):
    from gnuradio.semcom.blocks import vlf_link as vl
    from gnuradio.semcom.blocks.vlf import vlf_codec
    from gnuradio.semcom.images import load_images

    img = load_images("scenes:test:1", 256).items[0].pixels
    c = vlf_codec(a.backend, steps=a.steps, threads=a.threads)
    enc = c.encode(img)
    cfg = vl.VlfLinkConfig(snr_db=10.0, profile="wide256", frame_timeout_s=0.05, backend=a.backend, steps=a.steps)
    frames = [(c.codec_id, enc.symbols, enc.side_info)] * a.frames

    tb = vl.vlf_decoders_flowgraph(frames, cfg, threads=a.threads)
    t0 = time.monotonic()
    tb.start()
    try:
        while tb.sink.count() < a.frames and time.monotonic() - t0 < a.timeout:
            time.sleep(0.01)
    finally:
        tb.stop()
        tb.wait()
    rx_done = tb.cap.count()
    cap_t = [r.get("caption_latency_s", 0) for r in tb.sink.rows]
    print(f"\nPart 2: {a.frames} VLF frames back to back through GNU Radio (wide256, 10 dB)")
    print(f"  frames handed over by the receiver: {rx_done}/{a.frames}; images drawn: {tb.imgd.decoded}; "
          f"captions: {tb.capd.decoded}")
    print(f"  caption decoder busy {tb.capd.busy_s:7.2f} s   image decoder busy {tb.imgd.busy_s:7.2f} s   "
          f"ratio image/caption {tb.imgd.busy_s / max(tb.capd.busy_s, 1e-9):6.1f}")
    last = tb.sink.rows[-1]["t"] if len(tb.sink.rows) else float("nan")
    print(f"  wall time until the last frame had both outputs: {last:7.2f} s (mean caption latency "
          f"{1e3 * float(np.mean(cap_t)) if cap_t else float('nan'):.1f} ms)")
    return tb


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="embedded", help="'embedded' or 'reference:PATH'")
    ap.add_argument("--steps", type=int, default=0, help="DDIM steps (0: the model's default)")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per item")
    ap.add_argument("--frames", type=int, default=4, help="frames of part 2")
    ap.add_argument("--timeout", type=float, default=600.0, help="part 2 time limit [s]")
    ap.add_argument("--part", choices=["1", "2", "both"], default="both")
    gr_log_option(ap)
    a = ap.parse_args(argv)
    if a.part in ("1", "both"):
        part1(a)
    if a.part in ("2", "both"):
        part2(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
