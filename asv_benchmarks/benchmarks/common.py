"""Shared inputs, backend checks and timing helpers for the kdentropy benchmarks.

Everything here is deterministic: inputs come from fixed seeds, so every asv
process (and every commit) times the same arrays.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

import kdentropy
from kdentropy import backends

#: Soft-entropy parameters used by every benchmark (the library defaults).
TEMPERATURE = 10.0
SIGMA = 0.5
THRESHOLD = 0.5

#: (N, D) grid of the soft-entropy benchmarks, smallest first.
SHAPES = [(1024, 64), (4096, 256), (2048, 1024), (16384, 64)]
DTYPES = ["float32", "float64"]
#: Every registered backend; those that cannot run on a machine are skipped there.
BACKENDS = list(backends.BACKEND_NAMES)

#: The dense ``numpy`` backend is skipped above this estimated footprint.
NUMPY_BACKEND_MAX_BYTES = 4 * 2**30
#: Live N x N float64 temporaries of the ``numpy`` backend's value+gradient
#: (squared distances, the Gram product and its scaled copy, or the kernel,
#: the broadcast weight sum and the weights).
NUMPY_BACKEND_NN_TEMPORARIES = 4

#: Rows of a size-capped warm-up call: more than one row tile of the ``cpu``
#: backend, so every kernel it dispatches to is compiled before timing.
WARMUP_ROWS = 1024

SEED = 20240611


def clustered(N: int, D: int, dtype: str | np.dtype = "float64", *, n_proto: int = 8,
              noise: float = 0.15, seed: int = SEED) -> np.ndarray:
    """A batch of noisy copies of a few random 0/1 prototypes.

    This is what trained cell systems produce: a handful of distinct patterns,
    each blurred by noise, so the kernel sees real neighbours (0 < H < log N)
    and the gradient does not vanish.

    Parameters
    ----------
    N, D : int
        Rows (runs) and columns (cells).
    dtype : str or numpy.dtype, optional
        Dtype of the result. Default float64.
    n_proto : int, optional
        Number of prototypes. Default 8.
    noise : float, optional
        Standard deviation of the Gaussian noise. Default 0.15.
    seed : int, optional
        Seed of the generator; the same arguments always give the same array.

    Returns
    -------
    ndarray, shape (N, D)
    """
    rng = np.random.default_rng([seed, N, D])
    protos = rng.integers(0, 2, size=(n_proto, D)).astype(np.float64)
    X = protos[rng.integers(0, n_proto, size=N)]
    X += noise * rng.standard_normal((N, D))
    return X.astype(dtype, copy=False)


def numpy_backend_bytes(N: int, D: int) -> int:
    """Estimated peak bytes of the dense ``numpy`` backend's value+gradient."""
    return NUMPY_BACKEND_NN_TEMPORARIES * N * N * 8 + 6 * N * D * 8


def _simulated(backend: str) -> bool:
    # The CUDA simulator (NUMBA_ENABLE_CUDASIM=1) runs kernels in Python:
    # correct but orders of magnitude slow, so it is never benchmarked.
    return bool(getattr(backends.load(backend), "SIMULATOR", False))


def reads_device_arrays(backend: str) -> bool:
    """Whether the backend computes on GPU arrays (its batches are moved to the device)."""
    return bool(backends.load(backend).DEVICE_ARRAYS)


def require_backend(backend: str, N: int | None = None, D: int | None = None) -> None:
    """Skip the benchmark (asv: ``NotImplementedError`` in ``setup``) if it cannot run.

    Parameters
    ----------
    backend : str
        Backend name.
    N, D : int, optional
        Problem size, to skip the dense ``numpy`` backend where its N x N
        temporaries would exceed :data:`NUMPY_BACKEND_MAX_BYTES`.

    Raises
    ------
    NotImplementedError
        If the backend is unavailable here (e.g. ``cuda`` without a GPU, or
        only the CUDA simulator) or the problem is too large for it.
    """
    if backend not in kdentropy.available_backends():
        raise NotImplementedError(f"backend {backend!r} is not available")
    if _simulated(backend):
        raise NotImplementedError(f"backend {backend!r} runs on a simulator here; "
                                  "simulators are not benchmarked")
    if backend == "numpy" and N is not None and D is not None:
        if numpy_backend_bytes(N, D) > NUMPY_BACKEND_MAX_BYTES:
            raise NotImplementedError(f"numpy backend would need more than "
                                      f"{NUMPY_BACKEND_MAX_BYTES / 2**30:.0f} GiB at N={N}")


