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
from collections import Counter, defaultdict

import numpy as np

__all__ = ["ROW_FIELDS", "METRICS", "write_rows", "read_rows", "received", "summarize", "mean_finite", "lost_text",
           "series_vs_snr", "plot_vs_snr", "plot_lines", "html_report", "png_data_uri", "write_report",
           "format_summary"]

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


def received(row) -> bool:
    """Whether the receiver had this image: status "ok". Every other status ("lost": the frame
    never arrived; "crc_fail", "no_mcs", "failed", "error": the decoder had nothing; "previous":
    an earlier image shown again) means nothing of this image was received — its metrics are
    the score of what a display shows instead, never averaged with the received images'."""
    return str(row.get("status", "ok")) == "ok"


#: metrics of the summaries and how to read them: (key, header, format, better) with better
#: "↑" (higher is better), "↓" (lower is better) or "" (not a quality metric)
METRICS = (("snr_est_db", "est. SNR (dB)", ".2f", ""), ("psnr", "PSNR (dB)", ".2f", "↑"),
           ("ssim", "SSIM", ".3f", "↑"), ("ms_ssim", "MS-SSIM", ".3f", "↑"),
           ("effnet_dist", "EfficientNet-Lite0 feature distance", ".4f", "↓"))


def summarize(rows) -> list[dict]:
    """Per (codec, ρ, channel, SNR): ``n`` images sent, ``received`` (status "ok"), ``lost``
    (= ``failed``: nothing received) with ``lost_status`` (status → count), and the mean
    metrics (PSNR, SSIM, MS-SSIM, EfficientNet-Lite0 distance, estimated SNR) over the
    *received* images only — NaN when none was received."""
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in _POINT)].append(r)
    out = []
    for key, rs in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2], kv[0][3])):
        ok = [r for r in rs if received(r)]
        lost = Counter(str(r.get("status", "")) for r in rs if not received(r))
        s = dict(zip(_POINT, key), n=len(rs), received=len(ok), lost=len(rs) - len(ok), failed=len(rs) - len(ok),
                 lost_status=dict(sorted(lost.items())))
        for m in ("psnr", "ssim", "ms_ssim", "effnet_dist", "snr_est_db"):
            s[m] = mean_finite(r[m] for r in ok)
        out.append(s)
    return out


