"""The ``kdentropy`` command line, run in-process through ``main([...])``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import kdentropy as kde
from kdentropy.cli import main

TINY = ["--cells", "8", "--steps", "4", "--hidden", "6", "--batch", "16", "--eval-batch", "32",
        "--eval-every", "2", "--backend", "numpy"]
SUMMARY_KEYS = {"hard_entropy_before", "hard_entropy_after", "soft_entropy_before",
                "soft_entropy_after", "fraction_on", "boundaries", "iterations", "elapsed_s",
                "seed", "backend"}


def _one_line_error(capsys, status):
    out, err = capsys.readouterr()
    assert status != 0
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("kdentropy") and "error" in err
    assert "Traceback" not in err
    return err


def test_train_writes_all_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["train", *TINY, "--iterations", "5", "--seed", "3", "--out", str(out)])
    assert status == 0
    stdout = capsys.readouterr().out
    assert "hard entropy" in stdout and str(out) in stdout

    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["iterations"] == 5 and summary["seed"] == 3 and summary["backend"] == "numpy"
    assert summary["elapsed_s"] > 0
    assert 0 <= summary["fraction_on"] <= 1 and 0 <= summary["boundaries"] <= 7
    assert 0 <= summary["hard_entropy_after"] <= np.log(32) + 1e-12

    with np.load(out / "params.npz") as p:
        theta, theta0 = p["theta"], p["theta_initial"]
        config = json.loads(str(p["config"]))
    assert theta.shape == theta0.shape and theta.dtype == np.float64
    assert config["system"]["n_cells"] == 8

    with open(out / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and [r["iteration"] for r in rows] == ["0", "1", "2", "3", "4", "5"]
    assert rows[0]["loss"] == "" and rows[1]["loss"] != ""
    # Evaluated at 0, every 2 iterations and at the end; row 0 is "before".
    assert [r["eval_hard_entropy"] != "" for r in rows] == [True, False, True, False, True, True]
    assert float(rows[0]["eval_hard_entropy"]) == pytest.approx(summary["hard_entropy_before"])
    assert float(rows[-1]["eval_hard_entropy"]) == pytest.approx(summary["hard_entropy_after"])
    assert (out / "checkpoint.npz").exists()

    pytest.importorskip("matplotlib")
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_is_seeded_and_resumable(tmp_path, capsys):
    common = [*TINY, "--schedule", "constant", "--quiet", "--no-plot"]
    assert main(["train", *common, "--iterations", "6", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", *common, "--iterations", "6", "--out", str(tmp_path / "b")]) == 0
    assert main(["train", *common, "--iterations", "3", "--out", str(tmp_path / "c")]) == 0
    # Without --backend the resumed run keeps the checkpoint's (numpy), not "auto".
    assert main(["train", "--quiet", "--no-plot", "--iterations", "6", "--resume",
                 "--out", str(tmp_path / "c")]) == 0
    assert capsys.readouterr() == ("", "")          # --quiet: nothing at all

    def theta(d):
        with np.load(tmp_path / d / "params.npz") as p:
            return p["theta"]

    np.testing.assert_array_equal(theta("a"), theta("b"))
    np.testing.assert_array_equal(theta("a"), theta("c"))   # resumed == uninterrupted
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["backend"] == "numpy" and summary["iterations"] == 6
    assert (tmp_path / "a" / "history.csv").read_text() == \
        (tmp_path / "c" / "history.csv").read_text()
    assert not (tmp_path / "a" / "training.png").exists()


def test_train_goes_through_the_cells_api(tmp_path, monkeypatch):
    # The command line builds the run and writes the report; the training
    # itself is kdentropy.cells.train (new runs) and Trainer.fit (--resume).
    import kdentropy.cells as cells
    calls = []
    real_train, real_fit = cells.train, cells.Trainer.fit

    def spy_train(*args, **kwargs):
        calls.append("train")
        return real_train(*args, **kwargs)

    def spy_fit(self, *args, **kwargs):
        calls.append("fit")
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(cells, "train", spy_train)
    monkeypatch.setattr(cells.Trainer, "fit", spy_fit)
    common = [*TINY, "--quiet", "--no-plot", "--out", str(tmp_path)]
    assert main(["train", *common, "--iterations", "2"]) == 0
    assert calls == ["train", "fit"]
    assert main(["train", *common, "--iterations", "3", "--resume"]) == 0
    assert calls == ["train", "fit", "fit"]


def test_auto_backend_is_cpu_for_host_arrays(tmp_path, capsys, rng):
    path = _save(tmp_path, rng.random((5, 3)))
    assert main(["entropy", path, "--json", "--backend", "auto"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "cpu"
    assert main(["train", "--help"]) == 0
    assert "else numpy" not in " ".join(capsys.readouterr().out.split())   # no fallback


def _save(tmp_path, X, name="X.npy"):
    path = tmp_path / name
    np.save(path, X)
    return str(path)


def test_entropy_text_and_json(tmp_path, capsys, rng):
    X = rng.random((20, 6))
    path = _save(tmp_path, X)
    assert main(["entropy", path, "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "soft entropy" in out and "hard entropy" in out and "distinct patterns" in out

    assert main(["entropy", path, "--json", "--backend", "numpy", "--temperature", "5",
                 "--sigma", "0.3", "--threshold", "0.4", "--base", "2", "--normalize"]) == 0
    res = json.loads(capsys.readouterr().out)
    soft = kde.soft_entropy(X, 5, 0.3, threshold=0.4, base=2, normalize=True, backend="numpy")
    hard = kde.hard_entropy(X, 0.4, base=2, normalize=True)
    assert res["soft_entropy"] == pytest.approx(float(soft), rel=1e-12)
    assert res["hard_entropy"] == pytest.approx(float(hard), rel=1e-12)
    assert res["shape"] == [20, 6] and res["N"] == 20 and res["D"] == 6
    assert res["distinct_patterns"] == kde.pattern_counts(X, 0.4)[1].size
    est = kde.entropy_estimate(X, "nsb", 0.4, base=2, normalize=True)
    assert res["entropy_estimate"]["estimate"] == pytest.approx(est.estimate, rel=1e-12)
    assert res["entropy_estimate"]["high"] == pytest.approx(est.high, rel=1e-12)
    assert res["entropy_estimate"]["plugin"] == pytest.approx(float(hard), rel=1e-12)
    assert res["unit"] == "bits per cell"


def test_entropy_prints_the_estimate_with_its_interval(tmp_path, capsys, rng):
    path = _save(tmp_path, rng.integers(0, 2, size=(200, 3)).astype(float))
    assert main(["entropy", path, "--backend", "numpy", "--estimator", "chao-shen",
                 "--seed", "3"]) == 0
    line = [s for s in capsys.readouterr().out.splitlines() if s.startswith("estimated")][0]
    r = kde.entropy_estimate(np.load(path), "chao-shen", rng=3)
    assert line == (f"estimated entropy of the system: H = {r.estimate:.4f} nats (Chao–Shen), "
                    f"95 % CI [{r.low:.4f}, {r.high:.4f}], coverage {r.coverage:.2f}")
    assert _one_line_error(capsys, main(["entropy", path, "--confidence", "1"]))


def test_backend_defaults_to_the_library_setting(tmp_path, capsys, monkeypatch, rng):
    path = _save(tmp_path, rng.random((5, 3)))
    monkeypatch.setenv("KDENTROPY_BACKEND", "numpy")
    assert main(["entropy", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "numpy"
    monkeypatch.setenv("KDENTROPY_BACKEND", "tpu")
    assert "KDENTROPY_BACKEND" in _one_line_error(capsys, main(["entropy", path]))


def test_entropy_of_a_batch_of_populations(tmp_path, capsys, rng):
    X = rng.random((3, 10, 4))
    assert main(["entropy", _save(tmp_path, X), "--json", "--backend", "numpy"]) == 0
    res = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(res["soft_entropy"], kde.soft_entropy(X, backend="numpy"),
                               rtol=1e-12)
    np.testing.assert_allclose(res["hard_entropy"], kde.hard_entropy(X), rtol=1e-12)
    assert res["distinct_patterns"] is None


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("kdentropy", "numpy", "scipy", "numba", "backends", "threads", "gpu"):
        assert word in out
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kdentropy"] == kde.__version__ and info["numpy"] == np.__version__
    assert info["backends"] == kde.available_backends() and "numpy" in info["backends"]
    assert isinstance(info["numba_threads"], int) and info["numba_threads"] >= 1
    assert isinstance(info["gpu"]["cuda_available"], bool)


def test_info_survives_missing_numba_cuda(monkeypatch, capsys):
    import sys
    monkeypatch.setitem(sys.modules, "numba.cuda", None)   # makes the import fail
    assert main(["info", "--json"]) == 0
    gpu = json.loads(capsys.readouterr().out)["gpu"]
    assert gpu["cuda_available"] is False and "cannot be imported" in gpu["reason"]


@pytest.mark.parametrize("setup, match", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_text("hello, not numpy"), "not a .npy file"),
    (lambda p: p.write_bytes(b""), "not a .npy file"),
    (lambda p: np.savez(p, a=np.zeros((2, 2))), "npz archive"),
    (lambda p: np.save(p, np.array([0.1, 0.2])), "at least 2 dimensions"),
    (lambda p: np.save(p, np.array([[0.1, np.nan]])), "NaN"),
    (lambda p: np.save(p, np.array([[1 + 1j, 0]])), "complex"),
    (lambda p: np.save(p, np.array([[{}]], dtype=object)), "cannot read"),
])
def test_entropy_bad_files(tmp_path, capsys, setup, match):
    path = tmp_path / "data.npy"
    setup(path)
    if not path.exists() and match != "no such file":   # np.savez appends .npz
        (tmp_path / "data.npy.npz").rename(path)
    err = _one_line_error(capsys, main(["entropy", str(path)]))
    assert match in err


@pytest.mark.parametrize("argv, match", [
    (["train", "--cells", "-3"], "--cells"),
    (["train", "--cells", "0"], "--cells"),
    (["train", "--iterations", "-1"], "--iterations"),
    (["train", "--backend", "tpu"], "--backend"),
    (["train", "--noise", "-0.1"], "--noise"),
    (["train", "--cells", "abc"], "--cells"),
    (["train", "--lr", "0"], "--lr"),
    (["train", "--backend", "gpu"], "--backend"),
    (["train", "--bogus"], "unrecognized"),
    (["entropy"], "required"),
    (["entropy", "x.npy", "--sigma", "nan"], "--sigma"),
    (["entropy", "x.npy", "--base", "1"], "--base"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments(capsys, argv, match):
    status = main(argv)
    assert status == 2
    assert match in _one_line_error(capsys, status)


def test_bad_train_setups(tmp_path, capsys):
    err = _one_line_error(capsys, main(["train", *TINY, "--resume", "--out", str(tmp_path)]))
    assert "no checkpoint" in err
    assert not (tmp_path / "checkpoint.npz").exists()
    err = _one_line_error(capsys, main(["train", *TINY, "--resume",
                                        "--out", str(tmp_path / "new")]))
    assert not (tmp_path / "new").exists()          # a failed --resume creates nothing
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    err = _one_line_error(capsys, main(["train", *TINY, "--out", str(blocker)]))
    assert "not a directory" in err and blocker.read_text() == "keep me"
    err = _one_line_error(capsys, main(["train", *TINY, "--out", str(blocker / "sub")]))
    assert "output directory" in err
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "checkpoint.npz").write_bytes(b"PK\x03\x04broken")
    err = _one_line_error(capsys, main(["train", *TINY, "--resume",
                                        "--out", str(tmp_path / "ck")]))
    assert "checkpoint" in err
    err = _one_line_error(capsys, main(["train", *TINY, "--lr", "0.01", "--min-lr", "0.1",
                                        "--out", str(tmp_path / "x")]))
    assert "--min-lr" in err


def test_no_command_and_help(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["train", "--help"]) == 0
    assert "--iterations" in capsys.readouterr().out


# ------------------------------------------------------------------------ grids, the run workflow

GRID = ["--grid", "3x4", "--channels", "2", "--rate", "0.5", "--no-position", "--steps", "3",
        "--hidden", "6", "--batch", "8", "--eval-batch", "16", "--eval-every", "2",
        "--backend", "numpy", "--clip-norm", "1", "--no-plot"]


def _evaluation_block(text):
    """The lines from 'evaluation:' through 'most common pattern' of a summary."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("evaluation:"))
    return lines[start:start + 7]


