"""Failures on some ranks only must reach every rank, never leave the others waiting.

Usage: ``mpiexec -n P python -W error::RuntimeWarning -m mpi4py check_hangs.py CASE``

Each CASE is one situation that used to deadlock (issue 13, "MPI hangs") or
that exercises the same mechanism at another point of the collective work (an
exception injected into one rank's local computation). For every call the
case makes, all ranks must end the same way: the same exception type with the
same message, or (should a later release accept the input) the same value.
Afterwards one correct call checks that the ranks are still in step. Rank 0
prints ``OK: CASE`` or the differences and every rank exits 0 or 1.

The test launches this under a subprocess timeout: a hang fails the test
instead of CI. ``-m mpi4py`` turns an unexpected exception into an abort of
all ranks, never a hang.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import numpy as np
from mpi4py import MPI

from kdentropy import mpi

comm = MPI.COMM_WORLD
P, RANK = comm.Get_size(), comm.Get_rank()
LAST = P - 1
# The rows every rank holds in the calls that must succeed.
OK_ROWS = np.random.default_rng([7, RANK]).random((5, 4))


class InjectedFault(LookupError):
    """An exception type no library code raises: it can only come from the injection."""


@contextmanager
def patched(module: Any, name: str, on_rank: int, after_calls: int = 0):
    """On ``on_rank``, ``module.name`` raises InjectedFault after ``after_calls`` good calls."""
    original = getattr(module, name)
    calls = [0]

    def faulty(*args, **kwargs):
        calls[0] += 1
        if calls[0] > after_calls:
            raise InjectedFault(f"injected into {name} on rank {RANK}")
        return original(*args, **kwargs)

    if RANK == on_rank:
        setattr(module, name, faulty)
    try:
        yield
    finally:
        setattr(module, name, original)


def outcome(fn: Callable[[], Any]) -> tuple[str, str]:
    """How a call ended on this rank: ("value", repr) or (exception type, message)."""
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001 - any type must be reported the same everywhere
        return type(exc).__name__, str(exc)
    H = value[0] if isinstance(value, tuple) else value
    return "value", repr(np.asarray(H).tolist())


def sharded(n_per_rank: int, empty: set[int], D: int = 4) -> np.ndarray:
    """This rank's rows: ``n_per_rank`` random rows, or none on the ranks in ``empty``."""
    n = 0 if RANK in empty else n_per_rank
    return np.random.default_rng([11, RANK]).random((n, D))


def soft_calls(X: np.ndarray, backend: str, **kw) -> list[tuple[str, Callable[[], Any]]]:
    """Every soft function under both schedules."""
    return [(f"{fn.__name__} [{backend}, {schedule}]",
             lambda fn=fn, schedule=schedule: fn(X, backend=backend, schedule=schedule, **kw))
            for schedule in mpi.SCHEDULES
            for fn in (mpi.soft_entropy, mpi.soft_entropy_and_grad)]


def warned(module: Any, name: str) -> Callable[[], Any]:
    """A context in which ``module.name`` first warns (RuntimeWarning), then works as usual."""
    original = getattr(module, name)

    def warning(*args, **kwargs):
        warnings.warn(f"injected overflow in {name} on rank {RANK}", RuntimeWarning,
                      stacklevel=2)
        return original(*args, **kwargs)

    @contextmanager
    def context():
        setattr(module, name, warning)
        try:
            yield
        finally:
            setattr(module, name, original)

    return context


def within(context: Callable[[], Any], calls: list[tuple[str, Callable[[], Any]]]
           ) -> list[tuple[str, Callable[[], Any]]]:
    """The same calls, each made inside ``context()``."""
    def inside(fn):
        def call():
            with context():
                return fn()
        return call
    return [(what, inside(fn)) for what, fn in calls]


def case_tiny_sigma_empty_rank() -> list[tuple[str, Callable[[], Any]]]:
    # sigma = 1e-300 raised ZeroDivisionError on the ranks with rows while
    # the empty rank 0 waited in the next collective. (Should validation
    # reject such sigma, every rank must raise that error instead.)
    return soft_calls(sharded(6, empty={0}), "cpu", sigma=1e-300)


