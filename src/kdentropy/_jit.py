"""What every Numba kernel of kdentropy builds on: flags, threads, a branch-free exp.

* the fast-math flag sets, named by the rewrites they allow;
* the environment default that Numba's OpenMP layer must see before it starts;
* :func:`serialised_on_workqueue`, the lock around parallel kernels that the
  ``workqueue`` threading layer needs;
* :func:`serial_twin`, a parallel kernel compiled again without threads;
* :func:`exp_nonpos` and :func:`exp_nonpos_f32`, ``exp`` of non-positive
  arguments without branches or library calls (so loops that use them
  vectorise), and the :func:`sigmoid` compiled with it.

The CPU entropy backend (:mod:`kdentropy.backends.cpu`) and the cell-system
kernels (:mod:`kdentropy.cells._kernels`) import from here; this module
imports nothing of kdentropy but the estimator's sigmoid formula.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from types import FunctionType
from typing import Any

# Numba's OpenMP threading layer spins its idle workers for milliseconds after
# each parallel region, taking the cores from whatever runs next. Measured
# with OMP_WAIT_POLICY=ACTIVE on 2 cores, a NumPy GEMM interleaved with
# kdentropy calls ran 3x slower (2048 x 64: 14.7 ms instead of 5.2 ms), while
# kdentropy gained at most 20 % at 1024 x 64. Passive waiting removes the
# conflict. It takes effect only if the OpenMP runtime has not been loaded
# yet (Numba loads it at its first parallel launch, not at import); an
# explicit user setting always wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from llvmlite import ir  # noqa: E402
from numba import njit, types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

from . import _estimator  # noqa: E402

__all__ = [
    "CONTRACT", "CONTRACT_REASSOC", "CONTRACT_REASSOC_NSZ_ARCP", "serialised_on_workqueue",
    "serial_twin", "exp_nonpos", "exp_nonpos_f32", "sigmoid",
]

# ----------------------------------------------------------------------------- fast-math flags
# Each flag is fixed at compile time, so a kernel's results never depend on
# the run or the thread count. None assumes away inf or NaN.

#: Fused multiply-adds only: no sum is reordered.
CONTRACT = {"contract"}
#: Also reassociation: sums inside one loop may be vectorised in any order
#: fixed at compile time.
CONTRACT_REASSOC = {"contract", "reassoc"}
#: Also no signed zeros and reciprocals: algebra on finite and infinite
#: values alike.
CONTRACT_REASSOC_NSZ_ARCP = {"contract", "reassoc", "nsz", "arcp"}


# ----------------------------------------------------------------------------- threads

# Numba's workqueue threading layer aborts the interpreter when two Python
# threads enter parallel regions at once; OpenMP and TBB allow it. Calls are
# serialised where the layer is workqueue or not yet chosen (Numba picks it at
# the first parallel launch, possibly workqueue when no other is installed).
_WORKQUEUE_LOCK = threading.Lock()


@functools.cache
def _layer_allows_concurrency() -> bool:
    """Whether the (initialised) threading layer accepts calls from several threads."""
    return numba.threading_layer() != "workqueue"


def _concurrent_layer() -> bool:
    """:func:`_layer_allows_concurrency`, ``False`` while no layer is chosen yet."""
    try:
        return _layer_allows_concurrency()
    except ValueError:  # not initialised yet (cached only once it is)
        return False


def serialised_on_workqueue(func: Callable) -> Callable:
    """Run ``func`` under a process-wide lock unless the threading layer allows concurrent calls.

    Parameters
    ----------
    func : callable
        A Python function that launches parallel Numba kernels.

    Returns
    -------
    callable
        ``func`` wrapped (``__wrapped__`` is ``func``).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _concurrent_layer():
            return func(*args, **kwargs)
        with _WORKQUEUE_LOCK:
            return func(*args, **kwargs)

    return wrapper


def serial_twin(dispatcher: Any) -> Any:
    """A ``parallel=True`` kernel compiled again without it (``prange`` runs as ``range``).

    Small batches use the twin: waking the threads for a parallel region
    (they wait passively, see ``OMP_WAIT_POLICY`` above) costs more than
    the region's work there. The twin is a renamed copy of the Python
    function, because Numba names cache files after the qualified name and
    the twin must not load the parallel build.

    Parameters
    ----------
    dispatcher : numba Dispatcher
        A kernel compiled with ``njit(parallel=True, ...)``.

    Returns
    -------
    numba Dispatcher
        The same function, serial, with the same fast-math flags.
    """
    func = dispatcher.py_func
    twin = FunctionType(func.__code__, func.__globals__, func.__name__ + "_serial",
                        func.__defaults__, func.__closure__)
    twin.__qualname__ = func.__qualname__ + "_serial"
    twin.__doc__ = func.__doc__
    return njit(fastmath=dispatcher.targetoptions["fastmath"], cache=True)(twin)


# ----------------------------------------------------------------------------- exp

