"""Classes of equivalent atoms in a crystal graph: atoms every CGCNN layer maps to the same vector, so the model
runs once per class (``--no-reduce`` turns this off)."""

from __future__ import annotations

import numpy as np

from gapseek.graph.neighbours import CrystalGraph

__all__ = ["atom_classes", "equivalent_atoms"]


def atom_classes(graph: CrystalGraph) -> np.ndarray:
    """The graph's classes of equivalent atoms (:func:`equivalent_atoms`), computed once and kept on it."""
    if graph.eq_class is None:
        graph.eq_class = equivalent_atoms(graph)
    return graph.eq_class


# fixed odd multipliers for hashing rows of integers (wrap-around arithmetic modulo 2**64)
_ROW_MIX = np.random.default_rng(20181).integers(1, 2**63 - 1, size=256, dtype=np.uint64) | np.uint64(1)
DISTANCE_QUANTUM = 1e-8  # Å; neighbour distances are compared on this grid when grouping equivalent atoms


def _partition_rows(rows: np.ndarray) -> tuple[np.ndarray, int]:
    """``(labels, k)``: equal rows of an ``n x c`` int64 array share one of ``k`` labels."""
    if rows.shape[1] <= _ROW_MIX.size:
        with np.errstate(over="ignore"):
            h = (rows.view(np.uint64) * _ROW_MIX[: rows.shape[1]]).sum(axis=1, dtype=np.uint64)
        _, first, inv = np.unique(h, return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
        if np.array_equal(rows, rows[first[inv]]):  # no hash collision: the labels are exact
            return inv, first.size
    _, inv = np.unique(rows, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    return inv, int(inv.max()) + 1


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0, 1, ... in order of first appearance (the representative is the lowest index)."""
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    order = np.empty(first.size, dtype=np.int64)
    order[np.argsort(first, kind="stable")] = np.arange(first.size)
    return order[inv.reshape(-1)]


def equivalent_atoms(graph: CrystalGraph) -> np.ndarray:
    """``n`` class labels of atoms that every CGCNN layer maps to the same vector.

    Colour refinement (1-dimensional Weisfeiler-Lehman) on the neighbour graph: start from the elements, and
    split classes until every atom of a class has the same multiset of (neighbour class, distance) pairs.
    Atoms of a class then get identical vectors from the embedding and from every convolution (a sum over
    neighbours), so the model needs to run on one representative per class (for symmetric cells, ~40% of
    the atoms of a typical Materials Project cell). Distances are compared on a 1e-8 Å grid; labels are
    numbered by first appearance, so the representative of a class is its lowest-index atom.
    """
    n = graph.nbr_idx.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    dq = np.rint(graph.nbr_dist / DISTANCE_QUANTUM).astype(np.int64)
    nbr = graph.nbr_idx.astype(np.int64)
    color = graph.numbers.astype(np.int64)  # element first; later, class labels < n
    k = int(np.count_nonzero(np.bincount(color)))
    base = max(n, int(color.max())) + 1
    while True:
        key = dq * base + color[nbr]
        key.sort(axis=1)
        new, k_new = _partition_rows(np.concatenate([color[:, None], key], axis=1))
        if k_new == k:  # stable: the partition is equitable
            return _relabel(new)
        color, k = new, k_new
