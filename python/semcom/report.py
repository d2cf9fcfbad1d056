"""Results of image-link runs: CSV rows, per-point summaries, plots and a self-contained HTML report.

No GNU Radio import; plots use matplotlib's Agg backend and are embedded in the HTML as
base64 PNGs, as are the example images, so the report is one file a person can open or mail.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
from collections import defaultdict

import numpy as np

__all__ = ["ROW_FIELDS", "write_rows", "read_rows", "summarize", "plot_vs_snr", "html_report", "png_data_uri",
           "write_report", "format_summary"]

#: one CSV row per (image, codec, ρ, channel, SNR, seed)
ROW_FIELDS = ("name", "codec", "rho", "rho_actual", "channel", "snr_db", "seed", "status", "snr_est_db", "tx_snr_db",
              "psnr", "ssim", "ms_ssim", "effnet_dist", "n_symbols", "file")
_POINT = ("codec", "rho", "channel", "snr_db")
_FLOATS = ("rho", "rho_actual", "snr_db", "snr_est_db", "tx_snr_db", "psnr", "ssim", "ms_ssim", "effnet_dist")


def write_rows(rows, path: str, append: bool = False, fields=ROW_FIELDS) -> None:
    """Write rows (dicts) with ``fields`` (default ``ROW_FIELDS``) to a CSV (header written
    when the file is new)."""
    new = not (append and os.path.exists(path))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w" if new else "a", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        if new:
            wr.writeheader()
        for r in rows:
            wr.writerow({k: _fmt(r.get(k, "")) for k in fields})


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def read_rows(path: str) -> list[dict]:
    """Rows of a CSV written by ``write_rows``, numbers parsed back."""
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            for k in _FLOATS:
                r[k] = float(r[k]) if r.get(k) not in (None, "") else float("nan")
            for k in ("seed", "n_symbols"):
                r[k] = int(float(r[k])) if r.get(k) not in (None, "") else 0
            out.append(r)
    return out


def summarize(rows) -> list[dict]:
    """Mean metrics per (codec, ρ, channel, SNR): PSNR, SSIM, MS-SSIM, estimated SNR, and
    how many images the receiver had nothing for (``failed``: status other than "ok")."""
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in _POINT)].append(r)
    out = []
    for key, rs in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2], kv[0][3])):
        s = dict(zip(_POINT, key), n=len(rs), failed=sum(r["status"] != "ok" for r in rs))
        for m in ("psnr", "ssim", "ms_ssim", "effnet_dist", "snr_est_db"):
            v = np.array([r[m] for r in rs], float)
            s[m] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
        out.append(s)
    return out


def _label(s) -> str:
    return f"{s['codec']} ρ=1/{1 / s['rho']:.0f} {s['channel']}" if s["rho"] > 0 else f"{s['codec']} {s['channel']}"


def plot_vs_snr(summary, metric: str, ylabel: str, title: str = "") -> bytes:
    """Line plot of ``metric`` against channel SNR, one line per (codec, ρ, channel); PNG bytes."""
    lines = defaultdict(list)
    for s in summary:
        lines[_label(s)].append((s["snr_db"], s[metric]))
    return plot_lines(lines, "channel SNR, Es/N0 per channel use (dB)", ylabel, title,
                      dashed=lambda label: label.startswith("separation"))


def plot_lines(lines: dict, xlabel: str, ylabel: str, title: str = "", dashed=lambda label: False) -> bytes:
    """``{label: [(x, y), …]}`` → line plot with markers, one line per label; PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for label, pts in sorted(lines.items()):
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "--" if dashed(label) else "-", marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def png_data_uri(image_or_png) -> str:
    """uint8 image array or PNG bytes → data: URI for an <img> tag."""
    if isinstance(image_or_png, (bytes, bytearray)):
        data = bytes(image_or_png)
    else:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.asarray(image_or_png, np.uint8)).save(buf, format="PNG")
        data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def html_report(title: str, config: dict, summary, examples, plots, notes=(), table=None) -> str:
    """A self-contained HTML page.

    ``examples``: list of dicts ``{"name", "original" (array), "cells": [(caption, array or
    None)]}`` — one row per image, received versions side by side (None = nothing received).
    ``plots``: list of (caption, PNG bytes). ``notes``: paragraphs of plain text.
    ``table``: (headers, rows of cell strings) shown instead of the image-link ``summary``.
    """
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
             "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
             ".ex td{text-align:center;vertical-align:top;font-size:12px}.ex img{width:180px}"
             ".none{width:180px;height:180px;background:#888;color:#fff;display:flex;align-items:center;"
             "justify-content:center}</style></head><body>", f"<h1>{e(title)}</h1>"]
    parts.append("<h2>Configuration</h2><table>" + "".join(
        f"<tr><th>{e(str(k))}</th><td style='text-align:left'>{e(str(v))}</td></tr>" for k, v in config.items())
        + "</table>")
    for n in notes:
        parts.append(f"<p>{e(n)}</p>")
    if table is not None:
        headers, body = table
        summary = ()
        parts.append("<h2>Metrics (mean over images)</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in headers)
                     + "</tr>" + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in body))
    else:
        parts.append("<h2>Metrics (mean over images)</h2><table><tr><th>codec</th><th>ρ</th><th>channel</th>"
                     "<th>SNR (dB)</th><th>est. SNR (dB)</th><th>PSNR (dB)</th><th>SSIM</th><th>MS-SSIM</th>"
                     "<th>EfficientNet-Lite0 feature distance</th><th>nothing received</th></tr>")
    for s in summary:
        rho = f"1/{1 / s['rho']:.0f}" if s["rho"] > 0 else "–"
        parts.append(f"<tr><td>{e(s['codec'])}</td><td>{rho}</td><td>{e(s['channel'])}</td><td>{s['snr_db']:g}</td>"
                     f"<td>{s['snr_est_db']:.2f}</td><td>{s['psnr']:.2f}</td><td>{s['ssim']:.3f}</td>"
                     f"<td>{s['ms_ssim']:.3f}</td><td>{s['effnet_dist']:.4f}</td><td>{s['failed']}/{s['n']}</td></tr>")
    parts.append("</table><h2>Plots</h2>")
    for caption, png in plots:
        parts.append(f"<figure style='display:inline-block'><img src='{png_data_uri(png)}'>"
                     f"<figcaption>{e(caption)}</figcaption></figure>")
    parts.append("<h2>Received images</h2><table class='ex'>")
    for ex in examples:
        cells = [f"<td><img src='{png_data_uri(ex['original'])}'><br>original: {e(ex['name'])}</td>"]
        for caption, img in ex["cells"]:
            body = f"<img src='{png_data_uri(img)}'>" if img is not None else "<div class='none'>nothing received</div>"
            cells.append(f"<td>{body}<br>{e(caption)}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


def write_report(rows, out_dir: str, title: str, config: dict, originals=None, notes=()) -> str:
    """Summary + PSNR/MS-SSIM-vs-SNR plots + side-by-side examples → ``out_dir/report.html``.

    ``originals``: name → uint8 image (the reference set); received images are read from
    each row's ``file`` (written by the image sink). Returns the report's path.
    """
    from PIL import Image

    summary = summarize(rows)
    plots = [("PSNR vs channel SNR", plot_vs_snr(summary, "psnr", "PSNR (dB)", "PSNR")),
             ("MS-SSIM vs channel SNR", plot_vs_snr(summary, "ms_ssim", "MS-SSIM", "MS-SSIM"))]
    examples = []
    for name, original in (originals or {}).items():
        cells = []
        for r in sorted((r for r in rows if r["name"] == name),
                        key=lambda r: (r["codec"], -float(r["rho"]), r["channel"], float(r["snr_db"]))):
            img = None
            if r.get("file") and os.path.exists(r["file"]):
                with Image.open(r["file"]) as im:
                    img = np.asarray(im.convert("RGB"))
            rho = float(r["rho"])
            cap = (f"{r['codec']} ρ=1/{1 / rho:.0f}, {r['channel']} {float(r['snr_db']):g} dB: "
                   f"{float(r['psnr']):.2f} dB" + ("" if r["status"] == "ok" else f" ({r['status']})"))
            cells.append((cap, img))
        examples.append(dict(name=name, original=original, cells=cells))
    path = os.path.join(out_dir, "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(html_report(title, config, summary, examples, plots, notes))
    return path


def format_summary(summary) -> str:
    """The summary as a fixed-width text table (for the terminal)."""
    lines = [f"{'codec':<11}{'rho':>7}{'channel':>9}{'SNR':>6}{'est.SNR':>9}{'PSNR':>8}{'SSIM':>7}{'MS-SSIM':>9}"
             f"{'nothing':>9}"]
    for s in summary:
        rho = f"1/{1 / s['rho']:.0f}" if s["rho"] > 0 else "-"
        lines.append(f"{s['codec']:<11}{rho:>7}{s['channel']:>9}{s['snr_db']:>6g}{s['snr_est_db']:>9.2f}"
                     f"{s['psnr']:>8.2f}{s['ssim']:>7.3f}{s['ms_ssim']:>9.3f}{s['failed']:>5}/{s['n']:<3}")
    return "\n".join(lines)
