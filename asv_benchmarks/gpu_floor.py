#!/usr/bin/env python
"""Time the CUDA backend against the cuBLAS floor, a blocked-cuBLAS script and PyTorch.

Standalone script (asv imports this module while discovering benchmarks, so it
does nothing at import time and defines no ``time_*``/``peakmem_*`` names).

On a machine with an NVIDIA GPU, from the repository root::

    pip install ".[cuda]"                      # numba-cuda, CuPy, a NumPy that works with both
    python asv_benchmarks/gpu_floor.py         # default sizes, markdown table
    python asv_benchmarks/gpu_floor.py --sizes 8192x256 --repeat 3

Without a GPU (registers, spills, shared memory and occupancy of every kernel)::

    pip install "numba-cuda[cu13]" nvidia-cuda-nvcc
    python asv_benchmarks/gpu_floor.py --ptx-only
    pip install nvidia-cuda-nvdisasm
    python asv_benchmarks/gpu_floor.py --model      # predicted times (gpu_model.py)

One run times, on the same inputs (value + gradient, median of ``--repeat``
calls after a warm-up, host clock around a device synchronisation):

* **kdentropy-cuda**: ``soft_entropy_and_grad(X, backend="cuda")`` on a device array;
* **cuBLAS floor**: ``S @ S.T`` then ``(N x N) @ S`` through CuPy in row blocks,
  4 N^2 D flops: what any method that forms the two dense products costs;
* **cupy-blocked**: :func:`blocked_reference`, the same maths in blocked CuPy
  (one GEMM per panel, a fused reduction for the soft counts, a fused
  element kernel for the weights, one more GEMM for ``W @ S``);
* **torch-autograd** (when torch imports): the dense Gram formula and autograd.

It prints each time, its ratio to the floor and each float32 gradient's
norm-relative error against kdentropy's float64 gradient on the same input.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SIZES = ((4096, 64), (8192, 256), (16384, 1024), (65536, 64))
PARAMS = dict(temperature=10.0, sigma=0.5, threshold=0.5)


def clustered(rng: np.random.Generator, N: int, D: int, n_proto: int = 16,
              noise: float = 0.15) -> np.ndarray:
    """Noisy copies of a few 0/1 prototypes, so that the kernel has real neighbours."""
    protos = rng.integers(0, 2, size=(n_proto, D)).astype(np.float64)
    return protos[rng.integers(0, n_proto, size=N)] + noise * rng.standard_normal((N, D))


# ----------------------------------------------------------------------------- competitors

def _row_kernel_sums(xp: Any, Gp: Any, sq_rows: Any, sq_all: Any, i0: int, neg: float) -> Any:
    """float64 row sums of ``exp(neg * max(|a|^2 + |b|^2 - 2 Gp, 0))`` over ``j != i``."""
    if xp.__name__ == "cupy":
        k = _cupy_kernels(xp)["rowsum"]
        cols = xp.arange(Gp.shape[1])
        rows = xp.arange(i0, i0 + Gp.shape[0])[:, None]
        return k(Gp, sq_rows[:, None], sq_all[None, :], rows, cols[None, :], Gp.dtype.type(neg),
                 axis=1)
    d2 = np.maximum(sq_rows[:, None] + sq_all[None, :] - 2 * Gp, 0)
    K = np.exp(d2 * neg)
    K[np.arange(Gp.shape[0]), i0 + np.arange(Gp.shape[0])] = 0
    return K.sum(axis=1, dtype=np.float64)


def _weights_in_place(xp: Any, Gp: Any, sq_rows: Any, sq_all: Any, g_rows: Any, g_all: Any,
                      i0: int, neg: float) -> None:
    """``Gp <- K_ij (g_i + g_j)`` with 0 on the diagonal."""
    if xp.__name__ == "cupy":
        rows = xp.arange(i0, i0 + Gp.shape[0])[:, None]
        cols = xp.arange(Gp.shape[1])[None, :]
        _cupy_kernels(xp)["weights"](sq_rows[:, None], sq_all[None, :], g_rows[:, None],
                                     g_all[None, :], rows, cols, Gp.dtype.type(neg), Gp)
        return
    d2 = np.maximum(sq_rows[:, None] + sq_all[None, :] - 2 * Gp, 0)
    Gp[...] = np.exp(d2 * neg) * (g_rows[:, None] + g_all[None, :])
    Gp[np.arange(Gp.shape[0]), i0 + np.arange(Gp.shape[0])] = 0


_CUPY_KERNELS: dict[str, Any] = {}


def _cupy_kernels(cp: Any) -> dict[str, Any]:
    if not _CUPY_KERNELS:
        # CuPy reserves ``i`` (the element index) in element-wise kernels and
        # ``a``/``b`` (the operands) in a reduction's expressions.
        _CUPY_KERNELS["rowsum"] = cp.ReductionKernel(
            "T gp, T sq_r, T sq_c, int64 row, int64 col, T neg", "float64 s",
            "(row == col) ? 0.0 : (double)exp(max(sq_r + sq_c - 2 * gp, (T)0) * neg)",
            "a + b", "s = a", "0", "kde_rowsum")
        _CUPY_KERNELS["weights"] = cp.ElementwiseKernel(
            "T sq_r, T sq_c, T g_r, T g_c, int64 row, int64 col, T neg", "T gp",
            "gp = (row == col) ? (T)0 : exp(max(sq_r + sq_c - 2 * gp, (T)0) * neg) * (g_r + g_c)",
            "kde_weights")
    return _CUPY_KERNELS


def blocked_reference(xp: Any, X: Any, temperature: float, sigma: float, threshold: float,
                      panel_bytes: int = 2**31) -> tuple[float, Any]:
    """Soft entropy and gradient of one ``(N, D)`` population in blocked array code.

    The plain form of the Gram-panel route (``xp`` is CuPy on a GPU; NumPy
    works too and is what the tests check it with): S centred on its column
    mean; per panel of rows, one GEMM, a fused kernel for the float64 soft
    counts; then the weights in place and one more GEMM for ``W @ S``.
    Memory ``O(N D + rows N)``.
    """
    N, D = X.shape
    dt = X.dtype
    S = (1 / (1 + xp.exp(-temperature * (X.astype(xp.float64) - threshold)))).astype(dt)
    Sc = (S - S.astype(xp.float64).mean(axis=0)).astype(dt)
    sq = (Sc.astype(xp.float64) ** 2).sum(axis=1).astype(dt)
    neg = -0.5 / sigma ** 2
    rows = max(1, min(N, panel_bytes // (N * dt.itemsize)))
    buf = xp.empty((rows, N), dtype=dt)
    C0 = xp.empty(N, dtype=xp.float64)
    spans = [(a, min(N, a + rows)) for a in range(0, N, rows)]
    for a, b in spans:
        Gp = buf[: b - a]
        xp.matmul(Sc[a:b], Sc.T, out=Gp)
        C0[a:b] = _row_kernel_sums(xp, Gp, sq[a:b], sq, a, neg)
    g = (1 / (1 + C0)).astype(dt)
    V = xp.empty((N, D), dtype=xp.float64)
    for a, b in spans:
        Gp = buf[: b - a]
        xp.matmul(Sc[a:b], Sc.T, out=Gp)
        _weights_in_place(xp, Gp, sq[a:b], sq, g[a:b], g, a, neg)
        rowsum = Gp.sum(axis=1, dtype=xp.float64)
        V[a:b] = rowsum[:, None] * Sc[a:b] - (Gp @ Sc)
    H = math.log(N) - float(xp.log1p(C0).mean())
    S64 = S.astype(xp.float64)
    grad = (V / (N * sigma ** 2) * temperature * S64 * (1 - S64)).astype(dt)
    return H, grad


def torch_value_and_grad(torch: Any, X: Any, temperature: float, sigma: float,
                         threshold: float) -> tuple[float, Any]:
    """Dense Gram formula and autograd: what a PyTorch user would write (O(N^2) memory)."""
    X = X.detach().requires_grad_(True)
    S = torch.sigmoid(temperature * (X - threshold))
    sq = (S * S).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2 * S @ S.T).clamp_min(0)
    C = torch.exp(-d2 / (2 * sigma ** 2)).sum(dim=1)
    H = math.log(X.shape[0]) - torch.log(C).mean()
    H.backward()
    return float(H), X.grad


# ----------------------------------------------------------------------------- GPU run

def self_check(kde: Any, cuda: Any) -> list[str]:
    """Real-device correctness against the NumPy backend on both routes; returns the failures."""
    failures = []
    rng = np.random.default_rng(1234)
    for N, D in ((700, 37), (300, 160)):
        X64 = np.stack([clustered(rng, N, D), clustered(rng, N, D)])  # G = 2, ragged tiles
        for dtype in (np.float64, np.float32):
            X = X64.astype(dtype)
            Hr, Gr = kde.soft_entropy_and_grad(X, backend="numpy", **PARAMS)
            d_X = cuda.to_device(X)
            H1, d_G1 = kde.soft_entropy_and_grad(d_X, backend="cuda", **PARAMS)
            H2, d_G2 = kde.soft_entropy_and_grad(d_X, backend="cuda", **PARAMS)
            G1, G2 = d_G1.copy_to_host(), d_G2.copy_to_host()
            g_err = np.linalg.norm(G1.astype(np.float64) - Gr) / np.linalg.norm(Gr)
            h_err = float(np.max(np.abs(H1 - Hr)))
            f64 = dtype == np.float64
            name = f"{np.dtype(dtype).name} {N}x{D}"
            if h_err > (1e-10 * np.max(np.abs(Hr)) if f64 else 1e-5 * math.log(N)):
                failures.append(f"{name}: H error {h_err:.1e}")
            if g_err > (1e-10 if f64 else 1e-4):
                failures.append(f"{name}: gradient norm-relative error {g_err:.1e}")
            if not (np.array_equal(H1, H2) and np.array_equal(G1, G2)):
                failures.append(f"{name}: two identical runs differ")
    return failures


def run_gpu(args: argparse.Namespace) -> int:
    """Timing table on a real GPU: every method timed once per round, rounds interleaved."""
    from importlib import metadata

    import kdentropy as kde
    from kdentropy.backends import cuda as kc

    if kc.SIMULATOR or kc.unavailable_reason() is not None:
        print("gpu_floor.py needs a real CUDA GPU (and NUMBA_ENABLE_CUDASIM unset): "
              f"{kc.unavailable_reason() or 'the simulator is enabled'}", file=sys.stderr)
        return 2
    cuda = kc.cuda
    try:
        import cupy as cp
    except ImportError:
        cp = None
    try:
        import torch
        torch = torch if torch.cuda.is_available() else None
    except ImportError:
        torch = None

    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    print(f"device: {name}, compute capability {dev.compute_capability}, "
          f"{dev.MULTIPROCESSOR_COUNT} SMs")
    print(f"compiler: {kc.COMPILER} {metadata.version(kc.COMPILER)}, numpy {np.__version__}, "
          f"cupy {cp.__version__ if cp else 'not installed'}, "
          f"torch {torch.__version__ if torch else 'not available'}, "
          f"python {platform.python_version()}, CUPY_TF32={os.environ.get('CUPY_TF32', '0')}")
    if not args.skip_check:
        t0 = time.perf_counter()
        failures = self_check(kde, cuda)
        if failures:
            print("CHECK FAILED:\n  " + "\n  ".join(failures))
            return 1
        print("check: both routes match the NumPy backend, runs are bit-identical "
              f"({time.perf_counter() - t0:.0f} s including compilation)")
    sync = cp.cuda.Device().synchronize if cp is not None else cuda.synchronize
    real_plan = kc.plan

    def forced(route: str) -> Callable[..., Any]:
        def plan(*a: Any, **kw: Any) -> Any:
            return real_plan(*a, **{**kw, "route": route})
        return plan

    def kdentropy_call(d_X: Any, route: str | None) -> Callable[[], Any]:
        def call() -> Any:
            kc.plan = real_plan if route is None else forced(route)
            try:
                return kde.soft_entropy_and_grad(d_X, backend="cuda", **PARAMS)
            finally:
                kc.plan = real_plan
        return call

    def to_host(a: Any) -> np.ndarray:
        if hasattr(a, "detach"):
            return a.detach().cpu().numpy()
        if hasattr(a, "get"):
            return a.get()
        return a.copy_to_host()

    def release() -> None:
        if cp is not None:
            cp.get_default_memory_pool().free_all_blocks()
        if torch is not None:
            torch.cuda.empty_cache()

    rng = np.random.default_rng(0)
    rows = []
    for N, D in args.sizes:
        X32 = clustered(rng, N, D).astype(np.float32)  # same values in both dtypes
        ref64: np.ndarray | None = None
        for dname in sorted(args.dtypes, reverse=True):  # float64 first: the error reference
            Xh = X32.astype(dname)
            d_X = cp.asarray(Xh) if cp is not None else cuda.to_device(Xh)
            how = kc.plan(np.dtype(dname), (1, N, D), max_centred_sqn(Xh), PARAMS["sigma"])
            other = "fused" if how.route == "panel" else "panel"
            methods: dict[str, Callable[[], Any]] = {
                "kdentropy-cuda": kdentropy_call(d_X, None)}
            if args.both_routes:
                methods[f"kdentropy {other}"] = kdentropy_call(d_X, other)
            if cp is not None:
                block = args.floor_block_mib * 2**20
                rows_per = max(1, min(N, block // (N * d_X.itemsize)))
                Kb = cp.empty((rows_per, N), dtype=d_X.dtype)
                out = cp.empty((rows_per, D), dtype=d_X.dtype)

                def gemms(S: Any = d_X, Kb: Any = Kb, out: Any = out, r: int = rows_per) -> None:
                    for r0 in range(0, N, r):
                        n = min(N, r0 + r) - r0
                        cp.matmul(S[r0:r0 + n], S.T, out=Kb[:n])
                        cp.matmul(Kb[:n], S, out=out[:n])

                methods["floor"] = gemms
                methods["cupy-blocked"] = lambda d_X=d_X: blocked_reference(
                    cp, d_X, panel_bytes=args.floor_block_mib * 2**20, **PARAMS)
            if torch is not None:
                tX = torch.as_tensor(Xh, device="cuda")
                methods["torch-autograd"] = lambda tX=tX: torch_value_and_grad(torch, tX,
                                                                               **PARAMS)
            grads: dict[str, np.ndarray] = {}
            first: dict[str, Any] = {}
            for m, fn in list(methods.items()):  # warm-up (and compilation), once each
                try:
                    t0 = time.perf_counter()
                    out_m = fn()
                    sync()
                    if m != "floor":
                        grads[m] = to_host(out_m[1])
                        first[m] = (np.asarray(out_m[0]).copy(), grads[m])
                    print(f"  {N}x{D} {dname} {m}: first call {time.perf_counter() - t0:.2f} s",
                          flush=True)
                    del out_m
                except Exception as exc:  # out of memory and the like: report, keep going
                    print(f"  {N}x{D} {dname} {m}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:100]}", flush=True)
                    del methods[m]
                    release()
            times: dict[str, list[float]] = {m: [] for m in methods}
            identical = True
            for _ in range(args.repeat):
                for m, fn in methods.items():
                    sync()
                    t0 = time.perf_counter()
                    out_m = fn()
                    sync()
                    times[m].append(time.perf_counter() - t0)
                    if m.startswith("kdentropy"):
                        H, g = np.asarray(out_m[0]), to_host(out_m[1])
                        identical &= bool(np.array_equal(H, first[m][0])
                                          and np.array_equal(g, first[m][1]))
                    del out_m
            med = {m: float(np.median(t)) for m, t in times.items()}
            if dname == "float64":
                ref64 = grads.get("kdentropy-cuda")
            floor = med.get("floor")
            cells = []
            for m in ("kdentropy-cuda", f"kdentropy {other}", "cupy-blocked", "torch-autograd"):
                if m not in med:
                    cells.append("n/a" if m in methods or not m.endswith(other)
                                 or args.both_routes else "-")
                    continue
                text = f"{1e3 * med[m]:.2f}" + (f" ({med[m] / floor:.2f}x)" if floor else "")
                if dname == "float32" and ref64 is not None and m in grads:
                    err = np.linalg.norm(grads[m] - ref64) / np.linalg.norm(ref64)
                    text += f" err {err:.0e}"
                cells.append(text)
            route = (f"{how.route} {np.dtype(how.work_dtype).name}"
                     f"{', K kept' if how.kcache else ''}")
            floor_text = f"{1e3 * floor:.2f}" if floor else "n/a"
            rows.append(f"| {N}x{D} | {dname} | {route} | {floor_text} | " + " | ".join(cells)
                        + f" | {'yes' if identical else 'NO'} |")
            print(rows[-1], flush=True)
            methods.clear()
            d_X = tX = Kb = out = None
            release()
    print()
    print(f"Value + gradient on {name}, ms, median of {args.repeat} interleaved rounds "
          "(ratio to the cuBLAS floor; float32 gradient's norm-relative error against "
          "kdentropy's float64 gradient):\n")
    print("| N x D | dtype | route (plan) | cuBLAS floor | kdentropy-cuda | other route |"
          " cupy-blocked | torch-autograd | repeats bit-identical |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))
    return 0


# ----------------------------------------------------------------------------- PTX / ptxas

# Per architecture: registers per SM, max threads per SM, max blocks per SM,
# usable shared memory per SM (bytes) and the per-block reservation.
_ARCH = {(8, 0): (65536, 2048, 32, 164 * 1024, 1024),
         (9, 0): (65536, 2048, 32, 228 * 1024, 1024)}


def occupancy(cc: tuple[int, int], regs: int, smem: int, threads: int) -> float:
    """Theoretical occupancy (resident warps / maximum warps) of one kernel."""
    reg_file, max_threads, max_blocks, smem_sm, reserved = _ARCH[cc]
    warps = -(-threads // 32)
    regs_per_warp = -(-max(regs, 1) * 32 // 256) * 256  # allocated in 256-register units
    by_regs = (reg_file // regs_per_warp) // warps
    by_smem = smem_sm // (smem + reserved)
    by_threads = max_threads // (warps * 32)
    blocks = min(by_regs, by_smem, by_threads, max_blocks)
    return blocks * warps / (max_threads // 32)


def _kernel_table() -> list[tuple[str, Any, list[tuple], int]]:
    """(name, dispatcher, signatures, threads per block) for every kernel of the backend."""
    from numba import types as nt

    from kdentropy.backends.cuda import _elementwise, _fused, _panels

    f64 = nt.float64
    table = []
    for ft in (nt.float32, nt.float64):
        dt = np.dtype(str(ft))
        x3, x2, x1 = ft[:, :, ::1], ft[:, ::1], ft[::1]
        for gram in (True, False):
            k = _fused.kernels(dt, gram)
            form = "gram" if gram else "direct"
            table.append((f"fused.counts[{ft},{form}]", k["counts"],
                          [(x3, f64[:, ::1], f64[:, :, ::1], ft, nt.int64, nt.int64)],
                          _fused.TILINGS[dt, "counts"].threads ** 2))
            table.append((f"fused.weighted[{ft},{form}]", k["weighted"],
                          [(x3, f64[:, ::1], x2, f64[:, :, :, ::1], ft, nt.int64, nt.int64,
                            nt.int64)],
                          _fused.TILINGS[dt, "weighted"].threads ** 2))
        p = _panels.epilogues(dt)
        T = _panels.PANEL_THREADS
        table.append((f"panel.counts[{ft}]", p["counts"],
                      [(x2, f64[::1], nt.int64, ft, nt.boolean, f64[::1])], T))
        table.append((f"panel.weights[{ft}]", p["weights"],
                      [(x2, f64[::1], x1, nt.int64, ft, nt.boolean, f64[::1])], T))
        table.append((f"panel.rows[{ft}]", p["rows"],
                      [(f64[::1], x2, x2, nt.int64, f64[:, ::1])], T))
        e = _elementwise.kernels(dt)
        T = 256
        table.append((f"sigmoid_3d[{ft}]", e["sigmoid_3d"],
                      [(src[:, :, :], x3, f64, f64, nt.int32[::1])
                       for src in (ft, nt.boolean, nt.int64, nt.float16)], T))
        table.append((f"sigmoid_2d[{ft}]", e["sigmoid_2d"],
                      [(ft[:, :], x3, nt.int64, f64, f64, nt.int32[::1])], T))
        table.append((f"center[{ft}]", e["center"],
                      [(nt.float32[:, :, ::1], f64[:, ::1], x3),
                       (nt.float64[:, :, ::1], f64[:, ::1], x3)], T))
        table.append((f"chain_rule[{ft}]", e["chain_rule"],
                      [(f64[::1], x1, x1, f64, f64)], T))
        table.append((f"column_partials[{ft}]", _elementwise._column_partials,
                      [(x3, f64[:, :, ::1], nt.int64)], T))
        table.append((f"row_norms[{ft}]", _elementwise._row_norms,
                      [(x3, f64[:, ::1], f64[:, ::1])], T))
    table.append(("column_mean", _elementwise._column_mean,
                  [(f64[:, :, ::1], f64[:, ::1], f64)], 256))
    table.append(("sum_partials", _elementwise._sum_partials, [(f64[:, ::1], f64[::1])], 256))
    return table


def _find_ptxas() -> str | None:
    """The ptxas of the pip-installed toolkit (it matches NVVM's PTX version), else PATH's."""
    for base in map(Path, sys.path):
        if base.is_dir():
            for candidate in sorted((base / "nvidia").glob("*/bin/ptxas")):
                return str(candidate)
    return shutil.which("ptxas")


_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_SMEM = re.compile(r"Used \d+ registers.*?(\d+) bytes smem")
_PTXAS_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def ptxas_report(ptxas: str, ptx: str, cc: tuple[int, int]) -> tuple[int, int, int]:
    """``(registers, spill bytes, static shared memory bytes)`` of the kernel in ``ptx``."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        proc = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{cc[0]}{cc[1]}", str(src),
                               "-o", str(Path(tmp) / "k.cubin")],
                              capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas failed: {log.strip()[:400]}")
    regs = _PTXAS_REGS.search(log)
    smem = _PTXAS_SMEM.search(log)
    spill = _PTXAS_SPILL.search(log)
    regs = int(regs.group(1)) if regs else -1
    smem = int(smem.group(1)) if smem else 0
    spills = int(spill.group(1)) + int(spill.group(2)) if spill else 0
    return regs, spills, smem


