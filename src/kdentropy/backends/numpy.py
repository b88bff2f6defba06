"""Dense NumPy reference backend: the readable oracle every other backend is tested against.

It materialises the N x N kernel matrix (O(N^2) memory), so it is meant for
correctness, not for large batches.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

NAME = "numpy"


def unavailable_reason() -> str | None:
    """Why this backend cannot run here, or ``None`` when it can (always)."""
    return None


def soft_discretize(X: np.ndarray, temperature: float, threshold: float) -> np.ndarray:
    """Stable sigmoid ``1 / (1 + exp(-T (X - theta)))`` in the dtype of ``X``."""
    # expit saturates cleanly; T*(X-theta) may overflow to +-inf for huge |X|,
    # which expit maps to exactly 0 or 1, so the overflow warning is noise.
    with np.errstate(over="ignore"):
        z = X - X.dtype.type(threshold)
        z *= X.dtype.type(temperature)
    return expit(z)


def _kernel_block(Sa: np.ndarray, Sb: np.ndarray, sigma: float, same_block: bool) -> np.ndarray:
    """Dense ``K_ij`` between the rows of two blocks, with ``K_ii = 0`` when they are one block."""
    # Pairwise work in float64: float32 S keeps its own sigmoid but the oracle
    # must not lose the gradient to Gram-product cancellation.
    A = Sa.astype(np.float64, copy=False)
    B = Sb.astype(np.float64, copy=False)
    d2 = np.einsum("ij,ij->i", A, A)[:, None] + np.einsum("ij,ij->i", B, B)[None, :]
    d2 -= 2.0 * (A @ B.T)
    np.maximum(d2, 0.0, out=d2)
    K = np.exp(-d2 / (2.0 * sigma * sigma))
    if same_block:
        # K_ii is exactly 1; it is added back through log1p (C = 1 + C0), and
        # it contributes nothing to the gradient, so leave it out entirely.
        np.fill_diagonal(K, 0.0)
    return K


def block_soft_counts(Sa: np.ndarray, Sb: np.ndarray, sigma: float, same_block: bool) -> np.ndarray:
    """Off-diagonal soft counts ``C0_i = sum_j K(Sa_i, Sb_j)`` (float64, one per row of Sa).

    With ``same_block`` the two blocks hold the same rows and ``j = i`` is skipped.
    """
    return _kernel_block(Sa, Sb, sigma, same_block).sum(axis=1)


def block_grad(Sa: np.ndarray, inv_Ca: np.ndarray, Sb: np.ndarray, inv_Cb: np.ndarray,
               sigma: float, same_block: bool) -> np.ndarray:
    """``sum_j w_ij (Sa_i - Sb_j)`` with ``w_ij = K_ij (1/C_i + 1/C_j)`` (float64, like Sa).

    ``inv_Ca``/``inv_Cb`` are the reciprocal full soft counts ``1/(1 + C0)``.
    Divided by ``N sigma^2`` this is ``dH/dS`` for the rows of Sa.
    """
    K = _kernel_block(Sa, Sb, sigma, same_block)
    W = K * (inv_Ca[:, None] + inv_Cb[None, :])
    return W.sum(axis=1)[:, None] * Sa.astype(np.float64) - W @ Sb.astype(np.float64)


def _one_population(S: np.ndarray, sigma: float, want_grad: bool):
    N = S.shape[0]
    K = _kernel_block(S, S, sigma, same_block=True)
    C0 = K.sum(axis=1)
    H = np.log(N) - np.mean(np.log1p(C0))
    if not want_grad:
        return H, None
    inv_C = 1.0 / (1.0 + C0)
    W = K * (inv_C[:, None] + inv_C[None, :])  # zero diagonal: j = i never contributes
    S64 = S.astype(np.float64, copy=False)
    dS = (W.sum(axis=1)[:, None] * S64 - W @ S64) / (N * sigma * sigma)
    return H, dS


def value_and_grad(X3: np.ndarray, temperature: float, sigma: float, threshold: float,
                   want_grad: bool):
    """Soft entropy (nats) and optionally its gradient for a ``(G, N, D)`` array.

    Returns ``(H, grad)`` with ``H`` a float64 array of shape ``(G,)`` and
    ``grad`` an array like ``X3`` (or ``None`` when ``want_grad`` is false).
    """
    G = X3.shape[0]
    H = np.empty(G, dtype=np.float64)
    grad = np.empty_like(X3) if want_grad else None
    for g in range(G):
        S = soft_discretize(X3[g], temperature, threshold)
        H[g], dS = _one_population(S, sigma, want_grad)
        if want_grad:
            S64 = S.astype(np.float64, copy=False)
            grad[g] = dS * (temperature * S64 * (1.0 - S64))
    return H, grad
