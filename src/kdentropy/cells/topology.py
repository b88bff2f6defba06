"""Where the cells sit: each cell's neighbourhood, its position features and its edges.

States are always stored flat, ``(N, D, C)`` for N runs of D cells with C
channels each (channel 0 is the visible, scored one); a :class:`Topology` is
the only code that knows how those D cells are arranged. It is described by
three tables, computed once:

``neighbours``
    ``(D, K)`` integers: feature block k of cell i reads cell
    ``neighbours[i, k]``, or 0 where that entry is -1 (outside a bounded
    edge: zero padding);
``position_features(kind)``
    ``(D, P)`` constant inputs per cell (may be left out);
``edges()``
    ``(E, 2)`` pairs of nearest neighbours, for counting the 0/1 boundaries of
    a pattern.

From them the base class builds everything the cell system needs,

``features(x)``
    ``(N, D, K C + P)``: all C channels of each neighbour in turn, then the
    position features;
``features_adjoint(df)``
    the transpose of the neighbourhood part (``dL/dx`` from ``dL/dfeatures``),
    for back-propagation through time;
``boundaries(B)``
    the number of differing nearest-neighbour pairs of each binary pattern.

:class:`Line` and :class:`Ring` are the 1-D arrangements, :class:`Grid` (an
H x W grid with zero padding) and :class:`Torus` (its wrap-around version)
the 2-D ones, with the (2 radius + 1)^2 neighbourhood (3 x 3 for radius 1).
A new arrangement is one subclass with those three tables, added to
:data:`TOPOLOGIES`; the cell system, its Numba kernels, the loss and the
trainer do not change.

Examples
--------
>>> import numpy as np
>>> line = Line(4, radius=1, position="none")
>>> line.features(np.array([[0.1, 0.2, 0.3, 0.4]])[..., None])[0].tolist()
[[0.0, 0.1, 0.2], [0.1, 0.2, 0.3], [0.2, 0.3, 0.4], [0.3, 0.4, 0.0]]
>>> Grid((2, 3)).neighbours[0].tolist()     # the 3 x 3 block around the corner cell
[-1, -1, -1, -1, 0, 1, -1, 3, 4]
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from .. import _validation

__all__ = ["Topology", "Line", "Ring", "Grid", "Torus", "TOPOLOGIES", "POSITIONS",
           "make_topology"]

#: The position-feature kinds every topology offers ("auto" picks the topology's default).
POSITIONS = ("auto", "linear", "sincos", "none")


def _linear(n: int) -> np.ndarray:
    """``i / (n - 1)`` for ``i < n`` (1/2 for a single cell)."""
    i = np.arange(n, dtype=np.float64)
    return i / (n - 1) if n > 1 else np.full(n, 0.5)


def _angle(n: int) -> np.ndarray:
    return 2.0 * np.pi * np.arange(n, dtype=np.float64) / n


class Topology(abc.ABC):
    """How D cells are arranged: neighbourhoods, position features and pattern boundaries.

    Parameters
    ----------
    shape : int or sequence of int
        Cells along each of the :attr:`NDIM` axes (each >= 1); an integer is
        a 1-D length.
    radius : int, optional
        How far a cell sees along each axis (>= 0). Default 1.
    position : str, optional
        Kind of position features, one of :attr:`POSITIONS`; ``"auto"``
        (default) is the topology's :attr:`DEFAULT_POSITION`, ``"none"``
        leaves them out.
    channels : int, optional
        State channels per cell C (>= 1). Default 1.

    Attributes
    ----------
    shape : tuple of int
    n_cells : int
        D, the product of ``shape``.
    position : str
        The resolved kind (never ``"auto"``).
    neighbours : ndarray of int64, shape (D, n_neighbours)
        The neighbour table (-1: outside, read as 0).
    n_neighbours : int
        Neighbours per cell K (the cell itself included).
    n_features : int
        All features per cell: ``K C`` neighbourhood values plus position.
    """

    NAME: ClassVar[str]
    NDIM: ClassVar[int]
    POSITIONS: ClassVar[tuple[str, ...]] = POSITIONS
    DEFAULT_POSITION: ClassVar[str]

    def __init__(self, shape: int | Sequence[int], radius: int = 1, position: str = "auto",
                 channels: int = 1) -> None:
        self.shape = self._check_shape(shape)
        self.n_cells = math.prod(self.shape)
        self.radius = _validation.integer(radius, "radius", 0)
        self.channels = _validation.integer(channels, "channels", 1)
        position = _validation.choice(position, "position", self.POSITIONS)
        self.position = self.DEFAULT_POSITION if position == "auto" else position
        table = np.asarray(self.neighbour_table(), dtype=np.int64)
        self._check_table(table)
        self.neighbours = table
        self.neighbours.flags.writeable = False
        self.n_neighbours = table.shape[1]
        # Index D is an extra all-zero cell: gathering through it is the zero padding.
        self._padded = np.where(table < 0, self.n_cells, table)
        # Constant per system: computed once, copied into every feature array.
        self._positions = None if self.position == "none" else np.ascontiguousarray(
            self.position_features(self.position), dtype=np.float64)
        self.n_position = 0 if self._positions is None else self._positions.shape[1]
        self.n_features = self.n_neighbours * self.channels + self.n_position
        self._edges = np.asarray(self.edges(), dtype=np.int64).reshape(-1, 2)

    def _check_shape(self, shape: int | Sequence[int]) -> tuple[int, ...]:
        if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
            shape = (shape,)
        try:
            shape = tuple(shape)
        except TypeError:
            raise TypeError(f"shape must be an integer or a sequence of {self.NDIM} integers; "
                            f"got {type(shape).__name__}") from None
        if len(shape) != self.NDIM:
            raise ValueError(f"topology {self.NAME!r} needs {self.NDIM} size(s), e.g. "
                             f"n_cells={(12,) * self.NDIM if self.NDIM > 1 else 32}; "
                             f"got {shape}")
        # A 1-D size is the cell system's n_cells; 2-D sizes are named by axis.
        names = ["n_cells"] if self.NDIM == 1 else [f"shape[{i}]" for i in range(self.NDIM)]
        shape = tuple(_validation.size(s, n, 1) for n, s in zip(names, shape))
        _validation.element_budget(list(zip(names, shape)), "the cells")
        return shape

    def _check_table(self, table: np.ndarray) -> None:
        D = self.n_cells
        if table.ndim != 2 or table.shape[0] != D or table.shape[1] < 1:
            raise ValueError(f"{type(self).__name__}.neighbour_table() must have shape "
                             f"({D}, K >= 1); got {table.shape}")
        if ((table < -1) | (table >= D)).any():
            raise ValueError(f"{type(self).__name__}.neighbour_table() entries must be "
                             f"in -1 .. {D - 1}")
        # The adjoint adds one column at a time with fancy indexing, which is
        # only a sum when no cell appears twice in a column.
        for k in range(table.shape[1]):
            col = table[:, k]
            col = col[col >= 0]
            if np.unique(col).size != col.size:
                raise ValueError(f"{type(self).__name__}.neighbour_table() column {k} "
                                 f"names a cell twice")

    def __repr__(self) -> str:
        size = self.shape[0] if self.NDIM == 1 else self.shape
        extra = "" if self.channels == 1 else f", channels={self.channels}"
        return (f"{type(self).__name__}({size}, radius={self.radius}, "
                f"position={self.position!r}{extra})")

    @property
    def positions(self) -> np.ndarray:
        """The position features of the cells, ``(D, n_position)`` (``(D, 0)`` when none)."""
        if self._positions is None:
            return np.zeros((self.n_cells, 0))
        return self._positions

    def features(self, x: np.ndarray) -> np.ndarray:
        """Update-rule inputs of every cell: all channels of each neighbour, then position.

        Parameters
        ----------
        x : ndarray of float64, shape (N, D, C)
            States.

        Returns
        -------
        ndarray of float64, shape (N, D, n_features)
            Feature ``k C + c`` is channel c of neighbour k.
        """
        N, D, C = x.shape
        f = np.empty((N, D, self.n_features))
        xp = np.zeros((N, D + 1, C))
        xp[:, :D] = x
        # One fancy-indexing pass for the whole neighbourhood: (N, D, K, C).
        f[:, :, :self.n_neighbours * C] = xp[:, self._padded, :].reshape(N, D, -1)
        if self._positions is not None:
            f[:, :, self.n_neighbours * C:] = self._positions
        return f

    def features_adjoint(self, df: np.ndarray) -> np.ndarray:
        """``dL/dx`` from ``dL/dfeatures``: the transpose of the neighbourhood gather.

        Parameters
        ----------
        df : ndarray of float64, shape (N, D, n_features)
            Only the first ``n_neighbours * channels`` features depend on the states.

        Returns
        -------
        ndarray of float64, shape (N, D, C)
        """
        N, D = df.shape[:2]
        C, K = self.channels, self.n_neighbours
        dfn = df[:, :, :K * C].reshape(N, D, K, C)
        dxp = np.zeros((N, D + 1, C))
        for k in range(K):  # a loop over neighbours, never over cells
            # Entries of a column are distinct cells (checked at construction),
            # except the padding cell D, whose sum is discarded.
            dxp[:, self._padded[:, k], :] += dfn[:, :, k, :]
        return dxp[:, :D]

    def boundaries(self, B: np.ndarray) -> np.ndarray:
        """Number of nearest-neighbour pairs whose cells differ, per binary pattern.

        Parameters
        ----------
        B : ndarray of bool, shape (N, D)

        Returns
        -------
        ndarray of int, shape (N,)
        """
        e = self._edges
        if e.shape[0] == 0:
            return np.zeros(B.shape[0], dtype=np.int64)
        return (B[:, e[:, 0]] != B[:, e[:, 1]]).sum(axis=1)

    def grid_view(self, X: np.ndarray) -> np.ndarray:
        """Flat cell values ``(..., D)`` shown in the topology's shape ``(..., *shape)``."""
        return np.asarray(X).reshape(np.shape(X)[:-1] + self.shape)

    @abc.abstractmethod
    def neighbour_table(self) -> np.ndarray:
        """``(D, K)`` neighbour indices, -1 for "outside" (read as state 0)."""

    @abc.abstractmethod
    def position_features(self, kind: str) -> np.ndarray:
        """Position features ``(D, P)`` of the given kind (not ``"auto"`` or ``"none"``)."""

    @abc.abstractmethod
    def edges(self) -> np.ndarray:
        """``(E, 2)`` pairs of nearest-neighbour cells, each pair once."""


