"""Communication schedules: how each rank gets to see every rank's shard.

Both schedules visit the shards in a fixed order, so sums over them are
deterministic. Their buffers are allocated by the constructors, before the
first transfer, so that an allocation failure is local work a
:class:`~kdentropy.mpi._agree.Guard` can report, never a rank missing from a
collective operation.

``"allgather"``
    One ``Allgatherv`` of the soft patterns; every rank holds all of them.
``"ring"``
    The shards travel round the ring of ranks with non-blocking
    sends/receives, overlapped with the work on the shard in hand; no rank
    holds more than three shards.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from ._agree import Partition

__all__ = ["SCHEDULES", "Allgather", "Ring"]

SCHEDULES = ("allgather", "ring")


class Allgather:
    """``Allgatherv`` of one ``(G, n_r, *row_shape)`` array per rank, into a preallocated buffer.

    Parameters
    ----------
    part : Partition
        The agreed partition of the global batch.
    row_shape : tuple of int
        Shape of one row's data (``(D,)`` for patterns, ``()`` for counts).
    dtype : numpy.dtype
        Dtype of the arrays, the same on every rank.
    """

    def __init__(self, part: Partition, row_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.part = part
        self.row_shape = row_shape
        per_row = part.G * math.prod(row_shape)
        self.counts = part.counts * per_row
        self.displs = part.offsets * per_row
        self.buffer = np.empty(int(self.counts.sum()), dtype=dtype)

    def shards(self) -> list[np.ndarray]:
        """The P shards, as views of the buffer, in rank order."""
        part = self.part
        return [self.buffer[self.displs[r]:self.displs[r] + self.counts[r]]
                .reshape((part.G, int(part.counts[r])) + self.row_shape) for r in range(part.size)]

    def __call__(self, local: np.ndarray) -> list[np.ndarray]:
        """Collective: gather ``local`` of every rank; returns :meth:`shards`."""
        mpitype = from_numpy_dtype(self.buffer.dtype)
        send = np.ascontiguousarray(local, dtype=self.buffer.dtype).ravel()
        self.part.comm.Allgatherv([send, mpitype],
                                 [self.buffer, self.counts, self.displs, mpitype])
        return self.shards()


class Ring:
    """Pass ``(G, n_r, D)`` shards round the ring of ranks, one step per rank.

    Two receive buffers (sized for the largest shard) alternate, so at most
    the own shard and two others are held at once; they are allocated here
    and reused by every :meth:`visit`.

    Parameters
    ----------
    part : Partition
        The agreed partition of the global batch.
    dtype : numpy.dtype
        Dtype of the shards, the same on every rank.
    """

    def __init__(self, part: Partition, dtype: np.dtype) -> None:
        self.part = part
        size = part.G * int(part.counts.max()) * part.D
        # P = 2 needs one receive buffer, P = 1 none.
        self.buffers = [np.empty(size, dtype=dtype) for _ in range(min(2, part.size - 1))]

    def visit(self, own: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Collective: yield ``(source rank, its shard)`` for every rank, the own shard first.

        At step k this rank holds the shard of rank ``rank - k`` and forwards
        it to ``rank + 1`` while receiving the next one from ``rank - 1``; the
        transfer starts before the shard is yielded, so it overlaps with the
        caller's work. The caller must consume every step (its work is
        guarded, so it never raises in between).
        """
        part = self.part
        P, rank, G, D = part.size, part.rank, part.G, part.D
        left, right = (rank - 1) % P, (rank + 1) % P
        # Point-to-point messages go on a private duplicate so they can never
        # match a receive the caller has posted on the same communicator.
        comm = part.comm.Dup()
        try:
            cur, src = np.ascontiguousarray(own), rank
            for k in range(P):
                requests = []
                if k < P - 1:
                    nxt_src = (rank - k - 1) % P
                    n_next = int(part.counts[nxt_src])
                    nxt = self.buffers[k % 2][:G * n_next * D].reshape((G, n_next, D))
                    requests = [comm.Irecv(nxt, source=left), comm.Isend(cur, dest=right)]
                yield src, cur
                if requests:
                    MPI.Request.Waitall(requests)
                    cur, src = nxt, nxt_src
        finally:
            comm.Free()
