"""Smoke test of the asv benchmark suite, so that it cannot rot unnoticed.

Imports every module of ``asv_benchmarks/benchmarks`` and runs, for every
benchmark class, ``setup`` and one call of each ``time_``/``peakmem_``/``track_``
method at the smallest problem size: numeric and tuple parameters take their
first (smallest) value, string parameters (backend, dtype, optimizer, ...) all
of theirs. Combinations whose ``setup`` raises ``NotImplementedError`` (asv's
"skip", e.g. ``cuda`` without a GPU) are skipped the same way. asv itself is
not spawned here; ``asv check --python=same`` is the full check.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import itertools
import json
import math
import pkgutil
import sys
from pathlib import Path

import numpy as np
import pytest

import kdentropy as kde

ASV_DIR = Path(__file__).resolve().parents[1] / "asv_benchmarks"
PREFIXES = ("time_", "peakmem_", "track_")


def _import_suite():
    sys.path.insert(0, str(ASV_DIR))
    try:
        package = importlib.import_module("benchmarks")
        names = sorted(m.name for m in pkgutil.iter_modules(package.__path__))
        modules = [importlib.import_module(f"benchmarks.{name}") for name in names]
    finally:
        sys.path.remove(str(ASV_DIR))
    return package, modules


PACKAGE, MODULES = _import_suite()
common = importlib.import_module("benchmarks.common")


def _benchmark_classes():
    for module in MODULES:
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if name.startswith("_") or cls.__module__ != module.__name__:
                continue
            if any(m.startswith(PREFIXES) for m in dir(cls)):
                yield cls


CLASSES = list(_benchmark_classes())


def _smallest(values):
    """All values of a categorical parameter; the first (smallest) of a size parameter."""
    if all(isinstance(v, str) for v in values):
        return list(values)
    return [values[0]]


def _cases():
    for cls in CLASSES:
        params = getattr(cls, "params", None)
        if params is None:
            yield pytest.param(cls, (), id=cls.__name__)
            continue
        for combo in itertools.product(*(_smallest(list(v)) for v in params)):
            yield pytest.param(cls, combo, id=f"{cls.__name__}-{'-'.join(map(str, combo))}")


def test_suite_is_discovered():
    module_names = {m.__name__.rsplit(".", 1)[-1] for m in MODULES}
    assert {"common", "soft_entropy", "hard_entropy", "training"} <= module_names
    names = {cls.__name__ for cls in CLASSES}
    assert {"SoftEntropy", "SoftEntropyPeakMem", "SoftEntropyFloor", "SoftEntropyThroughput",
            "HardEntropy", "CellTrainingStep", "MLPForwardBackward", "OptimizerStep"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_benchmark_attributes(cls):
    params = cls.params
    param_names = cls.param_names
    assert isinstance(params, tuple) and len(params) == len(param_names)
    assert all(len(values) == len(set(map(repr, values))) > 0 for values in params)
    for name in dir(cls):
        if name.startswith("track_"):
            assert isinstance(getattr(getattr(cls, name), "unit", None), str), name


@pytest.mark.parametrize("cls, combo", list(_cases()))
def test_benchmark_runs(cls, combo):
    bench = cls()
    try:
        bench.setup(*combo)
    except NotImplementedError as exc:
        pytest.skip(f"asv would skip this combination: {exc}")
    for name in sorted(dir(bench)):
        if not name.startswith(PREFIXES):
            continue
        result = getattr(bench, name)(*combo)
        if name.startswith("track_"):
            assert isinstance(result, float) and math.isfinite(result) and result > 0, name


# ----------------------------------------------------------------------------- helpers

def test_clustered_is_deterministic_with_dtype_and_shape():
    a = common.clustered(64, 16, "float32")
    b = common.clustered(64, 16, "float32")
    assert a.dtype == np.float32 and a.shape == (64, 16)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(common.clustered(64, 16, seed=1), common.clustered(64, 16, seed=2))
    # Without noise every row is one of the n_proto prototypes.
    distinct = np.unique(common.clustered(256, 32, n_proto=4, noise=0.0) >= 0.5, axis=0)
    assert 1 <= len(distinct) <= 4


def test_numpy_backend_is_skipped_only_when_too_large():
    common.require_backend("numpy", 4096, 256)
    common.require_backend("numpy", 2048, 1024)
    with pytest.raises(NotImplementedError, match="numpy"):
        common.require_backend("numpy", 16384, 64)
    assert common.numpy_backend_bytes(16384, 64) > common.NUMPY_BACKEND_MAX_BYTES


def test_unavailable_backend_is_skipped(monkeypatch):
    monkeypatch.setattr(common.kdentropy, "available_backends", lambda: ["numpy"])
    with pytest.raises(NotImplementedError, match="cpu"):
        common.require_backend("cpu")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dense_floor_computes_the_two_products(dtype):
    rng = np.random.default_rng(7)
    S = rng.random((50, 6)).astype(dtype)
    # A tiny block size forces several row blocks.
    floor = common.DenseFloor(S, max_block_bytes=12 * 50 * S.itemsize)
    assert len(floor.blocks) == 5
    floor()
    S64 = S.astype(np.float64)
    expected = (S64 @ S64.T) @ S64
    assert floor.out.dtype == np.dtype(dtype)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(floor.out, expected, rtol=rtol)


def test_median_seconds_interleaves_and_counts_calls():
    calls = []
    fns = [lambda: calls.append("a"), lambda: calls.append("b")]
    medians = common.median_seconds(*fns, repeat=3)
    assert len(medians) == 2 and all(m >= 0 for m in medians)
    assert calls == ["a", "b"] * 3
    # Automatic repeat: fast functions get max_repeat rounds, slow ones min_repeat.
    calls.clear()
    common.median_seconds(*fns, min_repeat=2, max_repeat=4)
    assert calls == ["a", "b"] * 4
    calls.clear()
    common.median_seconds(*fns, budget=0.0, min_repeat=2, max_repeat=4)
    assert calls == ["a", "b"] * 2


def test_soft_discretize_matches_reference():
    from kdentropy.backends import reference

    X = common.clustered(40, 12, "float64")
    np.testing.assert_allclose(common.soft_discretize(X),
                               reference.soft_patterns(X, common.TEMPERATURE, common.THRESHOLD),
                               rtol=1e-12)


def test_every_registered_backend_is_benchmarked():
    from kdentropy import backends

    assert common.BACKENDS == list(backends.BACKEND_NAMES)
    by_name = {cls.__name__: cls for cls in CLASSES}
    for name in ("SoftEntropy", "SoftEntropyPeakMem", "SoftEntropyFloor", "CellTrainingStep"):
        assert list(by_name[name].params[0]) == common.BACKENDS, name


def test_floor_skips_backends_that_read_device_arrays(monkeypatch):
    # The host floor (NumPy BLAS) says nothing about a GPU backend.
    soft = importlib.import_module("benchmarks.soft_entropy")
    monkeypatch.setattr(soft, "reads_device_arrays", lambda backend: backend == "cpu")
    with pytest.raises(NotImplementedError, match="host backends only"):
        soft.SoftEntropyFloor().setup("cpu", (64, 8), "float64")


# ----------------------------------------------------------------------------- make_results.py

def _load_make_results():
    name = "kdentropy_asv_make_results"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ASV_DIR / "make_results.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
        spec.loader.exec_module(module)
    return sys.modules[name]


COLUMNS = ["result", "params", "version", "started_at", "duration", "stats_ci_99_a",
           "stats_ci_99_b", "stats_q_25", "stats_q_75", "stats_number", "stats_repeat"]
SOFT_PARAMS = [["'numpy'", "'cpu'", "'cuda'"], ["(1024, 64)", "(16384, 64)"], ["'float32'"]]


def _write_results(root: Path, commit: str, started_at: float, vg: list) -> None:
    """A results tree in asv's format (api version 2), as `asv run` writes it."""
    def row(result, params):
        return [result, params, "v", started_at, 1.0]

    nan = float("nan")
    results = {
        "soft_entropy.SoftEntropy.time_value_and_grad": row(vg, SOFT_PARAMS),
        "soft_entropy.SoftEntropyFloor.track_floor_ratio":
            row([3.0, nan, 1.5, 2.5], [["'numpy'", "'cpu'"], SOFT_PARAMS[1], SOFT_PARAMS[2]]),
        "training.OptimizerStep.time_step":
            row([2.5e-5, None], [["'Adam'"], ["10000", "1000000"]]),
    }
    data = {"commit_hash": commit, "env_name": "existing-py", "date": 1.7e12,
            "params": {"machine": "box", "cpu": "CPU", "num_cpu": "2", "ram": str(2**33),
                       "os": "Linux", "arch": "x86_64"},
            "python": "3.11", "requirements": {}, "env_vars": {},
            "result_columns": COLUMNS, "results": results, "durations": {}, "version": 2}
    (root / "box").mkdir(parents=True, exist_ok=True)
    (root / "box" / f"{commit[:8]}-existing-py.json").write_text(json.dumps(data))
    units = {"soft_entropy.SoftEntropy.time_value_and_grad": "seconds",
             "soft_entropy.SoftEntropyFloor.track_floor_ratio": "ratio",
             "training.OptimizerStep.time_step": "seconds"}
    names = {"soft_entropy.SoftEntropy.time_value_and_grad": ["backend", "shape", "dtype"],
             "soft_entropy.SoftEntropyFloor.track_floor_ratio": ["backend", "shape", "dtype"],
             "training.OptimizerStep.time_step": ["optimizer", "n_params"]}
    (root / "benchmarks.json").write_text(json.dumps(
        {k: {"unit": units[k], "param_names": names[k]} for k in units} | {"version": 2}))


