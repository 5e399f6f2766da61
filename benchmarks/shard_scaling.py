"""Shard scaling: the whole mp-gap-36k through N shards on the local Slurm vs one process, and a synthetic
500,000-entry pool for index, plan and merge.

    python benchmarks/shard_scaling.py [--shards 8] [--parallel 8] [--synthetic 500000] [--skip-real]
                                       [--pool DIR]   # a pool of benchmarks/cod_pool.py instead of tiny files

Part 1 (../shared/data/mp-gap-36k, 36,737 CIFs): `gapseek index`, then (a) one process featurizing every
shard in turn, (b) `sbatch --array=0-N-1%K slurm/featurize.sbatch` on the local Slurm (tests/slurm/
local-slurm.sh, started here if none is up), then `gapseek merge`. Prints wall times, the speed-up, store
sizes, merge time and every task's peak RSS (recorded in its part file).

Part 2 (synthetic): a tree of N tiny files in COD's layout (or, with --pool, a rehearsal pool of realistic
COD-like files made by benchmarks/cod_pool.py) is indexed (walk + read + sha256 + work estimate of every file),
loose and --pack; the shard plan is read; shards with random 64+32-d vectors are written as featurize would,
and merged. Prints time and peak RSS of index and merge: memory must stay flat in N, time must stay in minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MP = SHARED / "data" / "mp-gap-36k" / "cifs"
MODEL = SHARED / "models" / "cgcnn"
SCRIPT = ROOT / "tests" / "slurm" / "local-slurm.sh"
BIN = Path(sys.executable).parent


def _timed(cmd: list[str], env: dict, cwd: Path | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stdout) of a command run under /usr/bin/time."""
    t0 = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-f", "PEAK_RSS_KB %M", *cmd], env=env, cwd=cwd,
                         capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    rss = float(re.findall(r"PEAK_RSS_KB (\d+)", res.stderr)[-1]) / 1024
    return dt, rss, res.stdout


def _du_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def _wait_gone(job: str, env: dict) -> None:
    while subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True, text=True).stdout.strip():
        time.sleep(1)


def part1(work: Path, shards: int, parallel: int) -> None:
    if not MP.is_dir() or not MODEL.is_dir():
        print(f"part 1 skipped: {MP} or {MODEL} is absent (the benchmark reads ../shared)")
        return
    env = dict(os.environ, GAPSEEK_MODEL_DIR=str(MODEL), PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    gs = str(BIN / "gapseek")
    store1, storeN = work / "one", work / "sharded"
    t_index, rss_index, out = _timed([gs, "index", str(MP), "--out", str(store1), "--shards", str(shards)], env)
    print(f"index 36,737 CIFs: {t_index:.1f} s, peak RSS {rss_index:.0f} MB  ({out.strip()})", flush=True)
    shutil.copytree(store1, storeN)

    t_one, rss_one, _ = _timed([gs, "featurize", str(store1), "--no-progress"], env)
    print(f"one process, {shards} shards in turn: {t_one:.1f} s ({36737 / t_one:.0f} crystals/s), "
          f"peak RSS {rss_one:.0f} MB", flush=True)

    state = work / "slurm-state"
    senv = dict(env, GAPSEEK_SLURM_STATE=str(state))
    started = subprocess.run(["bash", str(SCRIPT), "start"], env=senv, capture_output=True, text=True)
    if started.returncode != 0:
        print(f"part 1b skipped: no local Slurm ({started.stderr.strip()[-300:]})")
        return
    senv["SLURM_CONF"] = str(state / "slurm.conf")
    senv["GAPSEEK_SLURM_DIR"] = str(ROOT / "slurm")
    try:
        (work / "logs").mkdir(exist_ok=True)
        t0 = time.perf_counter()
        job = subprocess.run(["sbatch", "--parsable", "--gres=none", "--cpus-per-task=1", "--mem=2G",
                              f"--array=0-{shards - 1}%{parallel}", str(ROOT / "slurm" / "featurize.sbatch"),
                              str(storeN)], env=senv, cwd=work, capture_output=True, text=True,
                             check=True).stdout.strip()
        _wait_gone(job, senv)
        t_array = time.perf_counter() - t0
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=senv, capture_output=True)
    t_merge, rss_merge, _ = _timed([gs, "merge", str(storeN)], env)
    tasks = []
    for p in sorted((storeN / "shards").glob("part-*.h5")):
        with h5py.File(p, "r") as f:
            tasks.append((p.name, float(f.attrs["elapsed_s"]), float(f.attrs["peak_rss_mb"])))
    cores = os.cpu_count()
    print(f"Slurm array, {shards} tasks, {parallel} at once, 1 cpu each, on {cores} cores: {t_array:.1f} s wall "
          f"(speed-up {t_one / t_array:.2f}x vs one process; ideal on this machine {min(cores, parallel)}x)")
    print(f"  per task: {min(t[1] for t in tasks):.1f}-{max(t[1] for t in tasks):.1f} s, peak RSS "
          f"{min(t[2] for t in tasks):.0f}-{max(t[2] for t in tasks):.0f} MB")
    print(f"merge: {t_merge:.1f} s, peak RSS {rss_merge:.0f} MB; store: features.h5 "
          f"{_du_mb(storeN / 'features.h5'):.1f} MB, shards {_du_mb(storeN / 'shards'):.1f} MB, manifest "
          f"{_du_mb(storeN / 'manifest.h5'):.1f} MB", flush=True)


