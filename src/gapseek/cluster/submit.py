"""Thin submitit layer: the shards of an indexed store as a Slurm array (``map_array``), or as local processes.

The executor is chosen explicitly (``AutoExecutor(cluster="slurm" | "local")``): submitit's automatic choice
picks Slurm whenever ``srun`` is on PATH, which is wrong on a login node used for a quick local run. Arrays
are split when the cluster's MaxArraySize is smaller than the number of shards to do. A task that hits its
time limit or is preempted is requeued by submitit (:class:`ShardTask` is checkpointable) and resumes from
its shard's checkpointed blocks. Only shards that are not complete yet are submitted.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from gapseek.cluster.merge import MergeResult, merge_shards
from gapseek.cluster.parts import shard_states
from gapseek.cluster.plan import array_batches
from gapseek.cluster.shard import ShardResult, run_shard
from gapseek.errors import ConfigError, GapseekError
from gapseek.featurize import FeaturizeSettings

__all__ = ["ShardTask", "SubmitResult", "SubmitSettings", "cluster_max_array_size", "submit_shards"]

log = logging.getLogger(__name__)

DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize


@dataclass(frozen=True)
class SubmitSettings:
    """Resources per shard task. ``slurm_options``: extra ``KEY=VALUE`` sbatch options (e.g. ``account=abc``)."""

    executor: str = "local"
    partition: str | None = None
    time_min: int = 120
    cpus: int = 4
    gpus: int = 0
    mem_gb: int = 8
    parallel: int = 16
    max_array_size: int | None = None
    slurm_options: tuple[str, ...] = ()
    checkpoint_every: int = 2048

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}; got {self.executor!r}")
        for name, least in (("time_min", 1), ("cpus", 1), ("gpus", 0), ("mem_gb", 1), ("parallel", 1),
                            ("checkpoint_every", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{_OPTION[name]} must be a whole number >= {least}; got {value!r}")
        if self.max_array_size is not None and (not isinstance(self.max_array_size, int) or self.max_array_size < 1):
            raise ConfigError(f"--max-array-size must be a whole number >= 1; got {self.max_array_size!r}")
        for opt in self.slurm_options:
            key = opt.partition("=")[0].strip()
            if "=" not in opt or not key:
                raise ConfigError(f"--slurm-option takes KEY=VALUE; got {opt!r}")


EXECUTORS = ("local", "slurm")
_OPTION = {"time_min": "--time (minutes)", "cpus": "--cpus", "gpus": "--gpus", "mem_gb": "--mem-gb",
           "parallel": "--parallel", "checkpoint_every": "--checkpoint-every"}


@dataclass
class SubmitResult:
    """What :func:`submit_shards` did: the shards it submitted (none when every one was complete), as which
    arrays, where their logs are; with ``wait``, each finished shard's result and the merge."""

    store: str
    todo: list[int]
    arrays: list[str] = field(default_factory=list)
    logs: Path | None = None
    results: list[ShardResult] = field(default_factory=list)
    merge: MergeResult | None = None


def _task_featurize_settings(settings: FeaturizeSettings, sub: SubmitSettings) -> FeaturizeSettings:
    device = "cuda" if sub.gpus > 0 else settings.device
    return replace(settings, workers=max(settings.workers, sub.cpus), device=device)


try:  # submitit is a core dependency; keep import errors readable anyway
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover
    _Checkpointable = object  # type: ignore[misc,assignment]


class ShardTask(_Checkpointable):  # type: ignore[misc]
    """One shard, as a submitit callable. On timeout or preemption submitit calls ``checkpoint`` and requeues the
    same call, which resumes from the blocks the shard checkpointed."""

    def __init__(self, store: str, model: tuple[str, ...], settings: FeaturizeSettings,
                 checkpoint_every: int) -> None:
        """``model``: (checkpoint, atom_init, checkpoint sha256[, atom_init sha256]). Both files are pinned to the
        sha256 they have now, at submission (atom_init.json's is read here when not given), so every task loads
        exactly the model the submitting command checked."""
        from gapseek.fsutil import sha256_file

        if len(model) == 3:
            model = (*model, sha256_file(model[1]))
        self.store = store
        self.model = tuple(model)
        self.settings = settings
        self.checkpoint_every = checkpoint_every

    def __call__(self, index: int) -> ShardResult:
        from gapseek.model import load_model

        checkpoint, atom_init, sha, atom_init_sha = self.model
        lm = load_model(checkpoint, atom_init, expected_sha256=sha, expected_atom_init_sha256=atom_init_sha)
        return run_shard(self.store, index, lm, self.settings, self.checkpoint_every)


