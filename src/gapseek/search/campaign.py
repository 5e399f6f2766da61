"""Campaigns that live on disk, simulated against known labels or driven by a lab (suggest / tell).

A campaign directory holds ``campaign.json`` (format version, store, target, tolerance, engine, inputs) and
``trials.csv``, an append-only log of every measurement (prior rows first, trial 0), flushed and fsynced per
row, so a crash loses nothing and a rerun resumes; ``suggestions.csv`` logs every proposal made to a lab.

``trials.csv``'s ``source``: ``prior``, ``oracle`` (a simulated trial), ``lab`` (a measurement of a crystal this
campaign suggested) or ``lab-unsuggested`` (told, never suggested: the lab chose it). Logs written before the last
of these existed mark every lab trial ``lab`` and read as they are.

The checks that keep a typo from wasting a campaign: a negative target is an error (:class:`CampaignSettings`);
in a simulated campaign, a target with no labelled crystal of the pool within the tolerance is an error naming
the labels' range, and one outside that range (hits still possible) a warning (:func:`build_pool`); in a lab
campaign, a target more than :data:`LAB_TARGET_MARGIN` eV outside the prior's measured gaps is a warning
(:func:`start_lab_campaign`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import h5py
import numpy as np

from gapseek import __version__
from gapseek.errors import ConfigError, GapseekWarning, InputError, few
from gapseek.pca import PCAResult, fit_pca, load_pca, project, read_vectors, save_pca, saved_vectors
from gapseek.search.engines import Engine, Pool, make_engine
from gapseek.search.report import write_json
from gapseek.store import decode_strings, features_path

__all__ = ["CAMPAIGN_FORMAT", "LAB_TARGET_MARGIN", "Campaign", "CampaignSettings", "PCAChoice", "build_pool",
           "check_lab_target", "draw_prior", "resolve_pca", "resumable", "run_search", "settings_changes", "simulate",
           "start_lab_campaign"]

log = logging.getLogger(__name__)

CAMPAIGN_FORMAT = 1
SUGGESTION_FIELDS = ["time", "id", "formula", "why", "event"]
TRIAL_FIELDS = ["trial", "id", "formula", "band_gap", "abs_error", "hit", "engine", "source"]
LAB_TARGET_MARGIN = 1.0  # eV: a lab target farther than this outside the prior's measured gaps is warned about


@dataclass(frozen=True)
class CampaignSettings:
    """What a campaign searches for and with what.

    ``features``: ``pca`` (the store's PCA of ``vector``, ``components`` of them, fitted if absent) or ``full``
    (the raw vectors). ``label_range``: keep only pool crystals whose known gap lies in it (simulated mode;
    the write-up's setting is 2.3-2.8 eV). ``prediction_input``: the CGCNN prediction as one more input
    column (engines may also use it as the prior mean: engine ``gp``). ``budget``: trials of a simulated
    campaign; None for a lab campaign (it measures until the lab stops).
    """

    target: float
    tolerance: float = 0.01
    engine: str = "gp"
    vector: str = "pooled"
    features: str = "pca"
    components: int = 3
    budget: int | None = 30
    batch: int = 1
    seed: int = 0
    label_range: tuple[float, float] | None = None
    prediction_input: bool = False

    def __post_init__(self) -> None:
        if not (np.isfinite(self.target) and self.target >= 0):
            raise ConfigError(f"the target is a band gap, >= 0 eV; got --target {self.target:g}")
        if not (np.isfinite(self.tolerance) and self.tolerance > 0):
            raise ConfigError(f"tolerance must be > 0; got {self.tolerance}")
        if self.features not in ("pca", "full"):
            raise ConfigError(f"features must be pca or full; got {self.features!r}")
        if (self.budget is not None and self.budget < 1) or self.batch < 1:
            raise ConfigError("budget and batch must be >= 1")


def settings_changes(stored: CampaignSettings, given: CampaignSettings, ignore: tuple[str, ...] = ()) -> list[str]:
    """``["target: 2.534 -> 2.6", ...]``: the fields that differ, stored value first."""
    return [f"{f.name}: {getattr(stored, f.name)!r} -> {getattr(given, f.name)!r}" for f in fields(stored)
            if f.name not in ignore and getattr(stored, f.name) != getattr(given, f.name)]


@dataclass(frozen=True)
class PCAChoice:
    """The PCA a campaign's engine inputs come from: ``pca`` (its leading ``components`` are used), whether it was
    fitted now (and saved, unless saving failed), and ``note``, one line for the user saying which it is."""

    pca: PCAResult
    components: int
    fitted_now: bool
    note: str


def _when(stamp: str | None) -> str:
    """``2024-05-01T10:20:30+0200`` -> ``2024-05-01 10:20``."""
    return stamp[:16].replace("T", " ") if stamp else "an unrecorded date"


def resolve_pca(store: str | Path, settings: CampaignSettings, origin: str = "a gapseek campaign"
                ) -> PCAChoice | None:
    """Which PCA a campaign with ``settings`` uses (None with ``features='full'``): the store's saved PCA of
    ``settings.vector`` (its leading ``settings.components``) when it has at least that many components and was
    fitted on the store's current rows; otherwise one fitted now with ``settings.components`` and saved in the
    store (stamped with ``origin``), replacing the saved one. ``note`` says which, and why a fit was needed."""
    if settings.features != "pca":
        return None
    f5 = features_path(store)
    with h5py.File(f5, "r") as f:
        n = int(f["ids"].shape[0])
    k, v = settings.components, settings.vector
    stored = load_pca(f5, v)
    if stored is None:
        others = [w for w in saved_vectors(f5) if w != v]
        why = f"the store has no PCA of {v}" + (
            f" (it has one of {' and '.join(others)}: --vector {others[0]} would use it)" if others else "")
    elif stored.n_components < k:
        why = (f"the store's {v} PCA (fitted by {stored.origin or 'gapseek'} on {_when(stored.created)}) has "
               f"{stored.n_components} component(s), {k} asked")
    elif stored.n_rows != n:
        why = (f"the store's {v} PCA was fitted on {stored.n_rows} rows (on {_when(stored.created)}); the store now "
               f"holds {n}")
    else:
        share = float(stored.explained_variance_ratio[:k].sum())
        used = (f"its first {k} of {stored.n_components} components" if stored.n_components > k
                else f"its {k} component(s)")
        return PCAChoice(stored, k, False, f"PCA: the store's {v} PCA fitted by {stored.origin or 'gapseek'} on "
                                           f"{_when(stored.created)} ({stored.n_rows} rows), {used}, "
                                           f"{share:.0%} of the variance")
    pca = fit_pca(f5, k, v)
    share = float(pca.explained_variance_ratio.sum())
    try:
        save_pca(f5, pca, origin=origin)
        saved = f"saved in {f5}:/pca/{v}" + (" in place of the old one" if stored is not None else "")
    except OSError as exc:  # a read-only store: the campaign still runs, on this fit
        saved = f"NOT saved ({exc})"
    return PCAChoice(pca, k, True, f"PCA: {why}; fitted {k} component(s) of {v} now ({n} rows, {share:.0%} of "
                                   f"the variance), {saved}")


def _labels_span(truth: np.ndarray, settings: CampaignSettings) -> str:
    rng = (f" (--label-range {settings.label_range[0]:g} {settings.label_range[1]:g})"
           if settings.label_range is not None else "")
    return f"the {truth.size} labelled crystal(s) of the pool{rng} span {truth.min():.3f}-{truth.max():.3f} eV"


def build_pool(store: str | Path, settings: CampaignSettings, labels: dict[str, float] | None = None,
               drop_missing: bool = False, pca: PCAChoice | None = None,
               on_pca: Callable[[PCAChoice], None] | None = None, origin: str = "a gapseek campaign"
               ) -> tuple[Pool, np.ndarray | None]:
    """The candidates (store rows; with ``labels`` and ``label_range``, only labelled rows in range) and, in
    simulated mode, their true gaps (the oracle). ``pca``: from :func:`resolve_pca`; when not given it is resolved
    here, after the checks of the labels and target, and handed to ``on_pca`` (default: its note logged at INFO),
    so the caller can tell the user which PCA the campaign uses. With labels, a target that no labelled crystal of
    the pool is within the tolerance of is a ConfigError (nothing to find), and one outside the labels' range a
    GapseekWarning."""
    f5 = features_path(store)
    with h5py.File(f5, "r") as f:
        ids = decode_strings(f["ids"][()])
        formula = decode_strings(f["formula"][()])
        prediction = f["prediction"][()].astype(np.float64)
    index = {cid: k for k, cid in enumerate(ids)}
    rows = np.arange(len(ids))
    truth = None
    if labels is not None:
        missing = [cid for cid in labels if cid not in index]
        if missing:
            msg = f"{len(missing)} labelled id(s) are not featurized in {f5}: {few(missing)}"
            if not drop_missing:
                raise InputError(msg + " (pass --drop-missing to leave them out)")
            warnings.warn(msg + "; left out", GapseekWarning, stacklevel=2)
        rows = np.array(sorted(index[c] for c in labels if c in index), dtype=np.int64)
        truth = np.array([labels[ids[k]] for k in rows])
        if settings.label_range is not None:
            lo, hi = settings.label_range
            keep = (truth >= lo) & (truth <= hi)
            rows, truth = rows[keep], truth[keep]
    if rows.size == 0:
        raise InputError("the candidate pool is empty (no featurized crystal with a label in range)")
    if truth is not None:
        t, d = settings.target, settings.tolerance
        findable = int(np.sum(np.abs(truth - t) <= d))
        if findable == 0:
            raise ConfigError(f"no labelled crystal has a gap within {d:g} eV of the target {t:g} eV: "
                              f"{_labels_span(truth, settings)}, so the campaign has nothing to find "
                              f"(a typo in --target?)")
        if not truth.min() <= t <= truth.max():
            warnings.warn(f"target {t:g} eV lies outside the labels' range: {_labels_span(truth, settings)} "
                          f"({findable} within {d:g} eV of the target)", GapseekWarning, stacklevel=2)
    whole = rows.size == len(ids)  # every row of the store (rows are sorted and unique)
    if settings.features == "pca":
        if pca is None:
            pca = resolve_pca(f5, settings, origin=origin)
            (on_pca or (lambda c: log.info("%s", c.note)))(pca)
        elif pca.components < settings.components:
            raise ConfigError(f"the PCA given has {pca.components} components; the settings ask for "
                              f"{settings.components}")
        X = project(f5, pca.pca, None if whole else rows)[:, : settings.components]
    else:
        X = read_vectors(f5, settings.vector, None if whole else rows)
    if settings.prediction_input:
        X = np.hstack([X, prediction[rows, None]])
    sd = X.std(axis=0)
    X = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    if whole:  # its id index is the pool's
        pool = Pool(ids, formula, X, prediction, settings.target, settings.tolerance, index)
    else:
        pool = Pool([ids[k] for k in rows], [formula[k] for k in rows], X, prediction[rows], settings.target,
                    settings.tolerance)
    return pool, truth


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
             rng: np.random.Generator, on_trial=None) -> SimResult:
    """Run a simulated campaign: the engine proposes, the oracle (``truth``) answers, until ``budget`` trials."""
    t0 = time.perf_counter()
    observed = list(int(r) for r in prior_rows)
    y = list(truth[prior_rows])
    best = np.inf  # over the campaign's own trials: the prior's best would flatten every curve
    curve, trials = [], []
    first_hit, hits = budget + 1, 0
    trial = 0
    while trial < budget:
        picks = engine.propose(pool, np.asarray(observed), np.asarray(y), min(batch, budget - trial), rng)
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


class Campaign:
    """A campaign directory: ``campaign.json`` + append-only ``trials.csv`` (+ ``suggestions.csv``)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        meta = self.dir / "campaign.json"
        if not meta.is_file():
            raise InputError(f"{self.dir} is not a gapseek campaign (no campaign.json)")
        self.meta = json.loads(meta.read_text())
        fmt = self.meta.get("gapseek_campaign")
        if fmt != CAMPAIGN_FORMAT:
            raise InputError(f"{self.dir} was written by another gapseek version (campaign format {fmt}, "
                             f"gapseek {self.meta.get('gapseek_version')}); this gapseek reads format "
                             f"{CAMPAIGN_FORMAT}")
        s = self.meta["settings"]
        if s.get("label_range") is not None:
            s["label_range"] = tuple(s["label_range"])
        self.settings = CampaignSettings(**s)
        self.store = self.meta["store"]
        self._next: tuple[int, int] | None = None  # (size of trials.csv, next trial number) once read

    @classmethod
    def create(cls, directory: str | Path, store: str | Path, settings: CampaignSettings, mode: str,
               extra: dict | None = None, overwrite: bool = False) -> Campaign:
        d = Path(directory)
        if (d / "campaign.json").exists() and not overwrite:
            raise ConfigError(f"{d} already holds a campaign; resume it, or pass --overwrite to start anew")
        d.mkdir(parents=True, exist_ok=True)
        for name in ("trials.csv", "suggestions.csv"):
            (d / name).unlink(missing_ok=True)
        meta = {"gapseek_campaign": CAMPAIGN_FORMAT, "gapseek_version": __version__, "mode": mode,
                "store": str(Path(store).resolve()), "settings": asdict(settings),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {})}
        write_json(d / "campaign.json", meta)
        with open(d / "trials.csv", "w", newline="") as fh:
            csv.writer(fh).writerow(TRIAL_FIELDS)
        return cls(d)

    # ------------------------------------------------------------------------------------ the log
    def trials(self) -> list[dict]:
        path = self.dir / "trials.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        return [r for r in rows if r.get("id")]

    def append(self, rows: list[dict]) -> None:
        with open(self.dir / "trials.csv", "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=TRIAL_FIELDS)
            for r in rows:
                w.writerow(r)
            fh.flush()
            os.fsync(fh.fileno())

    def log_suggestions(self, rows: list[tuple[str, str, str]], event: str = "suggested") -> None:
        """Append ``(id, formula, why)`` rows to ``suggestions.csv`` as ``suggested`` (in flight until told) or
        ``released`` (will not be measured: no longer in flight)."""
        path = self.dir / "suggestions.csv"
        new = not path.exists() or path.stat().st_size == 0  # empty: a crash before its header was written
        if not new:
            self._upgrade_suggestions(path)
        with open(path, "a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(SUGGESTION_FIELDS)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            for r in rows:
                w.writerow([stamp, *r, event])
            fh.flush()
            os.fsync(fh.fileno())

    def record(self, pool: Pool, measured: list[tuple[str, float]], source: str | list[str]) -> list[dict]:
        """Append measurements (id, gap) as trials (``source``: one for all, or one per measurement); returns the
        rows written."""
        s = self.settings
        sources = [source] * len(measured) if isinstance(source, str) else list(source)
        if len(sources) != len(measured):
            raise ValueError("one source per measurement")
        path = self.dir / "trials.csv"
        if self._next is None or self._next[0] != path.stat().st_size:  # first call, or another writer appended
            self._next = (-1, 1 + max((int(r["trial"]) for r in self.trials()), default=0))
        next_trial = self._next[1]
        rows = []
        for (cid, gap), source in zip(measured, sources):
            row = pool.index[cid]
            err = abs(gap - s.target)
            rows.append({"trial": 0 if source == "prior" else next_trial, "id": cid, "formula": pool.formula[row],
                         "band_gap": repr(float(gap)), "abs_error": f"{err:.6g}", "hit": int(err <= s.tolerance),
                         "engine": s.engine, "source": source})
            if source != "prior":
                next_trial += 1
        self.append(rows)
        self._next = (path.stat().st_size, next_trial)
        return rows

    @property
    def mode(self) -> str:
        """``simulated`` (``gapseek search``) or ``lab`` (``gapseek campaign``)."""
        return self.meta.get("mode", "lab")

    def report(self, pool_size: int) -> dict:
        """Write ``summary.json`` and ``campaign.png`` (best |gap - T| so far from the prior's best on, every
        measured gap) from the log; returns the summary.

        ``first_hit`` is the trial of the first hit, or None with ``found`` false; then ``first_hit_censored_at``
        is the number of trials done without a hit (the first hit, if any, comes later; the benchmark's means
        count such a campaign as budget + 1). ``budget`` is None for a lab campaign."""
        from gapseek.search.report import plot_campaign

        s = self.settings
        simulated = self.mode == "simulated"
        rows = self.trials()
        prior = [r for r in rows if r["source"] == "prior"]
        trials = [r for r in rows if r["source"] != "prior"]
        hits = [r["id"] for r in trials if int(r["hit"])]
        first = next((int(r["trial"]) for r in trials if int(r["hit"])), None)
        best = min(trials, key=lambda r: float(r["abs_error"]), default=None)
        pbest = min(prior, key=lambda r: float(r["abs_error"]), default=None)
        summary = {"mode": self.mode, "engine": s.engine, "target": s.target, "tolerance": s.tolerance,
                   "budget": s.budget if simulated else None, "pool": pool_size, "trials": len(trials),
                   "found": bool(hits), "first_hit": first,
                   "first_hit_censored_at": None if hits else len(trials),
                   "hits": len(hits), "hit_ids": hits,
                   "best_abs_error": None if best is None else float(best["abs_error"]),
                   "best_id": None if best is None else best["id"],
                   "prior": len(prior), "prior_hits": sum(int(r["hit"]) for r in prior),
                   "prior_best_abs_error": None if pbest is None else float(pbest["abs_error"]),
                   "prior_best_id": None if pbest is None else pbest["id"]}
        if not simulated:
            summary["unsuggested"] = sum(r["source"] == "lab-unsuggested" for r in trials)
        write_json(self.dir / "summary.json", summary)
        if trials:
            if simulated:
                head = f"simulated campaign, {s.engine}, budget {s.budget}"
            else:
                head = f"lab campaign, {s.engine}"
            result = (f"{len(hits)} hit(s), the first at trial {first}" if hits
                      else f"no hit in {len(trials)} trial(s)")
            plot_campaign(self.dir / "campaign.png", [float(r["band_gap"]) for r in trials],
                          [r["id"] for r in trials], s.target, s.tolerance,
                          f"{head}: T = {s.target:g} ± {s.tolerance:g} eV, pool {pool_size}, prior {len(prior)}: "
                          f"{result}",
                          prior_gaps=[float(r["band_gap"]) for r in prior], prior_ids=[r["id"] for r in prior],
                          budget=s.budget if simulated else None,
                          unsuggested=None if simulated else [r["source"] == "lab-unsuggested" for r in trials])
        return summary

    def suggested(self) -> set[str]:
        """Every id this campaign ever suggested (``suggestions.csv``), released or not."""
        path = self.dir / "suggestions.csv"
        if not path.is_file():
            return set()
        with open(path, newline="") as fh:
            return {r["id"] for r in csv.DictReader(fh) if r.get("id") and r.get("event", "suggested") == "suggested"}

    def tell(self, pool: Pool, measured: list[tuple[str, float]]) -> tuple[list[dict], list[str]]:
        """Record lab measurements: ``lab`` for crystals this campaign suggested, ``lab-unsuggested`` for the
        others (legitimate: the lab may measure what it likes, but the caller should say so). Returns the rows
        written and the unsuggested ids."""
        suggested = self.suggested()
        sources = ["lab" if cid in suggested else "lab-unsuggested" for cid, _ in measured]
        rows = self.record(pool, measured, sources)
        return rows, [r["id"] for r in rows if r["source"] == "lab-unsuggested"]

    @staticmethod
    def _upgrade_suggestions(path: Path) -> None:
        """A log written before suggestions had an ``event`` column gets one (every row ``suggested``), atomically.
        Only the header is read when the log is current."""
        with open(path, newline="") as fh:
            if next(csv.reader(fh), SUGGESTION_FIELDS) == SUGGESTION_FIELDS:
                return
            fh.seek(0)
            rows = list(csv.reader(fh))
        tmp = path.with_name(".suggestions.csv.tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(SUGGESTION_FIELDS)
            w.writerows(r[:4] + ["suggested"] for r in rows[1:] if r)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def pending(self, pool: Pool) -> np.ndarray:
        """Pool rows suggested (``suggestions.csv``), neither told nor released since, oldest suggestion first."""
        path = self.dir / "suggestions.csv"
        if not path.is_file():
            return np.zeros(0, dtype=np.int64)
        told = {r["id"] for r in self.trials()}
        state: dict[str, bool] = {}
        with open(path, newline="") as fh:
            for r in csv.DictReader(fh):
                if r.get("id"):
                    in_flight = r.get("event", "suggested") != "released"
                    if in_flight and state.get(r["id"]):
                        continue  # suggested again while in flight: keeps its first place
                    state.pop(r["id"], None)
                    state[r["id"]] = in_flight
        out = [pool.index[c] for c, live in state.items() if live and c not in told and c in pool.index]
        return np.asarray(out, dtype=np.int64)

    def release(self, pool: Pool, ids: list[str]) -> None:
        """Mark pending suggestions as not to be measured (they may be proposed again); unknown or not pending ids
        are an error and nothing is written."""
        pending = {pool.ids[i] for i in self.pending(pool)}
        wrong = [c for c in ids if c not in pending]
        if wrong:
            raise InputError(f"{len(wrong)} id(s) are not pending suggestions of {self.dir}: {few(wrong)} "
                             f"(pending: {few(sorted(pending)) or 'none'}; nothing was released)")
        self.log_suggestions([(c, pool.formula[pool.index[c]], "released by tell --release") for c in ids],
                             event="released")

    def observed(self, pool: Pool) -> tuple[np.ndarray, np.ndarray]:
        rows = self.trials()
        return (np.array([pool.index[r["id"]] for r in rows], dtype=np.int64),
                np.array([float(r["band_gap"]) for r in rows]))


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
               on_trial=None, on_pca: Callable[[PCAChoice], None] | None = None) -> dict:
    """A simulated campaign on disk, end to end: create it (or resume it: a larger budget extends it), run the
    engine against the labels until the budget is spent, write ``summary.json`` and ``campaign.png``.
    ``on_trial(row_dict, why)`` is called after each recorded trial, ``on_pca(choice)`` with the PCA used (see
    :func:`build_pool`). Resuming with other settings, another store, labels file or prior is
    a ConfigError naming each difference."""
    if settings.budget is None:
        raise ConfigError("a simulated campaign needs a budget (trials)")
    out = Path(out)
    camp = None if overwrite else resumable(out, store, labels_path, prior, settings)
    pool, truth = build_pool(store, settings, labels, drop_missing=drop_missing, on_pca=on_pca,
                             origin="gapseek search")
    if camp is not None:
        log.info("resuming %s", out)
    else:
        camp = Campaign.create(out, store, settings, mode="simulated", overwrite=overwrite,
                               extra={"labels": str(Path(labels_path).resolve()), "prior": _prior_text(prior)})
        prior_rows = draw_prior(pool, prior, np.random.default_rng(settings.seed))
        camp.record(pool, [(pool.ids[r], float(truth[r])) for r in prior_rows], "prior")
        left = np.ones(len(pool), dtype=bool)
        left[prior_rows] = False
        if not np.any(np.abs(truth[left] - settings.target) <= settings.tolerance):
            warnings.warn(f"every crystal within {settings.tolerance:g} eV of the target is in the prior: the "
                          "campaign's trials cannot find a hit", GapseekWarning, stacklevel=2)
    observed, _ = camp.observed(pool)
    done = sum(1 for r in camp.trials() if r["source"] != "prior")

    def record(_trial, row, gap, why):
        written = camp.record(pool, [(pool.ids[row], gap)], "oracle")[0]
        if on_trial:
            on_trial(written, why)

    if done < settings.budget:
        simulate(pool, truth, make_engine(settings.engine), observed, settings.budget - done, settings.batch,
                 np.random.default_rng(10_000 + settings.seed + done), on_trial=record)
    return camp.report(len(pool))


def check_lab_target(settings: CampaignSettings, prior: dict[str, float], pool: Pool,
                     margin: float = LAB_TARGET_MARGIN) -> str | None:
    """Warn (GapseekWarning, and return the message) when the target lies more than ``margin`` eV outside the
    gaps the prior measured: likely a typo (a negative target is refused by the settings already)."""
    gaps = np.fromiter(prior.values(), dtype=float)
    t = settings.target
    lo, hi = float(gaps.min()), float(gaps.max())
    off = max(lo - t, t - hi)
    if off <= margin:
        return None
    pred = pool.prediction
    near = int(np.sum(np.abs(pred - t) <= 0.5))
    msg = (f"target {t:g} eV lies {off:.2f} eV outside the prior's {gaps.size} measured gap(s), {lo:.3f}-{hi:.3f} eV "
           f"(CGCNN predicts {pred.min():.2f}-{pred.max():.2f} eV over the store's {len(pool)} crystals, {near} "
           f"within 0.5 eV of the target): a typo in --target?")
    warnings.warn(msg, GapseekWarning, stacklevel=2)
    return msg


def start_lab_campaign(store: str | Path, settings: CampaignSettings, prior: dict[str, float], out: str | Path,
                       overwrite: bool = False, on_pca: Callable[[PCAChoice], None] | None = None
                       ) -> tuple[Campaign, Pool]:
    """Create a lab campaign in ``out`` from the measurements made so far (``prior``: id -> gap, every id in the
    store): the target is checked against them (:func:`check_lab_target`), the prior recorded as trial 0."""
    if not prior:
        raise InputError("a lab campaign needs at least one prior measurement")
    out = Path(out)
    if (out / "campaign.json").exists() and not overwrite:  # before the pool is built (and a PCA perhaps fitted)
        raise ConfigError(f"{out} already holds a campaign; `gapseek suggest {out}` continues it, --overwrite "
                          "starts anew")
    if settings.budget is not None:
        settings = dataclasses.replace(settings, budget=None)
    pool, _ = build_pool(store, settings, None, on_pca=on_pca, origin="gapseek campaign")
    draw_prior(pool, list(prior))  # every prior id must be in the store
    check_lab_target(settings, prior, pool)
    camp = Campaign.create(out, store, settings, mode="lab", overwrite=overwrite)
    camp.record(pool, list(prior.items()), "prior")
    return camp, pool
