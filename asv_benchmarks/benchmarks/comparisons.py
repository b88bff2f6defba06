"""The ``cpu`` backend side by side with what a competent user would write instead.

Every alternative computes value and gradient of the same soft entropy
(``H = log N - mean_i log C_i``, ``C_i = sum_j K_ij``, K Gaussian on the
soft patterns ``S = sigmoid(T (X - theta))``); ``tests/test_asv_suite.py``
checks each against the ``numpy`` backend in both dtypes.

* ``numpy_dense``: **dense NumPy, K kept.** One Gram product (``Sc @ Sc.T``,
  which NumPy runs as SYRK), K formed in place and kept, turned in place
  into the weights ``W = K (g_i + g_j)``, then one ``W @ Sc``: 3 N^2 D flops
  and N^2 exps, N x N memory.
* ``numpy_blocked``: **blocked NumPy, symmetric tiles.** Square tiles of
  :data:`TILE` rows (a float64 tile is 512 KiB, within this machine's L2),
  upper-triangle tile pairs only, each tile's contribution added to both
  its row block and its column block; Gram, exp and weights in place in
  one preallocated tile; products and exps in the input's dtype (float32
  tiles for float32 input), every sum in float64. Pass 2 forms the tiles
  again (O(N D + TILE^2) memory): 4 N^2 D flops and N^2 exps in all, the
  same work as the ``cpu`` backend.
* ``jax_jit``: **jax.jit, dense Gram.** ``jax.jit(jax.value_and_grad(H))``
  of the centred dense Gram form; float64 needs ``JAX_ENABLE_X64=1``
  (``run.sh`` sets it).
* ``torch``: **PyTorch autograd, dense Gram.** The same formula, gradient
  by ``backward()``; skipped when torch is not installed.

Every alternative centres S on its column mean first (as the ``cpu``
backend does): distances are unchanged and float32 Gram products cancel
far less. Dense ones are skipped where their N x N temporaries would pass
:data:`DENSE_MAX_BYTES`.

Benchmarks
----------
``Comparison.track_speedup``
    the alternative's time over kdentropy's, median of >= 5 per-round
    ratios of interleaved calls (above 1: kdentropy is faster).
``Floors.track_floor_ratio``
    kdentropy's time over the GEMM floor's (4 N^2 D flops) or the
    symmetric floor's (3 N^2 D flops), see :mod:`.common`.
``PeakRate.track_gemm_gflops``
    the machine's measured BLAS peak (square GEMM), the reference for the
    floors' GFLOP/s.
``KernelPaths.track_path_time``
    the ``cpu`` backend on inputs that take each of its numerical paths:
    float32 Gram, float64 Gram for float32 input (small sigma), direct
    differences (tiny sigma), the float64 redo of tight float32 clusters,
    and subnormal float64 kernel values.

Each writes its raw interleaved samples, gradient errors and the BLAS kernel
that ran to the run's record file (:func:`.common.record`), from which
``make_results.py`` reports min/median/max.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable

import numpy as np
from scipy.special import expit

import kdentropy
from kdentropy.backends import _conditioning

from .common import (
    SIGMA,
    TEMPERATURE,
    THRESHOLD,
    GemmFloor,
    SymmetricFloor,
    clustered,
    gemm_peak_gflops,
    interleaved_samples,
    record,
    round_ratios,
    soft_discretize,
)

#: The sizes of the comparison (issue-tracker grid), smallest first.
SHAPES = [(64, 32), (256, 64), (1024, 256), (2048, 1024), (4096, 256), (16384, 64)]
if os.environ.get("KDENTROPY_BENCH_SMOKE"):
    # run.sh's smoke run: the machinery end to end in minutes, not the record.
    SHAPES = [(256, 64), (1024, 256), (4096, 256)]
DTYPES = ["float32", "float64"]

#: Edge of the blocked alternative's square tiles: 256 x 256 float64 is 512 KiB,
#: half the L2 of one core here, so a tile and its operands stay in L2.
TILE = 256

#: Implementation key -> (name in the tables, N x N temporaries live at the peak).
IMPLEMENTATIONS: dict[str, tuple[str, float]] = {
    "numpy_dense": ("dense NumPy, K kept", 1.25),
    "numpy_blocked": (f"blocked NumPy, symmetric {TILE}-tiles", 0.0),
    "jax_jit": ("jax.jit, dense Gram", 4.0),
    "torch": ("PyTorch autograd, dense Gram", 5.0),
}
ALTERNATIVES = list(IMPLEMENTATIONS)
#: Dense alternatives are skipped above this many bytes of N x N temporaries.
DENSE_MAX_BYTES = 6 * 2**30
#: Interleaved rounds: at least this many, more while they fit in ROUND_BUDGET s.
MIN_ROUNDS, MAX_ROUNDS, ROUND_BUDGET = 5, 41, 8.0
#: Label of kdentropy's own calls in the records.
OURS = "kdentropy cpu"


# ----------------------------------------------------------------------------- NumPy

def _prepared(X: np.ndarray):
    """``S`` (rounded once from float64, like the backends), ``Sc = S - mean`` and ``|Sc_i|^2``."""
    S = expit(TEMPERATURE * (X.astype(np.float64) - THRESHOLD)).astype(X.dtype)
    Sc = (S - S.mean(axis=0, dtype=np.float64)).astype(X.dtype)
    sq = np.einsum("ij,ij->i", Sc, Sc, dtype=np.float64).astype(X.dtype)
    return S, Sc, sq


def _finish(S: np.ndarray, C: np.ndarray, V: np.ndarray):
    """``H`` and ``dH/dX`` from the counts ``C`` (with ``K_ii``) and the pair sums ``V``."""
    N = S.shape[0]
    H = float(np.log(N) - np.mean(np.log(C)))
    S64 = S.astype(np.float64)
    V *= TEMPERATURE / (N * SIGMA**2)
    V *= S64 * (1.0 - S64)
    return H, V.astype(S.dtype)


def _kernel_in_place(G: np.ndarray, sq_rows: np.ndarray, sq_cols: np.ndarray,
                     diagonal: bool) -> np.ndarray:
    """Turn a Gram block ``G`` into ``K = exp(-d2 / 2 sigma^2)`` in place (no temporaries)."""
    G *= -2
    G += sq_rows[:, None]
    G += sq_cols[None, :]
    np.maximum(G, 0, out=G)
    if diagonal:
        np.fill_diagonal(G, 0)  # d2_ii is 0, whatever the rounding of the Gram form
    G *= G.dtype.type(-0.5 / SIGMA**2)
    return np.exp(G, out=G)


def numpy_dense(X: np.ndarray):
    """Value and gradient with the N x N kernel formed once and kept (dense NumPy).

    Parameters
    ----------
    X : ndarray, shape (N, D), float32 or float64
        The batch; products and exps run in its dtype, sums in float64.

    Returns
    -------
    H : float
    grad : ndarray, shape (N, D), dtype of X
    """
    S, Sc, sq = _prepared(X)
    N = S.shape[0]
    K = _kernel_in_place(Sc @ Sc.T, sq, sq, diagonal=True)  # one buffer twice: SYRK
    C = K.sum(axis=1, dtype=np.float64)
    g = (1.0 / C).astype(S.dtype)
    # W = K (g_i + g_j) in place; row chunks keep the broadcast temporary small.
    for r0 in range(0, N, TILE):
        K[r0:r0 + TILE] *= g[r0:r0 + TILE, None] + g[None, :]
    rowsum = K.sum(axis=1, dtype=np.float64)
    V = rowsum[:, None] * Sc - K @ Sc
    return _finish(S, C, V)


def numpy_blocked(X: np.ndarray, tile: int = TILE):
    """Value and gradient over square upper-triangle tiles, O(N D + tile^2) memory (blocked NumPy).

    Parameters
    ----------
    X : ndarray, shape (N, D), float32 or float64
        The batch; tiles, products and exps in its dtype, sums in float64.
    tile : int, optional
        Tile edge. Default :data:`TILE`.

    Returns
    -------
    H : float
    grad : ndarray, shape (N, D), dtype of X
    """
    S, Sc, sq = _prepared(X)
    N, D = S.shape
    edges = [(i, min(i + tile, N)) for i in range(0, N, tile)]
    pairs = [(a, b) for k, a in enumerate(edges) for b in edges[k:]]
    buf = np.empty((tile, tile), S.dtype)
    gsum = np.empty((tile, tile), S.dtype)
    prod = np.empty((tile, D), S.dtype)

    def kernel_tile(i0, i1, j0, j1):
        T = buf[: i1 - i0, : j1 - j0]
        np.matmul(Sc[i0:i1], Sc[j0:j1].T, out=T)
        return _kernel_in_place(T, sq[i0:i1], sq[j0:j1], diagonal=i0 == j0)

    C = np.zeros(N)
    for (i0, i1), (j0, j1) in pairs:
        T = kernel_tile(i0, i1, j0, j1)
        C[i0:i1] += T.sum(axis=1, dtype=np.float64)
        if j0 != i0:  # the mirrored tile K_JI = K_IJ.T
            C[j0:j1] += T.sum(axis=0, dtype=np.float64)
    g = (1.0 / C).astype(S.dtype)

    rowsum = np.zeros(N)
    acc = np.zeros((N, D))
    for (i0, i1), (j0, j1) in pairs:
        T = kernel_tile(i0, i1, j0, j1)
        Gs = gsum[: i1 - i0, : j1 - j0]
        np.add(g[i0:i1, None], g[None, j0:j1], out=Gs)
        T *= Gs
        rowsum[i0:i1] += T.sum(axis=1, dtype=np.float64)
        acc[i0:i1] += np.matmul(T, Sc[j0:j1], out=prod[: i1 - i0])
        if j0 != i0:
            rowsum[j0:j1] += T.sum(axis=0, dtype=np.float64)
            acc[j0:j1] += np.matmul(T.T, Sc[i0:i1], out=prod[: j1 - j0])
    V = rowsum[:, None] * Sc
    V -= acc
    return _finish(S, C, V)


# ----------------------------------------------------------------------------- JAX, torch

def jax_value_and_grad(dtype: str) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """``jax.jit(jax.value_and_grad(H))`` of the dense Gram form, as a NumPy-in, NumPy-out call.

    Raises
    ------
    NotImplementedError
        For float64 without ``JAX_ENABLE_X64`` (JAX would silently compute in float32).
    ImportError
        Without JAX.
    """
    import jax
    import jax.numpy as jnp

    if dtype == "float64" and not jax.config.read("jax_enable_x64"):
        raise NotImplementedError("JAX float64 needs JAX_ENABLE_X64=1")

    def entropy(X):
        S = jax.nn.sigmoid(TEMPERATURE * (X - THRESHOLD))
        Sc = S - S.mean(axis=0)
        sq = jnp.sum(Sc * Sc, axis=1)
        d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2 * (Sc @ Sc.T), 0)
        C = jnp.exp(-d2 * (0.5 / SIGMA**2)).sum(axis=1)
        return jnp.log(X.shape[0]) - jnp.mean(jnp.log(C))

    fn = jax.jit(jax.value_and_grad(entropy))

    def call(X):
        H, G = fn(X)
        return float(H), np.asarray(G)  # float() and asarray wait for the result

    return call


def torch_value_and_grad(X: np.ndarray):
    """Value and gradient by PyTorch autograd of the dense Gram form (CPU tensors).

    Raises
    ------
    ImportError
        Without torch.
    """
    import torch

    Xt = torch.from_numpy(X).requires_grad_()
    S = torch.sigmoid(TEMPERATURE * (Xt - THRESHOLD))
    Sc = S - S.mean(dim=0)
    sq = (Sc * Sc).sum(dim=1)
    d2 = torch.clamp(sq[:, None] + sq[None, :] - 2 * (Sc @ Sc.T), min=0)
    C = torch.exp(-d2 * (0.5 / SIGMA**2)).sum(dim=1)
    H = np.log(X.shape[0]) - torch.log(C).mean()
    H.backward()
    return float(H.detach()), Xt.grad.numpy()


def alternative(name: str, dtype: str, N: int) -> Callable[[np.ndarray], tuple]:
    """The value-and-gradient function of an implementation key.

    Raises ``NotImplementedError`` (asv: skip) where it cannot run here.
    """
    label, nn_temporaries = IMPLEMENTATIONS[name]
    if nn_temporaries * N * N * np.dtype(dtype).itemsize > DENSE_MAX_BYTES:
        raise NotImplementedError(f"{label} needs more than {DENSE_MAX_BYTES >> 30} GiB here")
    if name == "numpy_dense":
        return numpy_dense
    if name == "numpy_blocked":
        return numpy_blocked
    try:
        if name == "jax_jit":
            return jax_value_and_grad(dtype)
        import torch  # noqa: F401
    except ImportError as exc:
        raise NotImplementedError(f"{label}: not installed ({exc})") from exc
    return torch_value_and_grad


def versions() -> dict[str, str]:
    """Versions of every alternative's library and the settings that change them."""
    out = {"numpy": np.__version__, "kdentropy": kdentropy.__version__}
    try:
        import jax
        import jaxlib

        out |= {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                "jax_enable_x64": str(bool(jax.config.read("jax_enable_x64")))}
    except ImportError:
        pass
    try:
        import torch

        out |= {"torch": torch.__version__, "torch_threads": str(torch.get_num_threads())}
    except ImportError:
        pass
    return out


