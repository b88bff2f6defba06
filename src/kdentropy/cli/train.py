"""``kdentropy train``: train a cell system, or resume one, and write its run folder.

What it prints: on stderr, the automatic kernel width (with ``--sigma auto``,
the default), a "compiling kernels" line when Numba has no cached machine code
for the kernels the run needs, progress (``--progress``: a bar on a terminal,
a line per ~10 % otherwise) and a one-line warning when the soft entropy gives
no gradient; on stdout, the summary. ``--quiet`` leaves only warnings and
errors (the summary is still written to ``summary.json``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import TYPE_CHECKING, Any

from .._params import DEFAULT
from .args import (
    BACKENDS, PROG, CLIError, auto_or_float, finite_float, grid_shape, host_backend,
    int_at_least, nonneg_float, positive_float, positive_float_or_none,
)
from .entropy import soft_params_from_args
from .supervision import PROGRESS_MODES

if TYPE_CHECKING:
    from ..cells import CellSystem, TrainResult

__all__ = ["add_parser", "run"]

#: ``--sigma`` value for :func:`kdentropy.cells.loss.auto_sigma` (the default).
SIGMA_AUTO = "auto"

# Numba compile time of each group of kernels a run needs (the cell engine, the
# cpu backend): both together took 20 s on a cold cache on 2 cores at load 3,
# and up to 120 s when 10 other processes shared them.
_COMPILE_SECONDS = 15


def add_parser(sub: Any) -> None:
    """Add the ``train`` subcommand to the subparsers ``sub``.

    Parameters
    ----------
    sub : argparse subparsers action
    """
    t = sub.add_parser("train", help="train a cell system to give reproducible patterns",
                       description="Train the cells' shared MLP to minimise the soft "
                       "entropy of their final patterns, and report the hard entropy of "
                       "a fresh evaluation batch before and after.")
    g = t.add_argument_group("cell system")
    g.add_argument("--cells", type=int_at_least(2), default=32,
                   help="number of cells on a line or ring (32)")
    g.add_argument("--grid", type=grid_shape, default=None, metavar="HxW",
                   help="a 2-D grid of H x W cells with a 3x3 neighbourhood instead of a "
                   "line, e.g. 12x12 (zero padding beyond the edges unless --ring)")
    g.add_argument("--ring", "--torus", dest="ring", action="store_true",
                   help="wrap the edges around: a ring of --cells, or a torus with --grid")
    g.add_argument("--channels", type=int_at_least(0), default=0, metavar="K",
                   help="hidden channels per cell besides the visible one (0)")
    g.add_argument("--rate", type=positive_float, default=1.0,
                   help="how far a state moves towards the network's output per step, "
                   "in (0, 1] (1: replaced)")
    g.add_argument("--steps", type=int_at_least(1), default=16, help="update steps per run (16)")
    g.add_argument("--hidden", type=int_at_least(1), default=16,
                   help="hidden units of the tanh MLP (16)")
    g.add_argument("--radius", type=int_at_least(0), default=1,
                   help="neighbourhood radius per axis (1: 3 cells, or 3x3 on a grid)")
    g.add_argument("--noise", type=nonneg_float, default=0.05,
                   help="std of the per-step Gaussian noise on every channel, in [0, 10] (0.05)")
    g.add_argument("--no-position", action="store_true",
                   help="no position features: patterns must come from the edges and the "
                   "hidden channels")
    g.add_argument("--engine", choices=("auto", "numpy", "numba"), default="auto",
                   help="roll-out and back-propagation: compiled Numba kernels or the NumPy "
                   "reference (auto: numba)")
    g = t.add_argument_group("training")
    g.add_argument("--batch", type=int_at_least(2), default=64, help="runs per iteration (64)")
    g.add_argument("--iterations", type=int_at_least(1), default=200,
                   help="optimizer steps (200); with --resume, the total to reach")
    g.add_argument("--lr", type=positive_float, default=0.03,
                   help="Adam learning rate, in (0, 10] (0.03)")
    g.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="learning-rate schedule: cosine decay to --min-lr, or constant (cosine)")
    g.add_argument("--min-lr", type=nonneg_float, default=1e-3,
                   help="final rate of the cosine schedule (0.001)")
    # 1 rather than none: on a 12x12 grid without positions it took seed 0 from
    # 0.32 to 0 nats (seeds 1 and 2 from 0.03 and 0 to 0), and a 32-cell line
    # from <= 0.05 to 0, at the same cost per iteration.
    g.add_argument("--clip-norm", type=positive_float_or_none, default=1.0,
                   help="rescale gradients whose norm exceeds this (1); 'none' switches "
                   "clipping off")
    g.add_argument("--anti-collapse", type=nonneg_float, default=100.0,
                   help="weight of the (mean state - 1/2)^2 anti-collapse term, "
                   "in [0, 1e6] (100)")
    g.add_argument("--temperature", type=finite_float, default=DEFAULT.temperature,
                   help="soft-entropy temperature, in (0, 1e50] "
                   f"({DEFAULT.temperature:g})")
    g.add_argument("--sigma", type=auto_or_float, default=SIGMA_AUTO,
                   help="kernel width, >= 1e-50, or 'auto' (default): 0.5 sqrt(cells / 32), "
                   "e.g. 0.5 for 32 cells, 1.06 for a 12x12 grid (the width that lets "
                   "the soft entropy see runs that differ in a few cells as close)")
    g.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (0)")
    g.add_argument("--backend", choices=BACKENDS, default=None,
                   help="entropy backend (default: $KDENTROPY_BACKEND or auto, i.e. cpu; "
                   "with --resume, the checkpoint's)")
    g = t.add_argument_group("evaluation and output")
    g.add_argument("--eval-batch", type=int_at_least(2), default=256,
                   help="fresh runs in the evaluation batch (256)")
    g.add_argument("--eval-every", type=int_at_least(1), default=25,
                   help="evaluate every this many iterations (25)")
    g.add_argument("--out", default=os.path.join("runs", "train"),
                   help="output directory (runs/train)")
    g.add_argument("--checkpoint-every", type=int_at_least(1), default=25,
                   help="write checkpoint.npz every this many iterations (25), at the end "
                   "and on Ctrl-C")
    g.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.npz up to --iterations in total; the "
                   "checkpoint's settings are used, including its learning-rate schedule "
                   "(planned for the original --iterations), and other training flags "
                   "except --backend are ignored")
    g.add_argument("--force", action="store_true",
                   help="train into an --out folder that already holds a run, replacing it")
    g.add_argument("--no-plot", action="store_true", help="do not write training.png")
    g.add_argument("--progress", choices=PROGRESS_MODES, default="auto",
                   help="training progress on stderr: a bar, a line per ~10%% of the "
                   "iterations, or none (auto: a bar on a terminal, lines otherwise)")
    g.add_argument("--quiet", "-q", action="store_true",
                   help="print only warnings and errors: no progress, notices or summary "
                   "(the summary is still written to summary.json)")


def _progress(args: argparse.Namespace) -> str:
    """The progress mode: ``--progress``, or none with ``--quiet``."""
    return "none" if args.quiet else args.progress


def _note(args: argparse.Namespace, line: str) -> None:
    """A notice on stderr, unless ``--quiet``."""
    if not args.quiet:
        print(line, file=sys.stderr, flush=True)


def _compiled(prefix: str) -> bool | None:
    """Whether Numba has machine code for the parallel kernels of the modules under ``prefix``.

    True when one of them is compiled in this process or has a valid entry in
    Numba's on-disk cache (stale entries, from edited sources, do not count);
    None when that cannot be told (no such module loaded, or a Numba whose
    cache internals differ).
    """
    try:
        from numba.core.dispatcher import Dispatcher
    except ImportError:  # pragma: no cover - numba is a hard dependency
        return None
    seen = False
    for name, module in list(sys.modules.items()):
        if module is None or not (name == prefix or name.startswith(prefix + ".")):
            continue
        for value in list(vars(module).values()):
            if not (isinstance(value, Dispatcher) and value.targetoptions.get("parallel")):
                continue
            seen = True
            if value.signatures:
                return True
            try:
                # Numba's own check: an index whose source stamp matches.
                if value._cache._cache_file._load_index():  # type: ignore[attr-defined]
                    return True
            except Exception:
                return None
    return False if seen else None


_NOTICE_SHOWN = False  # the fallback: tell once per process when the cache cannot be read


def _compile_notice(system: CellSystem, backend: str) -> str | None:
    """The "compiling kernels" line for a run of ``system`` on ``backend``, or None."""
    global _NOTICE_SHOWN
    from .. import backends

    groups = []
    if system.engine == "numba":
        groups.append("kdentropy.cells._kernels")
    if backend != "numpy":
        backends.load(backend)  # its modules must be imported to be inspected
        groups.append(f"kdentropy.backends.{backend}")
    states = [_compiled(group) for group in groups]
    missing = sum(state is False for state in states)
    if None in states and not _NOTICE_SHOWN:
        missing = max(missing, 1)  # cannot tell: say it once, on the first run
    if missing == 0:
        return None
    _NOTICE_SHOWN = True
    return (f"compiling kernels (first run only, ~{missing * _COMPILE_SECONDS} s; later runs "
            "use Numba's cache)")


def _train_new(args: argparse.Namespace, ckpt: str) -> tuple[TrainResult, str]:
    """A new run from the command-line settings, through :func:`kdentropy.cells.train`."""
    from .. import cells
    from ..optim import Adam, Constant, Cosine
    from .supervision import supervised

    backend = host_backend(args.backend)
    if args.grid is not None:
        shape: int | tuple[int, int] = args.grid
        topology = "torus" if args.ring else "grid"
    else:
        shape, topology = args.cells, "ring" if args.ring else "line"
    system = cells.CellSystem(shape, args.steps, hidden=(args.hidden,), topology=topology,
                              radius=args.radius,
                              position="none" if args.no_position else "auto",
                              noise=args.noise, hidden_channels=args.channels, rate=args.rate,
                              engine=args.engine)
    schedule: Cosine | Constant
    if args.schedule == "cosine":
        # Cosine refuses this too, but its message names min_lr, not the flags.
        if args.min_lr > args.lr:
            raise CLIError(f"--min-lr {args.min_lr} must not exceed --lr {args.lr}", 2)
        schedule = Cosine(args.lr, args.iterations, min_lr=args.min_lr)
    else:
        schedule = Constant(args.lr)
    auto = args.sigma == SIGMA_AUTO
    if auto:
        args = argparse.Namespace(**{**vars(args),
                                     "sigma": cells.loss.auto_sigma(system.n_cells)})
    # The one check of the soft-entropy flags, after "auto" became a number.
    loss = cells.ReproducibilityLoss.from_params(soft_params_from_args(args),
                                                 anti_collapse=args.anti_collapse,
                                                 backend=backend)
    _prepare_out(args.out, force=args.force)
    if auto:  # after every check, so that an error stays the only line
        _note(args, f"kernel width: --sigma auto = 0.5 sqrt({system.n_cells} cells / 32) = "
              f"{args.sigma:.4g}")
    notice = _compile_notice(system, backend)
    if notice:
        _note(args, notice)
    with supervised(args.iterations, ckpt, progress=_progress(args)) as after_iteration:
        result = cells.train(system, iterations=args.iterations, batch=args.batch,
                             optimizer=Adam(lr=schedule, clip_norm=args.clip_norm), loss=loss,
                             seed=args.seed, eval_batch=args.eval_batch,
                             eval_every=args.eval_every, checkpoint=ckpt,
                             checkpoint_every=args.checkpoint_every, callback=after_iteration)
    return result, backend


def _train_resumed(args: argparse.Namespace, ckpt: str) -> tuple[TrainResult, str]:
    """Continue ``OUT/checkpoint.npz`` up to ``--iterations`` with :meth:`Trainer.fit`."""
    from ..cells import Trainer
    from .supervision import supervised

    if not os.path.isfile(ckpt):
        raise CLIError(f"--resume: no checkpoint at {ckpt!r}")
    # Without --backend, keep the checkpoint's: a different backend rounds
    # differently and the resumed run would not be bit-identical.
    trainer = Trainer.load(ckpt, backend=args.backend and host_backend(args.backend))
    remaining = args.iterations - trainer.iteration
    if remaining < 0:
        raise CLIError(f"--resume: the checkpoint is already at iteration "
                       f"{trainer.iteration} > --iterations {args.iterations}")
    _note(args, f"resuming at iteration {trainer.iteration} of {args.iterations}")
    notice = _compile_notice(trainer.system, trainer.loss.backend or host_backend(None))
    if notice:
        _note(args, notice)
    with supervised(remaining, ckpt, progress=_progress(args)) as after_iteration:
        result = trainer.fit(remaining, checkpoint=ckpt, checkpoint_every=args.checkpoint_every,
                             callback=after_iteration)
    return result, trainer.loss.backend or "auto"


def _prepare_out(out: str, *, force: bool) -> None:
    """Create the output folder; refuse one that holds a run unless ``force`` (then clear it)."""
    from .. import runs

    if os.path.exists(out) and not os.path.isdir(out):
        raise CLIError(f"--out {out!r} exists and is not a directory")
    found = runs.files_in(out)
    if found and not force:
        raise CLIError(f"--out {out!r} already holds a run ({', '.join(found)}): add --resume "
                       "to continue it, --force to replace it, or choose another --out")
    try:
        os.makedirs(out, exist_ok=True)
        for f in found:  # so that no file of the replaced run is mistaken for the new one's
            os.remove(os.path.join(out, f))
    except OSError as exc:
        raise CLIError(f"cannot prepare output directory {out!r}: "
                       f"{exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    """Train (or resume), write the run folder and print the summary.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``train`` arguments.

    Returns
    -------
    int
        0, or 130 when Ctrl-C stopped training (the checkpoint is saved and
        the command that resumes it printed).
    """
    from .. import runs
    from .summary import summary_text
    from .supervision import TrainingInterrupted

    ckpt = runs.checkpoint_in(args.out)
    try:
        result, backend = (_train_resumed if args.resume else _train_new)(args, ckpt)
    except TrainingInterrupted as exc:
        resume = (f"{PROG} train --out {shlex.quote(args.out)} --iterations {args.iterations} "
                  "--resume")
        print(f"{PROG}: interrupted at iteration {exc.iteration} of {args.iterations}; "
              f"checkpoint saved to {exc.checkpoint}\nresume with: {resume}", file=sys.stderr)
        return 130
    written, note = runs.write_results(result, args.out, backend, plot=not args.no_plot)
    if not args.quiet:
        print(summary_text(result, backend, written, args.out, note), end="")
    return 0
