"""Simulated campaigns: the labels act as the oracle. :func:`simulate` runs an engine against them in memory (the
benchmark's loop); :func:`run_search` runs one on disk (``gapseek search``), resumable exactly."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gapseek.errors import CampaignError, ConfigError, GapseekWarning, InputError, few
from gapseek.search.campaign.campaign import STATE_FILE, Campaign, lock
from gapseek.search.campaign.log import Trial
from gapseek.search.engines import Engine, make_engine
from gapseek.search.pca import PCAChoice
from gapseek.search.pool import Pool, build_pool
from gapseek.search.settings import CampaignSettings, settings_changes
from gapseek.store import Store

__all__ = ["SimResult", "draw_prior", "resumable", "run_search", "simulate"]

log = logging.getLogger(__name__)


def draw_prior(pool: Pool, prior: int | list[str], rng: np.random.Generator | None = None) -> np.ndarray:
    """Pool rows of the prior: ``N`` drawn at random with ``rng`` (hits are not removed, as in the write-up), or
    the rows of given ids (each must be in the pool)."""
    if isinstance(prior, int):
        rng = rng if rng is not None else np.random.default_rng()
        if prior < 1:
            raise ConfigError(f"the prior needs at least 1 labelled crystal; got {prior}")
        if prior >= len(pool):
            raise ConfigError(f"prior of {prior} is not smaller than the pool of {len(pool)} candidates")
        return rng.choice(len(pool), size=prior, replace=False)
    missing = [c for c in prior if c not in pool.index]
    if missing:
        raise InputError(f"{len(missing)} prior id(s) are not in the candidate pool: {few(missing)}")
    return np.array([pool.index[c] for c in prior], dtype=np.int64)


@dataclass
class SimResult:
    engine: str
    seed: int
    first_hit: int  # trial number of the first hit; budget + 1 when none
    hits: int
    best_curve: list[float]  # best |gap - T| among the campaign's trials (not the prior) after each trial
    trials: list[tuple[int, str, float]]  # (trial, id, gap)
    seconds: float


def simulate(pool: Pool, truth: np.ndarray, engine: Engine, prior_rows: np.ndarray, budget: int, batch: int,
             rng: np.random.Generator, on_trial=None, on_round=None) -> SimResult:
    """Run a simulated campaign: the engine proposes, the oracle (``truth``) answers, until ``budget`` trials.
    ``on_round(trial, n, engine, rng)`` is called before each proposal of ``n`` crystals, ``trial`` trials in
    (a campaign on disk saves the engine's and the generator's state there, to resume exactly)."""
    t0 = time.perf_counter()
    observed = list(int(r) for r in prior_rows)
    y = list(truth[prior_rows])
    best = np.inf  # over the campaign's own trials: the prior's best would flatten every curve
    curve, trials = [], []
    first_hit, hits = budget + 1, 0
    trial = 0
    while trial < budget:
        n = min(batch, budget - trial)
        if on_round:
            on_round(trial, n, engine, rng)
        picks = engine.propose(pool, np.asarray(observed, dtype=np.int64), np.asarray(y, dtype=np.float64), n, rng)
        if not picks:
            break
        for row, why in picks:
            trial += 1
            gap = float(truth[row])
            observed.append(row)
            y.append(gap)
            err = abs(gap - pool.target)
            best = min(best, err)
            curve.append(best)
            trials.append((trial, pool.ids[row], gap))
            if err <= pool.tolerance:
                hits += 1
                first_hit = min(first_hit, trial)
            if on_trial:
                on_trial(trial, row, gap, why)
    return SimResult(engine.name, -1, first_hit, hits, curve, trials, time.perf_counter() - t0)


def _prior_text(prior: int | list[str]) -> int | str:
    return prior if isinstance(prior, int) else f"{len(prior)} ids"


def resumable(out: str | Path, store: str | Path, labels_path: str, prior: int | list[str],
              settings: CampaignSettings) -> Campaign | None:
    """The simulated campaign in ``out`` that a search with these inputs resumes (None when ``out`` holds none);
    a ConfigError naming each difference (stored -> given) when it was started with other settings (the budget
    aside: a larger one extends it), another store, labels file or prior."""
    out = Path(out)
    if not (out / "campaign.json").exists():
        return None
    camp = Campaign(out)  # refused here (before any pool is built) when written by another format
    changes = settings_changes(camp.settings, settings, ignore=("budget",))
    given = {"store": str(Path(store).resolve()), "labels": str(Path(labels_path).resolve()),
             "prior": _prior_text(prior)}
    changes += [f"{key}: {camp.meta.get(key)!r} -> {value!r}" for key, value in given.items()
                if camp.meta.get(key) != value]
    if camp.mode != "simulated":
        changes.insert(0, f"mode: {camp.mode!r} -> 'simulated'")
    if changes:
        raise ConfigError(f"{out} holds a campaign with other settings (stored -> given): {'; '.join(changes)}. "
                          "Give the stored ones to resume it, or pass --overwrite to start anew")
    return camp


def run_search(store: str | Path, labels: dict[str, float], labels_path: str, prior: int | list[str],
               settings: CampaignSettings, out: str | Path, overwrite: bool = False, drop_missing: bool = False,
               on_trial: Callable[[Trial, str], None] | None = None,
               on_pca: Callable[[PCAChoice], None] | None = None) -> dict:
    """A simulated campaign on disk, end to end: create it (or resume it: a larger budget extends it), run the
    engine against the labels until the budget is spent, write ``summary.json`` and ``campaign.png``; returns the
    summary. ``on_trial(trial, why)`` is called after each recorded trial, ``on_pca(choice)`` with the PCA used
    (see :func:`gapseek.search.pool.build_pool`). Resuming with other settings, another store, labels file or
    prior is a ConfigError naming each difference; a store whose content changed, a CampaignError.

    Exact resumption: before each round the engine's state and the random generator's are saved
    (``engine_state.json``); a resumed campaign restores them, proposes the interrupted round again (its picks
    already recorded must come again) and goes on, so it picks what an uninterrupted campaign picks, whatever the
    engine. The campaign's lock is held throughout: a second ``search`` on the same directory fails at once."""
    if settings.budget is None:
        raise ConfigError("a simulated campaign needs a budget (trials)")
    out = Path(out)
    if not overwrite:
        resumable(out, store, labels_path, prior, settings)  # other settings are refused before a PCA is fitted
    with Store.open(store) as st:
        pool, truth = build_pool(st, settings, labels, drop_missing=drop_missing, on_pca=on_pca,
                                 origin="gapseek search")
        out.mkdir(parents=True, exist_ok=True)
        with lock(out, wait=False):
            camp = None if overwrite else resumable(out, store, labels_path, prior, settings)
            if camp is None:
                camp = _start(out, store, st, pool, truth, labels_path, prior, settings, overwrite)
            else:
                log.info("resuming %s", out)
                camp.verify_store(st)
                _record_missing_prior(camp, pool, truth, prior, settings)
            _go_on(camp, pool, truth, settings, on_trial)
            return camp.report(len(pool))


