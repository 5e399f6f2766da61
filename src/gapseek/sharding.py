"""Sharded featurization into ``STORE/shards/part-IIIII.h5``, resumable, and the verified merge.

A shard task reads only its rows of the manifest, featurizes them block by block (``checkpoint_every`` rows,
a multiple of the chunk size) and writes each finished block to ``shards/part-IIIII.partial/`` through a
temporary file and an atomic rename; a requeued or restarted task keeps the blocks that match and goes on
from there. When all blocks are done they are joined into ``part-IIIII.h5`` (again temp file + rename) and
the partial folder is removed. A shard whose part file matches the manifest (the sha256 of its ids and
content hashes, and the featurizer settings) and passes its content checksums is skipped on rerun; one that
fails them is made again (so are checkpointed blocks). A task holds its shard's lock (``part-IIIII.lock``,
flock) throughout: a second task on the same shard waits for the first, then skips the shard.

:func:`shard_states` (``gapseek status``) reads every part file in full and checks its checksums.
:func:`merge_shards` builds ``STORE/features.h5`` and refuses to finish unless every manifest entry appears
exactly once, as features or as a failure, and every part file passes its checksums as it is copied; a missing,
corrupt or stale shard is named with the command that redoes it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shlex
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py

from gapseek.errors import ConfigError, CorruptStoreError, StoreError
from gapseek.featurize import FeaturizeSettings, featurize_items, settings_attrs
from gapseek.inputs import InputItem
from gapseek.manifest import MANIFEST_FILE, Manifest, entries_digest, read_manifest, read_plan
from gapseek.model import LoadedModel
from gapseek.store import StoreWriter, content_problem, decode_strings, file_problem
from gapseek.supervise import peak_rss_mb

__all__ = ["ShardResult", "ShardState", "merge_shards", "rerun_hint", "run_shard", "shard_lock", "shard_path",
           "shard_states"]

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"


def shard_path(store: str | Path, index: int) -> Path:
    return Path(store) / SHARDS_DIR / f"part-{index:05d}.h5"


def _partial_dir(store: str | Path, index: int) -> Path:
    return Path(store) / SHARDS_DIR / f"part-{index:05d}.partial"


@dataclass(frozen=True)
class ShardResult:
    index: int
    status: str  # "done", "skipped" (already complete) or "resumed"
    n_entries: int
    n_ok: int
    n_failed: int
    seconds: float
    blocks_reused: int = 0


def _lock_path(store: str | Path, index: int) -> Path:
    return Path(store) / SHARDS_DIR / f"part-{index:05d}.lock"


@contextmanager
def shard_lock(store: str | Path, index: int) -> Iterator[bool]:
    """Hold shard ``index``'s lock (``shards/part-IIIII.lock``, ``fcntl.flock``) for the block: a second task on
    the same shard (a requeued task racing its predecessor, two array jobs that overlap) waits here until the
    first has finished, then finds the shard complete. The lock goes with the process, however it ends (kill -9
    too). Yields False when the file system does not support locks (a warning says so; tasks then are not
    serialized, but a task that fails while another completes the shard still ends well: see :func:`run_shard`).
    """
    path = _lock_path(store, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        locked = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another task"
            log.warning("shard %d is being featurized by %s; waiting for it to finish", index, holder)
            t0 = time.perf_counter()
            fcntl.flock(fd, fcntl.LOCK_EX)
            log.warning("shard %d: the other task finished after %.0f s of waiting", index, time.perf_counter() - t0)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            locked = False
            log.warning("cannot lock %s (%s): this file system has no flock; tasks on the same shard are not "
                        "serialized", path, exc)
        if locked:
            note = f"pid {os.getpid()} on {os.uname().nodename} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
        yield locked
    finally:
        os.close(fd)  # releases the lock



def _file_problem(path: Path, digest: str, n_expected: int, settings_digest: str) -> str | None:
    """None when ``path`` (a part or block file) holds the ``n_expected`` rows of the entries ``digest`` names,
    made with ``settings_digest``, and its content passes its checksums; else what is wrong."""
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            if a.get("entries_digest") != digest or a.get("settings_digest") != settings_digest:
                return "made from other inputs or settings"
            if (int(a.get("n_features", -1)) + int(a.get("n_failures", -1)) != n_expected
                    or f["ids"].shape[0] + f["failures/ids"].shape[0] != n_expected):
                return f"does not hold {n_expected} rows"
            return content_problem(f)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"


def run_shard(
    store: str | Path,
    index: int,
    model: LoadedModel,
    settings: FeaturizeSettings = FeaturizeSettings(),
    checkpoint_every: int = 2048,
    on_rows: Callable[[int], None] | None = None,
) -> ShardResult:
    """Featurize shard ``index`` of ``store`` into its part file (skip it if complete; resume if partial).

    The shard is locked meanwhile (:func:`shard_lock`): a second task on it waits, then skips it. A part file or
    checkpointed block that fails its content check is made again."""
    t0 = time.perf_counter()
    plan = read_plan(store)
    if plan.chunk_size != settings.chunk_size:
        raise ConfigError(f"{store} is planned with chunk_size {plan.chunk_size}; featurize with --chunk-size "
                          f"{plan.chunk_size} so shards form the same batches as one process would")
    if checkpoint_every < 1 or checkpoint_every % settings.chunk_size:
        raise ConfigError(f"checkpoint_every ({checkpoint_every}) must be a positive multiple of the chunk size "
                          f"({settings.chunk_size})")
    start, stop = plan.bounds(index)
    entries = read_manifest(store, start, stop)
    digest = entries.shard_digest(index)
    attrs = settings_attrs(model, settings)
    final = shard_path(store, index)
    n = stop - start
    with shard_lock(store, index):
        problem = _file_problem(final, digest, n, attrs["settings_digest"]) if final.exists() else "missing"
        if problem is None:
            log.info("shard %d is complete; skipped", index)
            return ShardResult(index, "skipped", n, -1, -1, time.perf_counter() - t0)
        if final.exists():
            log.warning("%s: %s; featurizing shard %d again", final, problem, index)
        try:
            return _featurize_shard(store, index, model, settings, checkpoint_every, on_rows, plan, entries,
                                    digest, attrs, t0)
        except Exception as exc:
            # without a working lock (a file system with no flock) another task may have completed the shard
            # meanwhile, removing the checkpoint folder under this one: its result stands, and this task is fine
            if final.exists() and _file_problem(final, digest, n, attrs["settings_digest"]) is None:
                log.warning("shard %d: this task failed (%s: %s) but another one completed the shard meanwhile; "
                            "skipped", index, type(exc).__name__, exc)
                return ShardResult(index, "skipped", n, -1, -1, time.perf_counter() - t0)
            raise


def _featurize_shard(store, index, model, settings, checkpoint_every, on_rows, plan, entries, digest, attrs,
                     t0) -> ShardResult:
    start, stop = plan.bounds(index)
    n = stop - start
    final = shard_path(store, index)
    partial = _partial_dir(store, index)
    partial.mkdir(parents=True, exist_ok=True)
    reused = 0
    blocks = []
    for b0 in range(0, n, checkpoint_every):
        b1 = min(b0 + checkpoint_every, n)
        name = f"block-{b0:07d}-{b1:07d}.h5"
        block_digest = entries_digest(entries.ids[b0:b1], entries.sha256[b0:b1])
        blocks.append(partial / name)
        if (partial / name).exists():
            problem = _file_problem(partial / name, block_digest, b1 - b0, attrs["settings_digest"])
            if problem is None:
                reused += 1
                if on_rows:
                    on_rows(b1 - b0)
                continue
            log.warning("%s: %s; featurizing it again", partial / name, problem)
        items = [InputItem(i, p, s) for i, p, s in zip(entries.ids[b0:b1], entries.paths[b0:b1],
                                                         entries.sha256[b0:b1])]
        with StoreWriter(partial, attrs=attrs, overwrite=True, filename=name) as w:
            for rows in featurize_items(items, model, settings,
                                        on_chunk=(lambda r, k: on_rows(k)) if on_rows else None):
                w.write(rows)
            w.commit({"entries_digest": block_digest})
    # join the blocks (streamed; memory stays at one block of rows; each block's checksums checked again)
    final.parent.mkdir(parents=True, exist_ok=True)
    with StoreWriter(final.parent, attrs=attrs, overwrite=True, filename=final.name) as w:
        for path in blocks:
            w.append_file(path)
        w.commit({"entries_digest": digest, "shard_index": index, "num_shards": plan.num_shards,
                  "manifest_start": start, "manifest_stop": stop, "elapsed_s": time.perf_counter() - t0,
                  "peak_rss_mb": peak_rss_mb(), "hostname": os.uname().nodename})
        n_ok, n_failed = w.n_ok, w.n_failed
    shutil.rmtree(partial, ignore_errors=True)
    status = "resumed" if reused else "done"
    return ShardResult(index, status, n, n_ok, n_failed, time.perf_counter() - t0, reused)


@dataclass(frozen=True)
class ShardState:
    index: int
    # "complete", "partial" (blocks checkpointed), "missing", "stale" (made from other inputs or settings),
    # "corrupt" (unreadable, or its content fails its checksums: featurize it again)
    state: str
    detail: str = ""


def shard_states(store: str | Path, settings_digest: str | None = None, verify: bool = True) -> list[ShardState]:
    """The state of every shard of ``store`` (reads the manifest one shard at a time). With ``verify`` (the
    default) every part file is read in full and checked against its checksums, so "complete" means that
    ``gapseek merge`` will accept it."""
    plan = read_plan(store)
    out = []
    for i, man in _manifest_by_shard(store, plan):
        final = shard_path(store, i)
        if final.exists():
            bad = _check_part(final, man, i, settings_digest, verify)
            out.append(ShardState(i, "complete") if bad is None else ShardState(i, *bad))
        elif _partial_dir(store, i).is_dir():
            nb = len(list(_partial_dir(store, i).glob("block-*.h5")))
            out.append(ShardState(i, "partial", f"{nb} checkpointed block(s)"))
        else:
            out.append(ShardState(i, "missing"))
    return out


def _manifest_by_shard(store: str | Path, plan, rows: int = 65536) -> Iterator[tuple[int, Manifest]]:
    """``(index, manifest rows that include shard index's)`` for every shard, reading the manifest in slices of
    about ``rows`` rows (its chunk size): memory stays bounded, and each compressed chunk is read once, not once
    per shard."""
    per = max(1, rows // plan.shard_size)
    for first in range(0, plan.num_shards, per):
        last = min(first + per, plan.num_shards) - 1
        man = read_manifest(store, plan.bounds(first)[0], plan.bounds(last)[1])
        for i in range(first, last + 1):
            yield i, man


def _check_part(path: Path, man: Manifest, index: int, settings_digest: str | None,
                verify: bool = True) -> tuple[str, str] | None:
    """None if the part file holds exactly shard ``index``'s entries, once each (and, with ``verify``, its
    content passes its checksums); else ``(state, what is wrong)`` with state "stale" or "corrupt".
    ``man``: the manifest rows of that shard (or the whole manifest)."""
    start, stop = man.plan.bounds(index)
    start, stop = start - man.offset, stop - man.offset
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            if a.get("entries_digest") != man.shard_digest(index):
                return "stale", "made from other inputs (the manifest changed since)"
            if settings_digest is not None and a.get("settings_digest") != settings_digest:
                return "stale", "made with other featurizer settings or another model"
            ids = decode_strings(f["ids"][()]) + decode_strings(f["failures/ids"][()])
            problem = content_problem(f) if verify else None
    except (OSError, KeyError, RuntimeError) as exc:
        return "corrupt", f"unreadable ({type(exc).__name__}: {' '.join(str(exc).split())})"
    if problem:
        return "corrupt", problem.removeprefix("corrupt: ")
    expected = man.ids[start:stop]
    if len(ids) != len(expected) or set(ids) != set(expected):
        missing = sorted(set(expected) - set(ids))[:5]
        extra = sorted(set(ids) - set(expected))[:5]
        return "corrupt", (f"holds {len(ids)} rows for {len(expected)} entries (missing e.g. {missing}, "
                           f"unexpected {extra})")
    if len(set(ids)) != len(ids):
        return "corrupt", "holds duplicated ids"
    return None


def featurize_sbatch() -> str:
    """The featurize.sbatch that hints name, as a path that works from any directory: the one in
    ``$GAPSEEK_SLURM_DIR``, else the source checkout's (an editable install), else ``slurm/featurize.sbatch``."""
    for d in (os.environ.get("GAPSEEK_SLURM_DIR"), Path(__file__).resolve().parents[2] / "slurm"):
        if d and (Path(d) / "featurize.sbatch").is_file():
            return shlex.quote(str((Path(d) / "featurize.sbatch").resolve()))
    return "slurm/featurize.sbatch"


