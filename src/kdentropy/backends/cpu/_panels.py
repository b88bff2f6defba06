"""The CPU backend's machinery: O(N·D) kernels, the fused panel epilogue and the panel drivers.

See :mod:`kdentropy.backends.cpu` for the tiling scheme, the threading and the numerics.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit, prange

from ... import _estimator
from ._fastmath import FASTMATH as _FASTMATH
from ._fastmath import _add_into, _exp_nonpos, _kernel, _sum, _sumsq

# Rows per parallel work item in the epilogues. Fixed (not derived from the
# thread count) so that the column-sum reduction order never changes.
_ROW_CHUNK = 16
# Rows per tile, and the bound (in entries) on a B x W panel and on the
# W x D product buffer (2**22 entries: 32 MiB in float64). Large panels mean
# few BLAS calls and parallel regions, i.e. few points where all threads must
# meet: measured on 2 busy cores, B = 256 was up to 3x slower than B = 1024,
# while one thread ran at the same speed with either.
_TILE_ROWS = 1024
_PANEL_ENTRIES = 1 << 22
# Bytes of kernel values that pass 1 may keep for pass 2 (saving their Gram
# products and exps there). A constant, not a function of N.
_K_CACHE_BYTES = 32 << 20


# Inner loops below always run from 0 over sliced views: Numba loops with a
# variable start index were measured not to vectorise (3-4x slower).

# ----------------------------------------------------------------------------- O(N·D) kernels
# These touch each of the N·D entries a few times; they are serial because
# that is negligible next to the O(N^2 D) panel work and compiles much faster.

# The shared formula with the branch-free polynomial exp: the loop vectorises.
_sigmoid = njit(inline="always", cache=True)(_estimator.make_sigmoid(_exp_nonpos))
_sigmoid_slope = njit(inline="always", cache=True)(_estimator.sigmoid_slope)


@njit(fastmath=_FASTMATH, error_model="numpy", cache=True)
def sigmoid_flat(x, temperature, threshold, out):
    """``out = sigmoid(T (x - theta))`` elementwise on flat arrays, in float64, rounded once."""
    for k in range(x.size):
        out[k] = _sigmoid(np.float64(x[k]), temperature, threshold)


@njit(cache=True)
def _column_mean(S, mean):
    """Column means of ``S`` in float64, rows added in order."""
    N, D = S.shape
    mean[:] = 0.0
    for i in range(N):
        _add_into(mean, S[i])
    for k in range(D):
        mean[k] /= max(N, 1)


@njit(cache=True)
def _center_on(S, mean, Sc, sqnorm):
    """``Sc = S - mean`` (rounded to S's dtype) and ``sqnorm_i = |Sc_i|^2`` in float64."""
    N, D = S.shape
    for i in range(N):
        s = S[i]
        c = Sc[i]
        for k in range(D):
            c[k] = np.float64(s[k]) - mean[k]
        sqnorm[i] = _sumsq(c)


@njit(cache=True)
def pair_sums(rowsum, Sc, acc, out):
    """``out_i = rowsum_i Sc_i - acc_i = sum_j w_ij (S_i - S_j)`` in float64."""
    N, D = Sc.shape
    for i in range(N):
        r = rowsum[i]
        a = acc[i]
        c = Sc[i]
        o = out[i]
        for k in range(D):
            o[k] = r * np.float64(c[k]) - a[k]


@njit(cache=True)
def chain_rule_flat(V, S, temperature, factor, out):
    """``out = factor V sigmoid_slope(S, T)`` elementwise on flat arrays, in out's dtype."""
    for k in range(S.size):
        out[k] = factor * V[k] * _sigmoid_slope(np.float64(S[k]), temperature)


# ----------------------------------------------------------------------------- panel epilogue
# A panel is the Gram block G = Sc[rows] @ Sc[cols].T of one row tile against a
# range of columns; ``offset`` = (first row) - (first column), so that entry
# (r, c) pairs pattern i with pattern j = i + (c - r - offset). ``mode`` says
# which entries count:
#   _ALL    every entry (blocks of different patterns),
#   _SKIP   all but c == r + offset (the same patterns on both sides),
#   _UPPER  the symmetric pass over pairs i < j: either the panel starts with
#           the row tile's own diagonal block (offset == 0; only c > r counts
#           there) or it lies wholly right of it (offset <= -rows). Column sums
#           then carry the pairs' other half.
_ALL, _SKIP, _UPPER = 0, 1, 2
# ``stage`` says what the epilogue does:
#   _COUNT          K from G, sums into the soft counts;
#   _COUNT_KEEP     the same, and leave K (in G's dtype) where it counts;
#   _WEIGHT         w from G, stored in G, sums of w;
#   _WEIGHT_CACHED  w from the K that _COUNT_KEEP left in G.
_COUNT, _COUNT_KEEP, _WEIGHT, _WEIGHT_CACHED = 0, 1, 2, 3


@njit(inline="always", fastmath=_FASTMATH, cache=True)
def _panel_chunk(G, ni, nj, coef_i, coef_j, scale, offset, mode, stage, row_out, kb, cp,
                 r0, r1):
    """Rows ``r0:r1`` of one panel (see :func:`_panel`); ``kb``/``cp`` are the chunk's scratch."""
    bw = G.shape[1]
    with_cols = mode == _UPPER
    weights = stage >= _WEIGHT
    if with_cols:
        cp[:] = 0.0
    for r in range(r0, r1):
        lo = min(max(r + offset + 1, 0), bw) if mode == _UPPER else 0
        g = G[r, lo:]
        k = kb[lo:bw]
        if stage == _WEIGHT_CACHED:
            for c in range(k.size):
                k[c] = g[c]
        else:
            n = nj[lo:]
            a = ni[r]
            for c in range(k.size):
                k[c] = _kernel(a, n[c], g[c], scale, k)
        if mode == _SKIP and 0 <= r + offset < bw:
            k[r + offset] = 0.0
        if weights:
            v = coef_j[lo:]
            u = coef_i[r]
            for c in range(k.size):
                g[c] = k[c] * (u + v[c])
                k[c] = g[c]  # the stored (rounded) weight is what gets summed
        elif stage == _COUNT_KEEP:
            for c in range(k.size):
                g[c] = k[c]
        row_out[r] += _sum(k)
        if with_cols:
            _add_into(cp[lo:], k)


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _panel(G, ni, nj, coef_i, coef_j, scale, offset, mode, stage,
           row_out, col_out, kbuf, cpart):
    """Fused epilogue of one panel: distances, kernel, weights, row/column sums.

    Counting stages add the row sums of ``K`` to ``row_out`` and, in
    ``_UPPER`` mode, its column sums to ``col_out`` (``coef_i``/``coef_j``
    are unused). Weighting stages overwrite ``G`` with
    ``w_ij = K_ij (g_i + g_j)`` (0 where excluded) and add the sums of the
    *stored* weights (float32-rounded for float32 panels), so that
    ``rowsum_i Sc_i - (W @ Sc)_i`` cancels exactly what it should; in
    ``_UPPER`` mode a diagonal block is completed by symmetry, so that one
    product ``W @ Sc`` serves both of its halves (its column sums, added to
    ``col_out``, are then row sums: ``row_out`` and ``col_out`` are views of
    one per-pattern array). ``kbuf``/``cpart`` are per-chunk scratch.
    """
    bi, bw = G.shape
    nchunk = (bi + _ROW_CHUNK - 1) // _ROW_CHUNK
    with_cols = mode == _UPPER
    weights = stage >= _WEIGHT
    # A diagonal block's upper triangle gives early chunks far more entries
    # than late ones, and prange hands each thread one contiguous range of
    # iterations: so every iteration takes a chunk and its mirror image,
    # which evens out the work (2 threads, one 1024-row block: 3/4 of it had
    # landed on the first thread).
    for t in prange((nchunk + 1) // 2):
        first = np.int64(t)  # a prange index may be unsigned; keep chunk indices int64
        for half in range(2):
            ch = first if half == 0 else nchunk - 1 - first
            if half == 1 and ch == first:
                continue
            _panel_chunk(G, ni, nj, coef_i, coef_j, scale, offset, mode, stage, row_out,
                         kbuf[ch], cpart[ch, :bw], ch * _ROW_CHUNK,
                         min(bi, (ch + 1) * _ROW_CHUNK))
    if with_cols:
        # Chunks are added in a fixed order, whatever the number of threads.
        for ch in range(nchunk):
            _add_into(col_out, cpart[ch, :bw])
    if weights and mode == _UPPER and offset == 0:
        # Mirror the diagonal block's upper triangle (W is symmetric there),
        # in 32 x 32 blocks so that the strided reads stay in cache.
        for rb in range(0, bi, 32):
            for cb in range(0, rb + 1, 32):
                for r in range(rb, min(rb + 32, bi)):
                    for c in range(cb, min(cb + 32, r)):
                        G[r, c] = G[c, r]
        for r in range(bi):
            G[r, r] = 0.0


# ----------------------------------------------------------------------------- drivers

def _ranges(lo: int, hi: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(hi, a + step)) for a in range(lo, hi, step)]


# Workspace buffers are kept per thread between calls: a fresh multi-MiB
# buffer is fresh memory from the OS, and writing it the first time (page
# faults) took longer than the GEMM that filled it (2.5 ms instead of 1.3 ms
# for a float64 1024 x 1024 x 64 Gram block). Bounded by the workspace sizes.
_KEPT = threading.local()


def _kept(name: str, size: int, dtype: np.dtype) -> np.ndarray:
    """A flat buffer of at least ``size`` entries, reused across calls in this thread."""
    dtype = np.dtype(dtype)
    key = (name, dtype.str)
    buffers = _KEPT.__dict__.setdefault("buffers", {})
    buf = buffers.get(key)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=dtype)
        buffers[key] = buf
    return buf[:size]


