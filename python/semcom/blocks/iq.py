"""GNU Radio blocks that record and replay complex baseband IQ as SigMF (``semcom.iq`` format).

``sigmf_sink`` streams its input into ``<base>.sigmf-data`` (raw cf32_le, appended once per
``work()`` call) and turns every length tag into a "semcom frame" annotation carrying the
``semcom_*`` tags found on the burst's first sample as ``semcom:*`` fields; the
``.sigmf-meta`` (with the data's sha512) is written at construction, on ``flush()`` and on
``stop()``.

``sigmf_source`` replays a recording (cf32_le or ci16_le) with GNU Radio's ``file_source``
and, optionally, puts the length tag (and the ``semcom_*`` tags) back on the first sample of
each annotated frame, so that a recorded TX burst stream can feed a tagged-stream consumer.
"""
from __future__ import annotations

import sys
import threading

import numpy as np
import pmt
from gnuradio import blocks, gr

from .. import iq as _iq
from ..iq import FRAME_LABEL, SigMFRecordingError

__all__ = ["sigmf_sink", "sigmf_source"]

_FIELD_PREFIX = "semcom_"


def _tag_value(value):
    """pmt → plain Python (ints stay ints)."""
    try:
        if pmt.is_integer(value):
            return int(pmt.to_long(value))
        if pmt.is_uint64(value):
            return int(pmt.to_uint64(value))
        return pmt.to_python(value)
    except Exception:  # noqa: BLE001  exotic pmt: keep its text form
        return pmt.write_string(value)


def _to_pmt(value):
    if isinstance(value, bool):
        return pmt.from_bool(value)
    if isinstance(value, int):
        return pmt.from_long(value) if -(1 << 63) <= value < (1 << 63) else pmt.from_uint64(value)
    if isinstance(value, float):
        return pmt.from_double(value)
    if isinstance(value, str):
        return pmt.intern(value)
    return pmt.to_pmt(value)


class sigmf_sink(gr.sync_block):
    """Record a complex stream as a SigMF recording ``<path_base>.sigmf-{data,meta}``.

    Input: complex stream (bursts optionally length-tagged with ``length_tag_key``).
    Each length tag becomes one annotation (``core:sample_start`` = the tag's sample,
    ``core:sample_count`` = its value, ``core:label`` "semcom frame") with the ``semcom_*``
    tags on that sample as ``semcom:*`` fields. Untagged streams give no annotations.
    Samples go straight to disk; only the annotations are kept in memory.
    The meta file is rewritten by ``flush()`` (thread-safe) and ``stop()``; a burst cut by
    the end of the recording is annotated up to the last sample with ``semcom:truncated``.
    """

    def __init__(self, path_base, sample_rate, center_freq=None, length_tag_key="packet_len", description="",
                 hw=""):
        gr.sync_block.__init__(self, name="semcom_sigmf_sink", in_sig=[np.complex64], out_sig=None)
        _, self.meta_path, self.data_path = _iq.sigmf_paths(path_base)
        self.sample_rate = float(sample_rate)
        self.center_freq = None if center_freq is None else float(center_freq)
        self.description = str(description or "")
        self.hw = str(hw or "")
        self.length_tag_key = str(length_tag_key) if length_tag_key else ""
        self._len_key = pmt.intern(self.length_tag_key) if self.length_tag_key else None
        self._lock = threading.Lock()
        self._hash = _iq.sha512_hasher()
        self._n = 0  # samples written
        self._annotations = []  # [start, count, fields]
        self._datetime = None
        # validate the parameters and fail early (bad directory, …), like file_sink
        _iq.build_sigmffile(self.sample_rate, self.center_freq, description=self.description, hw=self.hw)
        with open(self.data_path, "wb"):  # truncate now (and fail early on a bad path); reopened by start()
            pass
        self._fh = None
        self.flush()

    # -- GNU Radio ------------------------------------------------------------------
    def start(self):
        with self._lock:
            if self._fh is None or self._fh.closed:  # (re)started: append to what is there
                self._fh = open(self.data_path, "ab")
            if self._datetime is None:
                self._datetime = _iq.sigmf_io.get_sigmf_iso8601_datetime_now()
        return True

    def stop(self):
        self.flush()
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
        return True

    def work(self, input_items, output_items):
        x = input_items[0]
        n = len(x)
        if n == 0:
            return 0
        nread = self.nitems_read(0)
        new = []
        if self._len_key is not None:
            tags = self.get_tags_in_window(0, 0, n)
            fields_at = {}
            for t in tags:
                key = pmt.symbol_to_string(t.key)
                if key.startswith(_FIELD_PREFIX):
                    fields_at.setdefault(t.offset, {})[key] = _tag_value(t.value)
            for t in tags:
                if not pmt.eqv(t.key, self._len_key):
                    continue
                try:
                    count = int(pmt.to_long(t.value))
                except Exception:  # noqa: BLE001
                    gr.log.warn(f"sigmf_sink: ignoring {self.length_tag_key} tag with non-integer value")
                    continue
                new.append([t.offset, max(count, 0), fields_at.get(t.offset, {})])
        raw = x if sys.byteorder == "little" else x.astype("<c8")
        buf = memoryview(np.ascontiguousarray(raw)).cast("B")  # no copy
        with self._lock:
            self._fh.write(buf)
            self._hash.update(buf)
            base = self._n - nread
            for a in new:
                a[0] += base
            self._annotations.extend(new)
            self._n += n
        return n

    # -- recording ------------------------------------------------------------------
    def nsamples(self) -> int:
        """Samples written so far."""
        return self._n

    def annotations(self) -> list:
        """The SigMF annotations of the data written so far (as they would be flushed)."""
        with self._lock:
            n, anns = self._n, [list(a) for a in self._annotations]
        return self._make_annotations(n, anns)

    def _make_annotations(self, n, anns):
        out = []
        for start, count, fields in anns:
            if start >= n and count > 0:
                continue
            fields = dict(fields)
            if start + count > n:
                count = n - start
                fields["semcom_truncated"] = True
            out.append(_iq.frame_annotation(start, count, fields))
        return out

    def flush(self):
        """Flush the data to disk and rewrite the .sigmf-meta to describe it (with its sha512)."""
        with self._lock:
            if self._fh is not None and not self._fh.closed:
                self._fh.flush()
            n, digest = self._n, self._hash.copy().hexdigest()
            anns = [list(a) for a in self._annotations]
        sf = _iq.build_sigmffile(self.sample_rate, self.center_freq, self._make_annotations(n, anns),
                                 description=self.description, hw=self.hw, datetime=self._datetime,
                                 sha512=digest)
        _iq.write_metafile(sf, self.meta_path)


