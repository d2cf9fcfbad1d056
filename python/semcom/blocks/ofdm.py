"""GNU Radio hier blocks for the semantic OFDM PHY (TX: PDU → burst, RX: samples → PDUs).

The signal-rate work is done by GNU Radio's C++ blocks (carrier allocator, FFT, cyclic
prefixer on TX; preamble correlator and header/payload demux on RX). Python runs once per
frame only: the framer (PDU → data-carrier symbols) and the two frame-level receiver
blocks, which call the numpy core in ``semcom.phy``.
"""
from __future__ import annotations

import collections
import threading

import numpy as np
import pmt
from gnuradio import blocks, digital, fft, gr, pdu

from ..phy import OfdmParams, profile as _profile
from ..phy import modem as _m

__all__ = ["ofdm_tx", "ofdm_rx", "ofdm_framer", "make_params", "max_frame_symbols"]

LENGTH_TAG = "packet_len"
FRAME_LEN_TAG = "frame_len"
_FRAME_ID_TAG = "semcom_frame_id"


def make_params(profile="wifi64", fft_len=None, cp_len=None, occupied_carriers=None, pilot_carriers=None,
                header_modulation=None) -> OfdmParams:
    """OfdmParams from a profile name plus optional overrides (the GRC/CLI form)."""
    if isinstance(profile, OfdmParams):
        return profile
    over = {k: v for k, v in dict(fft_len=fft_len, cp_len=cp_len, occupied_carriers=occupied_carriers,
                                  pilot_carriers=pilot_carriers, header_modulation=header_modulation).items()
            if v is not None and v != ()}
    for key in ("occupied_carriers", "pilot_carriers"):
        if key in over:
            from ..phy import as_carriers

            over[key] = as_carriers(over[key])
    return _profile(profile, **over)


def _pmt_get(meta, key, default=None):
    v = pmt.dict_ref(meta, pmt.intern(key), pmt.PMT_NIL)
    return default if pmt.is_null(v) else pmt.to_python(v)


def max_frame_symbols(p: OfdmParams, max_payload_len: int, max_side_len: int = 0) -> int:
    """OFDM symbols after the preamble of the longest frame the buffers must hold."""
    if not 1 <= int(max_payload_len) <= (1 << 20) - 1:
        raise ValueError(f"max_payload_len must be in 1…{(1 << 20) - 1}, got {max_payload_len!r}")
    if not 0 <= int(max_side_len) <= 4095:
        raise ValueError(f"max_side_len must be in 0…4095, got {max_side_len!r}")
    return (_m.n_header_symbols(p) + _m.n_side_symbols(p, int(max_side_len))
            + _m.n_payload_symbols(p, int(max_payload_len)))


