"""The lines ``kdentropy train`` and ``kdentropy evaluate`` print about an evaluation batch."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from ..runs import mode_pattern

if TYPE_CHECKING:
    from ..cells import CellSystem, TrainResult

__all__ = ["evaluation_lines", "estimate_lines", "estimate_text", "summary_text"]


_ESTIMATOR_NAMES = {"plugin": "plug-in", "miller-madow": "Miller–Madow",
                    "grassberger": "Grassberger", "chao-shen": "Chao–Shen", "nsb": "NSB"}


def estimate_text(H: float, low: float, high: float, coverage: float, method: str,
                  unit: str = "nats", fmt: str = ".4f") -> str:
    """``"H = 0.1234 nats (NSB), 95 % CI [0.05, 0.20], coverage 0.98"`` for one estimate.

    Parameters
    ----------
    H, low, high : float
        The estimate and its interval.
    coverage : float
        Good–Turing sample coverage.
    method : str
        The estimator's key (``kdentropy.estimate.METHODS``).
    unit : str, optional
    fmt : str, optional
        Format of the entropies.

    Returns
    -------
    str
    """
    name = _ESTIMATOR_NAMES.get(method, method)
    return (f"H = {H:{fmt}} {unit} ({name}), 95 % CI [{low:{fmt}}, {high:{fmt}}], "
            f"coverage {coverage:.2f}")


def estimate_lines(before: dict, after: dict) -> list[str]:
    """The bias-corrected estimate with its interval, before and after (empty without one).

    Parameters
    ----------
    before, after : dict
        :func:`~kdentropy.cells.metrics.evaluate_batch` results.

    Returns
    -------
    list of str
    """
    if "entropy_estimate" not in after:
        return []
    return [f"  estimated entropy of the system, before: "
            + estimate_text(before["entropy_estimate"], before["entropy_low"],
                            before["entropy_high"], before["coverage"], before["estimator"]),
            f"  estimated entropy of the system, after:  "
            + estimate_text(after["entropy_estimate"], after["entropy_low"],
                            after["entropy_high"], after["coverage"], after["estimator"])]


def evaluation_lines(before: dict, after: dict, system: CellSystem, runs: int,
                     threshold: float) -> list[str]:
    """The lines that describe an evaluation batch before and after training.

    Shared by ``kdentropy train`` and ``kdentropy evaluate``, so the two
    print the same numbers in the same form.

    Parameters
    ----------
    before, after : dict
        :func:`~kdentropy.cells.metrics.evaluate_batch` results.
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
    mode = mode_pattern(after["final"], threshold)
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
        *estimate_lines(before, after),
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
        From :func:`kdentropy.runs.write_results`.
    out : path-like
        The output directory.

    Returns
    -------
    str
        Several lines, with a final newline.
    """
    trainer = result.trainer
    done = result.iterations_run  # this process's iterations (a resume counts its own)
    span = "" if done == trainer.iteration else f" (to iteration {trainer.iteration})"
    lines = [f"trained {done} iterations{span} in {result.elapsed_s:.1f} s "
             f"(seed {trainer.seed}, backend {backend}, engine {trainer.system.engine})",
             *evaluation_lines(result.before, result.after, trainer.system, trainer.eval_batch,
                               trainer.loss.threshold),
             f"wrote {', '.join(written)} to {os.fspath(out)}{note}"]
    return "\n".join(lines) + "\n"
