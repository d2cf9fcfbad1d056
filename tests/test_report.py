"""Report core: CSV round trip, per-point summary, plots and the self-contained HTML."""
import os

import numpy as np
import pytest

from gnuradio.semcom import report


def _rows():
    rows = []
    for codec in ("jscc", "separation"):
        for snr in (0.0, 10.0):
            for k, name in enumerate(("a", "b")):
                ok = not (codec == "separation" and snr == 0.0 and k == 0)
                rows.append(dict(name=name, codec=codec, rho=1 / 12, rho_actual=1 / 12, channel="awgn", snr_db=snr,
                                 seed=0, status="ok" if ok else "crc_fail", snr_est_db=snr + 0.1 * k,
                                 tx_snr_db=snr, psnr=20.0 + snr / 2 + k, ssim=0.5, ms_ssim=0.8,
                                 effnet_dist=0.1, n_symbols=100, file=""))
    return rows


def test_csv_roundtrip_and_summary(tmp_path):
    path = tmp_path / "r.csv"
    report.write_rows(_rows()[:4], path)
    report.write_rows(_rows()[4:], path, append=True)
    back = report.read_rows(path)
    assert len(back) == 8 and back[0]["rho"] == np.float64(float(f"{1 / 12:.6g}")) and back[0]["seed"] == 0
    s = {(x["codec"], x["snr_db"]): x for x in report.summarize(back)}
    assert s[("jscc", 10.0)]["psnr"] == 25.5 and s[("jscc", 10.0)]["failed"] == 0
    assert s[("separation", 0.0)]["failed"] == 1 and s[("separation", 0.0)]["n"] == 2
    assert "separation" in report.format_summary(report.summarize(back))


def test_html_is_self_contained(tmp_path):
    summary = report.summarize(_rows())
    png = report.plot_vs_snr(summary, "psnr", "PSNR (dB)")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = np.zeros((8, 8, 3), np.uint8)
    page = report.html_report("t <x>", {"a": 1}, summary, [dict(name="a", original=img, cells=[("c", img), ("d", None)])],
                              [("plot", png)], ["note & more"])
    assert "t &lt;x&gt;" in page and "note &amp; more" in page and "nothing received" in page
    assert page.count("data:image/png;base64,") == 3 and "http" not in page


def _lossy_rows(tmp_path=None):
    """Two images × (jscc, separation) × (-5, 10 dB); separation at -5 dB receives nothing (one
    failed CRC, one lost frame), jscc at -5 dB loses image "a" only. Rows with nothing received
    carry the PSNR against mid-grey, as the link scores them."""
    from PIL import Image

    rows = []
    for codec in ("jscc", "separation"):
        for snr in (-5.0, 10.0):
            for k, name in enumerate(("a", "b")):
                status = "ok"
                if snr == -5.0 and codec == "separation":
                    status = ("crc_fail", "lost")[k]
                elif snr == -5.0 and k == 0:
                    status = "lost"
                f = ""
                if status == "ok" and tmp_path is not None:
                    f = str(tmp_path / "received" / f"{name}_{codec}_{snr:g}.png")
                    os.makedirs(os.path.dirname(f), exist_ok=True)
                    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(f)
                rows.append(dict(name=name, codec=codec, rho=1 / 12, rho_actual=1 / 12, channel="awgn", snr_db=snr,
                                 seed=0, status=status, snr_est_db=snr if status == "ok" else np.nan, tx_snr_db=snr,
                                 psnr=(11.0 if status != "ok" else 20.0 + snr / 2 + k), ssim=0.5, ms_ssim=0.8,
                                 effnet_dist=0.1, n_symbols=100, file=f))
    return rows


def test_summary_means_are_over_received_images_only():
    s = {(x["codec"], x["snr_db"]): x for x in report.summarize(_lossy_rows())}
    jscc = s[("jscc", -5.0)]
    assert jscc["n"] == 2 and jscc["received"] == 1 and jscc["lost"] == 1
    assert jscc["psnr"] == 18.5  # image "b" only, not the mid-grey score of the lost "a"
    sep = s[("separation", -5.0)]
    assert sep["received"] == 0 and sep["lost"] == 2 and sep["lost_status"] == {"crc_fail": 1, "lost": 1}
    assert np.isnan(sep["psnr"]) and np.isnan(sep["ms_ssim"])  # nothing to average
    text = report.format_summary(report.summarize(_lossy_rows()))
    sep_line = next(ln for ln in text.splitlines() if ln.startswith("separation") and " -5 " in ln)
    assert "lost" in sep_line and "11.00" not in sep_line and "0/2" in sep_line, text


