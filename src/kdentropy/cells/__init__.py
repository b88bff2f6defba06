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
    :func:`pattern_stats` of a batch of final patterns;
:mod:`~kdentropy.cells.history`
    :class:`History`, the per-iteration record and its CSV form;
:mod:`~kdentropy.cells.checkpoint`
    the ``.npz`` checkpoint format and its safe reading;
:mod:`~kdentropy.cells.trainer`
    :class:`Trainer`, :func:`train` and :class:`TrainResult`;
:mod:`~kdentropy.cells.report`
    the files and the figure ``kdentropy train`` writes;
:mod:`~kdentropy.cells.saved`
    :func:`load_run`: a trained system back from its run folder.

Examples
--------
>>> import numpy as np
>>> from kdentropy.cells import CellSystem, train
>>> res = train(CellSystem(n_cells=8, steps=4, hidden=(8,)), iterations=2, batch=8,
...             eval_batch=16, progress=False, backend="numpy")
>>> res.trainer.iteration, res.after["final"].shape
(2, (16, 8))
"""

from .history import History
from .loss import ReproducibilityLoss
from .metrics import pattern_stats
from .system import CellSystem, Rollout
from .topology import Grid, Line, Ring, Topology, Torus
from .trainer import Trainer, TrainingInterrupted, TrainResult, train
from .saved import SavedRun, load_run

__all__ = [
    "CellSystem",
    "Rollout",
    "ReproducibilityLoss",
    "pattern_stats",
    "History",
    "Trainer",
    "TrainResult",
    "TrainingInterrupted",
    "train",
    "Topology",
    "Line",
    "Ring",
    "Grid",
    "Torus",
    "SavedRun",
    "load_run",
]
