"""Computational backends: the contract they meet, the registry and the switch.

The contract
------------
A backend is a module that :data:`REGISTRY` names and that satisfies
:class:`Backend`. It computes the pairwise sums of the soft entropy on a
canonical ``(G, N, D)`` batch of soft patterns ``S``; the estimator (how H and
the per-row coefficients follow from the soft counts) lives in
:mod:`kdentropy._estimator`, validation in :mod:`kdentropy._validation`, the
call flow in :mod:`kdentropy.entropy`.

Adding a backend means writing its module and adding one line to
:data:`REGISTRY`; the contract test (``tests/test_backend_contract.py``) then
runs against it.

The switch
----------
Precedence, highest first: the ``backend=`` keyword, the innermost
:func:`use_backend` context, :func:`set_backend`, the ``KDENTROPY_BACKEND``
environment variable, and finally ``"auto"`` (the first registered backend
that reads device arrays, for device arrays; ``cpu`` otherwise).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .. import _validation

__all__ = [
    "Backend", "BackendUnavailableError", "REGISTRY", "BACKEND_NAMES",
    "available_backends", "check_name", "get_backend", "set_backend", "use_backend", "resolve", "load",
]


@runtime_checkable
class Backend(Protocol):
    """What every backend module provides.

    Attributes
    ----------
    NAME : str
        The name users pass as ``backend=``.
    DEVICE_ARRAYS : bool
        Reads GPU arrays (``__cuda_array_interface__``) in place and returns
        the gradient on the device. Host backends receive validated NumPy
        arrays only.
    BLOCK_PRIMITIVES : bool
        Provides ``block_soft_counts`` and ``block_weighted_grad`` on pairs of
        row blocks, which :mod:`kdentropy.mpi` sweeps over the ranks' shards.
    BLOCK_TILE_ROWS : int or None
        Rows per tile that callers of the block primitives should cut long
        blocks into (a backend that forms dense blocks bounds its memory so),
        or ``None`` when whole blocks stream in bounded memory.
    """

    NAME: str
    DEVICE_ARRAYS: bool
    BLOCK_PRIMITIVES: bool
    BLOCK_TILE_ROWS: int | None

    def unavailable_reason(self) -> str | None:
        """``None`` when the backend can run here, otherwise a one-line reason."""

    def soft_patterns(self, X: Any, temperature: float, threshold: float) -> Any:
        """``S = sigmoid(T (X - theta))`` for a batch of ``G`` populations.

        ``X`` is a validated C-contiguous ``(G, N, D)`` float32/float64 host
        array or, for ``DEVICE_ARRAYS`` backends, any ``(..., N, D)`` device
        array (which the backend validates: dtype, NaN). The result is opaque
        to the caller, which only hands it back to the other two methods:
        host backends return the ``(G, N, D)`` array itself, in X's dtype.
        """

    def soft_counts_and_grad(self, S: Any, sigma: float,
                             coefficients: Callable[[np.ndarray], np.ndarray] | None
                             ) -> tuple[np.ndarray, Any]:
        """Pass 1 and (when ``coefficients`` is given) pass 2 on ``S`` of shape ``(G, N, D)``.

        Returns ``(C0, V)``: ``C0`` the host float64 ``(G, N)`` off-diagonal
        soft counts ``sum_{j != i} K_ij``; ``V`` (like ``S``, or ``None``)
        ``sum_j K_ij (g_i + g_j) (S_i - S_j)`` with ``g = coefficients(C0)``
        (an elementwise map, called once between the passes).
        """

    def input_grad(self, S: Any, V: Any, temperature: float, factor: float,
                   shape: tuple[int, ...]) -> Any:
        """``factor * V * sigmoid_slope(S, T)`` reshaped to ``shape``, in the dtype of S."""


class BackendUnavailableError(ValueError):
    """A known backend was requested but cannot run on this machine."""


# name -> module. The only place a backend is registered.
REGISTRY: dict[str, str] = {
    "numpy": "kdentropy.backends.reference",
    "cpu": "kdentropy.backends.cpu",
    "cuda": "kdentropy.backends.cuda",
}
BACKEND_NAMES = tuple(REGISTRY)
_CHOICES = BACKEND_NAMES + ("auto",)
_HOST_DEFAULT = "cpu"
# What a backend's optional dependency is installed with.
_EXTRA_HINT = {"cuda": " (install it with: pip install 'kdentropy[cuda]')"}

_global_backend: str | None = None
# A ContextVar (not a plain global) so nested and concurrent contexts
# (threads, asyncio tasks) each see their own choice.
_context_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "kdentropy_backend", default=None
)


def _import(name: str) -> Backend:
    try:
        return importlib.import_module(REGISTRY[name])  # type: ignore[return-value]
    except ImportError as exc:  # an optional dependency is missing
        raise BackendUnavailableError(
            f"backend {name!r} is not available: {exc}{_EXTRA_HINT.get(name, '')}"
        ) from exc


def load(name: str) -> Backend:
    """The backend module called ``name``, checked to run here.

    Raises
    ------
    BackendUnavailableError
        If its dependencies are missing or it cannot run on this machine.
    """
    module = _import(name)
    reason = module.unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is not available: {reason}")
    return module


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine.

    Returns
    -------
    list of str
        A subset of :data:`BACKEND_NAMES`, in registry order.
    """
    names = []
    for name in BACKEND_NAMES:
        try:
            load(name)
        except BackendUnavailableError:
            continue
        names.append(name)
    return names


