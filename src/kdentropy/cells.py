"""The cell system: a line of cells whose final binary patterns are trained to be reproducible.

D cells sit on a line (zero padding beyond the ends) or a ring. Each has a
state in [0, 1]. At every step each cell feeds its neighbourhood (its own state
and ``radius`` neighbours on each side) plus optional position features to the
same small MLP, whose sigmoid output, plus Gaussian noise and clipped to
[0, 1], is the cell's next state::

    x_{t+1} = clip(sigmoid(MLP([x_{i-r}, ..., x_{i+r}, pos_i])) + noise * xi_t, 0, 1)

Runs start from independent uniform random states and see independent noise,
so a batch of N runs gives N final patterns ``X`` (N, D) that differ unless
the network learnt to make them agree. Training minimises

    L(theta) = H_soft(X) + anti_collapse * P(X)

with :func:`kdentropy.soft_entropy_and_grad` giving ``H_soft`` and ``dH/dX``,
and a hand-written back-propagation through time from ``dL/dX`` to
``dL/dtheta`` (:meth:`CellSystem.backward`). The reported quality is the exact
:func:`kdentropy.hard_entropy` of a fresh evaluation batch.

:class:`Trainer` runs the optimisation (seeded, with a history, periodic
evaluation, progress display and ``.npz`` checkpoints that resume bit for
bit); :func:`train` wraps it in one call, and ``kdentropy train`` is the same
from the command line.

Why the anti-collapse term looks the way it does
-----------------------------------------------
Soft entropy alone is minimised by collapse: every cell at 0 (or 1) in every
run is perfectly reproducible and trivial. A penalty on the mean of the
*discretised* states ``sigmoid(T (x - 1/2))`` does not help once the system
has collapsed, because those values are saturated and pass almost no gradient.
:class:`ReproducibilityLoss` therefore penalises the *raw* (un-discretised)
state, through each run's mean state ``m_n = mean_i x_{n,i}``::

    P = mean_n [ relu(lo - m_n)^2 + relu(m_n - hi)^2 ],   default lo = hi = 1/2

i.e. ``P = mean_n (m_n - 1/2)^2`` by default. Its gradient ``2 (m_n - 1/2) /
(N D)`` reaches every cell and is largest exactly when the system collapses.
Per-run means (not one batch mean) also rule out half the runs at all-0 and
half at all-1.

Why the band is not wider by default: a wider band, e.g. ``(0.2, 0.8)`` or
``(0.35, 0.65)``, is gamed. The raw mean can sit inside it while every cell
sits *below* the threshold (all states near 0.3: mean 0.3, no cell on), and
training found exactly that trivial all-off solution for most seeds in our
runs (hard entropy 0, fraction on 0). The same happens with a hinge on the
soft fraction on ``mean_i sigmoid(T (x - 1/2))``. The quadratic pins the mean
state at 1/2, and the only trivial way to reach it, every cell at 1/2, is
maximally sensitive to the noise, so the entropy term drives the system to a
genuine pattern instead: in our runs about half the cells on with one 0/1
boundary on the line. ``band`` stays a parameter for experiments.

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
>>> theta = system.init(np.random.default_rng(0))
>>> X = system.run(theta, np.random.default_rng(1), n_runs=5)
>>> X.shape, bool(((0 <= X) & (X <= 1)).all())
((5, 8), True)
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _api, _backend
from ._api import _positive, _real_scalar
from .nn import MLP, _check_int, _check_rng, _check_theta, _real_array
from .optim import Adam, Optimizer, _nonnegative, from_config

__all__ = [
    "CellSystem",
    "Rollout",
    "ReproducibilityLoss",
    "pattern_stats",
    "History",
    "Trainer",
    "TrainResult",
    "train",
]

_TOPOLOGIES = ("line", "ring")
_POSITIONS = ("auto", "linear", "sincos", "none")


# ----------------------------------------------------------------------------- the system

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
        Default ``"line"``.
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
    net : kdentropy.nn.MLP
        The update rule; ``n_params`` is its parameter count.
    """

    def __init__(self, n_cells: int = 32, steps: int = 16, *, hidden: Sequence[int] = (16,),
                 activation: str = "tanh", radius: int = 1, topology: str = "line",
                 position: str = "auto", noise: float = 0.05,
                 output_init_scale: float = 0.1) -> None:
        self.n_cells = _check_int(n_cells, "n_cells", 1)
        self.steps = _check_int(steps, "steps", 1)
        self.radius = _check_int(radius, "radius", 0)
        if topology not in _TOPOLOGIES:
            raise ValueError(f"topology must be one of {_TOPOLOGIES}; got {topology!r}")
        self.topology = topology
        if position not in _POSITIONS:
            raise ValueError(f"position must be one of {_POSITIONS}; got {position!r}")
        if position == "auto":
            position = "linear" if topology == "line" else "sincos"
        self.position = position
        self.noise = _nonnegative(noise, "noise")
        self.output_init_scale = _nonnegative(output_init_scale, "output_init_scale")
        if isinstance(hidden, (int, np.integer)):
            hidden = (hidden,)
        try:
            hidden = tuple(hidden)
        except TypeError:
            raise TypeError(f"hidden must be an integer or a sequence of integers; "
                            f"got {type(hidden).__name__}") from None
        self.hidden = tuple(_check_int(h, f"hidden[{i}]") for i, h in enumerate(hidden))
        self.activation = activation
        self.n_neigh = 2 * self.radius + 1
        self.n_features = self.n_neigh + (0 if position == "none" else 2)
        self.net = MLP([self.n_features, *self.hidden, 1], activation=activation,
                       output_activation="sigmoid")
        self.n_params = self.net.n_params
        self._pos = self._position_features()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"CellSystem({args})"

    def get_config(self) -> dict:
        """JSON-serialisable constructor arguments; ``CellSystem(**config)`` rebuilds it."""
        return {"n_cells": self.n_cells, "steps": self.steps, "hidden": list(self.hidden),
                "activation": self.activation, "radius": self.radius,
                "topology": self.topology, "position": self.position, "noise": self.noise,
                "output_init_scale": self.output_init_scale}

    def _position_features(self) -> np.ndarray | None:
        D = self.n_cells
        i = np.arange(D, dtype=np.float64)
        if self.position == "linear":
            p = i / (D - 1) if D > 1 else np.full(D, 0.5)
            return np.stack([p, 1.0 - p], axis=-1)
        if self.position == "sincos":
            a = 2.0 * np.pi * i / D
            return np.stack([np.sin(a), np.cos(a)], axis=-1)
        return None

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
        theta : ndarray of float64, shape (n_params,)
        """
        theta = self.net.init(rng)
        W, _ = self.net.layers[-1].views(theta)
        W *= self.output_init_scale
        return theta

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
        _check_rng(rng)
        n_runs = _check_int(n_runs, "n_runs", 1)
        x0 = rng.random((n_runs, self.n_cells))
        xi = rng.standard_normal((self.steps, n_runs, self.n_cells))
        return x0, xi

    def _check_inputs(self, x0: ArrayLike, xi: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        x0, xi = _real_array(x0, "x0"), _real_array(xi, "xi")
        if x0.ndim != 2 or x0.shape[1] != self.n_cells or x0.shape[0] < 1:
            raise ValueError(f"x0 must have shape (N, {self.n_cells}) with N >= 1; "
                             f"got {x0.shape}")
        if xi.shape != (self.steps,) + x0.shape:
            raise ValueError(f"xi must have shape {(self.steps,) + x0.shape}; got {xi.shape}")
        if not (np.isfinite(x0).all() and np.isfinite(xi).all()):
            raise ValueError("x0 and xi must be finite")
        return x0, xi

    # -- neighbourhoods -------------------------------------------------------

    def _features(self, x: np.ndarray) -> np.ndarray:
        """MLP inputs ``(N, D, n_features)``: neighbourhood states, then position."""
        N, D = x.shape
        r = self.radius
        f = np.empty((N, D, self.n_features))
        for k in range(self.n_neigh):  # a loop over offsets, never over cells
            o = k - r  # feature k of cell i is the state of cell i + o
            if self.topology == "ring":
                f[:, :, k] = np.roll(x, -o, axis=1)
            elif o >= 0:
                f[:, :D - o, k] = x[:, o:]
                f[:, D - o:, k] = 0.0
            else:
                f[:, -o:, k] = x[:, :D + o]
                f[:, :-o, k] = 0.0
        if self._pos is not None:
            f[:, :, self.n_neigh:] = self._pos
        return f

    def _features_adjoint(self, df: np.ndarray) -> np.ndarray:
        """``dL/dx`` from ``dL/d(features)``: the transpose of the neighbourhood gather."""
        N, D, _ = df.shape
        r = self.radius
        dx = np.zeros((N, D))
        for k in range(self.n_neigh):
            o = k - r
            if self.topology == "ring":
                dx += np.roll(df[:, :, k], o, axis=1)
            elif o >= 0:
                dx[:, o:] += df[:, :D - o, k]
            else:
                dx[:, :D + o] += df[:, -o:, k]
        return dx

    # -- roll-out and back-propagation through time --------------------------

    def rollout(self, theta: ArrayLike, x0: ArrayLike, xi: ArrayLike, *,
                keep_caches: bool = True, keep_trajectory: bool = False) -> Rollout:
        """Run N copies of the system for ``steps`` steps.

        Parameters
        ----------
        theta : array_like, shape (n_params,)
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
        theta = _check_theta(theta, self.n_params)
        x0, xi = self._check_inputs(x0, xi)
        x = x0.copy()
        caches = []
        traj = [x] if keep_trajectory else None
        for t in range(self.steps):
            y, cache = self.net._forward(theta, self._features(x))
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

    def backward(self, theta: ArrayLike, rollout: Rollout, dfinal: ArrayLike) -> np.ndarray:
        """Back-propagation through time: ``dL/dtheta`` from ``dL/d(final states)``.

        Parameters
        ----------
        theta : array_like, shape (n_params,)
            The vector given to :meth:`rollout`.
        rollout : Rollout
            From :meth:`rollout` with ``keep_caches=True``.
        dfinal : array_like, shape (N, D)
            Gradient of a scalar loss with respect to ``rollout.final``.

        Returns
        -------
        dtheta : ndarray of float64, shape (n_params,)
        """
        theta = _check_theta(theta, self.n_params)
        if not isinstance(rollout, Rollout):
            raise TypeError(f"rollout must be a Rollout; got {type(rollout).__name__}")
        if len(rollout.caches) != self.steps:
            raise ValueError("rollout has no caches; run it with keep_caches=True")
        g = _real_array(dfinal, "dfinal")
        if g.shape != rollout.final.shape:
            raise ValueError(f"dfinal must have shape {rollout.final.shape}; got {g.shape}")
        dtheta = np.zeros(self.n_params)
        for t in range(self.steps - 1, -1, -1):
            cache, mask = rollout.caches[t]
            gy = g if mask is None else g * mask
            # dL/dx_0 is not needed (x_0 is data), so the first step skips it.
            dfeat = self.net._backward_into(theta, cache, gy[:, :, None], dtheta,
                                            need_dx=t > 0)
            if t > 0:
                g = self._features_adjoint(dfeat)
        return dtheta

    def run(self, theta: ArrayLike, rng: np.random.Generator, n_runs: int, *,
            trajectory: bool = False) -> np.ndarray:
        """Final patterns (or whole trajectories) of ``n_runs`` fresh random runs.

        Parameters
        ----------
        theta : array_like, shape (n_params,)
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
        out = self.rollout(theta, x0, xi, keep_caches=False, keep_trajectory=trajectory)
        return out.trajectory if trajectory else out.final

    def loss_and_grad(self, theta: ArrayLike, x0: ArrayLike, xi: ArrayLike,
                      loss: ReproducibilityLoss | None = None) -> tuple[float, np.ndarray, dict]:
        """Loss of the final patterns of fixed inputs and its gradient in theta.

        With the inputs held fixed the loss is a deterministic function of
        ``theta``, so ``lambda t: system.loss_and_grad(t, x0, xi)[:2]`` works
        with ``scipy.optimize.minimize(..., jac=True)``.

        Parameters
        ----------
        theta : array_like, shape (n_params,)
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
        out = self.rollout(theta, x0, xi)
        value, dX, parts = loss(out.final)
        grad = self.backward(theta, out, dX)
        parts["final"] = out.final
        return value, grad, parts


