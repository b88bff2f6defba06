"""The input checks shared across kdentropy, and their wording.

Each function takes the value and the name of the argument it came from, and
returns the value in canonical form or raises a ``TypeError`` (wrong kind of
thing) or ``ValueError`` (right kind, wrong value) that names the argument.
Scalars, ranges, dtypes, pattern batches and vectors are checked here only;
rules that belong to one structure (a checkpoint's arrays, an optimizer
state, a cell system's shape) are checked where that structure is defined,
with these helpers for their common parts.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "SIGMA_MIN", "TEMPERATURE_MAX", "kernel_width", "sharpness",
    "real_scalar", "positive", "nonnegative", "unit_interval", "integer", "boolean",
    "choice", "generator", "real_array", "log_unit", "unit_scale", "compute_dtype",
    "pattern_shape", "host_patterns", "is_device_array", "float_vector", "inplace_vector",
    "LR_MAX", "NOISE_MAX", "PENALTY_WEIGHT_MAX", "MAX_ELEMENTS", "bounded", "size", "sizes",
    "element_budget", "finite_vector", "open_probability", "seed_or_generator",
    "alphabet_size", "count_array",
]


# ----------------------------------------------------------------------------- scalars

def real_scalar(value: Any, name: str) -> float:
    """``value`` as a finite Python float (a 0-d real array is accepted)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.ndarray)):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    if isinstance(value, np.ndarray):
        if value.ndim != 0 or not np.issubdtype(value.dtype, np.number) or np.iscomplexobj(value):
            raise TypeError(f"{name} must be a real scalar; got an array of shape {value.shape}")
        value = value.item()
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    return value


