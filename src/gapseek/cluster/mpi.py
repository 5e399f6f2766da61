"""Thin MPI layer: ranks share the shards of an indexed store (``srun --mpi=pmi2 -n R gapseek featurize STORE
--mpi``, or ``mpiexec -n R ...``). Rank r takes shards r, r+R, ...; rank 0 gathers the results and reports;
with ``merge`` rank 0 merges after every rank has finished. Requires mpi4py (and an MPI library, e.g. the
``mpich`` wheel: ``pip install 'gapseek[mpich]'``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from gapseek.cluster.merge import MergeResult, merge_shards
from gapseek.cluster.plan import shards_for_rank
from gapseek.cluster.shard import ShardResult, run_shard
from gapseek.errors import ConfigError
from gapseek.featurize import FeaturizeSettings
from gapseek.model import LoadedModel
from gapseek.store.manifest import read_plan

__all__ = ["MPIResult", "run_mpi"]

log = logging.getLogger(__name__)


def _comm():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ConfigError(f"--mpi needs mpi4py and an MPI library: pip install 'gapseek[mpich]' ({exc})") from None
    return MPI.COMM_WORLD


@dataclass
class MPIResult:
    """One rank's view of an MPI run. On rank 0: every rank's shard results (by shard), every error, and the
    merge (with ``merge``); on the others, their own results and error only."""

    rank: int
    size: int
    num_shards: int
    results: list[ShardResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    merge: MergeResult | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def run_mpi(
    store: str,
    model: LoadedModel,
    settings: FeaturizeSettings,
    checkpoint_every: int,
    merge: bool = False,
    on_result: Callable[[ShardResult], None] | None = None,
) -> MPIResult:
    """This rank's shards (round robin); rank 0 gathers everyone's results and errors, and with ``merge`` merges
    when no rank failed. ``on_result`` is called on rank 0 for every shard result, in shard order per rank."""
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
        return MPIResult(rank, size, plan.num_shards, results, [] if error is None else [error])
    out = MPIResult(rank, size, plan.num_shards, errors=[e for _, e in gathered if e])
    for res, _ in gathered:
        for r in sorted(res, key=lambda r: r.index):
            out.results.append(r)
            if on_result:
                on_result(r)
    if merge and out.ok:
        out.merge = merge_shards(store, overwrite=True)
    return out
