"""Register tiles of pairs and their epilogues: what every fused pass does to 8 x 2L pairs.

A tile pairs 8 rows with ``2L`` columns (``L`` = SIMD lanes, :mod:`._simd`).
One kernel handles it while it sits in registers and L1:

1. ``G = Sc_rows . Sc_cols`` with 16 vector accumulators (:func:`gram_tile`);
2. the epilogue: ``K`` masked to the pairs that count
   (:func:`kernel_tile` for ``i < j`` in one population, :func:`kernel_pairs`
   for two blocks), for the gradient ``w = K (g_i + g_j)`` (:func:`weigh`),
   and their row and column sums (:func:`add_sums`, :func:`add_row_sums`);
3. for the gradient, ``W @ Sc_cols`` into the rows' accumulators and
   ``W.T @ Sc_rows`` into the columns' (:func:`rows_update`,
   :func:`cols_update`), again in register tiles.

Products inside a tile are in the working dtype; row and column sums are
float64. The traversals that visit the tiles are in :mod:`._symmetric`
(one population) and :mod:`._cross` (two blocks).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..._jit import CONTRACT
from ._kernel_value import kernel
from ._simd import vfma, vlanes, vload, vsplat, vstore, vzero
from ._sums import ordered_sum

__all__ = [
    "MR", "BLOCK", "tile_columns", "check_packing", "gram_tile", "rows_update", "cols_update",
    "kernel_tile", "kernel_pairs", "weigh", "add_sums", "add_row_sums", "row_totals",
]

#: Rows of one register tile (its columns are two vectors: 2L).
MR = 8

#: Rows per row tile, and columns per parallel chunk; a multiple of every tile
#: width (2L <= 32). Interleaved medians on 2 cores (value + gradient,
#: float32): 256 beat 64 and 128 at every N from 512 to 16384 (1024 x 64:
#: 2.19 ms against 2.64 ms with 64) and 512 at D >= 256.
BLOCK = 256


@njit(cache=True)
def _compiled_tile_columns(like):
    return 2 * vlanes(like)


def tile_columns(dtype: np.dtype) -> int:
    """Columns of one register tile for ``dtype`` (two vectors), as the compiled kernels see it."""
    return _compiled_tile_columns(np.empty(0, dtype=dtype))


@njit(inline="always", cache=True)
def check_packing(Pk, block):
    """The packed tile width must be this build's 2L, and ``block`` a multiple of it.

    A cached kernel may have been compiled for another SIMD width (e.g. with
    ``NUMBA_CPU_NAME=generic`` caches shared between machines); reading the
    packed columns with the wrong width would run past their rows.
    """
    if Pk.shape[2] != 2 * vlanes(Pk) or block % Pk.shape[2] != 0:
        raise ValueError("packed columns do not match this build's SIMD width")


# ----------------------------------------------------------------------------- register tiles

# A register tile is a tuple of 16 vectors: rows r = 0..7 of the tile, two
# vectors (a, b) each, in the order (0a, 0b, 1a, 1b, ...). Tuples of vectors
# stay in registers across loops (LLVM splits them into SSA values).

@njit(inline="always", cache=True)
def _tile_zero(like):
    z = vzero(like)
    return (z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z)


@njit(inline="always", cache=True)
def _tile_load(rows, first, k, L):
    """Vectors ``rows[first + r, k : k + 2L]`` for r = 0..7."""
    return (vload(rows[first], k), vload(rows[first], k + L),
            vload(rows[first + 1], k), vload(rows[first + 1], k + L),
            vload(rows[first + 2], k), vload(rows[first + 2], k + L),
            vload(rows[first + 3], k), vload(rows[first + 3], k + L),
            vload(rows[first + 4], k), vload(rows[first + 4], k + L),
            vload(rows[first + 5], k), vload(rows[first + 5], k + L),
            vload(rows[first + 6], k), vload(rows[first + 6], k + L),
            vload(rows[first + 7], k), vload(rows[first + 7], k + L))


@njit(inline="always", cache=True)
def _tile_store(rows, first, k, L, t):
    """``rows[first + r, k : k + 2L] = t``'s vectors for r = 0..7."""
    for r in range(MR):
        vstore(rows[first + r], k, t[2 * r])
        vstore(rows[first + r], k + L, t[2 * r + 1])


