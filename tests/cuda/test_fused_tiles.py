"""The Gram route's tile kernels (``backends/cuda/_tiles.py``) against the NumPy backend.

Run on the simulator (``NUMBA_ENABLE_CUDASIM=1``), where a tile is 4 rows and
a slice 4 cells, so the shapes below cover: N below, at and past a tile, odd
and even tile counts (the symmetric pass 1 treats offset n/2 specially), D = 1,
D not a multiple of the padding, several slices and output chunks, G > 1,
both pass-1 modes (symmetric and row sums only), pass 2 with and without
the K cache (:mod:`._tile_apply`) and sigma down to 1e-3.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np
import pytest

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"
cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_cuda_backend import (  # noqa: E402  (the shared helpers of the CUDA tests)
    _gpu_present,
    assert_close,
    patterns,
)

if not (SIMULATOR or _gpu_present()):
    pytest.skip("no CUDA GPU; run with NUMBA_ENABLE_CUDASIM=1", allow_module_level=True)

import kdentropy as kde  # noqa: E402
from kdentropy.backends import cuda as kc  # noqa: E402
from kdentropy.backends.cuda import _device, _fused, _tile_apply, _tiles  # noqa: E402

pytestmark = pytest.mark.cuda
PARAMS = dict(temperature=10.0, sigma=0.5, threshold=0.5)
PLAN = kc.plan


@pytest.fixture(autouse=True)
def _fused_gram_route(monkeypatch):
    """Every call takes the fused route; the test checks the Gram form was chosen."""
    monkeypatch.setattr(kc, "plan", functools.partial(PLAN, route="fused"))
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # the simulator polls its threads at barriers
    yield
    sys.setswitchinterval(old)


def _spy(monkeypatch) -> dict[str, int]:
    """Count the launches of the tile kernels (so a test cannot pass on the old ones)."""
    calls = {"counts": 0, "weighted": 0, "kept": 0}
    for module, name, key in ((_tiles, "counts_kernel", "counts"),
                              (_tiles, "weighted_kernel", "weighted"),
                              (_tile_apply, "kept_weighted_kernel", "kept")):
        real = getattr(module, name)

        def wrapped(dtype, width, real=real, key=key):
            calls[key] += 1
            return real(dtype, width)

        monkeypatch.setattr(module, name, wrapped)
    return calls


def _memory(monkeypatch, kept: bool) -> None:
    """Room for the fused route's K cache, or none (what ``plan`` is told is available).

    Patched where ``plan`` asks, so that it holds on a real GPU too.
    """
    monkeypatch.setattr(_device, "available_bytes", lambda: 2**30 if kept else 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [
    (1, 3, 5),    # N below one tile
    (1, 4, 4),    # exactly one tile and one slice
    (1, 9, 7),    # 3 tiles (odd), partial last tile; D = 7: two slices and chunks
    (1, 16, 1),   # 4 tiles (even: offset n/2), D = 1
    (2, 13, 9),   # G > 1, partial tiles, three slices
])
@pytest.mark.parametrize("kept", [False, True])
def test_tiles_match_numpy_backend(rng, monkeypatch, dtype, shape, kept):
    _memory(monkeypatch, kept)
    calls = _spy(monkeypatch)
    X = patterns(rng, shape, dtype)
    H, G = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    assert calls == {"counts": 1, "weighted": int(not kept), "kept": int(kept)}
    assert_close(H, G, X, PARAMS)
    H2, G2 = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    np.testing.assert_array_equal(H2, H)  # fixed-order sums: bit-identical repeats
    np.testing.assert_array_equal(G2, G)


@pytest.mark.parametrize("sigma", [0.05, 1e-3])
@pytest.mark.parametrize("kept", [False, True])
def test_tiles_small_sigma(rng, monkeypatch, sigma, kept):
    _memory(monkeypatch, kept)
    # Near-duplicate rows keep the kernel non-trivial at small sigma; a low
    # temperature keeps |Sc|^2 small enough for the float64 Gram form.
    base = patterns(rng, (1, 4, 6), np.float64)
    X = np.repeat(base, 3, axis=1) + 1e-4 * rng.standard_normal((1, 12, 6))
    params = dict(PARAMS, sigma=sigma, temperature=0.5)
    S = 1 / (1 + np.exp(-params["temperature"] * (X[0] - params["threshold"])))
    Sc = S - S.mean(axis=0)
    how = PLAN(np.float64, X.shape, float((Sc * Sc).sum(axis=1).max()), sigma, route="fused")
    assert how.gram
    calls = _spy(monkeypatch)
    H, G = kde.soft_entropy_and_grad(X, backend="cuda", **params)
    assert calls == {"counts": 1, "weighted": int(not kept), "kept": int(kept)}
    assert_close(H, G, X, params)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kept_and_recomputed_pass_2_agree(rng, monkeypatch, dtype):
    # Same pairs, same weights; only the distances' rounding differs (pass 2
    # recomputes them with its slices in another order).
    X = patterns(rng, (2, 11, 10), dtype)
    _memory(monkeypatch, False)
    H1, G1 = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    _memory(monkeypatch, True)
    H2, G2 = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(H2, H1, rtol=0, atol=0)  # pass 1 is the same kernel
    np.testing.assert_allclose(G2, G1, rtol=0, atol=64 * eps * np.abs(G1).max())


def test_plan_keeps_K_on_the_fused_route_only_when_it_fits():
    shape, item = (2, 13, 9), 8
    need = _fused.kept_bytes(2, 13, 9, np.float64)
    assert need == _tiles.kept_elements(2, 13, np.float64) * item > 0
    assert PLAN(np.float64, shape, 1.0, 0.5, route="fused", available_bytes=2 * need).kcache
    assert not PLAN(np.float64, shape, 1.0, 0.5, route="fused",
                    available_bytes=2 * need - 1).kcache
    # Direct differences keep nothing.
    assert not PLAN(np.float64, shape, 1.0, 1e-20, route="fused", available_bytes=2**40).kcache


def test_row_sums_only_mode_keeps_no_K(monkeypatch):
    monkeypatch.setattr(_fused, "SPLIT_BUFFER_BYTES", 14 * 8 * 2)
    assert _fused.kept_bytes(1, 14, 6, np.float64) == 0
    assert not PLAN(np.float64, (1, 14, 6), 1.0, 0.5, route="fused", available_bytes=2**40).kcache


def test_row_sums_only_mode_gives_the_same_counts(rng, monkeypatch):
    # No room for the column-sum slices: every offset, row sums only.
    X = patterns(rng, (1, 14, 6), np.float64)
    H1, G1 = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    assert _fused.counts_geometry(14, 6, 1, np.float64)[4]
    monkeypatch.setattr(_fused, "SPLIT_BUFFER_BYTES", 14 * 8 * 2)
    assert not _fused.counts_geometry(14, 6, 1, np.float64)[4]
    H2, G2 = kde.soft_entropy_and_grad(X, backend="cuda", **PARAMS)
    np.testing.assert_allclose(H2, H1, rtol=1e-13)
    np.testing.assert_allclose(G2, G1, rtol=1e-12, atol=1e-15 * np.abs(G1).max())
    assert_close(H2, G2, X, PARAMS)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 64, 1024])
def test_symmetric_offsets_cover_every_pair_once(n):
    # Offsets 0..n/2 from every tile, with offset n/2 (even n) taken by I < n/2:
    # each unordered tile pair exactly once.
    seen = {}
    for I in range(n):
        for s in range(n // 2 + 1):
            if 2 * s == n and I >= n // 2:
                continue
            key = frozenset((I, (I + s) % n))
            seen[key] = seen.get(key, 0) + 1
    assert len(seen) == n * (n + 1) // 2 and set(seen.values()) == {1}


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 64, 1024])
def test_pass_2_finds_every_tile_pass_1_kept(n):
    # The lookup of _tile_apply (direct when pass 1 visited (I, J - I mod n),
    # else (J, I - J mod n) transposed) must land on a visited offset, and
    # the two tiles of an unordered pair on the same kept tile.
    def visited(I, s):
        return 0 <= s <= n // 2 and not (2 * s == n and I >= n // 2)

    for I in range(n):
        for J in range(n):
            s = (J - I) % n
            direct = 2 * s < n or (2 * s == n and I < n // 2)
            tile = (I, s) if direct else (J, (n - s) % n)
            assert visited(*tile), (I, J)
            s_back = (I - J) % n
            back = 2 * s_back < n or (2 * s_back == n and J < n // 2)
            assert tile == ((J, s_back) if back else (I, (n - s_back) % n))


@pytest.mark.parametrize("D", [1, 3, 4, 5, 8, 9, 17, 33, 64, 65, 100, 128])
def test_slice_width(D):
    for dt in (np.float32, np.float64):
        sh = _tiles.SHAPES[np.dtype(dt)]
        w = _tiles.slice_width(D, dt)
        assert w & (w - 1) == 0 and w % _tiles.PAD == 0 and w >= sh.cells
        assert w <= sh.dchunk
        dp = -(-D // _tiles.PAD) * _tiles.PAD
        assert w >= dp or w == sh.dchunk  # one slice whenever D fits one


def test_pitch_keeps_vector_rows_aligned_and_conflict_free():
    for width in (4, 8, 16, 32, 64):
        for item in (4, 8):
            p = _tiles._pitch(width, item)
            per16 = 16 // item
            assert p >= width and p % per16 == 0 and (p // per16) % 2 == 1
