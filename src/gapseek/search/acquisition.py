"""Acquisition functions behind one tiny interface: ``forward(X) -> n`` scores, higher = more worth measuring.

Each holds a fitted posterior (``posterior(X) -> (mean, std)``, both ``n``, for the band gap ``y``) and the
goal: a target ``T`` and a tolerance ``D``. The objective to minimise is ``f = |y - T|``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import ndtr

__all__ = [
    "ACQUISITIONS", "AcquisitionFunction", "ExpectedImprovement", "ExpectedImprovementAbs", "ProbabilityInWindow",
]

Posterior = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
_SQRT2PI = np.sqrt(2.0 * np.pi)


def _pdf(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / _SQRT2PI


class AcquisitionFunction:
    def __init__(self, posterior: Posterior, target: float, tolerance: float, best: float) -> None:
        self.posterior = posterior
        self.target = float(target)
        self.tolerance = float(tolerance)
        self.best = float(best)  # the smallest |y - T| observed so far

    def forward(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        """``n x d -> n``."""
        raise NotImplementedError

    __call__ = forward


class ProbabilityInWindow(AcquisitionFunction):
    """``P(T - D <= y <= T + D)`` under the posterior: the chance that this crystal is a hit."""

    def forward(self, X: np.ndarray) -> np.ndarray:
        mu, sd = self.posterior(X)
        sd = np.maximum(sd, 1e-12)
        return ndtr((self.target + self.tolerance - mu) / sd) - ndtr((self.target - self.tolerance - mu) / sd)


class ExpectedImprovementAbs(AcquisitionFunction):
    """``E[max(f* - |y - T|, 0)]`` with ``y ~ N(mean, std^2)``: expected improvement on the distance to the
    target (closed form of the folded normal), ``f*`` the best distance so far."""

    def forward(self, X: np.ndarray) -> np.ndarray:
        mu, sd = self.posterior(X)
        return expected_improvement_abs(mu, np.maximum(sd, 1e-12), self.target, self.best)


def expected_improvement_abs(mu: np.ndarray, sd: np.ndarray, target: float, best: float) -> np.ndarray:
    """Closed form of ``E[max(best - |y - target|, 0)]``, ``y ~ N(mu, sd^2)``, elementwise."""
    lo, hi = target - best, target + best
    z_lo, z_t, z_hi = (lo - mu) / sd, (target - mu) / sd, (hi - mu) / sd
    p_lo, p_t, p_hi = ndtr(z_lo), ndtr(z_t), ndtr(z_hi)
    d_lo, d_t, d_hi = _pdf(z_lo), _pdf(z_t), _pdf(z_hi)
    # integral over [lo, T] of (best - T + y) p(y) dy, and over [T, hi] of (best + T - y) p(y) dy
    left = (best - target + mu) * (p_t - p_lo) - sd * (d_t - d_lo)
    right = (best + target - mu) * (p_hi - p_t) + sd * (d_hi - d_t)
    return np.maximum(left + right, 0.0)


class ExpectedImprovement(AcquisitionFunction):
    """Classic expected improvement for minimising a directly modelled objective ``f`` (here the posterior is of
    ``f = |gap - T|`` itself, as in the write-up's GPyOpt set-up): ``E[max(best - f, 0)]``."""

    def forward(self, X: np.ndarray) -> np.ndarray:
        mu, sd = self.posterior(X)
        sd = np.maximum(sd, 1e-12)
        z = (self.best - mu) / sd
        return (self.best - mu) * ndtr(z) + sd * _pdf(z)


ACQUISITIONS: dict[str, type[AcquisitionFunction]] = {
    "pin": ProbabilityInWindow,
    "ei": ExpectedImprovementAbs,
    "ei-f": ExpectedImprovement,
}
