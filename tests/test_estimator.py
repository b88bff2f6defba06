"""``_estimator``: the formulas every backend shares, checked on their own."""

from __future__ import annotations

import math

import numpy as np

from kdentropy import _estimator


def test_row_coefficients_are_float64_whatever_the_counts_dtype():
    # A device or float32 backend may hand float32 counts; g = 1 / (1 + C0)
    # is still formed and returned in float64.
    C0 = np.array([[0.0, 1e-8, 3.0]], np.float32)
    g = _estimator.row_coefficients(C0)
    assert g.dtype == np.float64
    np.testing.assert_array_equal(g, 1.0 / (1.0 + C0.astype(np.float64)))
    assert g[0, 1] != 1.0  # 1 + 1e-8 would round to 1 in float32


def test_entropy_from_counts_over_the_last_axis_of_any_rank():
    C0 = np.array([0.0, 1.0, 3.0])  # one population, shape (N,)
    expected = math.log(3) - (math.log(1) + math.log(2) + math.log(4)) / 3
    assert _estimator.entropy_from_counts(C0) == expected
    batch = np.stack([C0, np.zeros(3)])[None]  # (1, 2, N)
    np.testing.assert_array_equal(_estimator.entropy_from_counts(batch),
                                  [[expected, math.log(3)]])


def test_make_sigmoid_is_the_logistic_function_at_any_offset(rng):
    # make_sigmoid is what every backend compiles (with its own exp); build it
    # here so that the function checked is the one made now, not the module's.
    sigmoid = _estimator.make_sigmoid(math.exp)
    T = float(rng.uniform(0.5, 20.0))
    theta = float(rng.uniform(-1.0, 1.0))
    for x in rng.uniform(-3.0, 3.0, size=50):
        x = float(x)
        z = T * (x - theta)
        expected = 1.0 / (1.0 + math.exp(-z))
        s = sigmoid(x, T, theta)
        assert math.isclose(s, expected, rel_tol=1e-14)
        # Symmetry about theta: sigma(-z) = 1 - sigma(z).
        assert math.isclose(s + sigmoid(2.0 * theta - x, T, theta), 1.0, rel_tol=1e-12)
    assert sigmoid(theta, T, theta) == 0.5


def test_make_sigmoid_saturates_exactly_and_never_overflows():
    sigmoid = _estimator.make_sigmoid(math.exp)  # math.exp(> 709) raises OverflowError
    assert sigmoid(1e300, 1e50, 0.0) == 1.0
    assert sigmoid(-1e300, 1e50, 0.0) == 0.0
    assert sigmoid(1000.0, 1.0, 0.0) == 1.0
    assert sigmoid(-1000.0, 1.0, 0.0) == 0.0
    # Far in the lower tail the value is exp(z) to full relative precision, not 0.
    assert math.isclose(sigmoid(-700.0, 1.0, 0.0), math.exp(-700.0), rel_tol=1e-14)
    assert math.isclose(sigmoid(-40.0, 1.0, 0.0), math.exp(-40.0) / (1.0 + math.exp(-40.0)),
                        rel_tol=1e-15)


def test_make_sigmoid_passes_exp_only_non_positive_arguments(rng):
    # The cpu backend's polynomial exp is valid only for arguments <= 0.
    seen = []

    def exp(t):
        seen.append(t)
        return math.exp(t)

    sigmoid = _estimator.make_sigmoid(exp)
    xs = rng.uniform(-5.0, 5.0, size=20)
    values = [sigmoid(float(x), 3.0, 0.25) for x in xs]
    assert len(seen) == xs.size and max(seen) <= 0.0
    np.testing.assert_allclose(seen, -3.0 * np.abs(xs - 0.25), rtol=1e-15)
    np.testing.assert_allclose(values, 1.0 / (1.0 + np.exp(-3.0 * (xs - 0.25))), rtol=1e-14)


def test_sigmoid_slope_is_T_s_one_minus_s(rng):
    s = rng.uniform(0.0, 1.0, size=10)
    T = float(rng.uniform(0.5, 5.0))
    np.testing.assert_array_equal(_estimator.sigmoid_slope(s, T), T * s * (1.0 - s))
    assert _estimator.sigmoid_slope(0.5, 4.0) == 1.0


def test_gradient_factor_is_one_over_N_sigma_squared():
    assert _estimator.gradient_factor(8, 0.5) == 0.5
    assert _estimator.gradient_factor(3, 2.0) == 1.0 / 12.0


def test_entropy_from_counts_is_clipped_to_its_range():
    # All N rows equal: C0_i = N - 1 and H = 0, which rounding may push below 0.
    for N in (3, 7, 10, 1000):
        assert _estimator.entropy_from_counts(np.full(N, N - 1.0)) >= 0.0
    # Negative counts (impossible, but a kernel rounding to -tiny) stay <= log N.
    N = 5
    assert _estimator.entropy_from_counts(np.full(N, -1e-17)) == math.log(N)
    assert _estimator.entropy_from_counts(np.full(N, N + 5.0)) == 0.0