def positive(value: Any, name: str) -> float:
    """``value`` as a finite float > 0."""
    value = real_scalar(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0; got {value}")
    return value


# The documented range of the kernel width and the sigmoid sharpness. Beyond
# it 1/sigma^2 and T/(N sigma^2) leave the float64 range in the gradient (NaN
# or ZeroDivisionError); inside it every backend computes without overflow.
SIGMA_MIN = 1e-50
TEMPERATURE_MAX = 1e50


def kernel_width(value: Any, name: str = "sigma") -> float:
    """``value`` as a kernel width in ``[SIGMA_MIN, inf)``."""
    value = positive(value, name)
    if value < SIGMA_MIN:
        raise ValueError(f"{name} must be >= {SIGMA_MIN:g} (smaller widths overflow "
                         f"1/{name}^2 in the gradient); got {value:g}")
    return value


def sharpness(value: Any, name: str = "temperature") -> float:
    """``value`` as a sigmoid sharpness in ``(0, TEMPERATURE_MAX]``."""
    value = positive(value, name)
    if value > TEMPERATURE_MAX:
        raise ValueError(f"{name} must be <= {TEMPERATURE_MAX:g} (larger values overflow "
                         f"the gradient); got {value:g}")
    return value


def nonnegative(value: Any, name: str) -> float:
    """``value`` as a finite float >= 0."""
    value = real_scalar(value, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0; got {value}")
    return value


def unit_interval(value: Any, name: str) -> float:
    """``value`` as a float in ``[0, 1)``."""
    value = real_scalar(value, name)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1); got {value}")
    return value


def integer(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as a Python int >= ``minimum`` (bools are refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


def boolean(value: Any, name: str) -> bool:
    """``value`` as a bool; only True/False (or NumPy bools) are accepted."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__}")
    return bool(value)


def choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """``value`` as one of ``choices`` (case and surrounding blanks ignored)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {tuple(choices)}; "
                        f"got {type(value).__name__}")
    key = value.strip().lower()
    if key not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {tuple(choices)}")
    return key


def generator(value: Any, name: str = "rng") -> np.random.Generator:
    """``value`` if it is a ``numpy.random.Generator``."""
    if not isinstance(value, np.random.Generator):
        raise TypeError(f"{name} must be a numpy.random.Generator; got {type(value).__name__}")
    return value


def real_array(value: ArrayLike, name: str) -> np.ndarray:
    """``value`` as a float64 array; complex or non-numeric input is a TypeError."""
    a = np.asarray(value)
    if np.iscomplexobj(a) or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise TypeError(f"{name} must be a real array; got dtype {a.dtype}")
    return a.astype(np.float64, copy=False)


# ----------------------------------------------------------------------------- entropy units

def log_unit(base: Any, normalize: Any) -> tuple[float, bool]:
    """Validated ``(1 / log(base), normalize)``: the factor from nats to the requested unit."""
    normalize = boolean(normalize, "normalize")
    factor = 1.0
    if base is not None:
        b = positive(base, "base")
        if b == 1.0:
            raise ValueError("base must not be 1")
        factor /= math.log(b)
    return factor, normalize


def unit_scale(unit: tuple[float, bool], D: int) -> float:
    """The factor that turns nats into ``unit`` for patterns of ``D`` cells."""
    factor, normalize = unit
    return factor / D if normalize and D > 0 else factor


# ----------------------------------------------------------------------------- pattern batches

def compute_dtype(dtype: Any, name: str = "X") -> np.dtype:
    """The dtype a batch of this dtype is computed in: float32/float64 as they are, else float64."""
    dtype = np.dtype(dtype)
    if dtype in (np.float32, np.float64):
        return dtype
    if dtype.kind in "mM":  # timedelta64 is an integer subtype to NumPy, not a number here
        raise TypeError(f"{name} must be an array of real numbers; got dtype {dtype}")
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"{name} must be real; got a complex array")
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise TypeError(f"{name} must be an array of real numbers; got dtype {dtype}")
    # bool, integers and float16 are computed in float64.
    return np.dtype(np.float64)


def pattern_shape(shape: Sequence[int], name: str = "X") -> tuple[int, ...]:
    """``shape`` if it is ``(..., N, D)`` with ``N >= 1``."""
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (..., N, D); got shape {shape}")
    if shape[-2] == 0:
        raise ValueError(f"{name} must hold at least one pattern (N >= 1); got shape {shape}")
    return shape


def is_device_array(X: Any) -> bool:
    """Whether ``X`` lives on a GPU.

    GPU arrays (CuPy, PyTorch, Numba) expose ``__cuda_array_interface__``;
    Numba device arrays, including the CUDA simulator's (which has no such
    interface), carry the ``__cuda_ndarray__`` marker.
    """
    if isinstance(X, np.ndarray):
        return False
    if getattr(X, "__cuda_ndarray__", False):
        return True
    try:
        getattr(X, "__cuda_array_interface__")
    except AttributeError:
        return False
    except Exception:  # present but refusing (a PyTorch CUDA tensor that requires grad)
        return True
    return True


def _to_host(X: Any, name: str) -> Any:
    """A device array brought to the host, or a TypeError that says how."""
    for method in ("get", "copy_to_host"):  # CuPy, Numba
        if callable(getattr(X, method, None)):
            return getattr(X, method)()
    if callable(getattr(X, "cpu", None)) and callable(getattr(X, "numpy", None)):  # PyTorch
        return X.detach().cpu().numpy() if callable(getattr(X, "detach", None)) else X.cpu().numpy()
    raise TypeError(f"{name} is a GPU array of type {type(X).__name__} that a host backend "
                    "cannot read; copy it to the host first or use backend='cuda'")


def host_patterns(X: ArrayLike, name: str = "X", *, allow_empty: bool = False,
                  cast: bool = True) -> np.ndarray:
    """A batch ``(..., N, D)`` as a finite float32/float64 host array (never a view to write to).

    Parameters
    ----------
    X : array_like
        The batch; device arrays are copied to the host.
    name : str
        The argument name used in error messages.
    allow_empty : bool
        Accept ``N = 0`` (one MPI rank's shard may hold no rows).
    cast : bool
        Convert to the compute dtype (:func:`compute_dtype`). Without it the
        array keeps its own real dtype: binarising needs no float copy.
    """
    if is_device_array(X):
        X = _to_host(X, name)
    try:
        A = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be an array-like of real numbers: {exc}") from exc
    dtype = compute_dtype(A.dtype, name)
    if allow_empty and A.ndim >= 2 and A.shape[-2] == 0:
        return np.empty(A.shape, dtype=dtype)
    pattern_shape(A.shape, name)
    if A.size and A.dtype.kind == "f":
        # Checked before any cast, so that nothing warns first (e.g. a
        # longdouble 1e4000 that float64 cannot hold).
        if not np.isfinite(A).all():
            raise ValueError(f"{name} must not contain NaN or infinity")
        if A.dtype.itemsize > 8 and np.abs(A).max() > np.finfo(np.float64).max:
            raise ValueError(f"{name} has values beyond the float64 range")
    if cast and A.dtype != dtype:
        A = A.astype(dtype)
    return A



# ----------------------------------------------------------------------------- parameter vectors

def float_vector(value: ArrayLike, name: str, size: int, *, at_least: bool = False) -> np.ndarray:
    """``value`` as a float64 vector of ``size`` entries (``>= size`` with ``at_least``).

    Real floating input of another precision is converted (a copy); integer,
    complex or non-numeric input is a TypeError, so a vector of the wrong
    kind is never silently cast.

    Parameters
    ----------
    value : array_like
        The vector.
    name : str
        The argument name used in error messages.
    size : int
        The required length (the minimum length with ``at_least``).
    at_least : bool, optional
        Accept longer vectors (a layer reading its slice of a model's vector).

    Returns
    -------
    ndarray of float64, shape (n,)
    """
    a = np.asarray(value)
    if a.dtype != np.float64:
        if not np.issubdtype(a.dtype, np.floating):
            raise TypeError(f"{name} must be a float64 vector; got dtype {a.dtype}")
        a = a.astype(np.float64)
    if a.ndim != 1 or (a.shape[0] < size if at_least else a.shape[0] != size):
        want = f"at least {size} entries" if at_least else f"shape ({size},)"
        raise ValueError(f"{name} must be a vector of {want}; got shape {a.shape}")
    return a


def inplace_vector(value: Any, name: str, *, writable: bool = True) -> np.ndarray:
    """``value`` itself if it is a 1-D float64 ndarray that can be used in place.

    Used where a converted copy would silently break the caller's intent:
    views that must write through, or an update that must change the
    caller's array.

    Parameters
    ----------
    value : Any
        The array.
    name : str
        The argument name used in error messages.
    writable : bool, optional
        Also require the array to be writable. Default True.

    Returns
    -------
    ndarray of float64
        ``value``, unchanged.
    """
    if not (isinstance(value, np.ndarray) and value.dtype == np.float64 and value.ndim == 1):
        raise TypeError(f"{name} must be a 1-D float64 numpy array (it is used in place)")
    if writable and not value.flags.writeable:
        raise TypeError(f"{name} must be writable (it is updated in place)")
    return value


# ----------------------------------------------------------------------------- bounded values

# Documented ranges of the training hyperparameters. Beyond them the update or
# the roll-out overflows float64 (inf gradient norms, NaN states), or the value
# has no effect a smaller one lacks: states live in [0, 1], so noise beyond 10
# is already pure coin-flipping, and Adam moves each parameter by about lr per
# step, so lr above 10 leaves the range any tanh/sigmoid network can use.
LR_MAX = 10.0
NOISE_MAX = 10.0
PENALTY_WEIGHT_MAX = 1e6
# No array of a training set-up may have more elements than this (8 TiB of
# float64): larger sizes are a typo or a damaged file, and would otherwise
# end in MemoryError (or an hours-long allocation) far from their cause.
MAX_ELEMENTS = 2 ** 40


def bounded(value: Any, name: str, low: float, high: float, *,
            low_open: bool = False) -> float:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``).

    Parameters
    ----------
    value : Any
        The number.
    name : str
        The argument name used in error messages.
    low, high : float
        The documented range.
    low_open : bool, optional
        Exclude ``low`` itself (e.g. a rate that must be > 0).

    Returns
    -------
    float
    """
    value = real_scalar(value, name)
    if (value <= low if low_open else value < low) or value > high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"{name} must be in {interval}; got {value:g}")
    return value


def size(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int in ``[minimum, MAX_ELEMENTS]``: a count that sizes an array."""
    value = integer(value, name, minimum)
    if value > MAX_ELEMENTS:
        raise ValueError(f"{name} must be <= {MAX_ELEMENTS} (2**40); got {value}")
    return value


