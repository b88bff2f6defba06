"""Public entropy functions: validation, dtype/shape handling, scaling and dispatch.

No numerics live here; see :mod:`kdentropy.backends` and :mod:`kdentropy.hard`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _backend, hard

__all__ = [
    "soft_entropy",
    "soft_entropy_grad",
    "soft_entropy_and_grad",
    "hard_entropy",
    "pattern_counts",
]


# ----------------------------------------------------------------------------- validation

def _real_scalar(value: Any, name: str) -> float:
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


def _positive(value: Any, name: str) -> float:
    value = _real_scalar(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0; got {value}")
    return value


def _unit(base: Any, normalize: Any) -> tuple[float, bool]:
    """Validated ``(1 / log(base), normalize)``: the factor from nats to the requested unit."""
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"normalize must be True or False; got {type(normalize).__name__}")
    factor = 1.0
    if base is not None:
        b = _positive(base, "base")
        if b == 1.0:
            raise ValueError("base must not be 1")
        factor /= math.log(b)
    return factor, bool(normalize)


def _scale(unit: tuple[float, bool], D: int) -> float:
    factor, normalize = unit
    return factor / D if normalize and D > 0 else factor


def _as_host_array(X: ArrayLike) -> np.ndarray:
    if _is_device_array(X):
        # A device array sent to a host backend: bring it over explicitly.
        X = X.get() if hasattr(X, "get") else X.copy_to_host()
    try:
        A = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"X must be an array-like of real numbers: {exc}") from exc
    if np.iscomplexobj(A):
        raise TypeError("X must be real; got a complex array")
    if not (np.issubdtype(A.dtype, np.number) or A.dtype == np.bool_):
        raise TypeError(f"X must be an array of real numbers; got dtype {A.dtype}")
    if A.ndim < 2:
        raise ValueError(f"X must have at least 2 dimensions (..., N, D); got shape {A.shape}")
    if A.shape[-2] == 0:
        raise ValueError(f"X must hold at least one pattern (N >= 1); got shape {A.shape}")
    if A.dtype not in (np.float32, np.float64):
        # bool, integers and float16 are computed in float64.
        A = A.astype(np.float64)
    if A.size and not np.isfinite(A).all():
        raise ValueError("X must not contain NaN or infinity")
    return A


def _is_device_array(X: Any) -> bool:
    # GPU arrays (CuPy, PyTorch, Numba) expose __cuda_array_interface__; Numba
    # device arrays, including the CUDA simulator's FakeCUDAArray (which has no
    # such interface), carry the __cuda_ndarray__ marker.
    if isinstance(X, np.ndarray):
        return False
    return bool(getattr(X, "__cuda_ndarray__", False)) or hasattr(X, "__cuda_array_interface__")


def _to_3d(A: np.ndarray) -> np.ndarray:
    N, D = A.shape[-2:]
    G = int(np.prod(A.shape[:-2], dtype=np.int64))  # explicit: -1 is ambiguous when D = 0
    return np.ascontiguousarray(A.reshape((G, N, D)))


def _batch_result(H: np.ndarray, batch_shape: tuple[int, ...]):
    """A float64 scalar for a single population, an array of the batch shape otherwise."""
    return np.float64(H[0]) if batch_shape == () else H.reshape(batch_shape)


# ----------------------------------------------------------------------------- soft entropy

def _soft(X, temperature, sigma, threshold, base, normalize, backend, want_grad):
    T = _positive(temperature, "temperature")
    s = _positive(sigma, "sigma")
    theta = _real_scalar(threshold, "threshold")
    unit = _unit(base, normalize)
    on_device = _is_device_array(X)
    name = _backend.resolve(backend, on_device)
    module = _backend.backend_module(name)

    if on_device and name == "cuda":
        shape = tuple(X.shape)
        if len(shape) < 2 or shape[-2] == 0:
            raise ValueError(f"X must have shape (..., N, D) with N >= 1; got {shape}")
        factor = _scale(unit, shape[-1])
        H, grad = module.device_value_and_grad(X, T, s, theta, want_grad, factor)
        return _batch_result(np.asarray(H, dtype=np.float64) * factor, shape[:-2]), grad

    A = _as_host_array(X)
    batch_shape = A.shape[:-2]
    N, D = A.shape[-2:]
    factor = _scale(unit, D)
    G = int(np.prod(batch_shape, dtype=np.int64))
    if D == 0 or N == 1 or G == 0:
        # Every pattern equals every other (D = 0) or there is only one: H = 0.
        H = np.zeros(G, dtype=np.float64)
        grad = np.zeros(A.shape, dtype=A.dtype) if want_grad else None
    else:
        H, grad = module.value_and_grad(_to_3d(A), T, s, theta, want_grad)
        H = H * factor
        if want_grad:
            grad = (grad * grad.dtype.type(factor)).reshape(A.shape)
    return _batch_result(H, batch_shape), grad


_PARAMS_DOC = """
    Parameters
    ----------
    X : array_like, shape (..., N, D)
        Batch of N patterns of D real-valued cells. Leading axes index
        independent populations. float32 and float64 are computed in their own
        precision; bool, integer and float16 inputs are computed in float64.
        Arrays with ``__cuda_array_interface__`` (CuPy, Numba device arrays)
        are processed on the GPU by the ``cuda`` backend.
    temperature : float, optional
        Sigmoid sharpness T > 0. Default 10.0.
    sigma : float, optional
        Gaussian kernel width σ > 0. Default 0.5.
    threshold : float, optional
        Cell value θ at which the sigmoid is 1/2. Default 0.5.
    base : float, optional
        Logarithm base; ``None`` (default) gives nats, 2 gives bits.
    normalize : bool, optional
        If True, divide by D (entropy per cell).
    backend : {"auto", "numpy", "cpu", "cuda"}, optional
        Overrides :func:`use_backend`, :func:`set_backend` and the
        ``KDENTROPY_BACKEND`` environment variable for this call.
