"""Engines: which unexplored crystals to measure next. One small interface, :class:`Engine`:

    engine.propose(pool, observed, observed_y, n, rng, pending=None) -> [(pool row, why), ...]

``pool``: the candidates (``N x d`` inputs ``X``, ids, CGCNN predictions); ``observed``: pool rows with known gaps
(prior + trials); ``n``: how many to propose, jointly (a batch for a lab); ``pending``: rows proposed earlier whose
measurement is under way. Engines never see unobserved labels.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gapseek.errors import ConfigError
from gapseek.search.acquisition import ACQUISITIONS

__all__ = ["DEFAULT_ENGINE", "ENGINES", "Engine", "GPEngine", "Pool", "PredictedEngine", "RandomEngine", "make_engine"]

log = logging.getLogger(__name__)


@dataclass
class Pool:
    """``N`` candidate crystals. ``X``: ``N x d`` engine inputs (standardised); ``prediction``: ``N`` CGCNN gaps.
    ``excluded``: ``N`` booleans, the rows no engine may propose (left out by the campaign's candidate filters, or
    recorded as failed: could not be made or measured), None when none is; they stay in the pool, so that measured
    ones inform the engines. ``filtered_out``: how many of them the candidate filters left out."""

    ids: list[str]
    formula: list[str]
    X: np.ndarray
    prediction: np.ndarray
    target: float
    tolerance: float
    index: dict[str, int] = field(default_factory=dict)
    excluded: np.ndarray | None = None
    filtered_out: int = 0

    def __post_init__(self) -> None:
        if not self.index:
            self.index = {cid: k for k, cid in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def exclude(self, rows) -> None:
        """Never propose these rows."""
        if self.excluded is None:
            self.excluded = np.zeros(len(self), dtype=bool)
        self.excluded[np.asarray(rows, dtype=np.int64)] = True

    def proposable(self) -> np.ndarray:
        """``N`` booleans: the rows an engine may propose (measured or not)."""
        return np.ones(len(self), dtype=bool) if self.excluded is None else ~self.excluded


def _unexplored(pool: Pool, observed: np.ndarray, pending: np.ndarray | None = None) -> np.ndarray:
    mask = pool.proposable()  # a copy
    mask[np.asarray(observed, dtype=np.int64)] = False  # an empty list is float to numpy
    if pending is not None:
        mask[np.asarray(pending, dtype=np.int64)] = False
    return np.nonzero(mask)[0]


class Engine:
    """Proposes the next crystals of a campaign.

    ``propose(pool, observed, observed_y, n, rng, pending=None)``: ``observed`` (``m`` pool rows) were measured
    as ``observed_y`` (``m`` gaps); ``pending`` (``p`` rows) were proposed earlier and are being measured — never
    proposed again (nor are the pool's ``excluded`` rows), and the ``gp`` engines condition on them as on the
    earlier picks of a joint batch (``gpyopt`` only leaves them out). Returns ``n`` (or fewer, when the pool runs
    out) ``(pool row, why)`` pairs.

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


class RandomEngine(Engine):
    """Uniformly at random among unexplored crystals (the baseline every engine must beat)."""

    name = "random"

    def propose(self, pool, observed, observed_y, n, rng, pending=None):
        cand = _unexplored(pool, observed, pending)
        pick = rng.choice(cand, size=min(n, cand.size), replace=False)
        return [(int(i), "random draw") for i in pick]


class PredictedEngine(Engine):
    """Rank by ``|CGCNN prediction - T|`` (no learning from the measurements)."""

    name = "predicted"

    def propose(self, pool, observed, observed_y, n, rng, pending=None):
        cand = _unexplored(pool, observed, pending)
        dist = np.abs(pool.prediction[cand] - pool.target)
        order = cand[np.argsort(dist, kind="stable")[:n]]
        return [(int(i), f"CGCNN predicts {pool.prediction[i]:.3f} eV") for i in order]


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
        import GPy

        d = X.shape[1]
        kern = (GPy.kern.Matern52(d, ARD=self.ard) if self.kernel == "matern52"
                else GPy.kern.RBF(d, ARD=self.ard))
        model = GPy.models.GPRegression(X, r[:, None], kern, normalizer=_frozen_standardize())
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

    def propose(self, pool, observed, observed_y, n, rng, pending=None):
        # every matrix of the fit is small (observations x observations): BLAS/OpenMP thread pools there are pure
        # overhead, and on a loaded machine a large one (5 trials: 12.6 s with 2 threads, 0.8 s with one)
        with one_thread():
            return self._propose(pool, observed, observed_y, n, rng, pending)

    def _propose(self, pool, observed, observed_y, n, rng, pending):
        self._calls += 1
        X = pool.X
        direct = self.acquisition == "ei-f"  # model f = |gap - T| itself
        base = pool.prediction if self.prior_mean == "cgcnn" and not direct else np.zeros(len(pool))
        obs = list(observed)
        resid = list(np.abs(observed_y - pool.target) if direct else observed_y - base[observed])
        model = self._fit(X[obs], np.asarray(resid))
        best = float(np.min(np.abs(observed_y - pool.target))) if len(observed_y) else 1.0

        def believe(rows: np.ndarray, mean_resid: np.ndarray) -> None:
            """Kriging believer: add ``rows`` to the GP as if measured at their posterior mean (the mean stays, the
            variance shrinks near them, the GP keeps the scale of the real observations) and to the incumbent."""
            nonlocal best
            obs.extend(int(i) for i in rows)
            resid.extend(mean_resid)
            model.set_XY(X[obs], np.asarray(resid)[:, None])
            best = min(best, float(np.min(mean_resid if direct else np.abs(mean_resid + base[rows] - pool.target))))

        if pending is not None and len(pending):
            # crystals being measured count like the earlier picks of a joint batch
            pending = np.asarray(pending, dtype=np.int64)
            believe(pending, gp_posterior(model)(X[pending])[0])
        cand = _unexplored(pool, observed, pending)
        acq_cls = ACQUISITIONS[self.acquisition]
        what = "|gap - T|" if direct else "gap"

        def score(rows: np.ndarray, post) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            scores, means, sds = np.empty(rows.size), np.empty(rows.size), np.empty(rows.size)
            for s in range(0, rows.size, self.block):
                Xr = X[rows[s:s + self.block]]
                mu, sd = post(Xr)
                mu = mu + base[rows[s:s + self.block]]
                acq = acq_cls(lambda _X, m=mu, v=sd: (m, v), pool.target, pool.tolerance, best)
                scores[s:s + self.block], means[s:s + self.block], sds[s:s + self.block] = acq.forward(Xr), mu, sd
            return scores, means, sds

        scores, means, sds = score(cand, gp_posterior(model))
        picks: list[tuple[int, str]] = []
        for _ in range(min(n, cand.size)):
            k = int(np.argmax(scores))
            i = int(cand[k])
            picks.append((i, f"{self.acquisition}={scores[k]:.3g}, {what} {means[k]:.3f} +- {sds[k]:.3f} eV"))
            if len(picks) == n:
                break
            # believe the pick, then choose again. The fantasy shrinks the variance only near the pick, so the
            # next picks are re-scored among the best-scoring candidates of the first pass (all of them in pools
            # up to `rescore` rows)
            believe(np.array([i]), np.array([means[k] - base[i]]))
            keep = np.ones(cand.size, dtype=bool)
            keep[k] = False
            cand, scores = cand[keep], scores[keep]
            if cand.size > self.rescore:
                top = np.argpartition(-scores, self.rescore)[: self.rescore]
                cand = cand[top]
            scores, means, sds = score(cand, gp_posterior(model))
        return picks


def one_thread():
    """A context in which BLAS and OpenMP pools use one thread (threadpoolctl; the arithmetic is unchanged)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def _frozen_standardize():
    """GPy's ``Standardize`` normaliser, fixed by the first data it sees: believed (fantasy) observations added
    later with ``set_XY`` must not re-scale the GP, or the posterior would shift everywhere."""
    from GPy.util.normalizer import Standardize

    class FrozenStandardize(Standardize):
        def scale_by(self, Y):
            if self.mean is None:
                super().scale_by(Y)

    return FrozenStandardize()


def gp_posterior(model, chunk_bytes: int = 1 << 18) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The posterior of a fitted GPy ``GPRegression`` (Matern52 or RBF, ARD, Standardize normaliser) as a fast
    ``n x d -> (mean n, std n)`` of noisy observations — what ``model.predict`` returns (to ~1e-7).

    Cost per candidate row is one ``m``-long kernel row and one triangular product with the inverse Cholesky
    factor of the ``m x m`` training covariance (half the flops of the Woodbury inverse). Rows are processed in
    chunks whose ``chunk x m`` kernel matrix stays near ``chunk_bytes`` (cache-resident elementwise passes: ~1.6x
    faster than one 16,384-row block at 500,000 x 200).
    """
    import GPy
    from scipy.linalg import solve_triangular
    from scipy.linalg.blas import dtrmm

    kern = model.kern
    ls = np.broadcast_to(np.asarray(kern.lengthscale.values, dtype=float), (model.X.shape[1],))
    s2 = float(kern.variance.values[0])
    noise = float(model.Gaussian_noise.variance.values[0])
    matern = isinstance(kern, GPy.kern.Matern52)
    if not (matern or isinstance(kern, GPy.kern.RBF)):
        raise ConfigError(f"gp_posterior supports Matern52 and RBF kernels, not {type(kern).__name__}")
    Xo = model.X / ls
    xo2 = (Xo**2).sum(axis=1)
    m = Xo.shape[0]
    w = model.posterior.woodbury_vector[:, 0]
    chol = np.asarray(model.posterior.woodbury_chol, dtype=float)  # lower L, L L^T = K + noise
    linv = np.asfortranarray(solve_triangular(chol, np.eye(m), lower=True, check_finite=False))
    norm = getattr(model, "normalizer", None)
    m0, sd0 = (float(norm.mean[0]), float(norm.std[0])) if norm is not None else (0.0, 1.0)
    sqrt5 = np.sqrt(5.0)
    rows = max(64, chunk_bytes // (8 * max(m, 1)))

    def chunk(Xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r2 = Xs @ Xo.T
        r2 *= -2.0
        r2 += (Xs**2).sum(axis=1)[:, None]
        r2 += xo2[None, :]
        np.maximum(r2, 0.0, out=r2)
        if matern:
            k = np.sqrt(r2)
            e = np.exp(-sqrt5 * k)
            k *= sqrt5
            k += 1.0
            r2 *= 5.0 / 3.0
            k += r2
            k *= e
        else:
            r2 *= -0.5
            k = np.exp(r2, out=r2)
        k *= s2
        mu = k @ w
        v = dtrmm(1.0, linv, k.T, lower=1, overwrite_b=1)  # L^-1 k^T, m x chunk
        v *= v
        var = s2 + noise - v.sum(axis=0)
        return mu, var

    def posterior(Xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Xs = np.asarray(Xb, dtype=float) / ls
        mu, var = np.empty(Xs.shape[0]), np.empty(Xs.shape[0])
        for s in range(0, Xs.shape[0], rows):
            mu[s:s + rows], var[s:s + rows] = chunk(Xs[s:s + rows])
        return mu * sd0 + m0, np.sqrt(np.maximum(var, 1e-18)) * sd0

    return posterior


def _gpyopt_engine(**kw):
    from gapseek.search.engine_gpyopt import GPyOptEngine

    return GPyOptEngine(**kw)


def _shell_engine(**kw):
    from gapseek.search.engine_shell import ShellEngine

    return ShellEngine(**kw)


ENGINES = {
    "shell": _shell_engine,
    "random": RandomEngine,
    "predicted": PredictedEngine,
    "gp": GPEngine,
    "gp-ei": lambda: GPEngine(acquisition="ei"),
    "gp-noprior": lambda: GPEngine(prior_mean="none"),
    "gp-abs": lambda: GPEngine(acquisition="ei-f", prior_mean="none"),
    "gp-iso": lambda: GPEngine(ard=False),
    "gp-abs-iso": lambda: GPEngine(acquisition="ei-f", prior_mean="none", ard=False),
    "gpyopt": _gpyopt_engine,
}
DEFAULT_ENGINE = "shell"
# what `--engine` help texts say of each
ENGINE_NOTES = {
    "shell": "the default: CGCNN calibrated on the labels as a filter, isotropic GP + EI inside",
    "random": "uniform draws", "predicted": "rank by |CGCNN - T|",
    "gp": "GPy, ARD Matern-5/2, CGCNN prior mean, P(in window)", "gp-ei": "as gp, EI on |gap - T| (ARD)",
    "gp-noprior": "as gp, zero prior mean (ARD)", "gp-abs": "GP of |gap - T|, classic EI (ARD)",
    "gp-iso": "as gp, isotropic kernel", "gp-abs-iso": "as gp-abs, isotropic kernel",
    "gpyopt": "GPyOpt, the write-up's method",
}


def make_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}; valid: {', '.join(ENGINES)}")
    return ENGINES[name]()
