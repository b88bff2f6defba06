"""The CUDA backend against the NumPy reference (on the simulator without a GPU).

Run in its own process, with the simulator switched on before Numba is imported:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda

Without the simulator and without a usable GPU the module is skipped, so a
plain ``pytest tests`` stays green anywhere. (The skip lives here rather than in
a ``tests/cuda/conftest.py``: a second rootless ``conftest`` module would shadow
``tests/conftest.py`` for the ``from conftest import ...`` helpers in tests/.)

Sizes are tiny because the simulator runs every CUDA thread as a Python thread;
under it the pair kernels use 4 x 4 pair tiles, 2-cell slices and 4-cell output
chunks, and Gram panels of a few rows, so the shapes below span several tiles,
slices, chunks, column splits and panels. Both routes (fused kernels and Gram
panels, whose GEMM is ``numpy.matmul`` here) are run in turn by replacing the
backend's ``plan`` with one whose ``route`` argument is fixed.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"
cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")


def _gpu_present() -> bool:
    # numba-cuda answers False when it finds no driver or device; what it
    # raises is a broken installation, which must fail the run, not skip it.
    return bool(cuda.is_available())


if not (SIMULATOR or _gpu_present()):
    pytest.skip("no CUDA GPU; run `NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda` "
                "to test the kernels on the simulator", allow_module_level=True)

import helpers  # tests/helpers.py: the shared tolerance rules

import kdentropy as kde
from kdentropy.backends import _conditioning
from kdentropy.backends import cuda as kc
from kdentropy.backends._conditioning import GRAM_LIMITS
from kdentropy.backends.cuda import _compiler, _device, _elementwise, _fused, _panels

pytestmark = pytest.mark.cuda

PARAMS = dict(temperature=10.0, sigma=0.5, threshold=0.5)
ROUTES = ["fused", "panel"]
PLAN = kc.plan  # the backend's own planner, before any test replaces it


@pytest.fixture(scope="module", autouse=True)
def _fast_simulator_barriers():
    """Let the simulator's busy-polling block manager see barriers sooner.

    The simulator runs every CUDA thread as a Python thread and polls them for
    ``syncthreads``; with the default 5 ms GIL switch interval each barrier
    costs several milliseconds, which makes this module ~10x slower.
    """
    if not kc.SIMULATOR:
        yield
        return
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def force_route(monkeypatch, route: str) -> None:
    """Make every call of the test plan ``route`` (the accuracy rule still applies)."""
    monkeypatch.setattr(kc, "plan", functools.partial(PLAN, route=route))


@pytest.fixture(params=ROUTES)
def route(request, monkeypatch) -> str:
    """Run the test once on each route."""
    force_route(monkeypatch, request.param)
    return request.param


def simulated_memory(monkeypatch, nbytes: int) -> None:
    """Pretend the (simulated) device has ``nbytes`` free: sizes the panels and the K cache."""
    monkeypatch.setattr(_device, "SIMULATED_FREE_BYTES", nbytes)


def patterns(rng: np.random.Generator, shape: tuple[int, ...], dtype=np.float64,
             n_proto: int = 3, noise: float = 0.12) -> np.ndarray:
    """Noisy copies of a few 0/1 prototypes: kernel values well inside (0, 1)."""
    *batch, N, D = shape
    protos = rng.integers(0, 2, size=(*batch, n_proto, D)).astype(np.float64)
    pick = rng.integers(0, n_proto, size=(*batch, N))
    X = np.take_along_axis(protos, pick[..., None], axis=-2)
    return (X + noise * rng.standard_normal(X.shape)).astype(dtype)


def tight_patterns(rng: np.random.Generator, shape: tuple[int, ...], sigma: float,
                   n_proto: int = 2) -> np.ndarray:
    """float32 patterns whose soft patterns lie about sigma apart within a cluster.

    Cells sit near the threshold (sigmoid slope ~2.4 at T = 10), so noise of
    ``0.3 sigma / sqrt(D)`` in X gives kernel values spread over (0, 1) even
    for tiny sigma: the regime where a float32 Gram distance fails.
    """
    *batch, N, D = shape
    signs = rng.choice([-0.05, 0.05], size=(*batch, n_proto, D))
    pick = rng.integers(0, n_proto, size=(*batch, N))
    X = 0.5 + np.take_along_axis(signs, pick[..., None], axis=-2)
    return (X + 0.3 * sigma / math.sqrt(D) * rng.standard_normal(X.shape)).astype(np.float32)


def direct_oracle(X: np.ndarray, temperature: float, sigma: float, threshold: float,
                  s_dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Entropy and gradient in float64 from direct differences (no Gram cancellation).

    ``s_dtype=np.float32`` rounds S to float32 first: what the float32 input
    alone costs.
    """
    X = np.asarray(X, dtype=np.float64)
    S = (1 / (1 + np.exp(-temperature * (X - threshold)))).astype(s_dtype).astype(np.float64)
    diff = S[..., :, None, :] - S[..., None, :, :]
    K = np.exp(-np.sum(diff * diff, axis=-1) / (2 * sigma ** 2))
    N = X.shape[-2]
    K[..., np.arange(N), np.arange(N)] = 0
    C0 = K.sum(axis=-1)
    g = 1 / (1 + C0)
    W = K * (g[..., :, None] + g[..., None, :])
    V = np.einsum("...ij,...ijk->...ik", W, diff)
    grad = V / (N * sigma ** 2) * temperature * S * (1 - S)
    return math.log(N) - np.log1p(C0).mean(axis=-1), grad


