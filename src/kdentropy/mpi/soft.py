"""Distributed soft entropy: the single-process call flow, with the shards swept over MPI.

The flow is :func:`kdentropy._soft.compute`'s: validate once
(:class:`~kdentropy._params.SoftParams`) -> resolve a backend -> compute ->
finish, with the numerics of :mod:`kdentropy._estimator` and the finishing
steps of :mod:`kdentropy._soft`. What is distributed is only the backend's part:
the soft counts ``C0`` and the weighted pair sums ``V`` of the own rows are
accumulated block by block over every rank's shard, under one of the
schedules of :mod:`._schedules`. Each stretch of local work runs under a
:class:`~._agree.Guard` and ends in a settlement, so an error on any rank
raises on all of them.

One call, per rank::

    validate, agree on the partition          settle (allgather)
    soft patterns S of the own rows         settle
    pass 1: C0 of the own rows              sweep over the shards, settle
    C0 of all rows, H, g = 1 / (1 + C0)     Allgatherv of C0
    pass 2: V of the own rows               sweep over the shards
    chain rule through the sigmoid          settle (H of rank 0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from mpi4py import MPI
from numpy.typing import ArrayLike

from .. import _estimator, _validation
from .._params import DEFAULT, SoftParams, fill_doc
from .._soft import batch_result, entropy_value, gradient_scale, trivial_result
from . import _agree
from ._blocks import add_counts, add_weighted_grad, block_backend, tile_rows
from ._schedules import SCHEDULES, Allgather, Ring

__all__ = ["soft_entropy", "soft_entropy_grad", "soft_entropy_and_grad"]


def _check(X_local: ArrayLike, temperature: Any, sigma: Any, threshold: Any, base: Any,
           normalize: Any, backend: Any, comm: Any, schedule: Any):
    """Validate on every rank, then agree: the partition, keywords, block backend and own shard.

    Every rank reaches the agreement whatever failed locally (a bad ``comm``
    included), so an invalid input on one rank raises on all of them.
    """
    comm, error = _agree.communicator(comm)
    A, params, checked = None, {}, None
    if error is None:
        try:
            p = SoftParams(temperature, sigma, threshold, base, normalize)
            sched = _validation.choice(schedule, "schedule", SCHEDULES)
            module = block_backend(backend)
            A = _validation.host_patterns(X_local, "X_local", allow_empty=True)
            params = {"temperature": p.temperature, "sigma": p.sigma,
                      "threshold": p.threshold, "schedule": sched,
                      "base": p.base, "normalize": p.normalize}
            checked = (p, sched, module)
        except Exception as exc:  # noqa: BLE001 - any type must reach every rank
            error, A = exc, None
    part = _agree.partition(comm, error, A, params)
    return (part, A) + checked


def _soft(X_local: ArrayLike, temperature: Any, sigma: Any, threshold: Any, base: Any,
          normalize: Any, backend: Any, comm: Any, schedule: Any,
          want_grad: bool) -> tuple[Any, np.ndarray | None]:
    """validate -> agree -> sweep -> scale, for every distributed soft-entropy function."""
    part, A, p, sched, module = _check(X_local, temperature, sigma, threshold, base, normalize,
                                      backend, comm, schedule)
    guard = _agree.Guard(part.comm)
    N, G, D, n = part.N, part.G, part.D, part.n

    if D == 0 or N == 1 or G == 0:
        # All patterns coincide (D = 0) or there is only one: H = 0 everywhere.
        with guard:
            H, grad = trivial_result(A.shape, part.dtype, want_grad)
        guard.settle()
        return H, grad

    with guard:
        X3 = A.reshape((G, n, D)).astype(part.dtype, copy=False)
        S = (np.ascontiguousarray(module.soft_patterns(X3, p.temperature, p.threshold)) if n
             else np.empty((G, 0, D), dtype=part.dtype))
        del X3  # a converted copy (float32 shard promoted to float64) is not needed again
        # Every buffer of the call, before the first transfer that needs it.
        gather_S = Allgather(part, (D,), part.dtype) if sched == "allgather" else None
        ring = Ring(part, part.dtype) if sched == "ring" else None
        gather_C0 = Allgather(part, (), np.dtype(np.float64))
        C0 = np.zeros((G, n))
    guard.settle()

    shards: Callable[[], Iterator[tuple[int, np.ndarray]]]
    if gather_S is not None:
        # Gathered once, used by both passes; the own rows are read from the
        # gathered copy so they are not held twice.
        held = gather_S(S)
        S = held[part.rank]
        shards = lambda: enumerate(held)  # noqa: E731
    else:
        shards = lambda: ring.visit(S)  # noqa: E731
    tile = tile_rows(module)

    # Pass 1: off-diagonal soft counts C0 of the own rows against every shard.
    # A rank whose work failed keeps taking part in the ring (the guard skips
    # the work), so the others' transfers complete; the settlement then
    # raises everywhere.
    for r, Sr in shards():
        if guard.ok and n and Sr.shape[1]:
            with guard:
                for k in range(G):  # population by population
                    add_counts(module, S[k], Sr[k], p.sigma, r == part.rank, tile, C0[k])
    guard.settle()

    # H and g need the counts of all N rows: one Allgatherv of G N floats.
    C0_shards = gather_C0(C0)
    H = None
    with guard:
        C0_all = (gather_C0.buffer.reshape(1, N) if G == 1
                  else np.concatenate(C0_shards, axis=1))
        H = entropy_value(C0_all, p, D)
        if want_grad:
            g_all = _estimator.row_coefficients(C0_all)
            del C0_all
            first = part.offsets
            g_of = [g_all[:, first[r]:first[r] + part.counts[r]] for r in range(part.size)]
            V = np.zeros((G, n, D))
    if not want_grad:
        return _result(guard, H, part), None

    # Pass 2: V of the own rows. No settlement before it: every rank enters
    # the sweep whatever happened above, and the guard skips failed work.
    for r, Sr in shards():
        if guard.ok and n and Sr.shape[1]:
            with guard:
                g_own, g_r = g_of[part.rank], g_of[r]
                for k in range(G):
                    add_weighted_grad(module, S[k], g_own[k], Sr[k], g_r[k], p.sigma,
                                      r == part.rank, tile, V[k])
    grad = None
    if guard.ok:
        with guard:
            grad = module.input_grad(S, V, p.temperature, gradient_scale(p, N, D), A.shape)
    return _result(guard, H, part), grad


def _result(guard: _agree.Guard, H: np.ndarray | None, part: _agree.Partition) -> Any:
    """Last settlement of a call: every rank returns rank 0's H, or all raise.

    Every rank computes H from the same gathered counts; taking rank 0's
    makes it bit-identical even across ranks with different SIMD paths.
    """
    return batch_result(guard.settle(H)[0], part.batch_shape)


# ----------------------------------------------------------------------------- public

_PARAMETERS = """
    Parameters
    ----------
    X_local : array_like, shape (..., n_local, D)
        This rank's rows; the global batch of N patterns is their
        concatenation in rank order. Leading axes index populations and,
        like D, must be the same on every rank; ``n_local`` may differ and
        may be 0. float32 is computed in float32 only if every rank passes
        float32 (as for ``np.concatenate`` of the shards); other real dtypes
        are computed in float64. Device arrays are copied to the host.
    {keywords}
    backend : str, optional
        A registered backend (``kdentropy.backends.BACKEND_NAMES``: "numpy",
        "cpu", "cuda", ...) or "auto".
        Computes the local kernel blocks; chosen as for the single-process
        functions. A backend without block primitives (``cuda``, which works
        on one whole batch per launch) is replaced by ``cpu``, whether or not
        a GPU is present; ``"auto"`` is ``cpu``.
    comm : mpi4py.MPI.Intracomm, optional
        Communicator of the ranks holding the shards. Default
        ``MPI.COMM_WORLD``.
    schedule : {"allgather", "ring"}, optional
        ``"allgather"`` (default) gathers all soft patterns on every rank:
        fewest messages, O(N·D) memory per rank. ``"ring"`` passes the shards
        round the ranks: O((N/P)·D + N) memory per rank.
