"""Soft entropy: value and value+gradient per backend, peak memory, and the dense floor.

Grid: backend x (N, D) x dtype, with (N, D) in :data:`common.SHAPES`. The
``numpy`` backend is skipped where its N x N temporaries would need more than
4 GiB, ``cuda`` wherever no real GPU is available.
"""

from __future__ import annotations

from .common import (
    BACKENDS,
    DTYPES,
    SHAPES,
    GemmFloor,
    SoftEntropyCall,
    clustered,
    median_seconds,
    reads_device_arrays,
    require_backend,
    soft_discretize,
    soft_entropy_flops,
)


class _SoftEntropyBase:
    """Builds the batch and warms the backend up (compiles Numba kernels) in ``setup``."""

    param_names = ["backend", "shape", "dtype"]
    params = (BACKENDS, SHAPES, DTYPES)
    timeout = 600

    def setup(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        N, D = shape
        require_backend(backend, N, D)
        self.call = SoftEntropyCall(backend, clustered(N, D, dtype))
        self.call.warm_up()


class SoftEntropy(_SoftEntropyBase):
    """Wall time of one call: value only (pass 1) and value+gradient (passes 1 and 2)."""

    # Calls take 1 ms to several seconds: time each on its own (compilation
    # happened in setup), at least 3 and at most 7 per process, and keep the
    # whole grid within minutes on a 2-core machine.
    number = 1
    repeat = (3, 7, 8.0)
    rounds = 2
    warmup_time = 0.0

    def time_value(self, backend, shape, dtype):
        self.call.value()

    def time_value_and_grad(self, backend, shape, dtype):
        self.call.value_and_grad()


class SoftEntropyPeakMem(_SoftEntropyBase):
    """Peak resident memory of the process over one call (includes the interpreter and X)."""

    rounds = 1

    def peakmem_value(self, backend, shape, dtype):
        self.call.value()

    def peakmem_value_and_grad(self, backend, shape, dtype):
        self.call.value_and_grad()


class SoftEntropyFloor(_SoftEntropyBase):
    """Value+gradient time over the dense-product floor, measured in the same process.

    The GEMM floor (:class:`common.GemmFloor`) is ``S @ S2.T`` then ``(N x N) @ S``
    through NumPy's BLAS in the same dtype: 4 N^2 D flops, the products of a
    dense implementation that ignores K's symmetry (exps not counted). A
    ratio of 1 means the backend runs at the speed of those two matrix
    products; below 1 is possible because K is symmetric (the symmetric
    floor, 3 N^2 D flops, is in ``comparisons.Floors``). Both are timed
    interleaved, 3 to 7 times each (median). Host
    backends only: the CUDA floor (cuBLAS) is measured by
    ``asv_benchmarks/gpu_floor.py``.
    """

    rounds = 1

    def setup(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        require_backend(backend, *shape)
        if reads_device_arrays(backend):
            raise NotImplementedError("host backends only: gpu_floor.py measures the GPU floor")
        super().setup(backend, shape, dtype)

    def track_floor_ratio(self, backend, shape, dtype):
        floor = GemmFloor(soft_discretize(self.call.X))
        t_backend, t_floor = median_seconds(self.call.value_and_grad, floor)
        return t_backend / t_floor

    track_floor_ratio.unit = "ratio"


class SoftEntropyThroughput(_SoftEntropyBase):
    """Rate of value+gradient in dense-equivalent GFLOP/s: 4 N^2 D flops per call (median)."""

    rounds = 1

    def track_gflops(self, backend, shape, dtype):
        N, D = shape
        (t,) = median_seconds(self.call.value_and_grad)
        return soft_entropy_flops(N, D) / t / 1e9

    track_gflops.unit = "GFLOP/s"