def sizes(value: Any, name: str) -> tuple[int, ...]:
    """``value`` (one size or a sequence of them) as a tuple of :func:`size` values."""
    items: tuple[Any, ...]
    if isinstance(value, (int, np.integer)):
        items = (value,)
    else:
        try:
            items = tuple(value)
        except TypeError:
            raise TypeError(f"{name} must be an integer or a sequence of integers; "
                            f"got {type(value).__name__}") from None
    return tuple(size(v, f"{name}[{i}]") for i, v in enumerate(items))


def element_budget(factors: Sequence[tuple[str, int]], what: str) -> int:
    """The product of ``factors`` if it is at most ``MAX_ELEMENTS``.

    Parameters
    ----------
    factors : sequence of (str, int)
        The named sizes whose product is an array's element count.
    what : str
        The array, for the error message.

    Returns
    -------
    int
        The element count.
    """
    n = math.prod(int(v) for _, v in factors)
    if n > MAX_ELEMENTS:
        names = " * ".join(f"{k} ({v})" for k, v in factors)
        raise ValueError(f"{what} would need {n:.3g} elements, more than the limit "
                         f"{MAX_ELEMENTS:.3g} (2**40); reduce {names}")
    return n


def finite_vector(value: np.ndarray, name: str) -> np.ndarray:
    """``value`` if it holds no NaN or infinity."""
    if not np.isfinite(value).all():
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        raise ValueError(f"{name} must be finite; {bad} of {np.size(value)} entries "
                         "are NaN or infinity")
    return value


