"""``kdentropy info``: versions, available backends, Numba threads and GPU presence."""

from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Any

import numpy as np

from .args import first_line

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add the ``info`` subcommand to the subparsers ``sub``.

    Parameters
    ----------
    sub : argparse subparsers action
    """
    i = sub.add_parser("info", help="versions, backends, threads and GPU",
                       description="Report versions, available backends, Numba threads and "
                       "GPU presence.")
    i.add_argument("--json", action="store_true", help="print JSON")


def _version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None."""
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
        info["reason"] = first_line(exc)
    return info


def run(args: argparse.Namespace) -> int:
    """Print versions, backends, threads and GPU presence (as text or JSON).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``info`` arguments.

    Returns
    -------
    int
        0.
    """
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
