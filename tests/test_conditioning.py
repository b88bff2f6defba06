"""How distances are formed (``backends/_conditioning.py``): the float32 accuracy it must keep.

The float32 Gram limit decides when a float32 Gram product is accurate
enough. Too loose a limit shows only where the Gram error
``eps32 max|Sc|^2 / sigma^2`` is comparable to the float32 bar, at moderate
kernel widths (sigma = 0.02-0.05 at D = 256); at small sigma every limit
already sends the batch to float64 or direct differences. The bar is the
one of ``helpers.py``: float32 may cost at most
:data:`helpers.F32_ROUNDING_FACTOR` times what rounding ``S`` to float32
alone costs (or the fixed float32 bar, whichever is larger).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import (
    backend_value_and_grad, fast_backends, float32_rounding_cost, float32_tolerances, norm_rel,
    reference_value_and_grad,
)
from kdentropy.backends import _conditioning

# The numpy reference works in float64 whatever the input: nothing to check there.
FLOAT32_BACKENDS = [name for name in fast_backends() if name != "numpy"]

T, THETA = 10.0, 0.5


def _prototype_batch(rng: np.random.Generator, N: int, D: int, sigma: float,
                     n_proto: int = 8) -> np.ndarray:
    """Noisy copies of 0/1 prototypes whose soft distances within a cluster are of order sigma."""
    P = rng.integers(0, 2, size=(n_proto, D)).astype(np.float64)
    noise = (1.5 * sigma / math.sqrt(D)) * rng.standard_normal((N, D))
    return P[rng.integers(0, n_proto, size=N)] + noise


@pytest.mark.parametrize("backend", FLOAT32_BACKENDS)
@pytest.mark.parametrize("sigma", [1e-3, 5e-3, 0.02, 0.03, 0.04, 0.05])
def test_float32_gradient_costs_at_most_a_few_roundings_of_S(backend, sigma):
    """D = 256, sigma across the band where a loose float32 Gram limit shows.

    Measured on the cpu backend: with the limit at 2e-4 the error equals the
    rounding cost (ratio 1.0); loosened to 2e-2 it is 15x (sigma = 0.02) to
    5.5x (0.05) that cost, and above the fixed 1e-4 bar.
    """
    N, D = 200, 256
    rng = np.random.default_rng(int(1e6 * sigma) + D)
    X32 = _prototype_batch(rng, N, D, sigma)[None].astype(np.float32)
    H_ref, G_ref = reference_value_and_grad(X32, T, sigma, THETA)
    assert 0.5 < H_ref[0] < math.log(N) - 0.5  # neighbours within reach: a non-trivial case
    H32, G32 = backend_value_and_grad(backend, X32, T, sigma, THETA)
    assert G32.dtype == np.float32
    value_tol, grad_tol = float32_tolerances(N, float32_rounding_cost(X32, T, sigma, THETA))
    value_err = float(np.max(np.abs(H32 - H_ref)))
    grad_err = norm_rel(G32, G_ref)
    assert value_err <= value_tol, f"value error {value_err:.3g} > {value_tol:.3g}"
    assert grad_err <= grad_tol, f"gradient error {grad_err:.3g} > {grad_tol:.3g}"


def test_gram_limits_are_the_documented_bars():
    # The limits are twice the accuracy bars they protect (module docstring).
    assert _conditioning.GRAM_LIMITS[np.dtype(np.float32)] == 2e-4
    assert _conditioning.GRAM_LIMITS[np.dtype(np.float64)] == 1e-10


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_distance_precision_picks_the_cheapest_accurate_way(dtype):
    """Own precision, then float64, then direct differences, at the limits' edges."""
    dtype = np.dtype(dtype)
    eps = {np.dtype(np.float32): 2.0**-23, np.dtype(np.float64): 2.0**-52}
    limit = _conditioning.GRAM_LIMITS[dtype]
    sigma = 0.1
    # max_sqnorm putting the condition exactly at the limit in the input's dtype.
    at_limit = limit * sigma * sigma / eps[dtype]
    assert _conditioning.gram_condition(dtype, at_limit, sigma) == pytest.approx(limit, rel=1e-12)
    assert _conditioning.distance_precision(dtype, at_limit * (1 - 1e-9), sigma) == dtype
    beyond = at_limit * (1 + 1e-9)
    if dtype == np.float32:
        # A float64 Gram product is 2**29 times more accurate: it takes over ...
        assert _conditioning.distance_precision(dtype, beyond, sigma) == np.float64
        # ... up to its own condition reaching the float32 limit.
        f64_edge = limit * sigma * sigma / eps[np.dtype(np.float64)]
        assert _conditioning.distance_precision(dtype, f64_edge * (1 - 1e-9), sigma) == np.float64
        assert _conditioning.distance_precision(dtype, f64_edge * (1 + 1e-9), sigma) is None
    else:
        assert _conditioning.distance_precision(dtype, beyond, sigma) is None


