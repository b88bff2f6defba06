"""A loop oracle: the soft entropy written straight from its definition, one scalar at a time.

Explicit Python loops over rows i, j and cells k; no vectorisation, no
library code. Slow and obviously correct, for tiny batches only. It checks
the ``numpy`` reference backend, which in turn is the oracle for the others.
:func:`hard_entropy` is the same for the exact entropy (tuples and a Counter).

Definitions (for one population of N patterns of D cells)::

    S_ik  = 1 / (1 + exp(-T (X_ik - theta)))
    K_ij  = exp(-sum_k (S_ik - S_jk)^2 / (2 sigma^2))
    C0_i  = sum_{j != i} K_ij                 (C_i = 1 + C0_i, since K_ii = 1)
    H     = log N - (1/N) sum_i log C_i
    dH/dS_ik = (1/(N sigma^2)) sum_j K_ij (1/C_i + 1/C_j) (S_ik - S_jk)
    dH/dX_ik = dH/dS_ik * T S_ik (1 - S_ik)
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np


def _sigmoid(x: float, T: float, theta: float) -> float:
    z = T * (x - theta)
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def soft_patterns(X: np.ndarray, T: float, theta: float) -> np.ndarray:
    """``S`` of an ``(N, D)`` batch, float64."""
    N, D = X.shape
    S = np.empty((N, D))
    for i in range(N):
        for k in range(D):
            S[i, k] = _sigmoid(float(X[i, k]), T, theta)
    return S


def kernel(Sa: np.ndarray, i: int, Sb: np.ndarray, j: int, sigma: float) -> float:
    """``K(Sa_i, Sb_j)``."""
    d2 = 0.0
    for k in range(Sa.shape[1]):
        diff = float(Sa[i, k]) - float(Sb[j, k])
        d2 += diff * diff
    return math.exp(-d2 / (2.0 * sigma * sigma))


def block_soft_counts(Sa: np.ndarray, Sb: np.ndarray, sigma: float,
                      same_block: bool) -> np.ndarray:
    """``sum_j K(Sa_i, Sb_j)`` over the rows j of Sb (``j != i`` when the blocks are one)."""
    C0 = np.zeros(Sa.shape[0])
    for i in range(Sa.shape[0]):
        for j in range(Sb.shape[0]):
            if same_block and i == j:
                continue
            C0[i] += kernel(Sa, i, Sb, j, sigma)
    return C0


def block_weighted_grad(Sa: np.ndarray, ga: np.ndarray, Sb: np.ndarray, gb: np.ndarray,
                        sigma: float, same_block: bool) -> np.ndarray:
    """``sum_j K(Sa_i, Sb_j) (ga_i + gb_j) (Sa_i - Sb_j)`` (``j != i`` when the blocks are one)."""
    Na, D = Sa.shape
    out = np.zeros((Na, D))
    for i in range(Na):
        for j in range(Sb.shape[0]):
            if same_block and i == j:
                continue
            w = kernel(Sa, i, Sb, j, sigma) * (float(ga[i]) + float(gb[j]))
            for k in range(D):
                out[i, k] += w * (float(Sa[i, k]) - float(Sb[j, k]))
    return out


def soft_counts(S: np.ndarray, sigma: float) -> np.ndarray:
    """Off-diagonal soft counts ``C0`` of one population ``(N, D)``."""
    return block_soft_counts(S, S, sigma, same_block=True)


def entropy(C0: np.ndarray) -> float:
    """``H = log N - mean_i log(1 + C0_i)`` in nats."""
    N = len(C0)
    return math.log(N) - sum(math.log(1.0 + float(c)) for c in C0) / N


def grad_S(S: np.ndarray, C0: np.ndarray, sigma: float) -> np.ndarray:
    """``dH/dS`` of one population."""
    N, D = S.shape
    g = [1.0 / (1.0 + float(c)) for c in C0]
    out = np.zeros((N, D))
    for i in range(N):
        for j in range(N):
            w = kernel(S, i, S, j, sigma) * (g[i] + g[j])
            for k in range(D):
                out[i, k] += w * (S[i, k] - S[j, k])
    return out / (N * sigma * sigma)


def entropy_and_grad(X: np.ndarray, T: float, sigma: float, theta: float):
    """``(S, C0, H, dH/dX)`` of one population ``(N, D)``."""
    S = soft_patterns(X, T, theta)
    C0 = soft_counts(S, sigma)
    H = entropy(C0)
    dS = grad_S(S, C0, sigma)
    N, D = X.shape
    G = np.empty((N, D))
    for i in range(N):
        for k in range(D):
            G[i, k] = dS[i, k] * T * S[i, k] * (1.0 - S[i, k])
    return S, C0, H, G


# ----------------------------------------------------------------------------- hard entropy

def hard_entropy(X, threshold: float = 0.5) -> float:
    """Hard entropy in nats of one population ``(N, D)``, from the definition.

    Each row becomes the tuple of its cells' ``x >= threshold``, compared as
    Python floats (exact for float32/float64 and for integers below 2**53);
    distinct tuples are counted with a :class:`collections.Counter` and
    ``H = -sum_k p_k log p_k``. Nothing of ``kdentropy.hard`` is used: no
    bit packing, no sort, no NumPy comparison, no scipy.
    """
    rows = [tuple(float(x) >= float(threshold) for x in row) for row in X]
    N = len(rows)
    H = 0.0
    for n in Counter(rows).values():
        p = n / N
        H -= p * math.log(p)
    return H
