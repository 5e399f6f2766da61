"""What a CIF says about itself, from its text alone (no structure parser): the elements of its formula, how many
data blocks hold atom sites, and the Crystallography Open Database's own tags — read by ``gapseek index`` from the
bytes it hashes anyway.

COD files carry their database code (``_cod_database_code``), a pointer to the entry they duplicate
(``_cod_duplicate_entry``), and the repository's revision and date of the file in their header comments
(``#$Revision: 176760 $``, ``#$Date: 2016-02-20 00:18:51 +0200 ... $``): the newest of those over a mirror
says which state of COD it holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CifMeta", "cif_meta", "formula_elements"]

_FORMULA = re.compile(rb"(?i)[ \t]*_chemical_formula_sum[ \t]*"
                      rb"(?:'([^'\n]*)'|\"([^\"\n]*)\"|([^\s'\"][^\n]*)|\n;([^;]*)\n;)")
_ELEMENT = re.compile(r"([A-Z][a-z]?)\s*(\d*\.?\d*)")
_DIGITS = re.compile(rb"\d+")
_WS = re.compile(rb"\s")
_REVISION = re.compile(rb"(?m)^#\$Revision:\s*(\d+)\s*\$")
_DATE = re.compile(rb"(?m)^#\$Date:\s*(\d{4}-\d{2}-\d{2})")
_ISOTOPES = {"D": "H", "T": "H"}


@dataclass(frozen=True)
class CifMeta:
    """``elements``: the symbols of ``_chemical_formula_sum`` (None when the file has none); ``structure_blocks``:
    names of the data blocks with atom sites; the COD fields are None in files that lack them."""

    elements: frozenset[str] | None
    structure_blocks: tuple[str, ...]
    cod_code: str | None = None
    duplicate_of: str | None = None
    revision: int | None = None
    date: str | None = None


def formula_elements(formula: str) -> frozenset[str] | None:
    """Element symbols of a CIF formula (``'C12 H10 O4'``, ``Fe2 O3``; D and T count as H); None when it names
    none."""
    found = {_ISOTOPES.get(sym, sym) for sym, _ in _ELEMENT.findall(formula)}
    return frozenset(found) or None


def _tag_value(low: bytes, data: bytes, tag: bytes) -> bytes | None:
    """The raw text after the first ``tag`` that starts a line (``low``: ``data`` lower-cased, same offsets)."""
    at = low.find(tag)
    while at >= 0:
        line_start = low.rfind(b"\n", 0, at) + 1
        if not low[line_start:at].strip():
            end = low.find(b"\n", at)
            return data[at + len(tag):end if end >= 0 else len(data)]
        at = low.find(tag, at + 1)
    return None


def _number(raw: bytes | None) -> str | None:
    m = _DIGITS.match(raw.strip().strip(b"'\"")) if raw is not None else None
    return m.group(0).decode("ascii") if m else None


def cif_meta(data: bytes) -> CifMeta:
    """:class:`CifMeta` of a CIF's bytes (substring searches and a few anchored expressions; never raises)."""
    low = data.lower()
    elements = None
    at = low.find(b"_chemical_formula_sum")
    if at >= 0:
        m = _FORMULA.search(data, low.rfind(b"\n", 0, at) + 1)
        if m:
            raw = next((g for g in m.groups() if g is not None), b"")
            elements = formula_elements(raw.decode("utf-8", "replace"))
    starts = []
    at = low.find(b"data_")
    while at >= 0:
        if not low[low.rfind(b"\n", 0, at) + 1:at].strip():
            end = len(low) if (nl := _WS.search(low, at)) is None else nl.start()
            starts.append((at, data[at + 5:end].decode("utf-8", "replace")))
        at = low.find(b"data_", at + 5)
    blocks = []
    for k, (begin, name) in enumerate(starts):
        stop = starts[k + 1][0] if k + 1 < len(starts) else len(low)
        if low.find(b"_atom_site_fract_x", begin, stop) >= 0 or low.find(b"_atom_site_cartn_x", begin, stop) >= 0:
            blocks.append(name)
    head = data[:4096]
    rev, date = _REVISION.search(head), _DATE.search(head)
    return CifMeta(elements, tuple(blocks), _number(_tag_value(low, data, b"_cod_database_code")),
                   _number(_tag_value(low, data, b"_cod_duplicate_entry")),
                   int(rev.group(1)) if rev else None, date.group(1).decode("ascii") if date else None)
