"""Fused, register-tiled passes over the pairs i < j: no BLAS, no N x N values.

One Numba kernel does everything for an ``8 x 2L`` tile of pairs (``L`` =
SIMD lanes, :mod:`._simd`) while it sits in registers and L1:

1. ``G = Sc_rows . Sc_cols`` with 16 vector accumulators (:func:`_gram_tile`);
2. the epilogue: ``K`` masked to ``i < j < N`` (:func:`_kernel_tile`), for
   the gradient ``w = K (g_i + g_j)`` (:func:`_weigh`), and their row and
   column sums (:func:`_add_sums`);
3. for the gradient, ``W @ Sc_cols`` into the rows' accumulators and
   ``W.T @ Sc_rows`` into the columns' (:func:`_rows_update`,
   :func:`_cols_update`), again in register tiles.

Row tiles of :data:`BLOCK` rows run one after another; inside one, column
chunks of ``BLOCK`` columns run in parallel. A chunk owns its columns' sums
outright, and the rows' partial sums of every chunk are reduced afterwards
in chunk order, so no sum depends on the number of threads. Patterns are
padded with zero rows and columns to whole tiles and whole vectors (zero
columns change no distance; padded rows are masked out).

Accumulators inside a chunk are in the working dtype (sums of at most
``BLOCK`` terms, like one BLAS panel); soft counts, weight sums and the
per-chunk totals are float64.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import njit, prange

from ._fastmath import FASTMATH as _FASTMATH
from ._fastmath import _kernel, _sum, serial_twin
from ._simd import vfma, vlanes, vload, vsplat, vstore, vzero

# Rows of one register tile (its columns are two vectors: 2L).
_MR = 8


@njit(cache=True)
def _compiled_tile_columns(like):
    return 2 * vlanes(like)


def tile_columns(dtype) -> int:
    """Columns of one register tile for ``dtype`` (two vectors), as the compiled kernels see it."""
    return _compiled_tile_columns(np.empty(0, dtype=dtype))


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
    for r in range(_MR):
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


@njit(inline="always", fastmath=_FASTMATH, cache=True)
def _gram_tile(Sp, i0, P, out):
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


@njit(inline="always", fastmath=_FASTMATH, cache=True)
def _rows_update(W, Sp, j0, acc):
    """``acc[r] += sum_c W[r, c] Sp[j0 + c]`` for the tile's 8 rows (``acc``: (8, Dp))."""
    L = vlanes(Sp)
    for k in range(0, Sp.shape[1], 2 * L):
        t = _tile_load(acc, 0, k, L)
        for c in range(W.shape[1]):
            s = Sp[j0 + c]
            t = _tile_fma(t, Sp, vload(s, k), vload(s, k + L), W[0, c], W[1, c], W[2, c],
                          W[3, c], W[4, c], W[5, c], W[6, c], W[7, c])
        _tile_store(acc, 0, k, L, t)


@njit(inline="always", fastmath=_FASTMATH, cache=True)
def _cols_update(W, Sp, i0, acc):
    """``acc[c] += sum_r W[r, c] Sp[i0 + r]`` for the 2L columns of a panel ``W`` (``acc``: (2L, Dp)).

    ``W`` holds every row of the row tile at once: each load and store of
    the 16 accumulators is then shared by up to BLOCK rows instead of 8
    (the float32 update at D = 1024 ran at 30 % of the FMA peak per tile).
    """
    L = vlanes(Sp)
    for c0 in range(0, W.shape[1], _MR):
        for k in range(0, Sp.shape[1], 2 * L):
            t = _tile_load(acc, c0, k, L)
            for r in range(W.shape[0]):
                s = Sp[i0 + r]
                w = W[r]
                t = _tile_fma(t, Sp, vload(s, k), vload(s, k + L), w[c0], w[c0 + 1],
                              w[c0 + 2], w[c0 + 3], w[c0 + 4], w[c0 + 5], w[c0 + 6], w[c0 + 7])
            _tile_store(acc, c0, k, L, t)


# ----------------------------------------------------------------------------- tile epilogues

@njit(inline="always", fastmath=_FASTMATH, cache=True)
def _kernel_tile(T, sqn, i0, j0, n, scale):
    """Turn the Gram tile ``T`` into ``K_ij`` where ``i < j < n``, 0 elsewhere (i = i0 + r, j = j0 + c)."""
    width = T.shape[1]
    hi = min(width, n - j0)
    nj = sqn[j0:j0 + width]
    for r in range(_MR):
        t = T[r]
        a = sqn[i0 + r]
        for c in range(width):
            t[c] = _kernel(a, nj[c], t[c], scale, T)
        lo = min(max(i0 + r + 1 - j0, 0), width) if i0 + r < n else width
        for c in range(lo):
            t[c] = 0.0
        for c in range(max(hi, lo), width):
            t[c] = 0.0


