"""The dense reference against plain loops and central finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kdentropy as kde
from conftest import central_differences, clustered


def loop_entropy_and_grad(X, T, sigma, theta):
    """Straight from the formulas, one scalar at a time (small inputs only)."""
    N, D = X.shape
    S = [[1.0 / (1.0 + math.exp(-T * (X[i, k] - theta))) for k in range(D)] for i in range(N)]
    K = [[math.exp(-sum((S[i][k] - S[j][k]) ** 2 for k in range(D)) / (2 * sigma**2))
          for j in range(N)] for i in range(N)]
    C = [sum(K[i]) for i in range(N)]
    H = -sum(math.log(C[i] / N) for i in range(N)) / N
    G = np.zeros((N, D))
    for i in range(N):
        for k in range(D):
            dS = sum(K[i][j] * (1 / C[i] + 1 / C[j]) * (S[i][k] - S[j][k]) for j in range(N))
            G[i, k] = dS / (N * sigma**2) * T * S[i][k] * (1 - S[i][k])
    return H, G


@pytest.mark.parametrize("T, sigma", [(1.0, 0.5), (10.0, 0.5), (4.0, 1.5), (25.0, 0.3)])
def test_matches_loops(rng, T, sigma):
    X = clustered(rng, 9, 5, noise=0.3)
    H, G = kde.soft_entropy_and_grad(X, T, sigma, backend="numpy")
    H_ref, G_ref = loop_entropy_and_grad(X, T, sigma, 0.5)
    assert H == pytest.approx(H_ref, rel=1e-12, abs=1e-14)
    np.testing.assert_allclose(G, G_ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("T, sigma, theta", [(2.0, 0.7, 0.5), (10.0, 0.5, 0.5), (6.0, 1.0, 0.2)])
def test_gradient_matches_central_differences(rng, T, sigma, theta):
    X = clustered(rng, 12, 6, noise=0.25)
    G = kde.soft_entropy_grad(X, T, sigma, threshold=theta, backend="numpy")
    G_fd = central_differences(
        lambda Y: kde.soft_entropy(Y, T, sigma, threshold=theta, backend="numpy"), X)
    assert np.abs(G).max() > 1e-4  # the check is not vacuous
    np.testing.assert_allclose(G, G_fd, rtol=1e-6, atol=1e-9)


def test_scaled_gradient_matches_differences(rng):
    # base and normalize scale value and gradient alike.
    X = clustered(rng, 7, 4, noise=0.3)
    kw = dict(base=2, normalize=True, backend="numpy")
    G = kde.soft_entropy_grad(X, 5.0, 0.6, **kw)
    h = 1e-6
    E = np.zeros_like(X)
    E[3, 1] = h
    fd = (kde.soft_entropy(X + E, 5.0, 0.6, **kw) - kde.soft_entropy(X - E, 5.0, 0.6, **kw)) / (2 * h)
    assert G[3, 1] == pytest.approx(fd, rel=1e-6)


def test_float32_reference_close_to_float64(rng):
    X = clustered(rng, 64, 32)
    H64, G64 = kde.soft_entropy_and_grad(X, backend="numpy")
    H32, G32 = kde.soft_entropy_and_grad(X.astype(np.float32), backend="numpy")
    assert G32.dtype == np.float32 and isinstance(H32, np.float64)
    assert abs(H32 - H64) < 1e-5 * math.log(64)
    assert np.linalg.norm(G32 - G64) <= 1e-4 * np.linalg.norm(G64)
