"""One cell-training iteration in kdentropy (NumPy and Numba engines) against ``jax.jit``.

The same system, loss and optimizer step, written once more in JAX: roll-out
(``lax.scan`` over the steps, the neighbourhood gathered through kdentropy's
own neighbour table), soft entropy plus the anti-collapse term, the gradient
by ``jax.value_and_grad``, and Adam with global-norm clipping. Before timing,
the JAX loss of fixed inputs is checked against
:meth:`kdentropy.cells.CellSystem.loss_and_grad` (values and gradients agree
to rounding), so both sides compute the same thing.

Each time is the median over ``--repeat`` iterations after warm-up
(compilation excluded), as wall clock and as CPU time of all the process's
threads. Two systems: the 1-D default of ``kdentropy train`` (32 cells on a line, 16
steps, a 16-unit tanh MLP, position features, batch 64) and the 2-D job
(12 x 12 grid, 3 hidden channels, rate 0.5, no position, 20 steps, a 32-unit
MLP, batch 64, sigma 1).

Run:  python asv_benchmarks/jax_cells.py [--repeat 20]

JAX is not a kdentropy dependency: without it the script says so and exits
with status 0 (and times only kdentropy). Both use all the cores the process
may use; pin them with ``taskset`` to compare on fewer.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from kdentropy.cells import CellSystem, ReproducibilityLoss, Trainer
from kdentropy.optim import Adam

#: label -> (system arguments, sigma of the loss).
SYSTEMS = {
    "1-D default (32 cells, 16 steps)": (dict(n_cells=32, steps=16, hidden=(16,)), 0.5),
    "2-D 12x12, k=3, no position (20 steps)": (
        dict(n_cells=(12, 12), steps=20, topology="grid", hidden=(32,), hidden_channels=3,
             rate=0.5, position="none"), 1.0),
}
BATCH = 64
TEMPERATURE, ANTI_COLLAPSE = 10.0, 100.0


def _median_ms(step: Callable[[], object], repeat: int, warmup: int = 3
               ) -> tuple[float, float]:
    """Median wall-clock and median CPU time (all threads of the process) of one call, in ms.

    The CPU time is the work done, whatever else the machine is running; on a
    shared or loaded machine compare those, on an idle one the wall clock.
    """
    for _ in range(warmup):
        step()
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)


def kdentropy_step_ms(kwargs: dict, sigma: float, engine: str, repeat: int
                      ) -> tuple[float, float]:
    """Median time of one :meth:`Trainer.step` (sampling, roll-out, loss, BPTT, Adam)."""
    system = CellSystem(engine=engine, **kwargs)
    trainer = Trainer(system, optimizer=Adam(0.03, clip_norm=1.0),
                      loss=ReproducibilityLoss(sigma=sigma), batch=BATCH, eval_batch=2)
    return _median_ms(trainer.step, repeat)


def jax_step(kwargs: dict, sigma: float):  # noqa: ANN201 - returns JAX callables
    """The same iteration in JAX: ``(step, state, check)``; ``check()`` compares with kdentropy."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    system = CellSystem(engine="numpy", **kwargs)
    layout = system.layout
    D, C, T = system.n_cells, system.n_channels, system.steps
    table = jnp.asarray(np.where(layout.neighbours < 0, D, layout.neighbours))
    pos = jnp.asarray(layout.positions)
    sizes = system.net.sizes
    rate, noise = system.rate, system.noise

    def unpack(p):
        (F, H), C_out = (sizes[0], sizes[1]), sizes[2]
        i = 0
        W1 = p[i:i + F * H].reshape(F, H)
        i += F * H
        b1 = p[i:i + H]
        i += H
        W2 = p[i:i + H * C_out].reshape(H, C_out)
        i += H * C_out
        return W1, b1, W2, p[i:i + C_out]

    def rollout(p, x0, xi):
        W1, b1, W2, b2 = unpack(p)
        N = x0.shape[0]

        def one(x, xi_t):
            xp = jnp.concatenate([x, jnp.zeros((N, 1, C))], axis=1)
            f = xp[:, table, :].reshape(N, D, -1)
            if pos.shape[1]:
                f = jnp.concatenate([f, jnp.broadcast_to(pos, (N,) + pos.shape)], axis=-1)
            s = jax.nn.sigmoid(jnp.tanh(f @ W1 + b1) @ W2 + b2)
            pre = s if rate == 1.0 else x + rate * (s - x)
            return jnp.clip(pre + noise * xi_t, 0.0, 1.0), None

        x, _ = jax.lax.scan(one, x0, xi)
        return x[:, :, 0]

    def loss(p, x0, xi):
        X = rollout(p, x0, xi)
        S = jax.nn.sigmoid(TEMPERATURE * (X - 0.5))
        d2 = jnp.sum((S[:, None, :] - S[None, :, :]) ** 2, axis=-1)
        K = jnp.exp(-d2 / (2.0 * sigma ** 2))
        N = X.shape[0]
        H = jnp.log(N) - jnp.mean(jnp.log(jnp.sum(K, axis=1)))
        m = jnp.mean(X, axis=1)
        return H + ANTI_COLLAPSE * jnp.mean((m - 0.5) ** 2)

    grad_fn = jax.value_and_grad(loss)

    @jax.jit
    def step(p, m, v, t, key):
        key, k0, k1 = jax.random.split(key, 3)
        x0 = jax.random.uniform(k0, (BATCH, D, C))
        xi = jax.random.normal(k1, (T, BATCH, D, C))
        value, g = grad_fn(p, x0, xi)
        g = g * jnp.minimum(1.0, 1.0 / (jnp.linalg.norm(g) + 1e-12))   # clip_norm 1
        t = t + 1
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        mh, vh = m / (1 - 0.9 ** t), v / (1 - 0.999 ** t)
        return p - 0.03 * mh / (jnp.sqrt(vh) + 1e-8), m, v, t, key, value

    p0 = system.init(np.random.default_rng(0))
    state = [jnp.asarray(p0), jnp.zeros_like(p0), jnp.zeros_like(p0), 0.0,
             jax.random.PRNGKey(0)]

    def run_step():
        out = step(*state)
        out[-1].block_until_ready()
        state[:] = out[:5]

    def check() -> float:
        rng = np.random.default_rng(1)
        x0, xi = system.sample_inputs(rng, 16)
        v_ref, g_ref, _ = system.loss_and_grad(p0, x0, xi, ReproducibilityLoss(
            TEMPERATURE, sigma, anti_collapse=ANTI_COLLAPSE, backend="numpy"))
        v, g = jax.jit(grad_fn)(jnp.asarray(p0), jnp.asarray(x0), jnp.asarray(xi))
        assert abs(float(v) - v_ref) <= 1e-9 * abs(v_ref), (float(v), v_ref)
        return float(np.linalg.norm(np.asarray(g) - g_ref) / np.linalg.norm(g_ref))

    return run_step, check


