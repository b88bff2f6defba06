"""CUDA backend: tiled numba.cuda kernels for the soft entropy and its gradient.

Imported lazily by :mod:`kdentropy._backend` only when the ``cuda`` backend is
requested, so a machine without numba-cuda or without a GPU can still import
kdentropy. Without a GPU the same kernels run under Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1`` set before Numba is imported), which is how the
test-suite exercises them.

Algorithm (one population of N patterns of D cells; G populations are a grid
axis):

* ``sigmoid_3d``/``sigmoid_2d``: ``S = sigmoid(T (X - theta))`` into a contiguous
  ``(G, N, D)`` buffer, reading X in place (any strides, any real dtype) and
  raising a device flag for NaN/inf.
* pass 1 (``counts``): one thread block per (row tile, column split); the block
  walks the column tiles of its split, staging ``KT``-wide slices of the S rows
  in shared memory. Each thread holds an ``R x R`` register tile of squared
  distances, accumulated as direct differences ``(S_ik - S_jk)^2`` (no Gram
  cancellation) in the compute precision, summed per slice and then across
  slices. Distance, exp and row sum are fused, the row sums kept in float64;
  ``j = i`` is skipped, so the block produces off-diagonal soft counts ``C0``.
  Per-(split, row) partial sums go to a ``(P, G, N)`` float64 buffer and are
  added in a fixed order by ``reduce_counts``: no atomics, so results are
  bit-identical run to run.
* pass 2 (``grad``): same blocking; per column tile the distance tile is
  recomputed, turned into weights ``w_ij = K_ij (1/C_i + 1/C_j)`` in shared
  memory (zero on the diagonal), and applied as ``sum_j w_ij (S_i - S_j)``,
  again as direct differences so that nearly equal rows do not cancel. Each
  thread owns its output cells, so the float64 partials ``(P, G, N, D)`` are
  plain read-modify-writes; ``finalize_grad`` sums the P splits in order and
  applies ``T S (1 - S) / (N sigma^2)``.
* ``H = log N - mean(log1p(C0))`` is formed on the host from the N float64
  counts (the only device-to-host copy besides the NaN flag).

No N x N array is ever stored; scratch memory is O(P N D) with a small split
count P chosen for occupancy.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Any, NamedTuple

import numpy as np
from numba import cuda, float32, float64, uint32

NAME = "cuda"


def _simulator_enabled() -> bool:
    try:
        from numba.cuda.core import config
    except ImportError:  # older numba-cuda keeps the flag in numba's own config
        from numba.core import config
    return bool(getattr(config, "ENABLE_CUDASIM", False))


SIMULATOR = _simulator_enabled()


class _Tiling(NamedTuple):
    """Block shape of the pairwise kernels (all sizes are compile-time constants)."""

    threads: int  # a block is threads x threads
    regs: int  # each thread owns a regs x regs tile of (i, j) pairs
    kt: int  # width of the D slices staged in shared memory for distances
    rc: int  # output cells per thread along D in the gradient apply step

    @property
    def tile(self) -> int:
        return self.threads * self.regs

    @property
    def dchunk(self) -> int:
        return self.threads * self.rc


# Real GPUs: 256-thread blocks. float32 uses 64 x 64 pair tiles (40 KiB of
# shared memory in pass 2); float64 halves the tile to stay under the 48 KiB
# static shared-memory limit. The simulator runs one Python thread per CUDA
# thread, so it gets 4-thread blocks and 4 x 4 tiles: tiny problems then still
# span several row, column and D tiles.
if SIMULATOR:
    _TILINGS = {np.dtype(np.float32): _Tiling(2, 2, 4, 2),
                np.dtype(np.float64): _Tiling(2, 2, 4, 2)}
    _ELEMENTWISE_THREADS = 8
    _ELEMENTWISE_MAX_BLOCKS = 4
else:
    _TILINGS = {np.dtype(np.float32): _Tiling(16, 4, 16, 4),
                np.dtype(np.float64): _Tiling(16, 2, 16, 2)}
    _ELEMENTWISE_THREADS = 256
    _ELEMENTWISE_MAX_BLOCKS = 8192

# Upper bound on the float64 gradient partials (P x G x N x D) that the column
# split may cost; beyond it P shrinks (down to 1, which needs no extra memory
# beyond one partial array).
_SPLIT_BUFFER_BYTES = 512 * 2**20
_MAX_GRID_Z = 65535


def unavailable_reason() -> str | None:
    """Why the CUDA backend cannot run here, or ``None`` when it can.

    Returns
    -------
    str or None
        ``None`` when numba-cuda finds a usable GPU (driver, device and the
        NVVM compiler) or when the CUDA simulator is enabled; otherwise a
        one-line explanation naming what is missing.
    """
    if SIMULATOR:
        return None
    try:
        if cuda.is_available():
            return None
    except Exception as exc:  # a broken installation must not escape as a crash
        return f"numba-cuda could not query the GPU ({exc})"
    try:
        from numba.cuda.cudadrv import driver
        error = getattr(driver.driver, "initialization_error", None)
    except Exception as exc:
        error = str(exc)
    if error:
        error = " ".join(str(error).split())  # the driver's message spans lines
        return (f"no usable CUDA driver or GPU ({error}); set "
                "NUMBA_ENABLE_CUDASIM=1 to run the kernels on the CPU simulator")
    return ("the CUDA driver and GPU were found but numba-cuda cannot compile for them "
            "(NVVM/NVRTC missing); install the toolkit pieces with "
            "pip install 'numba-cuda[cu12]' or 'numba-cuda[cu13]'")


# ----------------------------------------------------------------------------- kernels

@functools.cache
def _kernels(dtype: np.dtype) -> dict[str, Any]:
    """Compile-on-first-use kernels for one compute dtype (float32 or float64)."""
    ft = float32 if dtype == np.float32 else float64
    tl = _TILINGS[np.dtype(dtype)]
    TH, R, KT, RC = tl.threads, tl.regs, tl.kt, tl.rc
    B = tl.tile
    BP = B + 1  # padded shared rows: k-major stores of a row slice avoid bank conflicts
    DC = tl.dchunk
    NT = TH * TH

    @cuda.jit(device=True)
    def sigmoid(x, T, theta):
        # Branch on the sign so that exp never overflows (the simulator would
        # raise OverflowError; the GPU would be fine either way).
        z = T * (x - theta)
        if z >= 0:
            return ft(1.0) / (ft(1.0) + math.exp(-z))
        e = math.exp(z)
        return e / (ft(1.0) + e)

    @cuda.jit
    def sigmoid_3d(X, S, T, theta, bad):
        G, N, D = X.shape
        ND = N * D
        for idx in range(cuda.grid(1), G * ND, cuda.gridsize(1)):
            g = idx // ND
            rem = idx - g * ND
            i = rem // D
            k = rem - i * D
            x = ft(X[g, i, k])
            if not math.isfinite(x):
                bad[0] = 1
            S[g, i, k] = sigmoid(x, T, theta)

    @cuda.jit
    def sigmoid_2d(X, S, g, T, theta, bad):
        N, D = X.shape
        for idx in range(cuda.grid(1), N * D, cuda.gridsize(1)):
            i = idx // D
            k = idx - i * D
            x = ft(X[i, k])
            if not math.isfinite(x):
                bad[0] = 1
            S[g, i, k] = sigmoid(x, T, theta)

    @cuda.jit(device=True)
    def tile_sqdist(S, g, i0, j0, As, Bs, part, d2):
        """d2[r, c] = ||S[g, i0 + ty + TH r] - S[g, j0 + tx + TH c]||^2."""
        N = S.shape[1]
        D = S.shape[2]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TH + tx
        for r in range(R):
            for c in range(R):
                d2[r, c] = 0.0
        for k0 in range(0, D, KT):
            # Stage S[i0:i0+B, k0:k0+KT] and S[j0:j0+B, k0:k0+KT], k-major so
            # that the inner loop reads consecutive words; zero padding past N
            # and D adds nothing to a squared difference.
            for lin in range(tid, B * KT, NT):
                row = lin // KT
                kk = lin - row * KT
                k = k0 + kk
                va = ft(0.0)
                vb = ft(0.0)
                if k < D:
                    if i0 + row < N:
                        va = S[g, i0 + row, k]
                    if j0 + row < N:
                        vb = S[g, j0 + row, k]
                As[kk, row] = va
                Bs[kk, row] = vb
            cuda.syncthreads()
            for r in range(R):
                for c in range(R):
                    part[r, c] = 0.0
            # Unsigned indices: Numba then emits no negative-index wraparound
            # code, which would otherwise double the integer work of this loop.
            for kk in range(KT):
                ku = uint32(kk)
                for r in range(R):
                    a = As[ku, uint32(ty + TH * r)]
                    for c in range(R):
                        t = a - Bs[ku, uint32(tx + TH * c)]
                        part[r, c] += t * t
            cuda.syncthreads()
            # Two-level sum (KT-term slices, then slices): the rounding error
            # of d2 grows like (KT + D/KT) eps instead of D eps, which keeps
            # float32 within ~1e-6 relative at D ~ 1e3 without float64 adds
            # (slow on most GPUs) in the pair loop.
            for r in range(R):
                for c in range(R):
                    d2[r, c] += part[r, c]

    @cuda.jit
    def counts(S, partial, neg_inv_2s2, tiles_per_split):
        G, N, _ = S.shape
        n_tiles = (N + B - 1) // B
        i0 = cuda.blockIdx.x * B
        p = cuda.blockIdx.y
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        As = cuda.shared.array((KT, BP), ft)
        Bs = cuda.shared.array((KT, BP), ft)
        red = cuda.shared.array((B, TH), float64)
        part = cuda.local.array((R, R), ft)
        d2 = cuda.local.array((R, R), ft)
        rowsum = cuda.local.array(R, float64)
        t_end = min(n_tiles, (p + 1) * tiles_per_split)
        for g in range(cuda.blockIdx.z, G, cuda.gridDim.z):
            for r in range(R):
                rowsum[r] = 0.0
            for tj in range(p * tiles_per_split, t_end):
                j0 = tj * B
                tile_sqdist(S, g, i0, j0, As, Bs, part, d2)
                for r in range(R):
                    i = i0 + ty + TH * r
                    s = 0.0
                    for c in range(R):
                        j = j0 + tx + TH * c
                        if i < N and j < N and i != j:
                            s += float64(math.exp(d2[r, c] * neg_inv_2s2))
                    rowsum[r] += s
            # Fixed-order reduction over the TH threads that share a row.
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

    @cuda.jit
    def reduce_counts(partial, C0, inv_C):
        P, G, N = partial.shape
        for idx in range(cuda.grid(1), G * N, cuda.gridsize(1)):
            g = idx // N
            i = idx - g * N
            s = 0.0
            for p in range(P):
                s += partial[p, g, i]
            C0[g, i] = s
            inv_C[g, i] = ft(1.0 / (1.0 + s))

    @cuda.jit
    def grad(S, inv_C, partial, neg_inv_2s2, tiles_per_split):
        G, N, D = S.shape
        n_tiles = (N + B - 1) // B
        i0 = cuda.blockIdx.x * B
        p = cuda.blockIdx.y
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TH + tx
        As = cuda.shared.array((KT, BP), ft)
        Bs = cuda.shared.array((KT, BP), ft)
        Ws = cuda.shared.array((B, B), ft)
        Bc = cuda.shared.array((B, DC), ft)
        part = cuda.local.array((R, R), ft)
        d2 = cuda.local.array((R, R), ft)
        areg = cuda.local.array((R, RC), ft)
        acc = cuda.local.array((R, RC), ft)
        t_begin = p * tiles_per_split
        t_end = min(n_tiles, t_begin + tiles_per_split)
        for g in range(cuda.blockIdx.z, G, cuda.gridDim.z):
            for tj in range(t_begin, t_end):
                j0 = tj * B
                tile_sqdist(S, g, i0, j0, As, Bs, part, d2)
                for r in range(R):
                    i = i0 + ty + TH * r
                    ci = ft(0.0)
                    if i < N:
                        ci = inv_C[g, i]
                    for c in range(R):
                        j = j0 + tx + TH * c
                        w = ft(0.0)
                        if i < N and j < N and i != j:
                            w = math.exp(d2[r, c] * neg_inv_2s2) * (ci + inv_C[g, j])
                        Ws[ty + TH * r, tx + TH * c] = w
                # (tile_sqdist ended with a barrier, so Bc is free to refill.)
                for k0 in range(0, D, DC):
                    for lin in range(tid, B * DC, NT):
                        row = lin // DC
                        kk = lin - row * DC
                        v = ft(0.0)
                        if j0 + row < N and k0 + kk < D:
                            v = S[g, j0 + row, k0 + kk]
                        Bc[row, kk] = v
                    for r in range(R):
                        i = i0 + ty + TH * r
                        for c in range(RC):
                            k = k0 + tx + TH * c
                            v = ft(0.0)
                            if i < N and k < D:
                                v = S[g, i, k]
                            areg[r, c] = v
                            acc[r, c] = 0.0
                    cuda.syncthreads()  # Ws and Bc complete
                    # sum_j w_ij (S_ik - S_jk) as direct differences: the
                    # j = i term is absent (w_ii = 0) and nearby rows do not
                    # cancel against a large sum_j w_ij S_ik.
                    for jj in range(B):
                        ju = uint32(jj)
                        for r in range(R):
                            w = Ws[uint32(ty + TH * r), ju]
                            for c in range(RC):
                                acc[r, c] += w * (areg[r, c] - Bc[ju, uint32(tx + TH * c)])
                    cuda.syncthreads()  # before Bc (or Ws) is overwritten
                    for r in range(R):
                        i = i0 + ty + TH * r
                        for c in range(RC):
                            k = k0 + tx + TH * c
                            if i < N and k < D:
                                # Each (i, k) belongs to one thread of one block:
                                # a plain, deterministic read-modify-write.
                                if tj == t_begin:
                                    partial[p, g, i, k] = float64(acc[r, c])
                                else:
                                    partial[p, g, i, k] += float64(acc[r, c])

    @cuda.jit
    def finalize_grad(partial, S, out, coef):
        P, G, N, D = partial.shape
        ND = N * D
        for idx in range(cuda.grid(1), G * ND, cuda.gridsize(1)):
            g = idx // ND
            rem = idx - g * ND
            i = rem // D
            k = rem - i * D
            v = 0.0
            for p in range(P):
                v += partial[p, g, i, k]
            s = float64(S[g, i, k])
            out[g, i, k] = ft(v * coef * s * (1.0 - s))

    return {"sigmoid_3d": sigmoid_3d, "sigmoid_2d": sigmoid_2d, "counts": counts,
            "reduce_counts": reduce_counts, "grad": grad, "finalize_grad": finalize_grad}


# ----------------------------------------------------------------------------- host side

def _elementwise_grid(n: int) -> tuple[int, int]:
    blocks = max(1, min(_ELEMENTWISE_MAX_BLOCKS, -(-n // _ELEMENTWISE_THREADS)))
    return blocks, _ELEMENTWISE_THREADS


@functools.cache
def _target_blocks() -> int:
    """Blocks per pairwise launch that keep every multiprocessor busy."""
    if SIMULATOR:
        return 8  # small, but enough to exercise several column splits in tests
    try:
        sms = int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    except Exception:
        sms = 80
    return 4 * sms


def _num_splits(n_tiles: int, G: int, N: int, D: int) -> tuple[int, int]:
    """Split the n_tiles column tiles over P blocks per row tile.

    Returns ``(P, tiles_per_split)``; every split holds at least one tile.
    """
    blocks = n_tiles * min(G, _MAX_GRID_Z)  # row tiles x populations
    P = max(1, min(n_tiles, -(-_target_blocks() // blocks)))
    per_split = max(1, G * N * max(D, 1) * 8)
    P = max(1, min(P, _SPLIT_BUFFER_BYTES // per_split, _MAX_GRID_Z))
    tiles_per_split = -(-n_tiles // P)
    return -(-n_tiles // tiles_per_split), tiles_per_split


def _from_soft(S, sigma: float, temperature: float, want_grad: bool, grad_scale: float):
    """Entropy (host float64, shape (G,)) and gradient (device) from device S (G, N, D)."""
    G, N, D = (int(n) for n in S.shape)
    dtype = np.dtype(S.dtype)
    if G == 0 or N == 1 or D == 0:
        # One pattern, or patterns with no cells (all equal): H = 0, zero gradient.
        H = np.zeros(G, dtype=np.float64)
        grad = cuda.to_device(np.zeros((G, N, D), dtype=dtype)) if want_grad else None
        return H, grad

    k = _kernels(dtype)
    tl = _TILINGS[dtype]
    ft = dtype.type
    # Clamped to the largest finite value: for tiny sigma, -inf would make the
    # d2 = 0 pairs exp(0 * -inf) = NaN instead of 1.
    neg_inv_2s2 = ft(max(-0.5 / sigma / sigma, -float(np.finfo(dtype).max)))
    row_tiles = -(-N // tl.tile)
    P, tiles_per_split = _num_splits(row_tiles, G, N, D)
    grid = (row_tiles, P, min(G, _MAX_GRID_Z))
    block = (tl.threads, tl.threads)

    partial = cuda.device_array((P, G, N), dtype=np.float64)
    k["counts"][grid, block](S, partial, neg_inv_2s2, np.int64(tiles_per_split))
    C0 = cuda.device_array((G, N), dtype=np.float64)
    inv_C = cuda.device_array((G, N), dtype=dtype)
    k["reduce_counts"][_elementwise_grid(G * N)](partial, C0, inv_C)

    grad = None
    if want_grad:
        gpartial = cuda.device_array((P, G, N, D), dtype=np.float64)
        k["grad"][grid, block](S, inv_C, gpartial, neg_inv_2s2, np.int64(tiles_per_split))
        grad = cuda.device_array((G, N, D), dtype=dtype)
        coef = float(grad_scale) * temperature / N / sigma / sigma
        k["finalize_grad"][_elementwise_grid(G * N * D)](gpartial, S, grad, np.float64(coef))

    # The copy waits for every kernel above (same stream): the call is synchronous.
    C0h = C0.copy_to_host()
    H = np.log(N) - np.mean(np.log1p(C0h), axis=1)
    return H, grad


def _soft_discretize(X, S, temperature: float, threshold: float) -> None:
    """Fill device S (G, N, D) with sigmoid(T (X - theta)); ValueError on NaN/inf in X."""
    dtype = np.dtype(S.dtype)
    k = _kernels(dtype)
    T = dtype.type(temperature)
    theta = dtype.type(threshold)
    bad = cuda.to_device(np.zeros(1, dtype=np.int32))
    shape = tuple(int(n) for n in X.shape)
    G, (N, D) = S.shape[0], shape[-2:]
    if len(shape) == 2:
        k["sigmoid_2d"][_elementwise_grid(N * D)](X, S, 0, T, theta, bad)
    else:
        X3 = X if len(shape) == 3 else _try_reshape(X, (G, N, D))
        if X3 is not None:
            k["sigmoid_3d"][_elementwise_grid(G * N * D)](X3, S, T, theta, bad)
        else:
            # Leading axes that cannot be merged without a copy: one launch per
            # population on its strided 2-D view (still no host round-trip).
            for g, idx in enumerate(np.ndindex(*shape[:-2])):
                k["sigmoid_2d"][_elementwise_grid(N * D)](X[idx], S, g, T, theta, bad)
    if bad.copy_to_host()[0]:
        raise ValueError("X must not contain NaN or infinity")


def _try_reshape(X, shape):
    """A view of X with the given shape, or None when that needs a copy."""
    # Only C-contiguous arrays: numba-cuda's reshape of an F-contiguous array in
    # C order returns C strides over the F-ordered buffer (wrong values), and
    # refuses other non-contiguous layouts.
    if not X.is_c_contiguous():
        return None
    try:
        return X.reshape(shape)
    except (NotImplementedError, ValueError):
        return None


def _as_numba_device_array(X) -> tuple[Any, bool]:
    """A Numba (or simulated) device-array view of X, and whether X is a CuPy array."""
    if getattr(X, "__cuda_ndarray__", False):  # Numba device array or simulator array
        return X, False
    if hasattr(X, "__cuda_array_interface__"):
        if SIMULATOR:
            raise TypeError("X is a GPU array, but the CUDA simulator is enabled "
                            "(NUMBA_ENABLE_CUDASIM=1); pass a NumPy array or a "
                            "numba.cuda device array instead")
        is_cupy = type(X).__module__.split(".")[0] == "cupy"
        return cuda.as_cuda_array(X), is_cupy
    raise TypeError(f"X must be a CUDA device array; got {type(X).__name__}")


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    if dtype in (np.float32, np.float64):
        return dtype
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError("X must be real; got a complex array")
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise TypeError(f"X must be an array of real numbers; got dtype {dtype}")
    # bool, integers and float16 are converted on the device (in the sigmoid
    # kernel) and computed in float64, as on the host backends.
    return np.dtype(np.float64)


def device_value_and_grad(X, temperature: float, sigma: float, threshold: float,
                          want_grad: bool, grad_scale: float = 1.0):
    """Soft entropy and gradient of a device array, computed where it lives.

    Parameters
    ----------
    X : device array, shape (..., N, D)
        A Numba device array, anything with ``__cuda_array_interface__``
        (CuPy, PyTorch, ...) or, under the simulator, a ``cuda.to_device``
        array. Any strides; float32 and float64 are computed in their own
        precision, bool/integer/float16 are converted on the device and
        computed in float64. X is read in place and never modified.
    temperature, sigma : float
        Sigmoid sharpness T > 0 and kernel width sigma > 0.
    threshold : float
        Sigmoid centre theta.
    want_grad : bool
        Whether to compute the gradient (pass 2).
    grad_scale : float, optional
        Factor applied to the gradient on the device (the caller's
        ``base``/``normalize`` scaling); H is returned unscaled.

    Returns
    -------
    H : ndarray of float64, shape (G,)
        Entropy in nats of each of the ``G = prod(X.shape[:-2])`` populations.
    grad : device array or None
        ``dH/dX * grad_scale`` with the shape of X, float32 for float32 input
        and float64 otherwise: a CuPy array for CuPy input, otherwise a Numba
        device array. ``None`` unless ``want_grad``.

    Raises
    ------
    TypeError
        If X is not a device array, or is complex or not numeric.
    ValueError
        If X has fewer than 2 dimensions, no patterns, or NaN/inf values.
    """
    arr, is_cupy = _as_numba_device_array(X)
    shape = tuple(int(n) for n in arr.shape)
    if len(shape) < 2:
        raise ValueError(f"X must have at least 2 dimensions (..., N, D); got shape {shape}")
    if shape[-2] == 0:
        raise ValueError(f"X must hold at least one pattern (N >= 1); got shape {shape}")
    dtype = _compute_dtype(np.dtype(arr.dtype))
    N, D = shape[-2:]
    G = math.prod(shape[:-2])
    S = cuda.device_array((G, N, D), dtype=dtype)
    if G * N * D:
        _soft_discretize(arr, S, temperature, threshold)
    H, grad = _from_soft(S, sigma, temperature, want_grad, grad_scale)
    if grad is not None:
        grad = grad.reshape(shape)
        if is_cupy:
            grad = sys.modules["cupy"].asarray(grad)
    return H, grad


def value_and_grad(X3: np.ndarray, temperature: float, sigma: float, threshold: float,
                   want_grad: bool):
    """Soft entropy (nats) and optionally its gradient for a host ``(G, N, D)`` array.

    ``X3`` (C-contiguous, float32/float64, finite) is copied to the device once;
    the gradient is copied back. Returns ``(H, grad)`` with ``H`` a float64
    array of shape ``(G,)`` and ``grad`` an ndarray like ``X3`` (or ``None``).
    """
    H, grad = device_value_and_grad(cuda.to_device(X3), temperature, sigma, threshold,
                                    want_grad)
    return H, (grad.copy_to_host() if grad is not None else None)
