"""Train a line of cells to produce the same binary pattern in every run.

32 cells each apply one small tanh MLP to their 3-neighbourhood and their
position, 16 times, starting from random states with noise added at every
step. Training minimises the soft entropy of the final patterns of a batch of
runs (its gradient comes from kdentropy, back-propagated through time by
hand); we report the exact (hard) entropy of 256 fresh runs before and after.

Run:  python examples/train_cells.py          (about 10 s on a laptop core)
The command line does the same and also writes files and a figure:
      kdentropy train --out runs/train
"""

import numpy as np

import kdentropy as kde
from kdentropy.cells import CellSystem, ReproducibilityLoss, Trainer
from kdentropy.optim import Adam, Cosine

ITERATIONS = 200

# The system: 32 cells, 16 steps, a 16-unit tanh MLP, noise 0.05 per step.
system = CellSystem(n_cells=32, steps=16, hidden=(16,), noise=0.05)

# The loss: soft entropy of the final patterns plus 100 * mean_n (mean state_n - 1/2)^2,
# which stops the trivial solution "every cell off in every run".
loss = ReproducibilityLoss(temperature=10.0, sigma=0.5, anti_collapse=100.0)

# Adam on the flat parameter vector, learning rate decaying from 0.03 to 0.001.
optimizer = Adam(lr=Cosine(0.03, total_steps=ITERATIONS, min_lr=1e-3))

# One seed fixes the initial parameters, the training batches and the
# evaluation batch (whose initial states and noise are never trained on).
trainer = Trainer(system, optimizer=optimizer, loss=loss, seed=0, batch=64, eval_batch=256)
before = trainer.record_evaluation()       # history row 0: the untrained system
trainer.run(ITERATIONS, progress=True)     # a tqdm bar when tqdm is installed
after = trainer.record_evaluation()

print(f"{system.n_params} parameters, {ITERATIONS} iterations of batch {trainer.batch}")
print(f"hard entropy of {trainer.eval_batch} fresh runs: "
      f"{before['hard_entropy']:.3f} -> {after['hard_entropy']:.3f} nats "
      f"(log {trainer.eval_batch} = {np.log(trainer.eval_batch):.3f})")
print(f"distinct patterns: {before['distinct']} -> {after['distinct']}")
print(f"fraction of cells on: {after['fraction_on']:.2f}, "
      f"0/1 boundaries per run: {after['boundaries']:.2f}")

# The patterns themselves: the most common one and how often it occurs.
patterns, counts = kde.pattern_counts(after["final"])
for k in np.argsort(counts)[::-1][:3]:
    print("".join(map(str, patterns[k])), f"{counts[k]:4d} runs")

# The history holds one row per iteration (row 0 = before training).
hist = trainer.history
print("soft entropy of the training batch, every 50 iterations:",
      np.round(hist["soft_entropy"][1::50], 3))
