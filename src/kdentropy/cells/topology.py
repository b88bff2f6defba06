"""Where the cells sit: each cell's neighbourhood and its position features.

States are always stored flat, ``(N, D)`` for N runs of D cells; a
:class:`Topology` is the only code that knows how those D cells are arranged.
It provides the inputs of the update rule,

``features(x)``
    ``(N, D, n_features)``: the states of each cell's neighbourhood, then its
    position features;
``features_adjoint(df)``
    the transpose of the neighbourhood part (``dL/dx`` from ``dL/dfeatures``),
    for back-propagation through time;
``boundaries(B)``
    the number of on/off boundaries of each binary pattern, for reporting.

:class:`Line` and :class:`Ring` are the 1-D arrangements. A new arrangement
(a 2-D grid, say) is one new subclass that implements ``_gather``,
``_scatter``, ``position_features`` and ``boundaries`` and is added to
:data:`TOPOLOGIES`; the cell system, the loss and the trainer do not change.

Examples
--------
>>> import numpy as np
>>> line = Line(4, radius=1, position="none")
>>> line.features(np.array([[0.1, 0.2, 0.3, 0.4]]))[0].tolist()
[[0.0, 0.1, 0.2], [0.1, 0.2, 0.3], [0.2, 0.3, 0.4], [0.3, 0.4, 0.0]]
"""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np

from .. import _validation

__all__ = ["Topology", "Line", "Ring", "TOPOLOGIES", "POSITIONS", "make_topology"]

#: The position-feature kinds every 1-D topology offers ("auto" picks the topology's default).
POSITIONS = ("auto", "linear", "sincos", "none")


class Topology(abc.ABC):
    """How D cells are arranged: neighbourhoods, position features and pattern boundaries.

    Parameters
    ----------
    n_cells : int
        Number of cells D (>= 1).
    radius : int, optional
        How far a cell sees (>= 0). Default 1.
    position : str, optional
        Kind of position features, one of :attr:`POSITIONS`; ``"auto"``
        (default) is the topology's :attr:`DEFAULT_POSITION`, ``"none"``
        leaves them out.

    Attributes
    ----------
    position : str
        The resolved kind (never ``"auto"``).
    n_neighbours : int
        Neighbourhood features per cell (the cell itself included).
    n_features : int
        All features per cell: neighbourhood plus position.
    """

    NAME: ClassVar[str]
    POSITIONS: ClassVar[tuple[str, ...]] = POSITIONS
    DEFAULT_POSITION: ClassVar[str]

    def __init__(self, n_cells: int, radius: int = 1, position: str = "auto") -> None:
        self.n_cells = _validation.integer(n_cells, "n_cells", 1)
        self.radius = _validation.integer(radius, "radius", 0)
        position = _validation.choice(position, "position", self.POSITIONS)
        self.position = self.DEFAULT_POSITION if position == "auto" else position
        self.n_neighbours = self._n_neighbours()
        # Constant per system: computed once, copied into every feature array.
        self._positions = None if self.position == "none" else \
            self.position_features(self.position)
        self.n_features = self.n_neighbours + (
            0 if self._positions is None else self._positions.shape[1])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.n_cells}, radius={self.radius}, "
                f"position={self.position!r})")

    def features(self, x: np.ndarray) -> np.ndarray:
        """Update-rule inputs of every cell: neighbourhood states, then position.

        Parameters
        ----------
        x : ndarray of float64, shape (N, D)
            States.

        Returns
        -------
        ndarray of float64, shape (N, D, n_features)
        """
        f = np.empty(x.shape + (self.n_features,))
        self._gather(x, f)
        if self._positions is not None:
            f[:, :, self.n_neighbours:] = self._positions
        return f

    def features_adjoint(self, df: np.ndarray) -> np.ndarray:
        """``dL/dx`` from ``dL/dfeatures``: the transpose of the neighbourhood gather.

        Parameters
        ----------
        df : ndarray of float64, shape (N, D, n_features) or (N, D, n_neighbours)
            Only the first ``n_neighbours`` features depend on the states.

        Returns
        -------
        ndarray of float64, shape (N, D)
        """
        return self._scatter(df)

    @abc.abstractmethod
    def _n_neighbours(self) -> int:
        """Number of neighbourhood features per cell."""

    @abc.abstractmethod
    def _gather(self, x: np.ndarray, out: np.ndarray) -> None:
        """Write each cell's neighbourhood states into ``out[:, :, :n_neighbours]``."""

    @abc.abstractmethod
    def _scatter(self, df: np.ndarray) -> np.ndarray:
        """The adjoint of :meth:`_gather` (reads ``df[:, :, :n_neighbours]``)."""

    @abc.abstractmethod
    def position_features(self, kind: str) -> np.ndarray:
        """Position features ``(D, k)`` of the given kind (not ``"auto"`` or ``"none"``)."""

    @abc.abstractmethod
    def boundaries(self, B: np.ndarray) -> np.ndarray:
        """Number of neighbouring cell pairs that differ, per binary pattern ``(N, D) -> (N,)``."""


