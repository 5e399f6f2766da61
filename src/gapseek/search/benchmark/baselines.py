"""The baselines a benchmark sets every engine against: random picking's exact expectation (hypergeometric, no
sampling noise), the ceiling a predictor of a given accuracy would reach on the pool, and the paired bootstrap
interval of a ratio of means."""

from __future__ import annotations

import numpy as np

__all__ = ["CEILING_DRAWS", "bootstrap_ratio_ci", "ceiling_first_hit", "random_first_hit_expectation",
           "random_survival"]

CEILING_DRAWS = 20


def random_survival(candidates: int, hits: int, budget: int) -> np.ndarray:
    """``P(X > t)`` for ``t = 0..budget`` (``budget + 1``), X the trial of the first hit when crystals are drawn at
    random without replacement from ``candidates`` of which ``hits`` are hits:
    ``C(candidates - hits, t) / C(candidates, t)`` (1 for every t when there is no hit to find)."""
    from scipy.special import gammaln

    if candidates < 0 or not 0 <= hits <= candidates or budget < 0:
        raise ValueError(f"need 0 <= hits <= candidates and budget >= 0; got hits={hits}, "
                         f"candidates={candidates}, budget={budget}")
    t = np.arange(budget + 1, dtype=float)
    if hits == 0:
        return np.ones_like(t)  # never a hit, however many crystals there are to draw
    misses = candidates - hits
    ok = t <= misses
    tt = np.where(ok, t, 0.0)
    logp = gammaln(misses + 1) - gammaln(misses - tt + 1) - gammaln(candidates + 1) + gammaln(candidates - tt + 1)
    return np.where(ok, np.exp(logp), 0.0)


def random_first_hit_expectation(candidates: int, hits: int, budget: int) -> float:
    """Exact ``E[min(X, budget + 1)] = sum_{t=0..budget} P(X > t)`` (see :func:`random_survival`)."""
    return float(np.sum(random_survival(candidates, hits, budget)))


def bootstrap_ratio_ci(numerator: np.ndarray, denominator: np.ndarray,
                       idx: np.ndarray | np.random.Generator) -> list[float] | None:
    """95% percentile interval of ``mean(numerator) / mean(denominator)`` (both ``n``, paired by seed) over
    bootstrap resamples of the seeds: ``idx`` (``resamples x n`` seed indices, shared by every comparison of a
    benchmark so that they are paired too) or a generator that draws 4,000. None for fewer than 2 seeds."""
    n = len(numerator)
    if n < 2:
        return None
    if isinstance(idx, np.random.Generator):
        idx = idx.integers(n, size=(4000, n))
    ratios = numerator[idx].mean(axis=1) / denominator[idx].mean(axis=1)
    return [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]


def ceiling_first_hit(truth: np.ndarray, candidates: np.ndarray, target: float, tolerance: float, sigma: float,
                      budget: int, rng: np.random.Generator, draws: int = CEILING_DRAWS) -> float:
    """Mean first hit (``budget + 1`` if none) of ranking ``candidates`` (pool rows) by ``|gap + e - T|``, ``e ~
    N(0, sigma^2)`` independent per crystal: what a predictor with that error, unbiased and known to be, would
    reach on this pool, over ``draws`` draws of its errors."""
    g = truth[candidates]
    hit = np.abs(g - target) <= tolerance
    firsts = []
    for _ in range(draws):
        d = np.abs(g + sigma * rng.standard_normal(g.size) - target)
        top = np.argpartition(d, budget)[:budget] if g.size > budget else np.arange(g.size)
        top = top[np.argsort(d[top], kind="stable")]
        h = hit[top]
        firsts.append(int(np.argmax(h)) + 1 if h.any() else budget + 1)
    return float(np.mean(firsts))
