"""Fidelity: our featurizer against outputs of the ORIGINAL CGCNN code (../shared/reference).

The bar: |diff| <= 1e-4 on prediction, pooled (64) and hidden (32) for every row, except crystals whose 12th
and 13th neighbours tie in distance. CGCNN keeps each atom's 12 nearest neighbours; where the 12th and 13th
are different atoms at the same distance, which ones are kept is a convention (we keep the lower index, the
original kept pymatgen's internal neighbour order, which changes between pymatgen versions). For each
differing crystal the test shows, without relying on any library's order, that the difference is that
choice: some choice among the atoms tied at the boundary, run through the same model, reproduces the
reference within 1e-4 on all 97 outputs. The witness is found, in this order, by

1. enumerating every distinct choice, where there are at most ``EXHAUSTIVE_CAP`` of them;
2. a short search from our own choice, where a round is cheap (``_search``: every single-atom change
   evaluated, then the combinations of changes that the sum of their effects predicts closest to the
   reference; a few rounds);
3. pymatgen's current neighbour order as a proposal (the choice it makes, read back as a tie choice);
4. a longer search from the best choice so far.

A witness is always rebuilt from our own neighbour list (the strictly closer neighbours plus some of the
tied candidates), so it is a valid tie choice by construction, whatever proposed it. Our own graph must be
one of the enumerated choices (which ties the enumeration to :func:`build_graph`), and it does not match;
nor does a deliberately wrong choice (one tied neighbour swapped for one at least ``WRONG_GAP`` farther), so
the check can fail. How many differences pymatgen's order alone reproduces is printed, not asserted.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import REFERENCE, SHARED, need
from original_cgcnn import build_graph_original

from gapseek.graph import TIE_TOLERANCE, CrystalGraph, GraphSettings, build_graph
from gapseek.graph.neighbours import _neighbours
from gapseek.model.collate import collate
from gapseek.structure.cif import read_crystal

TOL = 1e-4
EXHAUSTIVE_CAP = 1024  # crystals with at most this many distinct tie choices are enumerated in full
QUICK_SEARCH_MOVES = 400  # the short search runs where one round of single-atom changes is at most this many graphs
QUICK_ROUNDS = 6
LONG_ROUNDS = 12
WRONG_GAP = 0.05  # Å; the negative control swaps in a neighbour at least this much farther than the tie


def _reference(name: str) -> dict[str, np.ndarray]:
    out = {}
    with open(need(REFERENCE / name)) as fh:
        r = csv.reader(fh)
        header = next(r)
        assert header[2] == "prediction" and header[3] == "pooled0" and header[67] == "hidden0"
        for row in r:
            out[row[0]] = np.array(row[2:], dtype=np.float64)
    return out


def _ours(loaded_model, graphs, reduce=True):
    outs = []
    gs = GraphSettings()
    for k in range(0, len(graphs), 128):
        p, pooled, hidden = loaded_model.model(collate(graphs[k:k + 128], loaded_model.atom_init, gs, reduce))
        outs.append(np.concatenate([p[:, None].numpy(), pooled.numpy(), hidden.numpy()], axis=1))
    return np.concatenate(outs)


# ------------------------------------------------------------------------------------------ tie choices
@dataclass
class _Tie:
    """One atom whose M-th and (M+1)-th neighbours tie between different atoms.

    ``fixed_*``: the neighbours strictly closer than the boundary distance (always kept); ``cand_*``: every
    neighbour (periodic images included) within ``TIE_TOLERANCE`` of the M-th distance, in our sort order;
    ``slots``: how many of them the M neighbours take; ``choices``: the distinct choices, each a tuple of how
    many images of each distinct candidate atom (``atoms``) are kept. Images of one atom at the same distance
    give identical features, so choices are distinct as multisets of atom indices. ``next_*``: the nearest
    neighbour at least ``WRONG_GAP`` beyond the tie (for the negative control), or None.
    """

    atom: int
    fixed_idx: np.ndarray
    fixed_dist: np.ndarray
    cand_idx: np.ndarray
    cand_dist: np.ndarray
    slots: int
    atoms: np.ndarray
    choices: list[tuple[int, ...]]
    next_idx: int | None
    next_dist: float | None

    def row(self, choice: int) -> tuple[np.ndarray, np.ndarray]:
        """The M neighbour indices and distances of this atom under one choice (nearest first)."""
        keep = np.zeros(self.cand_idx.size, dtype=bool)
        for j, c in zip(self.atoms, self.choices[choice]):
            keep[np.nonzero(self.cand_idx == j)[0][:c]] = True
        idx = np.concatenate([self.fixed_idx, self.cand_idx[keep]])
        dist = np.concatenate([self.fixed_dist, self.cand_dist[keep]])
        order = np.argsort(dist, kind="stable")
        return idx[order], dist[order]

    def choice_of(self, row_idx: np.ndarray) -> int | None:
        """The choice whose neighbours are the atoms ``row_idx`` (as a multiset), or None if none is."""
        rest = np.sort(row_idx).tolist()
        for j in self.fixed_idx.tolist():
            if j not in rest:
                return None
            rest.remove(j)
        counts = tuple(rest.count(j) for j in self.atoms.tolist())
        if sum(counts) != len(rest):
            return None
        try:
            return self.choices.index(counts)
        except ValueError:
            return None


def _count_vectors(caps: list[int], total: int) -> list[tuple[int, ...]]:
    """Every tuple ``c`` with ``0 <= c[i] <= caps[i]`` and ``sum(c) == total``."""
    if not caps:
        return [()] if total == 0 else []
    return [(c,) + rest for c in range(min(caps[0], total), -1, -1)
            for rest in _count_vectors(caps[1:], total - c)]


def _boundary_ties(crystal, settings: GraphSettings = GraphSettings()) -> list[_Tie]:
    """The atoms whose neighbour list is cut inside a tie between different atoms, as :func:`build_graph` sees
    them: one search at the full radius, sorted by (atom, distance, neighbour), ties within TIE_TOLERANCE."""
    m = settings.max_neighbors
    i, j, d = _neighbours(crystal, settings.radius)
    order = np.lexsort((j, d, i))
    i, j, d = i[order], j[order], d[order]
    counts = np.bincount(i, minlength=crystal.n_atoms)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    ties = []
    for a in np.nonzero(counts > m)[0]:
        da, ja = d[starts[a]:starts[a] + counts[a]], j[starts[a]:starts[a] + counts[a]]
        edge = da[m - 1]
        if da[m] - edge > TIE_TOLERANCE:
            continue
        tied = np.abs(da - edge) <= TIE_TOLERANCE
        closer = da < edge - TIE_TOLERANCE
        atoms, mult = np.unique(ja[tied], return_counts=True)
        if atoms.size < 2:  # images of one atom: no choice
            continue
        slots = int(m - closer.sum())
        beyond = np.nonzero(da > edge + WRONG_GAP)[0]
        ties.append(_Tie(
            atom=int(a), fixed_idx=ja[closer], fixed_dist=da[closer], cand_idx=ja[tied], cand_dist=da[tied],
            slots=slots, atoms=atoms, choices=_count_vectors(mult.tolist(), slots),
            next_idx=int(ja[beyond[0]]) if beyond.size else None,
            next_dist=float(da[beyond[0]]) if beyond.size else None,
        ))
    return ties


def _with_choices(graph: CrystalGraph, ties: list[_Tie], picks) -> CrystalGraph:
    """``graph`` with the rows of the tied atoms replaced by the given choices (the rest unchanged)."""
    idx, dist = graph.nbr_idx.copy(), graph.nbr_dist.copy()
    for t, p in zip(ties, picks):
        idx[t.atom], dist[t.atom] = t.row(int(p))
    return CrystalGraph(numbers=graph.numbers, nbr_idx=idx, nbr_dist=dist)


def _picks_of(other: CrystalGraph, ties: list[_Tie], graph: CrystalGraph) -> np.ndarray | None:
    """``other``'s neighbour choice as tie choices on ``graph``, or None if ``other`` is not one of them."""
    tied = {t.atom for t in ties}
    for a in range(graph.n_atoms):
        if a not in tied and not np.array_equal(np.sort(other.nbr_idx[a]), np.sort(graph.nbr_idx[a])):
            return None
    picks = [t.choice_of(other.nbr_idx[t.atom]) for t in ties]
    return None if any(p is None for p in picks) else np.array(picks)


