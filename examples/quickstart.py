"""Quickstart: soft and hard entropy of a batch
============================================

Soft and hard reproducibility entropy of a generated batch of patterns.

Run:  python examples/quickstart.py
"""

import numpy as np

import kdentropy as kde

rng = np.random.default_rng(0)
N, D = 256, 32

# A batch of N runs that mostly land on one of three patterns, plus noise.
prototypes = rng.integers(0, 2, size=(3, D))
X = prototypes[rng.choice(3, size=N, p=[0.6, 0.3, 0.1])] + 0.1 * rng.standard_normal((N, D))

H_soft, grad = kde.soft_entropy_and_grad(X, temperature=10.0, sigma=0.5)
patterns, counts = kde.pattern_counts(X)
print(f"backends available : {kde.available_backends()} (default: {kde.get_backend()})")
print(f"batch              : N={N} runs of D={D} cells, log N = {np.log(N):.4f} nats")
print(f"soft entropy       : {H_soft:.4f} nats ({kde.soft_entropy(X, base=2):.4f} bits)")
print(f"hard entropy       : {kde.hard_entropy(X):.4f} nats, {len(counts)} distinct patterns")
print(f"gradient           : shape {grad.shape}, dtype {grad.dtype}, |grad| = {np.linalg.norm(grad):.3e}")
print(f"all runs identical : soft {kde.soft_entropy(np.repeat(X[:1], N, axis=0)):.4f}, "
      f"hard {kde.hard_entropy(np.repeat(X[:1], N, axis=0)):.4f}")
