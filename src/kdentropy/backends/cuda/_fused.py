"""Fused, register-tiled pair kernels: no N x N value is ever written to memory.

The Gram form runs the issue-efficient kernels of :mod:`._tiles` (128-bit
shared loads, 32-bit indices, a symmetric pass 1); this module launches them
(:func:`counts`, :func:`weighted_sums`, same signatures for both forms) and
holds the kernels described below, which the direct-difference form runs (and
the Gram form only when ``G N D`` reaches 2^32 elements).

A thread block owns ``B = TH * R`` rows of one population and sweeps a
contiguous split of the column tiles (``B`` columns each). Per tile, the
``TH x TH`` threads each hold an ``R x R`` register tile of pairs; the rows'
cells are staged ``KT`` at a time in shared memory (k-major, padded). Two
ways of forming ``d2_ij`` are compiled, chosen by the caller from the
conditioning of the problem, never by the user:

* ``gram=True``: ``d2 = |Sc_i|^2 + |Sc_j|^2 - 2 Sc_i . Sc_j`` on centred
  rows, one FMA per pair and cell, clamped at 0. Its rounding error is about
  ``eps |Sc|^2``, which the caller allows only when ``eps max|Sc|^2 / sigma^2``
  is small.
* ``gram=False``: direct differences ``sum_k (S_ik - S_jk)^2``, two
  instructions per pair and cell, accurate for every sigma (float32 slices of
  ``KT`` cells are summed first, then the slices: error ~ ``(KT + D / KT) eps``).

Pass 1 (:func:`counts`) fuses distance -> exp -> float64 row sums; the
``TH`` threads that share a row add their sums through shared memory in a
fixed order and each column split writes its own partial row sums, which
are added in split order: no atomics, bit-identical repeats.

Pass 2 (:func:`weighted_sums`) recomputes each distance tile, stores the
weights ``w_ij = K_ij (g_i + g_j)`` (0 for ``j = i``) in shared memory and
applies them to a ``DC``-cell chunk of the column rows (one chunk per block:
the grid's y axis enumerates column split x D chunk). The apply step is
``sum_j w_ij Sc_j`` plus ``sum_j w_ij`` (Gram form, one FMA per pair and cell)
or ``sum_j w_ij (S_i - S_j)`` (direct form); float32 tile sums are added to
float64 register accumulators after every column tile. Each output cell
belongs to one thread of one block, so the partials are plain stores.
Memory: ``O(P G N D)`` float64 partials for ``P`` column splits, with ``P``
capped so that they stay under :data:`SPLIT_BUFFER_BYTES`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from ._compiler import cuda, float32, float64, uint32

from . import _tile_apply, _tiles
from ._device import MAX_GRID_Y_Z, SIMULATOR, empty, multiprocessors, neg_kernel_scale
from ._elementwise import sum_partials
from ._fused_shapes import SPLIT_BUFFER_BYTES, TILINGS, Tiling


def _tile_d2(ft: Any, tiling: Tiling, gram: bool, two_level: bool) -> Any:
    """Device function that forms one register tile of squared distances."""
    TH, R, KT, _, _ = tiling
    B = TH * R
    NT = TH * TH
    GRAM = bool(gram)
    TWO_LEVEL = bool(two_level)
    PR = R if TWO_LEVEL else 1

    @cuda.jit(device=True)
    def tile_d2(Sc, sqn, g, i0, j0, As, Bs, a, b, part, d2):
        """d2[r, c] = squared distance of rows i0 + ty + TH r and j0 + tx + TH c."""
        N = Sc.shape[1]
        D = Sc.shape[2]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TH + tx
        for r in range(R):
            for c in range(R):
                d2[r, c] = 0.0
        for k0 in range(0, D, KT):
            # Zero padding past N and D adds nothing to a dot product or a
            # squared difference.
            for lin in range(tid, B * KT, NT):
                row = lin // KT
                kk = lin - row * KT
                k = k0 + kk
                va = ft(0.0)
                vb = ft(0.0)
                if k < D:
                    if i0 + row < N:
                        va = Sc[g, i0 + row, k]
                    if j0 + row < N:
                        vb = Sc[g, j0 + row, k]
                As[kk, row] = va
                Bs[kk, row] = vb
            cuda.syncthreads()
            if TWO_LEVEL:
                for r in range(PR):
                    for c in range(PR):
                        part[r, c] = 0.0
            # Unsigned indices: no negative-index wraparound code in the hot
            # loop. A run-time trip count keeps the compiler from unrolling
            # the whole slice (which costs registers) and skips the padding.
            for kk in range(min(KT, D - k0)):
                ku = uint32(kk)
                for r in range(R):
                    a[r] = As[ku, uint32(ty + TH * r)]
                    b[r] = Bs[ku, uint32(tx + TH * r)]
                for r in range(R):
                    for c in range(R):
                        if GRAM:
                            d2[r, c] += a[r] * b[c]
                        elif TWO_LEVEL:
                            t = a[r] - b[c]
                            part[r, c] += t * t
                        else:
                            t = a[r] - b[c]
                            d2[r, c] += t * t
            cuda.syncthreads()
            if TWO_LEVEL:
                for r in range(PR):
                    for c in range(PR):
                        d2[r, c] += part[r, c]
        if GRAM:
            for r in range(R):
                i = i0 + ty + TH * r
                ni = ft(sqn[g, i]) if i < N else ft(0.0)
                for c in range(R):
                    j = j0 + tx + TH * c
                    nj = ft(sqn[g, j]) if j < N else ft(0.0)
                    v = ni + nj - ft(2.0) * d2[r, c]
                    d2[r, c] = v if v > ft(0.0) else ft(0.0)

    return tile_d2


def _setup(dtype: np.dtype, gram: bool, kind: str) -> tuple:
    """Compile-time constants of one pair kernel."""
    dtype = np.dtype(dtype)
    ft = float32 if dtype == np.float32 else float64
    tiling = TILINGS[dtype, kind]
    TH, R, KT, RC, MIN_BLOCKS = tiling
    two_level = (not gram) and dtype == np.float32
    # __launch_bounds__(NT, MIN_BLOCKS): ptxas keeps the registers at or below
    # 65536 / (NT MIN_BLOCKS). (The simulator takes no launch bounds.)
    jit = cuda.jit if SIMULATOR else functools.partial(
        cuda.jit, launch_bounds=(TH * TH, MIN_BLOCKS))
    return ft, tiling, two_level, jit, _tile_d2(ft, tiling, gram, two_level)


@functools.cache
def _counts_kernel(dtype: np.dtype, gram: bool) -> Any:
    ft, tiling, two_level, jit, tile_d2 = _setup(dtype, gram, "counts")
    TH, R, KT, _, _ = tiling
    B = TH * R
    BP = B + 1
    PR = R if two_level else 1

    @jit
    def counts(Sc, sqn, partial, neg_scale, tiles_per_split, g0):
        N = Sc.shape[1]
        n_tiles = (N + B - 1) // B
        i0 = cuda.blockIdx.x * B
        p = cuda.blockIdx.y
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        As = cuda.shared.array((KT, BP), ft)
        Bs = cuda.shared.array((KT, BP), ft)
        red = cuda.shared.array((B, TH), float64)
        a = cuda.local.array(R, ft)
        b = cuda.local.array(R, ft)
        part = cuda.local.array((PR, PR), ft)
        d2 = cuda.local.array((R, R), ft)
        rowsum = cuda.local.array(R, float64)
        t_end = min(n_tiles, (p + 1) * tiles_per_split)
        g = g0 + cuda.blockIdx.z  # one population per grid z index
        for r in range(R):
            rowsum[r] = 0.0
        for tj in range(p * tiles_per_split, t_end):
            j0 = tj * B
            tile_d2(Sc, sqn, g, i0, j0, As, Bs, a, b, part, d2)
            for r in range(R):
                i = i0 + ty + TH * r
                s = 0.0
                for c in range(R):
                    j = j0 + tx + TH * c
                    if i < N and j < N and i != j:
                        s += float64(math.exp(d2[r, c] * neg_scale))
                rowsum[r] += s
        # Fixed-order sum over the TH threads that share a row.
        for r in range(R):
            red[ty + TH * r, tx] = rowsum[r]
        cuda.syncthreads()
        if tx == 0:
            for r in range(R):
                i = i0 + ty + TH * r
                if i < N:
                    s = 0.0
                    for q in range(TH):
                        s += red[ty + TH * r, q]
                    partial[p, g, i] = s
        cuda.syncthreads()

    return counts


@functools.cache
def _weighted_kernel(dtype: np.dtype, gram: bool) -> Any:
    ft, tiling, two_level, jit, tile_d2 = _setup(dtype, gram, "weighted")
    TH, R, KT, RC, _ = tiling
    B = TH * R
    BP = B + 1
    DC = TH * RC
    NT = TH * TH
    GRAM = bool(gram)
    PR = R if two_level else 1
    FLUSH = np.dtype(dtype) == np.float32  # float32 tile sums go to float64 accumulators
    FR = R if FLUSH else 1
    FC = RC if FLUSH else 1
    OR = 1 if GRAM else R  # the direct form keeps its own cells in registers
    OC = 1 if GRAM else RC

    @jit
    def weighted(Sc, sqn, coef, partial, neg_scale, tiles_per_split, n_chunks, g0):
        N = Sc.shape[1]
        D = Sc.shape[2]
        n_tiles = (N + B - 1) // B
        i0 = cuda.blockIdx.x * B
        p = cuda.blockIdx.y // n_chunks
        k0 = (cuda.blockIdx.y - p * n_chunks) * DC
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TH + tx
        As = cuda.shared.array((KT, BP), ft)
        Bs = cuda.shared.array((KT, BP), ft)
        Ws = cuda.shared.array((B, BP), ft)
        Bc = cuda.shared.array((B, DC), ft)
        a = cuda.local.array(R, ft)
        b = cuda.local.array(R, ft)
        part = cuda.local.array((PR, PR), ft)
        d2 = cuda.local.array((R, R), ft)
        acc = cuda.local.array((R, RC), ft)
        wsum = cuda.local.array(R, ft)
        acc64 = cuda.local.array((FR, FC), float64)
        wsum64 = cuda.local.array(FR, float64)
        own = cuda.local.array((OR, OC), ft)
        t_begin = p * tiles_per_split
        t_end = min(n_tiles, t_begin + tiles_per_split)
        g = g0 + cuda.blockIdx.z  # one population per grid z index
        for r in range(R):
            i = i0 + ty + TH * r
            wsum[r] = 0.0
            for c in range(RC):
                acc[r, c] = 0.0
                if not GRAM:
                    k = k0 + tx + TH * c
                    v = ft(0.0)
                    if i < N and k < D:
                        v = Sc[g, i, k]
                    own[r, c] = v
            if FLUSH:
                wsum64[r] = 0.0
                for c in range(RC):
                    acc64[r, c] = 0.0
        for tj in range(t_begin, t_end):
            j0 = tj * B
            tile_d2(Sc, sqn, g, i0, j0, As, Bs, a, b, part, d2)
            for r in range(R):
                i = i0 + ty + TH * r
                gi = coef[g, i] if i < N else ft(0.0)
                for c in range(R):
                    j = j0 + tx + TH * c
                    w = ft(0.0)
                    if i < N and j < N and i != j:
                        w = math.exp(d2[r, c] * neg_scale) * (gi + coef[g, j])
                    Ws[ty + TH * r, tx + TH * c] = w
            # (tile_d2 ended with a barrier, so Bc is free to refill.)
            for lin in range(tid, B * DC, NT):
                row = lin // DC
                kk = lin - row * DC
                v = ft(0.0)
                if j0 + row < N and k0 + kk < D:
                    v = Sc[g, j0 + row, k0 + kk]
                Bc[row, kk] = v
            cuda.syncthreads()  # Ws and Bc complete
            for jj in range(min(B, N - j0)):
                ju = uint32(jj)
                for r in range(R):
                    w = Ws[uint32(ty + TH * r), ju]
                    if GRAM:
                        wsum[r] += w
                        for c in range(RC):
                            acc[r, c] += w * Bc[ju, uint32(tx + TH * c)]
                    else:
                        # Direct differences: nearly equal rows do not
                        # cancel against a large sum_j w_ij S_i.
                        for c in range(RC):
                            acc[r, c] += w * (own[r, c] - Bc[ju, uint32(tx + TH * c)])
            cuda.syncthreads()  # before Ws and Bc are overwritten
            if FLUSH:
                for r in range(R):
                    wsum64[r] += float64(wsum[r])
                    wsum[r] = 0.0
                    for c in range(RC):
                        acc64[r, c] += float64(acc[r, c])
                        acc[r, c] = 0.0
        for r in range(R):
            i = i0 + ty + TH * r
            for c in range(RC):
                k = k0 + tx + TH * c
                if i < N and k < D:
                    if FLUSH:
                        v = acc64[r, c]
                        ws = wsum64[r]
                    else:
                        v = float64(acc[r, c])
                        ws = float64(wsum[r])
                    if GRAM:
                        # sum_j w_ij (S_i - S_j) with the j = i term absent.
                        v = ws * float64(Sc[g, i, k]) - v
                    partial[p, g, i, k] = v

    return weighted


def kernels(dtype: np.dtype, gram: bool) -> dict[str, Any]:
    """Compile-on-first-use pair kernels for one dtype and distance form."""
    return {"counts": _counts_kernel(np.dtype(dtype), bool(gram)),
            "weighted": _weighted_kernel(np.dtype(dtype), bool(gram))}


def _splits(n_tiles: int, blocks_per_split: int, bytes_per_split: int) -> tuple[int, int]:
    """``(P, tiles_per_split)``: column tiles split over P blocks per row tile, none empty."""
    target = 4 * multiprocessors()
    P = max(1, min(n_tiles, -(-target // max(1, blocks_per_split))))
    P = max(1, min(P, SPLIT_BUFFER_BYTES // max(1, bytes_per_split)))
    per = -(-n_tiles // P)
    return -(-n_tiles // per), per


def counts_geometry(N: int, D: int, G: int, dtype: np.dtype) -> tuple[int, int, int, int, bool]:
    """``(tiles, P, offsets per split, offsets, symmetric)`` of one tile pass-1 launch.

    Symmetric (offsets ``0..n/2``, one float64 column-sum slice per offset)
    when ``P + offsets`` slices of ``G N`` fit in :data:`SPLIT_BUFFER_BYTES`;
    otherwise every offset, row sums only.
    """
    n = -(-N // _tiles.SHAPES[np.dtype(dtype)].tile)
    gz = min(G, MAX_GRID_Y_Z)
    slice_bytes = G * N * 8
    target = 4 * multiprocessors()

    def split(n_off: int) -> tuple[int, int]:
        P = max(1, min(n_off, -(-target // (n * gz)), MAX_GRID_Y_Z))
        per = -(-n_off // P)
        return -(-n_off // per), per

    n_off = n // 2 + 1
    P, per = split(n_off)
    if (P + n_off) * slice_bytes <= SPLIT_BUFFER_BYTES:
        return n, P, per, n_off, True
    P, per = split(n)
    P = max(1, min(P, SPLIT_BUFFER_BYTES // slice_bytes))
    per = -(-n // P)
    return n, -(-n // per), per, n, False


def kept_bytes(G: int, N: int, D: int, dtype: np.dtype) -> int:
    """Bytes of the fused route's K cache for this problem; 0 where pass 1 cannot keep K.

    Pass 1 keeps the kernel values of the tiles it visits only in its
    symmetric mode (:func:`counts_geometry`) and within 32-bit offsets of ``Sc``.
    """
    dtype = np.dtype(dtype)
    if G * N * D >= 2**32 or not counts_geometry(N, D, G, dtype)[4]:
        return 0
    return _tiles.kept_elements(G, N, dtype) * dtype.itemsize


def _tile_counts(Sc: Any, sqn: Any, sigma: float, kept: Any) -> Any:
    """Pass 1 of the Gram route by :func:`._tiles.counts_kernel` (filling ``kept`` if given)."""
    G, N, D = (int(n) for n in Sc.shape)
    dtype = np.dtype(Sc.dtype)
    gz = min(G, MAX_GRID_Y_Z)
    n, P, per, n_off, sym = counts_geometry(N, D, G, dtype)
    if kept is not None and not sym:
        raise ValueError("the K cache needs pass 1's symmetric mode (see kept_bytes)")
    slices = P + (n_off if sym else 0)
    partial = empty((slices, G, N), np.float64)
    kernel = _tiles.counts_kernel(dtype, _tiles.slice_width(D, dtype))
    TH = _tiles.SHAPES[dtype].threads
    keep = kept is not None
    if not keep:
        kept = empty((1,), dtype)  # never written
    for g0 in range(0, G, gz):
        kernel[(n, P, min(gz, G - g0)), (TH, TH)](
            Sc, Sc.reshape(G * N * D), sqn, partial, neg_kernel_scale(sigma, dtype), n_off, per,
            int(sym), g0, kept, int(keep))
    if slices == 1:
        return partial.reshape(G, N)
    C0 = empty((G, N), np.float64)
    sum_partials(partial, C0)
    return C0


def counts(Sc: Any, sqn: Any, sigma: float, gram: bool, kept: Any = None) -> Any:
    """Pass 1: device float64 ``C0 (G, N)`` from device patterns ``Sc (G, N, D)``.

    ``Sc`` is centred (``gram=True``) or raw; ``sqn`` holds the float64 squared
    norms of the centred rows (read only with ``gram=True``). The Gram form
    runs the tile kernels of :mod:`._tiles`, direct differences the kernels above.
    ``kept`` (Gram form only; :func:`._tile_apply.new_cache`) receives the kernel values.
    """
    if gram and _tiles_fit(Sc):
        return _tile_counts(Sc, sqn, sigma, kept)
    if kept is not None:
        raise ValueError("only the Gram form's tile kernels keep K")
    G, N, D = (int(n) for n in Sc.shape)
    dtype = np.dtype(Sc.dtype)
    tl = TILINGS[dtype, "counts"]
    n_tiles = -(-N // tl.tile)
    gz = min(G, MAX_GRID_Y_Z)
    P, per = _splits(n_tiles, n_tiles * gz, G * N * 8)
    P = min(P, MAX_GRID_Y_Z)
    partial = empty((P, G, N), np.float64)
    kernel = kernels(dtype, gram)["counts"]
    for g0 in range(0, G, gz):  # grid z holds at most MAX_GRID_Y_Z populations
        kernel[(n_tiles, P, min(gz, G - g0)), (tl.threads, tl.threads)](
            Sc, sqn, partial, neg_kernel_scale(sigma, dtype), per, g0)
    if P == 1:
        return partial.reshape(G, N)
    C0 = empty((G, N), np.float64)
    sum_partials(partial, C0)
    return C0


def _tiles_fit(Sc: Any) -> bool:
    """Whether the tile kernels' 32-bit element offsets reach all of ``Sc``."""
    return int(np.prod(Sc.shape)) < 2**32


