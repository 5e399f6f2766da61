"""Acquisition functions: plain functions of a posterior's mean and standard deviation and the goal.

Each is ``acquisition(mean, sd, target, tolerance, best) -> scores``: ``mean`` and ``sd`` are ``n`` posterior means
and standard deviations (of the band gap ``y``, or of ``f = |y - T|`` itself for :func:`expected_improvement`),
``target`` ``T`` and ``tolerance`` ``D`` the goal (eV), ``best`` the smallest ``|y - T|`` observed so far; the
``n`` scores are higher for crystals more worth measuring. A standard deviation is floored at 1e-12.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import ndtr

__all__ = ["ACQUISITIONS", "Acquisition", "expected_improvement", "expected_improvement_abs",
           "probability_in_window"]

Acquisition = Callable[[np.ndarray, np.ndarray, float, float, float], np.ndarray]
_SQRT2PI = np.sqrt(2.0 * np.pi)


def _pdf(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / _SQRT2PI


def probability_in_window(mean: np.ndarray, sd: np.ndarray, target: float, tolerance: float,
                          best: float | None = None) -> np.ndarray:
    """``P(T - D <= y <= T + D)``, ``y ~ N(mean, sd^2)``: the chance that the crystal is a hit (``n``)."""
    sd = np.maximum(sd, 1e-12)
    return ndtr((target + tolerance - mean) / sd) - ndtr((target - tolerance - mean) / sd)


def expected_improvement_abs(mean: np.ndarray, sd: np.ndarray, target: float, tolerance: float,
                             best: float) -> np.ndarray:
    """``E[max(best - |y - T|, 0)]``, ``y ~ N(mean, sd^2)``: expected improvement on the distance to the target,
    in the closed form of the folded normal (``n``)."""
    sd = np.maximum(sd, 1e-12)
    lo, hi = target - best, target + best
    z_lo, z_t, z_hi = (lo - mean) / sd, (target - mean) / sd, (hi - mean) / sd
    p_lo, p_t, p_hi = ndtr(z_lo), ndtr(z_t), ndtr(z_hi)
    d_lo, d_t, d_hi = _pdf(z_lo), _pdf(z_t), _pdf(z_hi)
    # integral over [lo, T] of (best - T + y) p(y) dy, and over [T, hi] of (best + T - y) p(y) dy
    left = (best - target + mean) * (p_t - p_lo) - sd * (d_t - d_lo)
    right = (best + target - mean) * (p_hi - p_t) + sd * (d_hi - d_t)
    return np.maximum(left + right, 0.0)


def expected_improvement(mean: np.ndarray, sd: np.ndarray, target: float, tolerance: float,
                         best: float) -> np.ndarray:
    """Classic expected improvement for minimising a directly modelled ``f`` (here ``f = |y - T|``: ``mean`` and
    ``sd`` are its posterior's): ``E[max(best - f, 0)]``, ``f ~ N(mean, sd^2)`` (``n``; ``target`` and
    ``tolerance`` are already in ``f``)."""
    sd = np.maximum(sd, 1e-12)
    z = (best - mean) / sd
    return (best - mean) * ndtr(z) + sd * np.exp(-0.5 * z * z) / _SQRT2PI


ACQUISITIONS: dict[str, Acquisition] = {
    "pin": probability_in_window,
    "ei": expected_improvement_abs,
    "ei-f": expected_improvement,
}
