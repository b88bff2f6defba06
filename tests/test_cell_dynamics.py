"""Cell dynamics: topologies, hidden channels and the rate, BPTT on every topology, Numba."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import central_differences, norm_rel

from kdentropy.cells import CellSystem, ReproducibilityLoss, Trainer, _kernels, pattern_stats
from kdentropy.cells.topology import TOPOLOGIES, Grid, Line, Ring, Topology, Torus
from kdentropy.optim import Adam

# As in test_cells: analytic against central differences of smooth float64 losses.
FD_RTOL = 1e-6
# A deliberately broken backward pass must miss the finite differences by far more.
BROKEN_MIN = 1e-2
# Numba against NumPy engine: the same arithmetic in another order.
ENGINE_RTOL = 1e-12

SHAPES = {"line": 6, "ring": 5, "grid": (3, 4), "torus": (3, 3)}


def _system(topology: str, **kw) -> CellSystem:
    base = dict(steps=3, hidden=(5,), hidden_channels=2, rate=0.6, noise=0.2,
                output_init_scale=1.0)
    base.update(kw)
    return CellSystem(SHAPES[topology], topology=topology, **base)


def _case(system: CellSystem, rng: np.random.Generator, n_runs: int = 4):
    # Perturbed parameters: non-zero biases, so no unit sits at a symmetric point.
    params = system.init(rng) + 0.1 * rng.standard_normal(system.n_params)
    x0, xi = system.sample_inputs(rng, n_runs)
    return params, x0, xi


# ----------------------------------------------------------------------------- topologies

def test_grid_neighbourhood_is_the_zero_padded_3x3_block():
    grid = Grid((3, 4), position="none", channels=2)
    assert grid.n_cells == 12 and grid.n_neighbours == 9 and grid.n_features == 18
    x = np.arange(24, dtype=float).reshape(1, 12, 2) + 1.0
    f = grid.features(x).reshape(12, 9, 2)
    img = x[0].reshape(3, 4, 2)
    padded = np.zeros((5, 6, 2))
    padded[1:4, 1:5] = img
    for r in range(3):
        for c in range(4):
            block = padded[r:r + 3, c:c + 3].reshape(9, 2)   # row offset outer, column inner
            np.testing.assert_array_equal(f[r * 4 + c], block)


def test_torus_wraps_both_axes_and_has_periodic_positions():
    torus = Torus((3, 4))
    assert torus.position == "sincos" and torus.n_features == 9 + 4
    # Cell (0, 0): its up-left neighbour is (2, 3), its down-right (1, 1).
    assert torus.neighbours[0].tolist() == [11, 8, 9, 3, 0, 1, 7, 4, 5]
    B = np.zeros((1, 12), dtype=bool)
    B[0, 0] = True
    assert torus.boundaries(B).tolist() == [4]          # one on cell has 4 neighbours
    assert Grid((3, 4)).boundaries(B).tolist() == [2]   # in a corner it has 2
    p = Grid((3, 4)).position_features("linear")
    np.testing.assert_allclose(p[5], [0.5, 0.5, 1 / 3, 2 / 3])   # row 1 of 3, column 1 of 4


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
@pytest.mark.parametrize("channels", [1, 3])
def test_features_adjoint_is_the_transpose(rng, name, channels):
    layout = TOPOLOGIES[name](SHAPES[name], radius=1, position="auto", channels=channels)
    x = rng.random((3, layout.n_cells, channels))
    df = rng.standard_normal((3, layout.n_cells, layout.n_features))
    lhs = np.sum(layout.features(x)[:, :, :layout.n_neighbours * channels]
                 * df[:, :, :layout.n_neighbours * channels])
    assert lhs == pytest.approx(np.sum(x * layout.features_adjoint(df)), rel=1e-13)


def test_a_neighbour_table_naming_a_cell_twice_is_refused():
    class Bad(Line):
        def neighbour_table(self):
            return np.zeros((self.n_cells, 1), dtype=np.int64)

    with pytest.raises(ValueError, match="names a cell twice"):
        Bad(4)


def test_topology_validation_and_pattern_stats_on_grids():
    with pytest.raises(ValueError, match="'grid' needs 2 size"):
        Grid(12)
    with pytest.raises(ValueError, match=r"shape\[1\]"):
        Grid((3, 0))
    assert repr(Torus((2, 3), channels=4)) == \
        "Torus((2, 3), radius=1, position='sincos', channels=4)"
    X = np.array([[1, 1, 0, 0, 1, 1]], float)       # two rows of 3: 1 1 0 / 0 1 1
    assert pattern_stats(X, topology="grid", shape=(2, 3))["boundaries"] == 4.0   # 2 + 2
    with pytest.raises(ValueError, match="shape"):
        pattern_stats(X, topology="grid")
    assert issubclass(Ring, Topology) and issubclass(Torus, Grid)


# ----------------------------------------------------------------------------- the update rule

def test_rate_one_without_hidden_channels_is_the_replacement_update(rng):
    # x_{t+1} = clip(sigmoid(MLP(features)) + noise xi), bit for bit.
    system = CellSystem(n_cells=7, steps=3, hidden=(4,), noise=0.2, output_init_scale=1.0,
                        engine="numpy")
    params, x0, xi = _case(system, rng)
    x = x0
    for t in range(system.steps):
        s, _ = system.net.forward(params, system.layout.features(x))
        x = np.clip(s + system.noise * xi[t], 0.0, 1.0)
    np.testing.assert_array_equal(system.rollout(params, x0, xi).final, x)


@pytest.mark.parametrize("engine", ["numpy", "numba"])
def test_the_default_run_gives_its_reference_numbers(engine):
    # Losses and parameters of five Adam steps of CellSystem(), computed by
    # the NumPy update rule without hidden channels (kdentropy 0.1.0).
    trainer = Trainer(CellSystem(engine=engine), optimizer=Adam(0.03),
                      loss=ReproducibilityLoss(backend="numpy"), seed=0, batch=64, eval_batch=32)
    trainer.run(5)
    reference = [1.619619118150925, 1.770964372432137, 1.6703702505501534, 1.6772903043892715,
           1.6109179657525092]
    np.testing.assert_allclose(trainer.history["loss"][1:], reference, rtol=1e-12)
    assert float(trainer.params.sum()) == pytest.approx(0.7498833097933391, rel=1e-11)
    assert float(np.abs(trainer.params).sum()) == pytest.approx(21.53794479302846, rel=1e-12)


def test_hidden_channels_and_rate_follow_the_documented_rule(rng):
    system = _system("grid", noise=0.3)
    params, x0, xi = _case(system, rng)
    out = system.rollout(params, x0, xi, keep_trajectory=True, engine="numpy")
    x = x0
    for t in range(system.steps):
        s, _ = system.net.forward(params, system.layout.features(x))
        x = np.clip(x + 0.6 * (s - x) + 0.3 * xi[t], 0.0, 1.0)
        np.testing.assert_allclose(out.trajectory[t + 1], x, rtol=0, atol=1e-15)
    assert out.final.shape == (4, 12, 3) and out.visible.shape == (4, 12)
    # Every channel is updated, and the visible one is what run() returns.
    assert not np.allclose(out.final[..., 1:], x0[..., 1:])
    X = system.run(params, np.random.default_rng(5), 4)
    assert X.shape == (4, 12)
    assert system.run(params, np.random.default_rng(5), 4, all_channels=True).shape == (4, 12, 3)


def test_config_round_trips_for_every_topology():
    for name in TOPOLOGIES:
        system = _system(name, position="none", rate=0.5)
        again = CellSystem(**system.get_config())
        assert again.get_config() == system.get_config()
        assert again.n_params == system.n_params and again.shape == system.shape
        assert name in system.describe()


# ----------------------------------------------------------------------------- gradients

CASES = [(name, pos, eng) for name in sorted(TOPOLOGIES) for pos in ("auto", "none")
         for eng in ("numpy", "numba")]


def _fd_error(system, params, x0, xi, engine, loss):
    _, grad, _ = system.loss_and_grad(params, x0, xi, loss, engine=engine)
    fd = central_differences(
        lambda t: system.loss_and_grad(t, x0, xi, loss, engine=engine)[0], params)
    assert np.linalg.norm(fd) > 1e-3   # the check has something to compare
    return norm_rel(grad, fd)


@pytest.mark.parametrize("name, position, engine", CASES)
def test_rollout_and_bptt_match_finite_differences(rng, name, position, engine):
    """params -> roll-out (hidden channels, rate, clipping) -> loss against FD, every topology."""
    system = _system(name, position=position)
    params, x0, xi = _case(system, rng)
    # No anti-collapse term: it dominates the gradient norm and would hide entropy errors.
    loss = ReproducibilityLoss(anti_collapse=0.0, backend="numpy")
    assert _fd_error(system, params, x0, xi, engine, loss) < FD_RTOL


def _break_numpy(monkeypatch):
    # Flip the sign of the gradient carried from a step to its neighbours.
    original = Topology.features_adjoint
    monkeypatch.setattr(Topology, "features_adjoint", lambda self, df: -original(self, df))


def _break_numba(monkeypatch):
    # The same fault in the compiled backward pass: it alone reads W1 for the
    # gradient passed to the neighbours, so a negated W1 flips exactly that sign.
    original = _kernels._backward_kernel

    def broken(g, traj, hid, out, table, pos, W1, W2, *rest):
        return original(g, traj, hid, out, table, pos, -W1, W2, *rest)

    monkeypatch.setattr(_kernels, "_backward_kernel", broken)


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
@pytest.mark.parametrize("engine", ["numpy", "numba"])
def test_the_gradient_check_fails_when_the_backward_is_broken(rng, monkeypatch, name, engine):
    system = _system(name, position="none")
    params, x0, xi = _case(system, rng)
    loss = ReproducibilityLoss(anti_collapse=0.0, backend="numpy")
    assert _fd_error(system, params, x0, xi, engine, loss) < FD_RTOL
    (_break_numpy if engine == "numpy" else _break_numba)(monkeypatch)
    assert _fd_error(system, params, x0, xi, engine, loss) > BROKEN_MIN


def test_the_rate_term_is_checked_too(rng, monkeypatch):
    # Dropping the (1 - rate) x_t path of the backward pass is caught as well.
    system = _system("grid", position="none", engine="numpy")
    params, x0, xi = _case(system, rng)
    loss = ReproducibilityLoss(anti_collapse=0.0, backend="numpy")
    assert _fd_error(system, params, x0, xi, "numpy", loss) < FD_RTOL
    backward = CellSystem._backward

    def without_rate_path(self, params, rollout, g):
        rate, self.rate = self.rate, 1.0
        try:
            return backward(self, params, rollout, g)
        finally:
            self.rate = rate

    monkeypatch.setattr(CellSystem, "_backward", without_rate_path)
    assert _fd_error(system, params, x0, xi, "numpy", loss) > BROKEN_MIN


# ----------------------------------------------------------------------------- numba engine

ENGINE_CASES = {
    "line-default": dict(n_cells=32),
    "ring-k2-relu": dict(n_cells=9, topology="ring", hidden_channels=2, activation="relu",
                         rate=0.7),
    "grid-k3-rate": dict(n_cells=(5, 6), topology="grid", hidden_channels=3, rate=0.5,
                         position="none", hidden=(12,)),
    "torus-sigmoid-noiseless": dict(n_cells=(4, 4), topology="torus", hidden_channels=1,
                                    activation="sigmoid", noise=0.0),
    "line-r2-identity": dict(n_cells=8, radius=2, activation="identity", noise=0.3),
}


@pytest.mark.parametrize("case", ENGINE_CASES)
def test_numba_step_equals_numpy_step(rng, case):
    system = CellSystem(steps=6, output_init_scale=1.0, **ENGINE_CASES[case])
    assert system.engine == "numba"
    params, x0, xi = _case(system, rng, n_runs=7)
    a = system.rollout(params, x0, xi, keep_trajectory=True, engine="numpy")
    b = system.rollout(params, x0, xi, keep_trajectory=True, engine="numba")
    np.testing.assert_allclose(b.trajectory, a.trajectory, rtol=ENGINE_RTOL, atol=1e-14)
    loss = ReproducibilityLoss(backend="numpy")
    va, ga, pa = system.loss_and_grad(params, x0, xi, loss, engine="numpy")
    vb, gb, pb = system.loss_and_grad(params, x0, xi, loss, engine="numba")
    assert vb == pytest.approx(va, rel=ENGINE_RTOL)
    assert norm_rel(gb, ga) < 1e-11
    g = rng.standard_normal(a.final.shape)   # every channel, not only the visible one
    assert norm_rel(system.backward(params, b, g), system.backward(params, a, g)) < 1e-11


def test_numba_training_step_equals_numpy_step():
    # One optimizer step each, from the same seed: same loss and parameters to rounding.
    def step(engine):
        system = CellSystem((4, 5), 4, topology="grid", hidden=(8,), hidden_channels=2,
                            rate=0.5, position="none", engine=engine)
        trainer = Trainer(system, optimizer=Adam(0.03, clip_norm=1.0),
                          loss=ReproducibilityLoss(backend="numpy"), batch=16, eval_batch=16)
        row = trainer.step()
        return row, trainer.params

    (ra, pa), (rb, pb) = step("numpy"), step("numba")
    assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-12)
    np.testing.assert_allclose(pb, pa, rtol=1e-10, atol=1e-14)


def test_numba_result_does_not_depend_on_the_thread_count(rng):
    numba = pytest.importorskip("numba")
    system = CellSystem((4, 4), 4, topology="torus", hidden=(6,), hidden_channels=2, rate=0.5)
    params, x0, xi = _case(system, rng, n_runs=9)
    loss = ReproducibilityLoss(backend="numpy")
    _, g_all, _ = system.loss_and_grad(params, x0, xi, loss)
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        _, g_one, _ = system.loss_and_grad(params, x0, xi, loss)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(g_one, g_all)
