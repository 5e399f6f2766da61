"""Candidate filters of a campaign: which crystals of the store may be proposed at all.

A crystal's elements come from the store's reduced formula (``SrTiO3``, ``Li2FeSiO4``: element symbols, each with
an optional count); ``n_atoms`` from the store. :func:`allowed_rows` applies the settings' filters
(:class:`~gapseek.search.campaign.CampaignSettings`: ``require_elements``, ``exclude_elements``, ``max_elements``,
``max_atoms``, ``exclude``) and says how many crystals each one removed. Filtered-out crystals stay in the pool
(the prior may hold them: they are measured already, and the engines learn from them); they are never proposed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from gapseek.errors import ConfigError, InputError, few

__all__ = ["ELEMENTS", "check_elements", "composition", "filter_active", "read_exclude_file", "allowed_rows"]

ELEMENTS = (
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar", "K", "Ca",
    "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y",
    "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce",
    "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir",
    "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm",
    "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc",
    "Lv", "Ts", "Og",
)
_ELEMENT_SET = frozenset(ELEMENTS)
_FORMULA = re.compile(r"(?:[A-Z][a-z]?(?:\d+(?:\.\d+)?)?)+")
_TERM = re.compile(r"([A-Z][a-z]?)(\d+(?:\.\d+)?)?")


def check_elements(symbols: Iterable[str], option: str) -> tuple[str, ...]:
    """``symbols`` as a tuple, each a chemical element symbol (``Fe``, not ``fe`` or ``FE``); otherwise a
    ConfigError naming the wrong ones (with the right spelling where only the case is wrong) and the valid
    symbols."""
    out = tuple(str(s).strip() for s in symbols)
    wrong = [s for s in out if s not in _ELEMENT_SET]
    if wrong:
        hints = [f"{s!r} (did you mean {s.capitalize()}?)" if s.capitalize() in _ELEMENT_SET else repr(s)
                 for s in wrong]
        raise ConfigError(f"{option}: {len(wrong)} unknown element symbol(s): {', '.join(hints)}; valid: "
                          f"{', '.join(ELEMENTS)}")
    return out


def composition(formula: str) -> dict[str, float] | None:
    """``{"Sr": 1, "Ti": 1, "O": 3}`` for ``SrTiO3`` (a symbol given twice is summed); None when ``formula`` is not
    a formula of element symbols and counts (the store's formulas always are; a hand-made store's may not be)."""
    formula = formula.strip()
    if not formula or not _FORMULA.fullmatch(formula):
        return None
    out: dict[str, float] = {}
    for sym, count in _TERM.findall(formula):
        if sym not in _ELEMENT_SET:
            return None
        out[sym] = out.get(sym, 0.0) + (float(count) if count else 1.0)
    return out


def _reduced(comp: dict[str, float]) -> tuple[tuple[str, float], ...]:
    """A composition's key, whatever the order of its elements and the multiple of its counts."""
    counts = list(comp.values())
    if all(c == int(c) for c in counts):
        g = math.gcd(*(int(c) for c in counts)) or 1
        comp = {k: v / g for k, v in comp.items()}
    return tuple(sorted(comp.items()))


def read_exclude_file(path: str | Path) -> tuple[str, ...]:
    """The entries of an ``--exclude`` file: one id or reduced formula a line; ``#`` starts a comment, blank
    lines are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--exclude {path}: cannot read it ({exc})") from None
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.append(line)
    return tuple(dict.fromkeys(entries))


def filter_active(settings) -> bool:
    return bool(settings.require_elements or settings.exclude_elements or settings.max_elements is not None
                or settings.max_atoms is not None or settings.exclude)


def allowed_rows(settings, ids: Sequence[str], formula: Sequence[str], n_atoms: np.ndarray | None
                 ) -> tuple[np.ndarray, list[str], list[str]]:
    """``(mask, notes, unmatched)``: which of the crystals (``ids``, ``formula``, ``n_atoms``: the pool's) pass
    every filter of ``settings``; one note per filter, saying how many it removed; and the ``exclude`` entries that
    match no crystal (typos?). With an element filter, a crystal whose formula cannot be read is left out (it may
    hold any element)."""
    n = len(ids)
    mask = np.ones(n, dtype=bool)
    notes: list[str] = []

    def apply(keep: np.ndarray, what: str) -> None:
        nonlocal mask
        notes.append(f"{what}: {int(np.sum(mask & ~keep))} removed")
        mask &= keep

    comps = None
    if settings.require_elements or settings.exclude_elements or settings.max_elements is not None:
        comps = [composition(f) for f in formula]
        unread = np.array([c is None for c in comps], dtype=bool)
        if unread.any():
            apply(~unread, f"formula not readable as element symbols and counts (e.g. "
                           f"{few(sorted({formula[k] for k in np.nonzero(unread)[0]}), 3)})")
    if settings.require_elements:
        need = set(settings.require_elements)
        apply(np.array([c is not None and need <= c.keys() for c in comps], dtype=bool),
              f"--require-elements {','.join(settings.require_elements)}")
    if settings.exclude_elements:
        bad = set(settings.exclude_elements)
        apply(np.array([c is not None and not bad & c.keys() for c in comps], dtype=bool),
              f"--exclude-elements {','.join(settings.exclude_elements)}")
    if settings.max_elements is not None:
        apply(np.array([c is not None and len(c) <= settings.max_elements for c in comps], dtype=bool),
              f"--max-elements {settings.max_elements}")
    if settings.max_atoms is not None:
        apply(np.asarray(n_atoms) <= settings.max_atoms, f"--max-atoms {settings.max_atoms}")
    unmatched: list[str] = []
    if settings.exclude:
        id_set, keys = set(), set()
        for e in settings.exclude:
            id_set.add(e)
            comp = composition(e)
            if comp is not None:
                keys.add(_reduced(comp))
        keep = np.ones(n, dtype=bool)
        hit: set[str] = set()
        by_formula: dict[str, bool] = {}
        for k, (cid, f) in enumerate(zip(ids, formula)):
            if cid in id_set:
                keep[k] = False
                hit.add(cid)
                continue
            if f not in by_formula:
                comp = composition(f)
                by_formula[f] = comp is not None and _reduced(comp) in keys
            if by_formula[f]:
                keep[k] = False
        matched_keys = {_reduced(c) for f, on in by_formula.items() if on and (c := composition(f)) is not None}
        for e in settings.exclude:
            comp = composition(e)
            if e not in hit and not (comp is not None and _reduced(comp) in matched_keys):
                unmatched.append(e)
        apply(keep, f"--exclude ({len(settings.exclude)} entries)")
    return mask, notes, unmatched
