"""A campaign never loses or corrupts a measurement: a full disk or a crash mid-``tell`` leaves the log as it was
(all or nothing), two ``tell`` at once record each id once, damaged logs and ``campaign.json`` are repaired or
refused with one line, a store with other content is refused, and every engine resumes exactly. Also: results
files with a wrong number of fields, concurrent ``gapseek pca`` writers, and batches from the ``gpyopt`` engine."""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_interrupted
from test_search import T, _synthetic_store

from gapseek.cli import main
from gapseek.search.campaign import Campaign
from gapseek.store import Store

HERE = Path(__file__).resolve().parent
HEADER = "trial,id,formula,band_gap,abs_error,hit,engine,source"


# ---------------------------------------------------------------------------------------------- helpers
class _Limited:
    """A file opened for writing that takes ``budget[0]`` more bytes, then writes what fits and fails like a full
    disk (``on_full='enospc'``) or dies like a killed process (``'exit'``)."""

    def __init__(self, fh, budget: list[int], on_full: str) -> None:
        self._fh, self._budget, self._on_full = fh, budget, on_full

    def write(self, data):
        room = self._budget[0]
        if len(data) > room:
            if room > 0:
                self._fh.write(data[:room])
            self._budget[0] = 0
            self._fh.flush()
            if self._on_full == "exit":
                os._exit(9)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget[0] -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._fh.__exit__(*exc)

    def __iter__(self):
        return iter(self._fh)


def install_write_hook(root: str | Path, budget: list[int], on_full: str, setattr_=setattr) -> None:
    """Route the ``open`` of gapseek's file writer (:func:`gapseek.fsutil.atomic_write`, which looks ``open`` up in
    its own namespace first) through :class:`_Limited` for files under ``root``."""
    root = Path(root).resolve()

    def hooked_open(file, mode="r", *args, **kwargs):
        fh = builtins.open(file, mode, *args, **kwargs)
        if any(c in mode for c in "wax+") and Path(file).resolve().is_relative_to(root):
            return _Limited(fh, budget, on_full)
        return fh

    import gapseek.fsutil  # every campaign file is written by its atomic_write

    setattr_(gapseek.fsutil, "open", hooked_open)


@contextlib.contextmanager
def small_disk(tmp_path: Path, monkeypatch):
    """``(directory, fill, free)``: a directory on a small tmpfs (as root, where ``mount`` works) that ``fill()``
    fills up and ``free()`` frees; elsewhere (or with GAPSEEK_TEST_FAKE_DISK=1) a write hook that fails writes under
    it with ENOSPC once filled."""
    d = tmp_path / "disk"
    d.mkdir()
    mounted = False
    if os.geteuid() == 0 and not os.environ.get("GAPSEEK_TEST_FAKE_DISK"):
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], capture_output=True)
        mounted = r.returncode == 0
    try:
        if mounted:
            filler = d / "filler"

            def fill():
                fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                try:
                    while True:
                        os.write(fd, b"\0" * 4096)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                finally:
                    os.close(fd)
                with pytest.raises(OSError):  # really full
                    (d / "probe").write_bytes(b"x" * 8192)

            def free():
                filler.unlink()
                (d / "probe").unlink(missing_ok=True)
        else:
            budget = [1 << 40]
            install_write_hook(d, budget, "enospc", setattr_=lambda m, k, v: monkeypatch.setattr(m, k, v,
                                                                                                raising=False))

            def fill():
                budget[0] = 0

            def free():
                budget[0] = 1 << 40

        yield d, fill, free, ("tmpfs" if mounted else "hook")
    finally:
        if mounted:
            subprocess.run(["umount", str(d)], capture_output=True)


def _results(path: Path, gap: np.ndarray, ks) -> Path:
    path.write_text("".join(f"c{k},{float(gap[k])!r}\n" for k in ks))
    return path


