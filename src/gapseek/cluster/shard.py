"""One shard of an indexed store, featurized resumably into its part file.

A shard task reads only its rows of the manifest, featurizes them block by block (``checkpoint_every`` rows,
a multiple of the chunk size) and writes each finished block to ``shards/part-IIIII.partial/`` through a
temporary file and an atomic rename; a requeued or restarted task keeps the blocks that match and goes on
from there. When all blocks are done they are joined into ``part-IIIII.h5`` (again temp file + rename) and
the partial folder is removed. A shard whose part file matches the manifest (the sha256 of its ids and
content hashes, and the featurizer settings) and passes its content checksums is skipped on rerun; one that
fails them is made again (so are checkpointed blocks). A task holds its shard's lock (``part-IIIII.lock``,
flock) throughout: a second task on the same shard waits for the first, then skips the shard.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gapseek.cluster.parts import file_problem_for, lock_path, partial_dir, shard_path
from gapseek.errors import ConfigError
from gapseek.featurize import FeaturizeSettings, featurize_items, settings_attrs
from gapseek.featurize.supervise import peak_rss_mb
from gapseek.fsutil import file_lock
from gapseek.model import LoadedModel
from gapseek.store import ShardInfo, StoreWriter
from gapseek.store.manifest import entries_digest, read_manifest, read_plan
from gapseek.store.pack import PackReader
from gapseek.structure.inputs import InputItem

__all__ = ["ShardResult", "run_shard", "shard_lock"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardResult:
    index: int
    status: str  # "done", "skipped" (already complete) or "resumed"
    n_entries: int
    n_ok: int
    n_failed: int
    seconds: float
    blocks_reused: int = 0
    peak_rss_mb: float = 0.0  # this process or its largest worker


@contextmanager
def shard_lock(store: str | Path, index: int) -> Iterator[bool]:
    """Hold shard ``index``'s lock (``shards/part-IIIII.lock``, :func:`gapseek.fsutil.file_lock`) for the block: a
    second task on the same shard (a requeued task racing its predecessor, two array jobs that overlap) waits here
    until the first has finished, then finds the shard complete. The lock goes with the process, however it ends
    (kill -9 too). Yields False when the file system does not support locks (a warning says so; tasks then are not
    serialized, but a task that fails while another completes the shard still ends well: see :func:`run_shard`).
    """
    path = lock_path(store, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path, f"shard {index}", timeout=math.inf,
                   waiting=lambda holder: f"shard {index} is being featurized by {holder}; waiting for it to "
                                          "finish") as lock:
        if lock.waited:
            log.warning("shard %d: the other task finished after %.0f s of waiting", index, lock.waited)
        if not lock.held:
            log.warning("cannot lock %s: this file system has no flock; tasks on the same shard are not "
                        "serialized", path)
        yield lock.held


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
    if entries.provenance is not None:  # where the inputs came from (not part of the settings' digest)
        attrs["provenance"] = entries.provenance
    final = shard_path(store, index)
    n = stop - start
    with shard_lock(store, index):
        problem = file_problem_for(final, digest, n, attrs["settings_digest"]) if final.exists() else "missing"
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
            if final.exists() and file_problem_for(final, digest, n, attrs["settings_digest"]) is None:
                log.warning("shard %d: this task failed (%s: %s) but another one completed the shard meanwhile; "
                            "skipped", index, type(exc).__name__, exc)
                return ShardResult(index, "skipped", n, -1, -1, time.perf_counter() - t0)
            raise


def _featurize_shard(store, index, model, settings, checkpoint_every, on_rows, plan, entries, digest, attrs,
                     t0) -> ShardResult:
    start, stop = plan.bounds(index)
    n = stop - start
    final = shard_path(store, index)
    partial = partial_dir(store, index)
    partial.mkdir(parents=True, exist_ok=True)
    reused = 0
    blocks = []
    with contextlib.ExitStack() as stack:
        pack = None
        for b0 in range(0, n, checkpoint_every):
            b1 = min(b0 + checkpoint_every, n)
            name = f"block-{b0:07d}-{b1:07d}.h5"
            block_digest = entries_digest(entries.ids[b0:b1], entries.sha256[b0:b1])
            blocks.append(partial / name)
            if (partial / name).exists():
                problem = file_problem_for(partial / name, block_digest, b1 - b0, attrs["settings_digest"])
                if problem is None:
                    reused += 1
                    if on_rows:
                        on_rows(b1 - b0)
                    continue
                log.warning("%s: %s; featurizing it again", partial / name, problem)
            if entries.packed and pack is None:  # one open of the pack per task, one read per block
                pack = stack.enter_context(PackReader(store, entries.pack_sha256s))
            data = pack.read(start + b0, start + b1) if pack is not None else [None] * (b1 - b0)
            items = [InputItem(i, p, s, d) for i, p, s, d in zip(entries.ids[b0:b1], entries.paths[b0:b1],
                                                                  entries.sha256[b0:b1], data)]
            with StoreWriter(partial, attrs=attrs, overwrite=True, filename=name) as w:
                for rows in featurize_items(items, model, settings,
                                            on_chunk=(lambda r, k: on_rows(k)) if on_rows else None):
                    w.write(rows)
                w.commit(shard=ShardInfo(block_digest))
    # join the blocks (streamed; memory stays at one block of rows; each block's checksums checked again)
    final.parent.mkdir(parents=True, exist_ok=True)
    with StoreWriter(final.parent, attrs=attrs, overwrite=True, filename=final.name) as w:
        for path in blocks:
            w.append_file(path)
        w.commit(shard=ShardInfo(digest, shard_index=index, num_shards=plan.num_shards, manifest_start=start,
                                 manifest_stop=stop, elapsed_s=time.perf_counter() - t0, peak_rss_mb=peak_rss_mb(),
                                 hostname=os.uname().nodename))
        n_ok, n_failed = w.n_ok, w.n_failed
    shutil.rmtree(partial, ignore_errors=True)
    status = "resumed" if reused else "done"
    return ShardResult(index, status, n, n_ok, n_failed, time.perf_counter() - t0, reused, peak_rss_mb())
