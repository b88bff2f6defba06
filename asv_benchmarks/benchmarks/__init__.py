"""kdentropy's asv benchmark suite.

kdentropy is imported here, before any benchmark module imports NumPy, so
that it shortens OpenBLAS's idle spinning exactly as it does for a user who
imports kdentropy first (see ``kdentropy/__init__.py`` and the README).
"""

import kdentropy  # noqa: F401