class _annotation_tagger(gr.sync_block):
    """Pass-through that tags the first sample of each frame of a (possibly repeating) file."""

    def __init__(self, starts, counts, fields, period, length_tag_key):
        gr.sync_block.__init__(self, name="semcom_sigmf_tagger", in_sig=[np.complex64], out_sig=[np.complex64])
        order = np.argsort(starts, kind="stable")
        self.starts = np.asarray(starts, np.int64)[order]
        self.counts = [int(counts[i]) for i in order]
        self.fields = [[(pmt.intern(k if k.startswith(_FIELD_PREFIX) else _FIELD_PREFIX + k), _to_pmt(v))
                        for k, v in fields[i].items() if isinstance(v, (bool, int, float, str))]
                       for i in order]
        self.period = int(period)
        self.key = pmt.intern(length_tag_key)
        self.srcid = pmt.intern("semcom_sigmf_source")
        self.set_tag_propagation_policy(gr.TPP_DONT)

    def work(self, input_items, output_items):
        x, y = input_items[0], output_items[0]
        n = len(y)
        y[:] = x[:n]
        a = self.nitems_written(0)
        b = a + n
        c = a // self.period
        while c * self.period < b:
            off = c * self.period
            lo = np.searchsorted(self.starts, a - off, "left")
            hi = np.searchsorted(self.starts, b - off, "left")
            for i in range(lo, hi):
                o = off + int(self.starts[i])
                self.add_item_tag(0, o, self.key, pmt.from_long(self.counts[i]), self.srcid)
                for k, v in self.fields[i]:
                    self.add_item_tag(0, o, k, v, self.srcid)
            c += 1
        return n


class sigmf_source(gr.hier_block2):
    """Replay a SigMF recording (cf32_le or ci16_le, one channel) as a complex stream.

    ``path``: base name, ``.sigmf-meta`` or ``.sigmf-data``. The files are checked first
    (datatype, size, sha512 unless ``skip_checksum``); errors name the file.
    ``repeat``: loop the recording. When ``length_tag_key`` is non-empty, the first sample of
    every frame annotation (label ``label``; any annotation with a sample count when
    ``label`` is None) gets the length tag (value = ``core:sample_count``) and one
    ``semcom_<field>`` tag per ``semcom:<field>`` (ints/floats/strings/bools), so a recorded
    TX burst stream replays as the same tagged stream.
    """

    def __init__(self, path, repeat=False, length_tag_key="packet_len", skip_checksum=False, label=FRAME_LABEL):
        gr.hier_block2.__init__(self, "semcom_sigmf_source", gr.io_signature(0, 0, 0),
                                gr.io_signature(1, 1, gr.sizeof_gr_complex))
        self.meta = _iq.open_sigmf(path, skip_checksum=skip_checksum)
        self.datatype = self.meta.get_global_field("core:datatype")
        self.sample_rate = self.meta.get_global_field("core:sample_rate")
        self.nsamples = int(self.meta.sample_count)
        data_path = str(self.meta.data_file)
        if self.nsamples == 0:
            raise SigMFRecordingError(f"{data_path} holds no samples: nothing to replay", data_path)
        if self.datatype == "cf32_le":
            if sys.byteorder != "little":
                raise SigMFRecordingError("cf32_le replay needs a little-endian host", data_path)
            self.file_src = blocks.file_source(gr.sizeof_gr_complex, data_path, bool(repeat))
            self.convert = None
        else:  # ci16_le (open_sigmf rejects everything else)
            self.file_src = blocks.file_source(gr.sizeof_short, data_path, bool(repeat))
            self.convert = blocks.interleaved_short_to_complex(False, sys.byteorder != "little", 32768.0)
        head = self.file_src
        if self.convert is not None:
            self.connect(self.file_src, self.convert)
            head = self.convert
        self.frames = [f for f in _iq.frames(self.meta, label) if f[1] > 0]
        self.tagger = None
        if length_tag_key and self.frames:
            starts, counts, fields = zip(*self.frames)
            self.tagger = _annotation_tagger(starts, counts, fields, self.nsamples, str(length_tag_key))
            self.connect(head, self.tagger)
            head = self.tagger
        self.connect(head, self)
