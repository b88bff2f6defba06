"""The README's examples run as written (mpi_entropy runs under mpiexec in test_mpi.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    "name, expect",
    [
        ("quickstart.py", "hard entropy"),
        ("scipy_minimize.py", "1 distinct pattern(s)"),
        ("train_cells.py", "boundaries per run"),
    ],
)
def test_example_runs(name, expect):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert expect in out.stdout


@pytest.mark.parametrize(
    "name, hidden, extra",
    [
        ("torch_cells.py", "torch", "kdentropy[torch]"),
        ("mpi_entropy.py", "mpi4py", "kdentropy[mpi]"),
    ],
)
def test_an_example_without_its_optional_package_says_which_extra(name, hidden, extra):
    # As if the package were not installed: importing it raises ImportError.
    code = (
        f"import runpy, sys; sys.modules[{hidden!r}] = None; "
        f"runpy.run_path({str(EXAMPLES / name)!r}, run_name='__main__')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert f'pip install "{extra}"' in out.stderr


def test_every_example_docstring_starts_with_a_rest_title():
    import ast

    for path in sorted(EXAMPLES.glob("*.py")):
        lines = ast.get_docstring(ast.parse(path.read_text()), clean=False).splitlines()
        assert len(lines) > 2 and lines[0].strip(), path.name
        assert set(lines[1]) == {"="} and len(lines[1]) == len(lines[0]), path.name
