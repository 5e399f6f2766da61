"""The forecast a lab reads before it spends money (gapseek.search.forecast): checked against what simulated
campaigns then do, on synthetic pools whose truth is known, with a biased predictor too; and where it shows up
(``gapseek campaign``, ``gapseek forecast``, the benchmark's forecasts.csv and its forecast check)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from test_lab_features import _lab, _tell
from test_search import T, _synthetic_store

from gapseek.cli import main
from gapseek.errors import ConfigError
from gapseek.search.benchmark.baselines import random_first_hit_expectation
from gapseek.search.forecast import forecast, hit_probabilities


def _pool(n=20000, sd=0.3, shift=0.0, scale=1.0, seed=0):
    """Gaps spread over 0-5 eV (a tenth metals), a predictor with Gaussian error ``sd``, then biased:
    ``prediction = shift + scale * (gap + error)``."""
    rng = np.random.default_rng(seed)
    gap = np.where(rng.random(n) < 0.1, 0.0, rng.gamma(4.0, 0.6, n))
    pred = shift + scale * (np.maximum(gap, 0.3) + rng.normal(0, sd, n))
    return pred, gap


def _realised(pred, gap, prior, target, tol, budget, score):
    """First hit (budget + 1 if none) when picking the non-prior crystals in increasing ``score``."""
    left = np.setdiff1d(np.arange(pred.size), prior)
    order = left[np.argsort(score[left], kind="stable")[:budget]]
    hit = np.abs(gap[order] - target) <= tol
    return int(np.argmax(hit)) + 1 if hit.any() else budget + 1


@pytest.mark.parametrize("shift,scale", [(0.0, 1.0), (-0.4, 1.2)], ids=["unbiased", "biased"])
def test_forecast_matches_what_campaigns_then_do_over_many_targets(shift, scale):
    """Over 40 targets (a new prior of 150 labels each): random's forecast within 15% of its exact expectation,
    the engine's (picking by hit probability) within 25% of the realised mean, and the realised first hits inside
    the forecast's 10-90% range in 60-95% of the campaigns. A bias of the predictor changes none of this: the
    forecast calibrates on the labels."""
    pred, gap = _pool(shift=shift, scale=scale)
    budget, tol = 100, 0.02
    fc_e, re_e, fc_r, ex_r, inside = [], [], [], [], []
    for k, target in enumerate(np.linspace(1.0, 4.0, 40)):
        rng = np.random.default_rng(k)
        prior = rng.choice(pred.size, 150, replace=False)
        left = np.setdiff1d(np.arange(pred.size), prior)
        fc = forecast(pred[left], pred[prior], gap[prior], target, tol, budget, n_boot=10, seed=k)
        p, _ = hit_probabilities(pred, pred[prior], gap[prior], target, tol)
        first = _realised(pred, gap, prior, target, tol, budget, -p)
        fc_e.append(fc.engine_first_hit)
        re_e.append(first)
        fc_r.append(fc.random_first_hit)
        hits = int(np.sum(np.abs(gap[left] - target) <= tol))
        ex_r.append(random_first_hit_expectation(left.size, hits, budget))
        inside.append(fc.first_hit_quantiles[0] <= first <= fc.first_hit_quantiles[2])
    assert abs(np.mean(fc_r) / np.mean(ex_r) - 1) < 0.15, (np.mean(fc_r), np.mean(ex_r))
    assert abs(np.mean(fc_e) / np.mean(re_e) - 1) < 0.25, (np.mean(fc_e), np.mean(re_e))
    assert 0.6 <= np.mean(inside) <= 0.95, np.mean(inside)
    assert np.mean(ex_r) / np.mean(fc_e) > 2  # the predictor is worth it here, and the forecast says so


def test_a_useless_predictor_is_forecast_no_better_than_random():
    pred, gap = _pool()
    pred = np.random.default_rng(1).permutation(pred)  # no relation to the gaps left
    prior = np.random.default_rng(2).choice(pred.size, 200, replace=False)
    left = np.setdiff1d(np.arange(pred.size), prior)
    fc = forecast(pred[left], pred[prior], gap[prior], 2.5, 0.02, 100, n_boot=20)
    assert fc.acceleration < 1.3, fc
    assert fc.random_first_hit_interval[0] <= fc.random_first_hit <= fc.random_first_hit_interval[1]


def test_forecast_refuses_what_it_cannot_do():
    pred, gap = _pool(n=500)
    with pytest.raises(ConfigError, match="at least 8 labelled"):
        forecast(pred[10:], pred[:5], gap[:5], 2.5, 0.01, 100)
    with pytest.raises(ConfigError, match="budget"):
        forecast(pred[10:], pred[:10], gap[:10], 2.5, 0.01, 0)
    with pytest.raises(ConfigError, match="not metals"):
        forecast(pred[10:], pred[:10], np.zeros(10), 2.5, 0.01, 100)


def test_campaign_prints_and_saves_its_forecast_and_forecast_follows_the_labels(tmp_path, capsys):
    store, gap, _, _, out = _lab(tmp_path, "--plan", "40")
    said = capsys.readouterr().out
    assert f"forecast for T = {T:g}" in said and "budget 40" in said and "random: first hit after" in said
    first = json.loads((out / "forecast.json").read_text())
    assert first["labels_used"] == 30 and first["budget"] == 40
    assert first["random_first_hit"] <= 41 and first["engine_first_hit"] <= 41
    _tell(tmp_path, out, gap, [f"mp-{k}" for k in range(30, 60)])
    capsys.readouterr()
    assert main(["forecast", str(out), "--budget", "20", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["budget"] == 20 and again["labels"] == 60 and again["candidates"] == first["candidates"] - 30
    assert json.loads((out / "forecast.json").read_text())["labels_used"] == 60


def test_benchmark_records_a_forecast_per_seed_and_checks_it(tmp_path, capsys):
    store, labels, _ = _synthetic_store(tmp_path)
    out = tmp_path / "bench"
    args = ["benchmark", str(store), "--labels", str(labels), "--target", str(T), "--tolerance", "0.05",
            "--budget", "15", "--engines", "random,predicted", "--prior", "30", "--out", str(out), "--no-progress"]
    assert main([*args, "--seeds", "3"]) == 0
    said = capsys.readouterr().out
    assert "forecast from each prior, before any trial (3 campaigns)" in said
    with open(out / "forecasts.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["seed"]) for r in rows] == [0, 1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ceiling"]["campaigns"] == 3 and summary["ceiling"]["sigma_mean"] > 0
    check = summary["forecast_check"]
    assert check["campaigns_forecast"] == 3 and set(check["engines"]) == {"predicted"}
    assert 0 <= check["engines"]["predicted"]["inside_forecast_10_90"] <= 1
    assert main([*args, "--seeds", "4"]) == 0  # a resume forecasts only the new seed
    for name in ("forecasts.csv", "ceilings.csv"):
        with open(out / name) as f:
            assert [int(r["seed"]) for r in csv.DictReader(f)] == [0, 1, 2, 3], name


def test_ceiling_is_perfect_without_error_and_random_with_a_useless_one():
    from gapseek.search.benchmark.baselines import ceiling_first_hit

    _, gap = _pool(n=5000)
    rows = np.arange(gap.size)
    hits = int(np.sum(np.abs(gap - 2.5) <= 0.01))
    assert hits > 0
    assert ceiling_first_hit(gap, rows, 2.5, 0.01, 0.0, 100, np.random.default_rng(0)) == 1.0
    useless = ceiling_first_hit(gap, rows, 2.5, 0.01, 100.0, 100, np.random.default_rng(0), draws=200)
    exact = random_first_hit_expectation(gap.size, hits, 100)
    assert abs(useless / exact - 1) < 0.1, (useless, exact)
    middle = ceiling_first_hit(gap, rows, 2.5, 0.01, 0.3, 100, np.random.default_rng(0), draws=50)
    assert 1.0 < middle < 0.8 * exact
