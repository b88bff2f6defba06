"""Backend registry and switch.

Precedence, highest first: the ``backend=`` keyword, the innermost
:func:`use_backend` context, :func:`set_backend`, the ``KDENTROPY_BACKEND``
environment variable, and finally ``"auto"`` (``cuda`` for device arrays,
``cpu`` otherwise).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
from collections.abc import Iterator
from types import ModuleType

KNOWN_BACKENDS = ("numpy", "cpu", "cuda")
_CHOICES = KNOWN_BACKENDS + ("auto",)

_global_backend: str | None = None
# A ContextVar (not a plain global) so nested and concurrent contexts
# (threads, asyncio tasks) each see their own choice.
_context_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "kdentropy_backend", default=None
)


class BackendUnavailableError(ValueError):
    """A known backend was requested but cannot run on this machine."""


def _check_name(name: object, argname: str = "backend") -> str:
    if not isinstance(name, str):
        raise TypeError(f"{argname} must be a string, one of {_CHOICES}; got {type(name).__name__}")
    key = name.strip().lower()
    if key not in _CHOICES:
        raise ValueError(f"unknown {argname} {name!r}; expected one of {_CHOICES}")
    return key


def _load(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"kdentropy.backends.{name}")
    except ImportError as exc:  # an optional dependency (numba-cuda) is missing
        hint = " (install it with: pip install 'kdentropy[cuda]')" if name == "cuda" else ""
        raise BackendUnavailableError(
            f"backend {name!r} is not available: {exc}{hint}"
        ) from exc


def backend_module(name: str) -> ModuleType:
    """Import a backend by name and make sure it can run here."""
    module = _load(name)
    reason = module.unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is not available: {reason}")
    return module


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine.

    Returns
    -------
    list of str
        A subset of ``["numpy", "cpu", "cuda"]``, in that order.
    """
    names = []
    for name in KNOWN_BACKENDS:
        try:
            backend_module(name)
        except BackendUnavailableError:
            continue
        names.append(name)
    return names


def set_backend(name: str | None) -> None:
    """Set the process-wide default backend.

    Parameters
    ----------
    name : {"auto", "numpy", "cpu", "cuda"} or None
        ``None`` clears the setting, so the environment variable
        ``KDENTROPY_BACKEND`` (or ``"auto"``) applies again.
    """
    global _global_backend
    _global_backend = None if name is None else _check_name(name)


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
        return _check_name(env, "KDENTROPY_BACKEND")
    return "auto"


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager that selects a backend inside a ``with`` block.

    Parameters
    ----------
    name : {"auto", "numpy", "cpu", "cuda"}

    Examples
    --------
    >>> import numpy as np, kdentropy as kde
    >>> with kde.use_backend("numpy"):
    ...     H = kde.soft_entropy(np.zeros((4, 3)))
    """
    token = _context_backend.set(_check_name(name))
    try:
        yield
    finally:
        _context_backend.reset(token)


def resolve(backend: str | None, on_device: bool) -> str:
    """Concrete backend name for one call, applying the precedence rules."""
    name = get_backend() if backend is None else _check_name(backend)
    if name == "auto":
        return "cuda" if on_device else "cpu"
    return name
