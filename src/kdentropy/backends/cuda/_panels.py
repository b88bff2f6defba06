"""Gram panels from cuBLAS with fused numba.cuda epilogues (the route for large D).

For one population and a panel of ``bp`` rows ``[i0, i1)`` against all N
columns (``Sc``: S centred on its column mean, in the *work dtype* that
:mod:`.._conditioning` picked, see :func:`kdentropy.backends.cuda.plan`):

1. ``Gp = Sc[i0:i1] @ Sc.T`` by one GEMM (:func:`gemm`, the only code that
   needs cuBLAS: CuPy on a GPU, ``numpy.matmul`` on the simulator's
   host-backed arrays, so every epilogue below runs in CI);
2. pass 1 epilogue (:func:`_panel_counts`, one block per row):
   ``d2 = |Sc_i|^2 + |Sc_j|^2 - 2 Gp_ij`` clamped at 0, ``K = exp(-d2 / 2 sigma^2)``,
   summed in float64 over ``j != i`` by a fixed-order tree reduction;
3. pass 2 epilogue (:func:`_panel_weights`): ``w_ij = K_ij (g_i + g_j)``
   written in place (0 for ``j = i``) and its float64 row sums; then one
   more GEMM ``P = W @ Sc`` and ``V_i = rowsum_i Sc_i - P_i`` in float64
   (:func:`_panel_rows`). ``rowsum`` adds exactly the stored weights that
   enter the GEMM, so no self term is left uncancelled.

GEMMs and epilogues run on one stream, the caller's current CuPy stream
(:func:`.._device.call_stream`): cuBLAS through CuPy uses it, the kernels are
launched on it, so nothing waits on the host between them.

Memory
------
The panel buffer comes from CuPy's memory pool (:func:`._device.empty`): freed
blocks stay in the pool, so repeated calls reuse them instead of asking the
driver for up to :data:`PANEL_BYTES_CAP` each time, and
``cupy.get_default_memory_pool().free_all_blocks()`` returns them. The
budget is :data:`KCACHE_FRACTION` of the *available* device memory (free in
the driver plus free in the pool, :func:`._device.available_bytes`). When all
``G N^2`` kernel values fit in that budget, pass 1 keeps them (the *K cache*)
and pass 2 skips its Gram GEMM (two GEMMs per call instead of three);
otherwise panels of at most :data:`PANEL_BYTES_CAP` are recomputed in pass 2.
No ``N x N`` array is ever allocated beyond that budget.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from typing import Any, NamedTuple

import numpy as np

from ._compiler import cuda, float32, float64
from ._device import (
    SIMULATOR,
    Unsynced,
    available_bytes,
    elementwise_grid,
    empty,
    host_view,
    neg_kernel_scale,
)

# Threads of one epilogue block (one block per panel row); a power of two for
# the tree reduction.
PANEL_THREADS = 4 if SIMULATOR else 256
#: Largest panel buffer without the K cache, in bytes: taller panels do not
#: make the GEMMs faster. (The simulator's is tiny so that test problems span
#: several panels.)
PANEL_BYTES_CAP = 512 if SIMULATOR else 4 * 2**30
#: Share of the available device memory the panel buffer or K cache may take:
#: half, leaving the rest to the caller and to this call's O(N D) arrays.
KCACHE_FRACTION = 0.5


@functools.cache
def _cupy() -> Any:
    """CuPy, checked to reach this GPU and cuBLAS; ``None`` when it is not installed.

    Raises
    ------
    RuntimeError
        When CuPy is installed but cannot run here: the panel route would
        fail, and quietly using the fused kernels instead would hide a
        several-fold slowdown.
    """
    try:
        import cupy
    except Exception as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "cupy":
            return None
        raise RuntimeError(f"CuPy is installed but cannot be imported ({exc}); reinstall "
                           "the cupy-cuda* wheel that matches the CUDA driver, or "
                           "uninstall CuPy to run every size on the fused kernels") from exc
    try:
        cupy.cuda.device.get_cublas_handle()
    except Exception as exc:
        raise RuntimeError(f"CuPy cannot reach cuBLAS on this GPU ({exc}); the panel route "
                           "(the faster one for most sizes) needs it: reinstall the cupy-cuda* wheel that "
                           "matches the CUDA driver, or uninstall CuPy to run every size "
                           "on the fused kernels") from exc
    return cupy


@functools.cache
def _warn_without_cupy() -> None:
    warnings.warn("CuPy is not installed, so the cuda backend cannot reach cuBLAS: every "
                  "batch runs on the fused kernels, which the performance model predicts "
                  "to be slower than Gram panels for most sizes; pip install 'kdentropy[cuda]' installs CuPy",
                  RuntimeWarning, stacklevel=4)


def gemm_available() -> bool:
    """Whether :func:`gemm` can run: always on the simulator, with CuPy on a GPU.

    Warns once when CuPy is not installed; raises ``RuntimeError`` when it is
    installed but broken (see :func:`_cupy`).
    """
    if SIMULATOR:
        return True
    if _cupy() is None:
        _warn_without_cupy()
        return False
    return True


def float32_gemm_is_fp32() -> bool:
    """False when CuPy was told to run float32 products in TF32 (``CUPY_TF32=1``).

    TF32 keeps 10 mantissa bits: far too few for a Gram-form distance, so the
    float32 work dtype is then ruled out.
    """
    return SIMULATOR or os.environ.get("CUPY_TF32", "0") in ("", "0")


def gemm(A: Any, B: Any, out: Any, transpose_b: bool) -> None:
    """``out = A @ B.T`` (``transpose_b``) or ``A @ B`` for 2-D device arrays of one dtype.

    The single place where the backend calls cuBLAS: through CuPy, zero copy,
    on CuPy's current stream, which is the call's stream. Under the simulator
    the arrays live on the host and NumPy computes the product.
    """
    if SIMULATOR:
        b = host_view(B)
        np.matmul(host_view(A), b.T if transpose_b else b, out=host_view(out))
        return
    cp = _cupy()
    b = cp.asarray(Unsynced(B))
    cp.matmul(cp.asarray(Unsynced(A)), b.T if transpose_b else b, out=cp.asarray(Unsynced(out)))


@functools.cache
def epilogues(dtype: np.dtype) -> dict[str, Any]:
    """Panel epilogue kernels for one work dtype."""
    ft = float32 if np.dtype(dtype) == np.float32 else float64
    T = PANEL_THREADS

    @cuda.jit(device=True)
    def block_sum(red, s):
        # Fixed-order tree over the block's threads: bit-identical repeats.
        t = cuda.threadIdx.x
        red[t] = s
        cuda.syncthreads()
        h = T // 2
        while h > 0:
            if t < h:
                red[t] += red[t + h]
            cuda.syncthreads()
            h //= 2
        return red[0]

    @cuda.jit
    def panel_counts(Gp, sqn, i0, neg_scale, keep, C0):
        r = cuda.blockIdx.x
        i = i0 + r
        t = cuda.threadIdx.x
        N = Gp.shape[1]
        red = cuda.shared.array(T, float64)
        ni = ft(sqn[i])
        s = 0.0
        for j in range(t, N, T):
            k = ft(0.0)
            if j != i:
                v = ni + ft(sqn[j]) - ft(2.0) * Gp[r, j]
                k = math.exp((v if v > ft(0.0) else ft(0.0)) * neg_scale)
                s += float64(k)
            if keep:
                Gp[r, j] = k
        total = block_sum(red, s)
        if t == 0:
            C0[i] = total

    @cuda.jit
    def panel_weights(Gp, sqn, coef, i0, neg_scale, cached, rowsum):
        r = cuda.blockIdx.x
        i = i0 + r
        t = cuda.threadIdx.x
        N = Gp.shape[1]
        red = cuda.shared.array(T, float64)
        ni = ft(sqn[i])
        gi = coef[i]
        s = 0.0
        for j in range(t, N, T):
            w = ft(0.0)
            if j != i:
                if cached:
                    k = Gp[r, j]
                else:
                    v = ni + ft(sqn[j]) - ft(2.0) * Gp[r, j]
                    k = math.exp((v if v > ft(0.0) else ft(0.0)) * neg_scale)
                w = k * (gi + coef[j])
                s += float64(w)
            Gp[r, j] = w
        total = block_sum(red, s)
        if t == 0:
            rowsum[i] = total

    @cuda.jit
    def panel_rows(rowsum, Sc, P, i0, V):
        bp, D = P.shape
        for idx in range(cuda.grid(1), bp * D, cuda.gridsize(1)):
            r = idx // D
            k = idx - r * D
            i = i0 + r
            V[i, k] = rowsum[i] * float64(Sc[i, k]) - float64(P[r, k])

    return {"counts": panel_counts, "weights": panel_weights, "rows": panel_rows}


class PanelPlan(NamedTuple):
    """Panel height and whether pass 1's kernel values are kept for pass 2 (the K cache)."""

    rows: int
    cached: bool


