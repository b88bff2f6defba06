"""Gram panels from cuBLAS with fused numba.cuda epilogues (the route for large D).

For one population and a panel of ``bp`` rows ``[i0, i1)`` against all N
columns (``Sc``: S centred on its column mean, in the *work dtype* that the
caller picked from the conditioning, see :func:`kdentropy.backends.cuda.plan`):

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

Workspace: one ``bp x N`` panel and a ``bp x D`` product in the work dtype,
with ``bp`` chosen so that the panel stays under :func:`workspace_bytes`
(``min(WORKSPACE_CAP, free device memory / 4)``). When all ``G N^2`` kernel
values fit in that budget, pass 1 keeps them and pass 2 skips its Gram GEMM
(two GEMMs per call instead of three). No ``N x N`` array is ever allocated
beyond that budget.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import numpy as np
from numba import cuda, float32, float64

from ._device import SIMULATOR, elementwise_grid, free_device_bytes, host_view, neg_kernel_scale

# Threads of one epilogue block (one block per panel row); a power of two for
# the tree reduction.
PANEL_THREADS = 4 if SIMULATOR else 256
#: Upper bound on the panel workspace in bytes (the simulator's is tiny so that
#: test problems span several panels; tests raise it to exercise the K cache).
WORKSPACE_CAP = 512 if SIMULATOR else 4 * 2**30


def workspace_bytes() -> int:
    """Panel budget: :data:`WORKSPACE_CAP` or a quarter of the free device memory, if smaller."""
    return max(1, min(WORKSPACE_CAP, free_device_bytes() // 4))


@functools.cache
def _cupy() -> Any:
    import cupy

    return cupy


def gemm_available() -> bool:
    """Whether :func:`gemm` can run: always on the simulator, with CuPy on a GPU."""
    if SIMULATOR:
        return True
    try:
        return bool(_cupy().cuda.is_available())
    except Exception:  # CuPy missing or built for another CUDA: use the fused kernels
        return False


def float32_gemm_is_fp32() -> bool:
    """False when CuPy was told to run float32 products in TF32 (``CUPY_TF32=1``).

    TF32 keeps 10 mantissa bits: far too few for a Gram-form distance, so the
    float32 work dtype is then ruled out.
    """
    return SIMULATOR or os.environ.get("CUPY_TF32", "0") in ("", "0")


def gemm(A: Any, B: Any, out: Any, transpose_b: bool) -> None:
    """``out = A @ B.T`` (``transpose_b``) or ``A @ B`` for 2-D device arrays of one dtype.

    The single place where the backend calls cuBLAS (through CuPy, zero copy
    via ``__cuda_array_interface__``, on the default stream that the Numba
    kernels use too). Under the simulator the arrays live on the host and
    NumPy computes the product.
    """
    if SIMULATOR:
        b = host_view(B)
        np.matmul(host_view(A), b.T if transpose_b else b, out=host_view(out))
        return
    cp = _cupy()
    b = cp.asarray(B)
    cp.matmul(cp.asarray(A), b.T if transpose_b else b, out=cp.asarray(out))


@functools.cache
def _epilogues(dtype: np.dtype) -> dict[str, Any]:
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


class PanelPlan:
    """Panel height and whether the kernel values of pass 1 are kept for pass 2."""

    def __init__(self, G: int, N: int, D: int, dtype: np.dtype) -> None:
        item = np.dtype(dtype).itemsize
        budget = workspace_bytes()
        self.cached = G * N * N * item <= budget
        self.rows = N if self.cached else max(1, min(N, budget // (N * item)))
        self.buffer = cuda.device_array((G if self.cached else 1, self.rows, N), dtype=dtype)

    def panels(self, N: int) -> list[tuple[int, int]]:
        return [(i0, min(N, i0 + self.rows)) for i0 in range(0, N, self.rows)]

    def panel(self, g: int, bp: int) -> Any:
        return self.buffer[g if self.cached else 0, :bp]


def counts(Sc: Any, sqn: Any, sigma: float, plan: PanelPlan) -> Any:
    """Pass 1 on Gram panels: device float64 ``C0 (G, N)``."""
    G, N, _ = (int(n) for n in Sc.shape)
    k = _epilogues(np.dtype(Sc.dtype))["counts"]
    neg = neg_kernel_scale(sigma, Sc.dtype)
    C0 = cuda.device_array((G, N), dtype=np.float64)
    for g in range(G):
        for i0, i1 in plan.panels(N):
            Gp = plan.panel(g, i1 - i0)
            gemm(Sc[g, i0:i1], Sc[g], Gp, transpose_b=True)
            k[i1 - i0, PANEL_THREADS](Gp, sqn[g], i0, neg, plan.cached, C0[g])
    return C0


def weighted_sums(Sc: Any, sqn: Any, coef: Any, sigma: float, plan: PanelPlan) -> Any:
    """Pass 2 on Gram panels: device float64 ``V (G, N, D)``; ``coef`` in the work dtype."""
    G, N, D = (int(n) for n in Sc.shape)
    ks = _epilogues(np.dtype(Sc.dtype))
    neg = neg_kernel_scale(sigma, Sc.dtype)
    rowsum = cuda.device_array((G, N), dtype=np.float64)
    V = cuda.device_array((G, N, D), dtype=np.float64)
    P = cuda.device_array((plan.rows, D), dtype=Sc.dtype)
    for g in range(G):
        for i0, i1 in plan.panels(N):
            bp = i1 - i0
            W = plan.panel(g, bp)
            if not plan.cached:
                gemm(Sc[g, i0:i1], Sc[g], W, transpose_b=True)
            ks["weights"][bp, PANEL_THREADS](W, sqn[g], coef[g], i0, neg, plan.cached,
                                             rowsum[g])
            gemm(W, Sc[g], P[:bp], transpose_b=False)
            ks["rows"][elementwise_grid(bp * D)](rowsum[g], Sc[g], P[:bp], i0, V[g])
    return V
