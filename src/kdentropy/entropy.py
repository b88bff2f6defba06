"""The public entropy functions: the Python boundary of the library.

Each soft-entropy function validates its keywords once into a
:class:`~kdentropy._params.SoftParams` and hands it to
:func:`kdentropy._soft.compute` (resolve a backend -> call it -> finish). No
numerics live here.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from . import _validation, hard
from ._params import DEFAULT, SoftParams, fill_doc
from ._soft import as_3d, batch_result, compute

__all__ = [
    "soft_entropy",
    "soft_entropy_grad",
    "soft_entropy_and_grad",
    "hard_entropy",
    "pattern_counts",
]


_PARAMETERS_DOC = """
    Parameters
    ----------
    X : array_like, shape (..., N, D)
        Batch of N patterns of D real-valued cells. Leading axes index
        independent populations. float32 and float64 are computed in their own
        precision; bool, integer and float16 inputs are computed in float64.
        Arrays with ``__cuda_array_interface__`` (CuPy, Numba device arrays)
        are processed on the GPU by the ``cuda`` backend.
    {keywords}
    backend : str, optional
        A registered backend (``kdentropy.backends.BACKEND_NAMES``: "numpy",
        "cpu", "cuda", ...) or "auto".
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


_shared_doc = fill_doc(parameters=_PARAMETERS_DOC, raises=_RAISES_DOC)


@_shared_doc
def soft_entropy(X: ArrayLike, temperature: float = DEFAULT.temperature,
                 sigma: float = DEFAULT.sigma, *, threshold: float = DEFAULT.threshold,
                 base: float | None = DEFAULT.base, normalize: bool = DEFAULT.normalize,
                 backend: str | None = None):
    """Differentiable reproducibility entropy of a batch of patterns.

    With ``S = sigmoid(T (X - θ))``, ``K_ij = exp(-||S_i - S_j||² / (2σ²))``
    and soft counts ``C_i = Σ_j K_ij``, the resubstitution estimate is
    ``H = log N - mean_i log C_i``. It lies in ``[0, log N]``: 0 when all
    soft patterns are equal, log N when all are far apart.
{parameters}
    Returns
    -------
    H : float or ndarray
        The entropy; an array of shape ``X.shape[:-2]`` for batched input.
{raises}
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
    H, _ = compute(X, SoftParams(temperature, sigma, threshold, base, normalize), backend,
                   want_grad=False)
    return H


@_shared_doc
def soft_entropy_grad(X: ArrayLike, temperature: float = DEFAULT.temperature,
                      sigma: float = DEFAULT.sigma, *, threshold: float = DEFAULT.threshold,
                      base: float | None = DEFAULT.base, normalize: bool = DEFAULT.normalize,
                      backend: str | None = None):
    """Analytic gradient of :func:`soft_entropy` with respect to X.

    With ``w_ij = K_ij (1/C_i + 1/C_j)``,
    ``∂H/∂S_i = (1/(N σ²)) Σ_j w_ij (S_i - S_j)`` and
    ``∂H/∂X_i = ∂H/∂S_i ⊙ T S_i (1 - S_i)``.
{parameters}
    Returns
    -------
    grad : ndarray
        Same shape as X; float32 for float32 input, float64 otherwise. A
        device array for device input on the ``cuda`` backend.
{raises}
    """
    _, grad = compute(X, SoftParams(temperature, sigma, threshold, base, normalize), backend,
                      want_grad=True)
    return grad


@_shared_doc
def soft_entropy_and_grad(X: ArrayLike, temperature: float = DEFAULT.temperature,
                          sigma: float = DEFAULT.sigma, *, threshold: float = DEFAULT.threshold,
                          base: float | None = DEFAULT.base, normalize: bool = DEFAULT.normalize,
                          backend: str | None = None):
    """Soft entropy and its analytic gradient in one pass pair.

    Cheaper than calling :func:`soft_entropy` and :func:`soft_entropy_grad`
    separately. The ``(value, gradient)`` pair plugs into
    ``scipy.optimize.minimize(..., jac=True)`` after a reshape.
{parameters}
    Returns
    -------
    H : float or ndarray
        As :func:`soft_entropy`.
    grad : ndarray
        As :func:`soft_entropy_grad`.
{raises}
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
    return compute(X, SoftParams(temperature, sigma, threshold, base, normalize), backend,
                   want_grad=True)



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
    threshold = _validation.real_scalar(threshold, "threshold")
    unit = _validation.log_unit(base, normalize)
    A = _validation.host_patterns(X, cast=False)
    factor = _validation.unit_scale(unit, A.shape[-1])
    H = hard.hard_entropy_3d(as_3d(A), threshold) * factor
    return batch_result(H, A.shape[:-2])


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
    threshold = _validation.real_scalar(threshold, "threshold")
    A = _validation.host_patterns(X, cast=False)
    if A.ndim != 2:
        raise ValueError(f"X must be 2-D (N, D) for pattern_counts; got shape {A.shape}")
    return hard.count_rows(hard.binarize(A, threshold))
