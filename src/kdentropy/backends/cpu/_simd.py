"""SIMD vectors as Numba values: loads, stores, broadcasts and fused multiply-adds.

Numba has no vector type, and LLVM does not keep a tile of accumulators in
registers when they live in an array (every multiply-add then loads and
stores its accumulator: 70-90 GFLOP/s for a float32 Gram tile, against
250 GFLOP/s with the register tiles these intrinsics allow, measured on a
2-core AVX-512 machine). A :class:`Vector` is one LLVM ``<L x float>`` or
``<L x double>`` value, so a fixed set of Vector variables stays in registers
across a loop.

The width is the host's widest vector register (64 bytes with AVX-512, else
32 bytes). Every lane is one independent ``fma`` in the input's precision;
code that sums across lanes fixes its order, so results depend on the width
only through the order of such sums. A compiled kernel has its width built
in (:func:`vlanes`); kernels check it against the packing of their inputs, which
Python derives from :data:`VECTOR_BYTES`, because a cached kernel could come
from another machine. No bounds checks: callers guarantee that
``idx + lanes <= arr.size``.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model


def _target_vector_bytes() -> int:
    """64 where Numba compiles for AVX-512, else 32.

    Numba targets the host unless ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES``
    name another CPU; the width follows the same choice (an explicit CPU name
    without AVX-512 in its features gets 32 bytes).
    """
    from numba.core import config

    if config.CPU_FEATURES is not None:
        return 64 if "+avx512f" in config.CPU_FEATURES else 32
    if config.CPU_NAME not in (None, "host"):
        return 32
    try:
        import llvmlite.binding as llvm
        return 64 if llvm.get_host_cpu_features().get("avx512f", False) else 32
    except Exception:  # noqa: BLE001 - feature query unsupported: a safe default
        return 32


VECTOR_BYTES = _target_vector_bytes()


def lanes_of(dtype) -> int:
    """Lanes of one vector of ``dtype`` (a NumPy or Numba float type)."""
    bits = getattr(dtype, "bitwidth", None) or dtype.itemsize * 8
    return VECTOR_BYTES * 8 // bits


class Vector(types.Type):
    """A SIMD vector of ``lanes`` values of ``dtype`` (float32 or float64)."""

    def __init__(self, dtype: types.Float) -> None:
        self.dtype = dtype
        self.lanes = lanes_of(dtype)
        super().__init__(name=f"Vector({dtype} x {self.lanes})")


def _llvm_vector(vt: Vector) -> ir.VectorType:
    element = ir.FloatType() if vt.dtype == types.float32 else ir.DoubleType()
    return ir.VectorType(element, vt.lanes)


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _llvm_vector(fe_type))


def _float_array(arr) -> bool:
    return isinstance(arr, types.Array) and arr.dtype in (types.float32, types.float64)


def _float_vector(arr) -> bool:
    """A 1-D contiguous float array: what vload/vstore address."""
    return _float_array(arr) and arr.ndim == 1 and arr.layout == "C"


@intrinsic
def vload(typingctx, arr, idx):
    """``arr[idx : idx + lanes]`` of a 1-D contiguous float array, as one Vector."""
    if not (_float_vector(arr) and isinstance(idx, types.Integer)):
        return None
    vt = Vector(arr.dtype)

    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.gep(a.data, [args[1]])
        vptr = builder.bitcast(ptr, _llvm_vector(vt).as_pointer())
        return builder.load(vptr, align=vt.dtype.bitwidth // 8)

    return vt(arr, idx), codegen


@intrinsic
def vstore(typingctx, arr, idx, v):
    """``arr[idx : idx + lanes] = v``."""
    if not (_float_vector(arr) and isinstance(idx, types.Integer) and isinstance(v, Vector)
            and v.dtype == arr.dtype):
        return None

    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.gep(a.data, [args[1]])
        vptr = builder.bitcast(ptr, args[2].type.as_pointer())
        builder.store(args[2], vptr, align=v.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(arr, idx, v), codegen


@intrinsic
def vsplat(typingctx, like, x):
    """A Vector of ``like``'s dtype with every lane equal to ``x``."""
    if not (_float_array(like) and isinstance(x, (types.Float, types.Integer))):
        return None
    vt = Vector(like.dtype)

    def codegen(context, builder, sig, args):
        llvt = _llvm_vector(vt)
        value = context.cast(builder, args[1], sig.args[1], vt.dtype)
        v = builder.insert_element(ir.Constant(llvt, ir.Undefined), value,
                                   ir.Constant(ir.IntType(32), 0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vt.lanes), [0] * vt.lanes)
        return builder.shuffle_vector(v, ir.Constant(llvt, ir.Undefined), mask)

    return vt(like, x), codegen


@intrinsic
def vzero(typingctx, like):
    """A Vector of ``like``'s dtype with every lane 0."""
    if not _float_array(like):
        return None
    vt = Vector(like.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(_llvm_vector(vt), None)

    return vt(like), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """``a * b + c`` lane by lane, rounded once (``llvm.fma``)."""
    if not (isinstance(a, Vector) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        ty = args[0].type
        suffix = "f32" if isinstance(ty.element, ir.FloatType) else "f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty] * 3),
                                            f"llvm.fma.v{ty.count}{suffix}")
        return builder.call(fn, list(args))

    return a(a, b, c), codegen


@intrinsic
def vlanes(typingctx, like):
    """Lanes of a Vector of ``like``'s dtype, as a compile-time integer."""
    if not _float_array(like):
        return None
    lanes = lanes_of(like.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(ir.IntType(64), lanes)

    return types.intp(like), codegen
