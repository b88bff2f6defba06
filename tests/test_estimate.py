"""kdentropy.estimate: bias-corrected entropy estimators, their intervals and their checks.

Reference values come from code written independently of the library: the
closed forms evaluated in mpmath at 30 digits, and NSB integrated by
mpmath.quad bin by bin (no grouping by count, no grid); and, where it is
installed, the ``infomeasure`` package.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest

import kdentropy as kde
from kdentropy import _nsb

# >= 20 count vectors, with the edge cases: N = 1, one pattern, all singletons.
COUNT_VECTORS = [
    [1], [7], [1, 1], [1, 1, 1, 1], [1] * 20, [2, 1], [5, 3, 1, 1], [2, 2, 1], [3, 3, 3],
    [100, 1, 1, 1, 3], [10, 10], [50, 25, 12, 6, 3, 2, 1, 1], [4, 4, 4, 4, 1, 1, 1, 1],
    [2] * 10, [1000], [999, 1], [17, 2, 2, 1, 1, 1, 1, 1, 1], [6, 5, 4, 3, 2, 1],
    [30, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [8, 8, 8, 8, 8, 8, 8, 8],
    [3, 1, 2, 1, 5, 1, 1, 9, 2], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
]
mp.mp.dps = 30


def _ref(counts, method):
    """The estimators' closed forms in mpmath (nats)."""
    n = [mp.mpf(c) for c in counts if c > 0]
    N = sum(n)
    K = len(n)
    plugin = -sum((c / N) * mp.log(c / N) for c in n)
    if method == "plugin":
        return plugin
    if method == "miller-madow":
        return plugin + mp.mpf(K - 1) / (2 * N)
    if method == "grassberger":
        return sum((c / N) * (mp.log(N) - mp.digamma(c) - (-1) ** int(c) / (c + 1)) for c in n)
    f1 = sum(1 for c in n if c == 1)
    if f1 == N:
        f1 = N - 1
    C = 1 - f1 / N
    return -sum((C * c / N) * mp.log(C * c / N) / (1 - (1 - C * c / N) ** N) for c in n)


@pytest.mark.parametrize("method", ["plugin", "miller-madow", "grassberger", "chao-shen"])
def test_point_estimators_match_closed_forms(method):
    got = [kde.entropy_from_counts(c, method, n_boot=2, rng=0).estimate for c in COUNT_VECTORS]
    want = [float(_ref(c, method)) for c in COUNT_VECTORS]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("method,approach", [("plugin", "discrete"),
                                             ("miller-madow", "miller_madow"),
                                             ("grassberger", "grassberger"),
                                             ("chao-shen", "chao_shen")])
def test_point_estimators_match_infomeasure(method, approach):
    im = pytest.importorskip("infomeasure")
    for c in COUNT_VECTORS:
        data = np.repeat(np.arange(len(c)), c)
        got = kde.entropy_from_counts(c, method, n_boot=2, rng=0).estimate
        assert got == pytest.approx(im.entropy(data, approach=approach), rel=1e-12, abs=1e-13), c


def _nsb_reference(counts, K):
    """NSB posterior mean and sd by mpmath.quad over β, every one of the K bins summed."""
    n = [mp.mpf(c) for c in counts] + [mp.mpf(0)] * (K - len(counts))
    N = sum(n)

    def loglik(b):
        return (mp.loggamma(K * b) - mp.loggamma(N + K * b)
                + sum(mp.loggamma(c + b) - mp.loggamma(b) for c in n))

    def dxi(b):
        return K * mp.polygamma(1, K * b + 1) - mp.polygamma(1, b + 1)

    def moments(b):
        a = [c + b for c in n]
        A = sum(a)
        m1 = mp.digamma(A + 1) - sum(x * mp.digamma(x + 1) for x in a) / A
        p2, t2 = mp.digamma(A + 2), mp.polygamma(1, A + 2)
        s = mp.mpf(0)
        for i, x in enumerate(a):
            for k, y in enumerate(a):
                if i == k:
                    s += x * (x + 1) * ((mp.digamma(x + 2) - p2) ** 2 + mp.polygamma(1, x + 2) - t2)
                else:
                    s += x * y * ((mp.digamma(x + 1) - p2) * (mp.digamma(y + 1) - p2) - t2)
        return m1, s / (A * (A + 1))

    # Scale by the integrand's maximum over a rough grid, so exp() stays in range.
    shift = max(loglik(mp.mpf(10) ** e) for e in range(-6, 7))
    w = lambda b: mp.exp(loglik(b) - shift) * dxi(b)  # noqa: E731
    cuts = [0] + [mp.mpf(10) ** e for e in range(-6, 7)] + [mp.inf]
    Z = mp.quad(w, cuts)
    mean = mp.quad(lambda b: w(b) * moments(b)[0], cuts) / Z
    second = mp.quad(lambda b: w(b) * moments(b)[1], cuts) / Z
    return float(mean), float(mp.sqrt(second - mean ** 2))


