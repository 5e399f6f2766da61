"""Where a sharded store keeps its shards, and what state each is in.

Shard ``I`` of ``STORE`` is written to ``STORE/shards/part-IIIII.h5`` (a store file: :mod:`gapseek.store`), its
checkpointed blocks to ``STORE/shards/part-IIIII.partial/``, and its lock is ``STORE/shards/part-IIIII.lock``.
:func:`shard_states` (``gapseek status``) reads every part file in full and checks its checksums; "complete" means
that ``gapseek merge`` will accept it. No model, no torch: this module is cheap to import.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gapseek import config
from gapseek.cluster.plan import ShardPlan
from gapseek.errors import StoreError
from gapseek.store import Store
from gapseek.store.manifest import Manifest, read_manifest, read_plan

__all__ = ["SHARDS_DIR", "ShardState", "check_part", "file_problem_for", "lock_path", "manifest_by_shard",
           "partial_dir", "rerun_hint", "shard_path", "shard_states"]

SHARDS_DIR = "shards"


def shard_path(store: str | Path, index: int) -> Path:
    return Path(store) / SHARDS_DIR / f"part-{index:05d}.h5"


def partial_dir(store: str | Path, index: int) -> Path:
    return Path(store) / SHARDS_DIR / f"part-{index:05d}.partial"


def lock_path(store: str | Path, index: int) -> Path:
    return Path(store) / SHARDS_DIR / f"part-{index:05d}.lock"


def _unreadable(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, StoreError) and exc.__cause__ is not None else exc
    return f"unreadable ({type(cause).__name__}: {' '.join(str(cause).split())})"


def file_problem_for(path: Path, digest: str, n_expected: int, settings_digest: str) -> str | None:
    """None when ``path`` (a part or block file) holds the ``n_expected`` rows of the entries ``digest`` names,
    made with ``settings_digest``, and its content passes its checksums; else what is wrong."""
    try:
        with Store(path, check_schema=False) as st:
            a = st.attrs
            if a.get("entries_digest") != digest or a.get("settings_digest") != settings_digest:
                return "made from other inputs or settings"
            if (int(a.get("n_features", -1)) + int(a.get("n_failures", -1)) != n_expected
                    or len(st) + st.n_failures != n_expected):
                return f"does not hold {n_expected} rows"
            return st.problem()
    except (StoreError, OSError, KeyError, ValueError, RuntimeError) as exc:
        return _unreadable(exc)


def check_part(path: Path, man: Manifest, index: int, settings_digest: str | None,
               verify: bool = True) -> tuple[str, str] | None:
    """None if the part file holds exactly shard ``index``'s entries, once each (and, with ``verify``, its
    content passes its checksums); else ``(state, what is wrong)`` with state "stale" or "corrupt".
    ``man``: the manifest rows of that shard (or the whole manifest)."""
    start, stop = man.plan.bounds(index)
    start, stop = start - man.offset, stop - man.offset
    try:
        with Store(path, check_schema=False) as st:
            a = st.attrs
            if a.get("entries_digest") != man.shard_digest(index):
                return "stale", "made from other inputs (the manifest changed since)"
            if settings_digest is not None and a.get("settings_digest") != settings_digest:
                return "stale", "made with other featurizer settings or another model"
            ids = st.ids + st.failure_ids()
            problem = st.problem() if verify else None
    except (StoreError, OSError, KeyError, RuntimeError) as exc:
        return "corrupt", _unreadable(exc)
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


@dataclass(frozen=True)
class ShardState:
    index: int
    # "complete", "partial" (blocks checkpointed), "missing", "stale" (made from other inputs or settings),
    # "corrupt" (unreadable, or its content fails its checksums: featurize it again)
    state: str
    detail: str = ""


def manifest_by_shard(store: str | Path, plan: ShardPlan, rows: int = 65536) -> Iterator[tuple[int, Manifest]]:
    """``(index, manifest rows that include shard index's)`` for every shard, reading the manifest in slices of
    about ``rows`` rows (its chunk size): memory stays bounded, and each compressed chunk is read once, not once
    per shard."""
    first = 0
    while first < plan.num_shards:
        start = plan.bounds(first)[0]
        last = first
        while last + 1 < plan.num_shards and plan.bounds(last + 1)[1] - start <= rows:
            last += 1
        man = read_manifest(store, start, plan.bounds(last)[1])
        for i in range(first, last + 1):
            yield i, man
        first = last + 1


def shard_states(store: str | Path, settings_digest: str | None = None, verify: bool = True) -> list[ShardState]:
    """The state of every shard of ``store`` (reads the manifest one slice at a time). With ``verify`` (the
    default) every part file is read in full and checked against its checksums, so "complete" means that
    ``gapseek merge`` will accept it."""
    plan = read_plan(store)
    out = []
    for i, man in manifest_by_shard(store, plan):
        final = shard_path(store, i)
        if final.exists():
            bad = check_part(final, man, i, settings_digest, verify)
            out.append(ShardState(i, "complete") if bad is None else ShardState(i, *bad))
        elif partial_dir(store, i).is_dir():
            nb = len(list(partial_dir(store, i).glob("block-*.h5")))
            out.append(ShardState(i, "partial", f"{nb} checkpointed block(s)"))
        else:
            out.append(ShardState(i, "missing"))
    return out


def featurize_sbatch() -> str:
    """The featurize.sbatch that hints name, as a path that works from any directory: the one in
    ``$GAPSEEK_SLURM_DIR``, else the source checkout's (an editable install), else ``slurm/featurize.sbatch``."""
    for d in (config.slurm_dir(), Path(__file__).resolve().parents[3] / "slurm"):
        if d and (Path(d) / "featurize.sbatch").is_file():
            return shlex.quote(str((Path(d) / "featurize.sbatch").resolve()))
    return "slurm/featurize.sbatch"


def rerun_hint(store: str | Path, indices: list[int]) -> str:
    listed = ",".join(str(i) for i in indices)
    where = shlex.quote(str(Path(store).resolve()))
    return (f"rerun them with `gapseek featurize {where} --shard I` for I in {listed}, or "
            f"`sbatch --array={listed} {featurize_sbatch()} {where}`")