class Line(Topology):
    """Cells on a line; beyond the ends the state is 0 (zero padding).

    The neighbourhood is offsets ``-radius .. radius``; the default position
    features are ``"linear"``, ``(p, 1 - p)`` with ``p = i / (D - 1)``.
    """

    NAME = "line"
    NDIM = 1
    DEFAULT_POSITION = "linear"
    WRAP: ClassVar[bool] = False

    def neighbour_table(self) -> np.ndarray:
        """Cell ``i + o`` for offsets ``o = -radius .. radius`` (-1 beyond the ends).

        Returns
        -------
        ndarray of int64, shape (D, 2 radius + 1)
        """
        D = self.n_cells
        j = np.arange(D)[:, None] + np.arange(-self.radius, self.radius + 1)[None, :]
        if self.WRAP:
            return j % D
        return np.where((j >= 0) & (j < D), j, -1)

    def position_features(self, kind: str) -> np.ndarray:
        """``(p, 1 - p)`` with ``p = i / (D - 1)`` (``"linear"``) or ``(sin, cos)(2 pi i / D)``.

        Parameters
        ----------
        kind : {"linear", "sincos"}

        Returns
        -------
        ndarray of float64, shape (D, 2)
        """
        D = self.n_cells
        if kind == "linear":
            p = _linear(D)
            return np.stack([p, 1.0 - p], axis=-1)
        if kind == "sincos":
            a = _angle(D)
            return np.stack([np.sin(a), np.cos(a)], axis=-1)
        raise ValueError(f"unknown position {kind!r} for a {self.NAME}")

    def edges(self) -> np.ndarray:
        """Consecutive cells ``(i, i + 1)``, and ``(D - 1, 0)`` on a ring.

        Returns
        -------
        ndarray of int64, shape (E, 2)
        """
        D = self.n_cells
        i = np.arange(D - 1)
        pairs = [np.stack([i, i + 1], axis=1)]
        if self.WRAP and D > 1:
            pairs.append(np.array([[D - 1, 0]]))
        return np.concatenate(pairs)


