"""The training stack: one cell-system training step, MLP forward+backward, optimizer steps."""

from __future__ import annotations

import numpy as np

from kdentropy.cells import CellSystem, ReproducibilityLoss, Trainer
from kdentropy.nn import MLP
from kdentropy.optim import SGD, Adam, AdamW

from .common import BACKENDS, SEED, require_backend


class CellTrainingStep:
    """One optimisation step of the default training configuration.

    ``Trainer.step()`` of ``CellSystem()`` (32 cells, 16 steps, 16-unit tanh
    MLP, noise 0.05), ``Adam(lr=1e-2)``, batch 64: sample a batch, roll it
    out, soft entropy and gradient of the final patterns, back-propagation
    through time, the Adam update and the hard entropy of the batch: the work
    of one iteration of ``kdentropy train`` with its defaults (which differ
    only in the learning-rate schedule), on every registered backend that can
    run here. The default ``auto`` backend resolves to ``cpu``; ``numpy`` is
    shown because at N = 64 the dense reference may well be the faster one.
    """

    param_names = ["backend"]
    params = (BACKENDS,)
    timeout = 300

    def setup(self, backend: str) -> None:
        require_backend(backend)
        self.trainer = Trainer(CellSystem(), loss=ReproducibilityLoss(backend=backend),
                               seed=0)
        # Compile the entropy kernels and settle the optimizer state.
        for _ in range(2):
            self.trainer.step()

    def time_step(self, backend):
        self.trainer.step()

    def peakmem_step(self, backend):
        self.trainer.step()


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
