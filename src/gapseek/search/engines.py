"""Engines: which unexplored crystals to measure next. One small interface, :class:`Engine`:

    engine.propose(pool, observed, observed_y, n, rng) -> [(pool row, why), ...]

``pool``: the candidates (``N x d`` inputs ``X``, ids, CGCNN predictions); ``observed``: pool rows with known gaps
(prior + trials); ``n``: how many to propose, jointly (a batch for a lab). Engines never see unobserved labels.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from gapseek.errors import ConfigError
from gapseek.search.acquisition import ACQUISITIONS

__all__ = ["ENGINES", "Engine", "GPEngine", "Pool", "PredictedEngine", "RandomEngine", "make_engine"]

log = logging.getLogger(__name__)


@dataclass
class Pool:
    """``N`` candidate crystals. ``X``: ``N x d`` engine inputs (standardised); ``prediction``: ``N`` CGCNN gaps."""

    ids: list[str]
    formula: list[str]
    X: np.ndarray
    prediction: np.ndarray
    target: float
    tolerance: float
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.index:
            self.index = {cid: k for k, cid in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)


def _unexplored(pool: Pool, observed: np.ndarray) -> np.ndarray:
    mask = np.ones(len(pool), dtype=bool)
    mask[observed] = False
    return np.nonzero(mask)[0]


class Engine:
    name = "engine"

    def propose(self, pool: Pool, observed: np.ndarray, observed_y: np.ndarray, n: int,
                rng: np.random.Generator) -> list[tuple[int, str]]:  # pragma: no cover - interface
        raise NotImplementedError


class RandomEngine(Engine):
    """Uniformly at random among unexplored crystals (the baseline every engine must beat)."""

    name = "random"

    def propose(self, pool, observed, observed_y, n, rng):
        cand = _unexplored(pool, observed)
        pick = rng.choice(cand, size=min(n, cand.size), replace=False)
        return [(int(i), "random draw") for i in pick]


class PredictedEngine(Engine):
    """Rank by ``|CGCNN prediction - T|`` (no learning from the measurements)."""

    name = "predicted"

    def propose(self, pool, observed, observed_y, n, rng):
        cand = _unexplored(pool, observed)
        dist = np.abs(pool.prediction[cand] - pool.target)
        order = cand[np.argsort(dist, kind="stable")[:n]]
        return [(int(i), f"CGCNN predicts {pool.prediction[i]:.3f} eV") for i in order]


class GPEngine(Engine):
    """Our pool-based Bayesian optimisation on GPy: an ARD kernel on the pool inputs, the acquisition evaluated
    on every unexplored crystal (in blocks, so a 500,000-crystal pool fits in memory), batches chosen jointly
    (kriging believer: each pick is added to the GP at its posterior mean before the next is chosen).

    ``acquisition``: ``pin`` (probability that the gap lies in [T - D, T + D]) or ``ei`` (expected improvement of
    |gap - T|). ``prior_mean``: ``none`` or ``cgcnn`` (the GP models gap - CGCNN prediction). ``kernel``: ``rbf``
    or ``matern52``. Fitting costs grow with the observations only; hyperparameters are re-fitted every
    ``refit_every`` calls, warm-started.
    """

    name = "gp"

    def __init__(self, acquisition: str = "pin", prior_mean: str = "cgcnn", kernel: str = "matern52",
                 refit_every: int = 1, block: int = 65536, max_iters: int = 200) -> None:
        if acquisition not in ACQUISITIONS:
            raise ConfigError(f"acquisition must be one of {', '.join(ACQUISITIONS)}; got {acquisition!r}")
        if prior_mean not in ("none", "cgcnn"):
            raise ConfigError(f"prior_mean must be none or cgcnn; got {prior_mean!r}")
        if kernel not in ("rbf", "matern52"):
            raise ConfigError(f"kernel must be rbf or matern52; got {kernel!r}")
        self.acquisition = acquisition
        self.prior_mean = prior_mean
        self.kernel = kernel
        self.refit_every = max(1, refit_every)
        self.block = block
        self.max_iters = max_iters
        self._params: np.ndarray | None = None
        self._calls = 0

    def _fit(self, X: np.ndarray, r: np.ndarray):
        import GPy

        d = X.shape[1]
        kern = (GPy.kern.Matern52(d, ARD=True) if self.kernel == "matern52" else GPy.kern.RBF(d, ARD=True))
        model = GPy.models.GPRegression(X, r[:, None], kern, normalizer=True)
        model.Gaussian_noise.variance.constrain_bounded(1e-6, 10.0, warning=False)
        kern.lengthscale.constrain_bounded(1e-2, 1e3, warning=False)
        refit = self._params is None or self._calls % self.refit_every == 0
        if self._params is not None and self._params.size == model.optimizer_array.size:
            model.optimizer_array = self._params
        if refit:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    model.optimize(max_iters=self.max_iters)
                except np.linalg.LinAlgError:
                    log.warning("GP hyperparameter fit failed; keeping the previous ones")
        self._params = model.optimizer_array.copy()
        return model

    def propose(self, pool, observed, observed_y, n, rng):
        self._calls += 1
        X = pool.X
        base = pool.prediction if self.prior_mean == "cgcnn" else np.zeros(len(pool))
        obs = list(observed)
        resid = list(observed_y - base[observed])
        model = self._fit(X[obs], np.asarray(resid))
        cand_mask = np.ones(len(pool), dtype=bool)
        cand_mask[observed] = False
        picks: list[tuple[int, str]] = []
        best = float(np.min(np.abs(observed_y - pool.target))) if len(observed_y) else 1.0
        for _ in range(min(n, int(cand_mask.sum()))):
            def posterior(Xb, _rows=None):
                mu, var = model.predict(Xb)
                return mu[:, 0], np.sqrt(np.maximum(var[:, 0], 1e-18))

            cand = np.nonzero(cand_mask)[0]
            scores = np.empty(cand.size)
            means = np.empty(cand.size)
            sds = np.empty(cand.size)
            for s in range(0, cand.size, self.block):
                rows = cand[s:s + self.block]
                mu, sd = posterior(X[rows])
                mu = mu + base[rows]
                means[s:s + self.block], sds[s:s + self.block] = mu, sd
                acq = ACQUISITIONS[self.acquisition](lambda _X, m=mu, v=sd: (m, v), pool.target, pool.tolerance, best)
                scores[s:s + self.block] = acq.forward(X[rows])
            k = int(np.argmax(scores))
            i = int(cand[k])
            picks.append((i, f"{self.acquisition}={scores[k]:.3g}, gap {means[k]:.3f} +- {sds[k]:.3f} eV"))
            cand_mask[i] = False
            if len(picks) < n:  # kriging believer: pretend we measured the posterior mean, then choose again
                obs.append(i)
                resid.append(means[k] - base[i])
                model.set_XY(X[obs], np.asarray(resid)[:, None])
        return picks


def _gpyopt_engine(**kw):
    from gapseek.search.engine_gpyopt import GPyOptEngine

    return GPyOptEngine(**kw)


ENGINES = {
    "random": RandomEngine,
    "predicted": PredictedEngine,
    "gp": GPEngine,
    "gp-ei": lambda: GPEngine(acquisition="ei"),
    "gp-noprior": lambda: GPEngine(prior_mean="none"),
    "gpyopt": _gpyopt_engine,
}


def make_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}; valid: {', '.join(ENGINES)}")
    return ENGINES[name]()
