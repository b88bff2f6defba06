"""kdentropy.jax: the soft entropy as a JAX custom_vjp, checked against the NumPy API."""

from __future__ import annotations

import doctest
import math
import subprocess
import sys

import numpy as np
import pytest

import kdentropy as kde

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
import kdentropy.jax as kj  # noqa: E402  (ours: an ImportError fails, never skips)

# A context manager that turns on float64 for its block only (moved out of
# jax.experimental in newer releases).
if hasattr(jax, "enable_x64"):
    enable_x64 = jax.enable_x64
else:
    from jax.experimental import enable_x64


def clustered(rng: np.random.Generator, N: int, D: int, dtype=np.float64) -> np.ndarray:
    """Four random 0/1 prototypes plus noise 0.15: 0 < H < log N and non-vanishing gradients."""
    protos = rng.integers(0, 2, size=(4, D)).astype(np.float64)
    return (protos[rng.integers(0, 4, size=N)] + 0.15 * rng.standard_normal((N, D))).astype(dtype)


def _check_float32(H, g, X: np.ndarray, **kw) -> None:
    """float32 results against float64 ones on the same rounded input: the usual bars."""
    H_ref, G_ref = kde.soft_entropy_and_grad(X.astype(np.float64), **kw)
    N = X.shape[-2]
    assert H.dtype == g.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(H), H_ref, rtol=0, atol=1e-5 * math.log(N))
    g = np.asarray(g, dtype=np.float64)
    assert np.linalg.norm(g - G_ref) <= 1e-4 * np.linalg.norm(G_ref)


def test_grad_under_jit_float32(rng):
    X = clustered(rng, 48, 12, dtype=np.float32)
    kw = dict(temperature=8.0, sigma=0.6, base=2.0)
    f = jax.jit(jax.value_and_grad(lambda x: kj.soft_entropy(x, **kw)))
    H, g = f(jnp.asarray(X))
    _check_float32(H, g, X, **kw)
    H32, G32 = kde.soft_entropy_and_grad(X, **kw)  # exactly the NumPy API's float32 result
    assert float(H) == float(np.float32(H32))
    np.testing.assert_array_equal(np.asarray(g), G32)
    # Without a gradient only the value callback runs; same value.
    assert float(jax.jit(lambda x: kj.soft_entropy(x, **kw))(X)) == float(H)


def test_grad_under_jit_float64_equals_numpy_api(rng):
    X = clustered(rng, 40, 10)
    with enable_x64(True):
        x = jnp.asarray(X)
        assert x.dtype == jnp.float64
        H, g = jax.jit(jax.value_and_grad(kj.soft_entropy))(x)
        assert H.dtype == g.dtype == jnp.float64
    H_ref, G_ref = kde.soft_entropy_and_grad(X)
    assert abs(float(H) - H_ref) <= 1e-12
    np.testing.assert_allclose(np.asarray(g), G_ref, rtol=0, atol=1e-12)


def test_vmap_over_populations_equals_loop(rng):
    X = np.stack([clustered(rng, 32, 8, dtype=np.float32) for _ in range(3)])
    loss = lambda x: kj.soft_entropy(x, normalize=True)  # noqa: E731
    H = jax.jit(jax.vmap(loss))(X)
    G = jax.jit(jax.vmap(jax.grad(loss)))(X)
    for k in range(3):
        assert float(H[k]) == float(loss(X[k]))
        np.testing.assert_array_equal(np.asarray(G[k]), np.asarray(jax.grad(loss)(X[k])))
    _check_float32(H, G, X, normalize=True)


def test_batched_input_and_cotangents(rng):
    X = np.stack([clustered(rng, 20, 5, dtype=np.float32) for _ in range(4)]).reshape(2, 2, 20, 5)
    w = jnp.arange(1.0, 5.0).reshape(2, 2)
    H, vjp = jax.vjp(kj.soft_entropy, jnp.asarray(X))
    assert H.shape == (2, 2)
    (g,) = vjp(w)
    _, G_ref = kde.soft_entropy_and_grad(X.astype(np.float64))
    G_ref = G_ref * np.asarray(w)[..., None, None]
    assert np.linalg.norm(np.asarray(g, np.float64) - G_ref) <= 1e-4 * np.linalg.norm(G_ref)


def test_input_not_modified_and_nan_population(rng):
    X = clustered(rng, 16, 4, dtype=np.float32)
    Xc = X.copy()
    jax.grad(kj.soft_entropy)(X)
    np.testing.assert_array_equal(X, Xc)
    Y = np.stack([X, X])
    Y[1, 3, 2] = np.nan  # one bad population must not poison the other
    H, g = jax.vmap(jax.value_and_grad(kj.soft_entropy))(Y)
    assert np.isnan(H[1]) and np.isnan(np.asarray(g[1])).all()
    assert float(H[0]) == float(kj.soft_entropy(X))


def test_errors_are_raised_at_trace_time():
    with pytest.raises(ValueError, match="2 dimensions"):
        kj.soft_entropy(jnp.zeros(5))
    with pytest.raises(ValueError, match="sigma"):
        kj.soft_entropy(jnp.zeros((4, 3)), sigma=-1.0)
    with pytest.raises(TypeError, match="real"):
        kj.soft_entropy(jnp.zeros((4, 3), dtype=jnp.complex64))
    with pytest.raises(TypeError, match="temperature"):
        jax.jit(lambda x, t: kj.soft_entropy(x, t))(jnp.zeros((4, 3)), 10.0)
    assert kj.soft_entropy(jnp.ones((4, 3), dtype=jnp.int32)).dtype == jnp.float32


def test_missing_jax_names_the_extra():
    # sys.modules["jax"] = None makes "import jax" fail as if it were not installed.
    out = subprocess.run([sys.executable, "-c",
                          "import sys; sys.modules['jax'] = None\nimport kdentropy.jax"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "pip install 'kdentropy[jax]'" in out.stderr


def test_docstring_examples():
    result = doctest.testmod(kj, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