# ----------------------------------------------------------------------------- the loss

class ReproducibilityLoss:
    """Soft entropy of the final patterns plus the anti-collapse hinge.

    ``L(X) = H_soft(X) + anti_collapse * mean_n [relu(lo - m_n)^2 +
    relu(m_n - hi)^2]`` with ``m_n`` the mean raw state of run n; with the
    default ``band=(0.5, 0.5)`` the penalty is ``mean_n (m_n - 1/2)^2``. See
    the module docstring for why it acts on raw states and why the band is
    a point by default.

    Parameters
    ----------
    temperature, sigma, threshold : float, optional
        Passed to :func:`kdentropy.soft_entropy_and_grad` (defaults 10, 0.5, 0.5).
    anti_collapse : float, optional
        Weight of the penalty (>= 0; 0 disables it). Default 100: a fully
        collapsed batch (penalty 1/4) then costs 25 nats, far more than the
        entropy of any batch, while weight 10 still let most seeds collapse.
    band : tuple of float, optional
        ``(lo, hi)``, ``0 <= lo <= hi <= 1``. Default ``(0.5, 0.5)``.
    backend : str, optional
        Entropy backend (see :func:`kdentropy.soft_entropy`).
    """

    def __init__(self, temperature: float = 10.0, sigma: float = 0.5, *,
                 threshold: float = 0.5, anti_collapse: float = 100.0,
                 band: tuple[float, float] = (0.5, 0.5), backend: str | None = None) -> None:
        self.temperature = _positive(temperature, "temperature")
        self.sigma = _positive(sigma, "sigma")
        self.threshold = _real_scalar(threshold, "threshold")
        self.anti_collapse = _nonnegative(anti_collapse, "anti_collapse")
        try:
            lo, hi = band
        except (TypeError, ValueError):
            raise TypeError(f"band must be a pair (lo, hi); got {band!r}") from None
        lo, hi = _real_scalar(lo, "band[0]"), _real_scalar(hi, "band[1]")
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"band must satisfy 0 <= lo <= hi <= 1; got {(lo, hi)}")
        self.band = (lo, hi)
        if backend is not None:
            _backend._check_name(backend)
        self.backend = backend

    def get_config(self) -> dict:
        """JSON-serialisable constructor arguments."""
        return {"temperature": self.temperature, "sigma": self.sigma,
                "threshold": self.threshold, "anti_collapse": self.anti_collapse,
                "band": list(self.band), "backend": self.backend}

    def penalty(self, X: ArrayLike) -> tuple[float, np.ndarray]:
        """The anti-collapse hinge (unweighted) and its gradient with respect to X.

        Parameters
        ----------
        X : array_like, shape (N, D)
            Final patterns (raw states).

        Returns
        -------
        value : float
            ``mean_n [relu(lo - m_n)^2 + relu(m_n - hi)^2]``.
        grad : ndarray of float64, shape (N, D)
            ``d value / dX``; a read-only broadcast view (every cell of a run
            gets the same value).
        """
        X = _real_array(X, "X")
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (N, D); got shape {X.shape}")
        N, D = X.shape
        lo, hi = self.band
        m = X.mean(axis=1)
        below = np.maximum(lo - m, 0.0)
        above = np.maximum(m - hi, 0.0)
        value = float(np.mean(below * below + above * above))
        dm = (2.0 / N) * (above - below)
        return value, np.broadcast_to((dm / D)[:, None], X.shape)

    def __call__(self, X: ArrayLike) -> tuple[float, np.ndarray, dict]:
        """Loss value, its gradient and its parts.

        Parameters
        ----------
        X : array_like, shape (N, D)
            Final patterns.

        Returns
        -------
        value : float
            ``soft_entropy + anti_collapse * penalty``.
        grad : ndarray of float64, shape (N, D)
            ``dL/dX``.
        parts : dict
            ``{"soft_entropy": float, "penalty": float}`` (penalty unweighted).
        """
        X = _real_array(X, "X")
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (N, D); got shape {X.shape}")
        H, dX = _api.soft_entropy_and_grad(X, self.temperature, self.sigma,
                                           threshold=self.threshold, backend=self.backend)
        H = float(H)
        dX = np.asarray(dX, dtype=np.float64)
        P = 0.0
        if self.anti_collapse > 0.0:
            P, dP = self.penalty(X)
            dX = dX + self.anti_collapse * dP
        return H + self.anti_collapse * P, dX, {"soft_entropy": H, "penalty": P}


