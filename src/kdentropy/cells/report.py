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
from .system import CellSystem
from .trainer import Trainer, TrainResult

__all__ = ["plot_training", "training_figure", "summary", "summary_text", "evaluation_lines",
           "write_report"]


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


def evaluation_lines(before: dict, after: dict, system: CellSystem, runs: int,
                     threshold: float) -> list[str]:
    """The lines that describe an evaluation batch before and after training.

    Shared by ``kdentropy train`` and ``kdentropy evaluate``, so the two
    print the same numbers in the same form.

    Parameters
    ----------
    before, after : dict
        :func:`~kdentropy.cells.trainer.evaluate_batch` results.
    system : CellSystem
    runs : int
        Runs in the batch.
    threshold : float
        The binarisation threshold (for the most common pattern).

    Returns
    -------
    list of str
    """
    size = "x".join(map(str, system.shape))
    P, counts = pattern_counts(after["final"], threshold)
    mode = _pattern_string(P[int(np.argmax(counts))])
    if len(system.shape) == 2:  # rows of a grid pattern separated by "/"
        W = system.shape[1]
        mode = "/".join(mode[i:i + W] for i in range(0, len(mode), W))
    return [
        f"evaluation: {runs} fresh runs of a {system.topology} of {size} cells "
        f"(1+{system.hidden_channels} channels), {system.steps} steps, noise {system.noise:g}",
        f"  hard entropy  {before['hard_entropy']:7.4f} -> {after['hard_entropy']:7.4f} nats"
        f"   (distinct patterns {before['distinct']} -> {after['distinct']}; "
        f"log {runs} = {np.log(runs):.4f})",
        f"  soft entropy  {before['soft_entropy']:7.4f} -> {after['soft_entropy']:7.4f} nats",
        f"  fraction on   {before['fraction_on']:7.3f} -> {after['fraction_on']:7.3f}"
        f"   boundaries {before['boundaries']:.2f} -> {after['boundaries']:.2f}",
        f"  most common pattern ({100 * after['mode_fraction']:.0f}% of runs): {mode}",
    ]


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
    trainer = result.trainer
    lines = [f"trained {trainer.iteration} iterations in {result.elapsed_s:.1f} s "
             f"(seed {trainer.seed}, backend {backend}, engine {trainer.system.engine})",
             *evaluation_lines(result.before, result.after, trainer.system, trainer.eval_batch,
                               trainer.loss.threshold),
             f"wrote {', '.join(written)} to {os.fspath(out)}{note}"]
    return "\n".join(lines) + "\n"


def _title(system: CellSystem, seed: int) -> str:
    pos = "no position features" if system.position == "none" else \
        f"{system.position} position features"
    size = "x".join(map(str, system.shape))
    return (f"{system.topology} of {size} cells, 1 visible + {system.hidden_channels} hidden "
            f"channels, {pos}; {system.steps} steps, rate {system.rate:g}, "
            f"noise {system.noise:g}, seed {seed}")


def plot_training(trainer: Trainer, params_initial: np.ndarray, path: str | os.PathLike,
                  n_show: int = 4) -> None:
    """Draw :func:`training_figure` into a PNG file.

    Parameters
    ----------
    trainer : Trainer
        The trained trainer (its current parameters are "after").
    params_initial : ndarray
        The parameters "before".
    path : path-like
        Where the PNG goes.
    n_show : int, optional
        See :func:`training_figure`.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    """
    training_figure(trainer, params_initial, n_show).savefig(path, dpi=100)


