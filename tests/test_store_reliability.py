"""Shards and stores under damage, races and full disks; model files that are malformed or not the published ones.

Everything here is real: HDF5 files damaged on disk, concurrent `gapseek` processes, a small tmpfs that fills up
(when running as root; else a hook that makes the writes fail with ENOSPC), processes killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import EXAMPLES, write_cif

import gapseek
from gapseek.cli import main
from gapseek.cluster.parts import lock_path as _lock_path
from gapseek.cluster.parts import shard_path

SRC = Path(gapseek.__file__).resolve().parents[1]  # the gapseek under test, for the `gapseek` subprocesses


# ------------------------------------------------------------------------------------------------ fixtures
def _cifs(root: Path, n_si: int = 6) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for f in EXAMPLES.glob("*.cif"):
        shutil.copy(f, root / f.name)
    for k in range(n_si):
        write_cif(root / f"Si{k:02d}.cif", "P 1", (5.43 + 0.01 * k, 5.43, 5.43, 90, 90, 90),
                  [("Si1", "Si", 0, 0, 0, 1), ("Si2", "Si", 0.25, 0.25, 0.25, 1)])
    return root


def _index(cifs: Path, store: Path, shard_size: int = 8) -> Path:
    assert main(["index", str(cifs), "--out", str(store), "--shard-size", str(shard_size), "--chunk-size", "4",
                 "--balance", "count"]) == 0
    return store


def _model_opts(model_dir: Path) -> list[str]:
    return ["--model", str(model_dir), "--model-sha256", "any", "--no-progress"]


def _featurize(store: Path, model_dir: Path, *extra: str) -> int:
    return main(["featurize", str(store), "--chunk-size", "4", "--checkpoint-every", "4", *_model_opts(model_dir),
                 *extra])


@pytest.fixture(scope="module")
def cif_dir(tmp_path_factory):
    return _cifs(tmp_path_factory.mktemp("cifs"))


@pytest.fixture(scope="module")
def done_store(tmp_path_factory, cif_dir, tiny_model):
    """An indexed store (17 entries, 3 shards) with every shard featurized, not merged; copy it before changing it."""
    store = _index(cif_dir, tmp_path_factory.mktemp("done") / "store")
    assert _featurize(store, tiny_model) == 0
    return store


def _copy(store: Path, dest: Path) -> Path:
    shutil.copytree(store, dest)
    return dest


def _damage(path: Path, offset: int, n: int = 64) -> None:
    """Overwrite ``n`` bytes at ``offset`` with bytes that differ from those there."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        old = fh.read(n)
        fh.seek(offset)
        fh.write(bytes((b ^ 0x5A) for b in old))


def _rows(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in ("ids", "paths", "prediction", "pooled", "hidden", "failures/ids")}