def _lab(tmp_path: Path, out: Path | None = None, engine: str = "gp"):
    """A lab campaign (prior c0..c24) in ``out``: (store, gaps, directory)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    store, _, gap = _synthetic_store(tmp_path)
    prior = _results(tmp_path / "prior.csv", gap, range(25))
    out = out or tmp_path / "lab"
    assert main(["campaign", str(store), "--target", str(T), "--prior", str(prior), "--out", str(out),
                 "--engine", engine]) == 0
    return store, gap, out


def _log_ok(out: Path) -> list:
    """The log's rows, every line whole (8 fields, numbers where numbers go), each id once."""
    lines = (out / "trials.csv").read_text().splitlines()
    assert lines[0] == HEADER
    for ln in lines[1:]:
        f = ln.split(",")
        assert len(f) == 8, ln
        int(f[0]), float(f[3]), float(f[4])
    rows = Campaign(out).trials()
    ids = [r.id for r in rows]
    assert len(ids) == len(set(ids)), "an id recorded twice"
    return rows


# ---------------------------------------------------------------------------------------------- all or nothing
def test_a_full_disk_during_tell_records_nothing_and_the_next_tell_everything(tmp_path, monkeypatch, capsys):
    with small_disk(tmp_path, monkeypatch) as (disk, fill, free, how):
        store, gap, out = _lab(tmp_path, disk / "lab")
        res = _results(tmp_path / "results.csv", gap, range(100, 160))  # 60 measurements
        before = (out / "trials.csv").read_bytes()
        capsys.readouterr()
        fill()
        assert main(["tell", str(out), str(res)]) == 1, how
        assert (out / "trials.csv").read_bytes() == before  # not a row, not half a row
        err = capsys.readouterr().err
        assert "No space left on device" in err and "nothing was recorded" in err and "Traceback" not in err
        assert err.count("\n") == 1  # one line
        assert not list(out.glob(".*.tmp"))
        free()
        assert main(["tell", str(out), str(res)]) == 0, capsys.readouterr().err
        rows = _log_ok(out)
        lab = [r for r in rows if r.source != "prior"]
        assert [r.id for r in lab] == [f"c{k}" for k in range(100, 160)]
        assert [r.trial for r in lab] == list(range(1, 61))
        assert [r.band_gap for r in lab] == [float(gap[k]) for k in range(100, 160)]
        capsys.readouterr()
        assert main(["suggest", str(out), "--n", "2"]) == 0, capsys.readouterr().err
        # a full disk during suggest: nothing logged, the next suggest proposes afresh
        fill()
        sugg = (out / "suggestions.csv").read_bytes()
        assert main(["suggest", str(out)]) == 1
        assert "nothing was written" in capsys.readouterr().err
        assert (out / "suggestions.csv").read_bytes() == sugg
        free()


_CRASHING_TELL = """
import sys
sys.path.insert(0, {here!r})
from test_campaign_reliability import install_write_hook
install_write_hook({root!r}, [{budget}], "exit")
from gapseek.cli import main
sys.exit(main(["tell", {out!r}, {res!r}]))
"""


def test_a_crash_in_the_middle_of_a_tell_leaves_the_log_as_it_was(tmp_path, capsys):
    store, gap, out = _lab(tmp_path)
    res = _results(tmp_path / "results.csv", gap, range(100, 160))
    before = (out / "trials.csv").read_bytes()
    # the process dies (os._exit, like kill -9) after 3,000 bytes of its write: about half of the 60 rows
    code = _CRASHING_TELL.format(here=str(HERE), root=str(out), budget=3000, out=str(out), res=str(res))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 9, r.stderr
    assert (out / "trials.csv").read_bytes() == before
    capsys.readouterr()
    assert main(["tell", str(out), str(res)]) == 0, capsys.readouterr().err
    assert len([r for r in _log_ok(out) if r.source == "lab-unsuggested"]) == 60


