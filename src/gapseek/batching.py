"""Pure planning of model batches, and collation of graphs into a :class:`~gapseek.model.Batch`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch

from gapseek.graph import CrystalGraph, GraphSettings, gaussian_expand
from gapseek.model import Batch

__all__ = ["batches_by_atoms", "collate"]

T = TypeVar("T")


def batches_by_atoms(items: Iterable[T], sizes: Iterable[int], max_atoms: int) -> Iterator[list[T]]:
    """Group items in order into batches whose total size stays <= ``max_atoms``.

    An item larger than ``max_atoms`` forms a batch of its own. Order is preserved.
    """
    batch: list[T] = []
    total = 0
    for item, size in zip(items, sizes):
        if batch and total + size > max_atoms:
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += size
    if batch:
        yield batch


def collate(graphs: Sequence[CrystalGraph], atom_init: np.ndarray, settings: GraphSettings) -> Batch:
    """Flatten graphs into one batch (``N`` atoms in all)."""
    counts = np.fromiter((g.n_atoms for g in graphs), dtype=np.int64, count=len(graphs))
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    numbers = np.concatenate([g.numbers for g in graphs])
    nbr_idx = np.concatenate([g.nbr_idx.astype(np.int64) + off for g, off in zip(graphs, offsets)])
    dist = np.concatenate([g.nbr_dist for g in graphs])
    bond = gaussian_expand(dist, settings).astype(np.float32)
    # Gaussian tails below float32's smallest normal number are denormals, which make the CPU's matrix
    # products ~2x slower; as zeros they change no output by more than 1e-38.
    bond[bond < np.finfo(np.float32).tiny] = 0.0
    return Batch(
        atom_fea=torch.from_numpy(atom_init[numbers]),
        bond_fea=torch.from_numpy(bond),
        nbr_idx=torch.from_numpy(nbr_idx),
        crystal_idx=torch.from_numpy(np.repeat(np.arange(len(graphs), dtype=np.int64), counts)),
        n_crystals=len(graphs),
    )
