#!/usr/bin/env python
"""Write ``RESULTS.md`` from asv's JSON results, so the committed numbers are never typed by hand.

Run it with the interpreter that ran the benchmarks (``asv run --python=same``
benchmarks the current environment, so its package versions are the ones
that were measured)::

    cd asv_benchmarks
    asv run --python=same --set-commit-hash=$(git rev-parse HEAD)
    python make_results.py

By default it picks the most recent results file (``results/<machine>/<commit
prefix>-<environment>.json``) that holds the soft-entropy timings, i.e. the
last full run; ``--machine`` and ``--commit`` narrow the choice.
It writes a run-information table (machine, commit, dates, versions), a
soft-entropy table (time, peak memory, ratio to the dense-product floor,
GFLOP/s and speed-up over the ``numpy`` backend per backend, shape and dtype)
and one table per remaining benchmark.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import itertools
import json
import math
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOFT = "soft_entropy."


@dataclass
class Entry:
    """One measured value: a benchmark at one parameter combination."""

    benchmark: str
    params: tuple[str, ...]          # repr strings, as asv stores them
    value: float | None              # None: failed; NaN: skipped
    q25: float | None = None
    q75: float | None = None


@dataclass
class Run:
    """The contents of one asv results file, plus the suite description."""

    path: Path
    data: dict
    benchmarks: dict                 # results/benchmarks.json
    entries: dict[str, list[Entry]] = field(default_factory=dict)

    def unit(self, name: str) -> str:
        return self.benchmarks.get(name, {}).get("unit", "")

    def param_names(self, name: str) -> list[str]:
        return list(self.benchmarks.get(name, {}).get("param_names", []))


# ----------------------------------------------------------------------------- loading

def _results_files(results_dir: Path, machine: str | None) -> list[Path]:
    if not results_dir.is_dir():
        raise SystemExit(f"no asv results in {results_dir}: run asv first (see README.md)")
    machines = [machine] if machine else sorted(
        p.name for p in results_dir.iterdir() if p.is_dir())
    files = []
    for m in machines:
        mdir = results_dir / m
        if not mdir.is_dir():
            raise SystemExit(f"no results for machine {m!r} in {results_dir}")
        files += [p for p in mdir.glob("*.json") if p.name != "machine.json"]
    return files


def _last_started(data: dict) -> float:
    cols = data.get("result_columns", [])
    if "started_at" not in cols:
        return 0.0
    i = cols.index("started_at")
    starts = [row[i] for row in data.get("results", {}).values()
              if len(row) > i and row[i] is not None]
    return max(starts, default=0.0)


def select_run(results_dir: Path, machine: str | None = None,
               commit: str | None = None) -> Run:
    """Load the newest results file, optionally restricted to a machine and commit prefix.

    Parameters
    ----------
    results_dir : Path
        asv's ``results_dir`` (``asv_benchmarks/results``).
    machine : str, optional
        Machine name (a sub-directory of ``results_dir``).
    commit : str, optional
        Prefix of the commit hash.

    Returns
    -------
    Run
    """
    candidates = []
    for path in _results_files(results_dir, machine):
        with open(path) as f:
            data = json.load(f)
        if commit and not str(data.get("commit_hash", "")).startswith(commit):
            continue
        # Prefer files holding the soft-entropy timings (a full run) over
        # partial ones, e.g. from `asv continuous -b ...`; then the newest.
        full = f"{SOFT}SoftEntropy.time_value_and_grad" in data.get("results", {})
        candidates.append((full, _last_started(data), path, data))
    if not candidates:
        what = f" for commit {commit!r}" if commit else ""
        raise SystemExit(f"no results files{what} under {results_dir}")
    *_, path, data = max(candidates, key=lambda c: c[:2])
    bench_file = results_dir / "benchmarks.json"
    benchmarks = json.loads(bench_file.read_text()) if bench_file.is_file() else {}
    run = Run(path=path, data=data, benchmarks=benchmarks)
    run.entries = parse_entries(data)
    return run


def _column(row: list, columns: list[str], name: str) -> Any:
    i = columns.index(name) if name in columns else None
    return row[i] if i is not None and i < len(row) else None


def parse_entries(data: dict) -> dict[str, list[Entry]]:
    """Expand asv's per-benchmark result rows into one :class:`Entry` per parameter combination.

    asv stores, for a parameterised benchmark, one flat list of results in
    the order of ``itertools.product(*params)``.
    """
    columns = data["result_columns"]
    out: dict[str, list[Entry]] = {}
    for name, row in sorted(data["results"].items()):
        results = _column(row, columns, "result")
        params = _column(row, columns, "params") or []
        q25 = _column(row, columns, "stats_q_25")
        q75 = _column(row, columns, "stats_q_75")
        combos = list(itertools.product(*params)) if params else [()]
        if not isinstance(results, list):
            results = [results]
        entries = []
        for k, combo in enumerate(combos):
            value = results[k] if k < len(results) else None
            entries.append(Entry(
                name, tuple(combo), value,
                q25[k] if isinstance(q25, list) and k < len(q25) else None,
                q75[k] if isinstance(q75, list) and k < len(q75) else None))
        out[name] = entries
    return out


# ----------------------------------------------------------------------------- formatting

def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def fmt_seconds(t: float) -> str:
    """Three significant digits with a unit: ``1.23 s``, ``45.6 ms``, ``789 µs``."""
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
        if t >= scale or unit == "ns":
            v = t / scale
            return f"{v:.3g} {unit}" if v < 1000 else f"{v:.0f} {unit}"
    raise AssertionError("unreachable")


def fmt_bytes(b: float) -> str:
    """Mebibytes below 10 GiB, gibibytes above."""
    return f"{b / 2**30:.1f} GiB" if b >= 10 * 2**30 else f"{b / 2**20:.0f} MiB"


def fmt_value(value: float | None, unit: str, q25: float | None = None,
              q75: float | None = None) -> str:
    """A result in its unit; time gets ``± half the inter-quartile range`` when known."""
    if value is None:
        return "failed"
    if not _finite(value):
        return "skipped"
    if unit == "seconds":
        text = fmt_seconds(value)
        if _finite(q25) and _finite(q75) and q75 > q25:
            text += f" ± {fmt_seconds((q75 - q25) / 2)}"
        return text
    if unit == "bytes":
        return fmt_bytes(value)
    if unit == "ratio":
        return f"{value:.2f}"
    if unit == "GFLOP/s":
        return f"{value:.1f}"
    return f"{value:.4g} {unit}".rstrip()


def _unquote(param: str) -> str:
    """``"'cpu'"`` -> ``cpu``; ``"(1024, 64)"`` -> ``1024 x 64``."""
    try:
        value = ast.literal_eval(param)
    except (ValueError, SyntaxError):
        return param
    if isinstance(value, tuple):
        return " x ".join(map(str, value))
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    marks = {"l": ":--", "r": "--:", "c": ":-:"}
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _utc(ms: float | None) -> str:
    if not _finite(ms):
        return "unknown"
    t = datetime.datetime.fromtimestamp(ms / 1000.0, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M UTC")


# ----------------------------------------------------------------------------- sections

def _versions() -> list[tuple[str, str]]:
    rows = [("Python", f"{platform.python_version()} ({os.path.abspath(sys.executable)})")]
    for module in ("numpy", "scipy", "numba", "kdentropy", "asv"):
        try:
            mod = __import__(module)
            rows.append((module, getattr(mod, "__version__", "unknown")))
        except ImportError:
            rows.append((module, "not installed"))
    try:
        import numpy as np

        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        rows.append(("BLAS (numpy)", f"{blas.get('name', '?')} {blas.get('version', '')}".strip()))
    except Exception:  # show_config's layout differs across numpy versions
        pass
    try:
        import numba

        rows.append(("Numba threads", str(numba.config.NUMBA_NUM_THREADS)))
    except ImportError:
        pass
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                "NUMBA_NUM_THREADS", "KDENTROPY_BACKEND"):
        if os.environ.get(var):
            rows.append((var, os.environ[var]))
    return rows


def run_info(run: Run) -> list[str]:
    """The machine, commit, dates and package versions of a run."""
    d = run.data
    p = d.get("params", {})
    starts = [e for e in (_column(row, d["result_columns"], "started_at")
                          for row in d["results"].values()) if _finite(e)]
    total = sum(x for x in (_column(row, d["result_columns"], "duration")
                            for row in d["results"].values()) if _finite(x))
    shown_path = run.path.relative_to(HERE) if run.path.is_relative_to(HERE) else run.path
    ram = p.get("ram", "")
    ram = f"{int(ram) / 2**30:.1f} GiB" if str(ram).isdigit() else ram
    rows = [
        ("Machine", f"{p.get('machine', '?')}: {p.get('cpu', '?')}, {p.get('num_cpu', '?')} CPUs, "
                    f"{ram} RAM, {p.get('os', '?')} {p.get('arch', '')}".rstrip()),
        ("Commit", f"`{d.get('commit_hash', '?')}` (committed {_utc(d.get('date'))})"),
        ("Run date", _utc(max(starts, default=None))),
        ("Time in benchmarks", f"{total / 60:.1f} min (sum of asv's per-benchmark durations)"),
        ("asv environment", f"`{d.get('env_name', '?')}`"),
        ("Results file", f"`{shown_path}`"),
    ]
    rows += [(k, v) for k, v in _versions()]
    lines = ["## Run", ""]
    lines += _table(["", ""], [(k, v) for k, v in rows], "ll")
    lines += ["", "Package versions and thread settings are those of the interpreter that ran "
                  "`make_results.py`; with `asv run --python=same` that is the benchmarked "
                  "environment."]
    return lines


SOFT_COLUMNS = [
    ("value", f"{SOFT}SoftEntropy.time_value"),
    ("value+grad", f"{SOFT}SoftEntropy.time_value_and_grad"),
    ("peak mem value", f"{SOFT}SoftEntropyPeakMem.peakmem_value"),
    ("peak mem value+grad", f"{SOFT}SoftEntropyPeakMem.peakmem_value_and_grad"),
    ("value+grad / floor", f"{SOFT}SoftEntropyFloor.track_floor_ratio"),
    ("GFLOP/s", f"{SOFT}SoftEntropyThroughput.track_gflops"),
]


def soft_entropy_section(run: Run) -> list[str]:
    """One row per (backend, shape, dtype) that ran, one column per soft-entropy benchmark."""
    by_key: dict[str, dict[tuple[str, ...], Entry]] = {}
    for _, name in SOFT_COLUMNS:
        by_key[name] = {e.params: e for e in run.entries.get(name, [])}
    vg = by_key[f"{SOFT}SoftEntropy.time_value_and_grad"]
    keys: list[tuple[str, ...]] = []
    for _, name in SOFT_COLUMNS:
        for e in run.entries.get(name, []):
            if e.params not in keys:
                keys.append(e.params)
    if not keys:
        return []

    # Rows in the suite's own order: by shape, then dtype, then backend.
    grid = run.benchmarks.get(f"{SOFT}SoftEntropy.time_value_and_grad", {}).get("params")
    if not grid or len(grid) != 3:
        grid = [sorted({k[i] for k in keys}) for i in range(3)]

    def order(k: tuple[str, ...]) -> tuple[int, ...]:
        return tuple(grid[i].index(k[i]) if k[i] in grid[i] else len(grid[i])
                     for i in (1, 2, 0))

    rows, not_run = [], set()
    for key in sorted(keys, key=order):
        cells = [by_key[name].get(key) for _, name in SOFT_COLUMNS]
        if all(c is None or (c.value is not None and not _finite(c.value)) for c in cells):
            not_run.add(_unquote(key[0]) if key[0] != "'numpy'" else None)
            continue
        row = [_unquote(k) for k in key]
        for (label, name), c in zip(SOFT_COLUMNS, cells):
            row.append("" if c is None else fmt_value(c.value, run.unit(name), c.q25, c.q75))
        speedup = ""
        mine, ref = vg.get(key), vg.get(("'numpy'",) + key[1:])
        if key[0] != "'numpy'" and mine and ref and _finite(mine.value) and _finite(ref.value):
            speedup = f"{ref.value / mine.value:.1f}x"
        row.append(speedup)
        rows.append(row)

    header = ["backend", "N x D", "dtype"] + [label for label, _ in SOFT_COLUMNS] + \
             ["speed-up vs numpy"]
    lines = ["## Soft entropy", "",
             "Median wall time of one call (± half the inter-quartile range), peak resident "
             "memory of the benchmark process (interpreter and input included), value+gradient "
             "time divided by the dense floor measured in the same process (NumPy BLAS: "
             "`S @ S.T` then `(N x N) @ S` in the same dtype, 4 N²D flops; below 1 beats it), "
             "dense-equivalent GFLOP/s of value+gradient (4 N²D flops / time) and the "
             "value+gradient speed-up over the dense `numpy` backend. Inputs: 8 noisy 0/1 "
             "prototypes (noise 0.15), T = 10, σ = 0.5.", ""]
    lines += _table(header, rows, "lrl" + "r" * (len(header) - 3))
    notes = []
    if any(n for n in not_run):
        notes.append("Not run on this machine: " + ", ".join(sorted(n for n in not_run if n))
                     + " (no GPU).")
    notes.append("The `numpy` backend is skipped where its N x N float64 temporaries would "
                 "exceed 4 GiB (N = 16384).")
    return lines + [line for note in notes for line in ("", note)]


def other_sections(run: Run) -> list[str]:
    """A table per remaining benchmark, its parameters as columns."""
    lines = []
    for name, entries in run.entries.items():
        if name.startswith(SOFT):
            continue
        unit = run.unit(name)
        param_names = run.param_names(name) or [f"p{i}" for i in range(len(entries[0].params))]
        rows = [[_unquote(p) for p in e.params] + [fmt_value(e.value, unit, e.q25, e.q75)]
                for e in entries]
        kind = {"seconds": "time", "bytes": "peak memory"}.get(unit, unit)
        lines += [f"### `{name}`", ""]
        lines += _table(param_names + [kind], rows, "l" * len(param_names) + "r")
        lines += [""]
    if lines:
        lines = ["## Other benchmarks", ""] + lines
    return lines


def render(run: Run) -> str:
    """The whole RESULTS.md text."""
    lines = ["# kdentropy benchmark results", "",
             "Generated by `asv_benchmarks/make_results.py` from asv's JSON results; do not "
             "edit by hand. To regenerate, see `asv_benchmarks/README.md`.", ""]
    lines += run_info(run) + [""]
    lines += soft_entropy_section(run) + [""]
    lines += other_sections(run)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results",
                        help="asv results directory (default: %(default)s)")
    parser.add_argument("--machine", help="machine name (default: any; newest results win)")
    parser.add_argument("--commit", help="commit hash prefix (default: newest results)")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md",
                        help="where to write (default: %(default)s); '-' for stdout")
    args = parser.parse_args(argv)
    run = select_run(args.results, args.machine, args.commit)
    text = render(run)
    if str(args.output) == "-":
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output} from {run.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
