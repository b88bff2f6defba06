"""What only the Numba ``cpu`` backend has: fused tiling, serial twins, threads, its own exp.

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
from kdentropy import _jit  # noqa: E402
from kdentropy.backends.cpu import (  # noqa: E402
    _cross, _kernel_value, _rowwise, _symmetric, _tiles,
)

T, SIGMA, THETA = 10.0, 0.5, 0.5


# ----------------------------------------------------------------------------- tiling

def _force(monkeypatch, parallel: bool) -> None:
    """Route every batch to the parallel kernels or to their serial twins."""
    monkeypatch.setattr(cpu, "_SERIAL_WORK", -1 if parallel else 1 << 62)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tiling_does_not_change_results(rng, monkeypatch, dtype):
    # Small blocks give several row tiles, several chunks per tile and
    # ragged last tiles (75 rows, 9 columns: both padded); serial twins and
    # parallel builds agree bit for bit.
    X = batch(rng, 1, 75, 9, dtype=dtype)
    H0, G0 = backend_value_and_grad(cpu, X, T, SIGMA, THETA)
    H_ref, G_ref = reference_value_and_grad(X, T, SIGMA, THETA)
    width = _tiles.tile_columns(dtype)
    for block in (width, 2 * width, _tiles.BLOCK):
        monkeypatch.setattr(_tiles, "BLOCK", block)
        results = []
        for parallel in (False, True):
            _force(monkeypatch, parallel)
            results.append(backend_value_and_grad(cpu, X, T, SIGMA, THETA))
        (H, G), (Hp, Gp) = results
        assert H == Hp
        np.testing.assert_array_equal(G, Gp)
        if dtype == np.float64:
            assert_float64_close(H, G, H_ref, G_ref)
            assert_float64_close(H, G, H0, G0, rtol=1e-12)
        else:
            assert_float32_close(H, G, H_ref, G_ref, X.shape[1])
            np.testing.assert_allclose(H, H0, rtol=1e-5)
            assert norm_rel(G, G0) <= 1e-5


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kept_kernel_values_equal_recomputed_ones(rng, monkeypatch, dtype):
    # Pass 2 reads the kernel values pass 1 kept (D >= CACHE_MIN_D, within
    # CACHE_BYTES) or recomputes them: the same numbers either way.
    D = _symmetric.CACHE_MIN_D + 3
    X = batch(rng, 1, 150, D, dtype=dtype)
    monkeypatch.setattr(_tiles, "BLOCK", 2 * _tiles.tile_columns(dtype))  # several tiles
    results = []
    for budget in (0, 1 << 30):
        monkeypatch.setattr(_symmetric, "CACHE_BYTES", budget)
        passes = _symmetric.FusedPasses(*_rowwise.centred(X[0].astype(dtype), np.zeros(D), dtype))
        passes.counts(SIGMA, keep=True)
        assert (passes.cache.size > 0) == (budget > 0)
        results.append(backend_value_and_grad(cpu, X, T, SIGMA, THETA))
    (H0, G0), (H1, G1) = results
    assert H0 == H1
    np.testing.assert_array_equal(G0, G1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_block_primitives_across_tasks_and_chunks(rng, monkeypatch, dtype):
    # Several row tasks (ROWS_PER_TASK rows each) and column chunks (BLOCK),
    # ragged edges on both sides, with and without the diagonal.
    import naive

    monkeypatch.setattr(_tiles, "BLOCK", 2 * _tiles.tile_columns(dtype))
    S = naive.soft_patterns(clustered(rng, 300, 11, noise=0.2), T, THETA)
    g = 1.0 / (1.0 + 5 * rng.random(300))
    for (a0, a1), (b0, b1), same in [((0, 150), (0, 150), True), ((0, 150), (37, 300), False),
                                     ((140, 141), (0, 300), False)]:
        Sa, Sb = S[a0:a1].astype(dtype), S[b0:b1].astype(dtype)
        C0 = cpu.block_soft_counts(Sa, Sb, SIGMA, same)
        C0_ref = naive.block_soft_counts(S[a0:a1], S[b0:b1], SIGMA, same)
        V = cpu.block_weighted_grad(Sa, g[a0:a1], Sb, g[b0:b1], SIGMA, same)
        V_ref = naive.block_weighted_grad(S[a0:a1], g[a0:a1], S[b0:b1], g[b0:b1], SIGMA, same)
        assert C0.dtype == V.dtype == np.float64 and V.shape == Sa.shape
        rtol = 1e-12 if dtype == np.float64 else 1e-4
        np.testing.assert_allclose(C0, C0_ref, rtol=rtol)
        assert norm_rel(V, V_ref) <= rtol


@pytest.mark.parametrize("N", [1, 2, 31, 33, 97, 300])
@pytest.mark.parametrize("parallel", [False, True])
def test_fused_passes_visit_each_pair_once(rng, monkeypatch, N, parallel):
    # With scale 0 every kernel value is 1, so C0_i = N - 1 exactly; with
    # g = 1 every weight is 2, so rowsum_i = 2 (N - 1) and
    # acc_i = 2 sum_{j != i} Sc_j, whatever the padding and the tiling.
    monkeypatch.setattr(_tiles, "BLOCK", 64)
    S = rng.random((N, 5))
    Sc = S - S.mean(axis=0)
    passes = _symmetric.FusedPasses(Sc, np.einsum("ij,ij->i", Sc, Sc), parallel)
    np.testing.assert_array_equal(passes.counts(0.0), np.full(N, N - 1.0))
    rowsum, acc = passes.pair_sums(np.ones(N), 0.0)
    np.testing.assert_array_equal(rowsum, np.full(N, 2.0 * (N - 1)))
    np.testing.assert_allclose(acc, 2 * (Sc.sum(axis=0) - Sc), atol=1e-12)


def test_memory_is_linear_in_N(rng):
    # At N = 6000 an N x N float64 array is 288 MB; the fused passes need a
    # few (padded) N x D arrays.
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
    # A generous 40 arrays of N x Dp (D padded to whole SIMD tiles).
    bound = 40 * N * max(D, _tiles.tile_columns(np.float32)) * 8
    assert bound < N * N * 8
    assert peak <= bound, f"peak {peak / 2**20:.0f} MiB"
    assert np.isfinite(H).all() and np.abs(G).max() > 0


# ----------------------------------------------------------------------------- threads

def _with_each_thread_count(compute):
    """``compute()`` with 1, 2 and (where Numba has them) 3 threads."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba was started with a single thread")
    saved = numba.get_num_threads()
    try:
        results = []
        for threads in sorted({1, 2, min(3, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            results.append(compute())
    finally:
        numba.set_num_threads(saved)
    return results


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("N, D", [(1200, 12), (700, _symmetric.CACHE_MIN_D)])
def test_thread_count_does_not_change_results(rng, dtype, N, D):
    # Several row tiles and chunks; at D = CACHE_MIN_D pass 2 reads the kept
    # kernel values. Every sum has a fixed order, so the results agree exactly.
    X = batch(rng, 1, N, D, dtype=dtype)
    assert N * N * D > cpu._SERIAL_WORK  # the parallel kernels
    (H1, G1), *others = _with_each_thread_count(
        lambda: backend_value_and_grad(cpu, X, T, SIGMA, THETA))
    for H, G in others:
        np.testing.assert_array_equal(H, H1)
        np.testing.assert_array_equal(G, G1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_thread_count_does_not_change_block_primitives(rng, dtype):
    S = cpu.soft_patterns(clustered(rng, 700, 11, noise=0.2), T, THETA).astype(dtype)
    g = 1.0 / (1.0 + 5 * rng.random(700))
    Sa, Sb = S[:300], S[250:]
    (C1, V1), *others = _with_each_thread_count(
        lambda: (cpu.block_soft_counts(Sa, Sb, SIGMA, False),
                 cpu.block_weighted_grad(Sa, g[:300], Sb, g[250:], SIGMA, False)))
    for C, V in others:
        np.testing.assert_array_equal(C, C1)
        np.testing.assert_array_equal(V, V1)


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
    exp_nonpos = _jit.exp_nonpos

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
    exp_f32, kernel = _jit.exp_nonpos_f32, _kernel_value.kernel

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


def test_kernels_refuse_columns_packed_for_another_simd_width():
    # A cached kernel built for another vector width must not read the
    # packed columns with the wrong stride.
    width = _tiles.tile_columns(np.float32)
    n = 2 * width
    Sp = np.zeros((n, width), np.float32)
    wrong = np.zeros((4, width, width // 2), np.float32)  # half-width tiles
    sqn = np.zeros(n, np.float32)
    with pytest.raises(ValueError, match="SIMD width"):
        _symmetric.symmetric_sums(Sp, wrong, sqn, n, 1.0, n, np.empty((0, 0, 0, 0), np.float32),
                                  np.zeros(n), np.zeros((1, n)), None, None, None, None)
    with pytest.raises(ValueError, match="SIMD width"):
        _cross.cross_sums(Sp, sqn, wrong, sqn, n, n, 1.0, False, n, np.zeros(n), None, None,
                          None, None)


def test_kept_kernel_values_need_the_same_scale(rng):
    D = _symmetric.CACHE_MIN_D
    S = rng.random((40, D))
    Sc = S - S.mean(axis=0)
    passes = _symmetric.FusedPasses(Sc, np.einsum("ij,ij->i", Sc, Sc), parallel=False)
    C0 = passes.counts(2.0, keep=True)
    with pytest.raises(ValueError, match="scale"):
        passes.pair_sums(1 / (1 + C0), 3.0)


def test_kernels_compiled_for_avx2_width_agree_with_the_reference():
    # Numba compiling for a Haswell (AVX2) target: 32-byte vectors, half the
    # tile width of an AVX-512 host; serial and parallel kernels, both dtypes.
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("check_vector_width.py")
    env = dict(os.environ, NUMBA_CPU_NAME="haswell")
    env.pop("NUMBA_CPU_FEATURES", None)
    done = subprocess.run([sys.executable, str(script), "32"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
