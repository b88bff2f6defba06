"""The README's examples run as written (mpi_entropy runs under mpiexec in test_mpi.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("name, expect", [
    ("quickstart.py", "hard entropy"),
    ("scipy_minimize.py", "1 distinct pattern(s)"),
    ("train_cells.py", "boundaries per run"),
])
def test_example_runs(name, expect):
    out = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert expect in out.stdout
