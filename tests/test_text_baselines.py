"""ASCII + Hamming(7,4) + 16-QAM, the digital caption baseline: exact round trip, the channel-use
formula, AWGN behaviour (error-free at high SNR, the cliff at low SNR) and garbage input."""
import numpy as np
import pytest

from gnuradio.semcom import codecs
from gnuradio.semcom.channels import awgn
from gnuradio.semcom.codecs import Csi
from gnuradio.semcom.codecs.channel_codes import Hamming74
from gnuradio.semcom.codecs.qam import Qam
from gnuradio.semcom.codecs.text_baselines import MAX_CHARS, AsciiHammingCodec, ascii_channel_uses

CAPTION = "a small red circle is left of a large blue square, above 2 green stars."
LONG = (CAPTION + " ") * 14                          # 1008 characters


def _cer(hyp, ref):
    """Character error rate of equal-length strings (missing characters count as errors)."""
    return (sum(a != b for a, b in zip(hyp, ref)) + abs(len(ref) - len(hyp))) / len(ref)


def test_round_trip_noiseless():
    c = AsciiHammingCodec()
    for text in [CAPTION, LONG, "", "x", "abc", "\x00\x7f\t\n~", "".join(map(chr, range(128)))]:
        enc = c.encode(text)
        assert enc.symbols.dtype == np.complex64 and enc.symbols.ndim == 1
        assert enc.side_info == len(text).to_bytes(2, "big")
        assert c.decode(enc.symbols, enc.side_info, Csi(snr_db=30.0)) == text
        assert c.last_status == "ok"


def test_non_ascii_replaced():
    c = AsciiHammingCodec()
    enc = c.encode("café ☕ ok")
    assert enc.meta["replaced"] == 2 and enc.meta["n_chars"] == 9
    assert c.decode(enc.symbols, enc.side_info, None) == "caf? ? ok"


def test_bit_path_is_ascii_hamming_16qam():
    """The symbols are exactly: 7-bit ASCII MSB first → 4-bit blocks → Hamming(7,4) → Gray 16-QAM."""
    c = AsciiHammingCodec()
    text = "Hi!"
    bits = np.array([int(b) for ch in text for b in format(ord(ch), "07b")], np.uint8)       # 21 bits
    bits = np.concatenate([bits, np.zeros(3, np.uint8)])                                      # 6 blocks
    coded = Hamming74().encode(bits)                                                          # 42 bits
    coded = np.concatenate([coded, np.zeros(2, np.uint8)])                                    # 11 symbols
    np.testing.assert_array_equal(c.encode(text).symbols, Qam(16).modulate(coded))
    pts = Qam(16).constellation()
    assert np.mean(np.abs(pts) ** 2) == pytest.approx(1.0)                                  # unit power


