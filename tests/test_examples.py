"""The README's examples run as written (mpi_entropy runs under mpiexec in test_mpi.py)."""

import math
import re
import runpy
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import kdentropy as kde

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


def _line(out: str, start: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(start))


def test_quickstart_prints_the_right_values(capsys):
    # The printed numbers against an independent count of the example's own batch.
    ns = runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    X, N = ns["X"], ns["N"]
    counts = np.array(list(Counter(map(tuple, X >= 0.5)).values()))
    p = counts / N
    hard = re.search(r"hard entropy\s*: ([\d.]+) nats, (\d+) distinct", out)
    assert int(hard[2]) == len(counts) == 3  # three prototypes, noise far below 0.5
    assert float(hard[1]) == pytest.approx(-(p * np.log(p)).sum(), abs=6e-5)
    soft = kde.soft_entropy(X, temperature=10.0, sigma=0.5, backend="numpy")
    assert float(re.search(r"soft entropy\s*: ([\d.]+) nats", out)[1]) == pytest.approx(
        soft, abs=6e-5
    )
    assert re.search(r"log N = ([\d.]+)", out)[1] == f"{math.log(N):.4f}"
    assert _line(out, "all runs identical").endswith("soft 0.0000, hard 0.0000")


def test_scipy_example_reaches_one_pattern():
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "scipy_minimize.py")],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    before = re.search(r"before: soft ([\d.]+)  hard ([\d.]+) nats \(log N = ([\d.]+)\)", out)
    # 64 uniform random states of 16 cells: all distinct, so hard = log N.
    assert before[2] == before[3] == f"{math.log(64):.4f}"
    assert 0 < float(before[1]) < float(before[2])
    after = re.search(r"after : soft ([\d.]+)  hard ([\d.]+) nats, (\d+) distinct", out)
    assert (float(after[1]), float(after[2]), int(after[3])) == (0.0, 0.0, 1)