def test_make_results_renders_a_results_tree(tmp_path):
    make_results = _load_make_results()
    nan = float("nan")
    # Product order (backend, shape, dtype): numpy and cpu ran at 1024; at 16384
    # only cpu; cuda nowhere. Only value+gradient times and floor ratios exist,
    # so the other columns stay empty.
    _write_results(tmp_path, "a" * 40, 1.0e12, [0.2, nan, 0.05, 2.0, nan, nan])
    _write_results(tmp_path, "b" * 40, 2.0e12, [0.4, nan, 0.1, 4.0, nan, nan])
    out = tmp_path / "RESULTS.md"
    assert make_results.main(["--results", str(tmp_path), "--output", str(out)]) == 0
    text = out.read_text()
    assert "`" + "b" * 40 + "`" in text                   # newest run by default
    assert "| cpu | 1024 x 64 | float32 |  | 100 ms |" in text
    assert "| 1.50 | " in text and "| 4.0x |" in text     # floor ratio, speed-up vs numpy
    assert "| numpy | 1024 x 64 | float32 |  | 400 ms |" in text
    assert "cuda" not in text.split("## Soft entropy")[1].split("Not run")[0]
    assert "Not run on this machine: cuda" in text
    assert "| Adam | 10000 | 25 µs |" in text and "| Adam | 1000000 | failed |" in text
    make_results.main(["--results", str(tmp_path), "--commit", "aaaa", "--output", str(out)])
    assert "| cpu | 1024 x 64 | float32 |  | 50 ms |" in out.read_text()
    with pytest.raises(SystemExit, match="no results"):
        make_results.main(["--results", str(tmp_path), "--commit", "cccc", "--output", str(out)])