@pytest.mark.parametrize("counts,K", [([1], 2), ([7], 4), ([1, 1, 1, 1], 8),
                                      ([5, 3, 1, 1], 6), ([10, 10], 2)])
def test_nsb_matches_an_independent_integration(counts, K):
    mp.mp.dps = 15
    mean, sd = _nsb_reference(counts, K)
    mp.mp.dps = 30
    r = kde.entropy_from_counts(counts, "nsb", alphabet_size=K)
    assert r.estimate == pytest.approx(mean, rel=1e-5, abs=1e-6)
    assert r.stderr == pytest.approx(sd, rel=1e-4, abs=1e-6)
    # The uniform prior in ξ over [0, log K]: one observation of K = 2 gives log 2 / 2.
    if counts == [1] and K == 2:
        assert r.estimate == pytest.approx(np.log(2) / 2, rel=1e-9)


def test_nsb_conditional_moments_match_dirichlet_sampling():
    # E[H | n, β] and E[H² | n, β] (the grouped formulas) against Dirichlet draws.
    rng = np.random.default_rng(0)
    n, beta = np.array([5, 3, 1, 0, 0, 2]), 0.7
    P = rng.dirichlet(n + beta, size=200_000)
    H = -(P * np.log(P)).sum(axis=1)
    values, mult = np.unique(n, return_counts=True)
    m1, m2 = _nsb._nsb_conditional(np.array([beta]), values.astype(float),
                                       mult.astype(float), float(n.sum()), float(n.size))
    assert m1[0] == pytest.approx(H.mean(), abs=4 * H.std() / np.sqrt(H.size))
    assert m2[0] == pytest.approx((H ** 2).mean(), rel=2e-3)


def test_log_rising_is_accurate_on_both_sides_of_its_switch():
    mp.mp.dps = 40
    for x, n in [(99.9, 5), (100.1, 5), (1e5, 3000), (1e20, 7), (3e8, 4096), (150.0, 0)]:
        want = float(mp.loggamma(mp.mpf(x) + n) - mp.loggamma(mp.mpf(x)))
        got = _nsb._log_rising(np.array([x]), np.array([float(n)]))[0]
        assert got == pytest.approx(want, abs=1e-9, rel=1e-12)
    mp.mp.dps = 30


def test_edge_cases():
    one = kde.entropy_from_counts([1], "miller-madow", rng=0)
    assert (one.estimate, one.low, one.high, one.n, one.distinct, one.singletons,
            one.coverage) == (0.0, 0.0, 0.0, 1, 1, 1, 0.0)
    same = kde.entropy_from_counts([40], "chao-shen", rng=0)
    assert same.estimate == 0.0 and same.stderr == 0.0 and same.coverage == 1.0
    # All singletons: Chao–Shen keeps C > 0 and finite; NSB is the prior's answer.
    allone = kde.entropy_from_counts([1] * 16, "chao-shen", rng=0)
    assert np.isfinite(allone.estimate) and allone.estimate > np.log(16)
    prior = kde.entropy_from_counts([1] * 16, "nsb", alphabet_size=2.0 ** 40)
    assert np.log(16) < prior.estimate < 40 * np.log(2) and prior.stderr > 1
    # An alphabet of one outcome has no entropy.
    assert kde.entropy_from_counts([5], "nsb", alphabet_size=1).estimate == 0.0


def test_bias_correction_moves_the_estimate_up_and_nsb_covers_uniform():
    rng = np.random.default_rng(3)
    counts = rng.multinomial(64, np.full(16, 1 / 16), size=200)
    plug = kde.entropy_from_counts(counts, "plugin", n_boot=50, rng=1)
    for m in ("miller-madow", "grassberger", "chao-shen"):
        r = kde.entropy_from_counts(counts, m, n_boot=50, rng=1)
        if m != "grassberger":  # its (-1)^n term may take a batch below the plug-in value
            assert np.all(r.estimate >= plug.estimate)
        assert abs(np.mean(r.estimate) - np.log(16)) < abs(np.mean(plug.estimate) - np.log(16))
    r = kde.entropy_from_counts(counts, "nsb", alphabet_size=16)
    assert 0.9 <= np.mean((r.low <= np.log(16)) & (np.log(16) <= r.high)) <= 1.0


