"""This machine's route calibration: measured once on request, cached, read by :mod:`._routes`.

``python -m kdentropy.backends.cpu._calibration`` (or :func:`calibrate`)
times one value + gradient call on each route at a few sizes
(:data:`SIZES`, both dtypes, the current Numba thread count) and writes the
medians to :func:`cache_file`. Nothing measures implicitly: without a file
the built-in model of :mod:`._routes` decides, and the test suite never
calibrates (tests force each route).

The file lives under the user cache directory: ``$KDENTROPY_CACHE_DIR``, else
``$XDG_CACHE_HOME/kdentropy``, else ``~/.cache/kdentropy``; its name is
``cpu-routes.json``, or ``$KDENTROPY_CPU_CALIBRATION`` names another file. It
is ignored (and replaced by the next calibration) when the library version,
the CPU, the SIMD width the kernels compile to, NumPy or its BLAS differ from
the ones it was measured with.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ENV_FILE", "SIZES", "cache_file", "calibrate", "identity", "table"]

#: (N, D) of the calibration: the corners of the region where the routes trade places.
SIZES = ((1024, 256), (2048, 256), (4096, 256), (1024, 1024), (2048, 1024), (8192, 64))
#: Environment variable naming the calibration file.
ENV_FILE = "KDENTROPY_CPU_CALIBRATION"


def cache_file() -> Path:
    """Where this machine's calibration is read from and written to."""
    named = os.environ.get(ENV_FILE)
    if named:
        return Path(named).expanduser()
    base = os.environ.get("KDENTROPY_CACHE_DIR")
    if base:
        return Path(base).expanduser() / "cpu-routes.json"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "kdentropy" / "cpu-routes.json"


def _cpuinfo(key: str) -> str | None:
    """The first ``key`` line of /proc/cpuinfo (Linux), or ``None``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.split(":", 1)[0].strip() == key:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _blas() -> str:
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{deps.get('name')} {deps.get('version')}"
    except Exception:  # noqa: BLE001 - NumPy builds without the dict report
        blas = "unknown"
    # OpenBLAS picks its kernel at load time; this forces another one.
    return f"{blas} coretype={os.environ.get('OPENBLAS_CORETYPE', '')}"


@functools.cache
def identity() -> dict[str, Any]:
    """What a calibration is valid for: library version, CPU and vendor, SIMD width, NumPy and BLAS."""
    from ... import __version__
    from ._simd import VECTOR_BYTES
    return {"kdentropy": __version__,
            "cpu": _cpuinfo("model name") or platform.processor() or platform.machine(),
            "vendor": _cpuinfo("vendor_id") or "", "machine": platform.machine(),
            "vector_bytes": VECTOR_BYTES, "numpy": np.__version__, "blas": _blas()}


_TABLE: dict[str, list[dict[str, Any]]] = {}


def table() -> list[dict[str, Any]]:
    """The measured points of a valid calibration (empty without one); read once per file.

    Each point has ``N``, ``D``, ``dtype`` (name), ``threads``, ``fused_s``
    and ``panels_s`` (median seconds of one value + gradient call).
    """
    path = str(cache_file())
    if path not in _TABLE:
        try:
            with open(path, encoding="utf-8") as f:
                saved = json.load(f)
            points = saved["points"] if saved.get("identity") == identity() else []
        except (OSError, ValueError, KeyError, TypeError):
            points = []
        _TABLE[path] = points
    return _TABLE[path]


def _time_route(S: np.ndarray, route: str, repeats: int) -> float:
    from ... import _estimator
    from . import soft_counts_and_grad
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        soft_counts_and_grad(S, 0.5, _estimator.row_coefficients, route=route)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def calibrate(sizes: tuple[tuple[int, int], ...] = SIZES, repeats: int = 5,
              seed: int = 0) -> Path:
    """Time both routes at ``sizes`` (both dtypes, current thread count) and save the medians.

    Takes tens of seconds on two cores. Rounds alternate the routes so that
    a busy machine slows both alike.

    Parameters
    ----------
    sizes : tuple of (N, D)
    repeats : int
        Timed calls per route and size (after one untimed call each).
    seed : int
        Of the clustered test batches (N / 32 binary prototypes plus noise).

    Returns
    -------
    Path
        The file written (:func:`cache_file`).
    """
    import numba
    rng = np.random.default_rng(seed)
    threads = numba.get_num_threads()
    points = [p for p in table() if p["threads"] != threads]
    for N, D in sizes:
        protos = rng.random((max(N // 32, 1), D)) > 0.5
        X = protos[rng.integers(0, len(protos), N)] + 0.1 * rng.standard_normal((N, D))
        S64 = 1.0 / (1.0 + np.exp(-10.0 * (X - 0.5)))
        for dtype in (np.float32, np.float64):
            S = np.ascontiguousarray(S64, dtype=dtype)[None]
            for route in ("fused", "panels"):
                _time_route(S, route, 1)
            fused = []
            panels = []
            for _ in range(repeats):
                fused.append(_time_route(S, "fused", 1))
                panels.append(_time_route(S, "panels", 1))
            points.append({"N": N, "D": D, "dtype": np.dtype(dtype).name, "threads": threads,
                           "fused_s": float(np.median(fused)),
                           "panels_s": float(np.median(panels))})
    path = cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"identity": identity(), "points": points}, indent=1))
    os.replace(tmp, path)
    _TABLE.pop(str(path), None)
    return path


if __name__ == "__main__":
    print(calibrate())
