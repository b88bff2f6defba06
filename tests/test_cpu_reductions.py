"""The cpu backend's pass-2 reductions, serial and parallel, against the numpy reference.

Pass 2 of the fused kernels adds each row tile's partial sums (one per
column chunk) into the rows' totals: serially for small tiles, in a
``prange`` loop when ``chunks x rows x Dp`` exceeds a threshold. Small test
batches never reach the parallel branch, and the float64 one was reached by
no test at all. The batches here are sized, from the backend's own
constants, so that in both dtypes the first row tiles take the parallel
branch and the last one the serial branch, and the results are compared
row by row with the float64 reference.
"""

from __future__ import annotations

import importlib
import math
import pkgutil

import numpy as np
import pytest

from helpers import F64_RTOL, backend_parts, norm_rel
from kdentropy import backends
from kdentropy.backends import _conditioning

pytestmark = pytest.mark.skipif("cpu" not in backends.available_backends(),
                                reason="cpu backend unavailable")

N, D = 800, 512
T, SIGMA, THETA = 10.0, 3.0, 0.5


def _cpu_attribute(name: str):
    """``name`` from whichever module of ``kdentropy.backends.cpu`` defines it.

    The package's modules are being split and renamed: look the constant up
    by name rather than by module, and fail loudly if it is gone (then the
    sizes below must be derived again).
    """
    pkg = importlib.import_module("kdentropy.backends.cpu")
    found = {}
    for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
        mod = importlib.import_module(info.name)
        if name in vars(mod):
            found[info.name] = vars(mod)[name]
    if name in vars(pkg):
        found[pkg.__name__] = vars(pkg)[name]
    if not found:
        pytest.fail(f"kdentropy.backends.cpu defines no {name}: re-derive this test's sizes")
    values = {id(v): v for v in found.values()}
    if len(values) > 1 and len({repr(v) for v in found.values()}) > 1:
        pytest.fail(f"{name} has different values in {sorted(found)}")
    return next(iter(found.values()))


def _branches(dtype) -> list[bool]:
    """Per row tile of the (N, D) batch: whether pass 2 reduces it in parallel."""
    width = _cpu_attribute("tile_columns")(np.dtype(dtype))
    block_rows = _cpu_attribute("BLOCK")
    threshold = _cpu_attribute("_SERIAL_REDUCTION")
    Np = -(-N // width) * width
    Dp = -(-D // width) * width
    block = min(block_rows, Np)
    out = []
    for r0 in range(0, Np, block):
        nchunk = -(-(Np - r0) // block)
        out.append(nchunk * (min(r0 + block, Np) - r0) * Dp > threshold)
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sizes_reach_both_reduction_branches(dtype):
    """The premise of the tests below: parallel kernels, and both reduction branches taken."""
    assert N * N * D > _cpu_attribute("_SERIAL_WORK")  # the parallel build runs at all
    branches = _branches(dtype)
    assert any(branches) and not all(branches), branches


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    # Clustered rows: within-cluster kernels ~0.2, between-cluster ~1e-4, so
    # every row's sums have terms from every column chunk.
    rng = np.random.default_rng(20260)
    protos = rng.integers(0, 2, size=(6, D)).astype(np.float64)
    return (protos[rng.integers(0, 6, size=N)] + 0.15 * rng.standard_normal((N, D)))[None]


@pytest.fixture(scope="module")
def reference(batch):
    return backend_parts("numpy", batch, T, SIGMA, THETA)


def _spy(monkeypatch) -> dict[str, list]:
    """Record the conditioning decisions the backend takes (they pick the kernels that run)."""
    seen: dict[str, list] = {"work": [], "held": []}
    precision = _conditioning.distance_precision
    held = _conditioning.float32_pair_sums_are_accurate

    def distance_precision(*args, **kwargs):
        seen["work"].append(precision(*args, **kwargs))
        return seen["work"][-1]

    def pair_sums_held(*args, **kwargs):
        seen["held"].append(held(*args, **kwargs))
        return seen["held"][-1]

    monkeypatch.setattr(_conditioning, "distance_precision", distance_precision)
    monkeypatch.setattr(_conditioning, "float32_pair_sums_are_accurate", pair_sums_held)
    return seen


def _row_errors(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Per row: ``|A_i - B_i|``, relative to the largest row norm of B."""
    A = np.asarray(A, np.float64).reshape(-1, A.shape[-1])
    B = np.asarray(B, np.float64).reshape(-1, B.shape[-1])
    return np.linalg.norm(A - B, axis=1) / np.max(np.linalg.norm(B, axis=1))


def test_float64_parallel_pass2_matches_the_reference(batch, reference, monkeypatch):
    seen = _spy(monkeypatch)
    got = backend_parts("cpu", batch, T, SIGMA, THETA)
    assert seen["work"] == [np.float64]  # a float64 Gram product: the fused kernels ran
    assert 0.2 * math.log(N) < reference.H[0] < 0.9 * math.log(N)  # non-trivial kernels
    np.testing.assert_allclose(got.C0, reference.C0, rtol=F64_RTOL, atol=0)
    np.testing.assert_allclose(got.H, reference.H, rtol=F64_RTOL, atol=0)
    # Row by row: a row tile that lost one chunk's partial sums shows in its rows.
    rows = _row_errors(got.V, reference.V)
    assert rows.max() <= F64_RTOL, f"row {rows.argmax()}: {rows.max():.3g}"
    assert norm_rel(got.G, reference.G) <= F64_RTOL


def test_float32_parallel_pass2_matches_the_reference(batch, monkeypatch):
    X32 = batch.astype(np.float32)
    # The reference on the same float32 inputs, S rounded as the backend rounds it.
    ref = backend_parts("numpy", X32, T, SIGMA, THETA)
    seen = _spy(monkeypatch)
    got = backend_parts("cpu", X32, T, SIGMA, THETA)
    # Float32 Gram products, and float32 pair sums kept (no float64 redo
    # that would hide the float32 kernels).
    assert seen["work"] == [np.float32] and seen["held"] == [True], seen
    np.testing.assert_allclose(got.H, ref.H, rtol=0, atol=1e-5 * math.log(N))
    np.testing.assert_allclose(got.C0, ref.C0, rtol=1e-4, atol=0)
    rows = _row_errors(got.V, ref.V)
    assert rows.max() <= 1e-4, f"row {rows.argmax()}: {rows.max():.3g}"
    assert norm_rel(got.G, ref.G) <= 1e-4