def float32_tolerances(X32: np.ndarray, reference) -> tuple[float, float]:
    """Bars for a float32 result: the library's float32 bars, or 3x what rounding S alone costs.

    ``reference(X, s_dtype)`` gives the float64 (H, grad) with S kept in
    float64 or rounded to float32. The bars are those of every backend
    (``helpers.float32_tolerances``: value ``1e-5 log N``, gradient 1e-4
    norm-relative), raised to 3x the rounding cost where that is larger.
    """
    H64, G64 = reference(X32, np.float64)
    H32, G32 = reference(X32, np.float32)
    h_dev = float(np.max(np.abs(H32 - H64)))
    g_dev = float(np.linalg.norm(G32 - G64) / np.linalg.norm(G64))
    # The accurate paths land within about 1x of the rounding cost; a float32
    # Gram distance beyond the conditioning limit is hundreds of times off.
    value_bar, grad_bar = helpers.float32_tolerances(X32.shape[-2])
    return max(3 * h_dev, value_bar), max(3 * g_dev, grad_bar)


def numpy_reference(params: dict):
    """``reference(X, s_dtype)`` from the numpy backend (float64 pair sums)."""
    def ref(X, s_dtype):
        return kde.soft_entropy_and_grad(np.asarray(X).astype(s_dtype), backend="numpy",
                                         **params)
    return ref


def assert_close(H, G, X, params: dict, reference=None) -> None:
    """float64: rel 1e-10 against the numpy backend; float32: see :func:`float32_tolerances`."""
    reference = reference or numpy_reference(params)
    H64, G64 = reference(X, np.float64)
    H = np.asarray(H, dtype=np.float64)
    G = np.asarray(G, dtype=np.float64)
    scale = np.linalg.norm(G64)
    if X.dtype == np.float64:
        np.testing.assert_allclose(H, H64, rtol=1e-10, atol=1e-13)
        h_tol, g_tol = None, 1e-10
    else:
        h_tol, g_tol = float32_tolerances(X, reference)
        assert np.max(np.abs(H - H64)) <= h_tol
    if scale == 0:
        assert not np.any(G)
    else:
        assert np.linalg.norm(G - G64) <= g_tol * scale


def host(a) -> np.ndarray:
    """A device array's values on the host; fails for anything that is not one."""
    assert not isinstance(a, np.ndarray), "expected a device array"
    return a.copy_to_host()


# ----------------------------------------------------------------------------- module level

def test_available():
    assert kc.unavailable_reason() is None
    assert "cuda" in kde.available_backends()
    assert kc.DEVICE_ARRAYS and kc.NAME == "cuda"


def test_simulator_tiles_are_small():
    # The tile-edge tests below rely on tiles much smaller than their N and D.
    if not kc.SIMULATOR:
        pytest.skip("real GPU: production tiles")
    for tiling in _fused.TILINGS.values():
        assert tiling.tile <= 4 and tiling.kt <= 4 and tiling.dchunk <= 4
    assert _panels.PANEL_BYTES_CAP <= 1024
    assert _device.free_device_bytes() <= 4096


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [
    (1, 6, 1),    # D = 1
    (1, 9, 7),    # N, D not multiples of the tile, slice or chunk; several column splits
    (1, 16, 8),   # exact multiples
    (3, 7, 5),    # batched: G on the grid's z axis
    (1, 21, 13),  # several tiles in each split, several panels
])
def test_matches_numpy_backend(rng, route, dtype, shape):
    X = patterns(rng, shape, dtype)
    X0 = X.copy()
    H, G = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    assert isinstance(G, np.ndarray) and G.dtype == X.dtype and G.shape == X.shape
    assert_close(H, G, X, PARAMS)
    np.testing.assert_array_equal(X, X0)
    # The value-only path (pass 1 alone) gives the same H, bit for bit.
    np.testing.assert_array_equal(kde.soft_entropy(X, backend="cuda", **PARAMS), H)


@pytest.mark.parametrize("params", [
    dict(temperature=3.0, sigma=0.8, threshold=0.2),
    dict(temperature=25.0, sigma=0.25, threshold=0.7),
])
def test_other_parameters(rng, route, params):
    X = patterns(rng, (2, 10, 6))
    H, G = kde.soft_entropy_and_grad(X, backend="cuda", **params)
    assert_close(H, G, X, params)


