"""Where one cuda-backend call spends its time on a real GPU (host profile + kernel times).

Run from the repository root on a machine with a GPU, CuPy and PyTorch (for
its CUPTI-based profiler, which records every kernel of the process)::

    python tools/gpu_profile.py 4096x64:float32 65536x64:float64
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import cupy as cp
import numpy as np
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "asv_benchmarks"))
import gpu_floor as gf  # noqa: E402

import kdentropy as kde  # noqa: E402
from kdentropy.backends import cuda as kc  # noqa: E402


def main(cases: list[str]) -> None:
    sync = cp.cuda.Device().synchronize
    for case in cases:
        size, dtype = case.split(":")
        N, D = gf.parse_size(size)
        X = cp.asarray(gf.clustered(np.random.default_rng(0), N, D).astype(dtype))

        def call(X: object = X) -> object:
            return kde.soft_entropy_and_grad(X, backend="cuda", **gf.PARAMS)

        call()
        sync()
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            call()
            sync()
            times.append(time.perf_counter() - t0)
        how = kc.plan(np.dtype(dtype), (1, N, D), gf.max_centred_sqn(X.get()), gf.PARAMS["sigma"])
        print(f"\n===== {case}: median {1e3 * np.median(times):.2f} ms of 7 calls; {how}",
              flush=True)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(3):
            call()
            sync()
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats("kdentropy", 30)
        print("\n".join(out.getvalue().splitlines()[:45]), flush=True)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            for _ in range(3):
                call()
                sync()
        averages = p.key_averages()
        for key in ("self_device_time_total", "self_cuda_time_total"):
            try:
                print(averages.table(sort_by=key, row_limit=14, max_name_column_width=60))
                break
            except Exception as exc:  # the key's name changed between torch versions
                print(f"(sort key {key}: {exc})")
        del X, call
        cp.get_default_memory_pool().free_all_blocks()


if __name__ == "__main__":
    main(sys.argv[1:])
