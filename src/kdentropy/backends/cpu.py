"""Numba CPU backend: streaming, tiled soft entropy and gradient in O(N·D) memory.

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
pass 1) turns each panel into weights ``w_ij = K_ij (1/C_i + 1/C_j)``, adds
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

import math
import os

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

# Numba's OpenMP threading layer spins its idle workers for milliseconds after
# each parallel region. Here every epilogue is followed by a multi-threaded
# BLAS call, and a spinning worker takes a core away from it: 2x slower with
# 2 threads (0.68 s instead of 0.29 s at N, D = 4096, 256). Passive waiting
# removes the conflict. It takes effect only if the OpenMP runtime has not
# been loaded yet (Numba loads it at its first parallel launch, not at
# import); an explicit user setting always wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

NAME = "cpu"

__all__ = [
    "NAME",
    "unavailable_reason",
    "soft_discretize",
    "block_soft_counts",
    "block_grad",
    "value_and_grad",
]

# Rows per parallel work item in the epilogues. Fixed (not derived from the
# thread count) so that the column-sum reduction order never changes.
_ROW_CHUNK = 16
# Only FMA contraction: it is decided at compile time (so results stay
# reproducible) and it halves the cost of the polynomial exp. No reassociation.
_FASTMATH = {"contract"}
# Rows per tile, and the bound (in entries) on a B x W panel and on the
# W x D product buffer (2**22 entries: 32 MiB in float64). Large panels mean
# few BLAS calls and parallel regions, i.e. few points where all threads must
# meet: measured on 2 busy cores, B = 256 was up to 3x slower than B = 1024,
# while one thread ran at the same speed with either.
_TILE_ROWS = 1024
_PANEL_ENTRIES = 1 << 22
# Bytes of kernel values that pass 1 may keep for pass 2 (saving their Gram
# products and exps there). A constant, not a function of N.
_K_CACHE_BYTES = 32 << 20


def unavailable_reason() -> str | None:
    """Why this backend cannot run here, or ``None`` when it can (always: Numba is required)."""
    return None


# ----------------------------------------------------------------------------- scalar helpers

def _bitcast(src: types.Type, dst: types.Type, llvm_type: ir.Type, doc: str):
    """An intrinsic that reinterprets the bits of a ``src`` scalar as ``dst``.

    An LLVM bitcast, so loops that use it still vectorise.
    """
    src_kind = types.Integer if isinstance(src, types.Integer) else types.Float

    @intrinsic
    def bitcast(typingctx, x):
        if not isinstance(x, src_kind):
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvm_type)

        return dst(src), codegen

    bitcast.__doc__ = doc
    return bitcast


_bits_to_f64 = _bitcast(types.int64, types.float64, ir.DoubleType(), "int64 bits as float64")
_f64_to_bits = _bitcast(types.float64, types.int64, ir.IntType(64), "float64 bits as int64")
_bits_to_f32 = _bitcast(types.int32, types.float32, ir.FloatType(), "int32 bits as float32")
_f32_to_bits = _bitcast(types.float32, types.int32, ir.IntType(32), "float32 bits as int32")


_LOG2E = 1.4426950408889634
# ln 2 split so that n * _LN2_HI is exact for |n| < 2**20 (Cody and Waite).
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# Adding 1.5 * 2**52 rounds to the nearest integer and leaves it in the low
# mantissa bits, avoiding a float -> int64 conversion that AVX2 lacks.
_SHIFTER = 6755399441055744.0
_SHIFTER_BITS = 0x4338000000000000


@njit(inline="always", cache=True)
def _exp_nonpos(x):
    """``exp(x)`` for float64 ``x <= 0``, without branches or library calls.

    ``x = n ln2 + r`` with ``|r| <= ln2 / 2``; ``exp(r)`` is its degree-13
    Taylor polynomial (truncation error below 1e-17 relative) and ``2**n`` is
    built from exponent bits in two halves, so results down to the smallest
    subnormal are right and anything below about -745 gives exactly 0.
    """
    x = max(x, -800.0)  # exp(-800) underflows to 0; keeps n inside int range
    kd = x * _LOG2E + _SHIFTER
    nf = kd - _SHIFTER
    n = _f64_to_bits(kd) - _SHIFTER_BITS
    r = (x - nf * _LN2_HI) - nf * _LN2_LO
    p = 1.6059043836821613e-10
    p = p * r + 2.08767569878681e-09
    p = p * r + 2.505210838544172e-08
    p = p * r + 2.755731922398589e-07
    p = p * r + 2.7557319223985893e-06
    p = p * r + 2.48015873015873e-05
    p = p * r + 0.0001984126984126984
    p = p * r + 0.001388888888888889
    p = p * r + 0.008333333333333333
    p = p * r + 0.041666666666666664
    p = p * r + 0.16666666666666666
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    # n >= -1155 here; split it so that both factors are normal numbers and
    # the only rounding to a subnormal happens in the last product.
    a = n >> 1
    b = n - a
    return p * _bits_to_f64((a + 1023) << 52) * _bits_to_f64((b + 1023) << 52)


_F32 = np.float32
# float32 Cody-Waite split: _LN2_HI_F32 has 9 significant bits, so n times it
# is exact for the |n| <= 126 that occur here.
_LOG2E_F32 = _F32(1.4426950408889634)
_LN2_HI_F32 = _F32(0.693359375)
_LN2_LO_F32 = _F32(-2.12194440e-4)
_SHIFTER_F32 = _F32(12582912.0)  # 1.5 * 2**23
_SHIFTER_BITS_F32 = np.int32(0x4B400000)


# Below this argument float32 kernel values are set to 0 (see _kernel).
_KERNEL_FLUSH_F32 = -64.0


@njit(inline="always", cache=True)
def _exp_nonpos_f32(x):
    """``exp(x)`` for float32 ``-87 <= x <= 0`` in float32 arithmetic (twice the SIMD width).

    Same scheme as :func:`_exp_nonpos`: ``exp(r)`` with ``|r| <= ln2 / 2`` is
    its degree-7 Taylor polynomial (truncation 7e-9 relative, below the
    float32 rounding; about 1.7 float32 ulp in all) times ``2**n``. Smaller
    ``x`` is clamped to -87, so the result is always a normal number.
    """
    x = max(x, _F32(-87.0))
    kd = x * _LOG2E_F32 + _SHIFTER_F32
    nf = kd - _SHIFTER_F32
    n = _f32_to_bits(kd) - _SHIFTER_BITS_F32
    r = (x - nf * _LN2_HI_F32) - nf * _LN2_LO_F32
    p = _F32(1.0 / 5040.0)
    p = p * r + _F32(1.0 / 720.0)
    p = p * r + _F32(1.0 / 120.0)
    p = p * r + _F32(1.0 / 24.0)
    p = p * r + _F32(1.0 / 6.0)
    p = p * r + _F32(0.5)
    p = p * r + _F32(1.0)
    p = p * r + _F32(1.0)
    return p * _bits_to_f32((n + np.int32(127)) << np.int32(23))


def _kernel(a, b, g, scale, like):
    """``exp(-scale max(a + b - 2 g, 0))`` in the precision of the array ``like``."""
    raise NotImplementedError("only callable from Numba-compiled code")


@overload(_kernel, inline="always")
def _kernel_impl(a, b, g, scale, like):
    # Resolved at compile time. float32 panels form d2 and K in float32 (the
    # squared norms come in float32 too): the loop then vectorises at 8 lanes
    # and was 2.5x faster than with d2 in float64. Kernel values below
    # exp(-64) ~ 1.6e-28 are flushed to 0: they change no soft count (>= 1)
    # or weight visibly, and keeping them would produce float32 subnormals (in
    # K, or in w = K (1/C_i + 1/C_j) for N < 1e10), whose microcode assists
    # made float32 panels slower than float64 ones.
    if isinstance(like, types.Array) and like.dtype == types.float32:
        def impl32(a, b, g, scale, like):
            x = np.float32(-scale) * max(a + b - np.float32(2.0) * g, np.float32(0.0))
            e = _exp_nonpos_f32(x)
            return e if x >= np.float32(_KERNEL_FLUSH_F32) else np.float32(0.0)
        return impl32

    def impl64(a, b, g, scale, like):
        return _exp_nonpos(-scale * max(a + b - 2.0 * np.float64(g), 0.0))
    return impl64


@njit(inline="always", cache=True)
def _sum(v):
    """Sum of a 1-D array in a fixed order, with four independent partial sums."""
    n = v.size
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    m = n - n % 4
    for j in range(0, m, 4):
        s0 += v[j]
        s1 += v[j + 1]
        s2 += v[j + 2]
        s3 += v[j + 3]
    for j in range(m, n):
        s0 += v[j]
    return (s0 + s1) + (s2 + s3)


@njit(inline="always", cache=True)
def _add_into(acc, v):
    """``acc += v`` elementwise (float64 accumulator)."""
    for j in range(v.size):
        acc[j] += v[j]


# Inner loops below always run from 0 over sliced views: Numba loops with a
# variable start index were measured not to vectorise (3-4x slower).

# ----------------------------------------------------------------------------- O(N·D) kernels
# These touch each of the N·D entries a few times; they are serial because
# that is negligible next to the O(N^2 D) panel work and compiles much faster.

@njit(fastmath=_FASTMATH, error_model="numpy", cache=True)
def _sigmoid_flat(x, temperature, threshold, out):
    """``out = 1 / (1 + exp(-T (x - theta)))`` elementwise (flat arrays), overflow-free."""
    # error_model="numpy" drops the zero-division check (1 + e >= 1), which
    # would otherwise stop this loop from vectorising.
    for k in range(x.size):
        z = temperature * (np.float64(x[k]) - threshold)
        e = _exp_nonpos(-abs(z))  # in [0, 1]: never overflows, even for z = +-inf
        s = 1.0 / (1.0 + e)
        out[k] = s if z >= 0.0 else e * s


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


@njit(inline="always", cache=True)
def _sumsq(v):
    """``sum(v**2)`` in float64, in a fixed order with four partial sums."""
    n = v.size
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    m = n - n % 4
    for j in range(0, m, 4):
        a0 = np.float64(v[j])
        a1 = np.float64(v[j + 1])
        a2 = np.float64(v[j + 2])
        a3 = np.float64(v[j + 3])
        s0 += a0 * a0
        s1 += a1 * a1
        s2 += a2 * a2
        s3 += a3 * a3
    for j in range(m, n):
        a0 = np.float64(v[j])
        s0 += a0 * a0
    return (s0 + s1) + (s2 + s3)


@njit(cache=True)
def _chain_rule(rowsum, Sc, acc, S, factor, out):
    """``out = factor (rowsum_i Sc_i - acc_i) S (1 - S)``, in the output dtype.

    ``rowsum_i Sc_i - acc_i = sum_j w_ij (S_i - S_j)`` is dH/dS up to
    ``factor / T``; ``T S (1 - S)`` carries it over to dH/dX.
    """
    N, D = S.shape
    for i in range(N):
        r = rowsum[i]
        a = acc[i]
        c = Sc[i]
        s = S[i]
        o = out[i]
        for k in range(D):
            v = np.float64(s[k])
            o[k] = factor * (r * np.float64(c[k]) - a[k]) * (v * (1.0 - v))


# ----------------------------------------------------------------------------- panel epilogue
# A panel is the Gram block G = Sc[rows] @ Sc[cols].T of one row tile against a
# range of columns; ``offset`` = (first row) - (first column), so that entry
# (r, c) pairs pattern i with pattern j = i + (c - r - offset). ``mode`` says
# which entries count:
#   _ALL    every entry (blocks of different patterns),
#   _SKIP   all but c == r + offset (the same patterns on both sides),
#   _UPPER  the symmetric pass over pairs i < j: either the panel starts with
#           the row tile's own diagonal block (offset == 0; only c > r counts
#           there) or it lies wholly right of it (offset <= -rows). Column sums
#           then carry the pairs' other half.
_ALL, _SKIP, _UPPER = 0, 1, 2
# ``stage`` says what the epilogue does:
#   _COUNT          K from G, sums into the soft counts;
#   _COUNT_KEEP     the same, and leave K (in G's dtype) where it counts;
#   _WEIGHT         w from G, stored in G, sums of w;
#   _WEIGHT_CACHED  w from the K that _COUNT_KEEP left in G.
_COUNT, _COUNT_KEEP, _WEIGHT, _WEIGHT_CACHED = 0, 1, 2, 3


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _panel(G, ni, nj, inv_ci, inv_cj, scale, offset, mode, stage,
           row_out, col_out, kbuf, cpart):
    """Fused epilogue of one panel: distances, kernel, weights, row/column sums.

    Counting stages add the row sums of ``K`` to ``row_out`` and, in
    ``_UPPER`` mode, its column sums to ``col_out`` (``inv_ci``/``inv_cj``
    are unused). Weighting stages overwrite ``G`` with
    ``w_ij = K_ij (1/C_i + 1/C_j)`` (0 where excluded) and add the sums of the
    *stored* weights (float32-rounded for float32 panels), so that
    ``rowsum_i Sc_i - (W @ Sc)_i`` cancels exactly what it should; in
    ``_UPPER`` mode a diagonal block is completed by symmetry, so that one
    product ``W @ Sc`` serves both of its halves (its column sums, added to
    ``col_out``, are then row sums: ``row_out`` and ``col_out`` are views of
    one per-pattern array). ``kbuf``/``cpart`` are per-chunk scratch.
    """
    bi, bw = G.shape
    nchunk = (bi + _ROW_CHUNK - 1) // _ROW_CHUNK
    with_cols = mode == _UPPER
    weights = stage >= _WEIGHT
    for ch in prange(nchunk):
        cp = cpart[ch, :bw]
        if with_cols:
            cp[:] = 0.0
        for r in range(ch * _ROW_CHUNK, min(bi, (ch + 1) * _ROW_CHUNK)):
            lo = min(max(r + offset + 1, 0), bw) if mode == _UPPER else 0
            g = G[r, lo:]
            k = kbuf[ch, lo:bw]
            if stage == _WEIGHT_CACHED:
                for c in range(k.size):
                    k[c] = g[c]
            else:
                n = nj[lo:]
                a = ni[r]
                for c in range(k.size):
                    k[c] = _kernel(a, n[c], g[c], scale, k)
            if mode == _SKIP and 0 <= r + offset < bw:
                k[r + offset] = 0.0
            if weights:
                v = inv_cj[lo:]
                u = inv_ci[r]
                for c in range(k.size):
                    g[c] = k[c] * (u + v[c])
                    k[c] = g[c]  # the stored (rounded) weight is what gets summed
            elif stage == _COUNT_KEEP:
                for c in range(k.size):
                    g[c] = k[c]
            row_out[r] += _sum(k)
            if with_cols:
                _add_into(cp[lo:], k)
    if with_cols:
        # Chunks are added in a fixed order, whatever the number of threads.
        for ch in range(nchunk):
            _add_into(col_out, cpart[ch, :bw])
    if weights and mode == _UPPER and offset == 0:
        # Mirror the diagonal block's upper triangle (W is symmetric there),
        # in 32 x 32 blocks so that the strided reads stay in cache.
        for rb in range(0, bi, 32):
            for cb in range(0, rb + 1, 32):
                for r in range(rb, min(rb + 32, bi)):
                    for c in range(cb, min(cb + 32, r)):
                        G[r, c] = G[c, r]
        for r in range(bi):
            G[r, r] = 0.0


# ----------------------------------------------------------------------------- drivers

def _ranges(lo: int, hi: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(hi, a + step)) for a in range(lo, hi, step)]


class _Workspace:
    """Bounded buffers shared by all panels of one call.

    ``rows x width`` panel, ``width x D`` product buffer and per-chunk
    scratch: O(_PANEL_ENTRIES) memory, plus the pass-1 kernel cache (at most
    ``_K_CACHE_BYTES``) when a gradient is wanted.
    """

    def __init__(self, rows: int, cols: int, D: int, dtype: np.dtype, with_grad: bool) -> None:
        self.dtype = np.dtype(dtype)
        self.rows = max(1, min(_TILE_ROWS, rows))
        # Wide panels mean few, large BLAS calls and parallel regions.
        width = min(_PANEL_ENTRIES // self.rows, _PANEL_ENTRIES // max(D, 1))
        self.width = max(self.rows, min(width, cols))
        nchunk = (self.rows + _ROW_CHUNK - 1) // _ROW_CHUNK
        self.panel = np.empty(self.rows * self.width, dtype=dtype)
        self.cpart = np.empty((nchunk, self.width))
        self.kbuf = np.empty((nchunk, self.width), dtype=dtype)
        if with_grad:
            self.P = np.empty((self.rows, D), dtype=dtype)
            self.Q = np.empty((self.width, D), dtype=dtype)

    def buffer(self, bi: int, bw: int) -> np.ndarray:
        return self.panel[: bi * bw].reshape(bi, bw)


def _sym_plan(N: int, ws: _Workspace, keep: bool):
    """Panels of the symmetric pass, in visiting order, with their K-cache slots.

    Returns ``(panels, cache)``: ``panels`` lists ``(i0, i1, c0, c1, slot)``
    where ``slot`` is a view of ``cache`` for the panels whose kernel values
    pass 1 keeps (in order, while they fit in ``_K_CACHE_BYTES``), else None.
    """
    spans = [(i0, i1, c0, c1) for i0, i1 in _ranges(0, N, ws.rows)
             for c0, c1 in _ranges(i0, N, ws.width)]
    budget = _K_CACHE_BYTES // ws.dtype.itemsize if keep else 0
    sizes = []
    used = 0
    for i0, i1, c0, c1 in spans:
        size = (i1 - i0) * (c1 - c0)
        fits = used + size <= budget
        sizes.append(size if fits else 0)
        used += size if fits else 0
    cache = np.empty(used, dtype=ws.dtype)
    panels = []
    pos = 0
    for (i0, i1, c0, c1), size in zip(spans, sizes):
        slot = cache[pos:pos + size].reshape(i1 - i0, c1 - c0) if size else None
        pos += size
        panels.append((i0, i1, c0, c1, slot))
    return panels, cache


def _sym_gram(Sc: np.ndarray, i0: int, i1: int, c0: int, c1: int, G: np.ndarray) -> None:
    """``G = Sc[i0:i1] @ Sc[c0:c1].T`` by BLAS; a leading float64 diagonal block by syrk.

    float32 panels are always one GEMM: OpenBLAS's ssyrk was measured no
    faster than sgemm on the whole block (2 threads, D <= 1024), and the
    extra call cost up to 40% of a panel at D = 64. Only the upper triangle
    of a diagonal block is read, so GEMM's not exactly symmetric result is
    harmless.
    """
    A = Sc[i0:i1]
    if c0 == i0 and Sc.dtype == np.float64:
        bi = i1 - i0
        np.matmul(A, A.T, out=G[:, :bi])  # NumPy recognises A @ A.T and calls syrk
        if c1 > i1:
            np.matmul(A, Sc[i1:c1].T, out=G[:, bi:])
    else:
        np.matmul(A, Sc[c0:c1].T, out=G)


def _sym_counts(Sc: np.ndarray, sqn: np.ndarray, scale: float, ws: _Workspace,
                panels) -> np.ndarray:
    """Pass 1: ``C0_i = sum_{j != i} K_ij`` for one population, from the pairs i < j."""
    C0 = np.zeros(Sc.shape[0])
    for i0, i1, c0, c1, slot in panels:
        G = ws.buffer(i1 - i0, c1 - c0) if slot is None else slot
        _sym_gram(Sc, i0, i1, c0, c1, G)
        # sqn stands in for the 1/C arguments, which counting ignores: it has
        # their dtype, so both passes share one compiled _panel.
        _panel(G, sqn[i0:i1], sqn[c0:c1], sqn[i0:i1], sqn[c0:c1], scale, i0 - c0, _UPPER,
               _COUNT if slot is None else _COUNT_KEEP, C0[i0:i1], C0[c0:c1],
               ws.kbuf, ws.cpart)
    return C0


def _sym_grad(Sc: np.ndarray, sqn: np.ndarray, inv_c: np.ndarray, scale: float,
              ws: _Workspace, panels) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2 for one population, from the pairs i < j.

    Returns ``(rowsum, acc)`` (float64) with ``rowsum_i = sum_j w_ij`` and
    ``acc_i = sum_j w_ij Sc_j``, so that
    ``sum_j w_ij (S_i - S_j) = rowsum_i Sc_i - acc_i``.
    """
    rowsum = np.zeros(Sc.shape[0])
    acc = np.zeros(Sc.shape)
    for i0, i1, c0, c1, slot in panels:
        bi, bw = i1 - i0, c1 - c0
        if slot is None:
            W = ws.buffer(bi, bw)
            _sym_gram(Sc, i0, i1, c0, c1, W)
        else:
            W = slot  # holds K from pass 1
        _panel(W, sqn[i0:i1], sqn[c0:c1], inv_c[i0:i1], inv_c[c0:c1], scale, i0 - c0, _UPPER,
               _WEIGHT if slot is None else _WEIGHT_CACHED, rowsum[i0:i1], rowsum[c0:c1],
               ws.kbuf, ws.cpart)
        P = ws.P[:bi]
        np.matmul(W, Sc[c0:c1], out=P)  # sum_j w_ij Sc_j for the rows
        acc[i0:i1] += P
        # A diagonal block is complete in W, so only the columns right of it
        # need the transposed product.
        d = bi if c0 == i0 else 0
        if bw > d:
            Q = ws.Q[: bw - d]
            np.matmul(W[:, d:].T, Sc[i0:i1], out=Q)  # sum_i w_ij Sc_i for the columns
            acc[c0 + d : c1] += Q
    return rowsum, acc


