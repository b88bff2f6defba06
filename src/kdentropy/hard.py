"""Exact (hard) reproducibility entropy: binarise, pack bits, count distinct rows.

Rows are packed eight cells to a byte and viewed as one opaque record each, so
distinct patterns are found by one sort of N records of ceil(D/8) bytes: no
N x N comparison is ever made.
"""

from __future__ import annotations

import numpy as np
from scipy.special import entr


def packed_rows(B: np.ndarray) -> np.ndarray:
    """View each row of a 2-D boolean array as one fixed-size byte record."""
    packed = np.packbits(B, axis=1)  # big-endian bits: byte order == lexicographic 0/1 order
    packed = np.ascontiguousarray(packed)
    return packed.view(np.dtype((np.void, packed.shape[1]))).ravel()


def count_rows(B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a 2-D boolean array (lexicographic order) and their counts."""
    N, D = B.shape
    if D == 0:
        return np.zeros((1, 0), dtype=np.uint8), np.array([N], dtype=np.int64)
    records = packed_rows(B)
    _, first, counts = np.unique(records, return_index=True, return_counts=True)
    patterns = B[first].astype(np.uint8)
    return patterns, counts.astype(np.int64)


def entropy_terms(counts: np.ndarray, total: float) -> np.ndarray:
    """``-p log p`` for each count, with ``p = count / total`` (0 for empty counts)."""
    return entr(np.asarray(counts) / total)


def entropy_of_counts(counts: np.ndarray) -> float:
    """Shannon entropy (nats) of a histogram, computed as ``scipy.stats.entropy`` does."""
    return float(np.sum(entropy_terms(counts, counts.sum())))


def binarize(X: np.ndarray, threshold: float) -> np.ndarray:
    """``X >= threshold`` for real X of any dtype, without rounding the threshold.

    A NumPy float64 scalar makes the comparison exact for every input dtype
    (a Python float would be cast to float32 for float32 X, overflowing for
    ``|threshold| > 3.4e38``), and bool or integer X is never copied to float.
    """
    return np.greater_equal(X, np.float64(threshold))


def hard_entropy_3d(X3: np.ndarray, threshold: float) -> np.ndarray:
    """Hard entropy in nats of each population of a ``(G, N, D)`` array."""
    H = np.empty(X3.shape[0], dtype=np.float64)
    for g in range(X3.shape[0]):
        _, counts = count_rows(binarize(X3[g], threshold))
        H[g] = entropy_of_counts(counts)
    return H
