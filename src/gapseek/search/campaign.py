"""Campaigns that live on disk, simulated against known labels or driven by a lab (suggest / tell).

A campaign directory holds ``campaign.json`` (format version, store, target, tolerance, engine, inputs) and
``trials.csv``, an append-only log of every measurement (prior rows first, trial 0), flushed and fsynced per
row, so a crash loses nothing and a rerun resumes; ``suggestions.csv`` logs every proposal made to a lab.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from gapseek import __version__
from gapseek.errors import ConfigError, GapseekWarning, InputError, few
from gapseek.pca import fit_pca, load_pca, project, read_vectors, save_pca
from gapseek.search.engines import Engine, Pool, make_engine
from gapseek.store import decode_strings, features_path

__all__ = ["CAMPAIGN_FORMAT", "Campaign", "CampaignSettings", "build_pool", "draw_prior", "run_search", "simulate"]

log = logging.getLogger(__name__)

CAMPAIGN_FORMAT = 1
SUGGESTION_FIELDS = ["time", "id", "formula", "why", "event"]
TRIAL_FIELDS = ["trial", "id", "formula", "band_gap", "abs_error", "hit", "engine", "source"]


@dataclass(frozen=True)
class CampaignSettings:
    """What a campaign searches for and with what.

    ``features``: ``pca`` (the store's PCA of ``vector``, ``components`` of them, fitted if absent) or ``full``
    (the raw vectors). ``label_range``: keep only pool crystals whose known gap lies in it (simulated mode;
    the write-up's setting is 2.3-2.8 eV). ``prediction_input``: the CGCNN prediction as one more input
    column (engines may also use it as the prior mean: engine ``gp``).
    """

    target: float
    tolerance: float = 0.01
    engine: str = "gp"
    vector: str = "pooled"
    features: str = "pca"
    components: int = 3
    budget: int = 30
    batch: int = 1
    seed: int = 0
    label_range: tuple[float, float] | None = None
    prediction_input: bool = False

    def __post_init__(self) -> None:
        if not self.tolerance > 0:
            raise ConfigError(f"tolerance must be > 0; got {self.tolerance}")
        if self.features not in ("pca", "full"):
            raise ConfigError(f"features must be pca or full; got {self.features!r}")
        if self.budget < 1 or self.batch < 1:
            raise ConfigError("budget and batch must be >= 1")


def build_pool(store: str | Path, settings: CampaignSettings, labels: dict[str, float] | None = None,
               drop_missing: bool = False) -> tuple[Pool, np.ndarray | None]:
    """The candidates (store rows; with ``labels`` and ``label_range``, only labelled rows in range) and, in
    simulated mode, their true gaps (the oracle)."""
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
        if truth.size and not (truth.min() <= settings.target <= truth.max()):
            warnings.warn(f"target {settings.target} eV lies outside the labels' range "
                          f"[{truth.min():.3f}, {truth.max():.3f}] eV", GapseekWarning, stacklevel=2)
    if rows.size == 0:
        raise InputError("the candidate pool is empty (no featurized crystal with a label in range)")
    whole = rows.size == len(ids)  # every row of the store (rows are sorted and unique)
    if settings.features == "pca":
        pca = load_pca(f5, settings.vector)
        if pca is None or pca.components.shape[0] < settings.components:
            pca = fit_pca(f5, settings.components, settings.vector)
            save_pca(f5, pca)
        X = project(f5, pca, None if whole else rows)[:, : settings.components]
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
        tmp = d / ".campaign.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, d / "campaign.json")
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

    def record(self, pool: Pool, measured: list[tuple[str, float]], source: str) -> list[dict]:
        """Append measurements (id, gap) as trials; returns the rows written."""
        s = self.settings
        path = self.dir / "trials.csv"
        if self._next is None or self._next[0] != path.stat().st_size:  # first call, or another writer appended
            self._next = (-1, 1 + max((int(r["trial"]) for r in self.trials()), default=0))
        next_trial = self._next[1]
        rows = []
        for cid, gap in measured:
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

    def report(self, pool_size: int) -> dict:
        """Write ``summary.json`` and ``campaign.png`` (best |gap - T| so far, every measured gap) from the log;
        returns the summary."""
        from gapseek.search.report import plot_campaign, write_json

        s = self.settings
        trials = [r for r in self.trials() if r["source"] != "prior"]
        hits = [r["id"] for r in trials if int(r["hit"])]
        first = next((int(r["trial"]) for r in trials if int(r["hit"])), s.budget + 1)
        summary = {"engine": s.engine, "target": s.target, "tolerance": s.tolerance, "budget": s.budget,
                   "pool": pool_size, "trials": len(trials), "first_hit": first, "found": bool(hits),
                   "hits": len(hits), "hit_ids": hits,
                   "best_abs_error": min((float(r["abs_error"]) for r in trials), default=None)}
        write_json(self.dir / "summary.json", summary)
        if trials:
            plot_campaign(self.dir / "campaign.png", [float(r["band_gap"]) for r in trials],
                          [r["id"] for r in trials], s.target, s.tolerance,
                          f"{s.engine}: T = {s.target} eV ± {s.tolerance}, pool {pool_size}")
        return summary

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


def run_search(store: str | Path, labels: dict[str, float], labels_path: str, prior: int | list[str],
               settings: CampaignSettings, out: str | Path, overwrite: bool = False, drop_missing: bool = False,
               on_trial=None) -> dict:
    """A simulated campaign on disk, end to end: create it (or resume it: a larger budget extends it), run the
    engine against the labels until the budget is spent, write ``summary.json`` and ``campaign.png``.
    ``on_trial(row_dict, why)`` is called after each recorded trial."""
    import dataclasses

    pool, truth = build_pool(store, settings, labels, drop_missing=drop_missing)
    out = Path(out)
    if (out / "campaign.json").exists() and not overwrite:
        camp = Campaign(out)
        if dataclasses.replace(camp.settings, budget=settings.budget) != settings:
            raise ConfigError(f"{out} holds a campaign with other settings ({camp.settings}); pass --overwrite "
                              "to start anew")
        log.info("resuming %s", out)
    else:
        camp = Campaign.create(out, store, settings, mode="simulated", overwrite=overwrite,
                               extra={"labels": str(Path(labels_path).resolve()), "prior": prior if isinstance(
                                   prior, int) else f"{len(prior)} ids"})
        prior_rows = draw_prior(pool, prior, np.random.default_rng(settings.seed))
        camp.record(pool, [(pool.ids[r], float(truth[r])) for r in prior_rows], "prior")
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
