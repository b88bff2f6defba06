#!/usr/bin/env python
"""Write ``RESULTS.md`` from asv's JSON results, so the committed numbers are never typed by hand.

``asv_benchmarks/run.sh`` runs asv and then this script, with the
interpreter that ran the benchmarks (``asv run --python=same`` benchmarks the
current environment, so its package versions are the ones that were
measured). Besides asv's JSON it reads the run's record
(``results/records/<commit>.jsonl``: interleaved samples, gradient errors,
the BLAS kernel each comparison process ran) and environment file
(``results/records/<commit>-environment.json``). ``--check`` exits 1 unless
RESULTS.md was measured with HEAD's kernel sources.

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
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SOFT = "soft_entropy."
COMPARISONS = "comparisons."
#: The sources whose git hashes identify "the kernels" RESULTS.md was measured with.
KERNEL_PATHS = ("src/kdentropy/backends", "src/kdentropy/_jit.py",
                "src/kdentropy/_estimator.py", "src/kdentropy/_soft.py",
                "src/kdentropy/entropy.py")
#: Variables that force OpenBLAS's kernel choice; run.sh unsets them.
FORCING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


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


# ----------------------------------------------------------------------------- provenance

def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout.strip()


def kernel_digest(rev: str = "HEAD") -> str:
    """A short hash of the git objects of :data:`KERNEL_PATHS` at ``rev``.

    Equal digests mean the kernels' sources are identical, whatever else changed.
    """
    import hashlib

    lines = []
    for path in KERNEL_PATHS:
        try:
            lines.append(f"{path} {_git('rev-parse', f'{rev}:{path}')}")
        except subprocess.CalledProcessError:
            lines.append(f"{path} absent")
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()[:12]


def kernels_dirty() -> bool:
    """Whether the working tree differs from HEAD under :data:`KERNEL_PATHS`."""
    return bool(_git("status", "--porcelain", "--", *KERNEL_PATHS))


def record_environment(path: Path) -> dict:
    """Write what the benchmark processes will run with: versions, BLAS, settings, sources.

    Called by ``run.sh`` in the environment it gives asv, after it has unset
    :data:`FORCING_VARS`, so the BLAS kernel reported here is the one the
    benchmarks load.
    """
    sys.path.insert(0, str(HERE))
    from benchmarks import common, comparisons  # noqa: E402  (imports numpy, kdentropy)

    env = {
        "python": platform.python_version(),
        "versions": dict(_versions()) | comparisons.versions(),
        "blas": common.blas_info(),
        "env": common.relevant_env(),
        "unset_by_run_sh": os.environ.get("KDENTROPY_BENCH_UNSET", ""),
        "cpu": _cpu_model(),
        "head": _git("rev-parse", "HEAD"),
        "kernel_digest": kernel_digest(),
        "kernels_dirty": kernels_dirty(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(env, indent=1), encoding="utf-8")
    return env


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def read_records(path: Path | None) -> list[dict]:
    """The JSON lines of a benchmark record file (``[]`` when there is none)."""
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def check(results_md: Path) -> int:
    """0 if ``results_md`` was measured with HEAD's kernel sources, else 1 (and says why)."""
    text = results_md.read_text(encoding="utf-8") if results_md.is_file() else ""
    head = kernel_digest()
    recorded = None
    for line in text.splitlines():
        if line.startswith("| Kernel sources |"):
            recorded = line.split("`")[1] if "`" in line else None
            if "uncommitted" in line:
                print(f"{results_md}: measured with uncommitted kernel changes; regenerate "
                      "(asv_benchmarks/run.sh)")
                return 1
    if recorded is None:
        print(f"{results_md}: no kernel-sources digest recorded; "
              "regenerate (asv_benchmarks/run.sh)")
        return 1
    if recorded != head:
        print(f"{results_md}: measured with kernel sources {recorded}, HEAD has {head}; "
              "regenerate (asv_benchmarks/run.sh)")
        return 1
    print(f"{results_md}: measured with HEAD's kernel sources ({head})")
    return 0


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
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                "OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "KDENTROPY_BACKEND", "JAX_ENABLE_X64"):
        if os.environ.get(var):
            rows.append((var, os.environ[var]))
    return rows


def run_info(run: Run, extra: Sequence[tuple[str, str]] = ()) -> list[str]:
    """The machine, commit, dates and package versions of a run, then the ``extra`` rows."""
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
    rows += [(k, v) for k, v in _versions()] + list(extra)
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


