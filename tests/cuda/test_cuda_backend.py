"""The CUDA backend against the NumPy reference (on the simulator without a GPU).

Run in its own process, with the simulator switched on before Numba is imported:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda

Without the simulator and without a usable GPU the module is skipped, so a
plain ``pytest tests`` stays green anywhere. (The skip lives here rather than in
a ``tests/cuda/conftest.py``: a second rootless ``conftest`` module would shadow
``tests/conftest.py`` for the ``from conftest import ...`` helpers in tests/.)

Sizes are tiny because the simulator runs every CUDA thread as a Python thread;
under it the kernels use 4 x 4 pair tiles and 4-wide D slices, so the shapes
below still span several row, column and D tiles and several column splits.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

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

import kdentropy as kde  # noqa: E402
from kdentropy.backends import cuda as kc  # noqa: E402
from kdentropy.backends import numpy as kn  # noqa: E402

pytestmark = pytest.mark.cuda

PARAMS = dict(temperature=10.0, sigma=0.5, threshold=0.5)


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


def patterns(rng: np.random.Generator, shape: tuple[int, ...], dtype=np.float64,
             n_proto: int = 3, noise: float = 0.12) -> np.ndarray:
    """Noisy copies of a few 0/1 prototypes: kernel values well inside (0, 1)."""
    *batch, N, D = shape
    protos = rng.integers(0, 2, size=(*batch, n_proto, D)).astype(np.float64)
    pick = rng.integers(0, n_proto, size=(*batch, N))
    X = np.take_along_axis(protos, pick[..., None], axis=-2)
    return (X + noise * rng.standard_normal(X.shape)).astype(dtype)


def reference(X3: np.ndarray, want_grad: bool = True, **params):
    p = {**PARAMS, **params}
    return kn.value_and_grad(X3, p["temperature"], p["sigma"], p["threshold"], want_grad)


def assert_matches(H, G, Hr, Gr, dtype, N: int) -> None:
    """The accuracy contract of DESIGN section 5."""
    if np.dtype(dtype) == np.float64:
        np.testing.assert_allclose(H, Hr, rtol=1e-10, atol=1e-13)
        gtol = 1e-10
    else:
        np.testing.assert_allclose(H, Hr, rtol=0, atol=1e-5 * math.log(N) + 1e-12)
        gtol = 1e-4
    if G is None:
        return
    scale = np.linalg.norm(Gr)
    if scale == 0:
        assert not np.any(G)
    else:
        assert np.linalg.norm(G.astype(np.float64) - Gr) <= gtol * scale


def host(a) -> np.ndarray:
    """A device array's values on the host; fails for anything that is not one."""
    assert not isinstance(a, np.ndarray), "expected a device array"
    return a.copy_to_host()


# ----------------------------------------------------------------------------- module level

def test_available():
    assert kc.unavailable_reason() is None
    assert "cuda" in kde.available_backends()


def test_simulator_tiles_are_small():
    # The tile-edge tests below rely on tiles much smaller than their N and D.
    if not kc.SIMULATOR:
        pytest.skip("real GPU: production tiles")
    for tiling in kc._TILINGS.values():
        assert tiling.tile <= 4 and tiling.kt <= 4 and tiling.dchunk <= 4


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [
    (1, 1, 5),    # N = 1: H = 0, zero gradient
    (1, 6, 1),    # D = 1
    (1, 9, 7),    # N, D not multiples of the tile or the D slice; 3 column splits
    (1, 16, 8),   # exact multiples
    (3, 7, 5),    # batched: G on the grid's z axis
    (1, 21, 13),  # several tiles in each split
])
def test_matches_numpy_backend(rng, dtype, shape):
    X = patterns(rng, shape, dtype)
    X0 = X.copy()
    H, G = kc.value_and_grad(X, want_grad=True, **PARAMS)
    Hr, Gr = reference(X)
    assert H.dtype == np.float64 and H.shape == (shape[0],)
    assert isinstance(G, np.ndarray) and G.dtype == X.dtype and G.shape == X.shape
    assert_matches(H, G, Hr, Gr, dtype, shape[1])
    np.testing.assert_array_equal(X, X0)
    # The value-only path (pass 1 alone) gives the same H, bit for bit.
    H2, G2 = kc.value_and_grad(X, want_grad=False, **PARAMS)
    assert G2 is None
    np.testing.assert_array_equal(H2, H)


