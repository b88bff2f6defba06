"""Hard entropy and pattern counting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import entropy

import kdentropy as kde
import naive


def counts_by_dict(B):
    seen: dict[tuple, int] = {}
    for row in B:
        key = tuple(int(v) for v in row)
        seen[key] = seen.get(key, 0) + 1
    return seen


@pytest.mark.parametrize("D", [1, 7, 8, 9, 64, 130])
def test_counts_and_entropy_match_a_dictionary(rng, D):
    n_proto = 5
    protos = rng.random((n_proto, D))
    X = protos[rng.integers(0, n_proto, size=200)]
    P, c = kde.pattern_counts(X)
    ref = counts_by_dict(X >= 0.5)
    assert P.dtype == np.uint8 and c.dtype == np.int64
    assert P.shape == (len(ref), D) and c.sum() == 200
    assert {tuple(p): int(n) for p, n in zip(P.tolist(), c)} == ref
    assert [tuple(p) for p in P.tolist()] == sorted(ref)  # lexicographic order
    assert kde.hard_entropy(X) == entropy(c)  # exactly scipy's value
    assert kde.hard_entropy(X, base=2) == pytest.approx(entropy(c, base=2), rel=1e-14)


def test_extremes(rng):
    X = rng.random((1, 10)).repeat(50, axis=0)
    assert kde.hard_entropy(X) == 0.0
    Y = np.eye(32)
    assert kde.hard_entropy(Y) == pytest.approx(math.log(32), rel=1e-14)
    assert kde.hard_entropy(Y, normalize=True) == pytest.approx(math.log(32) / 32, rel=1e-14)


def test_threshold_and_inputs_kinds(rng):
    X = rng.random((40, 12))
    assert kde.hard_entropy(X, threshold=0.3) == entropy(kde.pattern_counts(X, 0.3)[1])
    B = X >= 0.5
    assert kde.hard_entropy(B) == kde.hard_entropy(X)  # bool 1 >= 0.5
    assert kde.hard_entropy(B.astype(np.int8)) == kde.hard_entropy(X)
    assert kde.hard_entropy(X.tolist()) == kde.hard_entropy(X)
    assert kde.hard_entropy(np.asfortranarray(X)) == kde.hard_entropy(X)


def test_batched_equals_loop(rng):
    X = (rng.random((2, 3, 30, 5)) > 0.5).astype(float)
    H = kde.hard_entropy(X)
    assert H.shape == (2, 3) and H.dtype == np.float64
    for a in range(2):
        for b in range(3):
            assert H[a, b] == kde.hard_entropy(X[a, b])


def test_empty_cells_is_one_pattern():
    assert kde.hard_entropy(np.zeros((5, 0))) == 0.0
    P, c = kde.pattern_counts(np.zeros((5, 0)))
    assert P.shape == (1, 0) and c.tolist() == [5]
    assert P.dtype == np.uint8 and c.dtype == np.int64  # as for D > 0


def test_large_batch_is_exact_in_linear_memory(rng):
    # 200k rows of 100 cells drawn from 64 distinct patterns with known
    # multiplicities: the counts are exact, and the peak memory is a few bytes
    # per cell (an N x N comparison would need 4e10 entries).
    import tracemalloc

    N, D, K = 200_000, 100, 64
    protos = rng.integers(0, 2, size=(K, D), dtype=np.int8)
    assert len(np.unique(protos, axis=0)) == K
    mult = rng.multinomial(N, np.full(K, 1.0 / K))
    X = np.repeat(protos, mult, axis=0)[rng.permutation(N)]
    kde.pattern_counts(X[:10])  # warm up outside the trace
    tracemalloc.start()
    try:
        P, c = kde.pattern_counts(X)
        H = kde.hard_entropy(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 16 * N * D, f"peak {peak / 2**20:.0f} MiB"
    order = np.lexsort(protos.T[::-1])  # the prototypes in lexicographic row order
    kept = mult[order] > 0
    np.testing.assert_array_equal(P, protos[order][kept])
    np.testing.assert_array_equal(c, mult[order][kept])
    assert H == entropy(c)
    assert H == pytest.approx(entropy(mult), rel=1e-14)


def test_pattern_counts_needs_2d(rng):
    with pytest.raises(ValueError, match="2-D"):
        kde.pattern_counts(rng.random((2, 3, 4)))


def test_hard_entropy_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        kde.hard_entropy([[0.1, np.nan]])
    with pytest.raises(ValueError, match="threshold"):
        kde.hard_entropy([[0.1, 0.2]], threshold=np.inf)
    with pytest.raises(TypeError, match="complex"):
        kde.hard_entropy(np.ones((2, 2), complex))


# ----------------------------------------------------------------------------- independent oracle
# The tests above compare hard_entropy with scipy on pattern_counts: both go
# through hard.binarize, so a wrong comparison there passes them. These use
# naive.hard_entropy (tuples of ``x >= threshold`` and a Counter) instead.

def _at_threshold(rng, shape, theta, dtype=np.float64):
    """Cells drawn from {theta - 1 ulp, theta, theta + 1 ulp} of ``dtype``: every third is exactly theta."""
    t = dtype(theta)
    values = np.array([np.nextafter(t, dtype(-np.inf)), t, np.nextafter(t, dtype(np.inf))], dtype)
    return values[rng.integers(0, 3, size=shape)]


def test_a_cell_exactly_at_the_threshold_is_one():
    # The documented rule is X >= threshold: [theta] and [theta - ulp] are two patterns.
    theta = 0.3
    X = np.array([[theta], [np.nextafter(theta, 0.0)]])
    assert naive.hard_entropy(X, theta) == pytest.approx(math.log(2), rel=1e-15)
    assert kde.hard_entropy(X, threshold=theta) == pytest.approx(math.log(2), rel=1e-15)
    P, c = kde.pattern_counts(X, theta)
    assert P.tolist() == [[0], [1]] and c.tolist() == [1, 1]
    # And all equal to the threshold is one pattern of ones.
    P, c = kde.pattern_counts(np.full((4, 3), theta), theta)
    assert P.tolist() == [[1, 1, 1]] and c.tolist() == [4]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("theta", [0.5, 0.1, -2.75])
def test_values_at_the_threshold_match_the_oracle(rng, dtype, theta):
    X = _at_threshold(rng, (60, 4), theta, dtype)
    # theta = 0.1 is not a float32: the float32 cells straddle it, none equal.
    H = kde.hard_entropy(X, threshold=theta)
    assert H == pytest.approx(naive.hard_entropy(X, theta), rel=1e-13, abs=0.0)
    assert 0.5 < H < math.log(60)  # several patterns, not all distinct: a real test


def test_float32_threshold_is_not_rounded(rng):
    # theta = 0.1 lies between two float32 values; X >= 0.1 is decided in float64.
    lo = np.nextafter(np.float32(0.1), np.float32(0))
    hi = np.float32(0.1)  # 0.100000001... > 0.1
    X = np.array([[lo], [hi], [hi], [lo]], np.float32)
    assert kde.hard_entropy(X, threshold=0.1) == naive.hard_entropy(X, 0.1) == \
        pytest.approx(math.log(2), rel=1e-15)
    assert kde.hard_entropy(X, threshold=float(hi)) == naive.hard_entropy(X, float(hi))
    # Just above hi (rounds to hi in float32): no cell reaches it, one pattern.
    above = float(hi) + 1e-12
    assert np.float32(above) == hi
    assert kde.hard_entropy(X, threshold=above) == naive.hard_entropy(X, above) == 0.0


def test_batched_base_and_normalize_match_the_oracle(rng):
    G, M, N, D = 2, 3, 40, 6
    theta = 0.25
    X = _at_threshold(rng, (G, M, N, D), theta)
    ref = np.array([[naive.hard_entropy(X[a, b], theta) for b in range(M)] for a in range(G)])
    assert len(np.unique(ref)) > 1  # populations differ: a mixed-up batch axis shows
    np.testing.assert_allclose(kde.hard_entropy(X, threshold=theta), ref, rtol=1e-13, atol=0)
    np.testing.assert_allclose(kde.hard_entropy(X, threshold=theta, base=2), ref / math.log(2),
                               rtol=1e-13, atol=0)
    np.testing.assert_allclose(kde.hard_entropy(X, threshold=theta, normalize=True), ref / D,
                               rtol=1e-13, atol=0)
    np.testing.assert_allclose(kde.hard_entropy(X, threshold=theta, base=10, normalize=True),
                               ref / (math.log(10) * D), rtol=1e-13, atol=0)
    # (G, N, D): one leading axis.
    np.testing.assert_allclose(kde.hard_entropy(X[0], threshold=theta), ref[0], rtol=1e-13, atol=0)


@pytest.mark.parametrize("kind", ["bool", "int8", "int64"])
def test_integer_and_bool_input_match_the_oracle(rng, kind):
    # Integers compared with a fractional and an integral threshold (1 >= 1).
    X = rng.integers(0, 3, size=(50, 5)) - 1
    X = X >= 0 if kind == "bool" else X.astype(kind)
    for theta in (0.5, 1.0, 0.0, -0.5):
        assert kde.hard_entropy(X, threshold=theta) == \
            pytest.approx(naive.hard_entropy(X, theta), rel=1e-13, abs=0.0)
