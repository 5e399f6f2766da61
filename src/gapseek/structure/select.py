"""Which crystals of a tree to index, by composition (``gapseek index --elements/--exclude-elements/--num-elements``):
COD's own search filters the same way (``el1..el8`` present, ``nel1..nel8`` absent, ``strictmin``/``strictmax``
elements). The composition is the formula's (``_chemical_formula_sum``, read from the text at index time); a file
without one cannot be judged and is left out, with that reason, whenever a filter is set."""

from __future__ import annotations

from dataclasses import dataclass

from gapseek.errors import ConfigError

__all__ = ["ELEMENT_GROUPS", "ElementFilter"]

_SYMBOLS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr Rb Sr Y Zr "
    "Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt "
    "Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc "
    "Lv Ts Og").split()
SYMBOLS = frozenset(_SYMBOLS)

# named groups a user can give instead of symbols (``--exclude-elements radioactive``)
ELEMENT_GROUPS: dict[str, frozenset[str]] = {
    # no stable isotope: Tc, Pm, and every element from Po on (Bi-209's half-life exceeds the universe's age)
    "radioactive": frozenset(["Tc", "Pm", *_SYMBOLS[_SYMBOLS.index("Po"):]]),
    "noble-gases": frozenset(["He", "Ne", "Ar", "Kr", "Xe", "Rn", "Og"]),
    "lanthanides": frozenset(_SYMBOLS[_SYMBOLS.index("La"):_SYMBOLS.index("Lu") + 1]),
    "actinides": frozenset(_SYMBOLS[_SYMBOLS.index("Ac"):_SYMBOLS.index("Lr") + 1]),
}


def _symbols(text: str, what: str, groups: bool) -> frozenset[str]:
    out: set[str] = set()
    for raw in text.replace(" ", ",").split(","):
        tok = raw.strip()
        if not tok:
            continue
        if groups and tok.lower() in ELEMENT_GROUPS:
            out |= ELEMENT_GROUPS[tok.lower()]
        elif tok in SYMBOLS:
            out.add(tok)
        else:
            hint = f"; or a group: {', '.join(ELEMENT_GROUPS)}" if groups else ""
            raise ConfigError(f"{what}: {tok!r} is not an element symbol (write them as Fe, O, ...{hint})")
    return frozenset(out)


@dataclass(frozen=True)
class ElementFilter:
    """``require``: every one of these present; ``exclude``: none of these present; ``min_elements`` /
    ``max_elements``: how many distinct elements."""

    require: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()
    min_elements: int = 1
    max_elements: int | None = None

    def __post_init__(self) -> None:
        for name in ("require", "exclude"):
            bad = sorted(set(getattr(self, name)) - SYMBOLS)
            if bad:
                raise ConfigError(f"{name}: not element symbols: {', '.join(bad)}")
        if both := sorted(self.require & self.exclude):
            raise ConfigError(f"elements both required and excluded: {', '.join(both)}")
        if self.min_elements < 1 or (self.max_elements is not None and self.max_elements < self.min_elements):
            raise ConfigError(f"number of elements {self.min_elements}..{self.max_elements}: need 1 <= min <= max")
        if len(self.require) > (self.max_elements or len(SYMBOLS)):
            raise ConfigError(f"{len(self.require)} required elements but at most {self.max_elements} allowed")

    @classmethod
    def parse(cls, elements: str | None = None, exclude: str | None = None,
              num_elements: str | None = None) -> ElementFilter | None:
        """From the command line: ``"O"``, ``"Ti,O"``; ``"radioactive,Cd"``; ``"2"``, ``"2:4"``, ``":3"``. None when
        nothing is set."""
        if not (elements or exclude or num_elements):
            return None
        lo, hi = 1, None
        if num_elements:
            a, sep, b = num_elements.partition(":")
            try:
                lo = int(a) if a.strip() else 1
                hi = (int(b) if b.strip() else None) if sep else lo
            except ValueError:
                raise ConfigError(f"--num-elements {num_elements!r}: give N, MIN:MAX, MIN: or :MAX") from None
        return cls(_symbols(elements or "", "--elements", False), _symbols(exclude or "", "--exclude-elements", True),
                   lo, hi)

    def reason(self, elements: frozenset[str] | None) -> str | None:
        """Why a crystal of these elements is left out, or None to keep it."""
        if elements is None:
            return "no _chemical_formula_sum: composition unknown"
        if missing := sorted(self.require - elements):
            return f"lacks {','.join(missing)}"
        if present := sorted(self.exclude & elements):
            return f"contains {','.join(present)}"
        if len(elements) < self.min_elements or (self.max_elements is not None and len(elements) > self.max_elements):
            return f"{len(elements)} element(s)"
        return None

    def describe(self) -> str:
        parts = []
        if self.require:
            parts.append(f"with {','.join(sorted(self.require))}")
        if self.exclude:
            named: list[str] = []
            covered: frozenset[str] = frozenset()
            for g, members in sorted(ELEMENT_GROUPS.items(), key=lambda kv: -len(kv[1])):
                if members <= self.exclude and not members <= covered:
                    named.append(g)
                    covered |= members
            parts.append(f"without {','.join(named + sorted(self.exclude - covered))}")
        if self.max_elements is None and self.min_elements > 1:
            parts.append(f"{self.min_elements}+ elements")
        elif self.max_elements is not None:
            parts.append(f"{self.min_elements}-{self.max_elements} elements")
        return "; ".join(parts) or "all"
