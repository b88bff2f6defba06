"""The cell system: roll-out of N noisy runs and back-propagation through time.

D cells, arranged by a :class:`~kdentropy.cells.topology.Topology` (a line, a
ring, a 2-D grid or a torus), each hold C = 1 + ``hidden_channels`` states in
[0, 1]. Channel 0 is the visible pattern that is scored; the hidden channels
are free for the cells to signal with. At every step each cell feeds all
channels of its neighbourhood (and, optionally, its position features) to one
shared small MLP with C sigmoid outputs ``s``, and moves towards them::

    x_{t+1} = clip(x_t + rate * (s - x_t) + noise * xi_t, 0, 1)
    s = sigmoid(MLP(features_i(x_t)))

With ``rate = 1`` this is ``clip(s + noise * xi_t, 0, 1)``, computed as such
(``x_t + (s - x_t)`` would round differently): the plain replacement update,
bit for bit. Runs start from independent uniform random states on every
channel and see independent noise on every channel, so a batch of N runs
gives N final patterns ``X`` (N, D) that differ unless the network learnt to
make them agree. :meth:`CellSystem.backward` carries
``dL/dX`` back to the parameter vector.

Two engines compute the same numbers (to rounding): ``"numpy"``, the readable
reference built from :mod:`kdentropy.nn` and the topology's gather, and
``"numba"`` (:mod:`kdentropy.cells._kernels`), which fuses the whole roll-out
and its backward pass into two compiled loops over runs and cells. ``"auto"``
uses Numba where it applies (one hidden layer).

The last layer of the MLP starts with weights scaled by
``output_init_scale`` (default 0.1): the untrained update is close to
``sigmoid(0) = 1/2`` everywhere, so before training the patterns are decided
by the noise (maximal irreproducibility, about log N for N runs) and the
sigmoid is not saturated, so gradients flow from the first iteration.

Examples
--------
>>> import numpy as np
>>> from kdentropy.cells import CellSystem
>>> system = CellSystem(n_cells=8, steps=4, hidden=(6,))
>>> params = system.init(np.random.default_rng(0))
>>> X = system.run(params, np.random.default_rng(1), n_runs=5)
>>> X.shape, bool(((0 <= X) & (X <= 1)).all())
((5, 8), True)
>>> grid = CellSystem((6, 6), topology="grid", hidden_channels=3, position="none", rate=0.5)
>>> grid.n_channels, grid.n_features, grid.run(grid.init(np.random.default_rng(0)),
...                                             np.random.default_rng(1), 5).shape
(4, 36, (5, 36))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .. import _validation
from ..nn import MLP
from . import _kernels
from .loss import ReproducibilityLoss
from .topology import Topology, make_topology

__all__ = ["CellSystem", "Rollout", "ENGINES"]

#: Names accepted for ``CellSystem(engine=...)``.
ENGINES = ("auto", "numpy", "numba")


@dataclasses.dataclass
class Rollout:
    """Everything :meth:`CellSystem.backward` needs from one roll-out.

    Attributes
    ----------
    final : ndarray, shape (N, D, C)
        The final states ``x_T``, all channels.
    caches : list or tuple
        What the engine's backward pass needs (empty without caches).
    trajectory : ndarray, shape (steps + 1, N, D, C) or None
        All states, when requested.
    engine : str
        ``"numpy"`` or ``"numba"``: which engine made it.
    """

    final: np.ndarray
    caches: Any
    trajectory: np.ndarray | None = None
    engine: str = "numpy"

    @property
    def visible(self) -> np.ndarray:
        """The scored pattern: channel 0 of the final states, ``(N, D)``."""
        return self.final[:, :, 0]


class CellSystem:
    """Cells on a line, ring, grid or torus, with hidden channels, updated by one shared MLP.

    Parameters
    ----------
    n_cells : int or (int, int), optional
        Number of cells D of a line or ring, or the ``(H, W)`` shape of a
        grid or torus. Default 32.
    steps : int, optional
        Number of update steps per run. Default 16.
    hidden : sequence of int, optional
        Hidden layer widths of the MLP. Default ``(16,)``.
    activation : {"tanh", "relu", "sigmoid", "identity"}, optional
        Hidden nonlinearity. Default ``"tanh"``. The output is always a
        sigmoid, so states stay in [0, 1].
    radius : int, optional
        How far a cell sees along each axis: ``2 radius + 1`` cells on a
        line, a ``(2 radius + 1)^2`` block on a grid. Default 1.
    topology : {"line", "ring", "grid", "torus"}, optional
        ``"line"`` and ``"grid"`` read state 0 beyond their edges (zero
        padding); ``"ring"`` and ``"torus"`` wrap around. Default ``"line"``.
        See :mod:`kdentropy.cells.topology`.
    position : {"auto", "linear", "sincos", "none"}, optional
        Position inputs per cell: ``"linear"`` gives ``(p, 1 - p)`` per axis
        with p the coordinate scaled to [0, 1], ``"sincos"`` gives ``(sin,
        cos)`` of the angle ``2 pi i / D`` per axis (natural when the edges
        wrap). ``"auto"`` (default) is ``"linear"`` on a line or grid and
        ``"sincos"`` on a ring or torus; ``"none"`` leaves them out, which
        makes the rule translation-invariant: only the edges (and hidden
        channels carrying their information inwards) can fix a pattern.
    noise : float, optional
        Standard deviation of the Gaussian noise added to every channel of
        every state after every step (before clipping to [0, 1]), in
        ``[0, 10]``. Default 0.05.
    output_init_scale : float, optional
        Factor applied to the last layer's initial weights by :meth:`init`.
        Default 0.1 (see the module docstring); 1 gives plain Glorot.
    hidden_channels : int, optional
        Hidden state channels k per cell (>= 0); the state has ``1 + k``
        channels. Default 0.
    rate : float, optional
        Fraction of the way each state moves towards the network's output
        per step, in ``(0, 1]``. Default 1 (the state is replaced).
    engine : {"auto", "numpy", "numba"}, optional
        How roll-out and back-propagation are computed (same numbers to
        rounding). ``"auto"`` (default) is ``"numba"`` for one hidden layer,
        else ``"numpy"``.

    Attributes
    ----------
    layout : Topology
        The arrangement of the cells (``topology`` is its name).
    net : kdentropy.nn.MLP
        The update rule; ``n_params`` is its parameter count.
    n_channels : int
        C = 1 + ``hidden_channels``.
    """

    def __init__(self, n_cells: int | Sequence[int] = 32, steps: int = 16, *,
                 hidden: Sequence[int] = (16,), activation: str = "tanh", radius: int = 1,
                 topology: str = "line", position: str = "auto", noise: float = 0.05,
                 output_init_scale: float = 0.1, hidden_channels: int = 0, rate: float = 1.0,
                 engine: str = "auto") -> None:
        # Sizes are capped (MAX_ELEMENTS) so that an absurd one is a ValueError here,
        # not a MemoryError from the first array it sizes.
        self.steps = _validation.size(steps, "steps", 1)
        self.hidden_channels = _validation.size(hidden_channels, "hidden_channels", 0)
        self.n_channels = 1 + self.hidden_channels
        # The topology checks the shape (an int for 1-D, (H, W) for 2-D).
        self.layout: Topology = make_topology(topology, n_cells, radius, position,
                                              self.n_channels)
        self.n_cells = self.layout.n_cells
        self.shape = self.layout.shape
        # States live in [0, 1]: noise beyond NOISE_MAX adds nothing but overflow risk.
        self.noise = _validation.bounded(noise, "noise", 0.0, _validation.NOISE_MAX)
        self.rate = _validation.bounded(rate, "rate", 0.0, 1.0, low_open=True)
        self.output_init_scale = _validation.nonnegative(output_init_scale, "output_init_scale")
        self.hidden = _validation.sizes(hidden, "hidden")
        self.net = MLP([self.layout.n_features, *self.hidden, self.n_channels],
                       activation=activation, output_activation="sigmoid")
        _validation.element_budget([("n_params", self.net.n_params)], "the parameter vector")
        self.activation = self.net.activation
        self.n_params = self.net.n_params
        engine = _validation.choice(engine, "engine", ENGINES)
        if engine == "numba" and not _kernels.supports(self.net):
            raise ValueError("engine 'numba' needs an MLP with exactly one hidden layer; "
                             f"got hidden={self.hidden}")
        self.engine_requested = engine
        self.engine = ("numba" if _kernels.supports(self.net) else "numpy") \
            if engine == "auto" else engine

    @property
    def topology(self) -> str:
        """The name of the cells' arrangement (``"line"``, ``"ring"``, ``"grid"``, ``"torus"``)."""
        return self.layout.NAME

    @property
    def radius(self) -> int:
        """How far a cell sees along each axis."""
        return self.layout.radius

    @property
    def n_features(self) -> int:
        """Inputs of the update rule per cell: all channels of the neighbourhood, then position."""
        return self.layout.n_features

    @property
    def position(self) -> str:
        """The kind of position features (``"auto"`` resolved)."""
        return self.layout.position

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"CellSystem({args})"

    def describe(self) -> str:
        """A one-line description: topology and size, channels, steps, rule and noise."""
        size = "x".join(map(str, self.shape))
        where = f"{self.topology} of {size} cells"
        pos = "no position" if self.position == "none" else f"{self.position} position"
        hid = "x".join(map(str, self.hidden))
        return (f"{where}, 1+{self.hidden_channels} channels, {pos}, {self.steps} steps, "
                f"{hid} {self.activation} MLP, rate {self.rate:g}, noise {self.noise:g}")

    def get_config(self) -> dict:
        """JSON-serialisable constructor arguments; ``CellSystem(**config)`` rebuilds it."""
        n_cells: int | list[int] = self.shape[0] if len(self.shape) == 1 else list(self.shape)
        return {"n_cells": n_cells, "steps": self.steps, "hidden": list(self.hidden),
                "activation": self.activation, "radius": self.radius,
                "topology": self.topology, "position": self.position, "noise": self.noise,
                "output_init_scale": self.output_init_scale,
                "hidden_channels": self.hidden_channels, "rate": self.rate,
                "engine": self.engine_requested}

    # -- parameters and inputs ------------------------------------------------

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """A freshly initialised parameter vector.

        Glorot (tanh, sigmoid) or He (relu) weights from ``rng`` (see
        :meth:`kdentropy.nn.MLP.init`), the last layer's scaled by
        ``output_init_scale``.

        Parameters
        ----------
        rng : numpy.random.Generator

        Returns
        -------
        params : ndarray of float64, shape (n_params,)
        """
        params = self.net.init(rng)
        W, _ = self.net.layers[-1].views(params)
        W *= self.output_init_scale
        return params

    def sample_inputs(self, rng: np.random.Generator, n_runs: int
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Random initial states and noise for ``n_runs`` runs.

        Parameters
        ----------
        rng : numpy.random.Generator
        n_runs : int
            Batch size N (>= 1).

        Returns
        -------
        x0 : ndarray, shape (N, D, C)
            Initial states, uniform on [0, 1), every channel.
        xi : ndarray, shape (steps, N, D, C)
            Standard normal draws; the roll-out scales them by ``noise``.
            Drawn even when ``noise == 0`` so that the random stream does not
            depend on it. (With one channel these are the draws of ``(N, D)``
            arrays, in the same order.)
        """
        _validation.generator(rng)
        n_runs = _validation.size(n_runs, "n_runs", 1)
        shape = (n_runs, self.n_cells, self.n_channels)
        _validation.element_budget([("steps", self.steps), ("n_runs", n_runs),
                                    ("cells", self.n_cells), ("channels", self.n_channels)],
                                   "the noise draws")
        x0 = rng.random(shape)
        xi = rng.standard_normal((self.steps,) + shape)
        return x0, xi

    def check_params(self, params: ArrayLike) -> np.ndarray:
        """``params`` as a float64 vector of length :attr:`n_params`, or a TypeError/ValueError.

        Parameters
        ----------
        params : array_like

        Returns
        -------
        ndarray of float64, shape (n_params,)
            ``params`` itself when it already is one (copy before changing it).
        """
        return _validation.float_vector(params, "params", self.n_params)

    def _check_inputs(self, x0: ArrayLike, xi: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        x0, xi = _validation.real_array(x0, "x0"), _validation.real_array(xi, "xi")
        D, C = self.n_cells, self.n_channels
        if x0.ndim != 3 or x0.shape[1:] != (D, C) or x0.shape[0] < 1:
            raise ValueError(f"x0 must have shape (N, {D}, {C}) with N >= 1; got {x0.shape}")
        if xi.shape != (self.steps,) + x0.shape:
            raise ValueError(f"xi must have shape {(self.steps,) + x0.shape}; got {xi.shape}")
        if not (np.isfinite(x0).all() and np.isfinite(xi).all()):
            raise ValueError("x0 and xi must be finite")
        return x0, xi

    # -- roll-out and back-propagation through time --------------------------

    def rollout(self, params: ArrayLike, x0: ArrayLike, xi: ArrayLike, *,
                keep_caches: bool = True, keep_trajectory: bool = False,
                engine: str | None = None) -> Rollout:
        """Run N copies of the system for ``steps`` steps.

        Parameters
        ----------
        params : array_like, shape (n_params,)
        x0 : array_like, shape (N, D, C)
            Initial states.
        xi : array_like, shape (steps, N, D, C)
            Standard normal noise draws (scaled by ``noise`` here).
        keep_caches : bool, optional
            Keep what :meth:`backward` needs (default True). Turn off for
            evaluation-only runs to save memory.
        keep_trajectory : bool, optional
            Also return every intermediate state. Default False.
        engine : {"numpy", "numba"}, optional
            Override :attr:`engine` for this call.

        Returns
        -------
        Rollout
        """
        params = self.check_params(params)
        x0, xi = self._check_inputs(x0, xi)
        return self._rollout(params, x0, xi, keep_caches, keep_trajectory,
                             self._engine(engine))

    def _engine(self, engine: str | None) -> str:
        if engine is None:
            return self.engine
        engine = _validation.choice(engine, "engine", ENGINES[1:])
        if engine == "numba" and not _kernels.supports(self.net):
            raise ValueError("engine 'numba' needs an MLP with exactly one hidden layer")
        return engine

    def _rollout(self, params: np.ndarray, x0: np.ndarray, xi: np.ndarray,
                 keep_caches: bool, keep_trajectory: bool, engine: str) -> Rollout:
        """:meth:`rollout` on validated inputs."""
        if engine == "numba":
            final, traj, cache = _kernels.rollout(self, params, x0, xi, keep_caches,
                                                  keep_trajectory)
            return Rollout(final=final, caches=cache if keep_caches else (), trajectory=traj,
                           engine="numba")
        x = x0.copy()
        caches: list[Any] = []
        traj = [x] if keep_trajectory else []
        rate = self.rate
        for t in range(self.steps):
            s, cache = self.net.forward_unchecked(params, self.layout.features(x))
            # rate 1 uses s itself: x + (s - x) would round differently.
            pre = s if rate == 1.0 else x + rate * (s - x)
            if self.noise > 0.0:
                pre = pre + self.noise * xi[t]
                # Clipping keeps states in [0, 1]; clipped cells pass no gradient.
                mask = (pre > 0.0) & (pre < 1.0)
                x = np.clip(pre, 0.0, 1.0)
            else:
                mask = None  # a convex combination of states in [0, 1] stays inside
                x = pre.copy()
            if keep_caches:
                caches.append((cache, mask))
            if keep_trajectory:
                traj.append(x)
        return Rollout(final=x, caches=caches,
                       trajectory=np.stack(traj) if keep_trajectory else None)

    def backward(self, params: ArrayLike, rollout: Rollout, dfinal: ArrayLike) -> np.ndarray:
        """Back-propagation through time: ``dL/dparams`` from ``dL/d(final states)``.

        Parameters
        ----------
        params : array_like, shape (n_params,)
            The vector given to :meth:`rollout`.
        rollout : Rollout
            From :meth:`rollout` with ``keep_caches=True``.
        dfinal : array_like, shape (N, D, C) or (N, D)
            Gradient of a scalar loss with respect to ``rollout.final``, or,
            as ``(N, D)``, with respect to its visible channel only.

        Returns
        -------
        dparams : ndarray of float64, shape (n_params,)
        """
        params = self.check_params(params)
        if not isinstance(rollout, Rollout):
            raise TypeError(f"rollout must be a Rollout; got {type(rollout).__name__}")
        if len(rollout.caches) != self.steps:
            raise ValueError("rollout has no caches; run it with keep_caches=True")
        g = _validation.real_array(dfinal, "dfinal")
        if g.shape == rollout.final.shape[:2]:
            g = self._visible_gradient(g)
        if g.shape != rollout.final.shape:
            raise ValueError(f"dfinal must have shape {rollout.final.shape} or "
                             f"{rollout.final.shape[:2]}; got {g.shape}")
        return self._backward(params, rollout, g)

    def _visible_gradient(self, dX: np.ndarray) -> np.ndarray:
        """``(N, D, C)`` gradient that is ``dX`` on channel 0 and zero on the hidden ones."""
        g = np.zeros(dX.shape + (self.n_channels,))
        g[:, :, 0] = dX
        return g

    def _backward(self, params: np.ndarray, rollout: Rollout, g: np.ndarray) -> np.ndarray:
        """:meth:`backward` on validated inputs."""
        if rollout.engine == "numba":
            return _kernels.backward(self, params, rollout.caches, g)
        dparams = np.zeros(self.n_params)
        rate = self.rate
        for t in range(self.steps - 1, -1, -1):
            cache, mask = rollout.caches[t]
            gp = g if mask is None else g * mask
            gs = gp if rate == 1.0 else rate * gp
            # dL/dx_0 is not needed (x_0 is data), so the first step skips it.
            dfeat = self.net.backward_into(params, cache, gs, dparams, need_dx=t > 0)
            if t > 0:
                assert dfeat is not None  # need_dx was true
                g = self.layout.features_adjoint(dfeat)
                if rate != 1.0:
                    g += (1.0 - rate) * gp  # the x_t in x_t + rate (s - x_t)
        return dparams

    def run(self, params: ArrayLike, rng: np.random.Generator, n_runs: int, *,
            trajectory: bool = False, all_channels: bool = False) -> np.ndarray:
        """Final patterns (or whole trajectories) of ``n_runs`` fresh random runs.

        Parameters
        ----------
        params : array_like, shape (n_params,)
        rng : numpy.random.Generator
            Source of initial states and noise.
        n_runs : int
        trajectory : bool, optional
            Return all states ``(steps + 1, N, D)`` instead of the final ones.
        all_channels : bool, optional
            Keep every channel (a trailing axis C) rather than the visible one.

        Returns
        -------
        ndarray of float64, shape (N, D) or (steps + 1, N, D), with a trailing
        axis C when ``all_channels``
        """
        x0, xi = self.sample_inputs(rng, n_runs)
        out = self.rollout(params, x0, xi, keep_caches=False, keep_trajectory=trajectory)
        X = out.trajectory if out.trajectory is not None else out.final
        return X if all_channels else X[..., 0]

    def loss_and_grad(self, params: ArrayLike, x0: ArrayLike, xi: ArrayLike,
                      loss: ReproducibilityLoss | None = None, *,
                      engine: str | None = None) -> tuple[float, np.ndarray, dict]:
        """Loss of the final visible patterns of fixed inputs and its gradient in ``params``.

        With the inputs held fixed the loss is a deterministic function of
        ``params``, so ``lambda p: system.loss_and_grad(p, x0, xi)[:2]`` works
        with ``scipy.optimize.minimize(..., jac=True)``.

        Parameters
        ----------
        params : array_like, shape (n_params,)
        x0, xi : array_like
            As from :meth:`sample_inputs`.
        loss : ReproducibilityLoss, optional
            Default ``ReproducibilityLoss()``; it sees the visible channel
            ``(N, D)`` only.
        engine : {"numpy", "numba"}, optional
            Override :attr:`engine` for this call.

        Returns
        -------
        value : float
        grad : ndarray of float64, shape (n_params,)
        parts : dict
            ``soft_entropy``, ``penalty`` and the final visible patterns
            ``final`` (N, D).
        """
        loss = ReproducibilityLoss() if loss is None else loss
        params = self.check_params(params)
        x0, xi = self._check_inputs(x0, xi)
        # Inputs are checked once here; the loss checks the final states once.
        out = self._rollout(params, x0, xi, True, False, self._engine(engine))
        X = np.ascontiguousarray(out.visible)
        value, dX, parts = loss(X)
        grad = self._backward(params, out, self._visible_gradient(dX))
        parts["final"] = X
        return value, grad, parts
