"""Stage 2 — :class:`~gapseek.structure.Crystal` → :class:`CrystalGraph` (the CGCNN neighbour graph).

Conventions of the pretrained model (Xie & Grossman 2018, code at f42ab23): every atom keeps its 12 nearest
neighbours within 8 Å, sorted by distance; an atom with fewer is padded with neighbour index 0 at distance
``radius + 1``; distances are expanded on 41 Gaussians (centres 0, 0.2, ..., 8 Å, width 0.2).

The neighbour search is vesin's cell list (C++), not pymatgen's ``get_all_neighbors``; distances agree to
~1e-15 Å. Where the 12th and 13th neighbours of an atom tie exactly and are different atoms, which one is
kept is a convention: the original keeps pymatgen's internal order, we keep the lower atom index. Such atoms
are counted in :attr:`CrystalGraph.n_tied` so a user can see which crystals depend on that convention.

The search starts at a radius holding ~20 atoms at the crystal's density and widens to 8 Å only when an
atom needs it, which gives the same graph as a search at 8 Å at a fraction of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gapseek.errors import ConfigError, CrystalError, is_out_of_memory
from gapseek.structure.cif import Crystal

__all__ = ["TIE_TOLERANCE", "CrystalGraph", "GraphSettings", "build_graph", "check_cell", "gaussian_expand"]

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
        eq_class: ``n`` classes of equivalent atoms (:func:`equivalent_atoms`), or None if not computed.
    """

    numbers: np.ndarray
    nbr_idx: np.ndarray
    nbr_dist: np.ndarray
    n_padded: int = 0
    n_tied: int = 0
    eq_class: np.ndarray | None = None

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])


_FIRST_SEARCH_NEIGHBOURS = 20

MAX_CELL_LENGTH = 1.0e4  # Å; the largest unit cells known (virus crystals) are ~1,500 Å; vesin fails near 1e6
MIN_LATTICE_VECTOR = 0.5  # Å; the shortest translation in mp-gap-36k is 1.78 Å, in the COD set 2.46 Å
MAX_LOCAL_DENSITY = 2.0  # atoms per Å^3 in any ~3 Å box; mp-gap-36k reaches 0.28, COD organics 0.57
_DENSITY_BOX = 3.0  # Å


def _reduced_basis(lattice: np.ndarray, max_rounds: int = 200) -> np.ndarray | None:
    """A pairwise (greedy) reduced basis of the lattice, whose shortest vectors are the lattice's; None if the
    reduction does not settle (a degenerate cell)."""
    b = np.array(lattice, dtype=np.float64)
    for _ in range(max_rounds):
        changed = False
        for i in range(3):
            for j in range(3):
                nj = float(b[j] @ b[j])
                if i == j or nj == 0.0:
                    continue
                k = np.round(float(b[i] @ b[j]) / nj)
                if k and float((b[i] - k * b[j]) @ (b[i] - k * b[j])) < float(b[i] @ b[i]):
                    b[i] = b[i] - k * b[j]
                    changed = True
        if not changed:
            return b
    return None


_COMBOS = np.array([(x, y, z) for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1) if (x, y, z) > (0, 0, 0)],
                   dtype=np.float64)


_PAIR_BUDGET = 2.0e7  # below this bound on the neighbour pairs at 8 Å, no local density can make the search costly


def _dot(u, v) -> float:
    return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]


def _cross(u, v) -> tuple[float, float, float]:
    return (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])


def check_cell(crystal: Crystal, radius: float = GraphSettings.radius) -> None:
    """Reject, with the failure ``invalid-cell``, a cell whose geometry the neighbour search cannot handle or no
    crystal has: non-finite or over-long cell vectors (vesin's cell list dies of SIGFPE near 1e6 Å), a lattice
    with a translation shorter than 0.5 Å (a degenerate cell such as α = 179.9999°, whose search never ends),
    or atoms packed denser than 2 per Å^3 somewhere (the search at 8 Å would need tens of GB).

    Cheap for real crystals (~10 µs): the lattice is reduced only when its Gram-Schmidt lengths (which bound the
    shortest translation from below) allow a short one, and atoms are binned only when a bound on the pairs of
    the search (``n^2`` times the lattice points near a ball of ``radius``) exceeds 2e7.
    """
    lat = np.asarray(crystal.lattice, dtype=np.float64)
    if lat.shape != (3, 3) or not np.isfinite(lat).all() or not np.isfinite(crystal.frac).all():
        raise CrystalError("invalid-cell", "the cell or the coordinates are not finite numbers")
    a, b, c = (tuple(map(float, row)) for row in lat)
    lengths = [_dot(v, v) ** 0.5 for v in (a, b, c)]
    if max(lengths) > MAX_CELL_LENGTH:
        raise CrystalError("invalid-cell", f"cell vector of {max(lengths):.4g} Å; gapseek handles cells up to "
                           f"{MAX_CELL_LENGTH:g} Å")
    ab = _cross(a, b)
    area = _dot(ab, ab) ** 0.5
    volume = abs(_dot(ab, c))
    gram_schmidt = min(lengths[0], area / lengths[0] if lengths[0] else 0.0, volume / area if area else 0.0)
    if gram_schmidt < MIN_LATTICE_VECTOR:  # a short translation is possible: find the shortest one
        reduced = _reduced_basis(lat) if volume > 0 else None
        shortest = float(np.linalg.norm(_COMBOS @ reduced, axis=1).min()) if reduced is not None else 0.0
        if shortest < MIN_LATTICE_VECTOR:
            raise CrystalError("invalid-cell", f"degenerate cell: the lattice repeats every {shortest:.3g} Å "
                               f"(volume {volume:.3g} Å^3); no crystal repeats within {MIN_LATTICE_VECTOR} Å")
    n = crystal.n_atoms
    if n == 0 or n * n * (4.0 / 3.0 * np.pi) * (radius + sum(lengths)) ** 3 / volume <= _PAIR_BUDGET:
        return
    heights = volume / np.linalg.norm(np.cross(lat[[1, 2, 0]], lat[[2, 0, 1]]), axis=1)
    bins = np.maximum(1, np.floor(heights / _DENSITY_BOX)).astype(np.int64)
    cell = np.minimum((np.mod(crystal.frac, 1.0) * bins).astype(np.int64), bins - 1)
    flat = (cell[:, 0] * bins[1] + cell[:, 1]) * bins[2] + cell[:, 2]
    densest = int(np.bincount(flat).max())
    density = densest / (volume / float(np.prod(bins)))
    if density > MAX_LOCAL_DENSITY:
        raise CrystalError("invalid-cell", f"{densest} atoms packed in {volume / np.prod(bins):.3g} Å^3 "
                           f"({density:.3g} per Å^3; solids hold < {MAX_LOCAL_DENSITY:g})")


