"""The Numba ``cpu`` backend against the dense NumPy reference.

Tolerances (DESIGN §5): float64 relative 1e-10; float32 value absolute
1e-5·log N and gradient norm-relative 1e-4, both against the float64
reference on the same (float32-representable) inputs.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import kdentropy as kde
from conftest import central_differences, clustered

cpu = pytest.importorskip("kdentropy.backends.cpu")
numba = pytest.importorskip("numba")
from kdentropy.backends import numpy as ref  # noqa: E402

T, SIGMA, THETA = 10.0, 0.5, 0.5


def norm_rel(a, b) -> float:
    """``|a - b| / |b|`` over the whole array (0 when both vanish)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    den = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / den) if den > 0 else float(np.linalg.norm(a))


def reference(X3, T=T, sigma=SIGMA, theta=THETA):
    """The float64 dense reference, whatever the dtype of X3."""
    return ref.value_and_grad(np.asarray(X3, dtype=np.float64), T, sigma, theta, True)


def check_against_reference(X3, T=T, sigma=SIGMA, theta=THETA):
    H, G = cpu.value_and_grad(X3, T, sigma, theta, True)
    H_ref, G_ref = reference(X3, T, sigma, theta)
    N = X3.shape[1]
    assert H.dtype == np.float64 and H.shape == (X3.shape[0],)
    assert G.dtype == X3.dtype and G.shape == X3.shape
    if X3.dtype == np.float64:
        np.testing.assert_allclose(H, H_ref, rtol=1e-10, atol=1e-13)
        assert norm_rel(G, G_ref) <= 1e-10
    else:
        np.testing.assert_allclose(H, H_ref, rtol=0, atol=1e-5 * max(math.log(N), 1.0))
        assert norm_rel(G, G_ref) <= 1e-4
    return H, G


def make(rng, N, D, kind, dtype, G=1):
    if kind == "clustered":
        X = np.stack([clustered(rng, N, D, n_proto=4, noise=0.15) for _ in range(G)])
    else:
        X = rng.random((G, N, D))
    return X.astype(dtype)


# ----------------------------------------------------------------------------- accuracy

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["clustered", "uniform"])
@pytest.mark.parametrize("N, D", [(1, 3), (2, 1), (3, 4), (5, 1), (257, 5), (300, 37)])
def test_matches_reference(rng, dtype, kind, N, D):
    X = make(rng, N, D, kind, dtype)
    H, G = check_against_reference(X)
    if N == 1:
        assert H[0] == 0.0 and not G.any()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T, sigma, theta", [(1.0, 2.0, 0.5), (25.0, 0.2, 0.3), (4.0, 0.05, 0.5)])
def test_matches_reference_across_parameters(rng, dtype, T, sigma, theta):
    # From broad kernels (everything a neighbour) to narrow ones (K underflows).
    X = make(rng, 90, 11, "clustered", dtype)
    check_against_reference(X, T, sigma, theta)


def test_batched_populations(rng):
    X = make(rng, 40, 6, "clustered", np.float64, G=5)
    H, G = cpu.value_and_grad(X, T, SIGMA, THETA, True)
    for g in range(X.shape[0]):
        H1, G1 = reference(X[g : g + 1])
        assert H[g] == pytest.approx(H1[0], rel=1e-10)
        assert norm_rel(G[g], G1[0]) <= 1e-10


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tiling_does_not_change_results(rng, monkeypatch, dtype):
    # Small tiles and panels exercise several row tiles, several panels per
    # tile, a partly filled kernel cache, and ragged last tiles.
    X = make(rng, 75, 9, "clustered", dtype)
    H0, G0 = cpu.value_and_grad(X, T, SIGMA, THETA, True)
    configs = [(16, 16 * 20, 0), (32, 32 * 40, 12_000), (7, 7 * 13, 1 << 30)]
    for rows, entries, cache_bytes in configs:
        monkeypatch.setattr(cpu, "_TILE_ROWS", rows)
        monkeypatch.setattr(cpu, "_PANEL_ENTRIES", entries)
        monkeypatch.setattr(cpu, "_K_CACHE_BYTES", cache_bytes)
        H, G = check_against_reference(X)
        tol = 1e-12 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(H, H0, rtol=tol)
        assert norm_rel(G, G0) <= tol


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_value_only_equals_value_with_gradient(rng, dtype):
    X = make(rng, 270, 8, "clustered", dtype, G=2)
    H, G = cpu.value_and_grad(X, T, SIGMA, THETA, False)
    assert G is None
    H2, _ = cpu.value_and_grad(X, T, SIGMA, THETA, True)
    np.testing.assert_array_equal(H, H2)


