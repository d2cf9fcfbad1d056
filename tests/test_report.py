"""Report core: CSV round trip, per-point summary, plots and the self-contained HTML."""
import numpy as np

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
