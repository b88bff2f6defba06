"""The cpu backend's small-batch entry and its two routes (fused passes, BLAS Gram panels).

The small-batch entry must equal the general path bit for bit; each route,
forced explicitly, must meet the accuracy bar against the float64
reference and be deterministic. The route choice is checked from its
inputs (environment, a calibration file written here); nothing is timed
and no calibration is measured.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import (
    assert_float32_close,
    assert_float64_close,
    batch,
    float32_rounding_cost,
    reference_value_and_grad,
)

import kdentropy as kde
from kdentropy import _estimator, backends

pytest.importorskip("numba")
cpu = backends.load("cpu")
from kdentropy.backends.cpu import _calibration, _panels, _routes

T, THETA = 10.0, 0.5


def _general(X3: np.ndarray, sigma: float, factor: float):
    """Counts and gradient through the backend's step-by-step protocol."""
    S = cpu.soft_patterns(X3, T, THETA)
    C0, V = cpu.soft_counts_and_grad(S, sigma, _estimator.row_coefficients)
    return C0, cpu.input_grad(S, V, T, factor, X3.shape)


# ----------------------------------------------------------------------------- small batches

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sigma", [0.5, 0.05, 1e-3])
@pytest.mark.parametrize("G,N,D", [(1, 2, 1), (1, 3, 5), (2, 17, 16), (3, 33, 17),
                                   (1, 64, 32), (2, 75, 9), (1, 130, 33)])
def test_small_batch_is_bit_identical_to_the_general_path(rng, dtype, sigma, G, N, D):
    # Tile edges: N and D just off multiples of the tile width (16 or 32),
    # ragged last tiles, several populations.
    X3 = batch(rng, G, N, D, dtype=dtype)
    done = cpu.small_batch(X3, T, THETA, sigma, 0.75 / (N * sigma * sigma))
    C0, grad = _general(X3, sigma, 0.75 / (N * sigma * sigma))
    if done is None:  # the conditioning rule sent it elsewhere: only at small sigma
        assert sigma < 0.05 or dtype == np.float32
        return
    assert done[1].dtype == dtype and done[1].shape == X3.shape
    np.testing.assert_array_equal(done[0], C0)
    np.testing.assert_array_equal(done[1], grad)
    value_only = cpu.small_batch(X3, T, THETA, sigma, None)
    np.testing.assert_array_equal(value_only[0], C0)
    assert value_only[1] is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_public_small_call_matches_the_step_by_step_result(rng, dtype):
    # The public function takes the one-call entry; shapes with batch axes too.
    X = batch(rng, 2, 64, 32, dtype=dtype).reshape(2, 1, 64, 32)
    H, grad = kde.soft_entropy_and_grad(X, T, 0.5, backend="cpu")
    C0, grad_ref = _general(X.reshape(2, 64, 32), 0.5, _estimator.gradient_factor(64, 0.5))
    np.testing.assert_array_equal(H.reshape(-1), _estimator.entropy_from_counts(C0))
    np.testing.assert_array_equal(grad, grad_ref.reshape(X.shape))
    assert grad.shape == X.shape and grad.dtype == dtype
    assert kde.soft_entropy(X, T, 0.5, backend="cpu").shape == (2, 1)


def test_small_call_rejects_what_the_general_path_rejects():
    X = np.zeros((8, 4))
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        kde.soft_entropy_and_grad(X, backend="cpu")
    assert cpu.small_batch(X, T, THETA, 0.5, 1.0) is None


def test_small_batch_leaves_other_inputs_to_the_general_path():
    assert cpu.small_batch(np.zeros((8, 4), np.int64), T, THETA, 0.5, 1.0) is None
    assert cpu.small_batch(np.zeros((1, 4)), T, THETA, 0.5, 1.0) is None
    big = np.zeros((1024, 64))  # above the serial size: the parallel kernels
    assert cpu.small_batch(big, T, THETA, 0.5, 1.0) is None


# ----------------------------------------------------------------------------- both routes

def _parallel(monkeypatch) -> None:
    """Every batch runs the parallel kernels (routes apply only there)."""
    monkeypatch.setattr(cpu, "_SERIAL_WORK", -1)


def _small_panels(monkeypatch) -> None:
    """Panels of 64 rows x 128 columns and a small kept-K budget: many panels, part kept."""
    monkeypatch.setattr(_panels, "_TILE_ROWS", 64)
    monkeypatch.setattr(_panels, "_PANEL_ENTRIES", 64 * 128)
    monkeypatch.setattr(_panels, "_K_CACHE_BYTES", 64 * 128 * 8 * 3)


def _route_value_and_grad(X3, sigma, route):
    S = cpu.soft_patterns(X3, T, THETA)
    C0, V = cpu.soft_counts_and_grad(S, sigma, _estimator.row_coefficients, route=route)
    N = X3.shape[-2]
    H = _estimator.entropy_from_counts(C0)
    return H, cpu.input_grad(S, V, T, _estimator.gradient_factor(N, sigma), X3.shape)