def test_gradient_matches_central_differences(rng):
    X = make(rng, 10, 4, "clustered", np.float64)
    X[0] += 0.05 * rng.standard_normal(X.shape[1:])
    _, G = cpu.value_and_grad(X, 3.0, 0.7, THETA, True)
    G_fd = central_differences(lambda Y: cpu.value_and_grad(Y, 3.0, 0.7, THETA, False)[0][0], X)
    assert np.abs(G).max() > 1e-3
    np.testing.assert_allclose(G, G_fd, rtol=1e-6, atol=1e-9)


def test_float32_gradient_accuracy_large_clustered(rng):
    # The case where autograd frameworks lose the float32 gradient entirely.
    # Tight clusters: each pattern has ~N/8 close neighbours, so the
    # gradient is a small difference of large weighted sums.
    N, D = 2048, 1024
    X = clustered(rng, N, D, n_proto=8, noise=0.05, dtype=np.float32)[None]
    H, G = cpu.value_and_grad(X, T, SIGMA, THETA, True)
    H_ref, G_ref = reference(X)
    assert 0.5 < H_ref[0] < math.log(N) - 0.5  # neither collapsed nor all distinct
    assert abs(H[0] - H_ref[0]) <= 1e-5 * math.log(N)
    assert norm_rel(G, G_ref) <= 1e-4


@pytest.mark.parametrize("N, D, dtype", [(100_000, 64, np.float64), (5000, 3000, np.float32)])
def test_plan_covers_each_pair_once_with_bounded_memory(N, D, dtype):
    # The panels visit every pair i < j exactly once, and no buffer grows
    # with N beyond O(N·D): the panel, Q and the kernel cache are bounded.
    ws = cpu._Workspace(N, N, D, dtype, with_grad=True)
    panels, cache = cpu._sym_plan(N, ws, keep=True)
    pairs = 0
    for i0, i1, c0, c1, slot in panels:
        bi, bw = i1 - i0, c1 - c0
        assert i0 <= c0 and bw >= 1 and (c0 == i0 or c0 >= i1)
        pairs += bi * (bi - 1) // 2 + bi * (bw - bi) if c0 == i0 else bi * bw
        assert slot is None or slot.shape == (bi, bw)
    assert pairs == N * (N - 1) // 2
    assert ws.panel.size <= cpu._PANEL_ENTRIES
    assert ws.Q.size <= max(cpu._PANEL_ENTRIES, cpu._TILE_ROWS * D)
    assert cache.nbytes <= cpu._K_CACHE_BYTES


# ----------------------------------------------------------------------------- public API

def test_public_api_noncontiguous_and_batched(rng):
    base = clustered(rng, 2 * 33, 2 * 7, noise=0.2).reshape(2, 33, 14)
    X = np.asfortranarray(base)[:, :, ::2]  # non-contiguous, (2, 33, 7)
    assert not X.flags.c_contiguous
    before = X.copy()
    H, G = kde.soft_entropy_and_grad(X, T, SIGMA, base=2, backend="cpu")
    H_ref, G_ref = kde.soft_entropy_and_grad(X, T, SIGMA, base=2, backend="numpy")
    np.testing.assert_array_equal(X, before)  # input untouched
    assert H.shape == (2,) and G.shape == X.shape and G.dtype == np.float64
    np.testing.assert_allclose(H, H_ref, rtol=1e-10)
    assert norm_rel(G, G_ref) <= 1e-10


def test_auto_resolves_to_cpu_for_host_arrays(rng):
    from kdentropy import _backend

    X = clustered(rng, 50, 9, noise=0.2)
    with kde.use_backend("auto"):
        assert _backend.resolve(None, on_device=False) == "cpu"
        H, G = kde.soft_entropy_and_grad(X)
    H_cpu, G_cpu = kde.soft_entropy_and_grad(X, backend="cpu")
    assert H == H_cpu
    np.testing.assert_array_equal(G, G_cpu)