class ofdm_framer(gr.basic_block):
    """PDU of feature symbols → PDU of data-carrier symbols of one frame.

    Input PDU: metadata dict (optional keys ``codec_id`` int, ``seq`` int, ``side_info``
    u8vector/bytes) + c32vector of analog feature symbols. Output PDU: all data-carrier
    symbols of the frame (header, side information, payload) for the carrier allocator,
    with metadata ``semcom_seq``, ``semcom_codec``, ``semcom_payload_len``.
    Bad PDUs are dropped with an error in the log and counted (``dropped()``).
    """

    def __init__(self, params: OfdmParams, codec_id: int = 0, tail_symbols: int = 0):
        gr.basic_block.__init__(self, "semcom_ofdm_framer", None, None)
        self.tail = np.zeros((int(tail_symbols), params.n_data), np.complex64)
        self.max_payload_len = (1 << 20) - 1
        self.params = params
        self.codec_id = int(codec_id)
        self._seq = 0
        self._dropped = 0
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("in"), self._handle)

    def dropped(self) -> int:
        return self._dropped

    def _handle(self, msg):
        try:
            if not pmt.is_pair(msg):
                raise ValueError("input is not a PDU (pair of metadata dict and vector)")
            meta, vec = pmt.car(msg), pmt.cdr(msg)
            if not pmt.is_c32vector(vec):
                raise ValueError("PDU vector must be a c32vector of feature symbols")
            if not pmt.is_dict(meta):
                meta = pmt.make_dict()
            x = np.asarray(pmt.c32vector_elements(vec), dtype=np.complex64)
            if len(x) > self.max_payload_len:
                raise ValueError(f"{len(x)} symbols exceed max_payload_len={self.max_payload_len}")
            codec = int(_pmt_get(meta, "codec_id", self.codec_id))
            seq = _pmt_get(meta, "seq")
            seq = self._seq if seq is None else int(seq)
            side = _pmt_get(meta, "side_info", b"")
            side = bytes(bytearray(side)) if side is not None else b""
            frame = _m.build_frame(self.params, x, codec, seq, side)
        except Exception as e:  # a bad PDU must never take the flowgraph down
            self._dropped += 1
            gr.log.error(f"semcom ofdm_tx: dropped PDU: {e}")
            return
        self._seq = (seq + 1) & 0xFFFF
        out = pmt.make_dict()
        out = pmt.dict_add(out, pmt.intern("semcom_seq"), pmt.from_long(frame.header.seq))
        out = pmt.dict_add(out, pmt.intern("semcom_codec"), pmt.from_long(frame.header.codec_id))
        out = pmt.dict_add(out, pmt.intern("semcom_payload_len"), pmt.from_long(frame.header.payload_len))
        data = np.concatenate([frame.data, self.tail]).reshape(-1)
        self.message_port_pub(pmt.intern("out"), pmt.cons(out, pmt.init_c32vector(len(data), data)))


class ofdm_tx(gr.hier_block2):
    """Semantic OFDM transmitter: PDU of analog feature symbols → complex baseband burst.

    Message input ``in``: PDU (metadata dict + c32vector). Output: one burst per PDU,
    length-tagged with ``packet_len`` (samples) and tagged with the frame's header fields.
    Frame: 2 sync symbols, RM-coded BPSK/QPSK header, optional side information, analog
    payload on the data carriers (unit mean power; gain sent in the header), pilots,
    cyclic prefix. Unitary IFFT: each data subcarrier carries Es = 1.

    ``tail_symbols`` appends empty OFDM symbols (pilots only) to every burst. The receiver's
    preamble correlator releases a frame only once about 600 (wifi64) samples follow it, so
    a *finite* transmission with nothing after its last burst (file or loopback
    simulation) needs a tail (or any trailing signal) for its last frame to come out;
    continuous radio streams do not.
    """

    def __init__(self, profile="wifi64", fft_len=None, cp_len=None, occupied_carriers=None,
                 pilot_carriers=None, header_modulation=None, codec_id=0, scale=1.0, tail_symbols=0,
                 max_payload_len=65536, max_side_len=64):
        gr.hier_block2.__init__(self, "semcom_ofdm_tx", gr.io_signature(0, 0, 0),
                                gr.io_signature(1, 1, gr.sizeof_gr_complex))
        self.params = p = make_params(profile, fft_len, cp_len, occupied_carriers, pilot_carriers,
                                      header_modulation)
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        self.message_port_register_hier_in("in")
        if int(tail_symbols) < 0:
            raise ValueError("tail_symbols must be >= 0")
        self.framer = ofdm_framer(p, codec_id, int(tail_symbols))
        self.p2s = pdu.pdu_to_tagged_stream(gr.types.complex_t, LENGTH_TAG)
        self.alloc = digital.ofdm_carrier_allocator_cvc(
            p.fft_len, p.gr_occupied(), p.gr_pilots(), p.gr_pilot_symbols(),
            [p.sync_word1.tolist(), p.sync_word2.tolist()], LENGTH_TAG, True)
        self.ifft = fft.fft_vcc(p.fft_len, False, (), True, 1)
        # fft_vcc does not normalise: × 1/√N makes the IFFT unitary (Es = 1 per subcarrier)
        self.norm = blocks.multiply_const_vcc([float(scale) / np.sqrt(p.fft_len)] * p.fft_len)
        self.cp = digital.ofdm_cyclic_prefixer(p.fft_len, p.symbol_len, 0, LENGTH_TAG)
        # tagged-stream blocks need a whole frame in their buffers; GNU Radio hands a block at
        # most about half a buffer at once (measured), hence the factor 2
        n_sym = 2 * (max_frame_symbols(p, max_payload_len, max_side_len) + int(tail_symbols) + 2)
        self.framer.max_payload_len = int(max_payload_len)
        self.p2s.set_min_output_buffer(n_sym * p.n_data)
        for b in (self.alloc, self.ifft, self.norm):
            b.set_min_output_buffer(n_sym)
        self.cp.set_min_output_buffer(n_sym * p.symbol_len)
        self.msg_connect(self, "in", self.framer, "in")
        self.msg_connect(self.framer, "out", self.p2s, "pdus")
        self.connect(self.p2s, self.alloc, self.ifft, self.norm, self.cp, self)

    def dropped(self) -> int:
        """PDUs rejected by the framer (bad type, empty, too long, NaN …)."""
        return self.framer.dropped()


