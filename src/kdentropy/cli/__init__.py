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

One module per command (``add_parser`` and ``run``), the shared argument
types in :mod:`~kdentropy.cli.args`. Errors (bad files, bad arguments) print
one line on stderr and give a non-zero exit status: 2 for usage errors, 1 for
everything else; :func:`main` holds that policy. A usage error names the help
to read (``kdentropy train --help``) and, for a misspelt flag, subcommand or
choice, the closest correct one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..backends import BackendUnavailableError
from . import entropy, evaluate, info, plot, train
from .args import PROG, CLIError, Parser, first_line

__all__ = ["main"]

# In the order of the help text.
_COMMANDS = {"train": train, "entropy": entropy, "evaluate": evaluate, "plot": plot,
             "info": info}


def _build_parser() -> tuple[Parser, dict[str, Parser]]:
    """The top-level parser and each subcommand's parser, by name."""
    parser = Parser(prog=PROG, description="Differentiable reproducibility entropy of "
                    "pattern batches, and training cell systems to be reproducible.",
                    epilog=f"'{PROG} COMMAND --help' lists a command's options.")
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in _COMMANDS.values():
        command.add_parser(sub)
    return parser, dict(sub.choices)


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
    parser, commands = _build_parser()
    try:
        try:
            args, extras = parser.parse_known_args(None if argv is None else list(argv))
        except SystemExit as exc:  # --help and --version exit through argparse
            return int(exc.code or 0) if not isinstance(exc.code, str) else 2
        if extras:
            # Reported by the subcommand's parser, so that the line points to
            # its help and suggests its flags, not the top level's.
            commands.get(args.command, parser).error(
                f"unrecognized arguments: {' '.join(extras)}")
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        return _COMMANDS[args.command].run(args)
    except CLIError as exc:
        print(f"{exc.prog}: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BackendUnavailableError as exc:
        # The library says what is missing; the command line adds the way round it.
        message = first_line(exc)
        also = "or " if "pip install" in message else ""
        print(f"{PROG}: error: {message}; {also}run on the CPU with --backend cpu",
              file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError, ArithmeticError) as exc:
        # Library validation errors name the argument, and a diverged training
        # (FloatingPointError) says where; one line is enough.
        print(f"{PROG}: error: {first_line(exc)}", file=sys.stderr)
        return 1
    except MemoryError as exc:
        print(f"{PROG}: error: out of memory: {first_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # never a traceback from the command line
        # Qualify bare "error" types (zlib.error, ...) so the line never reads "error: error:".
        kind = type(exc).__name__
        if kind.lower() == "error":
            kind = f"{type(exc).__module__}.{kind}"
        print(f"{PROG}: error: {kind}: {first_line(exc)}", file=sys.stderr)
        return 1
