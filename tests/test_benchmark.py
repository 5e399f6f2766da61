"""The benchmark directory: resumed per (engine, seed), refused with other settings, crash-safe logs, campaigns
without a hit said as such, one line per campaign without a terminal; gpyopt's thread pools."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from gapseek.cli import main
from gapseek.errors import ConfigError, InputError
from gapseek.search.benchmark.run import run_benchmark
from gapseek.search.benchmark.summary import summarize_benchmark
from gapseek.search.campaign import draw_prior, simulate
from gapseek.search.engines import RandomEngine
from gapseek.search.labels import read_labels
from gapseek.search.pool import build_pool
from gapseek.search.settings import CampaignSettings
from gapseek.store import FeatureRows, StoreWriter

T = 2.534
BUDGET = 6


def _store(tmp_path, n=300, name="store"):
    """A small store whose gap follows the descriptors, and its labels (the same crystals for every ``n``)."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 3))
    pooled = (3.0 * z @ rng.normal(size=(3, 64)) + 0.1 * rng.normal(size=(400, 64))).astype(np.float32)
    hidden = (z @ rng.normal(size=(3, 32)) + 0.1 * rng.normal(size=(400, 32))).astype(np.float32)
    gap = 2.5 + 0.8 * np.tanh(z[:, 0] + 0.5 * z[:, 1])
    pred = (gap + rng.normal(0, 0.3, 400)).astype(np.float32)
    rows = FeatureRows(ids=[f"c{k}" for k in range(n)], paths=[f"c{k}.cif" for k in range(n)], formula=["X"] * n,
                       prediction=list(pred[:n]), pooled=list(pooled[:n]), hidden=list(hidden[:n]),
                       n_atoms=[1] * n, n_padded=[0] * n, n_tied=[0] * n)
    with StoreWriter(tmp_path / name, overwrite=True) as w:
        w.write(rows)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,band_gap\n" + "".join(f"c{k},{float(g)!r}\n" for k, g in enumerate(gap[:300])))
    return tmp_path / name, labels


def _settings(**kw):
    return CampaignSettings(**{"target": T, "tolerance": 0.02, "budget": BUDGET, **kw})


def _run(store, labels, out, engines, seeds, **kw):
    ran = []
    summary = run_benchmark(store, read_labels(labels), kw.pop("settings", _settings()), engines, seeds, 20, out,
                            progress=lambda name, seed, res: ran.append((name, seed)), labels_path=labels, **kw)
    return summary, ran


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _without_seconds(rows):
    return sorted(tuple(v for k, v in r.items() if k != "seconds") for r in rows)


def test_a_rerun_computes_only_the_missing_campaigns_and_equals_one_run(tmp_path):
    store, labels = _store(tmp_path)
    out, fresh = tmp_path / "b", tmp_path / "fresh"
    _, ran = _run(store, labels, out, ["random", "predicted"], 2)
    assert ran == [("random", 0), ("predicted", 0), ("random", 1), ("predicted", 1)]
    # more seeds and one more engine (gpyopt: it draws from numpy's global state): only the new pairs run
    summary, ran = _run(store, labels, out, ["random", "predicted", "gpyopt"], 3)
    assert sorted(ran) == sorted([("random", 2), ("predicted", 2)] + [("gpyopt", s) for s in range(3)])
    _, ran = _run(store, labels, out, ["random", "predicted", "gpyopt"], 3)
    assert ran == []  # everything recorded: the summary is only rebuilt
    runs = _rows(out / "runs.csv")
    assert len(runs) == 9 and len({(r["engine"], r["seed"]) for r in runs}) == 9
    # the pieces equal one run of the whole (seconds aside): the campaigns do not depend on what ran before
    one, ran = _run(store, labels, fresh, ["random", "predicted", "gpyopt"], 3)
    assert len(ran) == 9
    assert _without_seconds(runs) == _without_seconds(_rows(fresh / "runs.csv"))
    assert sorted(map(tuple, (r.values() for r in _rows(out / "trials.csv")))) == \
        sorted(map(tuple, (r.values() for r in _rows(fresh / "trials.csv"))))
    for name in ("random", "predicted", "gpyopt"):
        a, b = summary["engines"][name], one["engines"][name]
        assert a["per_seed"] == b["per_seed"] and a["first_hit_mean"] == b["first_hit_mean"]
        assert a["acceleration_vs_random_exact_ci95"] == b["acceleration_vs_random_exact_ci95"]
    # the summary covers every recorded row, even when a rerun asks for fewer seeds or engines
    fewer, ran = _run(store, labels, out, ["random"], 1)
    assert ran == [] and fewer["setting"]["seeds"] == 3 and set(fewer["engines"]) == {"random", "predicted", "gpyopt"}
    # trials.csv holds each campaign's picks, as the campaign's own generators give them
    settings = _settings()
    pool, truth = build_pool(store, settings, read_labels(labels))
    res = simulate(pool, truth, RandomEngine(), draw_prior(pool, 20, np.random.default_rng(1)), BUDGET, 1,
                   np.random.default_rng(1001))
    logged = [r for r in _rows(out / "trials.csv") if r["engine"] == "random" and r["seed"] == "1"]
    assert [(int(r["trial"]), r["id"], float(r["band_gap"])) for r in logged] == res.trials


