"""Damaged checkpoints, interrupted writes and extreme numeric settings (issue 13, items 9-11).

Every damaged checkpoint must be a ``ValueError`` that names the file and the
fault; writing must never leave ``*.tmp.npz`` behind and must reach the disk
before the rename; out-of-range hyperparameters are ValueErrors from the
library classes, reported by the CLI as one line; and a training step that
diverges stops with an error instead of recording inf or NaN.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest

from kdentropy import _validation
from kdentropy.cells import CellSystem, ReproducibilityLoss, Trainer
from kdentropy.cells import checkpoint as ckpt_module
from kdentropy.cli import main
from kdentropy.optim import SGD, Adam, Constant, Cosine, Exponential

HUGE = 10 ** 15


def _trainer(**kw) -> Trainer:
    kw.setdefault("loss", ReproducibilityLoss(backend="numpy"))
    return Trainer(CellSystem(n_cells=6, steps=3, hidden=(4,)), batch=8, eval_batch=8, **kw)


@pytest.fixture
def arrays(tmp_path) -> dict[str, np.ndarray]:
    """The arrays of a valid checkpoint after two iterations."""
    trainer = _trainer()
    trainer.run(2)
    trainer.save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as data:
        return dict(data)


def _load_fails(path, *fragments: str) -> str:
    """Load ``path``; it must raise a ValueError naming the file and each fragment."""
    with pytest.raises(ValueError) as info:
        Trainer.load(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _corrupt_member(path, member: str) -> None:
    """Overwrite the start of ``member``'s deflate stream with an invalid block type."""
    with zipfile.ZipFile(path) as zf:
        offset = zf.getinfo(member).header_offset
    with open(path, "r+b") as fh:
        fh.seek(offset + 26)
        name_len, extra_len = np.frombuffer(fh.read(4), dtype="<u2")
        fh.seek(offset + 30 + int(name_len) + int(extra_len))
        fh.write(b"\xff" * 8)   # BTYPE = 11: "invalid block type"


# ----------------------------------------------------------------------------- item 9

def test_zero_length_file(tmp_path):
    path = tmp_path / "ckpt.npz"
    path.write_bytes(b"")
    _load_fails(path, "empty")            # was EOFError


@pytest.mark.parametrize("member", ["format.npy", "theta.npy"])
def test_corrupt_compressed_stream(tmp_path, arrays, member):
    path = tmp_path / "ckpt.npz"
    np.savez_compressed(path, **arrays)
    assert Trainer.load(path).iteration == 2   # compressed checkpoints are fine
    _corrupt_member(path, member)
    _load_fails(path, "damaged", "corrupt compressed data")   # was zlib.error


def test_text_file(tmp_path):
    path = tmp_path / "ckpt.npz"
    path.write_text("iteration = 5\ntheta = 1 2 3\n")
    message = _load_fails(path, "not a .npz archive")
    assert "pickle" not in message                             # was "pickled data"


def test_pickle_is_refused_not_run(tmp_path):
    # A regression guard: loading must never unpickle, whatever the file says.
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "ckpt.npz"
    path.write_bytes(pickle.dumps(Evil()))
    _load_fails(path, "pickle")
    assert not marker.exists()


def test_object_array_member_is_refused(tmp_path, arrays):
    path = tmp_path / "ckpt.npz"
    np.savez(path, **dict(arrays, theta=np.array([1.0, None], dtype=object)))
    _load_fails(path, "theta", "Python objects")   # was a ValueError without the file


@pytest.mark.parametrize("key", ["theta", "theta_initial"])
def test_all_nan_parameters(tmp_path, arrays, key):
    path = tmp_path / "ckpt.npz"
    np.savez(path, **dict(arrays, **{key: np.full_like(arrays[key], np.nan)}))
    _load_fails(path, key, "NaN")                  # was accepted


def test_nan_optimizer_moments(tmp_path, arrays):
    path = tmp_path / "ckpt.npz"
    np.savez(path, **dict(arrays, **{"optim.v": np.full_like(arrays["optim.v"], np.nan)}))
    _load_fails(path, "optim.v", "NaN")            # was accepted


def test_negative_iteration(tmp_path, arrays):
    path = tmp_path / "ckpt.npz"
    np.savez(path, **dict(arrays, iteration=np.array(-50, dtype=np.int64)))
    _load_fails(path, "iteration", "-50")          # was accepted (history -49..5)


def test_history_longer_than_the_run(tmp_path, arrays):
    path = tmp_path / "ckpt.npz"
    longer = {k: np.concatenate([v, v]) for k, v in arrays.items() if k.startswith("history.")}
    np.savez(path, **dict(arrays, **longer))
    _load_fails(path, "history.", "at most (3,)")  # was accepted


