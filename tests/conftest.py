"""Shared test helpers: seeded generators and clustered batches."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import settings

# Property tests run on a shared 2-core CI machine: bound their cost, and do
# not let timing noise fail a correct test.
settings.register_profile("ci", max_examples=40, deadline=None)
settings.load_profile("ci")


def clustered(rng: np.random.Generator, N: int, D: int, n_proto: int = 4,
              noise: float = 0.15, dtype=np.float64) -> np.ndarray:
    """A few random 0/1 prototypes plus Gaussian noise: 0 < H < log N, non-vanishing gradients."""
    protos = rng.integers(0, 2, size=(n_proto, D)).astype(np.float64)
    X = protos[rng.integers(0, n_proto, size=N)] + noise * rng.standard_normal((N, D))
    return X.astype(dtype)


def central_differences(f, X: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite-difference gradient of a scalar function ``f`` at ``X``, entry by entry."""
    G = np.empty_like(X)
    for idx in np.ndindex(X.shape):
        Xp, Xm = X.copy(), X.copy()
        Xp[idx] += h
        Xm[idx] -= h
        G[idx] = (f(Xp) - f(Xm)) / (2 * h)
    return G


@pytest.fixture
def rng(request) -> np.random.Generator:
    # A fresh, reproducible stream per test, so failures can be replayed.
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