def training_figure(trainer: Trainer, params_initial: np.ndarray, n_show: int = 4) -> Any:
    """The figure of a training run: patterns before and after, entropy and loss curves.

    Rows 1 and 2 show ``n_show`` runs of the evaluation batch before and
    after training: for a 1-D system their space-time diagrams of the visible
    channel (with a colour bar: untrained states sit near 1/2, where the
    scored pattern is invisible in grey) and, below each, the binarised final
    pattern; for a 2-D system the binarised final patterns themselves (on =
    black), a gallery of ``2 n_show`` runs. Row 3 shows the entropies during
    training, hard entropy of the evaluation batch as markers at the
    iterations where it was measured, with the ``log N`` ceilings of the
    training and evaluation batches as dashed lines, and the loss and the
    anti-collapse penalty on a log scale. The title gives topology, channels,
    noise and seed.

    Parameters
    ----------
    trainer : Trainer
        The trained trainer (its current parameters are "after").
    params_initial : ndarray
        The parameters "before".
    n_show : int, optional
        Evaluation runs shown per row (1-D) or half the gallery (2-D). Default 4.

    Returns
    -------
    matplotlib.figure.Figure
        With an Agg canvas attached (``savefig`` works without pyplot).

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
    threshold = trainer.loss.threshold
    x0, xi = trainer.eval_inputs
    two_d = len(system.shape) == 2
    k = min(n_show * (2 if two_d else 1), x0.shape[0])
    trajs = [system.rollout(p, x0[:k], xi[:, :k], keep_caches=False,
                            keep_trajectory=True).trajectory[..., 0]
             for p in (params_initial, trainer.params)]
    ncols = k // 2 if two_d and k > 1 else k
    fig = Figure(figsize=(max(2.4 * ncols, 9.0) + 0.8, 9.5))
    FigureCanvasAgg(fig)
    # Fixed margins rather than constrained layout, which triples the drawing time.
    grid = fig.add_gridspec(3, 1, height_ratios=[1, 1, 1.1], left=0.07, right=0.93,
                            bottom=0.06, top=0.91, hspace=0.4)
    fig.suptitle(_title(system, trainer.seed), fontsize=10)
    for row, (traj, label) in enumerate(zip(trajs, ("before", "after"))):
        if two_d:
            _gallery(fig, grid[row], traj[-1], system, threshold, label, ncols)
        else:
            _spacetime(fig, grid[row], traj, threshold, label)
    curves = grid[2].subgridspec(1, 2, wspace=0.25)
    _entropy_panel(fig.add_subplot(curves[0]), trainer)
    _loss_panel(fig.add_subplot(curves[1]), trainer)
    return fig


def _spacetime(fig: Any, cell: Any, traj: np.ndarray, threshold: float, label: str) -> None:
    """Space-time diagrams (steps x cells) with the binarised final pattern under each."""
    k = traj.shape[1]
    sub = cell.subgridspec(2, k + 1, height_ratios=[6, 1], width_ratios=[1] * k + [0.06],
                           wspace=0.25, hspace=0.15)
    image = None
    for j in range(k):
        ax = fig.add_subplot(sub[0, j])
        image = ax.imshow(traj[:, j, :], cmap="gray_r", vmin=0, vmax=1, aspect="auto",
                          interpolation="nearest")
        ax.set_title(f"{label} training, run {j + 1}", fontsize=9)
        ax.tick_params(labelsize=7, labelbottom=False)
        if j == 0:
            ax.set_ylabel("step", fontsize=8)
        bx = fig.add_subplot(sub[1, j])
        bx.imshow((traj[-1:, j, :] >= threshold).astype(float), cmap="gray_r", vmin=0, vmax=1,
                  aspect="auto", interpolation="nearest")
        bx.set_yticks([])
        bx.tick_params(labelsize=7)
        bx.set_xlabel("cell (bottom: final pattern, on = black)", fontsize=7)
    cax = fig.add_subplot(sub[0, k])
    fig.colorbar(image, cax=cax).set_label("visible state", fontsize=8)
    cax.tick_params(labelsize=7)


def _gallery(fig: Any, cell: Any, final: np.ndarray, system: CellSystem, threshold: float,
             label: str, ncols: int) -> None:
    """Binarised final patterns of 2-D runs, two rows of ``ncols``."""
    k = final.shape[0]
    nrows = 2 if k > ncols else 1
    sub = cell.subgridspec(nrows, ncols, wspace=0.15, hspace=0.3)
    for j in range(k):
        ax = fig.add_subplot(sub[j // ncols, j % ncols])
        ax.imshow(system.layout.grid_view(final[j] >= threshold).astype(float), cmap="gray_r",
                  vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if j == 0:
            ax.set_ylabel(f"{label} training", fontsize=9)
        ax.set_title(f"run {j + 1}", fontsize=8)


def _entropy_panel(ax: Any, trainer: Trainer) -> None:
    h = trainer.history.as_arrays()
    ev = trainer.history.evaluations()
    rows = ~np.isnan(h["soft_entropy"])
    it = h["iteration"][rows]
    ax.plot(it, h["soft_entropy"][rows], lw=1, alpha=0.8, label="soft entropy (training batch)")
    line = ax.plot(it, h["hard_entropy"][rows], lw=1, alpha=0.8,
                   label="hard entropy (training batch)")[0]
    ax.axhline(np.log(trainer.batch), color=line.get_color(), ls="--", lw=0.8,
               label=f"log {trainer.batch} (training batch)")
    dots = ax.plot(ev["iteration"], ev["eval_hard_entropy"], "o", ms=4,
                   label=f"hard entropy ({trainer.eval_batch} fresh runs)")[0]
    ax.axhline(np.log(trainer.eval_batch), color=dots.get_color(), ls="--", lw=0.8,
               label=f"log {trainer.eval_batch} (fresh runs)")
    ax.set_xlabel("iteration", fontsize=8)
    ax.set_ylabel("entropy (nats)", fontsize=8)
    ax.set_ylim(bottom=0, top=1.08 * np.log(max(trainer.batch, trainer.eval_batch)))
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    ax.set_title("entropy", fontsize=9)


def _loss_panel(ax: Any, trainer: Trainer) -> None:
    h = trainer.history.as_arrays()
    rows = ~np.isnan(h["loss"])
    it = h["iteration"][rows]
    weight = trainer.loss.anti_collapse
    ax.plot(it, h["loss"][rows], lw=1, label="loss")
    if weight > 0:
        ax.plot(it, weight * h["penalty"][rows], lw=1,
                label=f"anti-collapse term ({weight:g} x penalty)")
    if rows.any() and np.nanmin(h["loss"][rows]) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("iteration", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    ax.set_title("training loss", fontsize=9)
