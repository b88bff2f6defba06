"""Every kernel of the CUDA backend compiled to PTX without a GPU (for offline models and checks).

:func:`compile_all_ptx` compiles each kernel for the argument types the
backend launches it with, for a given compute capability, with either
compiler (:mod:`._compiler`). Neither compiler needs a device for that:

* numba-cuda: ``cuda.compile_ptx(pyfunc, sig, cc=cc)``, except that the
  device functions a kernel calls are compiled for the *current device*
  (``numba/cuda/dispatcher.py`` asks ``get_current_device()``), which fails
  without a driver; that lookup is answered with ``cc`` while compiling;
* numba-cuda-mlir: the same call, but it also asks the driver for the
  *host's* compute capability (to pick the linker's architecture) even when
  ``cc`` is given; its one cached answer (``numba_cuda_mlir.tools._cached_cc``)
  is set to ``cc`` while compiling.

Both stand-ins are private names of the compilers, used only where no
driver answers (never on a machine with a GPU).

A compiler other than the running one is run in a subprocess, since the
kernels are built against the ``cuda`` module the process imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ._compiler import COMPILER, COMPILERS, SIMULATOR, cuda

__all__ = ["PtxCompileError", "compile_all_ptx", "kernel_signatures"]


class PtxCompileError(RuntimeError):
    """Some kernels did not compile; ``ptx`` holds those that did, ``failures`` the others' errors."""

    def __init__(self, compiler: str, ptx: dict[str, str], failures: dict[str, str]) -> None:
        listing = "; ".join(f"{name}: {err}" for name, err in failures.items())
        super().__init__(f"{len(failures)} kernel(s) did not compile with {compiler}: {listing}")
        self.ptx = ptx
        self.failures = failures


def _types(ft: str) -> dict[str, str]:
    """Numba type strings of the arrays and scalars the kernels take, for work type ``ft``."""
    return {"a1": f"{ft}[::1]", "a2": f"{ft}[:, ::1]", "a3": f"{ft}[:, :, ::1]",
            "d1": "float64[::1]", "d2": "float64[:, ::1]", "d3": "float64[:, :, ::1]",
            "d4": "float64[:, :, :, ::1]", "s": ft}


def kernel_signatures() -> list[tuple[str, Any, str]]:
    """``(name, kernel, signature)`` for every kernel, as the backend launches it."""
    from . import _elementwise, _fused, _panels, _tile_apply, _tiles

    out: list[tuple[str, Any, str]] = []
    for dt in (np.float32, np.float64):
        ft = np.dtype(dt).name
        t = _types(ft)
        ew = _elementwise.kernels(np.dtype(dt))
        out += [
            (f"elementwise.sigmoid_3d[{ft}]", ew["sigmoid_3d"],
             f"void({t['a3']}, {t['a3']}, float64, float64, int32[::1])"),
            (f"elementwise.sigmoid_2d[{ft}]", ew["sigmoid_2d"],
             f"void({t['a2']}, {t['a3']}, int64, float64, float64, int32[::1])"),
            (f"elementwise.center[{ft}]", ew["center"],
             f"void({t['a3']}, float64[:, ::1], {t['a3']})"),
            (f"elementwise.chain_rule[{ft}]", ew["chain_rule"],
             f"void(float64[::1], {t['a1']}, {t['a1']}, float64, float64)"),
            (f"elementwise.column_partials[{ft}]", _elementwise.reduction_kernels()["column_partials"],
             f"void({t['a3']}, float64[:, :, ::1], int64)"),
            (f"elementwise.row_norms[{ft}]", _elementwise.reduction_kernels()["row_norms"],
             f"void({t['a3']}, float64[:, ::1], float64[:, ::1])"),
        ]
        pe = _panels.epilogues(np.dtype(dt))
        out += [
            (f"panels.counts[{ft}]", pe["counts"],
             f"void({t['a2']}, float64[::1], int64, {ft}, boolean, float64[::1])"),
            (f"panels.weights[{ft}]", pe["weights"],
             f"void({t['a2']}, float64[::1], {t['a1']}, int64, {ft}, boolean, float64[::1])"),
            (f"panels.rows[{ft}]", pe["rows"],
             f"void(float64[::1], {t['a2']}, {t['a2']}, int64, float64[:, ::1])"),
        ]
        for gram in (True, False):
            fk = _fused.kernels(np.dtype(dt), gram)
            form = "gram" if gram else "direct"
            out += [
                (f"fused.counts[{ft},{form}]", fk["counts"],
                 f"void({t['a3']}, {t['d2']}, {t['d3']}, {ft}, int64, int64)"),
                (f"fused.weighted[{ft},{form}]", fk["weighted"],
                 f"void({t['a3']}, {t['d2']}, {t['a2']}, {t['d4']}, {ft}, int64, int64, int64)"),
            ]
        # The register-tiled Gram kernels, one variant per staged slice width.
        sh = _tiles.SHAPES[np.dtype(dt)]
        widths = sorted({_tiles.slice_width(D, np.dtype(dt)) for D in range(1, sh.dchunk + 1)})
        for w in widths:
            out += [
                (f"tiles.counts[{ft},w{w}]", _tiles.counts_kernel(np.dtype(dt), w),
                 f"void({t['a3']}, {t['a1']}, {t['d2']}, {t['d3']}, {ft}, "
                 f"int64, int64, int64, int64, {t['a1']}, int64)"),
                (f"tiles.kept_weighted[{ft},w{w}]",
                 _tile_apply.kept_weighted_kernel(np.dtype(dt), w),
                 f"void({t['a3']}, {t['a1']}, {t['a2']}, {t['a1']}, {t['d4']}, "
                 "int64, int64, int64, int64)"),
                (f"tiles.weighted[{ft},w{w}]", _tiles.weighted_kernel(np.dtype(dt), w),
                 f"void({t['a3']}, {t['a1']}, {t['d2']}, {t['a2']}, {t['d4']}, {ft}, "
                 "int64, int64, int64)"),
            ]
    # float32 input centred into float64 work (the conditioning may ask for it).
    out.append(("elementwise.center[float32->float64]", _elementwise.kernels(np.dtype("f8"))["center"],
                "void(float32[:, :, ::1], float64[:, ::1], float64[:, :, ::1])"))
    out += [
        ("elementwise.column_mean", _elementwise.reduction_kernels()["column_mean"],
         "void(float64[:, :, ::1], float64[:, ::1], float64)"),
        ("elementwise.sum_partials", _elementwise.reduction_kernels()["sum_partials"],
         "void(float64[:, ::1], float64[::1])"),
        ("elementwise.header", _elementwise.reduction_kernels()["header"],
         "void(int32[::1], float64[::1], float64[::1])"),
        ("elementwise.pair_sum_partials", _elementwise.reduction_kernels()["pair_sum_partials"],
         "void(float64[:, ::1], float64[:, ::1], float64[:, :, ::1], float64[:, :, ::1])"),
        ("elementwise.pair_sum_norms", _elementwise.reduction_kernels()["pair_sum_norms"],
         "void(float64[:, :, ::1], float64[:, ::1])"),
    ]
    return out


