"""Collective agreement: every rank ends a call the same way, or none waits forever.

A collective call deadlocks as soon as one rank raises while the others enter
the next collective operation. So every stretch of local work (validation,
soft patterns, one pass over the shards, the final chain rule) runs under a
:class:`Guard`, which records the first exception of any type instead of
letting it escape, and every stretch ends with :meth:`Guard.settle`: one
``allgather`` in which each rank reports its error (or ``None``) together
with any small payload the next step needs. If any rank reported an error,
every rank raises the same exception (the one of the lowest failing rank);
otherwise each receives the payloads of all ranks.

:func:`partition` is the first settlement of every call: it checks that the
shards and keywords of all ranks fit together and returns what every rank
must know about the global batch.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
from mpi4py import MPI

from .. import _validation

__all__ = ["Guard", "Partition", "agree", "communicator", "partition"]


# ----------------------------------------------------------------------------- errors

def _report(error: BaseException) -> tuple[str, str, str]:
    """An exception as plain strings, which unpickle on every rank.

    The class itself is not sent: a class that cannot be imported on the
    receiving rank (defined in ``__main__`` of another script, say) would make
    unpickling fail there, and that rank would raise something else.
    """
    cls = type(error)
    return cls.__module__, cls.__qualname__, str(error)


def _exception_class(module: str, qualname: str) -> type[BaseException] | None:
    """The exception class named by a report, or ``None`` if this rank cannot find it."""
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception:  # noqa: BLE001 - any failure to locate it means "not available here"
        return None
    return obj if isinstance(obj, type) and issubclass(obj, BaseException) else None


def _rebuild(reports: list[tuple[str, str, str] | None]) -> BaseException:
    """One exception, identical on every rank, for the failures that the ranks reported."""
    failed = [r for r, rep in enumerate(reports) if rep is not None]
    first = failed[0]
    module, qualname, message = reports[first]  # type: ignore[misc]
    text = f"on rank {first} of {len(reports)}: {message}"
    if len(failed) > 1:
        text += f" (ranks {', '.join(map(str, failed))} failed)"
    cls = _exception_class(module, qualname)
    if cls is not None:
        try:
            return cls(text)
        except Exception:  # noqa: BLE001 - a constructor that needs more than a message
            pass
    return RuntimeError(f"{qualname}: {text}")


def agree(comm: MPI.Intracomm, error: BaseException | None, payload: Any = None) -> list[Any]:
    """Exchange errors and payloads; raise the same exception everywhere if any rank failed.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm
        Every rank of it must call this.
    error : BaseException or None
        This rank's error, if its local work failed.
    payload : object, optional
        A small picklable value the caller wants from every rank.

    Returns
    -------
    list
        The payloads of all ranks, in rank order (only when no rank failed).

    Raises
    ------
    Exception
        On every rank, the same type and message: those of the lowest failing
        rank, with the rank named in the message. On a failing rank it is
        chained to the original exception (``raise ... from``), so the
        traceback of the real failure is shown.
    """
    mine = (None, payload) if error is None else (_report(error), None)
    gathered = comm.allgather(mine)
    reports = [rep for rep, _ in gathered]
    if any(rep is not None for rep in reports):
        raise _rebuild(reports) from error
    return [p for _, p in gathered]


class Guard:
    """Record the first exception of a rank's local work instead of raising it at once.

    Use it as ``with guard: ...`` around local work (the exception, of any
    type, is kept and suppressed), test :attr:`ok` to skip further work once
    something failed while the communication goes on, and end every stretch
    of local work with :meth:`settle` before the next collective operation
    that could block.
    """

    def __init__(self, comm: MPI.Intracomm) -> None:
        self.comm = comm
        self.error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """No local work under this guard has failed so far."""
        return self.error is None

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, cls: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        # Exception, not BaseException: KeyboardInterrupt and SystemExit end
        # the process (and ``python -m mpi4py`` then aborts every rank).
        if isinstance(exc, Exception):
            if self.error is None:
                self.error = exc
            return True
        return False

    def settle(self, payload: Any = None) -> list[Any]:
        """:func:`agree` on the recorded error; the payloads of all ranks if none failed."""
        return agree(self.comm, self.error, payload)


# ----------------------------------------------------------------------------- communicator

def communicator(comm: Any) -> tuple[MPI.Intracomm, Exception | None]:
    """The communicator to agree on, and the error if ``comm`` is not usable.

    ``None`` means ``MPI.COMM_WORLD``. A ``comm`` that is not an
    intracommunicator is reported on ``MPI.COMM_WORLD``, the default the
    other ranks most likely use: raising at once would leave them waiting.
    (Ranks that passed another valid communicator cannot be reached; MPI
    offers no way to find them.)
    """
    if comm is None:
        return MPI.COMM_WORLD, None
    if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
        return MPI.COMM_WORLD, TypeError(
            f"comm must be an mpi4py intracommunicator; got {comm!r}")
    return comm, None


# ----------------------------------------------------------------------------- partition

@dataclass(frozen=True)
class Partition:
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
        """Rows of the global batch."""
        return int(self.counts.sum())

    @property
    def G(self) -> int:
        """Populations (product of the batch axes)."""
        return math.prod(self.batch_shape)

    @property
    def n(self) -> int:
        """Rows of this rank."""
        return int(self.counts[self.rank])

    @property
    def offsets(self) -> np.ndarray:
        """First global row of each rank's shard."""
        return np.concatenate(([0], np.cumsum(self.counts)[:-1])).astype(np.int64)


def partition(comm: MPI.Intracomm, error: BaseException | None, A: np.ndarray | None,
              params: dict[str, Any]) -> Partition:
    """First settlement of a call: shards and keywords must fit together on all ranks.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm
        The communicator of the call.
    error : BaseException or None
        This rank's validation error.
    A : ndarray or None
        This rank's validated shard ``(..., n_local, D)`` (``None`` on error).
    params : dict
        Validated keyword values that must be equal on every rank.

    Returns
    -------
    Partition

    Raises
    ------
    Exception
        On every rank, any rank's validation error (see :func:`agree`).
    ValueError
        On every rank, if the batch axes, D or a keyword differ between ranks,
        or no rank holds a row.
    """
    meta = None if A is None else (A.shape[:-2], A.shape[-2], A.shape[-1],
                                   A.dtype.str, params)
    metas = agree(comm, error, meta)
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
    # The dtype of the concatenated shards, computed as the single-process API would.
    dtype = _validation.compute_dtype(np.result_type(*(np.dtype(m[3]) for m in metas)))
    return Partition(comm, comm.Get_rank(), comm.Get_size(), counts, shapes[0][0],
                  shapes[0][1], dtype)
