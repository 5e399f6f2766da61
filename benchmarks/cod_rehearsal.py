"""The COD-scale rehearsal: a fresh clone runs slurm/pipeline.sh on a rehearsal pool on a real local Slurm,
with the faults of a real run, and the merged store is verified.

    python benchmarks/cod_pool.py WORK/pool --n 100000 --faults
    python benchmarks/cod_rehearsal.py WORK/pool WORK [--shard-size 4096] [--parallel 2] [--timeout 20]

What it does, as a user would (every step prints what it measured):
1. ``git clone`` this repository (its committed HEAD) into WORK/gapseek and ``make install`` there;
2. start a local Slurm (tests/slurm/local-slurm.sh, its own state folder and port; stopped at the end);
3. ``slurm/pipeline.sh --now POOL/cif --out WORK/store`` (index on the "login node" with --pack, the array, the
   merge after it), through a site file that activates the clone's venv. The site file also switches gapseek's
   up-front cell check off (a sitecustomize.py on PYTHONPATH), so that the hanging, crashing and memory-bomb
   files reach the neighbour search and the worker supervision, as unforeseen bad files would;
4. faults: the array task of shard 1 is requeued (``scontrol requeue``) once it has checkpointed a block; the
   merge job is held until the array is done, a part file is truncated, and the merge is released: it must
   refuse, naming the shard and the command that redoes it; that command is run, then the merge again;
5. verification, independent of gapseek's own: every manifest id exactly once in the merged store, as features
   or as a failure; the reason of each injected fault; per-task wall time and peak RSS (from the part files),
   store and pack sizes, the failure table. A JSON summary goes to WORK/rehearsal.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PORT = 7311

INJECT = '''"""Rehearsal only: gapseek's up-front cell check off, so that bad cells reach the neighbour search."""
import os
if os.environ.get("GAPSEEK_REHEARSAL_NO_CELL_CHECK") == "1":
    import gapseek.graph.neighbours as _nb
    _nb.check_cell = lambda crystal, radius=8.0: None
