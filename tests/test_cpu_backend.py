"""What only the Numba ``cpu`` backend has: tiling, its K-cache, threads, its own exp.

The checks every backend shares (accuracy against the reference, dtypes,
batching, determinism, block primitives) are in ``test_backend_contract.py``.
Tolerances as there (``helpers.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

import kdentropy as kde
from helpers import (
    assert_float32_close,
    assert_float64_close,
    backend_value_and_grad,
    batch,
    clustered,
    norm_rel,
    reference_value_and_grad,
)
from kdentropy import backends

numba = pytest.importorskip("numba")
cpu = backends.load("cpu")
from kdentropy.backends.cpu import _fastmath, _panels  # noqa: E402

T, SIGMA, THETA = 10.0, 0.5, 0.5


# ----------------------------------------------------------------------------- tiling

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tiling_and_k_cache_do_not_change_results(rng, monkeypatch, dtype):
    # Small tiles and panels exercise several row tiles, several panels per
    # tile, an empty, a partly filled and an unbounded kernel cache, and
    # ragged last tiles.
    X = batch(rng, 1, 75, 9, dtype=dtype)
    H0, G0 = backend_value_and_grad(cpu, X, T, SIGMA, THETA)
    H_ref, G_ref = reference_value_and_grad(X, T, SIGMA, THETA)
    configs = [(16, 16 * 20, 0), (32, 32 * 40, 12_000), (7, 7 * 13, 1 << 30)]
    for rows, entries, cache_bytes in configs:
        monkeypatch.setattr(_panels, "_TILE_ROWS", rows)
        monkeypatch.setattr(_panels, "_PANEL_ENTRIES", entries)
        monkeypatch.setattr(_panels, "_K_CACHE_BYTES", cache_bytes)
        ws = _panels._Workspace(75, 75, 9, np.dtype(dtype), with_grad=True)
        panels, _ = _panels._sym_plan(75, ws, keep=True)
        assert len({(i0, i1) for i0, i1, *_ in panels}) > 1  # several row tiles
        H, G = backend_value_and_grad(cpu, X, T, SIGMA, THETA)
        if dtype == np.float64:
            assert_float64_close(H, G, H_ref, G_ref)
            assert_float64_close(H, G, H0, G0, rtol=1e-12)
        else:
            assert_float32_close(H, G, H_ref, G_ref, X.shape[1])
            np.testing.assert_allclose(H, H0, rtol=1e-5)
            assert norm_rel(G, G0) <= 1e-5


@pytest.mark.parametrize("N, D, dtype", [(100_000, 64, np.float64), (5000, 3000, np.float32)])
def test_plan_covers_each_pair_once_with_bounded_memory(N, D, dtype):
    # The panels visit every pair i < j exactly once, and no buffer grows
    # with N beyond O(N·D): the panel, Q and the kernel cache are bounded.
    ws = _panels._Workspace(N, N, D, np.dtype(dtype), with_grad=True)
    panels, cache = _panels._sym_plan(N, ws, keep=True)
    pairs = 0
    for i0, i1, c0, c1, slot in panels:
        bi, bw = i1 - i0, c1 - c0
        assert i0 <= c0 and bw >= 1 and (c0 == i0 or c0 >= i1)
        pairs += bi * (bi - 1) // 2 + bi * (bw - bi) if c0 == i0 else bi * bw
        assert slot is None or slot.shape == (bi, bw)
    assert pairs == N * (N - 1) // 2
    assert ws.panel.size <= _panels._PANEL_ENTRIES
    assert ws.Q.size <= max(_panels._PANEL_ENTRIES, _panels._TILE_ROWS * D)
    assert cache.nbytes <= _panels._K_CACHE_BYTES


def test_memory_is_linear_in_N(rng):
    # At N = 6000 an N x N float64 array is 288 MB; the streaming backend
    # needs a few N x D arrays plus bounded workspaces.
    import tracemalloc

    N, D = 6000, 16
    X = batch(rng, 1, N, D)
    backend_value_and_grad(cpu, X[:, :1100], T, SIGMA, THETA)  # compile outside the trace
    tracemalloc.start()
    try:
        H, G = backend_value_and_grad(cpu, X, T, SIGMA, THETA)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Bounded workspaces (panel and kernel cache) plus a generous 32 arrays of N x D.
    bound = _panels._PANEL_ENTRIES * 8 + _panels._K_CACHE_BYTES + 32 * N * D * 8
    assert bound < N * N * 8
    assert peak <= bound, f"peak {peak / 2**20:.0f} MiB"
    assert np.isfinite(H).all() and np.abs(G).max() > 0


# ----------------------------------------------------------------------------- threads

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_thread_count_does_not_change_results(rng, dtype):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba was started with a single thread")
    X = batch(rng, 1, 300, 12, dtype=dtype)
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        H1, G1 = backend_value_and_grad(cpu, X, T, SIGMA, THETA)
        numba.set_num_threads(2)
        H2, G2 = backend_value_and_grad(cpu, X, T, SIGMA, THETA)
    finally:
        numba.set_num_threads(saved)
    # Every sum has a fixed order, so the results agree exactly.
    np.testing.assert_array_equal(H1, H2)
    np.testing.assert_array_equal(G1, G2)


# ----------------------------------------------------------------------------- public API

def test_auto_resolves_to_cpu_for_host_arrays(rng, monkeypatch):
    monkeypatch.delenv("KDENTROPY_BACKEND", raising=False)
    X = clustered(rng, 50, 9, noise=0.2)
    with kde.use_backend("auto"):
        assert backends.resolve(None, on_device=False) == "cpu"
        H, G = kde.soft_entropy_and_grad(X)
    H_cpu, G_cpu = kde.soft_entropy_and_grad(X, backend="cpu")
    assert H == H_cpu
    np.testing.assert_array_equal(G, G_cpu)


# ----------------------------------------------------------------------------- exp and kernel

def test_exp_matches_library_exp():
    # The branch-free exp behind every kernel value, including the subnormal
    # range and exact underflow to 0.
    exp_nonpos = _fastmath._exp_nonpos

    @numba.njit
    def apply(x, out):
        for i in range(x.size):
            out[i] = exp_nonpos(x[i])

    x = np.concatenate([-np.linspace(0.0, 800.0, 200_001), [-1e-300, -np.inf, -1e300]])
    out = np.empty_like(x)
    apply(x, out)
    exact = np.exp(x)
    normal = exact >= np.finfo(np.float64).tiny
    np.testing.assert_allclose(out[normal], exact[normal], rtol=4e-16, atol=0)
    np.testing.assert_allclose(out[~normal], exact[~normal], rtol=0, atol=1e-322)
    assert out[0] == 1.0 and out[-2] == 0.0 and out[-1] == 0.0


def test_float32_exp_and_kernel():
    # float32 panels evaluate K = exp(-scale max(a + b - 2 g, 0)) in float32:
    # within 2 float32 ulp of the true exp, exactly 1 at (or, through
    # cancellation, below) distance 0, and flushed to exactly 0 below
    # exp(-64), so no float32 subnormal is ever produced.
    exp_f32, kernel = _fastmath._exp_nonpos_f32, _fastmath._kernel

    @numba.njit
    def apply(x, d2, out, k):
        for i in range(x.size):
            out[i] = exp_f32(x[i])
        for i in range(d2.size):
            k[i] = kernel(np.float32(0.0), d2[i], np.float32(0.0), 1.0, k)

    x = -np.linspace(0.0, 87.0, 200_001).astype(np.float32)
    d2 = np.concatenate([np.linspace(0.0, 100.0, 100_001), [-1e-3, -5.0]]).astype(np.float32)
    out = np.empty_like(x)
    k = np.empty_like(d2)
    apply(x, d2, out, k)
    assert out.dtype == np.float32 and k.dtype == np.float32
    np.testing.assert_allclose(out, np.exp(x.astype(np.float64)), rtol=2 * 2.0**-23, atol=0)
    exact = np.exp(-np.maximum(d2.astype(np.float64), 0.0))
    kept = d2 <= 64.0
    np.testing.assert_allclose(k[kept], exact[kept], rtol=2 * 2.0**-23, atol=0)
    assert np.all(k[~kept] == 0.0)
    assert k[0] == 1.0 and k[-2] == 1.0 and k[-1] == 1.0
    assert np.all((k == 0.0) | (k >= np.finfo(np.float32).tiny))


# ----------------------------------------------------------------------------- block primitives

def test_block_primitives_reject_bad_shapes(rng):
    S = cpu.soft_patterns(clustered(rng, 70, 9, noise=0.2), T, THETA)
    g = 1.0 / (1.0 + rng.random(70) * 5)
    with pytest.raises(ValueError, match="Sa and Sb"):
        cpu.block_soft_counts(S, S[:, :3], SIGMA, False)
    with pytest.raises(ValueError, match="same_block"):
        cpu.block_soft_counts(S[:10], S[:20], SIGMA, True)
    with pytest.raises(ValueError, match="ga and gb"):
        cpu.block_weighted_grad(S, g[:5], S, g, SIGMA, False)


def test_block_primitives_take_empty_blocks(rng):
    # One MPI rank's shard may hold no rows.
    S = cpu.soft_patterns(clustered(rng, 12, 5), T, THETA)
    g = 1.0 / (1.0 + rng.random(12))
    empty = S[:0]
    assert cpu.block_soft_counts(empty, S, SIGMA, False).shape == (0,)
    np.testing.assert_array_equal(cpu.block_soft_counts(S, empty, SIGMA, False), np.zeros(12))
    np.testing.assert_array_equal(cpu.block_weighted_grad(S, g, empty, g[:0], SIGMA, False),
                                  np.zeros((12, 5)))