def weighted_geometry(N: int, D: int, G: int, dtype: np.dtype, gram: bool,
                      tiles: bool | None = None) -> tuple[int, int, int, int, int]:
    """``(tiles, P, tiles per split, D chunks, threads)`` of one pass-2 launch.

    ``tiles`` (default: ``gram``) says whether the :mod:`._tiles` kernel runs.

    Column splits ``P`` as :func:`_splits` picks them, capped so that the grid's
    y axis (``P x chunks``) stays within :data:`MAX_GRID_Y_Z`.
    """
    dtype = np.dtype(dtype)
    if gram if tiles is None else tiles:
        sh = _tiles.SHAPES[dtype]
        width = _tiles.slice_width(D, dtype)
        tile, threads = sh.tile, sh.threads
        n_chunks = -(-(-(-D // _tiles.PAD) * _tiles.PAD) // width)
    else:
        tl = TILINGS[dtype, "weighted"]
        tile, threads = tl.tile, tl.threads
        n_chunks = -(-D // tl.dchunk)
    n_tiles = -(-N // tile)
    gz = min(G, MAX_GRID_Y_Z)
    P, per = _splits(n_tiles, n_tiles * n_chunks * gz, G * N * D * 8)
    P = max(1, min(P, MAX_GRID_Y_Z // n_chunks))
    per = -(-n_tiles // P)
    return n_tiles, -(-n_tiles // per), per, n_chunks, threads


def weighted_sums(Sc: Any, sqn: Any, coef: Any, sigma: float, gram: bool,
                  kept: Any = None) -> Any:
    """Pass 2: device float64 ``V_i = sum_j K_ij (g_i + g_j) (S_i - S_j)``, shape ``(G, N, D)``.

    ``coef`` is the device row-coefficient array ``g (G, N)`` in the dtype of
    ``Sc``. The Gram form runs :func:`._tiles.weighted_kernel`, or, given the
    ``kept`` kernel values of pass 1, :func:`._tile_apply.kept_weighted_kernel`.
    """
    G, N, D = (int(n) for n in Sc.shape)
    dtype = np.dtype(Sc.dtype)
    gram = bool(gram)
    tiles = gram and _tiles_fit(Sc)
    n_tiles, P, per, n_chunks, threads = weighted_geometry(N, D, G, dtype, gram, tiles)
    gz = min(G, MAX_GRID_Y_Z)
    partial = empty((P, G, N, D), np.float64)
    for g0 in range(0, G, gz):
        grid = (n_tiles, P * n_chunks, min(gz, G - g0)), (threads, threads)
        if kept is not None and tiles:
            _tile_apply.kept_weighted_kernel(dtype, _tiles.slice_width(D, dtype))[grid](
                Sc, Sc.reshape(G * N * D), coef, kept, partial, per, n_chunks,
                -(-N // _tiles.SHAPES[dtype].tile) // 2 + 1, g0)
            continue
        if tiles:
            _tiles.weighted_kernel(dtype, _tiles.slice_width(D, dtype))[grid](
                Sc, Sc.reshape(G * N * D), sqn, coef, partial,
                neg_kernel_scale(sigma, dtype), per, n_chunks, g0)
            continue
        kernels(dtype, gram)["weighted"][grid](
            Sc, sqn, coef, partial, neg_kernel_scale(sigma, dtype), per, n_chunks, g0)
    if P == 1:
        return partial.reshape(G, N, D)
    V = empty((G, N, D), np.float64)
    sum_partials(partial, V)
    return V
