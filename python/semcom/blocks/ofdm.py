"""GNU Radio blocks for the semantic OFDM PHY (TX: PDU → burst, RX: samples → PDUs).

Both directions are frame-level Python around the numpy core in ``semcom.phy.modem``:
the transmitter builds each burst with one vectorised IFFT, the receiver is the core's
streaming ``FrameReceiver`` (matched-filter detection, CFO, channel estimation and
tracking, header decoding, analog equalisation) called once per ``work()`` on whatever
samples GNU Radio hands it. Python therefore runs once per frame and once per buffer,
never per sample; the PDU vectors cross the PMT boundary as serialised bytes (one copy)
instead of element by element.
"""
from __future__ import annotations

import collections

import numpy as np
import pmt
from gnuradio import gr

from ..phy import OfdmParams, profile as _profile
from ..phy import header as _hdr
from ..phy import modem as _m
from ._guard import MessageGuard, c32_array, message_handler, meta_bytes, meta_int, pdu_parts
from .pmtvec import c32_to_pmt, f32_to_pmt, u8_to_pmt

__all__ = ["ofdm_tx", "ofdm_rx", "ofdm_framer", "burst_source", "frame_receiver", "make_params", "max_frame_symbols"]

LENGTH_TAG = "packet_len"


def make_params(profile="wifi64", fft_len=None, cp_len=None, occupied_carriers=None, pilot_carriers=None,
                header_modulation=None, header_repetition=None) -> OfdmParams:
    """OfdmParams from a profile name plus optional overrides (the GRC/CLI form)."""
    if isinstance(profile, OfdmParams):
        return profile
    over = {k: v for k, v in dict(fft_len=fft_len, cp_len=cp_len, occupied_carriers=occupied_carriers,
                                  pilot_carriers=pilot_carriers, header_modulation=header_modulation,
                                  header_repetition=header_repetition).items()
            if v is not None and v != ()}
    for key in ("occupied_carriers", "pilot_carriers"):
        if key in over:
            from ..phy import as_carriers

            over[key] = as_carriers(over[key])
    return _profile(profile, **over)


def max_frame_symbols(p: OfdmParams, max_payload_len: int, max_side_len: int = 0) -> int:
    """OFDM symbols after the preamble of the longest frame with these limits."""
    if not 1 <= int(max_payload_len) <= _hdr.MAX_PAYLOAD_LEN:
        raise ValueError(f"max_payload_len must be in 1…{_hdr.MAX_PAYLOAD_LEN}, got {max_payload_len!r}")
    if not 0 <= int(max_side_len) <= _hdr.MAX_SIDE_LEN:
        raise ValueError(f"max_side_len must be in 0…{_hdr.MAX_SIDE_LEN}, got {max_side_len!r}")
    return (_m.n_header_symbols(p) + _m.n_side_symbols(p, int(max_side_len))
            + _m.n_payload_symbols(p, int(max_payload_len)))


