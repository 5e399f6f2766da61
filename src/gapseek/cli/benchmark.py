"""``gapseek benchmark``: parse, call the library (:mod:`gapseek.search.benchmark`), print its tables."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from gapseek.cli.search import campaign_settings, prior_arg
from gapseek.errors import ConfigError
from gapseek.search.benchmark.run import run_benchmark
from gapseek.search.benchmark.targets import parse_targets, run_targets
from gapseek.search.engines import make_engine
from gapseek.search.labels import read_labels


def cmd_benchmark(args: argparse.Namespace) -> int:
    targets = parse_targets(args.targets) if args.targets else None
    if targets is None and args.target is None:
        raise ConfigError("benchmark needs --target T or --targets LIST|LO:HI:STEP")
    if targets is not None and args.target is not None:
        raise ConfigError("give --target or --targets, not both")
    if targets is not None:
        args.target = targets[0]
    settings = campaign_settings(args)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in engines:
        make_engine(e)  # an unknown engine fails here, listing the valid ones
    prior = prior_arg(args.prior)
    if not isinstance(prior, int):
        raise ConfigError("benchmark draws the prior per seed: --prior takes a number")

    bar = None
    use_bar = not args.verbose and not args.no_progress and sys.stderr.isatty()

    def plan(recorded: int, to_run: int) -> None:
        nonlocal bar
        if recorded:
            print(f"gapseek benchmark: resuming {args.out}: {recorded} campaign(s) recorded, {to_run} to run",
                  flush=True)
        if use_bar and to_run:
            bar = tqdm(total=to_run, unit="campaign", dynamic_ncols=True)

    def progress(name, seed, res):
        first = res.first_hit if res.first_hit <= settings.budget else "none"
        if bar is not None:
            bar.set_postfix_str(f"seed {seed} {name}: first hit {first}", refresh=False)
            bar.update(1)
        else:  # one line per finished campaign, so that a log file shows progress
            print(f"seed {seed:>3} {name:<12} first hit {first:>4}  hits {res.hits}  ({res.seconds:.1f} s)",
                  flush=True)

    if targets is not None:
        return _benchmark_targets(args, settings, targets, engines, prior, progress, plan, lambda: bar)
    try:
        summary = run_benchmark(args.store, read_labels(args.labels), settings, engines, args.seeds, prior,
                                args.out, drop_missing=args.drop_missing, progress=progress,
                                overwrite=args.overwrite, labels_path=args.labels, on_plan=plan)
    finally:
        if bar is not None:
            bar.close()
    st = summary["setting"]
    print(f"\npool {st['pool']} ({st['hits_in_pool']} hits), budget {st['budget']}, prior {st['prior']}, "
          f"{st['seeds']} seed(s) recorded; random's exact expected first hit* {st['random_exact_first_hit_mean']:.1f}")
    print(f"{'engine':<12}{'runs':>5}{'first hit median*':>19}{'mean*':>7}{'found':>7}{'hits':>6}"
          f"{'accel. vs random [95% CI]':>28}{'vs exact random [95% CI]':>27}")

    def accel(e: dict, key: str) -> str:
        if key not in e:
            return "-"
        if e[key + "_ci95"] is None:
            return f"{e[key]:.2f} [one seed]"
        lo, hi = e[key + "_ci95"]
        return f"{e[key]:.2f} [{lo:.2f}, {hi:.2f}]"

    for name, e in summary["engines"].items():
        print(f"{name:<12}{e['runs']:>5}{e['first_hit_median']:>19.1f}{e['first_hit_mean']:>7.1f}"
              f"{e['found_rate']:>7.2f}{e['hits_mean']:>6.2f}{accel(e, 'acceleration_vs_random'):>28}"
              f"{accel(e, 'acceleration_vs_random_exact'):>27}")
    print(f"* a campaign without a hit counts as {st['censored_at']} (budget + 1) trials")
    _print_forecast_check(summary.get("forecast_check"), summary.get("ceiling"))
    print(f"-> {args.out}/summary.json, runs.csv, trials.csv, forecasts.csv, ceilings.csv, curves.png")
    return 0


def _print_forecast_check(fc: dict | None, ceiling: dict | None = None) -> None:
    if ceiling:
        print(f"ceiling: a predictor with the error each prior measures near T (sigma {ceiling['sigma_mean']:.2f} "
              f"eV on average), unbiased: mean first hit {ceiling['first_hit_mean']:.1f}, "
              f"{ceiling['acceleration_vs_random_exact']:.2f}x random's exact expectation")
    if not fc:
        return
    print(f"forecast from each prior, before any trial ({fc['campaigns_forecast']} campaigns): random "
          f"{fc['random_forecast_first_hit_mean']:.1f} forecast vs {fc['random_exact_first_hit_mean']:.1f} exact; "
          + "; ".join(f"{n} {e['forecast_first_hit_mean']:.1f} forecast vs {e['first_hit_mean']:.1f} realised, "
                      f"{100 * e['inside_forecast_10_90']:.0f}% inside the forecast's 10-90% range"
                      for n, e in fc["engines"].items()))


def _print_targets(s: dict, names: list[str]) -> None:
    print("\nper target: mean first hit* (found share), acceleration vs random's exact expectation [95% CI]")
    print(f"{'T (eV)':>7}{'random exact*':>14}" + "".join(f"{n:>30}" for n in names))
    for t in s["targets"]:
        row = s["per_target"][repr(t)]
        cells = []
        for n in names:
            e = row["engines"].get(n)
            cells.append("-" if e is None else f"{e['first_hit_mean']:.1f} ({e['found_rate']:.2f}) "
                         f"{e['acceleration_vs_random_exact']:.2f}" + ("!" if e["worse_than_random_and_predicted"]
                                                                      else ""))
        print(f"{t:>7g}{row['random_exact_first_hit_mean']:>14.1f}" + "".join(f"{c:>30}" for c in cells))


def _print_target_bands(s: dict, names: list[str]) -> None:
    """Per band of targets (targets.json's ``bands``): each engine's mean first hit*, its acceleration and how many
    of the band's targets it did worse than both random and predicted on."""
    print(f"\nper band of 0.5 eV of targets ({len(s['targets'])} targets; each one in targets.json): mean "
          "first hit*, acceleration vs random's exact expectation, targets worse than random and predicted")
    print(f"{'T (eV)':>12}{'targets':>8}{'random exact*':>14}" + "".join(f"{n:>24}" for n in names))
    for band in s["bands"]:
        cells = []
        for n in names:
            e = band["engines"].get(n)
            worse = 0 if e is None else e["targets_worse_than_random_and_predicted"]
            cells.append("-" if e is None else f"{e['first_hit_mean']:.1f} {e['acceleration_vs_random_exact']:.2f}x"
                         + (f" !{worse}" if worse else ""))
        print(f"{band['low']:>5.2f}-{band['high']:<6.2f}{band['targets']:>8}{band['random_exact_first_hit_mean']:>14.1f}"
              + "".join(f"{c:>24}" for c in cells))


def _benchmark_targets(args, settings, targets, engines, prior, progress, plan, get_bar) -> int:
    def on_target(t: float) -> None:
        bar = get_bar()
        if bar is not None:
            bar.close()
        print(f"gapseek benchmark: target {t:g} eV -> {args.out}/T{t:.4f}".rstrip("0").rstrip(".") + "/",
              flush=True)

    try:
        s = run_targets(args.store, read_labels(args.labels), settings, targets, engines, args.seeds, prior,
                        args.out, on_target=on_target, drop_missing=args.drop_missing, progress=progress,
                        overwrite=args.overwrite, labels_path=args.labels, on_plan=plan)
    finally:
        if get_bar() is not None:
            get_bar().close()

    def acc(e: dict) -> str:
        ci = e["acceleration_vs_random_exact_ci95"] or e["acceleration_vs_random_exact_ci95_over_targets"]
        return f"{e['acceleration_vs_random_exact']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    names = list(s["aggregate"])
    if len(s["targets"]) > 25:  # many targets: per 0.5 eV band here, every target in targets.json
        _print_target_bands(s, names)
    else:
        _print_targets(s, names)
    print("\nover all targets (acceleration = sum of random's exact expectations / sum of first hits; CI over "
          "seeds, or over targets with one seed)")
    print(f"{'engine':<12}{'campaigns':>10}{'mean*':>8}{'median*':>9}{'found':>7}{'accel. vs exact random':>30}"
          f"  worse than random and predicted on")
    for n, e in s["aggregate"].items():
        bad = e["targets_worse_than_random_and_predicted"]
        worse = (", ".join(f"{t:g}" for t in bad[:10]) + (f" ... ({len(bad)} of {len(s['targets'])} targets)"
                                                          if len(bad) > 10 else "")) or "none"
        print(f"{n:<12}{e['campaigns']:>10}{e['first_hit_mean']:>8.1f}{e['first_hit_median']:>9.1f}"
              f"{e['found_rate']:>7.2f}{acc(e):>30}  {worse}")
    if s["skipped"]:
        print(f"skipped (nothing to find): {', '.join(s['skipped'])}")
    _print_forecast_check(s.get("forecast_check"), s.get("ceiling"))
    print(f"* a campaign without a hit counts as {s['censored_at']} (budget + 1) trials; ! = worse than both "
          f"random's exact expectation and predicted on that target")
    print(f"-> {args.out}/targets.json, and per target {args.out}/T<target>/summary.json")
    return 0
