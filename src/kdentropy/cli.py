"""The ``kdentropy`` command line.

``kdentropy train``
    Train a cell system (a line, ring, 2-D grid or torus, with optional
    hidden channels) to produce reproducible patterns; writes ``params.npz``,
    ``history.csv``, ``summary.json``, ``checkpoint.npz`` and, with
    matplotlib, ``training.png`` into ``--out``. Ctrl-C saves a checkpoint
    and prints how to resume.
``kdentropy evaluate RUN_DIR``
    Fresh evaluation runs of a trained system, with the summary lines of
    ``train``.
``kdentropy plot RUN_DIR``
    Redraw ``training.png`` from ``RUN_DIR/checkpoint.npz``.
``kdentropy entropy FILE.npy``
    Soft and hard entropy of a saved batch of patterns.
``kdentropy info``
    Versions, available backends, Numba threads and GPU presence.

Errors (bad files, bad arguments) print one line on stderr and give a
non-zero exit status: 2 for usage errors, 1 for everything else. Numeric
flags are parsed here (a finite number) and range-checked by the library
classes they configure, whose ValueError is the line printed, so the command
line and the Python API accept exactly the same values.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends import BACKEND_NAMES as KNOWN_BACKENDS

if TYPE_CHECKING:
    from .cells import TrainResult

__all__ = ["main"]

PROG = "kdentropy"


class CLIError(Exception):
    """An error to report as one line, with an exit status."""

    def __init__(self, message: str, status: int = 1, prog: str = PROG) -> None:
        super().__init__(message)
        self.status = status
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """ArgumentParser that raises instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"{message} (see '{self.prog} --help')", status=2, prog=self.prog)


def _float_at_least(minimum: float | None = None, *, strict: bool = False
                    ) -> Callable[[str], float]:
    """An argparse ``type`` for finite floats ``>= minimum`` (``> minimum`` if strict)."""
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


_positive_float = _float_at_least(0.0, strict=True)
_nonneg_float = _float_at_least(0.0)
_finite_float = _float_at_least()


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers ``>= minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


