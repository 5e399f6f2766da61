"""A campaign on disk: :class:`Campaign`, a directory that holds

- ``campaign.json``: format version, mode (``simulated`` or ``lab``), the store and the identity of its content,
  the settings (:class:`~gapseek.search.settings.CampaignSettings`), the inputs;
- the logs (:mod:`gapseek.search.campaign.log`): ``trials.csv`` (every measurement, the prior as trial 0),
  ``suggestions.csv`` (what was proposed to a lab, and released), ``failed.csv`` (what a lab could not make or
  measure);
- ``engine_state.json`` (simulated campaigns): the engine's and the random generator's state before the last
  round, so that a resumed campaign picks what an uninterrupted one would;
- ``summary.json`` and ``campaign.png`` (:mod:`gapseek.search.campaign.report`).

Writers serialise on ``.campaign.lock`` (``flock``): ``tell`` and ``suggest`` wait for another writer (up to
``GAPSEEK_LOCK_TIMEOUT`` seconds) and then re-read the logs, so two ``tell`` of the same ids record them once and
refuse the second; ``search`` fails at once when another command holds the campaign.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from gapseek import __version__
from gapseek.errors import CampaignError, ConfigError, InputError, few
from gapseek.fsutil import atomic_write, file_lock, write_json
from gapseek.search.campaign.log import (
    FAILED_FIELDS,
    SUGGESTION_FIELDS,
    TRIAL_FIELDS,
    Failure,
    Suggestion,
    Trial,
    append_rows,
    pending_ids,
    read_failures,
    read_suggestions,
    read_trials,
    suggestions_need_upgrade,
    upgrade_suggestions,
    whole_text,
)
from gapseek.search.campaign.report import write_report
from gapseek.search.pool import Pool
from gapseek.search.settings import CampaignSettings, settings_json
from gapseek.store import Store

__all__ = ["CAMPAIGN_FORMAT", "Campaign", "lock"]

log = logging.getLogger(__name__)

CAMPAIGN_FORMAT = 1
LOCK_FILE = ".campaign.lock"
STATE_FILE = "engine_state.json"
TRIALS_FILE, SUGGESTIONS_FILE, FAILED_FILE = "trials.csv", "suggestions.csv", "failed.csv"


def lock(directory: Path, wait: bool = True):
    """The lock of a campaign directory (``.campaign.lock``): one writer at a time."""
    return file_lock(directory / LOCK_FILE, f"the campaign in {directory}", wait=wait, error=CampaignError)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Campaign:
    """A campaign directory (see the module), opened and checked: ``campaign.json`` readable and of this format,
    the settings valid, ``trials.csv`` whole (a last row that lost its line end repaired, one cut short dropped
    with a warning), ``suggestions.csv`` of the current format (one of gapseek 0.1 upgraded once)."""

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
        self._repair()

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
    def create(cls, directory: str | Path, location: str | Path, store: Store, settings: CampaignSettings,
               mode: str, extra: dict | None = None, overwrite: bool = False,
               prior: tuple[Pool, list[tuple[str, float]]] | None = None) -> Campaign:
        """A new campaign in ``directory`` on the open ``store`` (``location``: the store as the user named it, a
        directory or its file, recorded absolute); ``prior``: ``(pool, [(id, gap), ...])`` recorded
        as trial 0. The log (with the prior) is written before ``campaign.json``: a crash midway leaves no
        campaign, not one without its prior."""
        d = Path(directory)
        if (d / "campaign.json").exists() and not overwrite:
            raise ConfigError(f"{d} already holds a campaign; resume it, or pass --overwrite to start anew")
        d.mkdir(parents=True, exist_ok=True)
        with lock(d):
            digest, n = store.content_digest()
            (d / "campaign.json").unlink(missing_ok=True)  # first: from here until the end there is no campaign
            for name in (SUGGESTIONS_FILE, FAILED_FILE, STATE_FILE):
                (d / name).unlink(missing_ok=True)
            trials = [] if prior is None else make_trials(settings, prior[0], prior[1], ["prior"] * len(prior[1]), 1)
            append_rows(d / TRIALS_FILE, "", TRIAL_FIELDS, trials)
            meta = {"gapseek_campaign": CAMPAIGN_FORMAT, "gapseek_version": __version__, "mode": mode,
                    "store": str(Path(location).resolve()), "store_digest": digest, "store_rows": n,
                    "store_content": store.content_id(), "settings": settings_json(settings), "created": _now(),
                    "provenance": store.provenance, **(extra or {})}
            write_json(d / "campaign.json", meta)
        return cls(d)

    @property
    def mode(self) -> str:
        """``simulated`` (``gapseek search``) or ``lab`` (``gapseek campaign``)."""
        return self.meta.get("mode", "lab")

    def lock(self, wait: bool = True):
        """Hold the campaign's lock (re-entrant): every write takes it; hold it around a read-check-write."""
        return lock(self.dir, wait)

    # ------------------------------------------------------------------------------------------------ integrity
    def _repair(self) -> None:
        """Repair a log whose last row lost its line end or was cut short, and upgrade a ``suggestions.csv`` of
        gapseek 0.1, under the lock (on a read-only campaign the rows read are right all the same)."""
        note = read_trials(self.dir / TRIALS_FILE).note
        upgrade = suggestions_need_upgrade(self.dir / SUGGESTIONS_FILE)
        if note is None and not upgrade:
            return
        try:
            with self.lock():
                logged = read_trials(self.dir / TRIALS_FILE)
                if logged.note is not None:
                    atomic_write(self.dir / TRIALS_FILE, logged.text.encode())
                    log.warning("%s", logged.note)
                if suggestions_need_upgrade(self.dir / SUGGESTIONS_FILE):
                    upgrade_suggestions(self.dir / SUGGESTIONS_FILE)
        except OSError as exc:
            log.warning("%s (not repaired on disk: %s)", note or f"{self.dir}/{SUGGESTIONS_FILE}: old format", exc)

    def open_store(self) -> Store:
        """The campaign's store, opened and checked: it must hold the content the campaign started on (otherwise a
        CampaignError naming both digests). A campaign written before the content's identity was kept gets it
        recorded now (a logged notice)."""
        store = Store.open(self.store)
        try:
            self.verify_store(store)
        except BaseException:
            store.close()
            raise
        return store

    def verify_store(self, store: Store) -> None:
        """The open ``store`` holds the content the campaign started on (see :meth:`open_store`)."""
        recorded, content = self.meta.get("store_content"), store.content_id()
        if recorded is not None and content is not None and recorded == content:
            return  # the store's own checksums name the same content: nothing to read
        digest, n = store.content_digest()
        kept = self.meta.get("store_digest")
        if kept is None:
            log.warning("%s/campaign.json records no store digest (written by an older gapseek): recording the one "
                        "of %s now (sha256 %s, %d rows); from now on a store with other content is refused",
                        self.dir, self.store, digest[:16], n)
        elif kept != digest:
            was = self.meta.get("store_rows")
            raise CampaignError(
                f"the store {self.store} holds other content than the one the campaign in {self.dir} was started "
                f"on: its digest is sha256 {digest[:16]}... ({n} rows), campaign.json records sha256 "
                f"{kept[:16]}...{f' ({was} rows)' if was is not None else ''}. Point campaign.json's \"store\" "
                "at the store it was started on, or start a new campaign")
        self._update_meta(store_digest=digest, store_rows=n, store_content=content)

    def _update_meta(self, **changes) -> None:
        try:
            with self.lock():
                meta = self._read_meta()
                meta.update(changes)
                meta.pop("store_stamp", None)  # gapseek 0.1's cache key of the digest, superseded by store_content
                write_json(self.dir / "campaign.json", meta)
        except OSError as exc:  # a read-only campaign: checked again next time
            log.debug("campaign.json of %s not updated (%s)", self.dir, exc)
        self.meta.update(changes)

    # ------------------------------------------------------------------------------------------------ the trials
    def trials(self) -> list[Trial]:
        return read_trials(self.dir / TRIALS_FILE).trials

    def prior(self) -> list[Trial]:
        return [t for t in self.trials() if t.is_prior]

    def measured(self) -> int:
        """Trials recorded after the prior."""
        return sum(1 for t in self.trials() if not t.is_prior)

    def record(self, pool: Pool, measured: list[tuple[str, float]], source: str | list[str]) -> list[Trial]:
        """Append measurements (id, gap) as trials (``source``: one for all, or one per measurement), all or
        nothing; returns the trials written. An id already in the log, or twice in ``measured``, is an InputError
        (nothing is written); a failed write (no space left) a CampaignError, the log as it was."""
        sources = [source] * len(measured) if isinstance(source, str) else list(source)
        if len(sources) != len(measured):
            raise ValueError("one source per measurement")
        path = self.dir / TRIALS_FILE
        with self.lock():
            logged = read_trials(path)
            if logged.note is not None:
                log.warning("%s", logged.note)
            seen = {t.id for t in logged.trials}
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
            next_trial = 1 + max((t.trial for t in logged.trials), default=0)
            trials = make_trials(self.settings, pool, measured, sources, next_trial)
            try:
                append_rows(path, logged.text, TRIAL_FIELDS, trials)
            except OSError as exc:
                raise CampaignError(f"cannot record {len(trials)} measurement(s) in {path}: "
                                    f"{exc.strerror or exc}; nothing was recorded, the log is as it was (make room "
                                    "and run the same command again)") from exc
        return trials

    def observed(self, pool: Pool) -> tuple[np.ndarray, np.ndarray]:
        """Pool rows and gaps of every trial (the prior first), in the log's order; an id not in the pool is a
        CampaignError naming its line."""
        lined = read_trials(self.dir / TRIALS_FILE).lined
        missing = [(k, t.id) for k, t in lined if t.id not in pool.index]
        if missing:
            raise CampaignError(f"{self.dir}/trials.csv names {len(missing)} crystal(s) not in the campaign's store "
                                f"{self.store}: {few(f'{c} (line {k})' for k, c in missing)}; fix or delete those "
                                "lines by hand, or start the campaign anew with --overwrite")
        return (np.array([pool.index[t.id] for _, t in lined], dtype=np.int64),
                np.array([t.band_gap for _, t in lined], dtype=np.float64))

    # ------------------------------------------------------------------------------------------------ a lab's
    def suggestions(self) -> list[Suggestion]:
        return read_suggestions(self.dir / SUGGESTIONS_FILE)

    def log_suggestions(self, rows: list[tuple[str, str, str]], event: str = "suggested") -> None:
        """Append ``(id, formula, why)`` rows to ``suggestions.csv`` as ``suggested`` (in flight until told) or
        ``released`` (will not be measured: no longer in flight), all at once."""
        self._append(SUGGESTIONS_FILE, [Suggestion(_now(), cid, formula, why, event) for cid, formula, why in rows],
                     SUGGESTION_FIELDS)

    def _append(self, name: str, rows: list, header: list[str]) -> None:
        path = self.dir / name
        with self.lock():
            text, torn = whole_text(path)
            if torn:
                log.warning("%s: dropped %r, a row cut short by an interrupted write", path, torn)
            try:
                append_rows(path, text, header, rows)
            except OSError as exc:
                raise CampaignError(f"cannot write {path}: {exc.strerror or exc}; nothing was written (make room "
                                    "and run the same command again)") from exc

    def suggested(self) -> set[str]:
        """Every id this campaign ever suggested, released or not."""
        return {s.id for s in self.suggestions() if s.event == "suggested"}

    def pending(self, pool: Pool) -> np.ndarray:
        """Pool rows suggested and neither told, released nor failed since, oldest suggestion first."""
        done = {t.id for t in self.trials()} | self.failed_ids()  # failed: never to be measured
        return np.asarray([pool.index[c] for c in pending_ids(self.suggestions(), done) if c in pool.index],
                          dtype=np.int64)

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

    def tell(self, pool: Pool, measured: list[tuple[str, float]]) -> tuple[list[Trial], list[str]]:
        """Record lab measurements: ``lab`` for crystals this campaign suggested, ``lab-unsuggested`` for the
        others (legitimate: the lab may measure what it likes, but the caller should say so). Returns the trials
        written and the unsuggested ids. All or nothing, under the campaign's lock."""
        with self.lock():
            done = self.failed_ids()
            failed = [cid for cid, _ in measured if cid in done]
            if failed:
                raise InputError(f"{len(failed)} id(s) are recorded as failed in {self.dir / FAILED_FILE} (could not "
                                 f"be made or measured): {few(failed)}; delete their lines there to tell a "
                                 "measurement of them (nothing was recorded)")
            suggested = self.suggested()
            sources = ["lab" if cid in suggested else "lab-unsuggested" for cid, _ in measured]
            trials = self.record(pool, measured, sources)
        return trials, [t.id for t in trials if t.source == "lab-unsuggested"]

    def failed(self) -> list[Failure]:
        """Crystals the lab could not make or measure, in the order told."""
        return read_failures(self.dir / FAILED_FILE)

    def failed_ids(self) -> set[str]:
        return {f.id for f in self.failed()}

    def exclude_failed(self, pool: Pool) -> None:
        """Mark the failed crystals as never to be proposed in ``pool``; call it again under the lock before
        proposing (another ``tell --failed`` may have written since the pool was built)."""
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
        told = {t.id for t in self.trials()}
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

    def fail(self, pool: Pool, ids: list[str], reason: str) -> list[Failure]:
        """Record crystals the lab could not make or measure (``failed.csv``, apart from the trials): no engine
        proposes them again (they leave the pending suggestions, and ``pool`` excludes them now). Checked as in
        :meth:`check_failed`; all or nothing, under the campaign's lock. Returns the rows written."""
        reason = " ".join(str(reason).split()) or "not given"  # one line a row
        with self.lock():
            self.check_failed(pool, ids)
            stamp = _now()
            rows = [Failure(c, pool.formula[pool.index[c]], reason, stamp) for c in ids]
            self._append(FAILED_FILE, rows, FAILED_FIELDS)
        pool.exclude([pool.index[c] for c in ids])
        return rows

    def report(self, pool_size: int) -> dict:
        """Write ``summary.json`` and ``campaign.png`` from the logs (:mod:`gapseek.search.campaign.report`);
        returns the summary."""
        return write_report(self.dir, self.mode, self.settings, self.trials(), pool_size,
                            self.failed() if self.mode != "simulated" else None, self.meta.get("provenance"))

    # ------------------------------------------------------------------------------------------------ simulated
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


def make_trials(settings: CampaignSettings, pool: Pool, measured: list[tuple[str, float]], sources: list[str],
                next_trial: int) -> list[Trial]:
    """Trials for measurements ``(id, gap)`` (prior rows are trial 0; the others numbered from ``next_trial``), with
    their distance to the target as the log keeps it (6 significant digits)."""
    out = []
    for (cid, gap), source in zip(measured, sources):
        err = float(f"{abs(gap - settings.target):.6g}")
        out.append(Trial(0 if source == "prior" else next_trial, cid, pool.formula[pool.index[cid]], float(gap),
                         err, abs(gap - settings.target) <= settings.tolerance, settings.engine, source))
        if source != "prior":
            next_trial += 1
    return out
