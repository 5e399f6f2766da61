"""Campaigns that live on disk, simulated against known labels or driven by a lab (suggest / tell).

A campaign directory holds ``campaign.json`` (format version, store and its content digest, target, tolerance,
engine, inputs) and ``trials.csv``, the log of every measurement (prior rows first, trial 0), each write of it whole
or not at all (temporary file, fsync, rename), so a crash or a full disk loses nothing and a rerun resumes;
``suggestions.csv`` logs every proposal made to a lab; ``failed.csv`` the crystals a lab could not make or
measure (``tell --failed``: kept apart from the trials, never proposed again); ``engine_state.json`` (simulated
campaigns) the engine's and the random generator's state before the last round, so a resumed campaign picks what
an uninterrupted one would.
Writers serialise on ``.campaign.lock`` (see :class:`Campaign`).

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
import hashlib
import io
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from gapseek import __version__
from gapseek.errors import CampaignError, ConfigError, GapseekWarning, InputError, few
from gapseek.pca import PCAResult, fit_pca, load_pca, open_h5, project, read_vectors, save_pca, saved_vectors
from gapseek.search.engines import Engine, Pool, make_engine
from gapseek.search.filters import allowed_rows, check_elements, filter_active
from gapseek.search.locks import atomic_write, file_lock
from gapseek.search.report import write_json
from gapseek.store import decode_strings, features_path

__all__ = ["CAMPAIGN_FORMAT", "LAB_TARGET_MARGIN", "Campaign", "CampaignSettings", "PCAChoice", "build_pool",
           "check_lab_target", "draw_prior", "open_campaign", "resolve_pca", "resumable", "run_search",
           "settings_changes", "simulate", "start_lab_campaign", "store_digest"]

log = logging.getLogger(__name__)

CAMPAIGN_FORMAT = 1
SUGGESTION_FIELDS = ["time", "id", "formula", "why", "event"]
FAILED_FIELDS = ["id", "formula", "reason", "time"]
FAILED_FILE = "failed.csv"
TRIAL_FIELDS = ["trial", "id", "formula", "band_gap", "abs_error", "hit", "engine", "source"]
LAB_TARGET_MARGIN = 1.0  # eV: a lab target farther than this outside the prior's measured gaps is warned about
LOCK_FILE = ".campaign.lock"
STATE_FILE = "engine_state.json"
_DIGEST_BLOCK = 65_536  # store rows hashed at a time


@dataclass(frozen=True)
class CampaignSettings:
    """What a campaign searches for and with what.

    ``features``: ``pca`` (the store's PCA of ``vector``, ``components`` of them, fitted if absent) or ``full``
    (the raw vectors). ``label_range``: keep only pool crystals whose known gap lies in it (simulated mode;
    the write-up's setting is 2.3-2.8 eV). ``prediction_input``: the CGCNN prediction as one more input
    column (engines may also use it as the prior mean: engine ``gp``). ``budget``: trials of a simulated
    campaign; None for a lab campaign (it measures until the lab stops).

    Candidate filters (:mod:`gapseek.search.filters`; crystals they leave out are never proposed, the prior may
    hold them): ``require_elements`` (every one present), ``exclude_elements`` (none present), ``max_elements``
    (distinct elements), ``max_atoms`` (the store's ``n_atoms``), ``exclude`` (ids or reduced formulas). A
    ``campaign.json`` written before they existed has none: no filter.
    """

    target: float
    tolerance: float = 0.01
    engine: str = "shell"
    vector: str = "pooled"
    features: str = "pca"
    components: int = 3
    budget: int | None = 30
    batch: int = 1
    seed: int = 0
    label_range: tuple[float, float] | None = None
    prediction_input: bool = False
    require_elements: tuple[str, ...] = ()
    exclude_elements: tuple[str, ...] = ()
    max_elements: int | None = None
    max_atoms: int | None = None
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        def as_tuple(value) -> tuple[str, ...]:
            if value is None:
                return ()
            if isinstance(value, str):  # "Fe,O"
                value = value.split(",")
            return tuple(str(v).strip() for v in value if str(v).strip())

        for name in ("require_elements", "exclude_elements"):  # frozen: set once here, as read from JSON or given
            object.__setattr__(self, name, check_elements(as_tuple(getattr(self, name)), "--" + name.replace("_", "-")))
        object.__setattr__(self, "exclude", as_tuple(self.exclude))
        both = sorted(set(self.require_elements) & set(self.exclude_elements))
        if both:
            raise ConfigError(f"{', '.join(both)} both required (--require-elements) and excluded "
                              "(--exclude-elements): no crystal can pass")
        for name in ("max_elements", "max_atoms"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number >= 1 (or not given: no "
                                  f"limit); got {value!r}")
        if self.max_elements is not None and len(self.require_elements) > self.max_elements:
            raise ConfigError(f"--require-elements names {len(self.require_elements)} elements, more than "
                              f"--max-elements {self.max_elements}: no crystal can pass")
        if not (np.isfinite(self.target) and self.target >= 0):
            raise ConfigError(f"the target is a band gap, >= 0 eV; got --target {self.target:g}")
        if not (np.isfinite(self.tolerance) and self.tolerance > 0):
            raise ConfigError(f"tolerance must be > 0; got {self.tolerance}")
        if self.features not in ("pca", "full"):
            raise ConfigError(f"features must be pca or full; got {self.features!r}")
        if (self.budget is not None and self.budget < 1) or self.batch < 1:
            raise ConfigError("budget and batch must be >= 1")


FILTER_FIELDS = ("require_elements", "exclude_elements", "max_elements", "max_atoms", "exclude")


def _settings_json(settings: CampaignSettings) -> dict:
    """``campaign.json``'s settings: every field, but the candidate filters only when set (so a campaign without
    them reads as before, for an older gapseek too; one with them is refused by a gapseek that would ignore
    them)."""
    out = asdict(settings)
    for name in FILTER_FIELDS:
        if out[name] in ((), [], None):
            del out[name]
    return out


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
    with open_h5(f5, "r") as f:
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
    GapseekWarning. The settings' candidate filters (:func:`gapseek.search.filters.allowed_rows`) mark the rows
    they leave out as ``excluded`` (never proposed; still in the pool); filters that leave nothing to propose, or
    (with labels) leave out every crystal within the tolerance of the target, are a ConfigError."""
    f5 = features_path(store)
    with open_h5(f5, "r") as f:
        ids = decode_strings(f["ids"][()])
        formula = decode_strings(f["formula"][()])
        prediction = f["prediction"][()].astype(np.float64)
        n_atoms = f["n_atoms"][()] if settings.max_atoms is not None else None
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
    allowed = None
    if filter_active(settings):
        allowed, notes, unmatched = allowed_rows(settings, [ids[k] for k in rows], [formula[k] for k in rows],
                                                 None if n_atoms is None else n_atoms[rows])
        if unmatched:
            warnings.warn(f"{len(unmatched)} --exclude entr(ies) match no crystal of the pool (neither an id nor a "
                          f"formula of it): {few(unmatched)}", GapseekWarning, stacklevel=2)
        kept = int(allowed.sum())
        if kept == 0:
            raise ConfigError(f"the candidate filters leave no crystal of the {rows.size} in the pool to propose "
                              f"({'; '.join(notes)}): loosen them")
        log.info("candidate filters: %d of %d crystal(s) may be proposed (%s)", kept, rows.size, "; ".join(notes))
    if truth is not None:
        t, d = settings.target, settings.tolerance
        near = np.abs(truth - t) <= d
        findable = int(np.sum(near))
        if findable == 0:
            raise ConfigError(f"no labelled crystal has a gap within {d:g} eV of the target {t:g} eV: "
                              f"{_labels_span(truth, settings)}, so the campaign has nothing to find "
                              f"(a typo in --target?)")
        if allowed is not None and not np.any(near & allowed):
            raise ConfigError(f"the {findable} labelled crystal(s) within {d:g} eV of the target {t:g} eV are all "
                              "left out by the candidate filters, so the campaign has nothing to find: loosen them")
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
    if allowed is not None:
        pool.exclude(np.nonzero(~allowed)[0])
        pool.filtered_out = int(np.sum(~allowed))
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


def store_digest(store: str | Path) -> tuple[str, int]:
    """``(sha256 hex, rows)`` of a store's content: its ids and feature arrays (``prediction``, ``pooled``,
    ``hidden``), read in blocks. Two stores with the same ids but other features differ; the same store copied or
    moved does not (a saved PCA is not part of it)."""
    h = hashlib.sha256()
    with open_h5(features_path(store), "r") as f:
        n = int(f["ids"].shape[0])
        h.update(f"gapseek store digest 1; rows {n}\n".encode())
        for lo in range(0, n, _DIGEST_BLOCK):
            ids = [v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogateescape")
                   for v in f["ids"][lo:lo + _DIGEST_BLOCK]]
            h.update(b"\0".join(ids) + b"\0")
        for name in ("prediction", "pooled", "hidden"):
            h.update(f"\n{name} {f[name].shape}\n".encode())
            for lo in range(0, n, _DIGEST_BLOCK):
                h.update(np.ascontiguousarray(f[name][lo:lo + _DIGEST_BLOCK], dtype="<f4").tobytes())
    return h.hexdigest(), n


def _stamp(store: str | Path) -> list[int]:
    """What changes whenever a store's file is rewritten or replaced: size, mtime (ns), inode."""
    st = os.stat(features_path(store))
    return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ino)]


