"""Elements as CIF files name them (atom-site labels like ``Fe3+``, ``Ow``, ``D``) and pymatgen's order of sites
(electronegativity, then symbol), from gemmi's table and pymatgen's electronegativities."""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["ElementTable", "SiteKey", "element_table", "parse_symbol", "symbol", "tuple_key"]


_SPECIAL_SYMBOLS = {"Hw": "H", "Ow": "O", "Wat": "O", "wat": "O", "OH": "", "OH2": "", "NO3": "N"}


@dataclass(frozen=True)
class ElementTable:
    numbers: dict[str, int]
    symbols: dict[int, str]
    sort_key: dict[int, tuple[float, str]]
    electroneg: dict[int, float]


@lru_cache(maxsize=1)
def element_table() -> ElementTable:
    import gemmi

    numbers: dict[str, int] = {}
    symbols: dict[int, str] = {}
    for z in range(1, 119):
        sym = gemmi.Element(z).name
        numbers[sym] = z
        symbols[z] = sym
    numbers["D"] = 1
    numbers["T"] = 1
    electroneg = {z: _pauling(z) for z in symbols}
    sort_key = {z: (math.inf if math.isnan(x) else x, symbols[z]) for z, x in electroneg.items()}
    return ElementTable(numbers=numbers, symbols=symbols, sort_key=sort_key, electroneg=electroneg)


def _pauling(z: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pymatgen.core.periodic_table import Element

        x = Element.from_Z(z).X
    return float(x)


@lru_cache(maxsize=4096)
def symbol(sym: str) -> str | None:
    """:func:`_parse_symbol` with the element table, cached (atom-site labels repeat across files)."""
    return parse_symbol(sym, element_table())


def parse_symbol(sym: str, table: ElementTable) -> str | None:
    m_sp = re.match("|".join(_SPECIAL_SYMBOLS), sym)
    if m_sp:
        return _SPECIAL_SYMBOLS[m_sp.group()]
    if sym[:2].title() in table.numbers and len(sym) >= 2:
        return sym[:2].title()
    if sym and sym[0].upper() in table.numbers:
        return sym[0].upper()
    return None


class SiteKey:
    """pymatgen's ``Site.__lt__``: electronegativity (NaN never smaller nor larger), then species string."""

    __slots__ = ("symbol", "x")

    def __init__(self, x: float, symbol: str) -> None:
        self.x = x
        self.symbol = symbol

    def __lt__(self, other: SiteKey) -> bool:
        if self.x < other.x:
            return True
        if self.x > other.x:
            return False
        return self.symbol < other.symbol


def tuple_key(x: float, symbol: str) -> tuple[float, str]:
    return (x, symbol)
