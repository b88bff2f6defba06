"""Per-rank peak memory of one distributed soft_entropy_and_grad call.

Usage: ``mpiexec -n P python -m mpi4py memory_probe.py N D SCHEDULE [BACKEND]``

Not run by the test suite (it is a measurement): it reports, per rank, the
peak of the memory allocated by Python and NumPy during the call (tracemalloc,
which sees every NumPy array) and the growth of the process's peak resident
set (``ru_maxrss``, which also sees MPI's own buffers). Run one schedule per
launch, since ``ru_maxrss`` never goes down.
"""

from __future__ import annotations

import resource
import sys
import time
import tracemalloc

import numpy as np
from mpi4py import MPI

from kdentropy import mpi


def main() -> None:
    N, D, schedule = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    backend = sys.argv[4] if len(sys.argv) > 4 else None
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    counts = np.diff(np.linspace(0, N, size + 1).astype(np.int64))
    rng = np.random.default_rng([N, D, rank])
    protos = np.random.default_rng(0).integers(0, 2, size=(8, D)).astype(np.float64)
    X_local = protos[rng.integers(0, 8, counts[rank])] + 0.3 * rng.standard_normal(
        (counts[rank], D))
    # Load the compiled kernels and let MPI set up its connections first.
    mpi.soft_entropy_and_grad(X_local[:4], backend=backend, schedule=schedule)
    comm.Barrier()

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    t0 = time.perf_counter()
    H, grad = mpi.soft_entropy_and_grad(X_local, backend=backend, schedule=schedule)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    shard_mib = X_local.nbytes / 2**20
    rows = comm.gather((rank, counts[rank], peak / 2**20, (rss1 - rss0) / 2**10, seconds),
                       root=0)
    if rank == 0:
        print(f"N={N} D={D} P={size} schedule={schedule} backend={backend or 'auto'} "
              f"H={H:.12f}; X shard {shard_mib:.1f} MiB, whole X {N * D * 8 / 2**20:.1f} MiB")
        for r, n, traced, rss, sec in rows:
            print(f"  rank {r}: n_local={n:6d}  traced peak {traced:8.1f} MiB  "
                  f"ru_maxrss growth {rss:8.1f} MiB  {sec:6.2f} s")


if __name__ == "__main__":
    main()
