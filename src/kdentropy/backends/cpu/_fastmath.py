"""Scalar building blocks of the CPU kernels: a vectorisable exp, the kernel value, fixed-order sums.

All are inlined into the Numba loops of :mod:`._fused` and :mod:`._direct`. Sums run in a fixed
order (never reassociated), so results do not depend on the thread count.
"""

from __future__ import annotations

from types import FunctionType

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

# Only FMA contraction: it is decided at compile time (so results stay
# reproducible) and it halves the cost of the polynomial exp. No reassociation.
FASTMATH = {"contract"}


def _bitcast(src: types.Type, dst: types.Type, llvm_type: ir.Type, doc: str):
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
def _exp_nonpos(x):
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


# Below this argument float32 kernel values are set to 0 (see _kernel).
_KERNEL_FLUSH_F32 = -64.0


@njit(inline="always", cache=True)
def _exp_nonpos_f32(x):
    """``exp(x)`` for float32 ``-87 <= x <= 0`` in float32 arithmetic (twice the SIMD width).

    Same scheme as :func:`_exp_nonpos`: ``exp(r)`` with ``|r| <= ln2 / 2`` is
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


def _kernel(a, b, g, scale, like):
    """``exp(-scale max(a + b - 2 g, 0))`` in the precision of the array ``like``."""
    raise TypeError("_kernel is only callable from Numba-compiled code")


@overload(_kernel, inline="always")
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
            e = _exp_nonpos_f32(x)
            return e if x >= np.float32(_KERNEL_FLUSH_F32) else np.float32(0.0)
        return impl32

    def impl64(a, b, g, scale, like):
        return kernel_exp64(-scale * max(a + b - 2.0 * np.float64(g), 0.0))
    return impl64


# Below this argument float64 kernel values are set to 0 (see kernel_exp64).
_KERNEL_FLUSH_F64 = -600.0


@njit(inline="always", cache=True)
def kernel_exp64(x):
    """``exp(x)`` for a float64 kernel argument ``x <= 0``, flushed to 0 below ``exp(-600)``.

    Values under 1e-260 change no soft count (>= 1) and no weight
    ``K (g_i + g_j)`` by anything float64 can hold, but left in place they
    (and weights formed from them) reach the subnormal range, where every
    multiply in ``W @ S`` takes a microcode assist: 12x slower panels were
    measured when 8% of the entries were subnormal.
    """
    return _exp_nonpos(x) if x >= _KERNEL_FLUSH_F64 else 0.0


@njit(inline="always", cache=True)
def _sum(v):
    """Sum of a 1-D array in a fixed order, with four independent partial sums."""
    n = v.size
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    m = n - n % 4
    for j in range(0, m, 4):
        s0 += v[j]
        s1 += v[j + 1]
        s2 += v[j + 2]
        s3 += v[j + 3]
    for j in range(m, n):
        s0 += v[j]
    return (s0 + s1) + (s2 + s3)


@njit(inline="always", cache=True)
def _add_into(acc, v):
    """``acc += v`` elementwise (float64 accumulator)."""
    for j in range(v.size):
        acc[j] += v[j]


@njit(inline="always", cache=True)
def _sumsq(v):
    """``sum(v**2)`` in float64, in a fixed order with four partial sums."""
    n = v.size
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    m = n - n % 4
    for j in range(0, m, 4):
        a0 = np.float64(v[j])
        a1 = np.float64(v[j + 1])
        a2 = np.float64(v[j + 2])
        a3 = np.float64(v[j + 3])
        s0 += a0 * a0
        s1 += a1 * a1
        s2 += a2 * a2
        s3 += a3 * a3
    for j in range(m, n):
        a0 = np.float64(v[j])
        s0 += a0 * a0
    return (s0 + s1) + (s2 + s3)


def serial_twin(dispatcher):
    """A ``parallel=True`` kernel compiled again without it (``prange`` runs as ``range``).

    Small batches use the twin: waking the threads for a parallel region
    (they wait passively, see :mod:`kdentropy.backends.cpu`) cost more than
    the region's work there. The twin is a renamed copy of the Python
    function, because Numba names cache files after the qualified name and
    the twin must not load the parallel build.
    """
    func = dispatcher.py_func
    twin = FunctionType(func.__code__, func.__globals__, func.__name__ + "_serial",
                        func.__defaults__, func.__closure__)
    twin.__qualname__ = func.__qualname__ + "_serial"
    twin.__doc__ = func.__doc__
    return njit(fastmath=dispatcher.targetoptions["fastmath"], cache=True)(twin)