# ---------------------------------------------------------------------------------------
# Transmitter
class ofdm_framer(MessageGuard, gr.basic_block):
    """PDU of feature symbols → PDU of the frame's time-domain samples (one burst).

    Input PDU (``in``): metadata dict (optional keys ``codec_id`` int, ``seq`` int,
    ``side_info`` u8vector/bytes) + c32vector of analog feature symbols. Output PDU
    (``out``): metadata ``semcom_seq``, ``semcom_codec``, ``semcom_payload_len`` + c32vector
    of the burst (preamble, header, side information, payload, ``tail_symbols``; unitary
    IFFT, times ``scale``). Bad PDUs (not a PDU, not a non-empty finite c32vector, too long,
    wrong-typed ``codec_id`` (0…255) / ``seq`` (0…65535) / ``side_info``) are dropped with an
    error in the log and counted (``dropped()``).
    """

    _log_name = "ofdm_tx"

    def __init__(self, params: OfdmParams, codec_id: int = 0, tail_symbols: int = 0, scale: float = 1.0,
                 max_payload_len: int = _hdr.MAX_PAYLOAD_LEN, max_side_len: int = _hdr.MAX_SIDE_LEN):
        gr.basic_block.__init__(self, "semcom_ofdm_framer", None, None)
        self.params = params
        self.codec_id = int(codec_id)
        self.tail_symbols = int(tail_symbols)
        self.scale = float(scale)
        self.max_payload_len, self.max_side_len = int(max_payload_len), int(max_side_len)
        self._seq = 0
        self._keys = [pmt.intern(k) for k in ("semcom_seq", "semcom_codec", "semcom_payload_len")]
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("in"), self._handle)

    @message_handler("in")
    def _handle(self, msg):
        meta, vec = pdu_parts(msg)
        x = c32_array(vec, what="PDU vector of feature symbols")
        if len(x) > self.max_payload_len:
            raise ValueError(f"{len(x)} symbols exceed max_payload_len={self.max_payload_len}")
        meta = pmt.to_python(meta) or {}
        codec = meta_int(meta, "codec_id", self.codec_id, 0, 255)
        seq = meta_int(meta, "seq", self._seq, 0, 0xFFFF)
        side = meta_bytes(meta, "side_info")
        if len(side) > self.max_side_len:
            raise ValueError(f"{len(side)} bytes of side information exceed max_side_len={self.max_side_len}")
        frame = _m.build_frame(self.params, x, codec, seq, side)
        self._seq = (seq + 1) & 0xFFFF
        burst = _m.frame_samples(self.params, frame, self.tail_symbols)
        if self.scale != 1.0:
            burst *= np.float32(self.scale)
        h = frame.header
        out = pmt.make_dict()
        for key, v in zip(self._keys, (h.seq, h.codec_id, h.payload_len)):
            out = pmt.dict_add(out, key, pmt.from_long(v))
        self.message_port_pub(pmt.intern("out"), pmt.cons(out, c32_to_pmt(burst)))


class burst_source(MessageGuard, gr.sync_block):
    """PDUs of samples → a stream of back-to-back bursts, each tagged at its first sample with
    ``packet_len`` (its length) and with every key of the PDU's metadata.

    What ``pdu.pdu_to_tagged_stream`` does, except that it ends only after every queued burst
    is out: when the blocks upstream are done (GNU Radio's ``done`` message on the system port)
    it keeps writing what it holds and then returns WORK_DONE, so that the stream blocks after
    it, and the receiver, see the last burst before they finish. (GNU Radio's tagged-stream
    source is stopped as soon as its upstream is done, with the PDUs it still queues lost.)
    Bursts may span several calls of ``work``, so the output buffer needs no room for a whole
    burst. PDUs that are not a non-empty finite c32vector are dropped, logged and counted
    (``dropped()``).
    """

    def __init__(self, length_tag_key=LENGTH_TAG):
        gr.sync_block.__init__(self, "semcom_burst_source", None, [np.complex64])
        self._len_key = pmt.intern(length_tag_key)
        self._queue = collections.deque()
        self._cur, self._pos = None, 0
        self._upstream_done = False
        self.message_port_register_in(pmt.intern("pdus"))
        self.set_msg_handler(pmt.intern("pdus"), self._handle)
        # replaces GNU Radio's own system handler, which would end this block at once
        self.set_msg_handler(pmt.intern("system"), self._system)

    @message_handler("pdus")
    def _handle(self, msg):
        meta, vec = pdu_parts(msg)
        x = c32_array(vec, what="burst")
        items = pmt.dict_items(meta)
        tags = []
        while pmt.is_pair(items):
            kv = pmt.car(items)
            tags.append((pmt.car(kv), pmt.cdr(kv)))
            items = pmt.cdr(items)
        self._queue.append((x, tags))

    @message_handler("system")
    def _system(self, msg):
        if pmt.is_pair(msg) and pmt.eqv(pmt.car(msg), pmt.intern("done")):
            self._upstream_done = True

    def pending(self) -> int:
        """Bursts not yet (completely) written."""
        return len(self._queue) + (self._cur is not None)

    def work(self, input_items, output_items):
        out = output_items[0]
        n, start = 0, self.nitems_written(0)
        while n < len(out):
            if self._cur is None:
                if not self._queue:
                    break
                self._cur, tags = self._queue.popleft()
                self._pos = 0
                self.add_item_tag(0, start + n, self._len_key, pmt.from_long(len(self._cur)))
                for k, v in tags:
                    self.add_item_tag(0, start + n, k, v)
            k = min(len(out) - n, len(self._cur) - self._pos)
            out[n:n + k] = self._cur[self._pos:self._pos + k]
            n += k
            self._pos += k
            if self._pos == len(self._cur):
                self._cur = None
        if n == 0 and self._upstream_done:
            return -1  # WORK_DONE: everything is out
        return n  # 0 when idle: GNU Radio waits for the next message (no busy loop)