class Ring(Line):
    """Cells on a ring: the last and the first cell are neighbours.

    The default position features are ``"sincos"``, which are periodic too.
    """

    NAME = "ring"
    DEFAULT_POSITION = "sincos"
    WRAP = True


class Grid(Topology):
    """Cells on an H x W grid (row-major), zero padding beyond the edges.

    Each cell sees the ``(2 radius + 1)^2`` block around it (3 x 3 for radius
    1), row offset outer and column offset inner. The default position
    features are ``"linear"``: ``(p, 1 - p, q, 1 - q)`` with p and q the
    row and column scaled to [0, 1].
    """

    NAME = "grid"
    NDIM = 2
    DEFAULT_POSITION = "linear"
    WRAP: ClassVar[bool] = False

    def _offsets(self) -> tuple[np.ndarray, np.ndarray]:
        o = np.arange(-self.radius, self.radius + 1)
        dr, dc = np.meshgrid(o, o, indexing="ij")
        return dr.ravel(), dc.ravel()

    def neighbour_table(self) -> np.ndarray:
        """Cell ``(r + dr, c + dc)`` for the block of offsets (-1 beyond a bounded edge).

        Returns
        -------
        ndarray of int64, shape (H W, (2 radius + 1)^2)
        """
        H, W = self.shape
        r, c = np.divmod(np.arange(H * W), W)
        dr, dc = self._offsets()
        rr, cc = r[:, None] + dr[None, :], c[:, None] + dc[None, :]
        if self.WRAP:
            return (rr % H) * W + cc % W
        inside = (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
        return np.where(inside, rr * W + cc, -1)

    def position_features(self, kind: str) -> np.ndarray:
        """Row and column features: ``(p, 1 - p, q, 1 - q)`` or ``(sin, cos)`` of each angle.

        Parameters
        ----------
        kind : {"linear", "sincos"}

        Returns
        -------
        ndarray of float64, shape (H W, 4)
        """
        H, W = self.shape
        if kind == "linear":
            p, q = np.meshgrid(_linear(H), _linear(W), indexing="ij")
            cols = [p, 1.0 - p, q, 1.0 - q]
        elif kind == "sincos":
            a, b = np.meshgrid(_angle(H), _angle(W), indexing="ij")
            cols = [np.sin(a), np.cos(a), np.sin(b), np.cos(b)]
        else:
            raise ValueError(f"unknown position {kind!r} for a {self.NAME}")
        return np.stack([v.ravel() for v in cols], axis=-1)

    def edges(self) -> np.ndarray:
        """Horizontally and vertically adjacent cells (and the wrap-around pairs on a torus).

        Returns
        -------
        ndarray of int64, shape (E, 2)
        """
        H, W = self.shape
        idx = np.arange(H * W).reshape(H, W)
        pairs = [np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], axis=1),
                 np.stack([idx[:-1, :].ravel(), idx[1:, :].ravel()], axis=1)]
        if self.WRAP:
            if W > 1:
                pairs.append(np.stack([idx[:, -1], idx[:, 0]], axis=1))
            if H > 1:
                pairs.append(np.stack([idx[-1, :], idx[0, :]], axis=1))
        return np.concatenate(pairs)


class Torus(Grid):
    """An H x W grid whose opposite edges are neighbours.

    The default position features are ``"sincos"``, which are periodic too.
    """

    NAME = "torus"
    DEFAULT_POSITION = "sincos"
    WRAP = True


#: name -> class: the arrangements ``CellSystem(topology=...)`` accepts.
TOPOLOGIES: dict[str, type[Topology]] = {"line": Line, "ring": Ring, "grid": Grid,
                                         "torus": Torus}


def make_topology(name: str, shape: int | Sequence[int], radius: int = 1,
                  position: str = "auto", channels: int = 1) -> Topology:
    """The topology called ``name`` (a key of :data:`TOPOLOGIES`).

    Parameters
    ----------
    name : {"line", "ring", "grid", "torus"}
    shape, radius, position, channels
        As :class:`Topology`.

    Returns
    -------
    Topology
    """
    cls = TOPOLOGIES[_validation.choice(name, "topology", tuple(TOPOLOGIES))]
    return cls(shape, radius, position, channels)
