"""``gapseek ingest mp`` against a local stand-in of the Materials Project API (tests/mp_server.py: real crystals of
../shared/data/mp-gap-36k, served on 127.0.0.1 in the shapes the official client expects), through the real
client (mp-api); and the provenance it records, carried through index, featurize, merge and a campaign."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
from conftest import MP_DIR, need
from mp_server import serve

from gapseek.cli import main
from gapseek.errors import ConfigError, IngestError
from gapseek.ingest.mp import MPQuery, ingest_mp

KEY = "Zq7" + "x" * 26 + "K9w"  # 32 characters, like a real key; must never be written or logged
WINDOW = MPQuery(band_gap=(2.50, 2.52))  # 89 materials of the pool
N_WINDOW = 89


@pytest.fixture(scope="module")
def server():
    with serve(need(MP_DIR), KEY) as s:
        yield s


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    """The client may write a settings file under ~: keep it in the test's folder (checked for the key)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MP_API_KEY", raising=False)
    monkeypatch.delenv("MP_API_ENDPOINT", raising=False)


def _expected(lo: float, hi: float) -> dict[str, float]:
    with open(MP_DIR / "meta.csv", newline="") as fh:
        return {r["material_id"]: float(r["band_gap"]) for r in csv.DictReader(fh)
                if lo <= float(r["band_gap"]) <= hi}


def _no_key_anywhere(*folders: Path) -> None:
    for folder in folders:
        for p in folder.rglob("*"):
            if p.is_file():
                assert KEY.encode() not in p.read_bytes(), f"the API key was written to {p}"


