"""Numba CPU backend (``backend="cpu"``): fused, register-tiled passes in O(N·D) memory.

Two methods
-----------
* Gram distances ``d2 = |Sc_i|^2 + |Sc_j|^2 - 2 Sc_i . Sc_j`` in fused
  passes (:mod:`._symmetric`), in S's precision or, for float32 input at small
  sigma, in float64 (:mod:`.._conditioning` decides);
* direct differences (:mod:`._direct`) where even a float64 Gram product
  would lose the kernel (sigma far below the data's spread).

Each has a parallel build and a serial twin; batches with ``N^2 D`` up to
:data:`_SERIAL_WORK` use the twin (no parallel region to wake up).

Fused passes
------------
Only the pairs ``i < j`` are visited (``K_ij = K_ji``), in register tiles of
8 rows x 2 SIMD vectors of columns; nothing of size N x N, and no panel of
pairs, is ever written to memory. For every tile one kernel (:mod:`._tiles`)
forms the Gram block in registers (SIMD vectors as Numba values,
:mod:`._simd`), turns it into ``K = exp(-d2 / 2 sigma^2)`` (masked to
``i < j``) and reduces it:

* pass 1 (the value) adds its row sums to the soft counts
  ``C0_i = sum_{j != i} K_ij`` of the rows and its column sums to those of
  the columns;
* pass 2 (the gradient; value-only calls stop after pass 1) recomputes the
  tile (or reads the kernel values pass 1 kept, when the whole batch fits in
  :data:`._symmetric.CACHE_BYTES` and D >= :data:`._symmetric.CACHE_MIN_D`),
  turns it into weights ``w_ij = K_ij (g_i + g_j)`` (``g``: the estimator's
  row coefficients), adds their row and column sums to
  ``rowsum`` and, again in register tiles, ``W @ Sc_cols`` to the rows'
  accumulators and ``W.T @ Sc_rows`` to the columns'; then
  ``sum_j w_ij (S_i - S_j) = rowsum_i Sc_i - acc_i``.

Per pair, pass 1 costs D multiply-adds and pass 2 costs 3 D, against 2 D
for the two dense GEMMs of the floor (``S S2^T`` then ``K S``) *over all N^2
pairs*: the same arithmetic, without the N x N memory traffic.

Routes and small batches
------------------------
Parallel-sized populations take one of two routes: the fused passes above,
or BLAS Gram panels with fused epilogues (:mod:`._panels`, the backend of
commit 79a6d26, with the same kernel flush and conditioning rule), chosen by
:func:`._routes.choose` (``KDENTROPY_CPU_ROUTE``, this machine's calibration
from :mod:`._calibration`, or a model fitted to measurements). Serial-sized
batches always take the fused passes; :func:`small_batch` runs them, from X
to dH/dX, in one compiled call (:mod:`._small`), bit-identical to the
step-by-step protocol.

The block primitives used by :mod:`kdentropy.mpi` pair two different blocks
of patterns: the same register tiles over all pairs (no symmetry), in
parallel over rows of the first block (:func:`._cross.cross_sums`).

Parallelism and determinism
---------------------------
Both passes walk the tiles in one traversal (:func:`._symmetric.symmetric_sums`):
row tiles of :data:`._tiles.BLOCK` rows run one after another; inside one,
column chunks of ``BLOCK`` columns run in a Numba ``prange`` loop (which
follows ``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``). A chunk owns its
columns' sums outright, the rows' partial sums of the chunks are reduced in
chunk order afterwards, and every tile is visited in a fixed order, so no
sum depends on the number of threads or on scheduling: results are
bit-identical from run to run and across Numba thread counts. The only
fast-math flag of the fused passes is FMA contraction, fixed at compile
time. Row sums are summed in vectors of 2L partial sums first, so their
last bits differ between machines with different SIMD widths (AVX2 and
AVX-512), never between runs or thread counts on one machine. Idle Numba
threads must not spin while user code runs BLAS between calls:
:mod:`kdentropy._jit` defaults ``OMP_WAIT_POLICY`` to ``PASSIVE`` for Numba's
OpenMP layer.

Numerics
--------
* ``S`` is centred on its column mean first. Distances and ``S_i - S_j``
  are unchanged, but ``|Sc_i|^2`` is smaller, so the cancellation in
  ``|a|^2 + |b|^2 - 2 a.b`` (the only inexact step of the float32 path)
  shrinks.
* float32 input keeps ``Sc``, the dot products, ``K``, ``w`` and the
  tile products ``W @ Sc`` in float32 (twice the SIMD lanes); squared norms
  are summed in float64, then rounded. Dot products are summed in blocks of
  64 terms (:mod:`._tiles`), products within one chunk (at most
  ``BLOCK`` terms), and the soft counts, ``rowsum`` and the gradient
  accumulators are float64. ``rowsum`` adds up exactly the float32 weights
  that enter ``W @ Sc``, so rounding ``w`` leaves no uncancelled self term
  in ``rowsum_i Sc_i - acc_i``, a difference taken in float64; where that
  difference is too small for float32 products (tight clusters,
  :func:`_float32_sums_held`) pass 2 is redone in float64. float32 kernel
  values below ``exp(-64)`` and float64 ones below ``exp(-600)`` are set to
  0 (no subnormals; see :func:`._kernel_value.kernel`).
* The ``j = i`` terms are never formed (they are exactly zero in the
  gradient and exactly 1 in ``C``): ``H = log N - mean(log1p(C0))``.
* ``exp`` is a branch-free polynomial (:func:`kdentropy._jit.exp_nonpos`,
  within an ulp or so of the C library's; float32 tiles use
  :func:`kdentropy._jit.exp_nonpos_f32`, within 2 float32 ulp), so the
  epilogue loops vectorise.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ... import _validation
from ..._jit import serialised_on_workqueue
from .. import _conditioning
from . import _routes, _tiles
from ._cross import cross_block_counts, cross_block_pair_sums
from ._direct import (
    direct_counts,
    direct_counts_serial,
    direct_pair_sums,
    direct_pair_sums_serial,
)
from ._panels import Panels
from ._rowwise import (
    centred,
    chain_rule_flat,
    column_mean,
    pair_sum_norms,
    pair_sums,
    sigmoid_flat,
)
from ._small import DONE, whole_batch
from ._symmetric import FusedPasses

# Batches with N^2 D at most this run the serial twins of the kernels: a
# parallel region costs ~70 us to wake the threads. Interleaved medians on
# 2 cores (value + gradient, fused passes): serial won up to 256 x 64 (207 us
# against 281 us in float32) and tied at 512 x 64; parallel won from there on.
_SERIAL_WORK = 1 << 23

NAME = "cpu"
DEVICE_ARRAYS = False
BLOCK_PRIMITIVES = True
# Streaming: whole blocks use O(n D) memory and parallelise better.
BLOCK_TILE_ROWS = None

__all__ = [
    "BLOCK_PRIMITIVES",
    "DEVICE_ARRAYS",
    "NAME",
    "block_soft_counts",
    "block_weighted_grad",
    "input_grad",
    "small_batch",
    "soft_counts_and_grad",
    "soft_patterns",
    "unavailable_reason",
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
    Xc = np.ascontiguousarray(X, dtype=_validation.compute_dtype(X.dtype))
    out = np.empty(Xc.shape, dtype=Xc.dtype)
    sigmoid_flat(Xc.reshape(-1), float(temperature), float(threshold), out.reshape(-1))
    return out


def _centred_for_distances(blocks: list[np.ndarray], mean: np.ndarray, sigma: float):
    """Centre each block on ``mean`` in the precision the conditioning rule picks for distances.

    Returns ``(work, [(Sc, sqn), ...])``. ``work`` is the Gram dtype, or
    ``None`` when distances must be direct differences (the blocks then come
    centred in their own dtype, unused). float32 Gram distances are twice as
    fast as float64 ones but carry an error of a few ``eps |Sc|^2`` that
    ``1 / sigma^2`` amplifies; :mod:`.._conditioning` says when that is too much.
    """
    dtype = blocks[0].dtype
    blocks_centred = [centred(B, mean, dtype) for B in blocks]
    max_sqnorm = max((float(sqn.max()) for _, sqn in blocks_centred if sqn.size), default=0.0)
    work = _conditioning.distance_precision(dtype, max_sqnorm, sigma)
    if work is not None and work != dtype:
        blocks_centred = [centred(B, mean, work) for B in blocks]
    return work, blocks_centred


def soft_counts_and_grad(S: np.ndarray, sigma: float,
                         coefficients: Callable[[np.ndarray], np.ndarray] | None,
                         route: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
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
    route : {"fused", "panels"} or None
        How Gram distances are reduced: fused register-tiled passes or BLAS
        Gram panels. ``None`` lets :func:`._routes.choose` decide from the
        size, dtype and thread count (batches that run serially always take
        the fused passes). Test hook.

    Returns
    -------
    C0 : ndarray of float64, shape (G, N)
        ``sum_{j != i} K_ij``.
    V : ndarray of float64, shape (G, N, D), or None
        ``sum_j K_ij (g_i + g_j) (S_i - S_j)``.
    """
    if route is not None and route not in _routes.ROUTES:
        raise ValueError(f"route must be one of {_routes.ROUTES} or None; got {route!r}")
    populations, N, D = S.shape
    C0 = np.empty((populations, N))
    V = np.empty((populations, N, D)) if coefficients is not None else None
    # Serial code takes no threading-layer lock either.
    if N * N * max(D, 1) <= _SERIAL_WORK:
        run, parallel = _population, False
    else:
        run, parallel = _population_in_parallel, True
    for p in range(populations):
        run(S[p], sigma, coefficients, C0[p], None if V is None else V[p], parallel, route)
    return C0, V


