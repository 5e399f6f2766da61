"""The write-up's method, isolated (GPyOpt is archived; deleting this file drops it): GPyOpt's
BayesianOptimization with EI on ``|gap - T|``, over the pool inputs, with a 'bandit' domain made of the
unexplored pool rows.

What GPyOpt does with a bandit domain, per proposal (its defaults, unchanged here): a GP (isotropic Matern-5/2,
outputs normalised) fitted by L-BFGS with 5 restarts; EI (jitter 0.01) evaluated on 1,000 crystals drawn at random
from the domain; L-BFGS from the 5 best of them over the domain's bounding box, each optimum snapped to the nearest
crystal (Euclidean); the best of these. The proposal is always a pool crystal, but EI is not evaluated on every
one (the ``gp`` engines do that).

Cost: every matrix GPyOpt and GPy handle here is small (about 100-200 observations; 1,000 anchor points), and
BLAS/OpenMP thread pools on such matrices are pure overhead — on a loaded machine, catastrophically so (a 100 x 100
``dpotri`` took 250 ms with 2 OpenBLAS threads against 0.13 ms with one). The engine therefore runs GPyOpt with
one thread (``threadpoolctl``); the arithmetic, and so the picks, are the same.

Batches (``n > 1``, ``gapseek suggest --n``, ``search --batch``): one sequential GPyOpt proposal per crystal, each
with the crystals already picked (and those being measured) left out of the bandit domain — greedy EI over the
pool. GPyOpt's own batch method, local penalisation, cannot run with GPyOpt 1.2.6 under
current SciPy (its ``estimate_L`` indexes ``res.fun[0][0]``, a float now: TypeError).
"""

from __future__ import annotations

import warnings

import numpy as np

from gapseek.errors import ConfigError
from gapseek.search.engines.base import Engine
from gapseek.search.gp import fit_warnings, one_thread

__all__ = ["GPyOptEngine"]


class GPyOptEngine(Engine):
    name = "gpyopt"

    def propose(self, pool, observed, observed_y, n, rng, pending=None):
        try:
            with warnings.catch_warnings():  # its imports' deprecation notices (pkg_resources, ...) are not ours
                warnings.simplefilter("ignore")
                import GPyOpt
        except ImportError as exc:
            raise ConfigError(f"engine gpyopt needs GPyOpt (pip install GPyOpt 'setuptools<82'): {exc}") from None
        picks: list[tuple[int, str]] = []
        pending = np.zeros(0, dtype=np.int64) if pending is None else np.asarray(pending, dtype=np.int64)
        while len(picks) < n:
            more = self._ask(GPyOpt, pool, observed, observed_y, 1, rng,
                             np.concatenate([pending, np.array([p for p, _ in picks], dtype=np.int64)]))
            if not more:
                break
            picks += more
        return picks

    @staticmethod
    def _ask(GPyOpt, pool, observed, observed_y, n, rng, pending) -> list[tuple[int, str]]:
        """Up to ``n`` distinct crystals from one GPyOpt call (fewer when it snaps two to one crystal)."""
        cand = pool.unexplored(observed, pending)  # crystals being measured leave the bandit domain
        if cand.size == 0:
            return []
        n = min(n, cand.size)
        Xc = pool.X[cand]
        Y = np.abs(observed_y - pool.target)[:, None]
        # GPyOpt (and GPy's optimiser restarts under it) draw from numpy's global random state: seed it from the
        # campaign's generator, and give the caller's global state back, so a run is reproducible whatever ran
        # before it in the process
        saved = np.random.get_state()
        np.random.seed(int(rng.integers(2**32)))
        try:
            with fit_warnings("GPyOpt's GP fit and acquisition search"), one_thread():
                bo = GPyOpt.methods.BayesianOptimization(
                    f=None, domain=[{"name": "crystal", "type": "bandit", "domain": Xc}],
                    X=pool.X[observed], Y=Y, acquisition_type="EI", normalize_Y=True, exact_feval=False,
                    batch_size=n, evaluator_type="sequential", de_duplication=True)
                nxt = bo.suggest_next_locations()
        finally:
            np.random.set_state(saved)
        lookup = {row.tobytes(): int(k) for k, row in zip(cand, Xc)}
        picks = []
        for row in np.atleast_2d(nxt):
            k = lookup.get(np.asarray(row, dtype=Xc.dtype).tobytes())
            if k is None:  # GPyOpt returns candidate rows; match the nearest one if it rounded them
                k = int(cand[np.argmin(((Xc - row) ** 2).sum(axis=1))])
            if k not in {p for p, _ in picks}:
                picks.append((k, "GPyOpt EI on |gap - T| (bandit domain)"))
        return picks[:n]
