"""On a REAL Slurm (slurmctld + slurmd + munge on localhost, tests/slurm/local-slurm.sh): array jobs, a task
cancelled mid-run and resubmitted, submitit and MPI — each merged store must equal the single-process result
bit for bit, with every input accounted for exactly once.

The inputs: ../shared/data/cod-robustness (1,114 real COD files, broken ones included) plus 2,000 crystals of
../shared/data/mp-gap-36k, in 4 shards.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import COD_DIR, MODEL_DIR, MP_DIR, ROOT, need

SCRIPT = ROOT / "tests" / "slurm" / "local-slurm.sh"
BIN = Path(sys.executable).parent
KEYS = ("ids", "paths", "formula", "prediction", "pooled", "hidden", "n_atoms", "n_padded", "n_tied",
        "failures/ids", "failures/paths", "failures/reasons")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running local Slurm; started (and stopped) here unless one is already up."""
    if shutil.which("bash") is None or not SCRIPT.exists():
        pytest.skip("bash or tests/slurm/local-slurm.sh missing")
    state = tmp_path_factory.mktemp("slurm-state")
    env = dict(os.environ, GAPSEEK_SLURM_STATE=str(state), GAPSEEK_SLURM_PORT=str(7100 + os.getpid() % 500))
    res = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        pytest.skip(f"no local Slurm here (needs root + Debian's slurm-wlm/munge): {res.stderr.strip()[-300:]}")
    conf = str(state / "slurm.conf")
    try:
        yield dict(env, SLURM_CONF=conf, GAPSEEK_MODEL_DIR=str(MODEL_DIR),
                   PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    finally:
        res = subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and "stopped" in res.stdout, res.stderr


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    cod = need(COD_DIR)
    mp = sorted(need(MP_DIR / "cifs").glob("*.cif"))
    need(MODEL_DIR)
    d = tmp_path_factory.mktemp("inputs")
    listing = d / "mp2000.txt"
    listing.write_text("\n".join(str(p) for p in random.Random(7).sample(mp, 2000)))
    return [str(cod), str(listing)]


def _gapseek(*args, env, check=True):
    res = subprocess.run([str(BIN / "gapseek"), *args], env=env, capture_output=True, text=True, timeout=900)
    if check and res.returncode != 0:
        raise AssertionError(f"gapseek {' '.join(args)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return res


def _index(store, inputs, env):
    _gapseek("index", *inputs, "--out", str(store), "--shards", "4", env=env)
    with h5py.File(store / "manifest.h5", "r") as f:
        assert f.attrs["num_shards"] == 4 and f.attrs["n_entries"] == 1114 + 2000
        return [p.decode() for p in f["paths"][()]]


@pytest.fixture(scope="module")
def single(tmp_path_factory, inputs, slurm):
    """The single-process result: one `gapseek featurize LIST --out` over the manifest's paths, in its order."""
    d = tmp_path_factory.mktemp("single")
    paths = _index(d / "ref-store", inputs, slurm)
    (d / "list.txt").write_text("\n".join(paths))
    _gapseek("featurize", str(d / "list.txt"), "--out", str(d / "single"), "--no-progress", env=slurm)
    return d / "single" / "features.h5"


def _assert_same(merged: Path, single: Path) -> None:
    with h5py.File(merged, "r") as a, h5py.File(single, "r") as b:
        for k in KEYS:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k][()], b[k][()]), k
        n = a["ids"].shape[0] + a["failures/ids"].shape[0]
        assert n == 3114
        ids = [s.decode() for s in a["ids"][()]] + [s.decode() for s in a["failures/ids"][()]]
        assert len(set(ids)) == n


def _sbatch(*args, env, cwd) -> str:
    res = subprocess.run(["sbatch", "--parsable", *args], env=env, cwd=cwd, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().split(";")[0]


def _wait_gone(job: str, env, timeout=600) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        out = subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True, text=True).stdout
        if not out.strip():
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job} still queued after {timeout} s")