class _FrameStore:
    """Header results handed from the header block to the payload block (same process)."""

    def __init__(self, maxlen=256):
        self._d = collections.OrderedDict()
        self._lock = threading.Lock()
        self._next = 0
        self.maxlen = maxlen

    def put(self, item) -> int:
        with self._lock:
            fid = self._next
            self._next += 1
            self._d[fid] = item
            while len(self._d) > self.maxlen:
                self._d.popitem(last=False)
            return fid

    def pop(self, fid):
        with self._lock:
            return self._d.pop(fid, None)


class header_decoder(gr.sync_block):
    """Frame-level header decoder for ofdm_rx (input: header symbols from the demux).

    For each header (sync symbols + coded header, CP included) it estimates the CFO and
    channel, decodes and CRC-checks the header, and answers the header/payload demux on
    ``header_data``: the payload length in OFDM symbols, or False (frame dropped, counted).
    """

    def __init__(self, params: OfdmParams, store: _FrameStore, chunk: int):
        gr.sync_block.__init__(self, "semcom_header_decoder", [(np.complex64, params.symbol_len)], None)
        self.p = params
        self.store = store
        self.chunk = chunk
        self.n_used = 2 + _m.n_header_symbols(params)
        self._buf = np.zeros((0, params.symbol_len), np.complex64)
        self.ok = 0
        self.failed = 0
        self.port = pmt.intern("header_data")
        self.message_port_register_out(self.port)

    def work(self, input_items, output_items):
        x = input_items[0]
        self._buf = np.concatenate([self._buf, x]) if len(self._buf) else x.copy()
        while len(self._buf) >= self.chunk:
            blk, self._buf = self._buf[: self.chunk], self._buf[self.chunk:]
            self._one(blk[: self.n_used])
        return len(x)

    def _one(self, blk):
        try:
            hrx, cfo = _m.rx_header_block(self.p, blk)
        except Exception as e:  # never leave the demux waiting
            gr.log.warn(f"semcom ofdm_rx: header decoding error: {e}")
            hrx, cfo = None, 0.0
        if hrx is None:
            self.failed += 1
            self.message_port_pub(self.port, pmt.PMT_F)
            return
        self.ok += 1
        fid = self.store.put((hrx, cfo, self.failed))
        d = pmt.make_dict()
        d = pmt.dict_add(d, pmt.intern(FRAME_LEN_TAG), pmt.from_long(_m.frame_len_symbols(self.p, hrx.header)))
        d = pmt.dict_add(d, pmt.intern(_FRAME_ID_TAG), pmt.from_long(fid))
        self.message_port_pub(self.port, d)


