"""Tiny networks: shapes, initialisation, and backward passes against central finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import central_differences, norm_rel

from kdentropy.nn import ACTIVATIONS, MLP, Dense

# Analytic against central-difference gradients (step 1e-6) in float64.
FD_RTOL = 1e-6


def _fd_grads(model, params, x, w):
    """Central differences of L = sum(w * y) with respect to every entry of params and x."""
    def loss(p, xx):
        return float(np.sum(w * model.forward(p, xx)[0]))

    return (central_differences(lambda p: loss(p, x), params),
            central_differences(lambda xx: loss(params, xx), x))


def _random_params(model, rng):
    # Non-zero biases keep relu pre-activations away from exactly 0 (a kink
    # where a central difference is meaningless).
    return model.init(rng) + 0.2 * rng.standard_normal(model.n_params)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_backward_matches_finite_differences(rng, activation):
    layer = Dense(4, 3, activation)
    params = _random_params(layer, rng)
    x = rng.standard_normal((2, 3, 4))           # leading axes are a batch
    w = rng.standard_normal((2, 3, 3))
    y, cache = layer.forward(params, x)
    dx, dparams = layer.backward(params, cache, w)
    assert y.shape == (2, 3, 3) and y.dtype == np.float64
    assert dx.shape == x.shape and dparams.shape == (layer.n_params,)
    assert dx.dtype == np.float64 and dparams.dtype == np.float64
    fd_params, fd_x = _fd_grads(layer, params, x, w)
    # Not a vacuous comparison of two near-zero vectors.
    assert np.linalg.norm(fd_params) > 0.1 and np.linalg.norm(fd_x) > 0.1
    assert norm_rel(dparams, fd_params) < FD_RTOL
    assert norm_rel(dx, fd_x) < FD_RTOL


@pytest.mark.parametrize("activation, output_activation", [
    ("tanh", "identity"), ("relu", "sigmoid"), ("sigmoid", "tanh"), ("identity", "relu"),
])
def test_mlp_backward_matches_finite_differences(rng, activation, output_activation):
    net = MLP([3, 5, 4, 2], activation=activation, output_activation=output_activation)
    params = _random_params(net, rng)
    x = rng.standard_normal((4, 3))
    w = rng.standard_normal((4, 2))
    y, cache = net.forward(params, x)
    dx, dparams = net.backward(params, cache, w)
    fd_params, fd_x = _fd_grads(net, params, x, w)
    assert np.linalg.norm(fd_params) > 0.1 and np.linalg.norm(fd_x) > 0.01
    assert norm_rel(dparams, fd_params) < FD_RTOL
    assert norm_rel(dx, fd_x) < FD_RTOL


def test_dense_inside_a_longer_vector(rng):
    # A layer at an offset reads and writes only its own slice of the model vector.
    layer = Dense(3, 2, "tanh", offset=5)
    params = layer.init(rng)
    assert params.shape == (5 + layer.n_params,) and np.all(params[:5] == 0)
    params[:5] = rng.standard_normal(5)                  # other layers' parameters
    x = rng.standard_normal((4, 3))
    y, cache = layer.forward(np.concatenate([params, [7.0]]), x)   # longer is fine
    W, b = layer.views(params)
    np.testing.assert_allclose(y, np.tanh(x @ W + b), rtol=1e-14, atol=1e-15)
    _, dparams = layer.backward(params, cache, np.ones_like(y))
    assert dparams.shape == params.shape and np.all(dparams[:5] == 0)


def test_mlp_equals_manual_composition(rng):
    net = MLP([3, 6, 2], activation="tanh", output_activation="sigmoid")
    params = net.init(rng)
    (W1, b1), (W2, b2) = net.views(params)
    x = rng.standard_normal((5, 7, 3))
    expected = 1.0 / (1.0 + np.exp(-(np.tanh(x @ W1 + b1) @ W2 + b2)))
    y, _ = net.forward(params, x)
    np.testing.assert_allclose(y, expected, rtol=1e-14, atol=1e-15)
    # Batched evaluation equals row-by-row evaluation.
    rows = np.stack([net.forward(params, xi)[0] for xi in x.reshape(-1, 3)])
    np.testing.assert_allclose(y.reshape(-1, 2), rows, rtol=1e-14)


def test_parameters_live_in_one_flat_vector(rng):
    net = MLP([2, 3, 1])
    assert net.n_params == (2 * 3 + 3) + (3 * 1 + 1)
    params = net.init(rng)
    (W1, b1), (W2, b2) = net.views(params)
    assert W1.shape == (2, 3) and b1.shape == (3,) and W2.shape == (3, 1) and b2.shape == (1,)
    W2[0, 0] = 123.0                             # views write through to params
    assert params[2 * 3 + 3] == 123.0
    assert all(np.shares_memory(v, params) for pair in net.views(params) for v in pair)


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
    params = net.init(rng)
    x = rng.standard_normal((6, 3))
    dy = rng.standard_normal((6, 2))
    copies = params.copy(), x.copy(), dy.copy()
    _, cache = net.forward(params, x)
    net.backward(params, cache, dy)
    for orig, copy in zip((params, x, dy), copies):
        np.testing.assert_array_equal(orig, copy)


@pytest.mark.parametrize("make, exc, match", [
    (lambda: MLP([3]), ValueError, "sizes"),
    (lambda: MLP([3, 0, 1]), ValueError, "sizes"),
    (lambda: MLP([3, 2.5, 1]), TypeError, "integer"),
    (lambda: MLP([3, 1], activation="softplus"), ValueError, "activation"),
    (lambda: MLP([3, 1], activation=None), TypeError, "activation"),
    (lambda: MLP([3, 1], output_activation="gelu"), ValueError, "output_activation"),
    (lambda: Dense(3, 1, init="orthogonal"), ValueError, "init"),
    (lambda: Dense(0, 1), ValueError, "in_features"),
])
def test_bad_construction(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_bad_call_arguments(rng):
    net = MLP([3, 4, 1])
    params = net.init(rng)
    with pytest.raises(ValueError, match="params"):
        net.forward(params[:-1], np.zeros((2, 3)))
    with pytest.raises(TypeError, match="params"):
        net.forward(params.astype(complex), np.zeros((2, 3)))
    with pytest.raises(TypeError, match="params"):
        net.views(params.astype(np.float32))            # views could not write through
    with pytest.raises(ValueError, match="params"):
        Dense(3, 1).forward(np.zeros(3), np.zeros((2, 3)))
    # Integer and boolean inputs are real data: cast, not refused.
    y_int, _ = net.forward(params, np.ones((2, 3), dtype=int))
    np.testing.assert_array_equal(y_int, net.forward(params, np.ones((2, 3)))[0])
    with pytest.raises(ValueError, match="x must have shape"):
        net.forward(params, np.zeros((2, 4)))
    with pytest.raises(TypeError, match="real"):
        net.forward(params, np.zeros((2, 3), dtype=complex))
    with pytest.raises(TypeError, match="Generator"):
        net.init(0)
    _, cache = net.forward(params, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="dy"):
        net.backward(params, cache, np.zeros((3, 1)))


def test_docstring_examples():
    import doctest

    import kdentropy.nn as module
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