# the array script as users run it, with this 2-core test node's resources instead of a GPU node's
TEST_RESOURCES = ("--gres=none", "--cpus-per-task=1", "--mem=2G")


def test_array_job_merged_store_equals_single_process(slurm, inputs, single, tmp_path):
    store = tmp_path / "store"
    _index(store, inputs, slurm)
    (tmp_path / "logs").mkdir()
    job = _sbatch(*TEST_RESOURCES, "--array=0-3%4", str(ROOT / "slurm" / "featurize.sbatch"), str(store),
                  env=dict(slurm, GAPSEEK_SLURM_DIR=str(ROOT / "slurm")), cwd=tmp_path)
    _wait_gone(job, slurm)
    logs = sorted((tmp_path / "logs").glob(f"gapseek-featurize-{job}_*.log"))
    assert len(logs) == 4 and all("ok /" in p.read_text() for p in logs), [p.read_text()[-500:] for p in logs]
    _gapseek("merge", str(store), env=slurm)
    _assert_same(store / "features.h5", single)


def test_cancelled_task_is_resubmitted_and_nothing_is_lost_or_duplicated(slurm, inputs, single, tmp_path):
    store = tmp_path / "store"
    _index(store, inputs, slurm)
    (tmp_path / "logs").mkdir()
    env = dict(slurm, GAPSEEK_SLURM_DIR=str(ROOT / "slurm"))
    job = _sbatch(*TEST_RESOURCES, "--array=0-3%4", str(ROOT / "slurm" / "featurize.sbatch"), str(store),
                  "--checkpoint-every", "256", env=env, cwd=tmp_path)
    # cancel shard 1's task as soon as it has checkpointed a block, mid-run
    partial = store / "shards" / "part-00001.partial"
    t0 = time.time()
    while not list(partial.glob("block-*.h5")) and time.time() - t0 < 300:
        time.sleep(0.05)
    assert list(partial.glob("block-*.h5")), "shard 1 never checkpointed a block"
    subprocess.run(["scancel", f"{job}_1"], env=slurm, check=True)
    _wait_gone(job, slurm)
    assert not (store / "shards" / "part-00001.h5").exists()
    status = _gapseek("status", str(store), "--todo", env=slurm).stdout.strip()
    assert status == "1"
    merge = _gapseek("merge", str(store), env=slurm, check=False)
    assert merge.returncode == 1 and "shard 1" in merge.stderr and "--array=1" in merge.stderr
    # resubmit what is left: the task resumes from the checkpointed block(s)
    job2 = _sbatch(*TEST_RESOURCES, f"--array={status}", str(ROOT / "slurm" / "featurize.sbatch"), str(store),
                   "--checkpoint-every", "256", env=env, cwd=tmp_path)
    _wait_gone(job2, slurm)
    log = (tmp_path / "logs" / f"gapseek-featurize-{job2}_1.log").read_text()
    assert "resumed" in log, log[-1000:]
    _gapseek("merge", str(store), env=slurm)
    _assert_same(store / "features.h5", single)


def test_submitit_slurm_arrays_split_by_max_array_size(slurm, inputs, single, tmp_path):
    store = tmp_path / "store"
    _index(store, inputs, slurm)
    res = _gapseek("submit", str(store), "--executor", "slurm", "--cpus", "1", "--mem-gb", "2", "--time", "30",
                   "--max-array-size", "3", env=slurm)
    assert "4 shard(s) in 2 slurm array(s)" in res.stdout, res.stdout
    _assert_same(store / "features.h5", single)


