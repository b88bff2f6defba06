#!/usr/bin/env python
"""Time the CUDA backend against the dense cuBLAS floor on a real GPU.

Standalone script (asv imports this module while discovering benchmarks, so it
does nothing at import time and defines no ``time_*``/``peakmem_*`` names).
Run it from the repository root on a machine with an NVIDIA GPU::

    pip install ".[cuda]" cupy-cuda12x      # or cupy-cuda13x; CuPy only for the floor
    python asv_benchmarks/gpu_floor.py                  # default sizes, markdown table
    python asv_benchmarks/gpu_floor.py --sizes 4096x128 --repeat 3
    python asv_benchmarks/gpu_floor.py --ptx-only --cc 8.0   # no GPU: compile check

It first checks the kernels on the real device against the NumPy reference
backend (value and gradient, both dtypes, several tiles, two populations) and
for run-to-run bit-identity, then times value+gradient and value only at
(N, D) = (8192, 256), (16384, 1024), (65536, 64) in float32 and float64.

The floor is the time cuBLAS (through CuPy) needs for the two dense products
any method must match, ``S @ S.T`` (N x N x D) and ``(N x N) @ S``: 4 N^2 D
flops. It is computed in row blocks so that the N x N matrix never has to fit
in memory; this does not change the flop count. CuPy runs float32 products in
plain FP32 unless ``CUPY_TF32=1`` is set, which the table reports. Without
CuPy the floor columns read "n/a".
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable

import numpy as np

DEFAULT_SIZES = ((8192, 256), (16384, 1024), (65536, 64))
PARAMS = dict(temperature=10.0, sigma=0.5, threshold=0.5)


def clustered(rng: np.random.Generator, N: int, D: int, n_proto: int = 16,
              noise: float = 0.15) -> np.ndarray:
    """Noisy copies of a few 0/1 prototypes, so that the kernel has real neighbours."""
    protos = rng.integers(0, 2, size=(n_proto, D)).astype(np.float64)
    return protos[rng.integers(0, n_proto, size=N)] + noise * rng.standard_normal((N, D))


def median_seconds(fn: Callable[[], object], repeat: int, sync: Callable[[], None]) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs, after one warm-up run."""
    fn()
    sync()
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def self_check(kc, kn, cuda, N: int = 700, D: int = 37) -> list[str]:
    """Real-device correctness against the NumPy backend; returns the failures."""
    failures = []
    rng = np.random.default_rng(1234)
    X64 = np.stack([clustered(rng, N, D), clustered(rng, N, D)])  # G = 2, ragged tiles
    for dtype in (np.float64, np.float32):
        X = X64.astype(dtype)
        Hr, Gr = kn.value_and_grad(X, PARAMS["temperature"], PARAMS["sigma"],
                                   PARAMS["threshold"], True)
        d_X = cuda.to_device(X)
        H1, d_G1 = kc.device_value_and_grad(d_X, want_grad=True, grad_scale=1.0, **PARAMS)
        H2, d_G2 = kc.device_value_and_grad(d_X, want_grad=True, grad_scale=1.0, **PARAMS)
        G1, G2 = d_G1.copy_to_host(), d_G2.copy_to_host()
        if dtype == np.float64:
            h_ok = np.allclose(H1, Hr, rtol=1e-10, atol=0)
            g_err = np.linalg.norm(G1 - Gr) / np.linalg.norm(Gr)
            g_ok = g_err <= 1e-10
        else:
            h_ok = np.all(np.abs(H1 - Hr) <= 1e-5 * math.log(X.shape[1]))
            g_err = np.linalg.norm(G1.astype(np.float64) - Gr) / np.linalg.norm(Gr)
            g_ok = g_err <= 1e-4
        name = np.dtype(dtype).name
        if not h_ok:
            failures.append(f"{name}: H {H1} differs from the reference {Hr}")
        if not g_ok:
            failures.append(f"{name}: gradient norm-relative error {g_err:.2e}")
        if not (np.array_equal(H1, H2) and np.array_equal(G1, G2)):
            failures.append(f"{name}: two identical runs differ")
    return failures


