"""What a lab needs besides suggest/tell: crystals that could not be made or measured (``tell --failed``: kept
apart from the trials, never proposed again by any engine, counted in summary.json), and candidate filters
(``--require-elements``, ``--exclude-elements``, ``--max-elements``, ``--max-atoms``, ``--exclude FILE``) kept in
campaign.json so that every ``suggest`` applies them, on a store with real formulas."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
from test_search import T, _synthetic_store

from gapseek.cli import main
from gapseek.errors import ConfigError, GapseekWarning
from gapseek.search.campaign import Campaign, open_campaign
from gapseek.search.engines import ENGINES, make_engine
from gapseek.search.filters import allowed_rows, composition, read_exclude_file
from gapseek.search.pool import build_pool
from gapseek.search.settings import CampaignSettings
from gapseek.store import FeatureRows, StoreWriter

# (formula, its elements): the store cycles through them, with n_atoms varying
FORMULAS = {
    "SrTiO3": {"Sr", "Ti", "O"}, "Li2FeSiO4": {"Li", "Fe", "Si", "O"}, "Fe2O3": {"Fe", "O"}, "FeO": {"Fe", "O"},
    "PbTiO3": {"Pb", "Ti", "O"}, "CdS": {"Cd", "S"}, "HgTe": {"Hg", "Te"}, "GaAs": {"Ga", "As"},
    "ZnO": {"Zn", "O"}, "LiFePO4": {"Li", "Fe", "P", "O"}, "BaTiO3": {"Ba", "Ti", "O"},
    "CaTiO3": {"Ca", "Ti", "O"}, "Fe3O4": {"Fe", "O"}, "CuFeO2": {"Cu", "Fe", "O"}, "NaCl": {"Na", "Cl"},
    "MgAl2O4": {"Mg", "Al", "O"}, "Cs2AgBiBr6": {"Cs", "Ag", "Bi", "Br"}, "KFeO2": {"K", "Fe", "O"},
    "Bi2Se3": {"Bi", "Se"}, "PbFe12O19": {"Pb", "Fe", "O"},
}


def _formula_store(tmp_path, n=400, seed=0):
    """A store like test_search's synthetic one (the gap a smooth function of the descriptors), with real formulas
    and 2-60 atoms per cell: (store, labels file, gaps, formulas, n_atoms)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    pooled = (3.0 * z @ rng.normal(size=(3, 64)) + 0.1 * rng.normal(size=(n, 64))).astype(np.float32)
    hidden = (z @ rng.normal(size=(3, 32)) + 0.1 * rng.normal(size=(n, 32))).astype(np.float32)
    gap = 2.5 + 0.8 * np.tanh(z[:, 0] + 0.5 * z[:, 1])
    names = list(FORMULAS)
    formula = [names[k % len(names)] for k in range(n)]
    n_atoms = [int(a) for a in rng.integers(2, 61, size=n)]
    rows = FeatureRows(ids=[f"mp-{k}" for k in range(n)], paths=[f"mp-{k}.cif" for k in range(n)], formula=formula,
                       prediction=list((gap + rng.normal(0, 0.3, n)).astype(np.float32)), pooled=list(pooled),
                       hidden=list(hidden), n_atoms=n_atoms, n_padded=[0] * n, n_tied=[0] * n)
    with StoreWriter(tmp_path / "store") as w:
        w.write(rows)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,band_gap\n" + "".join(f"mp-{k},{float(g)!r}\n" for k, g in enumerate(gap)))
    return tmp_path / "store", labels, gap, formula, n_atoms


def _lab(tmp_path, *options, prior=range(30), engine="predicted"):
    store, _, gap, formula, n_atoms = _formula_store(tmp_path)
    prior_file = tmp_path / "prior.csv"
    prior_file.write_text("".join(f"mp-{k},{float(gap[k])!r}\n" for k in prior))
    out = tmp_path / "lab"
    assert main(["campaign", str(store), "--target", str(T), "--prior", str(prior_file), "--out", str(out),
                 "--engine", engine, *options]) == 0
    return store, gap, formula, n_atoms, out