def _fit_additive(resid: np.ndarray, deltas: list[np.ndarray], picks: np.ndarray, rng, restarts: int = 64):
    """Choices minimising ``|resid + sum_a deltas[a][c_a]|`` (the single-change effects taken as additive):
    coordinate descent from the current choice and from random ones; the best few distinct results."""
    sizes = np.array([len(x) for x in deltas])
    c = np.concatenate([picks[None], rng.integers(0, sizes, size=(restarts - 1, sizes.size))])
    total = resid[None] + sum(deltas[a][c[:, a]] for a in range(sizes.size))
    for _ in range(20):
        before = c.copy()
        for a in rng.permutation(sizes.size):
            rest = total - deltas[a][c[:, a]]
            c[:, a] = ((rest[:, None, :] + deltas[a][None]) ** 2).sum(axis=2).argmin(axis=1)
            total = rest + deltas[a][c[:, a]]
        if np.array_equal(before, c):
            break
    out, seen = [], set()
    for k in np.argsort((total**2).sum(axis=1)):
        if c[k].tobytes() not in seen:
            seen.add(c[k].tobytes())
            out.append(c[k].copy())
    return out[:4]


def _search(evaluate, graph, ties, expected, picks, rounds: int):
    """Search tie choices from ``picks`` towards the reference. Each round evaluates every single-atom change
    (taking one that matches), then the few combinations that the sum of those single-change effects predicts
    closest to the reference, and moves to the best of them even if it is worse (so as to leave a local
    minimum), never back to a choice already seen. Stops at a match within TOL/2 (a margin for the other model
    mode). Returns ``(best picks, their max |diff|, graphs evaluated)``."""
    rng = np.random.default_rng(0)
    sizes = [len(t.choices) for t in ties]
    out = evaluate([_with_choices(graph, ties, picks)])[0]
    tried, seen = 1, {picks.tobytes()}
    best_err, best = float(np.abs(out - expected).max()), picks
    for _ in range(rounds):
        if best_err <= TOL / 2:
            break
        moves = [(a, c) for a in range(len(ties)) for c in range(sizes[a]) if c != picks[a]]
        trial = []
        for a, c in moves:
            p = picks.copy()
            p[a] = c
            trial.append(p)
        outs = evaluate([_with_choices(graph, ties, p) for p in trial])
        tried += len(trial)
        err = np.abs(outs - expected).max(axis=1)
        if err.min() < best_err:
            best_err, best = float(err.min()), trial[int(err.argmin())]
            if best_err <= TOL / 2:
                break
        deltas = [np.zeros((s, out.size)) for s in sizes]
        for (a, c), o in zip(moves, outs):
            deltas[a][c] = o - out
        cands = [c for c in _fit_additive(out - expected, deltas, picks, rng) if c.tobytes() not in seen]
        if not cands:
            break
        seen.update(c.tobytes() for c in cands)
        couts = evaluate([_with_choices(graph, ties, p) for p in cands])
        tried += len(cands)
        k = int(((couts - expected) ** 2).sum(axis=1).argmin())
        picks, out = cands[k], couts[k]
        if np.abs(out - expected).max() < best_err:
            best_err, best = float(np.abs(out - expected).max()), picks
    return best, best_err, tried


