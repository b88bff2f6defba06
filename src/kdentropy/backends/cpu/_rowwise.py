"""The CPU backend's O(N·D) kernels: sigmoid, centring, the final pair sums and the chain rule.

They touch each of the N·D entries a few times, next to the O(N^2 D) pair
work of :mod:`._fused`; they are serial because that is negligible and
compiles much faster.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ... import _estimator
from ._fastmath import FASTMATH as _FASTMATH
from ._fastmath import _add_into, _exp_nonpos, _sumsq

# Inner loops below always run from 0 over sliced views: Numba loops with a
# variable start index were measured not to vectorise (3-4x slower).


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
def pair_sum_norms(rowsum, sqn, V):
    """``(|rowsum_i Sc_i|, |V|)`` (Frobenius norms, float64) from ``sqn_i = |Sc_i|^2``."""
    a = 0.0
    for i in range(rowsum.size):
        a += rowsum[i] * rowsum[i] * np.float64(sqn[i])
    return np.sqrt(a), np.sqrt(_sumsq(V.reshape(-1)))


@njit(cache=True)
def chain_rule_flat(V, S, temperature, factor, out):
    """``out = factor V sigmoid_slope(S, T)`` elementwise on flat arrays, in out's dtype."""
    for k in range(S.size):
        out[k] = factor * V[k] * _sigmoid_slope(np.float64(S[k]), temperature)


# ----------------------------------------------------------------------------- helpers

def _centered(S: np.ndarray, mean: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``S - mean`` in ``dtype`` (the working precision of the distances) and its squared row norms.

    The norms are summed in float64 and then rounded to ``dtype``, the
    precision in which the fused passes form distances.
    """
    Sc = np.empty(S.shape, dtype=dtype)
    sqn = np.empty(S.shape[0])
    _center_on(S, mean, Sc, sqn)
    return Sc, sqn.astype(dtype, copy=False)


def _column_mean_of(S: np.ndarray) -> np.ndarray:
    mean = np.empty(S.shape[1])
    _column_mean(S, mean)
    return mean