class _OneDimensional(Topology):
    """Cells in a row: offsets ``-radius .. radius`` and 1-D position features."""

    def _n_neighbours(self) -> int:
        return 2 * self.radius + 1

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
        i = np.arange(D, dtype=np.float64)
        if kind == "linear":
            p = i / (D - 1) if D > 1 else np.full(D, 0.5)
            return np.stack([p, 1.0 - p], axis=-1)
        if kind == "sincos":
            a = 2.0 * np.pi * i / D
            return np.stack([np.sin(a), np.cos(a)], axis=-1)
        raise ValueError(f"unknown position {kind!r} for a {self.NAME}")


class Line(_OneDimensional):
    """Cells on a line; beyond the ends the state is 0 (zero padding).

    The default position features are ``"linear"``.
    """

    NAME = "line"
    DEFAULT_POSITION = "linear"

    def _gather(self, x: np.ndarray, out: np.ndarray) -> None:
        D = x.shape[1]
        for k in range(self.n_neighbours):  # a loop over offsets, never over cells
            o = k - self.radius  # feature k of cell i is the state of cell i + o
            if o >= 0:
                out[:, :D - o, k] = x[:, o:]
                out[:, D - o:, k] = 0.0
            else:
                out[:, -o:, k] = x[:, :D + o]
                out[:, :-o, k] = 0.0

    def _scatter(self, df: np.ndarray) -> np.ndarray:
        N, D = df.shape[:2]
        dx = np.zeros((N, D))
        for k in range(self.n_neighbours):
            o = k - self.radius
            if o >= 0:
                dx[:, o:] += df[:, :D - o, k]
            else:
                dx[:, :D + o] += df[:, -o:, k]
        return dx

    def boundaries(self, B: np.ndarray) -> np.ndarray:
        """Number of 0/1 changes between consecutive cells of each pattern.

        Parameters
        ----------
        B : ndarray of bool, shape (N, D)

        Returns
        -------
        ndarray of int, shape (N,)
        """
        return (B[:, 1:] != B[:, :-1]).sum(axis=1)


class Ring(Line):
    """Cells on a ring: the last and the first cell are neighbours.

    The default position features are ``"sincos"``, which are periodic too.
    """

    NAME = "ring"
    DEFAULT_POSITION = "sincos"

    def _gather(self, x: np.ndarray, out: np.ndarray) -> None:
        for k in range(self.n_neighbours):
            out[:, :, k] = np.roll(x, self.radius - k, axis=1)

    def _scatter(self, df: np.ndarray) -> np.ndarray:
        N, D = df.shape[:2]
        dx = np.zeros((N, D))
        for k in range(self.n_neighbours):
            dx += np.roll(df[:, :, k], k - self.radius, axis=1)
        return dx

    def boundaries(self, B: np.ndarray) -> np.ndarray:
        """Number of 0/1 changes between neighbouring cells, the last-to-first pair included.

        Parameters
        ----------
        B : ndarray of bool, shape (N, D)

        Returns
        -------
        ndarray of int, shape (N,)
        """
        counts = super().boundaries(B)
        if B.shape[1] > 1:
            counts = counts + (B[:, 0] != B[:, -1])
        return counts


#: name -> class: the arrangements ``CellSystem(topology=...)`` accepts.
TOPOLOGIES: dict[str, type[Topology]] = {"line": Line, "ring": Ring}


def make_topology(name: str, n_cells: int, radius: int = 1,
                  position: str = "auto") -> Topology:
    """The topology called ``name`` (a key of :data:`TOPOLOGIES`) for ``n_cells`` cells.

    Parameters
    ----------
    name : {"line", "ring"}
    n_cells, radius, position
        As :class:`Topology`.

    Returns
    -------
    Topology
    """
    cls = TOPOLOGIES[_validation.choice(name, "topology", tuple(TOPOLOGIES))]
    return cls(n_cells, radius, position)