def _suggest(out, capsys, n, *options) -> list[str]:
    assert main(["suggest", str(out), "--n", str(n), *options]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    return [ln.split()[0] for ln in lines[-n:]]


def _tell(tmp_path, out, gap, ids) -> None:
    res = tmp_path / "res.csv"
    res.write_text("".join(f"{c},{float(gap[int(c[3:])])!r}\n" for c in ids))
    assert main(["tell", str(out), str(res)]) == 0


# ---------------------------------------------------------------------------------------------- failed crystals
def test_failed_crystals_are_never_proposed_again_and_survive_reopening(tmp_path, capsys):
    store, gap, formula, _, out = _lab(tmp_path)
    first = _suggest(out, capsys, 3)
    # predicted is deterministic: asked again, disregarding what is pending, it proposes the same three
    assert _suggest(out, capsys, 3, "--ignore-pending") == first
    assert main(["tell", str(out), "--failed", first[0], "--reason", "could not be  synthesised"]) == 0
    printed = capsys.readouterr().out
    assert f"recorded 1 crystal(s) as failed (could not be synthesised), never to be proposed again: {first[0]}" \
        in printed
    assert "0 measured, 0 hit(s), 1 failed (not trials)" in printed
    with open(out / "failed.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["id"], r["formula"], r["reason"]) for r in rows] == [
        (first[0], formula[int(first[0][3:])], "could not be synthesised")]
    assert rows[0]["time"][:2] == "20"
    assert all(r.source == "prior" for r in Campaign(out).trials())  # not a trial
    camp, pool = open_campaign(out)
    assert [pool.ids[i] for i in camp.pending(pool)] == first[1:]  # no longer pending
    assert pool.excluded is not None and pool.excluded[pool.index[first[0]]] and pool.excluded.sum() == 1
    # never again: not among what predicted ranks first, whether pending counts or not, over several rounds
    again = _suggest(out, capsys, 3, "--ignore-pending")
    assert first[0] not in again and again[:2] == first[1:]
    _tell(tmp_path, out, gap, first[1:])
    seen = set()
    for _ in range(4):
        picks = _suggest(out, capsys, 5)
        assert first[0] not in picks
        seen |= set(picks)
    # every engine, asked for every candidate left, leaves it out (random: exhaustively)
    camp, pool = open_campaign(out)
    observed, y = camp.observed(pool)
    everything = make_engine("random").propose(pool, observed, y, len(pool), np.random.default_rng(0))
    assert {pool.ids[i] for i, _ in everything} == set(pool.ids) - {pool.ids[i] for i in observed} - {first[0]}
    for name in ENGINES:
        picks = make_engine(name).propose(pool, observed, y, 3, np.random.default_rng(0))
        assert len(picks) == 3 and first[0] not in {pool.ids[i] for i, _ in picks}, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == 1 and summary["failed_ids"] == [first[0]] and summary["trials"] == 2
    # a second failure (no reason given) is appended; the file stays one header and one line a crystal
    assert main(["tell", str(out), "--failed", again[2]]) == 0
    capsys.readouterr()
    assert Campaign(out).failed_ids() == {first[0], again[2]}
    assert (out / "failed.csv").read_text().count("\n") == 3
    assert json.loads((out / "summary.json").read_text())["failed_ids"] == [first[0], again[2]]


def test_failed_ids_must_be_in_the_store_and_not_recorded_yet(tmp_path, capsys):
    _, gap, _, _, out = _lab(tmp_path)
    picks = _suggest(out, capsys, 2)
    for args, message in (
            (["--failed", picks[0], "nope"], "1 id(s) not in the campaign's store: nope"),
            (["--failed", picks[0], "mp-3"], "1 id(s) already measured (in trials.csv): mp-3"),  # the prior
            (["--failed", picks[0], picks[0]], f"1 id(s) given twice: {picks[0]}"),
            (["--reason", "x"], "--reason goes with --failed")):
        assert main(["tell", str(out), *args]) == 1
        err = capsys.readouterr().err
        assert message in err
        assert not (out / "failed.csv").exists()  # nothing recorded
    assert main(["tell", str(out), "--failed", picks[0], "--reason", "no precursor"]) == 0
    capsys.readouterr()
    assert main(["tell", str(out), "--failed", picks[1], picks[0]]) == 1
    assert f"1 id(s) already recorded as failed (in failed.csv): {picks[0]}" in capsys.readouterr().err
    assert Campaign(out).failed_ids() == {picks[0]}
    # a failed crystal cannot be told as measured, nor be released, and a refused --failed releases nothing
    res = tmp_path / "res.csv"
    res.write_text(f"{picks[0]},{float(gap[int(picks[0][3:])])!r}\n")
    assert main(["tell", str(out), str(res)]) == 1
    assert f"recorded as failed (failed.csv, or --failed now): {picks[0]}" in capsys.readouterr().err
    assert main(["tell", str(out), "--release", picks[1], "--failed", "nope"]) == 1
    capsys.readouterr()
    camp, pool = open_campaign(out)
    assert [pool.ids[i] for i in camp.pending(pool)] == [picks[1]]
    assert len(camp.trials()) == 30
    # a campaign started anew forgets its failures
    prior = tmp_path / "prior.csv"
    assert main(["campaign", str(camp.store), "--target", str(T), "--prior", str(prior), "--out", str(out),
                 "--overwrite"]) == 0
    assert not (out / "failed.csv").exists() and Campaign(out).failed_ids() == set()


# ---------------------------------------------------------------------------------------------- filters
def _passes(cid: str, formula, n_atoms, excluded=()) -> bool:
    """The filters of test_filters_..., written out independently of gapseek."""
    k = int(cid[3:])
    els = FORMULAS[formula[k]]
    return ("O" in els and not els & {"Pb", "Cd", "Hg"} and len(els) <= 3 and n_atoms[k] <= 40
            and cid not in excluded and formula[k] != "SrTiO3")


@pytest.mark.parametrize("engine", ["predicted", "shell", "gp"])
def test_filters_exclude_what_they_should_in_every_suggest(tmp_path, capsys, engine):
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("# never again\nmp-2  # an id\n\nTiSrO3\nmp-2\n")  # a formula, elements in another order
    _, gap, formula, n_atoms, out = _lab(
        tmp_path, "--require-elements", "O", "--exclude-elements", "Pb,Cd,Hg", "--max-elements", "3",
        "--max-atoms", "40", "--exclude", str(exclude), engine=engine)
    printed = capsys.readouterr().out
    ok = [f"mp-{k}" for k in range(len(formula)) if _passes(f"mp-{k}", formula, n_atoms, {"mp-2"})]
    left = len([c for c in ok if int(c[3:]) >= 30])
    assert f"{left} candidates ({len(formula) - len(ok)} left out by the candidate filters)" in printed
    settings = json.loads((out / "campaign.json").read_text())["settings"]
    assert settings["require_elements"] == ["O"] and settings["exclude_elements"] == ["Pb", "Cd", "Hg"]
    assert settings["max_elements"] == 3 and settings["max_atoms"] == 40 and settings["exclude"] == ["mp-2", "TiSrO3"]
    camp = Campaign(out)
    assert camp.settings.exclude_elements == ("Pb", "Cd", "Hg") and camp.settings.max_atoms == 40
    # the prior holds crystals the filters leave out: fine (measured already); none is ever suggested
    assert any(not _passes(r.id, formula, n_atoms, {"mp-2"}) for r in camp.trials())
    suggested = []
    for rnd in range(4):
        picks = _suggest(out, capsys, 4)
        assert all(_passes(c, formula, n_atoms, {"mp-2"}) for c in picks), picks
        suggested += picks
        if rnd % 2:
            _tell(tmp_path, out, gap, picks)
    assert len(set(suggested)) == len(suggested) == 16
    # exactly the crystals that pass are proposable: random, asked for all, gives every unmeasured one of them
    camp, pool = open_campaign(out)
    observed, y = camp.observed(pool)
    everything = make_engine("random").propose(pool, observed, y, len(pool), np.random.default_rng(0))
    assert {pool.ids[i] for i, _ in everything} == set(ok) - {pool.ids[i] for i in observed}


def test_each_filter_alone(tmp_path):
    store, _, _, formula, n_atoms = _formula_store(tmp_path)
    ids = [f"mp-{k}" for k in range(len(formula))]
    cases = [
        ({"require_elements": "Fe,O"}, lambda k: {"Fe", "O"} <= FORMULAS[formula[k]]),
        ({"exclude_elements": ("Pb", "Cd", "Hg")}, lambda k: not FORMULAS[formula[k]] & {"Pb", "Cd", "Hg"}),
        ({"max_elements": 2}, lambda k: len(FORMULAS[formula[k]]) <= 2),
        ({"max_atoms": 10}, lambda k: n_atoms[k] <= 10),
        ({"exclude": ("mp-5", "O3Fe2", "Fe4O6")}, lambda k: k != 5 and formula[k] != "Fe2O3"),
    ]
    for options, expected in cases:
        settings = CampaignSettings(target=T, **options)
        pool, _ = build_pool(store, settings)
        assert len(pool) == len(ids)  # filtered-out crystals stay in the pool: the prior may hold them
        want = np.array([expected(k) for k in range(len(ids))])
        np.testing.assert_array_equal(pool.proposable(), want, err_msg=str(options))
        assert pool.filtered_out == int((~want).sum()) > 0, options
        mask, notes, unmatched = allowed_rows(settings, ids, formula, np.asarray(n_atoms))
        np.testing.assert_array_equal(mask, want)
        assert len(notes) == 1 and unmatched == []
    # no filter: nothing excluded
    pool, _ = build_pool(store, CampaignSettings(target=T))
    assert pool.excluded is None and pool.proposable().all()


def test_formulas_settings_and_exclude_files(tmp_path):
    assert composition("SrTiO3") == {"Sr": 1, "Ti": 1, "O": 3}
    assert composition("Li2FeSiO4") == {"Li": 2, "Fe": 1, "Si": 1, "O": 4}
    assert composition("Fe0.5O") == {"Fe": 0.5, "O": 1}
    for bad in ("X", "mp-1", "", "Fe2(O)3", "Xx2O"):
        assert composition(bad) is None, bad
    with pytest.raises(ConfigError, match=r"--require-elements: 1 unknown element symbol\(s\): 'Xx'; valid: H, He"):
        CampaignSettings(target=T, require_elements="Fe,Xx")
    with pytest.raises(ConfigError, match=r"'fe' \(did you mean Fe\?\)"):
        CampaignSettings(target=T, exclude_elements=["fe"])
    with pytest.raises(ConfigError, match="Fe both required .* and excluded"):
        CampaignSettings(target=T, require_elements="Fe", exclude_elements="Fe,Pb")
    with pytest.raises(ConfigError, match="--max-elements must be a whole number >= 1"):
        CampaignSettings(target=T, max_elements=0)
    with pytest.raises(ConfigError, match="--max-atoms must be a whole number >= 1"):
        CampaignSettings(target=T, max_atoms=2.5)
    with pytest.raises(ConfigError, match="names 3 elements, more than --max-elements 2"):
        CampaignSettings(target=T, require_elements="Fe,O,Li", max_elements=2)
    s = CampaignSettings(target=T, require_elements=["Fe", "O"], exclude=["a", "b"])
    assert s.require_elements == ("Fe", "O") and s.exclude == ("a", "b") and s.exclude_elements == ()
    f = tmp_path / "ex.txt"
    f.write_text("# header\nmp-1\n  SrTiO3   # a formula\n\nmp-1\n#mp-9\n")
    assert read_exclude_file(f) == ("mp-1", "SrTiO3")


def test_a_filter_that_leaves_nothing_is_an_error(tmp_path, capsys):
    store, labels, gap, formula, _ = _formula_store(tmp_path)
    prior = tmp_path / "prior.csv"
    prior.write_text("".join(f"mp-{k},{float(gap[k])!r}\n" for k in range(30)))
    base = ["campaign", str(store), "--target", str(T), "--prior", str(prior), "--out", str(tmp_path / "c")]
    for options, message in ((["--require-elements", "Og"], "the candidate filters leave no crystal of the 400"),
                             (["--max-atoms", "1"], "--max-atoms 1: 400 removed"),
                             (["--require-elements", "Fe,Ga"], "(--require-elements Fe,Ga: 400 removed): loosen them"),
                             (["--exclude-elements", "Zz"], "unknown element symbol(s): 'Zz'; valid: H, He"),
                             (["--max-elements", "0"], "--max-elements must be a whole number >= 1")):
        assert main(base + options) == 1, options
        assert message in capsys.readouterr().err, options
        assert not (tmp_path / "c" / "campaign.json").exists()
    # every crystal the filters leave is in the prior: nothing to propose
    assert formula[6] == formula[26] == "HgTe"
    assert main(base + ["--require-elements", "Hg"]) == 0  # HgTe rows beyond the prior remain
    capsys.readouterr()
    only_prior = tmp_path / "prior_hg.csv"
    hg = [k for k in range(len(formula)) if formula[k] == "HgTe"]
    only_prior.write_text("".join(f"mp-{k},{float(gap[k])!r}\n" for k in hg))
    assert main(base[:5] + [str(only_prior), "--out", str(tmp_path / "d"), "--require-elements", "Hg"]) == 1
    assert "is in the prior: nothing is left to propose" in capsys.readouterr().err
    # an --exclude entry that matches nothing is warned about
    ex = tmp_path / "ex.txt"
    ex.write_text("mp-1\nmp-9999\nUuo\n")
    with pytest.warns(GapseekWarning, match=r"2 --exclude entr\(ies\) match no crystal of the pool .*mp-9999, Uuo"):
        build_pool(store, CampaignSettings(target=T, exclude=read_exclude_file(ex)))


def test_campaigns_without_filters_read_as_before(tmp_path, capsys):
    store, gap, _, _, out = _lab(tmp_path)
    meta = json.loads((out / "campaign.json").read_text())
    assert not {"require_elements", "exclude_elements", "max_elements", "max_atoms", "exclude"} & set(
        meta["settings"])  # an unfiltered campaign.json is as an older gapseek wrote it
    # one written before the filters (and failed.csv) existed opens, suggests and tells, with no filter
    camp, pool = open_campaign(out)
    assert camp.settings.require_elements == () and camp.settings.max_atoms is None and pool.excluded is None
    picks = _suggest(out, capsys, 3)
    _tell(tmp_path, out, gap, picks)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 3 and summary["failed"] == 0 and summary["failed_ids"] == []


def test_search_applies_the_filters_and_resumes_only_with_the_same(tmp_path, capsys):
    store, labels, _, formula, n_atoms = _formula_store(tmp_path)
    out = tmp_path / "s"
    base = ["search", str(store), "--labels", str(labels), "--prior", "40", "--target", str(T), "--tolerance",
            "0.05", "--budget", "12", "--engine", "random", "--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GapseekWarning)
        assert main(base + ["--exclude-elements", "Pb,Cd,Hg", "--max-atoms", "30"]) == 0
    capsys.readouterr()
    rows = Campaign(out).trials()
    trials = [r for r in rows if r.source == "oracle"]
    assert len(trials) == 12
    for r in trials:
        k = int(r.id[3:])
        assert not FORMULAS[formula[k]] & {"Pb", "Cd", "Hg"} and n_atoms[k] <= 30, r
    # another filter: refused, naming the change
    assert main(base + ["--exclude-elements", "Pb", "--max-atoms", "30", "--budget", "14"]) == 1
    assert "exclude_elements: ('Pb', 'Cd', 'Hg') -> ('Pb',)" in capsys.readouterr().err
    # a filter that leaves out every crystal within the tolerance of the target: nothing to find
    hits = [k for k in range(len(formula)) if abs(_gap(labels, k) - T) <= 0.05]
    ex = tmp_path / "ex.txt"
    ex.write_text("".join(f"mp-{k}\n" for k in hits))
    assert main(base + ["--exclude", str(ex), "--overwrite"]) == 1
    assert f"the {len(hits)} labelled crystal(s) within 0.05 eV of the target" in capsys.readouterr().err


def _gap(labels, k: int) -> float:
    for line in labels.read_text().splitlines()[1:]:
        cid, g = line.split(",")
        if cid == f"mp-{k}":
            return float(g)
    raise KeyError(k)


def test_synthetic_stores_formulas_only_matter_to_element_filters(tmp_path):
    # test_search's store has the formula "X" everywhere: no element filter can read it, the others work
    store, _, _ = _synthetic_store(tmp_path)
    with pytest.raises(ConfigError, match="formula not readable as element symbols and counts .*: 600 removed"):
        build_pool(store, CampaignSettings(target=T, exclude_elements="Pb"))
    pool, _ = build_pool(store, CampaignSettings(target=T, exclude=("c1", "c2")))
    assert pool.filtered_out == 2 and not pool.proposable()[[1, 2]].any()


def test_a_failure_told_while_suggest_opens_the_campaign_is_respected(tmp_path, capsys, monkeypatch):
    import gapseek.cli.search as campaign_module  # where suggest looks it up

    _, _, _, _, out = _lab(tmp_path)
    first = _suggest(out, capsys, 1)[0]  # predicted: the same again while nothing changes
    real = campaign_module.open_campaign

    def then_a_tell(*a, **kw):  # another `tell --failed` between suggest's pool and its lock
        camp, pool = real(*a, **kw)
        other_camp, other_pool = real(out)
        other_camp.fail(other_pool, [first], "no precursor")
        return camp, pool

    monkeypatch.setattr(campaign_module, "open_campaign", then_a_tell)
    picks = _suggest(out, capsys, 2, "--ignore-pending")
    assert first not in picks and Campaign(out).failed_ids() == {first}