def _grid_shape(text: str) -> tuple[int, int]:
    """An argparse ``type`` for ``HxW`` (e.g. ``12x12``): two integers >= 1."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        H, W = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 12x12, got {text!r}") from None
    if H < 1 or W < 1:
        raise argparse.ArgumentTypeError(f"expected sizes >= 1, got {text!r}")
    return H, W


def _base(text: str) -> float | None:
    if text.lower() in ("e", "nat", "nats"):
        return None
    if text.lower() in ("bit", "bits"):
        return 2.0
    value = _positive_float(text)
    if value == 1.0:
        raise argparse.ArgumentTypeError("the logarithm base must not be 1")
    return value


_BACKENDS = ("auto", *KNOWN_BACKENDS)


def _build_parser() -> _Parser:
    parser = _Parser(prog=PROG, description="Differentiable reproducibility entropy of "
                     "pattern batches, and training cell systems to be reproducible.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # -- train ---------------------------------------------------------------
    t = sub.add_parser("train", help="train a cell system to give reproducible patterns",
                       description="Train the cells' shared MLP to minimise the soft "
                       "entropy of their final patterns, and report the hard entropy of "
                       "a fresh evaluation batch before and after.")
    g = t.add_argument_group("cell system")
    g.add_argument("--cells", type=_int_at_least(2), default=32,
                   help="number of cells on a line or ring (32)")
    g.add_argument("--grid", type=_grid_shape, default=None, metavar="HxW",
                   help="a 2-D grid of H x W cells with a 3x3 neighbourhood instead of a "
                   "line, e.g. 12x12 (zero padding beyond the edges unless --ring)")
    g.add_argument("--ring", "--torus", dest="ring", action="store_true",
                   help="wrap the edges around: a ring of --cells, or a torus with --grid")
    g.add_argument("--channels", type=_int_at_least(0), default=0, metavar="K",
                   help="hidden channels per cell besides the visible one (0)")
    g.add_argument("--rate", type=_positive_float, default=1.0,
                   help="how far a state moves towards the network's output per step, "
                   "in (0, 1] (1: replaced)")
    g.add_argument("--steps", type=_int_at_least(1), default=16, help="update steps per run (16)")
    g.add_argument("--hidden", type=_int_at_least(1), default=16,
                   help="hidden units of the tanh MLP (16)")
    g.add_argument("--radius", type=_int_at_least(0), default=1,
                   help="neighbourhood radius per axis (1: 3 cells, or 3x3 on a grid)")
    g.add_argument("--noise", type=_nonneg_float, default=0.05,
                   help="std of the per-step Gaussian noise on every channel, in [0, 10] (0.05)")
    g.add_argument("--no-position", action="store_true",
                   help="no position features: patterns must come from the edges and the "
                   "hidden channels")
    g.add_argument("--engine", choices=("auto", "numpy", "numba"), default="auto",
                   help="roll-out and back-propagation: compiled Numba kernels or the NumPy "
                   "reference (auto: numba)")
    g = t.add_argument_group("training")
    g.add_argument("--batch", type=_int_at_least(2), default=64, help="runs per iteration (64)")
    g.add_argument("--iterations", type=_int_at_least(0), default=200,
                   help="optimizer steps (200)")
    g.add_argument("--lr", type=_positive_float, default=0.03,
                   help="Adam learning rate, in (0, 10] (0.03)")
    g.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="learning-rate schedule: cosine decay to --min-lr, or constant (cosine)")
    g.add_argument("--min-lr", type=_nonneg_float, default=1e-3,
                   help="final rate of the cosine schedule (0.001)")
    g.add_argument("--clip-norm", type=_positive_float, default=None,
                   help="rescale gradients whose norm exceeds this (default: no clipping)")
    g.add_argument("--anti-collapse", type=_nonneg_float, default=100.0,
                   help="weight of the (mean state - 1/2)^2 anti-collapse term, "
                   "in [0, 1e6] (100)")
    g.add_argument("--temperature", type=_positive_float, default=10.0,
                   help="soft-entropy temperature, in (0, 1e50] (10)")
    g.add_argument("--sigma", type=_positive_float, default=0.5,
                   help="kernel width, >= 1e-50 (0.5); grow it with the pattern size, about "
                   "0.5 sqrt(cells / 32): 1 for a 12x12 grid")
    g.add_argument("--seed", type=_int_at_least(0), default=0, help="random seed (0)")
    g.add_argument("--backend", choices=_BACKENDS, default=None,
                   help="entropy backend (default: $KDENTROPY_BACKEND or auto, i.e. cpu; "
                   "with --resume, the checkpoint's)")
    g = t.add_argument_group("evaluation and output")
    g.add_argument("--eval-batch", type=_int_at_least(2), default=256,
                   help="fresh runs in the evaluation batch (256)")
    g.add_argument("--eval-every", type=_int_at_least(1), default=25,
                   help="evaluate every this many iterations (25)")
    g.add_argument("--out", default=os.path.join("runs", "train"),
                   help="output directory (runs/train)")
    g.add_argument("--checkpoint-every", type=_int_at_least(1), default=25,
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
    g.add_argument("--quiet", "-q", action="store_true", help="no progress or summary output")

    # -- entropy -------------------------------------------------------------
    e = sub.add_parser("entropy", help="soft and hard entropy of a saved batch (.npy)",
                       description="Soft (kernel-density) and hard (exact) reproducibility "
                       "entropy of an array of shape (..., N, D) saved with numpy.save.")
    e.add_argument("file", metavar="FILE.npy", help="array of shape (..., N, D)")
    e.add_argument("--temperature", type=_positive_float, default=10.0,
                   help="sigmoid temperature (10)")
    e.add_argument("--sigma", type=_positive_float, default=0.5, help="kernel width (0.5)")
    e.add_argument("--threshold", type=_finite_float, default=0.5,
                   help="binarisation threshold (0.5)")
    e.add_argument("--base", type=_base, default=None,
                   help="logarithm base: e (default, nats), 2 or 'bits', or any number > 0")
    e.add_argument("--normalize", action="store_true", help="divide by D (entropy per cell)")
    e.add_argument("--backend", choices=_BACKENDS, default=None,
                   help="backend (default: $KDENTROPY_BACKEND or auto)")
    e.add_argument("--json", action="store_true", help="print JSON")

    # -- evaluate ------------------------------------------------------------
    v = sub.add_parser("evaluate", help="fresh runs of a trained system, summarised as by train",
                       description="Run a trained cell system (RUN_DIR/params.npz, or its "
                       "checkpoint.npz) on an evaluation batch, before and after training, and "
                       "print the summary lines of 'kdentropy train'. With the defaults this "
                       "is the batch training reported; another --seed gives runs training "
                       "never saw.")
    v.add_argument("run_dir", metavar="RUN_DIR",
                   help="a folder written by 'kdentropy train' (or a params.npz or "
                   "checkpoint.npz file)")
    v.add_argument("--runs", type=_int_at_least(2), default=None,
                   help="runs in the batch (default: the run's --eval-batch)")
    v.add_argument("--noise", type=_nonneg_float, default=None,
                   help="noise level, in [0, 10] (default: the trained one)")
    v.add_argument("--seed", type=_int_at_least(0), default=None,
                   help="seed of the batch (default: the run's seed, i.e. its evaluation batch)")
    v.add_argument("--json", action="store_true", help="print JSON")

    # -- plot ----------------------------------------------------------------
    pl = sub.add_parser("plot", help="redraw the figure of a training run",
                        description="Redraw training.png from RUN_DIR/checkpoint.npz "
                        "(needs matplotlib).")
    pl.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by 'kdentropy train'")
    pl.add_argument("--out", default=None,
                    help="where the PNG goes (default: RUN_DIR/training.png)")

    # -- info ----------------------------------------------------------------
    i = sub.add_parser("info", help="versions, backends, threads and GPU",
                       description="Report versions, available backends, Numba threads and "
                       "GPU presence.")
    i.add_argument("--json", action="store_true", help="print JSON")
    return parser


# ----------------------------------------------------------------------------- helpers

def _host_backend(name: str | None) -> str:
    """The concrete backend that host arrays get for ``--backend name``.

    ``None`` (no ``--backend``) means the library default, so
    ``KDENTROPY_BACKEND`` applies; ``auto`` is ``cpu`` for host arrays. An
    unavailable backend raises the library's own error, which says why
    (missing numba-cuda, no GPU, ...).
    """
    from . import backends
    name = backends.resolve(name)
    backends.load(name)
    return name


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type name)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------- train

def _train_new(args: argparse.Namespace, ckpt: str, out: str) -> tuple[TrainResult, str]:
    """A new run from the command-line settings, through :func:`kdentropy.cells.train`."""
    from .cells import CellSystem, ReproducibilityLoss, train
    from .optim import Adam, Constant, Cosine

    backend = _host_backend(args.backend)
    if args.grid is not None:
        shape: int | tuple[int, int] = args.grid
        topology = "torus" if args.ring else "grid"
    else:
        shape, topology = args.cells, "ring" if args.ring else "line"
    system = CellSystem(shape, args.steps, hidden=(args.hidden,), topology=topology,
                        radius=args.radius, position="none" if args.no_position else "auto",
                        noise=args.noise, hidden_channels=args.channels, rate=args.rate,
                        engine=args.engine)
    if args.schedule == "cosine" and args.iterations > 0:
        if args.min_lr > args.lr:
            raise CLIError(f"--min-lr {args.min_lr} must not exceed --lr {args.lr}", 2)
        schedule = Cosine(args.lr, args.iterations, min_lr=args.min_lr)
    else:
        schedule = Constant(args.lr)
    loss = ReproducibilityLoss(args.temperature, args.sigma,
                               anti_collapse=args.anti_collapse, backend=backend)
    _prepare_out(out, force=args.force)
    result = train(system, iterations=args.iterations, batch=args.batch,
                   optimizer=Adam(lr=schedule, clip_norm=args.clip_norm), loss=loss,
                   seed=args.seed, eval_batch=args.eval_batch, eval_every=args.eval_every,
                   progress=not args.quiet, checkpoint=ckpt,
                   checkpoint_every=args.checkpoint_every)
    return result, backend


def _train_resumed(args: argparse.Namespace, ckpt: str, out: str) -> tuple[TrainResult, str]:
    """Continue ``OUT/checkpoint.npz`` up to ``--iterations`` with :meth:`Trainer.fit`."""
    from .cells import Trainer

    if not os.path.isfile(ckpt):
        raise CLIError(f"--resume: no checkpoint at {ckpt!r}")
    # Without --backend, keep the checkpoint's: a different backend rounds
    # differently and the resumed run would not be bit-identical.
    trainer = Trainer.load(ckpt, backend=args.backend and _host_backend(args.backend))
    remaining = args.iterations - trainer.iteration
    if remaining < 0:
        raise CLIError(f"--resume: the checkpoint is already at iteration "
                       f"{trainer.iteration} > --iterations {args.iterations}")
    if not args.quiet:
        print(f"resuming at iteration {trainer.iteration} of {args.iterations}",
              file=sys.stderr, flush=True)
    result = trainer.fit(remaining, progress=not args.quiet, checkpoint=ckpt,
                         checkpoint_every=args.checkpoint_every)
    return result, trainer.loss.backend or "auto"


#: The files a training run writes; a folder holding any of them holds a run.
_RUN_FILES = ("checkpoint.npz", "params.npz", "summary.json", "history.csv", "training.png")


def _prepare_out(out: str, *, force: bool) -> None:
    """Create the output folder; refuse one that holds a run unless ``force`` (then clear it)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise CLIError(f"--out {out!r} exists and is not a directory")
    found = [f for f in _RUN_FILES if os.path.exists(os.path.join(out, f))]
    if found and not force:
        raise CLIError(f"--out {out!r} already holds a run ({', '.join(found)}): add --resume "
                       "to continue it, --force to replace it, or choose another --out")
    try:
        os.makedirs(out, exist_ok=True)
        for f in found:  # so that no file of the old run is mistaken for the new one's
            os.remove(os.path.join(out, f))
    except OSError as exc:
        raise CLIError(f"cannot prepare output directory {out!r}: "
                       f"{exc.strerror or exc}") from None


