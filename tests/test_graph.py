"""Neighbour graphs: vesin-based construction against the original pymatgen procedure."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import EXAMPLES, MP_DIR, need, write_cif
from original_cgcnn import build_graph_original

from gapseek.graph import GraphSettings, atom_classes, build_graph, equivalent_atoms, gaussian_expand
from gapseek.graph.neighbours import _neighbours
from gapseek.model.collate import batches_by_atoms
from gapseek.structure.cif import read_crystal


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


def test_ties_between_different_atoms_are_counted(tmp_path):
    # rocksalt conventional cell: 6 Cl then 12 Na at a/sqrt(2) -> the 12th and 13th tie, over 3 other Na sites
    g = build_graph(read_crystal(EXAMPLES / "NaCl.cif"))
    assert g.n_tied == 8
    # a cell without symmetry, atoms at irregular positions: no two neighbour distances are equal, no tie
    f = write_cif(tmp_path / "irregular.cif", "P 1", (5.1, 5.7, 6.3, 84, 93, 101),
                  [("Na1", "Na", 0.03, 0.11, 0.07, 1), ("Cl1", "Cl", 0.47, 0.58, 0.44, 1),
                   ("Na2", "Na", 0.21, 0.69, 0.83, 1), ("Cl2", "Cl", 0.76, 0.29, 0.61, 1)])
    irregular = build_graph(read_crystal(f))
    assert irregular.n_tied == 0 and irregular.n_padded == 0  # (rock salt above: 8 atoms tied)


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


def _full_radius_graph(crystal, settings=GraphSettings()):
    """The M nearest neighbours from one search at the full radius (no first, shorter search)."""
    i, j, d = _neighbours(crystal, settings.radius)
    n, m = crystal.n_atoms, settings.max_neighbors
    dist = np.full((n, m), settings.radius + 1.0)
    for a in range(n):
        da = np.sort(d[i == a])[:m]
        dist[a, : da.size] = da
    return dist


@pytest.mark.parametrize("name", ["NaCl.cif", "SrTiO3.cif", "TiO2-rutile.cif", "ZnO.cif", "CdS.cif"])
def test_short_first_search_gives_the_full_radius_graph(name):
    c = read_crystal(EXAMPLES / name)
    np.testing.assert_allclose(build_graph(c).nbr_dist, _full_radius_graph(c), atol=1e-12)


def test_short_first_search_on_mp_sample():
    files = random.Random(5).sample(sorted(need(MP_DIR / "cifs").glob("*.cif")), 60)
    for f in files:
        c = read_crystal(f)
        np.testing.assert_allclose(build_graph(c).nbr_dist, _full_radius_graph(c), atol=1e-12, err_msg=f.name)


def test_a_first_radius_that_is_too_short_is_widened(monkeypatch):
    import gapseek.graph.neighbours as graph_module

    calls = []
    real = graph_module._neighbours
    monkeypatch.setattr(graph_module, "_neighbours", lambda c, r: calls.append(r) or real(c, r))
    monkeypatch.setattr(graph_module, "_FIRST_SEARCH_NEIGHBOURS", 4)  # far too few for 13 neighbours
    for name in ("NaCl.cif", "SrTiO3.cif", "TiO2-rutile.cif"):
        calls.clear()
        c = read_crystal(EXAMPLES / name)
        g = build_graph(c)
        assert calls[0] < 8.0 and calls[-1] == 8.0 and len(calls) == 2, (name, calls)
        np.testing.assert_allclose(g.nbr_dist, _full_radius_graph(c), atol=1e-12)


def _supercell(crystal, reps=(2, 2, 2)):
    from gapseek.structure.cif import Crystal

    shifts = np.array([(a, b, c) for a in range(reps[0]) for b in range(reps[1]) for c in range(reps[2])])
    frac = ((crystal.frac[None, :, :] + shifts[:, None, :]) / np.array(reps)).reshape(-1, 3)
    return Crystal(lattice=crystal.lattice * np.array(reps)[:, None], frac=frac,
                   numbers=np.tile(crystal.numbers, len(shifts)))


def test_equivalent_atoms_of_symmetric_and_distorted_cells():
    nacl = _supercell(read_crystal(EXAMPLES / "NaCl.cif"))  # 64 atoms, P1, all Na alike, all Cl alike
    g = build_graph(nacl)
    assert g.eq_class is None  # computed on demand, once
    eq = atom_classes(g)
    assert g.eq_class is eq
    assert eq.max() + 1 == 2 and eq[0] == 0
    assert set(zip(eq.tolist(), nacl.numbers.tolist())) == {(0, int(nacl.numbers[0])), (1, int(nacl.numbers[-1]))}
    # move one atom: it, and atoms near it, become distinct, and every class is still uniform
    moved = _supercell(read_crystal(EXAMPLES / "NaCl.cif"))
    moved.frac[5] += 0.01
    gm = build_graph(moved)
    atom_classes(gm)
    assert gm.eq_class.max() + 1 > 3
    for k in range(gm.eq_class.max() + 1):
        members = np.nonzero(gm.eq_class == k)[0]
        assert len({int(moved.numbers[a]) for a in members}) == 1
        rows = np.sort(gm.nbr_dist[members], axis=1)
        np.testing.assert_allclose(rows, np.broadcast_to(rows[0], rows.shape), atol=1e-8)
    # labels are numbered by first appearance: class k's first member precedes class k+1's
    firsts = [int(np.nonzero(gm.eq_class == k)[0][0]) for k in range(gm.eq_class.max() + 1)]
    assert firsts == sorted(firsts) and firsts[0] == 0
    assert np.array_equal(equivalent_atoms(gm), gm.eq_class)
