"""A COD mirror indexed as it is: COD's header tags (revision, date, ``_cod_duplicate_entry``) read and recorded,
files with several structures failed clearly, and the composition filter of ``gapseek index``."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import COD_DIR, need, write_cif

from gapseek.cli import main
from gapseek.errors import ConfigError, CrystalError
from gapseek.store.manifest import read_manifest
from gapseek.structure import crystal_from_bytes
from gapseek.structure.cifmeta import cif_meta
from gapseek.structure.select import ELEMENT_GROUPS, ElementFilter

NACL = [("Na1", "Na", 0, 0, 0, 1), ("Cl1", "Cl", 0.5, 0.5, 0.5, 1)]
COD_HEADER = ("#------------------------------------------------------------------------------\n"
              "#$Date: {date} 00:18:51 +0200 (Sat, 20 Feb 2016) $\n#$Revision: {rev} $\n"
              "#$URL: file:///home/coder/svn-repositories/cod/cif/1/00/00/{code}.cif $\n")


def _cod_file(path, code, rev, date, formula, sites, dup=None):
    extra = f"_cod_database_code {code}\n_chemical_formula_sum '{formula}'\n"
    if dup:
        extra += f"_cod_duplicate_entry {dup}\n"
    write_cif(path, "F m -3 m", (5.64, 5.64, 5.64, 90, 90, 90), sites, name=code, extra=extra)
    path.write_text(COD_HEADER.format(date=date, rev=rev, code=code) + path.read_text())
    return path


def test_cif_meta_reads_formula_blocks_and_cod_tags(tmp_path):
    p = _cod_file(tmp_path / "1000001.cif", "1000001", 176760, "2016-02-20", "Cl Na", NACL, dup="1000000")
    m = cif_meta(p.read_bytes())
    assert m.elements == frozenset({"Na", "Cl"}) and m.structure_blocks == ("1000001",)
    assert (m.cod_code, m.duplicate_of, m.revision, m.date) == ("1000001", "1000000", 176760, "2016-02-20")
    assert cif_meta(b"data_x\n_chemical_formula_sum\n;\nC12 H10 D2 O4\n;\n").elements == frozenset("CHO")
    assert cif_meta(b"data_x\n_cell_length_a 5\n").elements is None


def test_element_filter_like_cods_search():
    f = ElementFilter.parse("O", "radioactive,Cd", "2:3")
    assert f.reason(frozenset({"Ti", "O"})) is None
    assert f.reason(frozenset({"Ti", "S"})) == "lacks O"
    assert f.reason(frozenset({"U", "O"})) == "contains U"
    assert f.reason(frozenset({"Cd", "O"})) == "contains Cd"
    assert f.reason(frozenset({"Li", "Fe", "P", "O"})) == "4 element(s)"
    assert f.reason(None) == "no _chemical_formula_sum: composition unknown"
    assert "Th" in ELEMENT_GROUPS["radioactive"] and "Bi" not in ELEMENT_GROUPS["radioactive"]
    assert f.describe() == "with O; without radioactive,Cd; 2-3 elements"
    with pytest.raises(ConfigError, match="'Xx' is not an element symbol"):
        ElementFilter.parse("Xx")
    with pytest.raises(ConfigError, match="both required and excluded: O"):
        ElementFilter.parse("O", "O")
    with pytest.raises(ConfigError, match="give N, MIN:MAX"):
        ElementFilter.parse(num_elements="two")
    assert ElementFilter.parse() is None


def test_several_structures_in_one_file_is_a_clear_failure(tmp_path):
    one = write_cif(tmp_path / "a.cif", "F m -3 m", (5.64, 5.64, 5.64, 90, 90, 90), NACL, name="first").read_text()
    two = write_cif(tmp_path / "b.cif", "F m -3 m", (5.5, 5.5, 5.5, 90, 90, 90), NACL, name="second").read_text()
    for reader in ("gemmi", "pymatgen"):
        from gapseek.structure import ReadSettings

        with pytest.raises(CrystalError, match="several-structures: 2 data blocks") as exc:
            crystal_from_bytes((one + "\n" + two).encode(), ReadSettings(reader=reader))
        assert "split it" in str(exc.value)
    # a block of publication data before the structure is still one structure
    assert crystal_from_bytes(("data_publ\n_journal_year 2001\n" + one).encode()).n_atoms == 8


def test_cod_mirror_tree_indexes_as_it_is_with_revision_duplicates_and_filter(tmp_path, capsys):
    mirror = tmp_path / "cod" / "cif"  # rsync's layout: cif/1/00/00/1000000.cif
    d = mirror / "1" / "00" / "00"
    d.mkdir(parents=True)
    _cod_file(d / "1000000.cif", "1000000", 170000, "2015-01-02", "Cl Na", NACL)
    _cod_file(d / "1000001.cif", "1000001", 176760, "2016-02-20", "Cl Na", NACL, dup="1000000")
    _cod_file(d / "1000002.cif", "1000002", 150000, "2014-05-06", "O U", NACL)
    _cod_file(d / "1000003.cif", "1000003", 160000, "2015-07-08", "Na", NACL)
    store = tmp_path / "store"
    assert main(["index", str(tmp_path / "cod"), "--out", str(store), "--exclude-elements", "radioactive",
                 "--num-elements", "2:"]) == 0
    out = capsys.readouterr().out
    assert "2 file(s) left out by the filter (without radioactive; 2+ elements)" in out
    assert "1 COD entr(ies) marked _cod_duplicate_entry (1 kept" in out
    assert "data: COD revision 176760 (newest file), newest file dated 2016-02-20, 2 crystals" in out
    man = read_manifest(store)
    assert man.ids == ["1000000", "1000001"]
    prov = json.loads(man.provenance)
    assert prov["filter"] == "without radioactive; 2+ elements" and prov["n_filtered"] == 2
    assert prov["sources"][0]["marked_duplicates"] == 1
    rows = (store / "filtered.tsv").read_text().splitlines()
    assert rows[0] == "id\tpath\treason" and {r.split("\t")[2] for r in rows[1:]} == {"contains U", "1 element(s)"}
    assert (store / "cod-duplicates.tsv").read_text().splitlines()[1] == "1000001\t1000000\tTrue"
    # --skip-cod-duplicates leaves the marked entry out, with its reason
    assert main(["index", str(tmp_path / "cod"), "--out", str(store), "--overwrite", "--skip-cod-duplicates"]) == 0
    assert read_manifest(store).ids == ["1000000", "1000002", "1000003"]
    assert "COD duplicate of 1000000" in (store / "filtered.tsv").read_text()


def test_real_cod_files_index_with_their_tags(tmp_path, capsys):
    cod = need(COD_DIR)
    src = tmp_path / "cod"
    shutil.copytree(cod / "with_cod_id", src)
    assert main(["index", str(src), "--out", str(tmp_path / "s"), "--elements", "O"]) == 0
    out = capsys.readouterr().out
    man = read_manifest(tmp_path / "s")
    prov = json.loads(man.provenance)
    cod_src = next(s for s in prov["sources"] if s["database"] == "COD")
    assert cod_src["release"].startswith("revision ") and cod_src["date"] >= "2013-01-01"
    filtered = (tmp_path / "s" / "filtered.tsv").read_text().splitlines()[1:]
    assert len(man) + len(filtered) == 546  # every file: indexed, or listed with its reason
    assert all(r.split("\t")[2] in ("no _chemical_formula_sum: composition unknown", "lacks O")
               or r.split("\t")[2].startswith("lacks O") for r in filtered)
    assert "marked _cod_duplicate_entry" in out and "hold several structures" in out
