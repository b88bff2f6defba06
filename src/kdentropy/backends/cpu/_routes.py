"""Which route one population takes: fused register-tiled passes or BLAS Gram panels.

Both routes compute the same sums to the same accuracy bar; which is faster
depends on the machine: how close its BLAS runs to the FMA peak, the SIMD
width the fused passes compile to, the number of threads. The choice, in
order:

1. ``KDENTROPY_CPU_ROUTE=fused`` or ``=panels`` in the environment forces one
   route for every parallel-sized batch (``auto`` or unset: go on);
2. this machine's calibration (:mod:`._calibration`), if one was measured
   and still matches the library version and the CPU/BLAS identity: the
   faster route at the nearest measured size of the same dtype and thread
   count;
3. :func:`model_route`, fitted to measurements on two 2-core AVX-512
   machines (see there).

Serial-sized batches (``N^2 D`` up to the backend's serial limit) always
take the fused passes: there BLAS's thread start-up alone costs more than
the whole call.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np

from . import _calibration

__all__ = ["ENV_ROUTE", "ROUTES", "choose", "model_route"]

#: The routes, as ``soft_counts_and_grad(..., route=...)`` names them.
ROUTES = ("fused", "panels")
#: Environment variable that forces a route.
ENV_ROUTE = "KDENTROPY_CPU_ROUTE"


def model_route(N: int, D: int, dtype: np.dtype, threads: int, vendor: str | None = None) -> str:
    """The route the built-in model picks for a parallel-sized population.

    Parameters
    ----------
    N, D : int
        Patterns and cells.
    dtype : dtype
        The Gram (working) dtype, float32 or float64.
    threads : int
        Numba threads (BLAS is assumed to run as many); unused by the
        current fit, which only has 2-thread measurements.
    vendor : str, optional
        The CPU vendor string (``GenuineIntel``, ``AuthenticAMD``, ...);
        this machine's by default.

    Returns
    -------
    str
        ``"panels"`` where BLAS panels won the measurements, else ``"fused"``.
    """
    # Value + gradient, interleaved medians, 2 threads, OpenBLAS SkylakeX kernel:
    # * Intel AVX-512 (shared/measurements): 2048 x 1024 float64 panels 180 ms
    #   against fused 262 ms; float32 tied (116 / 116 ms); 4096 x 256 tied in
    #   float64 (216 / 221 ms), fused ahead in float32 (109 / 118 ms).
    # * AMD Zen 4 AVX-512 (issue 22 report): fused ahead everywhere, 2048 x 1024
    #   float64 712 / 758 ms, float32 286 / 558 ms; 4096 x 256 float64
    #   986 / 1273 ms.
    # So: panels only for float64 Gram products at D >= 512 on Intel CPUs;
    # a calibration (:mod:`._calibration`) replaces this guess per machine.
    vendor = _cpu_vendor() if vendor is None else vendor
    if (np.dtype(dtype) == np.float64 and D >= _PANELS_MIN_D and N < _FUSED_MIN_N
            and vendor == "GenuineIntel"):
        return "panels"
    return "fused"


# Below this D the fused passes won on every machine measured.
_PANELS_MIN_D = 512
# From this N on the fused passes won at every D measured (16384 x 64: 459 ms
# against the panels' N x N traffic; not measured at large D).
_FUSED_MIN_N = 8192


def _cpu_vendor() -> str:
    return _calibration.identity()["vendor"]


def choose(N: int, D: int, dtype: np.dtype, parallel: bool) -> str:
    """The route for one population of ``N`` patterns of ``D`` cells in the Gram dtype ``dtype``.

    Parameters
    ----------
    N, D : int
    dtype : dtype
        float32 or float64 (the precision of the Gram products).
    parallel : bool
        Whether the batch runs the parallel kernels (serial ones: always fused).

    Returns
    -------
    str
        One of :data:`ROUTES`.

    Raises
    ------
    ValueError
        If :data:`ENV_ROUTE` holds something else than a route or ``auto``.
    """
    if not parallel:
        return "fused"
    forced = os.environ.get(ENV_ROUTE, "").strip().lower()
    if forced in ROUTES:
        return forced
    if forced not in ("", "auto"):
        raise ValueError(f"{ENV_ROUTE} must be one of {ROUTES + ('auto',)}; got {forced!r}")
    threads = numba.get_num_threads()
    measured = _nearest_measurement(N, D, np.dtype(dtype).name, threads)
    if measured is not None:
        return measured
    return model_route(N, D, dtype, threads)


def _nearest_measurement(N: int, D: int, dtype: str, threads: int) -> str | None:
    """The faster route at the nearest calibrated size (log scale), or ``None`` without one."""
    best = None
    for point in _calibration.table():
        if point["dtype"] != dtype or point["threads"] != threads:
            continue
        distance = math.hypot(math.log(N / point["N"]), math.log(max(D, 1) / point["D"]))
        if best is None or distance < best[0]:
            best = (distance, "panels" if point["panels_s"] < point["fused_s"] else "fused")
    return None if best is None else best[1]
