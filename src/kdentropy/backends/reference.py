"""Dense NumPy reference backend (``backend="numpy"``): the oracle every backend is tested against.

It materialises the N x N kernel matrix (O(N^2) memory) in float64, so it is
meant for correctness and small batches, not for speed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import _estimator
from . import _conditioning

NAME = "numpy"
DEVICE_ARRAYS = False
BLOCK_PRIMITIVES = True
# Dense blocks: 512-row tiles keep one at a few MiB whatever the shard size.
BLOCK_TILE_ROWS = 512


def unavailable_reason() -> str | None:
    """Why this backend cannot run here, or ``None`` when it can (always)."""
    return None


def soft_patterns(X3: np.ndarray, temperature: float, threshold: float) -> np.ndarray:
    """``sigmoid(T (X - theta))`` computed in float64 and rounded to the dtype of ``X3``."""
    with np.errstate(over="ignore"):  # T (X - theta) beyond float64 saturates S to 0 or 1
        S = _estimator.sigmoid_ufunc()(X3.astype(np.float64, copy=False), temperature, threshold)
    return S.astype(X3.dtype, copy=False)


def _sqdist(A: np.ndarray, B: np.ndarray, sigma: float) -> np.ndarray:
    """Dense squared distances in float64, by a Gram product where it is accurate enough.

    Where it is not (small sigma, see :mod:`._conditioning`), by direct
    differences in row chunks of bounded size.
    """
    mean = B.mean(axis=0) if B.size else 0.0
    Ac = A - mean  # centring shrinks the Gram product's cancellation
    Bc = B - mean
    max_sqnorm = max([0.0] + [float(np.max(np.einsum("ij,ij->i", M, M))) for M in (Ac, Bc) if M.size])
    if _conditioning.distance_precision(np.float64, max_sqnorm, sigma) is not None:
        d2 = np.einsum("ij,ij->i", Ac, Ac)[:, None] + np.einsum("ij,ij->i", Bc, Bc)[None, :]
        d2 -= 2.0 * (Ac @ Bc.T)
        return np.maximum(d2, 0.0, out=d2)
    # Direct differences of the uncentred rows: centring would round S itself.
    d2 = np.empty((A.shape[0], B.shape[0]))
    step = max(1, (1 << 22) // max(1, B.size))
    for r in range(0, A.shape[0], step):
        diff = A[r:r + step, None, :] - B[None, :, :]
        d2[r:r + step] = np.einsum("ijk,ijk->ij", diff, diff)
    return d2


def _kernel_block(Sa: np.ndarray, Sb: np.ndarray, sigma: float, same_block: bool) -> np.ndarray:
    """Dense ``K_ij`` between the rows of two blocks, with ``K_ii = 0`` when they are one block."""
    # Pairwise work in float64: float32 S keeps its own sigmoid but the oracle
    # must not lose the gradient to rounding in the distances.
    d2 = _sqdist(Sa.astype(np.float64, copy=False), Sb.astype(np.float64, copy=False), sigma)
    K = np.exp(-d2 * (0.5 / (sigma * sigma)))
    if same_block:
        # K_ii is exactly 1; the estimator adds it back (C = 1 + C0) and it
        # contributes nothing to the gradient, so leave it out entirely.
        np.fill_diagonal(K, 0.0)
    return K


def _weighted_sum(K: np.ndarray, Sa: np.ndarray, ga: np.ndarray, Sb: np.ndarray,
                  gb: np.ndarray) -> np.ndarray:
    """``sum_j K_ij (g_i + g_j) (Sa_i - Sb_j)`` in float64."""
    W = K * (ga[:, None] + gb[None, :])
    A = Sa.astype(np.float64, copy=False)
    return W.sum(axis=1)[:, None] * A - W @ Sb.astype(np.float64, copy=False)


def block_soft_counts(Sa: np.ndarray, Sb: np.ndarray, sigma: float, same_block: bool) -> np.ndarray:
    """Soft counts ``sum_j K(Sa_i, Sb_j)`` (float64, one per row of Sa).

    With ``same_block`` the two blocks hold the same rows and ``j = i`` is skipped.
    """
    return _kernel_block(Sa, Sb, sigma, same_block).sum(axis=1)


def block_weighted_grad(Sa: np.ndarray, ga: np.ndarray, Sb: np.ndarray, gb: np.ndarray,
                        sigma: float, same_block: bool) -> np.ndarray:
    """``sum_j K_ij (g_i + g_j) (Sa_i - Sb_j)`` (float64, shape of Sa).

    ``ga``/``gb`` are the row coefficients (:func:`kdentropy._estimator.row_coefficients`)
    of the rows of Sa and Sb.
    """
    K = _kernel_block(Sa, Sb, sigma, same_block)
    return _weighted_sum(K, Sa, np.asarray(ga, np.float64), Sb, np.asarray(gb, np.float64))


def soft_counts_and_grad(S: np.ndarray, sigma: float,
                         coefficients: Callable[[np.ndarray], np.ndarray] | None):
    """Soft counts ``(G, N)`` and, with ``coefficients``, the weighted sums ``(G, N, D)``."""
    G, N, D = S.shape
    C0 = np.empty((G, N))
    V = np.empty(S.shape) if coefficients is not None else None
    for p in range(G):
        K = _kernel_block(S[p], S[p], sigma, same_block=True)
        C0[p] = K.sum(axis=1)
        if V is not None:
            g = coefficients(C0[p])
            V[p] = _weighted_sum(K, S[p], g, S[p], g)
    return C0, V


def input_grad(S: np.ndarray, V: np.ndarray, temperature: float, factor: float,
               shape: tuple[int, ...]) -> np.ndarray:
    """``factor * V * sigmoid_slope(S, T)`` (the chain rule through the sigmoid), in S's dtype."""
    slope = _estimator.sigmoid_slope(S.astype(np.float64, copy=False), temperature)
    with np.errstate(over="ignore"):  # beyond float32's range the gradient is +-inf
        return (factor * V * slope).astype(S.dtype).reshape(shape)
