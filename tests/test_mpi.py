"""kdentropy.mpi: the distributed functions against the single-process ones.

The MPI checks live in ``tests/mpi_scripts/check_mpi.py``, launched here under
``mpiexec -n 2`` and ``-n 3`` (more ranks than this CI machine has cores, so
oversubscription is allowed). One launch runs every check, to pay the Python
and Numba start-up once per rank count. ``tests/mpi_scripts/check_hangs.py``
holds the failures on some ranks only that used to deadlock (issue 13), one
launch per case, each under a timeout so that a hang fails the test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "mpi_scripts"
# The MPI launcher that matches the mpi4py in this environment: the PyPI
# ``mpich`` package installs it next to the interpreter.
MPIEXEC = Path(sys.executable).parent / "mpiexec"
TIMEOUT_S = 180


def _backends() -> list[str]:
    """Registered backends with block primitives that can run here (numpy and cpu today)."""
    from kdentropy import backends

    return [name for name in backends.available_backends()
            if backends.load(name).BLOCK_PRIMITIVES]


def _require_mpiexec() -> None:
    pytest.importorskip("mpi4py")
    if not MPIEXEC.exists():
        pytest.skip(f"no mpiexec next to {sys.executable} (pip install 'kdentropy[mpi]')")


def _warm_numba_cache(backends: list[str]) -> None:
    """Compile (or load) the kernels here once, for both dtypes, before the launch.

    The cpu kernels are ``cache=True``: compiled in this process they are
    written to Numba's on-disk cache, and every rank loads them instead of
    compiling them all at once on a machine with fewer cores than ranks
    (about a minute).
    """
    import numpy as np

    import kdentropy as kde
    from kdentropy import backends as registry

    for name in backends:
        module = registry.load(name)
        for dtype in (np.float32, np.float64):
            X = np.linspace(0.0, 1.0, 6, dtype=dtype).reshape(3, 2)
            kde.soft_entropy_and_grad(X, backend=name)
            S = module.soft_patterns(X[None], 10.0, 0.5)[0]
            g = np.full(3, 0.5)
            for same in (True, False):
                module.block_soft_counts(S, S, 0.5, same)
                module.block_weighted_grad(S, g, S, g, 0.5, same)


def _run(cmd: list[str], env: dict[str, str] | None = None,
         timeout_s: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run a command in its own process group, killing the whole group on timeout.

    Killing only mpiexec could leave its ranks running; a new session makes
    them one group that goes down together.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} did not finish in {timeout_s} s (a deadlock?)\n{out}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


@pytest.mark.mpi
@pytest.mark.parametrize("nprocs", [2, 3])
def test_distributed_matches_single_process(nprocs, request):
    _require_mpiexec()
    backends = _backends()
    _warm_numba_cache(backends)
    seed = zlib.crc32(request.node.nodeid.encode())
    cmd = [str(MPIEXEC), "-n", str(nprocs), sys.executable, "-m", "mpi4py",
           str(SCRIPTS / "check_mpi.py"), str(seed), ",".join(backends)]
    result = _run(cmd, _mpi_env())
    assert result.returncode == 0, f"seed {seed}:\n{result.stdout}"
    assert "OK: 0 of" in result.stdout and f"on {nprocs} ranks" in result.stdout, result.stdout


def _mpi_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        # Open MPI refuses more ranks than cores unless told; MPICH allows it.
        "OMPI_MCA_rmaps_base_oversubscribe": "1",
        "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe",
        # One thread per rank: the ranks already outnumber the cores.
        "NUMBA_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    })
    return env


# The cases of check_hangs.py, read from its source so the two cannot drift
# apart (importing it would initialise MPI in the test process).
HANG_CASES = re.findall(r"^def case_(\w+)\(", (SCRIPTS / "check_hangs.py").read_text(),
                        flags=re.MULTILINE)
# Generous for a 2-rank start-up on a loaded machine; a deadlock never ends.
HANG_TIMEOUT_S = 120


@pytest.mark.mpi
@pytest.mark.parametrize("case", HANG_CASES)
def test_failure_on_some_ranks_reaches_all(case):
    """Issue 13: an exception on one rank must raise on every rank, not deadlock the others.

    Run under ``-W error::RuntimeWarning`` (a RuntimeWarning is then an
    exception on the ranks that compute); the launch is killed and the test
    fails if any rank is still waiting after HANG_TIMEOUT_S.
    """
    _require_mpiexec()
    _warm_numba_cache(_backends())
    cmd = [str(MPIEXEC), "-n", "2", sys.executable, "-W", "error::RuntimeWarning", "-m",
           "mpi4py", str(SCRIPTS / "check_hangs.py"), case]
    result = _run(cmd, _mpi_env(), timeout_s=HANG_TIMEOUT_S)
    assert result.returncode == 0, result.stdout
    assert f"OK: {case}" in result.stdout, result.stdout


def test_hang_cases_found():
    assert {"tiny_sigma_empty_rank", "comm_on_one_rank", "warning_empty_rank",
            "warning_one_rank", "fault_in_sweep"} <= set(HANG_CASES)


@pytest.mark.mpi
def test_example_runs():
    _require_mpiexec()
    example = Path(__file__).parents[1] / "examples" / "mpi_entropy.py"
    result = _run([str(MPIEXEC), "-n", "2", sys.executable, str(example), "--runs-per-rank",
                   "40", "--cells", "8", "--steps", "1", "--backend", "numpy"], _mpi_env())
    assert result.returncode == 0, result.stdout
    # Both schedules and the single process print the same soft entropy.
    soft = [line.split(":")[1].split()[0] for line in result.stdout.splitlines()
            if line.startswith(("soft entropy [", "single process"))]
    assert len(soft) == 3 and len(set(soft)) == 1, result.stdout
    assert "2 ranks, N = 87 runs" in result.stdout


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_missing_mpi4py_says_how_to_install():
    # None in sys.modules makes "import mpi4py" fail as if it were not installed.
    result = _python(
        "import sys\n"
        "sys.modules['mpi4py'] = None\n"
        "import kdentropy\n"
        "try:\n"
        "    import kdentropy.mpi\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    sys.exit('kdentropy.mpi imported without mpi4py')\n"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pip install 'kdentropy[mpi]'" in result.stdout


def test_import_kdentropy_does_not_import_mpi4py():
    result = _python(
        "import sys, numpy as np\n"
        "import kdentropy as kde\n"
        "kde.soft_entropy_and_grad(np.eye(3), backend='numpy')\n"
        "kde.hard_entropy(np.eye(3))\n"
        "kde.available_backends()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mpi4py'))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