@pytest.mark.parametrize("sigma", [1e-3, 1e-2])
def test_float32_small_sigma_takes_the_accurate_path(rng, route, sigma):
    X = tight_patterns(rng, (2, 11, 6), sigma)
    params = dict(PARAMS, sigma=sigma)
    S = 1 / (1 + np.exp(-10.0 * (X.astype(np.float64) - 0.5)))
    Sc = S - S.mean(axis=-2, keepdims=True)
    how = kc.plan(np.float32, X.shape, float(np.max(np.sum(Sc * Sc, axis=-1))), sigma)
    assert how.route == route
    H, G = kde.soft_entropy_and_grad(X, backend="cuda", **params)
    Hr, Gr = direct_oracle(X, s_dtype=np.float64, **params)
    assert 0.05 < np.min(Hr) and np.max(Hr) < math.log(11) - 0.05  # neighbours in play
    assert_close(H, G, X, params, reference=lambda A, s: direct_oracle(A, s_dtype=s, **params))


@pytest.mark.parametrize("sigma", [1e-3, 1e-2])
def test_float64_small_sigma(rng, route, sigma):
    X = tight_patterns(rng, (2, 12, 5), sigma).astype(np.float64)
    params = dict(PARAMS, sigma=sigma)
    H, G = kde.soft_entropy_and_grad(X, backend="cuda", **params)
    assert_close(H, G, X, params, reference=lambda A, s: direct_oracle(A, s_dtype=s, **params))


def test_plan_follows_the_conditioning():
    # The work dtype is _conditioning.distance_precision's answer on both
    # routes; D and cuBLAS only choose the route.
    eps32, eps64 = np.finfo(np.float32).eps, np.finfo(np.float64).eps
    L32 = GRAM_LIMITS[np.dtype(np.float32)]
    L64 = GRAM_LIMITS[np.dtype(np.float64)]
    M = 4.0
    well = math.sqrt(eps32 * M / (0.5 * L32))  # kappa32 = L32 / 2
    ill = math.sqrt(eps32 * M / (2 * L32))  # kappa32 = 2 L32, kappa64 far below L32
    hopeless32 = math.sqrt(eps64 * M / (2 * L32))  # even a float64 Gram misses the float32 bar
    hopeless64 = math.sqrt(eps64 * M / (2 * L64))  # a float64 Gram misses the float64 bar
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    # The model's choice between the routes is replaced by its answer for D:
    # "big" patterns go to the panels, "small" ones to the fused kernels.
    big, small = (1, 50, 128), (1, 50, 64)

    def how(dtype, shape, sigma, gemm_ok=True):
        fused_wins = lambda N, D, work, kcache: D < 100  # noqa: E731
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(kc._routing, "fused_beats_panels", fused_wins)
            p = kc.plan(dtype, shape, M, sigma, gemm_ok=gemm_ok, available_bytes=2**30)
        return p.route, p.work_dtype, p.gram

    assert how(f32, big, well) == ("panel", f32, True)
    assert how(f32, big, ill) == ("panel", f64, True)
    assert how(f32, big, hopeless32) == ("fused", f32, False)
    assert how(f32, big, well, gemm_ok=False) == ("fused", f32, True)
    assert how(f32, big, ill, gemm_ok=False) == ("fused", f64, True)
    assert how(f32, small, well) == ("fused", f32, True)
    assert how(f32, small, ill) == ("fused", f64, True)
    assert how(f64, big, ill) == ("panel", f64, True)
    assert how(f64, big, hopeless64) == ("fused", f64, False)
    assert how(f64, small, hopeless64) == ("fused", f64, False)
    for D in (4, 16, 64, 256):  # without the stand-in, the route is the model's answer
        p = kc.plan(f32, (1, 4096, D), M, well, gemm_ok=True, available_bytes=2**30)
        kept = 0 < _fused.kept_bytes(1, 4096, D, p.work_dtype) <= 2**29
        assert (p.route == "fused") == kc._routing.fused_beats_panels(4096, D, p.work_dtype, kept)
        if p.route == "fused":
            assert p.kcache == kept
    for dtype in (f32, f64):
        for sigma in (well, ill, hopeless32, hopeless64, 1e-3, 1e-20):
            work = _conditioning.distance_precision(dtype, M, sigma)
            p = kc.plan(dtype, small, M, sigma)
            assert (p.work_dtype, p.gram) == ((dtype, False) if work is None else (work, True))