def ptx_only(ccs: list[tuple[int, int]]) -> int:
    """Compile every kernel to PTX for each ``cc`` and report ptxas's resource use (no GPU)."""
    import numba.cuda.dispatcher as dispatcher
    from numba import cuda

    from kdentropy.backends import cuda as kc

    if kc.SIMULATOR:
        print("unset NUMBA_ENABLE_CUDASIM for --ptx-only", file=sys.stderr)
        return 2
    ptxas = _find_ptxas()
    if ptxas is None:
        print("ptxas not found: pip install nvidia-cuda-nvcc (or put the CUDA toolkit on PATH)",
              file=sys.stderr)
        return 2
    status = 0
    print("| kernel | threads | " + " | ".join(
        f"sm_{a}{b} regs | spills | smem B | occupancy" for a, b in ccs) + " |")
    print("|---|---:|" + "---:|---:|---:|---:|" * len(ccs))
    for name, kernel, sigs, threads in _kernel_table():
        worst: list[tuple[int, int, int, float]] = []
        for cc in ccs:
            class _Device:  # device functions ask the current device for its capability
                compute_capability = cc
            dispatcher.get_current_device = _Device
            figures = []
            for sig in sigs:
                try:
                    ptx, _ = cuda.compile_ptx(
                        kernel.py_func, sig, cc=cc,
                        launch_bounds=kernel.targetoptions.get("launch_bounds"))
                    figures.append(ptxas_report(ptxas, ptx, cc))
                except Exception as exc:  # report every failure, not just the first
                    if type(exc).__name__ == "DynamicLibNotFoundError":
                        print(f"the CUDA compiler libraries are missing ({exc}); install "
                              "them with pip install 'numba-cuda[cu13]'", file=sys.stderr)
                        return 2
                    print(f"FAIL {name} {sig} sm_{cc[0]}{cc[1]}: {type(exc).__name__}: {exc}")
                    status = 1
            if figures:
                regs, spills, smem = (max(f[i] for f in figures) for i in range(3))
                worst.append((regs, spills, smem, occupancy(cc, regs, smem, threads)))
        if len(worst) == len(ccs):
            print(f"| {name} | {threads} | " + " | ".join(
                f"{r} | {s} | {m} | {100 * o:.0f} %" for r, s, m, o in worst) + " |")
    return status


