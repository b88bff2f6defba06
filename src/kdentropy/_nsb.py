"""The NSB (Nemenman–Shafee–Bialek) entropy posterior of one vector of pattern counts.

A mixture of Dirichlet priors over ``K`` possible outcomes, weighted so that
the prior on the entropy is nearly flat; :func:`nsb_posterior` integrates the
posterior mean and variance of H over the concentration on a log grid.
:mod:`kdentropy.estimate` uses it for ``method="nsb"``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import digamma, gammaln, polygamma

__all__ = ["nsb_posterior"]


def _nsb_conditional(beta: np.ndarray, values: np.ndarray, mult: np.ndarray, N: float,
                     K: float) -> tuple[np.ndarray, np.ndarray]:
    """``E[H | n, β]`` and ``E[H² | n, β]`` under the Dirichlet(n + β) posterior.

    Bins are grouped by count: ``values`` are the distinct counts (0 for the
    ``K - K_obs`` unseen outcomes), ``mult`` how many bins have each (as
    floats: for K = 2**144 the unseen bins are too many for an int64).
    Wolpert & Wolf (1995): with ``a_i = n_i + β`` and ``A = Σ a_i``,

    ``E[H] = ψ(A+1) - Σ a_i ψ(a_i+1) / A``,
    ``E[H²] = [Σ_{i≠k} a_i a_k ((ψ(a_i+1) - ψ(A+2))(ψ(a_k+1) - ψ(A+2)) - ψ1(A+2))
    + Σ a_i (a_i+1) ((ψ(a_i+2) - ψ(A+2))² + ψ1(a_i+2) - ψ1(A+2))] / (A (A+1))``.
    """
    b = beta[:, None]
    a = values[None, :] + b                                   # (grid, groups)
    A = N + K * beta                                          # (grid,)
    ps2 = digamma(A + 2.0)
    mean = digamma(A + 1.0) - np.sum(mult * a * digamma(a + 1.0), axis=1) / A
    u = a * (digamma(a + 1.0) - ps2[:, None])
    sum_u, sum_u2 = np.sum(mult * u, axis=1), np.sum(mult * u * u, axis=1)
    sum_a2 = np.sum(mult * a * a, axis=1)
    tg1 = polygamma(1, A + 2.0)
    cross = sum_u ** 2 - sum_u2 - tg1 * (A * A - sum_a2)
    diag = np.sum(mult * a * (a + 1.0) * ((digamma(a + 2.0) - ps2[:, None]) ** 2
                                          + polygamma(1, a + 2.0) - tg1[:, None]), axis=1)
    second = (cross + diag) / (A * (A + 1.0))
    return mean, second


def _log_rising(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``log Γ(x + n) - log Γ(x)`` without the cancellation of two huge log-gammas.

    Direct for x < 100; beyond, Stirling's series of the difference, whose
    leading term ``(x - 1/2) log1p(n/x)`` is formed without subtracting.
    Absolute error below 1e-12 for every x > 0, n >= 0.
    """
    x, n = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(n, dtype=np.float64))
    small = x < 100.0
    out = np.empty(x.shape)
    xs, ns = x[small], n[small]
    out[small] = gammaln(xs + ns) - gammaln(xs)
    xl, nl = x[~small], n[~small]
    y = xl + nl
    out[~small] = ((xl - 0.5) * np.log1p(nl / xl) + nl * np.log(y) - nl
                   + (1.0 / y - 1.0 / xl) / 12.0 - (1.0 / y ** 3 - 1.0 / xl ** 3) / 360.0)
    return out


def _one_minus_x_trigamma(x: np.ndarray) -> np.ndarray:
    """``1 - x ψ1(x + 1)``, by its asymptotic series where the subtraction would cancel."""
    x = np.asarray(x, dtype=np.float64)
    big = x > 1e3
    xb = np.where(big, x, 1e3)
    series = 1.0 / (2.0 * xb) - 1.0 / (6.0 * xb ** 2) + 1.0 / (30.0 * xb ** 4)
    return np.where(big, series, 1.0 - x * polygamma(1, np.where(big, 1.0, x) + 1.0))


def _nsb_log_weight(x: np.ndarray, values: np.ndarray, mult: np.ndarray, N: float,
                    K: float) -> np.ndarray:
    """log of the posterior density of ``x = log(K β)`` under the NSB prior (up to a constant).

    Likelihood ``Γ(Kβ)/Γ(N+Kβ) Π_i Γ(n_i+β)/Γ(β)`` times the prior
    ``dξ/dx = Kβ ψ1(Kβ+1) - β ψ1(β+1)``, ``ξ(β) = ψ(Kβ+1) - ψ(β+1)`` being the
    prior mean entropy (uniform in ξ).
    """
    alpha = np.exp(x)
    beta = alpha / K
    loglik = (-_log_rising(alpha, N)
              + np.sum(mult * _log_rising(beta[:, None], values[None, :]), axis=1))
    dxi = _one_minus_x_trigamma(beta) - _one_minus_x_trigamma(alpha)
    with np.errstate(divide="ignore"):
        return loglik + np.log(np.maximum(dxi, 0.0))


def nsb_posterior(counts: np.ndarray, K: float) -> tuple[float, float]:
    """NSB posterior mean and standard deviation (nats) of one vector of positive counts."""
    N = float(counts.sum())
    logK = math.log(K)
    if K <= 1.0:
        return 0.0, 0.0
    values, mult = np.unique(counts, return_counts=True)
    values = np.concatenate(([0.0], values.astype(np.float64)))
    mult = np.concatenate(([K - counts.size], mult.astype(np.float64)))
    # Integrate over x = log(Kβ). A coarse grid over every plausible
    # concentration finds where the posterior lives; a fine grid there
    # integrates it (the peak narrows as about 1/sqrt(K_obs)).
    coarse = np.linspace(-30.0, logK + math.log(N) + 30.0, 1501)
    lw = _nsb_log_weight(coarse, values, mult, N, K)
    top = np.max(lw)
    inside = np.flatnonzero(lw > top - 60.0)
    lo = coarse[max(inside[0] - 1, 0)]
    hi = coarse[min(inside[-1] + 1, coarse.size - 1)]
    x = np.linspace(lo, hi, 4001)
    w = np.exp(_nsb_log_weight(x, values, mult, N, K) - top)
    mean_b, second_b = _nsb_conditional(np.exp(x) / K, values, mult, N, K)
    integrate = np.trapezoid if hasattr(np, "trapezoid") else np.trapz  # NumPy < 2.0
    Z = integrate(w, x)
    mean = float(integrate(w * mean_b, x) / Z)
    var = float(integrate(w * second_b, x) / Z) - mean * mean
    return mean, math.sqrt(max(var, 0.0))
