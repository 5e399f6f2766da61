"""Manifest, shard planning, resumable shards and the verified merge — in one process, no scheduler."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from conftest import EXAMPLES, write_cif

from gapseek.cli import main
from gapseek.cluster.merge import merge_shards
from gapseek.cluster.parts import shard_path, shard_states
from gapseek.cluster.plan import array_batches, parse_shard, plan_shards, shards_for_rank
from gapseek.cluster.shard import run_shard
from gapseek.errors import ConfigError, StoreError
from gapseek.featurize import FeaturizeSettings
from gapseek.store.manifest import build_manifest, read_manifest, write_manifest


def test_plan_covers_every_row_once_in_chunk_multiples():
    for n in (0, 1, 255, 256, 257, 1000, 10_000):
        for kwargs in ({"shard_size": 300}, {"num_shards": 3}, {"num_shards": 7}):
            plan = plan_shards(n, chunk_size=64, **kwargs)
            assert plan.shard_size % 64 == 0
            rows = [r for i in range(plan.num_shards) for r in range(*plan.bounds(i))]
            assert rows == list(range(n))
    with pytest.raises(ConfigError, match="0..2"):
        plan_shards(600, shard_size=256).bounds(3)


def test_shard_arguments_ranks_and_array_splitting():
    assert parse_shard("3", 8) == 3 and parse_shard("3/8", 8) == 3
    with pytest.raises(ConfigError, match="planned as 8 shards, not 4"):
        parse_shard("1/4", 8)
    with pytest.raises(ConfigError, match="I or I/N"):
        parse_shard("x", 8)
    assert shards_for_rank(1, 3, 8) == [1, 4, 7]
    assert sorted(i for r in range(3) for i in shards_for_rank(r, 3, 8)) == list(range(8))
    assert array_batches(2500, 1000) == [list(range(1000)), list(range(1000, 2000)), list(range(2000, 2500))]
    assert array_batches([3, 7, 9], 2) == [[3, 7], [9]]


def _cod_tree(root, n=5):
    """COD's layout, cif/1/00/00/1000000.cif, with real example crystals as content."""
    files = sorted(f for f in EXAMPLES.glob("*.cif"))
    for k in range(n):
        cid = 1000000 + k
        d = root / "cif" / "1" / "00" / f"{k:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{cid}.cif").write_bytes(files[k % len(files)].read_bytes())
    return root


def test_index_cod_layout_ids_hashes_and_duplicates(tmp_path):
    root = _cod_tree(tmp_path / "cod")
    other = tmp_path / "other"
    other.mkdir()
    (other / "1000002.cif").write_bytes((root / "cif/1/00/02/1000002.cif").read_bytes())  # same id, same bytes
    write_cif(other / "1000003.cif", "P 1", (4, 4, 4, 90, 90, 90), [("Si1", "Si", 0, 0, 0, 1)])  # same id
    man, dups = build_manifest([root, other], shard_size=256)[:2]
    assert len(man) == 7  # nothing dropped
    assert man.ids == sorted(man.ids)
    assert {"1000002", "1000002~2", "1000003", "1000003~2"} <= set(man.ids)
    assert sorted((d[0], d[4]) for d in dups) == [("1000002", True), ("1000003", False)]
    assert all(len(h) == 64 for h in man.sha256)
    write_manifest(tmp_path / "store", man, dups)
    assert (tmp_path / "store" / "duplicates.tsv").read_text().count("\n") == 3
    again = read_manifest(tmp_path / "store")
    assert again.ids == man.ids and again.sha256 == man.sha256 and again.plan == man.plan


@pytest.fixture
def indexed_store(tmp_path, model_dir):
    root = tmp_path / "cifs"
    root.mkdir()
    for f in EXAMPLES.glob("*.cif"):
        shutil.copy(f, root / f.name)
    for k in range(6):  # more rows, so shards have several checkpoint blocks
        write_cif(root / f"Si{k}.cif", "P 1", (5.43 + 0.01 * k, 5.43, 5.43, 90, 90, 90),
                  [("Si1", "Si", 0, 0, 0, 1), ("Si2", "Si", 0.25, 0.25, 0.25, 1)])
    store = tmp_path / "store"
    assert main(["index", str(root), "--out", str(store), "--shard-size", "8", "--chunk-size", "4", "--balance",
                 "count"]) == 0  # shards of 8 rows: two checkpoint blocks each
    return store


