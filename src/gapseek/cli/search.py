"""``gapseek pca``, ``search``, ``campaign``, ``forecast``, ``suggest`` and ``tell``: parse, call the library
(:mod:`gapseek.search`), print."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gapseek.errors import InputError, few
from gapseek.search.campaign import Campaign, Trial, open_campaign, run_search, start_lab_campaign, suggest, tell
from gapseek.search.campaign.lab import candidates_left, check_tell, forecast_campaign
from gapseek.search.campaign.simulate import resumable
from gapseek.search.filters import read_exclude_file
from gapseek.search.labels import read_labels
from gapseek.search.pca import fit_pca
from gapseek.search.pool import Pool
from gapseek.search.settings import CampaignSettings
from gapseek.store import Store
from gapseek.store.features import pca_lock


def campaign_settings(args: argparse.Namespace) -> CampaignSettings:
    """The campaign settings of the command line (validated where they live: an unknown engine fails there)."""
    exclude = getattr(args, "exclude", None)
    return CampaignSettings(
        target=args.target, tolerance=args.tolerance, engine=args.engine, vector=args.vector,
        features=args.features, components=args.components, budget=getattr(args, "budget", None),
        batch=getattr(args, "batch", 1), seed=args.seed,
        label_range=tuple(args.label_range) if args.label_range else None,
        prediction_input=args.prediction_input,
        require_elements=getattr(args, "require_elements", None),
        exclude_elements=getattr(args, "exclude_elements", None), max_elements=getattr(args, "max_elements", None),
        max_atoms=getattr(args, "max_atoms", None),
        exclude=None if exclude is None else read_exclude_file(exclude),
    )


def prior_arg(text: str) -> int | list[str]:
    """``--prior N`` (drawn at random) or ``--prior FILE`` (its ids)."""
    if text.isdigit():
        return int(text)
    if not Path(text).is_file():
        raise InputError(f"--prior {text}: neither a number nor a file")
    return list(read_labels(text))


def _pca_notice(command: str):
    return lambda choice: print(f"gapseek {command}: {choice.note}", file=sys.stderr)


def cmd_pca(args: argparse.Namespace) -> int:
    with pca_lock(args.store), Store.open(args.store) as st:  # another `gapseek pca`: this one waits, then fits
        res = fit_pca(st, args.components, args.vector, args.batch_rows)
        path = st.save_pca(res, origin="gapseek pca")
    ratios = ", ".join(f"{r:.3f}" for r in res.explained_variance_ratio)
    print(f"gapseek pca: {args.vector}, {res.n_rows} rows ({res.method}); explained variance ratio {ratios} "
          f"(total {res.explained_variance_ratio.sum():.3f}) -> {path}:/pca/{args.vector}")
    print(f"  used by search, campaign and suggest with --vector {args.vector} (default pooled) and --components "
          f"<= {args.components} (default 3)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    def show(t: Trial, why: str) -> None:
        mark = "HIT" if t.hit else ""
        print(f"trial {t.trial:>3}  {t.id:<14} {t.formula:<16} gap {t.band_gap:.4f} eV  |gap-T| {t.abs_error:.4f}  "
              f"{mark:<3}  ({why})", flush=True)

    settings = campaign_settings(args)  # a negative target fails here
    labels, prior = read_labels(args.labels), prior_arg(args.prior)
    camp = None if args.overwrite else resumable(args.out, args.store, args.labels, prior, settings)
    if camp is not None:
        print(f"gapseek search: resuming {args.out} after trial {camp.measured()}")
    s = run_search(args.store, labels, args.labels, prior, settings, args.out, overwrite=args.overwrite,
                   drop_missing=args.drop_missing, on_trial=show, on_pca=_pca_notice("search"))
    first = (f"first at trial {s['first_hit']}" if s["found"]
             else f"none in {s['first_hit_censored_at']} trial(s)")
    print(f"gapseek search: {s['hits']} hit(s) in {s['trials']} trials, {first}; best |gap - T| "
          f"{s['best_abs_error']:.3g} eV (the prior's best: {s['prior_best_abs_error']:.3g} eV) -> "
          f"{args.out}/trials.csv, summary.json, campaign.png")
    print(f"  {s['data']}")
    return 0


def _print_forecast(camp: Campaign, pool: Pool, budget: int, as_json: bool = False) -> bool:
    """The campaign's forecast (saved as DIR/forecast.json), or on stderr why there is none."""
    fc, why = forecast_campaign(camp, pool, budget)
    if fc is None:
        print(f"gapseek: no forecast: {why}", file=sys.stderr)
        return False
    print(json.dumps(fc.to_json(), indent=2) if as_json else "\n".join(fc.lines()))
    return True


