"""Channel codes for the separation baseline (no GNU Radio import).

Interface (``ChannelCode``): a binary block code with ``n`` coded and ``k`` information
bits per codeword; ``encode`` takes a whole number of information words (0/1 uint8,
length a multiple of ``k``) and returns the codewords back to back; ``decode`` takes
channel LLRs (log P(0)/P(1), positive favours 0; length a multiple of ``n``) and returns
the decided information bits. Decoders never raise on noisy input: a codeword that does
not decode yields wrong bits, which the codec's CRC catches.

Codes here:

* ``Hamming74``: the (7,4) Hamming code with soft-decision maximum-likelihood decoding
  (max-log: the codeword among the 16 that best correlates with the LLRs).
* LDPC codes from alist parity-check matrices (``LDPC_CODES``): the ones Debian's
  ``gnuradio`` package ships in ``share/gnuradio/fec/ldpc`` for rates ≤ 1/2, and regular
  Gallager codes built here (``gallager_alist``, deterministic) for rates 2/3, 3/4 and 5/6,
  which gr-fec does not ship at a usable length. Two decoders (backends) for the same
  matrices:
    - "gr-fec": GNU Radio's C++ ``fec.ldpc_encoder``/``fec.ldpc_decoder`` (sum-product),
      registered by ``gnuradio.semcom.blocks.fec_ldpc`` (the cores never import GNU Radio);
    - "numpy": the fallback here, normalized min-sum, used when gr-fec is not registered.
  Both encode identically: ``LdpcMatrix`` reproduces gr-fec's systematic encoder (its
  Gauss–Jordan column permutation), so a frame encoded by one backend decodes with the
  other.
"""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass

import numpy as np

__all__ = ["ChannelCode", "Hamming74", "LdpcMatrix", "NumpyLdpc", "LdpcSpec", "LDPC_CODES",
           "parse_alist", "format_alist", "gallager_alist", "gr_ldpc_dirs",
           "register_ldpc_backend", "ldpc_backends", "ldpc_code"]


class ChannelCode:
    """A binary block code: ``n`` coded bits carry ``k`` information bits."""

    name: str = "code"
    n: int = 0
    k: int = 0

    @property
    def rate(self) -> float:
        return self.k / self.n

    def encode(self, bits: np.ndarray) -> np.ndarray:
        """Information bits (multiple of k) → codewords (uint8 0/1, multiple of n)."""
        raise NotImplementedError

    def decode(self, llr: np.ndarray) -> np.ndarray:
        """LLRs (multiple of n; positive favours 0) → information bits (uint8, multiple of k)."""
        raise NotImplementedError

    def _words(self, a: np.ndarray, size: int, what: str) -> np.ndarray:
        a = np.asarray(a).reshape(-1)
        if a.size % size:
            raise ValueError(f"{self.name}: {what} length {a.size} is not a multiple of {size}")
        return a.reshape(-1, size)


class Hamming74(ChannelCode):
    """(7,4) Hamming code, systematic [d1 d2 d3 d4 p1 p2 p3]; soft-decision ML decoding.

    Decoding picks, per codeword, the one of the 16 codewords that maximises
    Σ (1 − 2c_i)·LLR_i (maximum likelihood on max-log LLRs); with hard-decision LLRs this
    corrects every single bit error like syndrome decoding does.
    """

    name = "hamming74"
    n, k = 7, 4
    G = np.array([[1, 0, 0, 0, 1, 1, 0],
                  [0, 1, 0, 0, 1, 0, 1],
                  [0, 0, 1, 0, 0, 1, 1],
                  [0, 0, 0, 1, 1, 1, 1]], np.uint8)

    def __init__(self):
        msgs = ((np.arange(16)[:, None] >> np.arange(3, -1, -1)) & 1).astype(np.uint8)
        self._msgs = msgs
        self._signs = (1.0 - 2.0 * ((msgs @ self.G) & 1)).astype(np.float32)   # (16, 7) ±1

    def encode(self, bits):
        u = self._words(np.asarray(bits, np.uint8), 4, "information")
        return ((u @ self.G) & 1).astype(np.uint8).reshape(-1)

    def decode(self, llr):
        y = self._words(np.nan_to_num(np.asarray(llr, np.float32)), 7, "LLR")
        best = np.argmax(y @ self._signs.T, axis=1)
        return self._msgs[best].reshape(-1)


# ----------------------------------------------------------------------------- alist matrices