@njit(inline="always", fastmath=_FASTMATH, cache=True)
def _add_sums(T, rows, cols):
    """``rows[r] += T[r]`` and ``cols[c] += sum_r T[r, c]`` elementwise in float64.

    ``rows`` holds one float64 vector of 2L partial sums per row, reduced
    once per chunk (:func:`_row_totals`): elementwise adds vectorise, a sum
    per tile row did not (it cost as much as the kernel values at D = 64).
    """
    for r in range(_MR):
        t = T[r]
        v = rows[r]
        for c in range(t.size):
            x = np.float64(t[c])
            v[c] += x
            cols[c] += x


@njit(inline="always", fastmath=_FASTMATH, cache=True)
def _row_totals(rowvec, out):
    """``out[r] = sum_c rowvec[r, c]`` in a fixed order."""
    for r in range(rowvec.shape[0]):
        out[r] = _sum(rowvec[r])


@njit(inline="always", fastmath=_FASTMATH, cache=True)
def _weigh(T, coef_rows, coef_cols, i0, j0):
    """``T[r, c] *= g_i + g_j``: kernel values become weights."""
    width = T.shape[1]
    v = coef_cols[j0:j0 + width]
    for r in range(_MR):
        t = T[r]
        u = coef_rows[i0 + r]
        for c in range(width):
            t[c] = t[c] * (u + v[c])


# ----------------------------------------------------------------------------- passes

