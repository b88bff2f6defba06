"""Hand-written mutants of the Numba kernels, each run against the tests that should kill it.

mutmut cannot mutate the compiled kernels (its trampolines do not compile,
and Numba recompiles every kernel per mutant: minutes each), so this applies
a few chosen textual mutants, one at a time, to a copy of ``src`` under a
scratch directory and runs the relevant tests against that copy
(``PYTHONPATH`` first, checked by the run itself).

Each mutant is anchored on a distinctive code snippet, found in whichever
file of the package holds it (the cpu backend's modules get split and
renamed); an anchor that is missing or ambiguous is reported as such,
never silently skipped.

Usage::

    python tools/mutation/kernel_mutants.py [--only NAME ...] [--timeout SECONDS]

Exit status: 0 when every mutant was found and killed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "kdentropy"


@dataclass(frozen=True)
class Mutant:
    """One textual mutant: replace ``anchor`` by ``replacement`` (the anchor must be unique)."""

    name: str
    what: str
    anchor: str
    replacement: str
    tests: tuple[str, ...]


# The cpu backend's tests, stopping at the first failure (a kill).
CPU_TESTS = ("tests/test_cpu_reductions.py", "tests/test_cpu_backend.py",
             "tests/test_backend_contract.py", "-k", "cpu")

MUTANTS = [
    Mutant("tile-bound",
           "kernel_tile keeps one padding column past n (off-by-one in the tile's column bound)",
           "hi = min(width, n - j0)\n", "hi = min(width, n - j0 + 1)\n", CPU_TESTS),
    Mutant("weigh-drops-g_j",
           "the pass-2 epilogue forms w = K g_i instead of K (g_i + g_j)",
           "t[c] = t[c] * (u + v[c])", "t[c] = t[c] * u", CPU_TESTS),
    Mutant("float32-scale",
           "float32 kernel values use half the scale: exp(-d2 / (4 sigma^2))",
           "x = np.float32(-scale) * max(", "x = np.float32(-0.5 * scale) * max(", CPU_TESTS),
    Mutant("flush-flipped",
           "the float32 subnormal flush keeps the tiny values and zeroes the rest",
           "return e if x >= np.float32(_KERNEL_FLUSH_F32) else np.float32(0.0)",
           "return e if x < np.float32(_KERNEL_FLUSH_F32) else np.float32(0.0)", CPU_TESTS),
    Mutant("pass2-parallel-reduction",
           "the parallel pass-2 reduction skips the last row of each row tile",
           "for r in prange(r1 - r0):", "for r in prange(r1 - r0 - 1):",
           ("tests/test_cpu_reductions.py", "tests/test_cpu_backend.py")),
]


def locate(anchor: str, package: Path) -> tuple[list[Path], str]:
    """Files of ``package`` that contain ``anchor``, and a problem description ('' if exactly one)."""
    hits = [p for p in sorted(package.rglob("*.py")) if p.read_text(encoding="utf-8").count(anchor)]
    counts = sum(p.read_text(encoding="utf-8").count(anchor) for p in hits)
    if counts == 0:
        return hits, "anchor not found"
    if counts > 1:
        return hits, f"anchor ambiguous ({counts} matches in {[str(p) for p in hits]})"
    return hits, ""


def run_mutant(m: Mutant, scratch: Path, timeout: float) -> tuple[str, str]:
    """``(verdict, detail)``: killed, survived, timeout or anchor problem."""
    hits, problem = locate(m.anchor, PACKAGE)
    if problem:
        return "ANCHOR", problem
    src = scratch / m.name / "src"
    shutil.rmtree(src.parent, ignore_errors=True)
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    target = src / hits[0].relative_to(ROOT / "src")
    text = target.read_text(encoding="utf-8")
    target.write_text(text.replace(m.anchor, m.replacement, 1), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(src), NUMBA_CACHE_DIR=str(src.parent / "numba-cache"))
    # The mutated copy must be what the tests import, not the editable install.
    probe = subprocess.run([sys.executable, "-c", "import kdentropy; print(kdentropy.__file__)"],
                           env=env, capture_output=True, text=True, cwd=ROOT)
    if not probe.stdout.strip().startswith(str(src)):
        return "ERROR", f"imports {probe.stdout.strip() or probe.stderr[-300:]} instead of the copy"
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *m.tests]
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return "TIMEOUT", f"no verdict within {timeout:.0f} s"
    last = (res.stdout.strip().splitlines() or ["(no output)"])[-1]
    failed = [line for line in res.stdout.splitlines() if line.startswith("FAILED")]
    if res.returncode == 1 and failed:
        return "killed", f"{failed[0]} | {last} | in {hits[0].relative_to(ROOT)}"
    if res.returncode == 0:
        return "SURVIVED", f"{last} | in {hits[0].relative_to(ROOT)}"
    return "ERROR", f"pytest exit {res.returncode}: {last}"


def main(argv: list[str] | None = None) -> int:
    """Run the mutants; print one line per mutant; 0 if all were killed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="mutant names to run (default: all)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant")
    ap.add_argument("--scratch", type=Path, default=None, help="where to put the copies")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="kdentropy-kmut-"))
    verdicts = []
    for m in chosen:
        t0 = time.monotonic()
        verdict, detail = run_mutant(m, scratch, args.timeout)
        verdicts.append(verdict)
        print(f"{verdict:9s} {m.name:26s} {time.monotonic() - t0:6.0f} s  {m.what}\n"
              f"          {detail}", flush=True)
    killed = verdicts.count("killed")
    print(f"\n{killed}/{len(chosen)} kernel mutants killed (copies in {scratch})")
    return 0 if killed == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