def parse_alist(text: str) -> tuple[int, int, list[np.ndarray]]:
    """alist text → (N, M, row lists of 0-based column indices), as gr-fec's ``alist`` reads it.

    Line-based like GNU Radio's reader: N M / max weights / column weights / row weights /
    N lines of (1-based) row indices per column / M lines of column indices per row.
    """
    lines = text.splitlines()
    try:
        n, m = (int(v) for v in lines[0].split()[:2])
        row_w = [int(v) for v in lines[3].split()[:m]]
        rows = [np.array(lines[4 + n + r].split()[:row_w[r]], dtype=np.int64) - 1 for r in range(m)]
    except (IndexError, ValueError) as e:
        raise ValueError(f"not an alist parity-check matrix: {e}") from None
    if len(row_w) != m or any(r.size != w or (r.size and (r.min() < 0 or r.max() >= n))
                              for r, w in zip(rows, row_w)):
        raise ValueError("alist rows do not match their declared weights or size")
    return n, m, rows


def format_alist(n: int, rows: list[np.ndarray]) -> str:
    """(N, row lists of 0-based column indices) → alist text (the layout gr-fec reads)."""
    cols = [[] for _ in range(n)]
    for r, cs in enumerate(rows):
        for c in cs:
            cols[int(c)].append(r + 1)
    col_w = [len(c) for c in cols]
    row_w = [len(r) for r in rows]
    out = [f"{n} {len(rows)}", f"{max(col_w)} {max(row_w)}",
           " ".join(map(str, col_w)), " ".join(map(str, row_w))]
    out += [" ".join(map(str, c)) for c in cols]
    out += [" ".join(str(int(c) + 1) for c in sorted(r)) for r in rows]
    return "\n".join(out) + "\n"


def gallager_alist(n: int, wc: int, wr: int, seed: int) -> str:
    """A regular (wc, wr) Gallager LDPC matrix without 4-cycles, made full-rank → alist text.

    Gallager's construction (layer 1 = consecutive blocks of wr ones, layers 2…wc = column
    permutations of it) with permutations from ``numpy.random.RandomState(seed)`` (a stream
    numpy keeps stable, so every machine builds the same matrix). Columns that share two
    rows are repaired by swapping their row in a later layer with a random column's.
    Gallager matrices have wc − 1 dependent rows: the last row of layers 2…wc is dropped,
    so the code has k = n − (n·wc/wr − wc + 1) information bits.
    """
    if n % wr:
        raise ValueError(f"n={n} must be a multiple of the row weight {wr}")
    rs = np.random.RandomState(seed)
    per_layer = n // wr
    base = np.arange(n) // wr                            # layer 1: row of each column
    layers = [base] + [base[rs.permutation(n)] for _ in range(wc - 1)]
    for _ in range(200):
        clashes = 0
        for b in range(1, wc):
            for a in range(b):
                key = layers[a] * per_layer + layers[b]  # the (row in a, row in b) pair of each column
                order = np.argsort(key, kind="stable")
                dup = order[1:][key[order][1:] == key[order][:-1]]   # all but the first of each pair
                clashes += dup.size
                for j in dup:
                    t = rs.randint(n)
                    layers[b][j], layers[b][t] = layers[b][t], layers[b][j]
        if not clashes:
            break
    else:
        raise RuntimeError(f"could not remove the 4-cycles of a ({wc},{wr}) code of length {n}")
    rows = []
    for li, lay in enumerate(layers):
        order = np.argsort(lay, kind="stable")
        groups = np.split(order, np.cumsum(np.bincount(lay, minlength=per_layer))[:-1])
        if li:
            groups = groups[:-1]                         # drop one dependent row per extra layer
        rows += [np.sort(g) for g in groups]
    return format_alist(n, rows)