def _load(model_dir):
    from gapseek.model import load_model

    return load_model(model_dir / "band-gap.pth.tar", model_dir / "atom_init.json")


def _rows(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in ("ids", "prediction", "pooled", "hidden", "failures/ids", "failures/reasons")}


def test_interrupted_shard_resumes_from_its_blocks_and_equals_a_clean_run(indexed_store, model_dir, monkeypatch):
    import gapseek.cluster.shard as sharding

    lm = _load(model_dir)
    settings = FeaturizeSettings(chunk_size=4)
    calls = {"n": 0}
    real = sharding.featurize_items

    def dies_on_second_block(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("preempted")
        return real(*a, **k)

    monkeypatch.setattr(sharding, "featurize_items", dies_on_second_block)
    with pytest.raises(KeyboardInterrupt):
        run_shard(indexed_store, 0, lm, settings, checkpoint_every=4)
    assert not shard_path(indexed_store, 0).exists()
    assert [s.state for s in shard_states(indexed_store)][0] == "partial"
    monkeypatch.setattr(sharding, "featurize_items", real)
    res = run_shard(indexed_store, 0, lm, settings, checkpoint_every=4)
    assert res.status == "resumed" and res.blocks_reused == 1 and res.n_ok + res.n_failed == 8
    assert run_shard(indexed_store, 0, lm, settings, checkpoint_every=4).status == "skipped"
    resumed = _rows(shard_path(indexed_store, 0))
    shard_path(indexed_store, 0).unlink()
    clean = run_shard(indexed_store, 0, lm, settings, checkpoint_every=8)
    assert clean.status == "done"
    for k, v in _rows(shard_path(indexed_store, 0)).items():
        assert np.array_equal(v, resumed[k]), k


def test_merge_verifies_every_entry_and_names_bad_shards(indexed_store, model_dir, capsys):
    lm = _load(model_dir)
    settings = FeaturizeSettings(chunk_size=4)
    n_shards = read_manifest(indexed_store).plan.num_shards
    assert n_shards == 3
    for i in range(n_shards):
        run_shard(indexed_store, i, lm, settings, checkpoint_every=4)
    shard_path(indexed_store, 1).unlink()
    with pytest.raises(StoreError, match=r"shard 1 \(part-00001.h5\): missing[\s\S]*--shard I` for I in 1"):
        merge_shards(indexed_store)
    run_shard(indexed_store, 1, lm, settings)
    # a truncated (corrupt) part file and a part file from other inputs are refused too
    p2 = shard_path(indexed_store, 2)
    good = p2.read_bytes()
    p2.write_bytes(good[: len(good) // 2])
    with pytest.raises(StoreError, match="shard 2 .*unreadable"):
        merge_shards(indexed_store)
    shutil.copy(shard_path(indexed_store, 0), p2)
    with pytest.raises(StoreError, match="shard 2 .*other inputs"):
        merge_shards(indexed_store)
    p2.write_bytes(good)
    out = merge_shards(indexed_store).path
    man = read_manifest(indexed_store)
    rows = _rows(out)
    seen = [s.decode() for s in rows["ids"]] + [s.decode() for s in rows["failures/ids"]]
    assert sorted(seen) == sorted(man.ids) and len(seen) == len(set(seen))
    assert main(["status", str(indexed_store)]) == 0
    assert "3 complete" in capsys.readouterr().out


def test_merged_store_equals_one_process_over_the_same_inputs(indexed_store, model_dir, tmp_path):
    assert main(["featurize", str(indexed_store), "--chunk-size", "4", "--checkpoint-every", "4",
                 "--model", str(model_dir), "--merge"]) == 0
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(read_manifest(indexed_store).paths))
    assert main(["featurize", str(listing), "--out", str(tmp_path / "single"), "--chunk-size", "4",
                 "--model", str(model_dir), "--no-progress"]) == 0
    a, b = _rows(indexed_store / "features.h5"), _rows(tmp_path / "single" / "features.h5")
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_shard_options_need_an_indexed_store(tmp_path, capsys):
    assert main(["featurize", str(EXAMPLES), "--out", str(tmp_path / "s"), "--shard", "0"]) == 1
    assert "indexed store" in capsys.readouterr().err
    assert main(["featurize", str(EXAMPLES)]) == 1
    assert "--out STORE" in capsys.readouterr().err
