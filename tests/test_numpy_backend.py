"""What only the ``numpy`` reference backend promises.

Its accuracy against the loop oracle (``naive.py``), and everything every
backend shares, is checked in ``test_backend_contract.py``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from helpers import backend_parts, batch
from kdentropy import _estimator
from kdentropy.backends import reference

T, SIGMA, THETA = 10.0, 0.5, 0.5


def test_is_registered_as_numpy():
    from kdentropy import backends

    assert reference.NAME == "numpy" and backends.load("numpy") is reference


@pytest.mark.parametrize("T, sigma", [(10.0, 0.5), (25.0, 0.1)])
def test_float32_costs_only_the_rounding_of_S(rng, T, sigma):
    # float32 input keeps its float32 S, but every pairwise sum runs in
    # float64: the result is the float64 computation on the rounded S. This
    # is what makes it the measure of "what rounding S alone costs".
    X32 = batch(rng, 2, 40, 9, dtype=np.float32)
    S32 = reference.soft_patterns(X32, T, THETA)
    assert S32.dtype == np.float32
    np.testing.assert_array_equal(S32, reference.soft_patterns(X32.astype(np.float64), T, THETA)
                                  .astype(np.float32))
    coefficients = _estimator.row_coefficients
    C0_32, V_32 = reference.soft_counts_and_grad(S32, sigma, coefficients)
    C0_64, V_64 = reference.soft_counts_and_grad(S32.astype(np.float64), sigma, coefficients)
    np.testing.assert_array_equal(C0_32, C0_64)
    np.testing.assert_array_equal(V_32, V_64)
    assert V_32.dtype == np.float64 and np.abs(V_32).max() > 0
    # Only the returned gradient is rounded to float32, once.
    parts32 = backend_parts(reference, X32, T, sigma, THETA)
    G64 = reference.input_grad(S32.astype(np.float64), V_64, T,
                               _estimator.gradient_factor(40, sigma), X32.shape)
    assert parts32.G.dtype == np.float32
    np.testing.assert_array_equal(parts32.G, G64.astype(np.float32))


# ------------------------------------------------------------------------- against the loop oracle

def _near_copies(rng, rows, n, D, spread):
    """``n`` rows, each a copy of one of ``rows`` plus noise of scale ``spread``."""
    return rows[rng.integers(0, rows.shape[0], n)] + spread * rng.standard_normal((n, D))


# sigma 0.5: Gram products; sigma 1e-5 with clusters of spread 1e-5: direct
# differences (a Gram product would lose K to cancellation there).
@pytest.mark.parametrize("sigma, spread", [(0.5, 0.2), (1e-5, 1e-5)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_blocks_match_the_loop_oracle(rng, sigma, spread, dtype):
    import naive

    D = 6
    centres = rng.uniform(0.0, 1.0, (3, D))
    Sa = _near_copies(rng, centres, 9, D, spread).astype(dtype)
    Sb = _near_copies(rng, centres, 13, D, spread).astype(dtype)
    ga, gb = rng.uniform(0.1, 1.0, 9), rng.uniform(0.1, 1.0, 13)
    for A, B, g1, g2, same in [(Sa, Sb, ga, gb, False), (Sa, Sa, ga, ga, True),
                               (Sa, Sa, ga, ga, False)]:
        a, b = A.astype(np.float64), B.astype(np.float64)
        C = reference.block_soft_counts(A, B, sigma, same)
        assert C.dtype == np.float64 and C.shape == (A.shape[0],)
        np.testing.assert_allclose(C, naive.block_soft_counts(a, b, sigma, same),
                                   rtol=1e-9, atol=1e-300)
        V = reference.block_weighted_grad(A, g1, B, g2, sigma, same)
        assert V.dtype == np.float64 and V.shape == A.shape
        expected = naive.block_weighted_grad(a, g1, b, g2, sigma, same)
        assert np.linalg.norm(V - expected) <= 1e-9 * np.linalg.norm(expected)
    # The counts are not trivial: neighbours in the same cluster, nothing else.
    C = reference.block_soft_counts(Sa, Sb, sigma, False)
    assert 0.0 < C.min() and C.max() < Sb.shape[0]
    # With one block, K_ii = 1 is left out: the counts are one less.
    np.testing.assert_allclose(reference.block_soft_counts(Sa, Sa, sigma, False),
                               reference.block_soft_counts(Sa, Sa, sigma, True) + 1.0,
                               rtol=1e-12)


@pytest.mark.parametrize("sigma, spread", [(0.5, 0.2), (1e-5, 1e-5)])
def test_soft_counts_and_grad_match_the_loop_oracle(rng, sigma, spread):
    import naive

    D = 5
    centres = rng.uniform(0.0, 1.0, (2, D))
    S = np.stack([_near_copies(rng, centres, 11, D, spread) for _ in range(2)])
    C0, V = reference.soft_counts_and_grad(S, sigma, _estimator.row_coefficients)
    assert C0.shape == (2, 11) and V.shape == S.shape
    for p in range(2):
        expected_C0 = naive.soft_counts(S[p], sigma)
        np.testing.assert_allclose(C0[p], expected_C0, rtol=1e-9)
        g = 1.0 / (1.0 + expected_C0)
        expected_V = naive.block_weighted_grad(S[p], g, S[p], g, sigma, True)
        assert np.linalg.norm(V[p] - expected_V) <= 1e-9 * np.linalg.norm(expected_V)
    C0_only, none = reference.soft_counts_and_grad(S, sigma, None)
    assert none is None
    np.testing.assert_array_equal(C0_only, C0)


def test_two_equal_rows_count_each_other_once():
    S = np.array([[[0.25, 0.5], [0.25, 0.5], [0.75, 0.5]]])
    sigma = 0.5
    k = math.exp(-0.25 / (2 * sigma * sigma))
    C0, _ = reference.soft_counts_and_grad(S, sigma, None)
    np.testing.assert_allclose(C0, [[1.0 + k, 1.0 + k, 2.0 * k]], rtol=1e-15)


def test_direct_differences_over_several_row_chunks(rng):
    # The direct-difference path forms at most 2**22 differences at a time:
    # a block of ~1.05 M elements is done three rows of Sa at a time (and Sa
    # has more rows than cells, so rows and cells cannot be confused).
    import naive

    sigma = 1e-4
    Sa = rng.uniform(0.0, 1.0, (7, 4))
    n = 262145
    Sb = np.repeat(Sa, n // 7 + 1, axis=0)[:n] + 1e-4 * rng.standard_normal((n, 4))
    assert (1 << 22) // Sb.size == 3
    C = reference.block_soft_counts(Sa, Sb, sigma, False)
    d2 = ((Sa[:, None, :] - Sb[None, :, :]) ** 2).sum(axis=-1)
    np.testing.assert_allclose(C, np.exp(-d2 / (2 * sigma * sigma)).sum(axis=1), rtol=1e-9)
    sub = slice(0, None, 1999)  # the loop oracle on a sample of Sb's rows
    np.testing.assert_allclose(reference.block_soft_counts(Sa, Sb[sub], sigma, False),
                               naive.block_soft_counts(Sa, Sb[sub], sigma, False), rtol=1e-9)
    assert (C > 1.0).all()


def test_weighted_sums_are_float64_whatever_the_coefficients_dtype(rng):
    # The documented result is float64: float32 coefficients are widened
    # exactly, wider ones (longdouble) rounded to float64 first.
    Sa, Sb = rng.uniform(0.0, 1.0, (5, 3)), rng.uniform(0.0, 1.0, (6, 3))
    ga, gb = rng.uniform(0.1, 1.0, 5), rng.uniform(0.1, 1.0, 6)
    expected = reference.block_weighted_grad(Sa, ga, Sb, gb, 0.5, False)
    for dtype in (np.float32, np.longdouble):
        for a, b in ((ga.astype(dtype), gb), (ga, gb.astype(dtype))):
            V = reference.block_weighted_grad(Sa, a, Sb, b, 0.5, False)
            assert V.dtype == np.float64
            np.testing.assert_array_equal(V, reference.block_weighted_grad(
                Sa, a.astype(np.float64), Sb, b.astype(np.float64), 0.5, False))
            np.testing.assert_allclose(V, expected, rtol=1e-6)


def test_gram_products_are_judged_on_centred_rows(rng, monkeypatch):
    # Offset rows are centred before the Gram product: its cancellation error
    # scales with |S - mean|^2, not |S|^2, so the cheap way stays accurate.
    from kdentropy.backends import _conditioning

    seen = []
    real = _conditioning.distance_precision

    def spy(dtype, max_sqnorm, sigma):
        seen.append((np.dtype(dtype), max_sqnorm))
        return real(dtype, max_sqnorm, sigma)

    monkeypatch.setattr(_conditioning, "distance_precision", spy)
    Sa = 0.5 + 0.01 * rng.standard_normal((6, 4))
    Sb = 0.5 + 0.01 * rng.standard_normal((9, 4))
    reference.block_soft_counts(Sa, Sb, 0.05, False)
    mean = Sb.mean(axis=0)
    expected = max(((Sa - mean) ** 2).sum(axis=1).max(), ((Sb - mean) ** 2).sum(axis=1).max())
    assert seen == [(np.dtype(np.float64), pytest.approx(expected, rel=1e-12))]
    assert expected < 1e-2  # uncentred rows would be judged on |S|^2 ~ 1


def test_empty_blocks_give_empty_sums_without_warnings(rng):
    # One MPI rank's shard may hold no rows.
    Sa = rng.uniform(0.0, 1.0, (4, 3))
    empty = np.empty((0, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(reference.block_soft_counts(Sa, empty, 0.5, False),
                                      np.zeros(4))
        np.testing.assert_array_equal(
            reference.block_weighted_grad(Sa, np.ones(4), empty, np.ones(0), 0.5, False),
            np.zeros((4, 3)))
        assert reference.block_soft_counts(empty, Sa, 0.5, False).shape == (0,)


def test_saturation_and_overflow_are_silent():
    X = np.array([[[1e300, -1e300], [0.5, 2.0]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        S = reference.soft_patterns(X, 1e50, 0.5)
        np.testing.assert_array_equal(S, [[[1.0, 0.0], [0.5, 1.0]]])
        # A float32 gradient beyond float32's range is +-inf, without a warning.
        S32 = np.full((1, 2, 1), 0.5, np.float32)
        V = np.array([[[1e40], [-1e40]]])
        G = reference.input_grad(S32, V, 4.0, 1.0, (1, 2, 1))
    assert G.dtype == np.float32
    np.testing.assert_array_equal(G, np.array([[[np.inf], [-np.inf]]], np.float32))


def test_input_grad_is_the_chain_rule_through_the_sigmoid(rng):
    S = rng.uniform(0.0, 1.0, (2, 3, 4))
    V = rng.standard_normal((2, 3, 4))
    G = reference.input_grad(S, V, 7.0, 0.125, (2, 3, 4))
    np.testing.assert_allclose(G, 0.125 * V * 7.0 * S * (1.0 - S), rtol=1e-15)
    S32 = S.astype(np.float32)
    G32 = reference.input_grad(S32, V, 7.0, 0.125, (6, 4))
    s = S32.astype(np.float64)
    assert G32.dtype == np.float32 and G32.shape == (6, 4)
    np.testing.assert_array_equal(G32, (0.125 * V * (7.0 * s * (1.0 - s))).astype(np.float32)
                                  .reshape(6, 4))