def test_query_in_pages_then_structures_in_batches(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    n0 = len(server.requests)
    res = ingest_mp(tmp_path / "out", WINDOW, api_key=KEY, endpoint=server.url, batch=30, page=25)
    want = _expected(2.50, 2.52)
    assert len(want) == N_WINDOW and res.n == N_WINDOW and res.written == N_WINDOW and not res.missing
    reqs = server.requests[n0:]
    query = [r for r in reqs if "material_ids" not in r]
    assert [int(r.get("_skip", 0)) for r in query] == [0, 25, 50, 75]  # pages of 25: _skip/_limit
    assert all(r["band_gap_min"] == "2.5" and r["band_gap_max"] == "2.52" for r in query)
    batches = [r["material_ids"].split(",") for r in reqs if "material_ids" in r]
    assert [len(b) for b in batches] == [30, 30, 29]
    cifs = sorted(p.stem for p in (tmp_path / "out" / "cif").glob("*.cif"))
    assert cifs == sorted(want)
    with open(tmp_path / "out" / "labels.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", "band_gap"] and {r[0]: float(r[1]) for r in rows[1:]} == want
    src = json.loads((tmp_path / "out" / "gapseek-source.json").read_text())
    assert src["database"] == "Materials Project" and src["release"] == "2021.05.13"
    assert src["query"] == {"band_gap": [2.5, 2.52]} and src["complete"] and src["n"] == N_WINDOW
    assert src["client"].startswith("mp-api ")
    # a CIF holds the crystal the server sent: same composition and cell volume as the pool's CIF
    from pymatgen.core import Structure

    a = Structure.from_file(tmp_path / "out" / "cif" / f"{cifs[0]}.cif")
    b = Structure.from_file(MP_DIR / "cifs" / f"{cifs[0]}.cif")
    assert a.composition == b.composition and a.volume == pytest.approx(b.volume, rel=1e-6)
    _no_key_anywhere(tmp_path)
    assert KEY not in caplog.text


def test_throttled_requests_are_retried_by_the_client(server, tmp_path):
    n0 = len(server.requests)
    server.set(throttle=2)  # the next two requests answer 429 (Retry-After: 0)
    res = ingest_mp(tmp_path / "out", MPQuery(band_gap=(2.50, 2.505)), api_key=KEY, endpoint=server.url)
    assert res.written == res.n > 0
    assert len(server.requests) - n0 == 2 + 2  # two 429s, then the query and one batch of structures
    assert server.state.throttle == 0


def test_bad_key_is_a_clear_error_that_names_no_key(server, tmp_path):
    wrong = "W" * 32
    with pytest.raises(IngestError, match="refused the API key") as exc:
        ingest_mp(tmp_path / "out", WINDOW, api_key=wrong, endpoint=server.url)
    assert wrong not in str(exc.value)
    with pytest.raises(IngestError, match="not a Materials Project key"):
        ingest_mp(tmp_path / "out2", WINDOW, api_key="short", endpoint=server.url)
    with pytest.raises(ConfigError, match="no Materials Project API key"):
        ingest_mp(tmp_path / "out3", WINDOW, endpoint=server.url)


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(IngestError, match="cannot reach http://127.0.0.1:9/"):
        ingest_mp(tmp_path / "out", WINDOW, api_key=KEY, endpoint="http://127.0.0.1:9/")


def test_query_without_criteria_is_refused_before_any_request(tmp_path):
    with pytest.raises(ConfigError, match="without criteria.*bulk \\(S3\\) path"):
        ingest_mp(tmp_path / "out", MPQuery(), api_key=KEY, endpoint="http://127.0.0.1:9/")
    assert not (tmp_path / "out").exists()


def test_interrupted_download_resumes_without_fetching_again(server, tmp_path):
    out = tmp_path / "out"
    server.set(fail_after=server.state.served + 40)  # the server fails (500) once 40 more structures went out
    with pytest.raises(IngestError, match=r"status code 500.*stopped after 40 of 89 CIFs.*same command again"):
        ingest_mp(out, WINDOW, api_key=KEY, endpoint=server.url, batch=20, retries=1, backoff=0)
    assert len(list((out / "cif").glob("*.cif"))) == 40
    assert not json.loads((out / "gapseek-source.json").read_text())["complete"]
    server.set(fail_after=None)
    before = server.state.served
    res = ingest_mp(out, WINDOW, api_key=KEY, endpoint=server.url, batch=20)
    assert (res.kept, res.written, server.state.served - before) == (40, N_WINDOW, N_WINDOW - 40)
    assert len(list((out / "cif").glob("*.cif"))) == N_WINDOW
    assert not list(out.rglob(".*.tmp"))  # no half-written file left behind
    # another query into the same folder, or a database that moved on, is refused (no mixed releases)
    with pytest.raises(IngestError, match="holds another download"):
        ingest_mp(out, MPQuery(band_gap=(1.0, 1.1)), api_key=KEY, endpoint=server.url)
    with serve(MP_DIR, KEY, db_version="2099.01.01") as newer:
        with pytest.raises(IngestError, match="database version 2021.05.13, the server now reports 2099.01.01"):
            ingest_mp(out, WINDOW, api_key=KEY, endpoint=newer.url)


def test_from_ingest_to_a_campaign_every_step_says_where_the_crystals_came_from(server, tmp_path, tiny_model,
                                                                                 monkeypatch, capsys):
    """The command line as a user runs it (key and endpoint from the environment): ingest -> index -> featurize
    (shards) -> merge -> search; the store, summary.json and the plot's footer name the database and release."""
    monkeypatch.setenv("MP_API_KEY", KEY)
    monkeypatch.setenv("MP_API_ENDPOINT", server.url)
    out, store = tmp_path / "mp", tmp_path / "store"
    assert main(["ingest", "mp", str(out), "--band-gap", "2.3:2.6", "--num-sites", ":8", "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "materials (database 2021.05.13)" in said and KEY not in said
    assert any(r.get("nsites_max") == "8" and r.get("band_gap_min") == "2.3" for r in server.requests)
    assert main(["index", str(out), "--out", str(store), "--shards", "2"]) == 0
    assert "data: Materials Project 2021.05.13, queried" in capsys.readouterr().out
    model = ["--model", str(tiny_model), "--model-sha256", "any", "--no-progress"]
    assert main(["featurize", str(store), "--merge", *model]) == 0
    from gapseek.store import Store

    with Store.open(store) as s:
        prov = s.provenance
    assert prov["sources"][0]["database"] == "Materials Project" and prov["sources"][0]["release"] == "2021.05.13"
    assert prov["sources"][0]["query"]["band_gap"] == [2.3, 2.6] and prov["model_sha256"]
    assert main(["search", str(store), "--labels", str(out / "labels.csv"), "--prior", "10", "--target", "2.45",
                 "--budget", "3", "--engine", "random", "--out", str(tmp_path / "camp")]) == 0
    summary = json.loads((tmp_path / "camp" / "summary.json").read_text())
    assert summary["provenance"]["sources"][0]["release"] == "2021.05.13"
    assert summary["data"].startswith("data: Materials Project 2021.05.13, queried"), summary["data"]
    assert "band_gap 2.3..2.6" in summary["data"] and "model sha256" in summary["data"]
    _no_key_anywhere(tmp_path)


def test_command_line_ranges_and_refusals(tmp_path, capsys):
    from gapseek.cli.ingest import parse_range

    assert parse_range("2.3:2.8", "band-gap", 0.0, 100.0) == (2.3, 2.8)
    assert parse_range(":0.05", "energy-above-hull", 0.0, 100.0) == (0.0, 0.05)
    assert parse_range("4:", "num-sites", 1, 10**6, int) == (4, 10**6)
    assert parse_range("3", "num-elements", 1, 118, int) == (3, 3)
    with pytest.raises(ConfigError, match="--band-gap 'wide'"):
        parse_range("wide", "band-gap", 0.0, 100.0)
    with pytest.raises(ConfigError, match="min <= max"):
        MPQuery(band_gap=(2.8, 2.3))
    # no criterion: refused before any request (the client would go to the bulk S3 download), nothing written
    assert main(["ingest", "mp", str(tmp_path / "out"), "--api-key", KEY, "--endpoint", "http://127.0.0.1:9/"]) == 1
    err = capsys.readouterr().err
    assert "without criteria" in err and KEY not in err and not (tmp_path / "out").exists()
    assert main(["ingest"]) == 1 and "name a source: `gapseek ingest mp OUT" in capsys.readouterr().err
