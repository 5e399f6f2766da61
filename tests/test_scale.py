"""COD scale: the work estimate, shards balanced by work, packed inputs — with the tiny checkpoint, anywhere."""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest
from conftest import COD_DIR, EXAMPLES, need, write_cif

from gapseek.cli import main
from gapseek.cluster.plan import ShardPlan, balance_by_cost, plan_shards, work_estimate
from gapseek.errors import ConfigError, StoreError
from gapseek.store.manifest import read_manifest, read_plan
from gapseek.store.pack import PackReader, pack_path
from gapseek.structure.cif import read_crystal
from gapseek.structure.estimate import estimate_atoms

SYMOPS = "loop_\n_symmetry_equiv_pos_as_xyz\nx,y,z\n-x,-y,-z\n'x+1/2,y+1/2,z'\n'-x+1/2,-y+1/2,-z'\n"


def test_estimate_counts_sites_times_symmetry_operations_of_the_first_block(tmp_path):
    sites = [("Na1", "Na", 0.1, 0.2, 0.3, 1), ("Cl1", "Cl", 0.6, 0.7, 0.8, 1), ("O1", "O", 0.3, 0.1, 0.9, 1)]
    p1 = write_cif(tmp_path / "a.cif", "P 1", (5, 5, 5, 90, 90, 90), sites)
    assert estimate_atoms(p1.read_bytes()) == 3
    four = write_cif(tmp_path / "b.cif", "C 2/m", (5, 5, 5, 90, 90, 90), sites, extra=SYMOPS)
    assert estimate_atoms(four.read_bytes()) == 12
    two_blocks = four.read_bytes() + p1.read_bytes().replace(b"data_x", b"data_y")
    assert estimate_atoms(two_blocks) == 12  # the first block only, as gapseek reads it
    assert estimate_atoms(b"data_x\n_cell_length_a 5\n") == 0 and estimate_atoms(b"\x00\xff garbage") == 0


def test_estimate_never_fails_on_real_cod_files_broken_ones_included():
    files = sorted(need(COD_DIR).rglob("*.cif"))
    assert len(files) > 1000
    est = [estimate_atoms(f.read_bytes()) for f in files]  # no exception on any of them
    assert all(isinstance(e, int) and e >= 0 for e in est)
    assert sum(e == 0 for e in est) > 500  # the CIFs without a structure: no sites, the fixed cost only


def test_estimate_finds_the_atoms_of_the_example_crystals():
    """Sites on special positions count once: the estimate is the cell's atom count for ordered crystals."""
    est, true = [], []
    for f in sorted(EXAMPLES.glob("*.cif")):
        try:
            n = read_crystal(f).n_atoms
        except Exception:
            continue
        est.append(estimate_atoms(f.read_bytes()))
        true.append(n)
    assert len(true) >= 5 and est == true, list(zip(est, true))


def test_balanced_shards_cover_every_row_in_whole_chunks_and_even_out_the_work():
    rng = np.random.default_rng(0)
    atoms = np.concatenate([rng.integers(1, 20, 6000), rng.integers(200, 900, 3000), rng.integers(1, 20, 6000)])
    cost = work_estimate(atoms)
    even = plan_shards(len(atoms), shard_size=1024, chunk_size=128)
    plan = plan_shards(len(atoms), shard_size=1024, chunk_size=128, costs=cost)
    assert plan.balanced and plan.num_shards == even.num_shards
    rows = [r for i in range(plan.num_shards) for r in range(*plan.bounds(i))]
    assert rows == list(range(len(atoms)))
    assert all(s % 128 == 0 for s in plan.starts)

    def spread(p):
        work = [cost[slice(*p.bounds(i))].sum() for i in range(p.num_shards)]
        return max(work) / np.mean(work)

    assert spread(even) > 2.5 and spread(plan) < 1.2, (spread(even), spread(plan))
    # fewer chunks than shards asked for: one chunk each; never an empty shard
    assert balance_by_cost([1] * 300, 5, 256) == (0, 256)
    with pytest.raises(ConfigError, match="invalid shard starts"):
        ShardPlan(1000, 256, 128, starts=(0, 100))


def _tree(root):
    """12 small crystals and 4 big ones (a 4-operation cell of 60 sites), interleaved by id."""
    root.mkdir()
    big = [(f"C{k}", "C", round(0.013 * k, 3), round(0.029 * k % 1, 3), round(0.047 * k % 1, 3), 1)
           for k in range(60)]
    for k in range(16):
        if k % 4 == 3:
            write_cif(root / f"{k:03d}.cif", "C 2/m", (15 + 0.01 * k, 16, 17, 90, 95, 90), big, extra=SYMOPS)
        else:
            write_cif(root / f"{k:03d}.cif", "F m -3 m", (5.6 + 0.01 * k,) * 3 + (90, 90, 90),
                      [("Na1", "Na", 0, 0, 0, 1), ("Cl1", "Cl", 0.5, 0.5, 0.5, 1)])
    for f in ("MgO.cif", "NaCl.cif"):
        shutil.copy(EXAMPLES / f, root / f)
    return root


def _features(store):
    with h5py.File(store / "features.h5", "r") as f:
        return {k: f[k][()] for k in ("ids", "pooled", "hidden", "prediction", "failures/ids", "failures/reasons")}


