"""The run folder ``kdentropy train --out`` fills: its files, written and read here only.

========================  ==================================================
``checkpoint.npz``        everything to resume (:mod:`kdentropy.cells.checkpoint`)
``params.npz``            trained and initial parameter vectors and the trainer's
                          configuration (JSON), under the checkpoint's array names
``history.csv``           one row per iteration (:func:`history_csv`)
``summary.json``          :func:`summary`
``training.png``          :func:`kdentropy.cells.figure.training_figure`
========================  ==================================================

:func:`write_results` writes all but the checkpoint (the trainer saves that
while training); :func:`load_run` reads a trained system back, safely (no
pickles; shapes and values checked against the stored configuration).

Examples
--------
>>> import tempfile
>>> from kdentropy.cells import CellSystem, train
>>> from kdentropy.runs import load_run, write_results
>>> res = train(CellSystem(n_cells=8, steps=4, hidden=(8,)), iterations=2, batch=8,
...             eval_batch=16, backend="numpy")
>>> with tempfile.TemporaryDirectory() as out:
...     _ = write_results(res, out, "numpy", plot=False)
...     run = load_run(out)
>>> run.system.n_cells, bool((run.params == res.params).all())
(8, True)
>>> before, after = run.evaluate()          # the evaluation batch training reported
>>> after["hard_entropy"] == res.after["hard_entropy"]
True
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _validation
from .cells import CellSystem, History, SavedRun, Trainer, TrainResult
from .cells.checkpoint import PARAMS_INITIAL_KEY, PARAMS_KEY
from .cells.metrics import ESTIMATE_KEYS
from .cells.loss import loss_from_config
from .entropy import pattern_counts

__all__ = ["CHECKPOINT", "PARAMS", "HISTORY", "SUMMARY", "FIGURE", "RUN_FILES", "files_in",
           "checkpoint_in", "history_csv", "summary", "mode_pattern", "write_results",
           "write_figure", "load_run"]

CHECKPOINT = "checkpoint.npz"
PARAMS = "params.npz"
HISTORY = "history.csv"
SUMMARY = "summary.json"
FIGURE = "training.png"
#: The files a run writes; a folder holding any of them holds a run.
RUN_FILES = (CHECKPOINT, PARAMS, SUMMARY, HISTORY, FIGURE)

# The members params.npz holds.
_PARAMS_MEMBERS = (PARAMS_KEY, PARAMS_INITIAL_KEY, "config")


def files_in(folder: str | os.PathLike) -> list[str]:
    """The run files ``folder`` already holds, in the order of :data:`RUN_FILES`.

    Parameters
    ----------
    folder : path-like

    Returns
    -------
    list of str
        File names; empty for a folder without a run (or no folder).
    """
    return [f for f in RUN_FILES if os.path.exists(os.path.join(folder, f))]


def checkpoint_in(folder: str | os.PathLike) -> str:
    """The path of ``folder``'s checkpoint (whether or not it exists yet)."""
    return os.path.join(os.fspath(folder), CHECKPOINT)


def history_csv(history: History) -> str:
    """The content of ``history.csv``: a header, one line per row, empty fields for NaN.

    Parameters
    ----------
    history : History

    Returns
    -------
    str
        Floats as ``repr`` (read back exactly), iterations as integers.
    """
    buf = io.StringIO()
    buf.write(",".join(History.COLUMNS) + "\n")
    for row in zip(*(history[c] for c in History.COLUMNS)):
        fields = []
        for c, v in zip(History.COLUMNS, row):
            v = float(v)
            fields.append("" if math.isnan(v) else (str(int(v)) if c == "iteration" else repr(v)))
        buf.write(",".join(fields) + "\n")
    return buf.getvalue()


def _pattern_text(row: np.ndarray) -> str:
    return "".join("1" if v else "0" for v in row)


def mode_pattern(final: np.ndarray, threshold: float) -> str:
    """The most common binarised row of ``final``, as 0/1 text.

    Parameters
    ----------
    final : ndarray, shape (N, D)
        Final visible states of a batch.
    threshold : float
        A cell is on where ``final >= threshold``.

    Returns
    -------
    str
        ``D`` characters.
    """
    P, counts = pattern_counts(final, threshold)
    return _pattern_text(P[int(np.argmax(counts))])


