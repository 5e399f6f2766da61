"""CIF reading: our gemmi reader against pymatgen's CifParser, and every kind of bad input."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import EXAMPLES, MP_DIR, need, write_cif

from gapseek.errors import ConfigError, CrystalError
from gapseek.structure.cif import ReadSettings, read_crystal

GEMMI = ReadSettings(reader="gemmi")
PMG = ReadSettings(reader="pymatgen")


def same_crystal(a, b, ordered: bool = True) -> bool:
    """Same lattice and sites; ``ordered=False`` ignores site order (symmetry operations generated from a
    space-group name come in a different order in gemmi and pymatgen)."""
    if a.n_atoms != b.n_atoms or not np.array_equal(np.sort(a.numbers), np.sort(b.numbers)):
        return False
    if not ordered:
        ka = np.lexsort(np.round(a.frac, 6).T[::-1].tolist() + [a.numbers])
        kb = np.lexsort(np.round(b.frac, 6).T[::-1].tolist() + [b.numbers])
        a_frac, b_frac, a_num, b_num = a.frac[ka], b.frac[kb], a.numbers[ka], b.numbers[kb]
    else:
        a_frac, b_frac, a_num, b_num = a.frac, b.frac, a.numbers, b.numbers
    if not np.array_equal(a_num, b_num):
        return False
    d = a_frac - b_frac
    d -= np.round(d)
    return bool(np.allclose(a.lattice, b.lattice, atol=1e-10) and np.abs(d).max() < 1e-9)


@pytest.mark.parametrize("cif", sorted(p.name for p in EXAMPLES.glob("*.cif") if "disorder" not in p.name
                                       and "not-a" not in p.name))
def test_symmetry_expansion_matches_pymatgen(cif):
    a = read_crystal(EXAMPLES / cif, GEMMI)
    b = read_crystal(EXAMPLES / cif, PMG)
    assert same_crystal(a, b, ordered=False), (a.numbers, b.numbers)


def test_site_order_and_coordinates_match_pymatgen_on_mp_sample():
    files = sorted(need(MP_DIR / "cifs").glob("*.cif"))
    sample = random.Random(7).sample(files, 400)
    bad = [f.name for f in sample if not same_crystal(read_crystal(f, GEMMI), read_crystal(f, PMG))]
    assert bad == []


def test_thirds_are_snapped_like_pymatgen(tmp_path):
    f = write_cif(tmp_path / "zno.cif", "P 63 m c", (3.25, 3.25, 5.2, 90, 90, 120),
                  [("Zn1", "Zn", 0.3333, 0.6667, 0, 1), ("O1", "O", 0.3333, 0.6667, 0.382, 1)])
    c = read_crystal(f, GEMMI)
    xy = np.unique(np.round(c.frac[:, :2], 12))
    np.testing.assert_allclose(xy, [1 / 3, 2 / 3], rtol=0, atol=1e-12)  # 0.3333 / 0.6667 snapped exactly
    assert same_crystal(c, read_crystal(f, PMG), ordered=False)


def test_disordered_site_fails_by_default_and_majority_keeps_the_larger_occupant(tmp_path):
    f = write_cif(tmp_path / "alloy.cif", "F m -3 m", (4.0, 4.0, 4.0, 90, 90, 90),
                  [("Cu1", "Cu", 0, 0, 0, 0.7), ("Au1", "Au", 0, 0, 0, 0.3)])
    with pytest.raises(CrystalError) as exc:
        read_crystal(f, GEMMI)
    assert exc.value.category == "disordered" and "Cu:0.7" in exc.value.detail
    c = read_crystal(f, ReadSettings(reader="gemmi", disorder="majority"))
    assert c.n_atoms == 4 and set(c.numbers.tolist()) == {29}


def test_partial_occupancy_is_disorder(tmp_path):
    f = write_cif(tmp_path / "vac.cif", "P 1", (4, 4, 4, 90, 90, 90), [("Na1", "Na", 0, 0, 0, 0.9),
                                                                       ("Cl1", "Cl", 0.5, 0.5, 0.5, 1)])
    with pytest.raises(CrystalError, match="disordered"):
        read_crystal(f, GEMMI)


@pytest.mark.parametrize(
    "content, category",
    [
        (b"", "no-structure"),
        (b"\x00\x01\x02binary", "not-cif"),
        (b"data_x\n_journal_name_full 'no atoms here'\n", "no-structure"),
        (b"data_x\n_cell_length_a 4\n_cell_length_b 4\n_cell_length_c 4\n", "no-structure"),
        (b"data_x\n_cell_length_a 4\n_cell_length_b 4\n_cell_length_c -4\nloop_\n_atom_site_label\n"
         b"_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\nNa 0 0 0\n", "invalid-cell"),
        (b"data_x\n_cell_length_a 4\n_cell_length_b 4\n_cell_length_c 4\nloop_\n_atom_site_label\n"
         b"_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\nQq1 0 0 0\n", "unknown-element"),
        (b"data_x\n_cell_length_a 4\n_cell_length_b 4\n_cell_length_c 4\nloop_\n_atom_site_label\n"
         b"_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\nNa1 ? 0 0\n", "no-structure"),
    ],
)
def test_bad_files_get_a_categorised_reason(tmp_path, content, category):
    f = tmp_path / "bad.cif"
    f.write_bytes(content)
    with pytest.raises(CrystalError) as exc:
        read_crystal(f, ReadSettings(reader="gemmi"))
    assert exc.value.category == category
    assert exc.value.detail


def test_syntax_error_falls_back_to_pymatgen_in_auto_mode(tmp_path):
    f = write_cif(tmp_path / "s.cif", "P 1", (4, 4, 4, 90, 90, 90), [("Na1", "Na", 0, 0, 0, 1)])
    text = f.read_text().replace("data_x", "data_x\n_publ_section_title\n;\nunterminated text field")
    f.write_text(text)
    with pytest.raises(CrystalError) as exc:
        read_crystal(f, GEMMI)
    assert exc.value.category == "syntax"
    with pytest.raises(CrystalError):  # pymatgen cannot make sense of it either: reason names both
        read_crystal(f, ReadSettings(reader="auto"))


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(CrystalError) as exc:
        read_crystal(tmp_path / "nope.cif")
    assert exc.value.category == "unreadable"


def test_atom_cap(tmp_path):
    f = write_cif(tmp_path / "big.cif", "F m -3 m", (5.6, 5.6, 5.6, 90, 90, 90),
                  [("Na1", "Na", 0, 0, 0, 1), ("Cl1", "Cl", 0.5, 0.5, 0.5, 1)])
    assert read_crystal(f, ReadSettings(max_atoms=8)).n_atoms == 8
    with pytest.raises(CrystalError, match="too-many-atoms"):
        read_crystal(f, ReadSettings(max_atoms=7))


def test_settings_reject_unknown_values():
    with pytest.raises(ConfigError, match="disorder must be one of fail, majority"):
        ReadSettings(disorder="average")
    with pytest.raises(ConfigError, match="reader must be one of"):
        ReadSettings(reader="ase")


def test_formula_is_reduced():
    assert read_crystal(EXAMPLES / "GaAs.cif").formula == "GaAs"
    assert read_crystal(EXAMPLES / "SrTiO3.cif").formula == "SrTiO3"