class LdpcMatrix:
    """A parity-check matrix and the systematic encoder gr-fec's ``cldpc`` derives from it.

    ``GF2Mat::get_G`` in gr-fec runs Gauss–Jordan elimination with column swaps; the
    resulting permutation puts the information bits at ``permute[rank:]`` and the parity
    bits at ``permute[:rank]``. This class runs the same elimination (same pivot rule),
    so its codewords are bit-identical to ``fec.ldpc_encoder``'s.
    """

    def __init__(self, alist_text: str):
        self.n, self.m, self.rows = parse_alist(alist_text)
        H = np.zeros((self.m, self.n), np.uint8)
        for r, cs in enumerate(self.rows):
            H[r, cs] = 1
        self.H = H
        self.permute, self.rank, self.parity = self._systematic(H)
        self.k = self.n - self.rank

    @staticmethod
    def _systematic(H: np.ndarray):
        G = H.astype(bool)                               # rows are equations, columns bits
        m, n = G.shape
        permute = np.arange(n)
        diag, limit, rank = 0, m, 0
        while diag < limit:
            nz = np.flatnonzero(G[diag, diag:])
            if nz.size:
                col = diag + nz[0]
                rank += 1
                G[:, [diag, col]] = G[:, [col, diag]]
                permute[[diag, col]] = permute[[col, diag]]
                hit = G[:, diag].copy()
                hit[diag] = False
                G[hit, diag:] ^= G[diag, diag:]          # columns < diag of the pivot row are 0
                diag += 1
            else:                                        # dependent row: move it to the bottom
                G[diag:limit] = np.roll(G[diag:limit], -1, axis=0)
                limit -= 1
        # parity bit i (i < rank) = row i of the reduced matrix over the information columns
        return permute, rank, G[:rank, rank:].astype(np.uint8)

    def encode(self, info: np.ndarray) -> np.ndarray:
        """(B, k) information words → (B, n) codewords (gr-fec's bit order)."""
        u = np.asarray(info, np.uint8)
        x = np.empty((u.shape[0], self.n), np.uint8)
        x[:, self.rank:] = u
        x[:, :self.rank] = (u.astype(np.int32) @ self.parity.T.astype(np.int32)) & 1
        y = np.empty_like(x)
        y[:, self.permute] = x
        return y

    def info_bits(self, codewords: np.ndarray) -> np.ndarray:
        """(B, n) codewords → (B, k) information bits."""
        return codewords[:, self.permute[self.rank:]]