def test_channel_uses_formula():
    c = AsciiHammingCodec()
    assert [ascii_channel_uses(n) for n in (0, 1, 2, 3, 4, 8, 64, 1024)] == [0, 4, 7, 11, 13, 25, 196, 3136]
    rng = np.random.default_rng(0)
    for n in list(range(0, 40)) + [100, 511, 1023, 1024]:
        text = "".join(chr(v) for v in rng.integers(32, 127, n))
        enc = c.encode(text)
        blocks = -(-7 * n // 4)
        assert enc.symbols.size == c.channel_uses(n) == -(-7 * blocks // 4) == enc.meta["n_symbols"]
        assert enc.meta["n_codewords"] == blocks
    # about 3.06 channel uses per character for long captions
    assert c.channel_uses(1024) / 1024 == pytest.approx(49 / 16, rel=1e-3)
    with pytest.raises(ValueError):
        ascii_channel_uses(-1)


def test_symbols_near_unit_power():
    enc = AsciiHammingCodec().encode(LONG)
    p = np.mean(np.abs(enc.symbols) ** 2)
    assert p == pytest.approx(enc.meta["power"]) and 0.8 < p < 1.2


def test_max_length_and_type():
    c = AsciiHammingCodec()
    c.encode("a" * MAX_CHARS)
    with pytest.raises(ValueError, match="max_chars"):
        c.encode("a" * (MAX_CHARS + 1))
    with pytest.raises(TypeError):
        c.encode(b"bytes")
    assert AsciiHammingCodec(max_chars=5000).encode("a" * 5000).symbols.size == ascii_channel_uses(5000)
    for bad in (0, 65536, 2.5, "10", True):
        with pytest.raises(ValueError):
            AsciiHammingCodec(max_chars=bad)


def test_single_bit_errors_corrected():
    """Hard decisions + syndrome decoding: one wrong bit per codeword is always corrected."""
    c = AsciiHammingCodec()
    enc = c.encode(LONG)
    q = Qam(16)
    bits = (q.demap(enc.symbols, 1.0) < 0).astype(np.uint8)
    words = bits[:7 * enc.meta["n_codewords"]].reshape(-1, 7).copy()
    rng = np.random.default_rng(3)
    words[np.arange(words.shape[0]), rng.integers(0, 7, words.shape[0])] ^= 1
    flipped = np.concatenate([words.reshape(-1), bits[words.size:]])
    assert c.decode(q.modulate(flipped), enc.side_info, None) == LONG


def test_awgn_high_snr_error_free():
    c = AsciiHammingCodec()
    enc = c.encode(LONG)
    for seed in range(5):
        assert c.decode(awgn(enc.symbols, 25.0, rng=seed), enc.side_info, Csi(snr_db=25.0)) == LONG


def cer_vs_snr(snrs, trials=4):
    c = AsciiHammingCodec()
    enc = c.encode(LONG)
    out = []
    for snr in snrs:
        errs = [_cer(c.decode(awgn(enc.symbols, snr, rng=1000 * t + 7), enc.side_info, Csi(snr_db=snr)), LONG)
                for t in range(trials)]
        out.append(float(np.mean(errs)))
    return np.array(out)


def test_awgn_cliff_and_monotone_cer():
    snrs = np.arange(-5.0, 15.1, 2.5)
    cer = cer_vs_snr(snrs)
    assert cer[0] > 0.8                              # −5 dB: almost every character wrong (the cliff)
    assert cer[snrs.tolist().index(10.0)] > 0.02     # still many errors at 10 dB
    assert cer[-1] < 0.01                            # nearly clean at 15 dB
    assert np.all(np.diff(cer) <= 0), cer
    busy = cer[:-1] > 0.005
    assert np.all(np.diff(cer)[busy] < 0), cer       # strictly falling wherever errors are frequent


def test_garbage_input_never_raises():
    c = AsciiHammingCodec()
    enc = c.encode(CAPTION)
    n, side = len(CAPTION), enc.side_info
    # non-finite symbols: erasures, decided arbitrarily, length kept
    y = enc.symbols.astype(np.complex128)
    y[[0, 5, 9]] = [np.nan, np.inf, complex(np.nan, -np.inf)]
    out = c.decode(y, side, None)
    assert len(out) == n and c.last_status == "erasures"
    assert _cer(out, CAPTION) < 0.1
    # too few symbols: the characters without a complete codeword are dropped
    for keep in (0, 3, 4, 10, enc.symbols.size - 1):
        out = c.decode(enc.symbols[:keep], side, None)
        assert c.last_status == "short" and len(out) < n and CAPTION.startswith(out)
        assert len(out) == (4 * ((4 * keep) // 7)) // 7
    # extra symbols are ignored
    assert c.decode(np.concatenate([enc.symbols, np.ones(50, np.complex64)]), side, None) == CAPTION
    # side information missing, short, absurd
    out = c.decode(enc.symbols, b"", None)
    assert c.last_status == "no_side_info" and out.startswith(CAPTION) and len(out) <= c.max_chars
    assert c.decode(enc.symbols, b"\x01", None).startswith(CAPTION) and c.last_status == "no_side_info"
    assert c.decode(enc.symbols, None, None).startswith(CAPTION)
    assert c.decode(enc.symbols, "not bytes", None).startswith(CAPTION)
    assert c.decode(enc.symbols, b"\xff\xff", None).startswith(CAPTION) and "too_long" in c.last_status
    assert c.decode(enc.symbols, side + b"trailing", None) == CAPTION
    # not symbols at all
    for bad in (None, "abc", [object()], {"a": 1}):
        assert c.decode(bad, side, None) == "" and c.last_status == "bad_symbols"
    # random complex noise of any size decodes to some string of the announced length
    rng = np.random.default_rng(5)
    for size in (0, 1, 7, 1000, 5000):
        z = (rng.standard_normal(size) + 1j * rng.standard_normal(size)) * 10
        out = c.decode(z, side, None)
        assert isinstance(out, str) and len(out) == min(n, (4 * ((4 * size) // 7)) // 7)
        assert all(ord(ch) < 128 for ch in out)
    # 2-D input is flattened
    assert c.decode(enc.symbols.reshape(1, -1), side, None) == CAPTION


def test_registry():
    assert "ascii_hamming" in codecs.TEXT_CODECS
    c = codecs.make_text_codec("ascii_hamming", max_chars=200)
    assert isinstance(c, AsciiHammingCodec) and c.max_chars == 200 and c.name == "ascii_hamming"
    with pytest.raises(ValueError):
        codecs.make_text_codec("nope")
    # the codec id is a header byte and differs from every image codec's and from sounding (0)
    ids = {0}
    for name in codecs.CODECS:
        mod = {"jscc": "jscc", "separation": "separation", "importance_jscc": "importance"}[name]
        cls = {"jscc": "JsccCodec", "separation": "SeparationCodec", "importance_jscc": "ImportanceJsccCodec"}[name]
        ids.add(getattr(__import__(f"gnuradio.semcom.codecs.{mod}", fromlist=[cls]), cls).codec_id)
    assert 0 < AsciiHammingCodec.codec_id < 256 and AsciiHammingCodec.codec_id not in ids
    assert "ascii_hamming" not in codecs.CODECS      # not an image codec