# ----------------------------------------------------------------------------- metrics

def pattern_stats(X: ArrayLike, threshold: float = 0.5, *, topology: str = "line") -> dict:
    """Summary of a batch of final patterns.

    Parameters
    ----------
    X : array_like, shape (N, D)
    threshold : float, optional
        A cell is on where ``X >= threshold``. Default 0.5.
    topology : {"line", "ring"}, optional
        On a ring the last and first cells are neighbours too.

    Returns
    -------
    dict
        ``hard_entropy`` (nats), ``distinct`` (number of distinct patterns),
        ``fraction_on`` (mean fraction of cells on), ``boundaries`` (mean
        number of 0/1 boundaries per run) and ``mode_fraction`` (fraction of
        runs giving the most common pattern).

    Examples
    --------
    >>> s = pattern_stats([[0, 0, 1, 1], [0, 0, 1, 1]])
    >>> s["hard_entropy"], s["fraction_on"], s["boundaries"]
    (0.0, 0.5, 1.0)
    """
    if topology not in _TOPOLOGIES:
        raise ValueError(f"topology must be one of {_TOPOLOGIES}; got {topology!r}")
    X = _real_array(X, "X")
    if X.ndim != 2 or X.shape[0] < 1:
        raise ValueError(f"X must be 2-D (N, D) with N >= 1; got shape {X.shape}")
    B = X >= threshold
    edges = B[:, 1:] != B[:, :-1]
    boundaries = edges.sum(axis=1)
    if topology == "ring" and B.shape[1] > 1:
        boundaries = boundaries + (B[:, 0] != B[:, -1])
    _, counts = _api.pattern_counts(X, threshold)
    return {"hard_entropy": float(_api.hard_entropy(X, threshold)),
            "distinct": int(counts.size),
            "fraction_on": float(B.mean()) if B.size else 0.0,
            "boundaries": float(boundaries.mean()),
            "mode_fraction": float(counts.max() / X.shape[0])}


