"""The CPU backend's O(N·D) kernels: sigmoid, centring, the final pair sums and the chain rule.

They touch each of the N·D entries a few times, next to the O(N^2 D) pair
work of :mod:`._symmetric`; they are serial because that is negligible and
compiles much faster.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ... import _estimator
from ..._jit import CONTRACT, sigmoid
from ._sums import add_into, ordered_sumsq

__all__ = ["sigmoid_flat", "pair_sums", "pair_sum_norms", "chain_rule_flat", "centred",
           "column_mean", "column_mean_into", "centre_on"]

# Inner loops below always run from 0 over sliced views: Numba loops with a
# variable start index were measured not to vectorise (3-4x slower).

_sigmoid_slope = njit(inline="always", cache=True)(_estimator.sigmoid_slope)


@njit(fastmath=CONTRACT, error_model="numpy", cache=True)
def sigmoid_flat(x, temperature, threshold, out):
    """``out = sigmoid(T (x - theta))`` elementwise on flat arrays, in float64, rounded once.

    The branch-free exp of :func:`kdentropy._jit.sigmoid` lets the loop vectorise.
    """
    for k in range(x.size):
        out[k] = sigmoid(np.float64(x[k]), temperature, threshold)


@njit(cache=True)
def column_mean_into(S, mean):
    """Column means of ``S`` in float64, rows added in order."""
    N, D = S.shape
    mean[:] = 0.0
    for i in range(N):
        add_into(mean, S[i])
    for k in range(D):
        mean[k] /= max(N, 1)


@njit(cache=True)
def centre_on(S, mean, Sc, sqnorm):
    """``Sc = S - mean`` (rounded to S's dtype) and ``sqnorm_i = |Sc_i|^2`` in float64."""
    N, D = S.shape
    for i in range(N):
        s = S[i]
        c = Sc[i]
        for k in range(D):
            c[k] = np.float64(s[k]) - mean[k]
        sqnorm[i] = ordered_sumsq(c)


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
    return np.sqrt(a), np.sqrt(ordered_sumsq(V.reshape(-1)))


@njit(cache=True)
def chain_rule_flat(V, S, temperature, factor, out):
    """``out = factor V sigmoid_slope(S, T)`` elementwise on flat arrays, in out's dtype."""
    for k in range(S.size):
        out[k] = factor * V[k] * _sigmoid_slope(np.float64(S[k]), temperature)


# ----------------------------------------------------------------------------- helpers

def centred(S: np.ndarray, mean: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``S - mean`` in ``dtype`` (the working precision of the distances) and its squared row norms.

    The norms are summed in float64 and then rounded to ``dtype``, the
    precision in which the fused passes form distances.

    Parameters
    ----------
    S : ndarray, shape (N, D)
    mean : ndarray of float64, shape (D,)
    dtype : dtype
        float32 or float64.

    Returns
    -------
    Sc : ndarray of ``dtype``, shape (N, D)
    sqn : ndarray of ``dtype``, shape (N,)
    """
    Sc = np.empty(S.shape, dtype=dtype)
    sqn = np.empty(S.shape[0])
    centre_on(S, mean, Sc, sqn)
    return Sc, sqn.astype(dtype, copy=False)


def column_mean(S: np.ndarray) -> np.ndarray:
    """Column means of ``S`` (N, D) in float64, rows added in order (shape (D,))."""
    mean = np.empty(S.shape[1])
    column_mean_into(S, mean)
    return mean


