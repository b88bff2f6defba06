"""What a training call returns: :class:`TrainResult`."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from .history import History

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["TrainResult"]


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` and :meth:`Trainer.fit` return.

    Attributes
    ----------
    params : ndarray
        Trained parameters.
    params_initial : ndarray
        Parameters before training.
    history : History
    before, after : dict
        :meth:`Trainer.evaluate` of the evaluation batch before and after
        training (``final`` holds its final states).
    elapsed_s : float
        Wall-clock time of the training loop, evaluations included.
    trainer : Trainer
        For further training or :meth:`Trainer.save`.
    iterations_run : int
        Iterations this call took (``elapsed_s`` is their time); less than
        ``trainer.iteration`` after a resume.
    """

    params: np.ndarray
    params_initial: np.ndarray
    history: History
    before: dict
    after: dict
    elapsed_s: float
    trainer: Trainer
    iterations_run: int = -1

    def __post_init__(self) -> None:
        if self.iterations_run < 0:  # built by hand without it: the whole run
            self.iterations_run = self.trainer.iteration