"""

_RAISES_DOC = """
    Raises
    ------
    TypeError
        If X is complex or not numeric, or a keyword has the wrong type.
    ValueError
        If X has fewer than 2 dimensions, no patterns, NaN or infinity; if
        temperature or sigma is not finite and positive; if base is not
        positive or equals 1; if the backend is unknown or unavailable.
"""


def soft_entropy(X: ArrayLike, temperature: float = 10.0, sigma: float = 0.5, *,
                 threshold: float = 0.5, base: float | None = None, normalize: bool = False,
                 backend: str | None = None):
    H, _ = _soft(X, temperature, sigma, threshold, base, normalize, backend, want_grad=False)
    return H


soft_entropy.__doc__ = f"""Differentiable reproducibility entropy of a batch of patterns.

    With ``S = sigmoid(T (X - θ))``, ``K_ij = exp(-||S_i - S_j||² / (2σ²))``
    and soft counts ``C_i = Σ_j K_ij``, the resubstitution estimate is
    ``H = log N - mean_i log C_i``. It lies in ``[0, log N]``: 0 when all
    soft patterns are equal, log N when all are far apart.
{_PARAMS_DOC}
    Returns
    -------
    H : float or ndarray
        The entropy; an array of shape ``X.shape[:-2]`` for batched input.
{_RAISES_DOC}
    See Also
    --------
    soft_entropy_and_grad : value and analytic gradient in one call.
    hard_entropy : the exact entropy of the binarised patterns.

    Examples
    --------
    >>> import numpy as np, kdentropy as kde
    >>> X = np.repeat([[0.0, 1.0, 1.0, 0.0]], 8, axis=0)   # 8 identical runs
    >>> float(kde.soft_entropy(X))
    0.0
    >>> X = np.eye(4)                                          # 4 different runs
    >>> round(float(kde.soft_entropy(X, temperature=50, sigma=0.1)), 6)  # = log 4
    1.386294
    """


def soft_entropy_grad(X: ArrayLike, temperature: float = 10.0, sigma: float = 0.5, *,
                      threshold: float = 0.5, base: float | None = None, normalize: bool = False,
                      backend: str | None = None):
    _, grad = _soft(X, temperature, sigma, threshold, base, normalize, backend, want_grad=True)
    return grad


soft_entropy_grad.__doc__ = f"""Analytic gradient of :func:`soft_entropy` with respect to X.

    With ``w_ij = K_ij (1/C_i + 1/C_j)``,
    ``∂H/∂S_i = (1/(N σ²)) Σ_j w_ij (S_i - S_j)`` and
    ``∂H/∂X_i = ∂H/∂S_i ⊙ T S_i (1 - S_i)``.
{_PARAMS_DOC}
    Returns
    -------
    grad : ndarray
        Same shape as X; float32 for float32 input, float64 otherwise. A
        device array for device input on the ``cuda`` backend.
{_RAISES_DOC}
    """


def soft_entropy_and_grad(X: ArrayLike, temperature: float = 10.0, sigma: float = 0.5, *,
                          threshold: float = 0.5, base: float | None = None,
                          normalize: bool = False, backend: str | None = None):
    return _soft(X, temperature, sigma, threshold, base, normalize, backend, want_grad=True)


soft_entropy_and_grad.__doc__ = f"""Soft entropy and its analytic gradient in one pass pair.

    Cheaper than calling :func:`soft_entropy` and :func:`soft_entropy_grad`
    separately. The ``(value, gradient)`` pair plugs into
    ``scipy.optimize.minimize(..., jac=True)`` after a reshape.
{_PARAMS_DOC}
    Returns
    -------
    H : float or ndarray
        As :func:`soft_entropy`.
    grad : ndarray
        As :func:`soft_entropy_grad`.
{_RAISES_DOC}
    Examples
    --------
    >>> import numpy as np, kdentropy as kde
    >>> from scipy.optimize import minimize
    >>> X0 = np.random.default_rng(0).random((16, 8))
    >>> fun = lambda x: kde.soft_entropy_and_grad(x.reshape(X0.shape), backend="numpy")
    >>> res = minimize(lambda x: (lambda h, g: (h, g.ravel()))(*fun(x)), X0.ravel(), jac=True)
    >>> bool(res.fun < kde.soft_entropy(X0, backend="numpy"))
    True
    """


# ----------------------------------------------------------------------------- hard entropy

def hard_entropy(X: ArrayLike, threshold: float = 0.5, *, base: float | None = None,
                 normalize: bool = False):
    """Exact reproducibility entropy of the binarised patterns.

    Each pattern is binarised as ``X >= threshold``; with ``p_k`` the
    fraction of runs that gave distinct pattern ``k``,
    ``H = -Σ_k p_k log p_k``. Runs in O(N·D) memory and O(N log N · D/8)
    time (rows are bit-packed and sorted; no pairwise comparison).

    Parameters
    ----------
    X : array_like, shape (..., N, D)
        Batch of N patterns of D cells; leading axes index populations.
    threshold : float, optional
        Binarisation threshold. Default 0.5.
    base : float, optional
        Logarithm base; ``None`` (default) gives nats.
    normalize : bool, optional
        If True, divide by D.

    Returns
    -------
    H : float or ndarray
        The entropy; an array of shape ``X.shape[:-2]`` for batched input.

    Raises
    ------
    TypeError
        If X is complex or not numeric.
    ValueError
        If X has fewer than 2 dimensions, no patterns, NaN or infinity, or
        threshold is not finite.

    See Also
    --------
    pattern_counts : the distinct patterns and their counts.
    scipy.stats.entropy : gives the same value from the counts.

    Examples
    --------
    >>> import kdentropy as kde
    >>> float(kde.hard_entropy([[1, 0], [1, 0], [0, 1], [0, 1]], base=2))
    1.0
    """
    theta = _real_scalar(threshold, "threshold")
    unit = _unit(base, normalize)
    A = _as_host_array(X)
    batch_shape = A.shape[:-2]
    factor = _scale(unit, A.shape[-1])
    H = hard.hard_entropy_3d(_to_3d(A), theta) * factor
    return _batch_result(H, batch_shape)


def pattern_counts(X: ArrayLike, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Distinct binary patterns of a batch and how often each occurs.

    Parameters
    ----------
    X : array_like, shape (N, D)
        Batch of N patterns of D cells.
    threshold : float, optional
        Binarisation threshold: a cell is 1 where ``X >= threshold``.

    Returns
    -------
    patterns : ndarray of uint8, shape (K, D)
        The K distinct 0/1 rows, in lexicographic order.
    counts : ndarray of int64, shape (K,)
        How many rows of X binarise to each pattern; sums to N.

    Raises
    ------
    TypeError
        If X is complex or not numeric.
    ValueError
        If X is not 2-D, has no rows or contains NaN or infinity.

    Examples
    --------
    >>> import kdentropy as kde
    >>> P, c = kde.pattern_counts([[0.9, 0.1], [0.2, 0.3], [0.8, 0.0]])
    >>> P.tolist(), c.tolist()
    ([[0, 0], [1, 0]], [1, 2])
    """
    theta = _real_scalar(threshold, "threshold")
    A = _as_host_array(X)
    if A.ndim != 2:
        raise ValueError(f"X must be 2-D (N, D) for pattern_counts; got shape {A.shape}")
    return hard.count_rows(A >= theta)
