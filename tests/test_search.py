"""The search: acquisition maths, PCA persistence, engines on a problem with known structure, campaigns on disk
(resume, suggest/tell), the benchmark's summary, and clear errors on bad input."""

from __future__ import annotations

import csv
import json
import warnings

import h5py
import numpy as np
import pytest

from gapseek.cli import main
from gapseek.errors import ConfigError, GapseekWarning, InputError
from gapseek.search.acquisition import expected_improvement, expected_improvement_abs, probability_in_window
from gapseek.search.benchmark.baselines import bootstrap_ratio_ci, random_first_hit_expectation
from gapseek.search.campaign import Campaign, draw_prior, simulate
from gapseek.search.engines import GPEngine, RandomEngine, make_engine
from gapseek.search.labels import read_labels
from gapseek.search.pca import fit_pca, project
from gapseek.search.pool import Pool, build_pool
from gapseek.search.settings import CampaignSettings
from gapseek.store import FeatureRows, Store, StoreWriter

T = 2.534


def test_expected_improvement_of_the_distance_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mu = np.array([2.2, 2.534, 2.6, 3.5])
    sd = np.array([0.3, 0.05, 0.01, 1.0])
    best = 0.1
    y = rng.normal(mu, sd, size=(400_000, 4))
    mc = np.maximum(best - np.abs(y - T), 0).mean(axis=0)
    np.testing.assert_allclose(expected_improvement_abs(mu, sd, T, 0.01, best), mc, atol=2e-4)


def test_probability_in_window_matches_monte_carlo():
    rng = np.random.default_rng(1)
    mu, sd = np.array([2.53, 2.0]), np.array([0.02, 0.5])
    y = rng.normal(mu, sd, size=(400_000, 2))
    np.testing.assert_allclose(probability_in_window(mu, sd, T, 0.01, 0.1), (np.abs(y - T) <= 0.01).mean(axis=0),
                               atol=2e-3)


