"""A trained cell system back from disk: :func:`load_run` and :class:`SavedRun`.

``kdentropy train`` leaves ``params.npz`` (the trained and the initial
parameter vectors and the trainer's configuration) and ``checkpoint.npz``
(everything needed to resume) in its output folder. :func:`load_run` reads
either, safely (no pickles; shapes and values checked against the stored
configuration), and returns the system, its parameters and its loss, ready
to run fresh batches or to re-evaluate.

Examples
--------
>>> import tempfile
>>> from kdentropy.cells import CellSystem, load_run, report, train
>>> res = train(CellSystem(n_cells=8, steps=4, hidden=(8,)), iterations=2, batch=8,
...             eval_batch=16, progress=False, backend="numpy")
>>> with tempfile.TemporaryDirectory() as out:
...     _ = report.write_report(res, out, "numpy", plot=False)
...     run = load_run(out)
>>> run.system.n_cells, bool((run.params == res.params).all())
(8, True)
>>> before, after = run.evaluate()          # the evaluation batch training reported
>>> after["hard_entropy"] == res.after["hard_entropy"]
True
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .. import _validation
from .loss import ReproducibilityLoss
from .system import CellSystem
from .trainer import Trainer, evaluate_batch, seed_streams

__all__ = ["SavedRun", "load_run"]

# The members params.npz holds ("theta": the name of format 1, kept for users' scripts).
_PARAMS_KEYS = ("theta", "theta_initial", "config")


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
        The file it was read from.
    """

    system: CellSystem
    params: np.ndarray
    params_initial: np.ndarray
    loss: ReproducibilityLoss
    config: dict
    source: str

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


def _loss_from_config(config: dict[str, Any]) -> ReproducibilityLoss:
    cfg = dict(config["loss"])
    cfg["band"] = tuple(cfg["band"])
    return ReproducibilityLoss(**cfg)


def _read_params(path: str) -> SavedRun:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read {path!r}: {exc}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path!r} is not a kdentropy params.npz file")
    with data:
        missing = [k for k in _PARAMS_KEYS if k not in data.files]
        if missing:
            raise ValueError(f"{path!r} is not a kdentropy params.npz file "
                             f"(no {', '.join(missing)})")
        try:
            config = json.loads(str(data["config"]))
            system = CellSystem(**config["system"])
            loss = _loss_from_config(config)
            vectors = []
            for key in ("theta", "theta_initial"):
                v = _validation.float_vector(data[key], key, system.n_params)
                vectors.append(_validation.finite_vector(v.copy(), key))
        except (KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path!r} is damaged: {type(exc).__name__}: {exc}") from None
    return SavedRun(system, vectors[0], vectors[1], loss, config, path)


def load_run(path: str | os.PathLike, *, params: ArrayLike | None = None) -> SavedRun:
    """Load a trained cell system from a run folder, ``params.npz`` or ``checkpoint.npz``.

    Parameters
    ----------
    path : path-like
        A folder written by ``kdentropy train`` (its ``params.npz`` is read,
        or its ``checkpoint.npz`` when training was interrupted before
        ``params.npz`` was written), or one of those files.
    params : array_like, optional
        Use these parameters instead of the stored ones (same length).

    Returns
    -------
    SavedRun

    Raises
    ------
    ValueError
        If nothing loadable is there, or the file is not a kdentropy file or
        is damaged; the message names the file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("params.npz", "checkpoint.npz"):
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                break
        else:
            raise ValueError(f"{path!r} holds no params.npz or checkpoint.npz")
        path = candidate
    elif not os.path.isfile(path):
        raise ValueError(f"no such file or folder: {path!r}")
    if os.path.basename(path) == "checkpoint.npz" or _is_checkpoint(path):
        trainer = Trainer.load(path)
        run = SavedRun(trainer.system, trainer.params, trainer.params_initial, trainer.loss,
                       trainer.get_config(), path)
    else:
        run = _read_params(path)
    if params is not None:
        run.params = run.system._check_params(params).copy()
    return run


def _is_checkpoint(path: str) -> bool:
    """Whether ``path`` is an ``.npz`` file with a checkpoint's format tag."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return "format" in data.files
    except Exception:  # not an npz at all: _read_params says what is wrong
        return False