def _centered(S: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``S - mean`` in S's dtype and its squared row norms.

    The norms are summed in float64 and then rounded to S's dtype, the
    precision in which :func:`_panel` forms distances.
    """
    Sc = np.empty_like(S)
    sqn = np.empty(S.shape[0])
    _center_on(S, mean, Sc, sqn)
    return Sc, sqn.astype(S.dtype, copy=False)


def _column_mean_of(S: np.ndarray) -> np.ndarray:
    mean = np.empty(S.shape[1])
    _column_mean(S, mean)
    return mean


def value_and_grad(X3: np.ndarray, temperature: float, sigma: float, threshold: float,
                   want_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Soft entropy (nats) and optionally its gradient for a ``(G, N, D)`` array.

    Parameters
    ----------
    X3 : ndarray, shape (G, N, D)
        C-contiguous float32 or float64 array of finite values.
    temperature, sigma, threshold : float
        Validated parameters (``temperature > 0``, ``sigma > 0``).
    want_grad : bool
        If false only pass 1 (soft counts) runs.

    Returns
    -------
    H : ndarray of float64, shape (G,)
        Entropy of each population in nats.
    grad : ndarray like X3 or None
        ``dH/dX3`` in the dtype of ``X3``; ``None`` unless ``want_grad``.
    """
    X3 = np.ascontiguousarray(X3)
    if X3.dtype not in (np.float32, np.float64):
        X3 = X3.astype(np.float64)
    G_, N, D = X3.shape
    if N == 0:
        return np.zeros(G_), (np.zeros_like(X3) if want_grad else None)
    scale = 0.5 / (sigma * sigma)
    ws = _Workspace(N, N, D, X3.dtype, want_grad)
    panels, _cache = _sym_plan(N, ws, keep=want_grad)
    H = np.empty(G_, dtype=np.float64)
    grad = np.empty_like(X3) if want_grad else None
    for g in range(G_):
        S = soft_discretize(X3[g], temperature, threshold)
        Sc, sqn = _centered(S, _column_mean_of(S))
        C0 = _sym_counts(Sc, sqn, scale, ws, panels)
        H[g] = math.log(N) - np.sum(np.log1p(C0)) / N
        if want_grad:
            # Rounded to the panel dtype: float32 weights are then formed in
            # float32 (8 lanes), and rounded to float32 either way.
            inv_c = (1.0 / (1.0 + C0)).astype(Sc.dtype, copy=False)
            rowsum, acc = _sym_grad(Sc, sqn, inv_c, scale, ws, panels)
            _chain_rule(rowsum, Sc, acc, S, temperature / (N * sigma * sigma), grad[g])
    return H, grad


# ----------------------------------------------------------------------------- public primitives

def soft_discretize(X: np.ndarray, temperature: float, threshold: float) -> np.ndarray:
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
    _sigmoid_flat(Xc.reshape(-1), float(temperature), float(threshold), out.reshape(-1))
    return out


def _block_inputs(Sa: np.ndarray, Sb: np.ndarray):
    """Validate two blocks of soft patterns; centre both on Sb's column mean."""
    Sa = np.asarray(Sa)
    Sb = np.asarray(Sb)
    if Sa.ndim != 2 or Sb.ndim != 2 or Sa.shape[1] != Sb.shape[1]:
        raise ValueError("Sa and Sb must be 2-D with the same number of columns; "
                         f"got shapes {Sa.shape} and {Sb.shape}")
    dtype = np.float32 if (Sa.dtype == np.float32 and Sb.dtype == np.float32) else np.float64
    Sa = np.ascontiguousarray(Sa, dtype=dtype)
    Sb = np.ascontiguousarray(Sb, dtype=dtype)
    # Every quantity is translation invariant; a caller that passes all rows
    # as Sb (the MPI layout) centres exactly as value_and_grad does.
    mean = _column_mean_of(Sb)
    Sac, sqa = _centered(Sa, mean)
    Sbc, sqb = _centered(Sb, mean)
    return Sac, sqa, Sbc, sqb


def _check_same_block(same_block: bool, Sa: np.ndarray, Sb: np.ndarray) -> None:
    if same_block and Sa.shape[0] != Sb.shape[0]:
        raise ValueError("same_block requires Sa and Sb to hold the same rows; "
                         f"got {Sa.shape[0]} and {Sb.shape[0]} rows")


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
        Streaming and tiled like :func:`value_and_grad` (no ``Na x Nb``
        matrix); float32 blocks use float32 Gram products.
    """
    Sac, sqa, Sbc, sqb = _block_inputs(Sa, Sb)
    _check_same_block(same_block, Sac, Sbc)
    Na, D = Sac.shape
    C0 = np.zeros(Na)
    if Na == 0 or Sbc.shape[0] == 0:
        return C0
    scale = 0.5 / (sigma * sigma)
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


def block_grad(Sa: np.ndarray, inv_Ca: np.ndarray, Sb: np.ndarray, inv_Cb: np.ndarray,
               sigma: float, same_block: bool) -> np.ndarray:
    """``sum_j w_ij (Sa_i - Sb_j)`` with ``w_ij = K_ij (1/C_i + 1/C_j)`` (float64, like Sa).

    Parameters
    ----------
    Sa : ndarray, shape (Na, D)
        Soft patterns of the rows whose gradient is wanted.
    inv_Ca : ndarray, shape (Na,)
        Reciprocal full soft counts ``1 / (1 + C0)`` of those rows.
    Sb : ndarray, shape (Nb, D)
        Soft patterns they are compared with.
    inv_Cb : ndarray, shape (Nb,)
        Reciprocal full soft counts of the rows of Sb.
    sigma : float
        Kernel width.
    same_block : bool
        The two blocks hold the same rows: the ``j = i`` terms are skipped.

    Returns
    -------
    ndarray of float64, shape (Na, D)
        Divided by ``N sigma^2`` this is ``dH/dS`` for the rows of Sa.
    """
    Sac, sqa, Sbc, sqb = _block_inputs(Sa, Sb)
    _check_same_block(same_block, Sac, Sbc)
    Na, D = Sac.shape
    Nb = Sbc.shape[0]
    inv_a = np.ascontiguousarray(inv_Ca, dtype=np.float64)
    inv_b = np.ascontiguousarray(inv_Cb, dtype=np.float64)
    if inv_a.shape != (Na,) or inv_b.shape != (Nb,):
        raise ValueError(f"inv_Ca and inv_Cb must have shapes ({Na},) and ({Nb},); "
                         f"got {inv_a.shape} and {inv_b.shape}")
    out = np.zeros((Na, D))
    if Na == 0 or Nb == 0:
        return out
    # As in value_and_grad: float32 blocks form their weights in float32.
    inv_a = inv_a.astype(Sac.dtype, copy=False)
    inv_b = inv_b.astype(Sac.dtype, copy=False)
    scale = 0.5 / (sigma * sigma)
    mode = _SKIP if same_block else _ALL
    ws = _Workspace(Na, Nb, D, Sac.dtype, with_grad=True)
    rowsum = np.zeros(Na)
    for i0, i1 in _ranges(0, Na, ws.rows):
        bi = i1 - i0
        for c0, c1 in _ranges(0, Nb, ws.width):
            W = ws.buffer(bi, c1 - c0)
            np.matmul(Sac[i0:i1], Sbc[c0:c1].T, out=W)
            _panel(W, sqa[i0:i1], sqb[c0:c1], inv_a[i0:i1], inv_b[c0:c1], scale, i0 - c0,
                   mode, _WEIGHT, rowsum[i0:i1], rowsum[i0:i1], ws.kbuf, ws.cpart)
            P = ws.P[:bi]
            np.matmul(W, Sbc[c0:c1], out=P)
            out[i0:i1] -= P
    out += rowsum[:, None] * Sac
    return out
