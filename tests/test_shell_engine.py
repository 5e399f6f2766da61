"""The default engine, ``shell``: calibration of the CGCNN prediction on the campaign's labels, the shell that
follows it, the fallback when the prediction is noise, batches and pending crystals, exact resumption."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_interrupted
from test_search import _synthetic_store

from gapseek.cli import main
from gapseek.search.calibration import calibrate
from gapseek.search.campaign import Campaign
from gapseek.search.engines import DEFAULT_ENGINE, ShellEngine, make_engine
from gapseek.search.gp import IsoGP
from gapseek.search.pool import Pool
from gapseek.search.settings import CampaignSettings

T = 2.534


def _pool(n=4000, shift=0.0, scale=1.0, noise=0.3, seed=0, useless=False):
    """A pool whose gap is a smooth function of 3 inputs; the prediction is ``scale * gap + shift`` plus noise
    (or pure noise), and a fifth of the crystals are metals (gap 0)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    gap = np.clip(2.5 + 1.0 * np.tanh(X[:, 0]) + 0.5 * np.sin(2 * X[:, 1]), 0.0, None)
    gap[rng.random(n) < 0.2] = 0.0
    pred = scale * gap + shift + rng.normal(0, noise, n)
    if useless:
        pred = rng.uniform(0, 5, n)
    pool = Pool([f"c{k}" for k in range(n)], ["X"] * n, X, pred, T, 0.01)
    return pool, gap


def test_calibration_recovers_a_known_bias_and_scale():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.5, 5.0, 150)
    g = 0.3 + 1.2 * p + rng.normal(0, 0.1, 150)
    g[:30] = 0.0  # metals: left out of the fit, they say nothing about gaps near T
    cal = calibrate(p, g, T)
    assert cal.a == pytest.approx(0.3, abs=0.08) and cal.b == pytest.approx(1.2, abs=0.05)
    assert cal.spread == pytest.approx(0.1, abs=0.04) and cal.useful and cal.n_used == 120
    # too few labels: the identity
    few = calibrate(p[30:35], g[30:35], T)
    assert (few.a, few.b) == (0.0, 1.0)


@pytest.mark.parametrize("shift", [0.4, -0.4])
def test_the_shell_follows_a_biased_prediction(shift):
    pool, gap = _pool(shift=shift, noise=0.2)
    observed = np.random.default_rng(2).choice(len(pool), 150, replace=False)
    engine = ShellEngine(min_candidates=50)
    cand, cal, w = engine.candidates(pool, observed, gap[observed])
    # the prediction that the calibration maps to T is the biased one, T + shift
    assert w is not None and (T - cal.a) / cal.b == pytest.approx(T + shift, abs=0.12)
    # the shell holds crystals whose true gaps lie around T, not around T - shift
    assert abs(np.median(gap[cand]) - T) < 0.15
    raw = np.setdiff1d(np.nonzero(np.abs(pool.prediction - T) <= w)[0], observed)
    assert abs(np.median(gap[raw]) - T) > 0.25
    # and its hit rate beats the uncalibrated shell's
    window = 0.1
    assert np.mean(np.abs(gap[cand] - T) <= window) > 1.5 * np.mean(np.abs(gap[raw] - T) <= window)


def test_a_noise_prediction_falls_back_to_the_whole_pool():
    pool, gap = _pool(useless=True)
    observed = np.random.default_rng(3).choice(len(pool), 120, replace=False)
    engine = ShellEngine()
    cand, cal, w = engine.candidates(pool, observed, gap[observed])
    assert not cal.useful and w is None and cand.size == len(pool) - 120
    picks = engine.propose(pool, observed, gap[observed], 2, np.random.default_rng(0))
    assert len(picks) == 2 and "whole pool" in picks[0][1]


def test_the_shell_widens_when_it_runs_out():
    pool, gap = _pool(noise=0.05)
    observed = np.random.default_rng(4).choice(len(pool), 100, replace=False)
    engine = ShellEngine(min_candidates=500)
    cand, _, w = engine.candidates(pool, observed, gap[observed])
    assert cand.size == 500 and w > ShellEngine().shell_min
    # fewer unexplored crystals than min_candidates: all of them
    tiny, tgap = _pool(n=300, noise=0.05)
    obs = np.arange(0, 300, 3)
    cand, _, w = ShellEngine(min_candidates=500).candidates(tiny, obs, tgap[obs])
    assert w is None and cand.size == 200


