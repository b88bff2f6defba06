"""Cells in PyTorch, with kdentropy.torch as the loss
==================================================

A cell system written in PyTorch, trained with kdentropy.torch.soft_entropy as its loss.

32 cells on a line each apply one small tanh MLP (PyTorch modules) to their
3-neighbourhood and two position features, 16 times, starting from random
states with noise added at every step. The loss of a batch of 64 runs is the
soft entropy of their final patterns (value and gradient from kdentropy's
kernels, back-propagated through the roll-out by PyTorch's autograd) plus an
anti-collapse term on the raw mean state of each run. We print the exact
(hard) entropy of 256 fresh runs before and after training.

Then we measure the peak memory of the loss itself (value and gradient with
respect to the patterns) at N = 16384 runs of D = 64 cells, float32: once
with kdentropy.torch.soft_entropy, once with a dense autograd formula of the
same loss (the Gram-matrix form people write by hand), each in its own
process.

Run:  python examples/torch_cells.py            (under a minute on 2 cores)
      python examples/torch_cells.py --quick    (fewer iterations, N = 2048)
Needs PyTorch: pip install 'kdentropy[torch]'.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys

import numpy as np

try:
    import torch
except ImportError:  # an optional dependency: say which extra, not a traceback
    sys.exit('torch_cells.py needs PyTorch: pip install "kdentropy[torch]"')

import kdentropy as kde
from kdentropy.torch import soft_entropy

TEMPERATURE, SIGMA = 10.0, 0.5


class CellSystem(torch.nn.Module):
    """``x <- clip(sigmoid(MLP(neighbourhood, position)) + noise * xi, 0, 1)``, ``steps`` times."""

    def __init__(self, n_cells: int = 32, steps: int = 16, hidden: int = 16,
                 noise: float = 0.05) -> None:
        super().__init__()
        self.steps, self.noise = steps, noise
        p = torch.linspace(0.0, 1.0, n_cells)
        self.register_buffer("position", torch.stack([p, 1.0 - p], dim=-1))  # (D, 2)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(5, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, 1))
        # A small last layer: the untrained update is close to 1/2 everywhere, so the
        # patterns start noise-driven (high entropy) and the sigmoid is not saturated.
        with torch.no_grad():
            self.mlp[2].weight.mul_(0.1)

    def forward(self, x: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        """Final states (N, D) from initial states ``x`` and noise draws ``xi`` (steps, N, D)."""
        for t in range(self.steps):
            padded = torch.nn.functional.pad(x, (1, 1))  # zeros beyond the ends of the line
            neigh = torch.stack([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]], dim=-1)
            feats = torch.cat([neigh, self.position.expand(x.shape[0], -1, -1)], dim=-1)
            x = torch.sigmoid(self.mlp(feats).squeeze(-1))
            # Clipping keeps states in [0, 1]; clipped cells pass no gradient.
            x = torch.clamp(x + self.noise * xi[t], 0.0, 1.0)
        return x

    def run(self, n_runs: int, generator: torch.Generator) -> torch.Tensor:
        """Final patterns of ``n_runs`` runs from fresh random states and noise."""
        D = self.position.shape[0]
        x0 = torch.rand(n_runs, D, generator=generator)
        xi = torch.randn(self.steps, n_runs, D, generator=generator)
        return self(x0, xi)


def loss_fn(X: torch.Tensor, anti_collapse: float = 100.0) -> torch.Tensor:
    """Soft entropy of the final patterns plus ``anti_collapse * mean_n (mean_i X_ni - 1/2)^2``.

    The soft entropy alone is minimised by collapse (every cell off in every
    run). The penalty acts on the *raw* mean state of each run, which keeps a
    gradient even when the discretised states are saturated.
    """
    H = soft_entropy(X, TEMPERATURE, SIGMA)
    return H + anti_collapse * ((X.mean(dim=1) - 0.5) ** 2).mean()


def hard_entropy_of_fresh_runs(system: CellSystem, n_runs: int = 256) -> tuple[float, int]:
    """Exact entropy (nats) and number of distinct patterns of runs never trained on."""
    with torch.no_grad():
        X = system.run(n_runs, torch.Generator().manual_seed(12345)).numpy()
    return float(kde.hard_entropy(X)), len(kde.pattern_counts(X)[1])


def train(iterations: int) -> None:
    """Train a fresh system with Adam and print the hard entropy before and after."""
    # Tensors of 64 x 32 are far too small for a thread pool: one thread avoids
    # spin-waiting threads competing with kdentropy's own on a small machine.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    system = CellSystem()
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(system.parameters(), lr=0.03)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations, eta_min=1e-3)
    h0, k0 = hard_entropy_of_fresh_runs(system)
    for _ in range(iterations):
        opt.zero_grad()
        loss = loss_fn(system.run(64, gen))
        loss.backward()
        opt.step()
        sched.step()
    h1, k1 = hard_entropy_of_fresh_runs(system)
    print(f"{iterations} iterations of batch 64; hard entropy of 256 fresh runs: "
          f"{h0:.3f} -> {h1:.3f} nats (log 256 = {math.log(256):.3f}), "
          f"distinct patterns {k0} -> {k1}")
    with torch.no_grad():
        X = system.run(256, torch.Generator().manual_seed(12345)).numpy()
    patterns, counts = kde.pattern_counts(X)
    k = int(np.argmax(counts))
    print("most common pattern:", "".join(map(str, patterns[k])), f"({counts[k]} of 256 runs)")


# ----------------------------------------------------------------------------- memory

def dense_soft_entropy(X: torch.Tensor) -> torch.Tensor:
    """The same soft entropy as a dense autograd formula: O(N²) memory."""
    S = torch.sigmoid(TEMPERATURE * (X - 0.5))
    sq = (S * S).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * S @ S.T).clamp_min(0.0)
    C = torch.exp(-d2 / (2.0 * SIGMA**2)).sum(dim=1)
    return math.log(X.shape[0]) - torch.log(C).mean()


def _status_kib(key: str) -> int:
    """A memory figure (kB) of this process from /proc/self/status, e.g. VmRSS or VmHWM."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def measure(method: str, N: int, D: int) -> None:
    """Print the peak resident memory (MiB) of one loss value + gradient, above the baseline.

    How it is measured: in a fresh process (started by :func:`main`), the
    method first runs once on an N/4 x D input (imports, compiled kernels,
    thread pools and allocator arenas are then in place, as in a training
    loop), then the N x D input is built. Writing "5" to /proc/self/clear_refs
    resets the kernel's high-water mark of resident memory (VmHWM) to the
    current resident size; after forward + backward, VmHWM - VmRSS(before) is
    the peak that the loss added on top of its input. This counts every
    allocator (PyTorch's, NumPy's, Numba's, BLAS buffers), because it is the
    operating system's count of touched pages, and it cannot miss a
    short-lived peak the way sampling would; tracemalloc would see none of
    PyTorch's allocations. Linux only.
    """
    fn = soft_entropy if method == "kdentropy" else dense_soft_entropy
    gen = torch.Generator().manual_seed(0)
    warm = torch.rand(max(N // 4, 2), D, generator=gen, requires_grad=True)
    fn(warm).backward()
    X = torch.rand(N, D, generator=gen).requires_grad_()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    fn(X).backward()
    peak = _status_kib("VmHWM")
    print(f"{(peak - before) / 1024:.1f}")


def main() -> None:
    """Train and print the hard entropies, then compare the loss's peak memory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="80 iterations and the memory comparison at N = 2048 (for tests)")
    parser.add_argument("--measure", choices=["kdentropy", "dense"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=16384, help=argparse.SUPPRESS)
    parser.add_argument("--d", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # the child process of one memory measurement
        measure(args.measure, args.n, args.d)
        return

    train(80 if args.quick else 200)

    N, D = (2048, 64) if args.quick else (args.n, args.d)
    peaks = {}
    for method in ("kdentropy", "dense"):
        out = subprocess.run([sys.executable, __file__, "--measure", method,
                              "--n", str(N), "--d", str(D)],
                             capture_output=True, text=True, check=True)
        peaks[method] = float(out.stdout.split()[-1])
    print(f"peak memory of the loss (value + gradient), N = {N}, D = {D}, float32, "
          "measured as the rise of the process's resident high-water mark:")
    print(f"  kdentropy.torch.soft_entropy: {peaks['kdentropy']:9.1f} MiB")
    print(f"  dense autograd (Gram form):   {peaks['dense']:9.1f} MiB")
    print(f"  (the input is {N * D * 4 / 2**20:.0f} MiB; "
          f"one N x N float32 matrix is {N * N * 4 / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