def test_make_results_formatting():
    make_results = _load_make_results()
    assert make_results.fmt_seconds(1.234) == "1.23 s"
    assert make_results.fmt_seconds(0.0456) == "45.6 ms"
    assert make_results.fmt_seconds(7.89e-4) == "789 µs"
    assert make_results.fmt_value(0.5, "seconds", 0.4, 0.6) == "500 ms ± 100 ms"
    assert make_results.fmt_value(3 * 2**20, "bytes") == "3 MiB"
    assert make_results.fmt_value(None, "seconds") == "failed"
    assert make_results.fmt_value(float("nan"), "ratio") == "skipped"
    assert make_results._unquote("(4096, 256)") == "4096 x 256"
    assert make_results._unquote("'float32'") == "float32"


# ----------------------------------------------------------------------------- comparisons

comparisons = importlib.import_module("benchmarks.comparisons")


@pytest.mark.parametrize("block", [None, 100])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_alternatives_compute_the_same_soft_entropy(block, dtype):
    """The comparison implementations time the same maths as kdentropy."""
    X = common.clustered(300, 24, dtype)
    H, G = comparisons.numpy_value_and_grad(X, block=block)
    H_ref, G_ref = kde.soft_entropy_and_grad(X.astype(np.float64), common.TEMPERATURE,
                                             common.SIGMA, backend="numpy")
    rtol = 1e-10 if dtype == "float64" else 1e-4
    assert G.dtype == np.dtype(dtype) and G.shape == X.shape
    assert abs(H - H_ref) <= rtol * abs(H_ref)
    assert np.linalg.norm(G - G_ref) <= rtol * np.linalg.norm(G_ref)


def test_subnormal_family_reaches_float64_subnormals_and_cpu_stays_exact():
    X = comparisons.subnormal_input(256, 1024, "float64")
    S = 1.0 / (1.0 + np.exp(-common.TEMPERATURE * (X - common.THRESHOLD)))
    d2 = ((S[:, None, :] - S[None, :, :]) ** 2).sum(-1)
    K = np.exp(-d2 / (2 * common.SIGMA**2))
    tiny = np.finfo(np.float64).tiny
    assert np.mean((K > 0) & (K < tiny)) > 0.01  # the family does what it is for
    H, G = kde.soft_entropy_and_grad(X, common.TEMPERATURE, common.SIGMA, backend="cpu")
    H_ref, G_ref = kde.soft_entropy_and_grad(X, common.TEMPERATURE, common.SIGMA, backend="numpy")
    assert H == pytest.approx(H_ref, rel=1e-12)
    assert np.linalg.norm(G - G_ref) <= 1e-10 * np.linalg.norm(G_ref)