def _start(out: Path, store, st: Store, pool: Pool, truth: np.ndarray, labels_path: str, prior: int | list[str],
           settings: CampaignSettings, overwrite: bool) -> Campaign:
    prior_rows = draw_prior(pool, prior, np.random.default_rng(settings.seed))
    camp = Campaign.create(out, store, st, settings, mode="simulated", overwrite=overwrite,
                           extra={"labels": str(Path(labels_path).resolve()), "prior": _prior_text(prior)},
                           prior=(pool, [(pool.ids[r], float(truth[r])) for r in prior_rows]))
    left = pool.proposable()
    left[prior_rows] = False
    if not np.any(np.abs(truth[left] - settings.target) <= settings.tolerance):
        warnings.warn(f"every crystal within {settings.tolerance:g} eV of the target is in the prior: the "
                      "campaign's trials cannot find a hit", GapseekWarning, stacklevel=3)
    return camp


def _record_missing_prior(camp: Campaign, pool: Pool, truth: np.ndarray, prior: int | list[str],
                          settings: CampaignSettings) -> None:
    """A campaign whose start was interrupted before its prior was recorded gets it now."""
    if camp.prior():
        return
    if camp.trials():
        raise CampaignError(f"{camp.dir}/trials.csv has trials but no prior: restore it, or start anew with "
                            "--overwrite")
    log.warning("%s: the prior was never recorded (the campaign's start was interrupted): recording it now",
                camp.dir)
    prior_rows = draw_prior(pool, prior, np.random.default_rng(settings.seed))
    camp.record(pool, [(pool.ids[r], float(truth[r])) for r in prior_rows], "prior")


def _go_on(camp: Campaign, pool: Pool, truth: np.ndarray, settings: CampaignSettings,
           on_trial: Callable[[Trial, str], None] | None) -> None:
    """Simulate the campaign's remaining trials, recording each (the interrupted round first, when there is one)."""
    def record(_trial, row, gap, why):
        written = camp.record(pool, [(pool.ids[row], gap)], "oracle")[0]
        if on_trial:
            on_trial(written, why)

    done = camp.measured()
    if done >= settings.budget:
        return
    engine = make_engine(settings.engine)
    rng, done = _resume_round(camp, pool, truth, engine, settings, done, record)
    if rng is None:
        if done:
            log.info("%s: no saved engine state (a campaign of an older gapseek): the engine starts afresh at trial "
                     "%d", camp.dir, done + 1)
        rng = np.random.default_rng(10_000 + settings.seed + done)
    start = done

    def save(trial, n, eng, gen):
        camp.save_engine_state({"engine": settings.engine, "trial": start + trial, "n": n,
                                "rng": gen.bit_generator.state, "state": eng.get_state()})

    if done < settings.budget:
        observed, _ = camp.observed(pool)
        simulate(pool, truth, engine, observed, settings.budget - done, settings.batch, rng, on_trial=record,
                 on_round=save)


def _resume_round(camp: Campaign, pool: Pool, truth: np.ndarray, engine: Engine, settings: CampaignSettings,
                  done: int, record) -> tuple[np.random.Generator | None, int]:
    """Restore the engine and generator saved before the last round begun (``trial`` trials in, ``n`` crystals);
    when some of its picks were recorded and not all, propose the round again and record the rest. Returns the
    generator (None without a usable saved state) and the trials done."""
    state = camp.engine_state()
    if state is None:
        return None, done
    t, n = int(state["trial"]), int(state["n"])
    if state.get("engine") != settings.engine or not t <= done <= t + n:
        log.warning("%s/%s does not fit the log (%s, round at trial %d of %d; %d trials recorded); the engine "
                    "starts afresh", camp.dir, STATE_FILE, state.get("engine"), t, n, done)
        return None, done
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]
    engine.set_state(state.get("state"))
    if t == done:
        return rng, done
    observed, y = camp.observed(pool)
    k = len(observed) - done + t  # the rows known when the round was proposed
    picks = engine.propose(pool, observed[:k], y[:k], n, rng)
    have = [pool.ids[i] for i in observed[k:]]
    if [pool.ids[i] for i, _ in picks[:len(have)]] != have:
        log.warning("%s: proposing the interrupted round again gave other crystals than those recorded (%s); the "
                    "campaign goes on from the log", camp.dir, few(have))
        return rng, done
    for row, why in picks[len(have):][: settings.budget - done]:
        record(None, row, float(truth[row]), why)
        done += 1
    return rng, done
