"""Thin MPI layer: ranks share the shards of an indexed store (``srun --mpi=pmi2 -n R gapseek featurize STORE
--mpi``, or ``mpiexec -n R ...``). Rank r takes shards r, r+R, ...; rank 0 gathers the results and reports;
with ``merge`` rank 0 merges after every rank has finished. Requires mpi4py (and an MPI library, e.g. the
``mpich`` wheel: ``pip install 'gapseek[mpich]'``)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from gapseek.errors import ConfigError
from gapseek.featurize import FeaturizeSettings
from gapseek.manifest import read_plan
from gapseek.model import LoadedModel
from gapseek.sharding import ShardResult, merge_shards, run_shard
from gapseek.shards import shards_for_rank

__all__ = ["run_mpi"]

log = logging.getLogger(__name__)


def _comm():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ConfigError(f"--mpi needs mpi4py and an MPI library: pip install 'gapseek[mpich]' ({exc})") from None
    return MPI.COMM_WORLD


def run_mpi(
    store: str,
    model: LoadedModel,
    settings: FeaturizeSettings,
    checkpoint_every: int,
    merge: bool = False,
    report: Callable[[ShardResult], None] | None = None,
) -> int:
    comm = _comm()
    rank, size = comm.Get_rank(), comm.Get_size()
    plan = read_plan(store)
    results, error = [], None
    for i in shards_for_rank(rank, size, plan.num_shards):
        try:
            results.append(run_shard(store, i, model, settings, checkpoint_every))
        except Exception as exc:  # report it at rank 0 instead of hanging the others in the gather
            error = f"rank {rank}, shard {i}: {type(exc).__name__}: {exc}"
            log.error("%s", error)
            break
    gathered = comm.gather((results, error), root=0)
    if rank != 0:
        return 0 if error is None else 1
    errors = [e for _, e in gathered if e]
    for res, _ in gathered:
        for r in sorted(res, key=lambda r: r.index):
            if report:
                report(r)
    print(f"gapseek featurize --mpi: {size} rank(s), {plan.num_shards} shard(s), "
          f"{sum(len(r) for r, _ in gathered)} processed, {len(errors)} error(s)", flush=True)
    for e in errors:
        print(f"  error: {e}", flush=True)
    if errors:
        return 1
    if merge:
        print(f"gapseek merge: -> {merge_shards(store, overwrite=True)}", flush=True)
    return 0