"""

_RAISES = """
    Raises
    ------
    TypeError
        If X_local is complex or not numeric on some rank, a keyword has the
        wrong type, or comm is not an intracommunicator.
    ValueError
        If the shard of any rank is invalid (fewer than 2 dimensions, NaN or
        infinity), the batch axes or D differ between ranks, a keyword is
        invalid or differs between ranks, no rank holds a row, or the
        backend is unknown or unavailable.
    Exception
        Whatever fails on any rank, raised on every rank with the same type
        and message (the failing rank is named in it), so that no rank is
        left waiting.
"""

_NOTES = """
    Notes
    -----
    Collective: every rank of ``comm`` must call it. The value is the entropy
    of the global batch, the same float on every rank, and equals the
    single-process result on the concatenated batch to rounding. Results are
    bit-identical from run to run for the same data, rank count, backend and
    schedule.
"""


_mpi_doc = fill_doc(parameters=_PARAMETERS, raises=_RAISES, notes=_NOTES)


@_mpi_doc
def soft_entropy(X_local: ArrayLike, temperature: float = DEFAULT.temperature,
                 sigma: float = DEFAULT.sigma, *, threshold: float = DEFAULT.threshold,
                 base: float | None = DEFAULT.base, normalize: bool = DEFAULT.normalize,
                 backend: str | None = None, comm: MPI.Intracomm | None = None,
                 schedule: str = "allgather"):
    """Soft reproducibility entropy of a batch sharded over MPI ranks.

    Distributed form of :func:`kdentropy.soft_entropy`: one pass over the
    shards gives every own row its soft count ``C_i = Σ_j K_ij`` against
    all N rows, and ``H = log N - mean_i log C_i`` follows from the counts
    of all rows.
{parameters}
    Returns
    -------
    H : float or ndarray
        The entropy of the global batch; an array of shape
        ``X_local.shape[:-2]`` for batched input.
{raises}{notes}
    See Also
    --------
    soft_entropy_and_grad : value and gradient of the local rows.

    Examples
    --------
    Under ``mpiexec -n 2 python -m mpi4py script.py``:

    >>> import numpy as np                                        # doctest: +SKIP
    >>> from mpi4py import MPI                                    # doctest: +SKIP
    >>> from kdentropy import mpi                                 # doctest: +SKIP
    >>> X = np.random.default_rng(0).random((1000, 16))           # doctest: +SKIP
    >>> mine = np.array_split(X, MPI.COMM_WORLD.size)[MPI.COMM_WORLD.rank]  # doctest: +SKIP
    >>> H = mpi.soft_entropy(mine, schedule="ring")               # doctest: +SKIP
    """
    H, _ = _soft(X_local, temperature, sigma, threshold, base, normalize, backend, comm,
                 schedule, want_grad=False)
    return H


@_mpi_doc
def soft_entropy_grad(X_local: ArrayLike, temperature: float = DEFAULT.temperature,
                      sigma: float = DEFAULT.sigma, *, threshold: float = DEFAULT.threshold,
                      base: float | None = DEFAULT.base, normalize: bool = DEFAULT.normalize,
                      backend: str | None = None, comm: MPI.Intracomm | None = None,
                      schedule: str = "allgather"):
    """Gradient of the global soft entropy with respect to the local rows.

    Distributed form of :func:`kdentropy.soft_entropy_grad`. The second pass
    over the shards, with the row coefficients ``g_j = 1/C_j`` of every row,
    evaluates ``∂H/∂S_i = (1/(N σ²)) Σ_j K_ij (g_i + g_j) (S_i - S_j)`` for
    the own rows only.
{parameters}
    Returns
    -------
    grad : ndarray
        Shape of ``X_local``; float32 if every rank passed float32, float64
        otherwise. The local rows of the gradient of the global entropy.
{raises}{notes}"""
    _, grad = _soft(X_local, temperature, sigma, threshold, base, normalize, backend, comm,
                    schedule, want_grad=True)
    return grad


@_mpi_doc
def soft_entropy_and_grad(X_local: ArrayLike, temperature: float = DEFAULT.temperature,
                          sigma: float = DEFAULT.sigma, *, threshold: float = DEFAULT.threshold,
                          base: float | None = DEFAULT.base, normalize: bool = DEFAULT.normalize,
                          backend: str | None = None, comm: MPI.Intracomm | None = None,
                          schedule: str = "allgather"):
    """Global soft entropy and its gradient for the local rows.

    Distributed form of :func:`kdentropy.soft_entropy_and_grad`; costs the
    same as :func:`soft_entropy_grad` alone.
{parameters}
    Returns
    -------
    H : float or ndarray
        As :func:`soft_entropy`, the same on every rank.
    grad : ndarray
        As :func:`soft_entropy_grad`, for this rank's rows.
{raises}{notes}
    Examples
    --------
    A gradient step on sharded runs (under ``mpiexec -n 4``):

    >>> from kdentropy import mpi                                 # doctest: +SKIP
    >>> H, g = mpi.soft_entropy_and_grad(X_local, schedule="ring")  # doctest: +SKIP
    >>> X_local = X_local - 0.1 * g                               # doctest: +SKIP
    """
    return _soft(X_local, temperature, sigma, threshold, base, normalize, backend, comm,
                 schedule, want_grad=True)
