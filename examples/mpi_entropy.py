"""Entropy of runs spread over MPI ranks
=====================================

Soft and hard reproducibility entropy of a batch of runs spread over MPI ranks.

Run:  mpiexec -n 4 python examples/mpi_entropy.py
      (needs the mpi extra: pip install 'kdentropy[mpi]'; --help lists options)

Each rank generates its own runs of a system of D cells (noisy copies of a few
outcomes shared by all ranks) and never sees the others' rows. The global
soft entropy, its gradient for the local rows and the exact hard entropy are
computed with both communication schedules; then a few gradient-descent
steps on the runs themselves pull each cluster of runs together, so the soft
entropy falls towards the hard one.

With several ranks per machine, give each rank its share of the cores, e.g.
``NUMBA_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2`` for 4 ranks on 8 cores: the
default (every rank using every core) oversubscribes them badly.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

import numpy as np

try:
    from mpi4py import MPI
except ImportError:  # an optional dependency: say which extra, not a traceback
    sys.exit('mpi_entropy.py needs mpi4py: pip install "kdentropy[mpi]"')

import kdentropy as kde
from kdentropy import mpi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-per-rank", type=int, default=500, help="rows on rank 0 "
                        "(other ranks hold a few more, to show uneven shards)")
    parser.add_argument("--cells", type=int, default=32, help="D, cells per run")
    parser.add_argument("--backend", default=None, help="numpy, cpu or auto (default)")
    parser.add_argument("--steps", type=int, default=3, help="gradient-descent steps")
    args = parser.parse_args()

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    say = print if rank == 0 else (lambda *a, **k: None)

    # The possible outcomes are common knowledge (same seed everywhere); the
    # runs are each rank's own (seed depends on the rank).
    outcomes = np.random.default_rng(2024).integers(0, 2, size=(3, args.cells))
    rng = np.random.default_rng([2024, rank])
    n_local = args.runs_per_rank + 7 * rank
    which = rng.choice(3, size=n_local, p=[0.5, 0.3, 0.2])
    X_local = outcomes[which] + 0.2 * rng.standard_normal((n_local, args.cells))
    X_local[rng.random(n_local) < 0.1] = rng.random((1, args.cells))  # some stray runs

    N = comm.allreduce(n_local)
    say(f"{size} ranks, N = {N} runs of D = {args.cells} cells "
        f"({n_local} on rank 0), log N = {np.log(N):.4f} nats")

    # A first small call loads the compiled kernels, so the timings below
    # measure the computation.
    mpi.soft_entropy_and_grad(X_local[:2], backend=args.backend)
    for schedule in mpi.SCHEDULES:
        comm.Barrier()
        t0 = time.perf_counter()
        H, grad = mpi.soft_entropy_and_grad(X_local, backend=args.backend, schedule=schedule)
        elapsed = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        grad_norm = np.sqrt(comm.allreduce(float(np.sum(grad * grad))))
        say(f"soft entropy [{schedule:9s}] : {H:.12f} nats, |grad| = {grad_norm:.4e}, "
            f"{elapsed:.3f} s")

    H_hard = mpi.hard_entropy(X_local)
    say(f"hard entropy               : {H_hard:.12f} nats "
        f"({mpi.hard_entropy(X_local, base=2):.4f} bits)")

    # The same numbers as one process holding everything (gathered here only
    # to show it; the distributed functions never gather X).
    X_all = comm.gather(X_local, root=0)
    if rank == 0:
        X_all = np.concatenate(X_all)
        print(f"single process, all rows   : {kde.soft_entropy(X_all, backend=args.backend):.12f}"
              f" soft, {kde.hard_entropy(X_all):.12f} hard")

    # Gradient descent on the runs themselves: every rank moves its own rows
    # down the gradient of the global entropy.
    for step in range(1, args.steps + 1):
        H, grad = mpi.soft_entropy_and_grad(X_local, backend=args.backend, schedule="ring")
        X_local = X_local - (0.5 * N) * grad  # dH/dX scales like 1/N per row
        say(f"step {step}: soft {H:.4f} -> {mpi.soft_entropy(X_local, backend=args.backend):.4f},"
            f" hard {mpi.hard_entropy(X_local):.4f} nats")


if __name__ == "__main__":
    try:
        main()
    except Exception:  # noqa: BLE001 - one failing rank must not leave the others waiting
        traceback.print_exc()
        sys.stdout.flush()
        MPI.COMM_WORLD.Abort(1)
