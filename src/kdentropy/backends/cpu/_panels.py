"""Gram panels by BLAS with fused epilogues: the second route of one population's two passes.

The fused route (:mod:`._symmetric`) never stores a pair value; this one lets
BLAS form ``G = Sc[rows] @ Sc[cols].T`` for one panel of up to
:data:`_TILE_ROWS` rows at a time, turns the panel into kernel values or
weights in place (a parallel Numba epilogue), and for the gradient lets BLAS
form ``W @ Sc_cols`` and ``W.T @ Sc_rows``. Where BLAS runs its GEMM near the
FMA peak (large D) that beats register tiles written in Numba; where it does
not, the fused route wins. :mod:`._routes` chooses between them.

Panels cover the pairs ``i < j`` only (upper triangle), visited in a fixed
order; epilogues run over fixed chunks of :data:`_ROW_CHUNK` rows and reduce
column sums in chunk order, so results do not depend on the Numba thread
count. BLAS products are called from Python between the parallel regions,
never inside one. Kernel values are flushed to 0 below ``exp(-64)`` in
float32 and ``exp(-600)`` in float64 (:func:`._kernel_value.kernel`): no
subnormal ever enters a BLAS product, where each would take a microcode
assist. Memory: a few ``N x D`` arrays, panels of at most
:data:`_PANEL_ENTRIES` entries and at most :data:`_K_CACHE_BYTES` of kept
kernel values; no N x N array.

Restored from the BLAS-panel backend of commit 79a6d26 (there ``_panels.py``);
only the imports changed.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..._jit import CONTRACT
from ._kernel_value import kernel
from ._packing import workspace
from ._sums import add_into, ordered_sum

__all__ = ["Panels"]

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


@njit(inline="always", fastmath=CONTRACT, cache=True)
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
                k[c] = kernel(a, n[c], g[c], scale, k)
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
        row_out[r] += ordered_sum(k)
        if with_cols:
            add_into(cp[lo:], k)


@njit(parallel=True, fastmath=CONTRACT, cache=True)
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
            add_into(col_out, cpart[ch, :bw])
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
        self.panel = workspace("panel", (self.rows * self.width,), dtype)
        self.cpart = workspace("panel-cpart", (nchunk * self.width,), np.float64).reshape(nchunk, self.width)
        self.kbuf = workspace("panel-kbuf", (nchunk * self.width,), dtype).reshape(nchunk, self.width)
        if with_grad:
            self.P = workspace("panel-P", (self.rows * D,), dtype).reshape(self.rows, D)
            self.Q = workspace("panel-Q", (self.width * D,), dtype).reshape(self.width, D)

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
    cache = workspace("panel-kcache", (used,), ws.dtype)
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


class Panels:
    """Both passes for one population on BLAS Gram panels; the interface of ``FusedPasses``.

    Parameters
    ----------
    Sc : ndarray, shape (N, D)
        Centred patterns in the working dtype (float32 or float64).
    sqn : ndarray, shape (N,)
        Their squared norms, in the same dtype.
    """

    def __init__(self, Sc: np.ndarray, sqn: np.ndarray) -> None:
        self.Sc = Sc
        self.sqn = sqn
        # A separate transposed copy: NumPy then never sees ``A @ A.T``
        # except where _sym_gram asks for syrk on purpose.
        self.ScT = np.ascontiguousarray(Sc.T)
        self._panels = None

    def counts(self, scale: float, keep: bool = False) -> np.ndarray:
        """Pass 1: ``C0_i = sum_{j != i} K_ij`` (float64, shape (N,)).

        With ``keep``, kernel values of the first panels (up to
        :data:`_K_CACHE_BYTES`) stay for :meth:`pair_sums`.
        """
        N, D = self.Sc.shape
        self._ws = _Workspace(N, N, D, self.Sc.dtype, keep)
        self._panels, _ = _sym_plan(N, self._ws, keep)
        self._scale = scale
        return _sym_counts(self.Sc, self.ScT, self.sqn, scale, self._ws, self._panels)

    def pair_sums(self, coef: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Pass 2: ``(rowsum, acc)``, ``rowsum_i = sum_j w_ij``, ``acc_i = sum_j w_ij Sc_j`` (float64).

        After :meth:`counts` with ``keep=True`` it reads the kept kernel
        values (same ``scale`` required); otherwise it recomputes every
        panel. ``coef`` (float64) is rounded to the working dtype, as in the
        fused route.
        """
        if self._panels is None or not hasattr(self._ws, "P"):
            N, D = self.Sc.shape
            self._ws = _Workspace(N, N, D, self.Sc.dtype, True)
            self._panels, _ = _sym_plan(N, self._ws, False)
        elif scale != self._scale:
            raise ValueError("pair_sums must use the scale of the counts whose kernel values it reads")
        return _sym_grad(self.Sc, self.ScT, self.sqn, coef.astype(self.Sc.dtype, copy=False),
                         scale, self._ws, self._panels)
