"""Training under a person's eyes: progress on stderr, and Ctrl-C that stops cleanly.

:func:`supervised` gives the callback to pass to :func:`kdentropy.cells.train`,
:meth:`~kdentropy.cells.Trainer.fit` or :meth:`~kdentropy.cells.Trainer.run`:
it shows progress, and a first Ctrl-C (SIGINT) waits for the iteration in
progress, saves the checkpoint and raises :class:`TrainingInterrupted`.
Loading that checkpoint and running on gives the same result, bit for bit,
as a run that was never interrupted. A
:class:`~kdentropy.cells.diagnostics.FlatEntropyWarning` (training gets no
gradient from the soft entropy) is printed as one ``kdentropy: warning:`` line.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from .args import PROG

if TYPE_CHECKING:
    from ..cells import Trainer

__all__ = ["TrainingInterrupted", "DeferredInterrupt", "Progress", "supervised",
           "PROGRESS_MODES", "progress_mode"]

#: ``--progress`` choices.
PROGRESS_MODES = ("auto", "bar", "lines", "none")


def progress_mode(mode: str | bool, stream: TextIO | None = None) -> str:
    """``"bar"``, ``"lines"`` or ``"none"`` for a ``--progress`` choice.

    ``auto`` is a bar on a terminal and a line per ~10 % otherwise (a log
    file gets no carriage-return redraws). True is ``bar`` and False
    ``none``, the meaning they had before the modes.

    Parameters
    ----------
    mode : {"auto", "bar", "lines", "none"} or bool
    stream : file, optional
        Where progress goes; default ``sys.stderr``.

    Returns
    -------
    str
    """
    if isinstance(mode, bool):
        return "bar" if mode else "none"
    if mode not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {', '.join(PROGRESS_MODES)}; got {mode!r}")
    if mode == "auto":
        stream = sys.stderr if stream is None else stream
        isatty = getattr(stream, "isatty", None)
        return "bar" if callable(isatty) and isatty() else "lines"
    return mode


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training between two iterations.

    The iteration in progress was finished, so the trainer is consistent, and
    saved to ``checkpoint`` when there is one. A subclass of
    :class:`KeyboardInterrupt`, so code that does not know it still stops.

    Parameters
    ----------
    iteration : int
        Optimizer steps taken when training stopped.
    checkpoint : str or None
        Where the trainer was saved.
    """

    def __init__(self, iteration: int, checkpoint: str | None) -> None:
        where = f"; saved to {checkpoint}" if checkpoint else ""
        super().__init__(f"training interrupted at iteration {iteration}{where}")
        self.iteration = iteration
        self.checkpoint = checkpoint


class DeferredInterrupt:
    """While active, a first SIGINT only sets :attr:`requested`; a second one raises at once.

    Python raises KeyboardInterrupt wherever the interpreter happens to be,
    which can be inside the optimizer's in-place update: the parameters would
    be half-updated and no checkpoint written from them could reproduce
    anything. Deferring it to the end of the iteration keeps every saved
    state consistent. Only the main thread can install handlers, and a
    handler other than Python's default (a caller's own, or SIG_IGN) is left
    alone.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C: the user does not want to wait
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class Progress:
    """Training progress on stderr: a tqdm bar, or a line per ~10% of the iterations.

    Parameters
    ----------
    total : int
        Iterations this session will take.
    mode : {"auto", "bar", "lines", "none"} or bool
        See :func:`progress_mode`; ``bar`` falls back to lines without tqdm.
    """

    def __init__(self, total: int, mode: str | bool) -> None:
        self.total, self.done, self.bar = total, 0, None
        mode = progress_mode(mode)
        self.enabled = mode != "none" and total > 0
        self.every = max(1, total // 10)
        self.last_eval = math.nan
        if self.enabled and mode == "bar":
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, desc="training", unit="it", file=sys.stderr,
                            dynamic_ncols=True, leave=True)

    def update(self, it: int, row: dict) -> None:
        """Report the history row of iteration ``it``.

        Parameters
        ----------
        it : int
        row : dict
            :attr:`History.last`.
        """
        if not self.enabled:
            return
        self.done += 1
        if not math.isnan(row["eval_hard_entropy"]):
            self.last_eval = row["eval_hard_entropy"]
        if self.bar is not None:
            post = {"loss": f"{row['loss']:.3f}", "H_batch": f"{row['hard_entropy']:.2f}"}
            if not math.isnan(self.last_eval):
                post["H_eval"] = f"{self.last_eval:.2f}"
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(1)
        elif self.done % self.every == 0 or self.done == self.total:
            line = (f"iteration {it}: loss {row['loss']:.4f}  soft H {row['soft_entropy']:.4f}"
                    f"  hard H (batch) {row['hard_entropy']:.4f}")
            if not math.isnan(row["eval_hard_entropy"]):
                line += f"  hard H (eval) {row['eval_hard_entropy']:.4f}"
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Close the bar, if any."""
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def supervised(iterations: int, checkpoint: str | os.PathLike | None, *,
               progress: str | bool) -> Iterator[Callable[[Trainer], None]]:
    """Defer Ctrl-C to the end of an iteration and show progress, around one training call.

    Parameters
    ----------
    iterations : int
        Iterations the training call will take (the length of the bar).
    checkpoint : path-like, optional
        Where the trainer is saved when Ctrl-C stops it.
    progress : {"auto", "bar", "lines", "none"} or bool
        How to show :class:`Progress` (see :func:`progress_mode`).

    Yields
    ------
    callable
        The per-iteration callback to give the training call.

    Raises
    ------
    TrainingInterrupted
        From the callback, after the first Ctrl-C: the iteration in progress
        is finished and saved to ``checkpoint`` first.
    KeyboardInterrupt
        On a second Ctrl-C (at once, without saving), or when Ctrl-C came
        after the last iteration.
    """
    from ..cells.diagnostics import FlatEntropyWarning

    path = None if checkpoint is None else os.fspath(checkpoint)
    bar = Progress(iterations, progress)

    def one_line(message: Warning | str, category: type[Warning], *args: Any,
                 **kwargs: Any) -> None:
        if bar.bar is not None:  # keep the bar intact below the line
            bar.bar.clear()
        print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)

    try:
        with DeferredInterrupt() as interrupt, warnings.catch_warnings():
            # The default format is two lines (file:line, then the source line).
            warnings.simplefilter("always", FlatEntropyWarning)
            previous = warnings.showwarning

            def show(message: Warning | str, category: type[Warning], *args: Any,
                     **kwargs: Any) -> None:
                if issubclass(category, FlatEntropyWarning):
                    one_line(message, category)
                else:
                    previous(message, category, *args, **kwargs)
            warnings.showwarning = show
            def after_iteration(trainer: Trainer) -> None:
                bar.update(trainer.iteration, trainer.history.last)
                if interrupt.requested:
                    if path is not None:
                        trainer.save(path)
                    raise TrainingInterrupted(trainer.iteration, path)

            yield after_iteration
            if interrupt.requested:  # pressed after the last iteration: nothing to save
                raise KeyboardInterrupt
    finally:
        bar.close()
