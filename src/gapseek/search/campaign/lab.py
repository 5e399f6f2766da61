"""Lab campaigns: a lab measures, gapseek suggests. :func:`start_lab_campaign` (``gapseek campaign``) records what
was measured so far; :func:`open_campaign` opens one again, checked; :func:`suggest` (``gapseek suggest``) and
:func:`tell` (``gapseek tell``) are one round each; :func:`forecast_campaign` (``gapseek forecast``) what the
campaign can expect from its labels so far."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gapseek.errors import CampaignError, ConfigError, GapseekError, GapseekWarning, InputError, few
from gapseek.fsutil import write_json
from gapseek.search.campaign.campaign import Campaign
from gapseek.search.campaign.log import Failure, Trial
from gapseek.search.campaign.simulate import draw_prior
from gapseek.search.engines import make_engine
from gapseek.search.filters import filter_active
from gapseek.search.forecast import Forecast, forecast_pool
from gapseek.search.pca import PCAChoice
from gapseek.search.pool import Pool, build_pool
from gapseek.search.settings import CampaignSettings
from gapseek.store import Store

__all__ = ["LAB_TARGET_MARGIN", "Suggested", "TellResult", "candidates_left", "check_lab_target", "check_tell",
           "forecast_campaign", "open_campaign", "start_lab_campaign", "suggest", "tell"]

log = logging.getLogger(__name__)

LAB_TARGET_MARGIN = 1.0  # eV: a lab target farther than this outside the prior's measured gaps is warned about


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
    with Store.open(store) as st:
        pool, _ = build_pool(st, settings, None, on_pca=on_pca, origin="gapseek campaign")
        prior_rows = draw_prior(pool, list(prior))  # every prior id must be in the store
        left = pool.proposable()
        left[prior_rows] = False
        if filter_active(settings) and not left.any():
            raise ConfigError(f"every crystal the candidate filters leave ({int(pool.proposable().sum())}) is in the "
                              "prior: nothing is left to propose; loosen the filters")
        check_lab_target(settings, prior, pool)
        camp = Campaign.create(out, store, st, settings, mode="lab", overwrite=overwrite,
                               prior=(pool, list(prior.items())))
    return camp, pool


def candidates_left(camp: Campaign, pool: Pool) -> int:
    """How many crystals an engine may still propose: neither measured nor left out."""
    left = pool.proposable()
    left[[pool.index[t.id] for t in camp.trials()]] = False
    return int(left.sum())


def open_campaign(directory: str | Path, on_pca: Callable[[PCAChoice], None] | None = None,
                  origin: str = "gapseek tell") -> tuple[Campaign, Pool]:
    """A lab campaign and its pool, checked: ``campaign.json`` and the log readable (a torn last row repaired),
    the store the one it was started on (:meth:`Campaign.open_store`), a prior recorded, every logged id in the
    pool, the failed crystals excluded. ``on_pca``: see :func:`gapseek.search.pool.build_pool`."""
    camp = Campaign(directory)
    if not camp.prior():
        raise CampaignError(f"{camp.dir}/trials.csv holds no prior measurement: the campaign's start was "
                            f"interrupted before its prior was recorded; start it again (gapseek campaign STORE "
                            f"--target T --prior FILE --out {camp.dir} --overwrite)")
    with camp.open_store() as st:
        pool, _ = build_pool(st, camp.settings, None, on_pca=on_pca, origin=origin)
    camp.observed(pool)  # every id of the log in the pool
    camp.exclude_failed(pool)
    return camp, pool


@dataclass(frozen=True)
class Suggested:
    """What :func:`suggest` proposed, ``(pool row, why)`` in order (none when the pool is used up), and the earlier
    suggestions taken as being measured (``pending``, pool rows; None when they were ignored)."""

    picks: list[tuple[int, str]]
    pending: np.ndarray | None


def suggest(camp: Campaign, pool: Pool, n: int, ignore_pending: bool = False) -> Suggested:
    """The next ``n`` crystals to measure, proposed jointly by the campaign's engine and logged in
    ``suggestions.csv``, under the campaign's lock (another suggest or tell waits, then this one proposes knowing
    what it wrote). Earlier suggestions not yet told are taken as being measured unless ``ignore_pending``. The
    engine's random generator is seeded by the campaign's seed and the number of labels, so the same state of a
    campaign gets the same suggestion."""
    if n < 1:
        raise ConfigError(f"--n must be at least 1; got {n}")
    with camp.lock():
        observed, y = camp.observed(pool)
        camp.exclude_failed(pool)  # told failed since the pool was built: never proposed either
        pending = None if ignore_pending else camp.pending(pool)
        rng = np.random.default_rng(camp.settings.seed + len(observed))
        picks = make_engine(camp.settings.engine).propose(pool, observed, y, n, rng, pending=pending)
        if picks:
            camp.log_suggestions([(pool.ids[i], pool.formula[i], why) for i, why in picks])
    return Suggested(picks, pending)


@dataclass
class TellResult:
    """What :func:`tell` recorded: released suggestions, failed crystals, measurements (and which of them were
    never suggested), and the campaign's summary after them (None when it could not be written: the measurements
    are recorded all the same)."""

    released: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    trials: list[Trial] = field(default_factory=list)
    unsuggested: list[str] = field(default_factory=list)
    summary: dict | None = None


def check_tell(results: bool, release: list[str], failed: list[str], reason: str | None) -> None:
    """A ConfigError when a tell asks for nothing (no ``results``, ``release`` or ``failed``) or gives a ``reason``
    without ``failed``."""
    if reason is not None and not failed:
        raise ConfigError("--reason goes with --failed ID...")
    if not results and not release and not failed:
        raise ConfigError("tell needs a results FILE (id,band_gap), --release ID... and/or --failed ID...")


def tell(camp: Campaign, pool: Pool, results: dict[str, float], release: list[str] = (),
         failed: list[str] = (), reason: str | None = None, source: str | None = None) -> TellResult:
    """Record measured gaps (``results``: id -> gap), release pending suggestions that will not be measured and
    record crystals that could not be made or measured (``failed``, with ``reason``), under the campaign's lock;
    then rewrite ``summary.json`` and ``campaign.png``. Every check comes before any write: an id not in the
    store, already recorded, or failed is an InputError naming it (and ``source``, the results' file), and nothing
    is recorded or released."""
    check_tell(bool(results), release, failed, reason)
    out = TellResult()
    with camp.lock():  # another tell or suggest on this campaign: wait for it, then check against what it wrote
        unknown = [c for c in results if c not in pool.index]
        told = {t.id for t in camp.trials()}
        again = [c for c in results if c in told]
        failed_before = camp.failed_ids()
        refused = [c for c in results if c in failed_before or c in failed]
        if unknown or again or refused:
            parts = []
            if unknown:
                parts.append(f"{len(unknown)} id(s) not in the campaign's store: {few(unknown)}")
            if again:
                parts.append(f"{len(again)} id(s) already recorded: {few(again)}")
            if refused:
                parts.append(f"{len(refused)} id(s) recorded as failed (failed.csv, or --failed now): {few(refused)}")
            raise InputError((f"{source}: " if source else "") + "; ".join(parts)
                             + " (nothing was recorded or released)")
        if failed:  # checked before anything is written, like the results (fail() checks again and writes)
            camp.check_failed(pool, list(failed))
        if release:  # checked before anything is written, like the results
            camp.release(pool, list(release))
            out.released = list(release)
        if failed:
            out.failed = camp.fail(pool, list(failed), reason or "")
        if results:
            out.trials, out.unsuggested = camp.tell(pool, list(results.items()))
    if not results and not failed:
        return out
    try:
        out.summary = camp.report(len(pool))
    except (OSError, ValueError, GapseekError) as exc:  # the measurements are safe in trials.csv already
        log.warning("the campaign summary/plot could not be written (%s); the measurements ARE recorded", exc)
    return out


def forecast_campaign(camp: Campaign, pool: Pool, budget: int) -> tuple[Forecast | None, str | None]:
    """The campaign's forecast for ``budget`` trials from every label it has now (saved as ``DIR/forecast.json``),
    or ``(None, why)`` when the labels are too few for one."""
    if budget < 1:
        raise ConfigError(f"the budget to forecast for must be at least 1; got {budget}")
    observed, y = camp.observed(pool)
    try:
        fc = forecast_pool(pool, observed, y, budget)
    except ConfigError as exc:
        return None, str(exc)
    write_json(camp.dir / "forecast.json", {"labels_used": len(observed), **fc.to_json()})
    return fc, None