class payload_demod(gr.sync_block):
    """Frame-level payload receiver for ofdm_rx: payload symbols → PDU per frame."""

    def __init__(self, params: OfdmParams, store: _FrameStore, equalizer="zf", pilot_window=7):
        gr.sync_block.__init__(self, "semcom_payload_demod", [(np.complex64, params.symbol_len)], None)
        self.p = params
        self.store = store
        self.equalizer = equalizer
        self.pilot_window = pilot_window
        self._cur = None  # (frame_id, n_symbols, list of arrays, collected)
        self.frames = 0
        self.side_failed = 0
        self.port = pmt.intern("out")
        self.message_port_register_out(self.port)
        self._key = pmt.intern(_FRAME_ID_TAG)
        self._lkey = pmt.intern(FRAME_LEN_TAG)

    def work(self, input_items, output_items):
        x = input_items[0]
        n = len(x)
        base = self.nitems_read(0)
        starts = {}
        for t in self.get_tags_in_window(0, 0, n):
            if t.key == self._key:
                starts.setdefault(t.offset - base, {})["id"] = pmt.to_long(t.value)
            elif t.key == self._lkey:
                starts.setdefault(t.offset - base, {})["len"] = pmt.to_long(t.value)
        i = 0
        for pos in sorted(starts) + [n]:
            if self._cur is not None and pos > i:
                need = self._cur[1] - self._cur[3]
                take = min(need, pos - i)
                self._cur[2].append(x[i:i + take].copy())
                self._cur[3] += take
                i += take
                if self._cur[3] == self._cur[1]:
                    self._finish()
            if pos < n:
                if self._cur is not None:  # a new frame began before the last one completed
                    self._cur = None
                info = starts[pos]
                self._cur = [info.get("id", -1), int(info.get("len", 0)), [], 0]
                i = pos
                if self._cur[1] == 0:
                    self._cur = None
        return n

    def _finish(self):
        fid, nsym, parts, _ = self._cur
        self._cur = None
        item = self.store.pop(fid)
        if item is None:
            return
        hrx, cfo, hdr_failed = item
        try:
            prx = _m.rx_payload_block(self.p, hrx, cfo, np.concatenate(parts), self.equalizer, self.pilot_window)
        except Exception as e:
            gr.log.warn(f"semcom ofdm_rx: payload error: {e}")
            prx = None
        if prx is None:
            self.side_failed += 1
            return
        self.frames += 1
        h = prx.header
        meta = pmt.make_dict()
        for k, v in (("seq", h.seq), ("codec_id", h.codec_id), ("payload_len", h.payload_len)):
            meta = pmt.dict_add(meta, pmt.intern(k), pmt.from_long(int(v)))
        for k, v in (("snr_est_db", prx.snr_db), ("noise_var", prx.noise_var_sc), ("cfo", cfo),
                     ("tx_gain_db", h.gain_db)):
            meta = pmt.dict_add(meta, pmt.intern(k), pmt.from_double(float(v)))
        meta = pmt.dict_add(meta, pmt.intern("header_failures"), pmt.from_long(int(hdr_failed)))
        meta = pmt.dict_add(meta, pmt.intern("equalizer"), pmt.intern(self.equalizer))
        meta = pmt.dict_add(meta, pmt.intern("noise_var_sym"), pmt.init_f32vector(len(prx.noise_var), prx.noise_var))
        meta = pmt.dict_add(meta, pmt.intern("chan"), pmt.init_c32vector(len(prx.chan), prx.chan))
        if h.side_len:
            meta = pmt.dict_add(meta, pmt.intern("side_info"),
                                pmt.init_u8vector(len(prx.side), list(prx.side)))
        self.message_port_pub(self.port, pmt.cons(meta, pmt.init_c32vector(len(prx.symbols), prx.symbols)))


