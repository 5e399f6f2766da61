"""One suggestion over a large candidate pool: time and memory of an engine (`gp`, or the default `shell`), one core.

    python benchmarks/search_scale.py [--sizes 50000,500000] [--observations 100,200] [--engine gp|shell]

For each pool size a synthetic store is written (random 64+32-d vectors, a CGCNN-like prediction), its PCA
fitted, and a campaign with the given number of observed crystals asks the `gp` engine for 1 and for 4
(joint) suggestions (GP fit from cold hyperparameters included; importing GPy, once per process, is timed
apart). Each measurement runs in a fresh process (peak RSS is its own) with one BLAS thread. The baseline, in
the same process: one posterior pass over the pool with our `gp_posterior` against GPy's `model.predict`.
Goal: <= 2 s per suggestion at 500,000 candidates and < 4 GB; the GP fit must not grow with the pool.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_store(directory: Path, n: int) -> None:
    from gapseek.store import FeatureRows, StoreWriter

    rng = np.random.default_rng(0)
    with StoreWriter(directory, overwrite=True) as w:
        for start in range(0, n, 50_000):
            m = min(50_000, n - start)
            rows = FeatureRows()
            rows.ids = [f"syn-{k}" for k in range(start, start + m)]
            rows.paths = rows.ids
            rows.formula = ["X"] * m
            pooled = rng.normal(size=(m, 64)).astype(np.float32)
            rows.pooled = list(pooled)
            rows.hidden = list(rng.normal(size=(m, 32)).astype(np.float32))
            rows.prediction = list((2.5 + 0.5 * np.tanh(pooled[:, 0])).astype(np.float32))
            rows.n_atoms = rows.n_padded = rows.n_tied = [1] * m
            w.write(rows)
        w.commit()


def child_shell(pool, observed, y, batch, rng, t_pool) -> dict:
    """The ``shell`` engine: no GPy; its GP fit (grid of hyperparameters) and its shell's size reported."""
    from gapseek.search.engines import ShellEngine
    from gapseek.search.gp import IsoGP

    engine = ShellEngine()
    t0 = time.perf_counter()
    picks = engine.propose(pool, observed, y, batch, rng)
    t_suggest = time.perf_counter() - t0
    t0 = time.perf_counter()
    IsoGP(pool.X[observed], np.abs(y - pool.target))
    t_fit = time.perf_counter() - t0
    return {"pool": len(pool), "observations": len(observed), "batch": batch, "picks": len(picks),
            "load_pool_s": t_pool, "suggest_s": t_suggest, "fit_only_s": t_fit,
            "shell_candidates": engine.last["candidates"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(store: str, n_obs: int, batch: int, engine: str = "gp") -> dict:
    from gapseek.search.engines import GPEngine
    from gapseek.search.gp import gp_posterior
    from gapseek.search.pool import build_pool
    from gapseek.search.settings import CampaignSettings

    t0 = time.perf_counter()
    pool, _ = build_pool(store, CampaignSettings(target=2.534, vector="pooled", components=3))
    t_pool = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    observed = rng.choice(len(pool), size=n_obs, replace=False)
    y = pool.prediction[observed] + rng.normal(scale=0.3, size=n_obs)
    if engine == "shell":
        return child_shell(pool, observed, y, batch, rng, t_pool)
    t0 = time.perf_counter()
    import GPy  # noqa: F401  (a once-per-process cost, reported on its own)

    t_import = time.perf_counter() - t0
    engine = GPEngine()
    t0 = time.perf_counter()
    picks = engine.propose(pool, observed, y, batch, rng)
    t_suggest = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = GPEngine()._fit(pool.X[observed], y - pool.prediction[observed])  # a cold fit, for its cost alone
    t_fit = time.perf_counter() - t0
    # the posterior over every candidate: ours against GPy's own predict (the baseline), same model, same blocks
    post, block = gp_posterior(model), 16384
    t0 = time.perf_counter()
    ours = np.concatenate([post(pool.X[s:s + block])[1] for s in range(0, len(pool), block)])
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    gpy = np.concatenate([model.predict(pool.X[s:s + block])[1][:, 0] for s in range(0, len(pool), block)])
    t_gpy = time.perf_counter() - t0
    return {"posterior_s": t_ours, "gpy_predict_s": t_gpy,
            "max_sd_rel_diff": float(np.max(np.abs(ours - np.sqrt(gpy)) / np.sqrt(gpy))),
            "pool": len(pool), "observations": n_obs, "batch": batch, "picks": len(picks),
            "load_pool_s": t_pool, "import_gpy_s": t_import, "suggest_s": t_suggest, "fit_only_s": t_fit,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="50000,500000")
    ap.add_argument("--observations", default="100,200")
    ap.add_argument("--engine", choices=["gp", "shell"], default="gp")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), int(args.child[2]), args.child[3])))
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if args.engine == "shell":
        print(f"{'pool':>8} {'obs':>5} {'batch':>5} {'suggest s':>10} {'GP fit s':>9} {'shell':>8} "
              f"{'load pool s':>12} {'peak RSS MB':>12}")
    else:
        print(f"{'pool':>8} {'obs':>5} {'batch':>5} {'suggest s':>10} {'GP fit s':>9} {'load pool s':>12} "
              f"{'import GPy s':>12} {'peak RSS MB':>12} | {'posterior s':>11} {'GPy.predict s':>13} {'ratio':>6} "
              f"{'max sd rel diff':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            store = Path(tmp) / f"store-{n}"
            make_store(store, n)
            from gapseek.search.pca import fit_pca
            from gapseek.store import Store

            with Store.open(store) as st:
                st.save_pca(fit_pca(st, 3, "pooled"), origin="benchmarks/search_scale.py")
            for n_obs in (int(s) for s in args.observations.split(",")):
                for batch in (1, 4):
                    out = subprocess.run([sys.executable, __file__, "--child", str(store), str(n_obs), str(batch),
                                          args.engine], env=env, capture_output=True, text=True, check=True).stdout
                    r = json.loads(out.strip().splitlines()[-1])
                    if args.engine == "shell":
                        print(f"{r['pool']:>8} {r['observations']:>5} {r['batch']:>5} {r['suggest_s']:>10.2f} "
                              f"{r['fit_only_s']:>9.2f} {r['shell_candidates']:>8} {r['load_pool_s']:>12.2f} "
                              f"{r['peak_rss_mb']:>12.0f}", flush=True)
                        continue
                    print(f"{r['pool']:>8} {r['observations']:>5} {r['batch']:>5} {r['suggest_s']:>10.2f} "
                          f"{r['fit_only_s']:>9.2f} {r['load_pool_s']:>12.2f} {r['import_gpy_s']:>12.2f} "
                          f"{r['peak_rss_mb']:>12.0f} | {r['posterior_s']:>11.2f} {r['gpy_predict_s']:>13.2f} "
                          f"{r['gpy_predict_s'] / r['posterior_s']:>6.1f} {r['max_sd_rel_diff']:>15.1e}",
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
