"""The kernel value ``exp(-scale d2)`` of one pair, in float32 or float64, flushed to 0 when tiny.

Inlined into the Numba loops of :mod:`._tiles` and :mod:`._direct`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, types
from numba.extending import overload

from ..._jit import exp_nonpos, exp_nonpos_f32

__all__ = ["kernel", "kernel_exp64"]

# Below this argument float32 kernel values are set to 0 (see kernel).
_KERNEL_FLUSH_F32 = -64.0
# Below this argument float64 kernel values are set to 0 (see kernel_exp64).
_KERNEL_FLUSH_F64 = -600.0


def kernel(a: Any, b: Any, g: Any, scale: float, like: Any) -> Any:
    """``exp(-scale max(a + b - 2 g, 0))`` in the precision of the array ``like``.

    ``a`` and ``b`` are two squared norms and ``g`` their rows' dot product.
    Only callable from Numba-compiled code.
    """
    raise TypeError("kernel is only callable from Numba-compiled code")


@overload(kernel, inline="always")
def _kernel_impl(a, b, g, scale, like):
    # Resolved at compile time. float32 panels form d2 and K in float32 (the
    # squared norms come in float32 too): the loop then vectorises at 8 lanes
    # and was 2.5x faster than with d2 in float64. Kernel values below
    # exp(-64) ~ 1.6e-28 are flushed to 0: they change no soft count (>= 1)
    # or weight visibly, and keeping them would produce float32 subnormals (in
    # K, or in w = K (1/C_i + 1/C_j) for N < 1e10), whose microcode assists
    # made float32 panels slower than float64 ones.
    if isinstance(like, types.Array) and like.dtype == types.float32:
        def impl32(a, b, g, scale, like):
            x = np.float32(-scale) * max(a + b - np.float32(2.0) * g, np.float32(0.0))
            e = exp_nonpos_f32(x)
            return e if x >= np.float32(_KERNEL_FLUSH_F32) else np.float32(0.0)
        return impl32

    def impl64(a, b, g, scale, like):
        return kernel_exp64(-scale * max(a + b - 2.0 * np.float64(g), 0.0))
    return impl64


@njit(inline="always", cache=True)
def kernel_exp64(x):
    """``exp(x)`` for a float64 kernel argument ``x <= 0``, flushed to 0 below ``exp(-600)``.

    Values under 1e-260 change no soft count (>= 1) and no weight
    ``K (g_i + g_j)`` by anything float64 can hold, but left in place they
    (and weights formed from them) reach the subnormal range, where every
    multiply in ``W @ S`` takes a microcode assist: 12x slower panels were
    measured when 8% of the entries were subnormal.
    """
    return exp_nonpos(x) if x >= _KERNEL_FLUSH_F64 else 0.0
