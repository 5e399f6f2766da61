"""Gaussian processes of the search: GPy's regression fitted with bounds and a warm start (:func:`fit_gpy`), its
posterior as a fast function of the inputs (:func:`gp_posterior`), and :class:`IsoGP`, a small deterministic
isotropic GP (the ``shell`` engine's). Numerical trouble during a fit is one :class:`~gapseek.errors.FitWarning`
(:func:`fit_warnings`), not silence. Every matrix of a fit is small (observations x observations): run them with
one BLAS/OpenMP thread (:func:`one_thread`)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular

from gapseek.errors import ConfigError, FitWarning

__all__ = ["IsoGP", "fit_gpy", "fit_warnings", "gp_posterior", "one_thread"]

log = logging.getLogger(__name__)

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


@contextlib.contextmanager
def fit_warnings(what: str) -> Iterator[None]:
    """Collect the warnings a model fit raises (GPy's, numpy's overflow, scipy's optimiser) and, if there were any
    about the numbers, say so as one :class:`FitWarning` (its message fixed, so that a user sees it once per
    process; each warning goes to the debug log). The fit's result stands: these libraries warn on the way to a
    good optimum too. Deprecation notices of the libraries are not about the fit: logged at debug only."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    numeric = [w for w in caught if not issubclass(w.category, _API_NOTICES)]
    for w in caught:
        log.debug("%s: %s: %s", what, w.category.__name__, w.message)
    if numeric:
        warnings.warn(f"{what} raised numerical warnings (e.g. overflow, or a covariance that needed jitter); the "
                      "fit kept the best hyperparameters it found (-vv lists them)", FitWarning, stacklevel=3)


_API_NOTICES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ImportWarning)


def fit_gpy(X: np.ndarray, y: np.ndarray, kernel: str = "matern52", ard: bool = True,
            params: np.ndarray | None = None, optimize: bool = True, max_iters: int = 200):
    """A GPy ``GPRegression`` of ``y`` (``m``) on ``X`` (``m x d``): Matern-5/2 or RBF kernel, one lengthscale per
    input (``ard``) or one shared, lengthscales in [0.01, 1000], noise variance in [1e-6, 10], outputs standardised
    by the first data it sees (:func:`_frozen_standardize`). ``params``: a warm start (the optimizer array of an
    earlier fit of the same shape); ``optimize``: fit the hyperparameters by maximum likelihood (else keep the warm
    start). A failed fit (a matrix that is not positive definite) keeps the hyperparameters it started from, with a
    :class:`FitWarning`."""
    import GPy

    d = X.shape[1]
    kern = GPy.kern.Matern52(d, ARD=ard) if kernel == "matern52" else GPy.kern.RBF(d, ARD=ard)
    model = GPy.models.GPRegression(X, y[:, None], kern, normalizer=_frozen_standardize())
    model.Gaussian_noise.variance.constrain_bounded(1e-6, 10.0, warning=False)
    kern.lengthscale.constrain_bounded(1e-2, 1e3, warning=False)
    if params is not None and params.size == model.optimizer_array.size:
        model.optimizer_array = params
    if optimize:
        try:
            with fit_warnings("the GP's hyperparameter fit (GPy)"):
                model.optimize(max_iters=max_iters)
        except np.linalg.LinAlgError:
            warnings.warn("the GP's hyperparameter fit failed (a covariance that is not positive definite); the "
                          "previous hyperparameters are kept", FitWarning, stacklevel=2)
    return model


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


_SQRT5 = np.sqrt(5.0)


class IsoGP:
    """An isotropic Matérn-5/2 GP with a constant mean (the targets' mean) and Gaussian noise.

    Hyperparameters by maximum marginal likelihood over a grid of lengthscales and noise-to-signal ratios, the
    signal variance in closed form (``s2 = y' (R + eta I)^-1 y / m``). ``believe(X, y)`` adds observations with the
    same hyperparameters and the same target normalisation (kriging believer)."""

    LENGTHSCALES = np.geomspace(0.05, 5.0, 15)
    NOISE = (1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5, 1.0)

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        self.X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        self.mean = float(y.mean())
        self.sd = float(y.std()) or 1.0
        self.yn = (y - self.mean) / self.sd
        D = self._dist(self.X, self.X)
        m = len(y)
        best = (-np.inf, 1.0, 1e-2)
        for ls in self.LENGTHSCALES:
            R = self._matern(D / ls)
            for eta in self.NOISE:
                try:
                    c = cho_factor(R + eta * np.eye(m), lower=True, check_finite=False)
                except np.linalg.LinAlgError:
                    continue
                alpha = cho_solve(c, self.yn, check_finite=False)
                s2 = max(float(self.yn @ alpha) / m, 1e-12)
                ll = -0.5 * m * np.log(s2) - float(np.sum(np.log(np.diag(c[0]))))
                if ll > best[0]:
                    best = (ll, float(ls), float(eta))
        _, self.ls, self.eta = best
        self._factor()

    @staticmethod
    def _dist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
        d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
        return np.sqrt(np.maximum(d2, 0.0))

    @staticmethod
    def _matern(r: np.ndarray) -> np.ndarray:
        s = _SQRT5 * r
        return (1.0 + s + s * s / 3.0) * np.exp(-s)

    def _factor(self) -> None:
        m = len(self.yn)
        R = self._matern(self._dist(self.X, self.X) / self.ls) + self.eta * np.eye(m)
        self.L = np.linalg.cholesky(R)
        self.alpha = cho_solve((self.L, True), self.yn, check_finite=False)
        self.s2 = max(float(self.yn @ self.alpha) / m, 1e-12)

    def believe(self, X: np.ndarray, y: np.ndarray) -> None:
        self.X = np.vstack([self.X, X])
        self.yn = np.concatenate([self.yn, (np.asarray(y, dtype=float) - self.mean) / self.sd])
        s2 = self.s2
        self._factor()
        self.s2 = s2  # the signal variance stays that of the real observations

    def predict(self, Xs: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of noisy observations (in the targets' units)."""
        mu, var = np.empty(len(Xs)), np.empty(len(Xs))
        for s in range(0, len(Xs), chunk):
            k = self._matern(self._dist(Xs[s:s + chunk], self.X) / self.ls)
            mu[s:s + chunk] = k @ self.alpha
            v = solve_triangular(self.L, k.T, lower=True, check_finite=False)
            var[s:s + chunk] = 1.0 + self.eta - (v * v).sum(0)
        return mu * self.sd + self.mean, np.sqrt(np.maximum(var, 1e-12) * self.s2) * self.sd
