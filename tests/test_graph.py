"""Neighbour graphs: vesin-based construction against the original pymatgen procedure."""

from __future__ import annotations

import random

import numpy as np
import pytest

from conftest import EXAMPLES, MP_DIR, need, write_cif
from gapseek.batching import batches_by_atoms
from gapseek.cif import read_crystal
from gapseek.graph import GraphSettings, build_graph, build_graph_original, gaussian_expand


def _structure(path):
    from pymatgen.core import Structure

    return Structure.from_file(path)


def test_neighbour_distances_match_pymatgen_on_mp_sample():
    files = random.Random(3).sample(sorted(need(MP_DIR / "cifs").glob("*.cif")), 120)
    for f in files:
        ours = build_graph(read_crystal(f))
        orig = build_graph_original(_structure(f))
        np.testing.assert_allclose(ours.nbr_dist, orig.nbr_dist, atol=1e-9, err_msg=f.name)
        if ours.n_tied == 0:  # without ties the chosen neighbours are the same atoms
            assert np.array_equal(np.sort(ours.nbr_idx, axis=1), np.sort(orig.nbr_idx, axis=1)), f.name


def test_sparse_cell_is_padded_like_the_original(tmp_path):
    f = write_cif(tmp_path / "sparse.cif", "P 1", (9.0, 9.0, 9.0, 90, 90, 90),
                  [("Ar1", "Ar", 0, 0, 0, 1), ("Ar2", "Ar", 0.5, 0.5, 0.5, 1)])
    g = build_graph(read_crystal(f))
    orig = build_graph_original(_structure(f))
    assert g.n_padded == orig.n_padded == 2
    np.testing.assert_array_equal(g.nbr_dist == 9.0, orig.nbr_dist == 9.0)
    assert (g.nbr_idx[g.nbr_dist == 9.0] == 0).all()


def test_ties_between_different_atoms_are_counted():
    # rocksalt conventional cell: 6 Cl then 12 Na at a/sqrt(2) -> the 12th and 13th tie, over 3 other Na sites
    g = build_graph(read_crystal(EXAMPLES / "NaCl.cif"))
    assert g.n_tied == 8
    # sparse 2-atom cell: no atom has more than 12 neighbours, so nothing can tie
    assert build_graph(read_crystal(EXAMPLES / "ZnO.cif")).n_padded == 0


def test_gaussian_expansion_has_41_centres_and_peaks_on_them():
    s = GraphSettings()
    assert s.centres.shape == (41,) and s.centres[-1] == pytest.approx(8.0)
    e = gaussian_expand(np.array([0.0, 4.0, 9.0]), s)
    assert e.shape == (3, 41)
    assert e[0, 0] == 1.0 and e[1, 20] == pytest.approx(1.0) and e[2].max() < 1e-10


def test_batches_by_atoms_respects_the_budget_and_order():
    sizes = [5, 30, 2, 2, 100, 1, 40]
    batches = list(batches_by_atoms(list(range(len(sizes))), sizes, 40))
    assert [i for b in batches for i in b] == list(range(len(sizes)))
    for b in batches:
        assert len(b) == 1 or sum(sizes[i] for i in b) <= 40
