"""The cpu backend compiled for another SIMD width agrees with the reference.

Run as a script (by ``test_cpu_backend.py``) under ``NUMBA_CPU_NAME=haswell``:
32-byte vectors (8 float32 lanes, tiles of 16 columns) instead of the host's.
"""

import sys

import numpy as np

from kdentropy.backends import cpu, reference
from kdentropy.backends.cpu import _simd, _tiles

expected_bytes = int(sys.argv[1])
assert _simd.VECTOR_BYTES == expected_bytes, _simd.VECTOR_BYTES
assert _tiles.tile_columns(np.float32) == 2 * expected_bytes // 4
rng = np.random.default_rng(5)
coef = lambda C: 1.0 / (1.0 + C)  # noqa: E731
assert 900 * 900 * 13 > cpu._SERIAL_WORK  # the last case runs the parallel kernels
for N, D, dtype in [(45, 7, np.float32), (45, 7, np.float64), (900, 13, np.float32)]:
    S = rng.random((1, N, D)).astype(dtype)
    C0, V = cpu.soft_counts_and_grad(S, 0.7, coef)
    C0_ref, V_ref = reference.soft_counts_and_grad(S.astype(np.float64), 0.7, coef)
    rtol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(C0, C0_ref, rtol=rtol)
    assert np.linalg.norm(V - V_ref) <= rtol * np.linalg.norm(V_ref)
print("ok")