def test_an_interrupted_benchmark_resumes_where_it_stopped(tmp_path):
    store, labels = _store(tmp_path)
    out, fresh = tmp_path / "b", tmp_path / "fresh"
    done = []

    def stop_after_three(name, seed, res):
        done.append((name, seed))
        if len(done) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_benchmark(store, read_labels(labels), _settings(), ["random", "predicted"], 3, 20, out,
                      progress=stop_after_three)
    assert len(_rows(out / "runs.csv")) == 3 and not (out / "summary.json").exists()
    # a crash inside a campaign: its trials written, no runs.csv row; and a runs.csv row cut short
    with open(out / "trials.csv", "a") as fh:
        fh.write("predicted,1,1,c5,2.9,0.366,0\npredicted,1,2,c6,2.8,0.26")
    with open(out / "runs.csv", "a") as fh:
        fh.write("predicted,1,4,1,1,0,0.")
    _, ran = _run(store, labels, out, ["random", "predicted"], 3)
    assert sorted(ran) == [("predicted", 1), ("predicted", 2), ("random", 2)]
    _run(store, labels, fresh, ["random", "predicted"], 3)
    assert _without_seconds(_rows(out / "runs.csv")) == _without_seconds(_rows(fresh / "runs.csv"))
    assert sorted(map(tuple, (r.values() for r in _rows(out / "trials.csv")))) == \
        sorted(map(tuple, (r.values() for r in _rows(fresh / "trials.csv"))))


def test_other_settings_are_refused_naming_them_unless_overwrite(tmp_path):
    store, labels = _store(tmp_path)
    out = tmp_path / "b"
    _run(store, labels, out, ["random"], 2)
    before = (out / "runs.csv").read_text()
    with pytest.raises(ConfigError, match=r"\(tolerance, budget differ — tolerance: recorded 0.02, now 0.05; "
                                          r"budget: recorded 6, now 9\).*--overwrite"):
        _run(store, labels, out, ["random"], 2, settings=_settings(tolerance=0.05, budget=9))
    with pytest.raises(ConfigError, match=r"\(label_range differ"):
        _run(store, labels, out, ["random"], 2, settings=_settings(label_range=(2.0, 3.0)))
    with pytest.raises(ConfigError, match=r"\(prior differ"):
        run_benchmark(store, read_labels(labels), _settings(), ["random"], 2, 30, out)
    other = tmp_path / "labels2.csv"
    other.write_text(labels.read_text().replace("c7,", "c7,1").replace("c8,", "c8,0"))
    with pytest.raises(ConfigError, match=r"\(labels differ"):
        _run(store, other, out, ["random"], 2)
    copy, _ = _store(tmp_path, name="copy")
    with pytest.raises(ConfigError, match=r"\(store differ"):
        _run(copy, labels, out, ["random"], 2)
    # the same store path and labels, but the store lost crystals: the pool differs
    _store(tmp_path, n=280)
    with pytest.raises(ConfigError, match=r"\(pool differ — pool: recorded 300 crystals.*now 280 crystals"):
        with pytest.warns(Warning, match="left out"):
            _run(store, labels, out, ["random"], 2, drop_missing=True)
    assert (out / "runs.csv").read_text() == before  # nothing written by a refused run
    # --overwrite starts anew with the new settings
    with pytest.warns(Warning, match="left out"):
        s, ran = _run(store, labels, out, ["random"], 1, drop_missing=True, overwrite=True,
                      settings=_settings(budget=4))
    assert ran == [("random", 0)] and s["setting"]["budget"] == 4 and s["setting"]["pool"] == 280
    assert len(_rows(out / "runs.csv")) == 1
    assert json.loads((out / "benchmark.json").read_text())["settings"]["budget"] == 4
    # a directory written before settings were recorded cannot be resumed
    old = tmp_path / "old"
    old.mkdir()
    (old / "runs.csv").write_text("engine,seed,first_hit,hits,prior_hits,seconds,random_expected\n")
    with pytest.raises(ConfigError, match="without benchmark.json"):
        _run(store, labels, old, ["random"], 1)


