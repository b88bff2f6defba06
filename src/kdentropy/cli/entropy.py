"""``kdentropy entropy FILE.npy``: soft and hard entropy of a saved batch of patterns."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np

from .._params import DEFAULT, SoftParams
from ..estimate import DEFAULT_N_BOOT, METHODS, RECOMMENDED
from .args import BACKENDS, CLIError, finite_float, first_line, host_backend, int_at_least, log_base
from .summary import estimate_text

__all__ = ["add_parser", "run", "soft_params_from_args", "load_array"]


def add_parser(sub: Any) -> None:
    """Add the ``entropy`` subcommand to the subparsers ``sub``.

    Parameters
    ----------
    sub : argparse subparsers action
    """
    e = sub.add_parser("entropy", help="soft and hard entropy of a saved batch (.npy)",
                       description="Soft (kernel-density) and hard (exact) reproducibility "
                       "entropy of an array of shape (..., N, D) saved with numpy.save.")
    e.add_argument("file", metavar="FILE.npy", help="array of shape (..., N, D)")
    e.add_argument("--temperature", type=finite_float, default=DEFAULT.temperature,
                   help=f"sigmoid temperature ({DEFAULT.temperature:g})")
    e.add_argument("--sigma", type=finite_float, default=DEFAULT.sigma,
                   help=f"kernel width ({DEFAULT.sigma:g})")
    e.add_argument("--threshold", type=finite_float, default=DEFAULT.threshold,
                   help=f"binarisation threshold ({DEFAULT.threshold:g})")
    e.add_argument("--base", type=log_base, default=None,
                   help="logarithm base: e (default, nats), 2 or 'bits', or any number > 0")
    e.add_argument("--normalize", action="store_true", help="divide by D (entropy per cell)")
    e.add_argument("--backend", choices=BACKENDS, default=None,
                   help="backend (default: $KDENTROPY_BACKEND or auto)")
    e.add_argument("--estimator", choices=METHODS, default=RECOMMENDED,
                   help=f"estimator of the system's entropy, printed with its interval "
                   f"({RECOMMENDED})")
    e.add_argument("--confidence", type=finite_float, default=0.95,
                   help="nominal coverage of the interval, in (0, 1) (0.95)")
    e.add_argument("--n-boot", type=int_at_least(1), default=DEFAULT_N_BOOT,
                   help=f"bootstrap resamples of the interval ({DEFAULT_N_BOOT}; not used by nsb)")
    e.add_argument("--seed", type=int_at_least(0), default=0,
                   help="seed of the bootstrap resamples (0): the same file prints the same "
                   "interval every time")
    e.add_argument("--json", action="store_true", help="print JSON")


def soft_params_from_args(args: argparse.Namespace) -> SoftParams:
    """The soft-entropy keywords the flags give, validated once (the library's own rules).

    Commands without a flag for a keyword (``train`` has no ``--threshold``
    or ``--base``) get its default.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments: ``temperature`` and ``sigma``, and optionally
        ``threshold``, ``base`` and ``normalize``.

    Returns
    -------
    SoftParams

    Raises
    ------
    CLIError
        A usage error (status 2) naming the flag, with the library's message.
    """
    try:
        return SoftParams(args.temperature, args.sigma,
                          getattr(args, "threshold", DEFAULT.threshold),
                          getattr(args, "base", DEFAULT.base),
                          getattr(args, "normalize", DEFAULT.normalize))
    except (TypeError, ValueError) as exc:
        message = first_line(exc)
        # _validation names the keyword first: map it to its flag.
        flag = message.split(" ", 1)[0]
        raise CLIError(f"argument --{flag}: {message}", 2) from None


def load_array(path: str) -> np.ndarray:
    """The array in a ``.npy`` file, or a :class:`CLIError` saying what is wrong with the file.

    Parameters
    ----------
    path : str

    Returns
    -------
    ndarray
    """
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
        raise CLIError(f"cannot read {path!r} as a .npy array: {first_line(exc)}") from None
    except OSError as exc:
        raise CLIError(f"cannot read {path!r}: {exc.strerror or exc}") from None


def _unit(base: float | None, normalize: bool) -> str:
    """The unit of the printed entropies: nats, bits or ``log base b``, maybe per cell."""
    if base is None:
        unit = "nats"
    else:
        unit = "bits" if base == 2.0 else f"log base {base:g}"
    return unit + " per cell" if normalize else unit


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def run(args: argparse.Namespace) -> int:
    """Print the soft and hard entropy of ``args.file`` (as text or JSON).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``entropy`` arguments.

    Returns
    -------
    int
        0.
    """
    import kdentropy as kde
    from .._soft import compute

    p = soft_params_from_args(args)  # usage errors before the file is read
    if not 0.0 < args.confidence < 1.0:
        raise CLIError(f"argument --confidence: must be in (0, 1); got {args.confidence:g}", 2)
    A = load_array(args.file)
    backend = host_backend(args.backend)
    try:
        soft = compute(A, p, backend, want_grad=False)[0]
        hard = kde.hard_entropy(A, p.threshold, base=p.base, normalize=p.normalize)
        est = kde.entropy_estimate(A, args.estimator, p.threshold, base=p.base,
                                   normalize=p.normalize, confidence=args.confidence,
                                   n_boot=args.n_boot, rng=args.seed)
    except (ValueError, TypeError) as exc:  # the data is unusable: say which file
        raise CLIError(f"{args.file!r}: {first_line(exc)}") from None
    distinct = None
    if A.ndim == 2:
        distinct = int(kde.pattern_counts(A, p.threshold)[1].size)
    unit = _unit(p.base, p.normalize)
    result = {"file": args.file, "shape": list(A.shape), "N": int(A.shape[-2]),
              "D": int(A.shape[-1]), "soft_entropy": _jsonable(soft),
              "hard_entropy": _jsonable(hard), "distinct_patterns": distinct, "unit": unit,
              "temperature": p.temperature, "sigma": p.sigma, "threshold": p.threshold,
              "base": p.base, "normalize": p.normalize, "backend": backend,
              "entropy_estimate": est.to_dict()}
    if args.json:
        print(json.dumps(result))
        return 0

    def fmt(v: Any) -> str:
        return f"{v:.6f}" if np.ndim(v) == 0 else np.array2string(np.asarray(v), precision=6)

    print(f"{args.file}: shape {tuple(A.shape)} "
          f"(N = {A.shape[-2]} patterns, D = {A.shape[-1]} cells)")
    print(f"soft entropy: {fmt(soft)} {unit}  (temperature {p.temperature:g}, "
          f"sigma {p.sigma:g}, backend {backend})")
    print(f"hard entropy: {fmt(hard)} {unit}  (threshold {p.threshold:g})")
    if distinct is not None:
        print(f"distinct patterns: {distinct}")
    level = f"{100 * args.confidence:g} %"
    if np.ndim(est.estimate) == 0:
        line = estimate_text(est.estimate, est.low, est.high, est.coverage, est.method, unit)
        print(f"estimated entropy of the system: {line.replace('95 %', level)}")
    else:
        print(f"estimated entropy of the system ({est.method}): {fmt(est.estimate)} {unit}")
        print(f"  {level} CI low:  {fmt(est.low)}\n  {level} CI high: {fmt(est.high)}")
        print(f"  coverage: {np.array2string(np.asarray(est.coverage), precision=2)}")
    return 0
