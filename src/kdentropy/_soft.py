"""One soft-entropy computation from validated keywords: resolve a backend -> call it -> finish.

The public functions (:mod:`kdentropy.entropy`, the framework wrappers, the
training loss) call :func:`compute` with a :class:`~kdentropy._params.SoftParams`
they built once; the MPI layer, which sweeps the backend's block primitives
itself, shares the finishing steps (:func:`batch_result`,
:func:`trivial_result`, :func:`entropy_value`, :func:`gradient_scale`). No
numerics live here: those are in :mod:`kdentropy._estimator`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _estimator, _validation, backends
from ._params import SoftParams

__all__ = [
    "as_3d",
    "batch_result",
    "compute",
    "entropy_value",
    "gradient_scale",
    "trivial_result",
]


def batch_result(H: np.ndarray, batch_shape: tuple[int, ...]) -> Any:
    """A float64 scalar for a single population, an array of the batch shape otherwise."""
    return np.float64(H[0]) if batch_shape == () else H.reshape(batch_shape)


def as_3d(A: np.ndarray) -> np.ndarray:
    """A C-contiguous ``(G, N, D)`` view (or copy) of a ``(..., N, D)`` array."""
    N, D = A.shape[-2:]
    G = int(np.prod(A.shape[:-2], dtype=np.int64))  # explicit: -1 is ambiguous when D = 0
    return np.ascontiguousarray(A.reshape((G, N, D)))


def trivial_result(shape: tuple[int, ...], dtype: np.dtype, want_grad: bool
                   ) -> tuple[Any, np.ndarray | None]:
    """H = 0 and a zero gradient: one pattern, or patterns without cells (all equal)."""
    G = int(np.prod(shape[:-2], dtype=np.int64))
    return (batch_result(np.zeros(G), shape[:-2]),
            np.zeros(shape, dtype=dtype) if want_grad else None)


def entropy_value(C0: np.ndarray, params: SoftParams, D: int) -> np.ndarray:
    """H of each population from its soft counts, in the requested unit."""
    return _estimator.entropy_from_counts(C0) * params.unit_scale(D)


def gradient_scale(params: SoftParams, N: int, D: int) -> float:
    """The scalar that multiplies the weighted pair sums in dH/dX (unit times 1/(N σ²))."""
    return params.unit_scale(D) * _estimator.gradient_factor(N, params.sigma)


def compute(X: Any, params: SoftParams, backend: str | None, want_grad: bool
            ) -> tuple[Any, Any]:
    """H (and dH/dX when ``want_grad``) of a batch, with keywords already validated.

    Parameters
    ----------
    X : array_like or device array, shape (..., N, D)
        The batch; checked here (shape, dtype, finite values).
    params : SoftParams
        The validated keywords.
    backend : str or None
        As the public functions' ``backend`` keyword.
    want_grad : bool
        Also compute the gradient.

    Returns
    -------
    H : float or ndarray
        A float64 scalar for one population, else an array of the batch shape.
    grad : ndarray, device array or None
        Same shape as X, in the compute dtype; ``None`` without ``want_grad``.
    """
    if type(X) is np.ndarray:  # a host array: a backend may take small ones in one call
        be = backends.load(backends.resolve(backend))
        small = getattr(be, "small_batch", None)
        if small is not None and X.ndim >= 2 and X.shape[-2] >= 2 and X.shape[-1] >= 1:
            N, D = X.shape[-2:]
            done = small(X, params.temperature, params.threshold, params.sigma,
                         gradient_scale(params, N, D) if want_grad else None)
            if done is not None:
                return batch_result(entropy_value(done[0], params, D), X.shape[:-2]), done[1]
        on_device = False
    else:
        on_device = _validation.is_device_array(X)
        be = backends.load(backends.resolve(backend, on_device))
    if on_device and be.DEVICE_ARRAYS:
        shape = _validation.pattern_shape(X.shape)  # the backend checks dtype and values
    else:
        A = _validation.host_patterns(X)
        shape = A.shape
        if A.size == 0 or shape[-2] == 1:
            return trivial_result(shape, A.dtype, want_grad)
        X = as_3d(A)
    S = be.soft_patterns(X, params.temperature, params.threshold)
    C0, V = be.soft_counts_and_grad(S, params.sigma,
                                    _estimator.row_coefficients if want_grad else None)
    N, D = shape[-2:]
    H = batch_result(entropy_value(C0, params, D), shape[:-2])
    if not want_grad:
        return H, None
    return H, be.input_grad(S, V, params.temperature, gradient_scale(params, N, D), shape)
