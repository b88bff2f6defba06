"""Diagnostics of a training run: what to tell the user when training cannot work.

The soft entropy gives training its gradient only while runs count as
similar at all: with a kernel too narrow for the pattern size it stays at
``log(batch)`` and training silently does nothing. :func:`warn_if_flat`
catches this after :data:`FLAT_CHECK_AT` iterations and says what to change.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np

from .history import History
from .loss import auto_sigma

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["FLAT_CHECK_AT", "FLAT_FRACTION", "FlatEntropyWarning", "flat_entropy_message",
           "warn_if_flat"]

#: After this many iterations :meth:`Trainer.run` checks that the soft entropy moved.
FLAT_CHECK_AT = 10
#: "Flat": every training batch's soft entropy within this fraction of log(batch).
#: Measured over iterations 1-10 (lowest value / log 64): 0.979 for sigma 0.5 on a
#: 12 x 12 grid, which never trains; 0.08-0.39 for the automatic sigma on lines,
#: rings, grids and tori that do.
FLAT_FRACTION = 0.05


class FlatEntropyWarning(RuntimeWarning):
    """The soft entropy stayed at its maximum: training gets no usable gradient from it."""


def flat_entropy_message(history: History, batch: int, sigma: float, n_cells: int,
                         at: int = FLAT_CHECK_AT) -> str | None:
    """One line saying what to change when the soft entropy has not moved, else None.

    With a kernel too narrow for the pattern size every pair of runs looks
    different, the soft entropy sits at ``log(batch)`` and its gradient
    vanishes, so training silently does nothing (only the anti-collapse term
    acts). This is visible after a few iterations: every training batch's
    soft entropy within :data:`FLAT_FRACTION` of ``log(batch)``.

    Parameters
    ----------
    history : History
        Rows of iterations 1 to ``at`` at least.
    batch : int
        Runs per training batch.
    sigma : float
        The loss's kernel width.
    n_cells : int
        Scored cells D.
    at : int, optional
        Iterations to look at. Default :data:`FLAT_CHECK_AT`.

    Returns
    -------
    str or None
    """
    iteration = history["iteration"]
    soft = history["soft_entropy"][(iteration >= 1) & (iteration <= at)]
    if len(soft) < at or batch < 2:
        return None
    top = math.log(batch)
    if not np.all(soft >= (1.0 - FLAT_FRACTION) * top):
        return None
    suggested = auto_sigma(n_cells)
    advice = (f"use sigma 'auto' ({suggested:.3g} for {n_cells} cells; --sigma auto)"
              if sigma < suggested else f"try a sigma larger than {sigma:g} (--sigma)")
    return (f"the soft entropy stayed within {100 * FLAT_FRACTION:g}% of log {batch} = "
            f"{top:.3f} for the first {at} iterations: kernel width sigma {sigma:g} is too "
            f"narrow for {n_cells} cells and gives training almost no gradient; {advice}")


def warn_if_flat(trainer: Trainer) -> None:
    """Issue :class:`FlatEntropyWarning` when the trainer's soft entropy has not moved.

    Parameters
    ----------
    trainer : Trainer
        After at least :data:`FLAT_CHECK_AT` iterations (earlier: nothing happens).
    """
    sigma = trainer.loss.sigma
    assert isinstance(sigma, float)  # resolved in the trainer's constructor
    message = flat_entropy_message(trainer.history, trainer.batch, sigma,
                                   trainer.system.n_cells)
    if message is not None:
        warnings.warn(message, FlatEntropyWarning, stacklevel=3)