class SoftEntropyCall:
    """Bound ``soft_entropy`` / ``soft_entropy_and_grad`` calls on one batch and backend.

    On a backend that reads device arrays (``cuda``) the batch lives on the
    device (so transfers are not timed) and each call ends with a device
    synchronisation.

    Parameters
    ----------
    backend : str
        Backend name (must be runnable; see :func:`require_backend`).
    X : ndarray, shape (N, D)
        The batch (host array).
    """

    def __init__(self, backend: str, X: np.ndarray) -> None:
        self.backend = backend
        self._sync: Callable[[], None] = lambda: None
        if reads_device_arrays(backend):
            from numba import cuda

            X = cuda.to_device(X)
            self._sync = cuda.synchronize
        self.X = X

    def value(self):
        """Entropy only (pass 1)."""
        H = kdentropy.soft_entropy(self.X, TEMPERATURE, SIGMA, threshold=THRESHOLD,
                                   backend=self.backend)
        self._sync()
        return H

    def value_and_grad(self):
        """Entropy and gradient (passes 1 and 2)."""
        out = kdentropy.soft_entropy_and_grad(self.X, TEMPERATURE, SIGMA, threshold=THRESHOLD,
                                              backend=self.backend)
        self._sync()
        return out

    def warm_up(self) -> None:
        """Compile (Numba/CUDA) and import everything the timed calls use.

        Runs value and value+gradient on the first :data:`WARMUP_ROWS` rows,
        so that the warm-up is cheap and does not raise the process's peak
        memory above what the full-size call needs.
        """
        small = SoftEntropyCall(self.backend, np.ascontiguousarray(_host(self.X)[:WARMUP_ROWS]))
        small.value()
        small.value_and_grad()


def _host(X) -> np.ndarray:
    return X if isinstance(X, np.ndarray) else X.copy_to_host()


def soft_discretize(X: np.ndarray) -> np.ndarray:
    """``S = sigmoid(T (X - theta))`` in the dtype of ``X`` (the floor's operand)."""
    z = X.astype(np.float64) - THRESHOLD
    z *= TEMPERATURE
    return (1.0 / (1.0 + np.exp(-z))).astype(X.dtype)


def soft_entropy_flops(N: int, D: int, grad: bool = True) -> float:
    """Dense flop count: ``2 N^2 D`` for the Gram product, as much again for ``W @ S``.

    Kernel evaluations (N^2 exps) and O(N D) work are not counted, and neither
    is any saving from the symmetry of K; so this is the work of the GEMM
    floor, and GFLOP/s figures compare directly with the BLAS rate.
    """
    return (4.0 if grad else 2.0) * N * N * D


