"""The one interface of the engines, which choose the crystals a campaign measures next.

    engine.propose(pool, observed, observed_y, n, rng, pending=None) -> [(pool row, why), ...]

``pool``: the candidates (:class:`~gapseek.search.pool.Pool`: ``N x d`` inputs ``X``, ids, CGCNN predictions);
``observed``: ``m`` pool rows with known gaps ``observed_y`` (``m``; prior + trials); ``n``: how many to propose,
jointly (a batch for a lab); ``pending``: ``p`` rows proposed earlier whose measurement is under way. Engines never
see unobserved labels.
"""

from __future__ import annotations

import numpy as np

from gapseek.search.pool import Pool

__all__ = ["Engine"]


class Engine:
    """Proposes the next crystals of a campaign.

    ``propose(pool, observed, observed_y, n, rng, pending=None)``: ``observed`` (``m`` pool rows) were measured
    as ``observed_y`` (``m`` gaps); ``pending`` (``p`` rows) were proposed earlier and are being measured — never
    proposed again (nor are the pool's ``excluded`` rows), and the ``gp`` and ``shell`` engines condition on them
    as on the earlier picks of a joint batch (``gpyopt`` only leaves them out). Returns ``n`` (or fewer, when the
    pool runs out) ``(pool row, why)`` pairs.

    ``get_state()`` / ``set_state(state)``: what an engine carries from one proposal to the next (JSON-able; None
    for the stateless ones), so that a campaign resumed after a crash proposes exactly what an uninterrupted one
    would (the campaign saves it with its random generator's state before each round).
    """

    name = "engine"

    def propose(self, pool: Pool, observed: np.ndarray, observed_y: np.ndarray, n: int,
                rng: np.random.Generator,
                pending: np.ndarray | None = None) -> list[tuple[int, str]]:  # pragma: no cover - interface
        raise NotImplementedError

    def get_state(self) -> dict | None:
        return None

    def set_state(self, state: dict | None) -> None:
        pass
