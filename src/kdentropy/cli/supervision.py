"""Training under a person's eyes: progress on stderr, and Ctrl-C that stops cleanly.

:func:`supervised` gives the callback to pass to :func:`kdentropy.cells.train`,
:meth:`~kdentropy.cells.Trainer.fit` or :meth:`~kdentropy.cells.Trainer.run`:
it shows progress, and a first Ctrl-C (SIGINT) waits for the iteration in
progress, saves the checkpoint and raises :class:`TrainingInterrupted`.
Loading that checkpoint and running on gives the same result, bit for bit,
as a run that was never interrupted.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..cells import Trainer

__all__ = ["TrainingInterrupted", "DeferredInterrupt", "Progress", "supervised"]


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
    """Training progress on stderr: a tqdm bar when tqdm is installed, else a line per ~10%.

    Parameters
    ----------
    total : int
        Iterations this session will take.
    enabled : bool
        False shows nothing.
    """

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.bar = total, 0, None
        self.enabled = enabled and total > 0
        self.every = max(1, total // 10)
        self.last_eval = math.nan
        if self.enabled:
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
def supervised(iterations: int, checkpoint: str | os.PathLike | None, *, progress: bool
               ) -> Iterator[Callable[[Trainer], None]]:
    """Defer Ctrl-C to the end of an iteration and show progress, around one training call.

    Parameters
    ----------
    iterations : int
        Iterations the training call will take (the length of the bar).
    checkpoint : path-like, optional
        Where the trainer is saved when Ctrl-C stops it.
    progress : bool
        Show :class:`Progress`.

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
    path = None if checkpoint is None else os.fspath(checkpoint)
    bar = Progress(iterations, progress)
    try:
        with DeferredInterrupt() as interrupt:
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
