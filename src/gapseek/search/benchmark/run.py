"""Repeated simulated campaigns over seeds and engines: the honest comparison with random.

A benchmark is a directory (:mod:`gapseek.search.benchmark.logs`), resumable per (engine, seed) like a campaign:

- ``benchmark.json``: format version and the settings every row depends on (store, labels' digest, target,
  tolerance, budget, batch, prior, label range, features, and a digest of the candidate pool). A run into the same
  directory with other settings is refused, naming the fields that differ (``overwrite=True`` starts anew).
- ``runs.csv``: an append-only log, one row per finished campaign (``engine, seed, first_hit, found, hits,
  prior_hits, seconds, random_expected``; ``first_hit`` empty and ``found`` 0 when the campaign had no hit),
  flushed and fsynced per row: it is the record of what is done. A rerun computes only the (engine, seed) pairs
  it lacks, so more seeds or more engines cost only the new campaigns.
- ``trials.csv``: every campaign's trials (``engine, seed, trial, id, band_gap, abs_error, hit``), written before
  the campaign's ``runs.csv`` row; rows of a campaign without one (a crash mid-campaign) are dropped on resume.
- ``forecasts.csv``, ``ceilings.csv``: per seed, the forecast and the ceiling from that seed's prior.
- ``summary.json`` and ``curves.png``: rebuilt from every row of the logs after each run
  (:func:`gapseek.search.benchmark.summary.summarize_benchmark`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gapseek import __version__
from gapseek.errors import ConfigError
from gapseek.search.benchmark.baselines import ceiling_first_hit, random_survival
from gapseek.search.benchmark.logs import (
    CEILING_FIELDS,
    FORECAST_FIELDS,
    OUTPUTS,
    RUN_FIELDS,
    TRIAL_FIELDS,
    append_rows,
    drop_unfinished_trials,
    labels_digest,
    lock,
    pool_digest,
    read_log,
    read_meta,
    refuse_other_settings,
    write_meta,
)
from gapseek.search.benchmark.summary import summarize_benchmark
from gapseek.search.calibration import calibrate
from gapseek.search.campaign.simulate import SimResult, draw_prior, simulate
from gapseek.search.engines import make_engine
from gapseek.search.forecast import forecast_pool
from gapseek.search.pool import build_pool
from gapseek.search.settings import CampaignSettings
from gapseek.store import Store

__all__ = ["run_benchmark"]

log = logging.getLogger(__name__)

FORECAST_BOOTSTRAP = 20


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
    record = {"store": str(Path(store).resolve()), "labels": labels_digest(labels), "target": settings.target,
              "tolerance": settings.tolerance, "budget": settings.budget, "batch": settings.batch, "prior": prior,
              "label_range": list(settings.label_range) if settings.label_range is not None else None,
              "features": settings.features, "vector": settings.vector, "components": settings.components,
              "prediction_input": settings.prediction_input}
    with lock(out):
        meta = None if overwrite else read_meta(out)
        if meta is not None:  # refused before the pool is built, when a cheap setting differs
            refuse_other_settings(out, meta["settings"], record)
        with Store.open(store) as st:
            pool, truth = build_pool(st, settings, labels, drop_missing=drop_missing)
            record["provenance"] = st.provenance  # where the crystals came from (not compared on resume)
        hits_in_pool = int(np.sum(np.abs(truth - settings.target) <= settings.tolerance))
        record["pool"] = {"size": len(pool), "hits": hits_in_pool, "sha256": pool_digest(pool.ids, truth)}
        if meta is None:
            if overwrite:  # only once the new settings are known to be usable
                for name in OUTPUTS:
                    (out / name).unlink(missing_ok=True)
            write_meta(out, record, labels_path)
        else:
            refuse_other_settings(out, meta["settings"], record, only=("pool",))
            if meta.get("gapseek_version") != __version__:
                log.warning("%s was started by gapseek %s; rows added now come from gapseek %s", out,
                            meta.get("gapseek_version"), __version__)
        done = {(r["engine"], int(r["seed"])) for r in read_log(out / "runs.csv", RUN_FIELDS)}
        drop_unfinished_trials(out / "trials.csv", done)
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

        per_seed_logs(out, pool, truth, settings, seeds, prior_rows)
        for seed, name in todo:
            rows = prior_rows(seed)
            prior_hits = int(np.sum(np.abs(truth[rows] - settings.target) <= settings.tolerance))
            expected = float(random_survival(len(pool) - len(rows), hits_in_pool - prior_hits,
                                             settings.budget).sum())
            res = simulate(pool, truth, make_engine(name), rows, settings.budget, settings.batch,
                           np.random.default_rng(1000 + seed))
            res.seed = seed
            found = res.first_hit <= settings.budget
            append_rows(out / "trials.csv", TRIAL_FIELDS,
                    [[name, seed, t, cid, repr(gap), repr(abs(gap - settings.target)),
                      int(abs(gap - settings.target) <= settings.tolerance)] for t, cid, gap in res.trials])
            append_rows(out / "runs.csv", RUN_FIELDS,  # the commit: this campaign is done
                    [[name, seed, res.first_hit if found else "", int(found), res.hits, prior_hits,
                      f"{res.seconds:.2f}", repr(expected)]])
            log.debug("%s seed %d: first hit %s, %d hit(s), %.1f s", name, seed,
                      res.first_hit if found else "none", res.hits, res.seconds)
            if progress:
                progress(name, seed, res)
        return summarize_benchmark(out)


def per_seed_logs(out: Path, pool, truth: np.ndarray, settings: CampaignSettings, seeds: int,
                   prior_rows: Callable[[int], np.ndarray]) -> None:
    """Append to ``forecasts.csv`` and ``ceilings.csv`` the row of every seed that lacks one, from that seed's
    prior alone (``prior_rows(seed)``), as a lab would see it before the first trial: the forecast
    (:func:`gapseek.search.forecast.forecast_pool`) and the ceiling (:func:`ceiling_first_hit`, ``sigma`` being the
    calibrated prediction's spread near T that the prior measures, the forecast's calibration)."""
    have_forecast = {int(r["seed"]) for r in read_log(out / "forecasts.csv", FORECAST_FIELDS)}
    have_ceiling = {int(r["seed"]) for r in read_log(out / "ceilings.csv", CEILING_FIELDS)}
    for seed in range(seeds):
        if seed not in have_forecast:
            rows = prior_rows(seed)
            try:
                fc = forecast_pool(pool, rows, truth[rows], settings.budget, n_boot=FORECAST_BOOTSTRAP, seed=seed)
            except ConfigError as exc:
                log.warning("%s seed %d: no forecast (%s)", out, seed, exc)
            else:
                append_rows(out / "forecasts.csv", FORECAST_FIELDS,
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
            append_rows(out / "ceilings.csv", CEILING_FIELDS, [[seed, repr(sigma), repr(value)]])
