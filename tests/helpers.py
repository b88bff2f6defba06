"""Shared test helpers: data generators, tolerance rules, finite differences, backend calls.

The one place for each of these; test modules (and ``mpi_scripts/check_mpi.py``)
import them from here, ``conftest.py`` holds fixtures only.

Tolerance rules (every backend against the float64 reference):

* float64: relative 1e-10 (values, and the gradient as a whole array:
  ``|G - G_ref| / |G_ref|``).
* float32: value absolute ``1e-5 log N``, gradient norm-relative 1e-4,
  both against the float64 reference on the same (float32-representable)
  inputs. Where rounding ``S`` to float32 alone already costs more (narrow
  kernels, nearly equal rows), no float32 computation can do better, so the
  bar is raised to a small multiple of that cost
  (:func:`float32_rounding_cost`, :func:`float32_tolerances`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from kdentropy import _estimator, backends

# ----------------------------------------------------------------------------- tolerance rules

#: float64 results: relative error against the float64 reference.
F64_RTOL = 1e-10
#: float32 value: absolute error per unit of log N.
F32_VALUE_ATOL_PER_LOG_N = 1e-5
#: float32 gradient: ``|G - G_ref| / |G_ref|``.
F32_GRAD_NORM_RTOL = 1e-4
#: float32 results may be this many times worse than rounding S to float32 alone.
F32_ROUNDING_FACTOR = 4.0


def norm_rel(a: Any, b: Any) -> float:
    """``|a - b| / |b|`` over the whole array in float64 (``|a|`` when ``b`` vanishes)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    den = float(np.linalg.norm(b))
    diff = float(np.linalg.norm(a - b))
    return diff / den if den > 0 else diff


