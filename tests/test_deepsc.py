"""The DeepSC text codec: shipped models, recovery over AWGN, the SNR convention of training,
ONNX Runtime vs torch on a tiny config, bad input.

Captions come from the synthetic scene benchmark's test split; the channel is the project's
numpy AWGN (Es = 1, σ² = 10^(-SNR/10)). Tests that need torch skip cleanly without it.
"""
import logging
import math

import numpy as np
import pytest

from gnuradio.semcom.channels.awgn import awgn
from gnuradio.semcom.codecs import Csi
from gnuradio.semcom.codecs.deepsc import DeepScCodec
from gnuradio.semcom.datasets import scenes
from gnuradio.semcom.runtime import load_manifest, verify_files


@pytest.fixture(scope="module")
def codec():
    return DeepScCodec(threads=1)


def test_captions(n, split="test"):
    """n captions of ``split`` (scene i's caption i mod 5)."""
    out = []
    for i, seed in enumerate(scenes.SPLITS[split][:n]):
        caps = scenes.captions(scenes.generate(int(seed)))
        out.append(caps[i % len(caps)])
    return out


test_captions.__test__ = False


def bleu(hyps, refs):
    import sacrebleu

    return sacrebleu.corpus_bleu(hyps, [refs]).score


# ----------------------------------------------------------------------------- shipped models

def test_shipped_models_verify():
    manifest = load_manifest()
    for name, task in (("deepsc_enc", "text-jscc-encoder"), ("deepsc_dec", "text-jscc-decoder")):
        entry = manifest.entry(name)
        assert entry.task == task
        path = verify_files(manifest.models_dir, entry)
        assert path.stat().st_size <= 2_000_000
        assert entry.channel_uses_for(T=13) == 8 * 13
        assert entry.training["command"].startswith("OMP_NUM_THREADS=1 python -m semcom.train.deepsc")


def test_tokenizer_specials_and_vocabulary(codec):
    vocab = codec.tokenizer.get_vocab()
    assert [vocab[t] for t in ("[PAD]", "[UNK]", "[BOS]", "[EOS]")] == [0, 1, 2, 3]
    assert (codec.pad_id, codec.unk_id, codec.bos_id, codec.eos_id) == (0, 1, 2, 3)
    for c in test_captions(50):
        ids = codec.tokenize(c)
        assert codec.unk_id not in ids
        assert [codec._words[i] for i in ids] == scenes.tokenize(c)
        assert codec.detokenize(ids) == c


def test_encode_contract(codec):
    c = test_captions(1)[0]
    e = codec.encode(c)
    n = len(scenes.tokenize(c))
    assert e.symbols.dtype == np.complex64 and e.symbols.shape == (8 * n,)
    assert e.side_info == bytes([n])
    assert codec.channel_uses(n) == 8 * n == e.meta["n_symbols"]
    assert np.mean(np.abs(e.symbols) ** 2) == pytest.approx(1.0, rel=1e-5)


def test_noiseless_and_high_snr_recovery(codec):
    caps = test_captions(60)
    rng = np.random.default_rng(1)
    clean = [codec.decode(codec.encode(c).symbols, codec.encode(c).side_info, Csi(snr_db=12.5)) for c in caps]
    assert np.mean([h == c for h, c in zip(clean, caps)]) >= 0.95
    hyp10 = []
    for c in caps:
        e = codec.encode(c)
        hyp10.append(codec.decode(awgn(e.symbols, 10.0, rng), e.side_info, Csi(snr_db=10.0)))
        assert codec.last_status == "ok"
    hyp_m5 = []
    for c in caps:
        e = codec.encode(c)
        hyp_m5.append(codec.decode(awgn(e.symbols, -5.0, rng), e.side_info, Csi(snr_db=-5.0)))
    b10, bm5 = bleu(hyp10, caps), bleu(hyp_m5, caps)
    assert b10 >= 90.0
    assert bm5 < b10 - 5.0


