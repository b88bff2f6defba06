"""The cell system: roll-out, back-propagation through time, loss, training and checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import central_differences, norm_rel
from scipy.optimize import minimize

import kdentropy as kde
from kdentropy.cells import (
    CellSystem, History, Line, ReproducibilityLoss, Ring, Topology, Trainer, TrainResult,
    pattern_stats, train,
)
from kdentropy.cells.topology import TOPOLOGIES
from kdentropy.optim import SGD, Adam, Cosine

# Analytic against central-difference gradients (step 1e-6) of these smooth
# float64 losses: agreement to ~1e-9 is typical, 1e-6 leaves room for FD error.
FD_RTOL = 1e-6


# ----------------------------------------------------------------------------- topology

def test_line_features_zero_padded_and_positions():
    system = CellSystem(n_cells=4, steps=1, radius=1, topology="line")
    assert isinstance(system.layout, Line) and system.topology == "line"
    x = np.array([[0.1, 0.2, 0.3, 0.4]])
    f = system.layout.features(x[..., None])
    assert f.shape == (1, 4, 5)
    np.testing.assert_array_equal(f[0, :, 0], [0.0, 0.1, 0.2, 0.3])   # left neighbour
    np.testing.assert_array_equal(f[0, :, 1], x[0])                   # self
    np.testing.assert_array_equal(f[0, :, 2], [0.2, 0.3, 0.4, 0.0])   # right neighbour
    np.testing.assert_allclose(f[0, :, 3], [0, 1 / 3, 2 / 3, 1])      # p
    np.testing.assert_allclose(f[0, :, 4], [1, 2 / 3, 1 / 3, 0])      # 1 - p


def test_ring_features_wrap_and_sincos():
    system = CellSystem(n_cells=4, steps=1, radius=2, topology="ring")
    assert isinstance(system.layout, Ring) and system.position == "sincos"
    x = np.array([[0.1, 0.2, 0.3, 0.4]])
    f = system.layout.features(x[..., None])
    assert f.shape == (1, 4, 7)
    np.testing.assert_array_equal(f[0, :, 0], [0.3, 0.4, 0.1, 0.2])   # offset -2
    np.testing.assert_array_equal(f[0, :, 4], [0.3, 0.4, 0.1, 0.2])   # offset +2
    np.testing.assert_array_equal(f[0, :, 3], [0.2, 0.3, 0.4, 0.1])   # offset +1
    np.testing.assert_allclose(f[0, :, 5:], [[0, 1], [1, 0], [0, -1], [-1, 0]], atol=1e-15)


@pytest.mark.parametrize("topology", ["line", "ring"])
@pytest.mark.parametrize("radius", [0, 1, 2])
def test_features_adjoint_is_the_transpose(rng, topology, radius):
    # <F(x), df> = <x, F^T(df)> for the (linear) neighbourhood part.
    system = CellSystem(n_cells=7, steps=1, radius=radius, topology=topology, position="none")
    x = rng.random((3, 7, 1))
    df = rng.standard_normal((3, 7, 2 * radius + 1))
    lhs = np.sum(system.layout.features(x) * df)
    rhs = np.sum(x * system.layout.features_adjoint(df))
    assert lhs == pytest.approx(rhs, rel=1e-13)


def test_a_new_topology_is_one_class(monkeypatch, tmp_path):
    # The system, loss, trainer, statistics and checkpoints reach the
    # arrangement only through the Topology interface and the TOPOLOGIES
    # registry: a topology written here (each cell sees itself and the cell
    # two to the right, on a ring) trains, saves and resumes as is.
    class Skip(Topology):
        NAME = "skip"
        NDIM = 1
        POSITIONS = ("auto", "none")
        DEFAULT_POSITION = "none"

        def neighbour_table(self):
            i = np.arange(self.n_cells)
            return np.stack([i, (i + 2) % self.n_cells], axis=1)

        def position_features(self, kind):
            raise ValueError(kind)

        def edges(self):
            i = np.arange(self.n_cells)
            return np.stack([i, (i + 2) % self.n_cells], axis=1)

    monkeypatch.setitem(TOPOLOGIES, "skip", Skip)
    system = CellSystem(n_cells=6, steps=2, hidden=(3,), topology="skip")
    assert isinstance(system.layout, Skip) and system.n_params == 2 * 3 + 3 + 3 + 1
    rng = np.random.default_rng(0)
    x, df = rng.random((3, 6, 1)), rng.standard_normal((3, 6, 2))
    assert np.sum(system.layout.features(x) * df) == pytest.approx(
        np.sum(x * system.layout.features_adjoint(df)), rel=1e-13)
    trainer = Trainer(system, optimizer=Adam(0.05), loss=ReproducibilityLoss(backend="numpy"),
                      batch=8, eval_batch=8, eval_every=1)
    trainer.run(2, checkpoint=tmp_path / "skip.npz")
    assert np.isfinite(trainer.history["eval_boundaries"]).all()
    assert Trainer.load(tmp_path / "skip.npz").system.topology == "skip"


def test_topology_objects_validate_and_describe_themselves():
    line = Line(5, radius=2)
    assert (line.n_neighbours, line.n_features, line.position) == (5, 7, "linear")
    assert Ring(5, position="none").n_features == 3
    assert repr(Ring(5)) == "Ring(5, radius=1, position='sincos')"
    with pytest.raises(ValueError, match="radius"):
        Line(5, radius=-1)
    with pytest.raises(ValueError, match="position"):
        Ring(5, position="spiral")
    B = np.array([[1, 0, 0, 1]], dtype=bool)
    assert Line(4).boundaries(B).tolist() == [2] and Ring(4).boundaries(B).tolist() == [2]
    assert Ring(4).boundaries(np.array([[1, 0, 0, 0]], dtype=bool)).tolist() == [2]


# ----------------------------------------------------------------------------- roll-out

def test_rollout_shapes_range_and_determinism(rng):
    system = CellSystem(n_cells=9, steps=5, hidden=(6,), noise=0.3, output_init_scale=1.0)
    params = system.init(rng)
    x0, xi = system.sample_inputs(rng, 11)
    assert x0.shape == (11, 9, 1) and xi.shape == (5, 11, 9, 1)
    x0_copy, xi_copy = x0.copy(), xi.copy()
    out = system.rollout(params, x0, xi, keep_trajectory=True)
    assert out.final.shape == (11, 9, 1) and out.final.dtype == np.float64
    assert out.trajectory.shape == (6, 11, 9, 1)
    np.testing.assert_array_equal(out.visible, out.final[:, :, 0])
    np.testing.assert_array_equal(out.trajectory[0], x0)
    np.testing.assert_array_equal(out.trajectory[-1], out.final)
    assert out.final.min() >= 0.0 and out.final.max() <= 1.0
    assert np.any(out.final == 0.0) or np.any(out.final == 1.0)   # noise 0.3 clips some cells
    np.testing.assert_array_equal(system.rollout(params, x0, xi).final, out.final)
    np.testing.assert_array_equal(x0, x0_copy)
    np.testing.assert_array_equal(xi, xi_copy)


def test_rollout_is_vectorised_over_runs(rng):
    # Each run evolves independently: running them one at a time changes nothing.
    system = CellSystem(n_cells=6, steps=4, hidden=(5,))
    params = system.init(rng)
    x0, xi = system.sample_inputs(rng, 4)
    batch = system.rollout(params, x0, xi).final
    single = np.concatenate([system.rollout(params, x0[i:i + 1], xi[:, i:i + 1]).final
                             for i in range(4)])
    np.testing.assert_allclose(batch, single, rtol=1e-14, atol=1e-15)


def test_initial_states_and_noise_are_the_only_randomness(rng):
    # The roll-out draws nothing itself (no global RNG): runs with the same
    # x0 and noise agree exactly, and each of the two inputs matters.
    system = CellSystem(n_cells=8, steps=4, noise=0.2, output_init_scale=1.0)
    params = system.init(rng)
    x0, xi = system.sample_inputs(rng, 3)
    np.random.seed(1)  # noqa: NPY002 - the legacy global RNG must not matter
    same = system.rollout(params, np.repeat(x0[:1], 3, 0), np.repeat(xi[:, :1], 3, 1)).final
    assert np.all(same == same[0])
    np.random.seed(2)  # noqa: NPY002 - as above
    np.testing.assert_array_equal(
        system.rollout(params, x0[:1], xi[:, :1]).final[0], same[0])
    other_noise = system.rollout(params, np.repeat(x0[:1], 3, 0), xi).final
    assert not np.array_equal(other_noise[1], other_noise[0])
    noiseless = CellSystem(**dict(system.get_config(), noise=0.0))
    X = noiseless.rollout(params, np.repeat(x0[:1], 3, 0), xi).final   # noise 0: xi unused
    assert np.all(X == X[0])


# ----------------------------------------------------------------------------- gradients

SYSTEMS = {
    "default-small": dict(n_cells=6, steps=3, hidden=(4,)),
    "saturating-clipped": dict(n_cells=6, steps=3, hidden=(4,), noise=0.3, output_init_scale=1.0),
    "ring-r2-relu-2layers": dict(n_cells=7, steps=4, hidden=(4, 3), topology="ring", radius=2,
                                 activation="relu", noise=0.2, output_init_scale=1.0),
    "no-position-noiseless": dict(n_cells=5, steps=3, hidden=(3,), position="none", noise=0.0,
                                  output_init_scale=2.0),
}


@pytest.mark.parametrize("name", SYSTEMS)
def test_rollout_to_loss_gradient_matches_finite_differences(rng, name):
    """The whole chain params -> roll-out -> (soft entropy + anti-collapse) against FD."""
    system = CellSystem(**SYSTEMS[name])
    # Perturbed parameters: non-zero biases keep relu units off their kink.
    params = system.init(rng) + 0.1 * rng.standard_normal(system.n_params)
    x0, xi = system.sample_inputs(rng, 5)
    loss = ReproducibilityLoss(backend="numpy")
    value, grad, parts = system.loss_and_grad(params, x0, xi, loss)
    assert grad.shape == (system.n_params,) and grad.dtype == np.float64
    assert parts["penalty"] > 0 and parts["soft_entropy"] > 0   # both terms are exercised
    assert value == pytest.approx(parts["soft_entropy"] + 100.0 * parts["penalty"], rel=1e-14)
    fd = central_differences(lambda t: system.loss_and_grad(t, x0, xi, loss)[0], params)
    assert norm_rel(grad, fd) < FD_RTOL
    # The penalty dominates the norm above; check the entropy part on its own.
    soft = ReproducibilityLoss(anti_collapse=0.0, backend="numpy")
    _, grad_soft, _ = system.loss_and_grad(params, x0, xi, soft)
    fd_soft = central_differences(lambda t: system.loss_and_grad(t, x0, xi, soft)[0], params)
    assert np.linalg.norm(fd_soft) > 1e-2
    assert norm_rel(grad_soft, fd_soft) < FD_RTOL


def test_backward_of_any_final_gradient_matches_finite_differences(rng):
    # BPTT alone, for an arbitrary linear functional of the final states.
    system = CellSystem(n_cells=5, steps=4, hidden=(4,), noise=0.1, output_init_scale=1.0)
    params = system.init(rng) + 0.1 * rng.standard_normal(system.n_params)
    x0, xi = system.sample_inputs(rng, 3)
    w = rng.standard_normal((3, 5))
    out = system.rollout(params, x0, xi)
    grad = system.backward(params, out, w)
    fd = central_differences(lambda t: float(np.sum(w * system.rollout(t, x0, xi).visible)),
                             params)
    assert norm_rel(grad, fd) < FD_RTOL


@pytest.mark.parametrize("band", [(0.5, 0.5), (0.2, 0.8), (0.45, 0.7)])
def test_loss_gradient_in_X_matches_finite_differences(rng, band):
    loss = ReproducibilityLoss(anti_collapse=3.0, band=band, backend="numpy")
    # Rows with mean states on both sides of the band, and one inside it.
    X = np.clip(rng.random((4, 6)) * [[0.3], [1.0], [0.6], [1.0]] + [[0], [0], [0.4], [0.0]], 0, 1)
    value, dX, parts = loss(X)
    fd = central_differences(lambda Y: loss(Y)[0], X)
    assert norm_rel(dX, fd) < FD_RTOL
    H_ref, G_ref = kde.soft_entropy_and_grad(X, backend="numpy")
    assert parts["soft_entropy"] == pytest.approx(float(H_ref), rel=1e-14)
    m = X.mean(axis=1)
    lo, hi = band
    P = np.mean(np.maximum(lo - m, 0) ** 2 + np.maximum(m - hi, 0) ** 2)
    assert parts["penalty"] == pytest.approx(P, rel=1e-14)


def test_penalty_keeps_gradient_when_collapsed(rng):
    # A fully collapsed batch: the discretised states are saturated, but the
    # penalty on the raw mean still pushes every cell up.
    X = np.full((8, 10), 0.01) + 0.001 * rng.random((8, 10))
    _, dP = ReproducibilityLoss().penalty(X)
    assert np.all(dP < 0)
    expected = 2 * (X.mean(axis=1, keepdims=True) - 0.5) / X.size
    np.testing.assert_allclose(dP, np.broadcast_to(expected, X.shape), rtol=1e-14)


def test_scipy_minimize_on_fixed_inputs(rng):
    system = CellSystem(n_cells=6, steps=3, hidden=(4,))
    params0 = system.init(rng)
    x0, xi = system.sample_inputs(rng, 16)
    loss = ReproducibilityLoss(backend="numpy")

    def fun(t):
        value, grad, _ = system.loss_and_grad(t, x0, xi, loss)
        return value, grad

    res = minimize(fun, params0, jac=True, method="L-BFGS-B", options={"maxiter": 15})
    assert res.fun < 0.5 * fun(params0)[0]


# ----------------------------------------------------------------------------- metrics

def test_pattern_stats():
    X = np.array([[1, 1, 0, 0, 1], [1, 1, 0, 0, 1], [0, 0, 0, 0, 0], [1, 0, 1, 0, 1]], float)
    s = pattern_stats(X)
    assert s["distinct"] == 3 and s["mode_fraction"] == 0.5
    assert s["hard_entropy"] == pytest.approx(float(kde.hard_entropy(X)))
    assert s["fraction_on"] == pytest.approx(X.mean())
    assert s["boundaries"] == pytest.approx((2 + 2 + 0 + 4) / 4)
    assert pattern_stats(X, topology="ring")["boundaries"] == pytest.approx((2 + 2 + 0 + 4) / 4)
    assert pattern_stats([[1, 0, 0]], topology="ring")["boundaries"] == 2.0
    assert pattern_stats([[1, 0, 0]])["boundaries"] == 1.0


# ----------------------------------------------------------------------------- training

def _small_trainer(seed=0, **kw):
    system = CellSystem(n_cells=8, steps=6, hidden=(8,))
    return Trainer(system, optimizer=Adam(0.05), loss=ReproducibilityLoss(backend="numpy"),
                   seed=seed, batch=32, eval_batch=64, eval_every=20, **kw)


def test_short_training_run_learns():
    trainer = _small_trainer(seed=0)
    hist = trainer.run(80)
    assert len(hist) == 81 and trainer.iteration == 80
    arrays = hist.as_arrays()
    assert set(arrays) == set(History.COLUMNS)
    assert all(a.shape == (81,) and a.dtype == np.float64 for a in arrays.values())
    np.testing.assert_array_equal(arrays["iteration"], np.arange(81))
    assert np.isnan(arrays["loss"][0]) and not np.isnan(arrays["loss"][1:]).any()
    ev = hist.evaluations()
    np.testing.assert_array_equal(ev["iteration"], [0, 20, 40, 60, 80])
    loss = arrays["loss"][1:]
    assert loss[-10:].mean() < 0.5 * loss[:10].mean()
    assert ev["eval_hard_entropy"][0] > 3.0                        # untrained: nearly log 64
    assert ev["eval_hard_entropy"][-1] < 0.5 * ev["eval_hard_entropy"][0]
    assert 0.2 <= ev["eval_fraction_on"][-1] <= 0.8


def test_same_seed_same_history_different_seed_different():
    h1 = _small_trainer(seed=3).run(6).as_arrays()
    h2 = _small_trainer(seed=3).run(6).as_arrays()
    h3 = _small_trainer(seed=4).run(6).as_arrays()
    for c in History.COLUMNS:
        np.testing.assert_array_equal(h1[c], h2[c])
    assert not np.array_equal(h1["loss"], h3["loss"], equal_nan=True)


def test_evaluation_batch_is_never_a_training_batch():
    trainer = _small_trainer(seed=1)
    x_eval = trainer.eval_inputs[0]
    for _ in range(3):
        x_train, _ = trainer.system.sample_inputs(trainer.rng, 32)
        assert not np.isin(x_train, x_eval).any()


def test_trainer_does_not_modify_the_given_params(rng):
    system = CellSystem(n_cells=6, steps=3, hidden=(4,))
    params = system.init(rng)
    copy = params.copy()
    trainer = Trainer(system, optimizer=Adam(0.05), loss=ReproducibilityLoss(backend="numpy"),
                      batch=8, eval_batch=8, params=params)
    trainer.run(2)
    np.testing.assert_array_equal(params, copy)
    assert not np.array_equal(trainer.params, copy)


def test_checkpoint_resume_gives_identical_trajectory(tmp_path):
    def make():
        system = CellSystem(n_cells=8, steps=4, hidden=(6,))
        return Trainer(system, optimizer=SGD(Cosine(0.05, 10), momentum=0.9, nesterov=True),
                       loss=ReproducibilityLoss(backend="numpy"), seed=11, batch=16,
                       eval_batch=32, eval_every=3)

    straight = make()
    straight.run(10)

    first = make()
    path = tmp_path / "ckpt.npz"
    first.run(4, checkpoint=path)
    resumed = Trainer.load(path)
    assert resumed.iteration == 4
    np.testing.assert_array_equal(resumed.params_initial, straight.params_initial)
    resumed.run(6)

    np.testing.assert_array_equal(resumed.params, straight.params)     # bit for bit
    a, b = resumed.history.as_arrays(), straight.history.as_arrays()
    for c in History.COLUMNS:
        np.testing.assert_array_equal(a[c], b[c])
    for k, v in straight.optimizer.state_dict().items():
        np.testing.assert_array_equal(resumed.optimizer.state_dict()[k], v)
    # The rng continues from the same state too.
    assert resumed.rng.random() == straight.rng.random()


def test_checkpoint_every(tmp_path):
    trainer = _small_trainer()
    path = tmp_path / "c.npz"
    seen = []
    trainer.run(5, checkpoint=path, checkpoint_every=2,
                callback=lambda t: seen.append(Trainer.load(path).iteration
                                               if path.exists() else None))
    assert seen == [None, 2, 2, 4, 4]   # the callback runs after the checkpoint
    assert Trainer.load(path).iteration == 5
    with pytest.raises(ValueError, match="npz"):   # refused before any training
        trainer.run(3, checkpoint=tmp_path / "c.txt")
    assert trainer.iteration == 5


def test_load_rejects_other_files(tmp_path):
    np.savez(tmp_path / "x.npz", params=np.zeros(3))
    with pytest.raises(ValueError, match="not a kdentropy"):
        Trainer.load(tmp_path / "x.npz")
    np.save(tmp_path / "x.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not a kdentropy"):
        Trainer.load(tmp_path / "x.npy")
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="cannot read"):
        Trainer.load(tmp_path / "bad.npz")
    # A checkpoint with a missing entry, or a bit generator name that is not one.
    good = tmp_path / "good.npz"
    _small_trainer().save(good)
    with np.load(good) as data:
        arrays = dict(data)
    np.savez(tmp_path / "cut.npz", **{k: v for k, v in arrays.items() if k != "rng_state"})
    with pytest.raises(ValueError, match="damaged"):
        Trainer.load(tmp_path / "cut.npz")
    state = json.loads(str(arrays["rng_state"]))
    state["bit_generator"] = "seed"                 # np.random.seed must not be called
    np.savez(tmp_path / "evil.npz", **dict(arrays, rng_state=np.array(json.dumps(state))))
    with pytest.raises(ValueError, match="bit generator"):
        Trainer.load(tmp_path / "evil.npz")
    with pytest.raises(ValueError, match="backend"):
        Trainer.load(good, backend="tpu")


def test_train_function(capsys):
    res = train(CellSystem(n_cells=6, steps=3, hidden=(4,)), iterations=10, batch=8,
                eval_batch=16, eval_every=5, backend="numpy")
    assert isinstance(res, TrainResult) and res.trainer.iteration == 10
    assert res.before["final"].shape == (16, 6) and res.after["final"].shape == (16, 6)
    assert res.before["hard_entropy"] == res.history["eval_hard_entropy"][0]
    assert not np.array_equal(res.params, res.params_initial)
    assert capsys.readouterr() == ("", "")         # showing progress is the caller's


def test_callback_runs_after_every_iteration():
    seen = []
    res = train(CellSystem(n_cells=6, steps=3, hidden=(4,)), iterations=4, batch=8,
                eval_batch=16, backend="numpy",
                callback=lambda t: seen.append((t.iteration, t.history.last["iteration"])))
    assert seen == [(1, 1), (2, 2), (3, 3), (4, 4)] and res.trainer.iteration == 4


def test_history_round_trips_through_arrays():
    hist = _small_trainer().run(3)
    clone = History.from_arrays(hist.as_arrays())
    assert len(clone) == 4
    for c in History.COLUMNS:
        np.testing.assert_array_equal(clone[c], hist[c])


@pytest.mark.parametrize("make, exc, match", [
    (lambda: CellSystem(n_cells=0), ValueError, "n_cells"),
    (lambda: CellSystem(steps=1.5), TypeError, "steps"),
    (lambda: CellSystem(topology="torus"), ValueError, "topology"),
    (lambda: CellSystem(position="random"), ValueError, "position"),
    (lambda: CellSystem(noise=-0.1), ValueError, "noise"),
    (lambda: CellSystem(activation="swish"), ValueError, "activation"),
    (lambda: CellSystem(hidden=2.0), TypeError, "hidden"),
    (lambda: CellSystem(hidden=(4, 0)), ValueError, r"hidden\[1\]"),
    (lambda: CellSystem(radius=-1), ValueError, "radius"),
    (lambda: ReproducibilityLoss(temperature=float("inf")), ValueError, "temperature"),
    (lambda: ReproducibilityLoss(sigma=0.0), ValueError, "sigma"),
    (lambda: ReproducibilityLoss(band=(0.8, 0.2)), ValueError, "band"),
    (lambda: ReproducibilityLoss(anti_collapse=-1.0), ValueError, "anti_collapse"),
    (lambda: ReproducibilityLoss(backend="tpu"), ValueError, "backend"),
    (lambda: Trainer(batch=0), ValueError, "batch"),
    (lambda: Trainer(optimizer="adam"), TypeError, "optimizer"),
    (lambda: _small_trainer().run(-1), ValueError, "iterations"),
    (lambda: _small_trainer().run(2, checkpoint_every=1), ValueError, "checkpoint"),
    (lambda: pattern_stats([[0, 1]], topology="hexagon"), ValueError, "topology"),
    (lambda: pattern_stats([[0, 1]], topology=Line(3)), ValueError, "cells"),
    (lambda: pattern_stats([[[0, 1]]]), ValueError, "2-D"),
])
def test_bad_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_bad_rollout_inputs(rng):
    system = CellSystem(n_cells=5, steps=2, hidden=(3,))
    params = system.init(rng)
    x0, xi = system.sample_inputs(rng, 4)
    with pytest.raises(ValueError, match="params"):
        system.rollout(params[1:], x0, xi)
    with pytest.raises(ValueError, match="x0"):
        system.rollout(params, x0[:, 1:], xi)
    with pytest.raises(ValueError, match="xi"):
        system.rollout(params, x0, xi[1:])
    with pytest.raises(ValueError, match="finite"):
        system.rollout(params, np.where(x0 > 0.5, np.nan, x0), xi)
    with pytest.raises(TypeError, match="x0"):
        system.rollout(params, x0 + 0j, xi)
    with pytest.raises(TypeError, match="params"):
        system.rollout(params + 0j, x0, xi)
    with pytest.raises(TypeError, match="rng"):
        system.sample_inputs(np.random.RandomState(0), 4)
    with pytest.raises(ValueError, match="n_runs"):
        system.sample_inputs(rng, 0)
    out = system.rollout(params, x0, xi, keep_caches=False)
    with pytest.raises(ValueError, match="keep_caches"):
        system.backward(params, out, np.zeros_like(out.final))


def test_config_round_trips():
    system = CellSystem(n_cells=10, steps=3, hidden=(5, 4), topology="ring", noise=0.1)
    clone = CellSystem(**json.loads(json.dumps(system.get_config())))
    assert clone.get_config() == system.get_config() and clone.n_params == system.n_params


@pytest.mark.parametrize("name", ["cells", "cells.topology", "cells.system", "cells.metrics",
                                  "cells.trainer", "cells.saved", "runs"])
def test_docstring_examples(name):
    import doctest
    import importlib

    module = importlib.import_module(f"kdentropy.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------------------- sigma "auto"

def test_auto_sigma_grows_with_the_square_root_of_the_cell_count():
    from kdentropy.cells.loss import auto_sigma
    assert auto_sigma(32) == 0.5 and auto_sigma(128) == 1.0
    assert auto_sigma(144) == pytest.approx(1.0607, abs=1e-4)
    with pytest.raises(ValueError, match="n_cells"):
        auto_sigma(0)


def test_an_auto_loss_is_resolved_by_the_trainer_for_its_system(rng):
    from kdentropy.cells.loss import auto_sigma
    loss = ReproducibilityLoss(sigma="auto", backend="numpy", anti_collapse=3.0)
    assert loss.sigma == "auto" and loss.get_config()["sigma"] == "auto"
    system = CellSystem((3, 4), 2, topology="grid", hidden=(4,), hidden_channels=2)
    trainer = Trainer(system, loss=loss, batch=8, eval_batch=8)
    # The number is stored (a checkpoint keeps it even if the rule changes);
    # hidden channels are not scored, so they do not count.
    assert trainer.loss.sigma == auto_sigma(12) and trainer.loss.anti_collapse == 3.0
    assert trainer.get_config()["loss"]["sigma"] == auto_sigma(12)
    assert Trainer(system, batch=8, eval_batch=8).loss.sigma == auto_sigma(12)  # the default
    fixed = ReproducibilityLoss(sigma=0.3)
    assert Trainer(system, loss=fixed, batch=8, eval_batch=8).loss is fixed
    # Called directly, an auto loss uses the width for the patterns' D.
    X = rng.random((10, 12))
    value, grad, _ = loss(X)
    ref, ref_grad, _ = ReproducibilityLoss(sigma=auto_sigma(12), backend="numpy",
                                           anti_collapse=3.0)(X)
    assert value == ref and np.array_equal(grad, ref_grad)
    assert loss.soft_entropy(X) == ReproducibilityLoss(sigma=auto_sigma(12)).soft_entropy(X)
    with pytest.raises(ValueError, match="temperature"):   # checked when resolved
        Trainer(system, loss=ReproducibilityLoss(-1.0, "auto"))


def test_the_default_training_of_32_cells_is_unchanged_by_auto():
    # auto_sigma(32) is exactly the old default 0.5: the default run is bit-identical.
    kwargs = dict(iterations=3, batch=16, eval_batch=16, backend="numpy")
    a = train(CellSystem(32, 3, hidden=(4,)), **kwargs)
    b = train(CellSystem(32, 3, hidden=(4,)), **kwargs,
              loss=ReproducibilityLoss(sigma=0.5, backend="numpy"))
    assert np.array_equal(a.params, b.params)


def test_a_flat_soft_entropy_warns_once_at_iteration_ten():
    from kdentropy.cells.diagnostics import FLAT_CHECK_AT, FlatEntropyWarning
    system = CellSystem(64, 2, hidden=(4,))
    flat = Trainer(system, loss=ReproducibilityLoss(sigma=0.05, backend="numpy"), batch=16,
                   eval_batch=16)
    with pytest.warns(FlatEntropyWarning, match="sigma 0.05 is too narrow for 64 cells") as w:
        flat.run(FLAT_CHECK_AT + 2)
    assert len(w) == 1 and "sigma 'auto' (0.707 for 64 cells" in str(w[0].message)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlatEntropyWarning)
        Trainer(system, loss=ReproducibilityLoss(sigma="auto", backend="numpy"), batch=16,
                eval_batch=16).run(FLAT_CHECK_AT)
    assert FLAT_CHECK_AT == 10


def test_flat_entropy_message_thresholds():
    from kdentropy.cells.diagnostics import flat_entropy_message
    top = np.log(64)
    history = History()
    for it in range(1, 11):
        history.record(it, soft_entropy=0.96 * top)
    message = flat_entropy_message(history, 64, 2.0, 144)
    assert message is not None and "try a sigma larger than 2" in message  # already >= auto
    history.record(11, soft_entropy=0.1)
    assert flat_entropy_message(history, 64, 2.0, 144) is not None   # only 1-10 are read
    low = History()
    for it in range(1, 11):
        low.record(it, soft_entropy=(0.94 if it == 5 else 0.99) * top)
    assert flat_entropy_message(low, 64, 0.5, 144) is None           # it moved once
    short = History()
    for it in range(1, 6):
        short.record(it, soft_entropy=top)
    assert flat_entropy_message(short, 64, 0.5, 144) is None         # too early to tell


def test_a_resumed_fit_reports_its_own_iterations(tmp_path):
    system = CellSystem(8, 2, hidden=(4,))
    trainer = Trainer(system, loss=ReproducibilityLoss(backend="numpy"), batch=8, eval_batch=8)
    first = trainer.fit(3, checkpoint=tmp_path / "c.npz")
    assert first.iterations_run == 3
    resumed = Trainer.load(tmp_path / "c.npz").fit(2)
    assert resumed.iterations_run == 2 and resumed.trainer.iteration == 5
