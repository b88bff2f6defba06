"""Hostile and extreme input: small kernel widths in float32, the edges of the parameter
range, odd dtypes, warnings, threads and the backend context."""

from __future__ import annotations

import contextvars
import subprocess
import sys
import textwrap
import threading
import tracemalloc
import warnings

import numpy as np
import pytest

import kdentropy as kde
from kdentropy import _validation
from kdentropy.backends import BACKEND_NAMES, available_backends, load

HOST_BACKENDS = [name for name in BACKEND_NAMES if name in available_backends() and name != "cuda"]


def _prototype_batch(rng, N, D, sigma, n_proto=8):
    """Noisy copies of binary prototypes whose soft distances are of order sigma."""
    P = rng.integers(0, 2, size=(n_proto, D)).astype(np.float64)
    return P[rng.integers(0, n_proto, size=N)] + (1.5 * sigma / np.sqrt(D)) * rng.standard_normal((N, D))


def _rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("D", [5, 64, 256, 1024])
@pytest.mark.parametrize("sigma", [1e-3, 1e-2, 0.1, 0.5])
def test_float32_small_sigma_costs_no_more_than_rounding_S(backend, D, sigma):
    """float32 loses at most a small multiple of what rounding S to float32 alone costs.

    The baseline is the float64 computation on S rounded to float32 (the
    numpy backend does exactly that for float32 input); at small sigma the
    rounding alone moves the gradient by up to ~4e-3, so no fixed bar applies.
    """
    rng = np.random.default_rng(int(1e6 * sigma) + D)
    N = 200
    X = _prototype_batch(rng, N, D, sigma)
    H64, G64 = kde.soft_entropy_and_grad(X, 10.0, sigma, backend="numpy")
    HS, GS = kde.soft_entropy_and_grad(X.astype(np.float32), 10.0, sigma, backend="numpy")
    H32, G32 = kde.soft_entropy_and_grad(X.astype(np.float32), 10.0, sigma, backend=backend)
    assert G32.dtype == np.float32 and G32.shape == X.shape
    assert 0.5 < H64 < np.log(N) - 0.5  # the kernel sees neighbours: a non-trivial case
    assert abs(H32 - H64) <= 10 * abs(HS - H64) + 1e-5 * np.log(N)
    assert _rel(G32, G64) <= 10 * _rel(GS, G64) + 1e-5


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("sigma", [1e-3, 1e-6, 1e-12])
def test_float64_small_sigma_matches_direct_differences(backend, sigma):
    """Below the Gram product's range the distances come from direct differences."""
    rng = np.random.default_rng(7)
    X = _prototype_batch(rng, 60, 48, sigma, n_proto=4)
    # The backend's own S: at sigma = 1e-12 another rounding of the sigmoid
    # (1 ulp) would move the distances themselves.
    S = load(backend).soft_patterns(X[None], 10.0, 0.5)[0].astype(np.float64)
    d2 = ((S[:, None, :] - S[None, :, :]) ** 2).sum(-1)
    K = np.exp(-d2 / (2 * sigma**2))
    np.fill_diagonal(K, 0.0)
    C = 1.0 + K.sum(1)
    H_direct = np.log(len(X)) - np.mean(np.log(C))
    H = kde.soft_entropy(X, 10.0, sigma, backend=backend)
    assert 0.5 < H_direct
    assert H == pytest.approx(H_direct, rel=1e-10)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equal_rows_at_the_smallest_sigma(backend, dtype):
    """Duplicated rows count exactly (K = 1) even where 1/sigma^2 overflows float32."""
    X = np.repeat(np.eye(3), 2, axis=0).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        H, G = kde.soft_entropy_and_grad(X, sigma=_validation.SIGMA_MIN, backend=backend)
    assert H == pytest.approx(np.log(3), rel=1e-6)
    assert np.isfinite(G).all() and G.dtype == dtype


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("temperature, sigma", [(_validation.TEMPERATURE_MAX, _validation.SIGMA_MIN),
                                                (_validation.TEMPERATURE_MAX, 0.5),
                                                (1e-30, 1e30), (10.0, 1e-20)])
def test_edges_of_the_parameter_range_are_finite_and_silent(backend, dtype, temperature, sigma):
    rng = np.random.default_rng(0)
    X = rng.random((12, 7)).astype(dtype)
    X[3] = 0.5  # exactly at the threshold: T * 0 must not become NaN
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        H, G = kde.soft_entropy_and_grad(X, temperature, sigma, backend=backend)
    assert np.isfinite(H) and 0.0 <= H <= np.log(12)
    assert not np.isnan(G).any()
    if dtype == np.float64 or temperature < 1e30:
        assert np.isfinite(G).all()  # float32 may saturate to +-inf at T = 1e50