def other_sections(run: Run, skip: Sequence[str] = ()) -> list[str]:
    """A table per remaining benchmark (not soft entropy, nor a prefix in ``skip``)."""
    lines = []
    for name, entries in run.entries.items():
        if name.startswith((SOFT, *skip)):
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


# ----------------------------------------------------------------------------- records

def _latest(records: list[dict], benchmark: str) -> dict[tuple, dict]:
    """The last record of each parameter combination of one benchmark (reruns replace)."""
    out: dict[tuple, dict] = {}
    for r in records:
        if r.get("benchmark") == benchmark:
            out[tuple(json.dumps(v) for v in r["params"].values())] = r
    return out


def fmt_spread(xs: Sequence[float], fmt) -> str:
    """``median [min-max]`` of samples, each formatted by ``fmt``."""
    if not xs:
        return ""
    return f"{fmt(statistics.median(xs))} [{fmt(min(xs))}\u2013{fmt(max(xs))}]"


def _ratio(x: float) -> str:
    return f"{x:.2f}"


def _shape(shape: Sequence[int]) -> str:
    return " x ".join(map(str, shape))


def blas_kernels(records: list[dict], env: dict | None) -> list[str]:
    """The distinct BLAS libraries/kernels the benchmark processes reported (threadpoolctl)."""
    seen: list[str] = []
    for r in records + ([env] if env else []):
        for lib in r.get("blas", []):
            if lib.get("user_api") != "blas":
                continue
            text = (f"{lib.get('prefix')}: {lib.get('internal_api')} {lib.get('version')}, kernel "
                    f"{lib.get('architecture')}, {lib.get('num_threads')} threads")
            if text not in seen:
                seen.append(text)
    return seen


def provenance_rows(records: list[dict], env: dict | None) -> list[tuple[str, str]]:
    """Rows for the run table: BLAS kernel, forcing variables, versions, kernel sources."""
    rows = []
    kernels = blas_kernels(records, env)
    if kernels:
        rows.append(("BLAS kernel that ran (threadpoolctl)", "; ".join(kernels)))
    forced = sorted({f"{k}={v}" for r in records + ([env] if env else [])
                     for k, v in r.get("env", {}).items() if k in FORCING_VARS})
    unset = (env or {}).get("unset_by_run_sh", "")
    if forced:
        rows.append(("BLAS kernel forced", ", ".join(forced) + " was set in the benchmark "
                     "processes: OpenBLAS did not choose its kernel itself"))
    elif unset:
        rows.append(("BLAS kernel forced", f"no: the shell set {unset}; run.sh unset it for "
                     "the benchmarks, so OpenBLAS chose its own kernel for this CPU"))
    if env:
        v = env.get("versions", {})
        for key in ("jax", "jaxlib", "jax_enable_x64", "torch", "torch_threads"):
            if key in v:
                rows.append((key, v[key]))
        settings = {k: val for k, val in env.get("env", {}).items()
                    if k not in ("KDENTROPY_BENCH_RECORD", "KDENTROPY_BENCH_UNSET")}
        if settings:
            rows.append(("Environment (benchmarks)",
                         ", ".join(f"`{k}={val}`" for k, val in settings.items())))
        dirty = ", with uncommitted changes" if env.get("kernels_dirty") else ""
        rows.append(("Kernel sources", f"`{env.get('kernel_digest')}` (git objects of "
                     f"{', '.join(KERNEL_PATHS)} at `{env.get('head', '?')[:12]}`{dirty}; "
                     "`make_results.py --check` compares it with HEAD)"))
    return rows