def cluster_max_array_size() -> int:
    """MaxArraySize from ``scontrol show config`` (Slurm's default when it cannot be read)."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return DEFAULT_MAX_ARRAY_SIZE
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, flags=re.MULTILINE)
    return int(m.group(1)) if m else DEFAULT_MAX_ARRAY_SIZE


def submit_shards(store: str | Path, sub: SubmitSettings, settings: FeaturizeSettings, model: tuple[str, ...],
                  wait: bool = True, on_submitted: Callable[[SubmitResult], None] | None = None,
                  on_result: Callable[[ShardResult], None] | None = None) -> SubmitResult:
    """Submit the store's unfinished shards (``on_submitted(result)`` once they are); with ``wait``, wait for them
    (``on_result(shard_result)`` as each ends) and merge. A failed task is a :class:`GapseekError` naming the
    shards and the logs (the others' results stand: a rerun submits only the unfinished shards)."""
    import submitit

    store = str(Path(store).resolve())
    todo = [s.index for s in shard_states(store) if s.state != "complete"]
    out = SubmitResult(store, todo)
    if todo:
        logs = Path(store) / "logs" / "submitit"
        # Slurm: a folder per job (submitit fills in %j). The local executor's controller creates its folder
        # as written, before any job id exists (a literal '%j' directory): its files go in one folder, each
        # named after its job id.
        folder = logs / "%j" if sub.executor == "slurm" else logs / "local"
        executor = submitit.AutoExecutor(folder=folder, cluster=sub.executor)
        params = dict(timeout_min=sub.time_min, cpus_per_task=sub.cpus, mem_gb=sub.mem_gb, name="gapseek-featurize")
        if sub.gpus:
            params["gpus_per_node"] = sub.gpus
        if sub.executor == "slurm":
            params["slurm_array_parallelism"] = sub.parallel
            if sub.partition:
                params["slurm_partition"] = sub.partition
            if sub.slurm_options:
                params["slurm_additional_parameters"] = dict(o.split("=", 1) for o in sub.slurm_options)
        executor.update_parameters(**params)
        limit = sub.max_array_size or (cluster_max_array_size() if sub.executor == "slurm" else len(todo))
        task = ShardTask(store, model, _task_featurize_settings(settings, sub), sub.checkpoint_every)
        jobs = []
        for batch in array_batches(todo, limit):
            jobs.extend(executor.map_array(task, batch))
        out.arrays = sorted({j.job_id.split("_")[0] for j in jobs})
        out.logs = logs
        log.info("%d shard(s) submitted in %d %s array(s) %s", len(todo), len(out.arrays), sub.executor,
                 ", ".join(out.arrays))
        if on_submitted:
            on_submitted(out)
        if not wait:
            return out
        failed = []
        for shard, job in zip(todo, jobs):
            try:
                res = job.result()
            except Exception as exc:  # submitit raises FailedJobError / UncompletedJobError with the log tail
                failed.append(shard)
                log.error("shard %d (job %s) failed: %s", shard, job.job_id, str(exc)[-2000:])
                continue
            out.results.append(res)
            if on_result:
                on_result(res)
        if failed:
            raise GapseekError(f"{len(failed)} shard task(s) failed: {failed}; logs in {logs}; "
                               f"rerun `gapseek submit {store} ...` to redo only the unfinished shards")
    elif on_submitted:
        on_submitted(out)
    out.merge = merge_shards(store, overwrite=True)
    return out