def check_name(name: object, argname: str = "backend") -> str:
    """``name`` as a valid backend choice (a registered name or ``"auto"``)."""
    return _validation.choice(name, argname, _CHOICES)


def set_backend(name: str | None) -> None:
    """Set the process-wide default backend.

    Parameters
    ----------
    name : str or None
        A registered backend (:data:`BACKEND_NAMES`) or "auto".
        ``None`` clears the setting, so the environment variable
        ``KDENTROPY_BACKEND`` (or ``"auto"``) applies again.
    """
    global _global_backend
    _global_backend = None if name is None else check_name(name)


def get_backend() -> str:
    """The backend that a call without ``backend=`` would request now.

    Returns
    -------
    str
        One of ``"auto"``, ``"numpy"``, ``"cpu"``, ``"cuda"``.
    """
    ctx = _context_backend.get()
    if ctx is not None:
        return ctx
    if _global_backend is not None:
        return _global_backend
    env = os.environ.get("KDENTROPY_BACKEND", "").strip()
    if env:
        return check_name(env, "KDENTROPY_BACKEND")
    return "auto"


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager that selects a backend inside a ``with`` block.

    The choice lives in a :class:`contextvars.ContextVar`, so it follows the
    flow of control, not the process:

    * it applies to the code of this thread (and this asyncio task) until
      the block exits, and nested blocks restore the outer choice;
    * a thread started inside the block does *not* see it (Python threads
      start from an empty context) and uses :func:`set_backend` or the
      default, unless its target runs in ``contextvars.copy_context().run``;
      asyncio tasks created inside the block inherit it (they copy the
      context when created);
    * a generator shares its caller's context: one suspended inside the
      block at a ``yield`` leaves the choice in force for the caller until it
      resumes and exits the block. Pass ``backend=`` to calls inside
      generators instead.

    Parameters
    ----------
    name : str
        A registered backend (:data:`BACKEND_NAMES`) or "auto".

    Examples
    --------
    >>> import numpy as np, kdentropy as kde
    >>> with kde.use_backend("numpy"):
    ...     H = kde.soft_entropy(np.zeros((4, 3)))
    """
    token = _context_backend.set(check_name(name))
    try:
        yield
    finally:
        _context_backend.reset(token)


def _device_default() -> str:
    """The first registered backend that reads device arrays in place."""
    errors = []
    for name in BACKEND_NAMES:
        try:
            if _import(name).DEVICE_ARRAYS:
                return name
        except BackendUnavailableError as exc:
            errors.append(str(exc))
    raise BackendUnavailableError("X is a GPU array, but no backend that reads GPU arrays "
                                  f"can be imported: {'; '.join(errors)}")


def resolve(backend: str | None, on_device: bool = False) -> str:
    """Concrete backend name for one call, applying the precedence rules."""
    name = get_backend() if backend is None else check_name(backend)
    if name == "auto":
        return _device_default() if on_device else _HOST_DEFAULT
    return name
