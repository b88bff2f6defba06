"""The keywords of a soft-entropy call: validated once, with their defaults and their text.

Every public boundary (the Python functions, the command line, the PyTorch and
JAX wrappers, the MPI functions, the training loss) turns the user's
``temperature``, ``sigma``, ``threshold``, ``base`` and ``normalize`` into one
:class:`SoftParams` and hands that object inward; nothing inside validates
them again. The defaults and their documentation live here and nowhere else:
signatures read them from :data:`DEFAULT`, docstrings from :data:`KEYWORDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import _validation

__all__ = ["SoftParams", "DEFAULT", "KEYWORDS", "fill_doc"]


@dataclass(frozen=True)
class SoftParams:
    """Validated keywords of one soft-entropy computation.

    Constructing one checks every field (``TypeError`` for the wrong kind of
    value, ``ValueError`` for a value out of range, naming the keyword) and
    stores it in canonical form (Python floats and bools).

    Parameters
    ----------
    temperature : float
        Sigmoid sharpness T, in ``(0, TEMPERATURE_MAX]``.
    sigma : float
        Gaussian kernel width σ, at least ``SIGMA_MIN``.
    threshold : float
        Cell value θ at which the sigmoid is 1/2.
    base : float or None
        Logarithm base; ``None`` gives nats.
    normalize : bool
        Divide the entropy by D.
    """

    temperature: float = 10.0
    sigma: float = 0.5
    threshold: float = 0.5
    base: float | None = None
    normalize: bool = False
    # 1 / log(base): the factor from nats to the requested unit, derived once.
    _per_nat: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        per_nat, normalize = _validation.log_unit(self.base, self.normalize)
        set_ = object.__setattr__  # frozen: canonical values are stored once, here
        set_(self, "temperature", _validation.sharpness(self.temperature, "temperature"))
        set_(self, "sigma", _validation.kernel_width(self.sigma, "sigma"))
        set_(self, "threshold", _validation.real_scalar(self.threshold, "threshold"))
        set_(self, "base", None if self.base is None else float(self.base))
        set_(self, "normalize", normalize)
        set_(self, "_per_nat", per_nat)

    def unit_scale(self, D: int) -> float:
        """The factor that turns nats into the requested unit for patterns of ``D`` cells."""
        return _validation.unit_scale((self._per_nat, self.normalize), D)


#: The defaults of every function that takes the soft-entropy keywords.
DEFAULT = SoftParams()

KEYWORDS = f"""temperature : float, optional
        Sigmoid sharpness T, in (0, {_validation.TEMPERATURE_MAX:g}]. Default {DEFAULT.temperature}.
    sigma : float, optional
        Gaussian kernel width σ, at least {_validation.SIGMA_MIN:g}. Default {DEFAULT.sigma}.
    threshold : float, optional
        Cell value θ at which the sigmoid is 1/2. Default {DEFAULT.threshold}.
    base : float, optional
        Logarithm base; ``None`` (default) gives nats, 2 gives bits.
    normalize : bool, optional
        If True, divide by D (entropy per cell)."""

F = TypeVar("F", bound=Callable[..., Any])


def fill_doc(**sections: str) -> Callable[[F], F]:
    """A decorator that fills ``{name}`` placeholders in the function's docstring.

    ``{keywords}`` is always :data:`KEYWORDS`; a section may itself contain
    ``{keywords}``. Replacement (not ``str.format``) leaves other braces alone.

    Parameters
    ----------
    **sections : str
        Text for each ``{name}`` placeholder.

    Returns
    -------
    callable
        The decorator.
    """
    def decorate(func: F) -> F:
        doc = func.__doc__ or ""
        for name, text in sections.items():
            doc = doc.replace("{" + name + "}", text)
        func.__doc__ = doc.replace("{keywords}", KEYWORDS)
        return func
    return decorate
