"""``gp`` and its variants: pool-based Bayesian optimisation on a GPy Gaussian process of the gap (or of
``|gap - T|``), the acquisition evaluated on every unexplored crystal, batches chosen greedily
(:func:`gapseek.search.select.select_greedy`) with a kriging believer."""

from __future__ import annotations

import logging

import numpy as np

from gapseek.errors import ConfigError
from gapseek.search.acquisition import ACQUISITIONS
from gapseek.search.engines.base import Engine
from gapseek.search.gp import fit_gpy, gp_posterior, one_thread
from gapseek.search.select import Pick, select_greedy

__all__ = ["GPEngine"]

log = logging.getLogger(__name__)

KERNELS = ("matern52", "rbf")


class GPEngine(Engine):
    """Our pool-based Bayesian optimisation on GPy: an ARD kernel on the pool inputs, the acquisition evaluated
    on every unexplored crystal (in blocks, so a 500,000-crystal pool fits in memory), batches chosen jointly
    (kriging believer: each pick is added to the GP at its posterior mean before the next is chosen, the
    next ones re-scored among the ``rescore`` best candidates of the first pass).

    ``acquisition``: ``pin`` (probability that the gap lies in [T - D, T + D]) or ``ei`` (expected improvement of
    |gap - T|) on a GP of the gap; or ``ei-f``, classic EI on a GP of ``|gap - T|`` itself (the write-up's
    objective). ``prior_mean``: ``none`` or ``cgcnn`` (the GP models gap - CGCNN prediction; gap models only).
    ``kernel``: ``rbf``
    or ``matern52``; ``ard``: one lengthscale per input (ARD, the default of the ``gp*`` engines) or one shared
    (isotropic: the ``*-iso`` engines; fitted on ~100 labels, ARD often switches PCA dimensions off). Fitting
    costs grow with the observations only; hyperparameters are re-fitted every ``refit_every`` calls,
    warm-started.
    """

    name = "gp"

    def __init__(self, acquisition: str = "pin", prior_mean: str = "cgcnn", kernel: str = "matern52",
                 refit_every: int = 1, block: int = 16384, max_iters: int = 200, rescore: int = 4096,
                 ard: bool = True) -> None:
        for what, value, valid in (("acquisition", acquisition, tuple(ACQUISITIONS)),
                                   ("prior_mean", prior_mean, ("none", "cgcnn")), ("kernel", kernel, KERNELS)):
            if value not in valid:
                raise ConfigError(f"{what} must be one of {', '.join(valid)}; got {value!r}")
        self.acquisition = acquisition
        self.prior_mean = prior_mean
        self.kernel = kernel
        self.refit_every = max(1, refit_every)
        self.block = block
        self.max_iters = max_iters
        self.rescore = rescore
        self.ard = ard
        self._params: np.ndarray | None = None
        self._calls = 0

    def get_state(self) -> dict:
        """The warm start of the next fit (the last hyperparameters) and the call count (``refit_every``); floats
        survive JSON exactly."""
        return {"params": None if self._params is None else [float(v) for v in self._params], "calls": self._calls}

    def set_state(self, state: dict | None) -> None:
        state = state or {}
        params = state.get("params")
        self._params = None if params is None else np.asarray(params, dtype=np.float64)
        self._calls = int(state.get("calls", 0))

    def _fit(self, X: np.ndarray, r: np.ndarray):
        refit = self._params is None or self._calls % self.refit_every == 0
        model = fit_gpy(X, r, self.kernel, self.ard, self._params, optimize=refit, max_iters=self.max_iters)
        self._params = model.optimizer_array.copy()
        return model

    def propose(self, pool, observed, observed_y, n, rng, pending=None):
        # every matrix of the fit is small (observations x observations): BLAS/OpenMP thread pools there are pure
        # overhead, and on a loaded machine a large one (5 trials: 12.6 s with 2 threads, 0.8 s with one)
        with one_thread():
            return self._propose(pool, np.asarray(observed, dtype=np.int64), np.asarray(observed_y, dtype=float), n,
                                 pending)

    def _propose(self, pool, observed, observed_y, n, pending):
        self._calls += 1
        direct = self.acquisition == "ei-f"  # model f = |gap - T| itself
        base = pool.prediction if self.prior_mean == "cgcnn" and not direct else np.zeros(len(pool))
        y = np.abs(observed_y - pool.target) if direct else observed_y - base[observed]
        gp = _Believer(self._fit(pool.X[observed], y), pool, observed, y, base, direct,
                       float(np.min(np.abs(observed_y - pool.target))) if len(observed_y) else 1.0)
        if pending is not None and len(pending):  # crystals being measured count like the earlier picks of a batch
            pending = np.asarray(pending, dtype=np.int64)
            gp.believe(pending, gp.posterior()(pool.X[pending])[0])
        acquisition = ACQUISITIONS[self.acquisition]

        def score(rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
            post = gp.posterior()
            values, means, sds = np.empty(rows.size), np.empty(rows.size), np.empty(rows.size)
            for s in range(0, rows.size, self.block):  # blocks: a 500,000-crystal pool fits in memory
                block = rows[s:s + self.block]
                mu, sd = post(pool.X[block])
                mu = mu + base[block]
                values[s:s + self.block] = acquisition(mu, sd, pool.target, pool.tolerance, gp.best)
                means[s:s + self.block], sds[s:s + self.block] = mu, sd
            return values, {"mean": means, "sd": sds}

        def condition(pick: Pick) -> None:  # believe the pick at its posterior mean, then choose again
            gp.believe(np.array([pick.row]), np.array([pick.info["mean"] - base[pick.row]]))

        what = "|gap - T|" if direct else "gap"
        picks = select_greedy(pool.unexplored(observed, pending), n, score, condition, self.rescore)
        return [(p.row, f"{self.acquisition}={p.value:.3g}, {what} {p.info['mean']:.3f} +- {p.info['sd']:.3f} eV")
                for p in picks]


class _Believer:
    """A fitted GP that takes believed observations (kriging believer): rows added at their posterior mean keep
    the mean, shrink the variance near them and keep the scale of the real observations; ``best`` (the incumbent
    distance to T) follows them."""

    def __init__(self, model, pool, observed: np.ndarray, y: np.ndarray, base: np.ndarray, direct: bool,
                 best: float) -> None:
        self.model, self.pool, self.base, self.direct, self.best = model, pool, base, direct, best
        self.rows = [int(i) for i in observed]
        self.y = list(y)
        self._post = None

    def posterior(self):
        if self._post is None:
            self._post = gp_posterior(self.model)
        return self._post

    def believe(self, rows: np.ndarray, mean: np.ndarray) -> None:
        """Add ``rows`` as if measured at ``mean`` (the GP's own variable: the residual, or ``|gap - T|``)."""
        self.rows.extend(int(i) for i in rows)
        self.y.extend(mean)
        self.model.set_XY(self.pool.X[self.rows], np.asarray(self.y)[:, None])
        self._post = None
        dist = mean if self.direct else np.abs(mean + self.base[rows] - self.pool.target)
        self.best = min(self.best, float(np.min(dist)))