def _population(S: np.ndarray, sigma: float,
                coefficients: Callable[[np.ndarray], np.ndarray] | None,
                C0: np.ndarray, V: np.ndarray | None, parallel: bool = False,
                route: str | None = None) -> None:
    """:func:`soft_counts_and_grad` for one population ``S`` (N, D), into ``C0`` and ``V``."""
    scale = 0.5 / (sigma * sigma)
    mean = column_mean(S)
    work, [(Sc, sqn)] = _centred_for_distances([S], mean, sigma)
    if work is None:
        counts, pair_sums = ((direct_counts, direct_pair_sums) if parallel else
                             (direct_counts_serial, direct_pair_sums_serial))
        ST = np.ascontiguousarray(S.T)
        counts(S, ST, scale, True, C0)
        if V is not None:
            coef = np.asarray(coefficients(C0), np.float64)
            pair_sums(S, coef, S, ST, coef, scale, True, V)
        return
    if route is None:
        route = _routes.choose(*S.shape, work, parallel)
    passes = _passes(Sc, sqn, parallel, route)
    C0[:] = passes.counts(scale, keep=V is not None)
    if V is None:
        return
    coef = np.asarray(coefficients(C0), dtype=np.float64)
    rowsum = _weighted_pair_sums(passes, coef, scale, V)
    if work == np.float32 and not _float32_sums_held(rowsum, sqn, V):
        # Tight clusters: redo the sums in float64 (K is recomputed).
        _weighted_pair_sums(_passes(*centred(S, mean, np.float64), parallel, route), coef,
                            scale, V)


