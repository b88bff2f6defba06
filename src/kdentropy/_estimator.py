"""The estimator: how the entropy and its gradient follow from soft counts.

Backends compute only pairwise sums: the off-diagonal soft counts
``C0_i = sum_{j != i} K_ij`` and, given a per-row coefficient vector ``g``,
``V_i = sum_j K_ij (g_i + g_j) (S_i - S_j)``. Everything that makes those
sums an entropy lives here, once:

* the soft discretisation ``S = sigmoid(T (X - theta))`` and its slope;
* the resubstitution estimate ``H = log N - mean_i log(1 + C0_i)``;
* the row coefficients ``g_i = 1 / C_i = -N dH/dC_i``;
* the factor ``1 / (N sigma^2)`` that turns ``V`` into ``dH/dS``
  (``dK_ij/dS_i = -K_ij (S_i - S_j) / sigma^2``).

Why ``g_i + g_j``: ``S_i`` enters ``C_i`` through every ``K_ij`` and each
``C_j`` through ``K_ji``, so ``dH/dS_i = sum_j (dH/dC_i + dH/dC_j) dK_ij/dS_i``.
A different estimator (leave-one-out, bias-corrected) changes
:func:`entropy_from_counts`, :func:`row_coefficients` and
:func:`gradient_factor` only; no kernel changes.

:func:`sigmoid` and :func:`sigmoid_slope` are scalar functions written so
that Numba compiles them unchanged for the CPU (``njit``), the GPU
(``cuda.jit(device=True)``) and as NumPy ufuncs (:func:`sigmoid_ufunc`).
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = [
    "make_sigmoid", "sigmoid", "sigmoid_slope", "sigmoid_ufunc",
    "entropy_from_counts", "row_coefficients", "gradient_factor",
]


def make_sigmoid(exp):
    """The soft discretisation with a given ``exp`` for non-positive arguments.

    Backends compile the returned function for their target; the CPU backend
    passes a vectorisable polynomial exp, everything else ``math.exp``.
    """

    def sigmoid(x, temperature, threshold):
        """``1 / (1 + exp(-T (x - theta)))`` for one scalar, without overflow.

        ``exp`` only ever sees ``-|z|``, so it cannot overflow, and ``|z| = inf``
        saturates to exactly 0 or 1. Compute in float64 (pass float64
        ``temperature``): the result is rounded once to the caller's dtype.
        """
        z = temperature * (x - threshold)
        e = exp(-abs(z))
        s = 1.0 / (1.0 + e)
        return s if z >= 0.0 else e * s

    return sigmoid


sigmoid = make_sigmoid(math.exp)


def sigmoid_slope(s, temperature):
    """``d sigmoid / dx`` at the point whose sigmoid value is ``s``: ``T s (1 - s)``."""
    return temperature * s * (1.0 - s)


@functools.cache
def sigmoid_ufunc():
    """:func:`sigmoid` as a NumPy ufunc ``f(x, T, theta)`` (float64 in, float64 out)."""
    import numba  # a core dependency; imported here so that numpy-only use stays light

    return numba.vectorize(["float64(float64, float64, float64)"], cache=True)(sigmoid)


def entropy_from_counts(C0: np.ndarray) -> np.ndarray:
    """Resubstitution entropy (nats) from off-diagonal soft counts.

    Parameters
    ----------
    C0 : ndarray, shape (..., N)
        ``C0_i = C_i - 1 = sum_{j != i} K_ij`` (float64).

    Returns
    -------
    ndarray of float64, shape (...)
        ``log N - mean_i log1p(C0_i)``, clipped to its exact range
        ``[0, log N]`` (``C0 = N - 1`` can otherwise round to -4e-16); log1p
        keeps full float precision when a row has few neighbours (``C0`` small).
    """
    N = C0.shape[-1]
    log_n = math.log(N)
    return np.maximum(np.minimum(log_n - np.log1p(C0).sum(axis=-1) / N, log_n), 0.0)


def row_coefficients(C0: np.ndarray) -> np.ndarray:
    """Per-row gradient coefficients ``g_i = 1 / C_i = 1 / (1 + C0_i)`` (elementwise, float64).

    With them, ``dH/dS_i = gradient_factor(N, sigma) * sum_j K_ij (g_i + g_j) (S_i - S_j)``.
    """
    return 1.0 / (1.0 + np.asarray(C0, dtype=np.float64))


def gradient_factor(N: int, sigma: float) -> float:
    """``1 / (N sigma^2)``: turns ``sum_j K_ij (g_i + g_j) (S_i - S_j)`` into ``dH/dS_i``."""
    return 1.0 / (N * sigma * sigma)