@pytest.mark.parametrize("route", _routes.ROUTES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sigma", [0.5, 0.05, 1e-3])
def test_each_route_meets_the_accuracy_bar(rng, monkeypatch, route, dtype, sigma):
    _parallel(monkeypatch)
    _small_panels(monkeypatch)
    X3 = batch(rng, 2, 203, 37, dtype=dtype)  # ragged panels and tiles, two populations
    H, G = _route_value_and_grad(X3, sigma, route)
    H_ref, G_ref = reference_value_and_grad(X3, T, sigma, THETA)
    if dtype == np.float64:
        assert_float64_close(H, G, H_ref, G_ref)
    else:
        assert_float32_close(H, G, H_ref, G_ref, 203,
                             lambda: float32_rounding_cost(X3, T, sigma, THETA))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_panels_are_deterministic_across_numba_threads(rng, monkeypatch, dtype):
    numba = pytest.importorskip("numba")
    _parallel(monkeypatch)
    _small_panels(monkeypatch)
    X3 = batch(rng, 1, 300, 40, dtype=dtype)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _route_value_and_grad(X3, 0.5, "panels")
        numba.set_num_threads(before)
        many = _route_value_and_grad(X3, 0.5, "panels")
        again = _route_value_and_grad(X3, 0.5, "panels")
    finally:
        numba.set_num_threads(before)
    for a, b in ((one, many), (many, again)):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_panels_redo_tight_float32_clusters_in_float64(rng, monkeypatch):
    # Tight clusters: the float32 pair sums fail their check and are redone.
    _parallel(monkeypatch)
    protos = rng.integers(0, 2, size=(2, 24)).astype(np.float64)
    X3 = (protos[rng.integers(0, 2, 160)] + 1e-4 * rng.standard_normal((160, 24)))[None]
    X3 = X3.astype(np.float32)
    H, G = _route_value_and_grad(X3, 0.5, "panels")
    H_ref, G_ref = reference_value_and_grad(X3, T, 0.5, THETA)
    assert_float32_close(H, G, H_ref, G_ref, 160,
                         lambda: float32_rounding_cost(X3, T, 0.5, THETA))


def test_unknown_route_is_an_error():
    S = np.zeros((1, 4, 3))
    with pytest.raises(ValueError, match="route"):
        cpu.soft_counts_and_grad(S, 0.5, None, route="blas")


# ----------------------------------------------------------------------------- the choice

def test_serial_batches_take_the_fused_passes(monkeypatch):
    monkeypatch.setenv(_routes.ENV_ROUTE, "panels")
    assert _routes.choose(64, 32, np.float64, parallel=False) == "fused"
    assert _routes.choose(64, 32, np.float64, parallel=True) == "panels"


def test_environment_forces_a_route_and_rejects_others(monkeypatch):
    monkeypatch.setenv(_routes.ENV_ROUTE, "fused")
    assert _routes.choose(2048, 1024, np.float64, True) == "fused"
    monkeypatch.setenv(_routes.ENV_ROUTE, "gemm")
    with pytest.raises(ValueError, match=_routes.ENV_ROUTE):
        _routes.choose(2048, 1024, np.float64, True)


def test_calibration_file_decides_when_it_matches_this_machine(tmp_path, monkeypatch):
    numba = pytest.importorskip("numba")
    monkeypatch.delenv(_routes.ENV_ROUTE, raising=False)
    path = tmp_path / "routes.json"
    monkeypatch.setenv(_calibration.ENV_FILE, str(path))
    monkeypatch.setattr(_calibration, "_TABLE", {})
    threads = numba.get_num_threads()
    # The opposite of the model at both points, so that the file visibly decides.
    points = [{"N": 2048, "D": 1024, "dtype": "float64", "threads": threads,
               "fused_s": 0.1, "panels_s": 0.2},
              {"N": 4096, "D": 64, "dtype": "float64", "threads": threads,
               "fused_s": 0.2, "panels_s": 0.1}]
    monkeypatch.setattr(_routes, "_cpu_vendor", lambda: "GenuineIntel")
    assert _routes.model_route(2048, 1024, np.float64, threads) == "panels"
    assert _routes.model_route(4096, 64, np.float64, threads) == "fused"
    path.write_text(json.dumps({"identity": _calibration.identity(), "points": points}))
    assert _routes.choose(2000, 900, np.float64, True) == "fused"
    assert _routes.choose(5000, 50, np.float64, True) == "panels"
    assert _routes.choose(2048, 1024, np.float32, True) == "fused"  # no float32 point: model
    # Another library version or machine: the file is ignored.
    monkeypatch.setattr(_calibration, "_TABLE", {})
    stale = dict(_calibration.identity(), kdentropy="0.0.0")
    path.write_text(json.dumps({"identity": stale, "points": points}))
    assert _routes.choose(2000, 900, np.float64, True) == "panels"
    monkeypatch.setattr(_calibration, "_TABLE", {})
    path.write_text("not json")
    assert _routes.choose(2000, 900, np.float64, True) == "panels"


def test_model_picks_panels_only_where_they_won():
    assert _routes.model_route(2048, 1024, np.float64, 2, "GenuineIntel") == "panels"
    assert _routes.model_route(2048, 1024, np.float32, 2, "GenuineIntel") == "fused"
    assert _routes.model_route(4096, 256, np.float64, 2, "GenuineIntel") == "fused"
    assert _routes.model_route(16384, 1024, np.float64, 2, "GenuineIntel") == "fused"
    assert _routes.model_route(2048, 1024, np.float64, 2, "AuthenticAMD") == "fused"


def test_calibration_file_location(monkeypatch, tmp_path):
    monkeypatch.delenv(_calibration.ENV_FILE, raising=False)
    monkeypatch.setenv("KDENTROPY_CACHE_DIR", str(tmp_path))
    assert _calibration.cache_file() == tmp_path / "cpu-routes.json"
    monkeypatch.delenv("KDENTROPY_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _calibration.cache_file() == tmp_path / "kdentropy" / "cpu-routes.json"
