"""Sharded featurization into ``STORE/shards/part-IIIII.h5``, resumable, and the verified merge.

A shard task reads only its rows of the manifest, featurizes them block by block (``checkpoint_every`` rows,
a multiple of the chunk size) and writes each finished block to ``shards/part-IIIII.partial/`` through a
temporary file and an atomic rename; a requeued or restarted task keeps the blocks that match and goes on
from there. When all blocks are done they are joined into ``part-IIIII.h5`` (again temp file + rename) and
the partial folder is removed. A shard whose part file matches the manifest (the sha256 of its ids and
content hashes, and the featurizer settings) is skipped on rerun.

:func:`merge_shards` builds ``STORE/features.h5`` and refuses to finish unless every manifest entry appears
exactly once, as features or as a failure; a missing, corrupt or stale shard is named with the command that
redoes it.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py

from gapseek.errors import ConfigError, StoreError
from gapseek.featurize import FeaturizeSettings, featurize_items, settings_attrs
from gapseek.inputs import InputItem
from gapseek.manifest import MANIFEST_FILE, Manifest, entries_digest, read_manifest, read_plan
from gapseek.model import LoadedModel
from gapseek.store import StoreWriter, decode_strings

__all__ = ["ShardResult", "ShardState", "merge_shards", "run_shard", "shard_path", "shard_states"]

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


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _file_matches(path: Path, digest: str, n_expected: int, settings_digest: str) -> bool:
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            return (a.get("entries_digest") == digest and a.get("settings_digest") == settings_digest
                    and int(a.get("n_features", -1)) + int(a.get("n_failures", -1)) == n_expected
                    and f["ids"].shape[0] + f["failures/ids"].shape[0] == n_expected)
    except (OSError, KeyError, ValueError):
        return False


def run_shard(
    store: str | Path,
    index: int,
    model: LoadedModel,
    settings: FeaturizeSettings = FeaturizeSettings(),
    checkpoint_every: int = 2048,
    on_rows: Callable[[int], None] | None = None,
) -> ShardResult:
    """Featurize shard ``index`` of ``store`` into its part file (skip it if complete; resume if partial)."""
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
    if final.exists() and _file_matches(final, digest, n, attrs["settings_digest"]):
        log.info("shard %d is complete; skipped", index)
        return ShardResult(index, "skipped", n, -1, -1, time.perf_counter() - t0)
    partial = _partial_dir(store, index)
    partial.mkdir(parents=True, exist_ok=True)
    reused = 0
    blocks = []
    for b0 in range(0, n, checkpoint_every):
        b1 = min(b0 + checkpoint_every, n)
        name = f"block-{b0:07d}-{b1:07d}.h5"
        block_digest = entries_digest(entries.ids[b0:b1], entries.sha256[b0:b1])
        blocks.append(partial / name)
        if (partial / name).exists() and _file_matches(partial / name, block_digest, b1 - b0,
                                                        attrs["settings_digest"]):
            reused += 1
            if on_rows:
                on_rows(b1 - b0)
            continue
        items = [InputItem(i, p) for i, p in zip(entries.ids[b0:b1], entries.paths[b0:b1])]
        with StoreWriter(partial, attrs=attrs, overwrite=True, filename=name) as w:
            for rows in featurize_items(items, model, settings,
                                        on_chunk=(lambda r, k: on_rows(k)) if on_rows else None):
                w.write(rows)
            w.commit({"entries_digest": block_digest})
    # join the blocks (streamed; memory stays at one block of rows)
    final.parent.mkdir(parents=True, exist_ok=True)
    with StoreWriter(final.parent, attrs=attrs, overwrite=True, filename=final.name) as w:
        for path in blocks:
            w.append_file(path)
        w.commit({"entries_digest": digest, "shard_index": index, "num_shards": plan.num_shards,
                  "manifest_start": start, "manifest_stop": stop, "elapsed_s": time.perf_counter() - t0,
                  "peak_rss_mb": _peak_rss_mb(), "hostname": os.uname().nodename})
        n_ok, n_failed = w.n_ok, w.n_failed
    shutil.rmtree(partial, ignore_errors=True)
    status = "resumed" if reused else "done"
    return ShardResult(index, status, n, n_ok, n_failed, time.perf_counter() - t0, reused)


@dataclass(frozen=True)
class ShardState:
    index: int
    state: str  # "complete", "partial" (blocks checkpointed), "missing", "stale" (other inputs or settings)
    detail: str = ""


def shard_states(store: str | Path, settings_digest: str | None = None) -> list[ShardState]:
    """The state of every shard of ``store`` (reads the manifest one shard at a time)."""
    plan = read_plan(store)
    out = []
    for i in range(plan.num_shards):
        final = shard_path(store, i)
        if final.exists():
            ok = _check_part(final, read_manifest(store, *plan.bounds(i)), i, settings_digest)
            out.append(ShardState(i, "complete" if ok is None else "stale", ok or ""))
        elif _partial_dir(store, i).is_dir():
            nb = len(list(_partial_dir(store, i).glob("block-*.h5")))
            out.append(ShardState(i, "partial", f"{nb} checkpointed block(s)"))
        else:
            out.append(ShardState(i, "missing"))
    return out


def _check_part(path: Path, man: Manifest, index: int, settings_digest: str | None) -> str | None:
    """None if the part file holds exactly shard ``index``'s entries, once each; else what is wrong.
    ``man``: the manifest rows of that shard (or the whole manifest)."""
    start, stop = man.plan.bounds(index)
    start, stop = start - man.offset, stop - man.offset
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            if a.get("entries_digest") != man.shard_digest(index):
                return "made from other inputs (the manifest changed since)"
            if settings_digest is not None and a.get("settings_digest") != settings_digest:
                return "made with other featurizer settings or another model"
            ids = decode_strings(f["ids"][()]) + decode_strings(f["failures/ids"][()])
    except (OSError, KeyError) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"
    expected = man.ids[start:stop]
    if len(ids) != len(expected) or set(ids) != set(expected):
        missing = sorted(set(expected) - set(ids))[:5]
        extra = sorted(set(ids) - set(expected))[:5]
        return f"holds {len(ids)} rows for {len(expected)} entries (missing e.g. {missing}, unexpected {extra})"
    if len(set(ids)) != len(ids):
        return "holds duplicated ids"
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
    """Verify every shard and write ``STORE/features.h5``; raise :class:`StoreError` naming bad shards."""
    store = Path(store)
    plan = read_plan(store)
    states = []
    digests = set()
    attrs: dict = {}
    for i in range(plan.num_shards):  # one shard's manifest rows in memory at a time
        final = shard_path(store, i)
        if not final.exists():
            states.append((i, "missing"))
            continue
        problem = _check_part(final, read_manifest(store, *plan.bounds(i)), i, None)
        if problem:
            states.append((i, problem))
            continue
        with h5py.File(final, "r") as f:
            digests.add(f.attrs.get("settings_digest"))
            if not attrs:
                attrs = {k: v for k, v in f.attrs.items() if k not in (
                    "entries_digest", "shard_index", "manifest_start", "manifest_stop", "n_features",
                    "n_failures", "elapsed_s", "peak_rss_mb", "hostname")}
    if states:
        lines = "\n".join(f"  shard {i} ({shard_path(store, i).name}): {why}" for i, why in states)
        raise StoreError(f"cannot merge {store}: {len(states)} of {plan.num_shards} shard(s) are not "
                         f"complete:\n{lines}\n{rerun_hint(store, [i for i, _ in states])}")
    if len(digests) > 1:
        raise StoreError(f"cannot merge {store}: shards were made with different models or settings "
                         f"({len(digests)} variants); re-featurize the odd ones out")
    attrs.update({"n_inputs": plan.n_entries, "num_shards": plan.num_shards,
                  "manifest": MANIFEST_FILE, "merged": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    with StoreWriter(store, attrs=attrs, overwrite=overwrite) as w:
        for i in range(plan.num_shards):
            w.append_file(shard_path(store, i), block=block)
        if w.n_ok + w.n_failed != plan.n_entries:
            raise StoreError(f"merge of {store} counted {w.n_ok + w.n_failed} rows for {plan.n_entries} "
                             "manifest entries")
        return w.commit()


def shard_env_index() -> int | None:
    """The shard of this Slurm array task: ``$SLURM_ARRAY_TASK_ID + $GAPSEEK_SHARD_OFFSET`` (or None)."""
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    if task is None:
        return None
    return int(task) + int(os.environ.get("GAPSEEK_SHARD_OFFSET", "0"))