def _passes(Sc: np.ndarray, sqn: np.ndarray, parallel: bool, route: str):
    """The two passes of one population on ``route`` (serial batches: always fused)."""
    if route == "panels" and parallel:
        return Panels(Sc, sqn)
    return FusedPasses(Sc, sqn, parallel)


@serialised_on_workqueue
def _population_in_parallel(S, sigma, coefficients, C0, V, parallel=True, route=None) -> None:
    """:func:`_population` with the parallel kernels."""
    _population(S, sigma, coefficients, C0, V, True, route)


def _weighted_pair_sums(passes: FusedPasses, coef: np.ndarray, scale: float,
                        out: np.ndarray) -> np.ndarray:
    """Pass 2: ``out_i = sum_j K_ij (g_i + g_j) (S_i - S_j)``; returns ``sum_j w_ij``."""
    rowsum, acc = passes.pair_sums(coef, scale)
    pair_sums(rowsum, passes.Sc, acc, out)
    return rowsum


def _float32_sums_held(rowsum: np.ndarray, sqn: np.ndarray, V: np.ndarray) -> bool:
    """Whether ``V = rowsum Sc - W @ Sc`` from float32 products kept its accuracy (see _conditioning).

    ``sqn`` holds the squared row norms of ``Sc``, so ``|rowsum Sc|`` needs no
    N x D temporary.
    """
    subtrahend, result = pair_sum_norms(rowsum, sqn, V)
    return _conditioning.float32_pair_sums_are_accurate(subtrahend, result)


def input_grad(S: np.ndarray, V: np.ndarray, temperature: float, factor: float,
               shape: tuple[int, ...]) -> np.ndarray:
    """``factor V sigmoid_slope(S, T)`` (the chain rule through the sigmoid), shaped and typed like X."""
    out = np.empty(S.shape, dtype=S.dtype)
    chain_rule_flat(V.reshape(-1), S.reshape(-1), float(temperature), float(factor),
                    out.reshape(-1))
    return out.reshape(shape)


# ----------------------------------------------------------------------------- small batches

