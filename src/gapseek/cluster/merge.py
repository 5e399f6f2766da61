"""The verified merge of a sharded store's part files into ``STORE/features.h5``.

:func:`merge_shards` refuses to finish unless every manifest entry appears exactly once, as features or as a
failure, and every part file passes its checksums as it is copied; a missing, corrupt or stale shard is named
with the command that redoes it. The merged file carries the featurizer's settings of its parts and none of
their per-shard attributes (:class:`gapseek.store.ShardInfo`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from gapseek.cluster.parts import check_part, manifest_by_shard, rerun_hint, shard_path
from gapseek.errors import CorruptStoreError, StoreError
from gapseek.store import Store, StoreWriter, file_problem
from gapseek.store.manifest import MANIFEST_FILE, read_plan
from gapseek.store.schema import CONTENT_ATTR, COUNT_ATTRS, SHARD_ATTRS

__all__ = ["MergeResult", "STORE_FILE_KEPT", "merge_shards"]

STORE_FILE_KEPT = "features.h5 was not written (an earlier one is unchanged)"


@dataclass(frozen=True)
class MergeResult:
    """The merged store file and what it holds: every manifest entry once, as features or as a failure."""

    path: Path
    n_features: int
    n_failures: int
    seconds: float


def merge_shards(store: str | Path, overwrite: bool = False, block: int = 65536) -> MergeResult:
    """Verify every shard and write ``STORE/features.h5``; raise :class:`StoreError` naming bad shards.

    Each part file is read once: its rows are copied and checked against their checksums as they go. When one
    fails, the merge is abandoned (``features.h5`` is not written; an earlier one stays as it was) and the
    remaining shards are only checked, so the error names every shard to redo."""
    t0 = time.perf_counter()
    store = Path(store)
    plan = read_plan(store)
    states = []
    digests = set()
    attrs: dict = {}
    for i, man in manifest_by_shard(store, plan):  # a slice of the manifest in memory at a time
        final = shard_path(store, i)
        if not final.exists():
            states.append((i, "missing"))
            continue
        bad = check_part(final, man, i, None, verify=False)
        if bad:
            states.append((i, bad[1]))
            continue
        with Store(final, check_schema=False) as part:
            digests.add(part.attrs.get("settings_digest"))
            if not attrs:  # the settings every part shares; nothing of one shard's own
                attrs = {k: v for k, v in part.attrs.items()
                         if k not in SHARD_ATTRS and k not in COUNT_ATTRS and k != CONTENT_ATTR}
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
        path = w.commit()
        return MergeResult(path, w.n_ok, w.n_failed, time.perf_counter() - t0)


def _merge_error(store: Path, num_shards: int, states: list[tuple[int, str]]) -> StoreError:
    lines = "\n".join(f"  shard {i} ({shard_path(store, i).name}): {why}" for i, why in states)
    return StoreError(f"cannot merge {store}: {len(states)} of {num_shards} shard(s) are not complete; "
                      f"{STORE_FILE_KEPT}:\n{lines}\n{rerun_hint(store, [i for i, _ in states])}")
