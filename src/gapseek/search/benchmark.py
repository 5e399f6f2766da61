"""Repeated simulated campaigns over seeds and engines: the honest comparison with random."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from gapseek.search.campaign import CampaignSettings, build_pool, draw_prior, simulate
from gapseek.search.engines import make_engine
from gapseek.search.report import engine_summary, plot_benchmark, write_json

__all__ = ["run_benchmark"]

log = logging.getLogger(__name__)


def run_benchmark(store: str | Path, labels: dict[str, float], settings: CampaignSettings, engines: list[str],
                  seeds: int, prior: int, out: str | Path, drop_missing: bool = False, progress=None) -> dict:
    """``seeds`` campaigns per engine; seed s draws the prior (the same for every engine). Writes
    ``OUT/summary.json``, ``OUT/runs.csv`` and ``OUT/curves.png``; returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pool, truth = build_pool(store, settings, labels, drop_missing=drop_missing)
    hits_in_pool = int(np.sum(np.abs(truth - settings.target) <= settings.tolerance))
    results: dict[str, list] = {e: [] for e in engines}
    with open(out / "runs.csv", "w") as fh:
        fh.write("engine,seed,first_hit,hits,prior_hits,seconds\n")
        for seed in range(seeds):
            prior_rows = draw_prior(pool, prior, np.random.default_rng(seed))
            prior_hits = int(np.sum(np.abs(truth[prior_rows] - settings.target) <= settings.tolerance))
            for name in engines:
                engine = make_engine(name)
                res = simulate(pool, truth, engine, prior_rows, settings.budget, settings.batch,
                               np.random.default_rng(1000 + seed))
                results[name].append(res)
                fh.write(f"{name},{seed},{res.first_hit},{res.hits},{prior_hits},{res.seconds:.2f}\n")
                fh.flush()
                if progress:
                    progress(name, seed, res)
    summary = {
        "setting": {"target": settings.target, "tolerance": settings.tolerance, "budget": settings.budget,
                    "prior": prior, "seeds": seeds, "pool": len(pool), "hits_in_pool": hits_in_pool,
                    "label_range": settings.label_range, "features": settings.features,
                    "vector": settings.vector, "components": settings.components,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "engines": {},
    }
    for name, runs in results.items():
        s = engine_summary([r.first_hit for r in runs], [r.hits for r in runs], settings.budget)
        s["seconds_per_run"] = float(np.mean([r.seconds for r in runs]))
        summary["engines"][name] = s
    if "random" in summary["engines"]:
        base = summary["engines"]["random"]["first_hit_mean"]
        for s in summary["engines"].values():
            s["acceleration_vs_random"] = base / s["first_hit_mean"]
    write_json(out / "summary.json", summary)
    curves = {name: np.array([r.best_curve for r in runs if len(r.best_curve) == settings.budget])
              for name, runs in results.items()}
    plot_benchmark(out / "curves.png", {k: v for k, v in curves.items() if v.size}, settings.tolerance,
                   f"T = {settings.target} eV ± {settings.tolerance}, pool {len(pool)} ({hits_in_pool} hits), "
                   f"prior {prior}, {seeds} seeds")
    return summary
