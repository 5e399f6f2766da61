"""Stage 2 — the graph: a crystal's CGCNN neighbour graph (:mod:`~gapseek.graph.neighbours`) and its classes of
equivalent atoms (:mod:`~gapseek.graph.equivalent`)."""

from gapseek.graph.equivalent import atom_classes, equivalent_atoms
from gapseek.graph.neighbours import (
           TIE_TOLERANCE,
           CrystalGraph,
           GraphSettings,
           build_graph,
           check_cell,
           gaussian_expand,
)

__all__ = ["TIE_TOLERANCE", "CrystalGraph", "GraphSettings", "atom_classes", "build_graph", "check_cell",
           "equivalent_atoms", "gaussian_expand"]
