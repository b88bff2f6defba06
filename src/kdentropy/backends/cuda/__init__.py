"""CUDA backend (``backend="cuda"``): numba.cuda kernels, with cuBLAS Gram panels for large D.

Imported lazily by :mod:`kdentropy.backends` only when the ``cuda`` backend is
requested, so a machine without numba-cuda or without a GPU can still import
kdentropy. Kernels are compiled by numba-cuda-mlir when it is installed, else
by numba-cuda (:mod:`._compiler`, the only module that imports either).
Without a GPU the same kernels run under numba-cuda's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1`` set before Numba is imported), which is how the
test-suite exercises them.

Call flow (one call, ``G`` populations of ``N`` patterns of ``D`` cells)
-------------------------------------------------------------------------
Everything runs on one stream, the caller's current CuPy stream
(:func:`._device.call_stream`, fixed by :func:`soft_patterns` for the call).

1. :func:`soft_patterns`: ``S = sigmoid(T (X - theta))`` into a contiguous
   ``(G, N, D)`` device array, reading X in place (any strides, any real
   dtype) and setting a device flag for NaN/inf.
2. :func:`soft_counts_and_grad`: column means of S and the float64 squared
   norms of the centred rows (O(N·D)); the NaN flag and their largest value
   ``M`` come to the host in one 16-byte copy. :func:`plan` then asks
   :func:`.._conditioning.distance_precision` (the one rule every backend
   follows) for the work dtype from ``M`` and sigma, and picks the route:

   * **panel** (where the offline instruction model says it is faster,
     :func:`._routing.fused_beats_panels`, and cuBLAS is reachable through CuPy):
     Gram panels by GEMM plus fused epilogues (:mod:`._panels`), with the K
     cache when ``G N^2`` kernel values fit in the memory budget; float32
     work is promoted to float64 when CuPy runs float32 products in TF32;
   * **fused** (where the model prefers it, or direct differences): register-tiled
     kernels (:mod:`._fused`), Gram form in the work dtype, or direct
     differences where even a float64 Gram product is too coarse. The Gram
     form keeps pass 1's kernel values (the upper-triangle tiles, ``G N^2 / 2``
     values) when they fit in the same budget, so that pass 2 forms no
     distance (:mod:`._tile_apply`); otherwise pass 2 recomputes them.

   Pass 1 gives ``C0``, copied to the host (O(G N), the contract's return
   value); the estimator's coefficients ``g = coefficients(C0)`` go back
   (O(G N)) and pass 2 gives ``V_i = sum_j K_ij (g_i + g_j) (S_i - S_j)`` in
   float64 on the device. Float32 Gram panels check the cancellation in
   ``rowsum_i Sc_i - (W Sc)_i`` (:func:`.._conditioning.float32_pair_sums_are_accurate`,
   one more 16-byte-per-population copy) and redo the populations that
   missed it in float64.
3. :func:`input_grad`: the chain rule through the sigmoid, returned as the
   kind of array the caller passed (CuPy, Numba device array or NumPy).

Every sum runs in a fixed order (no atomics): repeats are bit-identical.
Memory: a few ``N x D`` arrays plus bounded workspaces (panel budget
:func:`._panels.panel_plan`, split partials ``_fused.SPLIT_BUFFER_BYTES``),
all from CuPy's memory pool once CuPy is loaded (:func:`._device.empty`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ... import _validation
from .. import _conditioning
from . import _device, _elementwise, _fused, _panels, _routing, _tile_apply
from ._compiler import COMPILER, SIMULATOR, cuda, driver_initialization_error
from ._device import (
    as_numba_device_array,
    call_stream,
    stream_handle,
    to_device,
    to_host,
    to_kind,
)

NAME = "cuda"
DEVICE_ARRAYS = True
BLOCK_PRIMITIVES = False
BLOCK_TILE_ROWS = None  # no block primitives (kdentropy.mpi uses a host backend)

__all__ = [
    "BLOCK_PRIMITIVES",
    "BLOCK_TILE_ROWS",
    "COMPILER",
    "DEVICE_ARRAYS",
    "NAME",
    "ROUTES",
    "SIMULATOR",
    "Plan",
    "SoftPatterns",
    "input_grad",
    "plan",
    "soft_counts_and_grad",
    "soft_patterns",
    "unavailable_reason",
]

#: Smallest D for the Gram-panel route: below it the N^2 panel traffic, not
#: the GEMMs, would set the time, and the fused kernels win.
#: The routes :func:`plan` chooses between.
ROUTES = ("fused", "panel")


class Plan(NamedTuple):
    """How one call computes its pair sums (what :func:`plan` decided)."""

    route: str  # "panel" or "fused"
    work_dtype: np.dtype  # precision of the Gram products / pair kernels
    gram: bool  # Gram-form distances (else direct differences)
    panel_rows: int  # rows per Gram panel (0 on the fused route)
    kcache: bool  # pass 1's kernel values kept for pass 2 (either route)


def plan(dtype: np.dtype, shape: tuple[int, int, int], max_sqn: float, sigma: float, *,
         route: str | None = None, gemm_ok: bool | None = None,
         available_bytes: int | None = None) -> Plan:
    """Choose route, work dtype, distance form and panel memory for one call.

    Parameters
    ----------
    dtype : dtype
        Compute dtype of the call (float32 or float64).
    shape : (G, N, D)
        Populations, patterns per population, cells per pattern.
    max_sqn : float
        Largest squared norm of a row of S centred on its column mean.
    sigma : float
        Kernel width.
    route : {"fused", "panel"}, optional
        Overrides the model's choice (tests run both routes on the same data); the
        accuracy rule still applies, so direct differences are always fused.
    gemm_ok : bool, optional
        Whether cuBLAS GEMMs are reachable; default: ask :mod:`._panels`.
    available_bytes : int, optional
        Device memory to size the panels and the K cache with (half of it is
        the budget, :data:`._panels.KCACHE_FRACTION`); default: ask :mod:`._panels`.

    Returns
    -------
    Plan
    """
    if route not in (None, *ROUTES):
        raise ValueError(f"route must be one of {ROUTES} or None; got {route!r}")
    dtype = np.dtype(dtype)
    G, N, D = (int(n) for n in shape)
    work = _conditioning.distance_precision(dtype, max_sqn, sigma)
    if work is None:
        return Plan("fused", dtype, False, 0, False)
    # Routed by the calibrated instruction model (asv_benchmarks/gpu_model.py),
    # not by a constant: it predicts which route is faster for this (N, D, dtype).
    kept = _fused.kept_bytes(G, N, D, work)
    free = _device.available_bytes() if available_bytes is None else available_bytes
    kcache = 0 < kept <= _panels.KCACHE_FRACTION * free
    want_panel = (not _routing.fused_beats_panels(N, D, work, kcache) if route is None
                  else route == "panel")
    if want_panel and (_panels.gemm_available() if gemm_ok is None else gemm_ok):
        if work == np.float32 and not _panels.float32_gemm_is_fp32():
            work = np.dtype(np.float64)  # accurate wherever float32 was
        rows, cached = _panels.panel_plan(G, N, work, available_bytes)
        return Plan("panel", work, True, rows, cached)
    return Plan("fused", np.dtype(work), True, 0, kcache)


# Set once a GPU was found: every call asks (through ``backends.load``), and the
# metadata lookups below cost about a millisecond; a found GPU does not go away.
_found_gpu = False


def unavailable_reason() -> str | None:
    """Why the CUDA backend cannot run here, or ``None`` when it can.

    Returns
    -------
    str or None
        ``None`` when the compiler finds a usable GPU (driver, device and the
        NVVM compiler) or the CUDA simulator is enabled; otherwise a one-line
        explanation naming what is missing and how to fix it.
    """
    global _found_gpu
    if SIMULATOR or _found_gpu:  # the simulator runs the kernels as Python: no compilation
        return None
    from importlib import metadata
    installed = []
    for dist in ("numba-cuda", "numba-cuda-mlir"):  # _compiler.COMPILERS
        try:
            installed.append(metadata.version(dist))
        except metadata.PackageNotFoundError:
            pass
    if not installed:
        # Numba's deprecated built-in numba.cuda imports without the extra and
        # would blame the driver; the missing piece is the extra.
        return ("the cuda extra is not installed (numba-cuda and CuPy); "
                "install it with: pip install 'kdentropy[cuda]'")
    try:
        if cuda.is_available():
            _found_gpu = True
            return None
    except Exception as exc:  # a broken installation must not escape as a crash
        return f"{COMPILER} could not query the GPU ({exc})"
    error = driver_initialization_error()
    if error:
        return f"no usable CUDA driver or GPU on this machine ({error})"
    return (f"the CUDA driver and GPU were found but {COMPILER} cannot compile for them "
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
    bad : device int32 array, shape (1,)
        Set where X held NaN or infinity; read with the call's first copy to the host.
    stream : stream
        The stream the whole call runs on.
    """

    S: Any
    kind: str
    bad: Any
    stream: Any


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
        NaN and infinity in X are reported by :func:`soft_counts_and_grad`,
        which reads the flag with its first copy to the host.

    Raises
    ------
    TypeError
        If a device X is complex or not numeric, or not a device array.
    """
    stream = call_stream()
    if isinstance(X, np.ndarray):
        arr, kind, dtype = to_device(X, stream), "numpy", np.dtype(X.dtype)
    else:
        arr, kind = as_numba_device_array(X, stream)
        dtype = _validation.compute_dtype(arr.dtype)
        _validation.pattern_shape(arr.shape)
    S, bad = _elementwise.soft_patterns(arr, dtype, temperature, threshold, stream)
    return SoftPatterns(S, kind, bad, stream)


def _raise_if_bad(bad: bool) -> None:
    if bad:
        raise ValueError("X must not contain NaN or infinity")


def _trivial(S: SoftPatterns, want_grad: bool) -> tuple[np.ndarray, Any]:
    """Counts and sums when no pair work is needed: N = 1, D = 0 or G = 0."""
    _raise_if_bad(_elementwise.read_flag(S.bad, S.stream))
    G, N, D = (int(n) for n in S.S.shape)
    # Without cells every pattern equals every other: K_ij = 1.
    C0 = np.full((G, N), float(N - 1) if D == 0 else 0.0)
    V = to_device(np.zeros((G, N, D)), S.stream) if want_grad else None
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

    Raises
    ------
    ValueError
        If X held NaN or infinity.
    """
    Sd, stream = S.S, S.stream
    G, N, D = (int(n) for n in Sd.shape)
    want_grad = coefficients is not None
    if G == 0 or N == 1 or D == 0:
        return _trivial(S, want_grad)
    mean, sqn = _elementwise.column_stats(Sd, stream)
    bad, max_sqn = _elementwise.call_header(S.bad, sqn, stream)
    _raise_if_bad(bad)
    how = plan(Sd.dtype, (G, N, D), max_sqn, sigma)
    # Direct differences need no centring; Gram forms need it (smaller norms,
    # smaller cancellation) and may run in float64 for float32 input.
    Sc = _elementwise.centered(Sd, mean, how.work_dtype, stream) if how.gram else Sd
    if how.route == "panel":
        panels = _panels.PanelPlan(how.panel_rows, how.kcache)
        buf = _panels.buffer(G, N, how.work_dtype, panels)
        C0 = to_host(_panels.counts(Sc, sqn, sigma, panels, buf, stream), stream)
    else:
        kept = _tile_apply.new_cache(G, N, how.work_dtype) if how.kcache and want_grad else None
        with _on_default_stream(stream):
            C0 = to_host(_fused.counts(Sc, sqn, sigma, how.gram, kept), cuda.default_stream())
    if not want_grad:
        return C0, None
    g = np.asarray(coefficients(C0))
    # Rounded once to the work dtype: the kernels form the weights in it.
    coef = to_device(np.ascontiguousarray(g, dtype=how.work_dtype), stream)
    if how.route != "panel":
        with _on_default_stream(stream):
            V = _fused.weighted_sums(Sc, sqn, coef, sigma, how.gram, kept)
        return C0, V
    V, rowsum = _panels.weighted_sums(Sc, sqn, coef, sigma, panels, buf, stream)
    if how.work_dtype == np.float32:
        _redo_cancelled_populations(Sd, mean, sqn, g, sigma, V, rowsum, stream)
    return C0, V


