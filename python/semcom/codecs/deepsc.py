"""DeepSC text codec (Xie, Qin, Li, Juang, IEEE TSP 2021) on ONNX Runtime (no torch).

The baseline "deep semantic communication" system that VLF-MSC compares with: a caption is
tokenized into words, a transformer (semantic encoder) and a dense channel encoder turn each
word into k = 8 complex symbols, and at the receiver a dense channel decoder and a transformer
decoder write the words back, greedily. The embedded model (``models/deepsc_enc.onnx``,
``deepsc_dec.onnx``, tokenizer ``deepsc_tokenizer.json``) is trained on the captions of the
synthetic scene benchmark ``semcom.datasets.scenes`` (its 66-word vocabulary, frozen in the tokenizer); training,
export, measurements and the SNR convention: ``docs/deepsc.md``.

Transmitter (``encode``)
    words (``scenes.tokenize``: lowercase runs of letters and single ``,`` ``:`` ``?``) → ids;
    words outside the vocabulary are sent as [UNK] (counted in ``meta["unknown"]``, logged) →
    ``deepsc_enc`` → T·k complex symbols, token-major (token t's symbol i is
    ``symbols[t·k + i]``), unit mean power per complex symbol. Side information: the number of
    tokens T, 1 byte. ``channel_uses(T) = k·T`` (8 per word). ValueError for a caption with no
    word or more than ``max_tokens`` (48) words; TypeError for a non-string.

Receiver (``decode``)
    the channel decoder is told the receiver's SNR estimate: ``csi.snr_db``, or, when the CSI
    carries a per-symbol noise variance of the payload's length, -10·log10 of its mean (clipped
    to the trained -7.5…12.5 dB). Greedy decoding with ``deepsc_dec``: ids = [BOS]; repeat
    argmax(logits[0, -1]) until [EOS] or T + 8 words. The words are joined by spaces with
    ``,`` ``:`` ``?`` attached to the word before.

    ``decode`` never raises on what the air delivers; ``last_status`` says what happened
    (``STATUSES``, several joined by "+"): "ok"; "erasures" (non-finite symbols zeroed);
    "short" (fewer symbols than the side information announces: the missing ones are
    zero-filled), "long" (extra symbols dropped); "no_side_info" (no side information: T is
    taken from the payload length); and, with "" returned, "bad_side_info" (announces 0 or
    more than ``max_tokens`` tokens), "no_symbols", "nonfinite_symbols" (no finite symbol),
    "bad_symbols" (not a numeric array), "bad_csi" (no finite SNR estimate).
"""
from __future__ import annotations

import logging
import math

import numpy as np

from ..runtime import ModelIntegrityError, load_manifest, load_model, sha256_file
from .base import Csi, Encoded

__all__ = ["DeepScCodec", "STATUSES", "ENC_NAME", "DEC_NAME"]

log = logging.getLogger("gr-semcom.codecs.deepsc")

ENC_NAME, DEC_NAME = "deepsc_enc", "deepsc_dec"
#: values of ``DeepScCodec.last_status`` (several may be joined by "+")
STATUSES = ("ok", "erasures", "short", "long", "no_side_info", "bad_side_info", "no_symbols",
            "nonfinite_symbols", "bad_symbols", "bad_csi")
EXTRA_WORDS = 8  # greedy decoding stops after T + EXTRA_WORDS words at the latest


