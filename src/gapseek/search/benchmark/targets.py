"""Benchmarks over many targets: one benchmark directory per target (``DIR/T<target>/``), and the aggregate over
all of them (``DIR/targets.json``, ``targets.png``): one target can be decided by a single crystal."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from gapseek.errors import ConfigError, InputError
from gapseek.fsutil import write_json
from gapseek.search.benchmark.logs import RUN_FIELDS, read_ceilings, read_forecasts, read_log, read_meta
from gapseek.search.benchmark.plots import plot_targets, target_bands
from gapseek.search.benchmark.run import run_benchmark
from gapseek.search.benchmark.summary import ceiling_check, forecast_check
from gapseek.search.settings import CampaignSettings

__all__ = ["TARGETS_FILE", "parse_targets", "run_targets", "summarize_targets", "target_dir"]

log = logging.getLogger(__name__)

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
        st = read_meta(d)["settings"]
        budget = int(st["budget"])
        rows = read_log(d / "runs.csv", RUN_FIELDS)
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
    forecasts = {(t, seed): r for t in targets for seed, r in read_forecasts(target_dir(out, t)).items()}
    summary["forecast_check"] = forecast_check(forecasts, first, exact)
    summary["ceiling"] = ceiling_check({(t, seed): r for t in targets
                                        for seed, r in read_ceilings(target_dir(out, t)).items()}, exact)
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
