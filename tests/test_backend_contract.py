"""The backend contract: every registered backend against the reference and the loop oracle.

Parametrised over :data:`kdentropy.backends.BACKEND_NAMES`; a backend that
cannot run here is skipped with its reason. The ``numpy`` reference backend
is checked against the loop oracle (``naive.py``) at tiny sizes and is the
oracle for the others. Backends are called through their protocol
(``helpers.backend_parts``, composed exactly as the public functions do),
without the public functions' validation.

For the ``cuda`` backend without a GPU run it under the simulator::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/test_backend_contract.py

where sizes too slow to simulate are skipped.

Tolerances (``helpers.py``): float64 relative 1e-10; float32 value absolute
``1e-5 log N`` and gradient norm-relative 1e-4 against the float64 reference
on the same inputs, or a few times what rounding S to float32 alone costs
where that is more.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import naive
from helpers import (
    F32_GRAD_NORM_RTOL,
    F64_RTOL,
    assert_float32_close,
    assert_float64_close,
    backend_parts,
    backend_value_and_grad,
    batch,
    central_differences,
    clustered,
    float32_rounding_cost,
    norm_rel,
    simulated,
    to_host,
)
from kdentropy import _estimator, backends
from kdentropy.backends import reference

T, SIGMA, THETA = 10.0, 0.5, 0.5
DTYPES = [np.float64, np.float32]
AVAILABLE = backends.available_backends()


def _unavailable_reason(name: str) -> str:
    try:
        backends.load(name)
    except backends.BackendUnavailableError as exc:
        return str(exc).split(" (")[0]
    return "unavailable"


@pytest.fixture(params=backends.BACKEND_NAMES)
def be(request):
    """The backend module, skipped where it cannot run."""
    name = request.param
    if name not in AVAILABLE:
        pytest.skip(_unavailable_reason(name))
    module = backends.load(name)
    if not simulated(module):
        yield module
        return
    # The simulator runs each CUDA thread as a Python thread and polls them at
    # barriers; with the default 5 ms switch interval every barrier costs
    # milliseconds.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        yield module
    finally:
        sys.setswitchinterval(interval)


#: Rows of a population under the CUDA simulator, whose tiles hold a few rows:
#: small batches already span several tiles.
SIMULATOR_ROWS = 11


def rows(be, N: int) -> int:
    """``N`` rows, or at most :data:`SIMULATOR_ROWS` under the simulator."""
    return min(N, SIMULATOR_ROWS) if simulated(be) else N


def skip_if_simulated(be, what: str = "this size") -> None:
    if simulated(be):
        pytest.skip(f"{what} is too slow under the CUDA simulator")


def skip_if_reference(be) -> None:
    if be is reference:
        pytest.skip("the reference is its own oracle in float64 (checked against naive.py)")


def check_against_reference(be, X3, T=T, sigma=SIGMA, theta=THETA):
    """Value and gradient of ``be`` against the float64 reference, with the tolerance rules."""
    parts = backend_parts(be, X3, T, sigma, theta)
    H, G = parts.H, parts.G
    ref = backend_parts(reference, np.asarray(X3, dtype=np.float64), T, sigma, theta)
    H_ref, G_ref = ref.H, ref.G
    assert H.dtype == np.float64 and H.shape == X3.shape[:1]
    assert G.dtype == X3.dtype and G.shape == X3.shape
    if X3.dtype == np.float64:
        # Soft counts relative to C = 1 + C0, the quantity the estimator uses.
        np.testing.assert_allclose(parts.C0, ref.C0, rtol=F64_RTOL, atol=F64_RTOL)
        assert_float64_close(H, G, H_ref, G_ref)
    else:
        # The reference's own float32 result is what rounding S alone costs:
        # it may not excuse itself.
        rounding = ((0.0, 0.0) if be is reference
                    else (lambda: float32_rounding_cost(X3, T, sigma, theta)))
        assert_float32_close(H, G, H_ref, G_ref, X3.shape[1], rounding)
    return H, G


# ----------------------------------------------------------------------------- the protocol

def test_import_loads_no_backend_dependency():
    # Backends are imported when first used: importing kdentropy on a machine
    # without a GPU must not load the GPU stack (seconds, and it may be broken).
    code = ("import sys, kdentropy\n"
            "print(sorted(m for m in ('numba.cuda', 'numba_cuda_mlir', 'cupy', "
            "'kdentropy.backends.cuda') if m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_meets_the_protocol(request, be):
    name = request.node.callspec.params["be"]
    assert isinstance(be, backends.Backend)
    assert be.NAME == name and backends.REGISTRY[name] == be.__name__
    assert isinstance(be.DEVICE_ARRAYS, bool) and isinstance(be.BLOCK_PRIMITIVES, bool)
    assert be.unavailable_reason() is None
    if be.BLOCK_PRIMITIVES:
        assert callable(be.block_soft_counts) and callable(be.block_weighted_grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_output_types_and_shapes(be, rng, dtype):
    X3 = batch(rng, 4, 9, 5, dtype=dtype)
    S = be.soft_patterns(X3, T, THETA)  # opaque: a backend may wrap its array
    assert to_host(S).dtype == dtype and to_host(S).shape == X3.shape
    C0, V = be.soft_counts_and_grad(S, SIGMA, None)
    assert V is None
    assert isinstance(C0, np.ndarray) and C0.dtype == np.float64 and C0.shape == (4, 9)
    C0, V = be.soft_counts_and_grad(S, SIGMA, _estimator.row_coefficients)
    assert isinstance(C0, np.ndarray) and C0.dtype == np.float64 and C0.shape == (4, 9)
    assert V.shape == X3.shape
    G = to_host(be.input_grad(S, V, T, 0.5, (2, 2, 9, 5)))
    assert G.dtype == dtype and G.shape == (2, 2, 9, 5)
    assert np.isfinite(G).all() and np.abs(G).max() > 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_soft_patterns(be, rng, dtype):
    X3 = (4 * rng.standard_normal((3, 5, 7))).astype(dtype)
    S = to_host(be.soft_patterns(X3, 3.0, 0.2))
    assert S.dtype == dtype and S.shape == X3.shape
    # Computed in float64 and rounded once: within one rounding of the exact sigmoid.
    exact = 1.0 / (1.0 + np.exp(-3.0 * (X3.astype(np.float64) - 0.2)))
    np.testing.assert_allclose(S, exact, rtol=1e-15 if dtype == np.float64 else 2.0**-23, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_soft_patterns_saturate_without_warnings(be, dtype):
    big = np.array([[[-np.finfo(dtype).max, -1e30, 1e30, np.finfo(dtype).max]]], dtype=dtype)
    with warnings.catch_warnings():
        # The simulator runs kernels on NumPy scalars, which warn where a GPU does not.
        warnings.simplefilter("ignore" if simulated(be) else "error")
        S = to_host(be.soft_patterns(big, 10.0, 0.5))
    np.testing.assert_array_equal(S, np.array([[[0.0, 0.0, 1.0, 1.0]]], dtype=dtype))


# ----------------------------------------------------------------------------- accuracy

@pytest.mark.parametrize("T, sigma, theta", [(10.0, 0.5, 0.5), (3.0, 1.2, 0.3), (25.0, 0.3, 0.6)])
@pytest.mark.parametrize("G, N, D", [(1, 2, 1), (1, 3, 4), (2, 5, 3), (1, 7, 2)])
def test_matches_loop_oracle(be, rng, G, N, D, T, sigma, theta):
    X3 = batch(rng, G, N, D)
    parts = backend_parts(be, X3, T, sigma, theta)
    for g in range(G):
        S, C0, H, dX = naive.entropy_and_grad(X3[g], T, sigma, theta)
        np.testing.assert_allclose(parts.S[g], S, rtol=F64_RTOL, atol=0)
        np.testing.assert_allclose(parts.C0[g], C0, rtol=F64_RTOL, atol=1e-300)
        assert parts.H[g] == pytest.approx(H, rel=F64_RTOL, abs=1e-15)
        assert norm_rel(parts.G[g], dX) <= F64_RTOL


SHAPES = [(1, 2, 1), (1, 3, 4), (2, 9, 5), (1, 17, 5), (3, 33, 17), (1, 65, 16), (1, 257, 37)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["clustered", "uniform"])
@pytest.mark.parametrize("G, N, D", SHAPES)
def test_matches_reference(be, rng, G, N, D, kind, dtype):
    if dtype == np.float64:
        skip_if_reference(be)
    if N > SIMULATOR_ROWS:
        skip_if_simulated(be)
    check_against_reference(be, batch(rng, G, N, D, kind, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_tile_edges(be, rng, dtype):
    # Just over one 1024-row tile (a ragged second tile), odd D.
    if dtype == np.float64:
        skip_if_reference(be)
    skip_if_simulated(be)
    check_against_reference(be, batch(rng, 1, 1030, 7, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T, sigma, theta", [(1.0, 2.0, 0.5), (25.0, 0.2, 0.3), (4.0, 0.05, 0.5)])
def test_matches_reference_across_parameters(be, rng, dtype, T, sigma, theta):
    # From broad kernels (every pattern a neighbour) to narrow ones (K underflows).
    if dtype == np.float64:
        skip_if_reference(be)
    check_against_reference(be, batch(rng, 1, rows(be, 90), 11, dtype=dtype),
                            T, sigma, theta)


def test_float32_tight_clusters_at_scale(be, rng):
    # Where autograd frameworks lose the float32 gradient entirely: each
    # pattern has ~N/8 close neighbours, so the gradient is a small difference
    # of large weighted sums.
    skip_if_simulated(be)
    N, D = 2048, 1024
    X3 = clustered(rng, (1, N), D, n_proto=8, noise=0.05, dtype=np.float32)
    H, _ = check_against_reference(be, X3)
    assert 0.5 < H[0] < math.log(N) - 0.5  # neither collapsed nor all distinct


def test_float32_nearly_identical_rows(be, rng):
    # Rows 1e-4 apart: rounding S to float32 alone moves the gradient by more
    # than 1e-4, so the float32 bar becomes a few times that cost.
    if be is reference:
        pytest.skip("the reference's float32 error is the rounding cost itself")
    X3 = clustered(rng, (1, rows(be, 64)), 16, n_proto=1, noise=1e-4, dtype=np.float32)
    rounding = float32_rounding_cost(X3, T, SIGMA, THETA)
    assert rounding[1] > F32_GRAD_NORM_RTOL  # the rule is what is tested here
    H, G = backend_value_and_grad(be, X3, T, SIGMA, THETA)
    H_ref, G_ref = backend_value_and_grad(reference, X3.astype(np.float64), T, SIGMA, THETA)
    assert_float32_close(H, G, H_ref, G_ref, X3.shape[1], rounding)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_equals_each_population(be, rng, dtype):
    X3 = batch(rng, 4, rows(be, 40), 6, dtype=dtype)
    H, G = backend_value_and_grad(be, X3, T, SIGMA, THETA)
    assert H.shape == (4,) and G.shape == X3.shape
    for p in range(4):
        H1, G1 = backend_value_and_grad(be, np.ascontiguousarray(X3[p:p + 1]), T, SIGMA, THETA)
        if dtype == np.float64:
            assert_float64_close(H[p], G[p], H1[0], G1[0], rtol=1e-12)
        else:
            assert_float32_close(H[p], G[p], H1[0], G1[0], X3.shape[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_value_only_equals_value_with_gradient(be, rng, dtype):
    X3 = batch(rng, 2, rows(be, 70), 8, dtype=dtype)
    value_only = backend_parts(be, X3, T, SIGMA, THETA, want_grad=False)
    assert value_only.V is None and value_only.G is None
    with_grad = backend_parts(be, X3, T, SIGMA, THETA, want_grad=True)
    np.testing.assert_array_equal(value_only.C0, with_grad.C0)
    np.testing.assert_array_equal(value_only.H, with_grad.H)


@pytest.mark.parametrize("T, sigma, theta", [(3.0, 0.7, 0.5), (10.0, 0.5, 0.3)])
def test_gradient_matches_central_differences(be, rng, T, sigma, theta):
    X3 = batch(rng, 1, rows(be, 10), 4)
    X3[0, 0] += 0.05 * rng.standard_normal(4)
    _, G = backend_value_and_grad(be, X3, T, sigma, theta)
    G_fd = central_differences(
        lambda Y: backend_value_and_grad(be, Y, T, sigma, theta, want_grad=False)[0][0], X3)
    assert np.abs(G).max() > 1e-3  # not vacuous
    np.testing.assert_allclose(G, G_fd, rtol=1e-6, atol=1e-9)


def test_gradient_in_S_sums_to_zero(be, rng):
    # H is invariant to shifting every S_i by the same vector: sum_i dH/dS_i = 0.
    parts = backend_parts(be, batch(rng, 2, rows(be, 60), 9), T, SIGMA, THETA)
    V = np.asarray(parts.V, dtype=np.float64)
    assert np.abs(V).max() > 0
    assert np.all(np.abs(V.sum(axis=1)) <= 1e-12 * np.abs(V).sum(axis=1))


# ----------------------------------------------------------------------------- determinism, inputs

@pytest.mark.parametrize("dtype", DTYPES)
def test_repeated_calls_are_bit_identical(be, rng, dtype):
    X3 = batch(rng, 2, rows(be, 300), 12, dtype=dtype)
    first = backend_parts(be, X3, T, SIGMA, THETA)
    second = backend_parts(be, X3.copy(), T, SIGMA, THETA)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_are_not_modified(be, rng, dtype):
    X3 = batch(rng, 2, rows(be, 30), 7, dtype=dtype)
    X_before = X3.copy()
    S = be.soft_patterns(X3, T, THETA)
    S_before = to_host(S).copy()
    coefficients_seen = []

    def coefficients(C0):
        coefficients_seen.append(np.array(C0, copy=True))
        return _estimator.row_coefficients(C0)

    C0, V = be.soft_counts_and_grad(S, SIGMA, coefficients)
    be.input_grad(S, V, T, 0.1, X3.shape)
    np.testing.assert_array_equal(X3, X_before)
    np.testing.assert_array_equal(to_host(S), S_before)
    # The coefficients are asked for once per population, after pass 1.
    assert len(coefficients_seen) in (1, 2)
    np.testing.assert_array_equal(np.concatenate(coefficients_seen).ravel(), C0.ravel())


# ----------------------------------------------------------------------------- block primitives

def block_backend(be):
    if not be.BLOCK_PRIMITIVES:
        pytest.skip(f"backend {be.NAME!r} has no block primitives")
    return be


PAIRS = [("a", "b", False), ("b", "a", False), ("a", "a", True), ("b", "b", True)]


def test_block_primitives_match_loop_oracle(be, rng):
    be = block_backend(be)
    S = naive.soft_patterns(clustered(rng, 9, 3, noise=0.3), T, THETA)
    g = 1.0 / (1.0 + 3 * rng.random(9))
    rows = {"a": slice(0, 4), "b": slice(4, 9)}
    for a, b, same in PAIRS:
        Sa, Sb, ga, gb = S[rows[a]], S[rows[b]], g[rows[a]], g[rows[b]]
        C0 = be.block_soft_counts(Sa, Sb, SIGMA, same)
        np.testing.assert_allclose(C0, naive.block_soft_counts(Sa, Sb, SIGMA, same),
                                   rtol=F64_RTOL, atol=1e-300)
        V = be.block_weighted_grad(Sa, ga, Sb, gb, SIGMA, same)
        assert norm_rel(V, naive.block_weighted_grad(Sa, ga, Sb, gb, SIGMA, same)) <= F64_RTOL


@pytest.mark.parametrize("dtype", DTYPES)
def test_block_primitives_match_reference(be, rng, dtype):
    be = block_backend(be)
    skip_if_reference(be)
    S = reference.soft_patterns(clustered(rng, (1, 70), 9, noise=0.2), T, THETA)[0].astype(dtype)
    g = 1.0 / (1.0 + 5 * rng.random(70))
    S_before, g_before = S.copy(), g.copy()
    rows = {"a": slice(0, 25), "b": slice(25, 70)}
    S64 = S.astype(np.float64)
    for a, b, same in PAIRS:
        sa, sb = rows[a], rows[b]
        C0 = be.block_soft_counts(S[sa], S[sb], SIGMA, same)
        C0_ref = reference.block_soft_counts(S64[sa], S64[sb], SIGMA, same)
        assert C0.dtype == np.float64 and C0.shape == (S[sa].shape[0],)
        V = be.block_weighted_grad(S[sa], g[sa], S[sb], g[sb], SIGMA, same)
        V_ref = reference.block_weighted_grad(S64[sa], g[sa], S64[sb], g[sb], SIGMA, same)
        assert V.dtype == np.float64 and V.shape == S[sa].shape
        if dtype == np.float64:
            np.testing.assert_allclose(C0, C0_ref, rtol=F64_RTOL, atol=1e-300)
            assert norm_rel(V, V_ref) <= F64_RTOL
        else:
            # Soft counts are sums of positive terms: relative 1e-5; the
            # weighted sums follow the float32 gradient rule.
            np.testing.assert_allclose(C0, C0_ref, rtol=1e-5, atol=1e-300)
            assert norm_rel(V, V_ref) <= 1e-4
    np.testing.assert_array_equal(S, S_before)
    np.testing.assert_array_equal(g, g_before)


def test_row_shards_reproduce_the_whole(be, rng):
    # What the MPI layer does: shard the rows, sum the block counts and sums.
    be = block_backend(be)
    X3 = batch(rng, 1, 97, 6)
    whole = backend_parts(be, X3, T, SIGMA, THETA)
    S = whole.S[0]
    shards = [slice(0, 30), slice(30, 31), slice(31, 97)]
    C0 = np.concatenate([sum(be.block_soft_counts(S[a], S[b], SIGMA, a == b) for b in shards)
                         for a in shards])
    g = _estimator.row_coefficients(C0)
    V = np.concatenate([sum(be.block_weighted_grad(S[a], g[a], S[b], g[b], SIGMA, a == b)
                            for b in shards) for a in shards])
    np.testing.assert_allclose(C0, whole.C0[0], rtol=1e-12)
    assert norm_rel(V, whole.V[0]) <= 1e-12
    assert _estimator.entropy_from_counts(C0) == pytest.approx(whole.H[0], rel=1e-12)
