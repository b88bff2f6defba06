"""What only the ``numpy`` reference backend promises.

Its accuracy against the loop oracle (``naive.py``), and everything every
backend shares, is checked in ``test_backend_contract.py``.
"""

from __future__ import annotations

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
