"""Entropy of pattern counts with bias correction and error bars.

The plug-in entropy ``-Σ p̂ log p̂`` of the distinct patterns of N runs
(:func:`kdentropy.hard_entropy`) is biased low, by about ``(K - 1) / 2N``
nats for K observed patterns, and says nothing about its own uncertainty.
This module estimates the entropy of the *system* (the distribution the runs
are drawn from) from the pattern counts, with a confidence interval.

Estimators (``method``), all functions of the counts ``n_k`` (``N = Σ n_k``,
K observed patterns, ``f1`` singletons):

``"plugin"``
    ``-Σ (n_k/N) log(n_k/N)``, the maximum-likelihood value.
``"miller-madow"``
    plug-in ``+ (K - 1) / (2N)`` (Miller 1955).
``"grassberger"``
    ``Σ (n_k/N) (log N - ψ(n_k) - (-1)^{n_k} / (n_k + 1))`` (Grassberger 1988,
    the form of the ``infomeasure`` package).
``"chao-shen"``
    the coverage-adjusted Horvitz–Thompson estimator
    ``-Σ p̃_k log p̃_k / (1 - (1 - p̃_k)^N)`` with ``p̃_k = C n_k / N`` and the
    Good–Turing coverage ``C = 1 - f1/N`` (``f1 = N - 1`` when every run is a
    singleton, so that C > 0; Chao & Shen 2003).
``"nsb"``
    the posterior mean of the Nemenman–Shafee–Bialek mixture of Dirichlet
    priors, nearly flat in the entropy, over an alphabet of
    ``alphabet_size`` outcomes (``2**D`` for binary patterns of D cells).

Intervals: for the first four, a seeded bootstrap over runs, vectorised on
the counts (``n_boot`` multinomial resamples of the K counts, O(K·n_boot)
work, never O(N·D·n_boot)); the standard error is the standard deviation of
the resampled estimates and the interval is by default the *basic*
(reverse-percentile) bootstrap interval ``[2Ĥ - q_hi, 2Ĥ - q_lo]``. The
resamples are drawn from the observed frequencies, whose entropy is the
plug-in value: in that bootstrap world an estimator is biased low by about
what it is biased low in the real one, and the basic interval moves the
interval up by that amount, where the percentile interval ``[q_lo, q_hi]``
(``interval="percentile"``) stays centred below the estimate. Neither can
see outcomes the batch never produced: in undersampled batches both cover
the truth far less often than nominal (:doc:`/guide/uncertainty`). For
``"nsb"`` the standard error is the posterior standard deviation and the
interval is mean ± z · sd (a normal approximation of the posterior), clipped
to ``[0, log alphabet_size]``.

Counts are sorted before anything is computed, so every result depends only
on the multiset of counts: the MPI functions, which merge counts in an order
of their own, give the same numbers as the single-process ones.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import digamma, entr, ndtri

from . import _validation, hard
from ._nsb import nsb_posterior

__all__ = ["METHODS", "INTERVALS", "RECOMMENDED", "DEFAULT_N_BOOT", "EntropyEstimate", "entropy_estimate",
           "entropy_from_counts", "estimate_from_sorted_counts", "alphabet_of_patterns",
           "check_keywords", "sorted_rows", "make_result"]

#: The estimators, in the order the documentation lists them.
METHODS = ("plugin", "miller-madow", "grassberger", "chao-shen", "nsb")
#: The bootstrap intervals.
INTERVALS = ("basic", "percentile")
#: The estimator the library recommends for reproducibility studies (see the study in
#: :doc:`/guide/uncertainty`).
RECOMMENDED = "nsb"
#: Bootstrap resamples by default: the Monte Carlo error of a 95 % quantile is then
#: about 1 % of the interval width.
DEFAULT_N_BOOT = 1000
# Most elements one bootstrap block (resamples x populations x counts) may hold:
# 64 MiB of int64 per block, whatever the batch.
_BLOCK_ELEMENTS = 1 << 23
# Largest alphabet NSB integrates over: 2**D overflows float64 for D >= 1024.
# Beyond 2**1000 outcomes the answer is the prior's anyway (no coincidences).
_MAX_LOG2_ALPHABET = 1000


@dataclass(frozen=True)
class EntropyEstimate:
    """An entropy estimate with its standard error and confidence interval.

    Every numeric field is a float for one population and an ndarray of the
    batch shape for batched input. Entropies are in the requested unit.

    Attributes
    ----------
    estimate : float or ndarray
        The point estimate of the system's entropy.
    stderr : float or ndarray
        Its standard error (bootstrap standard deviation, or NSB's posterior
        standard deviation).
    low, high : float or ndarray
        The confidence interval.
    plugin : float or ndarray
        The plug-in value (what :func:`kdentropy.hard_entropy` returns).
    n : int or ndarray
        Runs (the sum of the counts).
    distinct : int or ndarray
        Distinct patterns observed, K.
    singletons : int or ndarray
        Patterns observed exactly once, f1.
    coverage : float or ndarray
        Good–Turing sample coverage ``1 - f1 / n``: the estimated probability
        that a new run repeats an observed pattern.
    method : str
        The estimator.
    interval : str
        How the interval was formed: ``"basic bootstrap"`` or ``"nsb posterior"``.
    confidence : float
        The nominal coverage of the interval.
    n_boot : int
        Bootstrap resamples (0 for NSB).
    """

    estimate: Any
    stderr: Any
    low: Any
    high: Any
    plugin: Any
    n: Any
    distinct: Any
    singletons: Any
    coverage: Any
    method: str
    interval: str
    confidence: float
    n_boot: int

    @property
    def confidence_interval(self) -> tuple[Any, Any]:
        """``(low, high)``."""
        return self.low, self.high

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready Python values (arrays as nested lists)."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else
                    v.item() if isinstance(v, np.generic) else v)
                for k, v in asdict(self).items()}


# ----------------------------------------------------------------------------- point estimators

def _plugin(n: np.ndarray, N: np.ndarray) -> np.ndarray:
    return np.sum(entr(n / N[..., None]), axis=-1)


def _miller_madow(n: np.ndarray, N: np.ndarray) -> np.ndarray:
    K = np.count_nonzero(n, axis=-1)
    return _plugin(n, N) + (K - 1) / (2.0 * N)


def _grassberger(n: np.ndarray, N: np.ndarray) -> np.ndarray:
    seen = n > 0
    m = np.where(seen, n, 1).astype(np.float64)
    sign = np.where(m % 2 == 0, 1.0, -1.0)  # (-1)^n without a float power
    terms = (m / N[..., None]) * (np.log(N)[..., None] - digamma(m) - sign / (m + 1.0))
    return np.sum(np.where(seen, terms, 0.0), axis=-1)


def _chao_shen(n: np.ndarray, N: np.ndarray) -> np.ndarray:
    f1 = np.count_nonzero(n == 1, axis=-1)
    f1 = np.where(f1 == N, N - 1, f1)  # all singletons: keep the coverage above 0
    C = 1.0 - f1 / N
    p = C[..., None] * n / N[..., None]
    # 1 - (1 - p)^N without losing the small p to rounding (p = 1 gives 1).
    with np.errstate(divide="ignore"):
        seen_prob = -np.expm1(N[..., None] * np.log1p(-np.minimum(p, 1.0)))
    terms = np.divide(entr(p), seen_prob, out=np.zeros_like(p), where=n > 0)
    return np.sum(terms, axis=-1)


_POINT = {"plugin": _plugin, "miller-madow": _miller_madow, "grassberger": _grassberger,
          "chao-shen": _chao_shen}


# ----------------------------------------------------------------------------- bootstrap

def _bootstrap(n: np.ndarray, N: np.ndarray, method: str, n_boot: int,
               rng: np.random.Generator) -> np.ndarray:
    """Estimates of ``n_boot`` multinomial resamples of each row of counts, shape ``(M, n_boot)``.

    Resampling the runs with replacement and counting their patterns again is
    the same as drawing the K counts from Multinomial(N, n/N): O(K) per
    resample instead of O(N·D). Drawn in blocks of resamples (all rows at
    once in each block), in an order fixed by the shapes alone.
    """
    M, K = n.shape
    out = np.empty((M, n_boot))
    p = n / N[:, None]
    block = max(1, _BLOCK_ELEMENTS // max(1, M * K))
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        star = rng.multinomial(N.astype(np.int64), p, size=(b, M))       # (b, M, K)
        out[:, start:start + b] = _POINT[method](star, np.broadcast_to(N, (b, M))).T
    return out


# ----------------------------------------------------------------------------- validation

def _method(method: Any) -> str:
    key = _validation.choice(method, "method", METHODS + ("mm", "cs", "ml"))
    return {"mm": "miller-madow", "cs": "chao-shen", "ml": "plugin"}.get(key, key)


# ----------------------------------------------------------------------------- the estimate

def estimate_from_sorted_counts(n: np.ndarray, method: str, confidence: float, n_boot: int,
                                rng: np.random.Generator, alphabet_size: float | None,
                                scale: float, interval: str = "basic") -> dict[str, np.ndarray]:
    """The fields of :class:`EntropyEstimate` for checked counts, one row per population.

    Parameters
    ----------
    n : ndarray of int64, shape (M, K)
        Counts, each row sorted in descending order (zeros last).
    method : str
        One of :data:`METHODS`.
    confidence : float
        In (0, 1).
    n_boot : int
        Bootstrap resamples (ignored by NSB).
    rng : numpy.random.Generator
    alphabet_size : float or None
        NSB's number of possible outcomes (required for NSB).
    scale : float
        Factor from nats to the requested unit.
    interval : {"basic", "percentile"}
        The bootstrap interval (ignored by NSB).

    Returns
    -------
    dict
        ``estimate``, ``stderr``, ``low``, ``high``, ``plugin``, ``n``,
        ``distinct``, ``singletons``, ``coverage``: arrays of shape ``(M,)``.
    """
    M = n.shape[0]
    N = n.sum(axis=1).astype(np.float64)
    distinct = np.count_nonzero(n, axis=1)
    singletons = np.count_nonzero(n == 1, axis=1)
    plugin = _plugin(n, N)
    z = ndtri(0.5 + confidence / 2.0)  # the normal quantile, without importing scipy.stats
    if method == "nsb":
        est, se = np.empty(M), np.empty(M)
        for i in range(M):
            est[i], se[i] = nsb_posterior(n[i, :distinct[i]], alphabet_size)
        cap = math.log(alphabet_size)
        low, high = np.clip(est - z * se, 0.0, cap), np.clip(est + z * se, 0.0, cap)
    else:
        est = _POINT[method](n, N)
        star = _bootstrap(n, N, method, n_boot, rng)
        se = np.std(star, axis=1, ddof=1) if n_boot > 1 else np.zeros(M)
        q_lo, q_hi = np.quantile(star, [0.5 - confidence / 2.0, 0.5 + confidence / 2.0], axis=1)
        if interval == "basic":  # reflect the resampled spread about the estimate
            low, high = np.maximum(2.0 * est - q_hi, 0.0), 2.0 * est - q_lo
        else:
            low, high = q_lo, q_hi
    return {"estimate": est * scale, "stderr": se * scale, "low": low * scale,
            "high": high * scale, "plugin": plugin * scale, "n": N.astype(np.int64),
            "distinct": distinct, "singletons": singletons, "coverage": 1.0 - singletons / N}


def make_result(fields: dict[str, np.ndarray], batch_shape: tuple[int, ...], method: str,
            confidence: float, n_boot: int, interval: str) -> EntropyEstimate:
    def shaped(a: np.ndarray) -> Any:
        return a.reshape(batch_shape) if batch_shape else a[0].item()
    interval = "nsb posterior" if method == "nsb" else f"{interval} bootstrap"
    return EntropyEstimate(**{k: shaped(v) for k, v in fields.items()}, method=method,
                           interval=interval, confidence=confidence,
                           n_boot=0 if method == "nsb" else n_boot)


def sorted_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Count vectors of different lengths as one ``(M, K)`` array, each row descending."""
    K = max(r.size for r in rows)
    out = np.zeros((len(rows), K), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :r.size] = np.sort(r)[::-1]
    return out