def rerun_hint(store: str | Path, indices: list[int]) -> str:
    listed = ",".join(str(i) for i in indices)
    where = shlex.quote(str(Path(store).resolve()))
    return (f"rerun them with `gapseek featurize {where} --shard I` for I in {listed}, or "
            f"`sbatch --array={listed} {featurize_sbatch()} {where}`")


def merge_shards(store: str | Path, overwrite: bool = False, block: int = 65536) -> Path:
    """Verify every shard and write ``STORE/features.h5``; raise :class:`StoreError` naming bad shards.

    Each part file is read once: its rows are copied and checked against their checksums as they go. When one
    fails, the merge is abandoned (``features.h5`` is not written; an earlier one stays as it was) and the
    remaining shards are only checked, so the error names every shard to redo."""
    store = Path(store)
    plan = read_plan(store)
    states = []
    digests = set()
    attrs: dict = {}
    for i, man in _manifest_by_shard(store, plan):  # a slice of the manifest in memory at a time
        final = shard_path(store, i)
        if not final.exists():
            states.append((i, "missing"))
            continue
        bad = _check_part(final, man, i, None, verify=False)
        if bad:
            states.append((i, bad[1]))
            continue
        with h5py.File(final, "r") as f:
            digests.add(f.attrs.get("settings_digest"))
            if not attrs:
                attrs = {k: v for k, v in f.attrs.items() if k not in (
                    "entries_digest", "shard_index", "manifest_start", "manifest_stop", "n_features",
                    "n_failures", "elapsed_s", "peak_rss_mb", "hostname")}
    if states:
        raise _merge_error(store, plan.num_shards, states)
    if len(digests) > 1:
        raise StoreError(f"cannot merge {store}: shards were made with different models or settings "
                         f"({len(digests)} variants); re-featurize the odd ones out")
    attrs.update({"n_inputs": plan.n_entries, "num_shards": plan.num_shards,
                  "manifest": MANIFEST_FILE, "merged": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    with StoreWriter(store, attrs=attrs, overwrite=overwrite) as w:
        for i in range(plan.num_shards):
            path = shard_path(store, i)
            if states:  # the merge is lost already: only check the rest, to name every bad shard at once
                problem = file_problem(path, block)
                if problem:
                    states.append((i, problem))
                continue
            try:
                w.append_file(path, block=block)
            except CorruptStoreError as exc:
                states.append((i, str(exc).removeprefix(f"{path}: ")))
        if states:
            w.abort()
            raise _merge_error(store, plan.num_shards, states)
        if w.n_ok + w.n_failed != plan.n_entries:
            raise StoreError(f"merge of {store} counted {w.n_ok + w.n_failed} rows for {plan.n_entries} "
                             "manifest entries")
        return w.commit()


def _merge_error(store: Path, num_shards: int, states: list[tuple[int, str]]) -> StoreError:
    lines = "\n".join(f"  shard {i} ({shard_path(store, i).name}): {why}" for i, why in states)
    return StoreError(f"cannot merge {store}: {len(states)} of {num_shards} shard(s) are not complete; "
                      f"{STORE_FILE_KEPT}:\n{lines}\n{rerun_hint(store, [i for i, _ in states])}")


STORE_FILE_KEPT = "features.h5 was not written (an earlier one is unchanged)"


def shard_env_index() -> int | None:
    """The shard of this Slurm array task: ``$SLURM_ARRAY_TASK_ID + $GAPSEEK_SHARD_OFFSET`` (or None)."""
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    if task is None:
        return None
    return int(task) + int(os.environ.get("GAPSEEK_SHARD_OFFSET", "0"))