class DeepScCodec:
    """Caption ⇄ complex symbols with the DeepSC transformer JSCC (ONNX Runtime).

    Not a ``base.Codec`` (that contract is image → symbols); the same three methods with text:
    ``channel_uses(n_tokens)``, ``encode(text) -> Encoded``, ``decode(symbols, side_info, csi) -> str``.
    """

    codec_id = 11
    name = "deepsc"

    def __init__(self, models_dir=None, providers=None, threads=None):
        from tokenizers import Tokenizer

        self._enc = load_model(ENC_NAME, models_dir=models_dir, providers=providers, threads=threads)
        self._dec = load_model(DEC_NAME, models_dir=models_dir, providers=providers, threads=threads)
        extra = self._enc.entry.extra
        self.k = int(extra["symbols_per_token"])
        self.max_tokens = int(extra["max_tokens"])
        self.snr_range = tuple(float(s) for s in extra["snr_db_range"])
        self.bos_id, self.eos_id = int(extra["bos_id"]), int(extra["eos_id"])
        self.pad_id, self.unk_id = int(extra["pad_id"]), int(extra["unk_id"])
        tok_path = load_manifest(models_dir).models_dir / extra["tokenizer"]
        if not tok_path.is_file():
            raise FileNotFoundError(f"DeepSC tokenizer missing: {tok_path}")
        if extra.get("tokenizer_sha256") and sha256_file(tok_path) != extra["tokenizer_sha256"]:
            raise ModelIntegrityError(f"{tok_path}: sha256 does not match the manifest (corrupted or replaced)")
        self.tokenizer = Tokenizer.from_file(str(tok_path))
        self._words = {i: t for t, i in self.tokenizer.get_vocab().items()}
        self.last_status = "ok"

    def __repr__(self):
        return f"DeepScCodec(k={self.k}, max_tokens={self.max_tokens})"

    def channel_uses(self, n_tokens: int) -> int:
        """Complex channel uses of a caption of ``n_tokens`` word tokens: k·n (k = 8)."""
        n = int(n_tokens)
        if n < 0:
            raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
        return self.k * n

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a caption (no [BOS]/[EOS])."""
        if not isinstance(text, str):
            raise TypeError(f"caption must be a str, got {type(text).__name__}")
        return list(self.tokenizer.encode(text).ids)

    # ------------------------------------------------------------------ TX
    def encode(self, text: str, ctx: dict | None = None) -> Encoded:
        """Caption → Encoded (k complex symbols per word, unit mean power; side info: 1 byte, the
        number of tokens). ``ctx`` is not used (the encoder does not adapt to the channel)."""
        ids = self.tokenize(text)
        n = len(ids)
        if n == 0:
            raise ValueError("caption has no words to send (empty or white space only)")
        if n > self.max_tokens:
            raise ValueError(f"caption of {n} tokens is longer than the model's max_tokens={self.max_tokens}")
        unknown = sum(1 for i in ids if i == self.unk_id)
        if unknown:
            log.warning("deepsc: %d of %d words are outside the vocabulary and are sent as [UNK]", unknown, n)
        out = self._enc.run({"input_ids": np.asarray([ids], np.int64)})["symbols"][0]
        sym = (out[:, 0::2] + 1j * out[:, 1::2]).astype(np.complex64).ravel()
        power = float(np.mean(np.abs(sym) ** 2))
        sym *= np.float32(1.0 / math.sqrt(power))
        assert sym.size == self.channel_uses(n)
        return Encoded(sym, bytes([n]), dict(n_tokens=n, unknown=unknown, n_symbols=int(sym.size), power=power))

    # ------------------------------------------------------------------ RX
    def _snr(self, csi, n_sym: int) -> float | None:
        snr = None
        if csi is not None:
            nvs = getattr(csi, "noise_var_sym", None)
            if nvs is not None and np.size(nvs) == n_sym:
                v = float(np.mean(np.asarray(nvs, np.float64)))
                if math.isfinite(v) and v > 0:
                    snr = -10.0 * math.log10(v)
            if snr is None:
                try:
                    snr = float(csi.snr_db)
                except (TypeError, ValueError, AttributeError):
                    snr = None
        if snr is None or math.isnan(snr):
            return None
        lo, hi = self.snr_range
        return min(max(snr, lo), hi)

    def decode(self, symbols, side_info: bytes = b"", csi: Csi | None = None) -> str:
        """Received symbols (y = x + n, equalised) → caption; "" when nothing can be decoded
        (``last_status`` says why). Never raises on channel garbage."""
        status = []
        try:
            y = np.asarray(symbols).ravel()
            if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
                raise TypeError
            y = y.astype(np.complex64)
        except (TypeError, ValueError):
            return self._fail("bad_symbols")
        side = bytes(side_info or b"")
        if not side:
            status.append("no_side_info")
            n = min(y.size // self.k, self.max_tokens)
            if n == 0:
                return self._fail("no_side_info+no_symbols")
        else:
            n = side[0]
            if len(side) != 1 or not 1 <= n <= self.max_tokens:
                log.warning("deepsc: side information %r does not announce 1…%d tokens", side, self.max_tokens)
                return self._fail("bad_side_info")
        if y.size == 0:
            return self._fail("no_symbols")
        bad = ~np.isfinite(y)
        if bad.all():
            return self._fail("nonfinite_symbols")
        if bad.any():
            log.warning("deepsc: %d non-finite received symbols zeroed", int(bad.sum()))
            y = np.where(bad, 0, y).astype(np.complex64)
            status.append("erasures")
        want = self.channel_uses(n)
        if y.size < want:
            log.warning("deepsc: got %d symbols for %d tokens (%d expected); zero-filling", y.size, n, want)
            y = np.concatenate([y, np.zeros(want - y.size, np.complex64)])
            status.append("short")
        elif y.size > want:
            y = y[:want]
            status.append("long")
        snr = self._snr(csi, want)
        if snr is None:
            return self._fail("+".join(status + ["bad_csi"]))
        rec = np.empty((1, n, 2 * self.k), np.float32)
        z = y.reshape(n, self.k)
        rec[0, :, 0::2], rec[0, :, 1::2] = z.real, z.imag
        snr_in = np.full((1, 1), snr, np.float32)
        ids = [self.bos_id]
        for _ in range(min(n + EXTRA_WORDS, self.max_tokens + 1)):
            logits = self._dec.run({"received": rec, "snr_db": snr_in,
                                    "input_ids": np.asarray([ids], np.int64)})["logits"]
            nxt = int(np.argmax(logits[0, -1]))
            if nxt == self.eos_id:
                break
            ids.append(nxt)
        self.last_status = "+".join(status) or "ok"
        return self.detokenize(ids[1:])

    def detokenize(self, ids) -> str:
        """Token ids → text: words joined by spaces, ``,`` ``:`` ``?`` attached to the word
        before; [PAD]/[BOS]/[EOS] dropped, [UNK] kept as "[UNK]"."""
        words = [self._words.get(int(i), "[UNK]") for i in ids
                 if int(i) not in (self.pad_id, self.bos_id, self.eos_id)]
        text = " ".join(words)
        for p in (",", ":", "?"):
            text = text.replace(" " + p, p)
        return text

    def _fail(self, status: str) -> str:
        self.last_status = status
        return ""
