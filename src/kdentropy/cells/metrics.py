"""What a batch of final patterns looks like: exact entropy, distinct patterns, boundaries."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from .. import _validation, estimate, hard
from .topology import TOPOLOGIES, Topology, make_topology

if TYPE_CHECKING:
    from .loss import ReproducibilityLoss
    from .system import CellSystem

__all__ = ["pattern_stats", "batch_hard_entropy", "evaluate_batch", "estimate_stats",
           "ESTIMATOR", "ESTIMATE_KEYS"]


def batch_hard_entropy(X: np.ndarray, threshold: float) -> float:
    """Exact entropy (nats) of an ``(N, D)`` batch the system produced.

    The same number as :func:`kdentropy.hard_entropy`, without checking the
    input again: the trainer's final states were checked by the loss.
    """
    return hard.entropy_of_counts(hard.count_rows(hard.binarize(X, threshold))[1])


# The estimate the evaluations report next to the plug-in value: the library's
# recommended estimator, whose interval needs no random numbers.
ESTIMATOR = estimate.RECOMMENDED
#: The keys :func:`pattern_stats` adds about the estimated entropy of the system.
ESTIMATE_KEYS = ("entropy_estimate", "entropy_low", "entropy_high", "entropy_stderr",
                 "coverage", "estimator")


def estimate_stats(counts: np.ndarray, D: int, confidence: float = 0.95) -> dict:
    """The estimated entropy (nats) of the system behind one batch's pattern counts.

    Parameters
    ----------
    counts : ndarray of int64
        Counts of the distinct patterns.
    D : int
        Cells per pattern (the estimator's alphabet is ``2**D``).
    confidence : float, optional
        Nominal coverage of the interval. Default 0.95.

    Returns
    -------
    dict
        ``entropy_estimate``, ``entropy_low``, ``entropy_high``,
        ``entropy_stderr``, ``coverage`` (Good–Turing, ``1 - f1/N``) and
        ``estimator`` (its name).
    """
    r = estimate.entropy_from_counts(counts, ESTIMATOR, confidence=confidence,
                                     alphabet_size=estimate.alphabet_of_patterns(D))
    return {"entropy_estimate": r.estimate, "entropy_low": r.low, "entropy_high": r.high,
            "entropy_stderr": r.stderr, "coverage": r.coverage, "estimator": r.method}


def _stats(X: np.ndarray, threshold: float, topology: Topology) -> dict:
    """:func:`pattern_stats` of a checked ``(N, D)`` array."""
    B = hard.binarize(X, threshold)
    _, counts = hard.count_rows(B)
    return {"hard_entropy": hard.entropy_of_counts(counts),
            **estimate_stats(counts, X.shape[1]),
            "distinct": int(counts.size),
            "fraction_on": float(B.mean()) if B.size else 0.0,
            "boundaries": float(topology.boundaries(B).mean()),
            "mode_fraction": float(counts.max() / X.shape[0])}


def evaluate_batch(system: CellSystem, loss: ReproducibilityLoss, params: ArrayLike,
                   inputs: tuple[np.ndarray, np.ndarray]) -> dict:
    """Statistics of the final visible patterns of one batch of runs.

    Parameters
    ----------
    system : CellSystem
    loss : ReproducibilityLoss
        Its temperature, sigma, threshold and backend define the soft entropy
        and the binarisation.
    params : array_like, shape (n_params,)
    inputs : (x0, xi)
        As :meth:`CellSystem.sample_inputs`.

    Returns
    -------
    dict
        :func:`pattern_stats` plus ``soft_entropy`` and ``final`` (the
        ``(N, D)`` final visible states).
    """
    # The scored pattern is the visible channel (0) of the final states.
    X = np.ascontiguousarray(system.rollout(params, *inputs, keep_caches=False).visible)
    # The soft entropy checks the final states; the statistics reuse them.
    H = loss.soft_entropy(X)
    stats = _stats(X, loss.threshold, system.layout)
    stats["soft_entropy"] = H
    stats["final"] = X
    return stats


def pattern_stats(X: ArrayLike, threshold: float = 0.5, *,
                  topology: str | Topology = "line",
                  shape: tuple[int, int] | None = None) -> dict:
    """Summary of a batch of final patterns.

    Parameters
    ----------
    X : array_like, shape (N, D)
    threshold : float, optional
        A cell is on where ``X >= threshold``. Default 0.5.
    topology : {"line", "ring", "grid", "torus"} or Topology, optional
        Which cells are neighbours; on a ring the last and first cells are
        neighbours too, on a grid the horizontally and vertically adjacent
        cells of a row-major ``(H, W)`` grid (and the wrap-around pairs on a
        torus).
    shape : (int, int), optional
        ``(H, W)`` with ``H W = D``; needed for ``"grid"`` and ``"torus"``
        given by name.

    Returns
    -------
    dict
        ``hard_entropy`` (nats), ``distinct`` (number of distinct patterns),
        ``fraction_on`` (mean fraction of cells on), ``boundaries`` (mean
        number of 0/1 boundaries per run) and ``mode_fraction`` (fraction of
        runs giving the most common pattern); and the entropy of the system
        estimated from the pattern counts, with its 95 % interval
        (:func:`estimate_stats`: ``entropy_estimate``, ``entropy_low``,
        ``entropy_high``, ``entropy_stderr``, ``coverage``, ``estimator``).

    Examples
    --------
    >>> s = pattern_stats([[0, 0, 1, 1], [0, 0, 1, 1]])
    >>> s["hard_entropy"], s["fraction_on"], s["boundaries"]
    (0.0, 0.5, 1.0)
    """
    if not isinstance(topology, Topology):
        topology = _validation.choice(topology, "topology", tuple(TOPOLOGIES))
    threshold = _validation.real_scalar(threshold, "threshold")
    A = _validation.host_patterns(X, cast=False)  # as hard_entropy: binarising needs no copy
    if A.ndim != 2:
        raise ValueError(f"X must be 2-D (N, D) with N >= 1; got shape {A.shape}")
    if isinstance(topology, str):
        # Boundaries need only the arrangement, not the radius or the positions.
        if TOPOLOGIES[topology].NDIM == 1:
            shape = (max(A.shape[1], 1),)
        elif shape is None:
            raise ValueError(f"topology {topology!r} needs shape=(H, W)")
        topology = make_topology(topology, shape, 0, "none")
    if topology.n_cells != A.shape[1]:
        raise ValueError(f"X has {A.shape[1]} cells but the topology {topology!r} has "
                         f"{topology.n_cells}")
    return _stats(A, threshold, topology)
