"""Launch geometry, the stream of a call and array-kind conversions shared by the CUDA modules.

One stream
----------
Every kernel, copy and GEMM of one call runs on one stream, the caller's
current CuPy stream (:func:`call_stream`; Numba's default stream when CuPy
was never imported, and always under the simulator), so they are ordered
without host synchronisation and in order with the caller's own CuPy work.
Device arrays are never *bound* to that stream: the stream goes explicitly
to each launch and copy instead. A bound array would name its stream in
``__cuda_array_interface__``, and CuPy and Numba synchronise the host on a
stream named there whenever they import such an array; views that pass
between the two libraries go through :class:`Unsynced`, which names none.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np

from ._compiler import SIMULATOR, cuda

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


#: What :func:`free_device_bytes` reports under the simulator: little, so that
#: test problems span several Gram panels unless a test raises it.
SIMULATED_FREE_BYTES = 2048


def free_device_bytes() -> int:
    """Free device memory in bytes, as the driver reports it (:data:`SIMULATED_FREE_BYTES` simulated)."""
    if SIMULATOR:
        return SIMULATED_FREE_BYTES
    free, _total = cuda.current_context().get_memory_info()
    return int(free)


# CUDA's handles of the legacy default stream: 0 in the driver API, 1 in
# ``__cuda_array_interface__`` (version 3).
_LEGACY_DEFAULT = (0, 1)


def call_stream() -> Any:
    """The stream one call runs on: the caller's current CuPy stream, else Numba's default stream.

    CuPy is only consulted when the caller (or the panel route) has imported
    it already; without it there is no other stream to be ordered with.
    """
    cupy = _loaded_cupy()
    if cupy is None:
        return cuda.default_stream()
    ptr = int(cupy.cuda.get_current_stream().ptr)
    return cuda.default_stream() if ptr in _LEGACY_DEFAULT else cuda.external_stream(ptr)


def stream_handle(stream: Any) -> int:
    """The driver handle of a Numba stream (0: the legacy default stream)."""
    handle = getattr(stream, "handle", 0)
    return int(getattr(handle, "value", handle) or 0)


class Unsynced:
    """``__cuda_array_interface__`` of a device array without its stream (see the module notes).

    Only for arrays whose pending work is on the call's stream: importing the
    view then needs no synchronisation. Keeps the array alive.
    """

    def __init__(self, array: Any) -> None:
        self._array = array
        interface = dict(array.__cuda_array_interface__)
        interface.pop("stream", None)
        interface["version"] = 3
        self.__cuda_array_interface__ = interface


def _loaded_cupy() -> Any:
    """CuPy when this process has imported it (never under the simulator), else None."""
    return None if SIMULATOR else sys.modules.get("cupy")


def available_bytes() -> int:
    """Device memory a call may draw on: free in the driver plus free blocks of CuPy's pool."""
    free = free_device_bytes()
    cupy = _loaded_cupy()
    if cupy is not None:
        free += int(cupy.get_default_memory_pool().free_bytes())
    return free


def empty(shape: tuple[int, ...], dtype: Any) -> Any:
    """An uninitialised Numba device array, not bound to any stream.

    Drawn from CuPy's memory pool when CuPy is loaded: one call allocates about
    a dozen arrays, and Numba's allocator pays a driver allocation for each and
    a (synchronising) free for each later, which dominated small calls on an
    H200. Pool memory is ordered on the caller's CuPy stream, the call's stream.
    """
    cupy = _loaded_cupy()
    if cupy is None:
        return cuda.device_array(shape, dtype=dtype)
    return cuda.as_cuda_array(Unsynced(cupy.empty(shape, dtype=dtype)), sync=False)


def to_device(a: np.ndarray, stream: Any) -> Any:
    """Copy a host array to a new device array, ordered on ``stream`` (not bound to it)."""
    d = empty(a.shape, a.dtype)
    d.copy_to_device(np.ascontiguousarray(a), stream=stream)
    return d


def to_host(a: Any, stream: Any) -> np.ndarray:
    """Copy a device array to the host after the work queued on ``stream`` (waits for it)."""
    out = a.copy_to_host(stream=stream)
    stream.synchronize()
    return out


def host_view(a: Any) -> np.ndarray:
    """The NumPy array behind a simulator device array (no copy)."""
    return a._ary if hasattr(a, "_ary") else np.asarray(a)


def as_numba_device_array(X: Any, stream: Any) -> tuple[Any, str]:
    """A Numba (or simulated) device-array view of ``X`` and the kind of array it came from.

    ``X`` is read on ``stream``: the view waits for the stream that X names
    only when that is another stream.

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
    if SIMULATOR:
        if getattr(X, "__cuda_ndarray__", False):  # a simulator array
            return X, "numba"
    elif cuda.is_cuda_array(X):
        kind = "cupy" if type(X).__module__.split(".")[0] == "cupy" else "numba"
        named = X.__cuda_array_interface__.get("stream")
        ours = stream_handle(stream)
        same = named is None or named == ours or (named in _LEGACY_DEFAULT
                                                  and ours in _LEGACY_DEFAULT)
        return cuda.as_cuda_array(X, sync=not same), kind
    if hasattr(X, "__cuda_array_interface__"):
        raise TypeError("X is a GPU array, but the CUDA simulator is enabled "
                        "(NUMBA_ENABLE_CUDASIM=1); pass a NumPy array or a "
                        "numba.cuda device array instead")
    raise TypeError(f"X must be a CUDA device array; got {type(X).__name__}")


def to_kind(a: Any, kind: str, stream: Any) -> Any:
    """A device array ``a`` (written on ``stream``) as the kind of array the caller passed in."""
    if kind == "numpy":
        return to_host(a, stream)
    if kind == "cupy":
        # Zero copy, keeps ``a`` alive; no synchronisation: the caller's
        # later CuPy work runs on the same stream.
        return sys.modules["cupy"].asarray(Unsynced(a))
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
        # numba-cuda raises NotImplementedError for a reshape it cannot do as a
        # view and ValueError for a size mismatch: the caller then copies.
        return None


def neg_kernel_scale(sigma: float, dtype: Any) -> Any:
    """``-1 / (2 sigma^2)`` in ``dtype``, clamped to the largest finite value.

    For tiny sigma, ``-inf`` would turn the ``d2 = 0`` pairs into
    ``exp(0 * -inf) = NaN`` instead of ``K = 1``.
    """
    return np.dtype(dtype).type(max(-0.5 / sigma / sigma, -float(np.finfo(dtype).max)))
