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

from ._fastmath import FASTMATH, kernel_exp64


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
# 50 us per launch on 2 cores, against ~20 us of work at N, D = 64, 32), so
# small batches run serially. Each pair i < j is visited once; its kernel
# value is kept in an N x N scratch (small by construction) for pass 2.

@njit(fastmath=FASTMATH, cache=True)
def small_counts(S, scale, C0, K):
    """Serial pass 1: ``C0_i = sum_{j != i} K_ij``, with ``K[i, j]`` (i < j) kept."""
    N = S.shape[0]
    C0[:] = 0.0
    for i in range(N):
        a = S[i]
        for j in range(i + 1, N):
            k = kernel_exp64(-scale * _sqdist(a, S[j]))
            K[i, j] = k
            C0[i] += k
            C0[j] += k


@njit(fastmath=FASTMATH, cache=True)
def small_pair_sums(S, coef, K, V):
    """Serial pass 2: ``V_i = sum_j K_ij (g_i + g_j) (S_i - S_j)`` from the kept ``K``."""
    N, D = S.shape
    V[:] = 0.0
    for i in range(N):
        a = S[i]
        vi = V[i]
        for j in range(i + 1, N):
            w = K[i, j] * (coef[i] + coef[j])
            if w != 0.0:
                b = S[j]
                vj = V[j]
                for k in range(D):
                    t = w * (np.float64(a[k]) - np.float64(b[k]))
                    vi[k] += t
                    vj[k] -= t
