"""One-line texts of what a link run received (printed by the sink blocks when a flowgraph ends).

Plain Python over the row dicts the ``image_sink`` and ``link_monitor`` blocks keep, with
``report``'s definitions of a received image and of a mean; no GNU Radio import.
"""
from __future__ import annotations

from .report import mean_finite as _mean, received

__all__ = ["image_line", "image_summary", "frame_line", "frame_summary", "missing"]


def missing(seqs, expected: int) -> list[int]:
    """Sequence numbers in 0 … max(expected, highest seen + 1) - 1 that never arrived."""
    seen = set(int(s) for s in seqs if int(s) >= 0)
    n = max(int(expected), max(seen) + 1 if seen else 0)
    return [k for k in range(n) if k not in seen]


def image_line(row: dict) -> str:
    """``image seq=0 name=astronaut codec=jscc status=ok snr_est=5.02 dB psnr=24.31 dB``."""
    return (f"image seq={row['seq']} name={row['name'] or '?'} codec={row['codec']} status={row['status']} "
            f"snr_est={row['snr_est_db']:.2f} dB psnr={row['psnr']:.2f} dB")


def image_summary(rows, expected: int) -> str:
    """``images: received 3/3, ok 3, lost 0, mean PSNR 24.10 dB over the ok ones`` (expected: images
    the source sends). Images with nothing decoded (a failed CRC, no usable rate) are counted,
    not averaged: their PSNR is that of the placeholder shown instead."""
    lost = missing([r["seq"] for r in rows], expected)
    sent = max(int(expected), len(rows) + len(lost))
    ok = [r for r in rows if received(r)]
    return (f"images: received {len(rows)}/{sent}, ok {len(ok)}, lost {len(lost)}, "
            f"mean PSNR {_mean(r['psnr'] for r in ok):.2f} dB over the ok ones, "
            f"mean est. SNR {_mean(r['snr_est_db'] for r in rows):.2f} dB")


def frame_line(row: dict) -> str:
    """``frame seq=    3 len=  1024 nmse= -29.80 dB  snr_est= 29.90 dB (true  30.00)  cfo=+0.100  header_failures=0``."""
    return (f"frame seq={row['seq']:5d} len={row['payload_len']:6d} nmse={row['nmse_db']:7.2f} dB  "
            f"snr_est={row['snr_est_db']:6.2f} dB (true {row['true_snr_db']:6.2f})  "
            f"cfo={row['cfo']:+.3f}  header_failures={row['header_failures']}")


def frame_summary(rows, expected: int = 0, header_failures: int = 0) -> str:
    """``frames: received 5/5, lost 0, mean NMSE -29.8 dB, mean est. SNR 30.1 dB, header failures 0``."""
    lost = missing([r["seq"] for r in rows], expected)
    sent = max(int(expected), len(rows) + len(lost))
    return (f"frames: received {len(rows)}/{sent}, lost {len(lost)}, mean NMSE {_mean(r['nmse_db'] for r in rows):.2f} dB, "
            f"mean est. SNR {_mean(r['snr_est_db'] for r in rows):.2f} dB, header failures {int(header_failures)}")
