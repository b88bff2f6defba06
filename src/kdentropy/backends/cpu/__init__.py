"""Numba CPU backend (``backend="cpu"``): streaming, tiled soft counts and gradient sums in O(N·D) memory.

Three paths
-----------
* small batches (``N^2 D <= 2**21``): serial direct differences, every pair
  once (:mod:`._direct`); a parallel region would cost more than the work;
* the Gram panels below, in S's precision or, for float32 input at small
  sigma, in float64 (:mod:`.._conditioning` decides);
* direct differences in parallel where even a float64 Gram product would
  lose the kernel (sigma far below the data's spread).

Tiling scheme
-------------
Only the pairs ``i < j`` are visited (``K_ij = K_ji``). The rows are cut
into tiles of ``B = 1024`` rows; row tile ``I = [i0, i1)`` is paired with the
columns ``[i0, N)`` in *panels* of at most ``W`` columns (``B x W`` and
``W x D`` are bounded by :data:`_PANEL_ENTRIES`). For every panel:

1. BLAS fills ``G = Sc_I @ Sc_cols.T`` (``Sc``: ``S`` minus its column mean,
   see *Numerics*); in float64 the row tile's own diagonal block comes from
   a symmetric rank-k product (syrk, half the work), while float32 panels
   are one GEMM (see :func:`_sym_gram`);
2. one fused Numba epilogue, :func:`_panel`, turns ``G`` into
   ``d2 = |Sc_i|^2 + |Sc_j|^2 - 2 G`` (clamped at 0), ``K = exp(-d2 / 2 sigma^2)``
   for the entries with ``j > i``, and reduces them at once.

Pass 1 (the value) adds the row sums of ``K`` to the soft counts
``C0_i = sum_{j != i} K_ij`` of the tile's rows and the column sums to those
of the panel's columns. Pass 2 (the gradient; value-only calls stop after
pass 1) turns each panel into weights ``w_ij = K_ij (g_i + g_j)`` (``g``: the estimator's row coefficients), adds
their row and column sums to ``rowsum``, and two BLAS products,
``P = W @ Sc_cols`` for the rows and ``Q = W.T @ Sc_I`` for the columns, are
added to ``acc``; then ``sum_j w_ij (S_i - S_j) = rowsum_i Sc_i - acc_i``.
The diagonal block is mirrored inside ``W`` so that ``P`` covers both of its
halves.

Pass 2 needs ``K`` again. Pass 1 leaves ``K`` in place for as many panels as
fit in a fixed budget (:data:`_K_CACHE_BYTES`, independent of N); pass 2
reuses those and recomputes the Gram products of the rest. Memory is thus a
few ``N x D`` arrays plus workspaces of bounded size: no N x N array.

Parallelism and determinism
---------------------------
BLAS products are issued from Python one panel at a time, so OpenBLAS runs
each large product with its own threads and is never called inside a Numba
parallel region (no oversubscription; its thread count is OpenBLAS's, e.g.
``OPENBLAS_NUM_THREADS``). The epilogues run in Numba ``prange`` loops (which
follow ``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``) over fixed chunks of
:data:`_ROW_CHUNK` rows: a row is always summed by one task in one order,
column sums are reduced over the chunks in chunk order, and panels are
visited in a fixed order. No sum depends on the number of threads or on
scheduling, so results are bit-identical from run to run and across Numba
thread counts. The only fast-math flag is FMA contraction, which is fixed at
compile time. Because Numba regions and BLAS calls alternate, idle threads
must not spin: importing this module defaults ``OMP_WAIT_POLICY`` to
``PASSIVE`` for Numba's OpenMP layer (see the comment there). OpenBLAS's
own workers also busy-wait after each call (for about ``2**28`` cycles by
default), taking a core from the epilogue that follows; that can only be
changed before NumPy loads OpenBLAS, e.g. ``OPENBLAS_THREAD_TIMEOUT=4`` in
the environment, which made float32 ``(16384, 64)`` value+gradient 20% faster
on 2 cores.

Numerics
--------
* ``S`` is centred on its column mean before the Gram products. Distances
  and ``S_i - S_j`` are unchanged, but ``|Sc_i|^2`` is smaller, so the
  cancellation in ``|a|^2 + |b|^2 - 2 a.b`` (the only inexact step of the
  float32 path) shrinks.
* float32 input keeps ``S``, the Gram products and ``W @ S`` in float32 (fast
  BLAS), and so is the epilogue's arithmetic: squared norms (summed in
  float64, then rounded), ``d2``, ``K`` and ``w`` are float32, so its loops
  run 8 SIMD lanes wide instead of 4 (2.5x faster than with ``d2`` and ``K``
  in float64). The sums of ``K`` and ``w`` (soft counts, ``rowsum``) and the
  gradient accumulators are float64. ``rowsum`` adds up exactly the float32
  weights that enter ``W @ Sc``, so rounding ``w`` leaves no uncancelled
  self term in ``rowsum_i Sc_i - acc_i``, a difference taken in float64.
  float32 kernel values below ``exp(-64)`` are set to 0 (no float32
  subnormals; see :func:`_kernel`).
* The ``j = i`` terms are never formed (they are exactly zero in the
  gradient and exactly 1 in ``C``): ``H = log N - mean(log1p(C0))``.
* Cached kernel values are stored in the input's dtype, which is the
  precision they were computed in: cached and recomputed ``K`` are equal.
* ``exp`` is a branch-free polynomial (:func:`_exp_nonpos`, within an ulp or
  so of the C library's, correct down to the subnormals; float32 panels use
  :func:`_exp_nonpos_f32`, within 2 float32 ulp), so the epilogue loops
  vectorise.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable

import numba
import numpy as np

from .. import _conditioning

# Numba's OpenMP threading layer spins its idle workers for milliseconds after
# each parallel region. Here every epilogue is followed by a multi-threaded
# BLAS call, and a spinning worker takes a core away from it: 2x slower with
# 2 threads (0.68 s instead of 0.29 s at N, D = 4096, 256). Passive waiting
# removes the conflict. It takes effect only if the OpenMP runtime has not
# been loaded yet (Numba loads it at its first parallel launch, not at
# import); an explicit user setting always wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._direct import (  # noqa: E402
    direct_counts, direct_pair_sums, small_counts, small_pair_sums,
)
from ._panels import (  # noqa: E402  (after the OpenMP setting, before Numba runs)
    _ALL, _COUNT, _SKIP, _WEIGHT, _Workspace, _centered, _column_mean_of, _panel, _ranges,
    _sym_counts, _sym_grad, _sym_plan, chain_rule_flat, pair_sums, sigmoid_flat,
)

# Batches with N^2 D at most this run serially with direct differences (see
# _direct.small_counts). Measured on 2 cores (interleaved medians): the serial
# path won up to 128 x 32 in both dtypes and up to 256 x 32 in float64; the
# panels won from 256 x 64 in float32.
_SMALL_WORK = 1 << 21

NAME = "cpu"
DEVICE_ARRAYS = False
BLOCK_PRIMITIVES = True
# Streaming: whole blocks use O(n D) memory and parallelise better.
BLOCK_TILE_ROWS = None

__all__ = [
    "NAME", "DEVICE_ARRAYS", "BLOCK_PRIMITIVES", "unavailable_reason", "soft_patterns",
    "soft_counts_and_grad", "input_grad", "block_soft_counts", "block_weighted_grad",
]


def unavailable_reason() -> str | None:
    """Why this backend cannot run here, or ``None`` when it can (always: Numba is required)."""
    return None


def soft_patterns(X: np.ndarray, temperature: float, threshold: float) -> np.ndarray:
    """Stable sigmoid ``1 / (1 + exp(-T (X - theta)))`` in the dtype of ``X``.

    Parameters
    ----------
    X : ndarray
        float32 or float64 array of any shape (other dtypes are computed in
        float64).
    temperature, threshold : float
        Sigmoid sharpness T and centre theta.

    Returns
    -------
    ndarray
        Same shape as ``X``; float32 for float32 input, float64 otherwise.
        Values are computed in float64 and rounded once, and saturate to
        exactly 0 or 1 (without warnings) for huge ``|X|``.
    """
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    Xc = np.ascontiguousarray(X)
    out = np.empty(Xc.shape, dtype=Xc.dtype)
    sigmoid_flat(Xc.reshape(-1), float(temperature), float(threshold), out.reshape(-1))
    return out


def _distance_precision(Sc: np.ndarray, sigma: float) -> np.dtype | None:
    """Gram dtype for centred patterns ``Sc`` (any leading axes), or None for direct differences.

    float32 panels are twice as fast as float64 ones, but Gram distances carry
    an error of a few ``eps |Sc|^2`` that ``1 / sigma^2`` amplifies; the shared
    rule (:mod:`.._conditioning`) says when that is too much.
    """
    if Sc.size == 0:
        return Sc.dtype
    max_sqnorm = float(np.max(np.einsum("...k,...k->...", Sc, Sc, dtype=np.float64)))
    return _conditioning.distance_precision(Sc.dtype, max_sqnorm, sigma)


# Numba's workqueue threading layer aborts the interpreter when two Python
# threads enter parallel regions at once; OpenMP and TBB allow it. Calls are
# serialised where the layer is workqueue or not yet chosen (Numba picks it at
# the first parallel launch, possibly workqueue when no other is installed).
_WORKQUEUE_LOCK = threading.Lock()


@functools.cache
def _layer_allows_concurrency() -> bool:
    """Whether the (initialised) threading layer accepts calls from several threads."""
    return numba.threading_layer() != "workqueue"


def _concurrent_layer() -> bool:
    try:
        return _layer_allows_concurrency()
    except ValueError:  # not initialised yet (cached only once it is)
        return False


def _serialised_on_workqueue(func: Callable) -> Callable:
    """Run ``func`` under a process-wide lock unless the threading layer allows concurrent calls."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if _concurrent_layer():
            return func(*args, **kwargs)
        with _WORKQUEUE_LOCK:
            return func(*args, **kwargs)

    return wrapper


