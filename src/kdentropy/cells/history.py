"""The per-iteration training record (its CSV form is :func:`kdentropy.runs.history_csv`)."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["History"]


class History:
    """Per-iteration training record, one row per iteration (row 0: before training).

    Columns (NaN where a value was not computed in that row):

    ``iteration``
        Number of optimizer steps taken when the row was complete.
    ``loss``, ``soft_entropy``, ``penalty``, ``hard_entropy``, ``grad_norm``, ``lr``
        Of the training batch of that iteration, at the parameters *before*
        its update (so row i describes step i's gradient).
    ``eval_hard_entropy``, ``eval_soft_entropy``, ``eval_fraction_on``, ``eval_boundaries``
        Of the fixed evaluation batch, at the parameters *after* the update;
        filled at 0 and every ``eval_every`` iterations by
        :meth:`Trainer.run` (and at the last iteration by :func:`train` and
        the command line, through :meth:`Trainer.record_evaluation`).
    """

    COLUMNS = ("iteration", "loss", "soft_entropy", "penalty", "hard_entropy", "grad_norm",
               "lr", "eval_hard_entropy", "eval_soft_entropy", "eval_fraction_on",
               "eval_boundaries")

    def __init__(self) -> None:
        self._rows: list[dict[str, float]] = []

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def last(self) -> dict[str, float]:
        """The most recent row (a copy)."""
        return dict(self._rows[-1])

    def record(self, iteration: int, **values: float) -> None:
        """Set values in the row of ``iteration``.

        Parameters
        ----------
        iteration : int
            The row; a new row is appended unless it is the last one.
        **values : float
            Column values; unknown columns are a ValueError.
        """
        unknown = set(values) - set(self.COLUMNS)
        if unknown:
            raise ValueError(f"unknown history columns {sorted(unknown)}")
        if not self._rows or self._rows[-1]["iteration"] != iteration:
            row = dict.fromkeys(self.COLUMNS, math.nan)
            row["iteration"] = iteration
            self._rows.append(row)
        self._rows[-1].update({k: float(v) for k, v in values.items()})

    def __getitem__(self, column: str) -> np.ndarray:
        """One column as a float64 array of length ``len(self)``."""
        if column not in self.COLUMNS:
            raise KeyError(column)
        return np.array([row[column] for row in self._rows], dtype=np.float64)

    def as_arrays(self) -> dict[str, np.ndarray]:
        """Every column as a float64 array of length ``len(self)``."""
        return {c: self[c] for c in self.COLUMNS}

    def evaluations(self) -> dict[str, np.ndarray]:
        """Only the rows with evaluation results (``iteration`` and ``eval_*`` columns)."""
        arrays = self.as_arrays()
        rows = ~np.isnan(arrays["eval_hard_entropy"])
        return {c: a[rows] for c, a in arrays.items() if c == "iteration" or c.startswith("eval_")}

    @classmethod
    def from_arrays(cls, arrays: dict[str, ArrayLike]) -> History:
        """Rebuild a history from :meth:`as_arrays` output.

        Parameters
        ----------
        arrays : dict
            One 1-D array per column of :attr:`COLUMNS`, all of one length.

        Returns
        -------
        History
        """
        hist = cls()
        columns = {c: np.asarray(arrays[c], dtype=np.float64) for c in cls.COLUMNS}
        if len({a.shape for a in columns.values()}) != 1 or columns["iteration"].ndim != 1:
            raise ValueError("history columns must be 1-D arrays of one length")
        for i in range(columns["iteration"].shape[0]):
            hist._rows.append({c: float(columns[c][i]) for c in cls.COLUMNS})
        return hist
