"""Tiny neural networks on one flat parameter vector, with hand-written backward passes.

Every model keeps *all* of its parameters in one flat float64 vector ``params``;
layers only know where their slice of it starts and how it is shaped. So an
optimizer (:mod:`kdentropy.optim`) or ``scipy.optimize.minimize(..., jac=True)``
sees one vector, checkpoints are one array, and no parameter is ever copied
between a "model" object and an optimizer.

A model exposes

``n_params``
    Length of its parameter vector.
``init(rng) -> params``
    A freshly initialised vector (Glorot or He, from a seeded generator).
``forward(params, x) -> (y, cache)``
    ``x`` has shape ``(..., in_features)``; any leading axes are a batch.
``backward(params, cache, dy) -> (dx, dparams)``
    Gradients of a scalar loss with respect to the input and to ``params``,
    given ``dy = dL/dy``; ``dparams`` is a new flat float64 vector.

Examples
--------
>>> import numpy as np
>>> from kdentropy.nn import MLP
>>> net = MLP([3, 8, 1], activation="tanh", output_activation="sigmoid")
>>> params = net.init(np.random.default_rng(0))
>>> y, cache = net.forward(params, np.zeros((5, 7, 3)))
>>> y.shape
(5, 7, 1)
>>> dx, dparams = net.backward(params, cache, np.ones_like(y))
>>> dx.shape, dparams.shape == (net.n_params,)
((5, 7, 3), True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit

from . import _validation

__all__ = ["ACTIVATIONS", "Dense", "MLP"]

#: Names accepted for ``activation`` / ``output_activation``.
ACTIVATIONS = ("tanh", "relu", "sigmoid", "identity")
_INITS = ("auto", "glorot", "he")


def _activate(name: str, z: np.ndarray) -> np.ndarray:
    """Apply an activation in place where possible (``z`` is a fresh temporary)."""
    if name == "tanh":
        # tanh(z) = 1 - 2 / (exp(2z) + 1): twice as fast as np.tanh in float64
        # (measured with NumPy 2.4 on x86-64; the cell roll-out spends most of
        # its time here), with absolute error below 1e-15. Its relative
        # accuracy near z = 0 is worse, which does not matter for a hidden
        # layer feeding a weighted sum. exp overflows to inf for z > 354,
        # giving exactly 1.
        with np.errstate(over="ignore"):
            np.multiply(z, 2.0, out=z)
            np.exp(z, out=z)
        z += 1.0
        np.divide(-2.0, z, out=z)
        z += 1.0
        return z
    if name == "relu":
        return np.maximum(z, 0.0, out=z)
    if name == "sigmoid":
        return expit(z, out=z)
    return z


def _activation_grad(name: str, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``dL/dz`` from the layer output ``y = f(z)`` and ``dL/dy``.

    All four activations have derivatives that are functions of their output,
    so the cache never needs the pre-activation.
    """
    if name == "tanh":
        return dy * (1.0 - y * y)
    if name == "relu":
        # Subgradient 0 at z = 0, the usual convention.
        return dy * (y > 0.0)
    if name == "sigmoid":
        return dy * (y * (1.0 - y))
    return dy


def _check_input(x: ArrayLike, in_features: int) -> np.ndarray:
    x = _validation.real_array(x, "x")
    if x.ndim < 1 or x.shape[-1] != in_features:
        raise ValueError(f"x must have shape (..., {in_features}); got {x.shape}")
    return x