def summary(result: TrainResult, backend: str) -> dict[str, Any]:
    """The content of ``summary.json``.

    Parameters
    ----------
    result : TrainResult
    backend : str
        The entropy backend the run used (as reported to the user).

    Returns
    -------
    dict
        Entropies, distinct patterns, fraction on and boundaries before and
        after; the estimated entropy of the system with its 95 % interval
        before and after (``entropy_estimate_before``, ``entropy_low_before``,
        ``entropy_high_before``, ``entropy_stderr_before``, ``coverage_before``,
        ``estimator_before`` and the same ``_after``); the most common pattern and its share; iterations, time, seed,
        backend, evaluation batch size, unit and the trainer configuration.
    """
    before, after, trainer = result.before, result.after, result.trainer
    return {
        "hard_entropy_before": before["hard_entropy"],
        "hard_entropy_after": after["hard_entropy"],
        "soft_entropy_before": before["soft_entropy"],
        "soft_entropy_after": after["soft_entropy"],
        "fraction_on": after["fraction_on"],
        "boundaries": after["boundaries"],
        "distinct_before": before["distinct"],
        # The entropy of the system estimated from the evaluation batch (nats),
        # with its 95 % interval: kdentropy.cells.metrics.estimate_stats.
        **{f"{k}_{when}": stats[k] for when, stats in (("before", before), ("after", after))
           for k in ESTIMATE_KEYS if k in stats},
        "distinct_after": after["distinct"],
        "fraction_on_before": before["fraction_on"],
        "boundaries_before": before["boundaries"],
        "mode_pattern": mode_pattern(after["final"], trainer.loss.threshold),
        "mode_fraction": after["mode_fraction"],
        "iterations": trainer.iteration,
        "elapsed_s": result.elapsed_s,
        "seed": trainer.seed,
        "backend": backend,
        "eval_batch": trainer.eval_batch,
        "unit": "nats",
        "config": trainer.get_config(),
    }


def write_figure(trainer: Trainer, params_initial: np.ndarray, path: str | os.PathLike,
                 evaluations: tuple[dict, dict] | None = None) -> None:
    """Draw the training figure into a PNG file.

    Parameters
    ----------
    trainer : Trainer
        The trained trainer (its current parameters are "after").
    params_initial : ndarray
        The parameters "before".
    path : path-like
        Where the PNG goes.
    evaluations : (dict, dict), optional
        The evaluations before and after, when already computed (their
        estimated entropies become the figure's error bars).

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    """
    from .cells.figure import training_figure
    training_figure(trainer, params_initial, evaluations=evaluations).savefig(path, dpi=100)


def write_results(result: TrainResult, out: str | os.PathLike, backend: str, *,
                  plot: bool = True) -> tuple[list[str], str]:
    """Write ``params.npz``, ``history.csv``, ``summary.json`` and ``training.png`` into ``out``.

    Parameters
    ----------
    result : TrainResult
    out : path-like
        An existing directory; ``checkpoint.npz`` is expected there already
        (the trainer wrote it) and is listed among the files.
    backend : str
        The entropy backend the run used.
    plot : bool, optional
        Also draw ``training.png`` (needs matplotlib). Default True.

    Returns
    -------
    written : list of str
        The file names, in the order the command line reports them.
    note : str
        Empty, or why the figure is missing.
    """
    trainer = result.trainer
    np.savez(os.path.join(out, PARAMS), **{
        PARAMS_KEY: result.params, PARAMS_INITIAL_KEY: result.params_initial,
        "config": np.array(json.dumps(trainer.get_config()))})
    with open(os.path.join(out, HISTORY), "w", encoding="utf-8", newline="") as fh:
        fh.write(history_csv(trainer.history))
    with open(os.path.join(out, SUMMARY), "w", encoding="utf-8") as fh:
        json.dump(summary(result, backend), fh, indent=2)
        fh.write("\n")
    written = [PARAMS, HISTORY, SUMMARY, CHECKPOINT]
    note = ""
    if plot:
        try:
            write_figure(trainer, result.params_initial, os.path.join(out, FIGURE),
                         (result.before, result.after))
            written.append(FIGURE)
        except ImportError:
            note = f" (matplotlib not installed: no {FIGURE})"
    return written, note


def _read_params(path: str) -> SavedRun:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read {path!r}: {exc}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path!r} is not a kdentropy {PARAMS} file")
    with data:
        missing = [k for k in _PARAMS_MEMBERS if k not in data.files]
        if missing:
            raise ValueError(f"{path!r} is not a kdentropy {PARAMS} file "
                             f"(no {', '.join(missing)})")
        try:
            config = json.loads(str(data["config"]))
            system = CellSystem(**config["system"])
            loss = loss_from_config(config["loss"])
            vectors = []
            for key in (PARAMS_KEY, PARAMS_INITIAL_KEY):
                v = _validation.float_vector(data[key], key, system.n_params)
                vectors.append(_validation.finite_vector(v.copy(), key))
        except (KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path!r} is damaged: {type(exc).__name__}: {exc}") from None
    return SavedRun(system, vectors[0], vectors[1], loss, config, path)


def _is_checkpoint(path: str) -> bool:
    """Whether ``path`` is an ``.npz`` file with a checkpoint's format tag."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return "format" in data.files
    except Exception:  # not an npz at all: _read_params says what is wrong
        return False


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
        for name in (PARAMS, CHECKPOINT):
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                break
        else:
            raise ValueError(f"{path!r} holds no {PARAMS} or {CHECKPOINT}")
        path = candidate
    elif not os.path.isfile(path):
        raise ValueError(f"no such file or folder: {path!r}")
    if os.path.basename(path) == CHECKPOINT or _is_checkpoint(path):
        run = SavedRun.from_trainer(Trainer.load(path), path)
    else:
        run = _read_params(path)
    if params is not None:
        run.params = run.system.check_params(params).copy()
    return run