def _resume_command(args: argparse.Namespace) -> str:
    import shlex
    return f"{PROG} train --out {shlex.quote(args.out)} --iterations {args.iterations} --resume"


def _cmd_train(args: argparse.Namespace) -> int:
    from .cells import TrainingInterrupted, report

    out = args.out
    ckpt = os.path.join(out, "checkpoint.npz")
    try:
        result, backend = (_train_resumed if args.resume else _train_new)(args, ckpt, out)
    except TrainingInterrupted as exc:
        # The trainer finished the iteration in progress and saved it.
        print(f"{PROG}: interrupted at iteration {exc.iteration} of {args.iterations}; "
              f"checkpoint saved to {exc.checkpoint}\n"
              f"resume with: {_resume_command(args)}", file=sys.stderr)
        return 130
    written, note = report.write_report(result, out, backend, plot=not args.no_plot)
    if not args.quiet:
        print(report.summary_text(result, backend, written, out, note), end="")
    return 0


# ----------------------------------------------------------------------------- evaluate, plot

def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .cells import load_run, report

    run = load_run(args.run_dir)
    runs = run.config["eval_batch"] if args.runs is None else args.runs
    seed = run.config["seed"] if args.seed is None else args.seed
    before, after = run.evaluate(runs, seed, args.noise)
    system = run.system if args.noise is None else run.with_noise(args.noise)
    if args.json:
        keys = ("hard_entropy", "soft_entropy", "distinct", "fraction_on", "boundaries",
                "mode_fraction")
        print(json.dumps({"source": run.source, "runs": runs, "seed": seed,
                          "noise": system.noise, "unit": "nats",
                          "before": {k: before[k] for k in keys},
                          "after": {k: after[k] for k in keys}}))
        return 0
    print(f"model: {run.source} (seed {seed})")
    print("\n".join(report.evaluation_lines(before, after, system, runs, run.loss.threshold)))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .cells import Trainer, report

    ckpt = os.path.join(args.run_dir, "checkpoint.npz")
    if not os.path.isfile(ckpt):
        raise CLIError(f"no checkpoint.npz in {args.run_dir!r} (written by 'kdentropy train')")
    trainer = Trainer.load(ckpt)
    path = args.out or os.path.join(args.run_dir, "training.png")
    try:
        report.plot_training(trainer, trainer.params_initial, path)
    except ImportError:
        raise CLIError("drawing the figure needs matplotlib (pip install matplotlib)") from None
    print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------- entropy

