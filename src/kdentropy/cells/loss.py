"""The training loss: soft entropy of the final patterns plus an anti-collapse term.

Training minimises ``L = H_soft(X) + anti_collapse * P(X)`` with
:func:`kdentropy.soft_entropy_and_grad` giving ``H_soft`` and ``dH/dX``.

Why the anti-collapse term looks the way it does
------------------------------------------------
Soft entropy alone is minimised by collapse: every cell at 0 (or 1) in every
run is perfectly reproducible and trivial. A penalty on the mean of the
*discretised* states ``sigmoid(T (x - 1/2))`` does not help once the system
has collapsed, because those values are saturated and pass almost no gradient.
:class:`ReproducibilityLoss` therefore penalises the *raw* (un-discretised)
state, through each run's mean state ``m_n = mean_i x_{n,i}``::

    P = mean_n [ relu(lo - m_n)^2 + relu(m_n - hi)^2 ],   default lo = hi = 1/2

i.e. ``P = mean_n (m_n - 1/2)^2`` by default. Its gradient ``2 (m_n - 1/2) /
(N D)`` reaches every cell and is largest exactly when the system collapses.
Per-run means (not one batch mean) also rule out half the runs at all-0 and
half at all-1.

Why the band is not wider by default: a wider band, e.g. ``(0.2, 0.8)`` or
``(0.35, 0.65)``, is gamed. The raw mean can sit inside it while every cell
sits *below* the threshold (all states near 0.3: mean 0.3, no cell on), and
training found exactly that trivial all-off solution for most seeds in our
runs (hard entropy 0, fraction on 0). The same happens with a hinge on the
soft fraction on ``mean_i sigmoid(T (x - 1/2))``. The quadratic pins the mean
state at 1/2, and the only trivial way to reach it, every cell at 1/2, is
maximally sensitive to the noise, so the entropy term drives the system to a
genuine pattern instead: in our runs about half the cells on with one 0/1
boundary on the line. ``band`` stays a parameter for experiments.

Why the kernel width must grow with the number of cells
-------------------------------------------------------
Two runs that disagree on a fraction of the cells are ``sqrt(D)`` apart in
the soft patterns, so with a fixed ``sigma`` the kernel between them vanishes
as D grows: with ``sigma = 0.5`` and the 144 cells of a 12 x 12 grid, an
untrained batch has a soft entropy of ``log N`` to rounding and a gradient
forty times smaller than the anti-collapse term's, and training never left
that plateau in 300 iterations. ``sigma = 1`` (about ``0.5 sqrt(D / 32)``,
the width that works for 32 cells) reached hard entropy 0 within 25
iterations. Too wide is as bad: ``sigma = 1`` on 32 cells sees every batch
as one pattern, and the 1-D systems then stayed at ``log N``.

Hence ``sigma="auto"`` (the default of :class:`~kdentropy.cells.Trainer`,
:func:`~kdentropy.cells.train` and ``kdentropy train``): :func:`auto_sigma`
gives ``0.5 sqrt(D / 32)`` for D scored cells, the width measured to work on
lines, rings, grids and tori, with and without hidden channels (hidden
channels are not scored, so they do not count). The library's entropy
functions keep their fixed default ``sigma = 0.5``.
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike

from .. import _validation
from .. import backends as _backends
from .._params import DEFAULT, SoftParams
from .._soft import compute

__all__ = ["ReproducibilityLoss", "loss_from_config", "AUTO", "auto_sigma"]

#: The ``sigma`` value that asks for :func:`auto_sigma` of the system's cell count.
AUTO = "auto"

# The measured reference point of the rule: 0.5 works for 32 cells.
_REFERENCE_CELLS, _REFERENCE_SIGMA = 32, 0.5


def auto_sigma(n_cells: int) -> float:
    """The kernel width ``sigma="auto"`` stands for: ``0.5 sqrt(n_cells / 32)``.

    Two runs that disagree on a fixed fraction of the cells are about
    ``sqrt(n_cells)`` apart, so the width that lets the soft counts see them
    as neighbours grows like that; 0.5 is the width measured to work for 32
    cells (see the module docstring).

    Parameters
    ----------
    n_cells : int
        Scored cells D (the visible channel; hidden channels do not count).

    Returns
    -------
    float
        0.5 for 32 cells, about 1.06 for a 12 x 12 grid.
    """
    n = _validation.integer(n_cells, "n_cells", 1)
    return _REFERENCE_SIGMA * math.sqrt(n / _REFERENCE_CELLS)


class ReproducibilityLoss:
    """Soft entropy of the final patterns plus the anti-collapse hinge.

    ``L(X) = H_soft(X) + anti_collapse * mean_n [relu(lo - m_n)^2 +
    relu(m_n - hi)^2]`` with ``m_n`` the mean raw state of run n; with the
    default ``band=(0.5, 0.5)`` the penalty is ``mean_n (m_n - 1/2)^2``. See
    the module docstring for why it acts on raw states and why the band is
    a point by default.

    Parameters
    ----------
    temperature, sigma, threshold : float, optional
        The soft entropy's keywords, as for :func:`kdentropy.soft_entropy_and_grad`
        (same defaults); validated once, here. ``sigma`` may also be
        ``"auto"``: :func:`auto_sigma` of the number of cells, fixed (and
        the keywords validated) by :meth:`for_cells`, which
        :class:`~kdentropy.cells.Trainer` calls with its system's cell count;
        called directly on patterns of D cells, such a loss uses
        ``auto_sigma(D)``.
    anti_collapse : float, optional
        Weight of the penalty, in ``[0, 1e6]`` (0 disables it). Default 100: a fully
        collapsed batch (penalty 1/4) then costs 25 nats, far more than the
        entropy of any batch, while weight 10 still let most seeds collapse.
    band : tuple of float, optional
        ``(lo, hi)``, ``0 <= lo <= hi <= 1``. Default ``(0.5, 0.5)``.
    backend : str, optional
        Entropy backend (see :func:`kdentropy.soft_entropy`).
    """

    #: The validated keywords; None while ``sigma`` is ``"auto"`` and unresolved.
    params: SoftParams | None
    # (temperature, threshold) of an unresolved "auto" loss, checked by for_cells.
    _unresolved: tuple[float, float]
    # (D, params) of the last cell count an unresolved loss was called on.
    _auto_cache: tuple[int, SoftParams] | None = None

    def __init__(self, temperature: float = DEFAULT.temperature,
                 sigma: float | str = DEFAULT.sigma, *, threshold: float = DEFAULT.threshold,
                 anti_collapse: float = 100.0, band: tuple[float, float] = (0.5, 0.5),
                 backend: str | None = None) -> None:
        if isinstance(sigma, str) and sigma == AUTO:
            # Validated once, by for_cells, when the number of cells is known.
            self.params = None
            self._unresolved = (temperature, threshold)
        else:
            # A bad value (another string included) fails here, naming sigma.
            self.params = SoftParams(temperature, cast(float, sigma), threshold)
        self._check_options(anti_collapse, band, backend)

    def _check_options(self, anti_collapse: float = 100.0,
                       band: tuple[float, float] = (0.5, 0.5), backend: str | None = None
                       ) -> None:
        """Store the penalty's weight and band and the backend, checked."""
        # Bounded so that the weighted penalty and its gradient stay far from overflow.
        self.anti_collapse = _validation.bounded(anti_collapse, "anti_collapse", 0.0,
                                                 _validation.PENALTY_WEIGHT_MAX)
        try:
            lo, hi = band
        except (TypeError, ValueError):
            raise TypeError(f"band must be a pair (lo, hi); got {band!r}") from None
        lo, hi = _validation.real_scalar(lo, "band[0]"), _validation.real_scalar(hi, "band[1]")
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"band must satisfy 0 <= lo <= hi <= 1; got {(lo, hi)}")
        self.band = (lo, hi)
        if backend is not None:
            backend = _backends.check_name(backend)  # the registry's own names and message
        self.backend = backend

    @classmethod
    def from_params(cls, params: SoftParams, **options: object) -> ReproducibilityLoss:
        """A loss on already validated soft-entropy keywords (the command line builds them).

        Parameters
        ----------
        params : SoftParams
            Temperature, sigma and threshold; ``base`` and ``normalize`` must be
            the defaults (the loss is in nats).
        **options
            ``anti_collapse``, ``band`` and ``backend``, as for the constructor.

        Returns
        -------
        ReproducibilityLoss
        """
        if not isinstance(params, SoftParams):
            raise TypeError(f"params must be a SoftParams; got {type(params).__name__}")
        if params.base is not None or params.normalize:
            raise ValueError("params of a training loss must give nats (base None, "
                             "normalize False)")
        loss = cls.__new__(cls)
        loss.params = params
        loss._check_options(**options)  # type: ignore[arg-type]
        return loss

    def _options(self) -> dict:
        return {"anti_collapse": self.anti_collapse, "band": self.band,
                "backend": self.backend}

    def for_cells(self, n_cells: int) -> ReproducibilityLoss:
        """This loss with ``sigma="auto"`` resolved for ``n_cells`` scored cells.

        Parameters
        ----------
        n_cells : int
            Cells D of the patterns the loss will score.

        Returns
        -------
        ReproducibilityLoss
            ``self`` when sigma is already a number; otherwise a new loss with
            ``sigma = auto_sigma(n_cells)`` (its keywords validated once, here).
        """
        if self.params is not None:
            return self
        temperature, threshold = self._unresolved
        return ReproducibilityLoss.from_params(
            SoftParams(temperature, auto_sigma(n_cells), threshold), **self._options())

    def _params_for(self, X: ArrayLike) -> SoftParams:
        """The keywords for the patterns X (``"auto"`` resolved once per cell count)."""
        if self.params is not None:
            return self.params
        shape = np.shape(X)
        if len(shape) < 2:
            raise ValueError(f"X must have shape (..., N, D); got shape {shape}")
        D = shape[-1]
        if self._auto_cache is None or self._auto_cache[0] != D:
            resolved = self.for_cells(D).params
            assert resolved is not None  # for_cells always resolves
            self._auto_cache = (D, resolved)
        return self._auto_cache[1]

    @property
    def temperature(self) -> float:
        """Sigmoid sharpness T of the soft entropy."""
        if self.params is None:
            return self._unresolved[0]
        return self.params.temperature

    @property
    def sigma(self) -> float | str:
        """Kernel width σ of the soft entropy (``"auto"`` until :meth:`for_cells`)."""
        return AUTO if self.params is None else self.params.sigma

    @property
    def threshold(self) -> float:
        """Sigmoid midpoint θ of the soft entropy."""
        if self.params is None:
            return self._unresolved[1]
        return self.params.threshold

    def soft_entropy(self, X: ArrayLike) -> float:
        """The soft entropy of a batch with this loss's keywords and backend (no gradient).

        Parameters
        ----------
        X : array_like, shape (N, D)
            Patterns.

        Returns
        -------
        float
        """
        return float(compute(X, self._params_for(X), self.backend, want_grad=False)[0])

    def get_config(self) -> dict:
        """JSON-serialisable constructor arguments."""
        return {"temperature": self.temperature, "sigma": self.sigma,
                "threshold": self.threshold, "anti_collapse": self.anti_collapse,
                "band": list(self.band), "backend": self.backend}

    def penalty(self, X: ArrayLike) -> tuple[float, np.ndarray]:
        """The anti-collapse hinge (unweighted) and its gradient with respect to X.

        Parameters
        ----------
        X : array_like, shape (N, D)
            Final patterns (raw states).

        Returns
        -------
        value : float
            ``mean_n [relu(lo - m_n)^2 + relu(m_n - hi)^2]``.
        grad : ndarray of float64, shape (N, D)
            ``d value / dX``; a read-only broadcast view (every cell of a run
            gets the same value).
        """
        X = _validation.real_array(X, "X")
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (N, D); got shape {X.shape}")
        return self._penalty(X)

    def _penalty(self, X: np.ndarray) -> tuple[float, np.ndarray]:
        """:meth:`penalty` of a float64 ``(N, D)`` array."""
        N, D = X.shape
        lo, hi = self.band
        m = X.mean(axis=1)
        below = np.maximum(lo - m, 0.0)
        above = np.maximum(m - hi, 0.0)
        value = float(np.mean(below * below + above * above))
        dm = (2.0 / N) * (above - below)
        return value, np.broadcast_to((dm / D)[:, None], X.shape)

    def __call__(self, X: ArrayLike) -> tuple[float, np.ndarray, dict]:
        """Loss value, its gradient and its parts.

        Parameters
        ----------
        X : array_like, shape (N, D)
            Final patterns.

        Returns
        -------
        value : float
            ``soft_entropy + anti_collapse * penalty``.
        grad : ndarray of float64, shape (N, D)
            ``dL/dX``.
        parts : dict
            ``{"soft_entropy": float, "penalty": float}`` (penalty unweighted).
        """
        # float64 and 2-D here (no pass over the data for a float64 array);
        # the entropy call is the one place the values are checked (finite).
        X = _validation.real_array(X, "X")
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (N, D); got shape {X.shape}")
        H, dX = compute(X, self._params_for(X), self.backend, want_grad=True)
        H = float(H)
        dX = np.asarray(dX, dtype=np.float64)
        P = 0.0
        if self.anti_collapse > 0.0:
            P, dP = self._penalty(X)
            dX = dX + self.anti_collapse * dP
        return H + self.anti_collapse * P, dX, {"soft_entropy": H, "penalty": P}


def loss_from_config(config: dict[str, Any]) -> ReproducibilityLoss:
    """The loss that :meth:`ReproducibilityLoss.get_config` describes, read back from JSON.

    Parameters
    ----------
    config : dict
        The ``"loss"`` entry of :meth:`Trainer.get_config`.

    Returns
    -------
    ReproducibilityLoss
    """
    return ReproducibilityLoss(**dict(config, band=tuple(config["band"])))  # JSON made it a list