def test_plots_mark_nothing_received_apart_from_the_lines():
    lines, lost = report.series_vs_snr(report.summarize(_lossy_rows()), "psnr")
    sep = next(k for k in lines if k.startswith("separation"))
    assert lines[sep] == [(10.0, 25.5)]  # the all-lost point is not on the line ...
    assert lost[sep] == [-5.0]  # ... it is marked apart
    jscc = next(k for k in lines if k.startswith("jscc"))
    assert lines[jscc] == [(-5.0, 18.5), (10.0, 25.5)] and not lost.get(jscc)
    png = report.plot_lines(lines, "x", "y", lost=lost)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_grid_headers_links_and_lost_cells(tmp_path):
    rows = _lossy_rows(tmp_path)
    img = np.zeros((8, 8, 3), np.uint8)
    path = report.write_report(rows, str(tmp_path), "t", {"a": 1}, originals={"a": img, "b": img})
    page = open(path, encoding="utf-8").read()
    grid = page[page.index("<h2>Received images</h2>"):]
    # one header row naming every column (codec, ρ, channel, SNR), original first
    assert grid.count("<th") == 5 and "separation ρ=1/12 awgn −5 dB" in grid and ">original<" in grid
    assert "overflow-x:auto" in page  # the grid scrolls inside the page instead of overflowing it
    assert "href='received/a_jscc_10.png'" in grid  # thumbnails open the full PNG (relative link)
    assert grid.count("nothing received") == 3 and "crc_fail" in grid
    assert "flex-wrap:wrap" in page and "class='plots'" in page  # plots side by side, wrapping
    table = page[page.index("<h2>Metrics"):page.index("<h2>Plots")]
    assert "PSNR (dB) ↑" in table and "MS-SSIM ↑" in table and "↓" in table
    assert "11.00" not in table and "lost" in table and "0/2" in table and "1/2" in table
    assert "18.50" in table


def test_sink_summary_averages_only_decoded_images():
    """The per-run line the image sink prints: images with nothing decoded are counted, their
    placeholder score is not averaged in; a seq that never arrived is counted lost."""
    from gnuradio.semcom.summary import image_summary

    rows = [dict(seq=0, status="ok", psnr=30.0, snr_est_db=5.0),
            dict(seq=1, status="crc_fail", psnr=11.0, snr_est_db=-5.0)]
    line = image_summary(rows, expected=3)
    assert line.startswith("images: received 2/3, ok 1, lost 1,")
    assert "mean PSNR 30.00 dB over the ok ones" in line


def test_tally_summarises_like_the_rows_in_constant_memory():
    """summary.Tally: what the sink/monitor summaries need of every row, without the rows
    (the blocks keep only their newest rows); same text as from the full list of rows."""
    from gnuradio.semcom.summary import SEQ_SPACE, Tally, frame_summary, image_summary

    rows = [dict(seq=k, status="ok" if k % 3 else "crc_fail", psnr=20.0 + k, snr_est_db=float(k) if k != 4 else None,
                 nmse_db=float("nan") if k == 2 else -10.0 - k) for k in range(0, 10) if k != 5]
    t = Tally()
    for r in rows:
        t.add(r)
    assert t.rows == 9 and t.ok == 5 and t.missing(12) == [5, 10, 11]
    assert image_summary(t, 12) == image_summary(rows, 12)
    assert image_summary(t, 12).startswith("images: received 9/12, ok 5, lost 3,")
    assert t.mean("psnr", ok_only=True) == pytest.approx(np.mean([21, 22, 24, 27, 28]))
    assert t.mean("snr_est_db") == pytest.approx(np.mean([0, 1, 2, 3, 6, 7, 8, 9]))  # None skipped
    assert frame_summary(t, 0, 3) == frame_summary(rows, 0, 3)
    assert t.mean("nmse_db") == pytest.approx(np.mean([-10 - k for k in (0, 1, 3, 4, 6, 7, 8, 9)]))
    assert np.isnan(Tally().mean("psnr"))
    t.add(dict(seq=SEQ_SPACE - 1, status="ok"))
    assert len(t.missing(0)) == SEQ_SPACE - 10
