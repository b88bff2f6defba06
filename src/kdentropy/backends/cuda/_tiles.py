"""Issue-efficient Gram-route pair kernels: register tiles fed by 128-bit shared loads.

These kernels form ``d2_ij = |Sc_i|^2 + |Sc_j|^2 - 2 Sc_i . Sc_j`` (the Gram
form; the caller decides from the conditioning that it is accurate enough)
and spend their issue slots on FMAs:

* A block of ``TH x TH`` threads owns a tile of ``B = TH R`` rows; each thread
  owns an ``R x R`` register tile of pairs (rows ``ty + TH r``, columns
  ``tx + TH c``: consecutive lanes read consecutive shared rows).
* The rows of both tiles are staged row-major in shared memory, ``KW`` cells
  at a time (``KW`` a power of two up to :attr:`TileShape.slice`, chosen per
  kernel variant from D so that small D stages no padding), zero-filled past
  N and D: zero cells change no distance. The row pitch makes every
  thread's ``KV`` consecutive cells one 128-bit load, free of bank
  conflicts, so one k-step of an ``R x R`` tile costs ``2 R KV / 4`` (float32)
  or ``2 R KV / 2`` (float64) loads for ``R^2 KV`` FMAs.
* All indices are unsigned 32-bit: no negative-index wrap-around code.

Pass 1 (:func:`counts_kernel`) visits tile pairs by offset: block ``(I, p)``
handles ``J = I + s (mod n)`` for its split ``p`` of the offsets. With
``sym`` only ``s <= n / 2`` is visited (``K`` is symmetric): the row sums of
``I`` accumulate in registers and the column sums of ``J`` are written, per
offset, to their own float64 partial slice (one writer per slice and tile),
so the caller's fixed-order sum over the slices is deterministic without
atomics. Without ``sym`` (when those slices would not fit) every offset is
visited and only row sums are kept.

Pass 2 (:func:`weighted_kernel`) does not use the symmetry (that would need a
read-modify-write of an ``N x D`` block per tile pair): a block owns a row tile
and a ``DC``-cell output chunk and sweeps its split of the column tiles. Per
tile it forms the weights ``w_ij = K_ij (g_i + g_j)`` (0 for ``j = i`` and
past N) into shared memory, transposed over the row tile's staging buffer,
and applies them to the column rows still staged from the distance step
(the chunk's own slice is staged last): ``acc_ik += w_ij Sc_jk``, an
``R x RC`` register tile per thread with one 128-bit load of ``w`` and
``RC / 4`` (``RC / 2``) of ``Sc`` per ``R RC`` FMAs. Row sums of ``w`` are
kept in float64 per pair, float32 tile sums are added to float64
accumulators after every column tile, and the output is
``V_i = (sum_j w_ij) Sc_i - sum_j w_ij Sc_j`` as in the other Gram kernels.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np

from ._compiler import cuda, float32, float64, uint32, uint64
from ._device import SIMULATOR


class TileShape(NamedTuple):
    """Block shape of the tile kernels (compile-time constants)."""

    threads: int  # a block is threads x threads
    regs: int  # pairs per thread: regs x regs; rows per thread in the apply step
    cells: int  # output cells per thread in the apply step
    vec: int  # cells per k-step of the distance loop (one 128-bit load per row in float32)
    min_blocks: int  # pass 1: resident blocks per SM to compile for (caps registers)
    min_blocks_2: int  # the same for pass 2 (which also holds its output tile)
    min_blocks_kept: int  # the same for pass 2 from the K cache (no distance tile)

    @property
    def tile(self) -> int:
        return self.threads * self.regs

    @property
    def dchunk(self) -> int:
        """Output cells of one pass-2 block, and the widest staged slice."""
        return self.threads * self.cells


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
#: D is padded (in shared memory only) to a multiple of this.
PAD = 4
# Real GPUs: float32 256-thread blocks (64-row tiles, 4 x 4 pairs per
# thread), float64 64-thread blocks (32-row tiles, 4 x 4 pairs, 4 x 8 output
# cells). The simulator runs a Python thread per CUDA thread: 2 x 2 blocks of
# 2 x 2 tiles and 4-cell slices, so tiny problems span many tiles and slices.
if SIMULATOR:
    SHAPES = {dt: TileShape(2, 2, 2, 2, 1, 1, 1) for dt in (_F32, _F64)}
else:
    SHAPES = {_F32: TileShape(16, 4, 4, 4, 3, 2, 3), _F64: TileShape(8, 4, 8, 2, 8, 4, 8)}


def slice_width(D: int, dtype: np.dtype) -> int:
    """Cells staged per slice for D: the next power of two of D padded to :data:`PAD`, capped."""
    sh = SHAPES[np.dtype(dtype)]
    dp = -(-max(int(D), 1) // PAD) * PAD
    # At least one apply unit's cells, so that its reads stay inside a staged row.
    return min(sh.dchunk, max(sh.cells, 1 << (dp - 1).bit_length()))


def kept_elements(G: int, N: int, dtype: np.dtype) -> int:
    """Elements of the K cache for ``G`` populations of ``N`` rows (see ``kept_tile``)."""
    B = SHAPES[np.dtype(dtype)].tile
    n = -(-N // B)
    return G * n * (n // 2 + 1) * B * B


def _pitch(width: int, itemsize: int) -> int:
    """Shared row pitch (elements): 16-byte rows at an odd 16-byte stride (no bank conflicts)."""
    per16 = max(1, 16 // itemsize)
    if width % per16:
        return width
    return width if (width // per16) % 2 else width + per16


def sizes(dtype: np.dtype, width: int) -> dict[str, int]:
    """Compile-time sizes of one kernel variant."""
    sh = SHAPES[np.dtype(dtype)]
    B = sh.tile
    item = np.dtype(dtype).itemsize
    pitch = _pitch(width, item)
    wpitch = _pitch(B, item)
    return {"B": B, "pitch": pitch, "wpitch": wpitch, "tile_elems": B * pitch,
            "a_elems": max(B * pitch, B * wpitch)}


def device_functions(dtype: np.dtype, width: int) -> tuple[Any, Any, Any, Any]:
    """The device functions of one kernel variant.

    ``stage`` (one slice of one tile into shared memory), ``accumulate`` (dot
    products), ``apply`` (weights times staged rows) and ``kept_tile`` (where
    a tile lies in the K cache).
    """
    ft = float32 if np.dtype(dtype) == _F32 else float64
    TH, R, _, KV = SHAPES[np.dtype(dtype)][:4]
    sz = sizes(dtype, width)
    B, PITCH = sz["B"], sz["pitch"]
    NT = TH * TH
    KW = width

    RSTEP = NT // KW  # rows per pass of the block over a slice (KW divides NT)
    PASSES = B // RSTEP

    @cuda.jit(device=True)
    def stage(flat, N, D, base, r0, kb, dst):
        """dst[row * PITCH + kk] = S[r0 + row, kb + kk], zero past N and D.

        ``flat`` is the contiguous patterns as one vector and ``base`` the
        offset of the population; each thread keeps one cell ``kk`` and steps
        over rows, so the cell test and the address step are hoisted.
        """
        tid = uint32(cuda.threadIdx.y) * uint32(TH) + uint32(cuda.threadIdx.x)
        kk = tid % uint32(KW)  # KW is a power of two: a mask and a shift
        row = tid // uint32(KW)
        k = kb + kk
        src = base + (r0 + row) * D + k
        step = uint32(RSTEP) * D
        out = row * uint32(PITCH) + kk
        if k < D:
            for it in range(PASSES):
                v = ft(0.0)
                if r0 + row + uint32(it * RSTEP) < N:
                    v = flat[src]
                dst[out + uint32(it * RSTEP * PITCH)] = v
                src += step
        else:
            for it in range(PASSES):
                dst[out + uint32(it * RSTEP * PITCH)] = ft(0.0)

    @cuda.jit(device=True)
    def accumulate(As, Bs, width, a, b, dot):
        """dot[r, c] += sum_k As[row_r, k] Bs[col_c, k] over the first ``width`` staged cells."""
        ta = uint32(cuda.threadIdx.y) * uint32(PITCH)
        tb = uint32(cuda.threadIdx.x) * uint32(PITCH)
        for k in range(0, width, KV):
            ku = uint32(k)
            # KV consecutive cells of a row: one vector load each (16-byte aligned).
            for r in range(R):
                for v in range(KV):
                    a[r, v] = As[ta + uint32(r * TH * PITCH) + ku + uint32(v)]
                    b[r, v] = Bs[tb + uint32(r * TH * PITCH) + ku + uint32(v)]
            for v in range(KV):
                for r in range(R):
                    for c in range(R):
                        dot[r, c] += a[r, v] * b[c, v]

    RC = SHAPES[np.dtype(dtype)].cells
    WP = sz["wpitch"]

    @cuda.jit(device=True)
    def apply_row(Ws, Bs, wp, sp, wv, sv, acc):
        """acc[r, c] += Ws[wp + r] Bs[sp + c]: one column's weights times its row."""
        for r in range(R):
            wv[r] = Ws[wp + uint32(r)]
        for c in range(RC):
            sv[c] = Bs[sp + uint32(c)]
        for r in range(R):
            for c in range(RC):
                acc[r, c] += wv[r] * sv[c]

    @cuda.jit(device=True)
    def apply(Ws, Bs, wb, sb, wv, sv, acc):
        """acc[r, c] += sum_jj Ws[jj, wb + r] Bs[jj, sb + c]: one tile's weights times its rows."""
        # 32-bit pointers stepped by constants and four rows per trip, written
        # out (LLVM would not unroll the float64 body): the loads take
        # immediate offsets and the loop's bookkeeping is amortised.
        wp = wb
        sp = sb
        for _ in range(B // 4):
            apply_row(Ws, Bs, wp, sp, wv, sv, acc)
            apply_row(Ws, Bs, wp + uint32(WP), sp + uint32(PITCH), wv, sv, acc)
            apply_row(Ws, Bs, wp + uint32(2 * WP), sp + uint32(2 * PITCH), wv, sv, acc)
            apply_row(Ws, Bs, wp + uint32(3 * WP), sp + uint32(3 * PITCH), wv, sv, acc)
            wp += uint32(4 * WP)
            sp += uint32(4 * PITCH)

    @cuda.jit(device=True)
    def kept_tile(g, I, s, n, n_off):
        """Element offset in the K cache of the tile of row tile ``I`` at offset ``s``.

        Per population, the ``n x n_off`` tiles pass 1 visits (``J = I + s mod
        n``), each ``B x B`` row-major (rows of ``I``, columns of ``J``). 64-bit:
        ``G N^2 / 2`` passes 2^32 where the cache matters.
        """
        return ((uint64(g) * uint64(n) + uint64(I)) * uint64(n_off) + uint64(s)) * uint64(B * B)

    return stage, accumulate, apply, kept_tile


def jit_for(dtype: np.dtype, kernel: str) -> Any:
    """``cuda.jit`` with the launch bounds of one kernel's blocks (the simulator takes none).

    ``kernel`` is ``"counts"``, ``"weighted"`` or ``"kept"`` (:mod:`._tile_apply`).
    """
    sh = SHAPES[np.dtype(dtype)]
    if SIMULATOR:
        return cuda.jit
    blocks = {"counts": sh.min_blocks, "weighted": sh.min_blocks_2,
              "kept": sh.min_blocks_kept}[kernel]
    return functools.partial(cuda.jit, launch_bounds=(sh.threads ** 2, blocks))


@functools.cache
def counts_kernel(dtype: np.dtype, width: int) -> Any:
    """Pass 1 for one dtype and slice width (see the module docstring).

    Launch: grid ``(n_tiles, P, populations)``, block ``(TH, TH)``; arguments
    ``(Sc, flat, sqn, partial, neg_scale, n_off, per, sym, g0, kept, keep)``
    (``flat``: ``Sc`` as one contiguous vector). ``partial`` has
    ``P`` row-sum slices, then (with ``sym``) ``n_off`` column-sum slices.
    With ``keep`` (and ``sym``) every visited tile's kernel values, zero for
    ``j = i`` and for rows or columns past N, go to ``kept`` (the K cache,
    layout :func:`kept_tile`) for :mod:`._tile_apply`'s pass 2.
    """
    dtype = np.dtype(dtype)
    ft = float32 if dtype == _F32 else float64
    TH, R, _, KV = SHAPES[dtype][:4]
    sz = sizes(dtype, width)
    B, A_ELEMS, T_ELEMS = sz["B"], sz["a_elems"], sz["tile_elems"]
    KW = width
    ALIGN = None if SIMULATOR else 16
    stage, accumulate, _, kept_tile = device_functions(dtype, width)

    @jit_for(dtype, "counts")
    def counts(Sc, flat, sqn, partial, neg_scale, n_off, per, sym, g0, kept, keep):
        N = uint32(Sc.shape[1])
        D = uint32(Sc.shape[2])
        n = (N + uint32(B - 1)) // uint32(B)
        I = uint32(cuda.blockIdx.x)
        p = uint32(cuda.blockIdx.y)
        col0 = uint32(cuda.gridDim.y)  # column-sum slices follow the P row-sum slices
        g = uint32(g0) + uint32(cuda.blockIdx.z)
        base = g * N * D  # 32-bit offsets: the caller keeps G N D below 2^32
        tx = uint32(cuda.threadIdx.x)
        ty = uint32(cuda.threadIdx.y)
        As = cuda.shared.array(A_ELEMS, ft, alignment=ALIGN)
        Bs = cuda.shared.array(T_ELEMS, ft, alignment=ALIGN)
        red = cuda.shared.array((B, TH), float64)
        a = cuda.local.array((R, KV), ft)
        b = cuda.local.array((R, KV), ft)
        dot = cuda.local.array((R, R), ft)
        ni = cuda.local.array(R, ft)
        nj = cuda.local.array(R, ft)
        vj = cuda.local.array(R, ft)
        vi = cuda.local.array(R, float64)
        vk = cuda.local.array(R, ft)
        rowsum = cuda.local.array(R, float64)
        colsum = cuda.local.array(R, float64)
        i0 = I * uint32(B)
        for r in range(R):
            i = i0 + ty + uint32(TH * r)
            ok = i < N
            ni[r] = ft(sqn[g, i]) if ok else ft(0.0)
            vi[r] = 1.0 if ok else 0.0  # rows past N add nothing to column sums
            vk[r] = ft(1.0) if ok else ft(0.0)  # nor anything to the K cache
            rowsum[r] = 0.0
        DP = (D + uint32(PAD - 1)) // uint32(PAD) * uint32(PAD)
        n_sl = (DP + uint32(KW - 1)) // uint32(KW)
        if n_sl == 1:
            stage(flat, N, D, base, i0, uint32(0), As)  # the row tile stays staged
        s_begin = p * uint32(per)
        s_end = min(uint32(n_off), s_begin + uint32(per))
        half = n // uint32(2)
        for s in range(s_begin, s_end):
            su = uint32(s)
            J = I + su
            if J >= n:
                J -= n
            j0 = J * uint32(B)
            # With an even n the offset n/2 pairs I with I + n/2 and back:
            # only I < n/2 takes it.
            live = not (sym != 0 and su + su == n and I >= half)
            if live:
                for c in range(R):
                    j = j0 + tx + uint32(TH * c)
                    ok = j < N
                    nj[c] = ft(sqn[g, j]) if ok else ft(0.0)
                    vj[c] = ft(1.0) if ok else ft(0.0)  # columns past N count 0
                    colsum[c] = 0.0
                    for r in range(R):
                        dot[r, c] = 0.0
                for q in range(n_sl):
                    kb = uint32(q) * uint32(KW)
                    cuda.syncthreads()  # the previous slice has been read
                    if n_sl != 1:
                        stage(flat, N, D, base, i0, kb, As)
                    stage(flat, N, D, base, j0, kb, Bs)
                    cuda.syncthreads()
                    accumulate(As, Bs, min(uint32(KW), DP - kb), a, b, dot)
                diag = su == 0 and ty == tx
                kb = kept_tile(g, I, su, n, n_off) + uint64(ty * uint32(B) + tx)
                for r in range(R):
                    s_r = 0.0
                    for c in range(R):
                        d2 = ni[r] + nj[c] - ft(2.0) * dot[r, c]
                        d2 = d2 if d2 > ft(0.0) else ft(0.0)
                        kv = math.exp(d2 * neg_scale) * vj[c]
                        if r == c and diag:
                            kv = ft(0.0)  # j = i
                        dot[r, c] = kv * vk[r]  # the dot product is spent
                        k64 = float64(kv)
                        s_r += k64
                        colsum[c] += k64 * vi[r]  # one DFMA: the row mask costs nothing
                    rowsum[r] += s_r
                if keep != 0:  # one branch per tile, outside the epilogue
                    for r in range(R):
                        for c in range(R):
                            kept[kb + uint64(TH * r * B + TH * c)] = dot[r, c]
            if sym != 0:
                # The column sums of J for this offset: TH threads per column,
                # added in a fixed order; the diagonal tile and the skipped
                # half-offset write zeros (their rows are summed as rows).
                cuda.syncthreads()
                for c in range(R):
                    red[tx + uint32(TH * c), ty] = colsum[c] if (live and su != 0) else 0.0
                cuda.syncthreads()
                if ty == 0:
                    for c in range(R):
                        j = j0 + tx + uint32(TH * c)
                        if j < N:
                            t = 0.0
                            for w in range(TH):
                                t += red[tx + uint32(TH * c), w]
                            partial[col0 + su, g, j] = t
        cuda.syncthreads()
        for r in range(R):
            red[ty + uint32(TH * r), tx] = rowsum[r]
        cuda.syncthreads()
        if tx == 0:
            for r in range(R):
                i = i0 + ty + uint32(TH * r)
                if i < N:
                    t = 0.0
                    for w in range(TH):
                        t += red[ty + uint32(TH * r), w]
                    partial[p, g, i] = t

    return counts


@functools.cache
def weighted_kernel(dtype: np.dtype, width: int) -> Any:
    """Pass 2 for one dtype and slice width (see the module docstring).

    Launch: grid ``(n_tiles, P * n_chunks, populations)``, block ``(TH, TH)``;
    arguments ``(Sc, flat, sqn, coef, partial, neg_scale, tiles_per_split, n_chunks,
    g0)``: those of the direct-difference kernel of :mod:`._fused` plus ``flat``.
    """
    dtype = np.dtype(dtype)
    ft = float32 if dtype == _F32 else float64
    TH, R, RC, KV = SHAPES[dtype][:4]
    sz = sizes(dtype, width)
    B, A_ELEMS, T_ELEMS = sz["B"], sz["a_elems"], sz["tile_elems"]
    WP = sz["wpitch"]
    KW = width
    ROW_BLOCKS = B // R
    FLUSH = dtype == _F32  # float32 tile sums go to float64 accumulators
    FR = R if FLUSH else 1
    FC = RC if FLUSH else 1
    ALIGN = None if SIMULATOR else 16
    stage, accumulate, apply, _ = device_functions(dtype, width)

    @jit_for(dtype, "weighted")
    def weighted(Sc, flat, sqn, coef, partial, neg_scale, tiles_per_split, n_chunks, g0):
        N = uint32(Sc.shape[1])
        D = uint32(Sc.shape[2])
        n_tiles = (N + uint32(B - 1)) // uint32(B)
        I = uint32(cuda.blockIdx.x)
        p = uint32(cuda.blockIdx.y) // uint32(n_chunks)
        chunk = uint32(cuda.blockIdx.y) - p * uint32(n_chunks)
        g = uint32(g0) + uint32(cuda.blockIdx.z)
        base = g * N * D  # 32-bit offsets: the caller keeps G N D below 2^32
        tx = uint32(cuda.threadIdx.x)
        ty = uint32(cuda.threadIdx.y)
        As = cuda.shared.array(A_ELEMS, ft, alignment=ALIGN)  # row tile, then the weights
        Bs = cuda.shared.array(T_ELEMS, ft, alignment=ALIGN)
        red = cuda.shared.array((B, TH), float64)
        a = cuda.local.array((R, KV), ft)
        b = cuda.local.array((R, KV), ft)
        dot = cuda.local.array((R, R), ft)
        ni = cuda.local.array(R, ft)
        gi = cuda.local.array(R, ft)
        nj = cuda.local.array(R, ft)
        vj = cuda.local.array(R, ft)
        gvj = cuda.local.array(R, ft)
        wpart = cuda.local.array(R, float64)
        wv = cuda.local.array(R, ft)
        sv = cuda.local.array(RC, ft)
        acc = cuda.local.array((R, RC), ft)
        acc64 = cuda.local.array((FR, FC), float64)
        i0 = I * uint32(B)
        for r in range(R):
            i = i0 + ty + uint32(TH * r)
            ok = i < N
            ni[r] = ft(sqn[g, i]) if ok else ft(0.0)
            gi[r] = coef[g, i] if ok else ft(0.0)
            wpart[r] = 0.0
            for c in range(RC):
                acc[r, c] = 0.0
                if FLUSH:
                    acc64[r, c] = 0.0
        DP = (D + uint32(PAD - 1)) // uint32(PAD) * uint32(PAD)
        n_sl = (DP + uint32(KW - 1)) // uint32(KW)
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
        t_end = min(n_tiles, t_begin + uint32(tiles_per_split))
        for J in range(t_begin, t_end):
            Ju = uint32(J)
            j0 = Ju * uint32(B)
            for c in range(R):
                j = j0 + tx + uint32(TH * c)
                ok = j < N
                nj[c] = ft(sqn[g, j]) if ok else ft(0.0)
                vj[c] = ft(1.0) if ok else ft(0.0)  # columns past N weigh 0
                gvj[c] = coef[g, j] if ok else ft(0.0)
                for r in range(R):
                    dot[r, c] = 0.0
            for q in range(n_sl):
                # The chunk's own slice comes last: it stays staged for the apply step.
                sl = chunk + uint32(1) + uint32(q)
                if sl >= n_sl:
                    sl -= n_sl
                kb = sl * uint32(KW)
                cuda.syncthreads()  # the previous slice (or weights) has been read
                stage(flat, N, D, base, i0, kb, As)
                stage(flat, N, D, base, j0, kb, Bs)
                cuda.syncthreads()
                accumulate(As, Bs, min(uint32(KW), DP - kb), a, b, dot)
            diag = Ju == I and ty == tx
            for r in range(R):
                for c in range(R):
                    d2 = ni[r] + nj[c] - ft(2.0) * dot[r, c]
                    d2 = d2 if d2 > ft(0.0) else ft(0.0)
                    w = math.exp(d2 * neg_scale) * (gi[r] * vj[c] + gvj[c])
                    if r == c and diag:
                        w = ft(0.0)  # j = i
                    wpart[r] += float64(w)
                    dot[r, c] = w
            cuda.syncthreads()  # the row tile has been read: the weights go over it
            for r in range(R):
                for c in range(R):
                    As[(tx + uint32(TH * c)) * uint32(WP) + ty + uint32(TH * r)] = dot[r, c]
            cuda.syncthreads()
            if active:
                apply(As, Bs, rb * uint32(R), cb * uint32(RC), wv, sv, acc)
                if FLUSH:
                    for r in range(R):
                        for c in range(RC):
                            acc64[r, c] += float64(acc[r, c])
                            acc[r, c] = 0.0
        cuda.syncthreads()
        for r in range(R):
            red[ty + uint32(TH * r), tx] = wpart[r]
        cuda.syncthreads()
        if active:
            for r in range(R):
                il = rb * uint32(R) + uint32(r)
                i = i0 + il
                if i < N:
                    ws = 0.0
                    for w in range(TH):
                        ws += red[il, w]
                    for c in range(RC):
                        k = k0 + cb * uint32(RC) + uint32(c)
                        if k < D:
                            v = acc64[r, c] if FLUSH else float64(acc[r, c])
                            # sum_j w_ij (S_i - S_j) with the j = i term absent.
                            partial[p, g, i, k] = ws * float64(Sc[g, i, k]) - v

    return weighted
