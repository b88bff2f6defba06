"""Direct-difference kernels: the CPU path for kernel widths too small for any Gram product.

``d2 = sum_k (S_ik - S_jk)^2`` has no cancellation, so it is exact to
rounding however small sigma is; :mod:`.._conditioning` decides when the Gram
panels would not be. The parallel loops visit every pair from both sides (no
BLAS, no symmetry), in parallel over rows: each row is summed by one task in
a fixed order, so results do not depend on the thread count. Every inner loop
runs over j on transposed patterns (``S.T``, D x N), elementwise over
contiguous memory, so it vectorises.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._fastmath import FASTMATH, _sum, kernel_exp64

# Reassociation lets LLVM vectorise the sums over j in the pass-2 loops (2.7x
# faster at 64 x 32). Each sum runs inside one task in an order fixed when it
# is compiled, so results stay bit-identical from run to run and independent
# of the thread count.
_SUM_FASTMATH = FASTMATH | {"reassoc"}


# Rows per task: they share every pass over the transposed patterns, which
# cuts the memory traffic of the distance loop by this factor.
_ROWS = 8


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _block_sqdist(Sa, i0, i1, SbT, out):
    """``out[r, j] = |Sa[i0 + r] - Sb_j|^2`` with ``SbT = Sb.T``: the loops over j vectorise."""
    out[:] = 0.0
    for k in range(SbT.shape[0]):
        row = SbT[k]
        for r in range(i1 - i0):
            ak = np.float64(Sa[i0 + r, k])
            o = out[r]
            for j in range(row.size):
                t = ak - np.float64(row[j])
                o[j] += t * t


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def direct_counts(Sa, SbT, scale, same_block, C0):
    """``C0_i = sum_j exp(-scale |Sa_i - Sb_j|^2)`` (float64), skipping ``j = i`` in one block.

    ``SbT`` is ``Sb.T`` (contiguous, D x Nb).
    """
    Na = Sa.shape[0]
    Nb = SbT.shape[1]
    for blk in prange((Na + _ROWS - 1) // _ROWS):
        i0 = blk * _ROWS
        i1 = min(Na, i0 + _ROWS)
        K = np.empty((i1 - i0, Nb))  # per task: blocks run in parallel
        _block_sqdist(Sa, i0, i1, SbT, K)
        for r in range(i1 - i0):
            k = K[r]
            for j in range(Nb):
                k[j] = kernel_exp64(-scale * k[j])
            if same_block:
                k[i0 + r] = 0.0
            C0[i0 + r] = _sum(k)


@njit(parallel=True, fastmath=_SUM_FASTMATH, cache=True)
def direct_pair_sums(Sa, ga, Sb, SbT, gb, scale, same_block, V):
    """``V_i = sum_j exp(-scale |Sa_i - Sb_j|^2) (g_i + g_j) (Sa_i - Sb_j)`` (float64).

    ``SbT`` is ``Sb.T`` (contiguous, D x Nb).
    """
    Na = Sa.shape[0]
    D, Nb = SbT.shape
    for blk in prange((Na + _ROWS - 1) // _ROWS):
        i0 = blk * _ROWS
        i1 = min(Na, i0 + _ROWS)
        W = np.empty((i1 - i0, Nb))
        _block_sqdist(Sa, i0, i1, SbT, W)
        for r in range(i1 - i0):
            i = i0 + r
            a = Sa[i]
            w = W[r]
            gi = ga[i]
            nonzero = 0
            for j in range(Nb):
                w[j] = kernel_exp64(-scale * w[j]) * (gi + gb[j])
                nonzero += w[j] != 0.0
            if same_block and w[i] != 0.0:
                w[i] = 0.0
                nonzero -= 1
            v = V[i]
            v[:] = 0.0
            if 4 * nonzero < Nb:
                # At the small widths this path serves most weights vanish:
                # visit only the rows that count, in order.
                for j in range(Nb):
                    if w[j] != 0.0:
                        b = Sb[j]
                        for k in range(D):
                            v[k] += w[j] * (np.float64(a[k]) - np.float64(b[k]))
            else:
                for k in range(D):
                    ak = np.float64(a[k])
                    row = SbT[k]
                    acc = 0.0
                    for j in range(Nb):
                        acc += w[j] * (ak - np.float64(row[j]))
                    v[k] = acc


# ----------------------------------------------------------------------------- small batches
# For small N a parallel region costs more than the whole computation (about
# 50 us per launch on 2 cores, against ~40 us of work at N, D = 64, 32), so
# small batches run serially. Each pair i < j is visited once; its kernel
# value is kept in an N x N scratch (small by construction) for pass 2. The
# loops run over j with S transposed (``ST``, D x N), so that every inner loop
# is elementwise over contiguous memory and vectorises: 3x faster than one
# pair at a time.

@njit(fastmath=FASTMATH, cache=True)
def small_counts(S, ST, scale, C0, K, d2):
    """Serial pass 1: ``C0_i = sum_{j != i} K_ij``, with ``K[i, j]`` (i < j) kept.

    ``ST`` is ``S.T`` (contiguous), ``d2`` a scratch vector of N entries.
    """
    N, D = S.shape
    C0[:] = 0.0
    for i in range(N - 1):
        m = N - i - 1
        dd = d2[:m]
        dd[:] = 0.0
        for k in range(D):
            a = np.float64(S[i, k])
            row = ST[k, i + 1:]
            for j in range(m):
                t = a - np.float64(row[j])
                dd[j] += t * t
        kk = K[i, i + 1:]
        c = C0[i + 1:]
        for j in range(m):
            e = kernel_exp64(-scale * dd[j])
            kk[j] = e
            c[j] += e
        C0[i] += _sum(kk)


@njit(fastmath=_SUM_FASTMATH, cache=True)
def small_pair_sums(S, ST, coef, K, VT, w):
    """Serial pass 2: ``VT[:, i] = sum_j K_ij (g_i + g_j) (S_i - S_j)`` from the kept ``K``.

    The result is transposed (D x N); ``w`` is a scratch vector of N entries.
    """
    N, D = S.shape
    VT[:] = 0.0
    for i in range(N - 1):
        m = N - i - 1
        ww = w[:m]
        kk = K[i, i + 1:]
        gj = coef[i + 1:]
        gi = coef[i]
        for j in range(m):
            ww[j] = kk[j] * (gi + gj[j])
        for k in range(D):
            a = np.float64(S[i, k])
            row = ST[k, i + 1:]
            vt = VT[k, i + 1:]
            acc = 0.0
            for j in range(m):
                v = ww[j] * (a - np.float64(row[j]))
                vt[j] -= v
                acc += v
            VT[k, i] += acc
