"""``_validation``: every input check, its canonical result and its exact wording.

The messages are part of the interface (users read them, other modules' tests
match them), so they are matched whole: a check that names the wrong argument
or the wrong range fails here.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

from kdentropy import _validation as v


def raises(exc, message):
    """``pytest.raises`` that matches the whole message literally."""
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


# ----------------------------------------------------------------------------- scalars

def test_real_scalar_accepts_real_numbers_as_python_floats(rng):
    x = float(rng.uniform(-10, 10))
    for value in (x, np.float32(0.5), np.int64(3), 7, np.array(2.5), np.array(4, np.int8)):
        out = v.real_scalar(value, "x")
        assert type(out) is float and out == float(value)
    assert v.real_scalar(x, "x") == x


@pytest.mark.parametrize("value, message", [
    (True, "x must be a real number; got bool"),
    (np.bool_(False), "x must be a real number; got bool"),
    ("1.0", "x must be a real number; got str"),
    (None, "x must be a real number; got NoneType"),
    (1 + 2j, "x must be a real number; got complex"),
    (np.array([1.0]), "x must be a real scalar; got an array of shape (1,)"),
    (np.array("a"), "x must be a real scalar; got an array of shape ()"),
    (np.array(1 + 1j), "x must be a real scalar; got an array of shape ()"),
    (np.array(True), "x must be a real scalar; got an array of shape ()"),
])
def test_real_scalar_refuses_other_kinds(value, message):
    with raises(TypeError, message):
        v.real_scalar(value, "x")


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, np.array(np.inf)])
def test_real_scalar_refuses_non_finite(value):
    with raises(ValueError, f"x must be finite; got {float(value)}"):
        v.real_scalar(value, "x")


def test_positive_and_nonnegative():
    assert v.positive(1e-300, "p") == 1e-300
    for bad in (0, 0.0, -1.5):
        with raises(ValueError, f"p must be > 0; got {float(bad)}"):
            v.positive(bad, "p")
    with raises(TypeError, "p must be a real number; got str"):
        v.positive("1", "p")
    assert v.nonnegative(0, "q") == 0.0 and type(v.nonnegative(0, "q")) is float
    with raises(ValueError, "q must be >= 0; got -1e-300"):
        v.nonnegative(-1e-300, "q")
    with raises(TypeError, "q must be a real number; got bool"):
        v.nonnegative(True, "q")


def test_kernel_width_and_sharpness_ranges():
    assert v.SIGMA_MIN == 1e-50 and v.TEMPERATURE_MAX == 1e50
    assert v.kernel_width(1e-50) == 1e-50 and v.kernel_width(3) == 3.0
    with raises(ValueError, "sigma must be >= 1e-50 (smaller widths overflow 1/sigma^2 "
                            "in the gradient); got 1e-51"):
        v.kernel_width(1e-51)
    with raises(ValueError, "width must be >= 1e-50 (smaller widths overflow 1/width^2 "
                            "in the gradient); got 1e-60"):
        v.kernel_width(1e-60, "width")
    with raises(ValueError, "sigma must be > 0; got 0.0"):
        v.kernel_width(0.0)
    assert v.sharpness(1e50) == 1e50 and v.sharpness(1e-300) == 1e-300
    with raises(ValueError, "temperature must be <= 1e+50 (larger values overflow the "
                            "gradient); got 1.1e+50"):
        v.sharpness(1.1e50)
    with raises(ValueError, "T must be <= 1e+50 (larger values overflow the gradient); got 1e+51"):
        v.sharpness(1e51, "T")
    with raises(ValueError, "temperature must be > 0; got -1.0"):
        v.sharpness(-1)


def test_unit_interval_and_open_probability():
    assert v.unit_interval(0, "m") == 0.0 and v.unit_interval(0.999, "m") == 0.999
    for bad in (1.0, -0.1):
        with raises(ValueError, f"m must be in [0, 1); got {bad}"):
            v.unit_interval(bad, "m")
    with raises(TypeError, "m must be a real number; got str"):
        v.unit_interval("0.5", "m")
    assert v.open_probability(0.95) == 0.95 and v.open_probability(1e-300) == 1e-300
    for bad in (0.0, 1.0, -0.5, 2.0):
        with raises(ValueError, f"confidence must be in (0, 1); got {bad}"):
            v.open_probability(bad)
    with raises(ValueError, "level must be in (0, 1); got 1.0"):
        v.open_probability(1, "level")
    with raises(TypeError, "confidence must be a real number; got NoneType"):
        v.open_probability(None)


def test_integer():
    out = v.integer(np.int32(3), "n")
    assert type(out) is int and out == 3
    assert v.integer(1, "n") == 1
    assert v.integer(0, "n", 0) == 0 and v.integer(-2, "n", -2) == -2
    with raises(ValueError, "n must be >= 1; got 0"):
        v.integer(0, "n")
    with raises(ValueError, "n must be >= 5; got 4"):
        v.integer(4, "n", 5)
    for bad, kind in ((True, "bool"), (np.bool_(True), "bool"), (1.0, "float"), ("2", "str")):
        with raises(TypeError, f"n must be an integer; got {kind}"):
            v.integer(bad, "n")


def test_boolean_choice_generator():
    assert v.boolean(np.True_, "b") is True and v.boolean(False, "b") is False
    with raises(TypeError, "b must be True or False; got int"):
        v.boolean(1, "b")
    assert v.choice("  NumPy ", "backend", ("numpy", "cpu")) == "numpy"
    with raises(TypeError, "backend must be a string, one of ('numpy', 'cpu'); got int"):
        v.choice(3, "backend", ("numpy", "cpu"))
    with raises(ValueError, "unknown backend 'gpu'; expected one of ('numpy', 'cpu')"):
        v.choice("gpu", "backend", ["numpy", "cpu"])
    g = np.random.default_rng(1)
    assert v.generator(g) is g
    with raises(TypeError, "rng must be a numpy.random.Generator; got int"):
        v.generator(1)
    with raises(TypeError, "gen must be a numpy.random.Generator; got RandomState"):
        v.generator(np.random.RandomState(0), "gen")


def test_real_array(rng):
    x = rng.standard_normal(4)
    assert v.real_array(x, "a") is x  # float64 input is not copied
    out = v.real_array([1, 2], "a")
    assert out.dtype == np.float64 and out.tolist() == [1.0, 2.0]
    assert v.real_array(np.array([True, False]), "a").tolist() == [1.0, 0.0]
    assert v.real_array(np.float32(0.5), "a").dtype == np.float64
    for bad, dtype in ((np.ones(2) + 1j, "complex128"), (["a"], "<U1"),
                       (np.array([None]), "object")):
        with raises(TypeError, f"a must be a real array; got dtype {dtype}"):
            v.real_array(bad, "a")


# ----------------------------------------------------------------------------- entropy units

def test_log_unit_and_unit_scale():
    assert v.log_unit(None, False) == (1.0, False)
    factor, normalize = v.log_unit(2, True)
    assert factor == 1.0 / math.log(2) and normalize is True
    assert v.log_unit(math.e, np.False_) == (1.0 / math.log(math.e), False)
    with raises(ValueError, "base must not be 1"):
        v.log_unit(1, False)
    with raises(ValueError, "base must be > 0; got 0.0"):
        v.log_unit(0, False)
    with raises(TypeError, "normalize must be True or False; got int"):
        v.log_unit(None, 1)
    assert v.unit_scale((2.0, True), 4) == 0.5
    assert v.unit_scale((2.0, True), 0) == 2.0       # no cells: nothing to normalise by
    assert v.unit_scale((2.0, False), 4) == 2.0
    assert v.unit_scale((3.0, True), 1) == 3.0


# ----------------------------------------------------------------------------- pattern batches

@pytest.mark.parametrize("dtype, expected", [
    (np.float32, np.float32), (np.float64, np.float64), (np.float16, np.float64),
    (np.int8, np.float64), (np.uint64, np.float64), (np.bool_, np.float64),
    (np.longdouble, np.float64), ("f4", np.float32),
])
def test_compute_dtype(dtype, expected):
    out = v.compute_dtype(dtype)
    assert out == expected and isinstance(out, np.dtype)


@pytest.mark.parametrize("dtype, message", [
    ("m8[s]", "X must be an array of real numbers; got dtype timedelta64[s]"),
    ("M8[D]", "X must be an array of real numbers; got dtype datetime64[D]"),
    (np.complex64, "X must be real; got a complex array"),
    ("U3", "X must be an array of real numbers; got dtype <U3"),
    (object, "X must be an array of real numbers; got dtype object"),
])
def test_compute_dtype_refuses(dtype, message):
    with raises(TypeError, message):
        v.compute_dtype(dtype)
    with raises(TypeError, message.replace("X", "Y", 1)):
        v.compute_dtype(dtype, "Y")


def test_pattern_shape():
    out = v.pattern_shape((np.int64(2), 3))
    assert out == (2, 3) and all(type(n) is int for n in out)
    assert v.pattern_shape([1, 0]) == (1, 0) and v.pattern_shape((4, 1, 2)) == (4, 1, 2)
    with raises(ValueError, "X must have at least 2 dimensions (..., N, D); got shape (3,)"):
        v.pattern_shape((3,))
    with raises(ValueError, "Z must have at least 2 dimensions (..., N, D); got shape ()"):
        v.pattern_shape((), "Z")
    with raises(ValueError, "X must hold at least one pattern (N >= 1); got shape (2, 0, 3)"):
        v.pattern_shape((2, 0, 3))


class _Device:
    """A stand-in for a GPU array: exposes the CUDA array interface and one way home."""

    __cuda_array_interface__ = {"shape": (2, 2)}

    def __init__(self, data):
        self.data = data


class _CuPyLike(_Device):
    def get(self):
        return self.data.copy()


class _NumbaLike:
    __cuda_ndarray__ = True  # the CUDA simulator's arrays have no interface

    def __init__(self, data):
        self.data = data

    def copy_to_host(self):
        return self.data.copy()


class _TorchLike(_Device):
    def __init__(self, data, grad):
        super().__init__(data)
        self.grad = grad
        self.detached = False

    def detach(self):
        self.detached = True
        return self

    def cpu(self):
        return self

    def numpy(self):
        if self.grad and not self.detached:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad")
        return self.data


class _TorchNoDetach(_Device):
    def cpu(self):
        return self

    def numpy(self):
        return self.data


class _Refusing:
    @property
    def __cuda_array_interface__(self):
        raise RuntimeError("requires grad")


def test_is_device_array():
    assert not v.is_device_array(np.zeros(2))
    assert not v.is_device_array([1.0, 2.0])
    assert v.is_device_array(_CuPyLike(np.zeros(2)))
    assert v.is_device_array(_NumbaLike(np.zeros(2)))
    assert v.is_device_array(_Refusing())

    class NotDevice:
        __cuda_ndarray__ = False

    assert not v.is_device_array(NotDevice())


def test_host_patterns_brings_device_arrays_home(rng):
    data = rng.standard_normal((3, 2))
    for X in (_CuPyLike(data), _NumbaLike(data), _TorchLike(data, grad=True),
              _TorchLike(data, grad=False), _TorchNoDetach(data)):
        out = v.host_patterns(X)
        assert isinstance(out, np.ndarray) and out.dtype == np.float64
        np.testing.assert_array_equal(out, data)
    with raises(TypeError, "X is a GPU array of type _Device that a host backend cannot read; "
                           "copy it to the host first or use backend='cuda'"):
        v.host_patterns(_Device(data))
    with raises(TypeError, "S is a GPU array of type _Refusing that a host backend cannot "
                           "read; copy it to the host first or use backend='cuda'"):
        v.host_patterns(_Refusing(), "S")


def test_host_patterns_dtypes_and_shapes(rng):
    X = rng.standard_normal((2, 3, 4))
    assert v.host_patterns(X) is X
    X32 = X.astype(np.float32)
    assert v.host_patterns(X32).dtype == np.float32
    ints = rng.integers(0, 3, (3, 4))
    out = v.host_patterns(ints)
    assert out.dtype == np.float64 and np.array_equal(out, ints)
    kept = v.host_patterns(ints, cast=False)
    assert kept.dtype == ints.dtype and kept is ints
    assert v.host_patterns([[True, False]]).dtype == np.float64
    assert v.host_patterns([[True, False]], cast=False).dtype == np.bool_
    # An empty shard is allowed only on request, in the compute dtype.
    for dtype, expected in ((np.float32, np.float32), (np.int16, np.float64)):
        empty = v.host_patterns(np.zeros((2, 0, 3), dtype), allow_empty=True)
        assert empty.shape == (2, 0, 3) and empty.dtype == expected
    with raises(ValueError, "X must hold at least one pattern (N >= 1); got shape (0, 3)"):
        v.host_patterns(np.zeros((0, 3)))
    with raises(ValueError, "X must have at least 2 dimensions (..., N, D); got shape (0,)"):
        v.host_patterns(np.zeros(0), allow_empty=True)
    # D = 0 is a batch of patterns with no cells.
    assert v.host_patterns(np.zeros((3, 0))).shape == (3, 0)


def test_host_patterns_refuses(rng):
    with pytest.raises(TypeError, match="^X must be an array-like of real numbers: "):
        v.host_patterns([[1.0], [1.0, 2.0]])
    with raises(TypeError, "X must be real; got a complex array"):
        v.host_patterns(np.ones((2, 2)) + 1j)
    for bad in (np.nan, np.inf, -np.inf):
        X = rng.standard_normal((3, 2)).astype(np.float32)
        X[1, 1] = bad
        with raises(ValueError, "X must not contain NaN or infinity"):
            v.host_patterns(X)
        with raises(ValueError, "Y must not contain NaN or infinity"):
            v.host_patterns(X, "Y", cast=False)
    if np.finfo(np.longdouble).max > np.finfo(np.float64).max:
        big = np.ones((2, 2), np.longdouble)
        big[0, 0] = np.longdouble(10) ** 4000
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with raises(ValueError, "X has values beyond the float64 range"):
                v.host_patterns(big)
        edge = np.ones((2, 2), np.longdouble)
        edge[0, 0] = np.finfo(np.float64).max
        assert v.host_patterns(edge).dtype == np.float64


# ----------------------------------------------------------------------------- parameter vectors

def test_float_vector(rng):
    x = rng.standard_normal(3)
    assert v.float_vector(x, "w", 3) is x
    x32 = x.astype(np.float32)
    out = v.float_vector(x32, "w", 3)
    assert out.dtype == np.float64 and np.array_equal(out, x32)
    assert v.float_vector(rng.standard_normal(5), "w", 3, at_least=True).shape == (5,)
    assert v.float_vector(x, "w", 3, at_least=True) is x
    for bad, dtype in ((np.arange(3), "int64"), (np.ones(3, bool), "bool"),
                       (np.ones(3) + 0j, "complex128")):
        with raises(TypeError, f"w must be a float64 vector; got dtype {dtype}"):
            v.float_vector(bad, "w", 3)
    with raises(ValueError, "w must be a vector of shape (3,); got shape (2,)"):
        v.float_vector(np.ones(2), "w", 3)
    with raises(ValueError, "w must be a vector of shape (3,); got shape (4,)"):
        v.float_vector(np.ones(4), "w", 3)
    with raises(ValueError, "w must be a vector of shape (3,); got shape (1, 3)"):
        v.float_vector(np.ones((1, 3)), "w", 3)
    with raises(ValueError, "w must be a vector of at least 3 entries; got shape (2,)"):
        v.float_vector(np.ones(2), "w", 3, at_least=True)
    with raises(ValueError, "w must be a vector of at least 3 entries; got shape (3, 1)"):
        v.float_vector(np.ones((3, 1)), "w", 3, at_least=True)


def test_inplace_vector():
    x = np.zeros(3)
    assert v.inplace_vector(x, "v") is x
    for bad in ([0.0, 1.0], np.zeros(3, np.float32), np.zeros((1, 3))):
        with raises(TypeError, "v must be a 1-D float64 numpy array (it is used in place)"):
            v.inplace_vector(bad, "v")
    ro = np.zeros(3)
    ro.flags.writeable = False
    with raises(TypeError, "v must be writable (it is updated in place)"):
        v.inplace_vector(ro, "v")
    with raises(TypeError, "v must be writable (it is updated in place)"):
        v.inplace_vector(ro, "v", writable=True)
    assert v.inplace_vector(ro, "v", writable=False) is ro


# ----------------------------------------------------------------------------- bounded values

def test_limits():
    assert v.LR_MAX == 10.0 and v.NOISE_MAX == 10.0 and v.PENALTY_WEIGHT_MAX == 1e6
    assert v.MAX_ELEMENTS == 2 ** 40


def test_bounded():
    assert v.bounded(0.0, "x", 0.0, 2.0) == 0.0 and v.bounded(2, "x", 0.0, 2.0) == 2.0
    assert v.bounded(1e-300, "x", 0.0, 2.0, low_open=True) == 1e-300
    with raises(ValueError, "x must be in [0, 2]; got -1"):
        v.bounded(-1, "x", 0.0, 2.0)
    with raises(ValueError, "x must be in [0, 2]; got 2.5"):
        v.bounded(2.5, "x", 0.0, 2.0)
    with raises(ValueError, "x must be in (0, 2]; got 0"):
        v.bounded(0.0, "x", 0.0, 2.0, low_open=True)
    with raises(ValueError, "x must be in (0, 2]; got 3"):
        v.bounded(3.0, "x", 0.0, 2.0, low_open=True)
    with raises(ValueError, "noise must be in [0.5, 1e+06]; got 0.25"):
        v.bounded(0.25, "noise", 0.5, 1e6)
    with raises(TypeError, "x must be a real number; got str"):
        v.bounded("1", "x", 0.0, 2.0)


def test_size_and_sizes():
    assert v.size(2 ** 40, "n") == 2 ** 40 and v.size(np.int64(1), "n") == 1
    assert v.size(0, "n", 0) == 0
    with raises(ValueError, "n must be <= 1099511627776 (2**40); got 1099511627777"):
        v.size(2 ** 40 + 1, "n")
    with raises(ValueError, "n must be >= 1; got 0"):
        v.size(0, "n")
    with raises(TypeError, "n must be an integer; got float"):
        v.size(2.0, "n")
    assert v.sizes(3, "s") == (3,) and v.sizes(np.int64(4), "s") == (4,)
    out = v.sizes([1, np.int32(2)], "s")
    assert out == (1, 2) and all(type(n) is int for n in out)
    assert v.sizes(range(1, 4), "s") == (1, 2, 3) and v.sizes((), "s") == ()
    with raises(TypeError, "s must be an integer or a sequence of integers; got float"):
        v.sizes(1.5, "s")
    with raises(ValueError, "s[1] must be >= 1; got 0"):
        v.sizes([1, 0], "s")
    with raises(ValueError, "s[0] must be <= 1099511627776 (2**40); got 1099511627777"):
        v.sizes([2 ** 40 + 1], "s")
    with raises(TypeError, "s[2] must be an integer; got str"):
        v.sizes([1, 2, "3"], "s")


def test_element_budget():
    assert v.element_budget([("a", 2 ** 20), ("b", 2 ** 20)], "X") == 2 ** 40
    assert v.element_budget([("a", np.int64(3)), ("b", 5)], "X") == 15
    assert v.element_budget([], "X") == 1
    with raises(ValueError, "X would need 2.2e+12 elements, more than the limit 1.1e+12 "
                            "(2**40); reduce a (1048576) * b (2097152)"):
        v.element_budget([("a", 2 ** 20), ("b", 2 ** 21)], "X")
    with raises(ValueError, "the state would need 1.1e+12 elements, more than the limit "
                            "1.1e+12 (2**40); reduce G (1099511627777)"):
        v.element_budget([("G", 2 ** 40 + 1)], "the state")


def test_finite_vector():
    x = np.array([1.0, -2.0])
    assert v.finite_vector(x, "p") is x
    with raises(ValueError, "p must be finite; 2 of 3 entries are NaN or infinity"):
        v.finite_vector(np.array([1.0, np.nan, -np.inf]), "p")
    with raises(ValueError, "q must be finite; 1 of 4 entries are NaN or infinity"):
        v.finite_vector(np.array([[1.0, 2.0], [np.inf, 0.0]]), "q")


# ----------------------------------------------------------------------------- estimator inputs

def test_seed_or_generator():
    g = np.random.default_rng(3)
    assert v.seed_or_generator(g) is g
    assert isinstance(v.seed_or_generator(None), np.random.Generator)
    for seed in (5, np.int64(5), np.uint8(5)):
        assert v.seed_or_generator(seed).random() == np.random.default_rng(5).random()
    assert v.seed_or_generator(0).random() == np.random.default_rng(0).random()
    ss = np.random.SeedSequence(7)
    assert v.seed_or_generator(ss).random() == np.random.default_rng(np.random.SeedSequence(7)
                                                                     ).random()
    for bad, kind in ((True, "bool"), (np.bool_(False), "bool"), (1.5, "float"),
                      ("1", "str")):
        with raises(TypeError, "rng must be None, an integer seed or a numpy.random.Generator; "
                               f"got {kind}"):
            v.seed_or_generator(bad)
    with raises(TypeError, "seed must be None, an integer seed or a numpy.random.Generator; "
                           "got RandomState"):
        v.seed_or_generator(np.random.RandomState(0), "seed")
    with raises(ValueError, "rng seed must be >= 0; got -1"):
        v.seed_or_generator(-1)


def test_alphabet_size():
    assert v.alphabet_size(None) is None
    assert v.alphabet_size(1) == 1.0 and type(v.alphabet_size(4)) is float
    with raises(ValueError, "alphabet_size must be >= 1; got 0.5"):
        v.alphabet_size(0.5)
    with raises(ValueError, "K must be >= 1; got 0.0"):
        v.alphabet_size(0, "K")
    with raises(TypeError, "alphabet_size must be a real number; got str"):
        v.alphabet_size("4")


def test_count_array():
    out = v.count_array([3, 0, 1])
    assert out.dtype == np.int64 and out.tolist() == [3, 0, 1]
    out = v.count_array(np.array([[2.0, 1.0], [0.0, 1.0]]))
    assert out.dtype == np.int64 and out.tolist() == [[2, 1], [0, 1]]
    assert v.count_array(np.array([1], np.uint8)).dtype == np.int64
    with pytest.raises(TypeError, match="^counts must be an array-like of integers: "):
        v.count_array([[1], [1, 2]])
    for bad, dtype in ((np.array([True]), "bool"), (["a"], "<U1"),
                       (np.array([1 + 0j]), "complex128")):
        with raises(TypeError, f"counts must be an array of non-negative integers; got dtype "
                               f"{dtype}"):
            v.count_array(bad)
    with raises(ValueError, "counts must have at least 1 dimension (..., K); got a scalar"):
        v.count_array(3)
    for bad in ([1.0, np.nan], [np.inf, 1.0]):
        with raises(ValueError, "counts must not contain NaN or infinity"):
            v.count_array(bad)
    with raises(ValueError, "c must be whole numbers"):
        v.count_array([1.5, 2.0], "c")
    for bad in ([-1, 2], [[1, 1], [2, -1]], [-0.5 - 0.5, 3.0]):
        with raises(ValueError, "counts must be >= 0"):
            v.count_array(bad)
    for bad in ([0, 0], [[1, 2], [0, 0]], np.zeros((2, 0), np.int64)):
        with raises(ValueError, "counts must sum to at least 1 (N >= 1) in every population"):
            v.count_array(bad)
    with raises(ValueError, "counts must sum to at least 1 (N >= 1) in every population"):
        v.count_array(np.zeros((0,), np.int64))


class _CpuOnly(_Device):
    """Has ``cpu()`` but no ``numpy()``: not a PyTorch tensor, so no way home."""

    def cpu(self):
        return self


class _NumpyOnly(_Device):
    def numpy(self):
        return self.data


def test_host_patterns_needs_a_torch_like_pair_of_methods(rng):
    # (No "cpu" in this name: the mutation run deselects tests named so.)
    data = rng.standard_normal((2, 2))
    for X in (_CpuOnly(data), _NumpyOnly(data)):
        with raises(TypeError, f"X is a GPU array of type {type(X).__name__} that a host backend "
                               "cannot read; copy it to the host first or use backend='cuda'"):
            v.host_patterns(X)


def test_host_patterns_names_its_argument_and_allows_empty_2d():
    with raises(TypeError, "S must be real; got a complex array"):
        v.host_patterns(np.ones((2, 2)) + 1j, "S")
    with raises(ValueError, "S must have at least 2 dimensions (..., N, D); got shape (3,)"):
        v.host_patterns(np.zeros(3), "S")
    empty = v.host_patterns(np.zeros((0, 3), np.float32), allow_empty=True)
    assert empty.shape == (0, 3) and empty.dtype == np.float32


def test_host_patterns_of_no_cells_in_longdouble():
    # No values to range-check: nothing reduces over an empty array (where
    # longdouble is wider than float64, the range check is otherwise on).
    out = v.host_patterns(np.zeros((3, 0), np.longdouble))
    assert out.shape == (3, 0) and out.dtype == np.float64
