"""Pass 2 of the Gram route from pass 1's kept kernel values (the fused route's K cache).

When the ``n x (n/2 + 1)`` tiles that :func:`._tiles.counts_kernel` visits fit
in device memory, pass 1 keeps their kernel values and this pass forms no
distance at all: per column tile it reads ``K_IJ`` (the tile itself, or the
kept ``K_JI`` read transposed, as ``K`` is symmetric), forms the weights
``w_ij = K_ij (g_i + g_j)`` into shared memory and applies them to the
chunk's slice of the column rows, ``acc_ik += w_ij Sc_jk``, with the apply
step of :func:`._tiles.weighted_kernel`. At ``D = 64`` that removes half of
pass 2's FMAs (the distances) for ``G N^2`` reads of the cache, and every
``K_ij`` is computed once, so ``w`` is exactly symmetric.

The cache's zeros (``j = i``, rows or columns past N) make the weights zero
there without masks. Row sums of ``w`` are read back from shared memory once
a tile's weights are there (each thread sums a fixed part of one row in the
work dtype and adds it to a float64 total, as the apply step's tile sums
are), which costs no registers per row and no conversion per pair.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ._compiler import cuda, float32, float64, uint32, uint64
from ._device import SIMULATOR, empty
from ._tiles import SHAPES, device_functions, jit_for, kept_elements, sizes

_F32 = np.dtype(np.float32)


def new_cache(G: int, N: int, dtype: np.dtype) -> Any:
    """A device K cache for ``_fused.counts`` to fill and ``_fused.weighted_sums`` to read."""
    return empty((kept_elements(G, N, dtype),), dtype)


@functools.cache
def kept_weighted_kernel(dtype: np.dtype, width: int) -> Any:
    """Pass 2 from the K cache for one dtype and slice width.

    Launch: grid ``(n_tiles, P * n_chunks, populations)``, block ``(TH, TH)``;
    arguments ``(Sc, flat, coef, kept, partial, tiles_per_split, n_chunks,
    n_off, g0)``: those of :func:`._tiles.weighted_kernel` without ``sqn`` and
    the kernel scale, plus the cache and its tiles per row tile ``n_off``.
    """
    dtype = np.dtype(dtype)
    ft = float32 if dtype == _F32 else float64
    TH, R, RC = SHAPES[dtype][:3]
    sz = sizes(dtype, width)
    B, T_ELEMS, WP = sz["B"], sz["tile_elems"], sz["wpitch"]
    W_ELEMS = B * WP
    KW = width
    ROW_BLOCKS = B // R
    PARTS = TH * TH // B  # threads per row in the row-sum step
    PART = B // PARTS  # columns each of them adds
    FLUSH = dtype == _F32  # float32 tile sums go to float64 accumulators
    FR = R if FLUSH else 1
    FC = RC if FLUSH else 1
    ALIGN = None if SIMULATOR else 16
    stage, _, apply, kept_tile = device_functions(dtype, width)

    @jit_for(dtype, "kept")
    def weighted(Sc, flat, coef, kept, partial, tiles_per_split, n_chunks, n_off, g0):
        N = uint32(Sc.shape[1])
        D = uint32(Sc.shape[2])
        n = (N + uint32(B - 1)) // uint32(B)
        half = n // uint32(2)
        I = uint32(cuda.blockIdx.x)
        p = uint32(cuda.blockIdx.y) // uint32(n_chunks)
        chunk = uint32(cuda.blockIdx.y) - p * uint32(n_chunks)
        g = uint32(g0) + uint32(cuda.blockIdx.z)
        base = g * N * D  # 32-bit offsets: the caller keeps G N D below 2^32
        tx = uint32(cuda.threadIdx.x)
        ty = uint32(cuda.threadIdx.y)
        Ws = cuda.shared.array(W_ELEMS, ft, alignment=ALIGN)  # Ws[j * WP + i] = w_ij
        Bs = cuda.shared.array(T_ELEMS, ft, alignment=ALIGN)
        red = cuda.shared.array((B, PARTS), float64)
        gi_a = cuda.local.array(R, ft)  # g of rows ty + TH r of I
        gi_b = cuda.local.array(R, ft)  # g of rows tx + TH c of I
        gj_a = cuda.local.array(R, ft)
        gj_b = cuda.local.array(R, ft)
        wv = cuda.local.array(R, ft)
        sv = cuda.local.array(RC, ft)
        acc = cuda.local.array((R, RC), ft)
        acc64 = cuda.local.array((FR, FC), float64)
        i0 = I * uint32(B)
        for r in range(R):
            ia = i0 + ty + uint32(TH * r)
            ib = i0 + tx + uint32(TH * r)
            gi_a[r] = coef[g, ia] if ia < N else ft(0.0)
            gi_b[r] = coef[g, ib] if ib < N else ft(0.0)
            for c in range(RC):
                acc[r, c] = 0.0
                if FLUSH:
                    acc64[r, c] = 0.0
        k0 = chunk * uint32(KW)  # KW equals the chunk width whenever there are several
        # Apply step: unit (rb, cb) owns rows R rb .. R rb + R - 1 and cells
        # RC cb .. of the chunk; units past the chunk's width are whole idle warps.
        live_cells = min(uint32(TH * RC), D - k0)
        n_cb = (live_cells + uint32(RC - 1)) // uint32(RC)
        unit = ty * uint32(TH) + tx
        rb = unit // n_cb
        cb = unit - rb * n_cb
        active = rb < uint32(ROW_BLOCKS)
        t_begin = p * uint32(tiles_per_split)
        t_end = min(n, t_begin + uint32(tiles_per_split))
        own = uint64(ty * uint32(B) + tx)  # this thread's element of a kept tile
        sum_row = unit % uint32(B)  # the row-sum step: one part of one row per thread
        sum_from = (unit // uint32(B)) * uint32(PART) * uint32(WP) + sum_row
        wsum = 0.0
        for J in range(t_begin, t_end):
            Ju = uint32(J)
            j0 = Ju * uint32(B)
            s = Ju - I if Ju >= I else Ju + n - I
            # Pass 1 kept (I, s) when it visited it, else (J, n - s): see _tiles.
            direct = s + s < n or (s + s == n and I < half)
            if direct:
                kb = kept_tile(g, I, s, n, n_off) + own
            else:
                kb = kept_tile(g, Ju, n - s, n, n_off) + own
            for r in range(R):
                ja = j0 + ty + uint32(TH * r)
                jb = j0 + tx + uint32(TH * r)
                gj_a[r] = coef[g, ja] if ja < N else ft(0.0)
                gj_b[r] = coef[g, jb] if jb < N else ft(0.0)
            cuda.syncthreads()  # the previous tile's weights and rows have been read
            stage(flat, N, D, base, j0, k0, Bs)
            if direct:  # kept element (ty + TH r, tx + TH c) is (i, j)
                for r in range(R):
                    for c in range(R):
                        w = kept[kb + uint64(TH * r * B + TH * c)] * (gi_a[r] + gj_b[c])
                        Ws[(tx + uint32(TH * c)) * uint32(WP) + ty + uint32(TH * r)] = w
            else:  # kept element (ty + TH r, tx + TH c) is (j, i)
                for r in range(R):
                    for c in range(R):
                        w = kept[kb + uint64(TH * r * B + TH * c)] * (gi_b[c] + gj_a[r])
                        Ws[(ty + uint32(TH * r)) * uint32(WP) + tx + uint32(TH * c)] = w
            cuda.syncthreads()
            t = ft(0.0)
            for q in range(PART):
                t += Ws[sum_from + uint32(q * WP)]
            wsum += float64(t)
            if active:
                apply(Ws, Bs, rb * uint32(R), cb * uint32(RC), wv, sv, acc)
                if FLUSH:
                    for r in range(R):
                        for c in range(RC):
                            acc64[r, c] += float64(acc[r, c])
                            acc[r, c] = 0.0
        cuda.syncthreads()
        red[sum_row, unit // uint32(B)] = wsum
        cuda.syncthreads()
        if active:
            for r in range(R):
                il = rb * uint32(R) + uint32(r)
                i = i0 + il
                if i < N:
                    ws = 0.0
                    for q in range(PARTS):
                        ws += red[il, q]
                    for c in range(RC):
                        k = k0 + cb * uint32(RC) + uint32(c)
                        if k < D:
                            v = acc64[r, c] if FLUSH else float64(acc[r, c])
                            # sum_j w_ij (S_i - S_j) with the j = i term absent.
                            partial[p, g, i, k] = ws * float64(Sc[g, i, k]) - v

    return weighted