def test_distance_precision_needs_a_finite_kernel_scale():
    """1 / (2 sigma^2) must stay finite in the Gram dtype, even when the condition is met."""
    # sigma = 1e-20: 0.5 / sigma^2 = 5e39 overflows float32 (max 3.4e38) but not float64.
    assert _conditioning.distance_precision(np.float32, 0.0, 1e-20) == np.float64
    # Below ~1e-154 it overflows float64 too: direct differences.
    assert _conditioning.distance_precision(np.float64, 0.0, 1e-160) is None
    # Just inside the float32 range (max / 4 = 8.5e37 >= 0.5 / sigma^2).
    assert _conditioning.distance_precision(np.float32, 0.0, 1e-19) == np.float32
    assert _conditioning.distance_precision(np.float32, 0.0, 7.7e-20) == np.float32
    assert _conditioning.distance_precision(np.float32, 0.0, 7.6e-20) == np.float64
    # Zero spread and a usable scale: the cheapest, the input's own dtype.
    assert _conditioning.distance_precision(np.float64, 0.0, 1.0) == np.float64


def test_float32_pair_sums_check():
    """``eps32 |rowsum Sc| <= limit |V|``, and an exactly zero result only from zero input."""
    eps = 2.0**-23
    limit = _conditioning.FLOAT32_PAIR_SUM_LIMIT
    assert limit == 2e-5
    edge = limit / eps  # subtrahend / result ratio at the limit
    assert _conditioning.float32_pair_sums_are_accurate(edge * (1 - 1e-9), 1.0)
    assert not _conditioning.float32_pair_sums_are_accurate(edge * (1 + 1e-9), 1.0)
    assert _conditioning.float32_pair_sums_are_accurate(0.0, 0.0)
    assert not _conditioning.float32_pair_sums_are_accurate(1e-30, 0.0)


def test_limits_are_inclusive():
    """A condition exactly at a limit is still accurate enough (the limits are the largest tolerated)."""
    # sigma = 1 and powers of two keep these products exact.
    f32_edge = _conditioning.GRAM_LIMITS[np.dtype(np.float32)] * 2.0**23
    assert _conditioning.gram_condition(np.float32, f32_edge, 1.0) == \
        _conditioning.GRAM_LIMITS[np.dtype(np.float32)]
    assert _conditioning.distance_precision(np.float32, f32_edge, 1.0) == np.float32
    edge = _conditioning.FLOAT32_PAIR_SUM_LIMIT * 2.0**23
    assert _conditioning.float32_pair_sums_are_accurate(edge, 1.0)
    # The bar scales with |V|: twice the result tolerates twice the subtrahend.
    assert _conditioning.float32_pair_sums_are_accurate(2 * edge, 2.0)
    assert not _conditioning.float32_pair_sums_are_accurate(2 * edge * (1 + 1e-9), 2.0)
    assert not _conditioning.float32_pair_sums_are_accurate(edge * (1 + 1e-9), 0.5 + 0.5)


@pytest.mark.parametrize("dtype", ["float32", np.float64])
def test_own_precision_rule_is_distance_precisions_first_choice(rng, dtype):
    """The numbers compiled callers use reproduce the own-dtype decision exactly."""
    eps, limit, largest_scale = _conditioning.own_precision_rule(dtype)
    dt = np.dtype(dtype)
    assert eps == np.finfo(dt).eps and limit == _conditioning.GRAM_LIMITS[dt]
    assert largest_scale == float(np.finfo(dt).max) / 4
    # At and around both edges (the kernel scale and the condition), random elsewhere.
    sigma_edge = math.sqrt(0.5 / largest_scale)
    sigmas = [sigma_edge * f for f in (0.999, 1.0, 1.001, 1.5)]
    sigmas += list(10.0 ** rng.uniform(-25, 0, 30))
    for sigma in sigmas:
        at_limit = limit * sigma * sigma / eps
        for max_sqnorm in (0.0, at_limit * (1 - 1e-9), at_limit * (1 + 1e-9),
                           at_limit * rng.uniform(0.0, 2.0)):
            own = 0.5 / sigma**2 <= largest_scale and eps * max_sqnorm / (sigma * sigma) <= limit
            chosen = _conditioning.distance_precision(dt, max_sqnorm, sigma)
            # (not chosen == dt: a dtype compares equal to None, np.dtype(None) being float64)
            assert own == (chosen is not None and chosen == dt)