# ----------------------------------------------------------------------------- determinism

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_repeated_calls_are_bit_identical(rng, dtype):
    X = make(rng, 300, 12, "clustered", dtype)
    H1, G1 = cpu.value_and_grad(X, T, SIGMA, THETA, True)
    H2, G2 = cpu.value_and_grad(X.copy(), T, SIGMA, THETA, True)
    np.testing.assert_array_equal(H1, H2)
    np.testing.assert_array_equal(G1, G2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_thread_count_does_not_change_results(rng, dtype):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba was started with a single thread")
    X = make(rng, 300, 12, "clustered", dtype)
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        H1, G1 = cpu.value_and_grad(X, T, SIGMA, THETA, True)
        numba.set_num_threads(2)
        H2, G2 = cpu.value_and_grad(X, T, SIGMA, THETA, True)
    finally:
        numba.set_num_threads(saved)
    # Every sum has a fixed order, so the results agree exactly (the contract
    # only asks for 1e-12).
    np.testing.assert_array_equal(H1, H2)
    np.testing.assert_array_equal(G1, G2)


# ----------------------------------------------------------------------------- primitives

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_soft_discretize(rng, dtype):
    X = (4 * rng.standard_normal((3, 5, 7))).astype(dtype)
    S = cpu.soft_discretize(X, 3.0, 0.2)
    assert S.dtype == dtype and S.shape == X.shape
    tol = 1e-15 if dtype == np.float64 else 2e-7
    np.testing.assert_allclose(S, ref.soft_discretize(X.astype(np.float64), 3.0, 0.2),
                               rtol=tol, atol=0)
    big = np.array([[-np.finfo(dtype).max, -1e30, 1e30, np.finfo(dtype).max]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Sb = cpu.soft_discretize(big, 10.0, 0.5)
    np.testing.assert_array_equal(Sb, np.array([[0.0, 0.0, 1.0, 1.0]], dtype=dtype))
    assert cpu.soft_discretize(np.array([[0, 1]], dtype=np.int8), 10.0, 0.5).dtype == np.float64


def test_exp_matches_library_exp():
    # The branch-free exp behind every kernel value, including the subnormal
    # range and exact underflow to 0.
    @numba.njit
    def apply(x, out):
        for i in range(x.size):
            out[i] = cpu._exp_nonpos(x[i])

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
    @numba.njit
    def apply(x, d2, out, k):
        for i in range(x.size):
            out[i] = cpu._exp_nonpos_f32(x[i])
        for i in range(d2.size):
            k[i] = cpu._kernel(np.float32(0.0), d2[i], np.float32(0.0), 1.0, k)

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


def _blocks(rng, dtype):
    S = ref.soft_discretize(clustered(rng, 70, 9, noise=0.2), T, THETA).astype(dtype)
    inv_C = 1.0 / (1.0 + rng.random(70) * 5)
    return S, inv_C


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_block_primitives_match_reference(rng, dtype):
    S, inv_C = _blocks(rng, dtype)
    a, b = slice(0, 25), slice(25, 70)
    S64 = S.astype(np.float64)
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    for (sa, sb, same) in [(a, b, False), (b, a, False), (a, a, True), (b, b, True)]:
        C0 = cpu.block_soft_counts(S[sa], S[sb], SIGMA, same)
        C0_ref = ref.block_soft_counts(S64[sa], S64[sb], SIGMA, same)
        assert C0.dtype == np.float64 and C0.shape == (S[sa].shape[0],)
        np.testing.assert_allclose(C0, C0_ref, rtol=rtol, atol=1e-300)
        g = cpu.block_grad(S[sa], inv_C[sa], S[sb], inv_C[sb], SIGMA, same)
        g_ref = ref.block_grad(S64[sa], inv_C[sa], S64[sb], inv_C[sb], SIGMA, same)
        assert g.dtype == np.float64 and g.shape == S[sa].shape
        assert norm_rel(g, g_ref) <= (1e-10 if dtype == np.float64 else 1e-4)


def test_row_shards_reproduce_the_whole(rng):
    # What the MPI layer does: shard rows, sum block counts and gradients.
    X = clustered(rng, 97, 6, noise=0.2)
    S = cpu.soft_discretize(X, T, THETA)
    shards = [slice(0, 30), slice(30, 31), slice(31, 97)]
    C0 = np.concatenate([sum(cpu.block_soft_counts(S[a], S[b], SIGMA, a == b) for b in shards)
                         for a in shards])
    inv_C = 1.0 / (1.0 + C0)
    dS = np.concatenate([sum(cpu.block_grad(S[a], inv_C[a], S[b], inv_C[b], SIGMA, a == b)
                             for b in shards) for a in shards])
    N = X.shape[0]
    H = math.log(N) - np.mean(np.log1p(C0))
    G = dS / (N * SIGMA**2) * T * S * (1 - S)
    H_ref, G_ref = cpu.value_and_grad(X[None], T, SIGMA, THETA, True)
    assert H == pytest.approx(H_ref[0], rel=1e-12)
    assert norm_rel(G, G_ref[0]) <= 1e-12


def test_block_primitives_reject_bad_shapes(rng):
    S, inv_C = _blocks(rng, np.float64)
    with pytest.raises(ValueError, match="Sa and Sb"):
        cpu.block_soft_counts(S, S[:, :3], SIGMA, False)
    with pytest.raises(ValueError, match="same_block"):
        cpu.block_soft_counts(S[:10], S[:20], SIGMA, True)
    with pytest.raises(ValueError, match="inv_Ca"):
        cpu.block_grad(S, inv_C[:5], S, inv_C, SIGMA, False)
