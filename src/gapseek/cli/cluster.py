"""``gapseek index``, ``featurize STORE`` (shards, MPI), ``merge``, ``status`` and ``submit``: parse, call the
library (:mod:`gapseek.cluster`), print."""

from __future__ import annotations

import argparse

from gapseek import config
from gapseek.cli.options import load, settings
from gapseek.cluster.merge import MergeResult, merge_shards
from gapseek.cluster.parts import rerun_hint, shard_states
from gapseek.cluster.plan import array_batches, parse_shard, work_estimate
from gapseek.cluster.shard import ShardResult, run_shard
from gapseek.cluster.submit import SubmitResult, SubmitSettings, cluster_max_array_size, submit_shards
from gapseek.ingest.source import describe_provenance
from gapseek.store.manifest import index_store, input_tops, read_plan
from gapseek.structure.select import ElementFilter


def _merged(res: MergeResult, verified: bool = False) -> None:
    """The one line that says a merge happened."""
    if verified:
        print(f"gapseek merge: {res.n_features} features + {res.n_failures} failures = every manifest entry once, "
              f"in {res.seconds:.1f} s -> {res.path}", flush=True)
    else:
        print(f"gapseek merge: -> {res.path}", flush=True)


def _shard_line(res: ShardResult) -> None:
    if res.status == "skipped":
        print(f"shard {res.index}: complete already; skipped", flush=True)
    else:
        rate = res.n_entries / res.seconds if res.seconds > 0 else float("inf")
        extra = f" (resumed: {res.blocks_reused} checkpointed block(s) kept)" if res.blocks_reused else ""
        print(f"shard {res.index}: {res.n_ok} ok / {res.n_failed} failed of {res.n_entries} in "
              f"{res.seconds:.1f} s ({rate:.1f} crystals/s, peak RSS {res.peak_rss_mb:.0f} MB){extra}", flush=True)


