"""Optimizers: convergence, exact update rules, schedules, clipping, checkpoint/resume identity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kdentropy.optim import (
    SGD, Adam, AdamW, Constant, Cosine, Exponential, from_config,
)


# ----------------------------------------------------------------------------- problems

def _bad_quadratic(rng, n=10, cond=1e3):
    """f = x'Ax/2 - b'x with eigenvalues log-spaced over [1, cond] in a random basis."""
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = Q @ np.diag(np.logspace(0, np.log10(cond), n)) @ Q.T
    b = rng.standard_normal(n)
    return A, b, np.linalg.solve(A, b)


def _run_quadratic(opt, A, b, steps):
    x = np.zeros(b.size)
    for _ in range(steps):
        opt.step(x, A @ x - b)
    return x


def _rosenbrock_grad(x):
    return np.array([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2),
                     200 * (x[1] - x[0] ** 2)])


def _run_rosenbrock(opt, steps):
    x = np.array([-1.5, 2.0])
    for _ in range(steps):
        opt.step(x, _rosenbrock_grad(x))
    return x


QUADRATIC_OPTIMIZERS = {
    "sgd-momentum": lambda: SGD(1e-3, momentum=0.9),
    "sgd-nesterov": lambda: SGD(1e-3, momentum=0.9, nesterov=True),
    "adam-cosine": lambda: Adam(Cosine(0.1, 3000)),
    "adam-exponential": lambda: Adam(Exponential(0.1, 0.5, decay_steps=300)),
    "adamw-no-decay": lambda: AdamW(Cosine(0.1, 3000), weight_decay=0.0),
}


@pytest.mark.parametrize("name", QUADRATIC_OPTIMIZERS)
def test_converges_on_badly_conditioned_quadratic(rng, name):
    A, b, x_star = _bad_quadratic(rng)
    x = _run_quadratic(QUADRATIC_OPTIMIZERS[name](), A, b, 3000)
    assert np.linalg.norm(x - x_star) / np.linalg.norm(x_star) < 1e-6


def test_momentum_beats_plain_gradient_descent_on_bad_conditioning(rng):
    A, b, x_star = _bad_quadratic(rng)
    plain = _run_quadratic(SGD(1e-3), A, b, 1000)
    heavy = _run_quadratic(SGD(1e-3, momentum=0.9), A, b, 1000)
    assert np.linalg.norm(heavy - x_star) < 1e-3 * np.linalg.norm(plain - x_star)


ROSENBROCK_OPTIMIZERS = {
    "adam": lambda: Adam(1e-2),
    "adamw-cosine": lambda: AdamW(Cosine(2e-2, 5000), weight_decay=0.0),
    "sgd-momentum-clipped": lambda: SGD(1e-3, momentum=0.9, clip_norm=10.0),
    "sgd-nesterov-clipped": lambda: SGD(1e-3, momentum=0.9, nesterov=True, clip_norm=10.0),
}


@pytest.mark.parametrize("name", ROSENBROCK_OPTIMIZERS)
def test_converges_on_rosenbrock(name):
    x = _run_rosenbrock(ROSENBROCK_OPTIMIZERS[name](), 5000)
    assert np.linalg.norm(x - 1.0) < 1e-3


# ----------------------------------------------------------------------------- exact update rules

def test_sgd_matches_reference_formulas(rng):
    grads = rng.standard_normal((5, 4))
    grads_copy = grads.copy()
    for nesterov in (False, True):
        params = rng.standard_normal(4)
        ref, v = params.copy(), np.zeros(4)
        opt = SGD(0.1, momentum=0.8, nesterov=nesterov, weight_decay=0.01)
        for g in grads:
            opt.step(params, g)
            g = g + 0.01 * ref
            v = 0.8 * v + g
            ref = ref - 0.1 * ((g + 0.8 * v) if nesterov else v)
        np.testing.assert_allclose(params, ref, rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(grads, grads_copy)     # gradients are never modified


def test_adam_matches_reference_and_first_step_is_lr(rng):
    grads = rng.standard_normal((6, 5))
    grads_copy = grads.copy()
    params = rng.standard_normal(5)
    start = params.copy()
    opt = Adam(0.05, betas=(0.8, 0.99), eps=1e-8)
    opt.step(params, grads[0])
    # Bias correction makes the first step lr * g / (|g| + eps): lr * sign(g) up to eps.
    g0 = grads[0]
    np.testing.assert_allclose(start - params, 0.05 * g0 / (np.abs(g0) + 1e-8), rtol=1e-14)
    ref = params.copy()
    m = 0.2 * grads[0]
    v = 0.01 * grads[0] ** 2
    for t, g in enumerate(grads[1:], start=2):
        opt.step(params, g)
        m = 0.8 * m + 0.2 * g
        v = 0.99 * v + 0.01 * g * g
        ref = ref - 0.05 * (m / (1 - 0.8 ** t)) / (np.sqrt(v / (1 - 0.99 ** t)) + 1e-8)
    np.testing.assert_allclose(params, ref, rtol=1e-13)
    np.testing.assert_array_equal(grads, grads_copy)


def test_adamw_decay_is_decoupled_adam_decay_is_not(rng):
    params = rng.standard_normal(6)
    zero = np.zeros(6)
    w = params.copy()
    AdamW(0.1, weight_decay=0.5).step(w, zero)
    # Decoupled: zero gradient, so the only change is the shrink factor.
    np.testing.assert_allclose(w, params * (1 - 0.1 * 0.5), rtol=1e-15)
    c = params.copy()
    Adam(0.1, weight_decay=0.5).step(c, zero)
    # Coupled: the decay goes through Adam's normalisation -> a step of lr * sign(params).
    np.testing.assert_allclose(c, params - 0.1 * np.sign(params), rtol=1e-6)


def test_global_norm_clipping():
    params = np.zeros(2)
    grad = np.array([3.0, 4.0])
    opt = SGD(1.0, clip_norm=1.0)
    opt.step(params, grad)
    np.testing.assert_allclose(params, [-0.6, -0.8])     # rescaled to norm 1
    assert opt.last_grad_norm == 5.0                    # the norm before clipping
    np.testing.assert_array_equal(grad, [3.0, 4.0])      # the caller's gradient is untouched
    opt.step(params, np.array([0.3, 0.4]))               # below the limit: unchanged
    np.testing.assert_allclose(params, [-0.9, -1.2])
    assert opt.last_grad_norm == pytest.approx(0.5)


def test_schedules():
    c = Cosine(1.0, total_steps=10, min_lr=0.1)
    assert c(0) == 1.0 and c(10) == pytest.approx(0.1) and c(50) == pytest.approx(0.1)
    assert c(5) == pytest.approx(0.55)
    assert all(c(i) >= c(i + 1) for i in range(12))
    w = Cosine(1.0, total_steps=10, warmup=4)
    assert [w(i) for i in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert w(4) == 1.0
    e = Exponential(2.0, gamma=0.5, decay_steps=10)
    assert e(0) == 2.0 and e(10) == pytest.approx(1.0) and e(5) == pytest.approx(2 / math.sqrt(2))
    assert Constant(0.3)(1000) == 0.3
    opt = SGD(Cosine(1.0, 4))
    seen = []
    params = np.zeros(1)
    for _ in range(5):
        seen.append(opt.lr)
        opt.step(params, np.ones(1))
    assert seen == pytest.approx([Cosine(1.0, 4)(i) for i in range(5)])
    np.testing.assert_allclose(params, [-sum(seen)])


# ----------------------------------------------------------------------------- state and resume

@pytest.mark.parametrize("make", [
    lambda: SGD(Cosine(0.01, 40), momentum=0.9, nesterov=True, clip_norm=5.0),
    lambda: Adam(Exponential(0.02, 0.9, 5), weight_decay=1e-3),
    lambda: AdamW(0.01, weight_decay=0.1, clip_norm=1.0),
], ids=["sgd", "adam", "adamw"])
def test_checkpoint_resume_gives_identical_trajectory(tmp_path, rng, make):
    A, b, _ = _bad_quadratic(rng, n=6, cond=100)
    params0 = rng.standard_normal(6)

    straight = params0.copy()
    opt = make()
    for _ in range(30):
        opt.step(straight, A @ straight - b)

    resumed = params0.copy()
    opt1 = make()
    for _ in range(13):
        opt1.step(resumed, A @ resumed - b)
    path = tmp_path / "opt.npz"
    np.savez(path, params=resumed, **opt1.state_dict())
    with np.load(path) as data:
        resumed = data["params"].copy()
        opt2 = from_config(opt1.get_config())
        opt2.load_state_dict({k: data[k] for k in data.files if k != "params"})
    assert opt2.step_count == 13
    for _ in range(17):
        opt2.step(resumed, A @ resumed - b)
    np.testing.assert_array_equal(resumed, straight)     # bit for bit
    for k, v in opt.state_dict().items():
        np.testing.assert_array_equal(opt2.state_dict()[k], v)


def test_state_dict_is_a_copy_and_load_checks_type(rng):
    params = rng.standard_normal(3)
    opt = Adam(0.1)
    opt.step(params, np.ones(3))
    state = opt.state_dict()
    state["m"][:] = 99.0
    assert not np.any(opt.state_dict()["m"] == 99.0)
    with pytest.raises(ValueError, match="Adam optimizer, not SGD"):
        SGD(0.1).load_state_dict(state)
    with pytest.raises(ValueError, match="missing"):
        Adam(0.1).load_state_dict({"type": "Adam"})
    bad = dict(state, v=np.zeros(4))
    with pytest.raises(ValueError, match="shapes"):
        Adam(0.1).load_state_dict(bad)
    with pytest.raises(ValueError, match="step_count"):
        Adam(0.1).load_state_dict(dict(state, step_count=np.array(-1)))
    with pytest.raises(ValueError, match="step_count"):
        Adam(0.1).load_state_dict(dict(state, step_count=np.array(1.5)))
    with pytest.raises(TypeError, match="mapping"):
        Adam(0.1).load_state_dict([("type", "Adam")])
    fresh = Adam(0.1)
    fresh.load_state_dict(state)
    with pytest.raises(ValueError, match="shape"):
        fresh.step(np.zeros(5), np.ones(5))


def test_from_config_round_trip():
    for opt in (SGD(Cosine(0.1, 10, min_lr=0.01, warmup=2), momentum=0.5, nesterov=True),
                Adam(Exponential(0.1, 0.9), betas=(0.5, 0.9), eps=1e-6, clip_norm=2.0),
                AdamW(0.3, weight_decay=0.2)):
        clone = from_config(opt.get_config())
        assert type(clone) is type(opt) and clone.get_config() == opt.get_config()
    with pytest.raises(ValueError, match="unknown optimizer"):
        from_config({"name": "LBFGS", "lr": {"name": "Constant", "lr": 1.0}})
    with pytest.raises(ValueError, match="lr"):
        from_config({"name": "Adam"})
    with pytest.raises(ValueError, match="unknown schedule"):
        from_config({"name": "Adam", "lr": {"name": "Step", "lr": 1.0}})
    assert from_config(SGD(0.5).get_config()).get_config() == \
        from_config(json.dumps(SGD(0.5).get_config())).get_config()


# ----------------------------------------------------------------------------- validation

# Each message starts with the argument's own name (anchored: "XXlrXX must ..." is wrong).
@pytest.mark.parametrize("make, exc, match", [
    (lambda: SGD(-1.0), ValueError, r"^lr must be in \(0, 10\]; got -1$"),
    (lambda: SGD(0.0), ValueError, r"^lr must be in \(0, 10\]"),       # the rate is > 0
    (lambda: SGD(10.5), ValueError, r"^lr must be in \(0, 10\]"),
    (lambda: SGD(float("nan")), ValueError, "^lr must be finite"),
    (lambda: Cosine(0.0, 10), ValueError, r"^lr must be in \(0, 10\]"),
    (lambda: Exponential(0.0, 0.5), ValueError, r"^lr must be in \(0, 10\]"),
    (lambda: SGD(0.1, momentum=1.0), ValueError, r"^momentum must be in \[0, 1\)"),
    (lambda: SGD(0.1, nesterov=True), ValueError, r"^nesterov=True needs momentum > 0$"),
    (lambda: Adam(0.1, betas=(0.9,)), TypeError, r"^betas must be a pair of floats"),
    (lambda: Adam(0.1, betas=(1.0, 0.9)), ValueError, r"^betas\[0\] must be in \[0, 1\)"),
    (lambda: Adam(0.1, betas=(0.9, 1.5)), ValueError, r"^betas\[1\] must be in \[0, 1\)"),
    (lambda: Adam(0.1, eps=0.0), ValueError, "^eps must be > 0"),
    (lambda: AdamW(0.1, weight_decay=-1.0), ValueError, "^weight_decay must be >= 0"),
    (lambda: SGD(0.1, weight_decay=-1.0), ValueError, "^weight_decay must be >= 0"),
    (lambda: Adam(0.1, clip_norm=0.0), ValueError, "^clip_norm must be > 0"),
    (lambda: Cosine(0.1, 0), ValueError, "^total_steps must be >= 1"),
    (lambda: Cosine(0.1, 10, min_lr=1.0), ValueError, "^min_lr must be <= lr"),
    (lambda: Cosine(0.1, 10, min_lr=-0.5), ValueError, "^min_lr must be >= 0"),
    (lambda: Cosine(0.1, 10, warmup=10), ValueError, "^warmup must be < total_steps"),
    (lambda: Cosine(0.1, 10, warmup=-1), ValueError, "^warmup must be >= 0"),
    (lambda: Cosine(0.1, 10, warmup=1.5), TypeError, "^warmup must be an integer"),
    (lambda: Exponential(0.1, gamma=0.5, decay_steps=0), ValueError, "^decay_steps must be >= 1"),
    (lambda: SGD("0.1"), TypeError, "^lr must be a real number"),
    (lambda: SGD(0.1, nesterov=1), TypeError, "^nesterov must be True or False"),
    (lambda: Exponential(0.1, gamma=2.0), ValueError, r"^gamma must be in \(0, 1\]"),
    (lambda: Exponential(0.1, gamma=0.0), ValueError, r"^gamma must be in \(0, 1\]"),
])
def test_bad_hyperparameters(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_bad_step_arguments():
    opt = SGD(0.1)
    with pytest.raises(TypeError, match="^params must be a 1-D float64"):
        opt.step([1.0, 2.0], [1.0, 1.0])
    with pytest.raises(TypeError, match="float64"):
        opt.step(np.zeros(2, dtype=np.float32), np.ones(2))
    ro = np.zeros(2)
    ro.flags.writeable = False
    with pytest.raises(TypeError, match="^params must be writable"):
        opt.step(ro, np.ones(2))
    with pytest.raises(ValueError, match="shape"):
        opt.step(np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match="^grad must be finite; got NaN or infinity$"):
        opt.step(np.zeros(2), [np.nan, 1.0])
    with pytest.raises(TypeError, match="^grad must be a real array"):
        opt.step(np.zeros(2), np.ones(2) + 1j)
    assert opt.step_count == 0


def test_docstring_examples():
    import doctest

    import kdentropy.optim as module
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0



def test_boundary_values_are_accepted():
    assert SGD(10.0).lr == 10.0                                   # LR_MAX itself
    assert Exponential(0.5, gamma=1.0)(7) == 0.5                  # gamma = 1: no decay
    flat = Cosine(0.3, 10, min_lr=0.3)                             # min_lr = lr: a constant
    assert [flat(i) for i in range(12)] == [0.3] * 12
    assert SGD(0.1, clip_norm=1e-300).clip_norm == 1e-300


def test_cosine_decay_phase_starts_after_warmup():
    w = Cosine(1.0, total_steps=10, warmup=4, min_lr=0.2)
    # p = (step - 4) / (10 - 4): half way at step 7, done at step 10.
    assert w(4) == 1.0
    assert w(7) == pytest.approx(0.2 + 0.8 * 0.5, rel=1e-15)
    assert w(5) == pytest.approx(0.2 + 0.4 * (1 + math.cos(math.pi / 6)), rel=1e-15)
    assert w(10) == pytest.approx(0.2, rel=1e-15) and w(99) == pytest.approx(0.2, rel=1e-15)


def test_exponential_decays_by_gamma_per_step_by_default():
    e = Exponential(1.0, gamma=0.5)
    assert [e(i) for i in range(4)] == [1.0, 0.5, 0.25, 0.125]
    assert e.decay_steps == 1


def test_defaults():
    assert SGD().lr == 1e-2 and SGD().momentum == 0.0 and SGD().weight_decay == 0.0
    adam = Adam()
    assert adam.lr == 1e-3 and adam.betas == (0.9, 0.999) and adam.eps == 1e-8
    assert adam.weight_decay == 0.0 and adam.clip_norm is None
    adamw = AdamW()
    assert adamw.lr == 1e-3 and adamw.weight_decay == 1e-2 and adamw.betas == (0.9, 0.999)
    assert adamw.eps == 1e-8
    # Every AdamW argument reaches Adam.
    custom = AdamW(0.2, betas=(0.5, 0.6), eps=1e-4, weight_decay=0.3, clip_norm=2.5)
    assert (custom.lr, custom.betas, custom.eps, custom.weight_decay, custom.clip_norm) == \
        (0.2, (0.5, 0.6), 1e-4, 0.3, 2.5)


def test_repr_shows_every_hyperparameter():
    assert repr(SGD(0.1, momentum=0.5)) == ("SGD(lr=Constant(lr=0.1), clip_norm=None, "
                                            "weight_decay=0.0, momentum=0.5, nesterov=False)")
    assert repr(Adam(Cosine(0.1, 10), clip_norm=2.0)) == (
        "Adam(lr=Cosine(lr=0.1, total_steps=10, min_lr=0.0, warmup=0), clip_norm=2.0, "
        "weight_decay=0.0, betas=[0.9, 0.999], eps=1e-08)")
    assert repr(Exponential(0.5, 0.9, 3)) == "Exponential(lr=0.5, gamma=0.9, decay_steps=3)"


def test_get_config_holds_betas_and_eps():
    cfg = Adam(0.1, betas=(0.5, 0.9), eps=1e-6).get_config()
    assert cfg["betas"] == [0.5, 0.9] and cfg["eps"] == 1e-6
    clone = from_config(json.dumps(cfg))
    assert clone.betas == (0.5, 0.9) and clone.eps == 1e-6


def test_from_config_errors_name_what_is_wrong():
    with pytest.raises(TypeError, match="^config must be a dict; got list$"):
        from_config([("name", "SGD")])
    with pytest.raises(ValueError, match="^unknown optimizer None"):
        from_config({"lr": {"name": "Constant", "lr": 1.0}})
    with pytest.raises(ValueError, match="^unknown schedule None"):
        from_config({"name": "SGD", "lr": {"lr": 1.0}})


def test_coupled_weight_decay_is_the_gradient_plus_an_l2_term(rng):
    # Adam(weight_decay=wd) on g is exactly Adam on g + wd * params.
    grads = rng.standard_normal((5, 4))
    a = rng.standard_normal(4)
    b = a.copy()
    decayed, plain = Adam(0.05, weight_decay=0.3), Adam(0.05)
    for g in grads:
        gb = g + 0.3 * b
        decayed.step(a, g)
        plain.step(b, gb)
    np.testing.assert_array_equal(a, b)


def test_last_grad_norm_and_state_round_trip(rng):
    opt = Adam(0.1)
    assert math.isnan(opt.last_grad_norm)
    fresh_state = opt.state_dict()
    assert set(fresh_state) == {"type", "step_count", "last_grad_norm"}
    assert math.isnan(fresh_state["last_grad_norm"])
    # A state saved before the first step loads (step_count 0, no buffers).
    other = Adam(0.1)
    other.load_state_dict(fresh_state)
    assert other.step_count == 0 and math.isnan(other.last_grad_norm)
    params = rng.standard_normal(3)
    grad = rng.standard_normal(3)
    opt.step(params, grad)
    state = opt.state_dict()
    assert set(state) == {"type", "step_count", "last_grad_norm", "m", "v"}
    assert state["last_grad_norm"] == np.linalg.norm(grad) == opt.last_grad_norm
    assert state["last_grad_norm"].dtype == np.float64 and state["step_count"].dtype == np.int64
    other.load_state_dict(state)
    assert other.last_grad_norm == opt.last_grad_norm and other.step_count == 1
    # Without the (optional) norm it is NaN again.
    del state["last_grad_norm"]
    other.load_state_dict(state)
    assert math.isnan(other.last_grad_norm)


def test_load_state_dict_checks_buffers():
    base = {"type": "Adam", "step_count": np.array(1)}
    with pytest.raises(TypeError, match="^state must be a mapping; got list$"):
        Adam(0.1).load_state_dict([])
    with pytest.raises(ValueError, match="^state is missing buffer 'm'$"):
        Adam(0.1).load_state_dict(base)
    with pytest.raises(ValueError, match=r"^state 'v' must be 1-D; got shape \(1, 2\)$"):
        Adam(0.1).load_state_dict(dict(base, m=np.zeros(2), v=np.zeros((1, 2))))
    # Integer buffers (e.g. from a hand-written file) are read as float64 copies.
    m = np.array([1, 2])
    opt = Adam(0.1)
    opt.load_state_dict(dict(base, m=m, v=np.array([1, 1])))
    state = opt.state_dict()
    assert state["m"].dtype == np.float64 and state["v"].dtype == np.float64
    params = np.zeros(2)
    opt.step(params, np.ones(2))
    np.testing.assert_array_equal(m, [1, 2])
    assert opt.step_count == 2 and np.all(np.isfinite(params))