# ----------------------------------------------------------------------------- offline model

def max_centred_sqn(X: np.ndarray) -> float:
    """Largest squared norm of a centred soft row of ``X`` (what ``plan`` is given)."""
    S = 1 / (1 + np.exp(-PARAMS["temperature"] * (X.astype(np.float64) - PARAMS["threshold"])))
    Sc = S - S.mean(axis=0)
    return float((Sc * Sc).sum(axis=1).max())


def _benchmark_max_sqn(N: int, D: int, dtype: str) -> float:
    """:func:`max_centred_sqn` of a benchmark-like input (for the offline model's ``plan``)."""
    return max_centred_sqn(clustered(np.random.default_rng(0), N, D).astype(dtype))


def _route(N: int, D: int, dtype: str) -> str:
    """Route and work dtype from the backend's ``plan`` (CuPy assumed present on the GPU)."""
    from kdentropy.backends import cuda as kc

    try:
        how = kc.plan(np.dtype(dtype), (1, N, D), _benchmark_max_sqn(N, D, dtype),
                      PARAMS["sigma"], gemm_ok=True, available_bytes=140 * 2**30)
    except TypeError as exc:  # plan's signature changed: say so rather than guess
        return f"plan() not callable here ({exc})"
    return (f"{how.route} {np.dtype(how.work_dtype).name} {'gram' if how.gram else 'direct'}"
            f"{', K kept' if how.kcache else ''}")