class NumpyLdpc(ChannelCode):
    """LDPC code on an alist matrix: gr-fec-compatible encoder, normalized min-sum decoder.

    Flooding schedule over all codewords of a frame at once, check-to-variable messages
    scaled by ``alpha`` (0.8), stopping when every codeword satisfies its parity checks or
    after ``max_iter`` iterations (then the hard decisions are returned as they are).
    """

    def __init__(self, name: str, matrix: LdpcMatrix, max_iter: int = 50, alpha: float = 0.8):
        self.name, self.mat = name, matrix
        self.n, self.k = matrix.n, matrix.k
        self.max_iter, self.alpha = int(max_iter), np.float32(alpha)
        dc = max(r.size for r in matrix.rows)
        # check → variable table, padded with a dummy variable n whose LLR is +inf
        cv = np.full((matrix.m, dc), matrix.n, np.int64)
        for r, cs in enumerate(matrix.rows):
            cv[r, :cs.size] = cs
        self._cv, self._pad = cv, cv == matrix.n
        # variable → edge table (edges = flattened cv), padded with a zero-message slot
        edges = np.flatnonzero(~self._pad.reshape(-1))
        var = cv.reshape(-1)[edges]
        order = np.argsort(var, kind="stable")
        counts = np.bincount(var, minlength=matrix.n)
        dv = counts.max()
        ve = np.full((matrix.n, dv), cv.size, np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot = np.arange(order.size) - np.repeat(starts, counts)
        ve[var[order], slot] = edges[order]
        self._ve = ve

    def encode(self, bits):
        u = self._words(np.asarray(bits, np.uint8), self.k, "information")
        return self.mat.encode(u).reshape(-1)

    def decode(self, llr):
        L = self._words(np.nan_to_num(np.asarray(llr, np.float32), posinf=50, neginf=-50), self.n, "LLR")
        L = np.clip(L, -50, 50)
        B, (m, dc) = L.shape[0], self._cv.shape
        Lp = np.concatenate([L, np.full((B, 1), np.inf, np.float32)], axis=1)
        R = np.zeros((B, m, dc), np.float32)
        total = L.copy()
        for _ in range(self.max_iter):
            hard = total < 0
            hp = np.concatenate([hard, np.zeros((B, 1), bool)], axis=1)
            if not np.any(np.bitwise_xor.reduce(hp[:, self._cv], axis=2)):
                break
            Lp[:, :self.n] = total
            Q = Lp[:, self._cv] - R                  # variable → check (padding stays +inf)
            mag = np.abs(Q)
            neg = Q < 0
            sign = np.where(np.bitwise_xor.reduce(neg, axis=2, keepdims=True) ^ neg, -1.0, 1.0)
            i1 = np.argmin(mag, axis=2)
            min1 = np.take_along_axis(mag, i1[..., None], axis=2)
            mag2 = mag.copy()
            np.put_along_axis(mag2, i1[..., None], np.inf, axis=2)
            min2 = mag2.min(axis=2, keepdims=True)
            own_min = np.arange(dc)[None, None, :] == i1[..., None]
            R = (self.alpha * sign * np.where(own_min, min2, min1)).astype(np.float32)
            R[:, self._pad] = 0.0
            Rf = np.concatenate([R.reshape(B, -1), np.zeros((B, 1), np.float32)], axis=1)
            total = L + Rf[:, self._ve].sum(axis=2)
        return self.mat.info_bits((total < 0).astype(np.uint8)).reshape(-1)


# ----------------------------------------------------------------------------- the LDPC code set

@dataclass(frozen=True)
class LdpcSpec:
    """Where an LDPC matrix comes from: a gr-fec shipped alist file, or a Gallager construction."""

    name: str                  # rate label used in MCS names, e.g. "1/2"
    file: str = ""             # shipped alist file name (share/gnuradio/fec/ldpc)
    gallager: tuple = ()       # (n, wc, wr, seed) for gallager_alist

    def alist_text(self) -> str:
        if self.gallager:
            return gallager_alist(*self.gallager)
        for d in gr_ldpc_dirs():
            path = os.path.join(d, self.file)
            if os.path.isfile(path):
                with open(path) as f:
                    return f.read()
        raise FileNotFoundError(f"LDPC matrix {self.file} not found in {', '.join(gr_ldpc_dirs())} "
                                "(install Debian's gnuradio package or set SEMCOM_GR_LDPC_DIR)")


#: rate label → matrix. n ≈ 1300…1800 keeps the unused tail of a 16384-symbol frame small.
LDPC_CODES = {
    "1/4": LdpcSpec("1/4", gallager=(1800, 3, 4, 14)),
    "2/5": LdpcSpec("2/5", file="n_1300_k_0522_gap_30.alist"),
    "1/2": LdpcSpec("1/2", file="n_1800_k_0902_gap_28.alist"),
    "2/3": LdpcSpec("2/3", gallager=(1800, 3, 9, 23)),
    "3/4": LdpcSpec("3/4", gallager=(1800, 3, 12, 34)),
    "5/6": LdpcSpec("5/6", gallager=(1800, 3, 18, 56)),
}


def gr_ldpc_dirs() -> list[str]:
    """Folders searched for gr-fec's shipped alist files (``SEMCOM_GR_LDPC_DIR`` first)."""
    dirs = [os.environ.get("SEMCOM_GR_LDPC_DIR", "")]
    dirs += [os.path.join(p, "share", "gnuradio", "fec", "ldpc") for p in (sys.prefix, "/usr", "/usr/local")]
    return [d for d in dict.fromkeys(dirs) if d]


_BACKENDS = {"numpy": lambda name, text, max_iter: NumpyLdpc(name, LdpcMatrix(text), max_iter)}
_CACHE: dict = {}
_LOCK = threading.Lock()


def register_ldpc_backend(name: str, factory) -> None:
    """Make an LDPC implementation available: ``factory(name, alist_text, max_iter) -> ChannelCode``.

    ``gnuradio.semcom.blocks.fec_ldpc`` registers "gr-fec" when it is imported.
    """
    with _LOCK:
        _BACKENDS[name] = factory
        for key in [k for k in _CACHE if k[0] == name]:
            del _CACHE[key]


def ldpc_backends() -> list[str]:
    """Registered LDPC backends, preferred first ("gr-fec" when registered, then "numpy")."""
    return sorted(_BACKENDS, key=lambda b: b == "numpy")


def ldpc_code(rate: str, backend: str = "auto", max_iter: int = 50) -> ChannelCode:
    """The LDPC code of ``LDPC_CODES[rate]`` from ``backend`` ("auto" = preferred), cached per process."""
    if rate not in LDPC_CODES:
        raise ValueError(f"unknown LDPC rate {rate!r}; available: {', '.join(LDPC_CODES)}")
    if backend == "auto":
        backend = ldpc_backends()[0]
    if backend not in _BACKENDS:
        raise ValueError(f"LDPC backend {backend!r} is not registered (have {', '.join(ldpc_backends())}); "
                         "'gr-fec' needs `import gnuradio.semcom.blocks.fec_ldpc`")
    key = (backend, rate, int(max_iter))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _BACKENDS[backend](rate, LDPC_CODES[rate].alist_text(), int(max_iter))
        return _CACHE[key]