def cmd_campaign(args: argparse.Namespace) -> int:
    settings = campaign_settings(args)  # a negative target fails here
    camp, pool = start_lab_campaign(args.store, settings, read_labels(args.prior), args.out,
                                    overwrite=args.overwrite, on_pca=_pca_notice("campaign"))
    filtered = f" ({pool.filtered_out} left out by the candidate filters)" if pool.filtered_out else ""
    print(f"gapseek campaign: {args.out} with {len(camp.prior())} prior measurement(s), {candidates_left(camp, pool)} "
          f"candidates{filtered}; next: gapseek suggest {args.out} --n 4")
    _print_forecast(camp, pool, args.plan)
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    camp, pool = open_campaign(args.campaign, on_pca=_pca_notice("forecast"), origin="gapseek forecast")
    with camp.lock():
        return 0 if _print_forecast(camp, pool, args.budget, args.json) else 1


def cmd_suggest(args: argparse.Namespace) -> int:
    camp, pool = open_campaign(args.campaign, on_pca=_pca_notice("suggest"), origin="gapseek suggest")
    res = suggest(camp, pool, args.n, ignore_pending=args.ignore_pending)
    if res.pending is not None and res.pending.size:
        print(f"{res.pending.size} earlier suggestion(s) not yet told are taken as being measured: "
              f"{few([pool.ids[i] for i in res.pending])} (`gapseek tell DIR --release ID...` for those that will "
              f"not be; --ignore-pending disregards them for this call)")
    if not res.picks:
        print("gapseek suggest: every crystal of the pool is measured or being measured; nothing to propose")
        return 0
    print(f"{'id':<16} {'formula':<16} {'CGCNN (eV)':>10}  why")
    for i, why in res.picks:
        print(f"{pool.ids[i]:<16} {pool.formula[i]:<16} {pool.prediction[i]:>10.3f}  {why}")
    return 0


def cmd_tell(args: argparse.Namespace) -> int:
    check_tell(bool(args.results), args.release, args.failed, args.reason)  # before the campaign is opened
    camp, pool = open_campaign(args.campaign)
    results = read_labels(args.results) if args.results else {}  # a bad line refuses the whole file
    res = tell(camp, pool, results, args.release, args.failed, args.reason, source=args.results)
    if res.released:
        print(f"gapseek tell: released {len(res.released)} suggestion(s): {few(res.released)}")
    if res.failed:
        print(f"gapseek tell: recorded {len(res.failed)} crystal(s) as failed ({res.failed[0].reason}), never to be "
              f"proposed again: {few(args.failed)} -> {camp.dir}/failed.csv")
    if res.trials:
        hits = [t.id for t in res.trials if t.hit]
        print(f"gapseek tell: recorded {len(res.trials)} measurement(s)"
              + (f"; HITS: {', '.join(hits)}" if hits else ""))
        if res.unsuggested:
            print(f"  {len(res.unsuggested)} of them never suggested by this campaign: {few(res.unsuggested)} "
                  "(recorded as lab-unsuggested in trials.csv: fine if the lab chose them; check the ids otherwise)")
    s = res.summary
    if s is not None:
        best = "none yet" if s["best_abs_error"] is None else f"{s['best_abs_error']:.3g} eV"
        failed = f", {s['failed']} failed (not trials)" if s.get("failed") else ""
        print(f"  campaign: {s['trials']} measured, {s['hits']} hit(s){failed}, best |gap - T| {best} -> "
              f"{camp.dir}/summary.json" + (", campaign.png" if s["trials"] else ""))
    return 0
