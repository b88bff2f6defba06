"""Distributed soft and hard entropy over MPI (mpi4py): rows sharded over ranks.

Every rank passes its own rows ``X_local`` of shape ``(..., n_local, D)``; the
global batch is the concatenation of the shards in rank order. The leading
(population) axes and ``D`` must agree across ranks; ``n_local`` may differ,
and a rank may hold no rows at all. Every function is collective: all ranks of
``comm`` must call it with the same keyword values. The value returned is the
entropy of the global batch, bit-identical on every rank; the gradient is the
one of the global entropy with respect to the local rows.

Two communication schedules compute the same numbers (to rounding):

``"allgather"`` (default)
    One ``Allgatherv`` of the soft patterns S and one of the reciprocal soft
    counts 1/C. Fewest messages; every rank holds all of S, O(N·D) memory.
``"ring"``
    The shards travel round the ring of ranks (non-blocking send/receive,
    overlapped with the work on the shard in hand), once to get the soft
    counts and once more with 1/C for the gradient. No rank holds more than
    three shards: O((N/P)·D) memory per rank.

Each rank computes the kernel blocks between its own rows and one shard at a
time with the backend's block primitives (``soft_discretize``,
``block_soft_counts``, ``block_grad``). ``backend="auto"`` selects ``cpu``;
a backend without block primitives (``cuda``) falls back to ``cpu``. Blocks
are accumulated in a fixed order, so repeated calls with the same data, rank
count and schedule give bit-identical results.

The hard entropy never gathers the patterns on one rank: each rank counts its
distinct bit-packed rows, sends each distinct row with its count to an owner
rank chosen by a hash of the row (``Alltoallv``), owners merge the counts, and
the entropy terms are summed over ranks.

Importing this module needs mpi4py; ``import kdentropy`` never imports it.
Launch a script with, e.g., ``mpiexec -n 4 python -m mpi4py script.py``
(``-m mpi4py`` aborts every rank if one raises an uncaught exception). With
several ranks on one machine, give each its share of the cores
(``NUMBA_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``): by default every rank
starts a thread per core.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import entr

try:
    from mpi4py import MPI
    from mpi4py.util.dtlib import from_numpy_dtype
except ImportError as exc:  # the optional extra is not installed
    raise ImportError(
        "kdentropy.mpi needs mpi4py and an MPI library; install them with "
        "pip install 'kdentropy[mpi]'"
    ) from exc

from . import _backend
from ._api import (
    _as_host_array,
    _batch_result,
    _is_device_array,
    _positive,
    _real_scalar,
    _scale,
    _unit,
)

__all__ = ["soft_entropy", "soft_entropy_grad", "soft_entropy_and_grad", "hard_entropy"]

SCHEDULES = ("allgather", "ring")
_BLOCK_API = ("soft_discretize", "block_soft_counts", "block_grad")

# The numpy block primitives materialise a dense n_a x n_b kernel block (and a
# few temporaries like it); cutting shards into tiles of this many rows keeps
# that at a few MiB, so the schedule, not the oracle, decides the memory.
# Streaming backends (cpu) get whole shards: they use O(n·D) memory anyway
# and parallelise better over long blocks.
_NUMPY_TILE = 512


# ----------------------------------------------------------------------------- validation

def _check_comm(comm: Any) -> MPI.Intracomm:
    if comm is None:
        return MPI.COMM_WORLD
    if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
        raise TypeError(f"comm must be an mpi4py intracommunicator; got {comm!r}")
    return comm


def _check_schedule(schedule: Any) -> str:
    if not isinstance(schedule, str):
        raise TypeError(f"schedule must be a string, one of {SCHEDULES}; "
                        f"got {type(schedule).__name__}")
    key = schedule.strip().lower()
    if key not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
    return key


def _local_array(X_local: ArrayLike) -> np.ndarray:
    """``_as_host_array`` for one shard, which (unlike a whole batch) may hold no rows."""
    if not _is_device_array(X_local):
        try:
            A = np.asarray(X_local)
        except Exception:  # ragged input: let _as_host_array word the error
            A = None
        if A is not None and A.ndim >= 2 and A.shape[-2] == 0:
            # Validate the dtype exactly as a non-empty shard would be, on a
            # one-row stand-in, and return an empty array of the dtype used.
            proto = _as_host_array(np.zeros(A.shape[:-2] + (1, A.shape[-1]), dtype=A.dtype))
            return np.empty(A.shape, dtype=proto.dtype)
    return _as_host_array(X_local)


def _base_value(base: Any) -> float | None:
    """``base`` as compared across ranks (already validated by ``_unit``)."""
    return None if base is None else _real_scalar(base, "base")


def _block_module(backend: str | None) -> ModuleType:
    """The backend module whose block primitives compute the local kernel blocks."""
    module = _backend.backend_module(_backend.resolve(backend, on_device=False))
    if not all(hasattr(module, name) for name in _BLOCK_API):
        # cuda works on one whole batch per launch; the sweep over shards
        # needs block primitives, so the host cpu backend does the work.
        module = _backend.backend_module("cpu")
    return module


@dataclass(frozen=True)
class _Layout:
    """What every rank knows about the global batch once the shards agree."""

    comm: MPI.Intracomm
    rank: int
    size: int
    counts: np.ndarray  # rows per rank, int64, shape (P,)
    batch_shape: tuple[int, ...]
    D: int
    dtype: np.dtype  # computation dtype, the same on every rank

    @property
    def N(self) -> int:
        return int(self.counts.sum())

    @property
    def G(self) -> int:
        return math.prod(self.batch_shape)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.counts)[:-1])).astype(np.int64)


def _agree(comm: MPI.Intracomm, error: Exception | None, A: np.ndarray | None,
           params: dict[str, Any]) -> _Layout:
    """Collective check that the shards and keywords fit together; raises on every rank.

    Every rank reaches the one ``allgather`` below whatever went wrong locally,
    so a bad input on one rank raises there and on all the others instead of
    leaving them waiting in a later collective.
    """
    if error is None:
        meta = (A.shape[:-2], A.shape[-2], A.shape[-1], A.dtype == np.float32, params)
        report = (None, meta)
    else:
        report = ((type(error), str(error)), None)
    reports = comm.allgather(report)
    if error is not None:
        raise error
    for r, (err, _) in enumerate(reports):
        if err is not None:
            cls, msg = err
            text = f"invalid input on rank {r} of {len(reports)}: {msg}"
            try:
                exc = cls(text)
            except Exception:  # an exception type that cannot be rebuilt from text
                exc = ValueError(text)
            raise exc
    metas = [meta for _, meta in reports]
    shapes = [(m[0], m[2]) for m in metas]
    if any(s != shapes[0] for s in shapes):
        listing = ", ".join(f"rank {r}: {m[0] + (m[1], m[2])}" for r, m in enumerate(metas))
        raise ValueError("X_local must have the same leading (batch) axes and the same "
                         f"number of cells D on every rank; got shapes {listing}")
    for key in params:
        values = [m[4][key] for m in metas]
        if any(v != values[0] for v in values):
            raise ValueError(f"{key} must be the same on every rank; got {values}")
    counts = np.array([m[1] for m in metas], dtype=np.int64)
    if counts.sum() == 0:
        raise ValueError("X_local holds no pattern on any rank; the global batch needs "
                         "N >= 1 rows")
    # Like concatenating the shards: float32 only if every shard is float32.
    dtype = np.dtype(np.float32 if all(m[3] for m in metas) else np.float64)
    return _Layout(comm, comm.Get_rank(), comm.Get_size(), counts, shapes[0][0],
                   shapes[0][1], dtype)


# ----------------------------------------------------------------------------- communication

def _sum_over_ranks(comm: MPI.Intracomm, local: np.ndarray) -> np.ndarray:
    """Sum of a float64 vector over ranks, added in rank order on every rank.

    Gathering the partial sums and adding them locally (rather than an
    ``Allreduce``, whose reduction order is the MPI library's choice) makes
    the result bit-identical on every rank and from run to run.
    """
    parts = np.empty((comm.Get_size(),) + local.shape, dtype=np.float64)
    comm.Allgather(np.ascontiguousarray(local, dtype=np.float64), parts)
    return parts.sum(axis=0)


def _allgather_shards(lay: _Layout, local: np.ndarray, row_shape: tuple[int, ...]
                      ) -> list[np.ndarray]:
    """``Allgatherv`` of one ``(G, n_r, *row_shape)`` array per rank; returns the P shards."""
    per_row = lay.G * math.prod(row_shape)
    counts = lay.counts * per_row
    displs = lay.offsets * per_row
    flat = np.empty(int(counts.sum()), dtype=local.dtype)
    mpitype = from_numpy_dtype(local.dtype)
    lay.comm.Allgatherv([np.ascontiguousarray(local).ravel(), mpitype],
                        [flat, counts, displs, mpitype])
    return [flat[displs[r]:displs[r] + counts[r]].reshape((lay.G, int(lay.counts[r])) + row_shape)
            for r in range(lay.size)]


def _ring(lay: _Layout, comm: MPI.Intracomm, own: Sequence[np.ndarray],
          row_shapes: Sequence[tuple[int, ...]]) -> Iterator[tuple[int, tuple[np.ndarray, ...]]]:
    """Yield ``(source rank, arrays of that rank)`` for every rank, passing shards round a ring.

    At step k this rank holds the shard of rank ``rank - k`` and forwards it
    to ``rank + 1`` while receiving the next one from ``rank - 1``; the
    transfer is started before the shard is yielded, so it overlaps with the
    caller's work on it. Two receive buffers (sized for the largest shard)
    alternate, so at most the own shard and two others are held at once.
    """
    P, rank = lay.size, lay.rank
    left, right = (rank - 1) % P, (rank + 1) % P
    n_max = int(lay.counts.max())
    buffers: list[list[np.ndarray] | None] = [None, None]
    cur, src = tuple(np.ascontiguousarray(a) for a in own), rank
    for k in range(P):
        requests = []
        if k < P - 1:
            nxt_src = (rank - k - 1) % P
            if buffers[k % 2] is None:  # allocated on first use: P = 2 needs only one
                buffers[k % 2] = [np.empty(lay.G * n_max * math.prod(shape), dtype=a.dtype)
                                  for a, shape in zip(own, row_shapes)]
            n_next = int(lay.counts[nxt_src])
            nxt = tuple(buf[:lay.G * n_next * math.prod(shape)].reshape((lay.G, n_next) + shape)
                        for buf, shape in zip(buffers[k % 2], row_shapes))
            for tag, (send, recv) in enumerate(zip(cur, nxt)):
                requests.append(comm.Irecv(recv, source=left, tag=tag))
                requests.append(comm.Isend(send, dest=right, tag=tag))
        yield src, cur
        if requests:
            MPI.Request.Waitall(requests)
            cur, src = nxt, nxt_src


def _sweep(lay: _Layout, schedule: str, own: Sequence[np.ndarray],
           row_shapes: Sequence[tuple[int, ...]],
           held: Sequence[list[np.ndarray] | None] | None = None
           ) -> Iterator[tuple[int, tuple[np.ndarray, ...]]]:
    """Visit the shards of every rank under the chosen schedule.

    ``allgather`` visits them in rank order; ``ring`` in ring order starting
    with the own shard. Either order is fixed, so sums are deterministic.
    ``held`` gives, per array, the shards the allgather schedule already
    holds (``None`` where they still have to be gathered).
    """
    if schedule == "ring":
        # p2p messages go on a private duplicate so they can never match a
        # receive the caller has posted on the same communicator.
        comm = lay.comm.Dup()
        try:
            yield from _ring(lay, comm, own, row_shapes)
        finally:
            comm.Free()
        return
    held = held if held is not None else [None] * len(own)
    shards = [h if h is not None else _allgather_shards(lay, a, shape)
              for a, shape, h in zip(own, row_shapes, held)]
    for r in range(lay.size):
        yield r, tuple(s[r] for s in shards)


# ----------------------------------------------------------------------------- numerics

def _tiles(n: int, tile: int | None) -> list[slice]:
    if tile is None or n <= tile:
        return [slice(0, n)]
    return [slice(a, min(a + tile, n)) for a in range(0, n, tile)]


def _block_counts(module: ModuleType, Sa: np.ndarray, Sb: np.ndarray, sigma: float,
                  same: bool, tile: int | None, out: np.ndarray) -> None:
    """``out += C0`` contributions of the columns Sb to the rows Sa."""
    for ta in _tiles(len(Sa), tile):
        for tb in _tiles(len(Sb), tile):
            # With same=True, Sa is Sb and tiles with equal bounds are one block.
            out[ta] += module.block_soft_counts(Sa[ta], Sb[tb], sigma, same and ta == tb)


def _block_grad(module: ModuleType, Sa: np.ndarray, inv_Ca: np.ndarray, Sb: np.ndarray,
                inv_Cb: np.ndarray, sigma: float, same: bool, tile: int | None,
                out: np.ndarray) -> None:
    """``out += Σ_j w_ij (Sa_i - Sb_j)`` over the columns Sb."""
    for ta in _tiles(len(Sa), tile):
        for tb in _tiles(len(Sb), tile):
            out[ta] += module.block_grad(Sa[ta], inv_Ca[ta], Sb[tb], inv_Cb[tb], sigma,
                                         same and ta == tb)


def _counts_pass(lay: _Layout, schedule: str, module: ModuleType, S: np.ndarray,
                 held_S: list[np.ndarray] | None, sigma: float, tile: int | None) -> np.ndarray:
    """``C0`` (float64, shape (G, n_local)) of the own rows against all N rows."""
    G, n, D = S.shape
    C0 = np.zeros((G, n), dtype=np.float64)
    for r, (Sr,) in _sweep(lay, schedule, [S], [(D,)], [held_S]):
        if n and Sr.shape[1]:
            for g in range(G):
                _block_counts(module, S[g], Sr[g], sigma, r == lay.rank, tile, C0[g])
    return C0


def _grad_pass(lay: _Layout, schedule: str, module: ModuleType, S: np.ndarray,
               inv_C: np.ndarray, held_S: list[np.ndarray] | None, sigma: float,
               tile: int | None) -> np.ndarray:
    """``Σ_j w_ij (S_i - S_j)`` (float64, shape (G, n_local, D)) over all N rows."""
    G, n, D = S.shape
    acc = np.zeros((G, n, D), dtype=np.float64)
    for r, (Sr, inv_Cr) in _sweep(lay, schedule, [S, inv_C], [(D,), ()], [held_S, None]):
        if n and Sr.shape[1]:
            for g in range(G):
                _block_grad(module, S[g], inv_C[g], Sr[g], inv_Cr[g], sigma, r == lay.rank,
                            tile, acc[g])
    return acc


def _soft(X_local, temperature, sigma, threshold, base, normalize, backend, comm, schedule,
          want_grad):
    comm = _check_comm(comm)
    error, A, params = None, None, {}
    try:
        T = _positive(temperature, "temperature")
        s = _positive(sigma, "sigma")
        theta = _real_scalar(threshold, "threshold")
        sched = _check_schedule(schedule)
        unit = _unit(base, normalize)
        module = _block_module(backend)
        A = _local_array(X_local)
        params = {"temperature": T, "sigma": s, "threshold": theta, "schedule": sched,
                  "base": _base_value(base), "normalize": unit[1]}
    except (TypeError, ValueError) as exc:
        error = exc
    lay = _agree(comm, error, A, params)

    N, G, D = lay.N, lay.G, lay.D
    factor = _scale(unit, D)
    if D == 0 or N == 1 or G == 0:
        # All patterns coincide (D = 0) or there is only one: H = 0 everywhere.
        H = np.zeros(G, dtype=np.float64)
        grad = np.zeros(A.shape, dtype=lay.dtype) if want_grad else None
        return _batch_result(H, lay.batch_shape), grad

    n = A.shape[-2]
    X3 = A.reshape((G, n, D)).astype(lay.dtype, copy=False)
    S = (np.ascontiguousarray(module.soft_discretize(X3, T, theta)) if n
         else np.empty((G, 0, D), dtype=lay.dtype))
    del X3  # a converted copy (float32 shard promoted to float64) is not needed again
    held_S = None
    if sched == "allgather":
        # Gathered once, used by both passes; the own rows are read from the
        # gathered copy so they are not held twice.
        held_S = _allgather_shards(lay, S, (D,))
        S = held_S[lay.rank]
    tile = _NUMPY_TILE if module.NAME == "numpy" else None

    # Pass 1: off-diagonal soft counts C0 of the own rows against every shard.
    C0 = _counts_pass(lay, sched, module, S, held_S, s, tile)
    H = math.log(N) - _sum_over_ranks(comm, np.log1p(C0).sum(axis=1)) / N
    if not want_grad:
        return _batch_result(H * factor, lay.batch_shape), None

    # Pass 2: gradient rows need 1/C of every column, known only after pass 1.
    dS = _grad_pass(lay, sched, module, S, 1.0 / (1.0 + C0), held_S, s, tile)
    # dH/dS, the chain rule through the sigmoid, then the unit factor in the
    # output dtype (as in the numpy backend); in place, one population at a
    # time, so the only temporaries are one or two n_local x D arrays.
    dS /= N * s * s
    grad = np.empty((G, n, D), dtype=lay.dtype)
    for g in range(G):
        S64 = S[g].astype(np.float64, copy=False)
        slope = 1.0 - S64
        slope *= S64
        slope *= T
        dS[g] *= slope
        grad[g] = dS[g]
    grad *= grad.dtype.type(factor)
    return _batch_result(H * factor, lay.batch_shape), grad.reshape(A.shape)


# ----------------------------------------------------------------------------- hard entropy

def _row_hash(records: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash of each row of a 2-D uint8 array, identical on every rank.

    (Python's ``hash`` of bytes is salted per process, so it cannot choose
    owner ranks.) Rows are read as little-endian 64-bit words, each folded in
    with the splitmix64 finaliser.
    """
    M, L = records.shape
    pad = (-L) % 8
    if pad:
        records = np.concatenate([records, np.zeros((M, pad), dtype=np.uint8)], axis=1)
    words = np.ascontiguousarray(records).view("<u8")
    h = np.full(M, 0x9E3779B97F4A7C15, dtype=np.uint64)
    for k in range(words.shape[1]):
        h ^= words[:, k]
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h


def _alltoallv(comm: MPI.Intracomm, send: np.ndarray, send_counts: np.ndarray,
               recv_counts: np.ndarray, per_row: int) -> np.ndarray:
    """Exchange rows grouped by destination rank; returns the received rows, by source rank."""
    sc, rc = send_counts * per_row, recv_counts * per_row
    sd = np.concatenate(([0], np.cumsum(sc)[:-1])).astype(np.int64)
    rd = np.concatenate(([0], np.cumsum(rc)[:-1])).astype(np.int64)
    recv = np.empty(int(rc.sum()), dtype=send.dtype)
    mpitype = from_numpy_dtype(send.dtype)
    comm.Alltoallv([np.ascontiguousarray(send).ravel(), sc, sd, mpitype],
                   [recv, rc, rd, mpitype])
    return recv


def hard_entropy(X_local: ArrayLike, threshold: float = 0.5, *, base: float | None = None,
                 normalize: bool = False, comm: MPI.Intracomm | None = None):
    """Exact reproducibility entropy of the binarised patterns of a sharded batch.

    Collective: every rank of ``comm`` calls it with its own rows. The
    patterns are never gathered on one rank: each rank counts its distinct
    bit-packed rows, sends each distinct row with its count to an owner rank
    chosen by a hash of the row (one ``Alltoallv``), owners add up the counts
    of the rows they own, and the terms ``-p log p`` are summed over ranks.
    Each rank needs O(n_local · D) memory and sends O(distinct local rows ·
    D/8) bytes.

    Parameters
    ----------
    X_local : array_like, shape (..., n_local, D)
        This rank's rows; the global batch is their concatenation in rank
        order. Leading axes index populations and, like D, must be the same
        on every rank; ``n_local`` may differ and may be 0.
    threshold : float, optional
        Binarisation threshold: a cell is 1 where ``X >= threshold``.
    base : float, optional
        Logarithm base; ``None`` (default) gives nats.
    normalize : bool, optional
        If True, divide by D.
    comm : mpi4py.MPI.Intracomm, optional
        Communicator of the ranks holding the shards. Default
        ``MPI.COMM_WORLD``.

    Returns
    -------
    H : float or ndarray
        The entropy of the global batch, bit-identical on every rank; an
        array of shape ``X_local.shape[:-2]`` for batched input.

    Raises
    ------
    TypeError
        If X_local is complex or not numeric on some rank, or comm is not an
        intracommunicator.
    ValueError
        On every rank, if the shard of any rank is invalid (fewer than 2
        dimensions, NaN or infinity), the batch axes or D differ between
        ranks, the keywords differ between ranks, or no rank holds a row.

    See Also
    --------
    kdentropy.hard_entropy : the single-process function.

    Examples
    --------
    Run under ``mpiexec -n 2``: each rank holds two runs, the global batch
    has two distinct patterns of two runs each, i.e. one bit.

    >>> from mpi4py import MPI                                  # doctest: +SKIP
    >>> from kdentropy import mpi                               # doctest: +SKIP
    >>> X_local = [[1, 0], [0, 1]]                              # doctest: +SKIP
    >>> float(mpi.hard_entropy(X_local, base=2))                # doctest: +SKIP
    1.0
    """
    comm = _check_comm(comm)
    error, A, params = None, None, {}
    try:
        theta = _real_scalar(threshold, "threshold")
        unit = _unit(base, normalize)
        A = _local_array(X_local)
        params = {"threshold": theta, "base": _base_value(base), "normalize": unit[1]}
    except (TypeError, ValueError) as exc:
        error = exc
    lay = _agree(comm, error, A, params)
    N, G, D = lay.N, lay.G, lay.D
    factor = _scale(unit, D)
    if G == 0:
        return _batch_result(np.zeros(0), lay.batch_shape)

    # One record per row: the population index, then the row's bits packed
    # eight to a byte, so one exchange serves every population.
    n = A.shape[-2]
    # Compare in the dtype of the concatenated batch, as one process would.
    B = A.reshape((G, n, D)).astype(lay.dtype, copy=False) >= theta
    bits = np.packbits(B, axis=-1).reshape(G * n, (D + 7) // 8)
    del B
    tag = np.repeat(np.arange(G, dtype="<i8"), n).view(np.uint8).reshape(G * n, 8)
    records = np.ascontiguousarray(np.concatenate([tag, bits], axis=1))
    L = records.shape[1]

    # Count locally first: reproducible batches repeat rows, so this shrinks
    # what has to travel.
    uniq, counts = np.unique(records.view(np.dtype((np.void, L))).ravel(), return_counts=True)
    uniq = uniq.view(np.uint8).reshape(-1, L)
    owner = (_row_hash(uniq) % np.uint64(lay.size)).astype(np.int64)
    order = np.argsort(owner, kind="stable")
    send_counts = np.bincount(owner, minlength=lay.size).astype(np.int64)
    recv_counts = np.empty(lay.size, dtype=np.int64)
    comm.Alltoall(send_counts, recv_counts)
    got = _alltoallv(comm, uniq[order], send_counts, recv_counts, L).reshape(-1, L)
    got_counts = _alltoallv(comm, counts[order].astype(np.int64), send_counts, recv_counts, 1)

    # Every distinct (population, pattern) now lives on exactly one rank.
    merged, inverse = np.unique(got.view(np.dtype((np.void, L))).ravel(), return_inverse=True)
    totals = np.bincount(inverse.ravel(), weights=got_counts, minlength=len(merged))
    population = merged.view(np.uint8).reshape(-1, L)[:, :8].copy().view("<i8").ravel()
    local = np.bincount(population, weights=entr(totals / N), minlength=G)
    H = _sum_over_ranks(comm, local)
    return _batch_result(H * factor, lay.batch_shape)


# ----------------------------------------------------------------------------- soft entropy

_SOFT_PARAMS = """
    Parameters
    ----------
    X_local : array_like, shape (..., n_local, D)
        This rank's rows; the global batch of N patterns is their
        concatenation in rank order. Leading axes index populations and,
        like D, must be the same on every rank; ``n_local`` may differ and
        may be 0. float32 is computed in float32 only if every rank passes
        float32 (as for ``np.concatenate`` of the shards); other real dtypes
        are computed in float64. Device arrays are copied to the host.
    temperature : float, optional
        Sigmoid sharpness T > 0. Default 10.0.
    sigma : float, optional
        Gaussian kernel width σ > 0. Default 0.5.
    threshold : float, optional
        Cell value θ at which the sigmoid is 1/2. Default 0.5.
    base : float, optional
        Logarithm base; ``None`` (default) gives nats, 2 gives bits.
    normalize : bool, optional
        If True, divide by D (entropy per cell).
    backend : {"auto", "numpy", "cpu", "cuda"}, optional
        Computes the local kernel blocks; as for the single-process
        functions. ``"auto"`` and ``"cuda"`` use ``cpu`` (the distributed
        sweep needs the block primitives, which ``cuda`` lacks).
    comm : mpi4py.MPI.Intracomm, optional
        Communicator of the ranks holding the shards. Default
        ``MPI.COMM_WORLD``.
    schedule : {"allgather", "ring"}, optional
        ``"allgather"`` (default) gathers all soft patterns on every rank:
        fewest messages, O(N·D) memory per rank. ``"ring"`` passes the shards
        round the ranks: O((N/P)·D) memory per rank.
"""

_SOFT_RAISES = """
    Raises
    ------
    TypeError
        If X_local is complex or not numeric on some rank, a keyword has the
        wrong type, or comm is not an intracommunicator.
    ValueError
        On every rank, if the shard of any rank is invalid (fewer than 2
        dimensions, NaN or infinity), the batch axes or D differ between
        ranks, a keyword is invalid or differs between ranks, no rank holds
        a row, or the backend is unknown or unavailable.
"""

_SOFT_NOTES = """
    Notes
    -----
    Collective: every rank of ``comm`` must call it. The value is the entropy
    of the global batch, the same float on every rank, and equals the
    single-process result on the concatenated batch to rounding. Results are
    bit-identical from run to run for the same data, rank count, backend and
    schedule.
"""


def soft_entropy(X_local: ArrayLike, temperature: float = 10.0, sigma: float = 0.5, *,
                 threshold: float = 0.5, base: float | None = None, normalize: bool = False,
                 backend: str | None = None, comm: MPI.Intracomm | None = None,
                 schedule: str = "allgather"):
    H, _ = _soft(X_local, temperature, sigma, threshold, base, normalize, backend, comm,
                 schedule, want_grad=False)
    return H


soft_entropy.__doc__ = f"""Soft reproducibility entropy of a batch sharded over MPI ranks.

    Distributed form of :func:`kdentropy.soft_entropy`: one pass over the
    shards gives every own row its soft count ``C_i = Σ_j K_ij`` against
    all N rows, and ``H = log N - mean_i log C_i`` is summed over ranks.
{_SOFT_PARAMS}
    Returns
    -------
    H : float or ndarray
        The entropy of the global batch; an array of shape
        ``X_local.shape[:-2]`` for batched input.
{_SOFT_RAISES}{_SOFT_NOTES}
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


def soft_entropy_grad(X_local: ArrayLike, temperature: float = 10.0, sigma: float = 0.5, *,
                      threshold: float = 0.5, base: float | None = None, normalize: bool = False,
                      backend: str | None = None, comm: MPI.Intracomm | None = None,
                      schedule: str = "allgather"):
    _, grad = _soft(X_local, temperature, sigma, threshold, base, normalize, backend, comm,
                    schedule, want_grad=True)
    return grad


soft_entropy_grad.__doc__ = f"""Gradient of the global soft entropy with respect to the local rows.

    Distributed form of :func:`kdentropy.soft_entropy_grad`. The second pass
    over the shards brings ``1/C_j`` of every row, so each rank evaluates
    ``∂H/∂S_i = (1/(N σ²)) Σ_j K_ij (1/C_i + 1/C_j) (S_i - S_j)`` for its own
    rows only.
{_SOFT_PARAMS}
    Returns
    -------
    grad : ndarray
        Shape of ``X_local``; float32 if every rank passed float32, float64
        otherwise. The local rows of the gradient of the global entropy.
{_SOFT_RAISES}{_SOFT_NOTES}"""


def soft_entropy_and_grad(X_local: ArrayLike, temperature: float = 10.0, sigma: float = 0.5, *,
                          threshold: float = 0.5, base: float | None = None,
                          normalize: bool = False, backend: str | None = None,
                          comm: MPI.Intracomm | None = None, schedule: str = "allgather"):
    return _soft(X_local, temperature, sigma, threshold, base, normalize, backend, comm,
                 schedule, want_grad=True)


soft_entropy_and_grad.__doc__ = f"""Global soft entropy and its gradient for the local rows.

    Distributed form of :func:`kdentropy.soft_entropy_and_grad`; costs the
    same as :func:`soft_entropy_grad` alone.
{_SOFT_PARAMS}
    Returns
    -------
    H : float or ndarray
        As :func:`soft_entropy`, the same on every rank.
    grad : ndarray
        As :func:`soft_entropy_grad`, for this rank's rows.
{_SOFT_RAISES}{_SOFT_NOTES}
    Examples
    --------
    A gradient step on sharded runs (under ``mpiexec -n 4``):

    >>> from kdentropy import mpi                                 # doctest: +SKIP
    >>> H, g = mpi.soft_entropy_and_grad(X_local, schedule="ring")  # doctest: +SKIP
    >>> X_local = X_local - 0.1 * g                               # doctest: +SKIP
    """
