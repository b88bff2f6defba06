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
comparisons = importlib.import_module("benchmarks.comparisons")


@pytest.fixture(autouse=True)
def _few_rounds(monkeypatch, tmp_path):
    """Interleaved comparisons run 2 rounds here (5 or more in a real run), and record to tmp."""
    monkeypatch.setattr(comparisons, "MIN_ROUNDS", 2)
    monkeypatch.setattr(comparisons, "ROUND_BUDGET", 0.0)
    monkeypatch.setenv(common.RECORD_ENV, str(tmp_path / "record.jsonl"))


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
        getattr(bench, "setup", lambda *args: None)(*combo)
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
def test_gemm_floor_computes_the_two_products(dtype):
    rng = np.random.default_rng(7)
    S = rng.random((50, 6)).astype(dtype)
    # A tiny block size forces several row blocks.
    floor = common.GemmFloor(S, max_block_bytes=12 * 50 * S.itemsize)
    assert len(floor.blocks) == 5
    assert floor.flops(50, 6) == 4 * 50 * 50 * 6
    floor()
    S64 = S.astype(np.float64)
    expected = (S64 @ S64.T) @ S64
    assert floor.out.dtype == np.dtype(dtype)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(floor.out, expected, rtol=rtol)


@pytest.mark.parametrize("blocked", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_symmetric_floor_computes_the_same_products_from_the_upper_triangle(dtype, blocked):
    rng = np.random.default_rng(8)
    S = rng.random((50, 6)).astype(dtype)
    max_block_bytes = 15 * 15 * S.itemsize if blocked else 2**20
    floor = common.SymmetricFloor(S, max_block_bytes=max_block_bytes)
    # One SYRK block, or 4 uneven blocks of at most 15 rows (upper triangle: 10 block pairs).
    assert len(floor.blocks) == (4 if blocked else 1)
    assert floor.flops(50, 6) == 3 * 50 * 50 * 6
    floor()
    floor()  # a second call starts again from zero
    S64 = S.astype(np.float64)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(floor.out, (S64 @ S64.T) @ S64, rtol=rtol)


def test_gemm_peak_probe_reports_positive_rates():
    rates = common.gemm_peak_gflops("float32", n=64, rounds=3)
    assert len(rates) == 3 and all(r > 0 for r in rates)


def test_interleaved_samples_rotate_and_skip_the_warmup():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    samples = common.interleaved_samples(fns, rounds=3, warmup=1)
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3, "c": 3}
    # Warm-up round, then rounds rotated by one place each.
    assert calls == list("abc") + list("bca") + list("cab") + list("abc")
    assert common.round_ratios([2.0, 6.0], [1.0, 3.0]) == [2.0, 2.0]


def test_record_appends_json_lines_only_when_asked(monkeypatch, tmp_path):
    path = tmp_path / "r.jsonl"
    monkeypatch.setenv(common.RECORD_ENV, str(path))
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    common.record("x.Y", {"n": 1}, samples={"a": [1.0]})
    common.record("x.Y", {"n": 2})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["params"]["n"] for r in lines] == [1, 2]
    assert lines[0]["samples"] == {"a": [1.0]}
    assert lines[0]["env"]["OPENBLAS_CORETYPE"] == "Haswell"  # what forces the kernel is kept
    assert isinstance(lines[0]["blas"], list)
    monkeypatch.delenv(common.RECORD_ENV)
    common.record("x.Y", {"n": 3})
    assert len(path.read_text().splitlines()) == 2


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

def _reference(X):
    """kdentropy's float64 ``numpy`` backend on the same (rounded) input."""
    return kde.soft_entropy_and_grad(X.astype(np.float64), common.TEMPERATURE, common.SIGMA,
                                     backend="numpy")


def _alternative_or_skip(name, dtype, N):
    try:
        return comparisons.alternative(name, dtype, N)
    except NotImplementedError as exc:
        pytest.skip(str(exc))


#: float32: relative value and norm-relative gradient error (measured: <= 1e-7 and <= 7e-7
#: at these sizes; 1e-5 and 7e-5 for jax at D = 1024); float64: both 1e-12 (measured 2e-15).
TOLERANCE = {"float32": (1e-5, 2e-5), "float64": (1e-12, 1e-12)}