def test_plan_shows_the_panels_and_the_k_cache():
    # 2 populations of 100 rows in float32: 80 kB of kernel values.
    capped_rows = min(100, _panels.PANEL_BYTES_CAP // (100 * 4))
    roomy = kc.plan(np.float32, (2, 100, 200), 1.0, 0.5, route="panel", gemm_ok=True,
                    available_bytes=2**20)
    assert roomy == ("panel", np.float32, True, capped_rows, True)
    # Without the cache the panels keep their height, so the GEMMs (and their
    # rounding) are the same: the free memory does not change the result.
    tight = kc.plan(np.float32, (2, 100, 200), 1.0, 0.5, route="panel", gemm_ok=True,
                    available_bytes=2 * 100 * 100 * 4)  # half of it is the budget
    assert tight == ("panel", np.float32, True, capped_rows, False)
    # Memory short of one capped panel: lower panels (20 rows of 80 bytes, 240 B budget).
    short = kc.plan(np.float32, (2, 20, 200), 1.0, 0.5, route="panel", gemm_ok=True,
                    available_bytes=480)
    assert (short.panel_rows, short.kcache) == (min(3, _panels.PANEL_BYTES_CAP // 80), False)
    fused = kc.plan(np.float32, (2, 100, 20), 1.0, 0.5, route="fused", gemm_ok=True,
                    available_bytes=1000)
    assert (fused.route, fused.panel_rows, fused.kcache) == ("fused", 0, False)


def test_plan_takes_the_route_as_an_argument():
    assert kc.plan(np.float64, (1, 9, 3), 1.0, 0.5, route="panel").route == "panel"
    assert kc.plan(np.float64, (1, 9, 300), 1.0, 0.5, route="fused").route == "fused"
    # Direct differences exist only as fused kernels.
    assert kc.plan(np.float64, (1, 9, 3), 1.0, 1e-20, route="panel").route == "fused"
    with pytest.raises(ValueError, match="route"):
        kc.plan(np.float64, (1, 9, 3), 1.0, 0.5, route="gemm")
    assert not hasattr(kc, "_FORCE_ROUTE")


def test_tf32_rules_out_float32_panels(monkeypatch):
    monkeypatch.setattr(_panels, "float32_gemm_is_fp32", lambda: False)
    p = kc.plan(np.float32, (1, 64, 4096), 1.0, 1.0, gemm_ok=True)
    assert (p.route, p.work_dtype) == ("panel", np.float64)


def test_identical_rows_give_zero(rng, route):
    X = np.repeat(patterns(rng, (1, 1, 6)), 9, axis=1)
    H, G = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    np.testing.assert_allclose(H, 0.0, atol=1e-14)
    # Exactly 0 with direct differences; Gram panels leave the rounding of the
    # centred rows (S - mean ~ 1e-17) times the weights.
    assert np.abs(G).max() <= 1e-30


# Under the simulator d2 * (-1 / (2 sigma^2)) overflows in NumPy scalars, which warn.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tiny_sigma_counts_exact_duplicates(rng, route, dtype):
    # 1 / (2 sigma^2) overflows: duplicates must still count as K = 1,
    # distinct rows as K = 0, so H is the entropy of the multiplicities.
    X = np.repeat(patterns(rng, (1, 3, 5)), [2, 3, 1], axis=1).astype(dtype)
    H = kde.soft_entropy(X, backend="cuda", temperature=10.0, sigma=1e-20)
    p = np.array([2, 3, 1]) / 6
    np.testing.assert_allclose(H, -np.sum(p * np.log(p)), rtol=1e-6)


def test_gradient_matches_finite_differences(rng, route):
    X = patterns(rng, (5, 3))
    G = kde.soft_entropy_grad(X, backend="cuda", **PARAMS)
    fd = np.empty_like(X)
    h = 1e-6
    for idx in np.ndindex(X.shape):
        Xp, Xm = X.copy(), X.copy()
        Xp[idx] += h
        Xm[idx] -= h
        fd[idx] = (kde.soft_entropy(Xp, backend="cuda", **PARAMS)
                   - kde.soft_entropy(Xm, backend="cuda", **PARAMS)) / (2 * h)
    np.testing.assert_allclose(G, fd, rtol=1e-5, atol=1e-8 * np.abs(G).max())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_repeats_are_bit_identical(rng, route, dtype):
    X = patterns(rng, (2, 11, 6), dtype)
    H1, G1 = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    H2, G2 = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    np.testing.assert_array_equal(H1, H2)
    np.testing.assert_array_equal(G1, G2)


def test_populations_beyond_the_grid_limit(rng, monkeypatch):
    # More populations than grid z-blocks: several launches, each with its offset.
    force_route(monkeypatch, "fused")
    monkeypatch.setattr(_fused, "MAX_GRID_Y_Z", 2)
    X = patterns(rng, (5, 6, 3))
    H, G = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    assert_close(H, G, X, PARAMS)


def test_split_buffer_cap_gives_one_split(rng, monkeypatch):
    # With no room for partials the column sweep is one split: same numbers.
    force_route(monkeypatch, "fused")
    X = patterns(rng, (1, 13, 6))
    H1, G1 = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    monkeypatch.setattr(_fused, "SPLIT_BUFFER_BYTES", 1)
    assert _fused._splits(8, 1, 100) == (1, 8)
    H2, G2 = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    np.testing.assert_allclose(H2, H1, rtol=1e-14)
    np.testing.assert_allclose(G2, G1, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("n_tiles", [1, 2, 3, 7, 64, 1000])
@pytest.mark.parametrize("blocks", [1, 3, 70000])
def test_column_splits_cover_every_tile_once(n_tiles, blocks):
    P, per = _fused._splits(n_tiles, blocks, 8 * n_tiles)
    assert 1 <= P <= n_tiles
    # Split p holds tiles [p * per, min(n_tiles, (p + 1) * per)): none empty, none missing.
    assert (P - 1) * per < n_tiles <= P * per


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_panel_kernel_cache_gives_the_same_numbers(rng, monkeypatch, dtype):
    # Little memory: many panels, pass 2 recomputes the Gram products; much
    # memory: pass 2 reuses the kernel values of pass 1 (the K cache).
    force_route(monkeypatch, "panel")
    X = patterns(rng, (2, 12, 5), dtype)
    item = np.dtype(dtype).itemsize
    sqn = 1.0
    small = PLAN(dtype, X.shape, sqn, 0.5, route="panel")
    assert not small.kcache and small.panel_rows < 12
    H1, G1 = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    simulated_memory(monkeypatch, 2 * 2 * 12 * 12 * item)  # KCACHE_FRACTION = 1/2 of it
    assert PLAN(dtype, X.shape, sqn, 0.5, route="panel").kcache
    H2, G2 = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    np.testing.assert_allclose(H2, H1, rtol=1e-12)
    np.testing.assert_allclose(G2, G1, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-6 * np.abs(G1).max())
    assert_close(H2, G2, X, PARAMS)


@pytest.mark.parametrize("rows", [1, 5, 11, 12])
def test_panel_heights_cover_every_row(rng, monkeypatch, rows):
    # Panel edges: one-row panels, a ragged last panel, one short of N, all of N.
    force_route(monkeypatch, "panel")
    X = patterns(rng, (2, 12, 5))
    monkeypatch.setattr(_panels, "panel_plan",
                        lambda G, N, dtype, available=None: _panels.PanelPlan(rows, False))
    H, G = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    assert_close(H, G, X, PARAMS)


def two_far_clusters(rng, shape, noise):
    """float32 patterns in two clusters 1 apart per cell, each spread by ``noise``.

    Between the clusters K underflows; within them ``S_i - S_j`` is tiny
    against ``Sc``: float32 ``rowsum Sc - W Sc`` cancels.
    """
    *batch, N, D = shape
    side = (np.arange(N) % 2).astype(np.float64)[:, None] * np.ones(D)
    return (side + noise * rng.standard_normal((*batch, N, D))).astype(np.float32)


def test_float32_panels_redo_cancelled_sums_in_float64(rng, monkeypatch):
    force_route(monkeypatch, "panel")
    X = two_far_clusters(rng, (2, 12, 5), 1e-3)
    X[1] = patterns(rng, (12, 5), np.float32)  # a population that keeps float32
    calls = []
    weighted_sums = _panels.weighted_sums

    def spy(Sc, *args, **kwargs):
        calls.append((np.dtype(Sc.dtype), kwargs.get("populations")))
        return weighted_sums(Sc, *args, **kwargs)

    monkeypatch.setattr(_panels, "weighted_sums", spy)
    params = PARAMS  # T = 10: the clusters' S differ by 0.99 per cell, K between them ~1e-4
    H, G = kde.soft_entropy_and_grad(X, backend="cuda", **params)
    assert calls == [(np.dtype(np.float32), None), (np.dtype(np.float64), [0])]
    assert_close(H, G, X, params,
                 reference=lambda A, s: direct_oracle(A, s_dtype=s, **params))


def test_one_small_copy_before_pass_1(rng, monkeypatch):
    # The NaN flag and max |Sc|^2 come back together; then only C0.
    copies = []

    def counting(module):
        original = module.to_host

        def to_host(a, stream):
            copies.append(a.size)
            return original(a, stream)

        monkeypatch.setattr(module, "to_host", to_host)

    counting(_elementwise)
    counting(kc)
    X = patterns(rng, (3, 9, 4))
    for r in ROUTES:
        force_route(monkeypatch, r)
        copies.clear()
        kde.soft_entropy_and_grad(cuda.to_device(X), **PARAMS)
        assert copies == [2, 3 * 9], r


def test_nan_is_found_with_the_first_copy(rng):
    X = patterns(rng, (2, 6, 4))
    X[0, 1, 1] = np.nan
    S = kc.soft_patterns(cuda.to_device(X), 10.0, 0.5)  # no copy, no error yet
    with pytest.raises(ValueError, match="NaN or infinity"):
        kc.soft_counts_and_grad(S, 0.5, None)


class _BrokenCuPy:
    """A CuPy that imports but cannot reach cuBLAS."""

    class cuda:
        class device:
            @staticmethod
            def get_cublas_handle():
                raise RuntimeError("CUBLAS_STATUS_NOT_INITIALIZED")


@pytest.fixture
def real_gpu_rules(monkeypatch):
    """The panel module as on a GPU (CuPy required), with its CuPy probe reset."""
    monkeypatch.setattr(_panels, "SIMULATOR", False)
    _panels._cupy.cache_clear()
    _panels._warn_without_cupy.cache_clear()
    yield
    _panels._cupy.cache_clear()
    _panels._warn_without_cupy.cache_clear()


def test_missing_cupy_is_said_once(monkeypatch, real_gpu_rules):
    monkeypatch.setitem(sys.modules, "cupy", None)  # as if CuPy were not installed
    with pytest.warns(RuntimeWarning, match="CuPy is not installed.*fused kernels"):
        p = kc.plan(np.float32, (1, 64, 256), 1.0, 0.5)
    assert p.route == "fused"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kc.plan(np.float32, (1, 64, 256), 1.0, 0.5).route == "fused"


def test_broken_cupy_raises(monkeypatch, real_gpu_rules):
    monkeypatch.setitem(sys.modules, "cupy", _BrokenCuPy)
    with pytest.raises(RuntimeError, match="CuPy cannot reach cuBLAS.*CUBLAS_STATUS"):
        kc.plan(np.float32, (1, 64, 256), 1.0, 0.5)
    # Only where the model prefers the fused kernels is CuPy never asked.
    for D in (1, 4, 16):
        kept = 0 < _fused.kept_bytes(1, 64, D, np.float32) <= _device.free_device_bytes() / 2
        if kc._routing.fused_beats_panels(64, D, np.dtype(np.float32), kept):
            assert kc.plan(np.float32, (1, 64, D), 1.0, 0.5).route == "fused"
        else:
            with pytest.raises(RuntimeError, match="CuPy cannot reach cuBLAS"):
                kc.plan(np.float32, (1, 64, D), 1.0, 0.5)


# ----------------------------------------------------------------------------- public API

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_public_api_host_input(rng, dtype):
    X = patterns(rng, (2, 2, 7, 5), dtype)  # 4-D: two batch axes
    H, G = kde.soft_entropy_and_grad(X, backend="cuda", base=2, normalize=True)
    Hr, Gr = kde.soft_entropy_and_grad(X, backend="numpy", base=2, normalize=True)
    assert isinstance(G, np.ndarray) and G.shape == X.shape and G.dtype == X.dtype
    assert H.shape == (2, 2)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(H, Hr, rtol=tol)
    assert np.linalg.norm(G - Gr) <= tol * 10 * np.linalg.norm(Gr)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_device_input_stays_on_device(rng, route, dtype):
    X = patterns(rng, (9, 6), dtype)
    d_X = cuda.to_device(X)

    def no_host_copy(*args, **kwargs):
        raise AssertionError("X was copied back to the host")

    d_X.copy_to_host_orig = d_X.copy_to_host
    d_X.copy_to_host = no_host_copy  # the device path must never read X on the host
    H, d_G = kde.soft_entropy_and_grad(d_X)  # backend "auto" picks cuda for device arrays
    assert isinstance(H, np.floating)
    assert d_G.shape == X.shape and d_G.dtype == X.dtype
    assert_close(H, host(d_G), X, PARAMS)
    np.testing.assert_array_equal(d_X.copy_to_host_orig(), X)  # input untouched


def test_device_input_scaling_and_single_outputs(rng):
    X = patterns(rng, (10, 4))
    d_X = cuda.to_device(X)
    H = kde.soft_entropy(d_X, base=2, normalize=True)
    d_G = kde.soft_entropy_grad(d_X, base=2, normalize=True)
    Hr, Gr = kde.soft_entropy_and_grad(X, backend="numpy", base=2, normalize=True)
    assert isinstance(H, np.floating)
    np.testing.assert_allclose(H, Hr, rtol=1e-10)
    np.testing.assert_allclose(host(d_G), Gr, rtol=1e-9, atol=1e-12 * np.abs(Gr).max())


@pytest.mark.parametrize("layout", ["batched", "strided", "fortran", "unmergeable"])
def test_device_layouts(rng, layout):
    # Views are taken on the device: to_device itself needs a contiguous buffer.
    if layout == "batched":  # leading axes merged by a reshape
        base = patterns(rng, (2, 3, 6, 5))
        view = (slice(None),)
    elif layout == "strided":  # a strided 3-D view
        base = patterns(rng, (3, 14, 5))
        view = (slice(None), slice(None, None, 2))
    elif layout == "fortran":
        base = np.asfortranarray(patterns(rng, (7, 5)))
        view = (slice(None),)
    else:  # leading axes with strides (120, 30): no 3-D view exists
        base = patterns(rng, (3, 4, 6, 5))
        view = (slice(None), slice(1, 3))
    d_X = cuda.to_device(base)[view]
    X = base[view]
    H, d_G = kde.soft_entropy_and_grad(d_X)
    assert d_G.shape == X.shape
    assert_close(H, host(d_G), np.ascontiguousarray(X), PARAMS)


@pytest.mark.parametrize("dtype", [np.int32, np.bool_, np.float16])
def test_device_other_real_dtypes_compute_in_float64(rng, dtype):
    X = (patterns(rng, (8, 5)) > 0.5).astype(dtype)
    H, d_G = kde.soft_entropy_and_grad(cuda.to_device(X), temperature=4.0)
    assert d_G.dtype == np.float64
    params = dict(PARAMS, temperature=4.0)
    assert_close(H, host(d_G), X.astype(np.float64), params)


@pytest.mark.parametrize("shape", [(1, 4), (5, 0), (0, 5, 3)])
def test_device_edge_shapes(rng, shape):
    X = rng.random(shape)
    H, d_G = kde.soft_entropy_and_grad(cuda.to_device(X))
    assert np.shape(H) == shape[:-2]
    np.testing.assert_allclose(H, 0.0, atol=1e-15)
    G = host(d_G)
    assert G.shape == shape and G.dtype == np.float64 and not np.any(G)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_device_nonfinite_raises(rng, bad):
    X = patterns(rng, (2, 6, 4))
    X[1, 3, 2] = bad
    with pytest.raises(ValueError, match="NaN or infinity"):
        kde.soft_entropy(cuda.to_device(X))
    X = np.array([[bad, 0.0]])  # N = 1 is checked too
    with pytest.raises(ValueError, match="NaN or infinity"):
        kde.soft_entropy_grad(cuda.to_device(X))


def test_device_bad_inputs():
    with pytest.raises(TypeError, match="complex"):
        kde.soft_entropy(cuda.to_device(np.ones((3, 2), dtype=np.complex128)))
    with pytest.raises(ValueError, match="N >= 1"):
        kde.soft_entropy(cuda.to_device(np.ones((0, 2))))
    with pytest.raises(ValueError, match="2 dimensions"):
        kde.soft_entropy(cuda.to_device(np.ones(3)))
    with pytest.raises(TypeError, match="device array"):
        kc.soft_patterns([[1.0, 2.0]], 10.0, 0.5)


@pytest.mark.skipif(kc.SIMULATOR, reason="CuPy arrays need a real GPU")
def test_cupy_in_cupy_out(rng):
    cp = pytest.importorskip("cupy")
    X = patterns(rng, (2, 300, 160), np.float32)  # D = 160: the panel route by the model
    H, G = kde.soft_entropy_and_grad(cp.asarray(X))
    assert isinstance(G, cp.ndarray) and G.shape == X.shape and G.dtype == X.dtype
    assert_close(H, G.get(), X, PARAMS)


# ----------------------------------------------------------------------------- tools

def test_blocked_cupy_reference_script_maths(rng):
    # gpu_floor.py's blocked competitor, run with NumPy, is the same estimator.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "asv_benchmarks"))
    try:
        import gpu_floor
    finally:
        sys.path.pop(0)
    X = patterns(rng, (23, 6))
    H, G = gpu_floor.blocked_reference(np, X, panel_bytes=5 * 23 * 8, **PARAMS)
    Hr, Gr = kde.soft_entropy_and_grad(X, backend="numpy", **PARAMS)
    np.testing.assert_allclose(H, Hr, rtol=1e-12)
    np.testing.assert_allclose(G, Gr, rtol=1e-9, atol=1e-12 * np.abs(Gr).max())
    assert gpu_floor.occupancy((9, 0), 32, 0, 256) == 1.0
    assert gpu_floor.occupancy((9, 0), 128, 0, 256) == 0.25
    assert gpu_floor.occupancy((8, 0), 32, 48 * 1024, 256) == 3 * 8 / 64


# ----------------------------------------------------------------------------- unavailable

_PROBE = """
import sys
{prelude}
import numpy as np
import kdentropy as kde
try:
    kde.soft_entropy(np.zeros((3, 2)), backend="cuda")
except kde.BackendUnavailableError as exc:
    assert isinstance(exc, ValueError)
    print("UNAVAILABLE:", exc)
print("BACKENDS:", kde.available_backends())
"""


def _probe(prelude: str = "") -> str:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(prelude=prelude)], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return proc.stdout


def test_unavailable_without_gpu_or_simulator():
    out = _probe()
    if "UNAVAILABLE" not in out and "'cuda'" in out:
        pytest.skip("a real GPU is present")
    assert "UNAVAILABLE: backend 'cuda' is not available: no usable CUDA driver" in out
    assert "NUMBA_ENABLE_CUDASIM" not in out  # the simulator is for developers, not advice
    assert "BACKENDS: ['numpy', 'cpu']" in out


def test_unavailable_without_numba_cuda():
    out = _probe("sys.modules['numba.cuda'] = None  # as if numba-cuda were not installed\n"
                 "sys.modules['numba_cuda_mlir'] = None")
    assert "UNAVAILABLE: backend 'cuda' is not available" in out
    assert "pip install 'kdentropy[cuda]'" in out


# NumPy 2.5 as far as numba-cuda can tell: no row_stack, not even in __all__.
# (numba's own array module checks the NumPy version, which stays 2.4 here, so
# it is imported first, as under NumPy 2.5 it would skip row_stack itself.)
_WITHOUT_ROW_STACK = """
import numpy
import numba.np.arrayobj
del numpy.row_stack
numpy.__all__.remove("row_stack")
"""


def _run(code: str, simulator: bool, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.update(env_extra)
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.skipif(not hasattr(np, "row_stack"), reason="this NumPy has no row_stack")
def test_numpy_without_row_stack_simulated():
    code = _WITHOUT_ROW_STACK + """
import sys
import numpy as np
import kdentropy as kde
X = np.random.default_rng(1).random((2, 7, 5))
H, G = kde.soft_entropy_and_grad(X, backend="cuda")
Hr, Gr = kde.soft_entropy_and_grad(X, backend="numpy")
np.testing.assert_allclose(H, Hr, rtol=1e-12)
np.testing.assert_allclose(G, Gr, rtol=1e-9, atol=1e-14)
assert not hasattr(np, "row_stack")  # the compatibility step left NumPy as it was
assert "numba.cuda.np.arrayobj" in sys.modules
print("OK")
"""
    proc = _run(code, simulator=True)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


_TRIVIAL_KERNEL = """
def double(a):
    i = cuda.grid(1)
    if i < a.size:
        a[i] = 2.0 * a[i]
ptx, _ = cuda.compile_ptx(double, "void(float64[::1])", cc=(9, 0))
print("OK")
"""


@pytest.mark.skipif(not hasattr(np, "row_stack"), reason="this NumPy has no row_stack")
def test_numpy_without_row_stack_compiles():
    # The failure is at compilation, which the simulator never does: compile
    # to PTX (no GPU needed) with numba-cuda, with and without the backend.
    plain = _run(_WITHOUT_ROW_STACK + "from numba import cuda\n" + _TRIVIAL_KERNEL,
                 simulator=False)
    if plain.returncode == 0:
        pytest.skip("this numba-cuda compiles without numpy.row_stack: "
                    "backends/cuda/_numpy_compat.py can go")
    assert "has no attribute 'row_stack'" in plain.stderr
    ours = _run(_WITHOUT_ROW_STACK + "from kdentropy.backends.cuda._compiler import cuda\n"
                + _TRIVIAL_KERNEL, simulator=False, KDENTROPY_CUDA_COMPILER="numba-cuda")
    assert ours.returncode == 0 and "OK" in ours.stdout, ours.stderr[-3000:]


def test_compatibility_step_leaves_numpy_alone():
    from kdentropy.backends.cuda import _numpy_compat

    assert _numpy_compat.prepare_numba_cuda() is False  # row_stack present or already done
    assert hasattr(np, "row_stack") == ("row_stack" in np.__all__)


# ----------------------------------------------------------------------------- compilers

def test_one_module_imports_the_compiler():
    # Every module takes ``cuda`` (and the kernels' scalar types) from
    # _compiler; only _ptx reaches into a compiler's private modules, offline.
    src = Path(kc.__file__).parent
    for path in src.glob("*.py"):
        importers = [line.strip() for line in path.read_text().splitlines()
                     if line.lstrip().startswith(("from numba import", "import numba",
                                                  "from numba_cuda_mlir import cuda"))]
        assert path.name == "_compiler.py" or not importers, (path.name, importers)
    assert _compiler.COMPILER in _compiler.COMPILERS
    if kc.SIMULATOR:
        assert _compiler.COMPILER == "numba-cuda"  # the simulator is numba-cuda's


@pytest.mark.parametrize("compiler", _compiler.COMPILERS)
def test_every_kernel_compiles_to_ptx(compiler):
    if compiler == "numba-cuda-mlir":
        pytest.importorskip("numba_cuda_mlir", reason="numba-cuda-mlir is not installed")
    from kdentropy.backends.cuda import _ptx

    names = [name for name, _, _ in _ptx.kernel_signatures()]
    ptx = _ptx.compile_all_ptx(compiler, cc=(9, 0))
    if kc.SIMULATOR:
        # The simulator's tile kernels have other slice widths than the GPU's, which
        # the compiling subprocess (no simulator) lists: compare the rest by name.
        names = [n for n in names if not n.startswith("tiles.")]
        for ft in ("float32", "float64"):
            for kind in ("counts", "weighted"):
                assert any(n.startswith(f"tiles.{kind}[{ft},") for n in ptx), (kind, ft)
        assert sorted(n for n in ptx if not n.startswith("tiles.")) == sorted(names)
    else:
        assert sorted(ptx) == sorted(names)
    for name, text in ptx.items():
        assert ".target sm_90" in text and ".entry" in text, name
    bounded = ptx["fused.counts[float32,gram]"]
    assert ".maxntid" in bounded  # the launch bounds reached the PTX



def test_pair_sum_norms_match_numpy(rng):
    # More rows and elements than one grid of block partials covers, so every
    # block and every grid-stride step must be added.
    G, N, D = 2, 31, 7
    rowsum, sqn = rng.random((G, N)), rng.random((G, N))
    V = rng.standard_normal((G, N, D))
    stream = cuda.default_stream()
    got = _elementwise.pair_sum_norms(cuda.to_device(rowsum), cuda.to_device(sqn),
                                      cuda.to_device(V), stream)
    want = np.stack([np.sqrt((rowsum**2 * sqn).sum(axis=1)),
                     np.sqrt((V**2).sum(axis=(1, 2)))], axis=1)
    assert got.shape == (G, 2) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-14)