def comparison_section(records: list[dict]) -> list[str]:
    """kdentropy against each alternative: times, per-round ratios and gradient errors."""
    recs = _latest(records, "comparisons.Comparison")
    if not recs:
        return []
    rows = []
    for r in sorted(recs.values(), key=lambda r: (r["params"]["shape"][0] * r["params"]["shape"][1],
                                                   r["params"]["shape"], r["params"]["dtype"])):
        p, label = r["params"], r["label"]
        ours, theirs = r["samples"]["kdentropy cpu"], r["samples"][label]
        err = r.get("errors", {})
        rows.append([_shape(p["shape"]), p["dtype"], label,
                     fmt_spread(ours, fmt_seconds), fmt_spread(theirs, fmt_seconds),
                     fmt_spread(r["ratios"], _ratio), str(len(ours)),
                     " / ".join(f"{err[k]['grad_rel_error']:.1e}" for k in ("kdentropy cpu", label)
                                if k in err)])
    header = ["N x D", "dtype", "alternative", "kdentropy cpu", "alternative time",
              "alternative / kdentropy", "rounds", "grad error kdentropy / alternative"]
    lines = ["## kdentropy against the alternatives", "",
             "Value and gradient, median [min\u2013max] over interleaved rounds in one process "
             "(order rotated each round, one untimed warm-up round); the ratio is taken per "
             "round (above 1: kdentropy is faster). Gradient error: norm-relative, against "
             "kdentropy in float64 on the same (rounded) input. Alternatives (see "
             "`benchmarks/comparisons.py`): dense NumPy keeping K (SYRK Gram, 3 N\u00b2D "
             "flops); blocked NumPy over symmetric square tiles (float64 sums, tiles formed "
             "again in pass 2: 4 N\u00b2D flops, like kdentropy); jax.jit and PyTorch "
             "autograd of the centred dense Gram form. Inputs: 8 noisy 0/1 prototypes (noise "
             "0.15), T = 10, \u03c3 = 0.5.", ""]
    lines += _table(header, rows, "lll" + "r" * 4 + "l")
    done = {(tuple(r["params"]["shape"]), r["params"]["dtype"], r["params"]["alternative"])
            for r in recs.values()}
    lines += ["", f"{len(done)} combinations ran; the others were skipped (dense N x N "
              "temporaries above 6 GiB, or the library is not installed)."]
    return lines


def floors_section(records: list[dict]) -> list[str]:
    """The two floors: times, GFLOP/s against the measured peak, kdentropy's ratio to each."""
    recs = _latest(records, "comparisons.Floors")
    peaks = {r["params"]["dtype"]: r for r in _latest(records, "comparisons.PeakRate").values()}
    if not recs and not peaks:
        return []
    lines = ["## Floors and the machine's peak", ""]
    if peaks:
        probe = next(iter(peaks.values())).get("probe", "GEMM")
        lines += [f"Measured peak ({probe}): " + "; ".join(
            f"{d} {fmt_spread(peaks[d]['gflops'], lambda x: f'{x:.0f}')} GFLOP/s"
            for d in sorted(peaks)) + ".", ""]
    rows = []
    for r in sorted(recs.values(), key=lambda r: (r["params"]["shape"][0] * r["params"]["shape"][1],
                                                   r["params"]["shape"], r["params"]["dtype"],
                                                   r["params"]["floor"])):
        p, label = r["params"], r["label"]
        t = r["samples"][label]
        rate = r["flops"] / statistics.median(t) / 1e9
        peak = peaks.get(p["dtype"])
        share = f"{100 * rate / statistics.median(peak['gflops']):.0f} %" if peak else ""
        rows.append([_shape(p["shape"]), p["dtype"], label, fmt_spread(t, fmt_seconds),
                     f"{rate:.1f}", share, fmt_spread(r["ratios"], _ratio)])
    header = ["N x D", "dtype", "floor", "floor time", "floor GFLOP/s", "of peak",
              "kdentropy / floor"]
    lines += ["Each floor is timed interleaved with kdentropy's value+gradient in one process "
              "(median [min\u2013max]; the ratio per round, below 1: kdentropy is faster). "
              "GEMM floor: `S @ S2.T` (a copy forces GEMM) then `K @ S`, 4 N\u00b2D flops, what "
              "a dense implementation that ignores K's symmetry must do besides its exps. "
              "Symmetric floor: `S @ S.T` as SYRK (upper triangle) then `K @ S`, 3 N\u00b2D "
              "flops, the products with symmetry used. Neither counts the N\u00b2 exps, so "
              "neither is a bound kdentropy cannot beat: kdentropy forms the Gram tiles twice "
              "(4 N\u00b2D flops over i < j) and does the exps, but never writes K to memory.",
              ""]
    lines += _table(header, rows, "lll" + "r" * 4)
    return lines