def test_on_a_big_pool_the_shell_narrows_to_its_nearest_and_batches_rescore_the_best():
    pool, gap = _pool(noise=0.3)
    observed = np.random.default_rng(6).choice(len(pool), 100, replace=False)
    y = gap[observed]
    wide = {"shell_k": 2.0, "min_candidates": 50}
    full, cal, w = ShellEngine(**wide).candidates(pool, observed, y)
    assert full.size > 400
    capped, _, w_capped = ShellEngine(**wide, max_candidates=200).candidates(pool, observed, y)
    assert capped.size == 200 and w_capped < w and set(capped) <= set(full)
    # the 200 kept are the nearest to T in calibrated prediction
    d = np.abs(cal(pool.prediction[full]) - T)
    assert np.max(np.abs(cal(pool.prediction[capped]) - T)) <= np.sort(d)[199] + 1e-12
    # re-scoring a batch among the first pass's best: the first pick is the same, the picks distinct; with a
    # re-score set as large as the shell, the batch is the one evaluated on every candidate
    every = [i for i, _ in ShellEngine(**wide, rescore=10**9).propose(pool, observed, y, 4, np.random.default_rng(0))]
    some = [i for i, _ in ShellEngine(**wide, rescore=50).propose(pool, observed, y, 4, np.random.default_rng(0))]
    assert some[0] == every[0] and len(set(some)) == 4 and not set(some) & set(observed.tolist())


def test_batches_are_distinct_exclude_pending_and_are_deterministic():
    pool, gap = _pool(noise=0.2)
    observed = np.random.default_rng(5).choice(len(pool), 100, replace=False)
    y = gap[observed]
    batch = [i for i, _ in ShellEngine().propose(pool, observed, y, 5, np.random.default_rng(0))]
    assert len(set(batch)) == 5 and not set(batch) & set(observed.tolist())
    again = [i for i, _ in ShellEngine().propose(pool, observed, y, 5, np.random.default_rng(99))]
    assert again == batch  # deterministic: the generator is not even needed
    later = [i for i, _ in ShellEngine().propose(pool, observed, y, 3, np.random.default_rng(0),
                                                 pending=np.array(batch[:2]))]
    assert not set(later) & set(batch[:2]) and len(set(later)) == 3
    # the believed pending crystals steer the next picks like the earlier picks of a joint batch
    assert later[0] == batch[2]


def test_the_iso_gp_fits_a_smooth_function_and_believes_without_rescaling():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(120, 3))
    y = np.sin(X[:, 0]) + 0.05 * rng.normal(size=120)
    gp = IsoGP(X, y)
    Xs = rng.normal(size=(200, 3))
    mu, sd = gp.predict(Xs)
    assert np.corrcoef(mu, np.sin(Xs[:, 0]))[0, 1] > 0.9 and np.all(sd > 0)
    s2 = gp.s2
    gp.believe(Xs[:1], mu[:1])
    mu2, sd2 = gp.predict(Xs[:1])
    assert mu2[0] == pytest.approx(mu[0], abs=1e-6) and sd2[0] < sd[0] and gp.s2 == s2


def test_shell_is_the_default_everywhere():
    assert DEFAULT_ENGINE == "shell" and CampaignSettings(target=T).engine == "shell"
    assert make_engine("shell").name == "shell"
    for name in ("gp-iso", "gp-abs-iso", "gp", "gp-abs"):  # the others stay for comparison, ARD ones included
        make_engine(name)


@pytest.mark.parametrize("batch,crash_at", [(1, 3), (2, 4)])
def test_the_shell_engine_resumes_exactly(tmp_path, monkeypatch, batch, crash_at):
    store, labels, _ = _synthetic_store(tmp_path)
    args = ["search", str(store), "--labels", str(labels), "--prior", "20", "--target", str(T), "--tolerance",
            "0.02", "--budget", "5", "--batch", str(batch), "--seed", "3"]  # no --engine: the default, shell
    assert main(args + ["--out", str(tmp_path / "whole")]) == 0
    camp = Campaign(tmp_path / "whole")
    assert camp.settings.engine == "shell"
    whole = [r.id for r in camp.trials() if r.source == "oracle"]
    assert run_interrupted(args + ["--out", str(tmp_path / "cut")], crash_at, monkeypatch) == 130
    assert main(args + ["--out", str(tmp_path / "cut")]) == 0
    assert [r.id for r in Campaign(tmp_path / "cut").trials() if r.source == "oracle"] == whole


def test_parse_targets():
    from gapseek.errors import ConfigError
    from gapseek.search.benchmark.targets import parse_targets

    assert parse_targets("2.0,2.534") == [2.0, 2.534]
    assert parse_targets("1.0:4.0:0.25") == [1.0 + 0.25 * k for k in range(13)]
    assert parse_targets("1:2:0.3") == [1.0, 1.3, 1.6, 1.9]
    for bad in ("1:2", "2:1:0.5", "1:2:0", "a,b", "-1,2"):
        with pytest.raises(ConfigError, match="--targets"):
            parse_targets(bad)


