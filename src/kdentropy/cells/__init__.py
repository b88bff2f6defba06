"""Cell systems whose final binary patterns are trained to be reproducible.

D cells sit on a line, a ring, a 2-D grid or a torus; each has a visible
state and optional hidden channels in [0, 1] and is updated by one small MLP
shared by all cells, from all channels of its neighbourhood (and optionally
its position), with noise at every step. A batch of N runs from random initial states gives
N final patterns; training minimises their soft entropy (plus an anti-collapse
term) by back-propagation through time, and the reported quality is the exact
entropy of a fresh evaluation batch.

One job per module:

:mod:`~kdentropy.cells.topology`
    where the cells sit: neighbourhoods and position features (:class:`Line`,
    :class:`Ring`, :class:`Grid`, :class:`Torus`; a new arrangement is one
    new class);
:mod:`~kdentropy.cells.system`
    :class:`CellSystem`: roll-out and back-propagation through time, with a
    NumPy reference engine and the Numba kernels of ``_kernels``;
:mod:`~kdentropy.cells.loss`
    :class:`ReproducibilityLoss`, and why the anti-collapse term is what it is;
:mod:`~kdentropy.cells.metrics`
    :func:`pattern_stats` of a batch of final patterns, and of a system's batch;
:mod:`~kdentropy.cells.history`
    :class:`History`, the per-iteration record and its CSV form;
:mod:`~kdentropy.cells.checkpoint`
    the ``.npz`` checkpoint format and its safe reading;
:mod:`~kdentropy.cells.trainer`
    :class:`Trainer`, :func:`train` and :class:`TrainResult`;
:mod:`~kdentropy.cells.figure`
    the figure of a training run;
:mod:`~kdentropy.cells.saved`
    :class:`SavedRun`: a trained system, re-run and re-evaluated.

The files of a run folder (``kdentropy train --out``) are
:mod:`kdentropy.runs`'s; :func:`load_run` is imported from there.

Examples
--------
>>> import numpy as np
>>> from kdentropy.cells import CellSystem, train
>>> res = train(CellSystem(n_cells=8, steps=4, hidden=(8,)), iterations=2, batch=8,
...             eval_batch=16, backend="numpy")
>>> res.trainer.iteration, res.after["final"].shape
(2, (16, 8))
"""

from typing import Any

from .history import History
from .loss import ReproducibilityLoss, auto_sigma
from .metrics import pattern_stats
from .saved import SavedRun
from .system import CellSystem, Rollout
from .topology import Grid, Line, Ring, Topology, Torus
from .diagnostics import FlatEntropyWarning
from .result import TrainResult
from .trainer import Trainer, train

__all__ = [
    "CellSystem",
    "Rollout",
    "ReproducibilityLoss",
    "auto_sigma",
    "FlatEntropyWarning",
    "pattern_stats",
    "History",
    "Trainer",
    "TrainResult",
    "train",
    "Topology",
    "Line",
    "Ring",
    "Grid",
    "Torus",
    "SavedRun",
    "load_run",
]


def __getattr__(name: str) -> Any:
    # load_run reads run folders, which kdentropy.runs alone knows; importing
    # it lazily keeps cells free of that module (which imports cells).
    if name == "load_run":
        from ..runs import load_run
        return load_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