def _compiler_table() -> str:
    """Registers and spills of every kernel compiled by both compilers, for sm_90.

    Each compiler compiles the backend's own kernel list
    (:func:`kdentropy.backends.cuda._ptx.compile_all_ptx`; the one this process
    does not use runs in a subprocess); ``ptxas`` assembles the PTX. A kernel
    that fails to compile is listed with its error, never left out.
    """
    import gpu_model as gm
    from kdentropy.backends.cuda import _ptx

    results: dict[str, dict[str, str]] = {}
    for compiler in _ptx.COMPILERS:
        try:
            ptx, failures = _ptx.compile_all_ptx(compiler, (9, 0)), {}
        except _ptx.PtxCompileError as exc:
            ptx, failures = exc.ptx, exc.failures
        except Exception as exc:  # noqa: BLE001 - e.g. the compiler is not installed
            results[compiler] = {"*": f"unavailable: {type(exc).__name__}: {exc}".splitlines()[0]}
            continue
        cells = {name: "fails: " + err.splitlines()[0][:60] for name, err in failures.items()}
        for name, text in ptx.items():
            c = gm.assemble(text)
            cells[name] = f"{c.registers} / {c.spill_bytes} B"
        results[compiler] = cells
    names = sorted({n for cells in results.values() for n in cells if n != "*"})
    compilers = list(results)
    lines = ["Every kernel, compiled for sm_90 (registers / spill bytes):",
             "| kernel | " + " | ".join(compilers) + " |",
             "|---|" + "---:|" * len(compilers)]
    for name in names:
        row = [results[c].get(name, results[c].get("*", "missing")) for c in compilers]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def model(repo: Path) -> int:
    """The offline SASS model: calibration, per-kernel loop figures, per-case predictions."""
    # The model compiles through numba-cuda (the compiler the H200 profile was
    # taken with); numba-cuda-mlir's output is listed separately below.
    os.environ.setdefault("KDENTROPY_CUDA_COMPILER", "numba-cuda")
    from kdentropy.backends import cuda as kc

    if kc.SIMULATOR:
        print("unset NUMBA_ENABLE_CUDASIM for --model", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gpu_model as gm

    if gm.find_tool("ptxas") is None or gm.find_tool("nvdisasm") is None:
        print("ptxas/nvdisasm not found: pip install nvidia-cuda-nvcc nvidia-cuda-nvdisasm",
              file=sys.stderr)
        return 2
    status = 0
    print("Calibration: v1 kernels (git history) on 16384x1024 float32 against the H200 profile")
    print("| kernel | predicted warp-insns | implied by profile | error | predicted ms |"
          " measured ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, pred, implied, err, t, meas in gm.calibrate(repo):
        print(f"| {name} | {pred:.3g} | {implied:.3g} | {100 * err:+.1f} % | {1e3 * t:.1f} |"
              f" {1e3 * meas:.1f} |")
        if abs(err) > 0.15:
            print(f"CALIBRATION ERROR above 15 % for {name}")
            status = 1
    print(f"issue efficiency = min({gm.ISSUE_CAP}, {gm.ISSUE_SLOPE:.4f} x resident warps per "
          "scheduler) (fitted to the same profile)\n")

    compiled: dict[str, dict[str, tuple]] = {}
    direct: dict[str, dict[str, tuple]] = {}
    print("Fused kernels in the tree (sm_90): loops that hold FMAs")
    print("| kernel | regs | spills B | smem B | loop | insns | FMAs | insns/FMA |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for dtype in ("float32", "float64"):
        for gram, store in ((True, compiled), (False, direct)):
            store[dtype] = {}
            for spec, _kernel in gm.fused_specs(dtype, gram):
                c = gm.compile_kernel(*spec.build())
                spec = gm.with_remainders(spec, c)
                store[dtype][spec.name] = (spec, c)
                for role, n, f, ratio in gm.inner_loop_figures(c, spec):
                    print(f"| {spec.name} | {c.registers} | {c.spill_bytes} | {c.smem_bytes} |"
                          f" {role} | {n} | {f} | {ratio:.2f} |")
    print()
    print(_compiler_table())
    print()
    print("Per benchmark case (kernel time of the pair passes; host round trips excluded)")
    print("| N x D | dtype | route (plan) | fused warp-insns | fused issue ms H100/H200 |"
          " memory ms H100/H200 | fused / floor | panel / floor | chosen / floor (H200) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for N, D in DEFAULT_SIZES:
        for dtype in ("float32", "float64"):
            case = gm.Case(N, D, dtype)
            route = _route(N, D, dtype)
            per_gpu = {g.name: gm.fused_seconds(case, compiled[dtype], g) for g in gm.GPUS}
            insns = per_gpu["H200"][0]
            issue = "/".join(f"{1e3 * per_gpu[g.name][2]['issue']:.2f}" for g in gm.GPUS)
            mem = "/".join(f"{1e3 * per_gpu[g.name][2]['memory']:.2f}" for g in gm.GPUS)
            floor = gm.floor_seconds(case, gm.H200)
            fused = per_gpu["H200"][1] / floor
            panel = gm.panel_seconds(case, gm.H200) / floor
            chosen = panel if route.startswith("panel") else fused
            print(f"| {N}x{D} | {dtype} | {route} | {insns:.3g} | {issue} | {mem} |"
                  f" {fused:.2f} | {panel:.2f} | {chosen:.2f} |")
    for kcache in (True, False):
        rule = gm.fit_route_rule(compiled, kcache)
        print(f"\nRoute rule fit, fused route {'with' if kcache else 'without'} the K cache "
              "(H200, seconds per pair; fused ~ a D + b, panel ~ c D + e):")
        for dtype, (a, b, c, e) in rule.items():
            cross = (e - b) / (a - c) if a != c else float("inf")
            print(f"  {dtype}: a={a:.4g} b={b:.4g} c={c:.4g} e={e:.4g}  fused wins for D < "
                  f"{cross:.1f}")
    return status


def parse_size(text: str) -> tuple[int, int]:
    try:
        N, D = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 8192x256; got {text!r}") from None
    if N < 2 or D < 1:
        raise argparse.ArgumentTypeError(f"need N >= 2 and D >= 1; got {text!r}")
    return N, D


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=list(DEFAULT_SIZES),
                        metavar="NxD", help="problem sizes (default: %(default)s)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"],
                        choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case (median)")
    parser.add_argument("--floor-block-mib", type=int, default=4096,
                        help="memory for one row block of the N x N products")
    parser.add_argument("--both-routes", action="store_true",
                        help="also time the route the plan did not choose")
    parser.add_argument("--skip-check", action="store_true",
                        help="skip the correctness check against the NumPy backend")
    parser.add_argument("--ptx-only", action="store_true",
                        help="no GPU needed: ptxas resource use of every kernel")
    parser.add_argument("--model", action="store_true",
                        help="no GPU needed: SASS instruction-count model, calibration, "
                             "predicted ratios to the cuBLAS floor")
    parser.add_argument("--cc", nargs="+", default=["8.0", "9.0"],
                        help="compute capabilities for --ptx-only (default: 8.0 9.0)")
    args = parser.parse_args(argv)
    if args.model:
        return model(Path(__file__).resolve().parent.parent)
    if args.ptx_only:
        return ptx_only([tuple(int(v) for v in cc.split(".")) for cc in args.cc])
    return run_gpu(args)


if __name__ == "__main__":
    sys.exit(main())