def test_benchmark_over_targets_reports_per_target_and_aggregate(tmp_path, capsys):
    store, labels, gap = _synthetic_store(tmp_path)
    out = tmp_path / "sweep"
    args = ["benchmark", str(store), "--labels", str(labels), "--tolerance", "0.02", "--budget", "4", "--prior",
            "20", "--seeds", "2", "--engines", "random,predicted,shell", "--out", str(out), "--no-progress"]
    assert main(args + ["--targets", "2.3,2.534,9.0"]) == 0
    text = capsys.readouterr().out
    assert "over all targets" in text and "budget + 1" in text and "skipped (nothing to find): 9.0" in text
    import json

    s = json.loads((out / "targets.json").read_text())
    assert s["targets"] == [2.3, 2.534] and "9.0" in s["skipped"] and s["censored_at"] == 5
    for t in ("2.3", "2.534"):
        row = s["per_target"][t]
        assert set(row["engines"]) == {"random", "predicted", "shell"} and row["seeds"] == 2
        assert (out / f"T{t}" / "summary.json").is_file()
    agg = s["aggregate"]["shell"]
    assert agg["campaigns"] == 4 and 1 <= agg["first_hit_mean"] <= 5
    lo, hi = agg["acceleration_vs_random_exact_ci95"]
    assert lo <= agg["acceleration_vs_random_exact"] <= hi
    # resumed: nothing to run again
    assert main(args + ["--targets", "2.3,2.534"]) == 0
    assert capsys.readouterr().out.count("campaign(s) recorded, 0 to run") == 2
    assert main(args[:-3] + ["--out", str(tmp_path / "x")]) == 1  # neither --target nor --targets
    assert "--target T or --targets" in capsys.readouterr().err


def test_target_bands_put_the_top_target_in_the_last_band():
    from gapseek.search.benchmark.plots import target_bands

    targets = [round(1.0 + 0.01 * k, 2) for k in range(301)]
    idx, edges = target_bands(targets)
    assert len(edges) == 6 and edges[0] == (1.0, 1.5) and edges[-1] == (3.5, 4.0)
    assert [int(np.sum(idx == k)) for k in range(6)] == [50, 50, 50, 50, 50, 51]
    idx, edges = target_bands([2.5])
    assert list(idx) == [0] and len(edges) == 1


def test_many_targets_one_seed_print_bands_and_an_interval_over_targets(tmp_path, capsys):
    import json

    store, labels, gap = _synthetic_store(tmp_path)
    out = tmp_path / "many"
    assert main(["benchmark", str(store), "--labels", str(labels), "--tolerance", "0.05", "--budget", "5",
                 "--prior", "20", "--seeds", "1", "--engines", "predicted", "--out", str(out), "--no-progress",
                 "--targets", "2.0:3.3:0.05"]) == 0
    text = capsys.readouterr().out
    s = json.loads((out / "targets.json").read_text())
    kept = len(s["targets"])
    assert kept > 25 and "per band of 0.5 eV of targets" in text
    lo = min(s["targets"])
    assert f" {lo:.2f}-{lo + 0.5:.2f} " in text
    assert (out / "targets.png").stat().st_size > 10_000
    agg = s["aggregate"]["predicted"]
    assert agg["acceleration_vs_random_exact_ci95"] is None  # one seed: no interval over seeds
    lo, hi = agg["acceleration_vs_random_exact_ci95_over_targets"]
    assert lo <= agg["acceleration_vs_random_exact"] <= hi and lo < hi
    assert s["ceiling"]["campaigns"] == kept and s["forecast_check"]["campaigns_forecast"] == kept


def test_a_lab_driven_by_suggest_and_tell_gets_the_picks_the_benchmark_simulates(tmp_path, capsys):
    """The default engine keeps no state between proposals, so a lab campaign told the true gaps one by one picks
    exactly the crystals a simulated search with the same prior picks: the benchmark measures what a lab gets."""
    store, labels, gap = _synthetic_store(tmp_path)
    assert main(["search", str(store), "--labels", str(labels), "--prior", "20", "--target", str(T), "--tolerance",
                 "0.02", "--budget", "6", "--seed", "5", "--out", str(tmp_path / "sim")]) == 0
    trials = Campaign(tmp_path / "sim").trials()
    prior = [r.id for r in trials if r.source == "prior"]
    simulated = [r.id for r in trials if r.source == "oracle"]
    assert len(prior) == 20 and len(simulated) == 6
    prior_file = tmp_path / "prior.csv"
    prior_file.write_text("".join(f"{cid},{float(gap[int(cid[1:])])!r}\n" for cid in prior))
    lab = tmp_path / "lab"
    assert main(["campaign", str(store), "--target", str(T), "--tolerance", "0.02", "--prior", str(prior_file),
                 "--out", str(lab)]) == 0
    told = []
    for k in range(6):
        capsys.readouterr()
        assert main(["suggest", str(lab), "--n", "1"]) == 0
        cid = capsys.readouterr().out.strip().splitlines()[-1].split()[0]
        told.append(cid)
        (tmp_path / f"r{k}.csv").write_text(f"{cid},{float(gap[int(cid[1:])])!r}\n")
        assert main(["tell", str(lab), str(tmp_path / f"r{k}.csv")]) == 0
    assert told == simulated
