"""Pure planning of shards and array jobs — no I/O, no scheduler; every launcher is a thin layer over this.

A shard is a contiguous range of manifest rows. Shard sizes are multiples of the featurizer's chunk size, so a
sharded run forms exactly the same model batches as one process over the whole manifest and produces the
same bits.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from gapseek.errors import ConfigError

__all__ = ["FILE_COST_ATOMS", "ShardPlan", "array_batches", "balance_by_cost", "parse_shard", "plan_shards",
           "shards_for_rank", "work_estimate"]


@dataclass(frozen=True)
class ShardPlan:
    """Contiguous shards over ``n_entries`` manifest rows: of ``shard_size`` rows each (the last may be shorter),
    or, for a plan balanced by work, starting at the rows ``starts`` (each a multiple of ``chunk_size``;
    ``shard_size`` is then the mean number of rows asked for)."""

    n_entries: int
    shard_size: int
    chunk_size: int = 256
    starts: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.n_entries < 0 or self.shard_size < 1 or self.chunk_size < 1:
            raise ConfigError(f"invalid shard plan {self}")
        if self.shard_size % self.chunk_size:
            raise ConfigError(f"shard_size {self.shard_size} must be a multiple of chunk_size {self.chunk_size}")
        if self.starts is not None:
            s = self.starts
            if (not s or s[0] != 0 or any(b <= a for a, b in zip(s, s[1:])) or any(x % self.chunk_size for x in s)
                    or (self.n_entries and s[-1] >= self.n_entries)):
                raise ConfigError("invalid shard starts: they must begin at 0, increase, lie inside the manifest "
                                  f"and be multiples of the chunk size {self.chunk_size}")

    @property
    def balanced(self) -> bool:
        return self.starts is not None

    @property
    def num_shards(self) -> int:
        if self.starts is not None:
            return len(self.starts)
        return max(1, math.ceil(self.n_entries / self.shard_size))

    def bounds(self, index: int) -> tuple[int, int]:
        """``(start, stop)`` manifest rows of shard ``index``."""
        if not 0 <= index < self.num_shards:
            raise ConfigError(f"shard {index} does not exist: this store has shards 0..{self.num_shards - 1}")
        if self.starts is not None:
            stop = self.starts[index + 1] if index + 1 < len(self.starts) else self.n_entries
            return self.starts[index], stop
        start = index * self.shard_size
        return start, min(start + self.shard_size, self.n_entries)

    def as_attrs(self) -> dict[str, int]:
        """The plan's scalars (a balanced plan's ``starts`` are kept apart: :meth:`from_attrs` takes them back)."""
        return {"n_entries": self.n_entries, "shard_size": self.shard_size, "chunk_size": self.chunk_size,
                "num_shards": self.num_shards}

    @classmethod
    def from_attrs(cls, attrs, starts=None) -> ShardPlan:
        return cls(int(attrs["n_entries"]), int(attrs["shard_size"]), int(attrs["chunk_size"]),
                   None if starts is None else tuple(int(x) for x in starts))


# The work of featurizing one file, in atoms: a fixed cost per file (reading, parsing, a failure) worth about
# FILE_COST_ATOMS atoms of graph building and model, plus one per atom of the cell. Fitted on the 40 shard
# tasks of benchmarks/balance_spread.py (a 20,000-file COD-like pool): a file costs 7.3 and 9.9 atoms in two
# runs (R^2 0.92, 0.90); see the README's scale section.
FILE_COST_ATOMS = 8


def work_estimate(atoms_est):
    """Estimated work per file (arbitrary units) from its estimated atoms in the cell (numpy array)."""
    return FILE_COST_ATOMS + atoms_est


def plan_shards(n_entries: int, shard_size: int = 4096, num_shards: int | None = None,
                chunk_size: int = 256, costs=None) -> ShardPlan:
    """A plan of shards of ``shard_size`` rows, or of about ``num_shards`` equal shards; sizes are rounded up to
    a multiple of ``chunk_size``. With ``costs`` (one estimated cost per row, ``n_entries``), the same number of
    shards, cut at chunk boundaries so that each holds about the same total cost (:func:`balance_by_cost`)."""
    if num_shards is not None:
        if num_shards < 1:
            raise ConfigError(f"num_shards must be >= 1; got {num_shards}")
        shard_size = max(1, math.ceil(n_entries / num_shards))
    if shard_size < 1:
        raise ConfigError(f"shard_size must be >= 1; got {shard_size}")
    shard_size = math.ceil(shard_size / chunk_size) * chunk_size
    plan = ShardPlan(n_entries, shard_size, chunk_size)
    if costs is None or plan.num_shards == 1:
        return plan
    if len(costs) != n_entries:
        raise ConfigError(f"{len(costs)} costs for {n_entries} entries")
    return ShardPlan(n_entries, shard_size, chunk_size, balance_by_cost(costs, plan.num_shards, chunk_size))


def balance_by_cost(costs, num_shards: int, chunk_size: int) -> tuple[int, ...]:
    """Start rows of ``num_shards`` contiguous shards of whole chunks (``chunk_size`` rows) whose total ``costs``
    are as even as chunks allow: shard k ends at the chunk boundary nearest to k/num_shards of the total cost,
    every shard keeping at least one chunk (so fewer shards when there are fewer chunks)."""
    n = len(costs)
    n_chunks = max(1, math.ceil(n / chunk_size))
    per_chunk = [float(sum(costs[c * chunk_size:(c + 1) * chunk_size])) for c in range(n_chunks)]
    num_shards = min(num_shards, n_chunks)
    cum = [0.0]
    for c in per_chunk:
        cum.append(cum[-1] + c)
    total = cum[-1]
    starts = [0]
    j = 0  # chunk index where the current shard starts
    for k in range(1, num_shards):
        goal = total * k / num_shards
        lo, hi = j + 1, n_chunks - (num_shards - k)  # leave >= 1 chunk to this shard and to each one after
        c = bisect.bisect_left(cum, goal, lo, hi + 1)  # first boundary at or past the goal, or hi + 1
        # c - 1 or c: lo <= hi holds (num_shards <= n_chunks), so one of them is always in [lo, hi]
        cut = min((x for x in (c - 1, c) if lo <= x <= hi), key=lambda x: (abs(cum[x] - goal), x))
        starts.append(cut * chunk_size)
        j = cut
    return tuple(starts)


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
