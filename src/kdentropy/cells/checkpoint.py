"""Training checkpoints: one ``.npz`` file, written atomically, read without pickles.

A checkpoint holds the trainer's configuration (JSON), the current and
initial parameter vectors, the iteration count, the training random stream's
state (JSON), the optimizer state (``optim.*``) and the history
(``history.*``). :class:`Checkpoint` is that content in memory;
:func:`write` and :func:`read` move it to and from disk, and
:meth:`kdentropy.cells.Trainer.save` / :meth:`~kdentropy.cells.Trainer.load`
build it from and turn it into a trainer.

Reading is safe on untrusted files: ``allow_pickle=False``, and the only
object created from a name in the file is a NumPy bit generator. Every
array's ``.npy`` header is checked before the array is read (its shape
against the size the stored configuration implies, its byte count against
the archive member), so a damaged or hostile file is a ``ValueError`` that
names it, never an ``EOFError``, a ``MemoryError`` or a huge allocation.
Writing goes through ``<name>.tmp.npz``, flushed to disk and renamed, and
the temporary file is removed on any failure, an interrupt included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import zipfile
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from .. import _validation

__all__ = ["Checkpoint", "FORMAT", "PARAMS_KEY", "PARAMS_INITIAL_KEY", "checkpoint_path",
           "write", "read"]

#: The format tag stored in every checkpoint.
FORMAT = "kdentropy-cells-checkpoint-1"
#: The array names of the current and initial parameter vectors. Format 1
#: fixed them ("theta" is the parameter vector), and every file written in
#: it, checkpoint or ``params.npz`` (:mod:`kdentropy.runs`), is read by them.
PARAMS_KEY, PARAMS_INITIAL_KEY = "theta", "theta_initial"

T = TypeVar("T")


@dataclasses.dataclass
class Checkpoint:
    """The content of a checkpoint file.

    Attributes
    ----------
    config : dict
        :meth:`Trainer.get_config`.
    params, params_initial : ndarray of float64
        Current and initial parameter vectors.
    iteration : int
        Optimizer steps taken.
    rng : numpy.random.Generator
        The training batches' random stream, at its current state.
    optimizer_state : dict
        :meth:`kdentropy.optim.Optimizer.state_dict`.
    history : dict
        :meth:`History.as_arrays`.
    """

    config: dict
    params: np.ndarray
    params_initial: np.ndarray
    iteration: int
    rng: np.random.Generator
    optimizer_state: dict[str, Any]
    history: dict[str, np.ndarray]


def checkpoint_path(path: str | os.PathLike) -> str:
    """``path`` as a string, if it ends in ``.npz`` (so ``numpy.savez`` adds nothing)."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"checkpoint path must end in .npz; got {path!r}")
    return path


def _rng_to_json(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)


def _rng_from_json(text: str) -> np.random.Generator:
    state = json.loads(text)
    # The name comes from a file: only ever instantiate a real bit generator.
    cls = getattr(np.random, str(state.get("bit_generator")), None)
    if not (isinstance(cls, type) and issubclass(cls, np.random.BitGenerator)):
        raise ValueError(f"unknown bit generator {state.get('bit_generator')!r}")
    bitgen = cls()
    bitgen.state = state
    return np.random.Generator(bitgen)


