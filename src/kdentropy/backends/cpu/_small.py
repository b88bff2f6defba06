"""A whole small batch in one compiled call: the fused route without the Python in between.

For a 64 x 32 value + gradient the Numba kernels take ~20 us; the Python
that sizes buffers, looks up workspaces and calls them (about 170 function
calls) took as long again and more. :func:`whole_batch` runs the same
kernels in the same order on freshly allocated buffers, from the input
batch to the gradient: the sigmoid, centring, the conditioning rule, both
fused passes, the row coefficients, the pair sums and the chain rule. Its
results are bit-identical to :func:`kdentropy.backends.cpu.soft_counts_and_grad`
followed by ``input_grad``. It runs the serial twin of the pass kernel only:
a cached Numba function that calls a ``parallel=True`` one crashed when
loaded from the cache (numba 0.68), and above the serial sizes the Python
around the parallel kernels is a few per cent of a call.

What it does not handle it reports, and the caller takes the general path,
which computes everything again and raises the usual errors: values that are
not finite, batches the conditioning rule sends to another distance
precision, and float32 pair sums that lost their accuracy (tight clusters).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ... import _estimator
from ._packing import pack
from ._rowwise import (
    centre_on,
    chain_rule_flat,
    column_mean_into,
    pair_sum_norms,
    pair_sums,
    sigmoid_flat,
)
from ._simd import vlanes
from ._symmetric import symmetric_sums_serial

__all__ = ["DONE", "FLOAT32_SUMS_LOST", "NOT_FINITE", "OTHER_PRECISION", "whole_batch"]

#: :func:`whole_batch` computed everything.
DONE = 0
#: ``X`` holds NaN or infinity (nothing was computed).
NOT_FINITE = 1
#: The conditioning rule wants float64 Gram products or direct differences.
OTHER_PRECISION = 2
#: float32 pair sums failed the accuracy check (they must be redone in float64).
FLOAT32_SUMS_LOST = 3

# The estimator's formula, compiled: one place for g = 1 / C.
_row_coefficients = njit(inline="always", cache=True)(_estimator.row_coefficients)


@njit(cache=True)
def _all_finite(X):
    for v in X.reshape(-1):
        if not np.isfinite(v):
            return False
    return True


@njit(cache=True)
def _padded(n, width):
    return max((n + width - 1) // width, 1) * width


@njit(cache=True)
def whole_batch(X, temperature, threshold, sigma, factor, want_grad, rule, pair_rule, block,
                C0, out):
    """Soft counts and the input gradient of a ``(G, N, D)`` batch, by the fused passes.

    Parameters
    ----------
    X : ndarray, shape (G, N, D)
        C-contiguous float32 or float64 batch, ``N >= 2``, ``D >= 1``.
    temperature, threshold, sigma : float
        T, theta and sigma, validated.
    factor : float
        The gradient's scale (:func:`kdentropy._soft.gradient_scale`).
    want_grad : bool
        Also run pass 2 and the chain rule.
    rule : tuple of 3 floats
        ``_conditioning.own_precision_rule(X.dtype)``.
    pair_rule : tuple of 2 floats or None
        float32 input: ``(eps32, FLOAT32_PAIR_SUM_LIMIT)``; ``None`` otherwise.
    block : int
        :data:`._tiles.BLOCK`, read by the caller.
    C0 : ndarray of float64, shape (G, N)
        Receives the soft counts.
    out : ndarray, shape (G, N, D), X's dtype
        Receives ``S`` and then, with ``want_grad``, ``dH/dX``.

    Returns
    -------
    int
        :data:`DONE`, or why the general path must take over.
    """
    if not _all_finite(X):
        return NOT_FINITE
    populations, N, D = X.shape
    scale = 0.5 / (sigma * sigma)
    if scale > rule[2]:
        return OTHER_PRECISION
    for p in range(populations):
        S = out[p]
        sigmoid_flat(X[p].reshape(-1), temperature, threshold, S.reshape(-1))
        mean = np.empty(D)
        column_mean_into(S, mean)
        Sc = np.empty((N, D), X.dtype)
        sqn64 = np.empty(N)
        centre_on(S, mean, Sc, sqn64)
        sqn = sqn64.astype(X.dtype)
        if rule[0] * np.float64(sqn.max()) / (sigma * sigma) > rule[1]:
            return OTHER_PRECISION
        # FusedPasses and pad_and_pack, with fresh buffers.
        width = 2 * vlanes(Sc)
        Np = _padded(N, width)
        Dp = _padded(D, width)
        Sp = np.empty((Np, Dp), X.dtype)
        Pk = np.empty((Np // width, Dp, width), X.dtype)
        sqp = np.empty(Np, X.dtype)
        pack(Sc, sqn, Sp, Pk, sqp)
        blk = min(block, Np)
        chunks = (Np + blk - 1) // blk
        rowpart = np.empty((chunks, blk))
        cache = np.empty((0, 0, 0, 0), X.dtype)
        counts = np.zeros(Np)
        symmetric_sums_serial(Sp, Pk, sqp, N, scale, blk, cache, counts, rowpart,
                              None, None, None, None)
        C0[p] = counts[:N]
        if not want_grad:
            continue
        g = np.zeros(Np, X.dtype)
        g[:N] = _row_coefficients(C0[p])
        rowsum = np.zeros(Np)
        acc = np.zeros((Np, Dp))
        rowacc = np.empty((chunks, blk, Dp), X.dtype)
        colacc = np.empty((chunks, blk, Dp), X.dtype)
        symmetric_sums_serial(Sp, Pk, sqp, N, scale, blk, cache, rowsum, rowpart, g, acc,
                              rowacc, colacc)
        V = np.empty((N, D))
        pair_sums(rowsum[:N], Sc, acc[:N, :D], V)
        if pair_rule is not None:
            subtrahend, result = pair_sum_norms(rowsum[:N], sqn, V)
            held = (subtrahend == 0.0 if result == 0.0
                    else pair_rule[0] * subtrahend <= pair_rule[1] * result)
            if not held:
                return FLOAT32_SUMS_LOST
        chain_rule_flat(V.reshape(-1), S.reshape(-1), temperature, factor, S.reshape(-1))
    return DONE
