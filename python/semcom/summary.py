"""One-line texts of what a link run received (printed by the sink blocks when a flowgraph ends).

Plain Python over the row dicts the ``image_sink`` and ``link_monitor`` blocks keep, with
``report``'s definitions of a received image and of a mean; no GNU Radio import. ``Tally``
holds what the summaries need of every row in constant memory, so that a block which keeps
only its latest rows still summarises the whole run.
"""
from __future__ import annotations

import math
import numbers

from .report import received

__all__ = ["image_line", "image_summary", "frame_line", "frame_summary", "missing", "Tally", "SEQ_SPACE"]

#: sequence numbers are 16 bits (image id mod 2^16)
SEQ_SPACE = 1 << 16


def missing(seqs, expected: int) -> list[int]:
    """Sequence numbers in 0 … max(expected, highest seen + 1) - 1 that never arrived."""
    seen = set(int(s) for s in seqs if int(s) >= 0)
    n = max(int(expected), max(seen) + 1 if seen else 0)
    return [k for k in range(n) if k not in seen]


class Tally:
    """Running counts of a stream of row dicts, in constant memory: rows added, rows received
    (``report.received``), the sequence numbers seen (16 bits) and, per numeric key, the sum and
    count of its finite values over all rows and over the received ones (for ``mean``)."""

    def __init__(self, rows=()):
        self.rows = 0
        self.ok = 0
        self._seen = bytearray(SEQ_SPACE)
        self._highest = -1
        self._sums: dict[tuple[str, bool], list] = {}
        for r in rows:
            self.add(r)

    def add(self, row: dict) -> None:
        self.rows += 1
        ok = received(row)
        self.ok += ok
        seq = row.get("seq", -1)
        if isinstance(seq, numbers.Integral) and 0 <= seq < SEQ_SPACE:
            self._seen[seq] = 1
            self._highest = max(self._highest, int(seq))
        for key, v in row.items():
            if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v):
                for which in ((key, False), (key, True)) if ok else ((key, False),):
                    acc = self._sums.setdefault(which, [0.0, 0])
                    acc[0] += float(v)
                    acc[1] += 1

    def mean(self, key: str, ok_only: bool = False) -> float:
        """Mean of the finite values of ``key`` (over the received rows with ``ok_only``); NaN when none."""
        s, n = self._sums.get((key, bool(ok_only)), (0.0, 0))
        return s / n if n else float("nan")

    def missing(self, expected: int) -> list[int]:
        """Like ``missing``: sequence numbers up to max(expected, highest seen + 1) never seen."""
        n = max(int(expected), self._highest + 1)
        return [k for k in range(n) if k >= SEQ_SPACE or not self._seen[k]]


def _tally(rows) -> Tally:
    return rows if isinstance(rows, Tally) else Tally(rows)


def image_line(row: dict) -> str:
    """``image seq=0 name=astronaut codec=jscc status=ok snr_est=5.02 dB psnr=24.31 dB``."""
    return (f"image seq={row['seq']} name={row['name'] or '?'} codec={row['codec']} status={row['status']} "
            f"snr_est={row['snr_est_db']:.2f} dB psnr={row['psnr']:.2f} dB")


def image_summary(rows, expected: int) -> str:
    """``images: received 3/3, ok 3, lost 0, mean PSNR 24.10 dB over the ok ones`` (expected: images
    the source sends; ``rows``: the sink's rows or a ``Tally`` of them). Images with nothing
    decoded (a failed CRC, no usable rate) are counted, not averaged: their PSNR is that of the
    placeholder shown instead."""
    t = _tally(rows)
    lost = t.missing(expected)
    sent = max(int(expected), t.rows + len(lost))
    return (f"images: received {t.rows}/{sent}, ok {t.ok}, lost {len(lost)}, "
            f"mean PSNR {t.mean('psnr', ok_only=True):.2f} dB over the ok ones, "
            f"mean est. SNR {t.mean('snr_est_db'):.2f} dB")


def frame_line(row: dict) -> str:
    """``frame seq=    3 len=  1024 nmse= -29.80 dB  snr_est= 29.90 dB (true  30.00)  cfo=+0.100  header_failures=0``."""
    return (f"frame seq={row['seq']:5d} len={row['payload_len']:6d} nmse={row['nmse_db']:7.2f} dB  "
            f"snr_est={row['snr_est_db']:6.2f} dB (true {row['true_snr_db']:6.2f})  "
            f"cfo={row['cfo']:+.3f}  header_failures={row['header_failures']}")


def frame_summary(rows, expected: int = 0, header_failures: int = 0) -> str:
    """``frames: received 5/5, lost 0, mean NMSE -29.8 dB, mean est. SNR 30.1 dB, header failures 0``
    (``rows``: the monitor's rows or a ``Tally`` of them)."""
    t = _tally(rows)
    lost = t.missing(expected)
    sent = max(int(expected), t.rows + len(lost))
    return (f"frames: received {t.rows}/{sent}, lost {len(lost)}, mean NMSE {t.mean('nmse_db'):.2f} dB, "
            f"mean est. SNR {t.mean('snr_est_db'):.2f} dB, header failures {int(header_failures)}")
