"""``kdentropy plot RUN_DIR``: redraw the figure of a training run."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .args import CLIError

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add the ``plot`` subcommand to the subparsers ``sub``.

    Parameters
    ----------
    sub : argparse subparsers action
    """
    pl = sub.add_parser("plot", help="redraw the figure of a training run",
                        description="Redraw training.png from RUN_DIR/checkpoint.npz "
                        "(needs matplotlib).")
    pl.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by 'kdentropy train'")
    pl.add_argument("--out", default=None,
                    help="where the PNG goes (default: RUN_DIR/training.png)")


def run(args: argparse.Namespace) -> int:
    """Draw the figure of the run in ``args.run_dir`` from its checkpoint.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``plot`` arguments.

    Returns
    -------
    int
        0.
    """
    from .. import runs
    from ..cells import Trainer

    # The wording of kdentropy.runs.load_run, so that plot and evaluate say the same.
    if not os.path.exists(args.run_dir):
        raise CLIError(f"no such file or folder: {args.run_dir!r}")
    ckpt = runs.checkpoint_in(args.run_dir)
    if not os.path.isfile(ckpt):
        raise CLIError(f"{args.run_dir!r} holds no {runs.CHECKPOINT} "
                       "(a folder written by 'kdentropy train')")
    trainer = Trainer.load(ckpt)
    path = args.out or os.path.join(args.run_dir, runs.FIGURE)
    try:
        runs.write_figure(trainer, trainer.params_initial, path)
    except ImportError:
        raise CLIError('drawing the figure needs matplotlib: pip install "kdentropy[plot]"'
                       ) from None
    print(f"wrote {path}")
    return 0