@dataclass
class _Explanation:
    how: str  # "exhaustive", "search", "pymatgen-order", "long-search" or "none"
    ties: list[_Tie]
    picks: np.ndarray  # the witness (or the best choice found): one choice index per tied atom
    err: float  # its largest |diff| from the reference (reduce=False)
    tried: int  # choices evaluated
    n_choices: int  # distinct choices in all
    n_match: int | None = None  # how many of them match (exhaustive only)


_EXPLAINED: dict[Path, _Explanation] = {}  # computed once, checked in both model modes
_PYMATGEN: dict[Path, CrystalGraph] = {}


def _pymatgen_graph(path: Path) -> CrystalGraph:
    if path not in _PYMATGEN:
        from pymatgen.core import Structure

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _PYMATGEN[path] = build_graph_original(Structure.from_file(path))
    return _PYMATGEN[path]


def _pymatgen_version() -> str:
    from importlib.metadata import version

    return version("pymatgen-core")


def _explain(loaded_model, path: Path, graph: CrystalGraph, expected: np.ndarray) -> _Explanation:
    """Find a tie choice that reproduces ``expected`` (see the module docstring for the order of attempts)."""
    if path in _EXPLAINED:
        return _EXPLAINED[path]
    ties = _boundary_ties(read_crystal(path))
    ours = _picks_of(graph, ties, graph)
    assert ours is not None and len(ties) == graph.n_tied, f"{path.name}: tie enumeration disagrees with build_graph"
    sizes = [len(t.choices) for t in ties]
    n_choices = int(np.prod(sizes, dtype=np.float64))  # a float product: no overflow on large crystals
    tried = 0

    def evaluate(graphs):
        return _ours(loaded_model, graphs, reduce=False)

    def done(how, picks, err, tried, n_match=None):
        _EXPLAINED[path] = _Explanation(how, ties, picks, float(err), tried, n_choices, n_match)
        return _EXPLAINED[path]

    if n_choices <= EXHAUSTIVE_CAP:
        grid = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1).reshape(-1, len(sizes))
        err = np.abs(evaluate([_with_choices(graph, ties, p) for p in grid]) - expected).max(axis=1)
        tried = len(grid)
        best = int(err.argmin())
        how = "exhaustive" if err[best] <= TOL else "none"
        return done(how, grid[best], err[best], tried, int((err <= TOL).sum()))
    best_picks, best_err = ours, np.inf
    if sum(sizes) <= QUICK_SEARCH_MOVES:
        best_picks, best_err, n = _search(evaluate, graph, ties, expected, ours, QUICK_ROUNDS)
        tried += n
        if best_err <= TOL:
            return done("search", best_picks, best_err, tried)
    proposal = _picks_of(_pymatgen_graph(path), ties, graph)
    if proposal is not None:
        err = np.abs(evaluate([_with_choices(graph, ties, proposal)])[0] - expected).max()
        tried += 1
        if err <= TOL:
            return done("pymatgen-order", proposal, err, tried)
        if err < best_err:
            best_picks, best_err = proposal, err
    picks, err, n = _search(evaluate, graph, ties, expected, best_picks, LONG_ROUNDS)
    tried += n
    return done("long-search" if err <= TOL else "none", picks, err, tried)


