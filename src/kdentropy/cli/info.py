"""``kdentropy info``: versions, available backends, Numba threads and GPU presence.

Every optional dependency is listed by extra (``pip install "kdentropy[EXTRA]"``)
with its installed version, read from kdentropy's own package metadata so the
list cannot drift from ``pyproject.toml``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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


# Optional packages that are no extra's requirement but change what runs.
_ALSO_OPTIONAL = {"cuda": ("numba-cuda-mlir",)}


def _optional_dependencies() -> dict[str, dict[str, str | None]] | None:
    """Each extra's packages and their installed versions (None: not installed).

    Read from kdentropy's metadata (``Requires-Dist: ...; extra == "x"``);
    packages that are also core requirements (NumPy pins) and the aggregate
    extras (``dev``, ``all``) are left out. None when kdentropy's metadata
    cannot be found (a source tree that was never installed).
    """
    from importlib import metadata
    try:
        requires = metadata.requires("kdentropy") or []
    except metadata.PackageNotFoundError:
        return None
    core: set[str] = set()
    extras: dict[str, list[str]] = {}
    for line in requires:
        name = re.match(r"[A-Za-z0-9._-]+", line)
        if name is None:
            continue
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", line)
        dist = name.group(0)
        if extra is None:
            core.add(dist.lower())
        elif dist.lower() != "kdentropy":
            extras.setdefault(extra.group(1), []).append(dist)
    return {extra: {dist: _version(dist) for dist in [*dists, *_ALSO_OPTIONAL.get(extra, ())]
                    if dist.lower() not in core}
            for extra, dists in extras.items()}


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
        threading_layer = str(getattr(numba.config, "THREADING_LAYER", None))
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
        "optional": _optional_dependencies(),
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
    optional = info["optional"]
    if optional is None:
        print("extras      unknown (kdentropy's package metadata not found; pip install it)")
    else:
        for extra, dists in optional.items():
            listed = ", ".join(f"{d} {v or 'not installed'}" for d, v in dists.items())
            print(f"[{extra}]{'':<{max(1, 10 - len(extra))}}{listed}")
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
