"""Let numba-cuda <= 0.30.4 compile under NumPy >= 2.5, which removed ``np.row_stack``.

Why: numba-cuda's array module ``numba/cuda/np/arrayobj.py`` ends its
``np.vstack`` section with::

    if numpy_version >= (2, 0):
        overload(np.row_stack)(impl_np_vstack)

That module is first imported when the first kernel compiles (the target
context loads its registries in ``numba/cuda/target.py``), so under NumPy 2.5
every compilation fails with ``AttributeError: module 'numpy' has no
attribute 'row_stack'``. numba 0.68 (CPU) and numba-cuda-mlir 0.6 already
guard the line with ``numpy_version < (2, 5)``; numba-cuda up to 0.30.4 (and
its main branch of 2026-07) does not.

What: :func:`prepare_numba_cuda` imports that module once, before anything
compiles, with a placeholder bound to ``numpy.row_stack`` for the duration of
the import only. The overload then attaches to the placeholder, which no
kernel can name, and NumPy is left as it was. Nothing happens when NumPy
still has ``row_stack`` or the module is already imported.

Remove this module when the oldest supported numba-cuda guards that line
(raise the ``numba-cuda`` floor in ``pyproject.toml``'s ``cuda`` extra then).
"""

from __future__ import annotations

import importlib
import sys

import numpy as np

__all__ = ["prepare_numba_cuda"]

_ARRAY_MODULE = "numba.cuda.np.arrayobj"


def _row_stack_removed(*args: object, **kwargs: object) -> None:
    """Stands in for ``numpy.row_stack`` while numba-cuda registers an overload for it."""
    raise AttributeError("numpy.row_stack was removed in NumPy 2.5; use numpy.vstack")


def prepare_numba_cuda() -> bool:
    """Import numba-cuda's array module so that its ``np.row_stack`` overload cannot fail.

    Returns
    -------
    bool
        Whether the placeholder was needed (NumPy without ``row_stack`` and
        the module not yet imported).
    """
    if hasattr(np, "row_stack") or _ARRAY_MODULE in sys.modules:
        return False
    np.row_stack = _row_stack_removed
    try:
        importlib.import_module(_ARRAY_MODULE)
    finally:
        del np.row_stack
    return True