@pytest.mark.parametrize("shape", [(300, 24), (97, 130)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", comparisons.ALTERNATIVES)
def test_alternatives_compute_the_same_value_and_gradient(name, dtype, shape):
    """Each alternative times the same maths as kdentropy, in the dtype it is given."""
    X = common.clustered(*shape, dtype)
    H_ref, G_ref = _reference(X)

    def check():
        H, G = _alternative_or_skip(name, dtype, shape[0])(X)
        assert G.dtype == np.dtype(dtype) and G.shape == X.shape
        errs = comparisons.errors(H, G, H_ref, G_ref)
        value_tol, grad_tol = TOLERANCE[dtype]
        assert errs["value_rel_error"] <= value_tol and errs["grad_rel_error"] <= grad_tol, errs

    if name == "jax_jit" and dtype == "float64":
        jax = pytest.importorskip("jax")
        with jax.enable_x64(True):  # what run.sh's JAX_ENABLE_X64=1 does for the whole run
            check()
    else:
        check()


def test_jax_float64_without_x64_is_skipped_not_silently_float32():
    jax = pytest.importorskip("jax")
    if jax.config.read("jax_enable_x64"):
        pytest.skip("JAX_ENABLE_X64 is set in this process")
    with pytest.raises(NotImplementedError, match="JAX_ENABLE_X64"):
        comparisons.alternative("jax_jit", "float64", 64)


@pytest.mark.parametrize("tile", [1, 64, 100, 512])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_blocked_numpy_is_exact_for_any_tiling(dtype, tile):
    """Upper-triangle tiles, mirrored: uneven, single-row and single-tile tilings agree."""
    X = common.clustered(300, 24, dtype)
    H, G = comparisons.numpy_blocked(X, tile=tile)
    H_dense, G_dense = comparisons.numpy_dense(X)
    rtol = 1e-6 if dtype == "float32" else 1e-13
    assert H == pytest.approx(H_dense, rel=rtol)
    assert np.linalg.norm(G - G_dense) <= 10 * rtol * np.linalg.norm(G_dense)


def test_dense_alternatives_are_skipped_above_the_memory_cap():
    with pytest.raises(NotImplementedError, match="GiB"):
        comparisons.alternative("numpy_dense", "float64", 40000)
    assert comparisons.alternative("numpy_blocked", "float64", 40000) is comparisons.numpy_blocked


def test_comparison_records_samples_errors_and_versions(tmp_path):
    bench = comparisons.Comparison()
    bench.setup("numpy_dense", (64, 32), "float32")
    ratio = bench.track_speedup("numpy_dense", (64, 32), "float32")
    (line,) = [json.loads(x) for x in (tmp_path / "record.jsonl").read_text().splitlines()]
    label = comparisons.IMPLEMENTATIONS["numpy_dense"][0]
    assert line["label"] == label and set(line["samples"]) == {comparisons.OURS, label}
    assert ratio == pytest.approx(float(np.median(line["ratios"])))
    assert line["errors"][label]["grad_rel_error"] < 1e-4
    assert "numpy" in line["versions"]


def _pair_sums_held(X, sigma):
    """The ``cpu`` backend's float32 pair-sum criterion, evaluated on dense float64 sums."""
    from kdentropy.backends import _conditioning

    S = common.soft_discretize(X).astype(np.float64)
    Sc = S - S.mean(axis=0)
    sq = np.sum(Sc * Sc, axis=1)
    K = np.exp(-np.maximum(sq[:, None] + sq[None, :] - 2 * Sc @ Sc.T, 0) / (2 * sigma**2))
    g = 1.0 / K.sum(axis=1)
    W = K * (g[:, None] + g[None, :])
    rowsum = W.sum(axis=1)
    V = rowsum[:, None] * Sc - W @ Sc
    return _conditioning.float32_pair_sums_are_accurate(np.linalg.norm(rowsum[:, None] * Sc),
                                                        np.linalg.norm(V))


@pytest.mark.parametrize("path, gram", [
    ("float32 Gram", np.float32),
    ("float64 Gram for float32 input", np.float64),
    ("direct differences float32", None),
    ("direct differences float64", None),
    ("float64 redo of tight float32 clusters", np.float32),
])
def test_each_path_family_takes_its_path(path, gram):
    X, sigma = comparisons.path_input(path)
    assert X.dtype == np.dtype(comparisons.PATHS[path][0])
    assert comparisons.distance_dtype(X, sigma) == (None if gram is None else np.dtype(gram))
    if X.dtype == np.float32 and gram == np.float32:
        assert _pair_sums_held(X, sigma) == (path == "float32 Gram")
    # Rows keep real neighbours, so the timed work is not all zeros.
    H = kde.soft_entropy(X, common.TEMPERATURE, sigma, backend="cpu")
    assert 0.5 < H < np.log(len(X)) - 1.0


def test_subnormal_family_reaches_float64_subnormals_and_cpu_stays_exact():
    assert comparisons.PATHS["subnormal float64 kernel values"][:2] == ("float64", (2048, 1024))
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


# ----------------------------------------------------------------------------- records, --check

def _records():
    blas = [{"user_api": "blas", "internal_api": "openblas", "version": "0.3.31", "prefix": "lib",
             "architecture": "SkylakeX", "num_threads": 2}]
    label = "dense NumPy, K kept"
    return [
        {"benchmark": "comparisons.Comparison", "blas": blas, "env": {},
         "params": {"alternative": "numpy_dense", "shape": [256, 64], "dtype": "float32"},
         "label": label, "samples": {"kdentropy cpu": [1e-3, 2e-3, 1.5e-3, 1e-3, 1e-3],
                                     label: [3e-3, 3e-3, 3e-3, 3e-3, 3e-3]},
         "ratios": [3.0, 1.5, 2.0, 3.0, 3.0],
         "errors": {"kdentropy cpu": {"grad_rel_error": 1e-7}, label: {"grad_rel_error": 2e-7}}},
        {"benchmark": "comparisons.Floors", "blas": blas, "env": {},
         "params": {"floor": "symmetric", "shape": [256, 64], "dtype": "float32"},
         "label": "symmetric floor (x)", "samples": {"kdentropy cpu": [1e-3] * 5,
                                                     "symmetric floor (x)": [1e-4] * 5},
         "ratios": [10.0] * 5, "flops": 3 * 256 * 256 * 64},
        {"benchmark": "comparisons.PeakRate", "blas": blas, "env": {},
         "params": {"dtype": "float32"}, "gflops": [100.0, 110.0, 90.0], "probe": "GEMM 2048"},
        {"benchmark": "comparisons.KernelPaths", "blas": blas, "env": {},
         "params": {"path": "direct differences float64"}, "shape": [2048, 256],
         "dtype": "float64", "sigma": 2e-4,
         "samples": {"kdentropy cpu": [2.0] * 5, "float32 Gram path, same shape": [1.0] * 5,
                     "GEMM floor (y)": [0.5] * 5}},
    ]


def test_make_results_renders_records_with_spreads_and_provenance(tmp_path):
    make_results = _load_make_results()
    _write_results(tmp_path, "c" * 40, 3.0e12, [0.4, float("nan"), 0.1, 4.0, float("nan"),
                                                float("nan")])
    records = tmp_path / "records"
    records.mkdir()
    (records / ("c" * 40 + ".jsonl")).write_text("\n".join(json.dumps(r) for r in _records()))
    env = {"versions": {"jax": "0.10.2", "jax_enable_x64": "True", "torch": "2.13.0"},
           "env": {"JAX_ENABLE_X64": "1"}, "unset_by_run_sh": "OPENBLAS_CORETYPE=Haswell",
           "head": "d" * 40, "kernel_digest": "0123456789ab", "kernels_dirty": False}
    (records / ("c" * 40 + "-environment.json")).write_text(json.dumps(env))
    out = tmp_path / "RESULTS.md"
    assert make_results.main(["--results", str(tmp_path), "--output", str(out)]) == 0
    text = out.read_text()
    assert "| 256 x 64 | float32 | dense NumPy, K kept | 1 ms [1 ms–2 ms] | 3 ms [3 ms–3 ms] " \
           "| 3.00 [1.50–3.00] | 5 | 1.0e-07 / 2.0e-07 |" in text
    assert "lib: openblas 0.3.31, kernel SkylakeX, 2 threads" in text
    assert "the shell set OPENBLAS_CORETYPE=Haswell; run.sh unset it" in text
    assert "| jax_enable_x64 | True |" in text and "`JAX_ENABLE_X64=1`" in text
    assert "| Kernel sources | `0123456789ab`" in text
    assert "GEMM 2048): float32 100 [90–110] GFLOP/s" in text
    # 3 N^2 D flops in 0.1 ms, against a 100 GFLOP/s peak.
    assert f"| {3 * 256 * 256 * 64 / 1e-4 / 1e9:.1f} | {3 * 256 * 256 * 64 / 1e-4 / 1e9:.0f} % |" \
           in text
    assert "| direct differences float64 | float64 | 2048 x 256 | 0.0002 | 2 s [2 s–2 s] " \
           "| 2.00 [2.00–2.00] | 4.00 [4.00–4.00] | 5 |" in text
    # A kernel forced inside the benchmark processes is said plainly.
    forced = _records()
    forced[0]["env"] = {"OPENBLAS_CORETYPE": "Haswell"}
    rows = dict(make_results.provenance_rows(forced, None))
    assert "OPENBLAS_CORETYPE=Haswell was set" in rows["BLAS kernel forced"]


def test_make_results_check_compares_kernel_sources_with_head(tmp_path, capsys):
    make_results = _load_make_results()
    out = tmp_path / "RESULTS.md"
    head = make_results.kernel_digest()
    assert len(head) == 12 and head == make_results.kernel_digest("HEAD")
    out.write_text(f"| Kernel sources | `{head}` (git objects of ...) |\n")
    assert make_results.main(["--check", "--output", str(out)]) == 0
    out.write_text("| Kernel sources | `000000000000` (git objects of ...) |\n")
    assert make_results.main(["--check", "--output", str(out)]) == 1
    assert "regenerate" in capsys.readouterr().out
    out.write_text(f"| Kernel sources | `{head}` (git objects, with uncommitted changes) |\n")
    assert make_results.main(["--check", "--output", str(out)]) == 1
    out.write_text("no digest\n")
    assert make_results.main(["--check", "--output", str(out)]) == 1
