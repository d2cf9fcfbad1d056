"""Baseline 1 of the multi-task link: the LAM without semantic communication (no GNU Radio).

Separate source and channel coding of every modality over the same PHY, then the same LAM at
the receiver on whatever arrived:

- the **image** (64 × 64) by the separation codec (``SeparationCodec``: best of JPEG / WebP /
  AVIF / JPEG XL at the largest size that fits, CRC-32, LDPC, Gray QAM at the best MCS for the
  reported SNR) at ``image_rate`` channel uses per real source dimension;
- the **video**: its frames at the LAM's input size (``video_input``: 8 × 32 × 32) tiled into
  one 64 × 128 image, sent the same way at ``video_rate``;
- the **question** as UTF-8 and the **audio** as Ogg Opus (libsndfile through ``soundfile``,
  lowest bitrate: ``opus_level`` 1.0 gives ≈ 1.4 kB per second), each + CRC-32 + LDPC + QAM at
  the same adaptive MCS, in as many symbols as the codewords need.

One frame per modality (``FRAMES``), so ``channel_uses`` is the sum of four payloads plus four
side-information costs (``importance.side_cost``). The MCS follows the SNR the transmitter was
told (``snr_db``), with the separation codec's calibrated thresholds and ``margin_db``.

At the receiver a frame whose CRC fails leaves its modality missing: the image or the video
becomes mid-grey, the audio silence, the question empty (the VQA answer is then "" with the
question's status). The four modalities then go through the LAM (``MtscCodec.decode_clean``:
the LAM-based system's own models with a noiseless full-rate channel).
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np

from .importance import side_cost
from .mtsc_inputs import video_input
from .separation import SeparationCodec

__all__ = ["MtscSeparation", "FRAMES", "video_mosaic", "mosaic_video"]

FRAMES = ("image", "video", "question", "audio")
_BYTES_SIDE = struct.Struct(">BBH")  # frame kind, MCS index, payload bytes
_CRC = 4


def video_mosaic(frames: np.ndarray, n_frames: int = 8, size: int = 32) -> np.ndarray:
    """(T, H, W, 3) uint8 → the LAM's frames tiled 2 × n/2: uint8 (2·size, n/2·size, 3)."""
    v = np.rint(video_input(frames, n_frames, size) * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    rows = [np.concatenate(list(v[r * (n_frames // 2):(r + 1) * (n_frames // 2)]), axis=1) for r in range(2)]
    return np.concatenate(rows, axis=0)


def mosaic_video(mosaic: np.ndarray, n_frames: int = 8, size: int = 32) -> np.ndarray:
    """Inverse of :func:`video_mosaic`: (n_frames, size, size, 3) uint8."""
    half = n_frames // 2
    return np.stack([mosaic[(k // half) * size:(k // half + 1) * size, (k % half) * size:(k % half + 1) * size]
                     for k in range(n_frames)])


def opus_bytes(audio: np.ndarray, sample_rate: int, level: float = 1.0) -> bytes:
    import soundfile as sf

    b = io.BytesIO()
    sf.write(b, np.asarray(audio, np.float32), int(sample_rate), format="OGG", subtype="OPUS",
             compression_level=float(level))
    return b.getvalue()


def opus_audio(data: bytes, n: int) -> np.ndarray:
    import soundfile as sf

    y, _ = sf.read(io.BytesIO(data), dtype="float32")
    y = y if y.ndim == 1 else y[:, 0]
    return np.pad(y[:n], (0, max(0, n - y.size)))


class MtscSeparation:
    """Baseline 1's transmitter and receiver (the LAM itself is the caller's)."""

    codec_id = 13

    def __init__(self, image_rate=1 / 6, video_rate=1 / 6, opus_level=1.0, margin_db=0.0, ldpc_backend="auto"):
        self.image = SeparationCodec(rate=image_rate, margin_db=margin_db, ldpc_backend=ldpc_backend)
        self.video = SeparationCodec(rate=video_rate, margin_db=margin_db, ldpc_backend=ldpc_backend)
        self.opus_level = float(opus_level)
        self.last_status = {}

    def _bytes_frame(self, kind: str, data: bytes, snr_db: float):
        sep = self.image
        payload = data + struct.pack(">I", zlib.crc32(data))
        # MCS: the best one for the SNR at a frame this long (its capacity does not matter: the
        # frame is sized to the payload)
        n_guess = max(64, 8 * len(payload))
        index = sep.select_mcs(snr_db, n_guess)
        code = sep.code(index)
        from .qam import MODULATIONS, Qam

        bps = Qam(MODULATIONS[sep.table[index].modulation]).bits_per_symbol
        used = -(-len(payload) * 8 // code.k)
        n = -(-used * code.n // bps)
        sym = sep.modulate(payload, index, n)
        return sym, _BYTES_SIDE.pack(FRAMES.index(kind), index, len(data))

    def encode(self, image, question: str, audio, sample_rate: int, video, snr_db: float) -> dict:
        """→ {frame kind: (symbols, side_info)} and ``channel_uses`` of the four frames."""
        out = {}
        e = self.image.encode(image, {"snr_db": snr_db})
        out["image"] = (e.symbols, e.side_info)
        e = self.video.encode(video_mosaic(video), {"snr_db": snr_db})
        out["video"] = (e.symbols, e.side_info)
        out["question"] = self._bytes_frame("question", str(question).encode("utf-8"), snr_db)
        out["audio"] = self._bytes_frame("audio", opus_bytes(audio, sample_rate, self.opus_level), snr_db)
        return out

    @staticmethod
    def channel_uses(frames: dict) -> int:
        return int(sum(s.size + side_cost(len(side)) for s, side in frames.values()))

    def _bytes_decode(self, y, side, csi):
        kind, index, nbytes = _BYTES_SIDE.unpack(bytes(side))
        data = self.image.demodulate(np.asarray(y, np.complex64), csi.per_symbol(len(y)), index, nbytes + _CRC)
        if struct.unpack(">I", data[-_CRC:])[0] != zlib.crc32(data[:-_CRC]):
            return None
        return data[:-_CRC]

    def decode(self, received: dict, n_audio: int, image_size=(64, 64)) -> dict:
        """{frame kind: (symbols, side, Csi) or None (lost)} → {image, video, question, audio}
        as the receiver recovered them; ``last_status[kind]``: "ok", "lost" (the PHY did not
        hand the frame over), "crc_fail" or the separation codec's status."""
        st, out = {}, {}
        for kind in FRAMES:
            r = received.get(kind)
            val = None
            if r is None:
                st[kind] = "lost"
            elif kind in ("image", "video"):
                codec = self.image if kind == "image" else self.video
                try:
                    val = codec.decode(r[0], r[1], r[2])
                    st[kind] = codec.last_status
                except Exception as e:  # noqa: BLE001 — a corrupted frame is a failed frame
                    st[kind] = f"error: {e}"
            else:
                try:
                    data = self._bytes_decode(*r)
                    if data is None:
                        st[kind] = "crc_fail"
                    else:
                        val = data.decode("utf-8", "replace") if kind == "question" else opus_audio(data, n_audio)
                        st[kind] = "ok"
                except Exception as e:  # noqa: BLE001
                    st[kind] = f"error: {e}"
            out[kind] = val
        if out["image"] is None:
            out["image"] = np.full(image_size + (3,), 128, np.uint8)
        out["video"] = np.full((8, 32, 32, 3), 128, np.uint8) if out["video"] is None else mosaic_video(out["video"])
        if out["audio"] is None:
            out["audio"] = np.zeros(n_audio, np.float32)
        if out["question"] is None:
            out["question"] = ""
        self.last_status = st
        return out

