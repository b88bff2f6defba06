"""Training cells to be reproducible
=================================

Train cells to produce the same binary pattern in every run.

Default: 32 cells on a line each apply one small tanh MLP to their
3-neighbourhood and their position, 16 times, starting from random states with
noise added at every step. Training minimises the soft entropy of the final
patterns of a batch of runs (its gradient comes from kdentropy,
back-propagated through time by hand); we report the exact (hard) entropy of
256 fresh runs before and after.

With --grid: a 12 x 12 grid with no position input at all. Each cell carries
3 hidden channels besides the visible one and moves half-way towards its
network's output per step; only the zero-padded edges break the symmetry, and
the hidden channels carry that information inwards.

Run:  python examples/train_cells.py            (about a second)
      python examples/train_cells.py --grid     (about half a minute on 2 cores)
The command line does the same and also writes files and a figure:
      kdentropy train --out runs/train
"""

import sys

import numpy as np

import kdentropy as kde
from kdentropy.cells import CellSystem, ReproducibilityLoss, Trainer
from kdentropy.cli.supervision import supervised
from kdentropy.optim import Adam, Cosine

GRID = "--grid" in sys.argv[1:]

if GRID:
    ITERATIONS = 300
    # 12 x 12 cells, 1 visible + 3 hidden channels, 20 steps, a 32-unit MLP, no position.
    system = CellSystem((12, 12), 20, topology="grid", hidden=(32,), hidden_channels=3,
                        rate=0.5, position="none", noise=0.05)
    # sigma 1 rather than 0.5: with 144 cells the kernel of width 0.5 sees two random
    # patterns as infinitely far apart, the soft entropy sits at log N and has no gradient.
    sigma = 1.0
else:
    ITERATIONS = 200
    # The system: 32 cells, 16 steps, a 16-unit tanh MLP, noise 0.05 per step.
    system = CellSystem(n_cells=32, steps=16, hidden=(16,), noise=0.05)
    sigma = 0.5

# The loss: soft entropy of the final patterns plus 100 * mean_n (mean state_n - 1/2)^2,
# which stops the trivial solution "every cell off in every run".
loss = ReproducibilityLoss(temperature=10.0, sigma=sigma, anti_collapse=100.0)

# Adam on the flat parameter vector, learning rate decaying from 0.03 to 0.001,
# gradients clipped to norm 1.
optimizer = Adam(lr=Cosine(0.03, total_steps=ITERATIONS, min_lr=1e-3), clip_norm=1.0)

# One seed fixes the initial parameters, the training batches and the
# evaluation batch (whose initial states and noise are never trained on).
trainer = Trainer(system, optimizer=optimizer, loss=loss, seed=0, batch=64, eval_batch=256)
before = trainer.record_evaluation()       # history row 0: the untrained system
# The command line's progress display (a tqdm bar when tqdm is installed) and
# Ctrl-C handling, driven by the callback training calls after every iteration.
with supervised(ITERATIONS, None, progress=True) as after_iteration:
    trainer.run(ITERATIONS, callback=after_iteration)
after = trainer.record_evaluation()

print(system.describe())
print(f"{system.n_params} parameters, {ITERATIONS} iterations of batch {trainer.batch}")
print(f"hard entropy of {trainer.eval_batch} fresh runs: "
      f"{before['hard_entropy']:.3f} -> {after['hard_entropy']:.3f} nats "
      f"(log {trainer.eval_batch} = {np.log(trainer.eval_batch):.3f})")
print(f"distinct patterns: {before['distinct']} -> {after['distinct']}")
print(f"fraction of cells on: {after['fraction_on']:.2f}, "
      f"0/1 boundaries per run: {after['boundaries']:.2f}")

# The patterns themselves: the most common one and how often it occurs
# (a grid pattern is shown row by row).
patterns, counts = kde.pattern_counts(after["final"])
for k in np.argsort(counts)[::-1][:3]:
    rows = system.layout.grid_view(patterns[k]).reshape(-1, system.shape[-1])
    text = "\n".join("".join(map(str, row)) for row in rows)
    print(f"{text}   {counts[k]:4d} runs\n")

# The history holds one row per iteration (row 0 = before training).
hist = trainer.history
print("soft entropy of the training batch, every 50 iterations:",
      np.round(hist["soft_entropy"][1::50], 3))