def soft_counts_and_grad(S: np.ndarray, sigma: float,
                         coefficients: Callable[[np.ndarray], np.ndarray] | None
                         ) -> tuple[np.ndarray, np.ndarray | None]:
    """Soft counts and, with ``coefficients``, the weighted pair sums of a ``(G, N, D)`` batch.

    Parameters
    ----------
    S : ndarray, shape (G, N, D)
        C-contiguous float32 or float64 soft patterns.
    sigma : float
        Kernel width.
    coefficients : callable or None
        Maps the soft counts of one population to its row coefficients ``g``;
        ``None`` runs pass 1 only.

    Returns
    -------
    C0 : ndarray of float64, shape (G, N)
        ``sum_{j != i} K_ij``.
    V : ndarray of float64, shape (G, N, D), or None
        ``sum_j K_ij (g_i + g_j) (S_i - S_j)``.
    """
    G_, N, D = S.shape
    want_grad = coefficients is not None
    scale = 0.5 / (sigma * sigma)
    C0 = np.empty((G_, N))
    V = np.empty((G_, N, D)) if want_grad else None
    if N * N * max(D, 1) <= _SMALL_WORK:
        # Serial code: no parallel region, so no threading-layer lock either.
        K = np.empty((N, N))
        scratch = np.empty((2, N))
        VT = np.empty((D, N))
        for p in range(G_):
            ST = np.ascontiguousarray(S[p].T)
            small_counts(S[p], ST, scale, C0[p], K, scratch[0])
            if want_grad:
                coef = np.asarray(coefficients(C0[p]), np.float64)
                small_pair_sums(S[p], ST, coef, K, VT, scratch[1])
                V[p] = VT.T
        return C0, V
    _parallel_counts_and_grad(S, sigma, coefficients, C0, V)
    return C0, V