# Per compute dtype: the conditioning rule's numbers and the float32 pair-sum rule.
_WHOLE_BATCH_RULES = {
    np.dtype(np.float32): (_conditioning.own_precision_rule(np.float32),
                           (_conditioning.own_precision_rule(np.float32)[0],
                            _conditioning.FLOAT32_PAIR_SUM_LIMIT)),
    np.dtype(np.float64): (_conditioning.own_precision_rule(np.float64), None),
}


def small_batch(X: np.ndarray, temperature: float, threshold: float, sigma: float,
                factor: float | None) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Soft counts and ``dH/dX`` of a small float32/float64 host batch in one compiled call.

    The same kernels, in the same order, as :func:`soft_patterns`,
    :func:`soft_counts_and_grad` and :func:`input_grad` (bit-identical
    results), without their Python: for the batches that run the serial
    kernels (``N^2 D`` up to :data:`_SERIAL_WORK`) and that the conditioning
    rule leaves in their own precision.

    Parameters
    ----------
    X : ndarray, shape (..., N, D)
        The batch as the caller received it (not yet validated).
    temperature, threshold, sigma : float
        Validated T, theta and sigma.
    factor : float or None
        The gradient's scale; ``None`` computes the soft counts only.

    Returns
    -------
    (C0, grad) or None
        ``C0`` (float64, shape ``(G, N)``) and the gradient (X's shape and
        dtype, ``None`` without ``factor``); ``None`` when this batch needs
        the general path (another dtype or size, values that are not finite,
        another distance precision), which then computes it from scratch.
    """
    rules = _WHOLE_BATCH_RULES.get(X.dtype)
    shape = X.shape
    if rules is None or len(shape) < 2 or X.size == 0:
        return None
    N, D = shape[-2:]
    if N < 2 or N * N * D > _SERIAL_WORK:
        return None
    X3 = np.ascontiguousarray(X).reshape((-1, N, D))
    C0 = np.empty(X3.shape[:2])
    out = np.empty(X3.shape, X.dtype)
    status = whole_batch(X3, temperature, threshold, sigma, 0.0 if factor is None else factor,
                         factor is not None, rules[0], rules[1], _tiles.BLOCK, C0, out)
    if status != DONE:
        return None
    return C0, None if factor is None else out.reshape(shape)


# ----------------------------------------------------------------------------- block primitives

def _block_inputs(Sa: np.ndarray, Sb: np.ndarray, sigma: float, same_block: bool):
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
    if same_block and Sa.shape[0] != Sb.shape[0]:
        raise ValueError("same_block requires Sa and Sb to hold the same rows; "
                         f"got {Sa.shape[0]} and {Sb.shape[0]} rows")
    dtype = np.promote_types(_validation.compute_dtype(Sa.dtype, "Sa"),
                             _validation.compute_dtype(Sb.dtype, "Sb"))
    Sa = np.ascontiguousarray(Sa, dtype=dtype)
    Sb = np.ascontiguousarray(Sb, dtype=dtype)
    # Every quantity is translation invariant; a caller that passes all rows
    # as Sb (as kdentropy.mpi does) centres exactly as soft_counts_and_grad does.
    mean = column_mean(Sb)
    work, [(Sac, sqa), (Sbc, sqb)] = _centred_for_distances([Sa, Sb], mean, sigma)
    if work is None:  # direct differences work on the blocks as given
        return Sa, None, Sb, None
    return Sac, sqa, Sbc, sqb


@serialised_on_workqueue
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
    Sac, sqa, Sbc, sqb = _block_inputs(Sa, Sb, sigma, same_block)
    Na, D = Sac.shape
    C0 = np.zeros(Na)
    if Na == 0 or Sbc.shape[0] == 0:
        return C0
    scale = 0.5 / (sigma * sigma)
    if sqa is None:
        direct_counts(Sac, np.ascontiguousarray(Sbc.T), scale, same_block, C0)
        return C0
    return cross_block_counts(Sac, sqa, Sbc, sqb, scale, same_block)


@serialised_on_workqueue
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
    Sac, sqa, Sbc, sqb = _block_inputs(Sa, Sb, sigma, same_block)
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
    rowsum, acc = cross_block_pair_sums(Sac, sqa, coef_a, Sbc, sqb, coef_b, scale, same_block)
    pair_sums(rowsum, Sac, acc, out)
    if Sac.dtype == np.float32 and not _float32_sums_held(rowsum, sqa, out):
        # Tight clusters: the float32 W @ Sb lost the difference; redo in float64.
        return block_weighted_grad.__wrapped__(np.asarray(Sa, np.float64), ga,
                                               np.asarray(Sb, np.float64), gb, sigma, same_block)
    return out
