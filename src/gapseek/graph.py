"""Stage 2 — :class:`~gapseek.cif.Crystal` → :class:`CrystalGraph` (the CGCNN neighbour graph).

Conventions of the pretrained model (Xie & Grossman 2018, code at f42ab23): every atom keeps its 12 nearest
neighbours within 8 Å, sorted by distance; an atom with fewer is padded with neighbour index 0 at distance
``radius + 1``; distances are expanded on 41 Gaussians (centres 0, 0.2, ..., 8 Å, width 0.2).

The neighbour search is vesin's cell list (C++), not pymatgen's ``get_all_neighbors``; distances agree to
~1e-15 Å. Where the 12th and 13th neighbours of an atom tie exactly and are different atoms, which one is
kept is a convention: the original keeps pymatgen's internal order, we keep the lower atom index. Such atoms
are counted in :attr:`CrystalGraph.n_tied` so a user can see which crystals depend on that convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gapseek.cif import Crystal
from gapseek.errors import ConfigError, CrystalError

__all__ = ["CrystalGraph", "GraphSettings", "build_graph", "gaussian_expand"]

TIE_TOLERANCE = 1e-8  # Å; distances closer than this are the same distance


@dataclass(frozen=True)
class GraphSettings:
    """Graph construction; the defaults are the ones the pretrained model was trained with."""

    radius: float = 8.0
    max_neighbors: int = 12
    dmin: float = 0.0
    step: float = 0.2

    def __post_init__(self) -> None:
        if not (self.radius > 0 and self.step > 0 and self.max_neighbors >= 1 and self.dmin < self.radius):
            raise ConfigError(f"invalid graph settings: {self}")

    @property
    def centres(self) -> np.ndarray:
        """Gaussian centres, exactly as the original builds them (``np.arange(dmin, radius + step, step)``)."""
        return np.arange(self.dmin, self.radius + self.step, self.step)

    def as_attrs(self) -> dict[str, float | int]:
        return {
            "graph_radius": self.radius,
            "graph_max_neighbors": self.max_neighbors,
            "graph_dmin": self.dmin,
            "graph_step": self.step,
        }


@dataclass
class CrystalGraph:
    """Neighbour graph of one crystal.

    Attributes:
        numbers: ``n`` atomic numbers.
        nbr_idx: ``n x M`` neighbour indices (int32).
        nbr_dist: ``n x M`` neighbour distances in Å (float64; ``radius + 1`` where padded).
        n_padded: atoms that had fewer than M neighbours within the radius.
        n_tied: atoms whose M-th and (M+1)-th neighbours tie in distance but are different atoms.
    """

    numbers: np.ndarray
    nbr_idx: np.ndarray
    nbr_dist: np.ndarray
    n_padded: int = 0
    n_tied: int = 0

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])


def build_graph(crystal: Crystal, settings: GraphSettings = GraphSettings()) -> CrystalGraph:
    """Build the M-nearest-neighbour graph of a periodic crystal."""
    import vesin

    n = crystal.n_atoms
    m = settings.max_neighbors
    points = np.ascontiguousarray(crystal.cart, dtype=np.float64)
    box = np.ascontiguousarray(crystal.lattice, dtype=np.float64)
    try:
        nl = vesin.NeighborList(cutoff=float(settings.radius), full_list=True)
        i, j, d = nl.compute(points=points, box=box, periodic=True, quantities="ijd")
    except Exception as exc:  # vesin raises RuntimeError/ValueError on degenerate cells
        raise CrystalError("invalid-cell", f"neighbour search failed: {exc}") from None
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    d = np.asarray(d, dtype=np.float64)
    if d.size and d.min() < 0.1:
        raise CrystalError("overlapping-atoms", f"two atoms {d.min():.3g} Å apart")

    # one float key, atom index times a step larger than any distance (< radius), plus the distance, sorts
    # ~3x faster than a lexsort; equal distances keep vesin's order, which is deterministic
    order = np.argsort(i * (2.0 * settings.radius + 16.0) + d, kind="stable")
    i, j, d = i[order], j[order], d[order]
    counts = np.bincount(i, minlength=n)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(i.size) - np.repeat(starts, counts)
    keep = rank < m

    nbr_idx = np.zeros((n, m), dtype=np.int32)
    nbr_dist = np.full((n, m), settings.radius + 1.0)
    nbr_idx[i[keep], rank[keep]] = j[keep]
    nbr_dist[i[keep], rank[keep]] = d[keep]
    n_padded = int(np.count_nonzero(counts < m))

    n_tied = 0
    over = np.nonzero(counts > m)[0]
    if over.size:
        last = starts[over] + m - 1
        tie = np.abs(d[last + 1] - d[last]) <= TIE_TOLERANCE
        for atom, pos in zip(over[tie], last[tie]):
            lo, hi = starts[atom], starts[atom] + counts[atom]
            group = (np.abs(d[lo:hi] - d[pos]) <= TIE_TOLERANCE)
            if np.unique(j[lo:hi][group]).size > 1:
                n_tied += 1
    return CrystalGraph(
        numbers=crystal.numbers.astype(np.int64),
        nbr_idx=nbr_idx,
        nbr_dist=nbr_dist,
        n_padded=n_padded,
        n_tied=n_tied,
    )


def gaussian_expand(distances: np.ndarray, settings: GraphSettings = GraphSettings()) -> np.ndarray:
    """``(...) -> (..., K)`` Gaussian expansion in float64, as the original computes it."""
    centres = settings.centres
    return np.exp(-((distances[..., np.newaxis] - centres) ** 2) / settings.step**2)


def build_graph_original(structure, settings: GraphSettings = GraphSettings()) -> CrystalGraph:
    """The original CGCNN graph construction, step by step, from a pymatgen ``Structure``.

    ``get_all_neighbors`` + a stable sort by distance + the first M (pymatgen's order breaks ties). Slow
    (pure Python); used as the baseline in benchmarks and to show that tie-breaking explains every
    difference from the reference outputs.
    """
    m = settings.max_neighbors
    all_nbrs = structure.get_all_neighbors(settings.radius, include_index=True)
    all_nbrs = [sorted(nbrs, key=lambda x: x[1]) for nbrs in all_nbrs]
    idx, dist = [], []
    n_padded = 0
    for nbr in all_nbrs:
        if len(nbr) < m:
            n_padded += 1
            idx.append([x[2] for x in nbr] + [0] * (m - len(nbr)))
            dist.append([x[1] for x in nbr] + [settings.radius + 1.0] * (m - len(nbr)))
        else:
            idx.append([x[2] for x in nbr[:m]])
            dist.append([x[1] for x in nbr[:m]])
    return CrystalGraph(
        numbers=np.array([site.specie.Z for site in structure], dtype=np.int64),
        nbr_idx=np.array(idx, dtype=np.int32).reshape(len(structure), m),
        nbr_dist=np.array(dist, dtype=np.float64).reshape(len(structure), m),
        n_padded=n_padded,
    )
