"""Docstring text shared by every function that takes the soft-entropy keywords.

The entropy API, the MPI layer and the framework wrappers document the same
keywords; they write ``{keywords}`` in their own docstrings (where the
function is defined) and :func:`shared_keywords` fills it in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["KEYWORDS", "shared_keywords"]

KEYWORDS = """temperature : float, optional
        Sigmoid sharpness T, in (0, 1e50]. Default 10.0.
    sigma : float, optional
        Gaussian kernel width σ, at least 1e-50. Default 0.5.
    threshold : float, optional
        Cell value θ at which the sigmoid is 1/2. Default 0.5.
    base : float, optional
        Logarithm base; ``None`` (default) gives nats, 2 gives bits.
    normalize : bool, optional
        If True, divide by D (entropy per cell)."""

F = TypeVar("F", bound=Callable)


def shared_keywords(func: F) -> F:
    """Replace ``{keywords}`` in ``func``'s docstring by :data:`KEYWORDS`."""
    func.__doc__ = func.__doc__.replace("{keywords}", KEYWORDS)
    return func