@pytest.mark.parametrize("params", [
    dict(temperature=3.0, sigma=0.8, threshold=0.2),
    dict(temperature=25.0, sigma=0.25, threshold=0.7),
])
def test_other_parameters(rng, params):
    X = patterns(rng, (2, 10, 6))
    H, G = kc.value_and_grad(X, want_grad=True, **params)
    Hr, Gr = reference(X, **params)
    assert_matches(H, G, Hr, Gr, np.float64, 10)


def test_identical_rows_give_zero(rng):
    X = np.repeat(patterns(rng, (1, 1, 6)), 9, axis=1)
    H, G = kc.value_and_grad(X, want_grad=True, **PARAMS)
    np.testing.assert_allclose(H, 0.0, atol=1e-14)
    assert not np.any(G)


def test_float32_far_apart_rows_keep_precision(rng):
    # Few neighbours: C0 is tiny, and only log1p(C0) keeps H accurate in float32.
    X = (rng.random((1, 12, 9)) < 0.5).astype(np.float32)
    X[0, 1] = X[0, 0]
    X[0, 1, 0] += np.float32(0.3)
    H, G = kc.value_and_grad(X, want_grad=True, temperature=20.0, sigma=0.3, threshold=0.5)
    Hr, Gr = reference(X, temperature=20.0, sigma=0.3)
    assert_matches(H, G, Hr, Gr, np.float32, 12)


# Under the simulator d2 * (-1 / (2 sigma^2)) overflows in NumPy scalars, which warn.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tiny_sigma_counts_exact_duplicates(rng, dtype):
    # 1 / (2 sigma^2) overflows float32: duplicates must still count as K = 1,
    # distinct rows as K = 0, so H is the entropy of the multiplicities.
    X = np.repeat(patterns(rng, (1, 3, 5)), [2, 3, 1], axis=1).astype(dtype)
    H, _ = kc.value_and_grad(X, want_grad=False, temperature=10.0, sigma=1e-20, threshold=0.5)
    p = np.array([2, 3, 1]) / 6
    np.testing.assert_allclose(H, [-np.sum(p * np.log(p))], rtol=1e-6)


def test_gradient_matches_finite_differences(rng):
    X = patterns(rng, (1, 5, 3))
    _, G = kc.value_and_grad(X, want_grad=True, **PARAMS)
    eps = 1e-6
    fd = np.empty_like(X)
    for idx in np.ndindex(*X.shape):
        Xp, Xm = X.copy(), X.copy()
        Xp[idx] += eps
        Xm[idx] -= eps
        Hp, _ = kc.value_and_grad(Xp, want_grad=False, **PARAMS)
        Hm, _ = kc.value_and_grad(Xm, want_grad=False, **PARAMS)
        fd[idx] = (Hp[0] - Hm[0]) / (2 * eps)
    np.testing.assert_allclose(G, fd, rtol=1e-5, atol=1e-8 * np.abs(G).max())


def test_deterministic(rng):
    X = patterns(rng, (2, 11, 6), np.float32)
    H1, G1 = kc.value_and_grad(X, want_grad=True, **PARAMS)
    H2, G2 = kc.value_and_grad(X, want_grad=True, **PARAMS)
    np.testing.assert_array_equal(H1, H2)
    np.testing.assert_array_equal(G1, G2)


def test_populations_beyond_the_grid_limit(rng, monkeypatch):
    # More populations than grid z-blocks: each block strides over several.
    monkeypatch.setattr(kc, "_MAX_GRID_Z", 2)
    X = patterns(rng, (5, 6, 3))
    H, G = kc.value_and_grad(X, want_grad=True, **PARAMS)
    Hr, Gr = reference(X)
    assert_matches(H, G, Hr, Gr, np.float64, 6)


@pytest.mark.parametrize("n_tiles", [1, 2, 3, 7, 64, 1000])
@pytest.mark.parametrize("G", [1, 3, 70000])
def test_column_splits_cover_every_tile_once(n_tiles, G):
    P, per = kc._num_splits(n_tiles, G, N=4 * n_tiles, D=8)
    assert 1 <= P <= n_tiles
    # Split p holds tiles [p * per, min(n_tiles, (p + 1) * per)): none empty, none missing.
    assert (P - 1) * per < n_tiles <= P * per