@_serialised_on_workqueue
def _parallel_counts_and_grad(S: np.ndarray, sigma: float,
                              coefficients: Callable[[np.ndarray], np.ndarray] | None,
                              C0: np.ndarray, V: np.ndarray | None) -> None:
    """:func:`soft_counts_and_grad` for batches above the small-batch size, into C0 and V."""
    G_, N, D = S.shape
    want_grad = V is not None
    scale = 0.5 / (sigma * sigma)
    work = _distance_precision(S - S.mean(axis=-2, keepdims=True), sigma)
    if work is None:
        for p in range(G_):
            ST = np.ascontiguousarray(S[p].T)
            direct_counts(S[p], ST, scale, True, C0[p])
            if want_grad:
                coef = np.asarray(coefficients(C0[p]), np.float64)
                direct_pair_sums(S[p], coef, S[p], ST, coef, scale, True, V[p])
        return
    ws = _Workspace(N, N, D, work, want_grad)
    panels, _cache = _sym_plan(N, ws, keep=want_grad)
    for p in range(G_):
        mean = _column_mean_of(S[p])
        Sc, sqn = _centered(S[p], mean, work)
        ScT = np.ascontiguousarray(Sc.T)
        C0[p] = _sym_counts(Sc, ScT, sqn, scale, ws, panels)
        if want_grad:
            coef = np.asarray(coefficients(C0[p]), dtype=np.float64)
            rowsum = _gram_pair_sums(Sc, ScT, sqn, coef, scale, ws, panels, V[p])
            if work == np.float32 and not _float32_sums_held(rowsum, sqn, V[p]):
                # Tight clusters: redo the sums in float64 (K is recomputed).
                Sc, sqn = _centered(S[p], mean, np.float64)
                ws64 = _Workspace(N, N, D, np.float64, True)
                _gram_pair_sums(Sc, np.ascontiguousarray(Sc.T), sqn, coef, scale, ws64,
                                _sym_plan(N, ws64, keep=False)[0], V[p])


