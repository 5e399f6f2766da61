"""Repeated simulated campaigns over seeds and engines: the honest comparison with random.

A benchmark is a directory, resumable per (engine, seed) like a campaign:

- ``benchmark.json``: format version and the settings every row depends on (store, labels' digest, target,
  tolerance, budget, batch, prior, label range, features, and a digest of the candidate pool). A run into the same
  directory with other settings is refused, naming the fields that differ (``overwrite=True`` starts anew).
- ``runs.csv``: an append-only log, one row per finished campaign (``engine, seed, first_hit, found, hits,
  prior_hits, seconds, random_expected``; ``first_hit`` empty and ``found`` 0 when the campaign had no hit),
  flushed and fsynced per row: it is the record of what is done. A rerun computes only the (engine, seed) pairs
  it lacks, so more seeds or more engines cost only the new campaigns.
- ``trials.csv``: every campaign's trials (``engine, seed, trial, id, band_gap, abs_error, hit``), written before
  the campaign's ``runs.csv`` row; rows of a campaign without one (a crash mid-campaign) are dropped on resume.
- ``summary.json`` and ``curves.png``: rebuilt from every row of the logs after each run
  (:func:`summarize_benchmark`).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gapseek import __version__
from gapseek.errors import ConfigError, InputError
from gapseek.search.campaign import CampaignSettings, SimResult, build_pool, draw_prior, simulate
from gapseek.search.engine_shell import calibrate
from gapseek.search.engines import make_engine
from gapseek.search.forecast import forecast_pool
from gapseek.search.report import engine_summary, plot_benchmark, plot_targets, target_bands, write_json

__all__ = ["BENCHMARK_FORMAT", "bootstrap_ratio_ci", "random_first_hit_expectation", "random_survival",
           "run_benchmark", "summarize_benchmark"]

log = logging.getLogger(__name__)

BENCHMARK_FORMAT = 1
RUN_FIELDS = ["engine", "seed", "first_hit", "found", "hits", "prior_hits", "seconds", "random_expected"]
TRIAL_FIELDS = ["engine", "seed", "trial", "id", "band_gap", "abs_error", "hit"]
# per seed, the forecast made from that seed's prior before any campaign (gapseek.search.forecast)
FORECAST_FIELDS = ["seed", "engine_first_hit", "engine_first_hit_lo", "engine_first_hit_hi", "q10", "q50", "q90",
                   "engine_hits", "random_first_hit", "pool_hits"]
FORECAST_BOOTSTRAP = 20
# per seed, the ceiling: the first hit of ranking by a predictor whose error is the one the prior measured
CEILING_FIELDS = ["seed", "sigma", "ceiling_first_hit"]
CEILING_DRAWS = 20
# settings a resume must share with the recorded ones (the pool digest is checked once the pool is built)
COMPARED = ("store", "labels", "target", "tolerance", "budget", "batch", "prior", "label_range", "features",
            "vector", "components", "prediction_input")
OUTPUTS = ("benchmark.json", "runs.csv", "trials.csv", "forecasts.csv", "ceilings.csv", "summary.json",
           "curves.png")
CENSORING_NOTE = ("first_hit_median, first_hit_mean, random_exact_first_hit_mean and the accelerations count a "
                  "campaign without a hit as censored_at = budget + 1 trials (a lower bound on its first hit); "
                  "first_hit_mean_found is over the campaigns that found one; per-seed first hits are null when "
                  "none was found")


def run_benchmark(store: str | Path, labels: dict[str, float], settings: CampaignSettings, engines: list[str],
                  seeds: int, prior: int, out: str | Path, drop_missing: bool = False,
                  progress: Callable[[str, int, SimResult], None] | None = None, overwrite: bool = False,
                  labels_path: str | Path | None = None,
                  on_plan: Callable[[int, int], None] | None = None) -> dict:
    """``seeds`` campaigns (seeds ``0 .. seeds - 1``) per engine; seed s draws the prior (the same for every
    engine). Resumes ``out`` (see the module): campaigns already in ``runs.csv`` are not run again; other
    recorded settings are a :class:`ConfigError` unless ``overwrite``. ``on_plan(recorded, to_run)`` is called
    once before the first campaign, ``progress(engine, seed, result)`` after each. Returns the summary of every
    recorded row (:func:`summarize_benchmark`), which also writes ``summary.json`` and ``curves.png``."""
    if seeds < 1 or not engines:
        raise ConfigError(f"a benchmark needs at least one seed and one engine; got {seeds} seed(s), engines "
                          f"{engines or 'none'}")
    engines = list(dict.fromkeys(engines))
    for name in engines:
        make_engine(name)  # an unknown engine fails before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"store": str(Path(store).resolve()), "labels": _labels_digest(labels), "target": settings.target,
              "tolerance": settings.tolerance, "budget": settings.budget, "batch": settings.batch, "prior": prior,
              "label_range": list(settings.label_range) if settings.label_range is not None else None,
              "features": settings.features, "vector": settings.vector, "components": settings.components,
              "prediction_input": settings.prediction_input}
    with _lock(out):
        meta = None if overwrite else _read_meta(out)
        if meta is not None:  # refused before the pool is built, when a cheap setting differs
            _refuse_other_settings(out, meta["settings"], record)
        pool, truth = build_pool(store, settings, labels, drop_missing=drop_missing)
        hits_in_pool = int(np.sum(np.abs(truth - settings.target) <= settings.tolerance))
        record["pool"] = {"size": len(pool), "hits": hits_in_pool, "sha256": _pool_digest(pool.ids, truth)}
        if meta is None:
            if overwrite:  # only once the new settings are known to be usable
                for name in OUTPUTS:
                    (out / name).unlink(missing_ok=True)
            _write_meta(out, record, labels_path)
        else:
            _refuse_other_settings(out, meta["settings"], record, only=("pool",))
            if meta.get("gapseek_version") != __version__:
                log.warning("%s was started by gapseek %s; rows added now come from gapseek %s", out,
                            meta.get("gapseek_version"), __version__)
        done = {(r["engine"], int(r["seed"])) for r in _read_log(out / "runs.csv", RUN_FIELDS)}
        _drop_unfinished_trials(out / "trials.csv", done)
        todo = [(seed, name) for seed in range(seeds) for name in engines if (name, seed) not in done]
        if done:
            log.info("resuming %s: %d campaign(s) recorded, %d to run", out, len(done), len(todo))
        if on_plan:
            on_plan(len(done), len(todo))
        drawn: dict[int, np.ndarray] = {}

        def prior_rows(seed: int) -> np.ndarray:  # seed s draws the same prior for every engine and every log
            if seed not in drawn:
                drawn[seed] = draw_prior(pool, prior, np.random.default_rng(seed))
            return drawn[seed]

        _per_seed_logs(out, pool, truth, settings, seeds, prior_rows)
        for seed, name in todo:
            rows = prior_rows(seed)
            prior_hits = int(np.sum(np.abs(truth[rows] - settings.target) <= settings.tolerance))
            expected = float(random_survival(len(pool) - len(rows), hits_in_pool - prior_hits,
                                             settings.budget).sum())
            res = simulate(pool, truth, make_engine(name), rows, settings.budget, settings.batch,
                           np.random.default_rng(1000 + seed))
            res.seed = seed
            found = res.first_hit <= settings.budget
            _append(out / "trials.csv", TRIAL_FIELDS,
                    [[name, seed, t, cid, repr(gap), repr(abs(gap - settings.target)),
                      int(abs(gap - settings.target) <= settings.tolerance)] for t, cid, gap in res.trials])
            _append(out / "runs.csv", RUN_FIELDS,  # the commit: this campaign is done
                    [[name, seed, res.first_hit if found else "", int(found), res.hits, prior_hits,
                      f"{res.seconds:.2f}", repr(expected)]])
            log.debug("%s seed %d: first hit %s, %d hit(s), %.1f s", name, seed,
                      res.first_hit if found else "none", res.hits, res.seconds)
            if progress:
                progress(name, seed, res)
        return summarize_benchmark(out)


def _per_seed_logs(out: Path, pool, truth: np.ndarray, settings: CampaignSettings, seeds: int,
                   prior_rows: Callable[[int], np.ndarray]) -> None:
    """Append to ``forecasts.csv`` and ``ceilings.csv`` the row of every seed that lacks one, from that seed's
    prior alone (``prior_rows(seed)``), as a lab would see it before the first trial: the forecast
    (:func:`gapseek.search.forecast.forecast_pool`) and the ceiling (:func:`ceiling_first_hit`, ``sigma`` being the
    calibrated prediction's spread near T that the prior measures, the forecast's calibration)."""
    have_forecast = {int(r["seed"]) for r in _read_log(out / "forecasts.csv", FORECAST_FIELDS)}
    have_ceiling = {int(r["seed"]) for r in _read_log(out / "ceilings.csv", CEILING_FIELDS)}
    for seed in range(seeds):
        if seed not in have_forecast:
            rows = prior_rows(seed)
            try:
                fc = forecast_pool(pool, rows, truth[rows], settings.budget, n_boot=FORECAST_BOOTSTRAP, seed=seed)
            except ConfigError as exc:
                log.warning("%s seed %d: no forecast (%s)", out, seed, exc)
            else:
                _append(out / "forecasts.csv", FORECAST_FIELDS,
                        [[seed, repr(fc.engine_first_hit), repr(fc.engine_first_hit_interval[0]),
                          repr(fc.engine_first_hit_interval[1]), *fc.first_hit_quantiles, repr(fc.engine_hits),
                          repr(fc.random_first_hit), repr(fc.pool_hits)]])
        if seed not in have_ceiling:
            rows = prior_rows(seed)
            sigma = calibrate(pool.prediction[rows], truth[rows], settings.target).spread
            left = pool.proposable()
            left[rows] = False
            value = ceiling_first_hit(truth, np.flatnonzero(left), settings.target, settings.tolerance, sigma,
                                      settings.budget, np.random.default_rng(2000 + seed))
            _append(out / "ceilings.csv", CEILING_FIELDS, [[seed, repr(sigma), repr(value)]])


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


def _read_ceilings(out: Path) -> dict[int, dict]:
    return {int(r["seed"]): r for r in _read_log(out / "ceilings.csv", CEILING_FIELDS)}


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


def _read_forecasts(out: Path) -> dict[int, dict]:
    return {int(r["seed"]): r for r in _read_log(out / "forecasts.csv", FORECAST_FIELDS)}


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
    meta = _read_meta(out)
    if meta is None:
        raise InputError(f"{out} is not a gapseek benchmark (no benchmark.json)")
    st = meta["settings"]
    budget, target, tolerance = int(st["budget"]), float(st["target"]), float(st["tolerance"])
    n_pool, hits_in_pool, n_prior = int(st["pool"]["size"]), int(st["pool"]["hits"]), int(st["prior"])
    runs: dict[str, dict[int, dict]] = {}
    for r in _read_log(out / "runs.csv", RUN_FIELDS):
        per = runs.setdefault(r["engine"], {})
        seed = int(r["seed"])
        if seed in per:
            log.warning("%s/runs.csv: %s seed %d recorded twice; the first row is used", out, r["engine"], seed)
            continue
        per[seed] = r
    if not runs:
        raise InputError(f"{out}/runs.csv records no finished campaign")
    trials: dict[tuple[str, int], list[float]] = {}
    for r in _read_log(out / "trials.csv", TRIAL_FIELDS):
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
        _read_forecasts(out), {n: dict(zip(sorted(per), censored_first(per, sorted(per)))) for n, per in runs.items()},
        exact)
    summary["ceiling"] = ceiling_check(_read_ceilings(out), exact)
    write_json(out / "summary.json", summary)
    random_found = np.mean([1.0 - survival[k][1:] for k in all_seeds], axis=0)
    plot_benchmark(out / "curves.png", curves, first_hits, random_found, tolerance,
                   f"T = {target} eV ± {tolerance}, pool {n_pool} ({hits_in_pool} hits), prior {n_prior}, "
                   f"{len(all_seeds)} seed(s)")
    return summary


# ---------------------------------------------------------------------------------------------- the directory
def _labels_digest(labels: dict[str, float]) -> str:
    h = hashlib.sha256()
    for cid in sorted(labels):
        h.update(f"{cid}\t{float(labels[cid])!r}\n".encode())
    return "sha256:" + h.hexdigest()


def _pool_digest(ids: list[str], truth: np.ndarray) -> str:
    h = hashlib.sha256()
    for cid, gap in zip(ids, truth):
        h.update(f"{cid}\t{float(gap)!r}\n".encode())
    return "sha256:" + h.hexdigest()


def _read_meta(out: Path) -> dict | None:
    path = out / "benchmark.json"
    if not path.is_file():
        if (out / "runs.csv").is_file():
            raise ConfigError(f"{out} holds a runs.csv without benchmark.json (written by an older gapseek, "
                              "which did not record its settings): it cannot be resumed safely; pass --overwrite "
                              "to start anew, or use another --out")
        return None
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); pass --overwrite to start anew") from None
    fmt = meta.get("gapseek_benchmark")
    if fmt != BENCHMARK_FORMAT:
        raise InputError(f"{out} was written by another gapseek version (benchmark format {fmt}, gapseek "
                         f"{meta.get('gapseek_version')}); this gapseek reads format {BENCHMARK_FORMAT}; pass "
                         "--overwrite to start anew")
    return meta


def _write_meta(out: Path, record: dict, labels_path: str | Path | None) -> None:
    meta = {"gapseek_benchmark": BENCHMARK_FORMAT, "gapseek_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "labels_file": str(Path(labels_path).resolve()) if labels_path else None, "settings": record}
    write_json(out / "benchmark.json", meta)


def _refuse_other_settings(out: Path, recorded: dict, now: dict, only: tuple[str, ...] = COMPARED) -> None:
    now = json.loads(json.dumps(now))  # tuples as lists, as recorded
    differ = [k for k in only if recorded.get(k) != now.get(k)]
    if not differ:
        return

    def show(k: str, v) -> str:
        if k == "pool" and isinstance(v, dict):
            return f"{v.get('size')} crystals, {v.get('hits')} hits, {str(v.get('sha256'))[:19]}"
        return str(v)[:19] if k == "labels" else str(v)

    what = "; ".join(f"{k}: recorded {show(k, recorded.get(k))}, now {show(k, now.get(k))}" for k in differ)
    raise ConfigError(f"{out} holds a benchmark with other settings ({', '.join(differ)} differ — {what}); its "
                      "rows cannot be mixed with these: pass --overwrite to start anew, or use another --out")


def _read_log(path: Path, fields: list[str]) -> list[dict]:
    """The rows of an append-only log; a last row cut short by a crash (no newline) is removed from the file."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        log.warning("%s: dropping a row cut short by an interrupted write", path)
        with open(path, "r+b") as fh:
            fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())
        data = data[:cut]
    lines = data.decode().splitlines()
    if not lines:
        return []
    header = next(csv.reader(lines[:1]))
    if header != fields:
        raise InputError(f"{path} has columns {','.join(header)}, not {','.join(fields)} (another gapseek "
                         "version?); pass --overwrite to start anew")
    rows = []
    for k, row in enumerate(csv.reader(lines[1:]), start=2):
        if not row:
            continue
        if len(row) != len(fields):
            raise InputError(f"{path}, line {k}: {len(row)} fields, expected {len(fields)}")
        rows.append(dict(zip(fields, row)))
    return rows


