"""Distributed hard entropy: count distinct rows locally, merge the counts at hashed owners.

The patterns are never gathered on one rank. Each rank binarises and packs
its rows with :mod:`kdentropy.hard`'s packing (one opaque byte record per
row, led by its population index, so one exchange serves every population),
counts its distinct records, and sends each with its count to an owner rank
chosen by a hash of the record (``Alltoallv``). Owners add up the counts of
the records they own, and the entropy terms ``-p log p`` are summed over
ranks. As in :mod:`.soft`, every stretch of local work is guarded and settled
before the next exchange.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype
from numpy.typing import ArrayLike

from .. import _validation
from .. import estimate as _estimate
from .. import hard as _hard
from .._soft import batch_result
from . import _agree

__all__ = ["hard_entropy", "entropy_estimate"]


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


def _tag_bytes(G: int) -> int:
    """Bytes of the population index in front of each record (at least one, so D = 0 works)."""
    return max(1, -(-(G - 1).bit_length() // 8))


def _records(A: np.ndarray, part: _agree.Partition, threshold: float) -> np.ndarray:
    """One packed record per own row, ``(G n, L)`` uint8: population index, then the bits."""
    G, n, D = part.G, part.n, part.D
    tb = _tag_bytes(G)
    # The population index becomes 8 tb leading binary cells, so that
    # kdentropy.hard packs index and pattern in one go.
    tags = np.unpackbits(np.arange(G, dtype=">u8").view(np.uint8).reshape(G, 8)[:, 8 - tb:],
                         axis=1).astype(bool)
    B = np.empty((G, n, 8 * tb + D), dtype=bool)
    B[..., :8 * tb] = tags[:, None, :]
    # Exact for every dtype (the threshold is not rounded to float32), so a
    # float32 shard binarises as its rows do in the float64 concatenation.
    B[..., 8 * tb:] = _hard.binarize(A.reshape((G, n, D)), threshold)
    packed = _hard.packed_rows(B.reshape(G * n, 8 * tb + D))
    return packed.view(np.uint8).reshape(G * n, tb + (D + 7) // 8)


def _population(records: np.ndarray, G: int) -> np.ndarray:
    """The population index of each record, read back from its leading bytes."""
    index = np.zeros(len(records), dtype=np.int64)
    for k in range(_tag_bytes(G)):
        index = index * 256 + records[:, k]
    return index


def _displacements(counts: np.ndarray) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)


def _alltoallv(comm: MPI.Intracomm, send: np.ndarray, send_counts: np.ndarray,
               recv: np.ndarray, recv_counts: np.ndarray) -> None:
    """Collective: exchange items grouped by destination rank into ``recv`` (grouped by source)."""
    mpitype = from_numpy_dtype(send.dtype)
    comm.Alltoallv([np.ascontiguousarray(send).ravel(), send_counts,
                    _displacements(send_counts), mpitype],
                   [recv, recv_counts, _displacements(recv_counts), mpitype])


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
        If the shard of any rank is invalid (fewer than 2 dimensions, NaN or
        infinity), the batch axes or D differ between ranks, the keywords
        differ between ranks, or no rank holds a row.
    Exception
        Whatever fails on any rank, raised on every rank with the same type
        and message (the failing rank is named in it).

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
    part, guard, merged = _merged_counts(X_local, threshold, base, normalize, comm, {})
    if part.G == 0:
        return batch_result(np.zeros(0), part.batch_shape)
    local = None
    with guard:
        population, totals, unit = merged
        # p = count / N with the global N (hard.entropy_of_counts normalises by
        # the sum of the counts it gets, which here is one owner's share).
        local = np.bincount(population, weights=_hard.entropy_terms(totals, part.N),
                            minlength=part.G)
    # Added in rank order on every rank (not an Allreduce, whose order is the
    # MPI library's): bit-identical everywhere and from run to run.
    H = np.sum(guard.settle(local), axis=0)
    factor = _validation.unit_scale(unit, part.D)
    return batch_result(H * factor, part.batch_shape)


def _merged_counts(X_local: ArrayLike, threshold: float, base: float | None, normalize: bool,
                   comm: MPI.Intracomm | None, extra: dict[str, Any],
                   check: Callable[[], Any] | None = None) -> tuple[Any, Any, Any]:
    """Collective: count every distinct (population, pattern) of the global batch once.

    Returns ``(part, guard, merged)``: the agreed partition, the guard of the
    call and, on this rank, ``(population, totals, unit)`` for the patterns
    this rank owns (``None`` when ``part.G == 0``). ``extra`` holds further
    keywords that every rank must agree on; ``check`` validates them on
    every rank first (its error reaches every rank).
    """
    comm, error = _agree.communicator(comm)
    A, params, unit = None, {}, None
    if error is None:
        try:
            if check is not None:
                check()
            theta = _validation.real_scalar(threshold, "threshold")
            unit = _validation.log_unit(base, normalize)
            A = _validation.host_patterns(X_local, "X_local", allow_empty=True)
            params = {"threshold": theta,
                      "base": None if base is None else _validation.real_scalar(base, "base"),
                      "normalize": unit[1], **extra}
        except Exception as exc:  # noqa: BLE001 - any type must reach every rank
            error, A = exc, None
    part = _agree.partition(comm, error, A, params)
    if part.G == 0:
        return part, None, None
    P, guard = part.size, _agree.Guard(comm)

    # Count locally first: reproducible batches repeat rows, so this shrinks
    # what has to travel.
    with guard:
        records = _records(A, part, theta)
        L = records.shape[1]
        uniq, counts = np.unique(records.view(np.dtype((np.void, L))).ravel(),
                                 return_counts=True)
        uniq = uniq.view(np.uint8).reshape(-1, L)
        owner = (_row_hash(uniq) % np.uint64(P)).astype(np.int64)
        order = np.argsort(owner, kind="stable")
        send_rows, send_counts = uniq[order], counts[order].astype(np.int64)
        send_n = np.bincount(owner, minlength=P).astype(np.int64)
    guard.settle()
    recv_n = np.empty(P, dtype=np.int64)
    comm.Alltoall(send_n, recv_n)
    with guard:
        got = np.empty(int(recv_n.sum()) * L, dtype=np.uint8)
        got_counts = np.empty(int(recv_n.sum()), dtype=np.int64)
    guard.settle()
    _alltoallv(comm, send_rows, send_n * L, got, recv_n * L)
    _alltoallv(comm, send_counts, send_n, got_counts, recv_n)

    # Every distinct (population, pattern) now lives on exactly one rank.
    merged = None
    with guard:
        keys, inverse = np.unique(got.reshape(-1, L).view(np.dtype((np.void, L))).ravel(),
                                  return_inverse=True)
        totals = np.bincount(inverse.ravel(), weights=got_counts,
                             minlength=len(keys)).astype(np.int64)
        merged = (_population(keys.view(np.uint8).reshape(-1, L), part.G), totals, unit)
    guard.settle()
    return part, guard, merged


def entropy_estimate(X_local: ArrayLike, method: str = _estimate.RECOMMENDED,
                     threshold: float = 0.5, *, base: float | None = None,
                     normalize: bool = False, confidence: float = 0.95,
                     n_boot: int = _estimate.DEFAULT_N_BOOT, rng: Any = None,
                     interval: str = "basic",
                     comm: MPI.Intracomm | None = None) -> _estimate.EntropyEstimate:
    """Bias-corrected entropy with a confidence interval, of a batch sharded over MPI ranks.

    The patterns are counted as by :func:`hard_entropy` (never gathered);
    then only the histogram of the counts (how many patterns were seen once,
    twice, ...) of each population travels to every rank, which is all the
    estimators need. Rank 0 computes the estimate, with its own ``rng``, and
    every rank returns the same result, equal to that of
    :func:`kdentropy.entropy_estimate` on the concatenated batch with the
    same ``rng``.

    Parameters
    ----------
    X_local : array_like, shape (..., n_local, D)
        This rank's rows (as for :func:`hard_entropy`).
    method, threshold, base, normalize, confidence, n_boot, interval
        As for :func:`kdentropy.entropy_estimate`; the same on every rank.
    rng : None, int or numpy.random.Generator, optional
        The bootstrap's source on rank 0 (other ranks' are not used).
    comm : mpi4py.MPI.Intracomm, optional
        Default ``MPI.COMM_WORLD``.

    Returns
    -------
    kdentropy.EntropyEstimate
        Identical on every rank.

    Raises
    ------
    TypeError, ValueError
        As :func:`kdentropy.entropy_estimate` and :func:`hard_entropy`, on
        every rank.
    """
    checked: dict[str, Any] = {}

    def check() -> None:
        m, c, b, g, _, i = _estimate.check_keywords(method, confidence, n_boot, rng, base,
                                                    normalize, interval)
        checked.update(method=m, confidence=c, n_boot=b, rng=g, interval=i)

    extra = {"method": str(method), "confidence": confidence, "n_boot": n_boot,
             "interval": str(interval)}
    part, guard, merged = _merged_counts(X_local, threshold, base, normalize, comm, extra,
                                         check)
    if part.G == 0:
        raise ValueError("X_local must have at least one population on every rank")
    hist = None
    with guard:
        population, totals, unit = merged
        # (population, count) -> how many patterns of that population have that count.
        pairs = np.stack([population, totals], axis=1)
        hist = np.unique(pairs, axis=0, return_counts=True)
    gathered = guard.settle(hist)
    fields = None
    with guard:
        if part.rank == 0:
            pairs = np.concatenate([h[0] for h in gathered]).reshape(-1, 2)
            mult = np.concatenate([h[1] for h in gathered])
            rows = [np.repeat(pairs[pairs[:, 0] == g, 1], mult[pairs[:, 0] == g])
                    for g in range(part.G)]
            fields = _estimate.estimate_from_sorted_counts(
                _estimate.sorted_rows(rows), checked["method"], checked["confidence"],
                checked["n_boot"], checked["rng"], _estimate.alphabet_of_patterns(part.D),
                _validation.unit_scale(unit, part.D), checked["interval"])
    fields = guard.settle(fields)[0]
    return _estimate.make_result(fields, part.batch_shape, checked["method"],
                                 checked["confidence"], checked["n_boot"], checked["interval"])