def test_packed_inputs_are_read_from_the_pack_alone_and_give_the_same_store(tmp_path, tiny_model, capsys):
    root = _tree(tmp_path / "cifs")
    model = ["--model", str(tiny_model), "--model-sha256", "any", "--no-progress", "--chunk-size", "2",
             "--checkpoint-every", "2"]
    for name, extra in (("loose", []), ("packed", ["--pack"])):
        assert main(["index", str(root), "--out", str(tmp_path / name), "--shard-size", "6", "--chunk-size", "2",
                     *extra]) == 0
    out = capsys.readouterr().out
    assert "balanced by estimated work" in out and "inputs packed into" in out
    assert not pack_path(tmp_path / "loose").exists()
    man = read_manifest(tmp_path / "packed")
    assert man.packed and man.plan.balanced and man.atoms_est is not None
    for cid in ("000", "003", "MgO"):
        assert int(man.atoms_est[man.ids.index(cid)]) == read_crystal(man.paths[man.ids.index(cid)]).n_atoms
    assert int(man.atoms_est[man.ids.index("003")]) > 200
    # the CIFs are gone: a packed store's shards read only inputs.h5 (a loose one would record every file unreadable)
    moved = shutil.move(root, tmp_path / "elsewhere")
    assert main(["featurize", str(tmp_path / "packed"), *model, "--merge"]) == 0
    shutil.move(moved, root)
    assert main(["featurize", str(tmp_path / "loose"), *model, "--merge"]) == 0
    a, b = _features(tmp_path / "packed"), _features(tmp_path / "loose")
    assert len(a["ids"]) == 18 and len(a["failures/ids"]) == 0
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    # one process over the same files, in manifest order: the same bits as the balanced, packed shards
    (tmp_path / "list.txt").write_text("\n".join(man.paths))
    assert main(["featurize", str(tmp_path / "list.txt"), "--out", str(tmp_path / "one"), *model[:-2]]) == 0
    one = _features(tmp_path / "one")
    for k in ("ids", "pooled", "hidden", "prediction"):
        assert np.array_equal(a[k], one[k]), k


def test_a_pack_of_another_manifest_or_a_missing_pack_is_a_clear_error(tmp_path, tiny_model, capsys):
    root = _tree(tmp_path / "cifs")
    store = tmp_path / "s"
    assert main(["index", str(root), "--out", str(store), "--pack", "--shard-size", "6", "--chunk-size", "2"]) == 0
    man = read_manifest(store)
    with PackReader(store, man.pack_sha256s) as r:
        data = r.read(0, len(man))
    assert [d is not None for d in data] == [True] * len(man)
    assert data[man.ids.index("MgO")] == (root / "MgO.cif").read_bytes()
    with pytest.raises(StoreError, match="was not packed for this manifest"):
        PackReader(store, "0" * 64)
    os.unlink(pack_path(store))
    capsys.readouterr()
    rc = main(["featurize", str(store), "--shard", "0", "--model", str(tiny_model), "--model-sha256", "any",
               "--no-progress", "--chunk-size", "2"])
    assert rc == 1 and "inputs.h5 is not a readable pack" in capsys.readouterr().err
    # re-indexing without --pack leaves no pack of the old manifest behind
    assert main(["index", str(root), "--out", str(store), "--pack", "--overwrite"]) == 0 and pack_path(store).exists()
    assert main(["index", str(root), "--out", str(store), "--overwrite"]) == 0 and not pack_path(store).exists()


def test_a_manifest_of_the_previous_schema_reads_as_an_even_plan(tmp_path):
    root = _tree(tmp_path / "cifs")
    store = tmp_path / "s"
    assert main(["index", str(root), "--out", str(store), "--shard-size", "6", "--chunk-size", "2"]) == 0
    with h5py.File(store / "manifest.h5", "r+") as f:  # what gapseek wrote before estimates and packs
        del f["atoms_est"], f["shard_starts"]
        del f.attrs["packed"]
        f.attrs["manifest_schema"] = 1
    plan = read_plan(store)
    assert not plan.balanced and plan.bounds(1) == (6, 12)
    assert read_manifest(store).atoms_est is None
    with h5py.File(store / "manifest.h5", "r+") as f:
        f.attrs["manifest_schema"] = 9
    with pytest.raises(StoreError, match="manifest schema 9.*reads 1, 2"):
        read_plan(store)


def test_packed_bytes_obey_the_file_size_limit_as_files_do(tmp_path, tiny_model):
    root = _tree(tmp_path / "cifs")
    store = tmp_path / "s"
    assert main(["index", str(root), "--out", str(store), "--pack", "--shard-size", "6", "--chunk-size", "2"]) == 0
    limit = sorted({p.stat().st_size for p in root.glob("*.cif")})[-2]  # the largest files are over it
    mb = f"{limit / 1e6:.6f}"
    limit = int(float(mb) * 1e6)
    assert main(["featurize", str(store), "--model", str(tiny_model), "--model-sha256", "any", "--no-progress",
                 "--chunk-size", "2", "--max-file-size", mb, "--merge"]) == 0
    with h5py.File(store / "features.h5", "r") as f:
        reasons = dict(zip((s.decode() for s in f["failures/ids"][()]),
                           (s.decode() for s in f["failures/reasons"][()])))
    big = {p.stem: p.stat().st_size for p in root.glob("*.cif") if p.stat().st_size > limit}
    assert big and set(reasons) == set(big)
    assert all(reasons[k] == f"too-large: {n} bytes > the limit of {limit} bytes (--max-file-size)"
               for k, n in big.items())