def test_campaigns_without_a_hit_say_none_and_the_censoring_is_documented(tmp_path):
    store, labels = _store(tmp_path)
    out = tmp_path / "b"
    s, _ = _run(store, labels, out, ["random", "predicted"], 6)
    assert s["setting"]["censored_at"] == BUDGET + 1 and "budget + 1" in s["setting"]["censoring"]
    runs = _rows(out / "runs.csv")
    for r in runs:
        assert r["found"] in ("0", "1") and (r["first_hit"] == "") == (r["found"] == "0")
    for name, e in s["engines"].items():
        mine = {int(r["seed"]): r for r in runs if r["engine"] == name}
        per = e["per_seed"]
        assert per["seed"] == sorted(mine)
        assert per["first_hit"] == [int(mine[k]["first_hit"]) if mine[k]["found"] == "1" else None
                                    for k in per["seed"]]
        censored = [BUDGET + 1 if f is None else f for f in per["first_hit"]]
        assert e["first_hit_mean"] == pytest.approx(np.mean(censored))
        assert e["not_found"] == per["first_hit"].count(None) == round((1 - e["found_rate"]) * 6)
        found = [f for f in per["first_hit"] if f is not None]
        assert e["first_hit_mean_found"] == (pytest.approx(np.mean(found)) if found else None)
    # the seeds give both cases, so the test means something
    assert any(f is None for e in s["engines"].values() for f in e["per_seed"]["first_hit"])
    assert any(f is not None for e in s["engines"].values() for f in e["per_seed"]["first_hit"])
    # one hit among 300 crystals, 6 trials: no campaign finds it; every first hit is null, the mean budget + 1
    s, _ = _run(store, labels, tmp_path / "none", ["random"], 2, settings=_settings(tolerance=0.002))
    assert s["setting"]["hits_in_pool"] == 1
    e = s["engines"]["random"]
    assert e["per_seed"]["first_hit"] == [None, None] and e["first_hit_mean"] == BUDGET + 1
    assert e["first_hit_mean_found"] is None and e["found_rate"] == 0
    assert summarize_benchmark(tmp_path / "none")["engines"]["random"]["per_seed"] == e["per_seed"]
    with pytest.raises(InputError, match="not a gapseek benchmark"):
        summarize_benchmark(tmp_path)


def test_cli_prints_a_line_per_campaign_without_a_terminal_and_resumes(tmp_path, capsys):
    store, labels = _store(tmp_path)
    out = tmp_path / "b"
    args = ["benchmark", str(store), "--labels", str(labels), "--target", str(T), "--tolerance", "0.02", "--budget",
            str(BUDGET), "--prior", "20", "--engines", "random,predicted", "--out", str(out)]
    assert main(args + ["--seeds", "2"]) == 0
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if ln.startswith("seed ")]
    assert len(lines) == 4 and all("first hit" in ln and "hits" in ln and " s)" in ln for ln in lines)
    assert any("first hit none" in ln for ln in lines) or all(ln.split()[5] != "none" for ln in lines)
    assert main(args + ["--seeds", "3"]) == 0
    text = capsys.readouterr().out
    assert "resuming" in text and "4 campaign(s) recorded, 2 to run" in text
    assert len([ln for ln in text.splitlines() if ln.startswith("seed ")]) == 2
    assert main(args + ["--seeds", "3", "--tolerance", "0.03"]) == 1
    assert "tolerance differ" in capsys.readouterr().err
    assert main(args + ["--seeds", "1", "--tolerance", "0.03", "--overwrite"]) == 0
    assert len(_rows(out / "runs.csv")) == 2
    assert (out / "curves.png").stat().st_size > 10_000


def test_gpyopt_runs_gpyopt_with_one_thread(tmp_path, monkeypatch):
    import GPyOpt
    from threadpoolctl import threadpool_info

    from gapseek.search.engines import make_engine

    store, labels = _store(tmp_path)
    pool, truth = build_pool(store, _settings(), read_labels(labels))
    prior = draw_prior(pool, 20, np.random.default_rng(0))
    seen = []
    suggest = GPyOpt.methods.BayesianOptimization.suggest_next_locations

    def spy(self, *a, **kw):
        seen.append({p["internal_api"]: p["num_threads"] for p in threadpool_info()})
        return suggest(self, *a, **kw)

    monkeypatch.setattr(GPyOpt.methods.BayesianOptimization, "suggest_next_locations", spy)
    picks = make_engine("gpyopt").propose(pool, prior, truth[prior], 1, np.random.default_rng(0))
    assert len(picks) == 1 and seen and all(v == 1 for v in seen[0].values()), seen
    assert make_engine("gpyopt").propose(pool, np.arange(len(pool)), truth, 1, np.random.default_rng(0)) == []
