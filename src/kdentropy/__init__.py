"""kdentropy: differentiable reproducibility entropy of batches of binary patterns.

Public functions
----------------
soft_entropy, soft_entropy_grad, soft_entropy_and_grad
    Kernel-density (soft) entropy and its analytic gradient.
hard_entropy, pattern_counts
    Exact entropy and the distinct patterns of binarised batches.
entropy_estimate, entropy_from_counts, EntropyEstimate
    Bias-corrected entropy of the system behind a batch, with a confidence interval.
available_backends, get_backend, set_backend, use_backend
    The backend switch (``numpy`` reference, Numba ``cpu``, ``cuda``).

Optional modules: ``kdentropy.mpi`` (MPI), ``kdentropy.torch`` and
``kdentropy.jax`` (differentiable losses), ``kdentropy.cells``, ``kdentropy.nn``
and ``kdentropy.optim`` (training cell systems).
"""

import os as _os

# The cpu backend makes no BLAS call, but the code around it often does (the
# numpy backend, the NumPy cell engine, the caller's own model), so NumPy
# products alternate with kdentropy's Numba loops. OpenBLAS's idle threads
# busy-wait for about 2**28 cycles after each product, taking the cores from
# the Numba loop that follows (and Numba's threads then slow the next
# product): at N, D = 1024, 256 float32 a Numba loop took 8.5 ms right after a
# GEMM instead of 0.4 ms, and the GEMM 28 ms instead of 12. OpenBLAS reads
# this setting only when NumPy first loads it, so it helps only if kdentropy
# is imported before NumPy (or the variable is set in the environment); an
# explicit user setting always wins. Numba's own idle threads are set to wait
# passively in kdentropy._jit.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from .entropy import (  # noqa: E402
    hard_entropy,
    pattern_counts,
    soft_entropy,
    soft_entropy_and_grad,
    soft_entropy_grad,
)
from .estimate import EntropyEstimate, entropy_estimate, entropy_from_counts  # noqa: E402
from .backends import (  # noqa: E402
    BackendUnavailableError,
    available_backends,
    get_backend,
    set_backend,
    use_backend,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "EntropyEstimate",
    "available_backends",
    "entropy_estimate",
    "entropy_from_counts",
    "get_backend",
    "hard_entropy",
    "pattern_counts",
    "set_backend",
    "soft_entropy",
    "soft_entropy_and_grad",
    "soft_entropy_grad",
    "use_backend",
]