@pytest.mark.parametrize("where, key", [("system", "n_cells"), ("system", "steps"),
                                        ("system", "hidden"), (None, "batch"),
                                        (None, "eval_batch")])
def test_absurd_sizes_in_the_config(tmp_path, arrays, where, key):
    config = json.loads(str(arrays["config"]))
    target = config[where] if where else config
    target[key] = [HUGE] if key == "hidden" else HUGE
    path = tmp_path / "ckpt.npz"
    np.savez(path, **dict(arrays, config=np.array(json.dumps(config))))
    _load_fails(path, "damaged")     # was MemoryError (or accepted, or without the file)


def test_huge_parameter_vector_is_rejected_from_its_header(tmp_path, arrays):
    # A valid, compressed 1 GiB theta (4.5 MB on disk): the config implies 29
    # parameters, so the header alone must reject it, with no large allocation.
    path = tmp_path / "ckpt.npz"
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if k != "theta"})
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("theta.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(
                fh, {"descr": "<f8", "fortran_order": False, "shape": (2 ** 27,)})
            chunk = bytes(1 << 24)
            for _ in range(64):
                fh.write(chunk)
    tracemalloc.start()
    try:
        _load_fails(path, "theta", "134217728")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2 ** 20, f"{peak / 2**20:.0f} MiB allocated"   # was > 1 GiB


def test_header_that_overstates_the_member(tmp_path, arrays):
    # A stored (uncompressed) member whose header claims more data than it holds.
    path = tmp_path / "ckpt.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if k != "theta"})
    with zipfile.ZipFile(path, "a") as zf, zf.open("theta.npy", "w") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f8", "fortran_order": False, "shape": (2 ** 30,)})
        fh.write(bytes(64))
    _load_fails(path, "theta", "holds 64 bytes")


def test_intact_checkpoint_still_resumes_exactly(tmp_path):
    # The checks must not reject what write() produces, nor change what it restores.
    full = _trainer()
    full.run(6)
    part = _trainer()
    part.run(3, checkpoint=tmp_path / "c.npz")
    resumed = Trainer.load(tmp_path / "c.npz")
    resumed.run(3)
    np.testing.assert_array_equal(resumed.params, full.params)
    assert resumed.history.as_arrays().keys() == full.history.as_arrays().keys()


# ----------------------------------------------------------------------------- item 10

def _no_tmp_files(directory) -> bool:
    return not [p for p in os.listdir(directory) if ".tmp" in p]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError])
def test_interrupted_write_leaves_no_temporary_file(tmp_path, monkeypatch, exc):
    path = tmp_path / "checkpoint.npz"
    trainer = _trainer()
    trainer.run(1, checkpoint=path)
    real_savez = np.savez

    def savez_then_fail(file, **arrays):
        real_savez(file, **arrays)
        raise exc("interrupted while writing")

    monkeypatch.setattr(ckpt_module.np, "savez", savez_then_fail)
    trainer.run(1)
    with pytest.raises(exc):
        trainer.save(path)
    monkeypatch.undo()
    assert _no_tmp_files(tmp_path)                  # was left behind
    assert Trainer.load(path).iteration == 1        # the old checkpoint is intact


def test_fsync_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}")
                       if os.path.exists("/proc/self/fd") else None))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(src)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    _trainer().save(tmp_path / "checkpoint.npz")
    monkeypatch.undo()
    names = [e[0] for e in events]
    assert "fsync" in names and "replace" in names          # was: no fsync at all
    assert names.index("fsync") < names.index("replace")
    assert events[names.index("replace")][1] == "checkpoint.tmp.npz"
    if os.name == "posix":
        assert names[-1] == "fsync"                          # the directory, after
    assert _no_tmp_files(tmp_path)


# ----------------------------------------------------------------------------- item 11

