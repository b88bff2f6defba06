"""Direct-difference kernels: the CPU path for kernel widths too small for any Gram product.

``d2 = sum_k (S_ik - S_jk)^2`` has no cancellation, so it is exact to
rounding however small sigma is; :mod:`.._conditioning` decides when the Gram
panels would not be. These loops visit every pair from both sides (no BLAS,
no symmetry), in parallel over rows: each row is summed by one task in a
fixed order, so results do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._fastmath import FASTMATH, _sum, kernel_exp64


@njit(inline="always", cache=True)
def _sqdist(a, b):
    s = 0.0
    for k in range(a.size):
        t = np.float64(a[k]) - np.float64(b[k])
        s += t * t
    return s


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def direct_counts(Sa, Sb, scale, same_block, C0):
    """``C0_i = sum_j exp(-scale |Sa_i - Sb_j|^2)`` (float64), skipping ``j = i`` in one block."""
    for i in prange(Sa.shape[0]):
        a = Sa[i]
        c = 0.0
        for j in range(Sb.shape[0]):
            if not (same_block and j == i):
                c += kernel_exp64(-scale * _sqdist(a, Sb[j]))
        C0[i] = c


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def direct_pair_sums(Sa, ga, Sb, gb, scale, same_block, V):
    """``V_i = sum_j exp(-scale |Sa_i - Sb_j|^2) (g_i + g_j) (Sa_i - Sb_j)`` (float64)."""
    D = Sa.shape[1]
    for i in prange(Sa.shape[0]):
        a = Sa[i]
        v = V[i]
        v[:] = 0.0
        for j in range(Sb.shape[0]):
            if same_block and j == i:
                continue
            b = Sb[j]
            w = kernel_exp64(-scale * _sqdist(a, b)) * (ga[i] + gb[j])
            if w != 0.0:  # most pairs vanish at the small widths this path serves
                for k in range(D):
                    v[k] += w * (np.float64(a[k]) - np.float64(b[k]))


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


# Reassociation lets LLVM vectorise the sum over j below (2.7x faster at 64 x 32).
# The loop is serial and its order is fixed when it is compiled, so results stay
# bit-identical from run to run and independent of the thread count.
_SMALL_SUM_FASTMATH = FASTMATH | {"reassoc"}


@njit(fastmath=_SMALL_SUM_FASTMATH, cache=True)
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
