"""Both passes over the pairs i < j of one population: one tile traversal, no N x N values.

:func:`symmetric_sums` is the only loop over the tiles of a population.
Row tiles of :data:`._tiles.BLOCK` rows run one after another; inside one,
column chunks of ``BLOCK`` columns run in parallel. A chunk owns its
columns' sums outright, and the rows' partial sums of every chunk are
reduced afterwards in chunk order, so no sum depends on the number of
threads. Pass 1 (the soft counts) and pass 2 (the weighted sums) are this
traversal without and with row coefficients.

Accumulators inside a chunk are in the working dtype (sums of at most
``BLOCK`` terms, like one BLAS panel); soft counts, weight sums and the
per-chunk totals are float64.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..._jit import CONTRACT, serial_twin
from . import _tiles
from ._packing import pad_and_pack, workspace
from ._tiles import (
    MR, add_sums, check_packing, cols_update, gram_tile, kernel_tile, row_totals, rows_update,
    weigh,
)

__all__ = ["CACHE_BYTES", "CACHE_MIN_D", "FusedPasses", "symmetric_sums",
           "symmetric_sums_serial"]

# Entries below which a row tile's partial products are reduced serially.
_SERIAL_REDUCTION = 1 << 18


@njit(parallel=True, fastmath=CONTRACT, cache=True)
def symmetric_sums(Sp, Pk, sqn, n, scale, block, cache, sums, rowpart, coef, acc, rowacc,
                   colacc):
    """One pass over the pairs ``i < j < n``: row sums of the kernel values, or of the weights.

    ``Sp`` (Np, Dp): padded centred patterns; ``Pk`` (Np / 2L, Dp, 2L): the
    same, packed by column tiles; ``sqn``: their squared norms (working
    dtype, zero-padded); ``rowpart``: (chunks, block) float64 scratch;
    ``cache``: (row tiles, chunks, block, block) in the working dtype, or an
    empty array.

    Pass 1, ``coef`` (and ``acc``, ``rowacc``, ``colacc``) ``None``:
    ``sums[i] += sum_{j != i, j < n} K_ij`` (float64, length Np), and a
    non-empty ``cache`` keeps the kernel values for pass 2.

    Pass 2: ``w_ij = K_ij (g_i + g_j)`` with ``coef`` = g (working dtype,
    zero-padded); ``sums[i] += sum_j w_ij`` and ``acc[i] += sum_j w_ij Sp_j``
    (float64, (Np, Dp)); scratch ``rowacc`` and ``colacc`` (chunks, block,
    Dp) in the working dtype. A non-empty ``cache`` holds the kernel values
    pass 1 kept (then no Gram product or exp is recomputed).

    Numba compiles the two passes separately and drops the other pass's
    branches (``coef is None`` is known when it compiles).
    """
    check_packing(Pk, block)
    keep = cache.shape[0] > 0
    Np, Dp = Sp.shape
    width = Pk.shape[2]
    for r0 in range(0, Np, block):
        r1 = min(r0 + block, Np)
        nchunk = (Np - r0 + block - 1) // block
        for t in prange(nchunk):
            c0 = r0 + t * block
            c1 = min(c0 + block, Np)
            # The tiles of the row tile against one column tile: a (BLOCK, 2L)
            # panel that stays in L1/L2 (32 KiB in float32).
            panel = np.empty((r1 - r0, width), Sp.dtype)
            rowvec = np.zeros((r1 - r0, width))
            if coef is not None:
                rowacc[t].fill(0.0)
                colacc[t].fill(0.0)
            for j0 in range(c0, c1, width):
                P = Pk[j0 // width]
                rows_end = min(r1, j0 + width)  # rows below the diagonal have no pairs here
                for i0 in range(r0, rows_end, MR):
                    # Pass 2 keeps the whole panel for the column products;
                    # pass 1 reuses one tile of it, which stays in L1.
                    row = i0 - r0 if coef is not None else 0
                    tile = panel[row:row + MR]
                    if keep and coef is not None:  # pass 2 reads what pass 1 kept
                        kept = cache[r0 // block, t, i0 - r0:, j0 - c0:j0 - c0 + width]
                        for r in range(MR):
                            tile[r] = kept[r]
                    else:
                        gram_tile(Sp, i0, P, tile)
                        kernel_tile(tile, sqn, i0, j0, n, scale)
                        if keep:
                            kept = cache[r0 // block, t, i0 - r0:, j0 - c0:j0 - c0 + width]
                            for r in range(MR):
                                kept[r] = tile[r]
                    if coef is not None:
                        weigh(tile, coef, coef, i0, j0)
                    # A chunk owns its columns: their sums go straight to ``sums``.
                    add_sums(tile, rowvec[i0 - r0:], sums[j0:j0 + width])
                    if coef is not None:
                        rows_update(tile, Sp, j0, rowacc[t, i0 - r0:])
                if coef is not None:
                    cols_update(panel[:rows_end - r0], Sp, r0, colacc[t, j0 - c0:])
            row_totals(rowvec, rowpart[t])
            if coef is not None:
                for c in range(c1 - c0):
                    a = acc[c0 + c]
                    s = colacc[t, c]
                    for k in range(Dp):
                        a[k] += s[k]
        # The rows' partial sums, chunk by chunk in order: in parallel only
        # when that is worth a parallel region (~40 us to wake the threads).
        if coef is not None and nchunk * (r1 - r0) * Dp > _SERIAL_REDUCTION:
            for r in prange(r1 - r0):
                _add_row_partials(r, r0, nchunk, sums, rowpart)
                _add_row_products(r, r0, nchunk, acc, rowacc)
        else:
            for r in range(r1 - r0):
                _add_row_partials(r, r0, nchunk, sums, rowpart)
                if coef is not None:
                    _add_row_products(r, r0, nchunk, acc, rowacc)


@njit(inline="always", fastmath=CONTRACT, cache=True)
def _add_row_partials(r, r0, nchunk, sums, rowpart):
    """Row ``r0 + r``: add the chunks' partial sums, in chunk order."""
    for t in range(nchunk):
        sums[r0 + r] += rowpart[t, r]