def test_basic_bootstrap_covers_in_the_well_sampled_regime():
    p = np.array([0.5, 0.3, 0.2])
    H = -np.sum(p * np.log(p))
    counts = np.random.default_rng(0).multinomial(500, p, size=300)
    r = kde.entropy_from_counts(counts, "miller-madow", n_boot=300, rng=1)
    assert 0.90 <= np.mean((r.low <= H) & (H <= r.high)) <= 0.98
    # The bootstrap standard error matches the spread of the estimates.
    assert np.mean(r.stderr) == pytest.approx(np.std(r.estimate), rel=0.15)


def test_deterministic_for_a_given_rng_and_independent_of_count_order():
    c = [9, 1, 4, 1, 2, 2, 7]
    a = kde.entropy_from_counts(c, "chao-shen", rng=5, n_boot=300)
    b = kde.entropy_from_counts(c[::-1], "chao-shen", rng=np.random.default_rng(5), n_boot=300)
    assert a == b
    d = kde.entropy_from_counts(c, "chao-shen", rng=6, n_boot=300)
    assert (d.low, d.high) != (a.low, a.high)
    # Zero counts change nothing.
    assert kde.entropy_from_counts(c + [0, 0], "chao-shen", rng=5, n_boot=300) == a


def test_batched_counts_and_patterns():
    rng = np.random.default_rng(2)
    X = rng.integers(0, 2, size=(2, 3, 50, 4))
    r = kde.entropy_estimate(X, "nsb")
    assert r.estimate.shape == (2, 3) and r.distinct.dtype.kind == "i"
    single = kde.entropy_estimate(X[1, 2], "nsb")
    assert r.estimate[1, 2] == single.estimate and r.high[1, 2] == single.high
    # The same sum in another order (counts sorted): equal to rounding.
    np.testing.assert_allclose(kde.entropy_estimate(X, "plugin", n_boot=3, rng=0).plugin,
                               kde.hard_entropy(X), rtol=1e-14)
    bits = kde.entropy_estimate(X[0, 0], "miller-madow", base=2, normalize=True, rng=0)
    nats = kde.entropy_estimate(X[0, 0], "miller-madow", rng=0)
    assert bits.estimate == pytest.approx(nats.estimate / np.log(2) / 4, rel=1e-12)
    assert bits.high == pytest.approx(nats.high / np.log(2) / 4, rel=1e-12)
    assert set(bits.to_dict()) >= {"estimate", "low", "high", "coverage", "method"}


@pytest.mark.parametrize("call,exc,words", [
    (lambda: kde.entropy_from_counts([0, 0]), ValueError, "N >= 1"),
    (lambda: kde.entropy_from_counts([], "plugin"), ValueError, "N >= 1"),
    (lambda: kde.entropy_estimate(np.zeros((0, 3))), ValueError, "N >= 1"),
    (lambda: kde.entropy_from_counts([1.0, np.nan], "plugin"), ValueError, "NaN"),
    (lambda: kde.entropy_estimate([[0.1, np.nan]]), ValueError, "NaN"),
    (lambda: kde.entropy_from_counts([2, -1], "plugin"), ValueError, ">= 0"),
    (lambda: kde.entropy_from_counts([1.5, 2], "plugin"), ValueError, "whole"),
    (lambda: kde.entropy_from_counts(["a"], "plugin"), TypeError, "counts"),
    (lambda: kde.entropy_from_counts([3, 1], "plugin", confidence=1.0), ValueError, "confidence"),
    (lambda: kde.entropy_from_counts([3, 1], "plugin", confidence=0), ValueError, "confidence"),
    (lambda: kde.entropy_from_counts([3, 1], "plugin", n_boot=0), ValueError, "n_boot"),
    (lambda: kde.entropy_from_counts([3, 1], "plugin", n_boot=2.5), TypeError, "n_boot"),
    (lambda: kde.entropy_from_counts([3, 1], "magic"), ValueError, "method"),
    (lambda: kde.entropy_from_counts([3, 1], "nsb"), ValueError, "alphabet_size"),
    (lambda: kde.entropy_from_counts([3, 1, 1], "nsb", alphabet_size=2), ValueError,
     "alphabet_size"),
    (lambda: kde.entropy_from_counts([3, 1], "plugin", rng="x"), TypeError, "rng"),
    (lambda: kde.entropy_from_counts([3, 1], "plugin", interval="bca"), ValueError, "interval"),
    (lambda: kde.entropy_estimate([[0, 1]], threshold=np.inf), ValueError, "threshold"),
])
def test_bad_input_is_refused_with_a_clear_message(call, exc, words):
    with pytest.raises(exc, match=words):
        call()
