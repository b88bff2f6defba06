"""Fixed-order sums for the CPU kernels: never reassociated, whatever the thread count.

Inlined into the Numba loops of :mod:`._tiles`, :mod:`._direct` and :mod:`._rowwise`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["ordered_sum", "ordered_sumsq", "add_into"]


@njit(inline="always", cache=True)
def ordered_sum(v):
    """Sum of a 1-D array in a fixed order, with four independent partial sums."""
    n = v.size
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    m = n - n % 4
    for j in range(0, m, 4):
        s0 += v[j]
        s1 += v[j + 1]
        s2 += v[j + 2]
        s3 += v[j + 3]
    for j in range(m, n):
        s0 += v[j]
    return (s0 + s1) + (s2 + s3)


@njit(inline="always", cache=True)
def ordered_sumsq(v):
    """``sum(v**2)`` in float64, in a fixed order with four partial sums."""
    n = v.size
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    m = n - n % 4
    for j in range(0, m, 4):
        a0 = np.float64(v[j])
        a1 = np.float64(v[j + 1])
        a2 = np.float64(v[j + 2])
        a3 = np.float64(v[j + 3])
        s0 += a0 * a0
        s1 += a1 * a1
        s2 += a2 * a2
        s3 += a3 * a3
    for j in range(m, n):
        a0 = np.float64(v[j])
        s0 += a0 * a0
    return (s0 + s1) + (s2 + s3)


@njit(inline="always", cache=True)
def add_into(acc, v):
    """``acc += v`` elementwise (float64 accumulator)."""
    for j in range(v.size):
        acc[j] += v[j]
