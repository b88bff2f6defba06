"""The cell system: roll-out of N noisy runs and back-propagation through time.

D cells, arranged by a :class:`~kdentropy.cells.topology.Topology` (a line or
a ring), each hold a state in [0, 1]. At every step each cell feeds its
neighbourhood and its position features to one shared small MLP, whose
sigmoid output, plus Gaussian noise and clipped to [0, 1], is the cell's next
state::

    x_{t+1} = clip(sigmoid(MLP(features_i(x_t))) + noise * xi_t, 0, 1)

Runs start from independent uniform random states and see independent noise,
so a batch of N runs gives N final patterns ``X`` (N, D) that differ unless
the network learnt to make them agree. :meth:`CellSystem.backward` carries
``dL/dX`` back to the parameter vector.

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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from .. import _validation
from ..nn import MLP
from .loss import ReproducibilityLoss
from .topology import Topology, make_topology

__all__ = ["CellSystem", "Rollout"]


@dataclasses.dataclass
class Rollout:
    """Everything :meth:`CellSystem.backward` needs from one roll-out.

    Attributes
    ----------
    final : ndarray, shape (N, D)
        The final states ``x_T``.
    caches : list
        Per step, the MLP cache and the mask of cells not clipped by the noise.
    trajectory : ndarray, shape (steps + 1, N, D) or None
        All states, when requested.
    """

    final: np.ndarray
    caches: list
    trajectory: np.ndarray | None = None


class CellSystem:
    """A line or ring of cells updated by one shared MLP.

    Parameters
    ----------
    n_cells : int, optional
        Number of cells D. Default 32.
    steps : int, optional
        Number of update steps per run. Default 16.
    hidden : sequence of int, optional
        Hidden layer widths of the MLP. Default ``(16,)``.
    activation : {"tanh", "relu", "sigmoid", "identity"}, optional
        Hidden nonlinearity. Default ``"tanh"``. The output is always a
        sigmoid, so states stay in [0, 1].
    radius : int, optional
        Neighbours on each side a cell sees; the neighbourhood has
        ``2 radius + 1`` cells. Default 1.
    topology : {"line", "ring"}, optional
        ``"line"`` pads beyond the ends with state 0; ``"ring"`` wraps around.
        Default ``"line"``. See :mod:`kdentropy.cells.topology`.
    position : {"auto", "linear", "sincos", "none"}, optional
        Two extra inputs per cell: ``"linear"`` gives ``(p, 1 - p)`` with
        ``p = i / (D - 1)``, ``"sincos"`` gives ``(sin, cos)(2 pi i / D)``
        (natural on a ring). ``"auto"`` (default) is ``"linear"`` on a line
        and ``"sincos"`` on a ring; ``"none"`` leaves them out, which makes
        the dynamics translation-invariant and training much harder.
    noise : float, optional
        Standard deviation of the Gaussian noise added to every state after
        every step (before clipping to [0, 1]). Default 0.05.
    output_init_scale : float, optional
        Factor applied to the last layer's initial weights by :meth:`init`.
        Default 0.1 (see the module docstring); 1 gives plain Glorot.

    Attributes
    ----------
    layout : Topology
        The arrangement of the cells (``topology`` is its name).
    net : kdentropy.nn.MLP
        The update rule; ``n_params`` is its parameter count.
    """

    def __init__(self, n_cells: int = 32, steps: int = 16, *, hidden: Sequence[int] = (16,),
                 activation: str = "tanh", radius: int = 1, topology: str = "line",
                 position: str = "auto", noise: float = 0.05,
                 output_init_scale: float = 0.1) -> None:
        self.n_cells = _validation.integer(n_cells, "n_cells", 1)
        self.steps = _validation.integer(steps, "steps", 1)
        self.layout: Topology = make_topology(topology, self.n_cells, radius, position)
        self.noise = _validation.nonnegative(noise, "noise")
        self.output_init_scale = _validation.nonnegative(output_init_scale, "output_init_scale")
        if isinstance(hidden, (int, np.integer)):
            hidden = (hidden,)
        try:
            hidden = tuple(hidden)
        except TypeError:
            raise TypeError(f"hidden must be an integer or a sequence of integers; "
                            f"got {type(hidden).__name__}") from None
        self.hidden = tuple(_validation.integer(h, f"hidden[{i}]") for i, h in enumerate(hidden))
        self.net = MLP([self.layout.n_features, *self.hidden, 1], activation=activation,
                       output_activation="sigmoid")
        self.activation = self.net.activation
        self.n_params = self.net.n_params

    @property
    def topology(self) -> str:
        """The name of the cells' arrangement (``"line"`` or ``"ring"``)."""
        return self.layout.NAME

    @property
    def radius(self) -> int:
        """How many neighbours on each side a cell sees."""
        return self.layout.radius

    @property
    def n_features(self) -> int:
        """Inputs of the update rule per cell: neighbourhood plus position features."""
        return self.layout.n_features

    @property
    def position(self) -> str:
        """The kind of position features (``"auto"`` resolved)."""
        return self.layout.position

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"CellSystem({args})"

    def get_config(self) -> dict:
        """JSON-serialisable constructor arguments; ``CellSystem(**config)`` rebuilds it."""
        return {"n_cells": self.n_cells, "steps": self.steps, "hidden": list(self.hidden),
                "activation": self.activation, "radius": self.radius,
                "topology": self.topology, "position": self.position, "noise": self.noise,
                "output_init_scale": self.output_init_scale}

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
        x0 : ndarray, shape (N, D)
            Initial states, uniform on [0, 1).
        xi : ndarray, shape (steps, N, D)
            Standard normal draws; the roll-out scales them by ``noise``.
            Drawn even when ``noise == 0`` so that the random stream does not
            depend on it.
        """
        _validation.generator(rng)
        n_runs = _validation.integer(n_runs, "n_runs", 1)
        x0 = rng.random((n_runs, self.n_cells))
        xi = rng.standard_normal((self.steps, n_runs, self.n_cells))
        return x0, xi

    def _check_params(self, params: ArrayLike) -> np.ndarray:
        return _validation.float_vector(params, "params", self.n_params)

    def _check_inputs(self, x0: ArrayLike, xi: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        x0, xi = _validation.real_array(x0, "x0"), _validation.real_array(xi, "xi")
        if x0.ndim != 2 or x0.shape[1] != self.n_cells or x0.shape[0] < 1:
            raise ValueError(f"x0 must have shape (N, {self.n_cells}) with N >= 1; "
                             f"got {x0.shape}")
        if xi.shape != (self.steps,) + x0.shape:
            raise ValueError(f"xi must have shape {(self.steps,) + x0.shape}; got {xi.shape}")
        if not (np.isfinite(x0).all() and np.isfinite(xi).all()):
            raise ValueError("x0 and xi must be finite")
        return x0, xi

    # -- roll-out and back-propagation through time --------------------------

    def rollout(self, params: ArrayLike, x0: ArrayLike, xi: ArrayLike, *,
                keep_caches: bool = True, keep_trajectory: bool = False) -> Rollout:
        """Run N copies of the system for ``steps`` steps.

        Parameters
        ----------
        params : array_like, shape (n_params,)
        x0 : array_like, shape (N, D)
            Initial states.
        xi : array_like, shape (steps, N, D)
            Standard normal noise draws (scaled by ``noise`` here).
        keep_caches : bool, optional
            Keep what :meth:`backward` needs (default True). Turn off for
            evaluation-only runs to save memory.
        keep_trajectory : bool, optional
            Also return every intermediate state. Default False.

        Returns
        -------
        Rollout
        """
        params = self._check_params(params)
        x0, xi = self._check_inputs(x0, xi)
        return self._rollout(params, x0, xi, keep_caches, keep_trajectory)

    def _rollout(self, params: np.ndarray, x0: np.ndarray, xi: np.ndarray,
                 keep_caches: bool, keep_trajectory: bool) -> Rollout:
        """:meth:`rollout` on validated inputs."""
        x = x0.copy()
        caches = []
        traj = [x] if keep_trajectory else None
        for t in range(self.steps):
            y, cache = self.net._forward(params, self.layout.features(x))
            pre = y[:, :, 0]
            if self.noise > 0.0:
                pre = pre + self.noise * xi[t]
                # Clipping keeps states in [0, 1]; clipped cells pass no gradient.
                mask = (pre > 0.0) & (pre < 1.0)
                x = np.clip(pre, 0.0, 1.0)
            else:
                mask = None  # sigmoid output is already inside (0, 1)
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
        dfinal : array_like, shape (N, D)
            Gradient of a scalar loss with respect to ``rollout.final``.

        Returns
        -------
        dparams : ndarray of float64, shape (n_params,)
        """
        params = self._check_params(params)
        if not isinstance(rollout, Rollout):
            raise TypeError(f"rollout must be a Rollout; got {type(rollout).__name__}")
        if len(rollout.caches) != self.steps:
            raise ValueError("rollout has no caches; run it with keep_caches=True")
        g = _validation.real_array(dfinal, "dfinal")
        if g.shape != rollout.final.shape:
            raise ValueError(f"dfinal must have shape {rollout.final.shape}; got {g.shape}")
        return self._backward(params, rollout, g)

    def _backward(self, params: np.ndarray, rollout: Rollout, g: np.ndarray) -> np.ndarray:
        """:meth:`backward` on validated inputs."""
        dparams = np.zeros(self.n_params)
        for t in range(self.steps - 1, -1, -1):
            cache, mask = rollout.caches[t]
            gy = g if mask is None else g * mask
            # dL/dx_0 is not needed (x_0 is data), so the first step skips it.
            dfeat = self.net._backward_into(params, cache, gy[:, :, None], dparams,
                                            need_dx=t > 0)
            if t > 0:
                g = self.layout.features_adjoint(dfeat)
        return dparams

    def run(self, params: ArrayLike, rng: np.random.Generator, n_runs: int, *,
            trajectory: bool = False) -> np.ndarray:
        """Final patterns (or whole trajectories) of ``n_runs`` fresh random runs.

        Parameters
        ----------
        params : array_like, shape (n_params,)
        rng : numpy.random.Generator
            Source of initial states and noise.
        n_runs : int
        trajectory : bool, optional
            Return all states ``(steps + 1, N, D)`` instead of the final ones.

        Returns
        -------
        ndarray of float64, shape (N, D) or (steps + 1, N, D)
        """
        x0, xi = self.sample_inputs(rng, n_runs)
        out = self.rollout(params, x0, xi, keep_caches=False, keep_trajectory=trajectory)
        return out.trajectory if trajectory else out.final

    def loss_and_grad(self, params: ArrayLike, x0: ArrayLike, xi: ArrayLike,
                      loss: ReproducibilityLoss | None = None) -> tuple[float, np.ndarray, dict]:
        """Loss of the final patterns of fixed inputs and its gradient in ``params``.

        With the inputs held fixed the loss is a deterministic function of
        ``params``, so ``lambda p: system.loss_and_grad(p, x0, xi)[:2]`` works
        with ``scipy.optimize.minimize(..., jac=True)``.

        Parameters
        ----------
        params : array_like, shape (n_params,)
        x0, xi : array_like
            As from :meth:`sample_inputs`.
        loss : ReproducibilityLoss, optional
            Default ``ReproducibilityLoss()``.

        Returns
        -------
        value : float
        grad : ndarray of float64, shape (n_params,)
        parts : dict
            ``soft_entropy``, ``penalty`` and the final patterns ``final``.
        """
        loss = ReproducibilityLoss() if loss is None else loss
        params = self._check_params(params)
        x0, xi = self._check_inputs(x0, xi)
        # Inputs are checked once here; the loss checks the final states once.
        out = self._rollout(params, x0, xi, keep_caches=True, keep_trajectory=False)
        value, dX, parts = loss(out.final)
        grad = self._backward(params, out, dX)
        parts["final"] = out.final
        return value, grad, parts
