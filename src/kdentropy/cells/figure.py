"""The figure of a training run: patterns before and after, entropy and loss curves.

:func:`training_figure` draws it from a trained :class:`~kdentropy.cells.Trainer`
(:func:`kdentropy.runs.write_figure` puts it into a run folder).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .system import CellSystem
from .trainer import Trainer

__all__ = ["training_figure"]


def _title(system: CellSystem, seed: int) -> str:
    pos = "no position features" if system.position == "none" else \
        f"{system.position} position features"
    size = "x".join(map(str, system.shape))
    return (f"{system.topology} of {size} cells, 1 visible + {system.hidden_channels} hidden "
            f"channels, {pos}; {system.steps} steps, rate {system.rate:g}, "
            f"noise {system.noise:g}, seed {seed}")


def training_figure(trainer: Trainer, params_initial: np.ndarray, n_show: int = 4,
                    evaluations: tuple[dict, dict] | None = None) -> Any:
    """The figure of a training run: patterns before and after, entropy and loss curves.

    Rows 1 and 2 show ``n_show`` runs of the evaluation batch before and
    after training: for a 1-D system their space-time diagrams of the visible
    channel (with a colour bar: untrained states sit near 1/2, where the
    scored pattern is invisible in grey) and, below each, the binarised final
    pattern; for a 2-D system the binarised final patterns themselves (on =
    black), a gallery of ``2 n_show`` runs. Row 3 shows the entropies during
    training, hard entropy of the evaluation batch as markers at the
    iterations where it was measured, with the ``log N`` ceilings of the
    training and evaluation batches as dashed lines; at the first and last
    evaluation, the estimated entropy of the system with its 95 % interval
    as error bars (:func:`kdentropy.cells.metrics.estimate_stats`; the
    history keeps only the plug-in value of the evaluations in between), and the loss and the
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
    evaluations : (dict, dict), optional
        The evaluations before and after training
        (:func:`~kdentropy.cells.metrics.evaluate_batch` results), if the
        caller has them; by default they are computed again from the
        evaluation batch.

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
    # Fixed margins rather than matplotlib's constrained_layout, which triples the drawing time.
    grid = fig.add_gridspec(3, 1, height_ratios=[1, 1, 1.1], left=0.07, right=0.93,
                            bottom=0.08, top=0.91, hspace=0.4)
    fig.suptitle(_title(system, trainer.seed), fontsize=10)
    for row, (traj, label) in enumerate(zip(trajs, ("before", "after"))):
        if two_d:
            _gallery(fig, grid[row], traj[-1], system, threshold, label, ncols)
        else:
            _spacetime(fig, grid[row], traj, threshold, label)
    curves = grid[2].subgridspec(1, 2, wspace=0.25)
    if evaluations is None:
        evaluations = (trainer.evaluate(params_initial), trainer.evaluate())
    _entropy_panel(fig.add_subplot(curves[0]), trainer, evaluations)
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
    # One extra narrow column holds the key, so every run keeps a square panel.
    sub = cell.subgridspec(nrows, ncols + 1, width_ratios=[1] * ncols + [0.35],
                           wspace=0.35, hspace=0.8)
    for j in range(k):
        ax = fig.add_subplot(sub[j // ncols, j % ncols])
        ax.imshow(system.layout.grid_view(final[j] >= threshold).astype(float), cmap="gray_r",
                  vmin=0, vmax=1, interpolation="nearest")
        ax.tick_params(labelsize=6, length=2)
        ax.set_xlabel("column", fontsize=7, labelpad=1)
        ax.set_ylabel(f"{label} training\nrow" if j == 0 else "row", fontsize=7,
                      labelpad=1)
        ax.set_title(f"{label}, run {j + 1}", fontsize=8)
    key = fig.add_subplot(sub[0, ncols])
    key.imshow([[1.0], [0.0]], cmap="gray_r", vmin=0, vmax=1, aspect="auto")
    key.set_xticks([])
    key.set_yticks([0, 1], [f"on (\u2265 {threshold:g})", f"off (< {threshold:g})"],
                   fontsize=7)
    key.yaxis.tick_right()
    key.set_title("final state", fontsize=7)


def _entropy_panel(ax: Any, trainer: Trainer, evaluations: tuple[dict, dict]) -> None:
    h = trainer.history.as_arrays()
    ev = trainer.history.evaluations()
    rows = ~np.isnan(h["soft_entropy"])
    it = h["iteration"][rows]
    ax.plot(it, h["soft_entropy"][rows], lw=1, alpha=0.8, label="soft entropy (training batch)")
    line = ax.plot(it, h["hard_entropy"][rows], lw=1, alpha=0.8,
                   label="hard entropy (training batch)")[0]
    ax.axhline(np.log(trainer.batch), color=line.get_color(), ls="--", lw=0.8,
               label=f"ceiling log {trainer.batch} (training batch)")
    dots = ax.plot(ev["iteration"], ev["eval_hard_entropy"], "o", ms=4,
                   label=f"hard entropy ({trainer.eval_batch} fresh runs)")[0]
    ax.axhline(np.log(trainer.eval_batch), color=dots.get_color(), ls="--", lw=0.8,
               label=f"ceiling log {trainer.eval_batch} (fresh runs)")
    top = 1.08 * np.log(max(trainer.batch, trainer.eval_batch))
    marks = [s for s in evaluations if "entropy_estimate" in s]
    if marks and ev["iteration"].size:
        # Before at the first evaluation, after at the last one.
        where = [ev["iteration"][0], ev["iteration"][-1]][-len(marks):]
        est = np.array([s["entropy_estimate"] for s in marks])
        low = np.array([s["entropy_low"] for s in marks])
        high = np.array([s["entropy_high"] for s in marks])
        ax.errorbar(where, est, yerr=[est - low, high - est], fmt="s", ms=5, mfc="none",
                    capsize=3, color=dots.get_color(),
                    label=f"estimated entropy of the system, 95 % CI ({marks[0]['estimator']})")
        # Room for the bars, but an interval that reaches log 2^D (no
        # coincidences: the prior's answer) must not flatten the curves.
        top = max(top, min(1.05 * float(high.max()), 3 * top))
    ax.set_xlabel("iteration", fontsize=8)
    ax.set_ylabel("entropy (nats)", fontsize=8)
    ax.set_ylim(bottom=0, top=top)
    # Why the dashed lines matter: a batch cannot show more disorder than that.
    ax.text(0.0, -0.2, "dashed: log N, the most N runs can show (all different); the "
            "estimate is of the system and may exceed it", transform=ax.transAxes,
            fontsize=6.5, va="top")
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