def test_decoder_uses_receiver_csi(codec):
    """The decoder reads the SNR from the CSI; a per-symbol noise variance of the payload's
    length takes precedence over ``snr_db``."""
    c = test_captions(3)[2]
    e = codec.encode(c)
    y = awgn(e.symbols, 0.0, np.random.default_rng(3))
    a = codec.decode(y, e.side_info, Csi(snr_db=0.0))
    b = codec.decode(y, e.side_info, Csi(snr_db=30.0, noise_var_sym=np.ones(y.size, np.float32)))
    assert a == b  # 30 dB claimed, but per-symbol variance 1 → 0 dB
    assert codec._snr(Csi(snr_db=40.0), y.size) == 12.5  # clipped to the trained range
    assert codec._snr(Csi(snr_db=-40.0), y.size) == -7.5


# ----------------------------------------------------------------------------- bad input

def test_encode_rejects_bad_text(codec):
    with pytest.raises(ValueError, match="no words"):
        codec.encode("")
    with pytest.raises(ValueError, match="no words"):
        codec.encode("   \n ")
    with pytest.raises(ValueError, match="max_tokens"):
        codec.encode(" ".join(["ring"] * (codec.max_tokens + 1)))
    with pytest.raises(TypeError):
        codec.encode(None)
    e = codec.encode("a red zebra")
    assert e.meta["unknown"] == 1 and e.symbols.size == 24


def test_decode_bad_payloads(codec, caplog):
    c = test_captions(5)[4]
    e = codec.encode(c)
    csi = Csi(snr_db=10.0)
    caplog.set_level(logging.WARNING)
    nan = np.full(e.symbols.size, np.nan, np.complex64)
    assert codec.decode(nan, e.side_info, csi) == "" and codec.last_status == "nonfinite_symbols"
    assert codec.decode(np.zeros(0, np.complex64), e.side_info, csi) == "" and codec.last_status == "no_symbols"
    assert codec.decode(np.array(["x", "y"], dtype=object), e.side_info, csi) == ""
    assert codec.last_status == "bad_symbols"
    for side in (b"\x00", bytes([codec.max_tokens + 1]), b"\x05\x05"):
        assert codec.decode(e.symbols, side, csi) == "" and codec.last_status == "bad_side_info"
    assert codec.decode(e.symbols, e.side_info, Csi(snr_db=float("nan"))) == ""
    assert codec.last_status == "bad_csi"
    assert codec.decode(e.symbols, e.side_info, None) == "" and codec.last_status == "bad_csi"
    # damaged but decodable payloads: a string comes back, the status says what was repaired
    y = e.symbols.copy()
    y[3] = np.nan
    assert isinstance(codec.decode(y, e.side_info, csi), str) and codec.last_status == "erasures"
    assert isinstance(codec.decode(e.symbols[:-5], e.side_info, csi), str) and codec.last_status == "short"
    assert codec.decode(np.concatenate([e.symbols, e.symbols[:4]]), e.side_info, csi) == c
    assert codec.last_status == "long"
    assert codec.decode(e.symbols, b"", csi) == c and codec.last_status == "no_side_info"
    assert codec.decode(e.symbols[:3], b"", csi) == "" and "no_symbols" in codec.last_status


# ----------------------------------------------------------------------------- training code (torch)

