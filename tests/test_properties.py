"""Facts of the soft entropy held on random inputs drawn by hypothesis.

For any batch: 0 <= H <= log N; H is invariant to permuting rows and cells;
repeating the whole batch k times leaves H unchanged (every soft count and N
are multiplied by k); the gradient in S sums to zero over the rows (H is
invariant to shifting all S_i alike); identical rows give H = 0 and a zero
gradient; a sharp sigmoid and a narrow kernel reproduce the hard entropy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import kdentropy as kde
from helpers import fast_backends

# Too slow under the CUDA simulator; tests/cuda runs the cuda backend there.
BACKENDS = fast_backends()

cells = st.floats(-2.0, 3.0, allow_nan=False, allow_infinity=False)
batches = st.integers(1, 12).flatmap(
    lambda n: st.integers(1, 9).flatmap(lambda d: arrays(np.float64, (n, d), elements=cells)))
temperatures = st.floats(0.5, 30.0)
sigmas = st.floats(0.1, 2.0)


# Module-level parametrisation (not a function-scoped fixture): hypothesis reuses it safely.
pytestmark = pytest.mark.parametrize("backend", BACKENDS)


@given(X=batches, T=temperatures, s=sigmas)
def test_bounds(backend, X, T, s):
    H = kde.soft_entropy(X, T, s, backend=backend)
    assert -1e-12 <= H <= math.log(X.shape[0]) + 1e-12


@given(X=batches, T=temperatures, s=sigmas, seed=st.integers(0, 2**32 - 1))
def test_permutation_invariance(backend, X, T, s, seed):
    rng = np.random.default_rng(seed)
    H, G = kde.soft_entropy_and_grad(X, T, s, backend=backend)
    rows, cols = rng.permutation(X.shape[0]), rng.permutation(X.shape[1])
    Hp, Gp = kde.soft_entropy_and_grad(X[rows][:, cols], T, s, backend=backend)
    assert Hp == pytest.approx(H, rel=1e-10, abs=1e-12)
    np.testing.assert_allclose(Gp, G[rows][:, cols], rtol=1e-8, atol=1e-12)


@given(X=batches, T=temperatures, s=sigmas, k=st.integers(2, 4))
def test_repeating_the_batch_leaves_H_unchanged(backend, X, T, s, k):
    H = kde.soft_entropy(X, T, s, backend=backend)
    assert kde.soft_entropy(np.tile(X, (k, 1)), T, s, backend=backend) == pytest.approx(
        H, rel=1e-10, abs=1e-12)


@given(X=batches, T=temperatures, s=sigmas)
def test_gradient_in_S_sums_to_zero(backend, X, T, s):
    # dH/dS = dH/dX / (T S (1 - S)); H is shift invariant in S-space.
    G = kde.soft_entropy_grad(X, T, s, backend=backend)
    S = 1.0 / (1.0 + np.exp(-T * (X - 0.5)))
    slope = T * S * (1 - S)
    keep = (slope > 1e-6).all(axis=0)  # columns where dividing back is well conditioned
    dS = G[:, keep] / slope[:, keep]
    scale = np.abs(dS).sum(axis=0) + 1e-300
    assert (np.abs(dS.sum(axis=0)) <= 1e-9 * scale + 1e-12).all()


@given(row=arrays(np.float64, st.integers(1, 9), elements=cells), n=st.integers(1, 20),
       T=temperatures, s=sigmas)
def test_identical_rows_give_zero(backend, row, n, T, s):
    H, G = kde.soft_entropy_and_grad(np.tile(row, (n, 1)), T, s, backend=backend)
    assert H == pytest.approx(0.0, abs=1e-12)
    assert np.abs(G).max() <= 1e-12  # zero up to the rounding of a matrix product


@given(seed=st.integers(0, 2**32 - 1), n_proto=st.integers(1, 6), N=st.integers(2, 40))
def test_soft_approaches_hard(backend, seed, n_proto, N):
    # Far from the threshold, a sharp sigmoid and narrow kernel count exactly.
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 2, size=(n_proto, 10)).astype(float)
    X = protos[rng.integers(0, n_proto, size=N)]
    X += rng.uniform(-0.3, 0.3, size=X.shape)  # stays >= 0.2 away from 0.5
    soft = kde.soft_entropy(X, temperature=200.0, sigma=0.05, backend=backend)
    assert soft == pytest.approx(kde.hard_entropy(X), abs=1e-9)
