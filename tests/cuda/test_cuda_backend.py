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
panels, whose GEMM is ``numpy.matmul`` here) are forced in turn through the
backend's private ``_FORCE_ROUTE`` hook.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"
cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")


def _gpu_present() -> bool:
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver installation counts as no GPU
        return False


if not (SIMULATOR or _gpu_present()):
    pytest.skip("no CUDA GPU; run `NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda` "
                "to test the kernels on the simulator", allow_module_level=True)

import kdentropy as kde
from kdentropy.backends._conditioning import GRAM_LIMITS  # noqa: E402
import helpers  # noqa: E402  (tests/helpers.py: the shared tolerance rules)
from kdentropy.backends import cuda as kc  # noqa: E402
from kdentropy.backends.cuda import _fused, _panels  # noqa: E402

pytestmark = pytest.mark.cuda

PARAMS = dict(temperature=10.0, sigma=0.5, threshold=0.5)
ROUTES = ["fused", "panel"]


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


@pytest.fixture(params=ROUTES)
def route(request, monkeypatch) -> str:
    """Run the test once on each route."""
    monkeypatch.setattr(kc, "_FORCE_ROUTE", request.param)
    return request.param


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
    assert _panels.WORKSPACE_CAP <= 1024


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
    how = kc.plan(np.float32, 6, float(np.max(np.sum(Sc * Sc, axis=-1))), sigma)
    assert how.route == route
    H, G = kde.soft_entropy_and_grad(X, backend="cuda", **params)
    Hr, Gr = direct_oracle(X, s_dtype=np.float64, **params)
    assert 0.05 < np.min(Hr) and np.max(Hr) < math.log(11) - 0.05  # neighbours in play
    assert_close(H, G, X, params, reference=lambda A, s: direct_oracle(A, s_dtype=s, **params))


@pytest.mark.parametrize("sigma", [1e-3, 1e-2])
def test_float64_small_sigma(rng, route, sigma):
    X = tight_patterns(rng, (1, 12, 5), sigma).astype(np.float64)
    params = dict(PARAMS, sigma=sigma)
    H, G = kde.soft_entropy_and_grad(X, backend="cuda", **params)
    assert_close(H, G, X, params, reference=lambda A, s: direct_oracle(A, s_dtype=s, **params))


def test_plan_follows_the_conditioning():
    eps32, eps64 = np.finfo(np.float32).eps, np.finfo(np.float64).eps
    L32 = GRAM_LIMITS[np.dtype(np.float32)]
    L64 = GRAM_LIMITS[np.dtype(np.float64)]
    M = 4.0
    well = math.sqrt(eps32 * M / (0.5 * L32))  # kappa32 = L32 / 2
    ill = math.sqrt(eps32 * M / (2 * L32))  # kappa32 = 2 L32, kappa64 far below L32
    hopeless32 = math.sqrt(eps64 * M / (2 * L32))  # even a float64 Gram misses the float32 bar
    hopeless64 = math.sqrt(eps64 * M / (2 * L64))  # a float64 Gram misses the float64 bar
    big, small = kc.PANEL_MIN_D, kc.PANEL_MIN_D - 1
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    assert kc.plan(f32, big, M, well, gemm_ok=True) == ("panel", f32, True)
    assert kc.plan(f32, big, M, ill, gemm_ok=True) == ("panel", f64, True)
    assert kc.plan(f32, big, M, hopeless32, gemm_ok=True) == ("fused", f32, False)
    assert kc.plan(f32, big, M, well, gemm_ok=False) == ("fused", f32, True)
    assert kc.plan(f32, big, M, ill, gemm_ok=False) == ("fused", f32, False)
    assert kc.plan(f32, small, M, well, gemm_ok=True) == ("fused", f32, True)
    assert kc.plan(f64, big, M, ill, gemm_ok=True) == ("panel", f64, True)
    assert kc.plan(f64, big, M, hopeless64, gemm_ok=True) == ("fused", f64, False)
    assert kc.plan(f64, small, M, hopeless64, gemm_ok=True) == ("fused", f64, False)


def test_tf32_rules_out_float32_panels(monkeypatch):
    monkeypatch.setattr(_panels, "float32_gemm_is_fp32", lambda: False)
    assert kc.plan(np.float32, 4096, 1.0, 1.0, gemm_ok=True) == ("panel", np.float64, True)


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
    monkeypatch.setattr(kc, "_FORCE_ROUTE", "fused")
    monkeypatch.setattr(_fused, "MAX_GRID_Y_Z", 2)
    X = patterns(rng, (5, 6, 3))
    H, G = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    assert_close(H, G, X, PARAMS)


def test_split_buffer_cap_gives_one_split(rng, monkeypatch):
    # With no room for partials the column sweep is one split: same numbers.
    monkeypatch.setattr(kc, "_FORCE_ROUTE", "fused")
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
    # Small budget: many panels, pass 2 recomputes the Gram products; large
    # budget: one panel per population, pass 2 reuses pass 1's kernel values.
    monkeypatch.setattr(kc, "_FORCE_ROUTE", "panel")
    X = patterns(rng, (2, 12, 5), dtype)
    N = X.shape[1]
    assert not _panels.PanelPlan(2, N, 5, dtype).cached
    assert _panels.PanelPlan(2, N, 5, dtype).rows < N
    H1, G1 = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    monkeypatch.setattr(_panels, "WORKSPACE_CAP", 2 * N * N * 8)
    assert _panels.PanelPlan(2, N, 5, dtype).cached
    H2, G2 = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    np.testing.assert_allclose(H2, H1, rtol=1e-12)
    np.testing.assert_allclose(G2, G1, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-6 * np.abs(G1).max())
    assert_close(H2, G2, X, PARAMS)


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
    X = patterns(rng, (2, 300, 160), np.float32)  # D >= PANEL_MIN_D: the panel route
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
    assert "NUMBA_ENABLE_CUDASIM=1" in out
    assert "BACKENDS: ['numpy', 'cpu']" in out


def test_unavailable_without_numba_cuda():
    out = _probe("sys.modules['numba.cuda'] = None  # as if numba-cuda were not installed")
    assert "UNAVAILABLE: backend 'cuda' is not available" in out
    assert "pip install 'kdentropy[cuda]'" in out


def test_numpy_without_row_stack_is_named(monkeypatch):
    # NumPy 2.5 removed np.row_stack, which numba-cuda 0.30 overloads when it compiles.
    if not hasattr(np, "row_stack"):
        pytest.skip("this NumPy has no row_stack already")
    monkeypatch.delattr(np, "row_stack")
    reason = kc._numpy_incompatibility()
    assert reason is not None and "row_stack" in reason and "numpy<2.5" in reason
    monkeypatch.setattr(kc, "SIMULATOR", False)
    assert kc.unavailable_reason() == reason
    monkeypatch.undo()
    assert kc._numpy_incompatibility() is None
