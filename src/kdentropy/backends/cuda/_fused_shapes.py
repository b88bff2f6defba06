"""Block shapes and memory caps of the fused pair kernels of :mod:`._fused`.

Compile-time constants, kept apart from the kernels so that the launch code,
the offline model (``asv_benchmarks/gpu_model.py``) and the tests read one
definition.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._device import SIMULATOR

__all__ = ["Tiling", "TILINGS", "SPLIT_BUFFER_BYTES"]


class Tiling(NamedTuple):
    """Block shape of the pair kernels (compile-time constants)."""

    threads: int  # a block is threads x threads
    regs: int  # each thread owns regs x regs pairs
    kt: int  # cells per shared-memory slice when forming distances
    rc: int  # output cells per thread and row in the apply step
    min_blocks: int  # resident blocks per SM to compile for (caps registers)

    @property
    def tile(self) -> int:
        return self.threads * self.regs

    @property
    def dchunk(self) -> int:
        return self.threads * self.rc


# Real GPUs: 256-thread blocks; sizes and launch bounds (3 blocks per SM, so
# at most 80 registers and 37.5 % theoretical occupancy) chosen with
# ``gpu_floor.py --ptx-only`` (ptxas, sm_80/sm_90): no spills on sm_90 except
# the direct-difference pass 2 (only for ill-conditioned batches, 56-96
# bytes); sm_80 also spills 88 bytes in the float32 Gram counts. Without the
# bound ptxas takes 90-125 registers (25 % occupancy). float32 pass 2 covers
# D = 64 in one 64-cell chunk. The simulator runs a Python thread per CUDA
# thread: 2 x 2 blocks of 2 x 2 register tiles, so tiny problems span many
# tiles.
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
if SIMULATOR:
    TILINGS = {(dt, kind): Tiling(2, 2, 2, 2, 1)
               for dt in (_F32, _F64) for kind in ("counts", "weighted")}
else:
    TILINGS = {(_F32, "counts"): Tiling(16, 4, 16, 4, 3),
               (_F32, "weighted"): Tiling(16, 2, 16, 4, 3),
               (_F64, "counts"): Tiling(16, 2, 8, 2, 3),
               (_F64, "weighted"): Tiling(16, 2, 8, 2, 3)}

#: Upper bound on the float64 partials of the column splits (pass 2: P x G x N x D;
#: tile pass 1: (P + n/2 + 1) x G x N). 1 GiB keeps pass 1 symmetric, and so the
#: K cache possible, for float64 up to N = 65536 (2048 tiles of 32 rows).
SPLIT_BUFFER_BYTES = 2**30
