"""The CPU backend's machinery: O(N·D) kernels, the fused panel epilogue and the panel drivers.

See :mod:`kdentropy.backends.cpu` for the tiling scheme, the threading and the numerics.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ... import _estimator
from ._fastmath import FASTMATH as _FASTMATH
from ._fastmath import _add_into, _exp_nonpos, _kernel, _sum, _sumsq

# Rows per parallel work item in the epilogues (each row is summed by one
# task, so no sum depends on the thread count).
_ROW_CHUNK = 16
# Rows per tile, and the bound (in entries) on a B x W panel and on the
# W x D product buffer (2**22 entries: 32 MiB in float64). Large panels mean
# few BLAS calls and parallel regions, i.e. few points where all threads must
# meet: measured on 2 busy cores, B = 256 was up to 3x slower than B = 1024,
# while one thread ran at the same speed with either.
_TILE_ROWS = 1024
_PANEL_ENTRIES = 1 << 22


# Inner loops below always run from 0 over sliced views: Numba loops with a
# variable start index were measured not to vectorise (3-4x slower).

# ----------------------------------------------------------------------------- O(N·D) kernels
# These touch each of the N·D entries a few times; they are serial because
# that is negligible next to the O(N^2 D) panel work and compiles much faster.

# The shared formula with the branch-free polynomial exp: the loop vectorises.
_sigmoid = njit(inline="always", cache=True)(_estimator.make_sigmoid(_exp_nonpos))
_sigmoid_slope = njit(inline="always", cache=True)(_estimator.sigmoid_slope)


@njit(fastmath=_FASTMATH, error_model="numpy", cache=True)
def sigmoid_flat(x, temperature, threshold, out):
    """``out = sigmoid(T (x - theta))`` elementwise on flat arrays, in float64, rounded once."""
    for k in range(x.size):
        out[k] = _sigmoid(np.float64(x[k]), temperature, threshold)


@njit(cache=True)
def _column_mean(S, mean):
    """Column means of ``S`` in float64, rows added in order."""
    N, D = S.shape
    mean[:] = 0.0
    for i in range(N):
        _add_into(mean, S[i])
    for k in range(D):
        mean[k] /= max(N, 1)


@njit(cache=True)
def _center_on(S, mean, Sc, sqnorm):
    """``Sc = S - mean`` (rounded to S's dtype) and ``sqnorm_i = |Sc_i|^2`` in float64."""
    N, D = S.shape
    for i in range(N):
        s = S[i]
        c = Sc[i]
        for k in range(D):
            c[k] = np.float64(s[k]) - mean[k]
        sqnorm[i] = _sumsq(c)


@njit(cache=True)
def pair_sums(rowsum, Sc, acc, out):
    """``out_i = rowsum_i Sc_i - acc_i = sum_j w_ij (S_i - S_j)`` in float64."""
    N, D = Sc.shape
    for i in range(N):
        r = rowsum[i]
        a = acc[i]
        c = Sc[i]
        o = out[i]
        for k in range(D):
            o[k] = r * np.float64(c[k]) - a[k]


@njit(cache=True)
def pair_sum_norms(rowsum, sqn, V):
    """``(|rowsum_i Sc_i|, |V|)`` (Frobenius norms, float64) from ``sqn_i = |Sc_i|^2``."""
    a = 0.0
    for i in range(rowsum.size):
        a += rowsum[i] * rowsum[i] * np.float64(sqn[i])
    return np.sqrt(a), np.sqrt(_sumsq(V.reshape(-1)))


@njit(cache=True)
def chain_rule_flat(V, S, temperature, factor, out):
    """``out = factor V sigmoid_slope(S, T)`` elementwise on flat arrays, in out's dtype."""
    for k in range(S.size):
        out[k] = factor * V[k] * _sigmoid_slope(np.float64(S[k]), temperature)


# ----------------------------------------------------------------------------- panel epilogue
# A panel is the Gram block G = Sa[rows] @ Sb[cols].T of one row tile against a
# range of columns (the block primitives, which pair two different blocks of
# patterns; one population's own pairs go through :mod:`._fused`).
# ``offset`` = (first row) - (first column): with ``skip_diagonal`` (both
# blocks hold the same patterns) entry (r, r + offset) is the pair i = j and
# does not count.


@njit(inline="always", fastmath=_FASTMATH, cache=True)
def _panel_rows(G, ni, nj, coef_i, coef_j, scale, offset, skip_diagonal, weights, row_out, k,
                r0, r1):
    """Rows ``r0:r1`` of one panel (see :func:`_panel`); ``k`` is the chunk's scratch row."""
    bw = G.shape[1]
    for r in range(r0, r1):
        g = G[r]
        a = ni[r]
        for c in range(bw):
            k[c] = _kernel(a, nj[c], g[c], scale, k)
        if skip_diagonal and 0 <= r + offset < bw:
            k[r + offset] = 0.0
        if weights:
            u = coef_i[r]
            for c in range(bw):
                g[c] = k[c] * (u + coef_j[c])
                k[c] = g[c]  # the stored (rounded) weight is what gets summed
        row_out[r] += _sum(k)


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _panel(G, ni, nj, coef_i, coef_j, scale, offset, skip_diagonal, weights, row_out, kbuf):
    """Fused epilogue of one panel: distances, kernel, weights, row sums.

    Adds the row sums of ``K`` to ``row_out``; with ``weights``, overwrites
    ``G`` with ``w_ij = K_ij (g_i + g_j)`` and adds the sums of the *stored*
    weights (float32-rounded for float32 panels), so that
    ``rowsum_i Sa_i - (W @ Sb)_i`` cancels exactly what it should.
    ``kbuf`` is per-chunk scratch (chunks x width).
    """
    bi = G.shape[0]
    for ch in prange((bi + _ROW_CHUNK - 1) // _ROW_CHUNK):
        _panel_rows(G, ni, nj, coef_i, coef_j, scale, offset, skip_diagonal, weights, row_out,
                    kbuf[ch, :G.shape[1]], ch * _ROW_CHUNK, min(bi, (ch + 1) * _ROW_CHUNK))


# ----------------------------------------------------------------------------- drivers

def _ranges(lo: int, hi: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(hi, a + step)) for a in range(lo, hi, step)]


class _Workspace:
    """Bounded buffers shared by all panels of one call.

    ``rows x width`` panel, ``rows x D`` product buffer and per-chunk
    scratch: O(_PANEL_ENTRIES) memory.
    """

    def __init__(self, rows: int, cols: int, D: int, dtype: np.dtype, with_grad: bool) -> None:
        self.dtype = np.dtype(dtype)
        self.rows = max(1, min(_TILE_ROWS, rows))
        # Wide panels mean few, large BLAS calls and parallel regions.
        width = min(_PANEL_ENTRIES // self.rows, _PANEL_ENTRIES // max(D, 1))
        self.width = max(self.rows, min(width, cols))
        nchunk = (self.rows + _ROW_CHUNK - 1) // _ROW_CHUNK
        self.panel = np.empty(self.rows * self.width, dtype)
        self.kbuf = np.empty((nchunk, self.width), dtype)
        if with_grad:
            self.P = np.empty((self.rows, D), dtype)

    def buffer(self, bi: int, bw: int) -> np.ndarray:
        return self.panel[: bi * bw].reshape(bi, bw)


def _centered(S: np.ndarray, mean: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``S - mean`` in ``dtype`` (the panels' working precision) and its squared row norms.

    The norms are summed in float64 and then rounded to ``dtype``, the
    precision in which :func:`_panel` forms distances.
    """
    Sc = np.empty(S.shape, dtype=dtype)
    sqn = np.empty(S.shape[0])
    _center_on(S, mean, Sc, sqn)
    return Sc, sqn.astype(dtype, copy=False)


def _column_mean_of(S: np.ndarray) -> np.ndarray:
    mean = np.empty(S.shape[1])
    _column_mean(S, mean)
    return mean