def _gram_pair_sums(Sc, ScT, sqn, coef, scale, ws, panels, out) -> np.ndarray:
    """Pass 2 on Gram panels: ``out_i = sum_j K_ij (g_i + g_j) (S_i - S_j)``; returns ``sum_j w_ij``."""
    # Rounded to the panel dtype: float32 weights are then formed in float32
    # (8 lanes), and rounded to float32 either way.
    rowsum, acc = _sym_grad(Sc, ScT, sqn, coef.astype(Sc.dtype, copy=False), scale, ws,
                            panels)
    pair_sums(rowsum, Sc, acc, out)
    return rowsum


def _float32_sums_held(rowsum: np.ndarray, sqn: np.ndarray, V: np.ndarray) -> bool:
    """Whether ``V = rowsum Sc - W @ Sc`` from float32 panels kept its accuracy (see _conditioning).

    ``sqn`` holds the squared row norms of ``Sc``, so ``|rowsum Sc|`` needs no
    N x D temporary. The norms are plain reductions, not BLAS calls: a BLAS
    dot right after the Numba epilogue was measured to cost 9 ms (its
    threads wake up) where the reduction takes 0.1 ms.
    """
    subtrahend = float(np.sqrt(np.sum(rowsum * rowsum * sqn.astype(np.float64))))
    result = float(np.sqrt(np.einsum("ij,ij->", V, V)))
    return _conditioning.float32_pair_sums_are_accurate(subtrahend, result)


