"""Calibration of the CGCNN prediction on a campaign's own labels: a robust fit ``gap ~ a + b * prediction`` whose
offset is re-fitted locally around the target (see :func:`calibrate`). The ``shell`` engine places its shell with
it; the forecast and the benchmark's ceiling use it too."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Calibration", "calibrate", "leaves_metals_out"]


@dataclass
class Calibration:
    a: float  # offset: calibrated prediction = a + b * prediction
    b: float  # slope
    spread: float  # robust spread of the residuals near T (eV)
    n_local: float  # effective number of labels behind the local fit
    n_used: int  # labels used (metals left out when T is away from 0)
    useful: bool  # whether the prediction tells gaps near T apart at all
    gap_spread: float  # robust spread of the labelled gaps themselves
    slope_t: float  # t statistic of the slope in the robust global fit (nan: too few labels, identity kept)

    def __call__(self, prediction: np.ndarray) -> np.ndarray:
        return self.a + self.b * prediction


def _wmedian(x: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(x, kind="stable")
    cw = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cw, 0.5 * cw[-1])])


def _biweight(r: np.ndarray, scale: float, c: float = 4.685) -> np.ndarray:
    u = r / (c * max(scale, 1e-9))
    return np.where(np.abs(u) < 1.0, (1.0 - u * u) ** 2, 0.0)


def leaves_metals_out(target: float, metal_gap: float = 1e-3) -> bool:
    """Whether metals (gap <= ``metal_gap``) are left out of the calibration for ``target``: when T is away from 0,
    their residuals say nothing about where gaps near T lie."""
    return target > 2 * metal_gap + 0.05


def calibrate(prediction: np.ndarray, gap: np.ndarray, target: float, bandwidth: float = 0.5,
              min_labels: int = 8, min_spread: float = 0.05, min_t: float = 2.0,
              metal_gap: float = 1e-3, iters: int = 10) -> Calibration:
    """Robust calibration of the prediction on labelled crystals (see the module). Deterministic."""
    p = np.asarray(prediction, dtype=float)
    g = np.asarray(gap, dtype=float)
    if leaves_metals_out(target, metal_gap):
        keep = g > metal_gap
        p, g = p[keep], g[keep]
    n = p.size
    gap_spread = 1.4826 * float(np.median(np.abs(g - np.median(g)))) if n else 1.0
    if n < min_labels:
        return Calibration(0.0, 1.0, 0.5, float(n), n, True, gap_spread, float("nan"))
    # global slope: biweight IRLS from least squares
    A = np.column_stack([np.ones(n), p])
    w = np.ones(n)
    coef = np.zeros(2)
    for _ in range(iters):
        sw = np.sqrt(w)
        coef = np.linalg.lstsq(A * sw[:, None], g * sw, rcond=None)[0]
        r = g - A @ coef
        scale = 1.4826 * _wmedian(np.abs(r), np.maximum(w, 1e-12))
        w = _biweight(r, scale)
        if w.sum() < 3:
            w = np.ones(n)
            break
    b = float(np.clip(coef[1], 0.5, 2.0)) if np.isfinite(coef[1]) else 1.0
    raw_slope = float(coef[1]) if np.isfinite(coef[1]) else 0.0
    # is the slope clearly positive? its t statistic in the weighted fit
    sw = w.sum()
    if sw > 3:
        r = g - A @ coef
        pm = float(np.sum(w * p) / sw)
        sxx = float(np.sum(w * (p - pm) ** 2))
        sigma2 = float(np.sum(w * r * r) / (sw - 2))
        slope_t = raw_slope / np.sqrt(sigma2 / sxx) if sxx > 0 and sigma2 > 0 else 0.0
    else:
        slope_t = 0.0
    # local offset around T, in calibrated space: where gaps near T actually lie
    a = float(np.median(g - b * p))
    spread = 0.5
    wl = np.ones(n)
    for _ in range(iters):
        r = g - (a + b * p)
        loc = np.exp(-0.5 * (((a + b * p) - target) / bandwidth) ** 2)
        spread = max(min_spread, 1.4826 * _wmedian(np.abs(r - _wmedian(r, loc + 1e-12)), loc + 1e-12))
        wl = loc * _biweight(r, spread)
        if wl.sum() < 1e-6:
            wl = loc
        a_new = a + float(np.sum(wl * r) / max(np.sum(wl), 1e-12))
        if abs(a_new - a) < 1e-6:
            a = a_new
            break
        a = a_new
    n_local = float(wl.sum() ** 2 / max(np.sum(wl * wl), 1e-12))
    useful = bool(slope_t >= min_t)
    return Calibration(a, b, float(spread), n_local, n, useful, gap_spread, float(slope_t))
