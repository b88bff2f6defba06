"""Training checkpoints: one ``.npz`` file, written atomically, read without pickles.

A checkpoint holds the trainer's configuration (JSON), the current and
initial parameter vectors, the iteration count, the training random stream's
state (JSON), the optimizer state (``optim.*``) and the history
(``history.*``). :class:`Checkpoint` is that content in memory;
:func:`write` and :func:`read` move it to and from disk, and
:meth:`kdentropy.cells.Trainer.save` / :meth:`~kdentropy.cells.Trainer.load`
build it from and turn it into a trainer.

Reading is safe on untrusted files: ``allow_pickle=False``, and the only
object created from a name in the file is a NumPy bit generator.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

__all__ = ["Checkpoint", "FORMAT", "checkpoint_path", "write", "read"]

#: The format tag stored in every checkpoint.
FORMAT = "kdentropy-cells-checkpoint-1"
# The arrays keep the names of format 1 ("theta" for the parameter vector),
# so checkpoints written by earlier versions still resume.
_PARAMS, _PARAMS_INITIAL = "theta", "theta_initial"

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


def write(path: str | os.PathLike, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` atomically (a temporary file is renamed).

    Parameters
    ----------
    path : path-like
        Destination ending in ``.npz``.
    ckpt : Checkpoint
    """
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        _PARAMS: ckpt.params,
        _PARAMS_INITIAL: ckpt.params_initial,
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
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def read(path: str | os.PathLike, history_columns: tuple[str, ...],
         rebuild: Callable[[Checkpoint], T]) -> T:
    """Read a checkpoint and turn it into an object, reporting any fault as a ValueError.

    Parameters
    ----------
    path : path-like
        A file written by :func:`write`.
    history_columns : tuple of str
        The history columns to read.
    rebuild : callable
        Called with the :class:`Checkpoint`; its missing-key, type and
        decoding errors also count as a damaged checkpoint.

    Returns
    -------
    object
        What ``rebuild`` returns.

    Raises
    ------
    ValueError
        If the file cannot be read, is not a kdentropy cell-training
        checkpoint or is damaged.
    """
    path = os.fspath(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read checkpoint {path!r}: {exc}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path!r} is not a kdentropy cell-training checkpoint")
    with data:
        if "format" not in data.files or str(data["format"]) != FORMAT:
            raise ValueError(f"{path!r} is not a kdentropy cell-training checkpoint")
        try:
            ckpt = Checkpoint(
                config=json.loads(str(data["config"])),
                params=data[_PARAMS],
                params_initial=np.array(data[_PARAMS_INITIAL], dtype=np.float64),
                iteration=int(data["iteration"]),
                rng=_rng_from_json(str(data["rng_state"])),
                optimizer_state={k[len("optim."):]: data[k] for k in data.files
                                 if k.startswith("optim.")},
                history={c: data[f"history.{c}"] for c in history_columns})
            return rebuild(ckpt)
        except (KeyError, TypeError, json.JSONDecodeError, zipfile.BadZipFile) as exc:
            raise ValueError(f"checkpoint {path!r} is damaged: "
                             f"{type(exc).__name__}: {exc}") from None
