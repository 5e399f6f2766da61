"""Known band gaps: ``id,band_gap`` CSV files (with or without a header), validated: every line holds exactly
two fields, so ``mp-1,2,8964`` (a decimal comma) is an error, not a gap of 2 eV."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from gapseek.errors import InputError, few

__all__ = ["read_labels"]


def read_labels(path: str | Path) -> dict[str, float]:
    """``{id: band gap in eV}``. A line without exactly two fields (``id,band_gap``), NaN, negative or non-numeric
    gaps, and an id given twice with different values, are errors naming the lines (a few, and how many more):
    the whole file is refused, so nothing of it is used."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read labels {path}: {exc}") from None
    labels: dict[str, float] = {}
    bad: list[str] = []
    rows = list(csv.reader(text.splitlines()))
    for k, row in enumerate(rows, start=1):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 2:
            if len(row) == 3 and row[1].strip().lstrip("-").isdigit() and row[2].strip().isdigit():
                why = f" (a decimal comma? write {row[1].strip()}.{row[2].strip()})"
            else:
                why = ""
            bad.append(f"line {k}: {len(row)} field(s), expected 2 (id,band_gap){why}")
            continue
        cid, raw = row[0].strip(), row[1].strip()
        try:
            gap = float(raw)
        except ValueError:
            if k == 1:  # a header line
                continue
            bad.append(f"line {k}: band gap {raw!r} is not a number")
            continue
        if math.isnan(gap) or math.isinf(gap) or gap < 0:
            bad.append(f"line {k}: band gap {raw} for {cid} (must be a finite number >= 0)")
            continue
        if cid in labels and labels[cid] != gap:
            bad.append(f"line {k}: {cid} given twice with different gaps ({labels[cid]} and {gap})")
            continue
        labels[cid] = gap
    if bad:
        raise InputError(f"{path}: {len(bad)} bad label line(s): {few(bad, sep='; ')}")
    if not labels:
        raise InputError(f"{path} holds no labels (expected lines id,band_gap)")
    return labels