def _row_blocks(N: int, itemsize: int, max_block_bytes: int) -> list[tuple[int, int]]:
    rows = max(1, min(N, max_block_bytes // (N * itemsize)))
    return [(i, min(i + rows, N)) for i in range(0, N, rows)]


class GemmFloor:
    """The GEMM floor: the two dense matrix products of value+gradient, through NumPy's BLAS.

    ``G = S @ S2.T`` (N x N x D) followed by ``G @ S`` (N x N x D), 4 N^2 D
    flops in the dtype of ``S``. ``S2.T`` is a separate contiguous copy, so
    NumPy always calls GEMM (it would switch to SYRK, half the Gram work, when
    both operands are one buffer; :class:`SymmetricFloor` is that case), and
    outputs are preallocated, so neither allocation nor page faults are
    timed. Rows are processed in blocks of at most :attr:`max_block_bytes` of
    ``G``, which keeps the floor's memory bounded at large N without changing
    its flops. Exps are not counted: this is the cost of the products alone
    for an implementation that ignores K's symmetry.

    Parameters
    ----------
    S : ndarray, shape (N, D)
        Soft patterns (float32 or float64).
    max_block_bytes : int, optional
        Largest block of ``G``. Default 512 MiB.
    """

    #: Name in the results tables.
    label = "GEMM floor (S @ S2.T, then K @ S: 4 N^2 D flops)"

    def __init__(self, S: np.ndarray, max_block_bytes: int = 512 * 2**20) -> None:
        N, D = S.shape
        self.S = np.ascontiguousarray(S)
        self.St = np.ascontiguousarray(S.T)
        self.blocks = _row_blocks(N, S.itemsize, max_block_bytes)
        rows = self.blocks[0][1]
        # Zero-filled, so their pages are mapped before anything is timed.
        self.G = np.zeros((rows, N), dtype=S.dtype)
        self.out = np.zeros((N, D), dtype=S.dtype)

    @staticmethod
    def flops(N: int, D: int) -> float:
        """``4 N^2 D``."""
        return 4.0 * N * N * D

    def __call__(self) -> None:
        for i0, i1 in self.blocks:
            G = self.G[: i1 - i0]
            np.matmul(self.S[i0:i1], self.St, out=G)
            np.matmul(G, self.S, out=self.out[i0:i1])


#: Kept for callers of the old name.
DenseFloor = GemmFloor


class SymmetricFloor:
    """The symmetric-work floor: the products value+gradient needs when K's symmetry is used.

    K is symmetric, so its Gram product needs only the upper triangle:
    ``N^2 D`` flops (SYRK), then ``K @ S``, ``2 N^2 D``: 3 N^2 D flops in all,
    through NumPy's BLAS in the dtype of ``S``. Where the whole N x N product
    fits in ``max_block_bytes`` it is ``S @ S.T`` (NumPy calls SYRK when both
    operands are one buffer) then ``K @ S`` (GEMM). Beyond that, S is split
    into ``b`` row blocks and only the block pairs ``I <= J`` are formed:
    SYRK on the diagonal blocks, GEMM off it, and each off-diagonal block
    multiplies into both its row block (``K_IJ @ S_J``) and its column block
    (``K_IJ.T @ S_I``): the same 3 N^2 D flops. Exps are not counted.

    Parameters
    ----------
    S : ndarray, shape (N, D)
        Soft patterns (float32 or float64).
    max_block_bytes : int, optional
        Largest block of K. Default 512 MiB.
    """

    #: Name in the results tables.
    label = "symmetric floor (SYRK S @ S.T, then K @ S: 3 N^2 D flops)"

    def __init__(self, S: np.ndarray, max_block_bytes: int = 512 * 2**20) -> None:
        N, D = S.shape
        self.S = np.ascontiguousarray(S)
        nb = 1
        while (-(-N // nb)) ** 2 * S.itemsize > max_block_bytes:
            nb += 1
        b = -(-N // nb)
        self.blocks = [(i, min(i + b, N)) for i in range(0, N, b)]
        self.K = np.zeros((b, b), dtype=S.dtype)
        self.out = np.zeros((N, D), dtype=S.dtype)
        self.tmp = np.zeros((b, D), dtype=S.dtype)

    @staticmethod
    def flops(N: int, D: int) -> float:
        """``3 N^2 D``."""
        return 3.0 * N * N * D

    def __call__(self) -> None:
        S, out, tmp = self.S, self.out, self.tmp
        out.fill(0)
        for bi, (i0, i1) in enumerate(self.blocks):
            Si = S[i0:i1]
            for j0, j1 in self.blocks[bi:]:
                K = self.K[: i1 - i0, : j1 - j0]
                if j0 == i0:
                    # One buffer on both sides: NumPy calls SYRK (half the flops).
                    K[...] = Si @ Si.T
                    out[i0:i1] += np.matmul(K, Si, out=tmp[: i1 - i0])
                    continue
                Sj = S[j0:j1]
                np.matmul(Si, Sj.T, out=K)
                out[i0:i1] += np.matmul(K, Sj, out=tmp[: i1 - i0])
                out[j0:j1] += np.matmul(K.T, Si, out=tmp[: j1 - j0])


def gemm_peak_gflops(dtype: str | np.dtype, n: int = 2048, rounds: int = 5) -> list[float]:
    """The machine's measured peak: GFLOP/s of a square ``n x n x n`` GEMM through NumPy's BLAS.

    This is the rate the floors can reach at best on this machine, with the
    BLAS kernel and thread count this process runs (see :func:`blas_info`).

    Parameters
    ----------
    dtype : str or dtype
        float32 or float64.
    n : int, optional
        Matrix size. Default 2048 (2 n^3 = 17 GFLOP per product).
    rounds : int, optional
        Timed products after one warm-up product.

    Returns
    -------
    list of float
        GFLOP/s of each timed product.
    """
    rng = np.random.default_rng(0)
    A = rng.random((n, n)).astype(dtype)
    B = rng.random((n, n)).astype(dtype)
    C = np.zeros((n, n), dtype=dtype)
    np.matmul(A, B, out=C)
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        np.matmul(A, B, out=C)
        rates.append(2.0 * n**3 / (time.perf_counter() - t0) / 1e9)
    return rates


def median_seconds(*fns: Callable[[], object], repeat: int | None = None,
                   budget: float = 4.0, min_repeat: int = 3, max_repeat: int = 41) -> list[float]:
    """Median wall time of each function, measured interleaved.

    The functions take turns for ``repeat`` rounds, so slow drifts in machine
    load affect all of them alike and a ratio of two medians is robust. There
    is no untimed warm-up round: benchmarks compile in ``setup``, and every
    call allocates its own outputs anyway.

    Parameters
    ----------
    *fns : callable
        Functions without arguments.
    repeat : int, optional
        Timed calls of each function. By default as many rounds as fit in
        ``budget`` seconds, judged from the first round, clamped to
        ``[min_repeat, max_repeat]``.
    budget : float, optional
        Target seconds for all rounds when ``repeat`` is None.
    min_repeat, max_repeat : int, optional
        Bounds of the automatic ``repeat``.

    Returns
    -------
    list of float
        One median per function, in seconds.
    """
    samples: list[list[float]] = [[] for _ in fns]
    rounds = 1 if repeat is None else repeat
    done = 0
    while done < rounds:
        for fn, times in zip(fns, samples):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        done += 1
        if repeat is None and done == 1:
            one_round = max(sum(times[0] for times in samples), 1e-9)
            rounds = int(min(max(budget // one_round, min_repeat), max_repeat))
    return [statistics.median(times) for times in samples]


def interleaved_samples(fns: dict[str, Callable[[], object]], rounds: int = 5, *,
                        warmup: int = 1) -> dict[str, list[float]]:
    """Wall times of several functions over interleaved rounds, in rotated order.

    Every round calls each function once; the order rotates by one place
    per round, so none of them always runs first (after an idle pause) or
    right after a BLAS product (whose spinning threads slow the next call).
    Slow drifts in machine load hit all of them alike, so the per-round
    ratios are robust where absolute times are not.

    Parameters
    ----------
    fns : dict of str to callable
        Functions without arguments, by name.
    rounds : int, optional
        Timed rounds (at least 5 for a spread worth quoting). Default 5.
    warmup : int, optional
        Untimed rounds first (caches, page faults, lazy imports). Default 1.

    Returns
    -------
    dict of str to list of float
        Seconds of each call, round by round, by name.
    """
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            fns[name]()
            if r >= warmup:
                samples[name].append(time.perf_counter() - t0)
    return samples


def round_ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    """Per-round ratios of two interleaved sample lists."""
    return [a / b for a, b in zip(numerator, denominator)]


def blas_info() -> list[dict]:
    """The BLAS/OpenMP libraries loaded in this process, as threadpoolctl sees them.

    ``internal_api`` and ``architecture`` name the kernel that actually runs
    (e.g. ``openblas``/``SkylakeX``); ``OPENBLAS_CORETYPE`` overrides it.
    Empty when threadpoolctl is not installed.
    """
    try:
        import threadpoolctl
    except ImportError:
        return []
    keys = ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads",
            "threading_layer")
    return [{k: info.get(k) for k in keys} for info in threadpoolctl.threadpool_info()]


#: Environment variables that change which kernel or how many threads a library uses.
RELEVANT_ENV_PREFIXES = ("OPENBLAS_", "OMP_", "MKL_", "GOTO", "NUMBA_", "JAX_", "XLA_",
                         "KDENTROPY_", "OPENMP_")


def relevant_env() -> dict[str, str]:
    """The variables of :data:`RELEVANT_ENV_PREFIXES` set in this process."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(RELEVANT_ENV_PREFIXES)}


#: Where :func:`record` appends; set by ``asv_benchmarks/run.sh``.
RECORD_ENV = "KDENTROPY_BENCH_RECORD"


def record(benchmark: str, params: dict, **fields) -> None:
    """Append one JSON line (raw samples, BLAS kernel, environment) to the run's record file.

    asv stores one number per track benchmark; the interleaved samples behind
    it (for min/median/max), and the BLAS kernel the benchmark process
    actually ran, go to the file named by ``$KDENTROPY_BENCH_RECORD``, which
    ``make_results.py`` reads. Without the variable nothing is written.

    Parameters
    ----------
    benchmark : str
        Benchmark name, e.g. ``comparisons.Comparison``.
    params : dict
        Its parameters, by name (JSON-serialisable).
    **fields
        Anything else JSON-serialisable (samples, flops, labels).
    """
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    # The load average says whether other processes shared the cores: BLAS
    # threads that must synchronise suffer far more from that than Numba's.
    line = {"benchmark": benchmark, "params": params, "pid": os.getpid(),
            "loadavg": os.getloadavg(), "cpus": os.cpu_count(),
            "blas": blas_info(), "env": relevant_env(), **fields}
    with open(path, "a", encoding="utf-8") as f:  # one write per line: appends do not interleave
        f.write(json.dumps(line) + "\n")