def float32_tolerances(N: int, rounding: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    """``(value_atol, grad_norm_rtol)`` of a float32 result for a batch of N patterns.

    ``rounding`` is :func:`float32_rounding_cost` of the same inputs: the bar
    never asks for less error than :data:`F32_ROUNDING_FACTOR` times that.
    """
    value = max(F32_VALUE_ATOL_PER_LOG_N * math.log(N), F32_ROUNDING_FACTOR * rounding[0])
    grad = max(F32_GRAD_NORM_RTOL, F32_ROUNDING_FACTOR * rounding[1])
    return value, grad


def assert_float64_close(H, G, H_ref, G_ref, rtol: float = F64_RTOL) -> None:
    """Values elementwise and the gradient as a whole within ``rtol`` of the reference."""
    np.testing.assert_allclose(H, H_ref, rtol=rtol, atol=1e-300)
    if G is not None:
        assert norm_rel(G, G_ref) <= rtol, f"gradient norm-relative error {norm_rel(G, G_ref):.3g}"


def assert_float32_close(H, G, H_ref, G_ref, N: int,
                         rounding: tuple[float, float] | Callable[[], tuple[float, float]]
                         = (0.0, 0.0)) -> None:
    """float32 rule: value abs ``1e-5 log N``, gradient norm-rel 1e-4 against the float64 reference.

    ``rounding`` is what rounding S to float32 alone costs on these inputs
    (:func:`float32_rounding_cost`), or a function that computes it: it is
    only called when the fixed bar is missed, and raises the bar to
    :data:`F32_ROUNDING_FACTOR` times that cost.
    """
    value_err = float(np.max(np.abs(np.asarray(H, np.float64) - np.asarray(H_ref, np.float64))))
    grad_err = 0.0 if G is None else norm_rel(G, G_ref)
    value_tol, grad_tol = float32_tolerances(N)
    if (value_err > value_tol or grad_err > grad_tol) and callable(rounding):
        rounding = rounding()
    if not callable(rounding):
        value_tol, grad_tol = float32_tolerances(N, rounding)
    assert value_err <= value_tol, f"float32 value error {value_err:.3g} > {value_tol:.3g}"
    assert grad_err <= grad_tol, \
        f"float32 gradient norm-relative error {grad_err:.3g} > {grad_tol:.3g}"


# ----------------------------------------------------------------------------- data generators

def clustered(rng: np.random.Generator, N: int | tuple[int, ...], D: int, n_proto: int = 4,
              noise: float = 0.15, dtype: Any = np.float64) -> np.ndarray:
    """Noisy copies of a few random 0/1 prototypes: 0 < H < log N and non-vanishing gradients.

    ``N`` may be a shape ``(..., N)``: leading axes are populations that share
    the prototypes. The result has shape ``(*N, D)``.
    """
    shape = (N,) if isinstance(N, (int, np.integer)) else tuple(N)
    protos = rng.integers(0, 2, size=(n_proto, D)).astype(np.float64)
    X = protos[rng.integers(0, n_proto, size=shape)] + noise * rng.standard_normal(shape + (D,))
    return X.astype(dtype)


def batch(rng: np.random.Generator, G: int, N: int, D: int, kind: str = "clustered",
          dtype: Any = np.float64) -> np.ndarray:
    """A canonical ``(G, N, D)`` batch: ``"clustered"`` (:func:`clustered`) or ``"uniform"``."""
    if kind == "clustered":
        X = clustered(rng, (G, N), D)
    elif kind == "uniform":
        X = rng.random((G, N, D))
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return X.astype(dtype)


# ----------------------------------------------------------------------------- finite differences

def central_differences(f: Callable[[np.ndarray], float], X: np.ndarray,
                        h: float = 1e-6) -> np.ndarray:
    """Central finite-difference gradient of a scalar function ``f`` at ``X``, entry by entry."""
    G = np.empty_like(X)
    for idx in np.ndindex(X.shape):
        Xp, Xm = X.copy(), X.copy()
        Xp[idx] += h
        Xm[idx] -= h
        G[idx] = (f(Xp) - f(Xm)) / (2 * h)
    return G


# ----------------------------------------------------------------------------- backend calls

def to_host(a: Any) -> Any:
    """A device array copied to the host; host arrays and ``None`` as they are.

    ``S`` from ``soft_patterns`` is opaque to callers: a backend may wrap its
    array (the ``cuda`` backend's ``SoftPatterns`` holds it as ``.S``); the
    tests read the array inside.
    """
    if a is None or isinstance(a, np.ndarray):
        return a
    if callable(getattr(a, "copy_to_host", None)):  # Numba device arrays
        return a.copy_to_host()
    if callable(getattr(a, "get", None)) and hasattr(a, "__cuda_array_interface__"):  # CuPy
        return a.get()
    if hasattr(a, "S"):  # a backend's wrapper around its soft patterns
        return to_host(a.S)
    return np.asarray(a)


def simulated(name_or_module: Any) -> bool:
    """Whether a backend runs its kernels in Python (the CUDA simulator): small sizes only."""
    return bool(getattr(backend_module(name_or_module), "SIMULATOR", False))


def fast_backends() -> list[str]:
    """Registered backends that can run here at full speed (not under the CUDA simulator)."""
    available = backends.available_backends()
    return [b for b in backends.BACKEND_NAMES if b in available and not simulated(b)]


def backend_module(name_or_module: Any) -> Any:
    """The backend module for a registered name (checked to run here), or the module itself."""
    return backends.load(name_or_module) if isinstance(name_or_module, str) else name_or_module


class Parts(NamedTuple):
    """Everything one backend call computes, on the host."""

    S: np.ndarray           # (G, N, D) soft patterns, compute dtype
    C0: np.ndarray          # (G, N) float64 off-diagonal soft counts
    V: np.ndarray | None    # (G, N, D) sum_j K_ij (g_i + g_j) (S_i - S_j)
    H: np.ndarray           # (G,) float64 entropy (nats)
    G: np.ndarray | None    # dH/dX, shape and dtype of X3


def backend_parts(name_or_module: Any, X3: np.ndarray, T: float, sigma: float, theta: float,
                  want_grad: bool = True) -> Parts:
    """The backend protocol composed exactly as ``kdentropy.entropy._soft`` does (nats, no scaling).

    No validation runs: ``X3`` must be a C-contiguous float32/float64
    ``(G, N, D)`` array with ``N >= 2`` and ``D >= 1``.
    """
    be = backend_module(name_or_module)
    S = be.soft_patterns(X3, T, theta)
    C0, V = be.soft_counts_and_grad(S, sigma,
                                    _estimator.row_coefficients if want_grad else None)
    N = X3.shape[-2]
    H = _estimator.entropy_from_counts(C0)
    G = None
    if want_grad:
        G = be.input_grad(S, V, T, _estimator.gradient_factor(N, sigma), X3.shape)
    return Parts(to_host(S), np.asarray(to_host(C0)), to_host(V), H, to_host(G))


def backend_value_and_grad(name_or_module: Any, X3: np.ndarray, T: float, sigma: float,
                           theta: float, want_grad: bool = True
                           ) -> tuple[np.ndarray, np.ndarray | None]:
    """``(H, dH/dX)`` of a ``(G, N, D)`` batch from one backend (``dH/dX``: None without grad)."""
    parts = backend_parts(name_or_module, X3, T, sigma, theta, want_grad)
    return parts.H, parts.G


def reference_value_and_grad(X3: np.ndarray, T: float, sigma: float, theta: float,
                             want_grad: bool = True):
    """The float64 reference backend on ``X3`` promoted to float64 (exact input values)."""
    return backend_value_and_grad("numpy", np.asarray(X3, dtype=np.float64), T, sigma, theta,
                                  want_grad)


def float32_rounding_cost(X3: np.ndarray, T: float, sigma: float, theta: float
                          ) -> tuple[float, float]:
    """What rounding S to float32 alone costs: ``(max |dH|, gradient norm-rel error)``.

    The reference computes everything after ``S`` in float64, so on float32
    input it differs from its float64 result only by the rounding of ``S``
    (and of the returned gradient).
    """
    H64, G64 = reference_value_and_grad(X3, T, sigma, theta)
    H32, G32 = backend_value_and_grad("numpy", np.asarray(X3, dtype=np.float32), T, sigma, theta)
    return float(np.max(np.abs(H32 - H64))), norm_rel(G32, G64)
