"""Fixtures and test-session settings. Helpers (generators, tolerances) live in ``helpers.py``."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import settings

# Property tests run on a shared 2-core CI machine: bound their cost, and do
# not let timing noise fail a correct test.
settings.register_profile("ci", max_examples=40, deadline=None)
settings.load_profile("ci")


@pytest.fixture
def rng(request) -> np.random.Generator:
    # A fresh, reproducible stream per test, so failures can be replayed.
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- expected skips
# A skip is a test that did not run and still shows green. With
# KDENTROPY_EXPECTED_SKIPS=<file>, the session fails when it skipped something
# that file does not list, or more often than the file allows: a broken import
# or a backend that silently became unavailable cannot pass as a skip.
#
# The file has one line per reason, ``<max count> <reason>`` (the reason as
# pytest reports it, without "Skipped: "); blank lines and ``#`` comments are
# ignored. KDENTROPY_SKIPS_OUT=<file> writes a run's skips in that format.

_EXPECTED_SKIPS_VAR = "KDENTROPY_EXPECTED_SKIPS"
_skips: dict[str, int] = {}
_skip_problems: list[str] = []


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ").strip()


def _record_skip(report) -> None:
    # xfail is reported as skipped too; it is not a skip.
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        _skips[reason] = _skips.get(reason, 0) + 1


def pytest_runtest_logreport(report) -> None:
    _record_skip(report)


def pytest_collectreport(report) -> None:
    # Module-level importorskip / pytest.skip(allow_module_level=True).
    _record_skip(report)


def read_expected_skips(path: str) -> dict[str, int]:
    """``{reason: max count}`` from an expected-skips file (format above)."""
    expected: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            count, _, reason = line.partition(" ")
            if not count.isdigit() or not reason.strip():
                raise ValueError(f"{path}:{n}: expected '<count> <reason>', got {line!r}")
            expected[reason.strip()] = int(count)
    return expected


def unexpected_skips(seen: dict[str, int], expected: dict[str, int]) -> list[str]:
    """One message per skip reason that is not listed or whose count exceeds the listed one."""
    problems = []
    for reason, count in sorted(seen.items()):
        if reason not in expected:
            problems.append(f"unexpected skip ({count}x): {reason}")
        elif count > expected[reason]:
            problems.append(f"more skips than expected ({count} > {expected[reason]}): {reason}")
    return problems


def pytest_sessionfinish(session, exitstatus) -> None:
    import os

    out = os.environ.get("KDENTROPY_SKIPS_OUT")
    if out:  # write this run's skips in the file's format, to start or update one
        with open(out, "w", encoding="utf-8") as f:
            f.writelines(f"{count} {reason}\n" for reason, count in sorted(_skips.items()))
    path = os.environ.get(_EXPECTED_SKIPS_VAR)
    if not path:
        return
    try:
        _skip_problems.extend(unexpected_skips(_skips, read_expected_skips(path)))
    except (OSError, ValueError) as exc:
        _skip_problems.append(f"cannot read {_EXPECTED_SKIPS_VAR}={path}: {exc}")
    if _skip_problems and session.exitstatus == 0:
        session.exitstatus = 1  # pytest returns this status


def pytest_terminal_summary(terminalreporter) -> None:
    if _skip_problems:
        terminalreporter.section("expected skips", red=True)
        for line in _skip_problems:
            terminalreporter.write_line(line)
