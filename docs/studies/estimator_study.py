"""Bias, RMSE and interval coverage of kdentropy's entropy estimators on known distributions.

Writes the table that ``docs/guide/uncertainty.rst`` includes::

    python docs/studies/estimator_study.py            # -> docs/guide/_estimator_study.rst

For each distribution over binary patterns (known exactly, so the true
entropy is known), each N in 32 ... 4096 and each estimator, ``--reps``
independent batches of N runs are drawn and estimated with
:func:`kdentropy.entropy_from_counts`; the table gives the bias and RMSE of
the estimate and the fraction of repetitions whose nominal 95 % interval
contains the truth. Everything is vectorised over the repetitions (one count
matrix per setting), and seeded: the same command writes the same table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.special import entr

import kdentropy as kde

NS = (32, 64, 128, 256, 512, 1024, 2048, 4096)
METHODS = ("plugin", "miller-madow", "grassberger", "chao-shen", "nsb")
OUT = Path(__file__).resolve().parents[1] / "guide" / "_estimator_study.rst"


def prototypes(D: int = 16, n_proto: int = 4, flip: float = 0.03, seed: int = 1) -> np.ndarray:
    """Prototype patterns with independent bit-flip noise: ``P(x) = Σ w_j ε^d (1-ε)^(D-d)``."""
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 2, size=(n_proto, D))
    w = np.array([0.4, 0.3, 0.2, 0.1])[:n_proto]
    codes = np.arange(2 ** D)
    bits = (codes[:, None] >> np.arange(D)[::-1]) & 1                     # (2^D, D)
    dist = np.abs(bits[:, None, :] - protos[None, :, :]).sum(-1)          # Hamming distances
    p = (w * flip ** dist * (1 - flip) ** (D - dist)).sum(-1)
    return p / p.sum()


def zipf(M: int = 4096, exponent: float = 1.0) -> np.ndarray:
    """``p_k ∝ k^-exponent`` over M patterns."""
    p = np.arange(1, M + 1, dtype=np.float64) ** -exponent
    return p / p.sum()


def uniform(D: int = 6) -> np.ndarray:
    """All ``2^D`` patterns equally likely."""
    return np.full(2 ** D, 2.0 ** -D)


# name, probabilities, cells D (NSB's alphabet is 2^D), description
DISTRIBUTIONS = (
    ("prototypes", prototypes(), 16, "4 prototypes (weights .4/.3/.2/.1) of 16 cells, "
     "each cell flipped with probability 0.03"),
    ("zipf", zipf(), 16, "Zipf (p_k ∝ 1/k) over 4096 patterns of 16 cells"),
    ("uniform", uniform(), 6, "uniform over all 2^6 = 64 patterns of 6 cells"),
)


def draw_counts(p: np.ndarray, N: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    """Pattern counts of ``reps`` batches of N runs, shape ``(reps, len(p))``."""
    idx = np.searchsorted(np.cumsum(p), rng.random((reps, N)) * np.sum(p))
    idx = np.minimum(idx, p.size - 1)
    flat = (idx + p.size * np.arange(reps)[:, None]).ravel()
    return np.bincount(flat, minlength=reps * p.size).reshape(reps, p.size)


def run(reps: int, n_boot: int, seed: int) -> list[dict]:
    rows = []
    for d, (name, p, D, _) in enumerate(DISTRIBUTIONS):
        truth = float(np.sum(entr(p)))
        for N in NS:
            rng = np.random.default_rng([seed, d, N])
            counts = draw_counts(p, N, reps, rng)
            K = np.count_nonzero(counts, axis=1)
            for m in METHODS:
                # NSB's interval is its posterior; the others' the basic bootstrap.
                r = kde.entropy_from_counts(counts, m, alphabet_size=2.0 ** D, n_boot=n_boot,
                                            rng=np.random.default_rng([seed, d, N, 1]))
                err = r.estimate - truth
                rows.append({"distribution": name, "H": truth, "N": N,
                             "K/N": float(np.mean(K / N)), "method": m,
                             "bias": float(np.mean(err)),
                             "rmse": float(np.sqrt(np.mean(err ** 2))),
                             "coverage": float(np.mean((r.low <= truth) & (truth <= r.high)))})
    return rows


def table(rows: list[dict], reps: int, n_boot: int, seconds: float) -> str:
    """The RST include: one table per distribution, bias/RMSE/coverage per estimator."""
    out = [f".. Written by docs/studies/estimator_study.py (reps={reps}, n_boot={n_boot}, "
           f"{seconds:.0f} s). Do not edit.", ""]
    short = {"plugin": "plug-in", "miller-madow": "Miller–Madow", "grassberger": "Grassberger",
             "chao-shen": "Chao–Shen", "nsb": "NSB"}
    for name, p, D, text in DISTRIBUTIONS:
        sel = [r for r in rows if r["distribution"] == name]
        out += [f"**{name}**: {text}; true H = {sel[0]['H']:.3f} nats.", ""]
        header = ["N", "K/N"] + [short[m] for m in METHODS]
        body = []
        for N in NS:
            at = {r["method"]: r for r in sel if r["N"] == N}
            line = [str(N), f"{at['plugin']['K/N']:.2f}"]
            for m in METHODS:
                r = at[m]
                line.append(f"{r['bias']:+.3f} / {r['rmse']:.3f} / {100 * r['coverage']:.0f}")
            body.append(line)
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
        rule = "  ".join("=" * w for w in widths)
        out += [rule, "  ".join(h.ljust(w) for h, w in zip(header, widths)), rule]
        out += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
        out += [rule, ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=500, help="repetitions per setting (500)")
    ap.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples (200)")
    ap.add_argument("--seed", type=int, default=2025)
    ap.add_argument("--out", type=Path, default=OUT, help=f"the table ({OUT.name})")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = run(args.reps, args.n_boot, args.seed)
    seconds = time.perf_counter() - t0
    text = table(rows, args.reps, args.n_boot, seconds)
    args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"wrote {args.out} in {seconds:.0f} s")


if __name__ == "__main__":
    main()
