"""Seeded, checkpointable training of a cell system, and :func:`train` in one call.

One training step: sample a batch of initial states and noise, roll the
system out, take the loss and its gradient in the final states
(:class:`~kdentropy.cells.loss.ReproducibilityLoss`), back-propagate through
time to the parameters, and let the optimizer update them in place. The
reported quality is the exact entropy of a fixed evaluation batch whose
initial states and noise are never trained on.

Showing progress and stopping on Ctrl-C are the caller's: training calls a
callback after every iteration (the command line's is in
:mod:`kdentropy.cli.supervision`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .. import _validation
from .. import backends as _backends
from ..optim import Adam, Optimizer, from_config
from . import checkpoint as _checkpoint
from .diagnostics import FLAT_CHECK_AT, warn_if_flat
from .history import History
from .loss import AUTO, ReproducibilityLoss, loss_from_config
from .metrics import batch_hard_entropy, evaluate_batch
from .result import TrainResult
from .system import CellSystem

__all__ = ["Trainer", "TrainResult", "train", "seed_streams"]

#: What :meth:`Trainer.run`, :meth:`Trainer.fit` and :func:`train` call after every iteration.
Callback = Callable[["Trainer"], Any]


def seed_streams(seed: int) -> list[np.random.SeedSequence]:
    """The three independent streams a seed is split into: parameters, training, evaluation.

    Parameters
    ----------
    seed : int

    Returns
    -------
    list of numpy.random.SeedSequence
        ``[init, train, eval]``; ``numpy.random.default_rng(eval)`` draws
        the evaluation batch (see :class:`Trainer`).
    """
    return np.random.SeedSequence(seed).spawn(3)


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
        Default ``ReproducibilityLoss(sigma="auto")``. A loss with
        ``sigma="auto"`` is resolved for the system's cell count
        (:meth:`ReproducibilityLoss.for_cells`), so :attr:`loss` then holds
        the number.
    seed : int, optional
        Default 0.
    batch : int, optional
        Runs per training iteration. Default 64.
    eval_batch : int, optional
        Runs in the fixed evaluation batch. Default 256.
    eval_every : int, optional
        :meth:`run` evaluates at iteration 0 and at every multiple of this.
        Default 25.
    params : array_like, optional
        Initial parameters; default drawn from the seed.

    Attributes
    ----------
    params : ndarray
        Current parameters (updated in place by the optimizer).
    params_initial : ndarray
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
                 params: ArrayLike | None = None) -> None:
        self.system = CellSystem() if system is None else system
        if not isinstance(self.system, CellSystem):
            raise TypeError(f"system must be a CellSystem; got {type(system).__name__}")
        self.optimizer = Adam(lr=1e-2) if optimizer is None else optimizer
        if not isinstance(self.optimizer, Optimizer):
            raise TypeError(f"optimizer must be a kdentropy.optim.Optimizer; "
                            f"got {type(optimizer).__name__}")
        loss = ReproducibilityLoss(sigma=AUTO) if loss is None else loss
        if not isinstance(loss, ReproducibilityLoss):
            raise TypeError(f"loss must be a ReproducibilityLoss; got {type(loss).__name__}")
        # Fixed now, so the checkpoint stores the number, not the rule.
        self.loss = loss.for_cells(self.system.n_cells)
        self.seed = _validation.integer(seed, "seed", 0)
        self.batch = _validation.integer(batch, "batch", 1)
        self.eval_batch = _validation.integer(eval_batch, "eval_batch", 1)
        self.eval_every = _validation.integer(eval_every, "eval_every", 1)
        self._check_sizes()
        init_ss, train_ss, eval_ss = seed_streams(self.seed)
        if params is None:
            self.params = self.system.init(np.random.default_rng(init_ss))
        else:
            self.params = self.system.check_params(params).copy()
            _validation.finite_vector(self.params, "params")
        self.params_initial = self.params.copy()
        self.rng = np.random.default_rng(train_ss)
        self.eval_inputs = self.system.sample_inputs(np.random.default_rng(eval_ss),
                                                     self.eval_batch)
        self.iteration = 0
        self.history = History()

    def _check_sizes(self) -> None:
        """Refuse batch sizes whose arrays could never be allocated.

        The evaluation batch's noise is drawn in the constructor and one
        training step keeps every layer's activations for back-propagation;
        an absurd size (a typo, a damaged checkpoint) is a ValueError that
        names it instead of a MemoryError later.
        """
        s = self.system
        _validation.element_budget([("steps", s.steps), ("eval_batch", self.eval_batch),
                                    ("n_cells", s.n_cells), ("channels", s.n_channels)],
                                   "the evaluation batch")
        width = s.layout.n_features + sum(s.hidden) + s.n_channels
        _validation.element_budget([("steps", s.steps), ("batch", self.batch),
                                    ("n_cells", s.n_cells), ("layer widths", width)],
                                   "one training step")

    # -- evaluation -----------------------------------------------------------

    def evaluate(self, params: ArrayLike | None = None) -> dict:
        """Statistics of the fixed evaluation batch.

        Parameters
        ----------
        params : array_like, optional
            Parameters to evaluate; default the current ones.

        Returns
        -------
        dict
            :func:`pattern_stats` plus ``soft_entropy`` and ``final`` (the
            ``(eval_batch, D)`` final states).
        """
        params = self.params if params is None else params
        return evaluate_batch(self.system, self.loss, params, self.eval_inputs)

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

        Raises
        ------
        FloatingPointError
            If the loss, the gradient or the updated parameters are not
            finite (training diverged). Nothing is recorded; the parameters,
            optimizer state and iteration stay as they were (the random
            stream has moved on).
        """
        x0, xi = self.system.sample_inputs(self.rng, self.batch)
        # An overflow surfaces as a non-finite loss, gradient or update, each
        # checked below with an error that says what diverged; NumPy's
        # warnings would only precede it.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            value, grad, parts = self.system.loss_and_grad(self.params, x0, xi, self.loss)
            grad_norm = float(np.linalg.norm(grad))
        it = self.iteration + 1
        if not math.isfinite(value):
            raise FloatingPointError(
                f"training diverged at iteration {it}: the loss is {value} (soft entropy "
                f"{parts['soft_entropy']}, penalty {parts['penalty']}); lower the learning "
                "rate or the anti-collapse weight")
        if not math.isfinite(grad_norm):
            raise FloatingPointError(
                f"training diverged at iteration {it}: the gradient is not finite (norm "
                f"{grad_norm}); lower the learning rate or the anti-collapse weight")
        lr = self.optimizer.lr
        # Kept so that a step that overflows the parameters leaves the trainer
        # as it was (still resumable and savable) instead of half-updated.
        params_before, state_before = self.params.copy(), self.optimizer.state_dict()
        with np.errstate(over="ignore", invalid="ignore"):
            self.optimizer.step(self.params, grad)
        if not np.isfinite(self.params).all():
            self.params[...] = params_before
            self.optimizer.load_state_dict(state_before)
            raise FloatingPointError(
                f"training diverged at iteration {it}: the update overflowed the parameters "
                f"(gradient norm {grad_norm:g}, learning rate {lr:g}); lower the learning rate")
        self.iteration += 1
        row = {"loss": value, "soft_entropy": parts["soft_entropy"], "penalty": parts["penalty"],
               "hard_entropy": batch_hard_entropy(parts["final"], self.loss.threshold),
               "grad_norm": self.optimizer.last_grad_norm, "lr": lr}
        self.history.record(self.iteration, **row)
        return row

    def run(self, iterations: int, *, checkpoint: str | os.PathLike | None = None,
            checkpoint_every: int | None = None, callback: Callback | None = None) -> History:
        """Train for ``iterations`` more steps.

        Parameters
        ----------
        iterations : int
            Number of optimizer steps (>= 0).
        checkpoint : path, optional
            Where :meth:`save` writes (at the end, and every
            ``checkpoint_every`` iterations if given).
        checkpoint_every : int, optional
            Also save every this many iterations (needs ``checkpoint``), so
            a run that is killed can be resumed with :meth:`load`.
        callback : callable, optional
            Called as ``callback(trainer)`` after every iteration, once its
            history row and checkpoint are written: the place to show
            progress or to stop (an exception it raises leaves the trainer
            consistent, at the iteration just finished).

        Returns
        -------
        History
            ``self.history``.

        Warns
        -----
        FlatEntropyWarning
            At iteration :data:`FLAT_CHECK_AT`, when the soft entropy has not
            left ``log(batch)`` (see :func:`flat_entropy_message`).
        """
        iterations = _validation.integer(iterations, "iterations", 0)
        if checkpoint is not None:
            checkpoint = _checkpoint.checkpoint_path(checkpoint)  # fail now, not after training
        if checkpoint_every is not None:
            checkpoint_every = _validation.integer(checkpoint_every, "checkpoint_every", 1)
            if checkpoint is None:
                raise ValueError("checkpoint_every needs a checkpoint path")
        if self.iteration == 0 and len(self.history) == 0:
            self.record_evaluation()  # row 0: the untrained system
        end = self.iteration + iterations
        while self.iteration < end:
            self.step()
            # Only on multiples of eval_every (never "at the end of this call"),
            # so the history does not depend on how a run was split into
            # resumed pieces.
            if self.iteration % self.eval_every == 0:
                self.record_evaluation()
            if checkpoint_every and self.iteration % checkpoint_every == 0:
                assert checkpoint is not None  # checked above
                self.save(checkpoint)
            if self.iteration == FLAT_CHECK_AT:
                warn_if_flat(self)
            if callback is not None:
                callback(self)
        if checkpoint is not None:
            self.save(checkpoint)
        return self.history

    def fit(self, iterations: int, *, checkpoint: str | os.PathLike | None = None,
            checkpoint_every: int | None = None,
            callback: Callback | None = None) -> TrainResult:
        """Evaluate, :meth:`run` ``iterations`` more steps, evaluate again.

        Works for a fresh trainer and for one resumed with :meth:`load`: the
        "before" evaluation is always that of :attr:`params_initial`, and
        the last iteration always gets an evaluation row.

        Parameters
        ----------
        iterations : int
            Optimizer steps to take (>= 0).
        checkpoint, checkpoint_every, callback
            As :meth:`run`.

        Returns
        -------
        TrainResult
        """
        if self.iteration == 0 and len(self.history) == 0:
            before = self.record_evaluation()  # history row 0; run() then does not repeat it
        else:
            before = self.evaluate(self.params_initial)
        start = self.iteration
        t0 = time.perf_counter()
        self.run(iterations, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                 callback=callback)
        elapsed = time.perf_counter() - t0
        after = self.record_evaluation()
        return TrainResult(params=self.params.copy(), params_initial=self.params_initial.copy(),
                           history=self.history, before=before, after=after,
                           elapsed_s=elapsed, trainer=self,
                           iterations_run=self.iteration - start)

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
        _checkpoint.write(path, _checkpoint.Checkpoint(
            config=self.get_config(), params=self.params, params_initial=self.params_initial,
            iteration=self.iteration, rng=self.rng,
            optimizer_state=self.optimizer.state_dict(), history=self.history.as_arrays()))

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
            backend = _backends.check_name(backend)
        return _checkpoint.read(path, History.COLUMNS,
                                lambda ckpt: cls._from_checkpoint(ckpt, backend),
                                param_count=lambda config: CellSystem(**config["system"]).n_params)

    @classmethod
    def _from_checkpoint(cls, ckpt: _checkpoint.Checkpoint, backend: str | None) -> Trainer:
        config = ckpt.config
        loss_cfg = dict(config["loss"])
        if backend is not None:
            loss_cfg["backend"] = backend
        trainer = cls(CellSystem(**config["system"]),
                      optimizer=from_config(config["optimizer"]),
                      loss=loss_from_config(loss_cfg), seed=config["seed"],
                      batch=config["batch"], eval_batch=config["eval_batch"],
                      eval_every=config["eval_every"], params=ckpt.params)
        trainer.optimizer.load_state_dict(ckpt.optimizer_state)
        trainer.params_initial = ckpt.params_initial
        trainer.rng = ckpt.rng
        trainer.iteration = ckpt.iteration
        trainer.history = History.from_arrays(dict(ckpt.history))
        return trainer


