"""Distributed soft and hard entropy over MPI (mpi4py): rows sharded over ranks.

Every rank passes its own rows ``X_local`` of shape ``(..., n_local, D)``; the
global batch is the concatenation of the shards in rank order. The leading
(population) axes and ``D`` must agree across ranks; ``n_local`` may differ,
and a rank may hold no rows at all. Every function is collective: all ranks of
``comm`` must call it with the same keyword values. The value returned is the
entropy of the global batch, bit-identical on every rank; the gradient is the
one of the global entropy with respect to the local rows.

Two communication schedules (:data:`SCHEDULES`) compute the same numbers (to
rounding):

``"allgather"`` (default)
    One ``Allgatherv`` of the soft patterns S and one of the soft counts.
    Fewest messages; every rank holds all of S, O(N·D) memory.
``"ring"``
    The shards travel round the ring of ranks (non-blocking send/receive,
    overlapped with the work on the shard in hand), once for the soft counts
    and once more for the gradient; the soft counts of all rows are gathered
    in between. No rank holds more than three shards: O((N/P)·D + N) memory
    per rank.

Each rank computes the kernel blocks between its own rows and one shard at a
time with the backend's block primitives (``block_soft_counts``,
``block_weighted_grad``); the estimator (H, the row coefficients, the
gradient factor) is :mod:`kdentropy._estimator`'s, as in the single-process
functions. ``backend="auto"`` selects ``cpu``; a backend without block
primitives (``cuda``) is replaced by ``cpu``. Blocks are accumulated in a
fixed order, so repeated calls with the same data, rank count and schedule
give bit-identical results.

The hard entropy never gathers the patterns on one rank: each rank counts its
distinct bit-packed rows, sends each distinct row with its count to an owner
rank chosen by a hash of the row (``Alltoallv``), owners merge the counts, and
the entropy terms are summed over ranks.

Errors never leave a rank waiting: an exception of any type on any rank
(invalid input, a bad ``comm``, a warning turned into an error, a failure in
the middle of a sweep) is raised on every rank with the same type and message.

Importing this module needs mpi4py; ``import kdentropy`` never imports it.
Launch a script with, e.g., ``mpiexec -n 4 python -m mpi4py script.py``
(``-m mpi4py`` aborts every rank if one raises an uncaught exception). With
several ranks on one machine, give each its share of the cores
(``NUMBA_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``): by default every rank
starts a thread per core.

Modules: :mod:`._agree` (collective agreement and error propagation),
:mod:`._schedules` (allgather and ring), :mod:`._blocks` (backend choice and
tiled block sums), :mod:`.soft` and :mod:`.hard` (the public functions).
"""

from __future__ import annotations

try:
    import mpi4py.MPI  # noqa: F401 - fail here, with the install hint, not in a submodule
except ImportError as exc:  # the optional extra is not installed
    raise ImportError(
        "kdentropy.mpi needs mpi4py and an MPI library; install them with "
        "pip install 'kdentropy[mpi]'"
    ) from exc

from ._schedules import SCHEDULES
from .hard import entropy_estimate, hard_entropy
from .soft import soft_entropy, soft_entropy_and_grad, soft_entropy_grad

__all__ = ["soft_entropy", "soft_entropy_grad", "soft_entropy_and_grad", "hard_entropy",
           "entropy_estimate"]
