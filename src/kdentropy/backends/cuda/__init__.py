"""CUDA backend (``backend="cuda"``): numba.cuda kernels, with cuBLAS Gram panels for large D.

Imported lazily by :mod:`kdentropy.backends` only when the ``cuda`` backend is
requested, so a machine without numba-cuda or without a GPU can still import
kdentropy. Without a GPU the same kernels run under Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1`` set before Numba is imported), which is how the
test-suite exercises them.

Call flow (one call, ``G`` populations of ``N`` patterns of ``D`` cells)
-------------------------------------------------------------------------
1. :func:`soft_patterns`: ``S = sigmoid(T (X - theta))`` into a contiguous
   ``(G, N, D)`` device array, reading X in place (any strides, any real
   dtype) and checking it for NaN/inf on the device.
2. :func:`soft_counts_and_grad`: column means of S and the float64 squared
   norms of the centred rows (O(N·D)); their largest value ``M`` and sigma
   fix the *conditioning* ``kappa(dtype) = eps(dtype) M / sigma^2``, the
   relative error that a Gram-form distance ``|a|^2 + |b|^2 - 2 a.b`` puts
   into ``d2 / (2 sigma^2)``. :func:`plan` picks the route from it:

   * **panel** (``D >= PANEL_MIN_D`` and cuBLAS reachable through CuPy):
     Gram panels by GEMM plus fused epilogues (:mod:`._panels`), in the
     input dtype when ``kappa`` is within the input dtype's limit
     (:data:`.._conditioning.GRAM_LIMITS`, shared with the cpu backend), else
     in float64 (a float32
     input then runs float64 GEMMs, as fast as float32 on H100/H200);
   * **fused** (small D, no CuPy, or a float64 Gram still too coarse):
     register-tiled kernels that never store a pair value (:mod:`._fused`),
     Gram form when ``kappa`` is within that limit, direct differences otherwise.

   Pass 1 gives ``C0``, copied to the host (O(G N)); the estimator's
   coefficients ``g = coefficients(C0)`` go back (O(G N)) and pass 2 gives
   ``V_i = sum_j K_ij (g_i + g_j) (S_i - S_j)`` in float64 on the device.
3. :func:`input_grad`: the chain rule through the sigmoid, returned as the
   kind of array the caller passed (CuPy, Numba device array or NumPy).

Every sum runs in a fixed order (no atomics): repeats are bit-identical.
Memory: a few ``N x D`` arrays plus bounded workspaces (panel budget
``_panels.workspace_bytes()``, split partials ``_fused.SPLIT_BUFFER_BYTES``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numba import cuda

from ... import _validation
from .. import _conditioning
from . import _elementwise, _fused, _panels
from ._device import SIMULATOR, as_numba_device_array, to_kind

NAME = "cuda"
DEVICE_ARRAYS = True
BLOCK_PRIMITIVES = False
BLOCK_TILE_ROWS = None  # no block primitives (kdentropy.mpi uses a host backend)

__all__ = [
    "NAME", "DEVICE_ARRAYS", "BLOCK_PRIMITIVES", "BLOCK_TILE_ROWS", "SIMULATOR", "PANEL_MIN_D",
    "SoftPatterns", "Plan", "plan", "unavailable_reason", "soft_patterns",
    "soft_counts_and_grad", "input_grad",
]

#: Smallest D for the Gram-panel route: below it the N^2 panel traffic, not
#: the GEMMs, would set the time, and the fused kernels win.
PANEL_MIN_D = 128
# Test hook: "fused" or "panel" overrides the D rule (accuracy rules still apply).
_FORCE_ROUTE: str | None = None


class Plan(NamedTuple):
    """How one call computes its pair sums."""

    route: str  # "panel" or "fused"
    work_dtype: np.dtype  # precision of the Gram products / pair kernels
    gram: bool  # Gram-form distances (else direct differences)


def plan(dtype: np.dtype, D: int, max_sqn: float, sigma: float,
         gemm_ok: bool | None = None) -> Plan:
    """Choose route, work dtype and distance form from the conditioning.

    Parameters
    ----------
    dtype : dtype
        Compute dtype of the call (float32 or float64).
    D : int
        Cells per pattern.
    max_sqn : float
        Largest squared norm of a row of S centred on its column mean.
    sigma : float
        Kernel width.
    gemm_ok : bool, optional
        Whether cuBLAS GEMMs are reachable; default: ask :mod:`._panels`.

    Returns
    -------
    Plan
    """
    dtype = np.dtype(dtype)

    limit = _conditioning.GRAM_LIMITS[dtype]  # the accuracy bar of the input's dtype

    def accurate(wd: type) -> bool:
        return _conditioning.gram_condition(np.dtype(wd), max_sqn, sigma) <= limit

    want_panel = D >= PANEL_MIN_D if _FORCE_ROUTE is None else _FORCE_ROUTE == "panel"
    if want_panel and (_panels.gemm_available() if gemm_ok is None else gemm_ok):
        candidates = [np.dtype(np.float64)]
        if dtype == np.float32 and _panels.float32_gemm_is_fp32():
            candidates.insert(0, dtype)
        for wd in candidates:
            if accurate(wd):
                return Plan("panel", wd, True)
    return Plan("fused", dtype, accurate(dtype))


def _numpy_incompatibility() -> str | None:
    """Why the installed numba-cuda cannot compile with the installed NumPy, if it cannot.

    numba-cuda <= 0.30.4 registers an overload for ``np.row_stack`` when its
    array module loads (at the first kernel compilation); NumPy 2.5 removed
    that alias, so every compilation fails with an AttributeError.
    """
    if hasattr(np, "row_stack"):
        return None
    try:
        spec = importlib.util.find_spec("numba.cuda.np.arrayobj")
        source = Path(spec.origin).read_text() if spec and spec.origin else ""
    except (ImportError, OSError, ValueError):
        return None
    if "np.row_stack" not in source:
        return None
    try:
        from importlib.metadata import version
        nc = f"numba-cuda {version('numba-cuda')}"
    except Exception:
        nc = "this numba-cuda"
    return (f"{nc} needs numpy.row_stack, which NumPy {np.__version__} removed, so no "
            "kernel can compile; install NumPy < 2.5 (pip install 'numpy<2.5', as "
            "pip install 'kdentropy[cuda]' does) or a numba-cuda release that supports "
            "NumPy 2.5")


def unavailable_reason() -> str | None:
    """Why the CUDA backend cannot run here, or ``None`` when it can.

    Returns
    -------
    str or None
        ``None`` when numba-cuda finds a usable GPU (driver, device and the
        NVVM compiler) or the CUDA simulator is enabled; otherwise a one-line
        explanation naming what is missing and how to fix it.
    """
    if SIMULATOR:  # the simulator runs the kernels as Python: no compilation
        return None
    clash = _numpy_incompatibility()
    if clash is not None:
        return clash
    try:
        if cuda.is_available():
            return None
    except Exception as exc:  # a broken installation must not escape as a crash
        return f"numba-cuda could not query the GPU ({exc})"
    try:
        from numba.cuda.cudadrv import driver
        error = getattr(driver.driver, "initialization_error", None)
    except Exception as exc:
        error = str(exc)
    if error:
        error = " ".join(str(error).split())  # the driver's message spans lines
        return (f"no usable CUDA driver or GPU ({error}); set "
                "NUMBA_ENABLE_CUDASIM=1 to run the kernels on the CPU simulator")
    return ("the CUDA driver and GPU were found but numba-cuda cannot compile for them "
            "(NVVM/NVRTC missing); install the toolkit pieces with "
            "pip install 'numba-cuda[cu12]' or 'numba-cuda[cu13]'")


@dataclass(frozen=True)
class SoftPatterns:
    """What :func:`soft_patterns` hands back to the caller (opaque to it).

    Attributes
    ----------
    S : device array, shape (G, N, D)
        Soft patterns in the compute dtype.
    kind : {"numpy", "cupy", "numba"}
        The kind of array X was; the gradient is returned as the same kind.
    """

    S: Any
    kind: str


def soft_patterns(X: Any, temperature: float, threshold: float) -> SoftPatterns:
    """``S = sigmoid(T (X - theta))`` on the device.

    Parameters
    ----------
    X : ndarray or device array
        A validated C-contiguous ``(G, N, D)`` float32/float64 NumPy array, or
        any device array of shape ``(..., N, D)`` (CuPy, Numba, anything with
        ``__cuda_array_interface__``), read in place with its strides; bool,
        integer and float16 device input is computed in float64.
    temperature, threshold : float
        Sigmoid sharpness T and centre theta.

    Returns
    -------
    SoftPatterns

    Raises
    ------
    TypeError
        If a device X is complex or not numeric, or not a device array.
    ValueError
        If X holds NaN or infinity.
    """
    if isinstance(X, np.ndarray):
        arr, kind, dtype = cuda.to_device(X), "numpy", np.dtype(X.dtype)
    else:
        arr, kind = as_numba_device_array(X)
        dtype = _validation.compute_dtype(arr.dtype)
        _validation.pattern_shape(arr.shape)
    return SoftPatterns(_elementwise.soft_patterns(arr, dtype, temperature, threshold), kind)


def _trivial(S: Any, want_grad: bool) -> tuple[np.ndarray, Any]:
    """Counts and sums when no pair work is needed: N = 1, D = 0 or G = 0."""
    G, N, D = (int(n) for n in S.shape)
    # Without cells every pattern equals every other: K_ij = 1.
    C0 = np.full((G, N), float(N - 1) if D == 0 else 0.0)
    V = cuda.to_device(np.zeros((G, N, D))) if want_grad else None
    return C0, V


def soft_counts_and_grad(S: SoftPatterns, sigma: float,
                         coefficients: Callable[[np.ndarray], np.ndarray] | None
                         ) -> tuple[np.ndarray, Any]:
    """Pass 1 and (with ``coefficients``) pass 2 on the device.

    Parameters
    ----------
    S : SoftPatterns
        From :func:`soft_patterns`.
    sigma : float
        Kernel width.
    coefficients : callable or None
        Elementwise map from the host ``C0 (G, N)`` to the row coefficients
        ``g``; called once. ``None`` runs pass 1 only.

    Returns
    -------
    C0 : ndarray of float64, shape (G, N)
        Host off-diagonal soft counts ``sum_{j != i} K_ij``.
    V : device array of float64, shape (G, N, D), or None
        ``sum_j K_ij (g_i + g_j) (S_i - S_j)``.
    """
    Sd = S.S
    G, N, D = (int(n) for n in Sd.shape)
    want_grad = coefficients is not None
    if G == 0 or N == 1 or D == 0:
        return _trivial(Sd, want_grad)
    mean, sqn = _elementwise.column_stats(Sd)
    how = plan(Sd.dtype, D, float(sqn.copy_to_host().max()), sigma)
    # Direct differences need no centring; Gram forms need it (smaller norms,
    # smaller cancellation) and may run in float64 for float32 input.
    Sc = _elementwise.centered(Sd, mean, how.work_dtype) if how.gram else Sd
    if how.route == "panel":
        panels = _panels.PanelPlan(G, N, D, how.work_dtype)
        C0 = _panels.counts(Sc, sqn, sigma, panels).copy_to_host()
    else:
        C0 = _fused.counts(Sc, sqn, sigma, how.gram).copy_to_host()
    if not want_grad:
        return C0, None
    # Rounded once to the work dtype: the kernels form the weights in it.
    coef = cuda.to_device(np.ascontiguousarray(coefficients(C0), dtype=how.work_dtype))
    if how.route == "panel":
        V = _panels.weighted_sums(Sc, sqn, coef, sigma, panels)
    else:
        V = _fused.weighted_sums(Sc, sqn, coef, sigma, how.gram)
    return C0, V


def input_grad(S: SoftPatterns, V: Any, temperature: float, factor: float,
               shape: tuple[int, ...]) -> Any:
    """``factor * V * sigmoid_slope(S, T)`` shaped like X, in the dtype of S.

    Returns
    -------
    array
        A CuPy array for CuPy input, a NumPy array for host input, a Numba
        device array otherwise.
    """
    out = _elementwise.chain_rule(V, S.S, temperature, factor)
    return to_kind(out.reshape(shape), S.kind)