class ofdm_rx(gr.hier_block2):
    """Semantic OFDM receiver: complex baseband → one PDU per received frame.

    Input: complex baseband (any gaps, noise, other bursts). Message output ``out``:
    PDU = metadata + c32vector of equalised payload symbols (TX gain undone). Metadata:
    ``seq``, ``codec_id``, ``payload_len``, ``snr_est_db`` (estimated Es/N0 per channel use),
    ``noise_var`` (per-subcarrier σ²), ``noise_var_sym`` (f32vector, per payload symbol),
    ``chan`` (c32vector, channel per data carrier), ``cfo`` (subcarrier spacings),
    ``side_info`` (u8vector, when sent), ``header_failures`` (running count), ``equalizer``.

    Sync: matched filter on the known preamble (``digital.corr_est_cc``), which detects
    frames down to about -3 dB Es/N0; header/payload demux; frame-level Python for CFO,
    channel/noise estimation, header decoding and analog equalisation (ZF or MMSE, pilot
    tracked, no decision feedback). Frames whose header fails its CRC are dropped and
    counted: ``header_failures()``.
    """

    def __init__(self, profile="wifi64", fft_len=None, cp_len=None, occupied_carriers=None,
                 pilot_carriers=None, header_modulation=None, equalizer="zf", threshold=0.4,
                 pilot_window=7, max_payload_len=65536, max_side_len=64):
        gr.hier_block2.__init__(self, "semcom_ofdm_rx", gr.io_signature(1, 1, gr.sizeof_gr_complex),
                                gr.io_signature(0, 0, 0))
        self.params = p = make_params(profile, fft_len, cp_len, occupied_carriers, pilot_carriers,
                                      header_modulation)
        if equalizer not in ("zf", "mmse"):
            raise ValueError(f"equalizer must be 'zf' or 'mmse', got {equalizer!r}")
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
        if int(pilot_window) < 1:
            raise ValueError("pilot_window must be >= 1")
        self.message_port_register_hier_out("out")
        sl = p.symbol_len
        n_h = _m.n_header_symbols(p)
        self.store = _FrameStore()
        self.corr = digital.corr_est_cc(_m.preamble(p).tolist(), 1, 0, float(threshold),
                                        digital.THRESHOLD_ABSOLUTE)
        # corr_est tags the start of the matched preamble (measured: 1 sample early), so the
        # demux's "header" is the preamble plus the coded header: 2 + n_h whole symbols.
        self.hpd = digital.header_payload_demux(2 + n_h, sl, 0, FRAME_LEN_TAG, "corr_start", True,
                                                gr.sizeof_gr_complex, "", 1.0, (), 0)
        self.hdr = header_decoder(p, self.store, 2 + n_h)
        self.pay = payload_demod(p, self.store, equalizer, int(pilot_window))
        n_max = 2 * (max_frame_symbols(p, max_payload_len, max_side_len) + 4)  # ×2: see ofdm_tx
        self.hpd.set_min_output_buffer(n_max)  # both ports: the demux asks for a payload on either
        self.corr.set_min_output_buffer(0, n_max * sl)  # the demux needs a whole payload at its input
        self.connect(self, self.corr, self.hpd)
        self.corr_sink = blocks.null_sink(gr.sizeof_gr_complex)
        self.connect((self.corr, 1), self.corr_sink)
        self.connect((self.hpd, 0), self.hdr)
        self.connect((self.hpd, 1), self.pay)
        self.msg_connect(self.hdr, "header_data", self.hpd, "header_data")
        self.msg_connect(self.pay, "out", self, "out")

    def header_failures(self) -> int:
        """Frames detected whose header failed its CRC (dropped)."""
        return self.hdr.failed

    def side_failures(self) -> int:
        """Frames whose side information failed its CRC (dropped)."""
        return self.pay.side_failed

    def frames_received(self) -> int:
        return self.pay.frames