def test_a_torn_last_row_is_repaired_and_a_glued_row_refused(tmp_path, capsys):
    # what gapseek before these fixes left: a row cut short by a full disk, then the next tell glued onto it
    store, gap, out = _lab(tmp_path)
    log = out / "trials.csv"
    whole = log.read_bytes().decode()
    with open(log, "a") as fh:
        fh.write("1,c30")
    capsys.readouterr()
    assert main(["tell", str(out), str(_results(tmp_path / "r.csv", gap, [31, 32, 33]))]) == 0
    err = capsys.readouterr().err
    assert "dropped '1,c30', a row cut short by an interrupted write" in err and "tell it again" in err
    rows = _log_ok(out)
    assert [r.id for r in rows[25:]] == ["c31", "c32", "c33"] and [r.trial for r in rows[25:]] == [1, 2, 3]
    assert main(["suggest", str(out)]) == 0
    # a whole last row that lost its newline (a hand edit) is kept
    text = log.read_bytes()
    log.write_bytes(text.rstrip(b"\r\n"))
    assert len(Campaign(out).trials()) == 28 and log.read_bytes() == text
    # a torn row with the next one glued to it: refused, naming the line, before anything is proposed
    glued = f"1,c30{2},c31,X,{float(gap[31])!r},0.1,0,gp,lab-unsuggested\r\n"
    log.write_bytes((whole + glued).encode())
    capsys.readouterr()
    for cmd in (["suggest", str(out)], ["tell", str(out), str(_results(tmp_path / "s.csv", gap, [40]))]):
        assert main(cmd) == 1
        err = capsys.readouterr().err
        assert "trials.csv, line 27" in err and "9 fields, expected 8" in err and "glued" in err, err
        assert err.count("\n") == 1
    assert log.read_bytes() == (whole + glued).encode()  # refused, untouched


# ---------------------------------------------------------------------------------------------- two writers
_RACING_TELLS = """
import contextlib, io, json, os, sys, time
from pathlib import Path
from gapseek.search.campaign import Campaign
from gapseek.cli import main
real = Campaign.suggested
tmp, me = Path({tmp!r}), {me}
for rep in range({reps}):
    def slow(self, delay=0.2 if rep % 2 else 0):  # odd rounds widen the window between the check and the write
        time.sleep(delay)
        return real(self)
    Campaign.suggested = slow
    (tmp / f"ready{{rep}}.{{me}}").touch()
    while not (tmp / f"go{{rep}}").exists():
        time.sleep(0.001)
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(["tell", {out!r}, str(tmp / f"r{{rep}}.csv")])
    (tmp / f"rc{{rep}}.{{me}}.tmp").write_text(json.dumps([rc, err.getvalue()]))
    os.replace(tmp / f"rc{{rep}}.{{me}}.tmp", tmp / f"rc{{rep}}.{{me}}")
"""


