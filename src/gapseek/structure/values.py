"""CIF values as gapseek reads them: numbers with standard uncertainties, columns of a loop, messages cut short."""

from __future__ import annotations

import math
import re

import numpy as np

__all__ = ["column", "num", "num_column", "short"]


def num(value: str | None) -> float:
    """CIF number with optional s.u. '1.234(5)'; NaN for '?', '.', missing or junk."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except ValueError:
        pass
    s = value.strip().strip("'\"")
    if s in ("?", ".", ""):
        return math.nan
    s = re.sub(r"\(\d*\)$", "", s)
    try:
        return float(s)
    except ValueError:
        return math.nan

def num_column(values: list[str]) -> np.ndarray:
    """A CIF column as float64 (plain numbers parse in one call; others go through :func:`_num`)."""
    try:
        return np.array(values, dtype=float)
    except ValueError:
        return np.array([num(v) for v in values], dtype=float)

def column(block, tag: str) -> list[str] | None:
    col = block.find_values(tag)
    if not col:
        return None
    return [col[i] for i in range(len(col))]

def short(msg: str, limit: int = 200) -> str:
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."
