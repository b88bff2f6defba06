"""Which route of the cuda backend is faster for a call: the calibrated model's answer.

:func:`fused_beats_panels` is what ``plan`` asks; its constants come from the
offline SASS instruction model (``python asv_benchmarks/gpu_floor.py --model``),
calibrated against a measured H200 profile, not from a hand-set threshold.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ROUTE_COST_FIT", "fused_beats_panels"]


#: Per-pair cost on an H200 of the fused route ``a D + b`` and of the panel
#: route ``c D + e`` (seconds), fitted by ``asv_benchmarks/gpu_floor.py --model``
#: (least squares: fused over the SASS model of these kernels at N = 16384,
#: D = 8..128; panel over the measured cuBLAS floors plus the epilogues' N^2
#: traffic; the Gram route's fused kernels are those of :mod:`._tiles`).
#: Refit and replace when the kernels change.
ROUTE_COST_FIT = {np.dtype(np.float32): (3.130e-13, -8.611e-14, 7.411e-14, 8.698e-12),
                  np.dtype(np.float64): (8.233e-13, 1.560e-12, 6.295e-14, 1.044e-11)}


def fused_beats_panels(N: int, D: int, dtype: np.dtype) -> bool:
    """Whether the model predicts the fused kernels (:mod:`._fused`) to beat the Gram panels.

    Both routes cost about ``N^2`` times a per-pair cost linear in ``D``
    (:data:`ROUTE_COST_FIT`), so ``N`` cancels: the fused route wins when
    ``(a - c) D < e - b``. With the tile kernels that holds for ``D < 37``
    (float32) and ``D < 12`` (float64).

    Parameters
    ----------
    N : int
        Patterns per population (cancels out; kept for the caller's signature).
    D : int
        Cells per pattern.
    dtype : dtype
        Work dtype of the pair kernels (float32 or float64).

    Returns
    -------
    bool
    """
    a, b, c, e = ROUTE_COST_FIT[np.dtype(dtype)]
    return (a - c) * D < e - b
