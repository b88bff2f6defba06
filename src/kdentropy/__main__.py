"""``python -m kdentropy``: the same command line as ``kdentropy``."""

import sys

from .cli import main

if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in the tests
    sys.exit(main())
