"""The original CGCNN code's graph construction (cgcnn/data.py at f42ab23), step by step, from a pymatgen
``Structure``: the baseline of benchmarks/featurize_throughput.py and the reference of the fidelity and graph
tests. Not part of gapseek: it is slow (pure Python) and pymatgen's neighbour order breaks its ties.
"""

from __future__ import annotations

import numpy as np

from gapseek.graph import CrystalGraph, GraphSettings

__all__ = ["build_graph_original"]


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