def _lock(directory: Path, wait: bool = True):
    """The lock of a campaign directory (``.campaign.lock``): one writer at a time (see :class:`Campaign`)."""
    return file_lock(directory / LOCK_FILE, f"the campaign in {directory}", wait=wait, error=CampaignError)


def _csv_text(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)  # \r\n line ends, as every trials.csv gapseek wrote
    return buf.getvalue()


def _trial_rows(settings: CampaignSettings, pool: Pool, measured: list[tuple[str, float]], sources: list[str],
                next_trial: int) -> list[dict]:
    rows = []
    for (cid, gap), source in zip(measured, sources):
        row = pool.index[cid]
        err = abs(gap - settings.target)
        rows.append({"trial": 0 if source == "prior" else next_trial, "id": cid, "formula": pool.formula[row],
                     "band_gap": repr(float(gap)), "abs_error": f"{err:.6g}", "hit": int(err <= settings.tolerance),
                     "engine": settings.engine, "source": source})
        if source != "prior":
            next_trial += 1
    return rows


def _parse_trials(path: Path, text: str, first_line: int = 1) -> list[tuple[int, dict]]:
    """``(line number, row)`` of the trial lines of ``text`` (no header; its first line is ``first_line``);
    a line that is not a whole trial is a CampaignError naming it."""
    out = []
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    for row in reader:
        k = first_line + start - 1
        start = reader.line_num + 1
        if not row:
            continue
        problem = None
        if len(row) != len(TRIAL_FIELDS):
            problem = f"{len(row)} fields, expected {len(TRIAL_FIELDS)} ({','.join(TRIAL_FIELDS)})"
            if len(row) > len(TRIAL_FIELDS):
                problem += ("; a row cut short by an interrupted write (an older gapseek appended rows in place) with "
                            "the next row glued onto it?")
        else:
            r = dict(zip(TRIAL_FIELDS, row))
            try:
                int(r["trial"]), float(r["band_gap"]), float(r["abs_error"]), int(r["hit"])
            except ValueError:
                problem = "trial, band_gap, abs_error or hit is not a number"
            if not r["id"].strip():
                problem = "no id"
        if problem:
            shown = ",".join(row)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise CampaignError(f"{path}, line {k} ({shown!r}): {problem}. The log is corrupt there: fix or delete "
                                "that line by hand (a measurement deleted must be told again), or start the "
                                "campaign anew with --overwrite")
        out.append((k, r))
    return out


