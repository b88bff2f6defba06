"""The fused passes between two blocks of patterns: the block primitives' tiles.

Every row of a block A is paired with every row of a block B: no symmetry,
so tasks own whole rows of A and nothing is reduced across tasks, and no
sum depends on the number of threads. A task takes :data:`ROWS_PER_TASK`
rows and walks B in chunks of :data:`._tiles.BLOCK` columns, so that one
chunk's packed columns serve all of its row tiles from L1/L2.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..._jit import CONTRACT
from . import _tiles
from ._packing import pad_and_pack, workspace
from ._tiles import (
    MR, add_row_sums, check_packing, gram_tile, kernel_pairs, row_totals, rows_update, weigh,
)

__all__ = ["ROWS_PER_TASK", "cross_sums", "cross_block_counts", "cross_block_pair_sums"]

ROWS_PER_TASK = 64


@njit(parallel=True, fastmath=CONTRACT, cache=True)
def cross_sums(Ap, sqa, Pk, sqb, na, nb, scale, skip_diagonal, block, sums, ga, Bp, gb, acc):
    """Row sums over ``j`` of ``K(a_i, b_j)`` or of the weights (``j != i`` with ``skip_diagonal``).

    ``Ap``/``sqa``: padded rows of A and their norms; ``Pk``/``sqb``: packed
    columns of B and their norms (as in :func:`._packing.pad_and_pack`).

    Counts, ``ga`` (and ``Bp``, ``gb``, ``acc``) ``None``:
    ``sums[i] = sum_j K(a_i, b_j)`` (float64, length of Ap).

    Weighted: ``w_ij = K_ij (g_i + g_j)`` with ``ga``/``gb`` the row
    coefficients of A and B (working dtype, zero-padded) and ``Bp`` the
    padded rows of B; ``sums[i] = sum_j w_ij`` and ``acc[i] += sum_j w_ij Bp_j``
    (float64). Products are summed in the working dtype over one chunk of
    ``block`` columns, then added in float64.

    Numba compiles the two separately and drops the other one's branches
    (``ga is None`` is known when it compiles).
    """
    check_packing(Pk, block)
    width = Pk.shape[2]
    Nbp = Pk.shape[0] * width
    Dp = Ap.shape[1]
    for task in prange((Ap.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        r0 = task * ROWS_PER_TASK
        r1 = min(r0 + ROWS_PER_TASK, Ap.shape[0])
        tile = np.empty((MR, width), Ap.dtype)
        rowvec = np.zeros((r1 - r0, width))
        if ga is not None:
            racc = np.empty((r1 - r0, Dp), Ap.dtype)
        for c0 in range(0, Nbp, block):
            if ga is not None:
                racc.fill(0.0)
            for i0 in range(r0, r1, MR):
                for j0 in range(c0, min(c0 + block, Nbp), width):
                    gram_tile(Ap, i0, Pk[j0 // width], tile)
                    kernel_pairs(tile, sqa, sqb, i0, j0, na, nb, scale, skip_diagonal)
                    if ga is not None:
                        weigh(tile, ga, gb, i0, j0)
                    add_row_sums(tile, rowvec[i0 - r0:])
                    if ga is not None:
                        rows_update(tile, Bp, j0, racc[i0 - r0:])
            if ga is not None:
                for r in range(r1 - r0):
                    a = acc[r0 + r]
                    s = racc[r]
                    for k in range(Dp):
                        a[k] += s[k]
        row_totals(rowvec, sums[r0:r1])


def cross_block_counts(Sa: np.ndarray, sqa: np.ndarray, Sb: np.ndarray, sqb: np.ndarray,
                       scale: float, skip_diagonal: bool) -> np.ndarray:
    """``C0_i = sum_j K(a_i, b_j)`` (float64, shape (Na,)) for centred blocks and their norms."""
    Ap, _, sqap = pad_and_pack(Sa, sqa, "A")
    _, Pk, sqbp = pad_and_pack(Sb, sqb, "B")
    C0 = np.empty(Ap.shape[0])
    cross_sums(Ap, sqap, Pk, sqbp, Sa.shape[0], Sb.shape[0], scale, skip_diagonal, _tiles.BLOCK,
               C0, None, None, None, None)
    return C0[: Sa.shape[0]]


def cross_block_pair_sums(Sa: np.ndarray, sqa: np.ndarray, ga: np.ndarray, Sb: np.ndarray,
                          sqb: np.ndarray, gb: np.ndarray, scale: float, skip_diagonal: bool
                          ) -> tuple[np.ndarray, np.ndarray]:
    """``(rowsum, acc)``: ``sum_j w_ij`` and ``sum_j w_ij Sb_j`` (float64) for the rows of ``Sa``.

    ``w_ij = K(a_i, b_j) (g_i + g_j)`` with ``ga``/``gb`` (float64) rounded to
    the working dtype. ``acc`` is a view of this thread's workspace.
    """
    Ap, _, sqap = pad_and_pack(Sa, sqa, "A")
    Bp, Pk, sqbp = pad_and_pack(Sb, sqb, "B")
    gap = np.zeros(Ap.shape[0], Ap.dtype)
    gap[: Sa.shape[0]] = ga
    gbp = np.zeros(Bp.shape[0], Ap.dtype)
    gbp[: Sb.shape[0]] = gb
    rowsum = np.empty(Ap.shape[0])
    acc = workspace("acc", Ap.shape, np.float64)
    acc.fill(0.0)
    cross_sums(Ap, sqap, Pk, sqbp, Sa.shape[0], Sb.shape[0], scale, skip_diagonal, _tiles.BLOCK,
               rowsum, gap, Bp, gbp, acc)
    return rowsum[: Sa.shape[0]], acc[: Sa.shape[0], : Sa.shape[1]]