def _search_radius(crystal: Crystal, settings: GraphSettings) -> float:
    """A first search radius that holds ~20 neighbours per atom (plus 0.5 Å) at the crystal's mean density.

    Nearly every atom has its 13 nearest neighbours inside it (all but ~3 crystals in 1,000 of
    mp-gap-36k), and the neighbour list is ~5x shorter than at the full 8 Å; a crystal with an atom that
    does not is searched again at the full radius (:func:`build_graph`).
    """
    volume = abs(float(np.linalg.det(crystal.lattice)))
    if not np.isfinite(volume) or volume <= 0 or crystal.n_atoms == 0:
        return settings.radius
    r = (3.0 * _FIRST_SEARCH_NEIGHBOURS * volume / (4.0 * np.pi * crystal.n_atoms)) ** (1.0 / 3.0) + 0.5
    return min(settings.radius, r)



def _neighbours(crystal: Crystal, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import vesin

    points = np.ascontiguousarray(crystal.cart, dtype=np.float64)
    box = np.ascontiguousarray(crystal.lattice, dtype=np.float64)
    try:
        nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
        i, j, d = nl.compute(points=points, box=box, periodic=True, quantities="ijd")
    except Exception as exc:  # vesin raises RuntimeError/ValueError on degenerate cells
        if is_out_of_memory(exc):
            raise  # the featurizer names it `memory`
        raise CrystalError("invalid-cell", f"neighbour search failed: {exc}") from None
    return np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64), np.asarray(d, dtype=np.float64)


def build_graph(crystal: Crystal, settings: GraphSettings = GraphSettings()) -> CrystalGraph:
    """Build the M-nearest-neighbour graph of a periodic crystal.

    The search starts at a density-based radius (:func:`_search_radius`) and is redone at the full radius
    when any atom's (M+1)-th neighbour is not safely inside it, so the result is exactly that of a search at
    the full radius. Neighbours at equal distances are ordered by neighbour index.
    """
    check_cell(crystal, settings.radius)
    n = crystal.n_atoms
    m = settings.max_neighbors
    cutoff = _search_radius(crystal, settings)
    while True:
        i, j, d = _neighbours(crystal, cutoff)
        if d.size and d.min() < 0.1:
            raise CrystalError("overlapping-atoms", f"two atoms {d.min():.3g} Å apart")
        # sort by (atom, distance, neighbour): j first, then one stable float key (atom index times a step
        # larger than any distance, plus the distance), ~3x faster than a lexsort
        order = np.argsort(j, kind="stable")
        key = i[order] * (2.0 * settings.radius + 16.0) + d[order]
        by_key = np.argsort(key, kind="stable")
        order, key = order[by_key], key[by_key]
        i, j, d = i[order], j[order], d[order]
        counts = np.bincount(i, minlength=n)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        if cutoff >= settings.radius:
            break
        # complete when every atom's (M+1)-th neighbour lies inside the radius by more than the tie tolerance,
        # so every neighbour tied with the M-th one was found too
        if np.all(counts > m) and np.all(d[starts + m] < cutoff - 2 * TIE_TOLERANCE):
            break
        cutoff = settings.radius

    rank = np.arange(i.size) - np.repeat(starts, counts)
    keep = rank < m
    nbr_idx = np.zeros((n, m), dtype=np.int32)
    nbr_dist = np.full((n, m), settings.radius + 1.0)
    nbr_idx[i[keep], rank[keep]] = j[keep]
    nbr_dist[i[keep], rank[keep]] = d[keep]
    n_padded = int(np.count_nonzero(counts < m))

    # atoms whose M-th and (M+1)-th neighbours tie, and whose tie group (the neighbours within the tolerance of
    # the M-th distance, contiguous in the sorted list) holds more than one atom
    n_tied = 0
    over = np.nonzero(counts > m)[0]
    if over.size:
        last = starts[over] + m - 1
        tie = np.abs(d[last + 1] - d[last]) <= TIE_TOLERANCE
        if tie.any():
            atoms, pos = over[tie], last[tie]
            lo = np.searchsorted(key, key[pos] - TIE_TOLERANCE, side="left")
            hi = np.searchsorted(key, key[pos] + TIE_TOLERANCE, side="right")
            lo = np.maximum(lo, starts[atoms])
            hi = np.minimum(hi, starts[atoms] + counts[atoms])
            bounds = np.stack([lo, hi], axis=1).reshape(-1)
            jj = np.append(j, 0)  # reduceat needs indices < len
            jmin = np.minimum.reduceat(jj, bounds)[::2]
            jmax = np.maximum.reduceat(jj, bounds)[::2]
            n_tied = int(np.count_nonzero(jmin != jmax))
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