def _fsync_directory(directory: str) -> None:
    """Flush a directory entry (the rename) to disk where the OS allows it.

    POSIX can open and fsync a directory; Windows cannot, and there the
    rename is as durable as the file system makes it.
    """
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def write(path: str | os.PathLike, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` atomically (a temporary file is renamed).

    The data reaches the disk (``fsync``) before ``<name>.tmp.npz`` is
    renamed over ``path``, so after a crash ``path`` holds either the old
    or the new checkpoint, never a torn one; the directory is synced after
    the rename. On any failure, ``KeyboardInterrupt`` included, the
    temporary file is removed and ``path`` is left as it was.

    Parameters
    ----------
    path : path-like
        Destination ending in ``.npz``.
    ckpt : Checkpoint
    """
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        PARAMS_KEY: ckpt.params,
        PARAMS_INITIAL_KEY: ckpt.params_initial,
        "iteration": np.array(ckpt.iteration, dtype=np.int64),
        "rng_state": np.array(_rng_to_json(ckpt.rng)),
        "config": np.array(json.dumps(ckpt.config)),
    }
    for k, v in ckpt.optimizer_state.items():
        arrays[f"optim.{k}"] = np.asarray(v)
    for k, v in ckpt.history.items():
        arrays[f"history.{k}"] = v
    path = checkpoint_path(path)
    tmp = path[:-4] + ".tmp.npz"
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # BaseException: an interrupt mid-write must not leave a stale file.
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_directory(os.path.dirname(os.path.abspath(path)))


# Text members (format tag, configuration, random state) are a few hundred
# characters; a header that claims more is damage, not a bigger checkpoint.
_MAX_TEXT_CHARS = 1 << 20


def _file_kind_problem(path: str) -> str | None:
    """The error message if ``path`` cannot be a checkpoint judging by its first bytes.

    ``numpy.load`` would raise ``EOFError`` on an empty file and blame
    "pickled data" for any other non-NumPy file (text, say).
    """
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK\x03\x04"):
        return None
    if head.startswith(np.lib.format.MAGIC_PREFIX):
        return (f"{path!r} is not a kdentropy cell-training checkpoint: it is a single "
                ".npy array, not a .npz archive")
    if head[:1] == b"\x80":
        return (f"{path!r} is not a kdentropy cell-training checkpoint: it is a Python "
                "pickle (pickles are never loaded)")
    if not head:
        return (f"cannot read checkpoint {path!r}: the file is empty (0 bytes); it was "
                "probably cut off while being written")
    return (f"cannot read checkpoint {path!r}: not a .npz archive (no zip signature; "
            "a text file or another format?)")


def _header(npz: Any, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of member ``key`` from its ``.npy`` header, without reading the data.

    Also checks that the header's byte count matches the member's size, so
    an array is only ever allocated at the size the archive really holds.
    """
    name = key + ".npy"
    with npz.zip.open(name) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:  # numpy.savez writes 1.0, or 2.0 for very large headers
            raise ValueError(f"array {key!r} has an unsupported .npy version {version}")
        header_bytes = fh.tell()
    if dtype.hasobject:
        raise ValueError(f"array {key!r} holds Python objects (pickled data), "
                         "which are never loaded")
    declared = math.prod(shape) * dtype.itemsize
    stored = npz.zip.getinfo(name).file_size - header_bytes
    if declared != stored:
        raise ValueError(f"array {key!r} claims shape {shape} of {dtype} ({declared} bytes) "
                         f"but the archive holds {stored} bytes")
    return shape, dtype


def _array(npz: Any, key: str, *, kinds: str, shape: tuple[int, ...] | None = None,
           max_length: int | None = None) -> np.ndarray:
    """Member ``key``, read only after its header passed the checks.

    Parameters
    ----------
    npz : numpy.lib.npyio.NpzFile
    key : str
        The array's name.
    kinds : str
        Accepted ``dtype.kind`` letters.
    shape : tuple of int, optional
        The required shape.
    max_length : int, optional
        For 1-D arrays of any length up to this.
    """
    if key not in npz.files:
        raise ValueError(f"array {key!r} is missing")
    got, dtype = _header(npz, key)
    if dtype.kind not in kinds:
        raise ValueError(f"array {key!r} has dtype {dtype}, expected kind {kinds!r}")
    if shape is not None and got != shape:
        raise ValueError(f"array {key!r} has shape {got}, expected {shape}")
    if max_length is not None and (len(got) != 1 or got[0] > max_length):
        raise ValueError(f"array {key!r} has shape {got}, expected at most "
                         f"({max_length},)")
    if dtype.kind == "U" and dtype.itemsize > 4 * _MAX_TEXT_CHARS:
        raise ValueError(f"text {key!r} is {dtype.itemsize // 4} characters long, "
                         f"more than {_MAX_TEXT_CHARS}")
    return npz[key]


def _text(npz: Any, key: str) -> str:
    return str(_array(npz, key, kinds="U", shape=()))


def _finite_params(npz: Any, key: str, n_params: int | None) -> np.ndarray:
    if n_params is None:  # no configuration check: any float vector
        a = _array(npz, key, kinds="f", max_length=_validation.MAX_ELEMENTS)
    else:
        a = _array(npz, key, kinds="f", shape=(n_params,))
    return _validation.finite_vector(np.array(a, dtype=np.float64), f"parameter vector {key!r}")


def _iteration(npz: Any) -> int:
    value = int(_array(npz, "iteration", kinds="iu", shape=()))
    if value < 0:
        raise ValueError(f"iteration must be >= 0; got {value}")
    return value


def _optimizer_state(npz: Any, n_params: int | None) -> dict[str, Any]:
    """The ``optim.*`` members: scalars, or finite vectors of the parameters' length."""
    state = {}
    for key in npz.files:
        if not key.startswith("optim."):
            continue
        shape, _ = _header(npz, key)
        if shape == ():
            state[key[len("optim."):]] = _array(npz, key, kinds="iufU", shape=())
        else:
            want = (n_params,) if n_params is not None else None
            vec = _array(npz, key, kinds="f", shape=want,
                         max_length=None if want else _validation.MAX_ELEMENTS)
            state[key[len("optim."):]] = _validation.finite_vector(
                vec, f"optimizer state {key!r}")
    return state


# Everything reading a damaged file can raise; each becomes one ValueError
# that names the file. MemoryError/OverflowError: sizes that pass the checks
# above but still cannot be allocated on this machine; RecursionError: JSON
# nested beyond Python's limit.
_READ_ERRORS = (ValueError, KeyError, TypeError, EOFError, OSError, zlib.error,
                zipfile.BadZipFile, MemoryError, OverflowError, RecursionError)


def read(path: str | os.PathLike, history_columns: tuple[str, ...],
         rebuild: Callable[[Checkpoint], T], *,
         param_count: Callable[[dict], int] | None = None) -> T:
    """Read a checkpoint and turn it into an object, reporting any fault as a ValueError.

    Parameters
    ----------
    path : path-like
        A file written by :func:`write`.
    history_columns : tuple of str
        The history columns to read.
    rebuild : callable
        Called with the :class:`Checkpoint`; its errors (missing keys,
        types, invalid settings, out of memory) also count as a damaged
        checkpoint.
    param_count : callable, optional
        The parameter-vector length the stored configuration implies; the
        vectors' headers must match it before they are read. Without it
        any float vector is accepted.

    Returns
    -------
    object
        What ``rebuild`` returns.

    Raises
    ------
    ValueError
        If the file cannot be read, is not a kdentropy cell-training
        checkpoint or is damaged; the message names the file and the fault.
    """
    path = os.fspath(path)
    try:
        problem = _file_kind_problem(path)
        data = np.load(path, allow_pickle=False) if problem is None else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read checkpoint {path!r}: {_describe(exc)}") from None
    if problem is not None:
        raise ValueError(problem)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path!r} is not a kdentropy cell-training checkpoint")
    with data:
        try:
            if "format" not in data.files or _text(data, "format") != FORMAT:
                raise _NotACheckpoint
        except _NotACheckpoint:
            raise ValueError(f"{path!r} is not a kdentropy cell-training checkpoint "
                             f"(no {FORMAT!r} tag)") from None
        except _READ_ERRORS as exc:
            raise ValueError(f"checkpoint {path!r} is damaged: {_describe(exc)}") from None
        try:
            config = json.loads(_text(data, "config"))
            if not isinstance(config, dict):
                raise ValueError(f"config must be a JSON object; got {type(config).__name__}")
            n_params = None if param_count is None else param_count(config)
            iteration = _iteration(data)
            ckpt = Checkpoint(
                config=config,
                params=_finite_params(data, PARAMS_KEY, n_params),
                params_initial=_finite_params(data, PARAMS_INITIAL_KEY, n_params),
                iteration=iteration,
                rng=_rng_from_json(_text(data, "rng_state")),
                optimizer_state=_optimizer_state(data, n_params),
                # One row per iteration at most, so a forged length cannot
                # make the history allocate more than the run produced.
                history={c: _array(data, f"history.{c}", kinds="f",
                                   max_length=iteration + 1) for c in history_columns})
            return rebuild(ckpt)
        except _READ_ERRORS as exc:
            raise ValueError(f"checkpoint {path!r} is damaged: {_describe(exc)}") from None


class _NotACheckpoint(Exception):
    """The archive has no kdentropy format tag."""


def _describe(exc: BaseException) -> str:
    """An exception as one line: its message, with its type where the message alone is unclear.

    ``zlib.error`` is named "error", so "Error -3 while decompressing" gets
    the context "corrupt compressed data" instead of a second "error:".
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, zlib.error):
        return f"corrupt compressed data ({text})"
    if isinstance(exc, zipfile.BadZipFile):
        return f"corrupt zip archive ({text})"
    if isinstance(exc, EOFError):
        return f"truncated data ({text or 'unexpected end of file'})"
    if isinstance(exc, MemoryError):
        return f"its sizes cannot be allocated ({text or 'out of memory'})"
    if isinstance(exc, OSError):
        return exc.strerror or text or type(exc).__name__
    if isinstance(exc, ValueError) and text:
        return text
    if isinstance(exc, KeyError):
        return f"missing entry {text}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
