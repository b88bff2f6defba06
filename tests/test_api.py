"""Public API contract: validation, dtypes, shapes, batching, scaling and the backend switch."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kdentropy as kde
from helpers import central_differences, clustered, fast_backends
from kdentropy import backends

# Too slow under the CUDA simulator; tests/cuda runs the cuda backend there.
BACKENDS = fast_backends()
FUNCS = [kde.soft_entropy, kde.soft_entropy_grad, kde.soft_entropy_and_grad]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("X, exc, match", [
    ([[0.1, np.nan]], ValueError, "NaN"),
    ([[0.1, np.inf], [0.2, 0.3]], ValueError, "infinity"),
    ([0.1, 0.2], ValueError, "at least 2 dimensions"),
    (np.zeros((0, 3)), ValueError, "N >= 1"),
    (np.ones((3, 2), dtype=complex), TypeError, "complex"),
    (np.array([["a", "b"]]), TypeError, "real numbers"),
    ([[1.0, 2.0], [3.0]], TypeError, "array-like"),
])
def test_bad_X(func, backend, X, exc, match):
    with pytest.raises(exc, match=match):
        func(X, backend=backend)


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("kw, exc, match", [
    (dict(temperature=0.0), ValueError, "temperature must be > 0"),
    (dict(temperature=-1.0), ValueError, "temperature"),
    (dict(temperature=np.inf), ValueError, "temperature must be finite"),
    (dict(temperature=np.nan), ValueError, "temperature must be finite"),
    (dict(temperature="hot"), TypeError, "temperature"),
    (dict(sigma=0.0), ValueError, "sigma must be > 0"),
    (dict(sigma=-0.5), ValueError, "sigma"),
    (dict(sigma=np.inf), ValueError, "sigma must be finite"),
    (dict(sigma=1j), TypeError, "sigma"),
    (dict(threshold=np.nan), ValueError, "threshold"),
    (dict(base=1), ValueError, "base must not be 1"),
    (dict(base=-2), ValueError, "base"),
    (dict(normalize="yes"), TypeError, "normalize"),
    (dict(backend="tpu"), ValueError, "unknown backend 'tpu'"),
    (dict(backend=3), TypeError, "backend"),
])
def test_bad_keywords(func, rng, kw, exc, match):
    with pytest.raises(exc, match=match):
        func(rng.random((4, 3)), **kw)


@pytest.mark.parametrize("name", backends.BACKEND_NAMES)
def test_unavailable_backend_is_a_clear_error(rng, name):
    if name in kde.available_backends():
        pytest.skip(f"backend {name!r} can run here")
    with pytest.raises(kde.BackendUnavailableError, match=f"backend '{name}' is not available"):
        kde.soft_entropy(rng.random((4, 3)), backend=name)
    assert issubclass(kde.BackendUnavailableError, ValueError)


# ----------------------------------------------------------------------------- edge cases

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_single_pattern_and_no_cells(backend, rng, dtype):
    H, G = kde.soft_entropy_and_grad(rng.random((1, 5)).astype(dtype), backend=backend)
    assert H == 0.0 and G.shape == (1, 5) and G.dtype == dtype and not G.any()
    H, G = kde.soft_entropy_and_grad(np.zeros((6, 0), dtype), backend=backend)
    assert H == 0.0 and G.shape == (6, 0) and G.dtype == dtype
    H = kde.soft_entropy(np.zeros((6, 0)), normalize=True, backend=backend)
    assert H == 0.0


@pytest.mark.parametrize("dtype, expected", [
    (np.float64, np.float64), (np.float32, np.float32), (np.float16, np.float64),
    (np.int32, np.float64), (np.uint8, np.float64), (np.bool_, np.float64),
])
def test_dtypes(backend, rng, dtype, expected):
    X = (rng.random((10, 6)) * 2).astype(dtype)
    H, G = kde.soft_entropy_and_grad(X, backend=backend)
    assert isinstance(H, np.float64)
    assert G.dtype == expected and G.shape == X.shape
    H64, G64 = kde.soft_entropy_and_grad(X.astype(np.float64), backend=backend)
    assert H == pytest.approx(H64, rel=1e-5)


def test_huge_values_no_warning(backend):
    X = np.array([[1e300, -1e300, 0.5], [-1e300, 1e300, 0.4], [3e38, -3e38, 0.0]])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dtype in (np.float64, np.float32):
            H, G = kde.soft_entropy_and_grad(X.astype(dtype) if dtype is np.float64
                                             else np.clip(X, -3e38, 3e38).astype(dtype),
                                             backend=backend)
            assert np.isfinite(H) and np.isfinite(G).all()


def test_inputs_are_not_modified_and_any_layout_works(backend, rng):
    X = clustered(rng, 20, 9)
    ref_H, ref_G = kde.soft_entropy_and_grad(X, backend=backend)
    F = np.asfortranarray(X)
    R = X.copy()
    R.flags.writeable = False
    wide = np.zeros((20, 18))
    wide[:, ::2] = X
    for Y in (F, R, wide[:, ::2], X.tolist()):
        before = np.array(Y, copy=True)
        H, G = kde.soft_entropy_and_grad(Y, backend=backend)
        np.testing.assert_array_equal(np.asarray(Y), before)
        assert H == pytest.approx(ref_H, rel=1e-12)
        np.testing.assert_allclose(G, ref_G, rtol=1e-10, atol=1e-14)


def test_batched_equals_loop(backend, rng):
    X = np.stack([[clustered(rng, 15, 7) for _ in range(3)] for _ in range(2)])
    H, G = kde.soft_entropy_and_grad(X, 8.0, 0.6, backend=backend)
    assert H.shape == (2, 3) and G.shape == X.shape
    assert np.array_equal(H, kde.soft_entropy(X, 8.0, 0.6, backend=backend))
    for a in range(2):
        for b in range(3):
            h, g = kde.soft_entropy_and_grad(X[a, b], 8.0, 0.6, backend=backend)
            assert H[a, b] == pytest.approx(h, rel=1e-12)
            np.testing.assert_allclose(G[a, b], g, rtol=1e-10, atol=1e-15)


def test_empty_batch_axis(backend):
    H, G = kde.soft_entropy_and_grad(np.zeros((0, 4, 3)), backend=backend)
    assert H.shape == (0,) and G.shape == (0, 4, 3)


def test_value_grad_and_pair_agree(backend, rng):
    X = clustered(rng, 30, 8)
    H, G = kde.soft_entropy_and_grad(X, backend=backend)
    assert H == kde.soft_entropy(X, backend=backend)
    np.testing.assert_array_equal(G, kde.soft_entropy_grad(X, backend=backend))


def test_scaled_gradient_matches_differences(backend, rng):
    # base and normalize scale value and gradient alike.
    X = clustered(rng, 7, 4, noise=0.3)
    kw = dict(base=2, normalize=True, backend=backend)
    G = kde.soft_entropy_grad(X, 5.0, 0.6, **kw)
    G_fd = central_differences(lambda Y: kde.soft_entropy(Y, 5.0, 0.6, **kw), X)
    assert np.abs(G).max() > 1e-4  # not vacuous
    np.testing.assert_allclose(G, G_fd, rtol=1e-6, atol=1e-9)


def test_base_and_normalize_scale(backend, rng):
    X = clustered(rng, 25, 10)
    H, G = kde.soft_entropy_and_grad(X, backend=backend)
    Hb, Gb = kde.soft_entropy_and_grad(X, base=2, normalize=True, backend=backend)
    assert Hb == pytest.approx(H / math.log(2) / 10, rel=1e-14)
    np.testing.assert_allclose(Gb, G / math.log(2) / 10, rtol=1e-14)


# ----------------------------------------------------------------------------- backend switch

def test_backend_precedence(monkeypatch):
    monkeypatch.delenv("KDENTROPY_BACKEND", raising=False)
    kde.set_backend(None)
    assert kde.get_backend() == "auto"
    monkeypatch.setenv("KDENTROPY_BACKEND", "numpy")
    assert kde.get_backend() == "numpy"
    try:
        kde.set_backend("cpu")
        assert kde.get_backend() == "cpu"
        with kde.use_backend("numpy"):
            assert kde.get_backend() == "numpy"
            with kde.use_backend("auto"):
                assert kde.get_backend() == "auto"
            assert kde.get_backend() == "numpy"
        assert kde.get_backend() == "cpu"
    finally:
        kde.set_backend(None)
    monkeypatch.setenv("KDENTROPY_BACKEND", "bogus")
    with pytest.raises(ValueError, match="KDENTROPY_BACKEND"):
        kde.get_backend()


def test_keyword_beats_context(monkeypatch, rng):
    # Record which backend each call loads: the keyword wins over the context,
    # the context over set_backend, and "auto" means cpu for host arrays.
    loaded = []
    load = backends.load
    monkeypatch.setattr(backends, "load", lambda name: loaded.append(name) or load(name))
    monkeypatch.delenv("KDENTROPY_BACKEND", raising=False)
    X = rng.random((5, 3))
    try:
        kde.set_backend("numpy")
        with kde.use_backend("cpu"):
            H_kw = kde.soft_entropy(X, backend="numpy")
            H_ctx = kde.soft_entropy(X)
        H_global = kde.soft_entropy(X)
        with kde.use_backend("auto"):
            kde.soft_entropy(X)
    finally:
        kde.set_backend(None)
    assert loaded == ["numpy", "cpu", "numpy", "cpu"]
    assert H_kw == H_global == kde.soft_entropy(X, backend="numpy")
    assert H_ctx == kde.soft_entropy(X, backend="cpu")


def test_keyword_beats_an_unavailable_context(monkeypatch, rng):
    # A context naming a backend that cannot run here fails only the calls
    # that use it.
    unavailable = [b for b in backends.BACKEND_NAMES if b not in kde.available_backends()]
    if not unavailable:
        pytest.skip("every registered backend can run here")
    X = rng.random((5, 3))
    with kde.use_backend(unavailable[0]):
        assert kde.soft_entropy(X, backend="numpy") == kde.soft_entropy(X, backend="numpy")
        with pytest.raises(kde.BackendUnavailableError, match=unavailable[0]):
            kde.soft_entropy(X)


def test_bad_set_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        kde.set_backend("gpu")
    with pytest.raises(ValueError, match="unknown backend"):
        with kde.use_backend("gpu"):
            pass


def test_available_backends():
    names = kde.available_backends()
    assert names[0] == "numpy" and "cpu" in names
    assert names == [b for b in backends.BACKEND_NAMES if b in names]  # registry order
    for name in backends.BACKEND_NAMES:
        if name not in names:
            with pytest.raises(kde.BackendUnavailableError, match=name):
                backends.load(name)


def test_scipy_minimize_with_jac(rng):
    from scipy.optimize import minimize

    X0 = clustered(rng, 16, 6, noise=0.3)

    def fun(x):
        H, G = kde.soft_entropy_and_grad(x.reshape(X0.shape), 5.0, 0.5, backend="numpy")
        return H, G.ravel()

    res = minimize(fun, X0.ravel(), jac=True, method="L-BFGS-B")
    assert res.fun < 0.5 * kde.soft_entropy(X0, 5.0, 0.5, backend="numpy")