def _redo_cancelled_populations(Sd: Any, mean: Any, sqn: Any, g: np.ndarray, sigma: float,
                                V: Any, rowsum: Any, stream: Any) -> None:
    """Redo pass 2 in float64 for the populations whose float32 ``rowsum Sc - W Sc`` cancelled.

    Tight clusters make ``S_i - S_j`` far smaller than ``Sc``; the rule and
    its limit are the cpu backend's (:mod:`.._conditioning`).
    """
    norms = _elementwise.pair_sum_norms(rowsum, sqn, V, stream)
    redo = [p for p, (sub, res) in enumerate(norms)
            if not _conditioning.float32_pair_sums_are_accurate(float(sub), float(res))]
    if not redo:
        return
    N = int(Sd.shape[1])
    f64 = np.dtype(np.float64)
    Sc = _elementwise.centered(Sd, mean, f64, stream)
    panels = _panels.panel_plan(1, N, f64)._replace(cached=False)
    buf = _panels.buffer(1, N, f64, panels)
    coef = to_device(np.ascontiguousarray(g, dtype=f64), stream)
    _panels.weighted_sums(Sc, sqn, coef, sigma, panels, buf, stream, populations=redo, V=V,
                          rowsum=rowsum)


@contextlib.contextmanager
def _on_default_stream(stream: Any) -> Iterator[None]:
    """Order the fused route's launches, made on Numba's default stream, with the call's stream.

    ``_fused`` takes no stream yet: when the call runs on another stream, the
    host waits for that stream before the launches and for the default
    stream after them. (Nothing waits when the call's stream is the default.)
    """
    other = stream_handle(stream) != 0
    if other:
        stream.synchronize()
    yield
    if other:
        cuda.default_stream().synchronize()


def input_grad(S: SoftPatterns, V: Any, temperature: float, factor: float,
               shape: tuple[int, ...]) -> Any:
    """``factor * V * sigmoid_slope(S, T)`` shaped like X, in the dtype of S.

    Returns
    -------
    array
        A CuPy array for CuPy input, a NumPy array for host input, a Numba
        device array otherwise.
    """
    out = _elementwise.chain_rule(V, S.S, temperature, factor, S.stream)
    return to_kind(out.reshape(shape), S.kind, S.stream)