class ofdm_tx(gr.hier_block2):
    """Semantic OFDM transmitter: PDU of analog feature symbols → complex baseband burst.

    Message input ``in``: PDU (metadata dict + c32vector). Output: one burst per PDU,
    length-tagged with ``packet_len`` (samples) and tagged with the frame's header fields
    (``semcom_seq``, ``semcom_codec``, ``semcom_payload_len``); nothing between bursts.
    The Python framer builds each burst with one IFFT and hands it to ``burst_source``, which
    writes it out (and, when the flowgraph's sources are done, ends only after the last burst).
    Frame: 2 sync symbols, RM-coded BPSK/QPSK header (``header_repetition`` copies; the
    profile's default when None), optional side information, analog
    payload on the data carriers (unit mean power; gain sent in the header), pilots,
    cyclic prefix. Unitary IFFT: each data subcarrier carries Es = 1 (times ``scale``).

    ``tail_symbols`` appends empty OFDM symbols (pilots only) to every burst (a gap that
    keeps a radio's stream busy); the receiver needs no tail. Malformed PDUs on ``in`` are
    logged, counted (``dropped()``) and skipped; the transmitter goes on with the next one.
    """

    def __init__(self, profile="wifi64", fft_len=None, cp_len=None, occupied_carriers=None,
                 pilot_carriers=None, header_modulation=None, codec_id=0, scale=1.0, tail_symbols=0,
                 max_payload_len=65536, max_side_len=64, header_repetition=None):
        gr.hier_block2.__init__(self, "semcom_ofdm_tx", gr.io_signature(0, 0, 0),
                                gr.io_signature(1, 1, gr.sizeof_gr_complex))
        self.params = p = make_params(profile, fft_len, cp_len, occupied_carriers, pilot_carriers,
                                      header_modulation, header_repetition)
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        if int(tail_symbols) < 0:
            raise ValueError("tail_symbols must be >= 0")
        max_frame_symbols(p, max_payload_len, max_side_len)  # validates the limits
        self.message_port_register_hier_in("in")
        self.framer = ofdm_framer(p, codec_id, int(tail_symbols), float(scale), int(max_payload_len),
                                  int(max_side_len))
        self.bursts = burst_source(LENGTH_TAG)
        self.bursts.set_min_output_buffer(1 << 16)  # large writes per call of work()
        self.msg_connect(self, "in", self.framer, "in")
        self.msg_connect(self.framer, "out", self.bursts, "pdus")
        self.connect(self.bursts, self)

    def dropped(self) -> int:
        """PDUs rejected by the framer (bad type, empty, too long, NaN …) and the burst writer."""
        return self.framer.dropped() + self.bursts.dropped()