def input_grad(S: np.ndarray, V: np.ndarray, temperature: float, factor: float,
               shape: tuple[int, ...]) -> np.ndarray:
    """``factor V sigmoid_slope(S, T)`` (the chain rule through the sigmoid), shaped and typed like X."""
    out = np.empty(S.shape, dtype=S.dtype)
    chain_rule_flat(V.reshape(-1), S.reshape(-1), float(temperature), float(factor),
                    out.reshape(-1))
    return out.reshape(shape)


# ----------------------------------------------------------------------------- block primitives

def _block_inputs(Sa: np.ndarray, Sb: np.ndarray, sigma: float):
    """Validate two blocks of soft patterns; centre both on Sb's column mean.

    Returns ``(Sa, sqa, Sb, sqb)``: centred blocks in the Gram dtype and their
    squared norms, or the blocks as given and ``None`` norms when distances
    must be direct differences.
    """
    Sa = np.asarray(Sa)
    Sb = np.asarray(Sb)
    if Sa.ndim != 2 or Sb.ndim != 2 or Sa.shape[1] != Sb.shape[1]:
        raise ValueError("Sa and Sb must be 2-D with the same number of columns; "
                         f"got shapes {Sa.shape} and {Sb.shape}")
    dtype = np.float32 if (Sa.dtype == np.float32 and Sb.dtype == np.float32) else np.float64
    Sa = np.ascontiguousarray(Sa, dtype=dtype)
    Sb = np.ascontiguousarray(Sb, dtype=dtype)
    # Every quantity is translation invariant; a caller that passes all rows
    # as Sb (the MPI layout) centres exactly as soft_counts_and_grad does.
    mean = _column_mean_of(Sb)
    work = _distance_precision(np.concatenate([Sa, Sb]) - mean.astype(dtype), sigma)
    if work is None:  # direct differences: no centring needed
        return Sa, None, Sb, None
    Sac, sqa = _centered(Sa, mean, work)
    Sbc, sqb = _centered(Sb, mean, work)
    return Sac, sqa, Sbc, sqb


def _check_same_block(same_block: bool, Sa: np.ndarray, Sb: np.ndarray) -> None:
    if same_block and Sa.shape[0] != Sb.shape[0]:
        raise ValueError("same_block requires Sa and Sb to hold the same rows; "
                         f"got {Sa.shape[0]} and {Sb.shape[0]} rows")


@_serialised_on_workqueue
def block_soft_counts(Sa: np.ndarray, Sb: np.ndarray, sigma: float,
                      same_block: bool) -> np.ndarray:
    """Off-diagonal soft counts ``C0_i = sum_j K(Sa_i, Sb_j)`` (float64, one per row of Sa).

    Parameters
    ----------
    Sa : ndarray, shape (Na, D)
        Soft patterns of the rows whose counts are wanted.
    Sb : ndarray, shape (Nb, D)
        Soft patterns they are compared with.
    sigma : float
        Kernel width.
    same_block : bool
        The two blocks hold the same rows: the ``j = i`` terms are skipped.

    Returns
    -------
    ndarray of float64, shape (Na,)
        Streaming and tiled like :func:`soft_counts_and_grad` (no ``Na x Nb``
        matrix); float32 blocks use float32 Gram products.
    """
    Sac, sqa, Sbc, sqb = _block_inputs(Sa, Sb, sigma)
    _check_same_block(same_block, Sac, Sbc)
    Na, D = Sac.shape
    C0 = np.zeros(Na)
    if Na == 0 or Sbc.shape[0] == 0:
        return C0
    scale = 0.5 / (sigma * sigma)
    if sqa is None:
        direct_counts(Sac, np.ascontiguousarray(Sbc.T), scale, same_block, C0)
        return C0
    Nb = Sbc.shape[0]
    mode = _SKIP if same_block else _ALL
    ws = _Workspace(Na, Nb, D, Sac.dtype, with_grad=False)
    for i0, i1 in _ranges(0, Na, ws.rows):
        for c0, c1 in _ranges(0, Nb, ws.width):
            G = ws.buffer(i1 - i0, c1 - c0)
            np.matmul(Sac[i0:i1], Sbc[c0:c1].T, out=G)
            _panel(G, sqa[i0:i1], sqb[c0:c1], sqa[i0:i1], sqb[c0:c1], scale, i0 - c0, mode,
                   _COUNT, C0[i0:i1], C0[i0:i1], ws.kbuf, ws.cpart)
    return C0