@pytest.mark.parametrize("make, name", [
    (lambda: Adam(lr=1e308), "lr"),
    (lambda: Constant(10.5), "lr"),
    (lambda: Cosine(1e308, 10), "lr"),
    (lambda: Exponential(11.0, 0.5), "lr"),
    (lambda: CellSystem(noise=1e308), "noise"),
    (lambda: CellSystem(noise=10.5), "noise"),
    (lambda: ReproducibilityLoss(anti_collapse=1e308), "anti_collapse"),
    (lambda: ReproducibilityLoss(anti_collapse=2e6), "anti_collapse"),
    (lambda: CellSystem(n_cells=HUGE), r"2\*\*40"),   # the size limit, whichever name
    (lambda: Trainer(CellSystem(n_cells=6, steps=3), batch=HUGE), "batch"),
])
def test_out_of_range_settings_in_the_python_api(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_range_edges_are_accepted():
    assert Adam(lr=_validation.LR_MAX).lr == 10.0
    assert CellSystem(noise=_validation.NOISE_MAX).noise == 10.0
    assert ReproducibilityLoss(anti_collapse=_validation.PENALTY_WEIGHT_MAX).anti_collapse == 1e6


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("flag, value, fragment", [
    ("--sigma", "1e-300", "sigma"),
    ("--lr", "1e308", "lr"),
    ("--noise", "1e308", "noise"),
    ("--anti-collapse", "1e308", "anti_collapse"),
    ("--temperature", "1e308", "temperature"),
    ("--cells", str(HUGE), "2**40"),
    ("--hidden", str(HUGE), "hidden"),
])
def test_cli_rejects_extreme_values_in_one_line(tmp_path, capsys, flag, value, fragment):
    out = tmp_path / "run"
    status = main(["train", "--out", str(out), "--iterations", "3", "--batch", "8",
                   "--eval-batch", "8", "--cells", "8", "--steps", "3", "--no-plot", "-q",
                   flag, value])
    err = capsys.readouterr().err
    assert status != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err                      # was RuntimeWarnings, or nothing
    assert lines[0].startswith("kdentropy: error: ") and "error: error:" not in lines[0]
    assert fragment in lines[0]
    assert not out.exists()                          # refused before anything is written


@pytest.mark.filterwarnings("error")
def test_cli_trains_cleanly_at_the_range_edges(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["train", "--out", str(out), "--iterations", "10", "--batch", "8",
                   "--eval-batch", "8", "--cells", "8", "--steps", "3", "--no-plot", "-q",
                   "--lr", "10", "--noise", "10", "--anti-collapse", "1e6"])
    assert status == 0, capsys.readouterr().err
    text = (out / "history.csv").read_text()
    assert "inf" not in text and "nan" not in text.lower()


@pytest.mark.parametrize("damage", ["empty", "compressed"])
def test_cli_resume_from_a_damaged_checkpoint(tmp_path, capsys, arrays, damage):
    out = tmp_path / "run"
    out.mkdir()
    path = out / "checkpoint.npz"
    if damage == "empty":
        path.write_bytes(b"")
    else:
        np.savez_compressed(path, **arrays)
        _corrupt_member(path, "format.npy")
    status = main(["train", "--out", str(out), "--resume", "-q", "--no-plot"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(lines) == 1
    assert lines[0].startswith("kdentropy: error: ") and "error: error:" not in lines[0]
    assert str(path) in lines[0]


# ----------------------------------------------------------------------------- divergence

class _ScaledLoss(ReproducibilityLoss):
    """The real loss with its value or gradient blown up, as a diverging run would."""

    def __init__(self, value_scale: float = 1.0, grad_scale: float = 1.0) -> None:
        super().__init__(backend="numpy")
        self.value_scale, self.grad_scale = value_scale, grad_scale

    def __call__(self, X):
        value, grad, parts = super().__call__(X)
        return value * self.value_scale, grad * self.grad_scale, parts


class _OverflowingSGD(SGD):
    """SGD whose update overflows the parameters, as a huge finite step would."""

    def _update(self, params, grad, lr):
        super()._update(params, grad, lr)
        params *= 1e308
        params *= 10.0


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("loss, optimizer, what", [
    (_ScaledLoss(value_scale=math.inf), None, "loss"),
    (_ScaledLoss(grad_scale=1e307), None, "gradient"),          # entries finite, norm inf
    (None, _OverflowingSGD(lr=0.1), "update"),                  # finite gradient, inf step
])
def test_training_stops_when_it_diverges(loss, optimizer, what):
    trainer = _trainer(**({"loss": loss} if loss else {}), optimizer=optimizer)
    trainer.run(0)
    params, rows = trainer.params.copy(), len(trainer.history)
    with pytest.raises(FloatingPointError, match=f"diverged at iteration 1.*{what}"):
        trainer.step()                               # was: inf/NaN recorded, warnings
    np.testing.assert_array_equal(trainer.params, params)
    assert trainer.iteration == 0 and len(trainer.history) == rows
    assert trainer.optimizer.step_count == 0


def test_cli_reports_divergence_in_one_line(tmp_path, capsys, monkeypatch):
    import kdentropy.cells as cells

    # The CLI builds its loss from kdentropy.cells at call time: make it diverge.
    class Diverging(_ScaledLoss):
        @classmethod
        def from_params(cls, params, **options):
            return cls(value_scale=math.inf)

    monkeypatch.setattr(cells, "ReproducibilityLoss", Diverging)
    status = main(["train", "--out", str(tmp_path / "run"), "--iterations", "3", "--batch", "8",
                   "--eval-batch", "8", "--cells", "8", "--steps", "3", "--no-plot", "-q"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(lines) == 1, lines
    assert lines[0].startswith("kdentropy: error: training diverged at iteration 1")