def _append(path: Path, fields: list[str], rows: list[list]) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        if new:
            w.writerow(fields)
        w.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())


def _drop_unfinished_trials(path: Path, done: set[tuple[str, int]]) -> None:
    """Remove (atomically) the trials of campaigns that have no ``runs.csv`` row: a crash mid-campaign."""
    rows = _read_log(path, TRIAL_FIELDS)
    keep = [r for r in rows if (r["engine"], int(r["seed"])) in done]
    if len(keep) == len(rows):
        return
    log.info("%s: dropping %d trial(s) of unfinished campaigns", path, len(rows) - len(keep))
    tmp = path.with_name(".trials.csv.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(TRIAL_FIELDS)
        w.writerows([r[f] for f in TRIAL_FIELDS] for r in keep)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _lock(out: Path):
    """One writer per benchmark directory: a second ``run_benchmark`` on it fails at once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(out / ".benchmark.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another gapseek benchmark is writing {out}; wait for it, or use another "
                              "--out") from None
        except OSError as exc:  # a filesystem without flock: go on unlocked
            log.debug("no lock on %s (%s)", out, exc)
        yield


# ---------------------------------------------------------------------------------------------- the baselines
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


# ---------------------------------------------------------------------------------------------- many targets
TARGETS_FILE = "targets.json"


def parse_targets(text: str) -> list[float]:
    """``"2.0,2.534"`` (a list) or ``"1.0:4.0:0.25"`` (``lo:hi:step``, both ends included) -> targets in eV."""
    text = text.strip()
    try:
        if ":" in text:
            parts = [float(v) for v in text.split(":")]
            if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
                raise ValueError
            lo, hi, step = parts
            n = int(np.floor((hi - lo) / step + 1e-9)) + 1
            targets = [round(lo + k * step, 10) for k in range(n)]
        else:
            targets = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--targets takes a list (2.0,2.534) or a range LO:HI:STEP with STEP > 0 "
                          f"(1.0:4.0:0.25); got {text!r}") from None
    if not targets or any(not np.isfinite(t) or t < 0 for t in targets):
        raise ConfigError(f"--targets: band gaps >= 0 eV; got {text!r}")
    return list(dict.fromkeys(targets))


def target_dir(out: str | Path, target: float) -> Path:
    return Path(out) / f"T{target:.4f}".rstrip("0").rstrip(".")


def run_targets(store: str | Path, labels: dict[str, float], settings: CampaignSettings, targets: list[float],
                engines: list[str], seeds: int, prior: int, out: str | Path, on_target=None, **kw) -> dict:
    """:func:`run_benchmark` for each target into ``out/T<target>/`` (each resumable on its own), then
    :func:`summarize_targets`. A target that no labelled crystal of the pool is within the tolerance of is
    skipped (said so in the summary). ``on_target(target)`` before each."""
    from dataclasses import replace

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    skipped = {}
    for t in targets:
        if on_target:
            on_target(t)
        try:
            run_benchmark(store, labels, replace(settings, target=t), engines, seeds, prior, target_dir(out, t),
                          **kw)
        except ConfigError as exc:
            if "nothing to find" not in str(exc):
                raise
            skipped[repr(t)] = str(exc)
            log.warning("target %g skipped: %s", t, exc)
    return summarize_targets(out, [t for t in targets if repr(t) not in skipped], skipped)


def _grouped_ratio_ci(keys: list[tuple[float, int]], numerator: dict, denominator: dict, group: int,
                      seed: int) -> list[float] | None:
    """95% bootstrap interval of ``sum(numerator) / sum(denominator)`` over ``keys`` ((target, seed) pairs),
    resampling whole groups: ``group`` 1 resamples the seeds (each with all its targets), 0 the targets (each with
    all its seeds). None with fewer than 2 groups."""
    groups = sorted({k[group] for k in keys})
    if len(groups) < 2:
        return None
    pos = {g: i for i, g in enumerate(groups)}
    num, den = np.zeros(len(groups)), np.zeros(len(groups))
    for k in keys:
        num[pos[k[group]]] += numerator[k]
        den[pos[k[group]]] += denominator[k]
    j = np.random.default_rng(seed).integers(len(groups), size=(4000, len(groups)))
    r = num[j].sum(axis=1) / den[j].sum(axis=1)
    return [float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))]


def summarize_targets(out: str | Path, targets: list[float], skipped: dict | None = None) -> dict:
    """Per target and over all targets, per engine: mean and median first hit (a campaign without a hit counts as
    budget + 1), the share of campaigns with a hit, random's exact expected first hit, the acceleration over it
    with a 95% bootstrap interval over the seeds (paired across targets and engines: a resampled seed takes all
    its targets along), and whether the engine did worse than both random (exact) and ``predicted`` on a target.
    Aggregate acceleration = sum of random's exact expectations / sum of the engine's first hits over every
    (target, seed) both have. Writes ``out/targets.json``."""
    out = Path(out)
    per_target, first, exact = {}, {}, {}
    budget = None
    for t in targets:
        d = target_dir(out, t)
        st = _read_meta(d)["settings"]
        budget = int(st["budget"])
        rows = _read_log(d / "runs.csv", RUN_FIELDS)
        for r in rows:
            seed = int(r["seed"])
            fh = int(r["first_hit"]) if int(r["found"]) else budget + 1
            first.setdefault(r["engine"], {})[(t, seed)] = fh
            exact[(t, seed)] = float(r["random_expected"])
    if not first:
        raise InputError(f"{out}: no finished campaign under any target")
    engines = list(first)
    all_seeds = sorted({s for (_, s) in exact})

    def accel(name: str, keys: list[tuple[float, int]]) -> tuple[float, list[float] | None]:
        """The ratio and its interval from resampling the seeds (each with all its targets)."""
        keys = [k for k in keys if k in first[name]]
        point = float(sum(exact[k] for k in keys) / sum(first[name][k] for k in keys))
        return point, _grouped_ratio_ci(keys, exact, first[name], group=1, seed=12345)

    def accel_over_targets(name: str, keys: list[tuple[float, int]]) -> list[float] | None:
        """The same ratio, its interval from resampling the targets (each with all its seeds)."""
        return _grouped_ratio_ci(keys, exact, first[name], group=0, seed=54321)

    summary = {"targets": targets, "skipped": skipped or {}, "budget": budget, "censored_at": (budget or 0) + 1,
               "censoring": "first hit means and medians count a campaign without a hit as censored_at = budget + "
                            "1 trials (a lower bound); found = share of campaigns with a hit within the budget",
               "per_target": per_target, "aggregate": {}}
    for t in targets:
        keys = sorted(k for k in exact if k[0] == t)
        rx = float(np.mean([exact[k] for k in keys]))
        row = {"random_exact_first_hit_mean": rx, "seeds": len(keys), "engines": {}}
        for name in engines:
            ks = [k for k in keys if k in first[name]]
            if not ks:
                continue
            fh = np.array([first[name][k] for k in ks], dtype=float)
            a, ci = accel(name, ks)
            row["engines"][name] = {"runs": len(ks), "first_hit_mean": float(fh.mean()),
                                    "first_hit_median": float(np.median(fh)),
                                    "found_rate": float(np.mean(fh <= budget)),
                                    "acceleration_vs_random_exact": a, "acceleration_vs_random_exact_ci95": ci}
        pred = row["engines"].get("predicted", {}).get("first_hit_mean")
        for _name, e in row["engines"].items():
            e["worse_than_random_and_predicted"] = bool(e["first_hit_mean"] > rx and pred is not None
                                                        and e["first_hit_mean"] > pred)
        per_target[repr(t)] = row
    forecasts = {(t, seed): r for t in targets for seed, r in _read_forecasts(target_dir(out, t)).items()}
    summary["forecast_check"] = forecast_check(forecasts, first, exact)
    summary["ceiling"] = ceiling_check({(t, seed): r for t in targets
                                        for seed, r in _read_ceilings(target_dir(out, t)).items()}, exact)
    for name in engines:
        keys = sorted(first[name])
        fh = np.array([first[name][k] for k in keys], dtype=float)
        a, ci = accel(name, keys)
        summary["aggregate"][name] = {
            "campaigns": len(keys), "first_hit_mean": float(fh.mean()), "first_hit_median": float(np.median(fh)),
            "found_rate": float(np.mean(fh <= budget)),
            "random_exact_first_hit_mean": float(np.mean([exact[k] for k in keys])),
            "acceleration_vs_random_exact": a, "acceleration_vs_random_exact_ci95": ci,
            "acceleration_vs_random_exact_ci95_over_targets": accel_over_targets(name, keys),
            "targets_worse_than_random_and_predicted": [t for t in targets if per_target[repr(t)]["engines"].get(
                name, {}).get("worse_than_random_and_predicted")]}
    summary["bands"] = _bands(targets, per_target, engines)
    write_json(out / TARGETS_FILE, summary)
    if len(targets) > 1:
        per = {name: np.array([per_target[repr(t)]["engines"].get(name, {}).get("first_hit_mean", np.nan)
                               for t in targets]) for name in engines if name != "random"}
        rx = np.array([per_target[repr(t)]["random_exact_first_hit_mean"] for t in targets])
        plot_targets(out / "targets.png", np.array(targets), per, rx, summary["bands"], budget,
                     f"{len(targets)} targets, {len(all_seeds)} seed(s) each, budget {budget}")
    return summary


def _bands(targets: list[float], per_target: dict, engines: list[str], width: float = 0.5) -> list[dict]:
    """Per band of ``width`` eV of targets (:func:`gapseek.search.report.target_bands`): how many targets, random's
    mean exact expectation, and per engine its mean first hit, its acceleration (sum of random's exact
    expectations / sum of first hits, over the band's targets it ran) and on how many targets it did worse than
    both random and ``predicted``."""
    idx, edges = target_bands(targets, width)
    out = []
    for k, (lo, hi) in enumerate(edges):
        rows = [per_target[repr(t)] for t, j in zip(targets, idx) if j == k]
        if not rows:
            continue
        band = {"low": lo, "high": hi, "targets": len(rows),
                "random_exact_first_hit_mean": float(np.mean([r["random_exact_first_hit_mean"] for r in rows])),
                "engines": {}}
        for name in engines:
            ran = [r for r in rows if name in r["engines"]]
            if not ran:
                continue
            fh = [r["engines"][name]["first_hit_mean"] for r in ran]
            band["engines"][name] = {
                "first_hit_mean": float(np.mean(fh)),
                "acceleration_vs_random_exact": float(sum(r["random_exact_first_hit_mean"] for r in ran) / sum(fh)),
                "targets_worse_than_random_and_predicted": sum(r["engines"][name]["worse_than_random_and_predicted"]
                                                               for r in ran)}
        out.append(band)
    return out
