"""Inputs of the fused passes: patterns padded, packed by column tiles, in reused workspaces.

Patterns are padded with zero rows and columns to whole tiles and whole
vectors: zero columns change no distance, and padded rows are masked out by
the epilogues (:mod:`._tiles`).
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import njit

from ._tiles import tile_columns

__all__ = ["KEEP_BYTES", "workspace", "pad_and_pack", "pack"]


@njit(cache=True)
def pack(Sc, sqn, Sp, Pk, sqp):
    """Zero-padded copies (into arrays of the padded shapes): ``Sp = Sc``, ``Pk[t, k, c] = Sp[t 2L + c, k]``, ``sqp = sqn``."""
    N, D = Sc.shape
    Np, Dp = Sp.shape
    width = Pk.shape[2]
    Sp[:] = 0.0
    sqp[:] = 0.0
    for i in range(N):
        sqp[i] = sqn[i]
        for k in range(D):
            Sp[i, k] = Sc[i, k]
    for t in range(Pk.shape[0]):
        for k in range(Dp):
            for c in range(width):
                Pk[t, k, c] = Sp[t * width + c, k]


# Workspaces up to this size are kept per thread between calls. Fresh
# buffers are fresh pages whenever the allocator returns large blocks to the
# OS (it did after every call once JAX was loaded in the process): 5,700 page
# faults and ~10 % of a 2048 x 1024 float32 call. Larger ones are not kept,
# so a huge call leaves nothing behind.
# At most about a dozen names per dtype are kept per thread.
KEEP_BYTES = 64 << 20
# Small blocks come from the heap without page faults; the lookup would cost
# more than the allocation.
_KEEP_MIN_BYTES = 1 << 20
_KEPT = threading.local()


def workspace(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array, reused across calls in this thread when small enough.

    Parameters
    ----------
    name : str
        What the array holds; one buffer is kept per name and dtype.
    shape : tuple of int
    dtype : dtype

    Returns
    -------
    ndarray
        A view of the kept buffer, or a fresh array outside the kept sizes.
    """
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    if not _KEEP_MIN_BYTES <= size * dtype.itemsize <= KEEP_BYTES:
        return np.empty(shape, dtype)
    buffers = _KEPT.__dict__.setdefault("buffers", {})
    key = (name, dtype.str)
    buf = buffers.get(key)
    if buf is None or buf.size < size:
        buf = buffers[key] = np.empty(size, dtype)
    return buf[:size].reshape(shape)


def pad_and_pack(Sc: np.ndarray, sqn: np.ndarray, name: str | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Sc`` zero-padded, packed by column tiles, and its padded norms.

    Parameters
    ----------
    Sc : ndarray, shape (N, D)
        Centred patterns in the working dtype.
    sqn : ndarray, shape (N,)
        Their squared norms.
    name : str or None
        Prefix of this thread's workspaces to use; ``None`` allocates.

    Returns
    -------
    Sp : ndarray, shape (Np, Dp)
        ``Sc`` padded with zeros; ``Np`` and ``Dp`` are the next multiples of
        the tile width 2L.
    Pk : ndarray, shape (Np / 2L, Dp, 2L)
        ``Pk[t, k, c] = Sp[t 2L + c, k]``: the columns of one tile side by side.
    sqp : ndarray, shape (Np,)
        ``sqn`` padded with zeros, in the working dtype.
    """
    N, D = Sc.shape
    width = tile_columns(Sc.dtype)
    Np = -(-max(N, 1) // width) * width
    Dp = -(-max(D, 1) // width) * width
    if name is None:
        Sp = np.empty((Np, Dp), Sc.dtype)
        Pk = np.empty((Np // width, Dp, width), Sc.dtype)
    else:
        Sp = workspace(name + "p", (Np, Dp), Sc.dtype)
        Pk = workspace(name + "k", (Np // width, Dp, width), Sc.dtype)
    sqp = np.empty(Np, dtype=Sc.dtype)
    pack(Sc, sqn, Sp, Pk, sqp)
    return Sp, Pk, sqp