# ---------------------------------------------------------------------------------------
# Receiver
class frame_receiver(gr.sync_block):
    """Sink running ``semcom.phy.modem.FrameReceiver`` on the input; one PDU per frame on
    ``out`` (payload) and one on ``header`` (equalised header symbols).

    See ``ofdm_rx`` for the PDU formats.
    """

    def __init__(self, params: OfdmParams, threshold=0.0, equalizer="zf", pilot_window=0,
                 max_payload_len=_hdr.MAX_PAYLOAD_LEN, max_side_len=_hdr.MAX_SIDE_LEN, header_match_payload=False):
        gr.sync_block.__init__(self, "semcom_frame_receiver", [np.complex64], None)
        self.rx = _m.FrameReceiver(params, threshold, equalizer, pilot_window, max_payload_len, max_side_len)
        self.port = pmt.intern("out")
        self.header_port = pmt.intern("header")
        self.message_port_register_out(self.port)
        self.message_port_register_out(self.header_port)
        self.header_match_payload = bool(header_match_payload)
        self._eq = pmt.intern(equalizer)
        self._mod = pmt.intern(params.header_modulation)
        self._k = {k: pmt.intern(k) for k in (
            "seq", "codec_id", "payload_len", "snr_est_db", "noise_var", "cfo", "tx_gain_db", "header_failures",
            "equalizer", "noise_var_sym", "chan", "side_info", "header_modulation", "header_len",
            "lost_symbols", "sro_ppm")}

    def work(self, input_items, output_items):
        x = input_items[0]
        for prx in self.rx.push(x):
            self.message_port_pub(self.port, self._pdu(prx))
            self.message_port_pub(self.header_port, self._header_pdu(prx))
        return len(x)

    def _header_pdu(self, prx: _m.PayloadRx):
        h, k, z = prx.header, self._k, prx.header_symbols
        meta = pmt.make_dict()
        for key, v in (("seq", h.seq), ("codec_id", h.codec_id), ("payload_len", h.payload_len),
                       ("header_len", len(z))):
            meta = pmt.dict_add(meta, k[key], pmt.from_long(int(v)))
        meta = pmt.dict_add(meta, k["header_modulation"], self._mod)
        if self.header_match_payload and len(z) != h.payload_len:
            z = np.resize(z, h.payload_len)  # cycled or cut: as many points as the payload PDU
        return pmt.cons(meta, c32_to_pmt(z))

    def _pdu(self, prx: _m.PayloadRx):
        h, k = prx.header, self._k
        meta = pmt.make_dict()
        for key, v in (("seq", h.seq), ("codec_id", h.codec_id), ("payload_len", h.payload_len),
                       ("header_failures", self.rx.header_failures), ("lost_symbols", prx.n_lost)):
            meta = pmt.dict_add(meta, k[key], pmt.from_long(int(v)))
        for key, v in (("snr_est_db", prx.snr_db), ("noise_var", prx.noise_var_sc), ("cfo", prx.cfo),
                       ("tx_gain_db", h.gain_db), ("sro_ppm", prx.sro_ppm)):
            meta = pmt.dict_add(meta, k[key], pmt.from_double(float(v)))
        meta = pmt.dict_add(meta, k["equalizer"], self._eq)
        meta = pmt.dict_add(meta, k["noise_var_sym"], f32_to_pmt(prx.noise_var))
        meta = pmt.dict_add(meta, k["chan"], c32_to_pmt(prx.chan))
        if h.side_len:
            meta = pmt.dict_add(meta, k["side_info"], u8_to_pmt(prx.side))
        return pmt.cons(meta, c32_to_pmt(prx.symbols))