def _load_array(path: str) -> np.ndarray:
    """The array in a ``.npy`` file, or a CLIError saying what is wrong with the file."""
    if not os.path.exists(path):
        raise CLIError(f"no such file: {path!r}")
    if os.path.isdir(path):
        raise CLIError(f"{path!r} is a directory, not a .npy file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(len(np.lib.format.MAGIC_PREFIX))
            if magic.startswith(b"PK\x03\x04"):
                raise CLIError(f"{path!r} is an .npz archive, not a .npy file; "
                               "save one array with numpy.save")
            if magic != np.lib.format.MAGIC_PREFIX:
                # np.load would try to unpickle it and blame "pickled data".
                raise CLIError(f"cannot read {path!r}: not a .npy file "
                               "(no NumPy format header)")
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise CLIError(f"cannot read {path!r} as a .npy array: {_first_line(exc)}") from None
    except OSError as exc:
        raise CLIError(f"cannot read {path!r}: {exc.strerror or exc}") from None


def _cmd_entropy(args: argparse.Namespace) -> int:
    import kdentropy as kde

    A = _load_array(args.file)
    backend = _host_backend(args.backend)
    try:
        soft = kde.soft_entropy(A, args.temperature, args.sigma, threshold=args.threshold,
                                base=args.base, normalize=args.normalize, backend=backend)
        hard = kde.hard_entropy(A, args.threshold, base=args.base, normalize=args.normalize)
    except (ValueError, TypeError) as exc:  # the data is unusable: say which file
        raise CLIError(f"{args.file!r}: {_first_line(exc)}") from None
    distinct = None
    if A.ndim == 2:
        distinct = int(kde.pattern_counts(A, args.threshold)[1].size)
    if args.base is None:
        unit = "nats"
    else:
        unit = "bits" if args.base == 2.0 else f"log base {args.base:g}"
    if args.normalize:
        unit += " per cell"
    result = {"file": args.file, "shape": list(A.shape), "N": int(A.shape[-2]),
              "D": int(A.shape[-1]), "soft_entropy": _jsonable(soft),
              "hard_entropy": _jsonable(hard), "distinct_patterns": distinct, "unit": unit,
              "temperature": args.temperature, "sigma": args.sigma,
              "threshold": args.threshold, "base": args.base, "normalize": args.normalize,
              "backend": backend}
    if args.json:
        print(json.dumps(result))
        return 0

    def fmt(v: Any) -> str:
        return f"{v:.6f}" if np.ndim(v) == 0 else np.array2string(np.asarray(v), precision=6)

    print(f"{args.file}: shape {tuple(A.shape)} "
          f"(N = {A.shape[-2]} patterns, D = {A.shape[-1]} cells)")
    print(f"soft entropy: {fmt(soft)} {unit}  (temperature {args.temperature:g}, "
          f"sigma {args.sigma:g}, backend {backend})")
    print(f"hard entropy: {fmt(hard)} {unit}  (threshold {args.threshold:g})")
    if distinct is not None:
        print(f"distinct patterns: {distinct}")
    return 0


# ----------------------------------------------------------------------------- info

def _version(dist: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _gpu_info() -> dict:
    """GPU presence through numba.cuda, without failing when numba-cuda or a driver is missing."""
    info: dict[str, Any] = {"cuda_available": False, "devices": [],
                            "simulator": os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"}
    try:
        import importlib
        cuda = importlib.import_module("numba.cuda")
    except Exception as exc:  # numba-cuda absent or broken: report, never crash
        info["reason"] = f"numba.cuda cannot be imported: {exc}".splitlines()[0]
        return info
    try:
        info["cuda_available"] = bool(cuda.is_available())
        if info["cuda_available"]:
            # Device names are bytes in some numba versions, str in others.
            names = [getattr(g, "name", g) for g in cuda.gpus]
            info["devices"] = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        else:
            info["reason"] = "no CUDA driver or GPU found"
    except Exception as exc:
        info["reason"] = _first_line(exc)
    return info


def _cmd_info(args: argparse.Namespace) -> int:
    import scipy

    import kdentropy as kde
    try:
        import numba
        numba_version: str | None = numba.__version__
        threads: int | None = int(numba.get_num_threads())
        threading_layer = str(numba.config.THREADING_LAYER)
    except Exception:  # pragma: no cover - numba is a hard dependency
        numba_version, threads, threading_layer = None, None, None
    info = {
        "kdentropy": kde.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba_version,
        "numba_cuda": _version("numba-cuda"),
        "mpi4py": _version("mpi4py"),
        "matplotlib": _version("matplotlib"),
        "tqdm": _version("tqdm"),
        "backends": kde.available_backends(),
        "default_backend": kde.get_backend(),
        "numba_threads": threads,
        "threading_layer": threading_layer,
        "cpu_count": os.cpu_count(),
        "gpu": _gpu_info(),
    }
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"kdentropy   {info['kdentropy']}  (Python {info['python']}, {platform.platform()})")
    for name in ("numpy", "scipy", "numba", "numba_cuda", "mpi4py", "matplotlib", "tqdm"):
        print(f"{name.replace('_', '-'):<11} {info[name] or 'not installed'}")
    print(f"backends    {', '.join(info['backends'])}  (default: {info['default_backend']})")
    print(f"threads     {threads} Numba threads ({threading_layer} layer), "
          f"{info['cpu_count']} CPUs")
    gpu = info["gpu"]
    if gpu["cuda_available"]:
        kind = " (CUDA simulator)" if gpu["simulator"] else ""
        print(f"gpu         {', '.join(map(str, gpu['devices'])) or 'yes'}{kind}")
    else:
        print(f"gpu         none ({gpu.get('reason', 'not available')})")
    return 0


# ----------------------------------------------------------------------------- main

def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kdentropy`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 on success, 2 for usage errors, 1 for other errors
        (each reported as one line on stderr, never a traceback).
    """
    parser = _build_parser()
    try:
        try:
            args = parser.parse_args(None if argv is None else list(argv))
        except SystemExit as exc:  # --help and --version exit through argparse
            return int(exc.code or 0) if not isinstance(exc.code, str) else 2
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        handler = {"train": _cmd_train, "evaluate": _cmd_evaluate, "plot": _cmd_plot,
                   "entropy": _cmd_entropy, "info": _cmd_info}
        return handler[args.command](args)
    except CLIError as exc:
        print(f"{exc.prog}: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ArithmeticError) as exc:
        # Library validation errors name the argument, and a diverged training
        # (FloatingPointError) says where; one line is enough.
        print(f"{PROG}: error: {_first_line(exc)}", file=sys.stderr)
        return 1
    except MemoryError as exc:
        print(f"{PROG}: error: out of memory: {_first_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # never a traceback from the command line
        # Qualify bare "error" types (zlib.error, ...) so the line never reads "error: error:".
        kind = type(exc).__name__
        if kind.lower() == "error":
            kind = f"{type(exc).__module__}.{kind}"
        print(f"{PROG}: error: {kind}: {_first_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
