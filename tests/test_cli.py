"""The command line and the store schema, end to end on the embedded examples."""

from __future__ import annotations

import csv
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import EXAMPLES

from gapseek.cli import main
from gapseek.hub import PINNED
from gapseek.store import open_store


@pytest.fixture()
def demo_store(tmp_path, model_dir):
    out = tmp_path / "store"
    assert main(["demo", "--out", str(out), "--model", str(model_dir), "--no-progress"]) == 0
    return out


def test_store_schema(demo_store):
    with h5py.File(demo_store / "features.h5", "r") as f:
        n = f["ids"].shape[0]
        assert n == 9
        assert f["prediction"].dtype == np.float32 and f["prediction"].shape == (n,)
        assert f["pooled"].shape == (n, 64) and f["hidden"].shape == (n, 32)
        assert f["pooled"].chunks[1] == 64 and f["pooled"].compression == "gzip"
        assert set(f["failures"]) == {"ids", "paths", "reasons"}
        assert f["failures/ids"].shape == (2,)
        assert f.attrs["model_sha256"] == PINNED["band-gap.pth.tar"].sha256
        assert f.attrs["graph_radius"] == 8.0 and f.attrs["graph_max_neighbors"] == 12
        assert f.attrs["gapseek_version"]
    assert not list(demo_store.glob(".*.tmp"))


def test_predictions_are_physical(demo_store):
    fs = open_store(demo_store)
    gap = dict(zip(fs.formula, fs.prediction))
    # PBE-trained model: wide-gap ionic solids above 3 eV, Si and GaAs below 1.5 eV
    assert gap["NaCl"] > 3.0 and gap["MgO"] > 3.0
    assert gap["Si"] < 1.5 and gap["GaAs"] < 1.5


def test_export_csv_roundtrip(demo_store, tmp_path):
    out = tmp_path / "f.csv"
    assert main(["export", str(demo_store), "--csv", str(out), "--failures-csv", str(tmp_path / "x.csv")]) == 0
    rows = list(csv.reader(open(out)))
    assert rows[0][:4] == ["id", "formula", "prediction", "pooled0"] and rows[0][-1] == "hidden31"
    fs = open_store(demo_store)
    got = np.array([[float(v) for v in r[2:]] for r in rows[1:]], dtype=np.float32)
    want = np.concatenate([fs.prediction[:, None], fs.pooled, fs.hidden], axis=1)
    np.testing.assert_array_equal(got, want)
    fails = list(csv.DictReader(open(tmp_path / "x.csv")))
    assert {f["id"] for f in fails} == {"InGaAs-disordered", "not-a-structure"}


def test_existing_store_is_not_overwritten(demo_store, model_dir, capsys):
    rc = main(["featurize", str(EXAMPLES / "Si.cif"), "--out", str(demo_store), "--model", str(model_dir)])
    assert rc == 1 and "--overwrite" in capsys.readouterr().err


def test_workers_give_identical_results(tmp_path, model_dir):
    args = ["featurize", str(EXAMPLES), "--model", str(model_dir), "--no-progress", "--chunk-size", "3"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b"), "--workers", "2"]) == 0
    a, b = open_store(tmp_path / "a"), open_store(tmp_path / "b")
    assert a.ids == b.ids and a.failures == b.failures
    np.testing.assert_array_equal(a.pooled, b.pooled)


def test_missing_input_is_an_error(tmp_path, capsys):
    assert main(["featurize", str(tmp_path / "nope"), "--out", str(tmp_path / "s")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_console_script_runs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gapseek.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("gapseek ")
