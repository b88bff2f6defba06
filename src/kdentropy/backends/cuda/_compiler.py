"""The one module that imports a CUDA kernel compiler: numba-cuda or numba-cuda-mlir.

Every module of this backend takes ``cuda`` and the scalar types that kernels
declare arrays with (``float32``, ``float64``, ``uint32``) from here, so the
kernels, their device arrays and their types always come from one compiler.

Which compiler
--------------
* ``NUMBA_ENABLE_CUDASIM=1``: numba-cuda, whose CUDA simulator runs the
  kernels as Python on the CPU (numba-cuda-mlir has no simulator);
* else ``KDENTROPY_CUDA_COMPILER`` (``numba-cuda`` or ``numba-cuda-mlir``), if set;
* else numba-cuda-mlir (``from numba_cuda_mlir import cuda``, numba-cuda's
  successor; Python >= 3.11) when it is installed, numba-cuda otherwise.

numba-cuda itself needs one NumPy compatibility step before its first
compilation (:mod:`._numpy_compat`); it is applied here, once, on import.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Any

__all__ = [
    "COMPILER",
    "COMPILERS",
    "SIMULATOR",
    "cuda",
    "driver_initialization_error",
    "float32",
    "float64",
    "uint32",
]

#: The compilers this backend can use, by distribution name.
COMPILERS = ("numba-cuda", "numba-cuda-mlir")


def _simulator_requested() -> bool:
    # Numba reads the same variable, once, when it is first imported.
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0").strip() not in ("", "0")


def _choose() -> str:
    if _simulator_requested():
        return "numba-cuda"
    wanted = os.environ.get("KDENTROPY_CUDA_COMPILER", "").strip()
    if wanted:
        if wanted not in COMPILERS:
            raise ValueError(f"KDENTROPY_CUDA_COMPILER must be one of {COMPILERS}; "
                             f"got {wanted!r}")
        return wanted
    try:
        installed = importlib.util.find_spec("numba_cuda_mlir") is not None
    except ValueError:  # a placeholder in sys.modules (how tests hide a package)
        installed = False
    return "numba-cuda-mlir" if installed else "numba-cuda"


def _import(name: str) -> Any:
    if name == "numba-cuda-mlir":
        from numba_cuda_mlir import cuda as module
    else:
        from numba import cuda as module
    return module


COMPILER = _choose()
try:
    cuda = _import(COMPILER)
except ImportError as exc:
    if COMPILER == "numba-cuda" or os.environ.get("KDENTROPY_CUDA_COMPILER"):
        raise
    # Installed but not importable (e.g. a Python it was not built for): say
    # so once rather than switch compilers silently.
    warnings.warn(f"numba-cuda-mlir is installed but cannot be imported ({exc}); "
                  "the cuda backend uses numba-cuda instead", RuntimeWarning, stacklevel=2)
    COMPILER = "numba-cuda"
    cuda = _import(COMPILER)

float32, float64, uint32, uint64 = cuda.float32, cuda.float64, cuda.uint32, cuda.uint64


def _simulator_enabled() -> bool:
    if COMPILER != "numba-cuda":
        return False
    try:
        from numba.cuda.core import config
    except ImportError:  # older numba-cuda keeps the flag in numba's own config
        from numba.core import config
    return bool(getattr(config, "ENABLE_CUDASIM", False))


#: Numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1`` before Numba was imported).
SIMULATOR = _simulator_enabled()

if COMPILER == "numba-cuda":
    from ._numpy_compat import prepare_numba_cuda

    prepare_numba_cuda()


def driver_initialization_error() -> str | None:
    """Why the compiler's CUDA driver layer failed to start, if it did (one line)."""
    try:
        if COMPILER == "numba-cuda-mlir":
            from numba_cuda_mlir.numba_cuda.cudadrv import driver
        else:
            from numba.cuda.cudadrv import driver
        error = getattr(driver.driver, "initialization_error", None)
    except Exception as exc:  # a broken installation: report it, do not crash
        error = str(exc)
    return " ".join(str(error).split()) if error else None  # the driver's message spans lines