@njit(inline="always", cache=True)
def _check_layout(Pk, block):
    """The packed tile width must be this build's 2L, and ``block`` a multiple of it.

    A cached kernel may have been compiled for another SIMD width (e.g. with
    ``NUMBA_CPU_NAME=generic`` caches shared between machines); reading the
    layout with the wrong width would run past its rows.
    """
    if Pk.shape[2] != 2 * vlanes(Pk) or block % Pk.shape[2] != 0:
        raise ValueError("packed layout does not match this build's SIMD width")


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def fused_counts(Sp, Pk, sqn, n, scale, block, C0, rowpart, cache):
    """Pass 1: ``C0[i] = sum_{j != i, j < n} K_ij`` (float64, length Np).

    ``Sp`` (Np, Dp): padded centred patterns; ``Pk`` (Np / 2L, Dp, 2L): the
    same, packed by column tiles; ``sqn``: their squared norms (working
    dtype, zero-padded); ``rowpart``: (chunks, block) float64 scratch.
    ``cache``: (row tiles, chunks, block, block) in the working dtype, where
    the kernel values are left for pass 2, or an empty array.
    """
    _check_layout(Pk, block)
    keep = cache.shape[0] > 0
    Np = Sp.shape[0]
    width = Pk.shape[2]
    for r0 in range(0, Np, block):
        r1 = min(r0 + block, Np)
        nchunk = (Np - r0 + block - 1) // block
        for t in prange(nchunk):
            c0 = r0 + t * block
            c1 = min(c0 + block, Np)
            tile = np.empty((_MR, width), Sp.dtype)
            rowvec = np.zeros((r1 - r0, width))
            for j0 in range(c0, c1, width):
                P = Pk[j0 // width]
                for i0 in range(r0, min(r1, j0 + width), _MR):
                    _gram_tile(Sp, i0, P, tile)
                    _kernel_tile(tile, sqn, i0, j0, n, scale)
                    if keep:
                        kept = cache[r0 // block, t, i0 - r0:, j0 - c0:j0 - c0 + width]
                        for r in range(_MR):
                            kept[r] = tile[r]
                    # A chunk owns its columns: their sums go straight to C0.
                    _add_sums(tile, rowvec[i0 - r0:], C0[j0:j0 + width])
            _row_totals(rowvec, rowpart[t])
        for t in range(nchunk):
            for r in range(r1 - r0):
                C0[r0 + r] += rowpart[t, r]


# Entries below which a row tile's partial sums are reduced serially.
_SERIAL_REDUCTION = 1 << 18


@njit(inline="always", fastmath=_FASTMATH, cache=True)
def _add_row_partials(r, r0, nchunk, rowsum, acc, rowpart, rowacc):
    """Row ``r0 + r``: add the chunks' partial weight sums and products, in chunk order."""
    a = acc[r0 + r]
    for t in range(nchunk):
        rowsum[r0 + r] += rowpart[t, r]
        s = rowacc[t, r]
        for k in range(a.size):
            a[k] += s[k]


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def fused_pair_sums(Sp, Pk, sqn, coef, n, scale, block, rowsum, acc, rowpart, rowacc, colacc,
                    cache):
    """Pass 2: ``rowsum_i = sum_j w_ij`` and ``acc_i = sum_j w_ij Sc_j`` (float64, padded).

    ``w_ij = K_ij (g_i + g_j)`` with ``coef`` = g (working dtype, zero-padded).
    Scratch: ``rowpart`` (chunks, block) float64, ``rowacc`` and ``colacc``
    (chunks, block, Dp) in the working dtype. ``cache``: the kernel values
    pass 1 kept (then no Gram product or exp is recomputed), or an empty array.
    """
    _check_layout(Pk, block)
    keep = cache.shape[0] > 0
    Np, Dp = Sp.shape
    width = Pk.shape[2]
    for r0 in range(0, Np, block):
        r1 = min(r0 + block, Np)
        nchunk = (Np - r0 + block - 1) // block
        for t in prange(nchunk):
            c0 = r0 + t * block
            c1 = min(c0 + block, Np)
            # The weights of the row tile against one column tile: a
            # (BLOCK, 2L) panel that stays in L1/L2 (32 KiB in float32).
            panel = np.empty((r1 - r0, width), Sp.dtype)
            rowvec = np.zeros((r1 - r0, width))
            racc = rowacc[t]
            racc.fill(0.0)
            cacc = colacc[t]
            cacc.fill(0.0)
            for j0 in range(c0, c1, width):
                P = Pk[j0 // width]
                rows_end = min(r1, j0 + width)  # rows below the diagonal have no pairs here
                for i0 in range(r0, rows_end, _MR):
                    tile = panel[i0 - r0:i0 - r0 + _MR]
                    if keep:
                        kept = cache[r0 // block, t, i0 - r0:, j0 - c0:j0 - c0 + width]
                        for r in range(_MR):
                            tile[r] = kept[r]
                    else:
                        _gram_tile(Sp, i0, P, tile)
                        _kernel_tile(tile, sqn, i0, j0, n, scale)
                    _weigh(tile, coef, coef, i0, j0)
                    _add_sums(tile, rowvec[i0 - r0:], rowsum[j0:j0 + width])
                    _rows_update(tile, Sp, j0, racc[i0 - r0:])
                _cols_update(panel[:rows_end - r0], Sp, r0, cacc[j0 - c0:])
            _row_totals(rowvec, rowpart[t])
            for c in range(c1 - c0):
                a = acc[c0 + c]
                s = cacc[c]
                for k in range(Dp):
                    a[k] += s[k]
        # The rows' partial sums, chunk by chunk in order: in parallel only
        # when that is worth a parallel region (~40 us to wake the threads).
        if nchunk * (r1 - r0) * Dp > _SERIAL_REDUCTION:
            for r in prange(r1 - r0):
                _add_row_partials(r, r0, nchunk, rowsum, acc, rowpart, rowacc)
        else:
            for r in range(r1 - r0):
                _add_row_partials(r, r0, nchunk, rowsum, acc, rowpart, rowacc)


fused_counts_serial = serial_twin(fused_counts)
fused_pair_sums_serial = serial_twin(fused_pair_sums)


# ----------------------------------------------------------------------------- two blocks
# The block primitives pair every row of a block A with every row of a block
# B (the MPI layout): no symmetry, so tasks own whole rows of A and nothing
# is reduced across tasks. A task takes ROWS_PER_TASK rows and walks B in
# chunks of BLOCK columns, so that one chunk's packed columns serve all of
# its row tiles from L1/L2.

ROWS_PER_TASK = 64


@njit(inline="always", fastmath=_FASTMATH, cache=True)
def _kernel_pairs(T, sqa, sqb, i0, j0, na, nb, scale, skip_diagonal):
    """Turn the Gram tile ``T`` into ``K(a_i, b_j)`` for ``i < na``, ``j < nb`` (``i != j`` with
    ``skip_diagonal``), 0 elsewhere (i = i0 + r, j = j0 + c)."""
    width = T.shape[1]
    hi = max(min(width, nb - j0), 0)
    nj = sqb[j0:j0 + width]
    for r in range(_MR):
        t = T[r]
        a = sqa[i0 + r]
        for c in range(width):
            t[c] = _kernel(a, nj[c], t[c], scale, T)
        for c in range(hi if i0 + r < na else 0, width):
            t[c] = 0.0
        d = i0 + r - j0
        if skip_diagonal and 0 <= d < width:
            t[d] = 0.0


@njit(inline="always", fastmath=_FASTMATH, cache=True)
def _add_row_sums(T, rows):
    """``rows[r] += T[r]`` elementwise in float64 (see :func:`_add_sums`)."""
    for r in range(_MR):
        t = T[r]
        v = rows[r]
        for c in range(t.size):
            v[c] += np.float64(t[c])


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def cross_counts(Ap, sqa, Pk, sqb, na, nb, scale, skip_diagonal, block, C0):
    """``C0[i] = sum_j K(a_i, b_j)`` (float64, length of Ap), skipping ``j = i`` with ``skip_diagonal``.

    ``Ap``/``sqa``: padded rows of A and norms; ``Pk``/``sqb``: packed columns
    of B and norms (as in :class:`FusedPasses`).
    """
    _check_layout(Pk, block)
    width = Pk.shape[2]
    Nbp = Pk.shape[0] * width
    for task in prange((Ap.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        r0 = task * ROWS_PER_TASK
        r1 = min(r0 + ROWS_PER_TASK, Ap.shape[0])
        tile = np.empty((_MR, width), Ap.dtype)
        rowvec = np.zeros((r1 - r0, width))
        for c0 in range(0, Nbp, block):
            for i0 in range(r0, r1, _MR):
                for j0 in range(c0, min(c0 + block, Nbp), width):
                    _gram_tile(Ap, i0, Pk[j0 // width], tile)
                    _kernel_pairs(tile, sqa, sqb, i0, j0, na, nb, scale, skip_diagonal)
                    _add_row_sums(tile, rowvec[i0 - r0:])
        _row_totals(rowvec, C0[r0:r1])


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def cross_pair_sums(Ap, sqa, ga, Pk, Bp, sqb, gb, na, nb, scale, skip_diagonal, block,
                    rowsum, acc):
    """``rowsum_i = sum_j w_ij``, ``acc_i = sum_j w_ij Sb_j`` (float64) with ``w_ij = K_ij (g_i + g_j)``.

    ``ga``/``gb``: row coefficients of A and B (working dtype, zero-padded);
    ``Bp``: padded rows of B. Products are summed in the working dtype over
    one chunk of ``block`` columns, then added in float64.
    """
    _check_layout(Pk, block)
    width = Pk.shape[2]
    Nbp = Pk.shape[0] * width
    Dp = Ap.shape[1]
    for task in prange((Ap.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        r0 = task * ROWS_PER_TASK
        r1 = min(r0 + ROWS_PER_TASK, Ap.shape[0])
        tile = np.empty((_MR, width), Ap.dtype)
        rowvec = np.zeros((r1 - r0, width))
        racc = np.empty((r1 - r0, Dp), Ap.dtype)
        for c0 in range(0, Nbp, block):
            racc.fill(0.0)
            for i0 in range(r0, r1, _MR):
                for j0 in range(c0, min(c0 + block, Nbp), width):
                    _gram_tile(Ap, i0, Pk[j0 // width], tile)
                    _kernel_pairs(tile, sqa, sqb, i0, j0, na, nb, scale, skip_diagonal)
                    _weigh(tile, ga, gb, i0, j0)
                    _add_row_sums(tile, rowvec[i0 - r0:])
                    _rows_update(tile, Bp, j0, racc[i0 - r0:])
            for r in range(r1 - r0):
                a = acc[r0 + r]
                s = racc[r]
                for k in range(Dp):
                    a[k] += s[k]
        _row_totals(rowvec, rowsum[r0:r1])


# ----------------------------------------------------------------------------- drivers

@njit(cache=True)
def _pack(Sc, sqn, Sp, Pk, sqp):
    """Zero-padded copies: ``Sp = Sc``, ``Pk[t, k, c] = Sp[t 2L + c, k]``, ``sqp = sqn``."""
    N, D = Sc.shape
    Np, Dp = Sp.shape
    width = Pk.shape[2]
    Sp[:] = 0.0
    sqp[:] = 0.0
    for i in range(N):
        sqp[i] = sqn[i]
        for k in range(D):
            Sp[i, k] = Sc[i, k]
    for t in range(Pk.shape[0]):
        for k in range(Dp):
            for c in range(width):
                Pk[t, k, c] = Sp[t * width + c, k]


# Bytes of kernel values pass 1 may keep for pass 2, which then skips its
# Gram products and exps (a quarter of the multiply-adds). A constant, not a
# function of N: only batches whose whole (padded) N x N block fits keep it.
# Below CACHE_MIN_D recomputing was cheaper than the memory traffic.
# Interleaved medians, 2 cores: float32 2048 x 1024 73 ms kept / 87 ms
# recomputed, float64 2048 x 1024 132 / 159 ms, float32 4096 x 256 60 / 64 ms,
# but float32 4096 x 64 26 / 19 ms.
CACHE_BYTES = 64 << 20
CACHE_MIN_D = 128

# Rows per row tile, and columns per parallel chunk; a multiple of every tile
# width (2L <= 32). Interleaved medians on 2 cores (value + gradient, float32):
# 256 beat 64 and 128 at every N from 512 to 16384 (1024 x 64: 2.19 ms
# against 2.64 ms with 64) and 512 at D >= 256.
BLOCK = 256


# Workspaces up to this size are kept per thread between calls. Fresh
# buffers are fresh pages whenever the allocator returns large blocks to the
# OS (it did after every call once JAX was loaded in the process): 5,700 page
# faults and ~10 % of a 2048 x 1024 float32 call. Larger ones are not kept,
# so a huge call leaves nothing behind.
# At most about a dozen names per dtype are kept per thread.
KEEP_BYTES = 64 << 20
# Small blocks come from the heap without page faults; the lookup would cost
# more than the allocation.
_KEEP_MIN_BYTES = 1 << 20
_KEPT = threading.local()


def _workspace(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array, reused across calls in this thread when small enough."""
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    if not _KEEP_MIN_BYTES <= size * dtype.itemsize <= KEEP_BYTES:
        return np.empty(shape, dtype)
    buffers = _KEPT.__dict__.setdefault("buffers", {})
    key = (name, dtype.str)
    buf = buffers.get(key)
    if buf is None or buf.size < size:
        buf = buffers[key] = np.empty(size, dtype)
    return buf[:size].reshape(shape)


def _layout(Sc: np.ndarray, sqn: np.ndarray, name: str | None):
    """``(Sp, Pk, sqp)``: ``Sc`` zero-padded to (Np, Dp), packed by column tiles, padded norms.

    ``Np`` and ``Dp`` are the next multiples of the tile width 2L. Named
    layouts live in this thread's workspaces; ``name=None`` allocates.
    """
    N, D = Sc.shape
    width = tile_columns(Sc.dtype)
    Np = -(-max(N, 1) // width) * width
    Dp = -(-max(D, 1) // width) * width
    if name is None:
        Sp = np.empty((Np, Dp), Sc.dtype)
        Pk = np.empty((Np // width, Dp, width), Sc.dtype)
    else:
        Sp = _workspace(name + "p", (Np, Dp), Sc.dtype)
        Pk = _workspace(name + "k", (Np // width, Dp, width), Sc.dtype)
    sqp = np.empty(Np, dtype=Sc.dtype)
    _pack(Sc, sqn, Sp, Pk, sqp)
    return Sp, Pk, sqp


class FusedPasses:
    """Both passes for one population of centred patterns ``Sc`` (working dtype) and norms ``sqn``.

    Holds the padded layout (``Sp`` (Np, Dp), its column-tile packing ``Pk``
    (Np / 2L, Dp, 2L), padded norms), the float64 scratch and, after
    ``counts(keep=True)``, the kept kernel values: O(N D) memory plus at most
    :data:`CACHE_BYTES`. The layout and cache are this thread's workspaces:
    use one instance at a time per thread and dtype.
    """

    def __init__(self, Sc: np.ndarray, sqn: np.ndarray, parallel: bool = True) -> None:
        self.n = Sc.shape[0]
        self._counts = fused_counts if parallel else fused_counts_serial
        self._pair_sums = fused_pair_sums if parallel else fused_pair_sums_serial
        self.Sc = Sc
        # Serial (small) batches allocate: a workspace lookup costs more there.
        self.Sp, self.Pk, self.sqn = _layout(Sc, sqn, "S" if parallel else None)
        Np = self.Sp.shape[0]
        self.block = min(BLOCK, Np)  # blocks never need more rows than there are
        self.rowpart = np.empty((-(-Np // self.block), self.block))
        self.cache = np.empty((0, 0, 0, 0), dtype=Sc.dtype)

    def counts(self, scale: float, keep: bool = False) -> np.ndarray:
        """Pass 1: ``C0_i = sum_{j != i} K_ij`` (float64, shape (N,)).

        With ``keep``, the kernel values stay for :meth:`pair_sums` if they
        fit in :data:`CACHE_BYTES` and ``D >= CACHE_MIN_D``.
        """
        tiles = self.rowpart.shape[0]
        shape = (tiles, tiles, self.block, self.block)
        if (keep and self.Sc.shape[1] >= CACHE_MIN_D
                and math.prod(shape) * self.Sp.itemsize <= CACHE_BYTES):
            self.cache = _workspace("cache", shape, self.Sp.dtype)
            self.cache_scale = scale
        C0 = np.zeros(self.Sp.shape[0])
        self._counts(self.Sp, self.Pk, self.sqn, self.n, scale, self.block, C0, self.rowpart,
                     self.cache)
        return C0[: self.n]

    def pair_sums(self, coef: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Pass 2: ``(rowsum, acc)`` with ``rowsum_i = sum_j w_ij``, ``acc_i = sum_j w_ij Sc_j`` (float64).

        ``coef`` holds the row coefficients g (float64, shape (N,)); they
        are rounded to the working dtype, in which the weights are formed.
        ``acc`` is a view of this thread's workspace: use it before the next call.
        """
        if self.cache.size and scale != self.cache_scale:
            raise ValueError("pair_sums must use the scale of the counts whose kernel values it reads")
        Np, Dp = self.Sp.shape
        N, D = self.Sc.shape
        g = np.zeros(Np, dtype=self.Sp.dtype)
        g[:N] = coef
        nchunk = self.rowpart.shape[0]
        rowsum = np.zeros(Np)
        acc = _workspace("acc", (Np, Dp), np.float64)
        acc.fill(0.0)
        self._pair_sums(self.Sp, self.Pk, self.sqn, g, N, scale, self.block, rowsum, acc,
                        self.rowpart, _workspace("rowacc", (nchunk, self.block, Dp), self.Sp.dtype),
                        _workspace("colacc", (nchunk, self.block, Dp), self.Sp.dtype), self.cache)
        return rowsum[:N], acc[:N, :D]


def cross_block_counts(Sa: np.ndarray, sqa: np.ndarray, Sb: np.ndarray, sqb: np.ndarray,
                       scale: float, skip_diagonal: bool) -> np.ndarray:
    """``C0_i = sum_j K(a_i, b_j)`` (float64, shape (Na,)) for centred blocks and their norms."""
    Ap, _, sqap = _layout(Sa, sqa, "A")
    _, Pk, sqbp = _layout(Sb, sqb, "B")
    C0 = np.empty(Ap.shape[0])
    cross_counts(Ap, sqap, Pk, sqbp, Sa.shape[0], Sb.shape[0], scale, skip_diagonal, BLOCK, C0)
    return C0[: Sa.shape[0]]


def cross_block_pair_sums(Sa: np.ndarray, sqa: np.ndarray, ga: np.ndarray, Sb: np.ndarray,
                          sqb: np.ndarray, gb: np.ndarray, scale: float, skip_diagonal: bool
                          ) -> tuple[np.ndarray, np.ndarray]:
    """``(rowsum, acc)``: ``sum_j w_ij`` and ``sum_j w_ij Sb_j`` (float64) for the rows of ``Sa``.

    ``w_ij = K(a_i, b_j) (g_i + g_j)`` with ``ga``/``gb`` (float64) rounded to
    the working dtype. ``acc`` is a view of this thread's workspace.
    """
    Ap, _, sqap = _layout(Sa, sqa, "A")
    Bp, Pk, sqbp = _layout(Sb, sqb, "B")
    gap = np.zeros(Ap.shape[0], Ap.dtype)
    gap[: Sa.shape[0]] = ga
    gbp = np.zeros(Bp.shape[0], Ap.dtype)
    gbp[: Sb.shape[0]] = gb
    rowsum = np.empty(Ap.shape[0])
    acc = _workspace("acc", Ap.shape, np.float64)
    acc.fill(0.0)
    cross_pair_sums(Ap, sqap, gap, Pk, Bp, sqbp, gbp, Sa.shape[0], Sb.shape[0], scale,
                    skip_diagonal, BLOCK, rowsum, acc)
    return rowsum[: Sa.shape[0]], acc[: Sa.shape[0], : Sa.shape[1]]