def main(argv: list[str] | None = None) -> int:
    """Time both implementations and print a table; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed iterations (20)")
    args = parser.parse_args(argv)
    try:
        import jax
    except ImportError:
        jax = None
        print("jax is not installed: timing kdentropy only (pip install jax to compare)")
    import numba

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{platform.processor() or platform.machine()}, {cpus} usable cores, "
          f"numba {numba.__version__} ({numba.get_num_threads()} threads)"
          + (f", jax {jax.__version__}" if jax else ""))
    print(f"{'system':40s} {'numpy':>15s} {'numba':>15s} {'jax.jit':>15s}")
    print(f"{'(ms per iteration: wall / CPU)':40s}")
    nan = (float("nan"), float("nan"))
    for label, (kwargs, sigma) in SYSTEMS.items():
        t_np = kdentropy_step_ms(kwargs, sigma, "numpy", max(3, args.repeat // 4))
        t_nb = kdentropy_step_ms(kwargs, sigma, "numba", args.repeat)
        t_jx = nan
        if jax is not None:
            run_step, check = jax_step(kwargs, sigma)
            rel = check()
            if rel > 1e-8:
                print(f"  JAX gradient differs from kdentropy's by {rel:.1e} (relative)")
            t_jx = _median_ms(run_step, args.repeat)
        cells = " ".join(f"{w:7.2f}/{c:7.2f}" for w, c in (t_np, t_nb, t_jx))
        print(f"{label:40s} {cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