def _wrong_choice(graph: CrystalGraph, e: _Explanation) -> CrystalGraph | None:
    """The witness graph with one tied neighbour replaced by a neighbour ``WRONG_GAP`` or more beyond the tie
    (some crystals have neighbours within 1e-6 Å of the tie but beyond ``TIE_TOLERANCE``: not a wrong choice
    that the check could be expected to reject)."""
    g = _with_choices(graph, e.ties, e.picks)
    for t in e.ties:
        if t.next_idx is not None:
            g.nbr_idx[t.atom, -1], g.nbr_dist[t.atom, -1] = t.next_idx, t.next_dist
            return g
    return None


# ------------------------------------------------------------------------------------------------ test
@pytest.mark.parametrize("reduce", [True, False], ids=["equivalent-atoms-once", "every-atom"])
@pytest.mark.parametrize("ref_name, cif_dir", [
    ("cgcnn-band-gap-mp2582.csv", "data/mp-gap-36k/cifs"),
    ("cgcnn-band-gap-samples.csv", "data/cgcnn-samples"),
])
def test_matches_the_original_code(loaded_model, ref_name, cif_dir, reduce, record_property):
    ref = _reference(ref_name)
    ids = list(ref)
    paths = [need(SHARED / cif_dir) / f"{i}.cif" for i in ids]
    graphs = [build_graph(read_crystal(p)) for p in paths]
    ours = _ours(loaded_model, graphs, reduce)
    expected = np.stack([ref[i] for i in ids])
    err = np.abs(ours - expected).max(axis=1)
    bad = np.nonzero(err > TOL)[0]
    tied = np.array([g.n_tied > 0 for g in graphs])
    n_tied = int(tied.sum())
    print(f"\n{ref_name} (reduce={reduce}): {len(ids)} crystals, {len(ids) - len(bad)} within {TOL:g}; "
          f"{n_tied} have a 12th/13th-neighbour tie between different atoms; {len(bad)} differ; "
          f"largest |diff| on the others {err[err <= TOL].max():.2g}")
    record_property("n_differ", len(bad))
    untied = [ids[i] for i in bad if not tied[i]]
    assert untied == [], f"differences not explained by a neighbour tie: {untied}"

    # each difference is the tie: some choice among the tied atoms, through the same model, gives the reference
    expl = [_explain(loaded_model, paths[i], graphs[i], expected[i]) for i in bad]
    unexplained = {ids[i]: f"best choice found differs by {e.err:.2g}" for i, e in zip(bad, expl) if e.how == "none"}
    assert unexplained == {}, f"no tie choice found that reproduces the reference: {unexplained}"
    if len(bad):
        witness = [_with_choices(graphs[i], e.ties, e.picks) for i, e in zip(bad, expl)]
        err_witness = np.abs(_ours(loaded_model, witness, reduce) - expected[bad]).max(axis=1)
        assert (err_witness <= TOL).all(), dict(zip([ids[i] for i in bad], err_witness))
        # ... and the check can fail: a wrong choice (a neighbour beyond the tie swapped in) does not match
        wrong = {i: g for i, e in zip(bad, expl) if (g := _wrong_choice(graphs[i], e)) is not None}
        err_wrong = np.abs(_ours(loaded_model, list(wrong.values()), reduce) - expected[list(wrong)]).max(axis=1)
        assert (err_wrong > TOL).all(), [ids[i] for i, e in zip(wrong, err_wrong) if e <= TOL]
        # diagnostic only: how many differences the installed pymatgen's neighbour order reproduces on its own
        orig = _ours(loaded_model, [_pymatgen_graph(paths[i]) for i in bad], reduce)
        n_orig = int((np.abs(orig - expected[bad]).max(axis=1) <= TOL).sum())
        by = {h: [e for e in expl if e.how == h] for h in ("exhaustive", "search", "pymatgen-order", "long-search")}
        ex = by["exhaustive"]
        print(f"  tie choices explain all {len(bad)}: {len(ex)} by exhaustive enumeration "
              f"({sum(e.n_match for e in ex)} of {sum(e.n_choices for e in ex)} choices match), "
              f"{len(by['search'])} by search from our choice, {len(by['pymatgen-order'])} by pymatgen's order "
              f"as the proposal, {len(by['long-search'])} by a longer search; {sum(e.tried for e in expl)} "
              f"choices evaluated in all; witnesses within {err_witness.max():.2g}; a wrong choice differs by "
              f">= {err_wrong.min():.2g} in all {len(wrong)}; pymatgen {_pymatgen_version()}'s order alone "
              f"reproduces {n_orig} of {len(bad)}")

