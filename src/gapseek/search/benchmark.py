"""Repeated simulated campaigns over seeds and engines: the honest comparison with random."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from gapseek.errors import ConfigError
from gapseek.search.campaign import CampaignSettings, build_pool, draw_prior, simulate
from gapseek.search.engines import make_engine
from gapseek.search.report import engine_summary, plot_benchmark, write_json

__all__ = ["bootstrap_ratio_ci", "random_first_hit_expectation", "random_survival", "run_benchmark"]

log = logging.getLogger(__name__)


def run_benchmark(store: str | Path, labels: dict[str, float], settings: CampaignSettings, engines: list[str],
                  seeds: int, prior: int, out: str | Path, drop_missing: bool = False, progress=None) -> dict:
    """``seeds`` campaigns per engine; seed s draws the prior (the same for every engine). Writes
    ``OUT/summary.json``, ``OUT/runs.csv`` and ``OUT/curves.png``; returns the summary.

    Accelerations are ratios of mean first hits (budget + 1 counted for campaigns without a hit): against the
    simulated ``random`` engine when it ran, and always against random's exact expectation for each seed's prior
    (no sampling noise in the baseline), each with a 95% paired bootstrap interval over the seeds."""
    if seeds < 1 or not engines:
        raise ConfigError(f"a benchmark needs at least one seed and one engine; got {seeds} seed(s), engines "
                          f"{engines or 'none'}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pool, truth = build_pool(store, settings, labels, drop_missing=drop_missing)
    hits_in_pool = int(np.sum(np.abs(truth - settings.target) <= settings.tolerance))
    results: dict[str, list] = {e: [] for e in engines}
    exact: list[float] = []  # per seed: random's expected first hit given that seed's prior, exactly
    exact_found: list[np.ndarray] = []  # per seed: random's P(a hit by trial t), t = 1..budget
    with open(out / "runs.csv", "w") as fh:
        fh.write("engine,seed,first_hit,hits,prior_hits,seconds,random_expected\n")
        for seed in range(seeds):
            prior_rows = draw_prior(pool, prior, np.random.default_rng(seed))
            prior_hits = int(np.sum(np.abs(truth[prior_rows] - settings.target) <= settings.tolerance))
            surv = random_survival(len(pool) - len(prior_rows), hits_in_pool - prior_hits, settings.budget)
            exact.append(float(surv.sum()))
            exact_found.append(1.0 - surv[1:])
            for name in engines:
                engine = make_engine(name)
                res = simulate(pool, truth, engine, prior_rows, settings.budget, settings.batch,
                               np.random.default_rng(1000 + seed))
                results[name].append(res)
                fh.write(f"{name},{seed},{res.first_hit},{res.hits},{prior_hits},{res.seconds:.2f},{exact[-1]:.4f}\n")
                fh.flush()
                if progress:
                    progress(name, seed, res)
    summary = {
        "setting": {"target": settings.target, "tolerance": settings.tolerance, "budget": settings.budget,
                    "prior": prior, "seeds": seeds, "pool": len(pool), "hits_in_pool": hits_in_pool,
                    "label_range": settings.label_range, "features": settings.features,
                    "vector": settings.vector, "components": settings.components,
                    "random_exact_first_hit_mean": float(np.mean(exact)),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "engines": {},
    }
    boot = np.random.default_rng(12345).integers(seeds, size=(4000, seeds))
    base = np.array([r.first_hit for r in results["random"]], dtype=float) if "random" in results else None
    for name, runs in results.items():
        s = engine_summary([r.first_hit for r in runs], [r.hits for r in runs], settings.budget)
        s["seconds_per_run"] = float(np.mean([r.seconds for r in runs]))
        first = np.array([r.first_hit for r in runs], dtype=float)
        s["acceleration_vs_random_exact"] = float(np.mean(exact) / np.mean(first))
        s["acceleration_vs_random_exact_ci95"] = bootstrap_ratio_ci(np.array(exact), first, boot)
        if base is not None:
            s["acceleration_vs_random"] = float(np.mean(base) / np.mean(first))
            s["acceleration_vs_random_ci95"] = bootstrap_ratio_ci(base, first, boot)
        summary["engines"][name] = s
    write_json(out / "summary.json", summary)
    curves = {name: np.array([r.best_curve for r in runs if len(r.best_curve) == settings.budget])
              for name, runs in results.items()}
    plot_benchmark(out / "curves.png", {k: v for k, v in curves.items() if v.size},
                   {name: np.array([r.first_hit for r in runs]) for name, runs in results.items()},
                   np.mean(exact_found, axis=0), settings.tolerance,
                   f"T = {settings.target} eV ± {settings.tolerance}, pool {len(pool)} ({hits_in_pool} hits), "
                   f"prior {prior}, {seeds} seeds")
    return summary


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