# ----------------------------------------------------------------------------- public API

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_public_api_host_input(rng, dtype):
    X = patterns(rng, (2, 2, 7, 5), dtype)  # 4-D: two batch axes
    H, G = kde.soft_entropy_and_grad(X, backend="cuda", base=2, normalize=True)
    Hr, Gr = kde.soft_entropy_and_grad(X, backend="numpy", base=2, normalize=True)
    assert isinstance(G, np.ndarray) and G.shape == X.shape and G.dtype == X.dtype
    assert H.shape == (2, 2)
    assert_matches(H.ravel(), G, Hr.ravel(), Gr, dtype, 7)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_device_input_stays_on_device(rng, dtype):
    X = patterns(rng, (9, 6), dtype)
    d_X = cuda.to_device(X)

    def no_host_copy(*args, **kwargs):
        raise AssertionError("X was copied back to the host")

    d_X.copy_to_host_orig = d_X.copy_to_host
    d_X.copy_to_host = no_host_copy  # the device path must never read X on the host
    H, d_G = kde.soft_entropy_and_grad(d_X)  # backend "auto" picks cuda for device arrays
    Hr, Gr = kde.soft_entropy_and_grad(X, backend="numpy")
    assert isinstance(H, np.floating)
    assert hasattr(d_G, "copy_to_host") and not isinstance(d_G, np.ndarray)
    assert d_G.shape == X.shape and d_G.dtype == X.dtype
    assert_matches(np.array([H]), host(d_G), np.array([Hr]), Gr, dtype, 9)
    np.testing.assert_array_equal(d_X.copy_to_host_orig(), X)  # input untouched


def test_device_input_scaling_and_single_outputs(rng):
    X = patterns(rng, (10, 4))
    d_X = cuda.to_device(X)
    H = kde.soft_entropy(d_X, base=2, normalize=True)
    d_G = kde.soft_entropy_grad(d_X, base=2, normalize=True)
    Hr, Gr = kde.soft_entropy_and_grad(X, backend="numpy", base=2, normalize=True)
    assert isinstance(H, np.floating)
    assert_matches(np.array([H]), host(d_G), np.array([Hr]), Gr, np.float64, 10)


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
    Hr, Gr = kde.soft_entropy_and_grad(X, backend="numpy")
    assert d_G.shape == X.shape
    N = X.shape[-2]
    assert_matches(np.ravel(H), host(d_G), np.ravel(Hr), Gr, np.float64, N)


@pytest.mark.parametrize("dtype", [np.int32, np.bool_, np.float16])
def test_device_other_real_dtypes_compute_in_float64(rng, dtype):
    X = (patterns(rng, (8, 5)) > 0.5).astype(dtype)
    H, d_G = kde.soft_entropy_and_grad(cuda.to_device(X), temperature=4.0)
    Hr, Gr = kde.soft_entropy_and_grad(X.astype(np.float64), backend="numpy", temperature=4.0)
    assert d_G.dtype == np.float64
    assert_matches(np.array([H]), host(d_G), np.array([Hr]), Gr, np.float64, 8)


@pytest.mark.parametrize("shape", [(1, 4), (5, 0), (0, 5, 3)])
def test_device_edge_shapes(rng, shape):
    X = rng.random(shape)
    H, d_G = kde.soft_entropy_and_grad(cuda.to_device(X))
    assert np.all(np.asarray(H) == 0.0) and np.shape(H) == shape[:-2]
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


def test_device_bad_inputs(rng):
    with pytest.raises(TypeError, match="complex"):
        kde.soft_entropy(cuda.to_device(np.ones((3, 2), dtype=np.complex128)))
    with pytest.raises(ValueError, match="N >= 1"):
        kde.soft_entropy(cuda.to_device(np.ones((0, 2))))
    with pytest.raises(ValueError, match="2 dimensions"):
        kc.device_value_and_grad(cuda.to_device(np.ones(3)), 10.0, 0.5, 0.5, False)
    with pytest.raises(TypeError, match="device array"):
        kc.device_value_and_grad(np.ones((3, 2)), 10.0, 0.5, 0.5, False)


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