def _torn_tail(text: str) -> tuple[str, str]:
    """``(whole lines, last line without its newline)``: gapseek ends every row it writes with a newline."""
    if not text or text.endswith("\n"):
        return text, ""
    cut = text.rfind("\n") + 1
    return text[:cut], text[cut:]


class Campaign:
    """A campaign directory: ``campaign.json`` + ``trials.csv`` (+ ``suggestions.csv``, ``engine_state.json``).

    Integrity. Every write replaces the whole file at once (temporary file, fsync, rename): a full disk or a crash
    leaves the old file, never part of a new one, so a ``tell`` is all or nothing. Writers (``tell``, ``suggest``,
    ``search``, ``campaign``) hold ``.campaign.lock`` (``flock``): ``tell`` and ``suggest`` wait for another
    writer (up to ``GAPSEEK_LOCK_TIMEOUT`` seconds, 600 by default) and then re-read the log, so two ``tell`` of
    the same ids record them once and refuse the second; ``search`` fails at once when another command holds the
    campaign. Opening checks the log: a last row without its newline (left by gapseek before these writes, or a
    hand edit) is kept when whole, dropped with a warning when cut short, and the file repaired; any other
    malformed line, a missing ``trials.csv`` or a corrupt ``campaign.json`` is a :class:`CampaignError` naming it.
    ``campaign.json`` records the store's content digest (:func:`store_digest`); :meth:`verify_store` refuses a
    store with other content, and records the digest in a campaign written before it was kept.
    """

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        meta = self.dir / "campaign.json"
        if not meta.is_file():
            raise InputError(f"{self.dir} is not a gapseek campaign (no campaign.json)")
        self.meta = self._read_meta()
        fmt = self.meta.get("gapseek_campaign")
        if fmt != CAMPAIGN_FORMAT:
            raise InputError(f"{self.dir} was written by another gapseek version (campaign format {fmt}, "
                             f"gapseek {self.meta.get('gapseek_version')}); this gapseek reads format "
                             f"{CAMPAIGN_FORMAT}")
        try:
            s = dict(self.meta["settings"])
            if s.get("label_range") is not None:
                s["label_range"] = tuple(s["label_range"])
            self.settings = CampaignSettings(**s)
            self.store = str(self.meta["store"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CampaignError(f"{meta} lacks or garbles the campaign's settings ({type(exc).__name__}: {exc}); "
                                "restore it, or start the campaign anew with --overwrite") from None
        self._check_log()

    def _read_meta(self) -> dict:
        path = self.dir / "campaign.json"
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CampaignError(f"{path} is corrupt ({exc}): cut short or edited by hand (gapseek writes it whole); "
                                "restore it from a copy, or start the campaign anew with --overwrite") from None
        if not isinstance(meta, dict):
            raise CampaignError(f"{path} is not a campaign description (a JSON object); restore it, or start the "
                                "campaign anew with --overwrite")
        return meta

    @classmethod
    def create(cls, directory: str | Path, store: str | Path, settings: CampaignSettings, mode: str,
               extra: dict | None = None, overwrite: bool = False,
               prior: tuple[Pool, list[tuple[str, float]]] | None = None) -> Campaign:
        """A new campaign in ``directory``; ``prior``: ``(pool, [(id, gap), ...])`` recorded as trial 0. The log
        (with the prior) is written before ``campaign.json``: a crash midway leaves no campaign, not one without
        its prior."""
        d = Path(directory)
        if (d / "campaign.json").exists() and not overwrite:
            raise ConfigError(f"{d} already holds a campaign; resume it, or pass --overwrite to start anew")
        d.mkdir(parents=True, exist_ok=True)
        with _lock(d):
            stamp = _stamp(store)
            digest, n = store_digest(store)
            (d / "campaign.json").unlink(missing_ok=True)  # first: from here until the end there is no campaign
            for name in ("suggestions.csv", FAILED_FILE, STATE_FILE):
                (d / name).unlink(missing_ok=True)
            rows = [] if prior is None else _trial_rows(settings, prior[0], prior[1], ["prior"] * len(prior[1]), 1)
            atomic_write(d / "trials.csv", _csv_text([TRIAL_FIELDS] + [[r[f] for f in TRIAL_FIELDS] for r in rows])
                         .encode())
            meta = {"gapseek_campaign": CAMPAIGN_FORMAT, "gapseek_version": __version__, "mode": mode,
                    "store": str(Path(store).resolve()), "store_digest": digest, "store_rows": n,
                    "store_stamp": stamp, "settings": _settings_json(settings),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {})}
            write_json(d / "campaign.json", meta)
        return cls(d)

    # ------------------------------------------------------------------------------------ locking, integrity
    def lock(self, wait: bool = True):
        """Hold the campaign's lock (re-entrant): every write takes it; hold it around a read-check-write."""
        return _lock(self.dir, wait)

    def _read_log(self) -> tuple[str, list[tuple[int, dict]], str | None]:
        """``(text the log should hold, [(line, row)], note)``: ``note`` says what a repair changes (None when
        the file is whole)."""
        path = self.dir / "trials.csv"
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise CampaignError(f"{path} is missing (deleted?): the campaign's measurements are not there; restore "
                                "it from a copy, or start the campaign anew with --overwrite") from None
        except UnicodeDecodeError as exc:
            raise CampaignError(f"{path} is not text ({exc}); restore it, or start anew with --overwrite") from None
        header = _csv_text([TRIAL_FIELDS])
        if not text:  # an older gapseek, cut before its header
            return header, [], f"{path} was empty: its header is written back"
        whole, torn = _torn_tail(text)
        if not whole:  # one line, no newline: a header cut short, or the header without its newline
            if torn.rstrip("\r") == ",".join(TRIAL_FIELDS):
                return header, [], f"{path}: the header's line end is written back"
            raise CampaignError(f"{path} starts with {torn[:60]!r}, not the header {','.join(TRIAL_FIELDS)}; "
                                "restore it, or start the campaign anew with --overwrite")
        first, _, body = whole.partition("\n")
        if first.rstrip("\r") != ",".join(TRIAL_FIELDS):
            raise CampaignError(f"{path} has columns {first.rstrip()!r}, not {','.join(TRIAL_FIELDS)} (not a "
                                "gapseek log, or another version's); restore it, or start anew with --overwrite")
        rows = _parse_trials(path, body, first_line=2)
        if not torn:
            return whole, rows, None
        line = whole.count("\n") + 1
        try:
            last = _parse_trials(path, torn, first_line=line)
        except CampaignError:
            last = []
        if last:  # a whole row without its newline (a hand edit): kept
            return whole + torn.rstrip("\r") + "\r\n", rows + last, f"{path}, line {line}: its line end is written back"
        return whole, rows, (f"{path}, line {line}: dropped {torn!r}, a row cut short by an interrupted write (an "
                             "older gapseek wrote rows in place); if it was a measurement, tell it again")

    def _check_log(self) -> None:
        """Repair a log whose last row lost its newline (see :meth:`_read_log`), under the lock."""
        *_, note = self._read_log()
        if note is None:
            return
        try:
            with self.lock():
                text, _, note = self._read_log()
                if note is not None:
                    atomic_write(self.dir / "trials.csv", text.encode())
                    log.warning("%s", note)
        except OSError as exc:  # read-only: the rows read are right all the same
            log.warning("%s (not repaired on disk: %s)", note, exc)

    def verify_store(self) -> None:
        """The store at ``self.store`` holds the content the campaign started on (:func:`store_digest`, checked
        when the store's file changed since the last check): otherwise a CampaignError naming both digests. A
        campaign written before the digest was recorded gets it recorded now (a logged notice)."""
        stamp = _stamp(self.store)
        recorded = self.meta.get("store_digest")
        if recorded is not None and self.meta.get("store_stamp") == stamp:
            return
        digest, n = store_digest(self.store)
        if recorded is None:
            log.warning("%s/campaign.json records no store digest (written by an older gapseek): recording the one "
                        "of %s now (sha256 %s, %d rows); from now on a store with other content is refused",
                        self.dir, self.store, digest[:16], n)
            self._update_meta(store_digest=digest, store_rows=n, store_stamp=stamp)
        elif recorded != digest:
            was = self.meta.get("store_rows")
            raise CampaignError(
                f"the store {self.store} holds other content than the one the campaign in {self.dir} was started "
                f"on: its digest is sha256 {digest[:16]}... ({n} rows), campaign.json records sha256 "
                f"{recorded[:16]}...{f' ({was} rows)' if was is not None else ''}. Point campaign.json's \"store\" "
                "at the store it was started on, or start a new campaign")
        else:
            self._update_meta(store_stamp=stamp)

    def _update_meta(self, **changes) -> None:
        try:
            with self.lock():
                meta = self._read_meta()
                meta.update(changes)
                write_json(self.dir / "campaign.json", meta)
        except OSError as exc:  # a read-only campaign: checked again next time
            log.debug("campaign.json of %s not updated (%s)", self.dir, exc)
        self.meta.update(changes)

    # ------------------------------------------------------------------------------------ the log
    def trials(self) -> list[dict]:
        return [r for _, r in self._read_log()[1]]

    def record(self, pool: Pool, measured: list[tuple[str, float]], source: str | list[str]) -> list[dict]:
        """Append measurements (id, gap) as trials (``source``: one for all, or one per measurement), all or
        nothing; returns the rows written. An id already in the log, or twice in ``measured``, is an InputError
        (nothing is written); a failed write (no space left) a CampaignError, the log as it was."""
        s = self.settings
        sources = [source] * len(measured) if isinstance(source, str) else list(source)
        if len(sources) != len(measured):
            raise ValueError("one source per measurement")
        path = self.dir / "trials.csv"
        with self.lock():
            text, lined, note = self._read_log()
            if note is not None:
                log.warning("%s", note)
            seen = {r["id"] for _, r in lined}
            again = []
            for cid, _ in measured:
                if cid in seen:
                    again.append(cid)
                seen.add(cid)
            if again:
                raise InputError(f"{len(again)} id(s) already recorded in {path} (or given twice): {few(again)} "
                                 "(nothing was recorded)")
            unknown = [cid for cid, _ in measured if cid not in pool.index]
            if unknown:
                raise InputError(f"{len(unknown)} id(s) are not in the campaign's pool: {few(unknown)} (nothing was "
                                 "recorded)")
            next_trial = 1 + max((int(r["trial"]) for _, r in lined), default=0)
            rows = _trial_rows(s, pool, measured, sources, next_trial)
            data = text + _csv_text([[r[f] for f in TRIAL_FIELDS] for r in rows])
            try:
                atomic_write(path, data.encode())
            except OSError as exc:
                raise CampaignError(f"cannot record {len(rows)} measurement(s) in {path}: "
                                    f"{exc.strerror or exc}; nothing was recorded, the log is as it was (make room "
                                    "and run the same command again)") from exc
        return rows

    def log_suggestions(self, rows: list[tuple[str, str, str]], event: str = "suggested") -> None:
        """Append ``(id, formula, why)`` rows to ``suggestions.csv`` as ``suggested`` (in flight until told) or
        ``released`` (will not be measured: no longer in flight), all at once."""
        path = self.dir / "suggestions.csv"
        with self.lock():
            if path.is_file() and path.stat().st_size:
                self._upgrade_suggestions(path)
            text, torn = _torn_tail(path.read_text(encoding="utf-8") if path.is_file() else "")
            if torn:
                log.warning("%s: dropped %r, a row cut short by an interrupted write", path, torn)
            if not text:  # new, or empty: a crash before its header was written
                text = _csv_text([SUGGESTION_FIELDS])
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            data = text + _csv_text([[stamp, *r, event] for r in rows])
            try:
                atomic_write(path, data.encode())
            except OSError as exc:
                raise CampaignError(f"cannot write {path}: {exc.strerror or exc}; nothing was written (make room "
                                    "and run the same command again)") from exc

    def _suggestion_rows(self) -> list[dict]:
        path = self.dir / "suggestions.csv"
        if not path.is_file():
            return []
        text, _ = _torn_tail(path.read_text(encoding="utf-8"))
        return list(csv.DictReader(io.StringIO(text, newline="")))

    def engine_state(self) -> dict | None:
        """The engine's and generator's state saved before the last round of a simulated campaign, or None."""
        path = self.dir / STATE_FILE
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            int(state["trial"]), int(state["n"]), state["rng"]
            return state
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            log.warning("%s is unreadable (%s); the engine restarts without it", path, exc)
            return None

    def save_engine_state(self, state: dict) -> None:
        with self.lock():
            write_json(self.dir / STATE_FILE, state)

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
            failed = [r["id"] for r in self.failed()]
            summary["failed"] = len(failed)  # could not be made or measured: not trials
            summary["failed_ids"] = failed
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
        return {r["id"] for r in self._suggestion_rows() if r.get("id") and r.get("event", "suggested") == "suggested"}

    def tell(self, pool: Pool, measured: list[tuple[str, float]]) -> tuple[list[dict], list[str]]:
        """Record lab measurements: ``lab`` for crystals this campaign suggested, ``lab-unsuggested`` for the
        others (legitimate: the lab may measure what it likes, but the caller should say so). Returns the rows
        written and the unsuggested ids. All or nothing, under the campaign's lock (ids already recorded are
        refused)."""
        with self.lock():
            done = self.failed_ids()
            failed = [cid for cid, _ in measured if cid in done]
            if failed:
                raise InputError(f"{len(failed)} id(s) are recorded as failed in {self.dir / FAILED_FILE} (could not "
                                 f"be made or measured): {few(failed)}; delete their lines there to tell a "
                                 "measurement of them (nothing was recorded)")
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
            text, _ = _torn_tail(fh.read())
        rows = list(csv.reader(io.StringIO(text, newline="")))
        atomic_write(path, _csv_text([SUGGESTION_FIELDS] + [r[:4] + ["suggested"] for r in rows[1:] if r]).encode())

    def pending(self, pool: Pool) -> np.ndarray:
        """Pool rows suggested (``suggestions.csv``), neither told, released nor failed since, oldest suggestion
        first."""
        rows = self._suggestion_rows()
        if not rows:
            return np.zeros(0, dtype=np.int64)
        told = {r["id"] for r in self.trials()} | self.failed_ids()  # failed: never to be measured
        state: dict[str, bool] = {}
        for r in rows:
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
        with self.lock():
            pending = {pool.ids[i] for i in self.pending(pool)}
            wrong = [c for c in ids if c not in pending]
            if wrong:
                raise InputError(f"{len(wrong)} id(s) are not pending suggestions of {self.dir}: {few(wrong)} "
                                 f"(pending: {few(sorted(pending)) or 'none'}; nothing was released)")
            self.log_suggestions([(c, pool.formula[pool.index[c]], "released by tell --release") for c in ids],
                                 event="released")

    # ------------------------------------------------------------------------------------ failed crystals
    def failed(self) -> list[dict]:
        """The rows of ``failed.csv`` (``id``, ``formula``, ``reason``, ``time``): crystals the lab could not make
        or measure, in the order told; a row cut short by an interrupted write is left out."""
        path = self.dir / FAILED_FILE
        if not path.is_file():
            return []
        text, _ = _torn_tail(path.read_text(encoding="utf-8"))
        return [r for r in csv.DictReader(io.StringIO(text, newline="")) if r.get("id")]

    def failed_ids(self) -> set[str]:
        return {r["id"] for r in self.failed()}

    def exclude_failed(self, pool: Pool) -> None:
        """Mark the failed crystals (``failed.csv``) as never to be proposed in ``pool``; call it again under the
        lock before proposing (another ``tell --failed`` may have written since the pool was built)."""
        failed = self.failed_ids()
        if not failed:
            return
        missing = sorted(c for c in failed if c not in pool.index)
        if missing:
            log.warning("%s/%s names %d crystal(s) not in the store: %s (ignored)", self.dir, FAILED_FILE,
                        len(missing), few(missing))
        pool.exclude([pool.index[c] for c in failed if c in pool.index])

    def check_failed(self, pool: Pool, ids: list[str]) -> None:
        """The checks of :meth:`fail`, writing nothing: an InputError naming every id not in the store, already
        measured, already failed or given twice (hold the lock from here to the write)."""
        told = {r["id"] for r in self.trials()}
        done = self.failed_ids()
        seen: set[str] = set()
        twice = []
        for c in ids:
            if c in seen:
                twice.append(c)
            seen.add(c)
        problems = []
        for what, bad in (("not in the campaign's store", [c for c in ids if c not in pool.index]),
                          ("already measured (in trials.csv)", [c for c in ids if c in told]),
                          (f"already recorded as failed (in {FAILED_FILE})", [c for c in ids if c in done]),
                          ("given twice", twice)):
            if bad:
                problems.append(f"{len(bad)} id(s) {what}: {few(bad)}")
        if problems:
            raise InputError(f"--failed: {'; '.join(problems)} (nothing was recorded as failed)")

    def fail(self, pool: Pool, ids: list[str], reason: str) -> list[dict]:
        """Record crystals the lab could not make or measure (``failed.csv``, apart from the trials): no engine
        proposes them again (they leave the pending suggestions, and ``pool`` excludes them now, as
        :func:`open_campaign`'s pools do). An id not in the store, already measured (``trials.csv``), already
        failed or given twice is an InputError naming it, and nothing is recorded; all or nothing, under the
        campaign's lock (the whole file written at once, as ``trials.csv``). Returns the rows written."""
        path = self.dir / FAILED_FILE
        reason = " ".join(str(reason).split()) or "not given"  # one line a row
        with self.lock():
            self.check_failed(pool, ids)
            text, torn = _torn_tail(path.read_text(encoding="utf-8") if path.is_file() else "")
            if torn:
                log.warning("%s: dropped %r, a row cut short by an interrupted write", path, torn)
            if not text:
                text = _csv_text([FAILED_FIELDS])
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            rows = [{"id": c, "formula": pool.formula[pool.index[c]], "reason": reason, "time": stamp} for c in ids]
            try:
                atomic_write(path, (text + _csv_text([[r[f] for f in FAILED_FIELDS] for r in rows])).encode())
            except OSError as exc:
                raise CampaignError(f"cannot write {path}: {exc.strerror or exc}; nothing was recorded as failed "
                                    "(make room and run the same command again)") from exc
        pool.exclude([pool.index[c] for c in ids])
        return rows

    def observed(self, pool: Pool) -> tuple[np.ndarray, np.ndarray]:
        """Pool rows and gaps of every trial (the prior first), in the log's order; an id not in the pool is a
        CampaignError naming its line."""
        lined = self._read_log()[1]
        missing = [(k, r["id"]) for k, r in lined if r["id"] not in pool.index]
        if missing:
            raise CampaignError(f"{self.dir}/trials.csv names {len(missing)} crystal(s) not in the campaign's store "
                                f"{self.store}: {few(f'{c} (line {k})' for k, c in missing)}; fix or delete those "
                                "lines by hand, or start the campaign anew with --overwrite")
        return (np.array([pool.index[r["id"]] for _, r in lined], dtype=np.int64),
                np.array([float(r["band_gap"]) for _, r in lined], dtype=np.float64))


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
    a ConfigError naming each difference; a store whose content changed, a CampaignError.

    Exact resumption: before each round the engine's state and the random generator's are saved
    (``engine_state.json``); a resumed campaign restores them, proposes the interrupted round again (its picks
    already recorded must come again) and goes on, so it picks what an uninterrupted campaign picks, whatever the
    engine. The campaign's lock is held throughout: a second ``search`` on the same directory fails at once."""
    if settings.budget is None:
        raise ConfigError("a simulated campaign needs a budget (trials)")
    out = Path(out)
    camp = None if overwrite else resumable(out, store, labels_path, prior, settings)  # before a PCA is fitted
    pool, truth = build_pool(store, settings, labels, drop_missing=drop_missing, on_pca=on_pca,
                             origin="gapseek search")
    out.mkdir(parents=True, exist_ok=True)
    with _lock(out, wait=False):
        camp = None if overwrite else resumable(out, store, labels_path, prior, settings)
        if camp is not None:
            log.info("resuming %s", out)
            camp.verify_store()
            if not any(r["source"] == "prior" for r in camp.trials()):
                if camp.trials():
                    raise CampaignError(f"{out}/trials.csv has trials but no prior: restore it, or start anew with "
                                        "--overwrite")
                log.warning("%s: the prior was never recorded (the campaign's start was interrupted): recording it "
                            "now", out)
                prior_rows = draw_prior(pool, prior, np.random.default_rng(settings.seed))
                camp.record(pool, [(pool.ids[r], float(truth[r])) for r in prior_rows], "prior")
        else:
            prior_rows = draw_prior(pool, prior, np.random.default_rng(settings.seed))
            camp = Campaign.create(out, store, settings, mode="simulated", overwrite=overwrite,
                                   extra={"labels": str(Path(labels_path).resolve()), "prior": _prior_text(prior)},
                                   prior=(pool, [(pool.ids[r], float(truth[r])) for r in prior_rows]))
            left = pool.proposable()
            left[prior_rows] = False
            if not np.any(np.abs(truth[left] - settings.target) <= settings.tolerance):
                warnings.warn(f"every crystal within {settings.tolerance:g} eV of the target is in the prior: the "
                              "campaign's trials cannot find a hit", GapseekWarning, stacklevel=2)

        def record(_trial, row, gap, why):
            written = camp.record(pool, [(pool.ids[row], gap)], "oracle")[0]
            if on_trial:
                on_trial(written, why)

        done = sum(1 for r in camp.trials() if r["source"] != "prior")
        if done < settings.budget:
            engine = make_engine(settings.engine)
            rng, done = _resume_round(camp, pool, truth, engine, settings, done, record)
            if rng is None:
                if done:
                    log.info("%s: no saved engine state (a campaign of an older gapseek): the engine starts afresh "
                             "at trial %d", out, done + 1)
                rng = np.random.default_rng(10_000 + settings.seed + done)
            start = done

            def save(trial, n, eng, gen):
                camp.save_engine_state({"engine": settings.engine, "trial": start + trial, "n": n,
                                        "rng": gen.bit_generator.state, "state": eng.get_state()})

            if done < settings.budget:
                observed, _ = camp.observed(pool)
                simulate(pool, truth, engine, observed, settings.budget - done, settings.batch, rng, on_trial=record,
                         on_round=save)
        return camp.report(len(pool))


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
    prior_rows = draw_prior(pool, list(prior))  # every prior id must be in the store
    left = pool.proposable()
    left[prior_rows] = False
    if filter_active(settings) and not left.any():
        raise ConfigError(f"every crystal the candidate filters leave ({int(pool.proposable().sum())}) is in the "
                          "prior: nothing is left to propose; loosen the filters")
    check_lab_target(settings, prior, pool)
    camp = Campaign.create(out, store, settings, mode="lab", overwrite=overwrite, prior=(pool, list(prior.items())))
    return camp, pool


def open_campaign(directory: str | Path, on_pca: Callable[[PCAChoice], None] | None = None,
                  origin: str = "gapseek tell") -> tuple[Campaign, Pool]:
    """A lab campaign and its pool, checked: ``campaign.json`` and the log readable (a torn last row repaired),
    the store the one it was started on (:meth:`Campaign.verify_store`), a prior recorded, every logged id in
    the pool. ``on_pca``: see :func:`build_pool`."""
    camp = Campaign(directory)
    if not any(r["source"] == "prior" for r in camp.trials()):
        raise CampaignError(f"{camp.dir}/trials.csv holds no prior measurement: the campaign's start was "
                            f"interrupted before its prior was recorded; start it again (gapseek campaign STORE "
                            f"--target T --prior FILE --out {camp.dir} --overwrite)")
    camp.verify_store()
    pool, _ = build_pool(camp.store, camp.settings, None, on_pca=on_pca, origin=origin)
    camp.observed(pool)  # every id of the log in the pool
    camp.exclude_failed(pool)
    return camp, pool