class Dense:
    """Fully connected layer ``y = f(x @ W + b)`` on a slice of a flat vector.

    The layer owns ``params[offset : offset + n_params]``: first ``W`` of shape
    ``(in_features, out_features)`` in row-major order, then ``b`` of shape
    ``(out_features,)``.

    Parameters
    ----------
    in_features, out_features : int
        Input and output widths (>= 1).
    activation : {"tanh", "relu", "sigmoid", "identity"}, optional
        Elementwise nonlinearity ``f``. Default ``"identity"``.
    init : {"auto", "glorot", "he"}, optional
        Weight initialisation: Glorot-uniform (``U(±sqrt(6 / (fan_in +
        fan_out)))``, for tanh/sigmoid/identity) or He-normal
        (``N(0, 2 / fan_in)``, for relu). ``"auto"`` (default) picks He for
        relu and Glorot otherwise. Biases start at zero.
    offset : int, optional
        Where the layer's slice starts in the model's flat vector. Default 0.

    Examples
    --------
    >>> import numpy as np
    >>> layer = Dense(4, 2, activation="relu")
    >>> params = layer.init(np.random.default_rng(0))
    >>> y, cache = layer.forward(params, np.ones((10, 4)))
    >>> y.shape, layer.n_params
    ((10, 2), 10)
    """

    def __init__(self, in_features: int, out_features: int, activation: str = "identity",
                 *, init: str = "auto", offset: int = 0) -> None:
        self.in_features = _validation.integer(in_features, "in_features")
        self.out_features = _validation.integer(out_features, "out_features")
        self.activation = _validation.choice(activation, "activation", ACTIVATIONS)
        init = _validation.choice(init, "init", _INITS)
        self.init_scheme = ("he" if self.activation == "relu" else "glorot") if init == "auto" \
            else init
        self.offset = _validation.integer(offset, "offset", minimum=0)
        self.n_weights = self.in_features * self.out_features
        self.n_params = self.n_weights + self.out_features

    def __repr__(self) -> str:
        return (f"Dense({self.in_features}, {self.out_features}, "
                f"activation={self.activation!r}, init={self.init_scheme!r})")

    def views(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This layer's weights and bias as views into the model's flat vector.

        Parameters
        ----------
        params : ndarray of float64, shape (offset + n_params,) or longer
            The model's whole parameter vector; writing to the views writes
            to it.

        Returns
        -------
        W : ndarray, shape (in_features, out_features)
        b : ndarray, shape (out_features,)
        """
        start = self.offset
        W = params[start:start + self.n_weights].reshape(self.in_features, self.out_features)
        b = params[start + self.n_weights:start + self.n_params]
        return W, b

    def init_into(self, params: np.ndarray, rng: np.random.Generator) -> None:
        """Initialise this layer's slice of ``params`` in place.

        Parameters
        ----------
        params : ndarray of float64
            The model's whole parameter vector; only this layer's slice changes.
        rng : numpy.random.Generator
            Source of the random weights.
        """
        W, b = self.views(params)
        fan_in, fan_out = self.in_features, self.out_features
        if self.init_scheme == "he":
            W[...] = rng.standard_normal(W.shape) * math.sqrt(2.0 / fan_in)
        else:
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            W[...] = rng.uniform(-limit, limit, size=W.shape)
        b[...] = 0.0

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """A new parameter vector of length ``offset + n_params``.

        Entries before ``offset`` (other layers' slices) are zero.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of the random weights.

        Returns
        -------
        params : ndarray of float64, shape (offset + n_params,)
        """
        _validation.generator(rng)
        params = np.zeros(self.offset + self.n_params)
        self.init_into(params, rng)
        return params

    def forward(self, params: ArrayLike, x: ArrayLike) -> tuple[np.ndarray, tuple]:
        """Layer output and the cache that :meth:`backward` needs.

        Parameters
        ----------
        params : array_like, shape (offset + n_params,) or longer
            Flat parameter vector holding this layer's slice.
        x : array_like, shape (..., in_features)

        Returns
        -------
        y : ndarray of float64, shape (..., out_features)
        cache : tuple
            Opaque; pass it to :meth:`backward`.
        """
        params = _validation.float_vector(params, "params", self.offset + self.n_params,
                                          at_least=True)
        x = _check_input(x, self.in_features)
        return self.forward_unchecked(params, x)

    def forward_unchecked(self, params: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, tuple]:
        """:meth:`forward` for arguments already checked (by :class:`MLP`, say).

        Parameters
        ----------
        params, x : ndarray of float64
            As :meth:`forward`.

        Returns
        -------
        y, cache
            As :meth:`forward`.
        """
        W, b = self.views(params)
        # One 2-D GEMM over all leading axes: faster than a stacked 3-D matmul.
        z = (x.reshape(-1, self.in_features) @ W).reshape(x.shape[:-1] + (self.out_features,))
        z += b
        y = _activate(self.activation, z)
        return y, (x, y)

    def backward(self, params: ArrayLike, cache: tuple, dy: ArrayLike
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Gradients with respect to the input and the parameters.

        Parameters
        ----------
        params : array_like
            The vector given to :meth:`forward`.
        cache : tuple
            From :meth:`forward`.
        dy : array_like, shape like ``y``
            ``dL/dy`` for a scalar loss L.

        Returns
        -------
        dx : ndarray of float64, shape like ``x``
        dparams : ndarray of float64, shape like ``params``
            Zero outside this layer's slice.
        """
        params = _validation.float_vector(params, "params", self.offset + self.n_params,
                                          at_least=True)
        dy = np.asarray(dy, dtype=np.float64)
        if dy.shape != cache[1].shape:
            raise ValueError(f"dy must have the shape of y, {cache[1].shape}; got {dy.shape}")
        dparams = np.zeros(params.shape[0])
        dx = self.backward_into(params, cache, dy, dparams)
        return dx, dparams

    def backward_into(self, params: np.ndarray, cache: tuple, dy: np.ndarray,
                       dparams: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """Accumulate ``dL/dparams`` into ``dparams`` and return ``dL/dx``, unchecked.

        Parameters
        ----------
        params, cache, dy : ndarray of float64, tuple, ndarray of float64
            As :meth:`backward`.
        dparams : ndarray of float64, shape like ``params``
            Added to in place (this layer's slice only).
        need_dx : bool, optional
            Return ``dL/dx``; False skips that product. Default True.

        Returns
        -------
        ndarray of float64 or None
            ``dL/dx``, or None when not ``need_dx``.
        """
        x, y = cache
        dz = _activation_grad(self.activation, y, dy)
        # Fold every leading (batch) axis into one so dW is a single GEMM.
        x2 = x.reshape(-1, self.in_features)
        dz2 = dz.reshape(-1, self.out_features)
        dW, db = self.views(dparams)
        dW += x2.T @ dz2
        db += dz2.sum(axis=0)
        if not need_dx:
            return None
        W, _ = self.views(params)
        return (dz2 @ W.T).reshape(x.shape)


class MLP:
    """Multilayer perceptron: a stack of :class:`Dense` layers on one flat vector.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths ``[in_features, hidden..., out_features]`` (at least two
        entries).
    activation : {"tanh", "relu", "sigmoid", "identity"}, optional
        Nonlinearity of the hidden layers. Default ``"tanh"``.
    output_activation : {"tanh", "relu", "sigmoid", "identity"}, optional
        Nonlinearity of the last layer. Default ``"identity"``.
    init : {"auto", "glorot", "he"}, optional
        Weight initialisation of every layer; see :class:`Dense`.

    Attributes
    ----------
    layers : list of Dense
    n_params : int

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.optimize import check_grad
    >>> net = MLP([2, 5, 1])
    >>> params = net.init(np.random.default_rng(1))
    >>> x = np.random.default_rng(2).standard_normal((6, 2))
    >>> def f(t):
    ...     return 0.5 * float(np.sum(net.forward(t, x)[0] ** 2))
    >>> def g(t):
    ...     y, cache = net.forward(t, x)
    ...     return net.backward(t, cache, y)[1]
    >>> bool(check_grad(f, g, params) < 1e-6)
    True
    """

    def __init__(self, sizes: Sequence[int], activation: str = "tanh",
                 output_activation: str = "identity", *, init: str = "auto") -> None:
        try:
            sizes = list(sizes)
        except TypeError:
            raise TypeError(f"sizes must be a sequence of integers; "
                            f"got {type(sizes).__name__}") from None
        if len(sizes) < 2:
            raise ValueError(f"sizes needs at least [in_features, out_features]; got {sizes}")
        self.sizes = [_validation.integer(s, "sizes[%d]" % i) for i, s in enumerate(sizes)]
        self.activation = _validation.choice(activation, "activation", ACTIVATIONS)
        self.output_activation = _validation.choice(output_activation, "output_activation",
                                                    ACTIVATIONS)
        self.layers: list[Dense] = []
        offset = 0
        for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            last = i == len(self.sizes) - 2
            layer = Dense(n_in, n_out, self.output_activation if last else self.activation,
                          init=init, offset=offset)
            self.layers.append(layer)
            offset += layer.n_params
        self.n_params = offset
        self.in_features = self.sizes[0]
        self.out_features = self.sizes[-1]

    def __repr__(self) -> str:
        return (f"MLP({self.sizes}, activation={self.activation!r}, "
                f"output_activation={self.output_activation!r})")

    def views(self, params: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per-layer weights and biases as views into ``params``.

        Parameters
        ----------
        params : ndarray of float64, shape (n_params,)
            Writing to the views writes to it, so it must already be a
            float64 array (no converted copy is made).

        Returns
        -------
        list of (W, b)
            One pair per layer, as :meth:`Dense.views`.
        """
        _validation.inplace_vector(params, "params", writable=False)
        params = _validation.float_vector(params, "params", self.n_params)
        return [layer.views(params) for layer in self.layers]

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """A freshly initialised parameter vector.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of the random weights; the same seed gives the same vector.

        Returns
        -------
        params : ndarray of float64, shape (n_params,)
        """
        _validation.generator(rng)
        params = np.zeros(self.n_params)
        for layer in self.layers:
            layer.init_into(params, rng)
        return params

    def forward(self, params: ArrayLike, x: ArrayLike) -> tuple[np.ndarray, list]:
        """Network output and the cache that :meth:`backward` needs.

        Parameters
        ----------
        params : array_like, shape (n_params,)
        x : array_like, shape (..., in_features)
            Leading axes are a batch; everything is vectorised over them.

        Returns
        -------
        y : ndarray of float64, shape (..., out_features)
        cache : list
            Opaque; pass it to :meth:`backward`.
        """
        params = _validation.float_vector(params, "params", self.n_params)
        x = _check_input(x, self.in_features)
        return self.forward_unchecked(params, x)

    def forward_unchecked(self, params: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, list]:
        """:meth:`forward` without checking its arguments.

        For callers that checked ``params`` and ``x`` once and then call the
        network many times (the cell roll-out, at every step).

        Parameters
        ----------
        params : ndarray of float64, shape (n_params,)
        x : ndarray of float64, shape (..., in_features)

        Returns
        -------
        y, cache
            As :meth:`forward`.
        """
        cache = []
        for layer in self.layers:
            x, c = layer.forward_unchecked(params, x)
            cache.append(c)
        return x, cache

    def backward(self, params: ArrayLike, cache: list, dy: ArrayLike
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Gradients with respect to the input and the parameters.

        Parameters
        ----------
        params : array_like, shape (n_params,)
            The vector given to :meth:`forward`.
        cache : list
            From :meth:`forward`.
        dy : array_like, shape like ``y``
            ``dL/dy`` for a scalar loss L.

        Returns
        -------
        dx : ndarray of float64, shape like ``x``
        dparams : ndarray of float64, shape (n_params,)
        """
        params = _validation.float_vector(params, "params", self.n_params)
        dy = np.asarray(dy, dtype=np.float64)
        if dy.shape != cache[-1][1].shape:
            raise ValueError(f"dy must have the shape of y, {cache[-1][1].shape}; got {dy.shape}")
        dparams = np.zeros(self.n_params)
        dx = self.backward_into(params, cache, dy, dparams)
        return dx, dparams

    def backward_into(self, params: np.ndarray, cache: list, dy: np.ndarray,
                       dparams: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """Accumulate ``dL/dparams`` into ``dparams`` and return ``dL/dx``, unchecked.

        Allocates no parameter-sized array, so back-propagation through many
        steps sums into one vector.

        Parameters
        ----------
        params : ndarray of float64, shape (n_params,)
            The vector given to :meth:`forward_unchecked`.
        cache : list
            From :meth:`forward_unchecked`.
        dy : ndarray of float64, shape like ``y``
        dparams : ndarray of float64, shape (n_params,)
            Added to in place.
        need_dx : bool, optional
            Return ``dL/dx``; False skips the first layer's input product.
            Default True.

        Returns
        -------
        ndarray of float64 or None
            ``dL/dx``, or None when not ``need_dx``.
        """
        for i in range(len(self.layers) - 1, -1, -1):
            dy = self.layers[i].backward_into(params, cache[i], dy, dparams,
                                               need_dx=need_dx or i > 0)
        return dy