def test_mpi_ranks_under_srun_give_the_same_store(slurm, inputs, single, tmp_path):
    store = tmp_path / "store"
    _index(store, inputs, slurm)
    cmd = f"srun --mpi=pmi2 -n 2 {BIN / 'gapseek'} featurize {store} --mpi --merge"
    job = _sbatch("-n", "2", "--mem-per-cpu=1G", "-o", str(tmp_path / "mpi.log"), "--wrap", cmd, env=slurm,
                  cwd=tmp_path)
    _wait_gone(job, slurm)
    log = (tmp_path / "mpi.log").read_text()
    assert "2 rank(s), 4 shard(s), 4 processed, 0 error(s)" in log, log[-2000:]
    _assert_same(store / "features.h5", single)


def test_submitit_local_executor_is_the_default_without_slurm(inputs, single, tmp_path, slurm):
    store = tmp_path / "store"
    _index(store, inputs, slurm)
    env = {k: v for k, v in slurm.items() if k != "SLURM_CONF"}
    res = _gapseek("submit", str(store), "--cpus", "1", env=env)
    assert "local array(s)" in res.stdout
    _assert_same(store / "features.h5", single)


def test_pipeline_chains_index_array_merge_and_search(slurm, tmp_path):
    mp = sorted(need(MP_DIR / "cifs").glob("*.cif"))[:300]
    listing = tmp_path / "mp300.txt"
    listing.write_text("\n".join(str(p) for p in mp))
    wanted = {p.stem for p in mp}
    labels = tmp_path / "labels.csv"
    rows = [ln for ln in (MP_DIR / "id_prop.csv").read_text().splitlines() if ln.split(",")[0] in wanted]
    labels.write_text("\n".join(rows) + "\n")
    store, out = tmp_path / "store", tmp_path / "search"
    env = dict(slurm, SHARD_SIZE="256", GAPSEEK_SBATCH_ARGS="--gres=none --cpus-per-task=1 --mem=2G")
    res = subprocess.run(["bash", str(ROOT / "slurm" / "pipeline.sh"), str(listing), str(store), str(labels),
                          "2.534", str(out)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    t0 = time.time()
    while not (out / "summary.json").exists() and time.time() - t0 < 600:
        time.sleep(1)
    logs = "\n".join(p.name + ": " + p.read_text()[-400:] for p in sorted((tmp_path / "logs").glob("*.log")))
    assert (out / "summary.json").exists(), logs
    with h5py.File(store / "features.h5", "r") as f:
        assert f.attrs["num_shards"] == 2 and f["ids"].shape[0] + f["failures/ids"].shape[0] == 300
    assert "featurize shards 0..1" in logs and "merge: job" in logs and "search: job" in logs


def test_stop_ends_a_step_daemon_left_without_its_slurmd(tmp_path):
    """A slurmstepd whose slurmd is gone lingers (it blocks SIGTERM); `stop` ends those of its own cluster only —
    recognised by a file open under the cluster's state directory. Stand-ins named slurmstepd (a copy of
    `sleep`) play the step daemons: one holding a file in this state directory, one in another."""
    sleep = shutil.which("sleep")
    if shutil.which("bash") is None or sleep is None:
        pytest.skip("bash or sleep missing")
    state, other = tmp_path / "state", tmp_path / "other"
    state.mkdir()
    other.mkdir()
    fake = tmp_path / "bin" / "slurmstepd"
    fake.parent.mkdir()
    shutil.copy(sleep, fake)
    with open(state / "slurmd.log", "w") as ours_log, open(other / "slurmd.log", "w") as their_log:
        ours = subprocess.Popen([str(fake), "300"], stdout=ours_log)
        theirs = subprocess.Popen([str(fake), "300"], stdout=their_log)
    try:
        (state / "pids").write_text("999999999\n")  # "started" daemons, long gone
        env = dict(os.environ, GAPSEEK_SLURM_STATE=str(state), GAPSEEK_SLURM_PORT="1")
        res = subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert f"ended leftover step daemon(s) {ours.pid}" in res.stdout
        assert ours.wait(timeout=10) is not None
        assert theirs.poll() is None  # another cluster's step daemon is left alone
    finally:
        for p in (ours, theirs):
            if p.poll() is None:
                p.kill()
                p.wait()