def test_training_channel_follows_the_snr_convention():
    """Power normalisation gives unit mean power per complex symbol over each caption's tokens,
    and the injected noise has variance 10^(-SNR/10) per complex symbol (σ²/2 per real value)."""
    torch = pytest.importorskip("torch")
    from gnuradio.semcom.train.deepsc import awgn_channel, noise_var, power_normalize

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 10, 16, generator=g) * 3.0 + 1.0
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 6:] = False
    z = power_normalize(x, mask)
    for b in range(3):
        sym = z[b, mask[b]].reshape(-1, 8, 2)
        assert float((sym ** 2).sum(-1).mean()) == pytest.approx(1.0, rel=1e-5)
    torch.manual_seed(0)
    snr = torch.tensor([[-5.0], [0.0], [10.0]])
    zeros = torch.zeros(3, 20000, 16)
    n = awgn_channel(zeros, snr)
    per_complex = (n.reshape(3, -1, 2) ** 2).sum(-1).mean(-1)
    want = 10.0 ** (-snr[:, 0] / 10.0)
    assert torch.allclose(per_complex, want, rtol=0.02)
    per_real = (n ** 2).mean(dim=(1, 2))
    assert torch.allclose(per_real, want / 2, rtol=0.02)
    assert torch.allclose(noise_var(snr), want[:, None])


def test_public_deepsc_snr_label_is_3db_below_its_es_n0():
    """The public DeepSC code (documented in docs/deepsc.md): unit power per real value and noise
    std 1/sqrt(2·10^(SNR/10)) per real value, so its Es/N0 per complex symbol is SNR + 3.01 dB."""
    snr_label = 6.0
    es = 2 * 1.0                                     # two real values of unit power per complex symbol
    n0 = 2 * (1 / math.sqrt(2 * 10 ** (snr_label / 10))) ** 2
    assert 10 * math.log10(es / n0) - snr_label == pytest.approx(10 * math.log10(2), abs=1e-9)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random DeepSC exported and registered in a scratch models folder."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    from gnuradio.semcom.runtime import register_model, sha256_file
    from gnuradio.semcom.train import export_deepsc as X
    from gnuradio.semcom.train.deepsc import SPECIALS, DeepSC, build_tokenizer

    torch.manual_seed(0)
    words = scenes.vocabulary()
    model = DeepSC(len(SPECIALS) + len(words), d_model=16, heads=2, d_ff=32, enc_layers=1, dec_layers=1, k=2,
                   chan_hidden=16, max_len=12).eval()
    d = tmp_path_factory.mktemp("deepsc_tiny")
    enc, dec = d / "x_enc.onnx", d / "x_dec.onnx"
    X.export_onnx(model, str(enc), str(dec))
    build_tokenizer(d / X.TOKENIZER_FILE, words)
    e, de = X.manifest_entries(model.config, {"data": "random", "command": "none", "notes": "tiny test model"},
                               sha256_file(d / X.TOKENIZER_FILE))
    register_model(d, e, enc)
    register_model(d, de, dec)
    return model, enc, dec, d


def test_ort_matches_torch_tiny(tiny):
    from gnuradio.semcom.train.export_deepsc import check_ort

    model, enc, dec, _ = tiny
    assert check_ort(model, enc, dec, lengths=(1, 5, 12)) < 1e-4


def test_codec_greedy_matches_torch_greedy_tiny(tiny):
    torch = pytest.importorskip("torch")
    from gnuradio.semcom.train.deepsc import greedy

    model, _, _, d = tiny
    codec = DeepScCodec(models_dir=d, threads=1)
    assert codec.k == 2 and codec.max_tokens == 12
    text = "a red ring above a blue star"
    e = codec.encode(text)
    with torch.no_grad():
        x = model.encode(torch.tensor([codec.tokenize(text)]))
    sym = (x[0, :, 0::2] + 1j * x[0, :, 1::2]).numpy().ravel()
    np.testing.assert_allclose(e.symbols, sym, atol=1e-5)
    y = awgn(e.symbols, 3.0, np.random.default_rng(0))
    got = codec.decode(y, e.side_info, Csi(snr_db=3.0))
    rec = torch.from_numpy(np.stack([y.real, y.imag], -1).reshape(1, -1, 4).astype(np.float32))
    ids = greedy(model, rec, torch.full((1, 1), 3.0), min(len(codec.tokenize(text)) + 8, codec.max_tokens + 1))
    assert got == codec.detokenize(ids)
