"""The written record of a training run: parameter file, history, summary and figure.

:func:`write_report` writes what ``kdentropy train`` leaves in its output
directory; :func:`summary_text` is what it prints. Both take the
:class:`~kdentropy.cells.trainer.TrainResult` of :func:`~kdentropy.cells.train`
or :meth:`~kdentropy.cells.Trainer.fit`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..entropy import pattern_counts
from .trainer import Trainer, TrainResult

__all__ = ["plot_training", "summary", "summary_text", "write_report"]


def _pattern_string(row: np.ndarray) -> str:
    return "".join("1" if v else "0" for v in row)


def _mode_pattern(result: TrainResult) -> str:
    """The most common final pattern of the evaluation batch after training, as 0/1 text."""
    P, counts = pattern_counts(result.after["final"], result.trainer.loss.threshold)
    return _pattern_string(P[int(np.argmax(counts))])


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
        after; the most common pattern and its share; iterations, time, seed,
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
        "distinct_after": after["distinct"],
        "fraction_on_before": before["fraction_on"],
        "boundaries_before": before["boundaries"],
        "mode_pattern": _mode_pattern(result),
        "mode_fraction": after["mode_fraction"],
        "iterations": trainer.iteration,
        "elapsed_s": result.elapsed_s,
        "seed": trainer.seed,
        "backend": backend,
        "eval_batch": trainer.eval_batch,
        "unit": "nats",
        "config": trainer.get_config(),
    }


def write_report(result: TrainResult, out: str | os.PathLike, backend: str, *,
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
    config = trainer.get_config()
    # "theta" keys: the file format of earlier versions, which users' scripts read.
    np.savez(os.path.join(out, "params.npz"), theta=result.params,
             theta_initial=result.params_initial, config=np.array(json.dumps(config)))
    trainer.history.to_csv(os.path.join(out, "history.csv"))
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as fh:
        json.dump(summary(result, backend), fh, indent=2)
        fh.write("\n")
    written = ["params.npz", "history.csv", "summary.json", "checkpoint.npz"]
    note = ""
    if plot:
        try:
            plot_training(trainer, result.params_initial, os.path.join(out, "training.png"))
            written.append("training.png")
        except ImportError:
            note = " (matplotlib not installed: no training.png)"
    return written, note


def summary_text(result: TrainResult, backend: str, written: list[str], out: str | os.PathLike,
                 note: str = "") -> str:
    """The summary ``kdentropy train`` prints: entropies before and after, and the files.

    Parameters
    ----------
    result : TrainResult
    backend : str
        The entropy backend the run used.
    written, note
        From :func:`write_report`.
    out : path-like
        The output directory.

    Returns
    -------
    str
        Several lines, with a final newline.
    """
    before, after, trainer = result.before, result.after, result.trainer
    system = trainer.system
    lines = [
        f"trained {trainer.iteration} iterations in {result.elapsed_s:.1f} s "
        f"(seed {trainer.seed}, backend {backend})",
        f"evaluation: {trainer.eval_batch} fresh runs of {system.n_cells} cells, "
        f"{system.steps} steps",
        f"  hard entropy  {before['hard_entropy']:7.4f} -> {after['hard_entropy']:7.4f} nats"
        f"   (distinct patterns {before['distinct']} -> {after['distinct']})",
        f"  soft entropy  {before['soft_entropy']:7.4f} -> {after['soft_entropy']:7.4f} nats",
        f"  fraction on   {before['fraction_on']:7.3f} -> {after['fraction_on']:7.3f}"
        f"   boundaries {before['boundaries']:.2f} -> {after['boundaries']:.2f}",
        f"  most common pattern ({100 * after['mode_fraction']:.0f}% of runs): "
        f"{_mode_pattern(result)}",
        f"wrote {', '.join(written)} to {os.fspath(out)}{note}",
    ]
    return "\n".join(lines) + "\n"


def plot_training(trainer: Trainer, params_initial: np.ndarray, path: str | os.PathLike,
                  n_show: int = 4) -> None:
    """Space-time diagrams of a few evaluation runs before/after, and the entropy curves.

    Parameters
    ----------
    trainer : Trainer
        The trained trainer (its current parameters are "after").
    params_initial : ndarray
        The parameters "before".
    path : path-like
        Where the PNG goes.
    n_show : int, optional
        Evaluation runs shown in each row. Default 4.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    """
    # The object-oriented API with an explicit Agg canvas: no pyplot, so no
    # global backend switch and no interference with the caller's figures.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    system = trainer.system
    x0, xi = trainer.eval_inputs
    k = min(n_show, x0.shape[0])
    trajs = [system.rollout(p, x0[:k], xi[:, :k], keep_caches=False,
                            keep_trajectory=True).trajectory
             for p in (params_initial, trainer.params)]
    fig = Figure(figsize=(2.4 * k + 0.8, 8.5))
    FigureCanvasAgg(fig)
    # Fixed margins rather than constrained layout, which triples the drawing time.
    grid = fig.add_gridspec(3, k, height_ratios=[1, 1, 1.1], left=0.07, right=0.98,
                            bottom=0.06, top=0.94, hspace=0.45, wspace=0.25)
    fig.text(0.5, 0.99, f"{system.n_cells} cells, {system.steps} steps: space-time diagrams of "
             f"evaluation runs (cell on = black), and the entropy during training",
             ha="center", va="top", fontsize=10)
    for row, (traj, label) in enumerate(zip(trajs, ("before", "after"))):
        for j in range(k):
            ax = fig.add_subplot(grid[row, j])
            ax.imshow(traj[:, j, :], cmap="gray_r", vmin=0, vmax=1, aspect="auto",
                      interpolation="nearest")
            ax.set_title(f"{label} training, run {j + 1}", fontsize=9)
            ax.set_xlabel("cell", fontsize=8)
            if j == 0:
                ax.set_ylabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
    ax = fig.add_subplot(grid[2, :])
    h = trainer.history.as_arrays()
    ev = trainer.history.evaluations()
    train_rows = ~np.isnan(h["soft_entropy"])
    ax.plot(h["iteration"][train_rows], h["soft_entropy"][train_rows], lw=1, alpha=0.7,
            label="soft entropy (training batch)")
    ax.plot(h["iteration"][train_rows], h["hard_entropy"][train_rows], lw=1, alpha=0.7,
            label="hard entropy (training batch)")
    ax.plot(ev["iteration"], ev["eval_hard_entropy"], "o-", ms=3,
            label=f"hard entropy ({trainer.eval_batch} fresh runs)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("entropy (nats)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
