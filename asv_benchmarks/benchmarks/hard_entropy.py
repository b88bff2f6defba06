"""Exact (hard) entropy throughput on large batches: binarise, pack, sort, count."""

from __future__ import annotations

import numpy as np

import kdentropy

from .common import SEED, THRESHOLD, clustered

#: Rows of every batch.
N_ROWS = 100_000


class HardEntropy:
    """``hard_entropy`` and ``pattern_counts`` on 100k rows.

    ``patterns="few"``: noisy copies of 8 prototypes (the trained regime: few
    distinct rows, long runs of equal records in the sort). ``"distinct"``:
    uniform random cells, so every row is its own pattern (the untrained
    regime: H = log N).
    """

    param_names = ["n_cells", "patterns"]
    params = ([64, 256], ["few", "distinct"])
    timeout = 300

    def setup(self, n_cells: int, patterns: str) -> None:
        if patterns == "few":
            self.X = clustered(N_ROWS, n_cells, "float64")
        else:
            self.X = np.random.default_rng([SEED, n_cells]).random((N_ROWS, n_cells))
        # Import-time and first-call costs stay out of the timings.
        kdentropy.hard_entropy(self.X[:16], THRESHOLD)

    def time_hard_entropy(self, n_cells, patterns):
        kdentropy.hard_entropy(self.X, THRESHOLD)

    def time_pattern_counts(self, n_cells, patterns):
        kdentropy.pattern_counts(self.X, THRESHOLD)

    def peakmem_hard_entropy(self, n_cells, patterns):
        kdentropy.hard_entropy(self.X, THRESHOLD)

