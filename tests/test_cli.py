"""The command line (help, warnings, errors) and the store schema, end to end on the embedded examples."""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest
from conftest import EXAMPLES

from gapseek import cli
from gapseek.cli import main
from gapseek.model.hub import PINNED
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


# ------------------------------------------------------------------------------- help, warnings, user errors
@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("tiny") / "store"
    assert main(["featurize", str(EXAMPLES), "--out", str(out), "--model", str(tiny_model), "--model-sha256", "any",
                 "--no-progress"]) == 0
    return out


def _parsers(parser: argparse.ArgumentParser, name: str = "gapseek"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, child in action.choices.items():
                yield from _parsers(child, f"{name} {sub_name}")


def test_every_option_says_what_it_does_and_its_default():
    parsers = list(_parsers(cli.build_parser()))
    assert len(parsers) > 15  # every subcommand, and model's info/fetch
    undocumented, no_default = [], []
    for name, p in parsers:
        assert p.description, f"`{name} --help` has no description"
        formatter = p._get_formatter()
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            if a.help == argparse.SUPPRESS:
                continue
            label = f"{name} {a.option_strings[-1] if a.option_strings else a.dest}"
            if not (a.help or "").strip():
                undocumented.append(label)
                continue
            text = formatter._expand_help(a)
            told = a.default is not None and a.default is not False and a.default != [] and not a.required
            if a.option_strings and told and "default" not in text:
                no_default.append(label)
    assert not undocumented, f"options without help: {undocumented}"
    assert not no_default, f"options whose help hides their default: {no_default}"


def test_help_shows_defaults_and_one_engine_option(capsys):
    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    out = capsys.readouterr().out
    assert "--engines" in out and "--seeds N" in out and "(default: 20)" in out
    assert "--engine " not in out and "--engine\n" not in out  # the single-campaign --engine is hidden here
    with pytest.raises(SystemExit):
        main(["submit", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "in minutes (default: 120)" in out and "(default: 16)" in out


def test_empty_input_is_an_error_and_writes_no_store(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("no crystal here\n")
    assert main(["featurize", str(empty), "--out", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert "gapseek: error: no CIF file in" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()
    listing = tmp_path / "list.txt"
    listing.write_text("# nothing listed\n\n")
    assert main(["featurize", str(listing), "--out", str(tmp_path / "s")]) == 1
    assert "no CIF file" in capsys.readouterr().err and not (tmp_path / "s").exists()
    assert main(["index", str(empty), "--out", str(tmp_path / "i")]) == 1
    assert "gapseek: error:" in capsys.readouterr().err and not (tmp_path / "i" / "manifest.h5").exists()


def test_an_empty_folder_beside_others_is_a_warning(tmp_path, tiny_model, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["featurize", str(EXAMPLES / "Si.cif"), str(tmp_path / "empty"), "--out", str(tmp_path / "s"),
               "--model", str(tiny_model), "--model-sha256", "any", "--no-progress"])
    assert rc == 0 and len(open_store(tmp_path / "s")) == 1
    err = capsys.readouterr().err
    assert err.count("gapseek: warning:") == 1 and "holds no *.cif files" in err


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_gapseek_warnings_reach_stderr_once(tiny_store, tmp_path, capsys, verbose):
    ids = open_store(tiny_store).ids
    labels = tmp_path / "labels.csv"
    labels.write_text("id,band_gap\n" + "".join(f"{c},{1.0 + 0.25 * k}\n" for k, c in enumerate(ids))
                      + "ghost-1,1.0\n")
    rc = main([*verbose, "search", str(tiny_store), "--labels", str(labels), "--target", "1.5", "--prior", "2",
               "--budget", "2", "--engine", "random", "--drop-missing", "--out", str(tmp_path / "c")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    warned = [line for line in err.splitlines() if line.startswith("gapseek: warning:")]
    assert len(warned) == 1 and "ghost-1" in warned[0] and "left out" in warned[0], err
    assert "gapseek search:" in out


def test_library_warnings_are_shown_with_their_origin(capsys):
    with warnings.catch_warnings():
        cli._setup_logging(0)
        for _ in range(3):  # the same warning from the same place: once
            warnings.warn("something odd in a library", RuntimeWarning)  # noqa: B028
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("gapseek: warning: something odd in a library (RuntimeWarning from ")


def test_os_errors_are_messages_not_tracebacks(tiny_store, tmp_path, capsys):
    rc = main(["export", str(tiny_store), "--csv", str(tmp_path / "no-such-dir" / "f.csv")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("gapseek: error: ") and "f.csv" in err and "Traceback" not in err
