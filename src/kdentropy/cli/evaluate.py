"""``kdentropy evaluate RUN_DIR``: fresh runs of a trained system, summarised as by train."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .args import int_at_least, nonneg_float

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add the ``evaluate`` subcommand to the subparsers ``sub``.

    Parameters
    ----------
    sub : argparse subparsers action
    """
    v = sub.add_parser("evaluate", help="fresh runs of a trained system, summarised as by train",
                       description="Run a trained cell system (RUN_DIR/params.npz, or its "
                       "checkpoint.npz) on an evaluation batch, before and after training, and "
                       "print the summary lines of 'kdentropy train'. With the defaults this "
                       "is the batch training reported; another --seed gives runs training "
                       "never saw.")
    v.add_argument("run_dir", metavar="RUN_DIR",
                   help="a folder written by 'kdentropy train' (or a params.npz or "
                   "checkpoint.npz file)")
    v.add_argument("--runs", type=int_at_least(2), default=None,
                   help="runs in the batch (default: the run's --eval-batch)")
    v.add_argument("--noise", type=nonneg_float, default=None,
                   help="noise level, in [0, 10] (default: the trained one)")
    v.add_argument("--seed", type=int_at_least(0), default=None,
                   help="seed of the batch (default: the run's seed, i.e. its evaluation batch)")
    v.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    """Evaluate the run in ``args.run_dir`` and print the summary lines (or JSON).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``evaluate`` arguments.

    Returns
    -------
    int
        0.
    """
    from ..cells.metrics import ESTIMATE_KEYS
    from ..runs import load_run
    from .summary import evaluation_lines

    saved = load_run(args.run_dir)
    runs = saved.config["eval_batch"] if args.runs is None else args.runs
    seed = saved.config["seed"] if args.seed is None else args.seed
    before, after = saved.evaluate(runs, seed, args.noise)
    system = saved.system if args.noise is None else saved.with_noise(args.noise)
    if args.json:
        keys = ("hard_entropy", "soft_entropy", "distinct", "fraction_on", "boundaries",
                "mode_fraction", *ESTIMATE_KEYS)
        print(json.dumps({"source": saved.source, "runs": runs, "seed": seed,
                          "noise": system.noise, "unit": "nats",
                          "before": {k: before[k] for k in keys},
                          "after": {k: after[k] for k in keys}}))
        return 0
    print(f"model: {saved.source} (seed {seed})")
    print("\n".join(evaluation_lines(before, after, system, runs, saved.loss.threshold)))
    return 0