def test_grid_run_with_hidden_channels(tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(["train", *GRID, "--iterations", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "grid of 3x4 cells (1+2 channels)" in text
    config = json.loads((out / "summary.json").read_text())["config"]["system"]
    assert config["n_cells"] == [3, 4] and config["topology"] == "grid"
    assert config["hidden_channels"] == 2 and config["rate"] == 0.5
    assert config["position"] == "none"
    assert main(["train", *GRID, "--ring", "--iterations", "1", "--quiet",
                 "--out", str(tmp_path / "torus")]) == 0
    assert json.loads((tmp_path / "torus" / "summary.json").read_text())[
        "config"]["system"]["topology"] == "torus"


def test_an_existing_run_folder_needs_resume_or_force(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", *TINY, "--iterations", "2", "--quiet", "--out", out]) == 0
    err = _one_line_error(capsys, main(["train", *TINY, "--iterations", "2", "--out", out]))
    assert "already holds a run" in err and "--resume" in err and "--force" in err
    assert main(["train", *TINY, "--iterations", "3", "--quiet", "--force", "--out", out]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["iterations"] == 3


def test_ctrl_c_saves_and_resume_is_bit_identical(tmp_path, capsys, monkeypatch):
    import os
    import signal

    from kdentropy.cells import Trainer
    common = [*GRID, "--iterations", "6"]
    assert main(["train", *common, "--quiet", "--out", str(tmp_path / "a")]) == 0
    real_step = Trainer.step

    def step(self):
        row = real_step(self)
        if self.iteration == 3:   # as if Ctrl-C were pressed during iteration 3
            os.kill(os.getpid(), signal.SIGINT)
        return row

    monkeypatch.setattr(Trainer, "step", step)
    out = str(tmp_path / "b")
    assert main(["train", *common, "--quiet", "--out", out]) == 130
    err = capsys.readouterr().err
    assert "interrupted at iteration 3 of 6" in err
    assert f"resume with: kdentropy train --out {out} --iterations 6 --resume" in err
    assert (tmp_path / "b" / "checkpoint.npz").exists()
    assert not (tmp_path / "b" / "params.npz").exists()
    monkeypatch.setattr(Trainer, "step", real_step)
    assert main(["train", "--out", out, "--iterations", "6", "--resume", "--no-plot"]) == 0
    captured = capsys.readouterr()
    assert "resuming at iteration 3 of 6" in captured.err
    for name in ("history.csv",):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    with np.load(tmp_path / "a" / "params.npz") as pa, \
            np.load(tmp_path / "b" / "params.npz") as pb:
        np.testing.assert_array_equal(pa["theta"], pb["theta"])


def test_evaluate_reproduces_the_summary_of_train(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", *GRID, "--iterations", "4", "--seed", "2", "--out", out]) == 0
    trained = _evaluation_block(capsys.readouterr().out)
    assert main(["evaluate", out]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"model: {out}") and _evaluation_block(text) == trained
    # Fresh runs of another seed, another size and another noise level.
    assert main(["evaluate", out, "--seed", "7", "--runs", "20", "--noise", "0"]) == 0
    other = _evaluation_block(capsys.readouterr().out)
    assert other[0].startswith("evaluation: 20 fresh runs") and other[0].endswith("noise 0")
    assert main(["evaluate", out, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert data["after"]["hard_entropy"] == summary["hard_entropy_after"]
    assert data["before"]["hard_entropy"] == summary["hard_entropy_before"]
    assert data["after"]["fraction_on"] == summary["fraction_on"]
    # The estimated entropy of the system and its interval, in the JSON and summary.json.
    for when in ("before", "after"):
        est = data[when]
        assert est["estimator"] == "nsb" and est["entropy_low"] <= est["entropy_estimate"]
        assert est["entropy_estimate"] <= est["entropy_high"] and 0 <= est["coverage"] <= 1
        assert est["entropy_estimate"] == summary[f"entropy_estimate_{when}"]
        assert est["entropy_high"] == summary[f"entropy_high_{when}"]
    assert trained[4].startswith("  estimated entropy of the system, after:  H = ")
    assert trained[6].startswith("  most common pattern")
    err = _one_line_error(capsys, main(["evaluate", str(tmp_path)]))
    assert "no params.npz or checkpoint.npz" in err


def test_plot_redraws_the_figure(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *GRID, "--iterations", "2", "--quiet", "--out", str(out)]) == 0
    assert not (out / "training.png").exists()
    err = _one_line_error(capsys, main(["plot", str(tmp_path)]))
    assert "no checkpoint.npz" in err
    pytest.importorskip("matplotlib")
    assert main(["plot", str(out)]) == 0
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, match", [
    (["train", "--grid", "12by12"], "HxW"),
    (["train", "--grid", "0x4"], "sizes >= 1"),
    (["train", "--channels", "-1"], "channels"),
])
def test_bad_v2_flags(capsys, argv, match):
    err = _one_line_error(capsys, main(argv))
    assert match in err


def test_python_m_kdentropy():
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "kdentropy", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("kdentropy ")


# ----------------------------------------------------------------------------- supervision

def _grid_trainer():
    from kdentropy.cells import CellSystem, ReproducibilityLoss, Trainer
    from kdentropy.optim import Adam, Cosine
    system = CellSystem((3, 4), 3, topology="grid", hidden=(6,), hidden_channels=2, rate=0.5,
                        position="none")
    return Trainer(system, optimizer=Adam(Cosine(0.05, 8), clip_norm=1.0),
                   loss=ReproducibilityLoss(backend="numpy"), seed=5, batch=8, eval_batch=16,
                   eval_every=3)


def _sigint_at(iteration, then):
    """A callback that sends SIGINT at ``iteration`` (as if Ctrl-C were pressed), then ``then``."""
    import os
    import signal

    def callback(trainer):
        if trainer.iteration == iteration:
            os.kill(os.getpid(), signal.SIGINT)
        then(trainer)
    return callback


def test_sigint_saves_a_checkpoint_and_resuming_is_bit_identical(tmp_path):
    import signal

    from kdentropy.cells import Trainer
    from kdentropy.cli.supervision import TrainingInterrupted, supervised
    ckpt = tmp_path / "checkpoint.npz"
    trainer = _grid_trainer()
    with pytest.raises(TrainingInterrupted) as info:
        with supervised(8, ckpt, progress=False) as after_iteration:
            trainer.run(8, checkpoint=ckpt, callback=_sigint_at(3, after_iteration))
    # The iteration in progress was finished and saved, and nothing after it ran.
    assert info.value.iteration == 3 and trainer.iteration == 3
    assert info.value.checkpoint == str(ckpt)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handler restored
    resumed = Trainer.load(ckpt)
    assert resumed.iteration == 3
    resumed.run(5)
    straight = _grid_trainer()
    straight.run(8)
    np.testing.assert_array_equal(resumed.params, straight.params)
    for c, a in straight.history.as_arrays().items():
        np.testing.assert_array_equal(resumed.history[c], a)
    for k, v in straight.optimizer.state_dict().items():
        np.testing.assert_array_equal(np.asarray(resumed.optimizer.state_dict()[k]),
                                      np.asarray(v))


def test_a_second_sigint_stops_at_once(tmp_path):
    import os
    import signal

    from kdentropy.cli.supervision import TrainingInterrupted, supervised

    def twice(trainer):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    trainer = _grid_trainer()
    with pytest.raises(KeyboardInterrupt) as info:
        with supervised(4, tmp_path / "c.npz", progress=False) as after_iteration:
            trainer.run(4, checkpoint=tmp_path / "c.npz", callback=_sigint_at(1, twice))
            after_iteration(trainer)   # never reached
    assert not isinstance(info.value, TrainingInterrupted)
    assert not (tmp_path / "c.npz").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigint_after_the_last_iteration_still_stops(tmp_path):
    import os
    import signal

    from kdentropy.cli.supervision import TrainingInterrupted, supervised
    with pytest.raises(KeyboardInterrupt) as info:
        with supervised(0, tmp_path / "c.npz", progress=False):
            os.kill(os.getpid(), signal.SIGINT)   # deferred: nothing is interrupted here
    assert not isinstance(info.value, TrainingInterrupted)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_progress_lines_without_tqdm(capsys, monkeypatch):
    import sys

    from kdentropy.cells import CellSystem, train
    from kdentropy.cli.supervision import supervised
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)   # no tqdm: plain lines
    with supervised(10, None, progress=True) as after_iteration:
        train(CellSystem(n_cells=6, steps=3, hidden=(4,)), iterations=10, batch=8,
              eval_batch=16, eval_every=5, backend="numpy", callback=after_iteration)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("iteration")]
    assert len(lines) == 10 and "hard H (eval)" in lines[4]
    with supervised(3, None, progress=False) as after_iteration:
        train(CellSystem(n_cells=6, steps=3, hidden=(4,)), iterations=3, batch=8,
              eval_batch=16, backend="numpy", callback=after_iteration)
    assert capsys.readouterr().err == ""


def test_progress_bar_when_tqdm_is_installed(monkeypatch, capsys):
    import sys
    import types

    from kdentropy.cli.supervision import supervised
    bars = []

    class FakeTqdm:
        def __init__(self, total, **kwargs):
            self.total, self.n, self.postfix, self.closed = total, 0, None, False
            bars.append(self)

        def set_postfix(self, post, refresh=True):
            self.postfix = post

        def update(self, n):
            self.n += n

        def close(self):
            self.closed = True

    def small_trainer():
        from kdentropy.cells import CellSystem, ReproducibilityLoss, Trainer
        from kdentropy.optim import Adam
        return Trainer(CellSystem(n_cells=8, steps=6, hidden=(8,)), optimizer=Adam(0.05),
                       loss=ReproducibilityLoss(backend="numpy"), batch=32, eval_batch=64,
                       eval_every=20)

    monkeypatch.setitem(sys.modules, "tqdm.auto", types.SimpleNamespace(tqdm=FakeTqdm))
    with supervised(20, None, progress=True) as after_iteration:
        small_trainer().run(20, callback=after_iteration)   # eval_every=20: one evaluation row
    (bar,) = bars
    assert bar.total == 20 and bar.n == 20 and bar.closed
    assert set(bar.postfix) == {"loss", "H_batch", "H_eval"}
    assert capsys.readouterr().err == ""           # the bar, not the plain lines
    with supervised(4, None, progress=False) as after_iteration:
        small_trainer().run(4, callback=after_iteration)
    assert len(bars) == 1


# ------------------------------------------------------------------ the first hour (issue 23)

def test_sigma_auto_is_the_default_and_resolved_by_the_cell_count(tmp_path, capsys):
    from kdentropy.cells.loss import auto_sigma
    assert main(["train", *TINY, "--iterations", "2", "--no-plot", "--progress", "none",
                 "--out", str(tmp_path / "auto")]) == 0
    err = capsys.readouterr().err
    assert "--sigma auto = 0.5 sqrt(8 cells / 32) = 0.25" in err
    config = json.loads((tmp_path / "auto" / "summary.json").read_text())["config"]
    assert config["loss"]["sigma"] == auto_sigma(8) == 0.25   # the number, not the rule
    assert main(["train", *TINY, "--iterations", "2", "--no-plot", "--quiet", "--sigma", "0.3",
                 "--out", str(tmp_path / "fixed")]) == 0
    config = json.loads((tmp_path / "fixed" / "summary.json").read_text())["config"]
    assert config["loss"]["sigma"] == 0.3
    for bad in ("abc", "0", "nan"):
        err = _one_line_error(capsys, main(["train", *TINY, "--sigma", bad,
                                            "--out", str(tmp_path / "bad")]))
        assert "--sigma" in err
    assert not (tmp_path / "bad").exists()


def test_a_flat_soft_entropy_is_one_warning_line(tmp_path, capsys):
    # sigma 0.05 on 64 cells: every pair of runs is "different", the soft
    # entropy is log(batch) and gives no gradient.
    common = ["--cells", "64", "--steps", "2", "--hidden", "4", "--batch", "16",
              "--eval-batch", "16", "--backend", "numpy", "--iterations", "10", "--no-plot",
              "--quiet"]
    assert main(["train", *common, "--sigma", "0.05", "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert out == ""                                 # --quiet keeps warnings only
    assert err.count("\n") == 1 and err.startswith("kdentropy: warning: the soft entropy")
    assert "sigma 0.05 is too narrow for 64 cells" in err and "--sigma auto" in err
    assert main(["train", *common, "--out", str(tmp_path / "b")]) == 0   # auto: no warning
    assert capsys.readouterr() == ("", "")


def test_iterations_must_be_at_least_one(capsys):
    err = _one_line_error(capsys, main(["train", "--iterations", "0"]))
    assert "--iterations" in err and ">= 1" in err


@pytest.mark.parametrize("argv, hint, help_of", [
    (["train", "--itertions", "5"], "did you mean '--iterations'?", "kdentropy train --help"),
    (["train", "--sigam=1"], "did you mean '--sigma'?", "kdentropy train --help"),
    (["evaluate", "run", "--seeds", "3"], "did you mean '--seed'?", "kdentropy evaluate --help"),
    (["trian"], "did you mean 'train'?", "kdentropy --help"),
    (["train", "--backend", "cdua"], "did you mean 'cuda'?", "kdentropy train --help"),
    (["train", "--progress", "bars"], "did you mean 'bar'?", "kdentropy train --help"),
])
def test_usage_errors_suggest_the_closest_spelling(capsys, argv, hint, help_of):
    err = _one_line_error(capsys, main(argv))
    assert hint in err and f"(see '{help_of}')" in err


def test_no_suggestion_when_nothing_is_close(capsys):
    err = _one_line_error(capsys, main(["train", "--zzzzzz"]))
    assert "did you mean" not in err and "(see 'kdentropy train --help')" in err


def test_a_missing_run_folder_reads_the_same_in_every_command(tmp_path, capsys):
    missing = str(tmp_path / "nope")
    lines = {cmd: _one_line_error(capsys, main([cmd, missing])) for cmd in ("plot", "evaluate")}
    assert lines["plot"] == lines["evaluate"] == f"kdentropy: error: no such file or folder: " \
        f"{missing!r}\n"


def _fake_no_gpu(monkeypatch):
    """Make the cuda backend see a machine without a GPU (or report its missing extra)."""
    import importlib
    try:
        cuda_backend = importlib.import_module("kdentropy.backends.cuda")
    except ImportError:
        return "extra"
    monkeypatch.setattr(cuda_backend, "SIMULATOR", False)
    monkeypatch.setattr(cuda_backend.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cuda_backend, "driver_initialization_error",
                        lambda: "CUDA driver library cannot be found")
    return "driver"


def test_cuda_without_a_gpu_is_one_line_that_names_the_cpu_backend(tmp_path, capsys,
                                                                   monkeypatch, rng):
    path = _save(tmp_path, rng.random((5, 3)))
    kind = _fake_no_gpu(monkeypatch)
    for argv in (["entropy", path, "--backend", "cuda"],
                 ["train", *TINY[:-2], "--backend", "cuda", "--out", str(tmp_path / "r")]):
        status = main(argv)
        err = _one_line_error(capsys, status)
        assert status == 1 and "--backend cpu" in err and "SIM" not in err
        assert ("no usable CUDA driver or GPU" if kind == "driver" else "kdentropy[cuda]") in err
    assert not (tmp_path / "r").exists()


def test_cuda_without_the_extra_says_the_extra_is_missing(tmp_path, capsys, monkeypatch, rng):
    from importlib import metadata
    path = _save(tmp_path, rng.random((5, 3)))
    _fake_no_gpu(monkeypatch)
    real = metadata.version

    def version(dist):
        if dist in ("numba-cuda", "numba-cuda-mlir"):
            raise metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(metadata, "version", version)
    err = _one_line_error(capsys, main(["entropy", path, "--backend", "cuda"]))
    assert "pip install 'kdentropy[cuda]'" in err and "or run on the CPU with --backend cpu" in err
    assert "driver" not in err


def test_info_lists_every_extra_with_versions(capsys):
    from importlib import metadata
    assert main(["info", "--json"]) == 0
    optional = json.loads(capsys.readouterr().out)["optional"]
    assert optional is not None and {"plot", "cuda", "mpi", "torch", "jax", "test"} <= set(optional)
    assert "dev" not in optional and "all" not in optional       # aggregates, not packages
    assert optional["plot"]["matplotlib"] == _installed(metadata, "matplotlib")
    assert "numpy" not in optional["cuda"]                        # a core requirement
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "[plot]" in text and "[cuda]" in text and "numba-cuda-mlir" in text


def _installed(metadata, dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def test_progress_modes(monkeypatch):
    import io

    from kdentropy.cli.supervision import progress_mode

    class TTY(io.StringIO):
        def isatty(self):
            return True

    assert progress_mode("auto", TTY()) == "bar"
    assert progress_mode("auto", io.StringIO()) == "lines"   # a log file: no redraws
    assert [progress_mode(m) for m in ("bar", "lines", "none", True, False)] == \
        ["bar", "lines", "none", "bar", "none"]
    with pytest.raises(ValueError, match="progress"):
        progress_mode("fancy")


def test_progress_lines_and_none_from_the_command_line(tmp_path, capsys):
    common = [*TINY, "--iterations", "10", "--no-plot", "--sigma", "0.5"]
    assert main(["train", *common, "--progress", "lines", "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert sum(line.startswith("iteration") for line in err.splitlines()) == 10
    assert "trained 10 iterations" in out                       # the summary
    assert main(["train", *common, "--progress", "none", "--out", str(tmp_path / "b")]) == 0
    out, err = capsys.readouterr()
    assert "iteration" not in err and "trained 10 iterations" in out


def test_compile_detection_reads_numba_state(tmp_path, monkeypatch):
    import importlib
    import sys

    from kdentropy.cli.train import _compiled
    (tmp_path / "kde_probe_kernels.py").write_text(
        "import numba\n"
        "@numba.njit(parallel=True, cache=True)\n"
        "def total(a):\n"
        "    s = 0.0\n"
        "    for i in numba.prange(a.size):\n"
        "        s += a[i]\n"
        "    return s\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kde_probe_kernels", raising=False)
    module = importlib.import_module("kde_probe_kernels")
    assert _compiled("kde_probe_kernels") is False        # never compiled, nothing cached
    module.total(np.ones(3))
    assert _compiled("kde_probe_kernels") is True         # compiled in this process
    monkeypatch.delitem(sys.modules, "kde_probe_kernels")
    importlib.invalidate_caches()
    module = importlib.import_module("kde_probe_kernels")  # a new process, in effect
    assert not module.total.signatures
    assert _compiled("kde_probe_kernels") is True         # found in Numba's on-disk cache
    assert _compiled("no_such_module_prefix") is None


def test_compiling_notice_only_when_kernels_are_not_cached(tmp_path, capsys, monkeypatch):
    import kdentropy.cli.train as train_cli
    monkeypatch.setattr(train_cli, "_compiled", lambda prefix: False)
    common = [*TINY[:-2], "--backend", "cpu", "--iterations", "1", "--no-plot",
              "--progress", "none", "--sigma", "0.5"]
    assert main(["train", *common, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "compiling kernels (first run only, ~30 s" in err     # engine and cpu backend
    monkeypatch.setattr(train_cli, "_compiled", lambda prefix: True)
    assert main(["train", *common, "--out", str(tmp_path / "b")]) == 0
    assert "compiling" not in capsys.readouterr().err


def test_gradient_clipping_is_on_by_default_and_can_be_switched_off(tmp_path, capsys):
    common = [*TINY, "--iterations", "1", "--no-plot", "--quiet"]
    assert main(["train", *common, "--out", str(tmp_path / "a")]) == 0
    assert main(["train", *common, "--clip-norm", "none", "--out", str(tmp_path / "b")]) == 0

    def clip_norm(run):
        config = json.loads((tmp_path / run / "summary.json").read_text())["config"]
        return config["optimizer"]["clip_norm"]

    assert clip_norm("a") == 1.0 and clip_norm("b") is None
    err = _one_line_error(capsys, main(["train", *common, "--clip-norm", "0",
                                        "--out", str(tmp_path / "c")]))
    assert "--clip-norm" in err and "'none'" in err
