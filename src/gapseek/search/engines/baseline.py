"""The baselines every engine must beat: random draws, and ranking by the CGCNN prediction alone."""

from __future__ import annotations

import numpy as np

from gapseek.search.engines.base import Engine

__all__ = ["PredictedEngine", "RandomEngine"]


class RandomEngine(Engine):
    """Uniformly at random among unexplored crystals."""

    name = "random"

    def propose(self, pool, observed, observed_y, n, rng, pending=None):
        cand = pool.unexplored(observed, pending)
        pick = rng.choice(cand, size=min(n, cand.size), replace=False)
        return [(int(i), "random draw") for i in pick]


class PredictedEngine(Engine):
    """Rank by ``|CGCNN prediction - T|`` (no learning from the measurements)."""

    name = "predicted"

    def propose(self, pool, observed, observed_y, n, rng, pending=None):
        cand = pool.unexplored(observed, pending)
        dist = np.abs(pool.prediction[cand] - pool.target)
        order = cand[np.argsort(dist, kind="stable")[:n]]
        return [(int(i), f"CGCNN predicts {pool.prediction[i]:.3f} eV") for i in order]