def case_warning_empty_rank() -> list[tuple[str, Callable[[], Any]]]:
    # Launched under -W error::RuntimeWarning. sigma = 1e-160: 2 sigma^2 is subnormal and the
    # numpy backend's d^2 / (2 sigma^2) overflows with a RuntimeWarning, an
    # exception on the ranks with rows; rank 0 has none and computes nothing.
    # The same warning raised from inside the block work (whatever
    # validation makes of that sigma) must do the same.
    from kdentropy.backends import reference

    X = sharded(6, empty={0})
    return (soft_calls(X, "numpy", sigma=1e-160)
            + within(warned(reference, "block_soft_counts"), soft_calls(X, "numpy"))
            + within(warned(reference, "block_weighted_grad"), soft_calls(X, "numpy")))


def case_warning_one_rank() -> list[tuple[str, Callable[[], Any]]]:
    # Every rank sees the same RuntimeWarning, but only rank 0 turns it into
    # an error (as ``python -W error`` on one rank of an MPMD launch would).
    from kdentropy.backends import reference

    warnings.simplefilter("error" if RANK == 0 else "ignore")
    X = sharded(6, empty=set())
    return (soft_calls(X, "numpy", sigma=1e-160)
            + within(warned(reference, "block_soft_counts"), soft_calls(X, "numpy"))
            + within(warned(reference, "input_grad"), soft_calls(X, "numpy")))


def case_comm_on_one_rank() -> list[tuple[str, Callable[[], Any]]]:
    # A bad comm on one rank: that rank raised at once, the others waited.
    bad: list[Any] = ["world", MPI.COMM_NULL]
    calls = []
    for value in bad:
        comm_arg = value if RANK == LAST else None
        calls += [(f"soft_entropy comm={value!r} on rank {LAST}",
                   lambda c=comm_arg: mpi.soft_entropy(OK_ROWS, backend="numpy", comm=c)),
                  (f"hard_entropy comm={value!r} on rank {LAST}",
                   lambda c=comm_arg: mpi.hard_entropy(OK_ROWS, comm=c))]
    return calls


def case_fault_in_sweep() -> list[tuple[str, Callable[[], Any]]]:
    # Any exception in one rank's block work, in either pass, either schedule,
    # also while another rank holds no rows.
    from kdentropy.backends import reference

    calls = []
    for name in ("block_soft_counts", "block_weighted_grad"):
        for X, where in ((OK_ROWS, "all ranks hold rows"), (sharded(5, {0}), "rank 0 empty")):
            for schedule in mpi.SCHEDULES:
                def call(name=name, X=X, schedule=schedule):
                    with patched(reference, name, on_rank=LAST):
                        return mpi.soft_entropy_and_grad(X, backend="numpy", schedule=schedule)
                calls.append((f"{name} fails on rank {LAST} [{schedule}, {where}]", call))
    return calls


def case_fault_after_last_exchange() -> list[tuple[str, Callable[[], Any]]]:
    # The last local step (chain rule through the sigmoid, hard entropy
    # merge): one rank failing there must not leave the others returning.
    from kdentropy.backends import reference

    def soft():
        with patched(reference, "input_grad", on_rank=LAST):
            return mpi.soft_entropy_and_grad(OK_ROWS, backend="numpy", schedule="ring")

    def hard():
        with patched(np, "bincount", on_rank=LAST, after_calls=1):
            return mpi.hard_entropy(OK_ROWS)

    return [("input_grad fails on the last rank", soft),
            ("hard merge fails on the last rank", hard)]


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}


def main() -> int:
    case = sys.argv[1]
    problems = []
    with warnings.catch_warnings():
        calls = CASES[case]()
        results = [(what, outcome(fn)) for what, fn in calls]
    for what, mine in results:
        everyone = comm.allgather(mine)
        if any(o != everyone[0] for o in everyone):
            problems.append(f"{what}: ranks ended differently: {everyone}")
    # Still in step: a correct call gives the same value everywhere.
    values = comm.allgather(mpi.soft_entropy(OK_ROWS, backend="numpy", schedule="ring"))
    if any(v != values[0] for v in values):
        problems.append(f"ranks out of step afterwards: {values}")
    problems = comm.gather(problems, root=0)
    status = 0
    if RANK == 0:
        flat = [p for ps in problems for p in ps]
        for p in flat:
            print("FAIL", p)
        for what, (kind, text) in results:
            print(f"  {what}: {kind}: {text[:120]}")
        print(f"{'FAILED' if flat else 'OK'}: {case} ({len(results)} calls on {P} ranks)")
        status = 1 if flat else 0
    return comm.bcast(status, root=0)


if __name__ == "__main__":
    sys.exit(main())
