"""A trained cell system with the settings it was trained with: :class:`SavedRun`.

It runs fresh batches and re-evaluates the evaluation batch training
reported, from a trainer or from a run folder (:func:`kdentropy.runs.load_run`
reads one).

Examples
--------
>>> from kdentropy.cells import CellSystem, SavedRun, train
>>> res = train(CellSystem(n_cells=8, steps=4, hidden=(8,)), iterations=2, batch=8,
...             eval_batch=16, backend="numpy")
>>> run = SavedRun.from_trainer(res.trainer, "memory")
>>> before, after = run.evaluate()          # the evaluation batch training reported
>>> after["hard_entropy"] == res.after["hard_entropy"]
True
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import _validation
from .loss import ReproducibilityLoss
from .metrics import evaluate_batch
from .system import CellSystem
from .trainer import Trainer, seed_streams

__all__ = ["SavedRun"]


@dataclasses.dataclass
class SavedRun:
    """A trained cell system, its parameters and the settings it was trained with.

    Attributes
    ----------
    system : CellSystem
    params : ndarray of float64, shape (n_params,)
        The trained parameters.
    params_initial : ndarray of float64, shape (n_params,)
        The parameters training started from.
    loss : ReproducibilityLoss
        The training loss (its temperature, sigma and threshold define the
        reported soft entropy and the binarisation).
    config : dict
        :meth:`Trainer.get_config` of the run (``seed``, ``eval_batch``, ...).
    source : str
        Where it came from (the file it was read from).
    """

    system: CellSystem
    params: np.ndarray
    params_initial: np.ndarray
    loss: ReproducibilityLoss
    config: dict
    source: str

    @classmethod
    def from_trainer(cls, trainer: Trainer, source: str) -> SavedRun:
        """The trainer's system, parameters, loss and configuration.

        Parameters
        ----------
        trainer : Trainer
        source : str
            Stored as :attr:`source`.

        Returns
        -------
        SavedRun
        """
        return cls(trainer.system, trainer.params, trainer.params_initial, trainer.loss,
                   trainer.get_config(), source)

    def evaluation_inputs(self, runs: int | None = None, seed: int | None = None,
                          system: CellSystem | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Initial states and noise of the evaluation batch of ``seed``.

        With the defaults (the run's seed and evaluation batch size) this is
        exactly the batch training evaluated; another seed gives runs that
        training never saw.

        Parameters
        ----------
        runs : int, optional
            Batch size; default the run's ``eval_batch``.
        seed : int, optional
            Default the run's seed.
        system : CellSystem, optional
            Default :attr:`system` (another noise level draws the same numbers).

        Returns
        -------
        x0, xi : ndarray
        """
        runs = self.config["eval_batch"] if runs is None else _validation.size(runs, "runs", 1)
        seed = self.config["seed"] if seed is None else _validation.integer(seed, "seed", 0)
        system = self.system if system is None else system
        return system.sample_inputs(np.random.default_rng(seed_streams(seed)[2]), runs)

    def with_noise(self, noise: float) -> CellSystem:
        """The same system with another noise level."""
        return CellSystem(**dict(self.system.get_config(), noise=noise))

    def evaluate(self, runs: int | None = None, seed: int | None = None,
                 noise: float | None = None) -> tuple[dict, dict]:
        """Statistics of an evaluation batch before and after training.

        Parameters
        ----------
        runs, seed : int, optional
            As :meth:`evaluation_inputs`.
        noise : float, optional
            Evaluate at another noise level; default the trained one.

        Returns
        -------
        before, after : dict
            As :meth:`Trainer.evaluate`, for :attr:`params_initial` and
            :attr:`params`.
        """
        system = self.system if noise is None else self.with_noise(noise)
        inputs = self.evaluation_inputs(runs, seed, system)
        return (evaluate_batch(system, self.loss, self.params_initial, inputs),
                evaluate_batch(system, self.loss, self.params, inputs))

    def run(self, n_runs: int, rng: np.random.Generator, *, trajectory: bool = False,
            all_channels: bool = False) -> np.ndarray:
        """Final patterns of fresh runs of the trained system (see :meth:`CellSystem.run`)."""
        return self.system.run(self.params, rng, n_runs, trajectory=trajectory,
                               all_channels=all_channels)
