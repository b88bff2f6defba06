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
