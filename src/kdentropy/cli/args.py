"""Pieces every command's parser uses: the one-line error, argparse types, backend names.

Numeric flags are parsed here (a finite number) and range-checked by the
library classes they configure, whose ValueError is the line printed, so the
command line and the Python API accept exactly the same values.
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from ..backends import BACKEND_NAMES

__all__ = ["PROG", "BACKENDS", "CLIError", "Parser", "float_at_least", "positive_float",
           "nonneg_float", "finite_float", "int_at_least", "grid_shape", "log_base",
           "auto_or_float", "positive_float_or_none", "host_backend", "first_line", "did_you_mean"]

PROG = "kdentropy"

#: ``--backend`` choices: the registry's names and "auto".
BACKENDS = ("auto", *BACKEND_NAMES)


class CLIError(Exception):
    """An error to report as one line, with an exit status.

    Parameters
    ----------
    message : str
    status : int, optional
        Exit status; 2 for usage errors. Default 1.
    prog : str, optional
        The program (or subcommand) the line starts with.
    """

    def __init__(self, message: str, status: int = 1, prog: str = PROG) -> None:
        super().__init__(message)
        self.status = status
        self.prog = prog


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` to ``word``, or ``""``.

    Parameters
    ----------
    word : str
        What was typed.
    choices : iterable of str
        What would have been understood.

    Returns
    -------
    str
    """
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class Parser(argparse.ArgumentParser):
    """ArgumentParser that raises :class:`CLIError` instead of printing usage and exiting.

    The line names the help to read (``kdentropy train --help`` for a
    subcommand's flags) and, for a misspelt flag, subcommand or choice, the
    closest correct one.
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        """Raise the usage error as a :class:`CLIError` with status 2."""
        raise CLIError(f"{message}{self._suggestion(message)} (see '{self.prog} --help')",
                       status=2, prog=self.prog)

    def option_names(self) -> list[str]:
        """Every long and short flag this parser knows."""
        return [name for action in self._actions for name in action.option_strings]

    def _suggestion(self, message: str) -> str:
        """A "did you mean" for an unknown flag or an invalid choice in ``message``."""
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if choice:
            options = [c.strip().strip("'") for c in choice.group(2).split(",")]
            return did_you_mean(choice.group(1), options)
        unknown = re.match(r"unrecognized arguments: (.*)$", message)
        if unknown:
            for word in unknown.group(1).split():
                if word.startswith("-"):
                    hint = did_you_mean(word.split("=", 1)[0], self.option_names())
                    if hint:
                        return hint
        return ""


def float_at_least(minimum: float | None = None, *, strict: bool = False
                   ) -> Callable[[str], float]:
    """An argparse ``type`` for finite floats ``>= minimum`` (``> minimum`` if strict).

    Parameters
    ----------
    minimum : float, optional
        No bound when None.
    strict : bool, optional
        Exclude ``minimum`` itself. Default False.

    Returns
    -------
    callable
        ``str -> float``, raising ``argparse.ArgumentTypeError``.
    """
    bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or (minimum is not None and (
                value <= minimum if strict else value < minimum)):
            raise argparse.ArgumentTypeError(f"expected a finite number{bound}, got {text!r}")
        return value
    return parse


positive_float = float_at_least(0.0, strict=True)
nonneg_float = float_at_least(0.0)
finite_float = float_at_least()


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers ``>= minimum``.

    Parameters
    ----------
    minimum : int

    Returns
    -------
    callable
        ``str -> int``, raising ``argparse.ArgumentTypeError``.
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


def grid_shape(text: str) -> tuple[int, int]:
    """An argparse ``type`` for ``HxW`` (e.g. ``12x12``): two integers >= 1.

    Parameters
    ----------
    text : str

    Returns
    -------
    (int, int)
    """
    parts = text.lower().replace("*", "x").split("x")
    try:
        H, W = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 12x12, got {text!r}") from None
    if H < 1 or W < 1:
        raise argparse.ArgumentTypeError(f"expected sizes >= 1, got {text!r}")
    return H, W


def word_or_number(words: tuple[str, ...], value: Any, number: Callable[[str], float],
                   expected: str) -> Callable[[str], Any]:
    """An argparse ``type``: one of ``words`` (giving ``value``) or what ``number`` parses.

    Parameters
    ----------
    words : tuple of str
        Lower-case spellings of the word.
    value : Any
        What the word stands for.
    number : callable
        The argparse ``type`` of the numeric alternative.
    expected : str
        The error message's ``expected ...`` text.

    Returns
    -------
    callable
        ``str -> value or float``, raising ``argparse.ArgumentTypeError``.
    """
    def parse(text: str) -> Any:
        if text.strip().lower() in words:
            return value
        try:
            return number(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    return parse


#: ``--sigma`` in ``train``: ``auto`` or a finite number (its range is ``SoftParams``'s rule).
auto_or_float = word_or_number(("auto",), "auto", finite_float, "'auto' or a number")
#: A finite number > 0, or ``none``/``off`` (None: switched off).
positive_float_or_none = word_or_number(("none", "off"), None, positive_float,
                                        "'none' or a finite number > 0")


def log_base(text: str) -> float | None:
    """The argparse ``type`` of ``--base``: ``e``/``nats`` (None), ``bits`` (2) or a number > 0.

    Parameters
    ----------
    text : str

    Returns
    -------
    float or None
    """
    if text.lower() in ("e", "nat", "nats"):
        return None
    if text.lower() in ("bit", "bits"):
        return 2.0
    return finite_float(text)  # the range is SoftParams's rule


def host_backend(name: str | None) -> str:
    """The concrete backend that host arrays get for ``--backend name``.

    ``None`` (no ``--backend``) means the library default, so
    ``KDENTROPY_BACKEND`` applies; ``auto`` is ``cpu`` for host arrays. An
    unavailable backend raises the library's own error, which says why
    (missing numba-cuda, no GPU, ...).

    Parameters
    ----------
    name : str or None

    Returns
    -------
    str
    """
    from .. import backends
    name = backends.resolve(name)
    backends.load(name)
    return name


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type name).

    Parameters
    ----------
    exc : BaseException

    Returns
    -------
    str
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