@njit(inline="always", cache=True)
def _tile_fma(t, like, b0, b1, s0, s1, s2, s3, s4, s5, s6, s7):
    """Rank-1 update: row r of ``t`` += ``s_r * (b0, b1)``."""
    w0 = vsplat(like, s0)
    w1 = vsplat(like, s1)
    w2 = vsplat(like, s2)
    w3 = vsplat(like, s3)
    w4 = vsplat(like, s4)
    w5 = vsplat(like, s5)
    w6 = vsplat(like, s6)
    w7 = vsplat(like, s7)
    return (vfma(w0, b0, t[0]), vfma(w0, b1, t[1]), vfma(w1, b0, t[2]), vfma(w1, b1, t[3]),
            vfma(w2, b0, t[4]), vfma(w2, b1, t[5]), vfma(w3, b0, t[6]), vfma(w3, b1, t[7]),
            vfma(w4, b0, t[8]), vfma(w4, b1, t[9]), vfma(w5, b0, t[10]), vfma(w5, b1, t[11]),
            vfma(w6, b0, t[12]), vfma(w6, b1, t[13]), vfma(w7, b0, t[14]), vfma(w7, b1, t[15]))


# Terms per register accumulation in a Gram tile. Longer dot products are
# summed in blocks of this many terms, then the blocks added up: float32
# distances at D = 1024 were 4.7x less accurate with one running sum per lane.
_K_BLOCK = 64


@njit(inline="always", fastmath=CONTRACT, cache=True)
def gram_tile(Sp, i0, P, out):
    """``out[r, c] = Sp[i0 + r] . P[:, c]`` for the 8 x 2L tile (``P``: packed columns, (Dp, 2L))."""
    L = vlanes(P)
    one = vsplat(P, 1.0)
    for k0 in range(0, P.shape[0], _K_BLOCK):
        t = _tile_zero(P)
        for k in range(k0, min(k0 + _K_BLOCK, P.shape[0])):
            p = P[k]
            t = _tile_fma(t, P, vload(p, 0), vload(p, L), Sp[i0, k], Sp[i0 + 1, k],
                          Sp[i0 + 2, k], Sp[i0 + 3, k], Sp[i0 + 4, k], Sp[i0 + 5, k],
                          Sp[i0 + 6, k], Sp[i0 + 7, k])
        if k0 > 0:  # add the earlier blocks' sums, which the tile holds
            before = _tile_load(out, 0, 0, L)
            t = (vfma(one, before[0], t[0]), vfma(one, before[1], t[1]),
                 vfma(one, before[2], t[2]), vfma(one, before[3], t[3]),
                 vfma(one, before[4], t[4]), vfma(one, before[5], t[5]),
                 vfma(one, before[6], t[6]), vfma(one, before[7], t[7]),
                 vfma(one, before[8], t[8]), vfma(one, before[9], t[9]),
                 vfma(one, before[10], t[10]), vfma(one, before[11], t[11]),
                 vfma(one, before[12], t[12]), vfma(one, before[13], t[13]),
                 vfma(one, before[14], t[14]), vfma(one, before[15], t[15]))
        _tile_store(out, 0, 0, L, t)


@njit(inline="always", fastmath=CONTRACT, cache=True)
def rows_update(W, Sp, j0, acc):
    """``acc[r] += sum_c W[r, c] Sp[j0 + c]`` for the tile's 8 rows (``acc``: (8, Dp))."""
    L = vlanes(Sp)
    for k in range(0, Sp.shape[1], 2 * L):
        t = _tile_load(acc, 0, k, L)
        for c in range(W.shape[1]):
            s = Sp[j0 + c]
            t = _tile_fma(t, Sp, vload(s, k), vload(s, k + L), W[0, c], W[1, c], W[2, c],
                          W[3, c], W[4, c], W[5, c], W[6, c], W[7, c])
        _tile_store(acc, 0, k, L, t)