class ofdm_rx(gr.hier_block2):
    """Semantic OFDM receiver: complex baseband → one PDU per received frame.

    Input: complex baseband (any gaps, noise, other bursts). Message output ``out``:
    PDU = metadata + c32vector of equalised payload symbols (TX gain undone). Metadata:
    ``seq``, ``codec_id``, ``payload_len``, ``snr_est_db`` (estimated Es/N0 per channel use,
    the error measured at the pilots included), ``noise_var`` (per-subcarrier σ² from the
    header), ``noise_var_sym`` (f32vector, per payload symbol: the error the pilots measure
    over the frame — noise, inter-carrier interference of fast fading, tracking error — over
    |H|²), ``lost_symbols`` (payload symbols after the end of a burst cut short: sent as 0
    with noise variance 1e12 (zf) or the symbol variance (mmse); 0 normally), ``sro_ppm``
    (sample-rate offset tracked over the frame, 0 when no drift was found),
    ``chan`` (c32vector, channel per data carrier at the header), ``cfo`` (subcarrier
    spacings), ``tx_gain_db``, ``side_info`` (u8vector, when sent), ``header_failures``
    (running count), ``equalizer``.

    Message output ``header``: one PDU per frame too (published right after ``out``'s) =
    metadata ``seq``, ``codec_id``, ``payload_len``, ``header_modulation`` ('bpsk'/'qpsk'),
    ``header_len`` (header symbols received) + c32vector of the frame's equalised header
    symbols (``semcom.phy.modem.decode_header``: every data carrier of the header, all copies,
    refined phase and channel; unit-power BPSK ±1 or QPSK (±1 ± j)/√2 points, EVM ≈ the
    per-subcarrier noise). Nothing is computed for it beyond what decoding needs; unconnected,
    it costs one small vector per frame. ``header_match_payload``: the vector is cycled or
    cut (``numpy.resize``) to the payload's length, for a constellation sink that shows both
    (a sync block: it takes equally many points from each input, so with unequal lengths
    per frame one trace would fall further behind with every frame).

    Detection: energy-normalised matched filter on the known preamble that also collects
    paths up to cp/4 late and tests CFO hypotheses (``threshold`` on a 0…1 scale: about 1
    for a clean preamble, S/(S+N) at low SNR; 0, the default, takes the profile's threshold
    ``semcom.phy.modem.default_threshold``: wifi64 0.25, wide256 0.12, wide512 0.081, each
    well above the noise maxima measured in docs/phy.md; a CFO up to about ±0.37 subcarrier
    costs under 0.5 dB). Then per frame: CFO, channel and noise from the
    preamble and the decoded header, per-subcarrier channel tracking from the pilots
    (``pilot_window`` symbols of smoothing, 0 = chosen per frame), ZF or MMSE, no decision
    feedback. Frames whose header fails (CRC, length above ``max_payload_len`` /
    ``max_side_len``, NaN/Inf samples) are dropped and counted: ``header_failures()``.
    Before the header, the frame start moves by up to a CP so that the channel's paths
    reach the FFT window without ISI (delay spreads up to the CP). Over the frame, the timing
    drift of a sample-rate offset (up to ±250 ppm) is tracked from the pilots. A burst cut
    short (its energy falls to the noise, or another frame's preamble starts inside it) is
    published with the lost symbols marked (``lost_symbols``) and counted in
    ``truncated_frames()``; the search for the next frame resumes where the burst ended.
    A frame comes out as soon as its last sample is in: no trailing signal is needed.
    """

    def __init__(self, profile="wifi64", fft_len=None, cp_len=None, occupied_carriers=None,
                 pilot_carriers=None, header_modulation=None, equalizer="zf", threshold=0.0,
                 pilot_window=0, max_payload_len=65536, max_side_len=64, header_repetition=None,
                 header_match_payload=False):
        gr.hier_block2.__init__(self, "semcom_ofdm_rx", gr.io_signature(1, 1, gr.sizeof_gr_complex),
                                gr.io_signature(0, 0, 0))
        self.params = p = make_params(profile, fft_len, cp_len, occupied_carriers, pilot_carriers,
                                      header_modulation, header_repetition)
        max_frame_symbols(p, max_payload_len, max_side_len)  # validates the limits
        self.message_port_register_hier_out("out")
        self.message_port_register_hier_out("header")
        self.receiver = frame_receiver(p, threshold, equalizer, int(pilot_window), int(max_payload_len),
                                       int(max_side_len), bool(header_match_payload))
        self.connect(self, self.receiver)
        self.msg_connect(self.receiver, "out", self, "out")
        self.msg_connect(self.receiver, "header", self, "header")

    @property
    def corr(self):
        """The block reading the input stream (earlier name, kept for ``rx.corr.nitems_read(0)``)."""
        return self.receiver

    def samples_read(self) -> int:
        """Input samples consumed so far."""
        return self.receiver.nitems_read(0)

    def header_failures(self) -> int:
        """Frames detected but dropped before decoding (header CRC, impossible length, NaN/Inf)."""
        return self.receiver.rx.header_failures

    def side_failures(self) -> int:
        """Frames whose side information failed its CRC (dropped)."""
        return self.receiver.rx.side_failures

    def frames_received(self) -> int:
        """Frames decoded and published so far."""
        return self.receiver.rx.frames

    def truncated_frames(self) -> int:
        """Frames whose burst ended early: published with their lost symbols marked, or dropped
        (counted all the same) when none of the payload arrived."""
        return self.receiver.rx.truncated_frames

    def nonfinite_frames(self) -> int:
        """Frames dropped because their symbols or estimates came out NaN/Inf (input beyond
        float32 range): never published."""
        return self.receiver.rx.nonfinite_frames
