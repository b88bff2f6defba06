"""Tiny networks: shapes, initialisation, and backward passes against central finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from kdentropy.nn import ACTIVATIONS, MLP, Dense

FD_RTOL = 1e-6
H = 1e-6


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _fd_grads(model, theta, x, w):
    """Central differences of L = sum(w * y) with respect to every entry of theta and x."""
    def loss(t, xx):
        return float(np.sum(w * model.forward(t, xx)[0]))

    g_theta = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = H
        g_theta[i] = (loss(theta + e, x) - loss(theta - e, x)) / (2 * H)
    g_x = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = H
        g_x[idx] = (loss(theta, x + e) - loss(theta, x - e)) / (2 * H)
    return g_theta, g_x


def _random_theta(model, rng):
    # Non-zero biases keep relu pre-activations away from exactly 0 (a kink
    # where a central difference is meaningless).
    return model.init(rng) + 0.2 * rng.standard_normal(model.n_params)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_backward_matches_finite_differences(rng, activation):
    layer = Dense(4, 3, activation)
    theta = _random_theta(layer, rng)
    x = rng.standard_normal((2, 3, 4))           # leading axes are a batch
    w = rng.standard_normal((2, 3, 3))
    y, cache = layer.forward(theta, x)
    dx, dtheta = layer.backward(theta, cache, w)
    assert y.shape == (2, 3, 3) and y.dtype == np.float64
    assert dx.shape == x.shape and dtheta.shape == (layer.n_params,)
    assert dx.dtype == np.float64 and dtheta.dtype == np.float64
    fd_theta, fd_x = _fd_grads(layer, theta, x, w)
    # Not a vacuous comparison of two near-zero vectors.
    assert np.linalg.norm(fd_theta) > 0.1 and np.linalg.norm(fd_x) > 0.1
    assert _rel_err(dtheta, fd_theta) < FD_RTOL
    assert _rel_err(dx, fd_x) < FD_RTOL


@pytest.mark.parametrize("activation, output_activation", [
    ("tanh", "identity"), ("relu", "sigmoid"), ("sigmoid", "tanh"), ("identity", "relu"),
])
def test_mlp_backward_matches_finite_differences(rng, activation, output_activation):
    net = MLP([3, 5, 4, 2], activation=activation, output_activation=output_activation)
    theta = _random_theta(net, rng)
    x = rng.standard_normal((4, 3))
    w = rng.standard_normal((4, 2))
    y, cache = net.forward(theta, x)
    dx, dtheta = net.backward(theta, cache, w)
    fd_theta, fd_x = _fd_grads(net, theta, x, w)
    assert np.linalg.norm(fd_theta) > 0.1 and np.linalg.norm(fd_x) > 0.01
    assert _rel_err(dtheta, fd_theta) < FD_RTOL
    assert _rel_err(dx, fd_x) < FD_RTOL


def test_dense_inside_a_longer_vector(rng):
    # A layer at an offset reads and writes only its own slice of the model vector.
    layer = Dense(3, 2, "tanh", offset=5)
    theta = layer.init(rng)
    assert theta.shape == (5 + layer.n_params,) and np.all(theta[:5] == 0)
    theta[:5] = rng.standard_normal(5)                  # other layers' parameters
    x = rng.standard_normal((4, 3))
    y, cache = layer.forward(np.concatenate([theta, [7.0]]), x)   # longer is fine
    W, b = layer.views(theta)
    np.testing.assert_allclose(y, np.tanh(x @ W + b), rtol=1e-14, atol=1e-15)
    _, dtheta = layer.backward(theta, cache, np.ones_like(y))
    assert dtheta.shape == theta.shape and np.all(dtheta[:5] == 0)


def test_mlp_equals_manual_composition(rng):
    net = MLP([3, 6, 2], activation="tanh", output_activation="sigmoid")
    theta = net.init(rng)
    (W1, b1), (W2, b2) = net.views(theta)
    x = rng.standard_normal((5, 7, 3))
    expected = 1.0 / (1.0 + np.exp(-(np.tanh(x @ W1 + b1) @ W2 + b2)))
    y, _ = net.forward(theta, x)
    np.testing.assert_allclose(y, expected, rtol=1e-14, atol=1e-15)
    # Batched evaluation equals row-by-row evaluation.
    rows = np.stack([net.forward(theta, xi)[0] for xi in x.reshape(-1, 3)])
    np.testing.assert_allclose(y.reshape(-1, 2), rows, rtol=1e-14)


def test_parameters_live_in_one_flat_vector(rng):
    net = MLP([2, 3, 1])
    assert net.n_params == (2 * 3 + 3) + (3 * 1 + 1)
    theta = net.init(rng)
    (W1, b1), (W2, b2) = net.views(theta)
    assert W1.shape == (2, 3) and b1.shape == (3,) and W2.shape == (3, 1) and b2.shape == (1,)
    W2[0, 0] = 123.0                             # views write through to theta
    assert theta[2 * 3 + 3] == 123.0
    assert all(np.shares_memory(v, theta) for pair in net.views(theta) for v in pair)


def test_init_is_seeded_glorot_or_he():
    a = MLP([50, 40, 30], activation="tanh").init(np.random.default_rng(7))
    b = MLP([50, 40, 30], activation="tanh").init(np.random.default_rng(7))
    c = MLP([50, 40, 30], activation="tanh").init(np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    net = MLP([400, 300, 1], activation="tanh")
    (W1, b1), _ = net.views(net.init(np.random.default_rng(0)))
    limit = np.sqrt(6.0 / 700)
    assert np.abs(W1).max() <= limit and np.abs(W1).max() > 0.99 * limit
    assert np.all(b1 == 0)
    net = MLP([400, 300, 1], activation="relu")
    (W1, _), _ = net.views(net.init(np.random.default_rng(0)))
    assert W1.std() == pytest.approx(np.sqrt(2.0 / 400), rel=0.02)


def test_inputs_not_mutated(rng):
    net = MLP([3, 4, 2], activation="relu")
    theta = net.init(rng)
    x = rng.standard_normal((6, 3))
    dy = rng.standard_normal((6, 2))
    copies = theta.copy(), x.copy(), dy.copy()
    _, cache = net.forward(theta, x)
    net.backward(theta, cache, dy)
    for orig, copy in zip((theta, x, dy), copies):
        np.testing.assert_array_equal(orig, copy)


@pytest.mark.parametrize("make, exc, match", [
    (lambda: MLP([3]), ValueError, "sizes"),
    (lambda: MLP([3, 0, 1]), ValueError, "sizes"),
    (lambda: MLP([3, 2.5, 1]), TypeError, "integer"),
    (lambda: MLP([3, 1], activation="softplus"), ValueError, "activation"),
    (lambda: MLP([3, 1], output_activation="gelu"), ValueError, "output_activation"),
    (lambda: Dense(3, 1, init="orthogonal"), ValueError, "init"),
    (lambda: Dense(0, 1), ValueError, "in_features"),
])
def test_bad_construction(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_bad_call_arguments(rng):
    net = MLP([3, 4, 1])
    theta = net.init(rng)
    with pytest.raises(ValueError, match="theta"):
        net.forward(theta[:-1], np.zeros((2, 3)))
    with pytest.raises(TypeError, match="theta"):
        net.forward(theta.astype(complex), np.zeros((2, 3)))
    with pytest.raises(TypeError, match="theta"):
        net.views(theta.astype(np.float32))            # views could not write through
    with pytest.raises(ValueError, match="theta"):
        Dense(3, 1).forward(np.zeros(3), np.zeros((2, 3)))
    # Integer and boolean inputs are real data: cast, not refused.
    y_int, _ = net.forward(theta, np.ones((2, 3), dtype=int))
    np.testing.assert_array_equal(y_int, net.forward(theta, np.ones((2, 3)))[0])
    with pytest.raises(ValueError, match="x must have shape"):
        net.forward(theta, np.zeros((2, 4)))
    with pytest.raises(TypeError, match="real"):
        net.forward(theta, np.zeros((2, 3), dtype=complex))
    with pytest.raises(TypeError, match="Generator"):
        net.init(0)
    _, cache = net.forward(theta, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="dy"):
        net.backward(theta, cache, np.zeros((3, 1)))


def test_docstring_examples():
    import doctest

    import kdentropy.nn as module
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