@njit(inline="always", fastmath=CONTRACT, cache=True)
def cols_update(W, Sp, i0, acc):
    """``acc[c] += sum_r W[r, c] Sp[i0 + r]`` for the 2L columns of a panel ``W`` (``acc``: (2L, Dp)).

    ``W`` holds every row of the row tile at once: each load and store of
    the 16 accumulators is then shared by up to BLOCK rows instead of 8
    (the float32 update at D = 1024 ran at 30 % of the FMA peak per tile).
    """
    L = vlanes(Sp)
    for c0 in range(0, W.shape[1], MR):
        for k in range(0, Sp.shape[1], 2 * L):
            t = _tile_load(acc, c0, k, L)
            for r in range(W.shape[0]):
                s = Sp[i0 + r]
                w = W[r]
                t = _tile_fma(t, Sp, vload(s, k), vload(s, k + L), w[c0], w[c0 + 1],
                              w[c0 + 2], w[c0 + 3], w[c0 + 4], w[c0 + 5], w[c0 + 6], w[c0 + 7])
            _tile_store(acc, c0, k, L, t)


# ----------------------------------------------------------------------------- epilogues

@njit(inline="always", fastmath=CONTRACT, cache=True)
def kernel_tile(T, sqn, i0, j0, n, scale):
    """Turn the Gram tile ``T`` into ``K_ij`` where ``i < j < n``, 0 elsewhere (i = i0 + r, j = j0 + c)."""
    width = T.shape[1]
    hi = min(width, n - j0)
    nj = sqn[j0:j0 + width]
    for r in range(MR):
        t = T[r]
        a = sqn[i0 + r]
        for c in range(width):
            t[c] = kernel(a, nj[c], t[c], scale, T)
        lo = min(max(i0 + r + 1 - j0, 0), width) if i0 + r < n else width
        for c in range(lo):
            t[c] = 0.0
        for c in range(max(hi, lo), width):
            t[c] = 0.0


@njit(inline="always", fastmath=CONTRACT, cache=True)
def kernel_pairs(T, sqa, sqb, i0, j0, na, nb, scale, skip_diagonal):
    """Turn the Gram tile ``T`` into ``K(a_i, b_j)`` for ``i < na``, ``j < nb`` (``i != j`` with
    ``skip_diagonal``), 0 elsewhere (i = i0 + r, j = j0 + c)."""
    width = T.shape[1]
    hi = max(min(width, nb - j0), 0)
    nj = sqb[j0:j0 + width]
    for r in range(MR):
        t = T[r]
        a = sqa[i0 + r]
        for c in range(width):
            t[c] = kernel(a, nj[c], t[c], scale, T)
        for c in range(hi if i0 + r < na else 0, width):
            t[c] = 0.0
        d = i0 + r - j0
        if skip_diagonal and 0 <= d < width:
            t[d] = 0.0


@njit(inline="always", fastmath=CONTRACT, cache=True)
def weigh(T, coef_rows, coef_cols, i0, j0):
    """``T[r, c] *= g_i + g_j``: kernel values become weights."""
    width = T.shape[1]
    v = coef_cols[j0:j0 + width]
    for r in range(MR):
        t = T[r]
        u = coef_rows[i0 + r]
        for c in range(width):
            t[c] = t[c] * (u + v[c])


@njit(inline="always", fastmath=CONTRACT, cache=True)
def add_sums(T, rows, cols):
    """``rows[r] += T[r]`` and ``cols[c] += sum_r T[r, c]`` elementwise in float64.

    ``rows`` holds one float64 vector of 2L partial sums per row, reduced
    once per chunk (:func:`row_totals`): elementwise adds vectorise, a sum
    per tile row did not (it cost as much as the kernel values at D = 64).
    """
    for r in range(MR):
        t = T[r]
        v = rows[r]
        for c in range(t.size):
            x = np.float64(t[c])
            v[c] += x
            cols[c] += x


@njit(inline="always", fastmath=CONTRACT, cache=True)
def add_row_sums(T, rows):
    """``rows[r] += T[r]`` elementwise in float64 (see :func:`add_sums`)."""
    for r in range(MR):
        t = T[r]
        v = rows[r]
        for c in range(t.size):
            v[c] += np.float64(t[c])


@njit(inline="always", fastmath=CONTRACT, cache=True)
def row_totals(rowvec, out):
    """``out[r] = sum_c rowvec[r, c]`` in a fixed order."""
    for r in range(rowvec.shape[0]):
        out[r] = ordered_sum(rowvec[r])