def floor_seconds(cp, S, repeat: int, block_bytes: int) -> float:
    """Median time of the blocked dense products S S^T and (N x N) S with cuBLAS."""
    N, D = S.shape
    rows = max(1, min(N, block_bytes // (N * S.itemsize)))
    K = cp.empty((rows, N), dtype=S.dtype)
    out = cp.empty((rows, D), dtype=S.dtype)
    ST = S.T

    def gemms():
        for r0 in range(0, N, rows):
            n = min(N, r0 + rows) - r0
            cp.matmul(S[r0:r0 + n], ST, out=K[:n])
            cp.matmul(K[:n], S, out=out[:n])

    return median_seconds(gemms, repeat, cp.cuda.Device().synchronize)


def compile_only(cc: tuple[int, int]) -> int:
    """Compile every kernel specialisation to PTX for ``cc``; needs NVVM, not a GPU.

    A check for machines without a GPU (``pip install 'numba-cuda[cu13]'``, or
    ``cu12``, brings the NVVM/NVRTC libraries): it catches code that the CUDA
    simulator accepts but the real compiler rejects, and reports each kernel's
    PTX size and whether it spills to local memory.
    """
    from numba import cuda
    from numba import types as nt
    import numba.cuda.dispatcher as dispatcher

    from kdentropy.backends import cuda as kc

    if kc.SIMULATOR:
        print("unset NUMBA_ENABLE_CUDASIM for --ptx-only", file=sys.stderr)
        return 2

    class _Device:  # device functions ask the current device for its compute capability
        compute_capability = cc

    dispatcher.get_current_device = _Device  # no GPU: answer for the requested target

    status = 0
    for ft in (nt.float32, nt.float64):
        k = kc._kernels(np.dtype(str(ft)))
        x3, x2 = ft[:, :, ::1], ft[:, ::1]
        sigs = {
            "sigmoid_3d": [(ft[:, :, :], x3, ft, ft, nt.int32[::1])],
            "sigmoid_2d": [(ft[:, :], x3, nt.int64, ft, ft, nt.int32[::1])],
            "counts": [(x3, nt.float64[:, :, ::1], ft, nt.int64)],
            "reduce_counts": [(nt.float64[:, :, ::1], nt.float64[:, ::1], x2)],
            "grad": [(x3, x2, nt.float64[:, :, :, ::1], ft, nt.int64)],
            "finalize_grad": [(nt.float64[:, :, :, ::1], x3, x3, nt.float64)],
        }
        if ft is nt.float64:  # other real dtypes are converted in the sigmoid kernels
            for src in (nt.boolean, nt.int8, nt.uint8, nt.int32, nt.int64, nt.float16):
                sigs["sigmoid_3d"].append((src[:, :, :], x3, ft, ft, nt.int32[::1]))
                sigs["sigmoid_2d"].append((src[:, :], x3, nt.int64, ft, ft, nt.int32[::1]))
        for name, siglist in sigs.items():
            for sig in siglist:
                try:
                    ptx, _ = cuda.compile_ptx(k[name].py_func, sig, cc=cc)
                except Exception as exc:  # report every failure, not just the first
                    if type(exc).__name__ == "DynamicLibNotFoundError":
                        print(f"the CUDA compiler libraries are missing ({exc}); install "
                              "them with pip install 'numba-cuda[cu13]' (or [cu12])",
                              file=sys.stderr)
                        return 2
                    print(f"FAIL {ft} {name} {sig}: {type(exc).__name__}: {exc}")
                    status = 1
                    continue
                spill = "local memory" if ".local" in ptx else "no local memory"
                print(f"ok   {ft} {name:14s} {len(ptx) // 1024:4d} KiB PTX, {spill}")
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
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case (median)")
    parser.add_argument("--floor-block-mib", type=int, default=2048,
                        help="memory for one row block of the N x N floor product")
    parser.add_argument("--skip-check", action="store_true",
                        help="skip the correctness check against the NumPy backend")
    parser.add_argument("--ptx-only", action="store_true",
                        help="no GPU needed: only compile the kernels to PTX (needs NVVM)")
    parser.add_argument("--cc", default="9.0", help="compute capability for --ptx-only")
    args = parser.parse_args(argv)
    if args.ptx_only:
        major, minor = (int(v) for v in args.cc.split("."))
        return compile_only((major, minor))

    from numba import cuda

    from kdentropy.backends import cuda as kc
    from kdentropy.backends import numpy as kn

    if kc.SIMULATOR or not cuda.is_available():
        print("gpu_floor.py needs a real CUDA GPU (and NUMBA_ENABLE_CUDASIM unset): "
              f"{kc.unavailable_reason() or 'the simulator is enabled'}", file=sys.stderr)
        return 2
    try:
        import cupy as cp
    except ImportError:
        cp = None

    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    import numba_cuda

    print(f"device: {name}, compute capability {dev.compute_capability}, "
          f"{dev.MULTIPROCESSOR_COUNT} SMs")
    print(f"numba-cuda {numba_cuda.__version__}, numpy {np.__version__}, "
          f"cupy {cp.__version__ if cp else 'not installed'}, python {platform.python_version()}"
          + (f", CUPY_TF32={os.environ.get('CUPY_TF32', '0')}" if cp else ""))

    if not args.skip_check:
        failures = self_check(kc, kn, cuda)
        if failures:
            print("CHECK FAILED:\n  " + "\n  ".join(failures))
            return 1
        print("check: value and gradient match the NumPy backend, runs are bit-identical")
    print()

    sync = cuda.synchronize
    rng = np.random.default_rng(0)
    rows = []
    for N, D in args.sizes:
        X32 = clustered(rng, N, D).astype(np.float32)
        grads = {}
        for dtype_name in args.dtypes:
            dtype = np.dtype(dtype_name)
            d_X = cuda.to_device(X32.astype(dtype))  # same values in both dtypes
            t_vg = median_seconds(lambda: kc.device_value_and_grad(
                d_X, want_grad=True, grad_scale=1.0, **PARAMS), args.repeat, sync)
            t_v = median_seconds(lambda: kc.device_value_and_grad(
                d_X, want_grad=False, grad_scale=1.0, **PARAMS), args.repeat, sync)
            _, d_G = kc.device_value_and_grad(d_X, want_grad=True, grad_scale=1.0, **PARAMS)
            grads[dtype_name] = d_G.copy_to_host().astype(np.float64)
            del d_G
            t_floor = None
            if cp is not None:
                S = cp.asarray(X32.astype(dtype))
                t_floor = floor_seconds(cp, S, args.repeat, args.floor_block_mib * 2**20)
                del S
                cp.get_default_memory_pool().free_all_blocks()
            rows.append((N, D, dtype_name, t_vg, t_v, t_floor))
        if "float32" in grads and "float64" in grads:
            err = np.linalg.norm(grads["float32"] - grads["float64"]) / np.linalg.norm(
                grads["float64"])
            print(f"N={N} D={D}: float32 gradient vs float64, norm-relative error {err:.1e}")

    print()
    print("| N | D | dtype | value+grad (ms) | value only (ms) | cuBLAS floor (ms) "
          "| ratio to floor | dense-equivalent TFLOP/s |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for N, D, dtype_name, t_vg, t_v, t_floor in rows:
        flops = 4.0 * N * N * D  # the two dense products of the floor
        floor = f"{1e3 * t_floor:.1f}" if t_floor is not None else "n/a"
        ratio = f"{t_vg / t_floor:.2f}" if t_floor is not None else "n/a"
        print(f"| {N} | {D} | {dtype_name} | {1e3 * t_vg:.1f} | {1e3 * t_v:.1f} | {floor} "
              f"| {ratio} | {flops / t_vg / 1e12:.2f} |")
    if cp is None:
        print("\nInstall CuPy (cupy-cuda12x or cupy-cuda13x) for the cuBLAS floor columns.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