@_serialised_on_workqueue
def block_weighted_grad(Sa: np.ndarray, ga: np.ndarray, Sb: np.ndarray, gb: np.ndarray,
                        sigma: float, same_block: bool) -> np.ndarray:
    """``sum_j w_ij (Sa_i - Sb_j)`` with ``w_ij = K_ij (g_i + g_j)`` (float64, like Sa).

    Parameters
    ----------
    Sa : ndarray, shape (Na, D)
        Soft patterns of the rows whose gradient is wanted.
    ga : ndarray, shape (Na,)
        Row coefficients of those rows (:func:`kdentropy._estimator.row_coefficients`).
    Sb : ndarray, shape (Nb, D)
        Soft patterns they are compared with.
    gb : ndarray, shape (Nb,)
        Row coefficients of the rows of Sb.
    sigma : float
        Kernel width.
    same_block : bool
        The two blocks hold the same rows: the ``j = i`` terms are skipped.

    Returns
    -------
    ndarray of float64, shape (Na, D)
        Times :func:`kdentropy._estimator.gradient_factor` this is ``dH/dS``
        for the rows of Sa.
    """
    Sac, sqa, Sbc, sqb = _block_inputs(Sa, Sb, sigma)
    _check_same_block(same_block, Sac, Sbc)
    Na, D = Sac.shape
    Nb = Sbc.shape[0]
    coef_a = np.ascontiguousarray(ga, dtype=np.float64)
    coef_b = np.ascontiguousarray(gb, dtype=np.float64)
    if coef_a.shape != (Na,) or coef_b.shape != (Nb,):
        raise ValueError(f"ga and gb must have shapes ({Na},) and ({Nb},); "
                         f"got {coef_a.shape} and {coef_b.shape}")
    out = np.zeros((Na, D))
    if Na == 0 or Nb == 0:
        return out
    scale = 0.5 / (sigma * sigma)
    if sqa is None:
        direct_pair_sums(Sac, coef_a, Sbc, np.ascontiguousarray(Sbc.T), coef_b, scale, same_block,
                         out)
        return out
    # As in soft_counts_and_grad: float32 blocks form their weights in float32.
    coef_a = coef_a.astype(Sac.dtype, copy=False)
    coef_b = coef_b.astype(Sac.dtype, copy=False)
    mode = _SKIP if same_block else _ALL
    ws = _Workspace(Na, Nb, D, Sac.dtype, with_grad=True)
    rowsum = np.zeros(Na)
    for i0, i1 in _ranges(0, Na, ws.rows):
        bi = i1 - i0
        for c0, c1 in _ranges(0, Nb, ws.width):
            W = ws.buffer(bi, c1 - c0)
            np.matmul(Sac[i0:i1], Sbc[c0:c1].T, out=W)
            _panel(W, sqa[i0:i1], sqb[c0:c1], coef_a[i0:i1], coef_b[c0:c1], scale, i0 - c0,
                   mode, _WEIGHT, rowsum[i0:i1], rowsum[i0:i1], ws.kbuf, ws.cpart)
            P = ws.P[:bi]
            np.matmul(W, Sbc[c0:c1], out=P)
            out[i0:i1] -= P
    out += rowsum[:, None] * Sac
    if Sac.dtype == np.float32 and not _float32_sums_held(rowsum, sqa, out):
        # Tight clusters: the float32 W @ Sb lost the difference; redo in float64.
        return block_weighted_grad.__wrapped__(np.asarray(Sa, np.float64), ga,
                                               np.asarray(Sb, np.float64), gb, sigma, same_block)
    return out