'''


def sh(cmd, env=None, check=True, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if check and res.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def squeue(env) -> list[tuple[str, str]]:
    out = sh(["squeue", "-h", "-o", "%i %T"], env=env).stdout
    return [tuple(line.split()[:2]) for line in out.splitlines() if line.strip()]


def wait_for(pred, what: str, timeout: float, step: float = 0.2):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(step)
    sys.exit(f"timed out after {timeout:.0f} s waiting for {what}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pool", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--shard-size", type=int, default=4096)
    ap.add_argument("--parallel", type=int, default=2, help="array tasks at once (= the local node's CPUs)")
    ap.add_argument("--timeout", type=float, default=20.0, help="featurize --timeout per file step (s)")
    ap.add_argument("--memory-limit", type=float, default=1.5, help="featurize --memory-limit (GiB)")
    ap.add_argument("--keep-slurm", action="store_true", help="leave the local Slurm running")
    args = ap.parse_args()
    pool, work = args.pool.resolve(), args.work.resolve()
    if not (pool / "cif").is_dir():
        sys.exit(f"{pool}/cif is missing: build it with benchmarks/cod_pool.py")
    report: dict = {"pool": str(pool), "shard_size": args.shard_size, "parallel": args.parallel}
    clone, store = work / "gapseek", work / "store"
    for d in (clone, store, work / "slurm", work / "inject"):
        shutil.rmtree(d, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    sh(["git", "clone", "-q", str(ROOT), str(clone)])
    sh(["make", "-C", str(clone), "install"])
    report["clone_install_s"] = round(time.time() - t0, 1)
    print(f"fresh clone + make install: {report['clone_install_s']} s", flush=True)

    senv = dict(os.environ, GAPSEEK_SLURM_STATE=str(work / "slurm"), GAPSEEK_SLURM_PORT=str(PORT),
                GAPSEEK_SLURM_CPUS=str(args.parallel))
    local = clone / "tests" / "slurm" / "local-slurm.sh"
    sh(["bash", str(local), "start"], env=senv)
    conf = sh(["bash", str(local), "env"], env=senv).stdout
    env = dict(os.environ, SLURM_CONF=re.search(r"SLURM_CONF=(\S+)", conf).group(1).strip("'\""))
    try:
        run(args, pool, work, clone, store, env, report)
    finally:
        if not args.keep_slurm:
            sh(["bash", str(local), "stop"], env=senv, check=False)
    (work / "rehearsal.json").write_text(json.dumps(report, indent=1))
    print(f"summary: {work / 'rehearsal.json'}")


def run(args, pool: Path, work: Path, clone: Path, store: Path, env: dict, report: dict) -> None:
    (work / "inject").mkdir()
    (work / "inject" / "sitecustomize.py").write_text(INJECT)
    site = work / "site.sh"
    site.write_text(f"source {clone}/.venv/bin/activate\nexport GAPSEEK_MODEL_DIR={SHARED}/models/cgcnn\n"
                    f"export PYTHONPATH={work}/inject\nexport GAPSEEK_REHEARSAL_NO_CELL_CHECK=1\n")
    penv = dict(env, GAPSEEK_SITE=str(site), SHARD_SIZE=str(args.shard_size), PARALLEL=str(args.parallel),
                PACK="1", GAPSEEK_GRES="none", GAPSEEK_SBATCH_ARGS="--cpus-per-task=1 --mem=3G",
                GAPSEEK_FEATURIZE_ARGS=f"--timeout {args.timeout:g} --memory-limit {args.memory_limit:g} "
                                       "--checkpoint-every 1024")
    t_start = time.time()
    out = sh(["bash", str(clone / "slurm" / "pipeline.sh"), "--now", str(pool / "cif"), "--out", str(store)],
             env=penv, cwd=work).stdout
    print(out, end="", flush=True)
    arrays = re.findall(r"array job (\d+)", out)
    merge = re.search(r"merge: job (\d+)", out).group(1)
    sh(["scontrol", "hold", merge], env=env)
    m = re.search(r"gapseek index: (\d+) inputs.* in ([0-9.]+) s", out)
    report["index_s"], report["n_inputs"] = float(m.group(2)), int(m.group(1))

    # fault: shard 1's task requeued once it has checkpointed a block
    partial = store / "shards" / "part-00001.partial"
    wait_for(lambda: list(partial.glob("block-*.h5")), "shard 1's first checkpointed block", 3600)
    task = f"{arrays[0]}_1"
    t_requeue = time.time()
    sh(["scontrol", "requeue", task], env=env)
    report["requeued_task"] = task
    print(f"requeued {task} at {t_requeue - t_start:.0f} s (a checkpointed block in {partial.name})", flush=True)

    # the array done: truncate a part file before the merge runs
    wait_for(lambda: all(j == merge for j, _ in squeue(env)), "the featurize array", 6 * 3600, 2)
    t_array = time.time() - t_start
    part = store / "shards" / "part-00002.h5"
    size = part.stat().st_size
    with open(part, "r+b") as fh:
        fh.truncate(size // 2)
    print(f"array done at {t_array:.0f} s; truncated {part.name} to {size // 2} of {size} bytes", flush=True)
    sh(["scontrol", "release", merge], env=env)
    wait_for(lambda: not squeue(env), "the merge job", 3600, 1)
    log = (store / "logs" / f"gapseek-merge-{merge}.log").read_text()
    hint = re.search(r"(sbatch --array=[^\s`]+ [^\s`]+featurize\.sbatch [^\s`]+)", log)
    refused = "shard 2" in log and hint is not None and not (store / "features.h5").exists()
    print(f"merge refused the truncated part: {refused} ({hint.group(1) if hint else 'no rerun hint'})")
    report["merge_refused_truncated_part"] = refused
    if not refused:
        sys.exit(log[-3000:])
    # the user's fix: the command the merge printed (with the site's resources), then the merge again
    cmd = hint.group(1).split()
    redo = sh(["sbatch", "--parsable", "--gres=none", "--cpus-per-task=1", "--mem=3G", *cmd[1:],
               "--timeout", f"{args.timeout:g}", "--memory-limit", f"{args.memory_limit:g}"], env=penv, cwd=work)
    wait_for(lambda: not squeue(env), "the redo of shard 2", 3600, 1)
    mjob = sh(["sbatch", "--parsable", str(clone / "slurm" / "merge.sbatch"), str(store)], env=penv, cwd=work)
    wait_for(lambda: not squeue(env), "the second merge", 3600, 1)
    if not (store / "features.h5").exists():
        mlog = (work / f"gapseek-merge-{mjob.stdout.strip()}.log").read_text()
        sys.exit(f"the second merge wrote no store:\n{mlog[-3000:]}")
    report["total_wall_s"] = round(time.time() - t_start, 1)
    report["array_wall_s"] = round(t_array, 1)
    mlog = (work / f"gapseek-merge-{mjob.stdout.strip()}.log").read_text()
    print(mlog.strip().splitlines()[-1])
    verify(store, pool, report, redo.stdout.strip(), task, work)


def verify(store: Path, pool: Path, report: dict, redo_job: str, requeued: str, work: Path) -> None:
    with h5py.File(store / "manifest.h5", "r") as f:
        manifest = [s.decode() for s in f["ids"][()]]
        n_shards = int(f.attrs["num_shards"])
    with h5py.File(store / "features.h5", "r") as f:
        ok = [s.decode() for s in f["ids"][()]]
        failed = [s.decode() for s in f["failures/ids"][()]]
        reasons = [s.decode() for s in f["failures/reasons"][()]]
    seen = collections.Counter(ok + failed)
    exactly_once = seen == collections.Counter(manifest) and max(seen.values()) == 1
    report["every_entry_exactly_once"] = exactly_once
    report["n_features"], report["n_failures"] = len(ok), len(failed)
    table = collections.Counter(r.split(":")[0] for r in reasons)
    report["failures"] = dict(table.most_common())
    why = dict(zip(failed, reasons))
    faults = {}
    for line in (pool / "faults.tsv").read_text().splitlines()[1:]:
        cid, what = line.split("\t")
        faults[cid] = {"fault": what, "recorded": why.get(cid, "FEATURIZED" if cid in ok else "MISSING")}
    report["faults"] = faults
    tasks = []
    for i in range(n_shards):
        with h5py.File(store / "shards" / f"part-{i:05d}.h5", "r") as f:
            tasks.append((i, float(f.attrs["elapsed_s"]), float(f.attrs["peak_rss_mb"]),
                          int(f.attrs["manifest_stop"]) - int(f.attrs["manifest_start"])))
    walls = sorted(t[1] for t in tasks)
    report["task_wall_s"] = {"min": walls[0], "median": walls[len(walls) // 2], "max": walls[-1],
                             "max_over_median": round(walls[-1] / walls[len(walls) // 2], 2)}
    report["task_peak_rss_mb"] = {"median": sorted(t[2] for t in tasks)[len(tasks) // 2],
                                  "max": max(t[2] for t in tasks)}
    report["tasks"] = tasks
    logs = list((store / "logs").glob(f"gapseek-featurize-{requeued}.log")) + \
        list((store / "logs").glob(f"gapseek-featurize-{requeued.split('_')[0]}_1.log"))
    report["requeued_task_resumed"] = any("resumed" in p.read_text() for p in logs)
    size = {p.name: p.stat().st_size for p in (store / "features.h5", store / "inputs.h5", store / "manifest.h5")}
    report["bytes"] = size
    report["redo_job"] = redo_job
    print(f"verified: every manifest entry exactly once: {exactly_once} ({len(ok)} features + {len(failed)} "
          f"failures = {len(manifest)})")
    print(f"requeued task resumed from its checkpoint: {report['requeued_task_resumed']}")
    print("failures: " + ", ".join(f"{k} {v}" for k, v in table.most_common()))
    for cid, f in faults.items():
        print(f"  fault {cid} ({f['fault']}): {f['recorded'][:110]}")
    print(f"tasks: {n_shards}, wall s min/median/max {walls[0]:.0f}/{walls[len(walls) // 2]:.0f}/{walls[-1]:.0f}; "
          f"peak RSS MB median/max {report['task_peak_rss_mb']['median']:.0f}/{report['task_peak_rss_mb']['max']:.0f}")
    print("sizes MiB: " + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in size.items()))


if __name__ == "__main__":
    main()