def check_keywords(method: Any, confidence: Any, n_boot: Any, rng: Any, base: Any,
                    normalize: Any, interval: Any) -> tuple[str, float, int, np.random.Generator,
                                                            tuple[float, bool], str]:
    return (_method(method), _validation.open_probability(confidence),
            _validation.integer(n_boot, "n_boot", 1),
            _validation.seed_or_generator(rng), _validation.log_unit(base, normalize),
            _validation.choice(interval, "interval", INTERVALS))


_KEYWORDS_DOC = """
    method : {"miller-madow", "chao-shen", "grassberger", "nsb", "plugin"}, optional
        The estimator (see :mod:`kdentropy.estimate`). Default
        :data:`RECOMMENDED`, ``"nsb"``.
    base : float, optional
        Logarithm base; ``None`` (default) gives nats.
    confidence : float, optional
        Nominal coverage of the interval, in (0, 1). Default 0.95.
    n_boot : int, optional
        Bootstrap resamples, >= 1. Default 1000. Not used by ``"nsb"``.
    rng : None, int or numpy.random.Generator, optional
        Source of the bootstrap resamples: a seed or a Generator gives the
        same result every time; ``None`` draws fresh entropy.
    interval : {"basic", "percentile"}, optional
        The bootstrap interval: ``"basic"`` (default, ``[2Ĥ - q_hi, 2Ĥ - q_lo]``)
        or ``"percentile"`` (``[q_lo, q_hi]``). Not used by ``"nsb"``."""


