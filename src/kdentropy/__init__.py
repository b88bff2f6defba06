"""kdentropy: differentiable reproducibility entropy of batches of binary patterns.

Public functions
----------------
soft_entropy, soft_entropy_grad, soft_entropy_and_grad
    Kernel-density (soft) entropy and its analytic gradient.
hard_entropy, pattern_counts
    Exact entropy and the distinct patterns of binarised batches.
available_backends, get_backend, set_backend, use_backend
    The backend switch (``numpy`` reference, Numba ``cpu``, ``cuda``).
"""

from .entropy import (
    hard_entropy,
    pattern_counts,
    soft_entropy,
    soft_entropy_and_grad,
    soft_entropy_grad,
)
from .backends import (
    BackendUnavailableError,
    available_backends,
    get_backend,
    set_backend,
    use_backend,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "available_backends",
    "get_backend",
    "hard_entropy",
    "pattern_counts",
    "set_backend",
    "soft_entropy",
    "soft_entropy_and_grad",
    "soft_entropy_grad",
    "use_backend",
]
