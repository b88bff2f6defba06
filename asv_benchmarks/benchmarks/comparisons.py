"""The ``cpu`` backend against what a user would write instead, timed side by side.

Alternatives, each computing value and gradient of the same soft entropy:

* ``dense_numpy``: the textbook N x N NumPy version (Gram matrix, kernel,
  weights, one more product);
* ``blocked_numpy``: the same maths in row panels of 1024 rows, O(N D + 1024 N)
  memory, two Gram products per panel (one per pass) through BLAS;
* ``jax_jit``: ``jax.jit(jax.value_and_grad(...))`` of the dense Gram form
  (skipped when JAX is not installed; float64 needs ``JAX_ENABLE_X64=1``).

``track_speedup`` is the alternative's median time divided by kdentropy's,
both measured interleaved in one process (above 1: kdentropy is faster). ``SubnormalInput`` times the input
family (many prototypes, large D) whose float64 kernel values reach the
subnormal range, which once made the ``cpu`` backend 12x slower.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

import kdentropy

from .common import (
    SIGMA,
    TEMPERATURE,
    THRESHOLD,
    DenseFloor,
    clustered,
    median_seconds,
    soft_discretize,
)

#: The sizes of the comparison (issue-tracker grid), smallest first.
SHAPES = [(64, 32), (256, 64), (1024, 256), (2048, 1024), (4096, 256), (16384, 64)]
DTYPES = ["float32", "float64"]
ALTERNATIVES = ["dense_numpy", "blocked_numpy", "jax_jit"]
#: Dense alternatives are skipped above this many bytes of N x N temporaries.
DENSE_MAX_BYTES = 4 * 2**30


def _soft(X: np.ndarray) -> np.ndarray:
    return expit(TEMPERATURE * (X - X.dtype.type(THRESHOLD))).astype(X.dtype, copy=False)


def _panel_kernel(Sc, sq, i0, i1, scale):
    """``exp(-d2 scale)`` of rows ``i0:i1`` against all rows, from one Gram product."""
    d2 = sq[i0:i1, None] + sq[None, :] - 2 * (Sc[i0:i1] @ Sc.T)
    np.maximum(d2, 0, out=d2)
    d2 *= -scale
    return np.exp(d2, out=d2)


def numpy_value_and_grad(X: np.ndarray, block: int | None = None):
    """Value and gradient in NumPy, in row panels of ``block`` rows (None: one dense panel)."""
    S = _soft(X)
    N = S.shape[0]
    block = N if block is None else block
    Sc = S - S.mean(axis=0)
    sq = np.einsum("ij,ij->i", Sc, Sc)
    scale = S.dtype.type(0.5 / SIGMA**2)
    C = np.empty(N)
    for i0 in range(0, N, block):
        C[i0:i0 + block] = _panel_kernel(Sc, sq, i0, min(N, i0 + block), scale).sum(axis=1)
    H = np.log(N) - np.mean(np.log(C))
    g = (1.0 / C).astype(S.dtype)
    V = np.empty_like(S)
    for i0 in range(0, N, block):
        i1 = min(N, i0 + block)
        W = _panel_kernel(Sc, sq, i0, i1, scale)
        W *= g[i0:i1, None] + g[None, :]
        V[i0:i1] = W.sum(axis=1)[:, None] * Sc[i0:i1] - W @ Sc
    return H, V * (TEMPERATURE / (N * SIGMA**2)) * S * (1 - S)


def _jax_value_and_grad(dtype: str):
    import jax
    import jax.numpy as jnp

    if dtype == "float64" and not jax.config.read("jax_enable_x64"):
        raise NotImplementedError("JAX float64 needs JAX_ENABLE_X64=1")

    def entropy(X):
        S = jax.nn.sigmoid(TEMPERATURE * (X - THRESHOLD))
        sq = jnp.sum(S * S, axis=1)
        d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2 * S @ S.T, 0)
        C = jnp.exp(-d2 / (2 * SIGMA**2)).sum(axis=1)
        return jnp.log(X.shape[0]) - jnp.mean(jnp.log(C))

    fn = jax.jit(jax.value_and_grad(entropy))

    def call(X):
        H, G = fn(X)
        return float(H), np.asarray(G)  # waits for the result

    return call


def _alternative(name: str, dtype: str, N: int):
    if name in ("dense_numpy", "jax_jit") and 4 * N * N * np.dtype(dtype).itemsize > DENSE_MAX_BYTES:
        raise NotImplementedError(f"{name} needs more than {DENSE_MAX_BYTES >> 30} GiB here")
    if name == "dense_numpy":
        return numpy_value_and_grad
    if name == "blocked_numpy":
        return lambda X: numpy_value_and_grad(X, block=1024)
    try:
        return _jax_value_and_grad(dtype)
    except ImportError as exc:
        raise NotImplementedError(f"JAX is not installed ({exc})") from exc


class Comparison:
    """kdentropy ``cpu`` against an alternative: the alternative's time over kdentropy's."""

    params = (ALTERNATIVES, SHAPES, DTYPES)
    param_names = ["alternative", "shape", "dtype"]
    rounds = 1
    timeout = 600

    def setup(self, alternative: str, shape: tuple[int, int], dtype: str) -> None:
        N, D = shape
        self.X = clustered(N, D, dtype)
        self.other = _alternative(alternative, dtype, N)
        self.ours = lambda: kdentropy.soft_entropy_and_grad(self.X, TEMPERATURE, SIGMA,
                                                            backend="cpu")
        self.theirs = lambda: self.other(self.X)
        small = self.X[: min(N, 1024)]
        kdentropy.soft_entropy_and_grad(small, TEMPERATURE, SIGMA, backend="cpu")
        self.other(self.X)  # compiles (jax) and checks that it runs at this size

    def track_speedup(self, alternative, shape, dtype):
        t_ours, t_theirs = median_seconds(self.ours, self.theirs)
        return t_theirs / t_ours

    track_speedup.unit = "ratio"


def subnormal_input(N: int, D: int, dtype: str) -> np.ndarray:
    """64 random prototypes with cells at 0.2 or 0.8, plus noise 0.1, clipped to [0, 1].

    At T = 10, sigma = 0.5 and D = 1024 about 8 % of the float64 kernel values
    of this family fall below 2.2e-308 (subnormal) unless they are flushed.
    """
    rng = np.random.default_rng([7, N, D])
    protos = np.where(rng.random((64, D)) < 0.5, 0.2, 0.8)
    X = protos[rng.integers(0, 64, size=N)] + 0.1 * rng.standard_normal((N, D))
    return np.clip(X, 0.0, 1.0).astype(dtype)


class SubnormalInput:
    """Value+gradient of the subnormal-producing family: time and ratio to the dense floor."""

    params = ([(256, 1024), (2048, 1024)], DTYPES)
    param_names = ["shape", "dtype"]
    rounds = 1
    timeout = 600

    def setup(self, shape: tuple[int, int], dtype: str) -> None:
        self.X = subnormal_input(*shape, dtype)
        kdentropy.soft_entropy_and_grad(self.X[:1024], TEMPERATURE, SIGMA, backend="cpu")

    def _call(self):
        return kdentropy.soft_entropy_and_grad(self.X, TEMPERATURE, SIGMA, backend="cpu")

    def time_value_and_grad(self, shape, dtype):
        self._call()

    def track_floor_ratio(self, shape, dtype):
        floor = DenseFloor(soft_discretize(self.X))
        t_ours, t_floor = median_seconds(self._call, floor)
        return t_ours / t_floor

    track_floor_ratio.unit = "ratio"