def _synthetic_store(tmp_path, n=600, seed=0):
    """A store whose gap is a smooth function of the descriptors (so learning must help), and its labels."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))  # a 3-d latent structure that the descriptors carry, as PCA will find
    pooled = (3.0 * z @ rng.normal(size=(3, 64)) + 0.1 * rng.normal(size=(n, 64))).astype(np.float32)
    hidden = (z @ rng.normal(size=(3, 32)) + 0.1 * rng.normal(size=(n, 32))).astype(np.float32)
    gap = 2.5 + 0.8 * np.tanh(z[:, 0] + 0.5 * z[:, 1])
    rows = FeatureRows(ids=[f"c{k}" for k in range(n)], paths=[f"c{k}.cif" for k in range(n)],
                       formula=["X"] * n, prediction=list((gap + rng.normal(0, 0.3, n)).astype(np.float32)),
                       pooled=list(pooled), hidden=list(hidden), n_atoms=[1] * n, n_padded=[0] * n, n_tied=[0] * n)
    with StoreWriter(tmp_path / "store") as w:
        w.write(rows)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,band_gap\n" + "".join(f"c{k},{float(g)!r}\n" for k, g in enumerate(gap)))
    return tmp_path / "store", labels, gap


def _saved_pca(store, vector):
    with Store.open(store) as st:
        return st.pca(vector)


def test_pca_is_persisted_and_incremental_agrees_with_full(tmp_path, capsys):
    store, _, _ = _synthetic_store(tmp_path)
    assert main(["pca", str(store), "--components", "3", "--vector", "both"]) == 0
    assert "explained variance ratio" in capsys.readouterr().out
    with Store.open(store) as st:
        full = st.pca("both")
        assert full.components.shape == (3, 96) and full.method == "full"
        inc = fit_pca(st, 3, "both", batch_rows=200)
        assert inc.method.startswith("incremental")
        np.testing.assert_allclose(inc.explained_variance_ratio, full.explained_variance_ratio, rtol=0.05)
        st.save_pca(inc)  # replaces the saved one
        assert st.pca("both").method.startswith("incremental")  # read back through the reopened handle
    with h5py.File(store / "features.h5", "r") as f:
        assert f["pca/both"].attrs["method"].startswith("incremental")
        both = np.hstack([f["hidden"][()], f["pooled"][()]]).astype(np.float64)
    with Store.open(store) as st:
        with pytest.raises(ConfigError, match="between 1 and"):
            fit_pca(st, 97, "both")
        # block-wise reads and projections equal a plain read, for all rows and for a subset across blocks
        rows = np.sort(np.random.default_rng(1).choice(len(both), size=77, replace=False))
        np.testing.assert_array_equal(np.vstack(list(st.iter_vectors("both", rows, block=64))), both[rows])
        np.testing.assert_allclose(project(st, inc, rows), inc.transform(both[rows]), rtol=1e-12)
        assert project(st, inc).shape == (len(both), 3) and st.vectors("hidden", rows[:0]).shape == (0, 32)
        with pytest.raises(ConfigError, match="sorted, unique"):
            st.vectors("pooled", rows[::-1])


def test_gp_engine_beats_random_where_the_descriptors_carry_the_gap(tmp_path):
    store, labels, gap = _synthetic_store(tmp_path)
    settings = CampaignSettings(target=T, tolerance=0.02, features="pca", components=3, vector="pooled", budget=15)
    pool, truth = build_pool(store, settings, read_labels(labels))
    firsts = {"gp": [], "random": []}
    for seed in range(4):
        prior = draw_prior(pool, 30, np.random.default_rng(seed))
        for name, engine in (("gp", GPEngine(prior_mean="none")), ("random", RandomEngine())):
            res = simulate(pool, truth, engine, prior, settings.budget, 1, np.random.default_rng(seed))
            firsts[name].append(res.first_hit)
            assert len({t[1] for t in res.trials}) == len(res.trials)  # never the same crystal twice
            assert not set(pool.ids[i] for i in prior) & {t[1] for t in res.trials}
    assert np.mean(firsts["gp"]) < np.mean(firsts["random"]) / 2, firsts


def test_batches_are_joint_and_gpyopt_proposes_pool_rows(tmp_path):
    store, labels, _ = _synthetic_store(tmp_path)
    settings = CampaignSettings(target=T, budget=5)
    pool, truth = build_pool(store, settings, read_labels(labels))
    with_pred, _ = build_pool(store, CampaignSettings(target=T, budget=5, prediction_input=True), read_labels(labels))
    assert with_pred.X.shape == (pool.X.shape[0], pool.X.shape[1] + 1)
    np.testing.assert_allclose(np.corrcoef(with_pred.X[:, -1], with_pred.prediction)[0, 1], 1.0)
    prior = draw_prior(pool, 40, np.random.default_rng(0))
    picks = GPEngine().propose(pool, prior, truth[prior], 4, np.random.default_rng(0))
    rows = [i for i, _ in picks]
    assert len(set(rows)) == 4 and not set(rows) & set(prior.tolist())
    for name in ("random", "predicted", "gpyopt"):
        first = make_engine(name).propose(pool, prior, truth[prior], 1, np.random.default_rng(0))[0][0]
        again = make_engine(name).propose(pool, prior, truth[prior], 1, np.random.default_rng(0),
                                          pending=np.array([first]))[0][0]
        assert first != again and again not in set(prior.tolist())
    g = make_engine("gpyopt").propose(pool, prior, truth[prior], 1, np.random.default_rng(0))
    assert len(g) == 1 and g[0][0] not in set(prior.tolist()) and 0 <= g[0][0] < len(pool)
    # gpyopt is reproducible from the campaign's generator, whatever numpy's global state, and leaves that state
    picks = set()
    for s in range(4):
        np.random.seed(s)
        before = np.random.get_state()[1].copy()
        picks.add(make_engine("gpyopt").propose(pool, prior, truth[prior], 1, np.random.default_rng(7))[0][0])
        np.testing.assert_array_equal(np.random.get_state()[1], before)
    assert len(picks) == 1


@pytest.mark.parametrize("acquisition", ["pin", "ei", "ei-f"])
def test_pending_crystals_count_like_the_earlier_picks_of_a_joint_batch(tmp_path, acquisition):
    # believed at their posterior mean, in the EI incumbent too: asking for 2 with the first 2 of a joint batch of
    # 4 in flight gives the batch's last 2 (prior seed 1: there, a batch that left its picks out of the incumbent
    # would differ for ei-f)
    store, labels, _ = _synthetic_store(tmp_path)
    pool, truth = build_pool(store, CampaignSettings(target=T, budget=5), read_labels(labels))
    prior = draw_prior(pool, 40, np.random.default_rng(1))
    batch = [i for i, _ in GPEngine(acquisition).propose(pool, prior, truth[prior], 4, np.random.default_rng(0))]
    later = GPEngine(acquisition).propose(pool, prior, truth[prior], 2, np.random.default_rng(0),
                                          pending=np.array(batch[:2]))
    assert len(set(batch)) == 4 and [i for i, _ in later] == batch[2:]


@pytest.mark.parametrize("engine", ["gp-ei", "gp-abs"])
def test_pending_crystals_are_believed_not_only_left_out(engine):
    # a smooth gap (the GP learns almost no noise) in a pool where every crystal has a twin with the same
    # descriptors: believing a pending crystal at its mean makes its twin worthless to measure (no expected
    # improvement left); leaving it out without believing it (here: moving it far away) proposes the twin
    rng = np.random.default_rng(0)
    n = 300
    X = rng.uniform(-2, 2, size=(n, 2))
    gap = 2.5 + 0.5 * np.sin(X[:, 0]) * np.cos(X[:, 1])
    truth = np.concatenate([gap, gap])

    def pool_of(Xp):
        return Pool(ids=[f"c{k}" for k in range(2 * n)], formula=["X"] * (2 * n), X=Xp, prediction=np.zeros(2 * n),
                    target=T, tolerance=0.01)

    twins = np.vstack([X, X])
    observed = rng.choice(n, size=30, replace=False)
    first = make_engine(engine).propose(pool_of(twins), observed, truth[observed], 1, np.random.default_rng(0))[0][0]
    twin = first + n if first < n else first - n
    believed = make_engine(engine).propose(pool_of(twins), observed, truth[observed], 1, np.random.default_rng(0),
                                           pending=np.array([first]))[0][0]
    far = twins.copy()
    far[first] += 1e6
    left_out = make_engine(engine).propose(pool_of(far), observed, truth[observed], 1, np.random.default_rng(0),
                                           pending=np.array([first]))[0][0]
    assert left_out == twin and believed not in (first, twin)


def test_search_resumes_after_a_crash_and_writes_its_outputs(tmp_path, monkeypatch, capsys):
    store, labels, _ = _synthetic_store(tmp_path)
    out = tmp_path / "camp"
    args = ["search", str(store), "--labels", str(labels), "--prior", "20", "--target", str(T), "--budget", "8",
            "--engine", "random", "--out", str(out)]
    import gapseek.search.engines as engines

    calls = {"n": 0}
    real = engines.RandomEngine.propose

    def crash(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(engines.RandomEngine, "propose", crash)
    assert main(args) == 130
    assert len(Campaign(out).trials()) == 20 + 3  # the prior and 3 trials survived
    monkeypatch.setattr(engines.RandomEngine, "propose", real)
    assert main(args) == 0
    assert "resuming" in capsys.readouterr().out
    trials = Campaign(out).trials()
    assert [r.trial for r in trials if r.source == "oracle"] == list(range(1, 9))
    assert len({r.id for r in trials}) == len(trials) == 28
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 8 and (out / "campaign.png").stat().st_size > 1000
    header = (out / "trials.csv").read_text().splitlines()[0]
    assert header == "trial,id,formula,band_gap,abs_error,hit,engine,source"
    # a larger budget extends the campaign; other settings are refused
    assert main(args[:-4] + ["--budget", "10", "--engine", "random", "--out", str(out)]) == 0
    assert sum(1 for r in Campaign(out).trials() if r.source == "oracle") == 10
    assert main(args[:-4] + ["--budget", "10", "--engine", "gp", "--out", str(out)]) == 1
    assert "other settings" in capsys.readouterr().err


def _lab_campaign(tmp_path):
    """A lab campaign on a synthetic store, its prior the measured gaps of c0..c24: (store, gaps, directory)."""
    store, _, gap = _synthetic_store(tmp_path)
    prior = tmp_path / "prior.csv"
    prior.write_text("".join(f"c{k},{float(gap[k])!r}\n" for k in range(25)))
    out = tmp_path / "lab"
    assert main(["campaign", str(store), "--target", str(T), "--prior", str(prior), "--out", str(out)]) == 0
    return store, gap, out


def test_lab_campaign_suggest_tell_and_its_errors(tmp_path, capsys):
    store, gap, out = _lab_campaign(tmp_path)
    assert main(["suggest", str(out), "--n", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    suggested = [ln.split()[0] for ln in lines[-3:]]
    assert len(set(suggested)) == 3
    # asked again before telling: the 3 are being measured, so 2 others come, chosen with them in mind
    assert main(["suggest", str(out), "--n", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("3 earlier suggestion(s) not yet told")
    more = [ln.split()[0] for ln in lines[-2:]]
    assert len(set(more)) == 2 and not set(more) & set(suggested)
    assert main(["suggest", str(out), "--n", "3", "--ignore-pending"]) == 0
    assert [ln.split()[0] for ln in capsys.readouterr().out.strip().splitlines()[-3:]] == suggested
    res = tmp_path / "res.csv"
    res.write_text("".join(f"{c},{float(gap[int(c[1:])])!r}\n" for c in suggested))
    assert main(["tell", str(out), str(res)]) == 0
    assert "campaign: 3 measured" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    errs = [abs(float(gap[int(c[1:])]) - T) for c in suggested]
    assert summary["trials"] == 3 and summary["best_abs_error"] == pytest.approx(min(errs), rel=1e-5)
    assert (out / "campaign.png").stat().st_size > 1000
    pool, _ = build_pool(store, CampaignSettings(target=T))
    assert [pool.ids[i] for i in Campaign(out).pending(pool)] == more  # the told ones are no longer pending
    # a suggestion that will not be measured is released (and may come again); only pending ids can be
    assert main(["tell", str(out), "--release", more[0]]) == 0
    assert [pool.ids[i] for i in Campaign(out).pending(pool)] == more[1:]
    assert main(["tell", str(out), "--release", more[0], suggested[0]]) == 1
    assert "2 id(s) are not pending suggestions" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("nope,1.0\n")
    assert main(["tell", str(out), str(bad), "--release", more[1]]) == 1  # refused results: nothing released
    assert "nothing was recorded or released" in capsys.readouterr().err
    assert [pool.ids[i] for i in Campaign(out).pending(pool)] == more[1:]
    Campaign(out).log_suggestions([(more[0], "X", "again")])
    assert [pool.ids[i] for i in Campaign(out).pending(pool)] == [more[1], more[0]]
    # a log from before the event column is upgraded in place before anything is appended to it
    log = out / "suggestions.csv"
    with open(log, newline="") as fh:
        old_rows = [r[:4] for r in csv.reader(fh)][1:]
    with open(log, "w", newline="") as fh:
        csv.writer(fh).writerows([["time", "id", "formula", "why"], *old_rows])
    Campaign(out).release(pool, [more[1]])  # every old row counts as suggested: more[0] is in flight again
    with open(log, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["time", "id", "formula", "why", "event"] and len(rows) == 1 + len(old_rows) + 1
    assert [r[4] for r in rows[1:]] == ["suggested"] * len(old_rows) + ["released"]
    assert [pool.ids[i] for i in Campaign(out).pending(pool)] == [more[0]]
    assert main(["tell", str(out)]) == 1
    assert main(["tell", str(out), str(res)]) == 1
    assert "already recorded" in capsys.readouterr().err
    res.write_text("nope,1.0\n")
    assert main(["tell", str(out), str(res)]) == 1
    assert "not in the campaign's store: nope" in capsys.readouterr().err
    assert len(Campaign(out).trials()) == 28
    meta = json.loads((out / "campaign.json").read_text())
    meta["gapseek_campaign"] = 99
    (out / "campaign.json").write_text(json.dumps(meta))
    assert main(["suggest", str(out)]) == 1
    assert "another gapseek version" in capsys.readouterr().err


def test_trial_numbers_stay_consecutive_with_two_writers(tmp_path):
    store, labels, gap = _synthetic_store(tmp_path)
    settings = CampaignSettings(target=T)
    pool, _ = build_pool(store, settings)
    a = Campaign.create(tmp_path / "c", store, Store.open(store), settings, mode="lab")
    b = Campaign(tmp_path / "c")  # e.g. a second `gapseek tell` on the same campaign
    a.record(pool, [("c0", float(gap[0])), ("c1", float(gap[1]))], "prior")
    a.record(pool, [("c2", float(gap[2]))], "tell")
    b.record(pool, [("c3", float(gap[3])), ("c4", float(gap[4]))], "tell")
    a.record(pool, [("c5", float(gap[5]))], "tell")
    trials = Campaign(tmp_path / "c").trials()
    assert [(r.id, r.trial) for r in trials] == [("c0", 0), ("c1", 0), ("c2", 1), ("c3", 2), ("c4", 3),
                                                            ("c5", 4)]


def test_bad_labels_and_pools_are_clear_errors(tmp_path):
    store, labels, _ = _synthetic_store(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("c1,nan\nc2,-0.5\nc3,abc\nc4,1.0\nc4,2.0\n")
    with pytest.raises(InputError, match=r"4 bad label line\(s\).*line 1.*nan.*line 2.*-0.5.*line 3.*abc"):
        read_labels(bad)
    extra = tmp_path / "extra.csv"
    extra.write_text(labels.read_text() + "".join(f"ghost{k},1.0\n" for k in range(8)))
    settings = CampaignSettings(target=T)
    with pytest.raises(InputError, match="8 labelled id.*ghost0.*and 3 more"):
        build_pool(store, settings, read_labels(extra))
    with pytest.warns(GapseekWarning, match="8 labelled id.*left out"):
        build_pool(store, settings, read_labels(extra), drop_missing=True)
    with pytest.raises(InputError, match="pool is empty"):
        build_pool(store, CampaignSettings(target=T, label_range=(10.0, 11.0)), read_labels(labels))
    pool, _ = build_pool(store, settings, read_labels(labels))
    with pytest.raises(ConfigError, match="not smaller than the pool"):
        draw_prior(pool, 600, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="unknown engine 'nope'; valid: shell, random, predicted"):
        make_engine("nope")


def test_benchmark_writes_the_summary_schema(tmp_path, capsys):
    store, labels, _ = _synthetic_store(tmp_path)
    out = tmp_path / "bench"
    assert main(["benchmark", str(store), "--labels", str(labels), "--target", str(T), "--tolerance", "0.02",
                 "--budget", "6", "--prior", "20", "--seeds", "3", "--engines", "random,predicted,gp",
                 "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    # a synthetic store written without an index or a model: nothing recorded, and said so
    assert s["provenance"]["sources"] == [] and s["data"] == "data: sources not recorded"
    for name in ("random", "predicted", "gp"):
        e = s["engines"][name]
        assert {"first_hit_median", "first_hit_mean", "found_rate", "hits_mean"} <= set(e)
        assert 1 <= e["first_hit_mean"] <= 7 and 0 <= e["found_rate"] <= 1
        lo, hi = e["acceleration_vs_random_exact_ci95"]
        assert lo <= e["acceleration_vs_random_exact"] <= hi
    # the comparison with the simulated random engine is paired by seed: its ratio is that of the per-seed means
    censored = s["setting"]["censored_at"]

    def mean_first(name):
        return np.mean([censored if f is None else f for f in s["engines"][name]["per_seed"]["first_hit"]])

    assert s["engines"]["predicted"]["acceleration_vs_random"] == pytest.approx(
        mean_first("random") / mean_first("predicted"))
    assert s["engines"]["predicted"]["acceleration_vs_random_runs"] == 3
    bad = ["benchmark", str(store), "--labels", str(labels), "--target", str(T), "--seeds", "0", "--out",
           str(tmp_path / "b0")]
    assert main(bad) == 1
    assert "at least one seed" in capsys.readouterr().err
    assert (out / "curves.png").stat().st_size > 1000
    runs = (out / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 3 * 3
    # the exact baseline per seed is what random sampling gives for that seed's prior
    n_pool, n_hits = s["setting"]["pool"], s["setting"]["hits_in_pool"]
    for line in runs[1:]:
        row = dict(zip(runs[0].split(","), line.split(",")))
        want = random_first_hit_expectation(n_pool - 20, n_hits - int(row["prior_hits"]), 6)
        assert float(row["random_expected"]) == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("candidates,hits,budget", [(40, 3, 10), (25, 1, 30), (2082 - 100, 70, 30), (10, 0, 5),
                                                   (3, 0, 5), (6, 6, 5), (4, 2, 9)])
def test_exact_random_first_hit_matches_simulation(candidates, hits, budget):
    rng = np.random.default_rng(candidates + hits)
    n = 20000
    is_hit = np.zeros(candidates, dtype=bool)
    is_hit[:hits] = True
    orders = rng.permuted(np.tile(is_hit, (n, 1)), axis=1)[:, :budget]  # a budget beyond the pool draws it all
    found = orders.any(axis=1)
    first = np.where(found, orders.argmax(axis=1) + 1, budget + 1)
    exact = random_first_hit_expectation(candidates, hits, budget)
    assert abs(first.mean() - exact) <= 4 * first.std() / np.sqrt(n) + 1e-9
    if hits == 0:
        assert exact == pytest.approx(budget + 1, abs=1e-9)
    if hits == candidates:
        assert exact == pytest.approx(1, abs=1e-9)


def test_bootstrap_interval_covers_the_ratio_and_narrows_with_seeds():
    rng = np.random.default_rng(0)
    a, b = rng.exponential(20, 400) + 1, rng.exponential(10, 400) + 1
    wide = bootstrap_ratio_ci(a[:20], b[:20], np.random.default_rng(1))
    narrow = bootstrap_ratio_ci(a, b, np.random.default_rng(1))
    assert bootstrap_ratio_ci(a[:1], b[:1], np.random.default_rng(1)) is None
    assert wide[0] < a[:20].mean() / b[:20].mean() < wide[1]
    assert narrow[0] < a.mean() / b.mean() < narrow[1]
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


@pytest.mark.parametrize("kernel", ["matern52", "rbf"])
def test_fast_posterior_equals_gpy_predict(kernel):
    from gapseek.search.gp import gp_posterior

    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 3))
    y = np.sin(X[:, 0]) + 0.1 * rng.normal(size=60)
    model = GPEngine(kernel=kernel)._fit(X, y)
    Xn = np.vstack([rng.normal(size=(500, 3)), X[:20] + 1e-3])  # with rows next to observations (small sd)
    mu, var = model.predict(Xn)
    fmu, fsd = gp_posterior(model, chunk_bytes=8 * 60 * 70)(Xn)  # 70-row chunks, the last one partial
    np.testing.assert_allclose(fmu, mu[:, 0], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(fsd, np.sqrt(var[:, 0]), rtol=1e-6, atol=1e-9)


def test_believed_observations_keep_the_mean_and_shrink_the_variance_only_near_them():
    from gapseek.search.gp import gp_posterior

    rng = np.random.default_rng(5)
    X = rng.uniform(-3, 3, size=(30, 2))
    y = np.sin(X[:, 0]) + 0.05 * rng.normal(size=30)
    model = GPEngine()._fit(X, y)
    lengths = np.asarray(model.kern.lengthscale.values)
    believed = np.array([[0.0, 0.0], [0.3, -0.2], [-0.2, 0.4], [0.1, 0.1]])
    far = np.array([[3.0, 3.0], [-3.0, -3.0]]) + 10 * lengths  # many lengthscales from any believed point
    probe = np.vstack([rng.uniform(-3, 3, size=(200, 2)), far])
    mu0, sd0 = gp_posterior(model)(probe)
    fantasy = gp_posterior(model)(believed)[0]
    model.set_XY(np.vstack([X, believed]), np.concatenate([y, fantasy])[:, None])
    mu1, sd1 = gp_posterior(model)(probe)
    np.testing.assert_allclose(mu1, mu0, atol=1e-6)
    assert np.all(sd1 <= sd0 + 1e-9)
    np.testing.assert_allclose(sd1[-2:], sd0[-2:], rtol=1e-6)
    assert gp_posterior(model)(believed)[1].max() < 0.5 * sd0.max()


def test_classic_expected_improvement_matches_monte_carlo():
    rng = np.random.default_rng(2)
    mu, sd = np.array([0.05, 0.2, 0.0]), np.array([0.02, 0.1, 0.3])
    f = rng.normal(mu, sd, size=(2_000_000, 3))  # Monte Carlo standard error <= 1.5e-4
    np.testing.assert_allclose(expected_improvement(mu, sd, T, 0.01, 0.06), np.maximum(0.06 - f, 0).mean(axis=0),
                               atol=6e-4)


def test_a_target_typo_is_refused_before_anything_runs(tmp_path, capsys):
    store, labels, gap = _synthetic_store(tmp_path)
    lab = read_labels(labels)
    # no labelled crystal within the tolerance: nothing to find, an error naming T, the labels' range and count
    with pytest.raises(ConfigError, match=rf"within 0.01 eV of the target 25.34 eV: the 600 labelled crystal\(s\) "
                                          rf"of the pool span {gap.min():.3f}-{gap.max():.3f} eV"):
        build_pool(store, CampaignSettings(target=25.34), lab)
    with pytest.raises(ConfigError, match=r"--label-range 2.3 2.8\) span"):
        build_pool(store, CampaignSettings(target=2.9, label_range=(2.3, 2.8)), lab)
    # outside the range but a hit possible: a warning that counts them
    edge = float(gap.max()) + 0.005
    near = int(np.sum(np.abs(gap - edge) <= 0.01))
    with pytest.warns(GapseekWarning, match=rf"outside the labels' range.*\({near} within 0.01 eV of the target\)"):
        pool, _ = build_pool(store, CampaignSettings(target=edge), lab)
    with pytest.raises(ConfigError, match="the target is a band gap, >= 0 eV; got --target -1"):
        CampaignSettings(target=-1.0)
    # from the command line: an error on stderr, and no campaign written
    for target in ("50", "-1"):
        out = tmp_path / f"camp{target}"
        assert main(["search", str(store), "--labels", str(labels), "--prior", "20", "--target", target,
                     "--budget", "3", "--engine", "random", "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert "error:" in err and (("nothing to find" in err) if target == "50" else (">= 0 eV" in err))
        assert not out.exists()
    prior = tmp_path / "prior.csv"
    prior.write_text("".join(f"c{k},{float(gap[k])!r}\n" for k in range(10)))
    assert main(["campaign", str(store), "--target", "-0.5", "--prior", str(prior), "--out", str(tmp_path / "l")]) == 1
    assert ">= 0 eV" in capsys.readouterr().err and not (tmp_path / "l").exists()
    # a lab target far outside the prior's measured gaps: warned about (the lab may know better), still created
    from gapseek.search.campaign import start_lab_campaign

    with pytest.warns(GapseekWarning, match=r"target 25.34 eV lies 2\d.\d\d eV outside the prior's 10 measured"):
        start_lab_campaign(store, CampaignSettings(target=25.34), read_labels(prior), tmp_path / "far")
    assert (tmp_path / "far" / "campaign.json").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within the margin: silent
        camp, _ = start_lab_campaign(store, CampaignSettings(target=float(gap[:10].max()) + 0.9), read_labels(prior),
                                     tmp_path / "near")
    assert json.loads((tmp_path / "near" / "campaign.json").read_text())["settings"]["budget"] is None


def test_search_says_which_pca_it_uses(tmp_path, capsys):
    store, labels, _ = _synthetic_store(tmp_path)
    base = ["search", str(store), "--labels", str(labels), "--prior", "20", "--target", str(T), "--budget", "2",
            "--engine", "random", "--overwrite", "--out", str(tmp_path / "c")]
    # gapseek pca fits pooled by default: the one search uses
    assert main(["pca", str(store), "--components", "4"]) == 0
    assert "pca: pooled" in capsys.readouterr().out
    stored = _saved_pca(store, "pooled")
    assert stored.origin == "gapseek pca" and stored.created and stored.n_components == 4
    assert main(base) == 0
    err = capsys.readouterr().err
    assert "PCA: the store's pooled PCA fitted by gapseek pca on " + stored.created[:10] in err
    assert "its first 3 of 4 components" in err
    np.testing.assert_array_equal(_saved_pca(store, "pooled").components, stored.components)  # not refitted
    # more components than stored: said, refitted and saved in its place
    assert main(base + ["--components", "5"]) == 0
    err = capsys.readouterr().err
    assert "pooled PCA (fitted by gapseek pca on" in err and "has 4 component(s), 5 asked; fitted 5" in err
    assert "in place of the old one" in err
    refit = _saved_pca(store, "pooled")
    assert refit.n_components == 5 and refit.origin == "gapseek search"
    # another vector: there is none of it; the one there is named
    assert main(base + ["--vector", "hidden"]) == 0
    err = capsys.readouterr().err
    assert "the store has no PCA of hidden (it has one of pooled: --vector pooled would use it); fitted 3" in err
    # the lab commands say it too; full vectors need no PCA, and nothing is said
    prior = tmp_path / "prior.csv"
    prior.write_text("c1,2.5\nc2,2.6\n")
    assert main(["campaign", str(store), "--target", str(T), "--prior", str(prior), "--out", str(tmp_path / "l")]) == 0
    assert "gapseek campaign: PCA: the store's pooled PCA fitted by gapseek search" in capsys.readouterr().err
    assert main(["suggest", str(tmp_path / "l")]) == 0
    assert "gapseek suggest: PCA: the store's pooled PCA" in capsys.readouterr().err
    assert main(base + ["--features", "full"]) == 0
    assert "PCA" not in capsys.readouterr().err


def test_resuming_with_other_settings_names_each_difference(tmp_path, capsys):
    store, labels, _ = _synthetic_store(tmp_path)
    out = tmp_path / "c"
    args = ["search", str(store), "--labels", str(labels), "--prior", "20", "--target", str(T), "--budget", "2",
            "--engine", "random", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args[:6] + ["--target", "2.6", "--budget", "2", "--engine", "gp", "--prior", "30", "--out",
                            str(out)]) == 1
    err = capsys.readouterr().err
    assert "other settings (stored -> given): target: 2.534 -> 2.6; engine: 'random' -> 'gp'; prior: 20 -> 30" in err
    assert "CampaignSettings(" not in err and "--overwrite" in err
    assert sum(1 for r in Campaign(out).trials() if r.source == "oracle") == 2  # untouched


def test_summary_says_none_when_no_hit_and_starts_from_the_prior(tmp_path, capsys):
    store, labels, gap = _synthetic_store(tmp_path)
    one = float(gap[599])  # the only crystal within 1e-6 eV: random finds it in 3 trials with p = 3/580
    out = tmp_path / "c"
    assert main(["search", str(store), "--labels", str(labels), "--prior", "20", "--target", repr(one),
                 "--tolerance", "1e-6", "--budget", "3", "--engine", "random", "--out", str(out)]) == 0
    assert "0 hit(s) in 3 trials, none in 3 trial(s)" in capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert s["mode"] == "simulated" and s["budget"] == 3 and s["trials"] == 3
    assert s["found"] is False and s["first_hit"] is None and s["first_hit_censored_at"] == 3
    rows = Campaign(out).trials()
    prior_err = [r.abs_error for r in rows if r.source == "prior"]
    assert s["prior"] == 20 == len(prior_err) and s["prior_best_abs_error"] == pytest.approx(min(prior_err))
    best = min((r for r in rows if r.source == "prior"), key=lambda r: r.abs_error)
    assert s["prior_best_id"] == best.id
    assert "unsuggested" not in s
    # a hit: first_hit set, nothing censored
    out2 = tmp_path / "d"
    assert main(["search", str(store), "--labels", str(labels), "--prior", "20", "--target", str(T),
                 "--tolerance", "0.3", "--budget", "5", "--engine", "random", "--out", str(out2)]) == 0
    s = json.loads((out2 / "summary.json").read_text())
    assert s["found"] is True and 1 <= s["first_hit"] <= 5 and s["first_hit_censored_at"] is None
    first = next(r.trial for r in Campaign(out2).trials() if r.source == "oracle" and r.hit)
    assert s["first_hit"] == first


def test_tell_marks_ids_never_suggested(tmp_path, capsys):
    store, gap, out = _lab_campaign(tmp_path)
    assert main(["suggest", str(out), "--n", "2"]) == 0
    suggested = [ln.split()[0] for ln in capsys.readouterr().out.strip().splitlines()[-2:]]
    other = next(f"c{k}" for k in range(25, 600) if f"c{k}" not in suggested)
    res = tmp_path / "res.csv"
    res.write_text("".join(f"{c},{float(gap[int(c[1:])])!r}\n" for c in [suggested[0], other]))
    assert main(["tell", str(out), str(res)]) == 0
    printed = capsys.readouterr().out
    assert f"1 of them never suggested by this campaign: {other} (recorded as lab-unsuggested" in printed
    sources = {r.id: r.source for r in Campaign(out).trials()}
    assert sources[suggested[0]] == "lab" and sources[other] == "lab-unsuggested"
    s = json.loads((out / "summary.json").read_text())
    assert s["mode"] == "lab" and s["budget"] is None and s["trials"] == 2 and s["unsuggested"] == 1
    assert s["prior"] == 25 and (s["found"] or s["first_hit_censored_at"] == 2)
    # a released suggestion measured anyway was suggested all the same
    assert main(["tell", str(out), "--release", suggested[1]]) == 0
    res.write_text(f"{suggested[1]},{float(gap[int(suggested[1][1:])])!r}\n")
    assert main(["tell", str(out), str(res)]) == 0
    assert "never suggested" not in capsys.readouterr().out
    # a log from before lab-unsuggested existed (every lab trial 'lab') reads as it is
    log = out / "trials.csv"
    log.write_text(log.read_text().replace("lab-unsuggested", "lab"))
    assert json.loads((out / "summary.json").read_text())["trials"] == 3
    assert Campaign(out).report(600)["unsuggested"] == 0


def test_campaign_plot_is_drawn_for_simulated_and_lab_runs(tmp_path):
    from gapseek.search.campaign.report import plot_campaign

    # smoke over the edge cases: no prior, an exact hit (|gap - T| = 0 on a log axis), unsuggested trials
    for kw in ({}, {"prior_gaps": [2.0, 3.1], "prior_ids": ["p0", "p1"], "budget": 5},
               {"prior_gaps": [2.0], "prior_ids": ["p0"], "unsuggested": [False, True, False]}):
        path = tmp_path / f"c{len(kw)}.png"
        plot_campaign(path, [2.2, T, 2.9], ["a", "b", "c"], T, 0.01, "t", **kw)
        assert path.stat().st_size > 5000