@contextlib.contextmanager
def _target_without_device(cc: tuple[int, int]) -> Iterator[None]:
    """Let numba-cuda-mlir compile for ``cc`` where no driver can be asked (see the module notes)."""
    if cuda.is_available():
        yield
        return
    if COMPILER == "numba-cuda-mlir":
        from numba_cuda_mlir import tools

        old = tools._cached_cc
        tools._cached_cc = tuple(cc)
        try:
            yield
        finally:
            tools._cached_cc = old
        return
    from numba.cuda import dispatcher

    class _Device:
        compute_capability = tuple(cc)

    old = dispatcher.get_current_device
    dispatcher.get_current_device = _Device
    try:
        yield
    finally:
        dispatcher.get_current_device = old


def _compile_here(cc: tuple[int, int], only: Sequence[str] | None = None) -> dict[str, str]:
    if SIMULATOR:
        raise RuntimeError("the CUDA simulator compiles nothing; unset NUMBA_ENABLE_CUDASIM")
    ptx: dict[str, str] = {}
    failures: dict[str, str] = {}
    with _target_without_device(cc):
        for name, kernel, sig in kernel_signatures():
            if only is not None and not name.startswith(tuple(only)):
                continue
            bounds = getattr(kernel, "targetoptions", {}).get("launch_bounds")
            try:
                ptx[name], _ = cuda.compile_ptx(kernel.py_func, sig, cc=tuple(cc),
                                                launch_bounds=bounds)
            except Exception as exc:  # collect every failure, then report them together
                failures[name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    if failures:
        raise PtxCompileError(COMPILER, ptx, failures)
    return ptx


_CHILD = """
import json, sys
from kdentropy.backends.cuda import _ptx
try:
    cc, only = json.loads(sys.argv[1])
    result = {"ptx": _ptx._compile_here(tuple(cc), only), "failures": {}}
except _ptx.PtxCompileError as exc:
    result = {"ptx": exc.ptx, "failures": exc.failures}
with open(sys.argv[2], "w") as f:
    json.dump(result, f)
"""


def compile_all_ptx(compiler: str = COMPILER, cc: tuple[int, int] = (9, 0),
                    only: Sequence[str] | None = None) -> dict[str, str]:
    """PTX of every kernel of the backend, compiled without a GPU.

    Parameters
    ----------
    compiler : {"numba-cuda", "numba-cuda-mlir"}
        Default: the one this process uses. Another one compiles in a
        subprocess (``KDENTROPY_CUDA_COMPILER`` set, the simulator off).
    cc : (int, int)
        Compute capability to compile for; ``(9, 0)`` is H100/H200.
    only : sequence of str, optional
        Compile only the kernels whose names start with one of these
        (e.g. ``["fused."]``); default all.

    Returns
    -------
    dict
        Kernel name (``module.kernel[dtype(,form)]``) to PTX text.

    Raises
    ------
    PtxCompileError
        If any kernel fails; it carries the PTX of the others and each error.
    """
    if compiler not in COMPILERS:
        raise ValueError(f"compiler must be one of {COMPILERS}; got {compiler!r}")
    if compiler == COMPILER and not SIMULATOR:
        return _compile_here(cc, only)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["KDENTROPY_CUDA_COMPILER"] = compiler
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ptx.json")
        proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps([list(cc), only]), path],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"compiling with {compiler} failed: {proc.stderr[-2000:]}")
        with open(path) as f:
            result = json.load(f)
    if result["failures"]:
        raise PtxCompileError(compiler, result["ptx"], result["failures"])
    return result["ptx"]
