"""Every input ends as features or as a failure with a reason: the real COD robustness set, and edge cases."""

from __future__ import annotations

import csv
from collections import Counter

import h5py
import pytest
from conftest import COD_DIR, EXAMPLES, need, write_cif

from gapseek.cli import main

KNOWN = {"unreadable", "not-cif", "syntax", "no-structure", "several-structures", "invalid-cell", "disordered",
         "unknown-element", "too-many-atoms", "overlapping-atoms", "timeout", "memory", "crashed", "symmetry",
         "not-a-file", "too-large", "stale-input", "model-error", "internal-error"}


def _store(path):
    with h5py.File(path / "features.h5", "r") as f:
        ids = [s.decode() for s in f["ids"][()]]
        paths = [s.decode() for s in f["paths"][()]]
        fails = list(zip([s.decode() for s in f["failures/paths"][()]],
                         [s.decode() for s in f["failures/reasons"][()]]))
    return ids, paths, fails


def test_cod_robustness_set_is_fully_accounted_for(tmp_path, model_dir, capsys):
    cod = need(COD_DIR)
    files = sorted(str(p) for p in cod.rglob("*.cif"))
    assert len(files) == 1114
    rc = main(["featurize", str(cod), "--out", str(tmp_path / "s"), "--model", str(model_dir),
               "--workers", "2", "--timeout", "60", "--no-progress"])
    assert rc == 0
    ids, paths, fails = _store(tmp_path / "s")
    seen = paths + [p for p, _ in fails]
    assert sorted(seen) == files  # each file exactly once
    cats = Counter(r.split(":", 1)[0] for _, r in fails)
    assert set(cats) <= KNOWN, cats
    assert all(len(r.split(":", 1)[1].strip()) > 3 for _, r in fails)
    no_structure = {str(p) for p in (cod / "no_structure").glob("*.cif")}
    assert no_structure.isdisjoint(paths), "a file with no structure produced features"
    manifest = {r["file"]: r for r in csv.DictReader(open(cod / "manifest.csv"))}
    disordered_pmg = {str(cod / k) for k, r in manifest.items() if r["is_ordered_first"] == "False"}
    fail_reason = dict(fails)
    # what pymatgen calls disordered never yields features unless the reader found another block/ordering
    assert sum(fail_reason.get(p, "").startswith("disordered") for p in disordered_pmg) >= 0.9 * len(disordered_pmg)
    out = capsys.readouterr().out
    print(f"\ncod-robustness: {len(ids)} featurized, {len(fails)} failed: {dict(cats)}")
    assert f"{len(ids)} ok / {len(fails)} failed of 1114 inputs" in out


def test_majority_option_featurizes_disordered_entries(tmp_path, model_dir):
    rc = main(["featurize", str(EXAMPLES / "InGaAs-disordered.cif"), "--out", str(tmp_path / "s"),
               "--model", str(model_dir), "--disorder", "majority", "--no-progress"])
    assert rc == 0
    ids, _, fails = _store(tmp_path / "s")
    assert ids == ["InGaAs-disordered"] and fails == []


def test_list_file_with_missing_entries_and_time_limit(tmp_path, model_dir):
    ok = write_cif(tmp_path / "ok.cif", "F m -3 m", (5.64, 5.64, 5.64, 90, 90, 90),
                   [("Na1", "Na", 0, 0, 0, 1), ("Cl1", "Cl", 0.5, 0.5, 0.5, 1)])
    big = write_cif(tmp_path / "big.cif", "F m -3 m", (60.0, 60.0, 60.0, 90, 90, 90),
                    [(f"Na{i}", "Na", round(0.013 * i, 4), round(0.007 * i, 4), round(0.011 * i, 4), 1)
                     for i in range(1, 40)])
    lst = tmp_path / "inputs.txt"
    lst.write_text(f"# a list\n{ok.name}\nmissing.cif\n{big}\n")
    rc = main(["featurize", str(lst), "--out", str(tmp_path / "s"), "--model", str(model_dir),
               "--timeout", "0.05", "--max-atoms", "100000", "--no-progress"])
    assert rc == 0
    ids, _, fails = _store(tmp_path / "s")
    reasons = {p.rsplit("/", 1)[-1]: r for p, r in fails}
    assert ids == ["ok"]
    assert reasons["missing.cif"].startswith("unreadable")
    assert reasons["big.cif"].startswith("timeout")


def test_too_many_atoms_is_a_failure_not_a_crash(tmp_path, model_dir):
    rc = main(["featurize", str(EXAMPLES / "NaCl.cif"), "--out", str(tmp_path / "s"), "--model", str(model_dir),
               "--max-atoms", "4", "--no-progress"])
    assert rc == 0
    _, _, fails = _store(tmp_path / "s")
    assert fails and fails[0][1].startswith("too-many-atoms")


@pytest.mark.parametrize("bad_arg,said", [(["--workers", "0"], "workers must be >= 1; got 0"),
                                          (["--device", "tpu"], "device must be cpu, cuda, cuda:N or auto; got 'tpu'")])
def test_invalid_options_fail_loudly(tmp_path, model_dir, bad_arg, said, capsys):
    rc = main(["featurize", str(EXAMPLES), "--out", str(tmp_path / "s"), "--model", str(model_dir), *bad_arg])
    assert rc == 1
    assert f"gapseek: error: {said}" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # refused before anything was written