def _wait_for(paths: list[Path], procs, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
            raise AssertionError([p.communicate() for p in procs if p.poll() is not None])
        time.sleep(0.005)


def test_two_tells_of_the_same_ids_at_once_record_them_once(tmp_path):
    """Two processes tell the same 3 measurements at the same moment, 10 times (every other time with a pause
    between the check for recorded ids and the write): each time one records them, the other refuses."""
    store, gap, out = _lab(tmp_path)
    reps = 10
    for rep in range(reps):
        _results(tmp_path / f"r{rep}.csv", gap, [100 + 3 * rep, 101 + 3 * rep, 102 + 3 * rep])
    procs = [subprocess.Popen([sys.executable, "-c", _RACING_TELLS.format(tmp=str(tmp_path), me=me, reps=reps,
                                                                          out=str(out))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for me in range(2)]
    try:
        recorded = 25
        for rep in range(reps):
            _wait_for([tmp_path / f"ready{rep}.{me}" for me in range(2)], procs)
            (tmp_path / f"go{rep}").touch()
            results = [tmp_path / f"rc{rep}.{me}" for me in range(2)]
            _wait_for(results, procs)
            done = [json.loads(r.read_text()) for r in results]
            assert sorted(rc for rc, _ in done) == [0, 1], (rep, done)
            loser = next(err for rc, err in done if rc == 1)
            assert "already recorded" in loser and "nothing was recorded" in loser, loser
            rows = _log_ok(out)  # each id once
            recorded += 3
            assert len(rows) == recorded
            assert [r.id for r in rows[-3:]] == [f"c{k}" for k in (100 + 3 * rep, 101 + 3 * rep, 102 + 3 * rep)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from gapseek.fsutil import file_lock
with file_lock(Path({lock!r}), "a campaign"):
    Path({marker!r}).touch()
    time.sleep({hold})
"""


def _hold(lock: Path, marker: Path, hold: float) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK.format(lock=str(lock), marker=str(marker), hold=hold)])
    _wait_for([marker], [p])
    return p


def test_a_second_writer_waits_for_the_lock_and_says_so(tmp_path, monkeypatch, capsys):
    store, gap, out = _lab(tmp_path)
    before = (out / "trials.csv").read_bytes()
    res = _results(tmp_path / "res.csv", gap, [40, 41])
    holder = _hold(out / ".campaign.lock", tmp_path / "m1", 30)
    try:
        monkeypatch.setenv("GAPSEEK_LOCK_TIMEOUT", "0.3")
        capsys.readouterr()
        assert main(["tell", str(out), str(res)]) == 1
        err = capsys.readouterr().err
        assert f"another gapseek command (pid {holder.pid}) has held the campaign in {out} for too long" in err
        assert "GAPSEEK_LOCK_TIMEOUT" in err and (out / "trials.csv").read_bytes() == before
        # search does not wait: another command in its directory is an error at once
        (tmp_path / "s").mkdir()
        store2, labels, _ = _synthetic_store(tmp_path / "s")
        sim = tmp_path / "sim"
        sim.mkdir()
        other = _hold(sim / ".campaign.lock", tmp_path / "m2", 30)
        try:
            monkeypatch.delenv("GAPSEEK_LOCK_TIMEOUT")
            assert main(["search", str(store2), "--labels", str(labels), "--prior", "20", "--target", str(T),
                         "--budget", "2", "--engine", "random", "--out", str(sim)]) == 1
            assert f"(pid {other.pid}) is writing the campaign in {sim}" in capsys.readouterr().err
            assert not (sim / "campaign.json").exists()
        finally:
            other.kill()
            other.wait()
    finally:
        holder.kill()
        holder.wait()
    # a holder that finishes: the second writer waits for it, says so, then records
    holder = _hold(out / ".campaign.lock", tmp_path / "m3", 1.0)
    assert main(["tell", str(out), str(res)]) == 0
    assert f"waiting for another gapseek command (pid {holder.pid})" in capsys.readouterr().err
    holder.wait()
    assert [r.id for r in _log_ok(out)[25:]] == ["c40", "c41"]


# ---------------------------------------------------------------------------------------------- damaged campaigns
def test_a_log_without_prior_a_missing_log_and_a_corrupt_campaign_json(tmp_path, capsys):
    store, labels, _ = _synthetic_store(tmp_path)
    args = ["search", str(store), "--labels", str(labels), "--prior", "20", "--target", str(T), "--budget", "4",
            "--engine", "random"]
    assert main(args + ["--out", str(tmp_path / "ref")]) == 0
    reference = Campaign(tmp_path / "ref").trials()
    # a simulated campaign whose start was cut before the prior was written (gapseek before these fixes wrote
    # campaign.json and the header first): the rerun records the prior and runs it as if never interrupted
    cut = tmp_path / "cut"
    cut.mkdir()
    meta = json.loads((tmp_path / "ref" / "campaign.json").read_text())
    for key in ("store_digest", "store_rows", "store_content"):
        meta.pop(key)
    (cut / "campaign.json").write_text(json.dumps(meta))
    (cut / "trials.csv").write_text(HEADER + "\n")
    capsys.readouterr()
    assert main(args + ["--out", str(cut)]) == 0, capsys.readouterr().err
    assert "the prior was never recorded" in capsys.readouterr().err
    assert [(r.id, r.trial, r.source) for r in Campaign(cut).trials()] == \
        [(r.id, r.trial, r.source) for r in reference]
    # a lab campaign without its prior: a clear error, for suggest and tell
    store, gap, out = _lab(tmp_path / "l")
    capsys.readouterr()
    log = out / "trials.csv"
    log.write_text(HEADER + "\n")
    res = _results(tmp_path / "res.csv", gap, [40, 41])
    for cmd in (["suggest", str(out)], ["tell", str(out), str(res)]):
        assert main(cmd) == 1
        err = capsys.readouterr().err
        assert "holds no prior measurement" in err and "--overwrite" in err and err.count("\n") == 1
    # a deleted log: refused, not recreated
    log.unlink()
    for cmd in (["suggest", str(out)], ["tell", str(out), str(res)]):
        assert main(cmd) == 1
        err = capsys.readouterr().err
        assert "trials.csv is missing (deleted?)" in err and err.count("\n") == 1
        assert not log.exists()
    # a campaign.json cut short: one line, not a traceback
    store, gap, out = _lab(tmp_path / "m")
    capsys.readouterr()
    meta = (out / "campaign.json").read_text()
    (out / "campaign.json").write_text(meta[: len(meta) // 2])
    for cmd in (["suggest", str(out)], ["tell", str(out), str(res)], ["search"] + args[1:] + ["--out", str(out)]):
        assert main(cmd) == 1
        err = capsys.readouterr().err
        assert "campaign.json is corrupt" in err and err.count("\n") == 1, err
    (out / "campaign.json").write_text(json.dumps({"gapseek_campaign": 1, "store": str(store)}))
    assert main(["suggest", str(out)]) == 1
    assert "lacks or garbles the campaign's settings" in capsys.readouterr().err


def test_a_store_with_other_content_is_refused_and_old_campaigns_get_its_digest(tmp_path, capsys):
    store, gap, out = _lab(tmp_path)
    (tmp_path / "other").mkdir()
    other, _, _ = _synthetic_store(tmp_path / "other", seed=1)  # the same ids c0..c599, other features
    mine, theirs = Store.open(store).content_digest()[0], Store.open(other).content_digest()[0]
    assert mine != theirs
    meta = json.loads((out / "campaign.json").read_text())
    assert meta["store_digest"] == mine and meta["store_rows"] == 600
    before = (out / "trials.csv").read_bytes()
    moved = dict(meta, store=str(other.resolve()))
    (out / "campaign.json").write_text(json.dumps(moved))
    res = _results(tmp_path / "res.csv", gap, [40])
    capsys.readouterr()
    for cmd in (["suggest", str(out)], ["tell", str(out), str(res)]):
        assert main(cmd) == 1
        err = capsys.readouterr().err
        assert "holds other content than the one the campaign" in err and mine[:16] in err and theirs[:16] in err
        assert str(other.resolve()) in err and err.count("\n") == 1
    assert (out / "trials.csv").read_bytes() == before
    # a store replaced in place by another with the same ids: refused as well (its file changed: hashed again)
    (out / "campaign.json").write_text(json.dumps(meta))
    os.replace(other / "features.h5", store / "features.h5")
    assert main(["suggest", str(out)]) == 1
    assert theirs[:16] in capsys.readouterr().err
    # a campaign written before the digest was kept: it is recorded on first use, with a notice
    store, gap, out = _lab(tmp_path / "old")
    meta = json.loads((out / "campaign.json").read_text())
    digest = meta.pop("store_digest")
    del meta["store_rows"], meta["store_content"]
    (out / "campaign.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["suggest", str(out)]) == 0
    assert "records no store digest" in capsys.readouterr().err
    assert json.loads((out / "campaign.json").read_text())["store_digest"] == digest


# ---------------------------------------------------------------------------------------------- exact resumption
@pytest.fixture(scope="module")
def search_store(tmp_path_factory):
    return _synthetic_store(tmp_path_factory.mktemp("resume"))


@pytest.mark.parametrize("engine,batch,crash_at", [("random", 1, 3), ("random", 2, 4), ("predicted", 2, 4),
                                                   ("gp", 2, 4), ("gp-ei", 2, 3), ("gp-noprior", 1, 2),
                                                   ("gp-abs", 2, 4), ("gpyopt", 2, 4)])
def test_every_engine_resumes_exactly(search_store, tmp_path, monkeypatch, engine, batch, crash_at):
    """Interrupted at trial ``crash_at`` (mid-batch when batch 2 and crash_at even), then resumed: the same
    crystals, in the same order, as a campaign never interrupted."""
    store, labels, _ = search_store
    args = ["search", str(store), "--labels", str(labels), "--prior", "20", "--target", str(T), "--tolerance",
            "0.02", "--budget", "5", "--batch", str(batch), "--engine", engine, "--seed", "3"]
    assert main(args + ["--out", str(tmp_path / "whole")]) == 0
    whole = [r.id for r in Campaign(tmp_path / "whole").trials() if r.source == "oracle"]
    assert len(whole) == 5
    assert run_interrupted(args + ["--out", str(tmp_path / "cut")], crash_at, monkeypatch) == 130
    assert len(Campaign(tmp_path / "cut").trials()) == 20 + crash_at - 1
    assert main(args + ["--out", str(tmp_path / "cut")]) == 0
    rows = _log_ok(tmp_path / "cut")
    assert [r.id for r in rows if r.source == "oracle"] == whole
    assert [r.trial for r in rows if r.source == "oracle"] == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------------------------- the rest
def test_results_with_a_decimal_comma_or_a_missing_field_are_refused_whole(tmp_path, capsys):
    store, gap, out = _lab(tmp_path)
    before = (out / "trials.csv").read_bytes()
    comma = tmp_path / "comma.csv"
    comma.write_text(f"c30,{float(gap[30])!r}\nc31,2,8964\nc32,{float(gap[32])!r}\n")
    capsys.readouterr()
    assert main(["tell", str(out), str(comma)]) == 1
    err = capsys.readouterr().err
    assert "line 2: 3 field(s), expected 2 (id,band_gap) (a decimal comma? write 2.8964)" in err
    assert err.count("\n") == 1
    short = tmp_path / "short.csv"
    short.write_text(f"id,band_gap\nc30,{float(gap[30])!r}\nc31\n")
    assert main(["tell", str(out), str(short)]) == 1
    assert "line 3: 1 field(s), expected 2" in capsys.readouterr().err
    extra = tmp_path / "extra.csv"
    extra.write_text(f"c30,{float(gap[30])!r},lab notes\n")
    assert main(["tell", str(out), str(extra)]) == 1
    assert "line 1: 3 field(s), expected 2 (id,band_gap)\n" in capsys.readouterr().err
    assert (out / "trials.csv").read_bytes() == before  # nothing of any of them


_SLOW_PCA = """
import sys, time
from pathlib import Path
real = time.strftime
def slow(*a):
    if sys._getframe(1).f_code.co_name == "save_pca":  # inside save_pca: the store is open for writing
        Path({marker!r}).touch()
        time.sleep(2.0)
    return real(*a)
time.strftime = slow
from gapseek.cli import main
sys.exit(main(["pca", {store!r}, "--vector", "hidden", "--components", "4"]))
"""


def test_concurrent_pca_writers_and_readers_wait_for_each_other(tmp_path):
    store, gap, out = _lab(tmp_path)
    marker = tmp_path / "writing"
    gapseek = [sys.executable, "-c", "import sys; from gapseek.cli import main; sys.exit(main(sys.argv[1:]))"]
    slow = subprocess.Popen([sys.executable, "-c", _SLOW_PCA.format(marker=str(marker), store=str(store))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and slow.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists(), slow.communicate()
    # while the first writer holds the store open: a second writer, and a reader (suggest builds its pool)
    second = subprocess.Popen(gapseek + ["pca", str(store), "--vector", "hidden", "--components", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader = subprocess.Popen(gapseek + ["suggest", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    for p in (slow, second, reader):
        so, se = p.communicate(timeout=120)
        assert p.returncode == 0, se
        assert "Errno 11" not in se and "unable to lock" not in se
    from gapseek.store import Store

    with Store.open(store) as st:
        assert st.pca("hidden").n_components == 2  # the second writer's fit, saved after the first's


def test_gpyopt_suggests_batches(tmp_path, capsys):
    store, gap, out = _lab(tmp_path, engine="gpyopt")
    prior = {f"c{k}" for k in range(25)}
    capsys.readouterr()
    assert main(["suggest", str(out), "--n", "3"]) == 0, capsys.readouterr().err
    first = [ln.split()[0] for ln in capsys.readouterr().out.strip().splitlines()[-3:]]
    assert len(set(first)) == 3 and not set(first) & prior
    assert main(["suggest", str(out), "--n", "2"]) == 0  # with the first 3 being measured
    more = [ln.split()[0] for ln in capsys.readouterr().out.strip().splitlines()[-2:]]
    assert len(set(more)) == 2 and not set(more) & (prior | set(first))
