"""The run folder (kdentropy.runs): its files written and read back, and the training figure."""

from __future__ import annotations

import json

import numpy as np
import pytest

import kdentropy.cells
from kdentropy import runs
from kdentropy.cells import CellSystem, History, ReproducibilityLoss, SavedRun, Trainer, train
from kdentropy.cells.figure import training_figure
from kdentropy.optim import Adam, Cosine
from kdentropy.runs import load_run


def _grid_trainer(**kw):
    system = CellSystem((3, 4), 3, topology="grid", hidden=(6,), hidden_channels=2, rate=0.5,
                        position="none")
    return Trainer(system, optimizer=Adam(Cosine(0.05, 8), clip_norm=1.0),
                   loss=ReproducibilityLoss(backend="numpy"), seed=5, batch=8, eval_batch=16,
                   eval_every=3, **kw)


def test_load_run_is_also_importable_from_cells():
    assert kdentropy.cells.load_run is load_run
    from kdentropy.cells import load_run as again
    assert again is load_run


def test_load_run_from_params_and_checkpoint(tmp_path):
    res = train(_grid_trainer().system, iterations=3, batch=8, eval_batch=16,
                backend="numpy", checkpoint=tmp_path / "checkpoint.npz")
    written, note = runs.write_results(res, tmp_path, "numpy", plot=False)
    assert written == ["params.npz", "history.csv", "summary.json", "checkpoint.npz"]
    assert note == "" and runs.files_in(tmp_path) == [
        "checkpoint.npz", "params.npz", "summary.json", "history.csv"]
    for source in (tmp_path, tmp_path / "params.npz", tmp_path / "checkpoint.npz"):
        run = load_run(source)
        assert run.source == str(source if source != tmp_path else tmp_path / "params.npz")
        assert isinstance(run, SavedRun) and run.system.get_config() == \
            res.trainer.system.get_config()
        np.testing.assert_array_equal(run.params, res.params)
        np.testing.assert_array_equal(run.params_initial, res.params_initial)
        before, after = run.evaluate()       # the evaluation batch of the training run
        assert after["hard_entropy"] == res.after["hard_entropy"]
        np.testing.assert_array_equal(after["final"], res.after["final"])
        np.testing.assert_array_equal(before["final"], res.before["final"])
    X = run.run(5, np.random.default_rng(0))
    assert X.shape == (5, 12)
    _, quiet = run.evaluate(runs=16, seed=9, noise=0.0)
    assert quiet["final"].shape == (16, 12)


def test_load_run_rejects_what_it_cannot_use(tmp_path):
    with pytest.raises(ValueError, match="no params.npz or checkpoint.npz"):
        load_run(tmp_path)
    bad = tmp_path / "params.npz"
    np.savez(bad, theta=np.zeros(3), theta_initial=np.zeros(3),
             config=np.array(json.dumps(_grid_trainer().get_config())))
    with pytest.raises(ValueError, match="params.npz.*damaged.*theta"):
        load_run(bad)
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="params.npz"):
        load_run(tmp_path)


# ----------------------------------------------------------------------------- the figure

@pytest.mark.parametrize("two_d", [False, True])
def test_the_figure_has_the_expected_panels(tmp_path, two_d):
    pytest.importorskip("matplotlib")
    if two_d:
        trainer = _grid_trainer()
    else:
        trainer = Trainer(CellSystem(8, 3, hidden=(4,), hidden_channels=1, noise=0.1),
                          loss=ReproducibilityLoss(backend="numpy"), seed=2, batch=8,
                          eval_batch=16, eval_every=2)
    trainer.run(4)
    fig = training_figure(trainer, trainer.params_initial, n_show=3)
    title = fig._suptitle.get_text()
    for word in (trainer.system.topology, "hidden channels", f"noise {trainer.system.noise:g}",
                 f"seed {trainer.seed}"):
        assert word in title
    titles = [ax.get_title() for ax in fig.axes]
    assert "entropy" in titles and "training loss" in titles
    entropy = fig.axes[titles.index("entropy")]
    # log N ceilings of both batches, and the evaluations as markers without a line.
    levels = {round(line.get_ydata()[0], 12) for line in entropy.lines
              if line.get_linestyle() == "--"}
    assert levels == {round(np.log(8), 12), round(np.log(16), 12)}
    marks = [line for line in entropy.lines if line.get_marker() == "o"]
    assert len(marks) == 1 and marks[0].get_linestyle() == "None"
    np.testing.assert_array_equal(marks[0].get_xdata(), [0, 3] if two_d else [0, 2, 4])
    labels = [t.get_text() for t in fig.axes[titles.index("training loss")].get_legend().texts]
    assert "loss" in labels and any("anti-collapse" in t for t in labels)
    if two_d:
        # A gallery of 2 x 3 binarised final patterns, before and after.
        assert titles.count("before, run 1") == 1 and titles.count("after, run 6") == 1
        assert any(ax.get_ylabel() == "before training\nrow" for ax in fig.axes)
        gallery = [ax for ax in fig.axes if ", run " in ax.get_title()]
        assert all(ax.get_xlabel() == "column" for ax in gallery)   # labelled axes
        assert titles.count("final state") == 2                     # the on/off key
    else:
        assert titles.count("before training, run 3") == 1
        assert any(ax.get_ylabel() == "visible state" for ax in fig.axes)   # the colour bar
    path = tmp_path / "f.png"
    runs.write_figure(trainer, trainer.params_initial, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_params_npz_uses_the_checkpoint_array_names(tmp_path):
    res = train(_grid_trainer().system, iterations=1, batch=8, eval_batch=16, backend="numpy",
                checkpoint=tmp_path / "checkpoint.npz")
    runs.write_results(res, tmp_path, "numpy", plot=False)
    with np.load(tmp_path / "params.npz") as p, np.load(tmp_path / "checkpoint.npz") as c:
        assert p.files == ["theta", "theta_initial", "config"]
        np.testing.assert_array_equal(p["theta"], c["theta"])
        assert json.loads(str(p["config"])) == json.loads(str(c["config"]))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == json.loads(json.dumps(runs.summary(res, "numpy")))


def test_history_csv_round_trip(tmp_path):
    trainer = _grid_trainer()
    hist = trainer.run(3)
    text = runs.history_csv(hist)
    lines = text.splitlines()
    assert lines[0].split(",") == list(History.COLUMNS) and len(lines) == 5
    assert lines[1].split(",")[:2] == ["0", ""]     # row 0: iteration 0, no loss yet
    (tmp_path / "h.csv").write_text(text)
    table = np.genfromtxt(tmp_path / "h.csv", delimiter=",", names=True)
    np.testing.assert_array_equal(table["loss"], hist["loss"])
    np.testing.assert_array_equal(table["eval_hard_entropy"], hist["eval_hard_entropy"])
    assert runs.history_csv(History.from_arrays(hist.as_arrays())) == text
