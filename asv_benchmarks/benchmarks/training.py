"""The training stack: one cell-system training step, MLP forward+backward, optimizer steps."""

from __future__ import annotations

import numpy as np

from kdentropy.cells import CellSystem, ReproducibilityLoss, Trainer
from kdentropy.nn import MLP
from kdentropy.optim import SGD, Adam, AdamW

from .common import BACKENDS, SEED, require_backend


#: label -> (CellSystem arguments, kernel width sigma of the loss): the 1-D
#: default of ``kdentropy train`` and the README's 2-D job.
CELL_SYSTEMS = {
    "line-32": (dict(), 0.5),
    "grid-12x12-k3": (dict(n_cells=(12, 12), steps=20, topology="grid", hidden=(32,),
                           hidden_channels=3, rate=0.5, position="none"), 1.0),
}


class CellTrainingStep:
    """One optimisation step of a cell system, by engine and entropy backend.

    ``Trainer.step()`` with batch 64 and ``Adam(lr=0.03, clip_norm=1)``:
    sample a batch, roll it out, soft entropy and gradient of the final
    patterns, back-propagation through time, the Adam update and the hard
    entropy of the batch: the work of one iteration of ``kdentropy train``.
    ``line-32`` is its 1-D default (32 cells, 16 steps, 16-unit tanh MLP,
    position features); ``grid-12x12-k3`` the 2-D job (12 x 12 grid, 3 hidden
    channels, rate 0.5, no position, 20 steps, 32 units). ``numba`` is the
    compiled roll-out and BPTT, ``numpy`` the reference engine. Entropy
    backends: the default ``auto`` resolves to ``cpu``; ``numpy`` is shown
    because at N = 64 the dense reference may well be the faster one.
    ``asv_benchmarks/jax_cells.py`` times the same step written in JAX.
    """

    param_names = ["backend", "system", "engine"]
    params = (BACKENDS, list(CELL_SYSTEMS), ["numba", "numpy"])
    timeout = 600

    def setup(self, backend: str, system: str, engine: str) -> None:
        require_backend(backend)
        kwargs, sigma = CELL_SYSTEMS[system]
        self.trainer = Trainer(CellSystem(engine=engine, **kwargs),
                               optimizer=Adam(0.03, clip_norm=1.0),
                               loss=ReproducibilityLoss(sigma=sigma, backend=backend), seed=0,
                               eval_batch=2)
        # Compile the kernels and settle the optimizer state.
        for _ in range(2):
            self.trainer.step()

    def time_step(self, backend, system, engine):
        self.trainer.step()

    def peakmem_step(self, backend, system, engine):
        self.trainer.step()


class CellRollout:
    """Roll-out alone (evaluation: no caches) and roll-out plus BPTT, by engine.

    The two halves of :class:`CellTrainingStep` that the engine changes, on
    the same systems and a batch of 64 runs.
    """

    param_names = ["system", "engine"]
    params = (list(CELL_SYSTEMS), ["numba", "numpy"])
    timeout = 600

    def setup(self, system: str, engine: str) -> None:
        kwargs, _ = CELL_SYSTEMS[system]
        self.system = CellSystem(engine=engine, **kwargs)
        rng = np.random.default_rng(SEED)
        self.params_vec = self.system.init(rng)
        self.x0, self.xi = self.system.sample_inputs(rng, 64)
        out = self.system.rollout(self.params_vec, self.x0, self.xi)
        self.dfinal = rng.standard_normal(out.final.shape)
        self.system.backward(self.params_vec, out, self.dfinal)   # compile

    def time_rollout(self, system, engine):
        self.system.rollout(self.params_vec, self.x0, self.xi, keep_caches=False)

    def time_rollout_and_backward(self, system, engine):
        out = self.system.rollout(self.params_vec, self.x0, self.xi)
        self.system.backward(self.params_vec, out, self.dfinal)


#: label -> (layer sizes, input rows). "cell rule": the default cell system's
#: update network on one time step of a training batch (64 runs x 32 cells)
#: and of a 2048-run batch; "wide": a larger MLP, for scale.
MLP_CASES = {
    "5-16-1 x 2048": ([5, 16, 1], 2048),
    "5-16-1 x 65536": ([5, 16, 1], 65536),
    "64-256-256-64 x 4096": ([64, 256, 256, 64], 4096),
}


class MLPForwardBackward:
    """``MLP.forward`` then ``MLP.backward`` with a unit upstream gradient."""

    param_names = ["case"]
    params = (list(MLP_CASES),)

    def setup(self, case: str) -> None:
        sizes, rows = MLP_CASES[case]
        self.net = MLP(sizes, activation="tanh", output_activation="sigmoid")
        rng = np.random.default_rng([SEED, rows])
        self.theta = self.net.init(rng)
        self.x = rng.random((rows, sizes[0]))
        self.dy = np.ones((rows, sizes[-1]))

    def time_forward(self, case):
        self.net.forward(self.theta, self.x)

    def time_forward_backward(self, case):
        _, cache = self.net.forward(self.theta, self.x)
        self.net.backward(self.theta, cache, self.dy)


OPTIMIZERS = {
    "SGD": lambda: SGD(lr=1e-2, momentum=0.9),
    "Adam": lambda: Adam(lr=1e-3),
    "AdamW": lambda: AdamW(lr=1e-3, weight_decay=1e-2),
}


class OptimizerStep:
    """One in-place ``step(theta, grad)`` on a flat float64 parameter vector."""

    param_names = ["optimizer", "n_params"]
    params = (list(OPTIMIZERS), [10_000, 1_000_000])

    def setup(self, optimizer: str, n_params: int) -> None:
        rng = np.random.default_rng([SEED, n_params])
        self.theta = rng.standard_normal(n_params)
        self.grad = rng.standard_normal(n_params)
        self.opt = OPTIMIZERS[optimizer]()
        self.opt.step(self.theta, self.grad)  # allocate the moment buffers

    def time_step(self, optimizer, n_params):
        self.opt.step(self.theta, self.grad)
