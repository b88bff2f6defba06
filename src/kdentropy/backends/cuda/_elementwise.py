"""Element-wise and O(N·D) kernels: soft patterns, centring statistics, partial sums, chain rule.

All but the reductions are grid-stride loops over independent
items, so every value is computed by one thread in a fixed order: the
results do not depend on the launch geometry and are bit-identical from run
to run. The reductions (:func:`call_header`, :func:`pair_sum_norms`) add in a
fixed tree order over a fixed number of blocks. Every launch and copy runs on the caller's stream.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from ... import _estimator
from ._compiler import cuda, float32, float64
from ._device import SIMULATOR, elementwise_grid, empty, to_device, to_host, try_reshape

# The sigmoid and its slope are the estimator's own scalar functions, compiled
# for the device: the formula lives in one place for every backend.
_sigmoid = cuda.jit(device=True)(_estimator.sigmoid)
_sigmoid_slope = cuda.jit(device=True)(_estimator.sigmoid_slope)

# Rows per partial column sum; the partial sums are then added in row-chunk order.
_COLUMN_CHUNK = 3 if SIMULATOR else 256
# Threads of the one-block reductions (a power of two for the tree).
_REDUCE_THREADS = 4 if SIMULATOR else 256
# Blocks per population of the pair-sum norms (fixed: the summation order must
# not depend on the device); one block per population took 30 ms at 16384 x 1024.
_NORM_BLOCKS = 3 if SIMULATOR else 264


@functools.cache
def kernels(dtype: np.dtype) -> dict[str, Any]:
    """Element-wise kernels whose output has ``dtype`` (float32 or float64)."""
    ft = float32 if np.dtype(dtype) == np.float32 else float64

    @cuda.jit
    def sigmoid_3d(X, S, T, theta, bad):
        G, N, D = X.shape
        ND = N * D
        for idx in range(cuda.grid(1), G * ND, cuda.gridsize(1)):
            g = idx // ND
            rem = idx - g * ND
            i = rem // D
            k = rem - i * D
            x = float64(X[g, i, k])
            if not math.isfinite(x):
                bad[0] = 1
            S[g, i, k] = ft(_sigmoid(x, T, theta))

    @cuda.jit
    def sigmoid_2d(X, S, g, T, theta, bad):
        N, D = X.shape
        for idx in range(cuda.grid(1), N * D, cuda.gridsize(1)):
            i = idx // D
            k = idx - i * D
            x = float64(X[i, k])
            if not math.isfinite(x):
                bad[0] = 1
            S[g, i, k] = ft(_sigmoid(x, T, theta))

    @cuda.jit
    def center(S, mean, Sc):
        # Sc = S - mean in this kernel's dtype (the Gram products' precision).
        G, N, D = S.shape
        ND = N * D
        for idx in range(cuda.grid(1), G * ND, cuda.gridsize(1)):
            g = idx // ND
            rem = idx - g * ND
            i = rem // D
            k = rem - i * D
            Sc[g, i, k] = ft(float64(S[g, i, k]) - mean[g, k])

    @cuda.jit
    def chain_rule(V, S, out, T, factor):
        # dH/dX = factor * V * T S (1 - S), formed in float64 and rounded once.
        for idx in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            out[idx] = ft(factor * V[idx] * _sigmoid_slope(float64(S[idx]), T))

    return {"sigmoid_3d": sigmoid_3d, "sigmoid_2d": sigmoid_2d, "center": center,
            "chain_rule": chain_rule}


@cuda.jit
def _column_partials(S, part, rows):
    # part[g, c, k] = sum of S[g, i, k] over the c-th chunk of ``rows`` rows.
    G, N, D = S.shape
    C = part.shape[1]
    for idx in range(cuda.grid(1), G * C * D, cuda.gridsize(1)):
        g = idx // (C * D)
        rem = idx - g * (C * D)
        c = rem // D
        k = rem - c * D
        s = 0.0
        for i in range(c * rows, min(N, (c + 1) * rows)):
            s += float64(S[g, i, k])
        part[g, c, k] = s


@cuda.jit
def _column_mean(part, mean, N):
    G, C, D = part.shape
    for idx in range(cuda.grid(1), G * D, cuda.gridsize(1)):
        g = idx // D
        k = idx - g * D
        s = 0.0
        for c in range(C):
            s += part[g, c, k]
        mean[g, k] = s / N


@cuda.jit
def _row_norms(S, mean, sqn):
    # Squared norms of the exactly centred rows, in float64.
    G, N, D = S.shape
    for idx in range(cuda.grid(1), G * N, cuda.gridsize(1)):
        g = idx // N
        i = idx - g * N
        s = 0.0
        for k in range(D):
            t = float64(S[g, i, k]) - mean[g, k]
            s += t * t
        sqn[g, i] = s


@cuda.jit
def _sum_partials(partial, out):
    # out[m] = sum_p partial[p, m], in p order (no atomics).
    P, M = partial.shape
    for m in range(cuda.grid(1), M, cuda.gridsize(1)):
        s = 0.0
        for p in range(P):
            s += partial[p, m]
        out[m] = s


@cuda.jit
def _header(bad, sqn, out):
    # out = [bad flag, max_i sqn_i]: one block, a fixed-order tree of maxima.
    T = _REDUCE_THREADS
    t = cuda.threadIdx.x
    red = cuda.shared.array(_REDUCE_THREADS, float64)
    m = 0.0
    for idx in range(t, sqn.size, T):
        v = sqn[idx]
        if v > m:
            m = v
    red[t] = m
    cuda.syncthreads()
    h = T // 2
    while h > 0:
        if t < h and red[t + h] > red[t]:
            red[t] = red[t + h]
        cuda.syncthreads()
        h //= 2
    if t == 0:
        out[0] = float64(bad[0])
        out[1] = red[0]


@cuda.jit(device=True)
def _tree_sum_pair(red, t, T):
    # Adds red[:, 0..T) into red[:, 0] in a fixed tree order (T a power of two).
    cuda.syncthreads()
    h = T // 2
    while h > 0:
        if t < h:
            red[0, t] += red[0, t + h]
            red[1, t] += red[1, t + h]
        cuda.syncthreads()
        h //= 2


@cuda.jit
def _pair_sum_partials(rowsum, sqn, V, part):
    # Grid (blocks, G): part[g, b] = [sum rowsum_i^2 |Sc_i|^2, sum V_ik^2] over the
    # block-strided slice b of population g. A fixed block count keeps the order fixed.
    T = _REDUCE_THREADS
    g = cuda.blockIdx.y
    t = cuda.threadIdx.x
    first = cuda.blockIdx.x * T + t
    step = cuda.gridDim.x * T
    N, D = V.shape[1], V.shape[2]
    red = cuda.shared.array((2, _REDUCE_THREADS), float64)
    a = 0.0
    for i in range(first, N, step):
        a += rowsum[g, i] * rowsum[g, i] * sqn[g, i]
    b = 0.0
    for idx in range(first, N * D, step):
        i = idx // D
        v = V[g, i, idx - i * D]
        b += v * v
    red[0, t] = a
    red[1, t] = b
    _tree_sum_pair(red, t, T)
    if t == 0:
        part[g, cuda.blockIdx.x, 0] = red[0, 0]
        part[g, cuda.blockIdx.x, 1] = red[1, 0]


@cuda.jit
def _pair_sum_norms(part, out):
    # One block per population: out[g] = the block partials of part[g] added in a tree.
    T = _REDUCE_THREADS
    g = cuda.blockIdx.x
    t = cuda.threadIdx.x
    red = cuda.shared.array((2, _REDUCE_THREADS), float64)
    a = 0.0
    b = 0.0
    for k in range(t, part.shape[1], T):
        a += part[g, k, 0]
        b += part[g, k, 1]
    red[0, t] = a
    red[1, t] = b
    _tree_sum_pair(red, t, T)
    if t == 0:
        out[g, 0] = red[0, 0]
        out[g, 1] = red[1, 0]


def soft_patterns(X: Any, dtype: np.dtype, temperature: float, threshold: float,
                  stream: Any) -> tuple[Any, Any]:
    """Device ``S = sigmoid(T (X - theta))`` of shape ``(G, N, D)`` and ``dtype``, and a NaN flag.

    ``X`` is a device array of shape ``(..., N, D)`` with any strides and any
    real dtype; it is read in place.

    Returns
    -------
    S : device array, shape (G, N, D)
    bad : device int32 array, shape (1,)
        1 where X held NaN or infinity. It stays on the device: the caller
        reads it with the next small copy (:func:`call_header`), not here.
    """
    shape = tuple(int(n) for n in X.shape)
    N, D = shape[-2:]
    G = math.prod(shape[:-2])
    S = empty((G, N, D), dtype)
    bad = to_device(np.zeros(1, dtype=np.int32), stream)
    if S.size == 0:
        return S, bad
    k = kernels(np.dtype(dtype))
    T, theta = float(temperature), float(threshold)
    if len(shape) == 2:
        k["sigmoid_2d"][elementwise_grid(N * D) + (stream,)](X, S, 0, T, theta, bad)
    else:
        X3 = X if len(shape) == 3 else try_reshape(X, (G, N, D))
        if X3 is not None:
            k["sigmoid_3d"][elementwise_grid(G * N * D) + (stream,)](X3, S, T, theta, bad)
        else:
            # Leading axes that cannot be merged without a copy: one launch per
            # population on its strided 2-D view (still no host round trip).
            for g, idx in enumerate(np.ndindex(*shape[:-2])):
                k["sigmoid_2d"][elementwise_grid(N * D) + (stream,)](X[idx], S, g, T, theta,
                                                                     bad)
    return S, bad


def call_header(bad: Any, sqn: Any, stream: Any) -> tuple[bool, float]:
    """The NaN flag of :func:`soft_patterns` and ``max sqn``, in one 16-byte copy to the host."""
    out = empty((2,), np.float64)
    flat = sqn.reshape(sqn.size)
    _header[1, _REDUCE_THREADS, stream](bad, flat, out)
    bad_flag, max_sqn = to_host(out, stream)
    return bool(bad_flag), float(max_sqn)


def read_flag(bad: Any, stream: Any) -> bool:
    """The NaN flag alone (calls with no pair work)."""
    return bool(to_host(bad, stream)[0])


def pair_sum_norms(rowsum: Any, sqn: Any, V: Any, stream: Any) -> np.ndarray:
    """Per population, ``|rowsum_i Sc_i|`` and ``|V|`` (Frobenius norms): a ``(G, 2)`` host array.

    ``sqn`` holds the squared row norms of ``Sc``, so no ``N x D`` temporary is formed.
    """
    G = int(V.shape[0])
    part = empty((G, _NORM_BLOCKS, 2), np.float64)
    out = empty((G, 2), np.float64)
    _pair_sum_partials[(_NORM_BLOCKS, G), _REDUCE_THREADS, stream](rowsum, sqn, V, part)
    _pair_sum_norms[G, _REDUCE_THREADS, stream](part, out)
    return np.sqrt(to_host(out, stream))


def column_stats(S: Any, stream: Any) -> tuple[Any, Any]:
    """Column means ``(G, D)`` and squared centred row norms ``(G, N)`` of device ``S``, in float64."""
    G, N, D = S.shape
    chunks = -(-N // _COLUMN_CHUNK)
    part = empty((G, chunks, D), np.float64)
    mean = empty((G, D), np.float64)
    sqn = empty((G, N), np.float64)
    _column_partials[elementwise_grid(G * chunks * D) + (stream,)](S, part, _COLUMN_CHUNK)
    _column_mean[elementwise_grid(G * D) + (stream,)](part, mean, float(N))
    _row_norms[elementwise_grid(G * N) + (stream,)](S, mean, sqn)
    return mean, sqn


def centered(S: Any, mean: Any, dtype: np.dtype, stream: Any) -> Any:
    """``S - mean`` as a new device array of ``dtype`` (the Gram products' precision)."""
    Sc = empty(S.shape, dtype)
    kernels(np.dtype(dtype))["center"][elementwise_grid(S.size) + (stream,)](S, mean, Sc)
    return Sc


def sum_partials(partial: Any, out: Any, stream: Any = 0) -> None:
    """``out = partial.sum(axis=0)`` in a fixed order, for float64 device arrays."""
    P = partial.shape[0]
    flat_in = partial.reshape(P, partial.size // P)
    flat_out = out.reshape(out.size)
    _sum_partials[elementwise_grid(out.size) + (stream,)](flat_in, flat_out)


def chain_rule(V: Any, S: Any, temperature: float, factor: float, stream: Any) -> Any:
    """``factor * V * sigmoid_slope(S, T)`` as a new device array like ``S``."""
    out = empty(S.shape, S.dtype)
    if out.size:
        kernels(np.dtype(S.dtype))["chain_rule"][elementwise_grid(out.size) + (stream,)](
            V.reshape(V.size), S.reshape(S.size), out.reshape(out.size),
            float(temperature), float(factor))
    return out


def reduction_kernels() -> dict[str, Any]:
    """The dtype-independent kernels of this module by name (for offline PTX listings)."""
    return {"column_partials": _column_partials, "column_mean": _column_mean,
            "row_norms": _row_norms, "sum_partials": _sum_partials, "header": _header,
            "pair_sum_partials": _pair_sum_partials, "pair_sum_norms": _pair_sum_norms}
