"""The local kernel blocks: which backend computes them and how shards are cut into tiles.

The distributed sweep pairs the own rows with one shard at a time, so it
needs a backend with block primitives (``BLOCK_PRIMITIVES``:
``block_soft_counts`` and ``block_weighted_grad``). One without them (``cuda``
works on one whole batch per launch) is replaced by the host ``cpu`` backend.
"""

from __future__ import annotations

import numpy as np

from .. import backends
from ..backends import Backend

__all__ = ["block_backend", "tile_rows", "add_counts", "add_weighted_grad"]

# What computes the blocks when the requested backend cannot.
_FALLBACK = "cpu"


def block_backend(backend: str | None) -> Backend:
    """The backend module that computes the local kernel blocks for ``backend=``.

    Parameters
    ----------
    backend : str or None
        As for the single-process functions; ``"auto"`` is ``cpu``.

    Returns
    -------
    Backend
        The requested backend if it runs here and has block primitives,
        ``cpu`` otherwise: the sweep would not use it either way (``cuda``
        has none, so it means ``cpu`` with or without a GPU).

    Raises
    ------
    ValueError
        If the name is unknown.
    """
    name = backends.resolve(backend, on_device=False)
    try:
        module = backends.load(name)
    except backends.BackendUnavailableError:
        return backends.load(_FALLBACK)
    return module if module.BLOCK_PRIMITIVES else backends.load(_FALLBACK)


def tile_rows(module: Backend) -> int | None:
    """Rows per tile for this backend's block primitives (``None``: whole shards)."""
    return module.BLOCK_TILE_ROWS


def _tiles(n: int, tile: int | None) -> list[slice]:
    if tile is None or n <= tile:
        return [slice(0, n)]
    return [slice(a, min(a + tile, n)) for a in range(0, n, tile)]


def add_counts(module: Backend, Sa: np.ndarray, Sb: np.ndarray, sigma: float, same: bool,
               tile: int | None, out: np.ndarray) -> None:
    """``out += sum_j K(Sa_i, Sb_j)``: the soft-count contributions of the rows Sb to the rows Sa.

    With ``same`` the two blocks hold the same rows and ``j = i`` is skipped.
    """
    for ta in _tiles(len(Sa), tile):
        for tb in _tiles(len(Sb), tile):
            # With same=True, Sa is Sb and tiles with equal bounds are one block.
            out[ta] += module.block_soft_counts(Sa[ta], Sb[tb], sigma, same and ta == tb)


def add_weighted_grad(module: Backend, Sa: np.ndarray, ga: np.ndarray, Sb: np.ndarray,
                      gb: np.ndarray, sigma: float, same: bool, tile: int | None,
                      out: np.ndarray) -> None:
    """``out += sum_j K_ij (g_i + g_j) (Sa_i - Sb_j)`` over the rows Sb (g: row coefficients)."""
    for ta in _tiles(len(Sa), tile):
        for tb in _tiles(len(Sb), tile):
            out[ta] += module.block_weighted_grad(Sa[ta], ga[ta], Sb[tb], gb[tb], sigma,
                                                  same and ta == tb)