def entropy_from_counts(counts: ArrayLike, method: str = RECOMMENDED, *,
                        alphabet_size: float | None = None, base: float | None = None,
                        confidence: float = 0.95, n_boot: int = DEFAULT_N_BOOT,
                        rng: Any = None, interval: str = "basic") -> EntropyEstimate:
    """Estimate the entropy of a distribution from how often each outcome occurred.

    Parameters
    ----------
    counts : array_like of int, shape (..., K)
        Occurrences of each outcome; zeros are ignored and the order does
        not matter. Leading axes index independent populations.
{keywords}
    alphabet_size : float, optional
        Number of possible outcomes, needed by ``"nsb"`` (the default method;
        ``2**D`` for binary patterns of D cells); at least the number of
        observed ones.

    Returns
    -------
    EntropyEstimate
        Estimate, standard error, interval, plug-in value, N, observed
        outcomes, singletons and coverage; arrays of shape
        ``counts.shape[:-1]`` for batched input.

    Raises
    ------
    TypeError
        If counts are not numeric, or rng or a keyword has the wrong type.
    ValueError
        If counts are negative, fractional, NaN, or sum to 0 (N = 0); if
        method is unknown, confidence is not in (0, 1), n_boot < 1, or NSB
        lacks a valid alphabet_size.

    See Also
    --------
    entropy_estimate : the same from a batch of patterns.

    Examples
    --------
    >>> import kdentropy as kde
    >>> r = kde.entropy_from_counts([5, 3, 1, 1], method="miller-madow", rng=0)
    >>> round(r.plugin, 4), round(r.estimate, 4), r.distinct, r.singletons, r.coverage
    (1.1683, 1.3183, 4, 2, 0.8)
    """
    method, confidence, n_boot, gen, unit, interval = check_keywords(
        method, confidence, n_boot, rng, base, False, interval)
    c = _validation.count_array(counts)
    K_alpha = _validation.alphabet_size(alphabet_size)
    if method == "nsb":
        if K_alpha is None:
            raise ValueError("method 'nsb' needs alphabet_size (the number of possible "
                             "outcomes, e.g. 2**D for patterns of D cells)")
        observed = int(np.count_nonzero(c, axis=-1).max())
        if K_alpha < observed:
            raise ValueError(f"alphabet_size ({K_alpha:g}) must be >= the number of observed "
                             f"outcomes ({observed})")
    batch_shape = c.shape[:-1]
    rows = c.reshape(-1, c.shape[-1])
    n = -np.sort(-rows, axis=1)  # canonical order: the result depends on the multiset only
    n = n[:, :max(1, int(np.count_nonzero(n, axis=1).max()))]  # zeros change nothing
    fields = estimate_from_sorted_counts(n, method, confidence, n_boot, gen, K_alpha, unit[0],
                                         interval)
    return make_result(fields, batch_shape, method, confidence, n_boot, interval)


