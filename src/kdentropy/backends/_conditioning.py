"""How to form squared distances accurately enough: shared by every Gram-based backend.

A Gram product forms ``d2 = |a|^2 + |b|^2 - 2 a.b``; rounding leaves an
absolute error of a few ``eps |a|^2`` in ``d2``, which the kernel
``exp(-d2 / (2 sigma^2))`` turns into a relative error of about
``eps max|Sc|^2 / sigma^2`` in every ``K_ij`` (``Sc``: S centred on its column
mean, as the backends use it). :func:`distance_precision` picks the cheapest
way whose error stays within the accuracy bar of the input's dtype:

1. a Gram product in the input's own precision;
2. a float64 Gram product (for float32 input);
3. direct differences ``sum_k (S_ik - S_jk)^2``, which do not cancel.

The limits were measured on clustered batches (N = 200, D = 5..1024,
sigma = 1e-6..0.1) against direct differences: the gradient's norm-relative
error was 0.1-0.3 times that number in both precisions, so the limits are
2e-4 for float32 input (bar 1e-4) and 1e-10 for float64 input (bar 1e-10).
"""

from __future__ import annotations

import numpy as np

__all__ = ["GRAM_LIMITS", "gram_condition", "distance_precision", "own_precision_rule",
           "FLOAT32_PAIR_SUM_LIMIT", "float32_pair_sums_are_accurate"]

# Largest tolerated eps(gram dtype) * max|Sc|^2 / sigma^2, by input dtype.
GRAM_LIMITS = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-10}


# Looked up once: np.finfo and np.errstate cost microseconds per small call.
_EPS = {np.dtype(t): float(np.finfo(t).eps) for t in (np.float32, np.float64)}
_MAX = {np.dtype(t): float(np.finfo(t).max) for t in (np.float32, np.float64)}


def gram_condition(gram_dtype: np.dtype, max_sqnorm: float, sigma: float) -> float:
    """``eps max|Sc|^2 / sigma^2``: the relative kernel error a Gram product in ``gram_dtype`` may cause."""
    # Python floats: overflow gives inf, silently.
    return _EPS[np.dtype(gram_dtype)] * float(max_sqnorm) / (sigma * sigma)


def distance_precision(dtype: np.dtype, max_sqnorm: float, sigma: float) -> np.dtype | None:
    """The dtype of the Gram products to use for a batch, or ``None`` for direct differences.

    Parameters
    ----------
    dtype : dtype
        The input's compute dtype (float32 or float64): sets the accuracy bar.
    max_sqnorm : float
        ``max_i |Sc_i|^2`` of the centred soft patterns.
    sigma : float
        Kernel width.
    """
    dtype = np.dtype(dtype)
    limit = GRAM_LIMITS[dtype]
    for gram in dict.fromkeys((dtype, np.dtype(np.float64))):
        # 1 / (2 sigma^2) must also be finite in the Gram dtype, or even equal
        # rows (d2 = 0) would give 0 * inf.
        finite_scale = 0.5 / (sigma * sigma) <= _MAX[gram] / 4
        if finite_scale and gram_condition(gram, max_sqnorm, sigma) <= limit:
            return gram
    return None


def own_precision_rule(dtype: np.dtype) -> tuple[float, float, float]:
    """The numbers behind :func:`distance_precision`'s first choice, for compiled callers.

    A Gram product in the input's own ``dtype`` is chosen exactly when
    ``0.5 / sigma**2 <= largest_scale`` and
    ``eps * max_sqnorm / (sigma * sigma) <= limit`` (evaluated left to right
    in float64, as here).

    Returns
    -------
    eps, limit, largest_scale : float
    """
    dtype = np.dtype(dtype)
    return _EPS[dtype], GRAM_LIMITS[dtype], _MAX[dtype] / 4


# The gradient sums are formed as ``rowsum_i Sc_i - (W @ Sc)_i``. Where rows sit
# in tight clusters, ``S_i - S_j`` is far smaller than ``Sc``, and a float32
# ``W @ Sc`` loses ``eps32 |rowsum Sc| / |V|`` of the result to rounding: the
# measured gradient error was 1.5-9 times that number (N = 300, D = 16..1024,
# 1-16 clusters, noise 1e-4..0.15). Past this limit the sums are formed again
# in float64.
FLOAT32_PAIR_SUM_LIMIT = 2e-5


def float32_pair_sums_are_accurate(subtrahend_norm: float, result_norm: float) -> bool:
    """Whether float32 ``rowsum Sc - W @ Sc`` kept the float32 gradient bar.

    Parameters
    ----------
    subtrahend_norm : float
        ``|rowsum_i Sc_i|`` over the whole block (Frobenius norm).
    result_norm : float
        ``|V|``, the norm of the difference that was computed.
    """
    if result_norm == 0.0:
        return subtrahend_norm == 0.0
    eps = _EPS[np.dtype(np.float32)]
    return eps * subtrahend_norm <= FLOAT32_PAIR_SUM_LIMIT * result_norm
