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
#: (least squares: fused over the SASS model of the :mod:`._tiles` kernels at
#: N = 16384, D = 8..128; panel over the measured cuBLAS floors plus the
#: epilogues' N^2 traffic), per work dtype and whether the fused route keeps
#: pass 1's kernel values (:mod:`._tile_apply`). Refit and replace when the
#: kernels change.
ROUTE_COST_FIT = {
    (np.dtype(np.float32), True): (9.750e-14, 1.405e-12, 7.411e-14, 8.698e-12),
    (np.dtype(np.float64), True): (2.299e-13, 2.615e-12, 6.295e-14, 1.044e-11),
    (np.dtype(np.float32), False): (2.822e-13, 1.399e-14, 7.411e-14, 8.698e-12),
    (np.dtype(np.float64), False): (8.000e-13, 1.073e-12, 6.295e-14, 1.044e-11),
}


def fused_beats_panels(N: int, D: int, dtype: np.dtype, kcache: bool) -> bool:
    """Whether the model predicts the fused kernels (:mod:`._fused`) to beat the Gram panels.

    Both routes cost about ``N^2`` times a per-pair cost linear in ``D``
    (:data:`ROUTE_COST_FIT`), so ``N`` cancels: the fused route wins when
    ``(a - c) D < e - b``. That holds for ``D < 312`` (float32) and ``D < 47``
    (float64) with the K cache, ``D < 42`` and ``D < 13`` without. On an H200
    (``asv_benchmarks/GPU_RESULTS.md``) the float32 fused route indeed won at
    8192 x 256 and lost at 16384 x 1024; the float64 fused kernels ran about
    2.5 times slower than the model predicts, so its float64 crossing is optimistic.

    Parameters
    ----------
    N : int
        Patterns per population (cancels out; kept for the caller's signature).
    D : int
        Cells per pattern.
    dtype : dtype
        Work dtype of the pair kernels (float32 or float64).
    kcache : bool
        Whether the fused route would keep pass 1's kernel values.

    Returns
    -------
    bool
    """
    a, b, c, e = ROUTE_COST_FIT[np.dtype(dtype), bool(kcache)]
    return (a - c) * D < e - b
