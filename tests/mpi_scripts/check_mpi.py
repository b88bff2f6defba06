"""Checks of kdentropy.mpi against the single-process functions, run under mpiexec.

Usage: ``mpiexec -n P python -m mpi4py check_mpi.py SEED BACKEND[,BACKEND...]``

Every rank builds the same global batches from SEED, keeps its own rows and
compares the distributed result with the single-process one on the whole
batch. Failures are collected rather than raised, so all ranks stay in step;
rank 0 prints them all and every rank exits with status 1 if there were any.
(``-m mpi4py`` aborts all ranks if a check raises unexpectedly, so a bug can
fail the run but never leave it hanging.)
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import numpy as np
import scipy.stats
from mpi4py import MPI

import kdentropy as kde
from kdentropy import mpi

# The shared test helpers live one directory up (tests/helpers.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import clustered  # noqa: E402

comm = MPI.COMM_WORLD
P, RANK = comm.Get_size(), comm.Get_rank()
failures: list[str] = []
n_checks = 0


def check(ok: bool, what: str) -> None:
    global n_checks
    n_checks += 1
    if not ok:
        failures.append(f"rank {RANK}: {what}")


def uneven_counts(rng, N, empty=()):
    """Random, unequal rows per rank summing to N; ranks in ``empty`` get none."""
    holders = [r for r in range(P) if r not in empty]
    counts = np.zeros(P, dtype=np.int64)
    cuts = np.sort(rng.integers(0, N + 1, size=len(holders) - 1))
    counts[holders] = np.diff(np.concatenate(([0], cuts, [N])))
    return counts


def my_rows(X, counts):
    start = int(counts[:RANK].sum())
    return X[..., start:start + int(counts[RANK]), :]


def same_on_all_ranks(value, what):
    values = comm.allgather(np.asarray(value))
    check(all(np.array_equal(v, values[0]) for v in values),
          f"{what}: value differs between ranks: {values}")


def compare_soft(X, counts, backend, what, tol_value=None, tol_grad=None, **kw):
    """All three soft functions, both schedules, against the single-process result."""
    H_ref, G_ref = kde.soft_entropy_and_grad(X, backend=backend, **kw)
    X_local = my_rows(X, counts)
    before = np.array(X_local, copy=True)
    G_ref_local = my_rows(G_ref, counts)
    N = X.shape[-2]
    float32 = G_ref.dtype == np.float32
    if tol_value is None:  # float64: rel. 1e-12 of the single process; float32: abs 1e-5 log N
        tol_value = 1e-5 * np.log(max(N, 2)) if float32 else 1e-12 * np.abs(H_ref).max()
    if tol_grad is None:   # float64: 1e-12 of the largest entry; float32: 1e-4 of the norm
        tol_grad = 1e-4 * np.linalg.norm(G_ref) if float32 else 1e-12 * np.abs(G_ref).max()
    for schedule in mpi.SCHEDULES:
        tag = f"{what} [{backend}, {schedule}]"
        H1 = mpi.soft_entropy(X_local, backend=backend, schedule=schedule, **kw)
        G1 = mpi.soft_entropy_grad(X_local, backend=backend, schedule=schedule, **kw)
        H2, G2 = mpi.soft_entropy_and_grad(X_local, backend=backend, schedule=schedule, **kw)
        check(np.shape(H1) == np.shape(H_ref) and np.shape(H2) == np.shape(H_ref),
              f"{tag}: value shape {np.shape(H1)} != {np.shape(H_ref)}")
        check(np.asarray(H1).dtype == np.float64, f"{tag}: value dtype {np.asarray(H1).dtype}")
        for name, G in (("grad", G1), ("and_grad", G2)):
            check(G.shape == X_local.shape, f"{tag} {name}: shape {G.shape} != {X_local.shape}")
            check(G.dtype == G_ref.dtype, f"{tag} {name}: dtype {G.dtype} != {G_ref.dtype}")
        err_H = np.abs(np.asarray(H1) - H_ref).max(initial=0.0)
        check(err_H <= tol_value, f"{tag}: |H - H_ref| = {err_H:.3e} > {tol_value:.3e}")
        check(np.array_equal(H1, H2), f"{tag}: soft_entropy and soft_entropy_and_grad differ")
        check(np.array_equal(G1, G2), f"{tag}: soft_entropy_grad and _and_grad differ")
        err_G = (np.linalg.norm(G1.astype(np.float64) - G_ref_local) if float32
                 else np.abs(G1 - G_ref_local).max(initial=0.0))
        check(err_G <= tol_grad, f"{tag}: gradient error {err_G:.3e} > {tol_grad:.3e}")
        same_on_all_ranks(H1, tag)
        # Deterministic: the same call again gives the same bits.
        H3, G3 = mpi.soft_entropy_and_grad(X_local, backend=backend, schedule=schedule, **kw)
        check(np.array_equal(H3, H2) and np.array_equal(G3, G2), f"{tag}: not deterministic")
    check(np.array_equal(np.asarray(X_local), before), f"{what}: X_local was modified")


def compare_hard(X, counts, what, threshold=0.5, base=None, normalize=False):
    batch = X.shape[:-2]
    flat = X.reshape((int(np.prod(batch)),) + X.shape[-2:])
    ref = np.array([scipy.stats.entropy(kde.pattern_counts(x, threshold)[1], base=base)
                    for x in flat]).reshape(batch)
    if normalize and X.shape[-1]:
        ref = ref / X.shape[-1]
    H = mpi.hard_entropy(my_rows(X, counts), threshold, base=base, normalize=normalize)
    check(np.shape(H) == batch, f"{what}: shape {np.shape(H)} != {batch}")
    err = np.abs(np.asarray(H) - ref).max(initial=0.0)
    check(err <= 1e-12 * max(1.0, np.abs(ref).max(initial=0.0)),
          f"{what}: |H - scipy.stats.entropy| = {err:.3e} (H={H}, ref={ref})")
    same_on_all_ranks(H, what)


def expect_error(exc_type, what, fn, must_mention=()):
    """``fn`` must raise ``exc_type`` on this rank (and so, run everywhere, on every rank)."""
    msg = None
    try:
        fn()
    except exc_type as exc:
        msg = str(exc)
        check(all(word in msg for word in must_mention),
              f"{what}: message {msg!r} lacks {must_mention}")
    except Exception as exc:  # noqa: BLE001 - report the wrong type, keep the ranks in step
        check(False, f"{what}: raised {type(exc).__name__}({exc}), expected {exc_type.__name__}")
    else:
        check(False, f"{what}: no {exc_type.__name__} raised")
    # The same exception everywhere, not just one of the right type.
    same_on_all_ranks(msg, f"{what}: message")


def soft_cases(rng, backend):
    # Uneven shards, float64, default keywords.
    X = clustered(rng, (41,), 7)
    compare_soft(X, uneven_counts(rng, 41), backend, "uneven float64")
    # The first rank (and, with P >= 3, the last) holds no rows.
    X = clustered(rng, (30,), 5)
    compare_soft(X, uneven_counts(rng, 30, empty={0, P - 1} if P >= 3 else {0}), backend,
                 "empty shard", temperature=6.0, sigma=0.7, threshold=0.4)
    # float32, batched populations, every keyword.
    X = clustered(rng, (2, 3, 25), 11).astype(np.float32)
    compare_soft(X, uneven_counts(rng, 25), backend, "float32 batched",
                 temperature=8.0, sigma=0.6, threshold=0.45, base=2, normalize=True)
    # float64 batched, one population nearly collapsed (gradient of very different sizes).
    X = clustered(rng, (3, 33), 6)
    X[1] = X[1, :1] + 0.01 * rng.standard_normal(X[1].shape)
    compare_soft(X, uneven_counts(rng, 33), backend, "float64 batched", base=np.e)
    # Shards longer than the numpy backend's tile, so the tiling is exercised.
    X = clustered(rng, (P * 600 + 17,), 3, n_proto=6, noise=0.3)
    compare_soft(X, uneven_counts(rng, X.shape[0]), backend, "tiled shards")


def soft_edge_cases(rng, backend):
    # Integer input is computed in float64; a shard may be non-contiguous.
    X = rng.integers(0, 2, size=(23, 9))
    counts = uneven_counts(rng, 23)
    H_ref, G_ref = kde.soft_entropy_and_grad(X, backend=backend)
    X_local = np.asfortranarray(my_rows(X, counts))
    H, G = mpi.soft_entropy_and_grad(X_local, backend=backend)
    check(G.dtype == np.float64 and G.shape == X_local.shape, "int input: dtype/shape")
    check(abs(H - H_ref) <= 1e-12 * H_ref and np.allclose(G, my_rows(G_ref, counts),
                                                            rtol=0, atol=1e-12 * abs(G_ref).max()),
          "int input: value or gradient")
    # Mixed dtypes compute like the concatenation: float64 as soon as one shard is.
    X = clustered(rng, (20,), 4).astype(np.float32)
    counts = uneven_counts(rng, 20)
    X_local = my_rows(X, counts).astype(np.float64 if RANK == P - 1 else np.float32)
    H_ref, G_ref = kde.soft_entropy_and_grad(X.astype(np.float64), backend=backend)
    for schedule in mpi.SCHEDULES:
        H, G = mpi.soft_entropy_and_grad(X_local, backend=backend, schedule=schedule)
        check(G.dtype == np.float64, f"mixed dtypes [{schedule}]: gradient dtype {G.dtype}")
        check(abs(H - H_ref) <= 1e-12 * H_ref, f"mixed dtypes [{schedule}]: value")
        check(np.abs(G - my_rows(G_ref, counts)).max(initial=0) <= 1e-12 * abs(G_ref).max(),
              f"mixed dtypes [{schedule}]: gradient")
    # N = 1 globally (on the last rank): H = 0, zero gradient of the right shapes.
    X_local = np.full((1 if RANK == P - 1 else 0, 5), 0.3, dtype=np.float32)
    H, G = mpi.soft_entropy_and_grad(X_local, backend=backend, schedule="ring")
    check(H == 0.0 and G.shape == X_local.shape and G.dtype == np.float32 and not G.any(),
          f"N = 1: H={H}, grad {G.shape} {G.dtype}")
    # D = 0: every pattern is the empty pattern.
    H, G = mpi.soft_entropy_and_grad(np.zeros((2, RANK + 1, 0)), backend=backend)
    check(np.array_equal(H, np.zeros(2)) and G.shape == (2, RANK + 1, 0), "D = 0")
    # No populations at all.
    H = mpi.soft_entropy(np.zeros((0, 3, 4)), backend=backend)
    check(isinstance(H, np.ndarray) and H.shape == (0,), f"G = 0: {H!r}")
    # One process on its own (COMM_SELF) is the single-process function.
    X = clustered(rng, (2, 19), 6)
    H_ref, G_ref = kde.soft_entropy_and_grad(X, backend=backend)
    for schedule in mpi.SCHEDULES:
        H, G = mpi.soft_entropy_and_grad(X, backend=backend, comm=MPI.COMM_SELF,
                                         schedule=schedule)
        check(np.allclose(H, H_ref, rtol=1e-12, atol=0)
              and np.allclose(G, G_ref, rtol=0, atol=1e-12 * abs(G_ref).max()),
              f"COMM_SELF [{schedule}]")
    # The backend switch applies as in the single-process functions.
    x = clustered(rng, (9,), 4)
    with kde.use_backend(backend):
        H_ctx = mpi.soft_entropy(x)
    check(H_ctx == mpi.soft_entropy(x, backend=backend), "use_backend is not honoured")
    if backend == "cpu":
        check(mpi.soft_entropy(x, backend="auto") == H_ctx, "auto does not select cpu")
        # cuda has no block primitives: cpu computes the blocks, GPU or not.
        check(mpi.soft_entropy(x, backend="cuda") == H_ctx, "cuda does not fall back to cpu")
    # The ring's messages cannot be taken by a receive the caller has pending
    # on the same communicator (they travel on a duplicate of it).
    pending = comm.irecv(source=(RANK - 1) % P, tag=MPI.ANY_TAG)
    mpi.soft_entropy_and_grad(x, backend=backend, schedule="ring")
    comm.send(("user message", RANK), dest=(RANK + 1) % P, tag=7)
    check(pending.wait() == ("user message", (RANK - 1) % P),
          "a pending user receive got something else")
    # A sub-communicator: even and odd ranks compute two different batches.
    sub = comm.Split(RANK % 2, RANK)
    X = clustered(rng, (2, 17), 5)[RANK % 2]
    counts = np.diff(np.linspace(0, 17, sub.Get_size() + 1).astype(int))
    start = int(counts[:sub.Get_rank()].sum())
    H = mpi.soft_entropy(X[start:start + counts[sub.Get_rank()]], backend=backend, comm=sub,
                         schedule="ring")
    check(abs(H - kde.soft_entropy(X, backend=backend)) <= 1e-12 * H, "sub-communicator")
    sub.Free()


def hard_cases(rng):
    # Batched, repeated patterns, uneven shards.
    X = clustered(rng, (2, 50), 13, n_proto=5, noise=0.1)
    compare_hard(X, uneven_counts(rng, 50), "hard batched")
    # An empty shard, float32, bits, per cell, many words per row (D = 70).
    X = clustered(rng, (40,), 70, n_proto=7, noise=0.2).astype(np.float32)
    compare_hard(X, uneven_counts(rng, 40, empty={0}), "hard empty shard",
                 threshold=0.4, base=2, normalize=True)
    # Almost every row distinct: H close to log N.
    X = rng.random((64, 20))
    compare_hard(X, uneven_counts(rng, 64), "hard all distinct")
    # Mixed dtypes binarise like the float64 concatenation: v = float32(0.1)
    # is below this threshold in float64 but not once the threshold is
    # rounded to float32, so rank 0 must not compare its float32 shard as is.
    v, threshold = float(np.float32(0.1)), 0.1000000016
    X = np.where(rng.random((30, 6)) < 0.5, v, 0.9)
    counts = uneven_counts(rng, 30)
    ref = scipy.stats.entropy(kde.pattern_counts(X, threshold)[1])
    mine = my_rows(X, counts).astype(np.float32 if RANK == 0 else np.float64)
    H = mpi.hard_entropy(mine, threshold)
    check(abs(H - ref) <= 1e-12 * ref, f"hard mixed dtypes: {H} != {ref}")
    # All rows equal, and D = 0: H = 0.
    compare_hard(np.ones((12, 3)), uneven_counts(rng, 12), "hard one pattern")
    compare_hard(np.ones((12, 0)), uneven_counts(rng, 12), "hard D = 0")


def error_cases(backend):
    ok = np.random.default_rng(RANK).random((4, 5))
    both = mpi.SCHEDULES
    for schedule in both:
        bad_D = np.zeros((3, 5 if RANK == 0 else 6))
        expect_error(ValueError, f"mismatched D [{schedule}]",
                     lambda: mpi.soft_entropy_and_grad(bad_D, backend=backend, schedule=schedule),
                     must_mention=("D", "rank"))
    expect_error(ValueError, "hard: mismatched D",
                 lambda: mpi.hard_entropy(np.zeros((3, 5 if RANK == 0 else 6))), ("D",))
    bad_batch = np.zeros((2 if RANK == 0 else 3, 4, 5))
    expect_error(ValueError, "mismatched batch axes",
                 lambda: mpi.soft_entropy(bad_batch, backend=backend), ("batch",))
    nan_last = ok.copy()
    if RANK == P - 1:
        nan_last[0, 0] = np.nan
    expect_error(ValueError, "NaN on the last rank only",
                 lambda: mpi.soft_entropy_grad(nan_last, backend=backend, schedule="ring"),
                 ("NaN",))
    expect_error(ValueError, "hard: NaN on the last rank only",
                 lambda: mpi.hard_entropy(nan_last), ("NaN",))
    cplx = ok.astype(complex) if RANK == 0 else ok
    expect_error(TypeError, "complex on rank 0 only",
                 lambda: mpi.soft_entropy(cplx, backend=backend), ("complex",))
    flat = ok[0] if RANK == P - 1 else ok
    expect_error(ValueError, "1-D shard on the last rank",
                 lambda: mpi.soft_entropy(flat, backend=backend), ("dimensions",))
    expect_error(ValueError, "schedule differs between ranks",
                 lambda: mpi.soft_entropy(ok, backend=backend, schedule=both[RANK % 2]),
                 ("schedule",))
    expect_error(ValueError, "temperature differs between ranks",
                 lambda: mpi.soft_entropy(ok, 5.0 + RANK, backend=backend), ("temperature",))
    expect_error(ValueError, "unknown schedule",
                 lambda: mpi.soft_entropy(ok, backend=backend, schedule="tree"), ("schedule",))
    expect_error(ValueError, "sigma <= 0 on the last rank",
                 lambda: mpi.soft_entropy(ok, sigma=-1.0 if RANK == P - 1 else 0.5,
                                          backend=backend), ("sigma",))
    expect_error(ValueError, "no rows on any rank",
                 lambda: mpi.soft_entropy(np.zeros((0, 3)), backend=backend), ("N >= 1",))
    expect_error(ValueError, "hard: no rows on any rank",
                 lambda: mpi.hard_entropy(np.zeros((0, 3))), ("N >= 1",))
    expect_error(TypeError, "comm is not a communicator",
                 lambda: mpi.soft_entropy(ok, backend=backend, comm="world"), ("comm",))
    expect_error(ValueError, "unknown backend",
                 lambda: mpi.soft_entropy(ok, backend="fortran"), ("backend",))
    # After all that the ranks are still in step: a correct call still agrees.
    X = np.concatenate(comm.allgather(ok))
    H = mpi.soft_entropy(ok, backend=backend, schedule="ring")
    check(abs(H - kde.soft_entropy(X, backend=backend)) <= 1e-12 * abs(H),
          "ranks out of step after the error cases")


def estimate_cases(rng):
    """mpi.entropy_estimate equals kde.entropy_estimate, field for field, on every rank."""
    X = np.concatenate([rng.integers(0, 2, size=(2, 30, 6)),
                        np.repeat(rng.integers(0, 2, size=(2, 1, 6)), 25, axis=1)], axis=1)
    counts = uneven_counts(rng, X.shape[1], empty={0})
    for method in ("nsb", "chao-shen", "miller-madow", "plugin"):
        got = mpi.entropy_estimate(my_rows(X, counts), method, base=2, rng=11, n_boot=200)
        want = kde.entropy_estimate(X, method, base=2, rng=11, n_boot=200)
        for field in ("estimate", "stderr", "low", "high", "plugin", "n", "distinct",
                      "singletons", "coverage"):
            check(np.array_equal(getattr(got, field), getattr(want, field)),
                  f"estimate {method} {field}: {getattr(got, field)} != {getattr(want, field)}")
        same_on_all_ranks(got.estimate, f"estimate {method}")
        same_on_all_ranks(got.high, f"estimate {method} high")
    one = np.ones((12, 3))
    got = mpi.entropy_estimate(my_rows(one, uneven_counts(rng, 12)), "nsb")
    check(got == kde.entropy_estimate(one, "nsb"), "estimate one pattern")
    expect_error(ValueError, "estimate: confidence out of range",
                 lambda: mpi.entropy_estimate(np.zeros((3, 4)), confidence=1.5), ("confidence",))
    expect_error(ValueError, "estimate: n_boot < 1 on every rank",
                 lambda: mpi.entropy_estimate(np.zeros((3, 4)), n_boot=0), ("n_boot",))


def main() -> int:
    seed = int(sys.argv[1])
    backends = sys.argv[2].split(",")
    try:
        for i, backend in enumerate(backends):
            rng = np.random.default_rng([seed, i])
            soft_cases(rng, backend)
            soft_edge_cases(rng, backend)
            error_cases(backend)
        hard_cases(np.random.default_rng([seed, 99]))
        estimate_cases(np.random.default_rng([seed, 98]))
    except Exception:  # noqa: BLE001 - report and abort every rank instead of hanging
        traceback.print_exc()
        sys.stdout.flush()
        comm.Abort(2)
    all_failures = comm.gather(failures, root=0)
    total = comm.reduce(n_checks, root=0)
    status = 0
    if RANK == 0:
        flat = [f for fs in all_failures for f in fs]
        for f in flat:
            print("FAIL", f)
        print(f"{'FAILED' if flat else 'OK'}: {len(flat)} of {total} checks failed "
              f"on {P} ranks (backends {backends})")
        status = 1 if flat else 0
    return comm.bcast(status, root=0)


if __name__ == "__main__":
    sys.exit(main())
