"""Pure planning of shards and array jobs — no I/O, no scheduler; every launcher is a thin layer over this.

A shard is a contiguous range of manifest rows. Shard sizes are multiples of the featurizer's chunk size, so a
sharded run forms exactly the same model batches as one process over the whole manifest and produces the
same bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gapseek.errors import ConfigError

__all__ = ["ShardPlan", "array_batches", "parse_shard", "plan_shards", "shards_for_rank"]


@dataclass(frozen=True)
class ShardPlan:
    """``num_shards`` contiguous shards of ``shard_size`` rows (the last may be shorter) over ``n_entries``."""

    n_entries: int
    shard_size: int
    chunk_size: int = 256

    def __post_init__(self) -> None:
        if self.n_entries < 0 or self.shard_size < 1 or self.chunk_size < 1:
            raise ConfigError(f"invalid shard plan {self}")
        if self.shard_size % self.chunk_size:
            raise ConfigError(f"shard_size {self.shard_size} must be a multiple of chunk_size {self.chunk_size}")

    @property
    def num_shards(self) -> int:
        return max(1, math.ceil(self.n_entries / self.shard_size))

    def bounds(self, index: int) -> tuple[int, int]:
        """``(start, stop)`` manifest rows of shard ``index``."""
        if not 0 <= index < self.num_shards:
            raise ConfigError(f"shard {index} does not exist: this store has shards 0..{self.num_shards - 1}")
        start = index * self.shard_size
        return start, min(start + self.shard_size, self.n_entries)

    def as_attrs(self) -> dict[str, int]:
        return {"n_entries": self.n_entries, "shard_size": self.shard_size, "chunk_size": self.chunk_size,
                "num_shards": self.num_shards}

    @classmethod
    def from_attrs(cls, attrs) -> ShardPlan:
        return cls(int(attrs["n_entries"]), int(attrs["shard_size"]), int(attrs["chunk_size"]))


def plan_shards(n_entries: int, shard_size: int = 4096, num_shards: int | None = None,
                chunk_size: int = 256) -> ShardPlan:
    """A plan of shards of ``shard_size`` rows, or of about ``num_shards`` equal shards; sizes are rounded up to
    a multiple of ``chunk_size``."""
    if num_shards is not None:
        if num_shards < 1:
            raise ConfigError(f"num_shards must be >= 1; got {num_shards}")
        shard_size = max(1, math.ceil(n_entries / num_shards))
    if shard_size < 1:
        raise ConfigError(f"shard_size must be >= 1; got {shard_size}")
    shard_size = math.ceil(shard_size / chunk_size) * chunk_size
    return ShardPlan(n_entries, shard_size, chunk_size)


def parse_shard(text: str, num_shards: int) -> int:
    """``"I"`` or ``"I/N"`` -> I; N, when given, must be the store's shard count."""
    head, _, tail = text.partition("/")
    try:
        index = int(head)
        total = int(tail) if tail else num_shards
    except ValueError:
        raise ConfigError(f"--shard takes I or I/N (e.g. 3/16); got {text!r}") from None
    if total != num_shards:
        raise ConfigError(f"--shard {text}: this store is planned as {num_shards} shards, not {total} "
                          "(re-run `gapseek index --shards N` to change the plan)")
    if not 0 <= index < num_shards:
        raise ConfigError(f"--shard {text}: shards are numbered 0..{num_shards - 1}")
    return index


def shards_for_rank(rank: int, size: int, num_shards: int) -> list[int]:
    """Shards of MPI rank ``rank`` of ``size``: round robin, so ranks finish at about the same time."""
    if size < 1 or not 0 <= rank < size:
        raise ConfigError(f"invalid rank {rank} of {size}")
    return list(range(rank, num_shards, size))


def array_batches(indices: list[int] | int, max_array_size: int) -> list[list[int]]:
    """Split shard indices into Slurm arrays no longer than ``max_array_size`` (a cluster's MaxArraySize also
    caps the largest task id, so each batch is submitted with task ids 0..len-1 and an offset)."""
    if isinstance(indices, int):
        indices = list(range(indices))
    if max_array_size < 1:
        raise ConfigError(f"max_array_size must be >= 1; got {max_array_size}")
    return [indices[k:k + max_array_size] for k in range(0, len(indices), max_array_size)]