def errors(H: float, G: np.ndarray, H_ref: float, G_ref: np.ndarray) -> dict[str, float]:
    """Relative value error and norm-relative gradient error against a reference."""
    G = np.asarray(G, np.float64)
    return {"value_rel_error": abs(H - H_ref) / abs(H_ref),
            "grad_rel_error": float(np.linalg.norm(G - G_ref) / np.linalg.norm(G_ref))}


def _rounds(fns: dict[str, Callable[[], object]]) -> int:
    # One untimed call each decides how many rounds fit the budget.
    t = interleaved_samples(fns, rounds=1, warmup=0)
    one = max(sum(v[0] for v in t.values()), 1e-9)
    return int(min(max(ROUND_BUDGET // one, MIN_ROUNDS), MAX_ROUNDS))


def _ours(X: np.ndarray, sigma: float = SIGMA):
    return kdentropy.soft_entropy_and_grad(X, TEMPERATURE, sigma, threshold=THRESHOLD,
                                           backend="cpu")


# ----------------------------------------------------------------------------- benchmarks

class Comparison:
    """kdentropy ``cpu`` against an alternative: the alternative's time over kdentropy's."""

    params = (ALTERNATIVES, SHAPES, DTYPES)
    param_names = ["alternative", "shape", "dtype"]
    rounds = 1
    timeout = 1200

    def setup(self, alternative_name: str, shape: tuple[int, int], dtype: str) -> None:
        N, D = shape
        self.X = clustered(N, D, dtype)
        self.other = alternative(alternative_name, dtype, N)
        _ours(self.X[:1024])                     # compiles kdentropy's kernels
        self.other(self.X)                       # compiles (jax) and checks that it runs

    def track_speedup(self, alternative_name, shape, dtype):
        label = IMPLEMENTATIONS[alternative_name][0]
        fns = {OURS: lambda: _ours(self.X), label: lambda: self.other(self.X)}
        samples = interleaved_samples(fns, rounds=_rounds(fns))
        ratios = round_ratios(samples[label], samples[OURS])
        # Accuracy on the same (rounded) input, against float64 kdentropy.
        H_ref, G_ref = _ours(self.X.astype(np.float64))
        errs = {OURS: errors(*_ours(self.X), H_ref, G_ref),
                label: errors(*self.other(self.X), H_ref, G_ref)}
        record("comparisons.Comparison",
               {"alternative": alternative_name, "shape": list(shape), "dtype": dtype},
               label=label, samples=samples, ratios=ratios, errors=errs, versions=versions())
        return statistics.median(ratios)

    track_speedup.unit = "ratio"


FLOORS = {"gemm": GemmFloor, "symmetric": SymmetricFloor}


class Floors:
    """kdentropy's value+gradient time over a floor's, interleaved, and the floor's GFLOP/s."""

    params = (list(FLOORS), SHAPES, DTYPES)
    param_names = ["floor", "shape", "dtype"]
    rounds = 1
    timeout = 1200

    def setup(self, floor: str, shape: tuple[int, int], dtype: str) -> None:
        self.X = clustered(*shape, dtype)
        self.floor = FLOORS[floor](soft_discretize(self.X))
        _ours(self.X[:1024])

    def track_floor_ratio(self, floor, shape, dtype):
        fns = {OURS: lambda: _ours(self.X), self.floor.label: self.floor}
        samples = interleaved_samples(fns, rounds=_rounds(fns))
        ratios = round_ratios(samples[OURS], samples[self.floor.label])
        record("comparisons.Floors", {"floor": floor, "shape": list(shape), "dtype": dtype},
               label=self.floor.label, samples=samples, ratios=ratios,
               flops=self.floor.flops(*shape))
        return statistics.median(ratios)

    track_floor_ratio.unit = "ratio"


class PeakRate:
    """The machine's measured peak: GFLOP/s of a 2048^3 GEMM through NumPy's BLAS (median of 5)."""

    params = (DTYPES,)
    param_names = ["dtype"]
    rounds = 1
    timeout = 300

    def track_gemm_gflops(self, dtype):
        rates = gemm_peak_gflops(dtype)
        record("comparisons.PeakRate", {"dtype": dtype}, gflops=rates,
               probe="square 2048 x 2048 x 2048 GEMM, numpy.matmul, all BLAS threads")
        return statistics.median(rates)

    track_gemm_gflops.unit = "GFLOP/s"


# ----------------------------------------------------------------------------- numerical paths

def subnormal_input(N: int, D: int, dtype: str) -> np.ndarray:
    """64 random prototypes with cells at 0.2 or 0.8, plus noise 0.1, clipped to [0, 1].

    At T = 10, sigma = 0.5 and D = 1024 about 8 % of the float64 kernel values
    of this family fall below 2.2e-308 (subnormal) unless they are flushed.
    """
    rng = np.random.default_rng([7, N, D])
    protos = np.where(rng.random((64, D)) < 0.5, 0.2, 0.8)
    X = protos[rng.integers(0, 64, size=N)] + 0.1 * rng.standard_normal((N, D))
    return np.clip(X, 0.0, 1.0).astype(dtype)


#: Path -> (dtype, (N, D), sigma, input noise); the plain path first, as the reference.
#: Noise is scaled with sigma so that rows keep real neighbours (0 < H < log N).
PATHS: dict[str, tuple[str, tuple[int, int], float, float]] = {
    "float32 Gram": ("float32", (2048, 256), SIGMA, 0.15),
    "float64 Gram for float32 input": ("float32", (2048, 256), 0.05, 0.05),
    "direct differences float32": ("float32", (2048, 256), 5e-6, 5e-6),
    "direct differences float64": ("float64", (2048, 256), 2e-4, 2e-4),
    "float64 redo of tight float32 clusters": ("float32", (2048, 256), SIGMA, 1e-4),
    "subnormal float64 kernel values": ("float64", (2048, 1024), SIGMA, float("nan")),
}


def path_input(path: str) -> tuple[np.ndarray, float]:
    """The batch and sigma of a numerical-path family (see :data:`PATHS`)."""
    dtype, (N, D), sigma, noise = PATHS[path]
    if path.startswith("subnormal"):
        return subnormal_input(N, D, dtype), sigma
    return clustered(N, D, dtype, noise=noise), sigma


def distance_dtype(X: np.ndarray, sigma: float):
    """The Gram dtype the conditioning rule picks for a batch (None: direct differences)."""
    S = soft_discretize(X).astype(np.float64)
    Sc = S - S.mean(axis=0)
    return _conditioning.distance_precision(X.dtype, float(np.max(np.sum(Sc * Sc, axis=1))),
                                            sigma)


class KernelPaths:
    """The ``cpu`` backend on each of its numerical paths, timed against the float32 Gram path.

    Each family is timed interleaved with the plain float32 Gram path at the
    same D (and with the GEMM floor of its own input), so the cost of a path
    reads as a ratio.
    """

    params = (list(PATHS),)
    param_names = ["path"]
    rounds = 1
    timeout = 1200

    def setup(self, path: str) -> None:
        self.X, self.sigma = path_input(path)
        N, D = self.X.shape
        self.plain = clustered(N, D, "float32")
        self.floor = GemmFloor(soft_discretize(self.X))
        _ours(self.X[:1024], self.sigma)

    def track_path_time(self, path):
        fns = {OURS: lambda: _ours(self.X, self.sigma),
               "float32 Gram path, same shape": lambda: _ours(self.plain),
               self.floor.label: self.floor}
        samples = interleaved_samples(fns, rounds=_rounds(fns))
        record("comparisons.KernelPaths", {"path": path}, samples=samples,
               shape=list(self.X.shape), dtype=str(self.X.dtype), sigma=self.sigma)
        return statistics.median(samples[OURS])

    track_path_time.unit = "seconds"