def _temps(*dirs: Path) -> list[Path]:
    return [p for d in dirs if d.is_dir() for p in d.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- corrupt part files (content checks)
def test_corrupt_part_files_are_named_by_status_and_merge_and_redone_by_featurize(done_store, tiny_model, tmp_path,
                                                                                    capsys):
    store = _copy(done_store, tmp_path / "store")
    good = {i: _rows(shard_path(store, i)) for i in (0, 1)}
    # shard 1: 64 bytes inside the compressed chunk of 'pooled' (what the tester did)
    with h5py.File(shard_path(store, 1), "r") as f:
        chunk = f["pooled"].id.get_chunk_info(0)
    _damage(shard_path(store, 1), chunk.byte_offset + chunk.size // 2 - 32)
    # shard 0: one character of a stored path (strings live outside the chunks: HDF5 has no checksum for them)
    data = shard_path(store, 0).read_bytes()
    at = data.index(b"/Si0")  # a path of shard 0, in the file's heap of strings
    _damage(shard_path(store, 0), at + 2, 1)

    assert main(["status", str(store)]) == 3
    out = capsys.readouterr().out
    assert "1 complete" in out and "2 corrupt" in out
    assert "shard 0: corrupt - the content of dataset paths does not match its checksum" in out
    assert "shard 1: corrupt - dataset pooled rows 0..7" in out
    assert "--shard I` for I in 0,1" in out

    assert main(["merge", str(store)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gapseek: error: cannot merge") and "Traceback" not in err
    assert "shard 0 (part-00000.h5): corrupt" in err and "shard 1 (part-00001.h5): corrupt" in err
    assert "gapseek featurize" in err and "--shard I` for I in 0,1" in err and "sbatch --array=0,1" in err
    assert not (store / "features.h5").exists() and not _temps(store)

    # a featurize rerun redoes the damaged shards (and only those) instead of skipping them
    assert _featurize(store, tiny_model) == 0
    out = capsys.readouterr().out
    assert "shard 2: complete already; skipped" in out
    assert "shard 0: complete already" not in out and "shard 1: complete already" not in out
    for i in (0, 1):
        for k, v in _rows(shard_path(store, i)).items():
            assert np.array_equal(v, good[i][k]), (i, k)
    assert main(["status", str(store)]) == 0
    assert main(["merge", str(store)]) == 0
    assert not _temps(store, store / "shards")


def _as_written_before_checksums(path: Path) -> None:
    """Rewrite a part file the way gapseek wrote them before content checksums: no fletcher32, no content_sha256."""
    old = path.with_suffix(".old")
    with h5py.File(path, "r") as src, h5py.File(old, "w") as dst:
        dst.attrs.update(dict(src.attrs))
        for name in ("ids", "paths", "formula", "prediction", "pooled", "hidden", "n_atoms", "n_padded", "n_tied",
                     "failures/ids", "failures/paths", "failures/reasons"):
            ds = src[name]
            dst.create_dataset(name, data=ds[()], dtype=ds.dtype, maxshape=(None,) + ds.shape[1:],
                               chunks=ds.chunks, compression="gzip", compression_opts=4, shuffle=True)
    os.replace(old, path)


def test_part_files_without_checksums_are_still_accepted_and_checked_by_reading(done_store, tmp_path, capsys):
    store = _copy(done_store, tmp_path / "store")
    for i in range(3):
        _as_written_before_checksums(shard_path(store, i))
    with h5py.File(shard_path(store, 1), "r") as f:
        assert not f["pooled"].fletcher32 and "content_sha256" not in f["pooled"].attrs
        chunk = f["hidden"].id.get_chunk_info(0)
    assert main(["status", str(store)]) == 0
    assert "3 complete" in capsys.readouterr().out
    assert main(["merge", str(store)]) == 0
    assert main(["status", str(store)]) == 0  # the merged store does not change the shards' state
    capsys.readouterr()
    _damage(shard_path(store, 1), chunk.byte_offset + chunk.size // 2 - 32)
    assert main(["status", str(store)]) == 3
    assert "shard 1: corrupt - dataset hidden rows 0..7" in capsys.readouterr().out
    assert main(["merge", str(store), "--overwrite"]) == 1
    assert "shard 1 (part-00001.h5): corrupt" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ status exit code
def test_status_exit_code_tells_scripts_whether_every_shard_is_complete(cif_dir, tiny_model, tmp_path, capsys):
    store = _index(cif_dir, tmp_path / "store")
    assert main(["status", str(store)]) == 3
    assert "3 missing" in capsys.readouterr().out
    assert main(["status", str(store), "--todo"]) == 0  # the printing forms stay 0: scripts read their output
    assert capsys.readouterr().out.strip() == "0,1,2"
    assert main(["status", str(store), "--num-shards"]) == 0
    assert capsys.readouterr().out.strip() == "3"
    assert _featurize(store, tiny_model, "--shard", "1") == 0
    assert main(["status", str(store)]) == 3
    assert _featurize(store, tiny_model) == 0
    assert main(["status", str(store)]) == 0
    assert main(["status", str(store), "--todo"]) == 0
    capsys.readouterr()
    assert main(["status", str(tmp_path / "nowhere")]) == 1
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 0 when every shard is complete" in text and "3 when some are not" in text


# ----------------------------------------------------------------------------------- two tasks on the same shard
_TASK = textwrap.dedent("""
    import sys
    from gapseek.cli import main  # the imports (torch, h5py, pymatgen) before the barrier
    import gapseek.featurize, gapseek.cluster.shard
    print("ready", flush=True)
    sys.stdin.readline()  # the barrier: both tasks start featurizing at once
    sys.exit(main(sys.argv[1:]))
""")


def test_two_tasks_on_the_same_shard_both_succeed_and_one_skips(tmp_path, tiny_model):
    """A requeued task racing its predecessor (or two overlapping arrays): neither may fail (that would fail the
    merge's afterok), and the shard must come out whole. Trials 0-1 let the two tasks race freely; in trial 2 the
    test holds the shard's lock (a predecessor still running) until both tasks have said that they wait, so the
    meeting at the lock is certain, not left to the scheduler."""
    cifs = _cifs(tmp_path / "cifs", n_si=20)
    pristine = _index(cifs, tmp_path / "pristine", shard_size=32)
    args = ["featurize", "--shard", "0", "--chunk-size", "4", "--checkpoint-every", "4", *_model_opts(tiny_model)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    reference = None
    for trial in range(3):
        store = _copy(pristine, tmp_path / f"store{trial}")
        errs = [tmp_path / f"trial{trial}-task{k}.err" for k in range(2)]
        predecessor = None
        if trial == 2:
            _lock_path(store, 0).parent.mkdir(parents=True, exist_ok=True)
            predecessor = os.open(_lock_path(store, 0), os.O_RDWR | os.O_CREAT, 0o666)
            os.pwrite(predecessor, b"the test\n", 0)
            fcntl.flock(predecessor, fcntl.LOCK_EX)
        procs = [subprocess.Popen([sys.executable, "-c", _TASK, args[0], str(store), *args[1:]], env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err.open("w"), text=True)
                 for err in errs]
        try:
            for p, err in zip(procs, errs):
                assert p.stdout.readline().strip() == "ready", err.read_text()
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
            if predecessor is not None:
                deadline = time.monotonic() + 120
                while not all("is being featurized by the test; waiting" in e.read_text() for e in errs):
                    assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                        [e.read_text()[-1500:] for e in errs]
                    time.sleep(0.05)
                os.close(predecessor)  # the predecessor ends: one task featurizes, the other waits for it
            outs = [p.communicate(timeout=120)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            if predecessor is not None:
                with contextlib.suppress(OSError):
                    os.close(predecessor)
        codes = [p.returncode for p in procs]
        said_err = [e.read_text() for e in errs]
        assert codes == [0, 0], f"trial {trial}: exit codes {codes}\n" + "\n".join(e[-1500:] for e in said_err)
        said = sorted(outs, key=lambda s: "skipped" in s)
        # serialised: the second task to get the lock finds the shard complete (unserialised, both featurize)
        assert "shard 0: complete already; skipped" not in said[0] and "shard 0: " in said[0], said
        assert "shard 0: complete already; skipped" in said[1], said
        assert not (store / "shards" / "part-00000.partial").exists()
        assert not _temps(store / "shards")
        rows = _rows(shard_path(store, 0))
        assert len(rows["ids"]) + len(rows["failures/ids"]) == 31  # 11 examples + 20 Si cells
        if reference is None:
            reference = rows
        for k, v in rows.items():
            assert np.array_equal(v, reference[k]), (trial, k)


def test_without_flock_a_task_that_loses_the_race_still_ends_well(done_store, tiny_model, tmp_path, monkeypatch,
                                                                   caplog):
    """On a file system without flock the tasks are not serialized; the one whose checkpoint folder vanishes
    under it (the other completed the shard) must not fail."""
    import fcntl

    import gapseek.cluster.shard as sharding
    from gapseek.featurize import FeaturizeSettings
    from gapseek.model import load_model

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)  # (the fcntl module's own, until the test ends)
    store = _copy(done_store, tmp_path / "store")
    done = shard_path(store, 1).read_bytes()
    shard_path(store, 1).unlink()
    real = sharding._featurize_shard

    def the_other_task_wins(*args, **kwargs):
        shard_path(store, 1).write_bytes(done)  # the other task renames its part file into place...
        raise FileNotFoundError("part-00001.partial/block-0000004-0000008.h5")  # ...and removed the blocks

    lm = load_model(tiny_model / "band-gap.pth.tar", tiny_model / "atom_init.json")
    settings = FeaturizeSettings(chunk_size=4)
    monkeypatch.setattr(sharding, "_featurize_shard", the_other_task_wins)
    res = sharding.run_shard(store, 1, lm, settings, checkpoint_every=4)
    assert res.status == "skipped" and shard_path(store, 1).read_bytes() == done
    assert "this file system has no flock" in caplog.text and "another one completed the shard" in caplog.text
    # a failure that leaves the shard incomplete is still an error
    shard_path(store, 1).unlink()
    monkeypatch.setattr(sharding, "_featurize_shard", lambda *a, **k: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        sharding.run_shard(store, 1, lm, settings, checkpoint_every=4)
    monkeypatch.setattr(sharding, "_featurize_shard", real)
    assert sharding.run_shard(store, 1, lm, settings, checkpoint_every=4).status == "done"


# -------------------------------------------------------------------------------------------------- disk full
@pytest.fixture()
def small_disk(tmp_path):
    """A 1 MiB tmpfs (when running as root and mount works), else None: the test then makes writes fail with a hook.
    GAPSEEK_TEST_NO_MOUNT=1 forces the hook."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None or os.environ.get("GAPSEEK_TEST_NO_MOUNT"):
        yield None
        return
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        yield None
        return
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(disk: Path, leave_kib: int) -> Path:
    """Fill ``disk`` with one file, leaving ``leave_kib`` KiB free."""
    filler = disk / "filler"
    filler.unlink(missing_ok=True)
    st = os.statvfs(disk)
    size = st.f_bavail * st.f_frsize - leave_kib * 1024
    with open(filler, "wb") as fh:
        if size > 0:
            os.posix_fallocate(fh.fileno(), 0, size)
    return filler


# in a process where no real disk can be filled: every dataset write fails the way a full disk makes HDF5 fail
_ENOSPC_HOOK = textwrap.dedent("""
    import errno, sys, h5py
    def full(self, key, value):
        raise OSError(errno.ENOSPC, "Can't synchronously write data (file write failed: errno = 28, error message = "
                                    "'No space left on device')")
    h5py.Dataset.__setitem__ = full
    from gapseek.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _gapseek(args: list[str], hook: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-c", _ENOSPC_HOOK] if hook else [sys.executable, "-m", "gapseek.cli"]
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=300)


def test_a_full_disk_is_one_line_the_old_store_intact_and_no_temp_left(small_disk, tmp_path, cif_dir, tiny_model):
    root = small_disk or tmp_path / "plain-disk"
    store = _index(cif_dir, root / "st")
    assert _featurize(store, tiny_model) == 0
    assert main(["merge", str(store)]) == 0
    one = root / "one"
    one_go = ["featurize", str(EXAMPLES), "--out", str(one), "--overwrite", *_model_opts(tiny_model)]
    assert main(one_go) == 0
    old = {p: p.read_bytes() for p in (store / "features.h5", one / "features.h5")}
    # free space left: none (the file cannot even start), some (it fails mid-way or in the final flush)
    for leave in ((0, 8, 24) if small_disk else (0,)):
        filler = _fill(small_disk, leave) if small_disk else None
        try:
            for args in (["merge", str(store), "--overwrite"], one_go):
                r = _gapseek(args, hook=small_disk is None)
                where = f"`gapseek {args[0]}` with {leave} KiB free"
                assert r.returncode == 1, f"{where}: rc {r.returncode}\n{r.stderr[-3000:]}"  # not 139 (SIGSEGV)
                lines = r.stderr.strip().splitlines()
                assert len(lines) == 1 and lines[0].startswith("gapseek: error: cannot write "), (where, r.stderr)
                assert "no space left on device" in lines[0] and "unchanged" in lines[0], where
                for p, data in old.items():
                    assert p.read_bytes() == data, (where, p)
                assert not _temps(store, one), where
        finally:
            if filler is not None:
                filler.unlink()
    # with room again, both work
    assert main(["merge", str(store), "--overwrite"]) == 0 and main(one_go) == 0


def test_a_killed_writer_leaves_a_temp_file_that_the_next_run_removes(tmp_path, cif_dir, tiny_model):
    out = tmp_path / "one"
    writer = textwrap.dedent("""
        import sys, time
        from gapseek.store import FeatureRows, StoreWriter
        w = StoreWriter(sys.argv[1])
        w.write(FeatureRows(ids=["a"], paths=["a.cif"], formula=["X"], prediction=[1.0], pooled=[[0.0] * 64],
                            hidden=[[0.0] * 32], n_atoms=[1], n_padded=[0], n_tied=[0]))
        w.h5.flush()
        print(w.tmp, flush=True)
        time.sleep(600)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.Popen([sys.executable, "-c", writer, str(out)], env=env, stdout=subprocess.PIPE, text=True)
    killed = Path(p.stdout.readline().strip())
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert killed.is_file() and killed.parent == out
    gone = subprocess.Popen(["true"])
    gone.wait()
    legacy = out / f".features.h5.{gone.pid}.tmp"  # named as gapseek 0.x named them, by a process now gone
    legacy.write_bytes(b"x")
    sleeper = subprocess.Popen(["sleep", "120"])  # a writer still at work
    try:
        alive = out / f".features.h5.{sleeper.pid}.tmp"
        alive.write_bytes(b"x")
        other_host = out / f".features.h5.some-other-node.{gone.pid}.tmp"  # cannot tell from here: kept
        other_host.write_bytes(b"x")
        assert main(["featurize", str(EXAMPLES / "Si.cif"), "--out", str(out), *_model_opts(tiny_model)]) == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not killed.exists() and not legacy.exists()
    assert alive.exists() and other_host.exists()
    # a shard task killed while joining its part file leaves a part temp file; the next task on the shard removes it
    store = _index(cif_dir, tmp_path / "store")
    (store / "shards").mkdir()
    part_tmp = store / "shards" / f".part-00002.h5.{gone.pid}.tmp"
    part_tmp.write_bytes(b"x")
    assert _featurize(store, tiny_model, "--shard", "2") == 0
    assert not part_tmp.exists() and not _temps(store / "shards")


# ------------------------------------------------------------------------------------------------ model files
@pytest.mark.parametrize("content, says", [
    ("[1, 2, 3]", "holds a JSON list, not an object"),
    ("{}", "maps no element"),
    ('{"1000000000": [0, 0, 0, 0, 0, 0, 0, 0]}', "key '1000000000' is not an atomic number (1 to 118)"),
    ('{"8": [0, 1, 2]}', "element 8 has (3,) features, the model expects 8"),
    ('{"8": [0, 1, 2, 3, 4, 5, 6, "x"]}', "element 8 has features that are not a list of numbers"),
    ('{"8": [0, 1, 2, 3, 4, 5, 6, NaN]}', "element 8 has features that are not finite numbers"),
    ('{"8": [0, 1, 2', "is not a valid atom_init.json"),
])
def test_a_malformed_atom_init_is_a_one_line_model_error(tiny_model, tmp_path, capsys, content, says):
    d = tmp_path / "model"
    d.mkdir()
    shutil.copy(tiny_model / "band-gap.pth.tar", d)
    (d / "atom_init.json").write_text(content)
    rc = main(["model", "info", "--model", str(d), "--model-sha256", "any"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"gapseek: error: {d / 'atom_init.json'}") and says in err, err


def _scaled_copy(model_dir: Path, dest: Path, factor: float) -> Path:
    dest.mkdir()
    shutil.copy(model_dir / "band-gap.pth.tar", dest)
    table = json.loads((model_dir / "atom_init.json").read_text())
    (dest / "atom_init.json").write_text(json.dumps({k: [v * factor for v in vec] for k, vec in table.items()}))
    return dest


def test_an_atom_init_that_is_not_the_published_one_is_refused_unless_opted_out(model_dir, tmp_path, capsys):
    from gapseek.cluster.submit import ShardTask
    from gapseek.errors import ChecksumError
    from gapseek.store import open_store

    scaled = _scaled_copy(model_dir, tmp_path / "scaled", 1.001)  # every value x1.001: predictions move ~0.007 eV
    si = str(EXAMPLES / "Si.cif")
    rc = main(["featurize", si, "--out", str(tmp_path / "a"), "--model", str(scaled), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert f"{scaled / 'atom_init.json'} has sha256" in err and "cb90bd2257dbf8cf" in err
    assert "--model-sha256 any" in err and not (tmp_path / "a").exists()
    # the published pair is accepted
    assert main(["featurize", si, "--out", str(tmp_path / "ok"), "--model", str(model_dir), "--no-progress"]) == 0
    # on purpose: --model-sha256 any, as for a different checkpoint
    assert main(["featurize", si, "--out", str(tmp_path / "b"), "--model", str(scaled), "--model-sha256", "any",
                 "--no-progress"]) == 0
    published, changed = open_store(tmp_path / "ok"), open_store(tmp_path / "b")
    assert abs(float(published.prediction[0]) - float(changed.prediction[0])) > 1e-3
    assert changed.attrs["atom_init_sha256"] != published.attrs["atom_init_sha256"]
    # a submitit task loads exactly the atom_init.json the submitting command checked
    ai = tmp_path / "task" / "atom_init.json"
    ai.parent.mkdir()
    shutil.copy(model_dir / "atom_init.json", ai)
    task = ShardTask(str(tmp_path / "nostore"), (str(model_dir / "band-gap.pth.tar"), str(ai),
                                                 published.attrs["model_sha256"]), None, 4)
    _scaled_copy(model_dir, tmp_path / "other", 1.001)
    shutil.copy(tmp_path / "other" / "atom_init.json", ai)
    with pytest.raises(ChecksumError, match="atom_init.json has sha256"):
        task(0)


def test_errno_of_a_failed_hdf5_flush_is_found_in_its_message():
    from gapseek.store.writer import _errno

    assert _errno(OSError(errno.ENOSPC, "x")) == errno.ENOSPC
    assert _errno(RuntimeError("Can't decrement id ref count (file write failed: ..., errno = 122, error")) == 122
    assert _errno(RuntimeError("something else")) is None