def run_shards(store: str, args: argparse.Namespace) -> int:
    """``gapseek featurize STORE``: the shard ``--shard`` names, this array task's, every shard, or (``--mpi``)
    this rank's share; with ``--merge``, the merge after."""
    plan = read_plan(store)
    featurizer = settings(args)
    if args.mpi:
        from gapseek.cluster.mpi import run_mpi  # mpi4py initialises MPI when imported: only under --mpi

        res = run_mpi(store, load(args), featurizer, args.checkpoint_every, merge=args.merge, on_result=_shard_line)
        if res.rank != 0:
            return 0 if res.ok else 1
        print(f"gapseek featurize --mpi: {res.size} rank(s), {res.num_shards} shard(s), {len(res.results)} processed, "
              f"{len(res.errors)} error(s)", flush=True)
        for e in res.errors:
            print(f"  error: {e}", flush=True)
        if not res.ok:
            return 1
        if res.merge is not None:
            _merged(res.merge)
        return 0
    if args.shard is not None:
        shards = [parse_shard(args.shard, plan.num_shards)]
    elif (env := config.array_task_shard()) is not None:
        shards = [parse_shard(str(env), plan.num_shards)]
    else:
        shards = list(range(plan.num_shards))
    lm = load(args)
    for i in shards:
        _shard_line(run_shard(store, i, lm, featurizer, args.checkpoint_every))
    if args.merge:
        _merged(merge_shards(store, overwrite=True))
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    select = ElementFilter.parse(args.elements, args.exclude_elements, args.num_elements)
    res = index_store(args.roots, args.out, shard_size=args.shard_size, num_shards=args.shards,
                      chunk_size=args.chunk_size, threads=args.threads, balance=args.balance == "work",
                      pack=args.pack, overwrite=args.overwrite, select=select,
                      skip_cod_duplicates=args.skip_cod_duplicates)
    man, plan = res.manifest, res.manifest.plan
    rows = [b - a for a, b in (plan.bounds(i) for i in range(plan.num_shards))]
    how = "balanced by estimated work" if plan.balanced else "of equal row counts"
    print(f"gapseek index: {len(man)} inputs, {plan.num_shards} shard(s) {how} ({min(rows)}-{max(rows)} rows) "
          f"in {res.seconds:.1f} s -> {res.path}")
    if man.atoms_est is not None and plan.num_shards > 1:
        work = work_estimate(man.atoms_est)
        per = [float(work[a:b].sum()) for a, b in (plan.bounds(i) for i in range(plan.num_shards))]
        print(f"  estimated work per shard: max/mean {max(per) / (sum(per) / len(per)):.2f}")
    if res.pack is not None:
        print(f"  inputs packed into {res.pack} ({res.pack.stat().st_size / 2**20:.1f} MiB); shard tasks read "
              f"it instead of the {len(man)} files")
    if res.duplicates:
        same = sum(1 for d in res.duplicates if d[4])
        print(f"  {len(res.duplicates)} file(s) share an id with another ({same} with identical content); kept as "
              f"ID~k, listed in {args.out}/duplicates.tsv")
    if res.filtered:
        how = select.describe() if select else "COD duplicates"
        print(f"  {len(res.filtered):,} file(s) left out by the filter ({how}), listed with the reason in "
              f"{args.out}/filtered.tsv")
    if res.cod_duplicates:
        kept = sum(1 for d in res.cod_duplicates if d[2])
        print(f"  {len(res.cod_duplicates):,} COD entr(ies) marked _cod_duplicate_entry ({kept:,} kept"
              + ("" if args.skip_cod_duplicates else "; --skip-cod-duplicates leaves them out")
              + f"), listed in {args.out}/cod-duplicates.tsv")
    if res.several:
        print(f"  {len(res.several):,} file(s) hold several structures (data blocks with atom sites): featurize "
              "records each as a failure 'several-structures'; split them to featurize every one")
    print(f"  {describe_provenance(res.provenance)}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    _merged(merge_shards(args.store, overwrite=args.overwrite), verified=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if args.num_shards:
        print(read_plan(args.store).num_shards)
        return 0
    if args.arrays:
        n = read_plan(args.store).num_shards
        for batch in array_batches(n, args.max_array_size or cluster_max_array_size()):
            print(batch[0], len(batch))
        return 0
    if args.input_dirs:
        print("\n".join(input_tops(args.store)))
        return 0
    states = shard_states(args.store)
    todo = [s.index for s in states if s.state != "complete"]
    if args.todo:
        print(",".join(map(str, todo)))
        return 0
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    print(f"{args.store}: {len(states)} shard(s): " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for s in states:
        if s.state != "complete":
            print(f"  shard {s.index}: {s.state}" + (f" - {s.detail}" if s.detail else ""))
    if todo:
        print(rerun_hint(args.store, todo))
        return 3  # some shard is not complete (see the help: 1 is an error, 2 a usage error)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    sub = SubmitSettings(
        executor=args.executor, partition=args.partition, time_min=args.time, cpus=args.cpus, gpus=args.gpus,
        mem_gb=args.mem_gb, parallel=args.parallel, max_array_size=args.max_array_size,
        slurm_options=tuple(args.slurm_option), checkpoint_every=args.checkpoint_every,
    )
    featurizer = settings(args)
    lm = load(args)  # fail early, here, on a missing or wrong model

    def submitted(res: SubmitResult) -> None:
        if not res.todo:
            print(f"gapseek submit: every shard of {res.store} is complete")
            return
        print(f"gapseek submit: {len(res.todo)} shard(s) in {len(res.arrays)} {sub.executor} array(s) "
              f"{', '.join(res.arrays)}; logs in {res.logs}", flush=True)
        if args.no_wait:
            print(f"then: gapseek merge {res.store}")

    def finished(res: ShardResult) -> None:
        print(f"shard {res.index}: {res.status}, {res.n_entries} entries in {res.seconds:.1f} s", flush=True)

    res = submit_shards(args.store, sub, featurizer, model=(str(lm.checkpoint_path), str(lm.atom_init_path),
                                                         lm.checkpoint_sha256),
                        wait=not args.no_wait, on_submitted=submitted, on_result=finished)
    if res.merge is not None:
        _merged(res.merge)
    return 0