@njit(inline="always", fastmath=CONTRACT, cache=True)
def _add_row_products(r, r0, nchunk, acc, rowacc):
    """Row ``r0 + r``: add the chunks' partial products, in chunk order."""
    a = acc[r0 + r]
    for t in range(nchunk):
        s = rowacc[t, r]
        for k in range(a.size):
            a[k] += s[k]


symmetric_sums_serial = serial_twin(symmetric_sums)


# Bytes of kernel values pass 1 may keep for pass 2, which then skips its
# Gram products and exps (a quarter of the multiply-adds). A constant, not a
# function of N: only batches whose whole (padded) N x N block fits keep it.
# Below CACHE_MIN_D recomputing was cheaper than the memory traffic.
# Interleaved medians, 2 cores: float32 2048 x 1024 73 ms kept / 87 ms
# recomputed, float64 2048 x 1024 132 / 159 ms, float32 4096 x 256 60 / 64 ms,
# but float32 4096 x 64 26 / 19 ms.
CACHE_BYTES = 64 << 20
CACHE_MIN_D = 128


class FusedPasses:
    """Both passes for one population of centred patterns ``Sc`` (working dtype) and norms ``sqn``.

    Holds the padded patterns (``Sp`` (Np, Dp), their column-tile packing
    ``Pk`` (Np / 2L, Dp, 2L), padded norms), the float64 scratch and, after
    ``counts(keep=True)``, the kept kernel values: O(N D) memory plus at most
    :data:`CACHE_BYTES`. The padded patterns and the cache are this thread's
    workspaces: use one instance at a time per thread and dtype.

    Parameters
    ----------
    Sc : ndarray, shape (N, D)
        Centred patterns, float32 or float64.
    sqn : ndarray, shape (N,)
        Their squared norms.
    parallel : bool
        Use the parallel kernels (else their serial twins).
    """

    def __init__(self, Sc: np.ndarray, sqn: np.ndarray, parallel: bool = True) -> None:
        self.n = Sc.shape[0]
        self._sums = symmetric_sums if parallel else symmetric_sums_serial
        self.Sc = Sc
        # Serial (small) batches allocate: a workspace lookup costs more there.
        self.Sp, self.Pk, self.sqn = pad_and_pack(Sc, sqn, "S" if parallel else None)
        Np = self.Sp.shape[0]
        self.block = min(_tiles.BLOCK, Np)  # blocks never need more rows than there are
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
            self.cache = workspace("cache", shape, self.Sp.dtype)
            self.cache_scale = scale
        C0 = np.zeros(self.Sp.shape[0])
        self._sums(self.Sp, self.Pk, self.sqn, self.n, scale, self.block, self.cache, C0,
                   self.rowpart, None, None, None, None)
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
        acc = workspace("acc", (Np, Dp), np.float64)
        acc.fill(0.0)
        self._sums(self.Sp, self.Pk, self.sqn, N, scale, self.block, self.cache, rowsum,
                   self.rowpart, g, acc,
                   workspace("rowacc", (nchunk, self.block, Dp), self.Sp.dtype),
                   workspace("colacc", (nchunk, self.block, Dp), self.Sp.dtype))
        return rowsum[:N], acc[:N, :D]