def train(system: CellSystem | None = None, *, iterations: int = 200, batch: int = 64,
          lr: float = 1e-2, optimizer: Optimizer | None = None,
          loss: ReproducibilityLoss | None = None, seed: int = 0, eval_batch: int = 256,
          eval_every: int = 25, backend: str | None = None,
          checkpoint: str | os.PathLike | None = None, checkpoint_every: int | None = None,
          callback: Callback | None = None) -> TrainResult:
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
        Default ``ReproducibilityLoss(sigma="auto", backend=backend)``: the kernel
        width :func:`~kdentropy.cells.loss.auto_sigma` of the system's cell count.
    seed : int, optional
        Fixes parameters, training batches and evaluation batch. Default 0.
    eval_batch, eval_every : int, optional
        Size of the fixed evaluation batch (default 256) and how often it is
        evaluated (default every 25 iterations, and at the last one).
    backend : str, optional
        Entropy backend when ``loss`` is not given.
    checkpoint, checkpoint_every, callback : optional
        See :meth:`Trainer.run`.

    Returns
    -------
    TrainResult

    Examples
    --------
    >>> from kdentropy.cells import CellSystem, train
    >>> res = train(CellSystem(n_cells=8, steps=4, hidden=(8,)), iterations=3, batch=16,
    ...             eval_batch=32, backend="numpy")
    >>> len(res.history), res.params.shape == res.params_initial.shape
    (4, True)
    """
    if loss is None:
        loss = ReproducibilityLoss(sigma=AUTO, backend=backend)
    if optimizer is None:
        optimizer = Adam(lr=lr)
    trainer = Trainer(system, optimizer=optimizer, loss=loss, seed=seed, batch=batch,
                      eval_batch=eval_batch, eval_every=eval_every)
    return trainer.fit(iterations, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                       callback=callback)
