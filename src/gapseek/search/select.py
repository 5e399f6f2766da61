"""Pool-based batch selection: greedy, unique picks from a finite set of candidates (the discrete counterpart of
optimising an acquisition; BoTorch's ``optimize_acqf_discrete`` is the model)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Pick", "select_greedy"]


@dataclass(frozen=True)
class Pick:
    """One chosen candidate: its pool ``row``, its acquisition ``value`` when chosen, and the scoring's other
    per-candidate numbers at it (``info``, e.g. the posterior mean and sd)."""

    row: int
    value: float
    info: dict[str, float] = field(default_factory=dict)


Score = Callable[[np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]]


def select_greedy(candidates: np.ndarray, n: int, score: Score, condition: Callable[[Pick], None] | None = None,
                  rescore: int = 2048) -> list[Pick]:
    """Up to ``n`` distinct candidates, chosen one at a time.

    ``candidates``: ``c`` pool rows, sorted ascending. ``score(rows)``: ``r`` rows -> (``r`` acquisition values,
    higher is better; ``{name: r values}`` to keep with a pick). Each round takes the best-scoring candidate (the
    first of equal ones, in row order); before the next, ``condition(pick)`` updates the model as if the pick had
    been measured (a kriging believer: the caller's model takes it at its posterior mean) and the remaining
    candidates are scored again. To keep that cheap on a large pool, the rounds after the first score only the
    ``rescore`` candidates that scored best in the first round (every candidate when ``c <= rescore``): a
    believed pick changes the posterior only near itself. Returns ``min(n, c)`` picks in the order chosen.
    """
    if n < 1:
        return []
    cand = np.asarray(candidates, dtype=np.int64)
    picks: list[Pick] = []
    for j in range(min(n, cand.size)):
        values, info = score(cand)
        k = int(np.argmax(values))
        pick = Pick(int(cand[k]), float(values[k]), {key: float(v[k]) for key, v in info.items()})
        picks.append(pick)
        if len(picks) == n:
            break
        if condition is not None:
            condition(pick)
        if j == 0 and cand.size > rescore:  # the rest among the first round's best (the pick is the very best)
            cand = cand[np.sort(np.argsort(-values, kind="stable")[: rescore + 1])]
            k = int(np.searchsorted(cand, pick.row))
        cand = np.delete(cand, k)
    return picks
