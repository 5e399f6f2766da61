"""A benchmark's summary, rebuilt from every row of its logs: per engine its first hits against random's (simulated
and exact) with paired bootstrap intervals over the seeds, the forecast and the ceiling set against what happened;
``summary.json`` and ``curves.png``."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from gapseek.errors import InputError
from gapseek.fsutil import write_json
from gapseek.ingest.source import describe_provenance
from gapseek.search.benchmark.baselines import bootstrap_ratio_ci, random_survival
from gapseek.search.benchmark.logs import RUN_FIELDS, TRIAL_FIELDS, read_ceilings, read_forecasts, read_log, read_meta
from gapseek.search.benchmark.plots import plot_benchmark

__all__ = ["CENSORING_NOTE", "ceiling_check", "engine_summary", "forecast_check", "summarize_benchmark"]

log = logging.getLogger(__name__)

CENSORING_NOTE = ("first_hit_median, first_hit_mean, random_exact_first_hit_mean and the accelerations count a "
                  "campaign without a hit as censored_at = budget + 1 trials (a lower bound on its first hit); "
                  "first_hit_mean_found is over the campaigns that found one; per-seed first hits are null when "
                  "none was found")


def ceiling_check(ceilings: dict, exact: dict) -> dict:
    """Mean ceiling first hit and measured error over the keys with both (seeds, or (target, seed))."""
    keys = sorted(k for k in ceilings if k in exact)
    if not keys:
        return {}
    fh = np.array([float(ceilings[k]["ceiling_first_hit"]) for k in keys])
    ex = np.array([exact[k] for k in keys])
    return {"campaigns": len(keys), "sigma_mean": float(np.mean([float(ceilings[k]["sigma"]) for k in keys])),
            "first_hit_mean": float(fh.mean()), "acceleration_vs_random_exact": float(ex.sum() / fh.sum()),
            "note": "ranking by a predictor whose Gaussian error is the spread near T each prior measures "
                    "(unbiased, and known to be): what that accuracy allows on this pool"}


def forecast_check(forecasts: dict, first: dict[str, dict], exact: dict) -> dict:
    """The forecasts set against what happened, over the keys (seeds, or (target, seed)) that have both:
    per engine the mean forecast (picking by calibrated hit probability) and the mean realised first hit, and the
    share of campaigns whose first hit fell inside the forecast's 10-90% range (80% if the forecast is calibrated);
    random's forecast against its exact expectation. ``forecasts``: key -> forecasts.csv row; ``first``: engine ->
    key -> first hit (censored); ``exact``: key -> random's exact expected first hit."""
    keys = sorted(k for k in forecasts if k in exact)
    if not keys:
        return {}
    out = {"campaigns_forecast": len(keys),
           "engine_forecast_first_hit_mean": float(np.mean([float(forecasts[k]["engine_first_hit"]) for k in keys])),
           "random_forecast_first_hit_mean": float(np.mean([float(forecasts[k]["random_first_hit"]) for k in keys])),
           "random_exact_first_hit_mean": float(np.mean([exact[k] for k in keys])),
           "engines": {}}
    for name, per in first.items():
        ks = [k for k in keys if k in per]
        if not ks or name == "random":
            continue
        fh = np.array([per[k] for k in ks], dtype=float)
        lo = np.array([int(forecasts[k]["q10"]) for k in ks])
        hi = np.array([int(forecasts[k]["q90"]) for k in ks])
        out["engines"][name] = {
            "runs": len(ks), "first_hit_mean": float(fh.mean()),
            "forecast_first_hit_mean": float(np.mean([float(forecasts[k]["engine_first_hit"]) for k in ks])),
            "inside_forecast_10_90": float(np.mean((fh >= lo) & (fh <= hi)))}
    return out