entropy_from_counts.__doc__ = entropy_from_counts.__doc__.replace("{keywords}",
                                                                  _KEYWORDS_DOC.strip("\n"))


def alphabet_of_patterns(D: int) -> float:
    """``2**D`` as a float, capped at ``2**1000`` (NSB's alphabet for D binary cells)."""
    return float(2.0 ** min(D, _MAX_LOG2_ALPHABET))


def entropy_estimate(X: ArrayLike, method: str = RECOMMENDED, threshold: float = 0.5, *,
                     base: float | None = None, normalize: bool = False,
                     confidence: float = 0.95, n_boot: int = DEFAULT_N_BOOT,
                     rng: Any = None, interval: str = "basic") -> EntropyEstimate:
    """Estimate the reproducibility entropy of a system, with a confidence interval.

    Each row of X is binarised as ``X >= threshold`` and the distinct
    patterns are counted as by :func:`kdentropy.hard_entropy` (O(N·D)); the
    counts then go to :func:`entropy_from_counts`. Unlike the plug-in value,
    the estimate is not capped at ``log N`` and carries an interval.

    Parameters
    ----------
    X : array_like, shape (..., N, D)
        Batch of N runs of D cells; leading axes index populations.
{keywords}
    threshold : float, optional
        Binarisation threshold. Default 0.5.
    normalize : bool, optional
        If True, divide by D (entropy per cell).

    Returns
    -------
    EntropyEstimate
        As :func:`entropy_from_counts`; arrays of shape ``X.shape[:-2]`` for
        batched input. For ``"nsb"`` the alphabet is ``2**D`` (capped at
        ``2**1000``).

    Raises
    ------
    TypeError
        If X is complex or not numeric, or a keyword has the wrong type.
    ValueError
        If X has fewer than 2 dimensions, no patterns (N = 0), NaN or
        infinity; if threshold is not finite, method unknown, confidence
        not in (0, 1) or n_boot < 1.

    See Also
    --------
    hard_entropy : the plug-in value alone.
    kdentropy.mpi.entropy_estimate : the same for rows spread over MPI ranks.

    Examples
    --------
    >>> import numpy as np, kdentropy as kde
    >>> X = np.random.default_rng(0).integers(0, 2, size=(64, 3))   # 8 equally likely patterns
    >>> r = kde.entropy_estimate(X)                  # NSB over the 2**3 possible patterns
    >>> [round(float(v), 3) for v in (r.plugin, r.estimate, r.low, r.high)]  # log 8 = 2.079
    [2.013, 2.033, 1.963, 2.079]
    """
    method, confidence, n_boot, gen, unit, interval = check_keywords(
        method, confidence, n_boot, rng, base, normalize, interval)
    threshold = _validation.real_scalar(threshold, "threshold")
    A = _validation.host_patterns(X, cast=False)
    D = A.shape[-1]
    A3 = A.reshape((-1,) + A.shape[-2:])
    rows = [hard.count_rows(hard.binarize(A3[g], threshold))[1] for g in range(A3.shape[0])]
    fields = estimate_from_sorted_counts(sorted_rows(rows), method, confidence, n_boot, gen,
                                         alphabet_of_patterns(D), _validation.unit_scale(unit, D),
                                         interval)
    return make_result(fields, A.shape[:-2], method, confidence, n_boot, interval)


entropy_estimate.__doc__ = entropy_estimate.__doc__.replace("{keywords}",
                                                            _KEYWORDS_DOC.strip("\n"))