# ----------------------------------------------------------------------------- estimator inputs

def open_probability(value: Any, name: str = "confidence") -> float:
    """``value`` as a float in the open interval ``(0, 1)``."""
    value = real_scalar(value, name)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1); got {value}")
    return value


def seed_or_generator(value: Any, name: str = "rng") -> np.random.Generator:
    """``rng`` as a Generator: None (fresh entropy), a seed, or a Generator (used as is)."""
    if value is None or isinstance(value, np.random.Generator):
        return np.random.default_rng(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral,
                                                                     np.random.SeedSequence)):
        raise TypeError(f"{name} must be None, an integer seed or a numpy.random.Generator; "
                        f"got {type(value).__name__}")
    if isinstance(value, numbers.Integral) and value < 0:
        raise ValueError(f"{name} seed must be >= 0; got {value}")
    return np.random.default_rng(int(value) if isinstance(value, numbers.Integral) else value)


def alphabet_size(value: Any, name: str = "alphabet_size") -> float | None:
    """``value`` as a number of possible outcomes >= 1, or None (unknown)."""
    if value is None:
        return None
    value = real_scalar(value, name)
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {value}")
    return value


def count_array(counts: ArrayLike, name: str = "counts") -> np.ndarray:
    """Counts ``(..., K)`` as int64, refusing non-integers, negatives, NaN and empty rows."""
    try:
        c = np.asarray(counts)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be an array-like of integers: {exc}") from exc
    if c.dtype == np.bool_ or not np.issubdtype(c.dtype, np.number) or np.iscomplexobj(c):
        raise TypeError(f"{name} must be an array of non-negative integers; got dtype {c.dtype}")
    if c.ndim == 0:
        raise ValueError(f"{name} must have at least 1 dimension (..., K); got a scalar")
    if c.dtype.kind == "f":
        if not np.isfinite(c).all():
            raise ValueError(f"{name} must not contain NaN or infinity")
        if (c != np.round(c)).any():
            raise ValueError(f"{name} must be whole numbers")
    if c.size and (c < 0).any():
        raise ValueError(f"{name} must be >= 0")
    c = c.astype(np.int64)
    if c.shape[-1] == 0 or (c.sum(axis=-1) == 0).any():
        raise ValueError(f"{name} must sum to at least 1 (N >= 1) in every population")
    return c