def panel_plan(G: int, N: int, dtype: np.dtype, available: int | None = None) -> PanelPlan:
    """Panels for ``G`` populations of ``N`` rows in work dtype ``dtype``.

    Parameters
    ----------
    available : int, optional
        Device memory to plan with; default :func:`available_bytes`.
    """
    item = np.dtype(dtype).itemsize
    budget = int(KCACHE_FRACTION * (available_bytes() if available is None else available))
    # The panel height sets the GEMM shapes, and cuBLAS may round differently
    # for other shapes: it depends on the free memory only when that is short
    # of one capped panel, so the cache's state does not change the results.
    rows = max(1, min(N, min(PANEL_BYTES_CAP, budget) // (N * item)))
    return PanelPlan(rows, G * N * N * item <= budget)


def _panels(N: int, rows: int) -> list[tuple[int, int]]:
    return [(i0, min(N, i0 + rows)) for i0 in range(0, N, rows)]


def buffer(G: int, N: int, dtype: Any, plan: PanelPlan) -> Any:
    """The panel buffer (or K cache) that :func:`counts` fills and :func:`weighted_sums` reuses."""
    return empty((G, N, N) if plan.cached else (1, plan.rows, N), dtype)


def counts(Sc: Any, sqn: Any, sigma: float, plan: PanelPlan, buf: Any, stream: Any) -> Any:
    """Pass 1 on Gram panels: device float64 ``C0 (G, N)``; fills the K cache when ``plan.cached``."""
    G, N, _ = (int(n) for n in Sc.shape)
    k = epilogues(np.dtype(Sc.dtype))["counts"]
    neg = neg_kernel_scale(sigma, Sc.dtype)
    C0 = empty((G, N), np.float64)
    for g in range(G):
        for i0, i1 in _panels(N, plan.rows):
            Gp = buf[g, i0:i1] if plan.cached else buf[0, :i1 - i0]
            gemm(Sc[g, i0:i1], Sc[g], Gp, transpose_b=True)
            k[i1 - i0, PANEL_THREADS, stream](Gp, sqn[g], i0, neg, plan.cached, C0[g])
    return C0


def weighted_sums(Sc: Any, sqn: Any, coef: Any, sigma: float, plan: PanelPlan, buf: Any,
                  stream: Any, populations: Any = None, V: Any = None,
                  rowsum: Any = None) -> tuple[Any, Any]:
    """Pass 2 on Gram panels: device float64 ``V (G, N, D)`` and the weight sums ``rowsum (G, N)``.

    ``coef`` is in the work dtype (the dtype of ``Sc``). ``populations``
    (default all) with ``V``/``rowsum`` given recomputes only those
    populations into the existing arrays.
    """
    G, N, D = (int(n) for n in Sc.shape)
    ks = epilogues(np.dtype(Sc.dtype))
    neg = neg_kernel_scale(sigma, Sc.dtype)
    rowsum = empty((G, N), np.float64) if rowsum is None else rowsum
    V = empty((G, N, D), np.float64) if V is None else V
    P = empty((plan.rows, D), Sc.dtype)
    for g in range(G) if populations is None else populations:
        for i0, i1 in _panels(N, plan.rows):
            bp = i1 - i0
            W = buf[g, i0:i1] if plan.cached else buf[0, :bp]
            if not plan.cached:
                gemm(Sc[g, i0:i1], Sc[g], W, transpose_b=True)
            ks["weights"][bp, PANEL_THREADS, stream](W, sqn[g], coef[g], i0, neg, plan.cached,
                                                     rowsum[g])
            gemm(W, Sc[g], P[:bp], transpose_b=False)
            ks["rows"][elementwise_grid(bp * D) + (stream,)](rowsum[g], Sc[g], P[:bp], i0, V[g])
    return V, rowsum