@pytest.mark.parametrize("sigma", [1e-300, 1e-160, 0.99 * _validation.SIGMA_MIN])
def test_too_small_sigma_is_a_value_error_naming_the_limit(sigma):
    with pytest.raises(ValueError, match=r"sigma must be >= 1e-50"):
        kde.soft_entropy(np.eye(3), sigma=sigma)


@pytest.mark.parametrize("temperature", [1e300, 1.01 * _validation.TEMPERATURE_MAX])
def test_too_large_temperature_is_a_value_error_naming_the_limit(temperature):
    with pytest.raises(ValueError, match=r"temperature must be <= 1e\+50"):
        kde.soft_entropy_grad(np.eye(3, dtype=np.float32), temperature=temperature)


@pytest.mark.parametrize("threshold", [1e308, -1e308])
def test_float32_with_a_huge_threshold(threshold):
    X = np.random.default_rng(0).random((16, 5)).astype(np.float32)
    X[0] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        H_soft = kde.soft_entropy(X, threshold=threshold)
        H_hard = kde.hard_entropy(X, threshold=threshold)
        P, c = kde.pattern_counts(X, threshold=threshold)
    assert H_soft == 0.0 and H_hard == 0.0  # every cell on one side
    assert P.tolist() == [[int(threshold < 0)] * 5] and c.tolist() == [16]


@pytest.mark.parametrize("dtype", ["m8[s]", "M8[s]"])
def test_time_dtypes_are_rejected(dtype):
    X = np.ones((3, 2), dtype=dtype)
    for func in (kde.soft_entropy, kde.hard_entropy):
        with pytest.raises(TypeError, match="real numbers"):
            func(X)


@pytest.mark.skipif(np.finfo(np.longdouble).max <= np.finfo(np.float64).max,
                    reason="longdouble is float64 on this platform")
def test_longdouble_beyond_float64_is_a_value_error_without_warnings():
    X = np.full((3, 2), np.longdouble("1e4000"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="float64 range"):
            kde.soft_entropy(X)


def test_hard_entropy_of_bool_input_makes_no_float_copy():
    X = np.random.default_rng(0).random((2048, 512)) < 0.5
    tracemalloc.start()
    try:
        kde.hard_entropy(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The 0/1 result of binarising is one X.nbytes; a float64 copy alone would be 8.
    assert peak < 4 * X.nbytes


def test_concurrent_calls_with_the_workqueue_layer():
    """Four Python threads calling at once must not abort the interpreter."""
    script = textwrap.dedent("""
        import threading, numpy as np, kdentropy as kde
        X = np.random.default_rng(0).random((600, 40))  # above the serial small-batch path
        ref = kde.soft_entropy_and_grad(X, backend="cpu")
        bad = []
        def work():
            for _ in range(3):
                H, G = kde.soft_entropy_and_grad(X, backend="cpu")
                bad.append(H != ref[0] or not np.array_equal(G, ref[1]))
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        import numba
        print(numba.threading_layer(), sum(bad))
    """)
    env = {**__import__("os").environ, "NUMBA_THREADING_LAYER": "workqueue"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["workqueue", "0"]


def test_use_backend_is_per_thread_and_copy_context_carries_it():
    """Documented: a thread started inside use_backend sees the process default,
    unless its target runs in a copy of the caller's context."""
    seen = {}
    with kde.use_backend("numpy"):
        plain = threading.Thread(target=lambda: seen.setdefault("plain", kde.get_backend()))
        ctx = contextvars.copy_context()
        copied = threading.Thread(target=lambda: ctx.run(
            lambda: seen.setdefault("copied", kde.get_backend())))
        plain.start(), copied.start()
        plain.join(), copied.join()
    assert seen == {"plain": "auto", "copied": "numpy"}


def test_use_backend_in_a_suspended_generator_leaks_to_the_caller():
    """Documented: generators share their caller's context, so a generator
    suspended inside ``with use_backend(...)`` changes what the caller sees."""
    def gen():
        with kde.use_backend("numpy"):
            yield kde.get_backend()

    g = gen()
    assert next(g) == "numpy"
    assert kde.get_backend() == "numpy"  # leaked while suspended, as documented
    g.close()
    assert kde.get_backend() == "auto"