def summarize_benchmark(out: str | Path) -> dict:
    """Rebuild ``summary.json`` and ``curves.png`` of a benchmark directory from every row of its logs; returns
    the summary. An engine's comparisons use the seeds it shares with the baseline (every seed for the exact one,
    the seeds ``random`` also ran for the simulated one), paired by seed."""
    out = Path(out)
    meta = read_meta(out)
    if meta is None:
        raise InputError(f"{out} is not a gapseek benchmark (no benchmark.json)")
    st = meta["settings"]
    budget, target, tolerance = int(st["budget"]), float(st["target"]), float(st["tolerance"])
    n_pool, hits_in_pool, n_prior = int(st["pool"]["size"]), int(st["pool"]["hits"]), int(st["prior"])
    runs: dict[str, dict[int, dict]] = {}
    for r in read_log(out / "runs.csv", RUN_FIELDS):
        per = runs.setdefault(r["engine"], {})
        seed = int(r["seed"])
        if seed in per:
            log.warning("%s/runs.csv: %s seed %d recorded twice; the first row is used", out, r["engine"], seed)
            continue
        per[seed] = r
    if not runs:
        raise InputError(f"{out}/runs.csv records no finished campaign")
    trials: dict[tuple[str, int], list[float]] = {}
    for r in read_log(out / "trials.csv", TRIAL_FIELDS):
        trials.setdefault((r["engine"], int(r["seed"])), []).append(float(r["abs_error"]))
    censored = budget + 1
    # per seed: random's exact expected first hit given that seed's prior, and P(a hit by trial t), t = 1..budget
    prior_hits = {int(r["seed"]): int(r["prior_hits"]) for per in runs.values() for r in per.values()}
    survival = {s: random_survival(n_pool - n_prior, hits_in_pool - h, budget) for s, h in prior_hits.items()}
    exact = {s: float(v.sum()) for s, v in survival.items()}
    all_seeds = sorted(exact)
    summary = {
        "setting": {"target": target, "tolerance": tolerance, "budget": budget, "prior": n_prior,
                    "seeds": len(all_seeds), "pool": n_pool, "hits_in_pool": hits_in_pool,
                    "label_range": st["label_range"], "features": st["features"], "vector": st["vector"],
                    "components": st["components"], "batch": st["batch"], "store": st["store"],
                    "labels_file": meta.get("labels_file"),
                    "random_exact_first_hit_mean": float(np.mean([exact[s] for s in all_seeds])),
                    "censored_at": censored, "censoring": CENSORING_NOTE,
                    "created": meta.get("created"), "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "engines": {},
    }
    boots: dict[int, np.ndarray] = {}  # one resampling per seed count: comparisons on the same seeds are paired

    def boot(n: int) -> np.ndarray:
        if n not in boots:
            boots[n] = np.random.default_rng(12345).integers(n, size=(4000, n))
        return boots[n]

    def censored_first(per: dict[int, dict], seeds: list[int]) -> np.ndarray:
        return np.array([int(per[s]["first_hit"]) if int(per[s]["found"]) else censored for s in seeds], dtype=float)

    base = runs.get("random")
    curves, first_hits = {}, {}
    for name, per in runs.items():
        seeds = sorted(per)
        first = censored_first(per, seeds)
        found = [bool(int(per[s]["found"])) for s in seeds]
        s = engine_summary(list(first), [int(per[k]["hits"]) for k in seeds], budget)
        s["not_found"] = int(len(seeds) - sum(found))
        s["first_hit_mean_found"] = float(np.mean(first[found])) if any(found) else None
        s["seconds_per_run"] = float(np.mean([float(per[k]["seconds"]) for k in seeds]))
        ex = np.array([exact[k] for k in seeds])
        s["acceleration_vs_random_exact"] = float(np.mean(ex) / np.mean(first))
        s["acceleration_vs_random_exact_ci95"] = bootstrap_ratio_ci(ex, first, boot(len(seeds)))
        common = [k for k in seeds if base is not None and k in base]
        if common:
            b, f = censored_first(base, common), censored_first(per, common)
            s["acceleration_vs_random"] = float(np.mean(b) / np.mean(f))
            s["acceleration_vs_random_ci95"] = bootstrap_ratio_ci(b, f, boot(len(common)))
            s["acceleration_vs_random_runs"] = len(common)
        s["per_seed"] = {"seed": seeds, "first_hit": [int(per[k]["first_hit"]) if f else None
                                                      for k, f in zip(seeds, found)],
                         "found": found, "hits": [int(per[k]["hits"]) for k in seeds]}
        summary["engines"][name] = s
        first_hits[name] = first
        full = [np.minimum.accumulate(trials[(name, k)]) for k in seeds if len(trials.get((name, k), ())) == budget]
        if full:
            curves[name] = np.array(full)
    summary["forecast_check"] = forecast_check(
        read_forecasts(out), {n: dict(zip(sorted(per), censored_first(per, sorted(per)))) for n, per in runs.items()},
        exact)
    summary["ceiling"] = ceiling_check(read_ceilings(out), exact)
    summary["provenance"] = st.get("provenance")
    summary["data"] = describe_provenance(st.get("provenance"))
    write_json(out / "summary.json", summary)
    random_found = np.mean([1.0 - survival[k][1:] for k in all_seeds], axis=0)
    plot_benchmark(out / "curves.png", curves, first_hits, random_found, tolerance,
                   f"T = {target} eV ± {tolerance}, pool {n_pool} ({hits_in_pool} hits), prior {n_prior}, "
                   f"{len(all_seeds)} seed(s)", footer=summary["data"])
    return summary


def engine_summary(first_hits: list[int], hits: list[int], budget: int) -> dict:
    fh = np.asarray(first_hits, dtype=float)
    return {
        "first_hit_median": float(np.median(fh)),
        "first_hit_mean": float(np.mean(fh)),
        "found_rate": float(np.mean(fh <= budget)),
        "hits_mean": float(np.mean(hits)),
        "runs": len(first_hits),
    }
