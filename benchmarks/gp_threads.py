"""The gp engine with one BLAS/OpenMP thread (as shipped) against the default thread pools: time and picks.

    python benchmarks/gp_threads.py STORE LABELS [--seeds 4]

STORE: mp-gap-36k featurized (`gapseek featurize ../shared/data/mp-gap-36k/cifs --out STORE`); LABELS: its
id_prop.csv. Setting 1 of the README (the 2.3-2.8 eV window, T = 2.534 eV, prior 100, budget 30). Each seed runs
the same campaign twice, interleaved, and prints both wall times and whether the picks are identical.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

import gapseek.search.engines.gp as gp_engine
from gapseek.search.campaign import draw_prior, simulate
from gapseek.search.engines import make_engine
from gapseek.search.labels import read_labels
from gapseek.search.pool import build_pool
from gapseek.search.settings import CampaignSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("labels")
    ap.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args()
    settings = CampaignSettings(target=2.534, engine="gp", label_range=(2.3, 2.8), budget=30)
    pool, truth = build_pool(args.store, settings, read_labels(args.labels))
    shipped = gp_engine.one_thread
    ratios = []
    for seed in range(args.seeds):
        runs = {}
        for mode, ctx in (("one thread", shipped), ("default pools", contextlib.nullcontext)):
            gp_engine.one_thread = ctx  # the engine looks the context up at each proposal
            rows = draw_prior(pool, 100, np.random.default_rng(seed))
            t0 = time.perf_counter()
            res = simulate(pool, truth, make_engine("gp"), rows, settings.budget, 1,
                           np.random.default_rng(1000 + seed))
            runs[mode] = (res, time.perf_counter() - t0)
        gp_engine.one_thread = shipped
        (a, ta), (b, tb) = runs["one thread"], runs["default pools"]
        ratios.append(tb / ta)
        print(f"seed {seed}: one thread {ta:.1f} s, default pools {tb:.1f} s ({tb / ta:.1f}x); "
              f"first hit {a.first_hit} vs {b.first_hit}; identical picks: {a.trials == b.trials}", flush=True)
    print(f"median ratio default/one thread: {np.median(ratios):.1f}x over {len(ratios)} seed(s)")


if __name__ == "__main__":
    main()