class _Workspace:
    """Bounded buffers shared by all panels of one call.

    ``rows x width`` panel, ``width x D`` product buffer and per-chunk
    scratch: O(_PANEL_ENTRIES) memory, plus the pass-1 kernel cache (at most
    ``_K_CACHE_BYTES``) when a gradient is wanted.
    """

    def __init__(self, rows: int, cols: int, D: int, dtype: np.dtype, with_grad: bool) -> None:
        self.dtype = np.dtype(dtype)
        self.rows = max(1, min(_TILE_ROWS, rows))
        # Wide panels mean few, large BLAS calls and parallel regions.
        width = min(_PANEL_ENTRIES // self.rows, _PANEL_ENTRIES // max(D, 1))
        self.width = max(self.rows, min(width, cols))
        nchunk = (self.rows + _ROW_CHUNK - 1) // _ROW_CHUNK
        self.panel = _kept("panel", self.rows * self.width, dtype)
        self.cpart = _kept("cpart", nchunk * self.width, np.float64).reshape(nchunk, self.width)
        self.kbuf = _kept("kbuf", nchunk * self.width, dtype).reshape(nchunk, self.width)
        if with_grad:
            self.P = _kept("P", self.rows * D, dtype).reshape(self.rows, D)
            self.Q = _kept("Q", self.width * D, dtype).reshape(self.width, D)

    def buffer(self, bi: int, bw: int) -> np.ndarray:
        return self.panel[: bi * bw].reshape(bi, bw)


def _sym_plan(N: int, ws: _Workspace, keep: bool):
    """Panels of the symmetric pass, in visiting order, with their K-cache slots.

    Returns ``(panels, cache)``: ``panels`` lists ``(i0, i1, c0, c1, slot)``
    where ``slot`` is a view of ``cache`` for the panels whose kernel values
    pass 1 keeps (in order, while they fit in ``_K_CACHE_BYTES``), else None.
    """
    spans = [(i0, i1, c0, c1) for i0, i1 in _ranges(0, N, ws.rows)
             for c0, c1 in _ranges(i0, N, ws.width)]
    budget = _K_CACHE_BYTES // ws.dtype.itemsize if keep else 0
    sizes = []
    used = 0
    for i0, i1, c0, c1 in spans:
        size = (i1 - i0) * (c1 - c0)
        fits = used + size <= budget
        sizes.append(size if fits else 0)
        used += size if fits else 0
    cache = _kept("kcache", used, ws.dtype)
    panels = []
    pos = 0
    for (i0, i1, c0, c1), size in zip(spans, sizes):
        slot = cache[pos:pos + size].reshape(i1 - i0, c1 - c0) if size else None
        pos += size
        panels.append((i0, i1, c0, c1, slot))
    return panels, cache


# Below this D a float64 diagonal block is one GEMM too: OpenBLAS's dsyrk
# (half the flops) was 3x slower than dgemm at D = 64 and 1.3x at D = 256, and
# only 1.2x faster at D = 1024 (2 threads).
_SYRK_MIN_D = 512


def _sym_gram(Sc: np.ndarray, ScT: np.ndarray, i0: int, i1: int, c0: int, c1: int,
              G: np.ndarray) -> None:
    """``G = Sc[i0:i1] @ Sc[c0:c1].T`` by BLAS (``ScT`` is ``Sc.T``, contiguous).

    The right operand comes from the separate buffer ``ScT``, so NumPy never
    sees ``A @ A.T`` and never switches to syrk, which was 6x slower than
    GEMM for a float32 1024 x 1024 x 64 block (OpenBLAS 0.3.31, 2 threads).
    Only float64 diagonal blocks with ``D >= _SYRK_MIN_D`` use syrk on
    purpose. Only the upper triangle of a diagonal block is read, so GEMM's
    not exactly symmetric result is harmless.
    """
    A = Sc[i0:i1]
    if c0 == i0 and Sc.dtype == np.float64 and Sc.shape[1] >= _SYRK_MIN_D:
        bi = i1 - i0
        np.matmul(A, A.T, out=G[:, :bi])  # NumPy recognises A @ A.T and calls syrk
        if c1 > i1:
            np.matmul(A, ScT[:, i1:c1], out=G[:, bi:])
    else:
        np.matmul(A, ScT[:, c0:c1], out=G)


def _sym_counts(Sc: np.ndarray, ScT: np.ndarray, sqn: np.ndarray, scale: float,
                ws: _Workspace, panels) -> np.ndarray:
    """Pass 1: ``C0_i = sum_{j != i} K_ij`` for one population, from the pairs i < j."""
    C0 = np.zeros(Sc.shape[0])
    for i0, i1, c0, c1, slot in panels:
        G = ws.buffer(i1 - i0, c1 - c0) if slot is None else slot
        _sym_gram(Sc, ScT, i0, i1, c0, c1, G)
        # sqn stands in for the coefficient arguments, which counting ignores: it has
        # their dtype, so both passes share one compiled _panel.
        _panel(G, sqn[i0:i1], sqn[c0:c1], sqn[i0:i1], sqn[c0:c1], scale, i0 - c0, _UPPER,
               _COUNT if slot is None else _COUNT_KEEP, C0[i0:i1], C0[c0:c1],
               ws.kbuf, ws.cpart)
    return C0


def _sym_grad(Sc: np.ndarray, ScT: np.ndarray, sqn: np.ndarray, coef: np.ndarray,
              scale: float, ws: _Workspace, panels) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2 for one population, from the pairs i < j.

    Returns ``(rowsum, acc)`` (float64) with ``rowsum_i = sum_j w_ij`` and
    ``acc_i = sum_j w_ij Sc_j``, so that
    ``sum_j w_ij (S_i - S_j) = rowsum_i Sc_i - acc_i``.
    """
    rowsum = np.zeros(Sc.shape[0])
    acc = np.zeros(Sc.shape)
    for i0, i1, c0, c1, slot in panels:
        bi, bw = i1 - i0, c1 - c0
        if slot is None:
            W = ws.buffer(bi, bw)
            _sym_gram(Sc, ScT, i0, i1, c0, c1, W)
        else:
            W = slot  # holds K from pass 1
        _panel(W, sqn[i0:i1], sqn[c0:c1], coef[i0:i1], coef[c0:c1], scale, i0 - c0, _UPPER,
               _WEIGHT if slot is None else _WEIGHT_CACHED, rowsum[i0:i1], rowsum[c0:c1],
               ws.kbuf, ws.cpart)
        P = ws.P[:bi]
        np.matmul(W, Sc[c0:c1], out=P)  # sum_j w_ij Sc_j for the rows
        acc[i0:i1] += P
        # A diagonal block is complete in W, so only the columns right of it
        # need the transposed product.
        d = bi if c0 == i0 else 0
        if bw > d:
            Q = ws.Q[: bw - d]
            np.matmul(W[:, d:].T, Sc[i0:i1], out=Q)  # sum_i w_ij Sc_i for the columns
            acc[c0 + d : c1] += Q
    return rowsum, acc


def _centered(S: np.ndarray, mean: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``S - mean`` in ``dtype`` (the panels' working precision) and its squared row norms.

    The norms are summed in float64 and then rounded to ``dtype``, the
    precision in which :func:`_panel` forms distances.
    """
    Sc = np.empty(S.shape, dtype=dtype)
    sqn = np.empty(S.shape[0])
    _center_on(S, mean, Sc, sqn)
    return Sc, sqn.astype(dtype, copy=False)


def _column_mean_of(S: np.ndarray) -> np.ndarray:
    mean = np.empty(S.shape[1])
    _column_mean(S, mean)
    return mean