def part2(work: Path, n: int, pool: Path | None = None) -> None:
    from gapseek.cluster.parts import shard_path
    from gapseek.store import FeatureRows, ShardInfo, StoreWriter
    from gapseek.store.manifest import read_manifest

    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    if pool is None:
        tree = work / "cod" / "cif"
        t0 = time.perf_counter()
        for k in range(n):
            cid = 1000000 + k
            d = tree / str(cid)[0] / str(cid)[1:3] / str(cid)[3:5]
            if k % 100 == 0 or not d.is_dir():
                d.mkdir(parents=True, exist_ok=True)
            (d / f"{cid}.cif").write_text(f"data_{cid}\n_cell_length_a {3 + k % 7}\n")
        print(f"\nsynthetic tree of {n:,} files written in {time.perf_counter() - t0:.0f} s", flush=True)
    else:
        tree = pool / "cif"
    store = work / "synthetic"
    for extra in ([], ["--pack"]):
        t_index, rss_index, out = _timed([str(BIN / "gapseek"), "index", str(tree), "--out", str(store),
                                          "--overwrite", "--threads", str(os.cpu_count() or 2), *extra], env)
        print(f"index {' '.join(extra) or '(loose)'}: {t_index:.1f} s, peak RSS {rss_index:.0f} MB "
              f"({out.strip()})", flush=True)
    t0 = time.perf_counter()
    man = read_manifest(store)
    plan = man.plan
    digests = [man.shard_digest(i) for i in range(plan.num_shards)]
    t_plan = time.perf_counter() - t0
    print(f"read manifest + plan {plan.num_shards} shards + their digests: {t_plan:.1f} s", flush=True)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    attrs = {"settings_digest": "synthetic", "model_sha256": "synthetic"}
    for i in range(plan.num_shards):
        a, b = plan.bounds(i)
        path = shard_path(store, i)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = FeatureRows()
        m = b - a
        fail = set(range(0, m, 3))  # a third of them failures, as in COD
        for k in range(m):
            if k in fail:
                rows.failures.append((man.ids[a + k], man.paths[a + k], "no-structure: synthetic"))
            else:
                rows.ids.append(man.ids[a + k])
                rows.paths.append(man.paths[a + k])
                rows.formula.append("Si")
        nok = len(rows.ids)
        rows.prediction = list(rng.random(nok, dtype=np.float32))
        rows.pooled = list(rng.random((nok, 64), dtype=np.float32))
        rows.hidden = list(rng.random((nok, 32), dtype=np.float32))
        rows.n_atoms = rows.n_padded = rows.n_tied = [0] * nok
        with StoreWriter(path.parent, attrs=attrs, overwrite=True, filename=path.name) as w:
            w.write(rows)
            w.commit(shard=ShardInfo(digests[i], shard_index=i, num_shards=plan.num_shards, manifest_start=a,
                                     manifest_stop=b))
    print(f"wrote {plan.num_shards} synthetic shards in {time.perf_counter() - t0:.0f} s", flush=True)
    t_merge, rss_merge, out = _timed([str(BIN / "gapseek"), "merge", str(store)], env)
    print(f"merge {n:,} entries: {t_merge:.1f} s, peak RSS {rss_merge:.0f} MB; features.h5 "
          f"{_du_mb(store / 'features.h5'):.0f} MB ({out.strip()})", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--synthetic", type=int, default=500_000)
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--pool", type=Path, help="part 2 on this benchmarks/cod_pool.py pool instead of tiny files")
    ap.add_argument("--work", help="scratch folder (default: a temporary one, removed at the end)")
    args = ap.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gapseek-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if not args.skip_real:
            part1(work, args.shards, args.parallel)
        if args.synthetic:
            part2(work, args.synthetic, args.pool)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