def _bitcast(src: types.Type, dst: types.Type, llvm_type: ir.Type, doc: str) -> Any:
    """An intrinsic that reinterprets the bits of a ``src`` scalar as ``dst``.

    An LLVM bitcast, so loops that use it still vectorise.
    """
    src_kind = types.Integer if isinstance(src, types.Integer) else types.Float

    @intrinsic
    def bitcast(typingctx, x):
        if not isinstance(x, src_kind):
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvm_type)

        return dst(src), codegen

    bitcast.__doc__ = doc
    return bitcast


_bits_to_f64 = _bitcast(types.int64, types.float64, ir.DoubleType(), "int64 bits as float64")
_f64_to_bits = _bitcast(types.float64, types.int64, ir.IntType(64), "float64 bits as int64")
_bits_to_f32 = _bitcast(types.int32, types.float32, ir.FloatType(), "int32 bits as float32")
_f32_to_bits = _bitcast(types.float32, types.int32, ir.IntType(32), "float32 bits as int32")


_LOG2E = 1.4426950408889634
# ln 2 split so that n * _LN2_HI is exact for |n| < 2**20 (Cody and Waite).
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# Adding 1.5 * 2**52 rounds to the nearest integer and leaves it in the low
# mantissa bits, avoiding a float -> int64 conversion that AVX2 lacks.
_SHIFTER = 6755399441055744.0
_SHIFTER_BITS = 0x4338000000000000


@njit(inline="always", cache=True)
def exp_nonpos(x):
    """``exp(x)`` for float64 ``x <= 0``, without branches or library calls.

    ``x = n ln2 + r`` with ``|r| <= ln2 / 2``; ``exp(r)`` is its degree-13
    Taylor polynomial (truncation error below 1e-17 relative) and ``2**n`` is
    built from exponent bits in two halves, so results down to the smallest
    subnormal are right and anything below about -745 gives exactly 0.
    """
    x = max(x, -800.0)  # exp(-800) underflows to 0; keeps n inside int range
    kd = x * _LOG2E + _SHIFTER
    nf = kd - _SHIFTER
    n = _f64_to_bits(kd) - _SHIFTER_BITS
    r = (x - nf * _LN2_HI) - nf * _LN2_LO
    p = 1.6059043836821613e-10
    p = p * r + 2.08767569878681e-09
    p = p * r + 2.505210838544172e-08
    p = p * r + 2.755731922398589e-07
    p = p * r + 2.7557319223985893e-06
    p = p * r + 2.48015873015873e-05
    p = p * r + 0.0001984126984126984
    p = p * r + 0.001388888888888889
    p = p * r + 0.008333333333333333
    p = p * r + 0.041666666666666664
    p = p * r + 0.16666666666666666
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    # n >= -1155 here; split it so that both factors are normal numbers and
    # the only rounding to a subnormal happens in the last product.
    a = n >> 1
    b = n - a
    return p * _bits_to_f64((a + 1023) << 52) * _bits_to_f64((b + 1023) << 52)


_F32 = np.float32
# float32 Cody-Waite split: _LN2_HI_F32 has 9 significant bits, so n times it
# is exact for the |n| <= 126 that occur here.
_LOG2E_F32 = _F32(1.4426950408889634)
_LN2_HI_F32 = _F32(0.693359375)
_LN2_LO_F32 = _F32(-2.12194440e-4)
_SHIFTER_F32 = _F32(12582912.0)  # 1.5 * 2**23
_SHIFTER_BITS_F32 = np.int32(0x4B400000)


@njit(inline="always", cache=True)
def exp_nonpos_f32(x):
    """``exp(x)`` for float32 ``-87 <= x <= 0`` in float32 arithmetic (twice the SIMD width).

    Same scheme as :func:`exp_nonpos`: ``exp(r)`` with ``|r| <= ln2 / 2`` is
    its degree-7 Taylor polynomial (truncation 7e-9 relative, below the
    float32 rounding; about 1.7 float32 ulp in all) times ``2**n``. Smaller
    ``x`` is clamped to -87, so the result is always a normal number.
    """
    x = max(x, _F32(-87.0))
    kd = x * _LOG2E_F32 + _SHIFTER_F32
    nf = kd - _SHIFTER_F32
    n = _f32_to_bits(kd) - _SHIFTER_BITS_F32
    r = (x - nf * _LN2_HI_F32) - nf * _LN2_LO_F32
    p = _F32(1.0 / 5040.0)
    p = p * r + _F32(1.0 / 720.0)
    p = p * r + _F32(1.0 / 120.0)
    p = p * r + _F32(1.0 / 24.0)
    p = p * r + _F32(1.0 / 6.0)
    p = p * r + _F32(0.5)
    p = p * r + _F32(1.0)
    p = p * r + _F32(1.0)
    return p * _bits_to_f32((n + np.int32(127)) << np.int32(23))


#: ``sigmoid(x, T, theta)`` of :mod:`kdentropy._estimator` with :func:`exp_nonpos`,
#: inlined into the caller (float64 in and out).
sigmoid = njit(inline="always", cache=True)(_estimator.make_sigmoid(exp_nonpos))
