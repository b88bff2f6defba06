"""The soft entropy as a differentiable JAX function, computed by kdentropy's kernels.

:func:`soft_entropy` is a :func:`jax.custom_vjp` whose forward pass calls
:func:`kdentropy.soft_entropy_and_grad` on the host through
:func:`jax.pure_callback` and keeps the gradient as the residual; the backward
pass only scales it by the cotangent. It works under :func:`jax.jit`,
:func:`jax.grad` and :func:`jax.vmap` (a vmapped call is one kernel call on a
batch of populations). Memory is O(N·D) instead of the O(N²) of a dense
formula.

On a GPU or TPU the callback is a device→host→device round trip: XLA copies
x to host memory, kdentropy's host backend (``cpu`` unless
:func:`kdentropy.use_backend`/:func:`kdentropy.set_backend` says otherwise)
computes H and dH/dx there, and both are copied back to the device. The
copies cost O(N·D) and the callback serialises with the device program. For
the GPU kernels in place, call :func:`kdentropy.soft_entropy_and_grad` on a
CuPy/PyTorch view of the data outside ``jit``.

Install with ``pip install 'kdentropy[jax]'``. ``import kdentropy`` never
imports JAX; ``import kdentropy.jax`` does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ImportError as exc:  # the optional extra is not installed
    raise ImportError(
        "kdentropy.jax needs JAX; install it with: pip install 'kdentropy[jax]'"
    ) from exc

from . import _validation, backends
from ._params import DEFAULT, SoftParams, fill_doc
from ._soft import compute

__all__ = ["soft_entropy"]


def _host(params: SoftParams, backend: str, want_grad: bool) -> Callable[[Any], Any]:
    """The host callback: H (and dH/dx) of a ``(..., N, D)`` batch, in x's dtype.

    Exceptions inside ``pure_callback`` are undefined behaviour in JAX, so
    everything that can be checked is checked at trace time; a population
    with NaN or infinity gets NaN for H and its gradient instead of an error.
    """
    def callback(x: Any) -> Any:
        """``H`` or ``(H, dH/dx)`` of the host array ``x``, in its dtype."""
        x = np.asarray(x)
        dtype = x.dtype
        if dtype not in (np.float32, np.float64):  # float16/bfloat16: computed in float64
            x = x.astype(np.float64)
        bad = ~np.isfinite(x).all(axis=(-2, -1))
        if bad.any():
            x = np.where(bad[..., None, None], 0, x).astype(x.dtype)
        H, G = compute(x, params, backend, want_grad)
        H = np.where(bad, np.nan, H).astype(dtype)
        if not want_grad:
            return H
        return H, np.where(bad[..., None, None], np.nan, G).astype(dtype)

    return callback


@functools.lru_cache(maxsize=64)
def _function(params: SoftParams, backend: str) -> Callable[[jax.Array], jax.Array]:
    """The ``custom_vjp`` function for one set of validated keywords (built once each)."""
    value_cb = _host(params, backend, want_grad=False)
    pair_cb = _host(params, backend, want_grad=True)

    def value_shape(x: jax.Array) -> jax.ShapeDtypeStruct:
        """Shape and dtype of H for input ``x``: one value per population."""
        return jax.ShapeDtypeStruct(x.shape[:-2], x.dtype)

    # "expand_dims": under vmap the callback gets the populations as one more
    # leading axis, which the kernels batch natively (one call, not a loop).
    @jax.custom_vjp
    def f(x: jax.Array) -> jax.Array:
        """H alone (no gradient wanted): the value-only callback."""
        return jax.pure_callback(value_cb, value_shape(x), x, vmap_method="expand_dims")

    def f_fwd(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """H and, as the residual, dH/dx from one callback."""
        H, G = jax.pure_callback(pair_cb, (value_shape(x), jax.ShapeDtypeStruct(x.shape, x.dtype)),
                                 x, vmap_method="expand_dims")
        return H, G

    def f_bwd(G: jax.Array, g: jax.Array) -> tuple[jax.Array]:
        """The cotangent of x: the stored gradient scaled by the cotangent ``g`` of H."""
        # H has shape x.shape[:-2]: each population's cotangent scales its (N, D) block.
        return (G * g[..., None, None],)

    f.defvjp(f_fwd, f_bwd)
    return f


@fill_doc()
def soft_entropy(x: Any, temperature: float = DEFAULT.temperature,
                 sigma: float = DEFAULT.sigma, *, threshold: float = DEFAULT.threshold,
                 base: float | None = DEFAULT.base,
                 normalize: bool = DEFAULT.normalize) -> jax.Array:
    """Soft reproducibility entropy of a batch of patterns, differentiable in JAX.

    The same quantity as :func:`kdentropy.soft_entropy`: with
    ``S = sigmoid(T (x - θ))``, ``K_ij = exp(-||S_i - S_j||² / (2σ²))`` and
    ``C_i = Σ_j K_ij``, ``H = log N - mean_i log C_i``, computed by
    kdentropy's kernels on the host via :func:`jax.pure_callback`. Under
    :func:`jax.grad` the forward pass computes H and dH/dx together and the
    backward pass scales dH/dx by the cotangent.

    Parameters
    ----------
    x : array_like, shape (..., N, D)
        N patterns of D real-valued cells; leading axes index independent
        populations. Floating inputs keep their dtype (float32, or float64
        when ``jax_enable_x64`` is on); float16/bfloat16 are computed in
        float64 and returned in their dtype; integer and bool inputs are
        converted to JAX's default float dtype.
    {keywords}

    The keywords must be Python numbers (they are static under ``jit``);
    differentiation is with respect to x only.

    Returns
    -------
    H : jax.Array, shape x.shape[:-2]
        The entropy, in x's (floating) dtype. A population that contains NaN
        or infinity gets NaN (JAX cannot raise from inside a compiled call).

    Raises
    ------
    TypeError
        If x is complex or not numeric, or a keyword has the wrong type
        (including a traced JAX value).
    ValueError
        If x has fewer than 2 dimensions or no patterns, or a keyword value is
        invalid (as :func:`kdentropy.soft_entropy`).

    Notes
    -----
    Works under :func:`jax.jit`, :func:`jax.grad`/:func:`jax.value_and_grad`
    and :func:`jax.vmap` (vmapping over populations is one kernel call).
    Reverse mode only: second derivatives and forward mode (:func:`jax.jvp`,
    :func:`jax.jacfwd`) are not available. The backend is chosen when the
    function is traced (a jitted function keeps it). On GPU/TPU each call
    copies x to the host and H, dH/dx back (see the module documentation).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from kdentropy.jax import soft_entropy
    >>> x = jax.random.uniform(jax.random.key(0), (64, 16))
    >>> g = jax.jit(jax.grad(soft_entropy))(x)
    >>> g.shape
    (64, 16)
    """
    params = SoftParams(temperature, sigma, threshold, base, normalize)
    # The host callback may run on another thread, where use_backend's context is
    # not visible: fix the backend at trace time.
    backend = backends.resolve(None, on_device=False)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):  # (bfloat16 counts as floating here)
        _validation.compute_dtype(x.dtype, "x")  # complex or non-numeric: TypeError
        x = x.astype(jnp.result_type(float))  # float32, or float64 under x64
    _validation.pattern_shape(x.shape, "x")
    return _function(params, backend)(x)