def mean_finite(values) -> float:
    """Mean of the finite values (NaN when there are none)."""
    v = np.array([float("nan") if x in ("", None) else float(x) for x in values], float)
    return float(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else float("nan")


def lost_text(s) -> str:
    """"" or e.g. "2 lost (crc_fail 1, lost 1)" for a summary point ``s``."""
    if not s.get("lost"):
        return ""
    kinds = s.get("lost_status") or {}
    return f"{s['lost']} lost" + (f" ({', '.join(f'{k} {v}' for k, v in kinds.items())})" if kinds else "")


def _label(s) -> str:
    return f"{s['codec']} ρ=1/{1 / s['rho']:.0f} {s['channel']}" if s["rho"] > 0 else f"{s['codec']} {s['channel']}"


def _db(x: float) -> str:
    return f"{x:g}".replace("-", "−")


def series_vs_snr(summary, metric: str):
    """``(lines, lost)`` of ``metric`` against SNR, one per (codec, ρ, channel): ``lines``
    ``{label: [(snr, mean over received), …]}`` has the points where something was received,
    ``lost`` ``{label: [snr, …]}`` the SNRs where nothing was."""
    lines, lost = defaultdict(list), defaultdict(list)
    for s in summary:
        line = lines[_label(s)]  # a label whose every point is lost still gets its colour
        if s.get("received", s["n"] - s.get("failed", 0)) == 0:
            lost[_label(s)].append(s["snr_db"])
        elif math.isfinite(s[metric]):
            line.append((s["snr_db"], s[metric]))
    return ({k: sorted(v) for k, v in lines.items()}, {k: sorted(v) for k, v in lost.items()})


def plot_vs_snr(summary, metric: str, ylabel: str, title: str = "") -> bytes:
    """Line plot of ``metric`` (mean over the received images) against channel SNR, one line per
    (codec, ρ, channel); SNRs where nothing was received are marked apart (``plot_lines``). PNG bytes."""
    lines, lost = series_vs_snr(summary, metric)
    return plot_lines(lines, "channel SNR, Es/N0 per channel use (dB)", ylabel, title,
                      dashed=lambda label: label.startswith("separation"), lost=lost)


def plot_lines(lines: dict, xlabel: str, ylabel: str, title: str = "", dashed=lambda label: False,
               lost=None) -> bytes:
    """``{label: [(x, y), …]}`` → line plot with markers, one line per label; PNG bytes.

    ``lost``: ``{label: [x, …]}``, where that line has nothing received: hollow red X markers
    along the bottom of the axes (legend entry "nothing received"), not joined to the line."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    colours = {}
    for label, pts in sorted(lines.items()):
        pts = sorted(p for p in pts if math.isfinite(p[1]))
        (ln,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], "--" if dashed(label) else "-", marker="o",
                        label=label)
        colours[label] = ln.get_color()
    lost = {k: v for k, v in (lost or {}).items() if v}
    if lost:  # a band below the data, its own strip of the axes
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo - 0.14 * (hi - lo), hi)
        ax.axhline(lo, color="0.6", linewidth=0.8, linestyle=":")
        bottom = blended_transform_factory(ax.transData, ax.transAxes)
        first = True
        for label, xs in sorted(lost.items()):
            ax.plot(xs, [0.04] * len(xs), linestyle="none", marker="X", markersize=11, markerfacecolor="none",
                    markeredgecolor="red", markeredgewidth=1.5, transform=bottom, clip_on=False,
                    label="nothing received" if first else None)
            ax.plot(xs, [0.04] * len(xs), linestyle="none", marker=".", markersize=4,  # which line it belongs to
                    color=colours.get(label, "red"), transform=bottom)
            first = False
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


_CSS = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
        ".lost{color:#b00}.partial{color:#b60;font-weight:bold}"
        ".plots{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}.plots figure{margin:0}"
        ".plots img{max-width:100%;height:auto}"
        ".grid{overflow-x:auto;max-width:100%;border:1px solid #ddd}"
        ".ex td,.ex th{text-align:center;vertical-align:top;font-size:12px}"
        ".ex th{position:sticky;top:0;z-index:1;max-width:170px}"
        ".ex td.orig,.ex th.orig{position:sticky;left:0;background:#f8f8f8;z-index:2}"
        ".ex img{width:160px;height:auto;display:block;margin:auto}"
        ".none{width:160px;height:160px;background:#888;color:#fff;display:flex;flex-direction:column;"
        "align-items:center;justify-content:center;margin:auto}")


def _cell_info(cell) -> tuple:
    """``(caption, image)`` or ``(caption, image, info)`` → (caption, image, info dict)."""
    caption, img = cell[0], cell[1]
    return caption, img, (dict(cell[2]) if len(cell) > 2 and cell[2] else {})


def html_report(title: str, config: dict, summary, examples, plots, notes=(), table=None, tables=()) -> str:
    """A self-contained HTML page.

    ``examples``: list of dicts ``{"name", "original" (array), "cells": [(caption, array or
    None[, info])]}`` — one row per image, received versions side by side (None = nothing
    received). ``info`` (optional dict): ``column`` (the grid's column header; cells of the
    same column line up), ``href`` (link of the thumbnail: the full-size PNG), ``status``
    (shown in the "nothing received" box). ``plots``: list of (caption, PNG bytes), laid out
    side by side. ``notes``: paragraphs of plain text. ``table``: (headers, rows of cell
    strings) shown instead of the image-link ``summary``. ``tables``: more tables after the
    plots, (title, headers, rows of cell strings) each (e.g. received captions side by side).
    """
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{_CSS}</style>"
             f"</head><body>", f"<h1>{e(title)}</h1>"]
    parts.append("<h2>Configuration</h2><table>" + "".join(
        f"<tr><th>{e(str(k))}</th><td style='text-align:left'>{e(str(v))}</td></tr>" for k, v in config.items())
        + "</table>")
    for n in notes:
        parts.append(f"<p>{e(n)}</p>")
    if table is not None:
        headers, body = table
        parts.append("<h2>Metrics</h2><table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in headers) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in body)
                     + "</table>")
    else:
        parts.append(_summary_table(summary))
    parts.append("<h2>Plots</h2><div class='plots'>")
    for caption, png in plots:
        parts.append(f"<figure><img src='{png_data_uri(png)}' alt='{e(caption, quote=True)}'>"
                     f"<figcaption>{e(caption)}</figcaption></figure>")
    parts.append("</div>")
    for t_title, headers, body in tables:
        parts.append(f"<h2>{e(t_title)}</h2><div class='grid'><table class='ex'><tr>"
                     + "".join(f"<th>{e(str(h))}</th>" for h in headers) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td style='text-align:left'>{e(str(c))}</td>" for c in r) + "</tr>"
                               for r in body) + "</table></div>")
    parts.append(_example_grid(examples))
    parts.append("</body></html>")
    return "\n".join(parts)


def _summary_table(summary) -> str:
    e = html.escape
    heads = ["codec", "ρ", "channel", "SNR (dB)", "received"] + [f"{h} {b}".strip() for _, h, _, b in METRICS] \
        + ["nothing received"]
    out = ["<h2>Metrics (mean over the received images)</h2>",
           "<p>Means are over the images that were received (status ok); an image with nothing received "
           "(lost frame, failed CRC, no usable rate, …) is counted in the last column and left out of the means. "
           "↑: higher is better, ↓: lower is better.</p>",
           "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in heads) + "</tr>"]
    for s in summary:
        rho = f"1/{1 / s['rho']:.0f}" if s["rho"] > 0 else "–"
        got = s.get("received", s["n"] - s.get("failed", 0))
        cls = " class='lost'" if got == 0 else " class='partial'" if got < s["n"] else ""
        cells = [f"<td>{e(s['codec'])}</td><td>{rho}</td><td>{e(s['channel'])}</td><td>{s['snr_db']:g}</td>",
                 f"<td{cls}>{got}/{s['n']}</td>"]
        for key, _, fmt, _ in METRICS:
            v = s[key]
            cells.append("<td class='lost'>lost</td>" if got == 0 else
                         f"<td>{v:{fmt}}</td>" if math.isfinite(v) else "<td>–</td>")
        cells.append(f"<td{' class=lost' if s.get('lost', 0) else ''}>{e(lost_text(s) or '0')}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _example_grid(examples) -> str:
    e = html.escape
    rows = [(ex, [_cell_info(c) for c in ex["cells"]]) for ex in examples]
    columns = []
    for _, cells in rows:
        for _, _, info in cells:
            if info.get("column") is not None and info["column"] not in columns:
                columns.append(info["column"])
    out = ["<h2>Received images</h2>"]
    if not rows:
        return out[0] + "<p>(none)</p>"
    out.append("<p>Click a thumbnail for the full-size image.</p>" if any(
        info.get("href") for _, cells in rows for _, _, info in cells) else "")
    out.append("<div class='grid'><table class='ex'>")
    if columns:
        out.append("<tr><th class='orig'>original</th>" + "".join(f"<th>{e(str(c))}</th>" for c in columns) + "</tr>")

    def td(caption, img, info):
        if img is None:
            status = info.get("status", "")
            body = ("<div class='none'>nothing received" + (f"<small>{e(str(status))}</small>" if status else "")
                    + "</div>")
        else:
            body = f"<img src='{png_data_uri(img)}' alt=''>"
            if info.get("href"):
                body = f"<a href='{e(str(info['href']), quote=True)}'>{body}</a>"
        return f"<td>{body}{e(caption)}</td>"

    for ex, cells in rows:
        tds = [f"<td class='orig'><img src='{png_data_uri(ex['original'])}' alt=''>{e(ex['name'])}</td>"]
        placed = {}
        loose = []
        for caption, img, info in cells:
            if info.get("column") is not None and info["column"] not in placed:
                placed[info["column"]] = td(caption, img, info)
            else:
                loose.append(td(caption, img, info))
        tds += [placed.get(c, "<td></td>") for c in columns] + loose
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</table></div>")
    return "\n".join(out)


def _column(r, seeds: bool) -> str:
    rho = float(r["rho"])
    rho_s = f" ρ=1/{1 / rho:.0f}" if rho > 0 else ""
    return (f"{r['codec']}{rho_s} {r['channel']} {_db(float(r['snr_db']))} dB"
            + (f" seed {int(r['seed'])}" if seeds else ""))


def write_report(rows, out_dir: str, title: str, config: dict, originals=None, notes=()) -> str:
    """Summary + PSNR/MS-SSIM-vs-SNR plots + the grid of received images → ``out_dir/report.html``.

    ``originals``: name → uint8 image (the reference set); received images are read from
    each row's ``file`` (written by the image sink) and link to it (relative to ``out_dir``).
    The grid has one column per (codec, ρ, channel, SNR[, seed]). Returns the report's path.
    """
    from PIL import Image

    summary = summarize(rows)
    plots = [("PSNR vs channel SNR (↑ better)", plot_vs_snr(summary, "psnr", "PSNR (dB) ↑", "PSNR")),
             ("MS-SSIM vs channel SNR (↑ better)", plot_vs_snr(summary, "ms_ssim", "MS-SSIM ↑", "MS-SSIM"))]
    seeds = len({int(r.get("seed", 0) or 0) for r in rows}) > 1
    examples = []
    for name, original in (originals or {}).items():
        cells = []
        for r in sorted((r for r in rows if r["name"] == name),
                        key=lambda r: (r["codec"], -float(r["rho"]), r["channel"], float(r["snr_db"]),
                                       int(r.get("seed", 0) or 0))):
            img, href = None, ""
            if received(r) and r.get("file") and os.path.exists(r["file"]):
                with Image.open(r["file"]) as im:
                    img = np.asarray(im.convert("RGB"))
                href = os.path.relpath(os.path.abspath(r["file"]), os.path.abspath(out_dir)).replace(os.sep, "/")
            if img is not None:
                cap = f"PSNR {float(r['psnr']):.2f} dB, MS-SSIM {float(r['ms_ssim']):.3f}"
            else:
                cap = "not counted in the means"
            cells.append((cap, img, dict(column=_column(r, seeds), href=href, status=str(r.get("status", "")))))
        examples.append(dict(name=name, original=original, cells=cells))
    path = os.path.join(out_dir, "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(html_report(title, config, summary, examples, plots, notes))
    return path


def format_summary(summary) -> str:
    """The summary as a fixed-width text table (for the terminal): means over the received
    images, "lost" where nothing was received, ``rx`` = received/sent."""
    lines = [f"{'codec':<11}{'rho':>7}{'channel':>9}{'SNR':>6}{'rx':>7}{'est.SNR':>9}{'PSNR↑':>8}{'SSIM↑':>7}"
             f"{'MS-SSIM↑':>9}  nothing received"]
    for s in summary:
        rho = f"1/{1 / s['rho']:.0f}" if s["rho"] > 0 else "-"
        got = s.get("received", s["n"] - s.get("failed", 0))

        def v(key, width, fmt):
            x = s[key]
            return f"{'lost':>{width}}" if got == 0 else f"{x:>{width}{fmt}}" if math.isfinite(x) else f"{'-':>{width}}"

        lines.append(f"{s['codec']:<11}{rho:>7}{s['channel']:>9}{s['snr_db']:>6g}{str(got) + '/' + str(s['n']):>7}"
                     f"{v('snr_est_db', 9, '.2f')}{v('psnr', 8, '.2f')}{v('ssim', 7, '.3f')}{v('ms_ssim', 9, '.3f')}"
                     f"  {lost_text(s) or '-'}")
    return "\n".join(lines)
