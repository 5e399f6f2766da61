"""Shard task wall times with shards of equal file counts vs shards balanced by estimated work, same run.

    python benchmarks/cod_pool.py WORK/p20k --n 20000 --seed 1
    python benchmarks/balance_spread.py WORK/p20k/cif WORK/balance [--shard-size 1024]

Indexes the pool twice (``--balance count`` and ``--balance work``, both ``--pack``), then featurizes every
shard of both stores at the same time (one process per store, one worker each: the same load on both on a
shared 2-core machine), and reads each task's wall time from its part file. An array's wall time is its
slowest task: the max and max/median are the figures. It also fits the cost model of the work estimate, wall
= a x files + b x estimated atoms per shard over both stores' shards, and prints a / b (the per-file cost in
atoms, FILE_COST_ATOMS in gapseek.cluster.plan).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cifs", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--shard-size", type=int, default=1024)
    args = ap.parse_args()
    env = dict(os.environ, GAPSEEK_MODEL_DIR=str(ROOT.parent / "shared" / "models" / "cgcnn"))
    stores = {b: args.work / b for b in ("count", "work")}
    for balance, store in stores.items():
        subprocess.run([str(BIN / "gapseek"), "index", str(args.cifs), "--out", str(store), "--shard-size",
                        str(args.shard_size), "--balance", balance, "--pack", "--overwrite"], check=True, env=env)
    runs = [subprocess.Popen([str(BIN / "gapseek"), "featurize", str(store), "--workers", "1", "--no-progress"],
                             env=env, stdout=subprocess.DEVNULL) for store in stores.values()]
    if any(p.wait() for p in runs):
        sys.exit("a featurize run failed")
    rows, atoms, walls = [], [], []
    print(f"{'shards':>8} {'tasks':>6} {'rows min-max':>14} {'wall s min/median/max':>24} {'max/median':>11} "
          f"{'sum s':>7}")
    for balance, store in stores.items():
        with h5py.File(store / "manifest.h5", "r") as f:
            est = f["atoms_est"][()]
            n_shards = int(f.attrs["num_shards"])
        w, r = [], []
        for i in range(n_shards):
            with h5py.File(store / "shards" / f"part-{i:05d}.h5", "r") as f:
                a, b = int(f.attrs["manifest_start"]), int(f.attrs["manifest_stop"])
                w.append(float(f.attrs["elapsed_s"]))
            r.append(b - a)
            rows.append(b - a)
            atoms.append(float(est[a:b].sum()))
        walls += w
        med = statistics.median(w)
        print(f"{balance:>8} {n_shards:>6} {min(r):>6}-{max(r):<7} {min(w):>8.1f}/{med:.1f}/{max(w):.1f} "
              f"{max(w) / med:>11.2f} {sum(w):>7.0f}")
    x = np.column_stack([rows, atoms])
    coef, *_ = np.linalg.lstsq(x, np.array(walls), rcond=None)
    pred = x @ coef
    r2 = 1 - ((np.array(walls) - pred) ** 2).sum() / ((np.array(walls) - np.mean(walls)) ** 2).sum()
    print(f"cost model over {len(walls)} tasks: {1e3 * coef[0]:.2f} ms per file + {1e3 * coef[1]:.3f} ms per "
          f"estimated atom (R^2 {r2:.2f}): a file costs as much as {coef[0] / coef[1]:.1f} atoms")


if __name__ == "__main__":
    main()
