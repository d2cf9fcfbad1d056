#!/usr/bin/env python3
"""VLF-MSC link: one vision-language feature per image, a caption and an image from it.

Headless twin of apps/vlf_link.grc (the same options, the same graph, built by
``semcom.blocks.vlf_link``): images (default: the first 8 scenes of the synthetic benchmark's
test split, 256×256) → VLF encoder → OFDM TX → channel → OFDM RX → VLF caption decoder + VLF
image decoder (one received feature feeds both) → VLF sink, whose ack sends the next image
(stop-and-wait). The decoders only get the receiver's own estimates, never the channel's SNR.

Prints one line per image (name, the receiver's estimated SNR, the decoders' status, the
caption) and a summary; writes the received images (<name>_vlf.png) and captions.csv (one row
per image: caption, statuses, estimated SNR, latencies, channel uses; for scene images also the
caption's exact attribute accuracy against the scene, ``scenes.caption_accuracy``) to --out.
Exit status 0 when every image got through, 1 otherwise.

Example:  python3 apps/vlf_link.py --snr 0 --channel rayleigh --limit 4 --steps 20
"""
import argparse
import csv
import math
import os
import sys
import time

from gnuradio import semcom
from gnuradio.semcom.blocks.grlog import gr_log_option
from gnuradio.semcom.blocks.image_link import CHANNELS
from gnuradio.semcom.blocks.vlf_link import VlfLinkConfig, run_vlf_link

FIELDS = ("image_id", "name", "seq", "snr_est_db", "caption_status", "caption", "caption_accuracy", "image_status",
          "file", "caption_latency_s", "image_latency_s", "n_symbols", "bcr")


def options(ap: argparse.ArgumentParser):
    """The options of apps/vlf_link.grc (same names), plus the headless ones."""
    ap.add_argument("--snr", type=float, default=5.0, help="channel SNR, Es/N0 per channel use [dB] (default 5)")
    ap.add_argument("--channel", default="awgn", choices=list(CHANNELS),
                    help="channel model (default awgn; rayleigh/rician: flat fading, fD*Ts --fdts)")
    ap.add_argument("--images", default="scenes:test:8",
                    help="scenes:SPLIT[:N], a folder, a file or sample:NAME,... (default scenes:test:8)")
    ap.add_argument("--size", type=int, default=256, help="centre-crop + resize to N×N [pixels], 0 = native (default 256)")
    ap.add_argument("--limit", type=int, default=0, help="use the first N images, 0 = all (default 0)")
    ap.add_argument("--steps", type=int, default=0, help="DDIM steps of the image decoder, 0 = the model's default")
    ap.add_argument("--backend", default="embedded",
                    help="'embedded' (the models in models/) or 'reference:PATH' (export_vlf_reference's directory)")
    ap.add_argument("--out", default="received_vlf", help="folder for the received images and captions.csv "
                                                          "(default ./received_vlf)")
    ap.add_argument("--captions-only", action="store_true", help="no image decoder (no diffusion): captions only")
    ap.add_argument("--profile", default="wide256", choices=sorted(semcom.phy.PROFILES), help="OFDM profile")
    ap.add_argument("--fdts", type=float, default=1e-5, help="normalised Doppler fD*Ts of the fading channels")
    ap.add_argument("--seed", type=int, default=0, help="channel and diffusion seed (default 0)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="stop after this many seconds in any case [s]")


def config(a) -> VlfLinkConfig:
    """The link configuration of the parsed options; bad values exit with a clear error."""
    for name in ("size", "limit", "steps"):
        if getattr(a, name) < 0:
            raise SystemExit(f"error: --{name} must be >= 0, got {getattr(a, name)}")
    if not math.isfinite(a.snr):
        raise SystemExit(f"error: --snr must be finite, got {a.snr}")
    try:
        semcom.images.load_images(a.images or None, a.size, a.limit)
        semcom.vlf_codec(a.backend)  # a missing backend or model fails here, before the flowgraph starts
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}")
    return VlfLinkConfig(images=a.images, size=a.size, limit=a.limit, snr_db=a.snr, channel=a.channel,
                         profile=a.profile, backend=a.backend, steps=a.steps, draw_images=not a.captions_only,
                         seed=a.seed, fdts=a.fdts)


def caption_accuracy(name, caption):
    """Overall attribute accuracy (0-1) of a caption against the scene an image named
    scene_<seed> shows (an empty caption, nothing decoded, scores 0); nan for other images."""
    seed = semcom.images.scene_seed(name)
    if seed is None:
        return math.nan
    from gnuradio.semcom.datasets import scenes

    return float(scenes.caption_accuracy(caption or "", scenes.generate(seed))["overall"])


def line(row) -> str:
    status = row["caption_status"] + (f"/{row['image_status']}" if row.get("image_status") else "")
    return f"{row['name']} snr_est_db={row['snr_est_db']:.2f} status={status} caption=\"{row['caption']}\""


def write_outputs(rows, out):
    """<name>_vlf.png per drawn image and captions.csv; returns the CSV path."""
    from PIL import Image

    os.makedirs(out, exist_ok=True)
    for r in rows:
        r["file"] = ""
        if r.get("image") is not None:
            r["file"] = os.path.splitext(os.path.basename(r["name"]))[0] + "_vlf.png"
            Image.fromarray(r["image"]).save(os.path.join(out, r["file"]))
    path = os.path.join(out, "captions.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in FIELDS})
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    options(ap)
    gr_log_option(ap)
    a = ap.parse_args(argv)
    cfg = config(a)
    print(f"semcom VLF-MSC link: {a.images}, {a.size or 'native'} px, channel {a.channel} at {a.snr:g} dB, "
          f"backend {a.backend}, DDIM steps {a.steps or 'model default'}", flush=True)
    t0 = time.time()
    res = run_vlf_link(cfg, timeout_s=a.timeout)
    rows = res["rows"]
    for r in rows:
        r["caption_accuracy"] = caption_accuracy(r["name"], r["caption"])
        print(line(r), flush=True)
    csv_path = write_outputs(rows, a.out)
    lost = sum(r["caption_status"] == "lost" for r in rows)
    ok = sum(r["caption_status"] in ("ok", "truncated") for r in rows)
    acc = [r["caption_accuracy"] for r in rows if not math.isnan(r["caption_accuracy"])]
    n_sym = max((r["n_symbols"] for r in rows), default=0)
    bcr = next((r["bcr"] for r in rows if not math.isnan(r["bcr"])), math.nan)
    print(f"--- {len(rows) - lost}/{len(rows)} frames received, lost {lost}, captions decoded {ok}, "
          f"header failures {res['header_failures']}; {n_sym} channel uses per image (BCR {bcr:.4g}); "
          + (f"mean caption accuracy {sum(acc) / len(acc):.3f} over {len(acc)} scenes; " if acc else "")
          + f"{time.time() - t0:.1f} s")
    print(f"images and captions: {os.path.abspath(a.out)}  ({os.path.basename(csv_path)})")
    return 0 if rows and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
