"""Launch geometry, the simulator switch and array-kind conversions shared by the CUDA modules."""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np
from numba import cuda


def _simulator_enabled() -> bool:
    try:
        from numba.cuda.core import config
    except ImportError:  # older numba-cuda keeps the flag in numba's own config
        from numba.core import config
    return bool(getattr(config, "ENABLE_CUDASIM", False))


#: Numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1`` before Numba was imported).
SIMULATOR = _simulator_enabled()

# The simulator runs one Python thread per CUDA thread: tiny blocks keep it fast
# and make small test problems span several blocks.
ELEMENTWISE_THREADS = 8 if SIMULATOR else 256
ELEMENTWISE_MAX_BLOCKS = 4 if SIMULATOR else 8192
MAX_GRID_Y_Z = 65535


def elementwise_grid(n: int) -> tuple[int, int]:
    """``(blocks, threads)`` for a grid-stride loop over ``n`` items."""
    blocks = max(1, min(ELEMENTWISE_MAX_BLOCKS, -(-n // ELEMENTWISE_THREADS)))
    return blocks, ELEMENTWISE_THREADS


@functools.cache
def multiprocessors() -> int:
    """Streaming multiprocessors of the current device (2 under the simulator)."""
    if SIMULATOR:
        return 2
    try:
        return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    except Exception:  # a device that cannot be queried: assume a mid-size GPU
        return 80


def free_device_bytes() -> int:
    """Free device memory in bytes (a nominal 1 GiB under the simulator)."""
    if SIMULATOR:
        return 2**30
    free, _total = cuda.current_context().get_memory_info()
    return int(free)


def host_view(a: Any) -> np.ndarray:
    """The NumPy array behind a simulator device array (no copy)."""
    return a._ary if hasattr(a, "_ary") else np.asarray(a)


def as_numba_device_array(X: Any) -> tuple[Any, str]:
    """A Numba (or simulated) device-array view of ``X`` and the kind of array it came from.

    Returns
    -------
    array, kind
        ``kind`` is ``"cupy"`` for CuPy input and ``"numba"`` for any other
        device array; the gradient is returned in the same kind.

    Raises
    ------
    TypeError
        If ``X`` is not a device array, or is a foreign GPU array while the
        simulator is on.
    """
    if getattr(X, "__cuda_ndarray__", False):  # Numba device array or simulator array
        return X, "numba"
    if hasattr(X, "__cuda_array_interface__"):
        if SIMULATOR:
            raise TypeError("X is a GPU array, but the CUDA simulator is enabled "
                            "(NUMBA_ENABLE_CUDASIM=1); pass a NumPy array or a "
                            "numba.cuda device array instead")
        kind = "cupy" if type(X).__module__.split(".")[0] == "cupy" else "numba"
        return cuda.as_cuda_array(X), kind
    raise TypeError(f"X must be a CUDA device array; got {type(X).__name__}")


def to_kind(a: Any, kind: str) -> Any:
    """A device array ``a`` as the kind of array the caller passed in."""
    if kind == "numpy":
        return a.copy_to_host()
    if kind == "cupy":
        return sys.modules["cupy"].asarray(a)  # zero copy; keeps ``a`` alive
    return a


def try_reshape(X: Any, shape: tuple[int, ...]) -> Any:
    """A view of device array ``X`` with ``shape``, or None when that needs a copy."""
    # Only C-contiguous arrays: numba-cuda's reshape of an F-contiguous array in
    # C order returns C strides over the F-ordered buffer (wrong values), and
    # refuses other non-contiguous layouts.
    if not X.is_c_contiguous():
        return None
    try:
        return X.reshape(shape)
    except (NotImplementedError, ValueError):
        return None


def neg_kernel_scale(sigma: float, dtype: Any) -> Any:
    """``-1 / (2 sigma^2)`` in ``dtype``, clamped to the largest finite value.

    For tiny sigma, ``-inf`` would turn the ``d2 = 0`` pairs into
    ``exp(0 * -inf) = NaN`` instead of ``K = 1``.
    """
    return np.dtype(dtype).type(max(-0.5 / sigma / sigma, -float(np.finfo(dtype).max)))