def paths_section(records: list[dict]) -> list[str]:
    """The ``cpu`` backend's numerical paths, timed against its plain float32 Gram path."""
    recs = _latest(records, "comparisons.KernelPaths")
    if not recs:
        return []
    rows = []
    for r in recs.values():
        samples = r["samples"]
        ours = samples["kdentropy cpu"]
        plain = samples["float32 Gram path, same shape"]
        floor = next(v for k, v in samples.items() if k.startswith("GEMM floor"))
        rows.append([r["params"]["path"], r["dtype"], _shape(r["shape"]), f"{r['sigma']:g}",
                     fmt_spread(ours, fmt_seconds),
                     fmt_spread([a / b for a, b in zip(ours, plain)], _ratio),
                     fmt_spread([a / b for a, b in zip(ours, floor)], _ratio), str(len(ours))])
    header = ["path", "dtype", "N x D", "\u03c3", "value+grad", "/ float32 Gram path",
              "/ GEMM floor", "rounds"]
    lines = ["## The cpu backend's numerical paths", "",
             "Value and gradient on input families that take each path (checked in "
             "`tests/test_asv_suite.py`): float32 Gram distances (the plain case), a float64 Gram "
             "product for float32 input (small \u03c3), direct differences (\u03c3 so small that "
             "even a float64 Gram product would lose the kernel), pass 2 redone in float64 for "
             "tight float32 clusters (noise 1e-4), and a family whose float64 kernel values "
             "would be subnormal. Each is timed interleaved with the plain float32 path at "
             "the same shape and with the GEMM floor of its own input; median [min\u2013max], "
             "ratios per round.", ""]
    lines += _table(header, rows, "llll" + "r" * 4)
    return lines


def render(run: Run, records: Sequence[dict] = (), env: dict | None = None) -> str:
    """The whole RESULTS.md text.

    Parameters
    ----------
    run : Run
        The asv results.
    records : sequence of dict, optional
        The run's record lines (:func:`read_records`): interleaved samples of the
        comparisons, floors and numerical paths, and the BLAS kernel that ran.
    env : dict, optional
        What ``run.sh`` recorded before the run (:func:`record_environment`).
    """
    records = list(records)
    lines = ["# kdentropy benchmark results", "",
             "Generated by `asv_benchmarks/make_results.py` from asv's JSON results and the "
             "run's record (`results/records/`); do not edit by hand. To regenerate, run "
             "`asv_benchmarks/run.sh` (see `asv_benchmarks/README.md`).", ""]
    lines += run_info(run, provenance_rows(records, env)) + [""]
    loaded = [r for r in records if r.get("loadavg") and r["loadavg"][0] > r.get("cpus", 1)]
    if loaded:
        lines += [f"**Warning:** {len(loaded)} of {len(records)} recorded measurements ran "
                  "while the 1-minute load average exceeded the number of CPUs (up to "
                  f"{max(r['loadavg'][0] for r in loaded):.1f} on {loaded[0].get('cpus')}): "
                  "other processes shared the cores, and multi-threaded BLAS calls slow down "
                  "far more than kdentropy's under such load, so the ratios favour kdentropy. "
                  "Regenerate on a quiet machine.", ""]
    lines += soft_entropy_section(run) + [""]
    for section in (comparison_section, floors_section, paths_section):
        part = section(records)
        if part:
            lines += part + [""]
    # asv's single numbers of the comparisons are in the tables above when recorded.
    lines += other_sections(run, skip=(COMPARISONS,) if records else ())
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results",
                        help="asv results directory (default: %(default)s)")
    parser.add_argument("--machine", help="machine name (default: any; newest results win)")
    parser.add_argument("--commit", help="commit hash prefix (default: newest results)")
    parser.add_argument("--record", type=Path,
                        help="the run's record file (default: results/records/<commit>.jsonl)")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md",
                        help="where to write (default: %(default)s); '-' for stdout")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless --output (RESULTS.md) was measured with HEAD's "
                             "kernel sources; writes nothing")
    parser.add_argument("--record-environment", type=Path, metavar="PATH",
                        help="write this process's versions, BLAS kernel and settings to PATH "
                             "(run.sh, before asv) and exit")
    parser.add_argument("--kernel-paths", action="store_true",
                        help="print the kernel source paths and exit")
    args = parser.parse_args(argv)
    if args.kernel_paths:
        print(" ".join(str(REPO / p) for p in KERNEL_PATHS))
        return 0
    if args.check:
        return check(args.output)
    if args.record_environment:
        record_environment(args.record_environment)
        return 0
    run = select_run(args.results, args.machine, args.commit)
    commit = run.data.get("commit_hash", "")
    record = args.record or args.results / "records" / f"{commit}.jsonl"
    env_file = args.results / "records" / f"{commit}-environment.json"
    env = json.loads(env_file.read_text()) if env_file.is_file() else None
    text = render(run, read_records(record), env)
    if str(args.output) == "-":
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        also = f" and {record}" if record.is_file() else ""
        print(f"wrote {args.output} from {run.path}{also}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