# ----------------------------------------------------------------------------- history

class History:
    """Per-iteration training record, one row per iteration (row 0: before training).

    Columns (NaN where a value was not computed in that row):

    ``iteration``
        Number of optimizer steps taken when the row was complete.
    ``loss``, ``soft_entropy``, ``penalty``, ``hard_entropy``, ``grad_norm``, ``lr``
        Of the training batch of that iteration, at the parameters *before*
        its update (so row i describes step i's gradient).
    ``eval_hard_entropy``, ``eval_soft_entropy``, ``eval_fraction_on``, ``eval_boundaries``
        Of the fixed evaluation batch, at the parameters *after* the update;
        filled at 0 and every ``eval_every`` iterations by
        :meth:`Trainer.run` (and at the last iteration by :func:`train` and
        the command line, through :meth:`Trainer.record_evaluation`).
    """

    COLUMNS = ("iteration", "loss", "soft_entropy", "penalty", "hard_entropy", "grad_norm",
               "lr", "eval_hard_entropy", "eval_soft_entropy", "eval_fraction_on",
               "eval_boundaries")

    def __init__(self) -> None:
        self._rows: list[dict[str, float]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def record(self, iteration: int, **values: float) -> None:
        """Set values in the row of ``iteration``.

        Parameters
        ----------
        iteration : int
            The row; a new row is appended unless it is the last one.
        **values : float
            Column values; unknown columns are a ValueError.
        """
        unknown = set(values) - set(self.COLUMNS)
        if unknown:
            raise ValueError(f"unknown history columns {sorted(unknown)}")
        if not self._rows or self._rows[-1]["iteration"] != iteration:
            row = dict.fromkeys(self.COLUMNS, math.nan)
            row["iteration"] = iteration
            self._rows.append(row)
        self._rows[-1].update({k: float(v) for k, v in values.items()})

    def __getitem__(self, column: str) -> np.ndarray:
        if column not in self.COLUMNS:
            raise KeyError(column)
        return np.array([row[column] for row in self._rows], dtype=np.float64)

    def as_arrays(self) -> dict[str, np.ndarray]:
        """Every column as a float64 array of length ``len(self)``."""
        return {c: self[c] for c in self.COLUMNS}

    def evaluations(self) -> dict[str, np.ndarray]:
        """Only the rows with evaluation results (``iteration`` and ``eval_*`` columns)."""
        arrays = self.as_arrays()
        rows = ~np.isnan(arrays["eval_hard_entropy"])
        return {c: a[rows] for c, a in arrays.items() if c == "iteration" or c.startswith("eval_")}

    @classmethod
    def from_arrays(cls, arrays: dict[str, ArrayLike]) -> History:
        """Rebuild a history from :meth:`as_arrays` output.

        Parameters
        ----------
        arrays : dict
            One 1-D array per column of :attr:`COLUMNS`, all of one length.

        Returns
        -------
        History
        """
        hist = cls()
        columns = {c: np.asarray(arrays[c], dtype=np.float64) for c in cls.COLUMNS}
        if len({a.shape for a in columns.values()}) != 1 or columns["iteration"].ndim != 1:
            raise ValueError("history columns must be 1-D arrays of one length")
        for i in range(columns["iteration"].shape[0]):
            hist._rows.append({c: float(columns[c][i]) for c in cls.COLUMNS})
        return hist

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """The history as CSV text: a header, one line per row, empty fields for NaN.

        Parameters
        ----------
        path : path-like, optional
            Also write the text there.

        Returns
        -------
        str
        """
        buf = io.StringIO()
        buf.write(",".join(self.COLUMNS) + "\n")
        for row in self._rows:
            fields = []
            for c in self.COLUMNS:
                v = row[c]
                fields.append("" if math.isnan(v) else
                              (str(int(v)) if c == "iteration" else repr(v)))
            buf.write(",".join(fields) + "\n")
        text = buf.getvalue()
        if path is not None:
            with open(path, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
        return text


# ----------------------------------------------------------------------------- training

def _checkpoint_path(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"checkpoint path must end in .npz; got {path!r}")
    return path


def _rng_state_json(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)


def _rng_from_json(text: str) -> np.random.Generator:
    state = json.loads(text)
    # The name comes from a file: only ever instantiate a real bit generator.
    cls = getattr(np.random, str(state.get("bit_generator")), None)
    if not (isinstance(cls, type) and issubclass(cls, np.random.BitGenerator)):
        raise ValueError(f"unknown bit generator {state.get('bit_generator')!r}")
    bitgen = cls()
    bitgen.state = state
    return np.random.Generator(bitgen)


class _Progress:
    """tqdm bar when installed, otherwise a line every ~10% of the run; nothing when quiet."""

    def __init__(self, total: int, mode: bool | str) -> None:
        self.total, self.mode, self.bar = total, mode, None
        self.last_eval = math.nan
        self.every = max(1, total // 10)
        if mode is False or total == 0:
            self.mode = False
            return
        if mode in (True, "auto", "tqdm"):
            try:
                from tqdm.auto import tqdm
            except ImportError:
                if mode == "tqdm":
                    raise
                self.mode = "lines"
            else:
                self.mode = "tqdm"
                self.bar = tqdm(total=total, desc="training", unit="it", file=sys.stderr,
                                dynamic_ncols=True, leave=True)
        else:
            self.mode = "lines"
        self.done = 0

    def update(self, it: int, row: dict) -> None:
        if self.mode is False:
            return
        self.done += 1
        if not math.isnan(row["eval_hard_entropy"]):
            self.last_eval = row["eval_hard_entropy"]
        if self.mode == "tqdm":
            post = {"loss": f"{row['loss']:.3f}", "H_batch": f"{row['hard_entropy']:.2f}"}
            if not math.isnan(self.last_eval):
                post["H_eval"] = f"{self.last_eval:.2f}"
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(1)
        elif self.done % self.every == 0 or self.done == self.total:
            line = (f"iteration {it}: loss {row['loss']:.4f}  soft H {row['soft_entropy']:.4f}"
                    f"  hard H (batch) {row['hard_entropy']:.4f}")
            if not math.isnan(row["eval_hard_entropy"]):
                line += f"  hard H (eval) {row['eval_hard_entropy']:.4f}"
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Trainer:
    """Seeded, checkpointable training of a :class:`CellSystem`.

    One seed fixes everything: it is split (``numpy.random.SeedSequence``)
    into independent streams for the initial parameters, the training batches
    and the evaluation batch, so the evaluation runs (initial states and
    noise) are never seen in training, and the same seed gives the same
    history bit for bit (for a given entropy backend and thread count).

    Parameters
    ----------
    system : CellSystem, optional
        Default ``CellSystem()``.
    optimizer : Optimizer, optional
        Default ``Adam(lr=1e-2)``.
    loss : ReproducibilityLoss, optional
        Default ``ReproducibilityLoss()``.
    seed : int, optional
        Default 0.
    batch : int, optional
        Runs per training iteration. Default 64.
    eval_batch : int, optional
        Runs in the fixed evaluation batch. Default 256.
    eval_every : int, optional
        :meth:`run` evaluates at iteration 0 and at every multiple of this.
        Default 25.
    theta : array_like, optional
        Initial parameters; default drawn from the seed.

    Attributes
    ----------
    theta : ndarray
        Current parameters (updated in place by the optimizer).
    theta_initial : ndarray
        The parameters training started from.
    eval_inputs : tuple of ndarray
        ``(x0, xi)`` of the fixed evaluation batch.
    iteration : int
        Optimizer steps taken.
    history : History
    """

    def __init__(self, system: CellSystem | None = None, *, optimizer: Optimizer | None = None,
                 loss: ReproducibilityLoss | None = None, seed: int = 0, batch: int = 64,
                 eval_batch: int = 256, eval_every: int = 25,
                 theta: ArrayLike | None = None) -> None:
        self.system = CellSystem() if system is None else system
        if not isinstance(self.system, CellSystem):
            raise TypeError(f"system must be a CellSystem; got {type(system).__name__}")
        self.optimizer = Adam(lr=1e-2) if optimizer is None else optimizer
        if not isinstance(self.optimizer, Optimizer):
            raise TypeError(f"optimizer must be a kdentropy.optim.Optimizer; "
                            f"got {type(optimizer).__name__}")
        self.loss = ReproducibilityLoss() if loss is None else loss
        if not isinstance(self.loss, ReproducibilityLoss):
            raise TypeError(f"loss must be a ReproducibilityLoss; got {type(loss).__name__}")
        self.seed = _check_int(seed, "seed", 0)
        self.batch = _check_int(batch, "batch", 1)
        self.eval_batch = _check_int(eval_batch, "eval_batch", 1)
        self.eval_every = _check_int(eval_every, "eval_every", 1)
        init_ss, train_ss, eval_ss = np.random.SeedSequence(self.seed).spawn(3)
        if theta is None:
            self.theta = self.system.init(np.random.default_rng(init_ss))
        else:
            self.theta = _check_theta(theta, self.system.n_params).copy()
        self.theta_initial = self.theta.copy()
        self.rng = np.random.default_rng(train_ss)
        self.eval_inputs = self.system.sample_inputs(np.random.default_rng(eval_ss),
                                                     self.eval_batch)
        self.iteration = 0
        self.history = History()

    # -- evaluation -----------------------------------------------------------

    def evaluate(self, theta: ArrayLike | None = None) -> dict:
        """Statistics of the fixed evaluation batch.

        Parameters
        ----------
        theta : array_like, optional
            Parameters to evaluate; default the current ones.

        Returns
        -------
        dict
            :func:`pattern_stats` plus ``soft_entropy`` and ``final`` (the
            ``(eval_batch, D)`` final states).
        """
        theta = self.theta if theta is None else theta
        X = self.system.rollout(theta, *self.eval_inputs, keep_caches=False).final
        stats = pattern_stats(X, self.loss.threshold, topology=self.system.topology)
        stats["soft_entropy"] = float(_api.soft_entropy(
            X, self.loss.temperature, self.loss.sigma, threshold=self.loss.threshold,
            backend=self.loss.backend))
        stats["final"] = X
        return stats

    def record_evaluation(self) -> dict:
        """Evaluate the current parameters and store the result in the history row of now.

        :meth:`run` does this at iteration 0 and every ``eval_every``
        iterations; call it to add the final iteration of a run that does
        not end on a multiple of ``eval_every``.

        Returns
        -------
        dict
            As :meth:`evaluate`.
        """
        s = self.evaluate()
        self.history.record(self.iteration, eval_hard_entropy=s["hard_entropy"],
                            eval_soft_entropy=s["soft_entropy"],
                            eval_fraction_on=s["fraction_on"], eval_boundaries=s["boundaries"])
        return s

    # -- training -------------------------------------------------------------

    def step(self) -> dict:
        """One optimizer step on a fresh training batch.

        Returns
        -------
        dict
            The values recorded in the history row of the new iteration:
            ``loss``, ``soft_entropy``, ``penalty``, ``hard_entropy``,
            ``grad_norm`` and ``lr``.
        """
        x0, xi = self.system.sample_inputs(self.rng, self.batch)
        value, grad, parts = self.system.loss_and_grad(self.theta, x0, xi, self.loss)
        lr = self.optimizer.lr
        self.optimizer.step(self.theta, grad)
        self.iteration += 1
        row = {"loss": value, "soft_entropy": parts["soft_entropy"], "penalty": parts["penalty"],
               "hard_entropy": float(_api.hard_entropy(parts["final"], self.loss.threshold)),
               "grad_norm": self.optimizer.last_grad_norm, "lr": lr}
        self.history.record(self.iteration, **row)
        return row

    def run(self, iterations: int, *, progress: bool | str = "auto",
            checkpoint: str | os.PathLike | None = None, checkpoint_every: int | None = None,
            callback: Callable[[Trainer], Any] | None = None) -> History:
        """Train for ``iterations`` more steps.

        Parameters
        ----------
        iterations : int
            Number of optimizer steps (>= 0).
        progress : bool or {"auto", "tqdm", "lines"}, optional
            ``"auto"``/True: a tqdm bar on stderr when tqdm is installed,
            otherwise a plain line every ~10% of the run; ``"lines"``: always
            plain lines; False: silent. Default ``"auto"``.
        checkpoint : path, optional
            Where :meth:`save` writes (at the end, and every
            ``checkpoint_every`` iterations if given).
        checkpoint_every : int, optional
            Also save every this many iterations (needs ``checkpoint``), so
            an interrupted run can be resumed with :meth:`load`.
        callback : callable, optional
            Called as ``callback(trainer)`` after every iteration.

        Returns
        -------
        History
            ``self.history``.
        """
        iterations = _check_int(iterations, "iterations", 0)
        if checkpoint is not None:
            checkpoint = _checkpoint_path(checkpoint)  # fail now, not after the training
        if checkpoint_every is not None:
            checkpoint_every = _check_int(checkpoint_every, "checkpoint_every", 1)
            if checkpoint is None:
                raise ValueError("checkpoint_every needs a checkpoint path")
        if progress not in (True, False, "auto", "tqdm", "lines"):
            raise ValueError(f"progress must be True, False, 'auto', 'tqdm' or 'lines'; "
                             f"got {progress!r}")
        if self.iteration == 0 and len(self.history) == 0:
            self.record_evaluation()  # row 0: the untrained system
        bar = _Progress(iterations, progress)
        try:
            end = self.iteration + iterations
            while self.iteration < end:
                self.step()
                # Only on multiples of eval_every (never "at the end of this
                # call"), so the history does not depend on how a run was
                # split into resumed pieces.
                if self.iteration % self.eval_every == 0:
                    self.record_evaluation()
                bar.update(self.iteration, self.history._rows[-1])
                if checkpoint_every and self.iteration % checkpoint_every == 0:
                    self.save(checkpoint)
                if callback is not None:
                    callback(self)
        finally:
            bar.close()
        if checkpoint is not None:
            self.save(checkpoint)
        return self.history

    # -- checkpoints ----------------------------------------------------------

    def get_config(self) -> dict:
        """JSON-serialisable settings: system, loss, optimizer, seed and batch sizes.

        Returns
        -------
        dict
            What :meth:`save` stores to rebuild the trainer (its state, the
            parameters, optimizer moments, random stream and history, is
            saved beside it).
        """
        return {"system": self.system.get_config(), "loss": self.loss.get_config(),
                "optimizer": self.optimizer.get_config(), "seed": self.seed,
                "batch": self.batch, "eval_batch": self.eval_batch,
                "eval_every": self.eval_every}

    def save(self, path: str | os.PathLike) -> None:
        """Write parameters, optimizer state, RNG state, configuration and history to ``.npz``.

        Parameters
        ----------
        path : path-like
            Destination file (written atomically: a temporary file is renamed).
        """
        config = self.get_config()
        arrays: dict[str, np.ndarray] = {
            "format": np.array("kdentropy-cells-checkpoint-1"),
            "theta": self.theta,
            "theta_initial": self.theta_initial,
            "iteration": np.array(self.iteration, dtype=np.int64),
            "rng_state": np.array(_rng_state_json(self.rng)),
            "config": np.array(json.dumps(config)),
        }
        for k, v in self.optimizer.state_dict().items():
            arrays[f"optim.{k}"] = np.asarray(v)
        for k, v in self.history.as_arrays().items():
            arrays[f"history.{k}"] = v
        path = _checkpoint_path(path)
        tmp = path[:-4] + ".tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, backend: str | None = None) -> Trainer:
        """Rebuild a trainer from :meth:`save`; continuing it reproduces an uninterrupted run.

        Parameters
        ----------
        path : path-like
            A checkpoint written by :meth:`save`.
        backend : str, optional
            Override the stored entropy backend.

        Returns
        -------
        Trainer

        Raises
        ------
        ValueError
            If the file cannot be read, is not a kdentropy cell-training
            checkpoint or is damaged.
        """
        if backend is not None:
            _backend._check_name(backend)
        path = os.fspath(path)
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"cannot read checkpoint {path!r}: {exc}") from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"{path!r} is not a kdentropy cell-training checkpoint")
        with data:
            if "format" not in data.files or str(data["format"]) != "kdentropy-cells-checkpoint-1":
                raise ValueError(f"{path!r} is not a kdentropy cell-training checkpoint")
            try:
                return cls._from_checkpoint(data, backend)
            except (KeyError, TypeError, json.JSONDecodeError, zipfile.BadZipFile) as exc:
                raise ValueError(f"checkpoint {path!r} is damaged: "
                                 f"{type(exc).__name__}: {exc}") from None

    @classmethod
    def _from_checkpoint(cls, data: np.lib.npyio.NpzFile, backend: str | None) -> Trainer:
        config = json.loads(str(data["config"]))
        loss_cfg = dict(config["loss"])
        loss_cfg["band"] = tuple(loss_cfg["band"])
        if backend is not None:
            loss_cfg["backend"] = backend
        trainer = cls(CellSystem(**config["system"]),
                      optimizer=from_config(config["optimizer"]),
                      loss=ReproducibilityLoss(**loss_cfg), seed=config["seed"],
                      batch=config["batch"], eval_batch=config["eval_batch"],
                      eval_every=config["eval_every"], theta=data["theta"])
        trainer.optimizer.load_state_dict(
            {k[len("optim."):]: data[k] for k in data.files if k.startswith("optim.")})
        trainer.theta_initial = np.array(data["theta_initial"], dtype=np.float64)
        trainer.rng = _rng_from_json(str(data["rng_state"]))
        trainer.iteration = int(data["iteration"])
        trainer.history = History.from_arrays(
            {c: data[f"history.{c}"] for c in History.COLUMNS})
        return trainer


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    theta : ndarray
        Trained parameters.
    theta_initial : ndarray
        Parameters before training.
    history : History
    before, after : dict
        :meth:`Trainer.evaluate` of the evaluation batch before and after
        training (``final`` holds its final states).
    elapsed_s : float
        Wall-clock time of the training loop, evaluations included.
    trainer : Trainer
        For further training or :meth:`Trainer.save`.
    """

    theta: np.ndarray
    theta_initial: np.ndarray
    history: History
    before: dict
    after: dict
    elapsed_s: float
    trainer: Trainer


def train(system: CellSystem | None = None, *, iterations: int = 200, batch: int = 64,
          lr: float = 1e-2, optimizer: Optimizer | None = None,
          loss: ReproducibilityLoss | None = None, seed: int = 0, eval_batch: int = 256,
          eval_every: int = 25, backend: str | None = None, progress: bool | str = "auto",
          checkpoint: str | os.PathLike | None = None,
          checkpoint_every: int | None = None) -> TrainResult:
    """Train a cell system to produce reproducible patterns.

    Parameters
    ----------
    system : CellSystem, optional
        Default ``CellSystem()``: 32 cells, 16 steps, a 16-unit tanh MLP on
        the 3-neighbourhood plus two position features, noise 0.05.
    iterations : int, optional
        Optimizer steps. Default 200.
    batch : int, optional
        Runs per step. Default 64.
    lr : float, optional
        Adam learning rate, used when ``optimizer`` is not given. Default 1e-2.
    optimizer : Optimizer, optional
        Overrides ``lr``.
    loss : ReproducibilityLoss, optional
        Default ``ReproducibilityLoss(backend=backend)``.
    seed : int, optional
        Fixes parameters, training batches and evaluation batch. Default 0.
    eval_batch, eval_every : int, optional
        Size of the fixed evaluation batch (default 256) and how often it is
        evaluated (default every 25 iterations, and at the last one).
    backend : str, optional
        Entropy backend when ``loss`` is not given.
    progress : bool or str, optional
        See :meth:`Trainer.run`.
    checkpoint, checkpoint_every : optional
        See :meth:`Trainer.run`.

    Returns
    -------
    TrainResult

    Examples
    --------
    >>> from kdentropy.cells import CellSystem, train
    >>> res = train(CellSystem(n_cells=8, steps=4, hidden=(8,)), iterations=3, batch=16,
    ...             eval_batch=32, progress=False, backend="numpy")
    >>> len(res.history), res.theta.shape == res.theta_initial.shape
    (4, True)
    """
    if loss is None:
        loss = ReproducibilityLoss(backend=backend)
    if optimizer is None:
        optimizer = Adam(lr=lr)
    trainer = Trainer(system, optimizer=optimizer, loss=loss, seed=seed, batch=batch,
                      eval_batch=eval_batch, eval_every=eval_every)
    theta_initial = trainer.theta_initial.copy()
    before = trainer.record_evaluation()  # history row 0; run() then does not repeat it
    t0 = time.perf_counter()
    trainer.run(iterations, progress=progress, checkpoint=checkpoint,
                checkpoint_every=checkpoint_every)
    elapsed = time.perf_counter() - t0
    after = trainer.record_evaluation()
    return TrainResult(theta=trainer.theta.copy(), theta_initial=theta_initial,
                       history=trainer.history, before=before, after=after,
                       elapsed_s=elapsed, trainer=trainer)
