"""A campaign's report: ``summary.json`` (:func:`summarize`) and ``campaign.png`` (:func:`plot_campaign`), from
its logs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gapseek.fsutil import write_json
from gapseek.ingest.source import describe_provenance
from gapseek.search.campaign.log import Failure, Trial

__all__ = ["plot_campaign", "pyplot", "summarize", "write_report"]


def summarize(mode: str, settings, trials: list[Trial], pool_size: int, failed: list[Failure] | None = None) -> dict:
    """``summary.json``'s content. ``first_hit`` is the trial of the first hit, or None with ``found`` false; then
    ``first_hit_censored_at`` is the number of trials done without a hit (the first hit, if any, comes later; the
    benchmark's means count such a campaign as budget + 1). ``budget`` is None for a lab campaign, which also
    counts the trials told without being suggested (``unsuggested``) and the crystals that failed (not trials)."""
    simulated = mode == "simulated"
    prior = [t for t in trials if t.is_prior]
    measured = [t for t in trials if not t.is_prior]
    hits = [t.id for t in measured if t.hit]
    first = next((t.trial for t in measured if t.hit), None)
    best = min(measured, key=lambda t: t.abs_error, default=None)
    pbest = min(prior, key=lambda t: t.abs_error, default=None)
    summary = {"mode": mode, "engine": settings.engine, "target": settings.target, "tolerance": settings.tolerance,
               "budget": settings.budget if simulated else None, "pool": pool_size, "trials": len(measured),
               "found": bool(hits), "first_hit": first,
               "first_hit_censored_at": None if hits else len(measured),
               "hits": len(hits), "hit_ids": hits,
               "best_abs_error": None if best is None else best.abs_error,
               "best_id": None if best is None else best.id,
               "prior": len(prior), "prior_hits": sum(int(t.hit) for t in prior),
               "prior_best_abs_error": None if pbest is None else pbest.abs_error,
               "prior_best_id": None if pbest is None else pbest.id}
    if not simulated:
        summary["unsuggested"] = sum(t.source == "lab-unsuggested" for t in measured)
        summary["failed"] = len(failed or [])  # could not be made or measured: not trials
        summary["failed_ids"] = [f.id for f in failed or []]
    return summary


def write_report(directory: Path, mode: str, settings, trials: list[Trial], pool_size: int,
                 failed: list[Failure] | None = None, provenance: dict | None = None) -> dict:
    """Write ``summary.json`` and, once there are trials, ``campaign.png``; returns the summary. ``provenance``:
    the store's (where its crystals came from, the model, gapseek), carried into both."""
    s = settings
    summary = summarize(mode, s, trials, pool_size, failed)
    summary["provenance"] = provenance
    summary["data"] = describe_provenance(provenance)
    write_json(directory / "summary.json", summary)
    measured = [t for t in trials if not t.is_prior]
    if measured:
        simulated = mode == "simulated"
        prior = [t for t in trials if t.is_prior]
        head = f"simulated campaign, {s.engine}, budget {s.budget}" if simulated else f"lab campaign, {s.engine}"
        result = (f"{summary['hits']} hit(s), the first at trial {summary['first_hit']}" if summary["hits"]
                  else f"no hit in {len(measured)} trial(s)")
        plot_campaign(directory / "campaign.png", [t.band_gap for t in measured], [t.id for t in measured],
                      s.target, s.tolerance,
                      f"{head}: T = {s.target:g} ± {s.tolerance:g} eV, pool {pool_size}, prior {len(prior)}: {result}",
                      prior_gaps=[t.band_gap for t in prior], prior_ids=[t.id for t in prior],
                      budget=s.budget if simulated else None,
                      unsuggested=None if simulated else [t.source == "lab-unsuggested" for t in measured],
                      footer=summary["data"])
    return summary


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_campaign(path: str | Path, gaps: list[float], ids: list[str], target: float, tolerance: float,
                  title: str, prior_gaps: list[float] = (), prior_ids: list[str] = (), budget: int | None = None,
                  unsuggested: list[bool] | None = None, footer: str | None = None) -> None:
    """Left: the best |gap - T| so far, from the prior's best (trial 0) on, over every trial's own |gap - T| (log
    scale; the tolerance drawn: a hit lies below it). Right: every measured gap by trial, the prior's at trial 0,
    the target band T ± D; hits (|gap - T| <= D) starred and named, and, in a campaign without one, the closest
    trial pointed out as such. ``budget``: drawn when given (simulated); ``unsuggested``: per trial, measured
    without being suggested (lab; drawn hollow)."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    floor = 1e-4  # a log axis cannot show 0: exact hits are drawn here
    gaps_a = np.asarray(gaps, dtype=float)
    prior_a = np.asarray(prior_gaps, dtype=float)
    err = np.abs(gaps_a - target)
    perr = np.abs(prior_a - target)
    n = err.size
    trials = np.arange(1, n + 1)
    hit = err <= tolerance
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5.8))

    if perr.size:
        k = int(np.argmin(perr))
        best = np.minimum.accumulate(np.concatenate([[perr[k]], err]))
        a.step(np.arange(0, n + 1), np.maximum(best, floor), where="post", color="C0", lw=2,
               label="best |gap − T| so far (prior included)")
        a.scatter([0], [max(perr[k], floor)], marker="s", s=50, color="k", zorder=4,
                  label=f"prior's best of {perr.size} ({int(np.sum(perr <= tolerance))} hits among them): "
                        f"{perr[k]:.3g} eV, {prior_ids[k]}")
    elif n:
        a.step(trials, np.maximum(np.minimum.accumulate(err), floor), where="post", color="C0", lw=2,
               label="best |gap − T| so far")
    a.scatter(trials[~hit], np.maximum(err[~hit], floor), s=14, color="0.55", zorder=3,
              label="each trial's |gap − T|")
    if hit.any():
        a.scatter(trials[hit], np.maximum(err[hit], floor), s=90, color="C3", marker="*", zorder=4, edgecolors="k",
                  lw=0.5, label="a hit")
    a.axhline(tolerance, color="C3", ls="--", label=f"tolerance D = {tolerance:g} eV (hits below)")
    if budget is not None:
        a.axvline(budget, color="0.3", ls=":", lw=1, label=f"budget: {budget} trials")
    a.set_yscale("log")
    a.set_xlabel("trial (0 = the prior)" if perr.size else "trial")
    a.set_ylabel("|gap − target| (eV)")

    if prior_a.size:
        b.scatter(np.zeros(prior_a.size), prior_a, s=10, color="0.6", alpha=0.5,
                  label=f"prior ({prior_a.size}), at trial 0")
    b.axhspan(target - tolerance, target + tolerance, color="C3", alpha=0.25,
              label=f"target T ± D = {target:g} ± {tolerance:g} eV")
    b.axhline(target, color="C3", lw=0.8)
    lab = np.zeros(n, dtype=bool) if unsuggested is None else np.asarray(unsuggested, dtype=bool)
    miss = ~hit
    b.scatter(trials[miss & ~lab], gaps_a[miss & ~lab], s=20, color="C0", label="measured")
    if (miss & lab).any():
        b.scatter(trials[miss & lab], gaps_a[miss & lab], s=20, facecolors="none", edgecolors="C0",
                  label="measured, not suggested")
    if hit.any():
        b.scatter(trials[hit], gaps_a[hit], s=120, color="C3", marker="*", zorder=4, edgecolors="k", lw=0.5,
                  label=f"hit ({int(hit.sum())}): |gap − T| ≤ D")
        for t, g, cid, own in zip(trials[hit], gaps_a[hit], np.asarray(ids, dtype=object)[hit], lab[hit]):
            b.annotate(cid + (" (not suggested)" if own else ""), (t, g), fontsize=8, xytext=(5, 5),
                       textcoords="offset points", color="C3")
    elif n:
        k = int(np.argmin(err))
        b.annotate(f"no hit; closest trial: {ids[k]}\n|gap − T| = {err[k]:.3g} eV", (trials[k], gaps_a[k]),
                   fontsize=8, color="0.3", style="italic", xytext=(0.5, 0.97), textcoords="axes fraction", ha="center",
                   va="top", arrowprops={"arrowstyle": "->", "color": "0.5", "lw": 0.8},
                   bbox={"boxstyle": "round", "fc": "white", "ec": "0.7"})
    b.set_xlabel("trial")
    b.set_ylabel("measured band gap (eV)")
    for ax in (a, b):  # legends below the axes: inside, they hide points wherever they go
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(-0.7, max(n, budget or 0) + 0.7)
    fig.suptitle(title)
    if footer:
        fig.text(0.01, 0.005, footer if len(footer) <= 190 else footer[:187] + "...", fontsize=7, color="0.35",
                 ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.03 if footer else 0, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
