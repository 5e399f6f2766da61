"""The ``shell`` engine: the CGCNN prediction, calibrated on the campaign's own labels, as a filter; learning inside.

Per proposal, from the labelled crystals (prior + measured so far, never anything else):

1. **Calibration** (:func:`gapseek.search.calibration.calibrate`): a robust fit ``gap ~ a + b * prediction``.
   Metals (gap 0) are left out when the target is above ``2 * metal_gap``: their residuals say nothing about where
   gaps near ``T`` lie. A global Tukey-biweight fit gives the slope ``b`` (clipped to [0.5, 2]); the offset ``a``
   is then re-fitted locally — labels weighted by a Gaussian in calibrated prediction around ``T`` (bandwidth
   ``bandwidth`` eV), biweight on the residuals — so that the crystals measured inside the shell move it where
   their gaps say. ``s``, the spread of the local residuals (weighted MAD x 1.4826, at least ``min_spread``), and
   ``n_local``, the effective number of labels behind it, come with it. Too few labels (< ``min_labels``) leave
   the identity (a = 0, b = 1).
2. **Is the predictor any use?** When the slope of the robust global fit is not clearly positive (its t statistic
   below ``min_t`` = 2), the engine falls back to the whole pool (no shell). A weak but real predictor keeps its
   shell: in the write-up's 2.3-2.8 eV window (CGCNN correlation 0.31) the shell and learning inside did better
   than the whole window.
3. **The shell**: the unexplored crystals whose calibrated prediction lies within ``w = clip(shell_k * s,
   shell_min, shell_max)`` of ``T``; when fewer than ``min_candidates`` remain there, the ``min_candidates``
   nearest in calibrated prediction (the shell widens as it is used up); when more than ``max_candidates``
   (20,000: a 500,000-crystal pool), the ``max_candidates`` nearest (the shell narrows, so that a suggestion
   stays within ~2 s on one core).
4. **Learning inside**: an isotropic Matérn-5/2 GP (:class:`gapseek.search.gp.IsoGP`, hyperparameters by maximum
   marginal likelihood over a fixed grid, the signal variance profiled out: deterministic and ~20 ms for 200
   labels) on the pool inputs (standardised PCA), of ``|gap - T|`` on every label, classic expected improvement over the
   best distance so far (floored at the tolerance: improving a hit does not matter), evaluated on every shell
   crystal. Batches and pending crystals: kriging believer, as in the ``gp`` engines; after the first pick of a
   batch the rest are re-scored among the ``rescore`` (2,048) best crystals of the first pass
   (:func:`gapseek.search.select.select_greedy`).

Stateless between proposals (everything is re-fitted from the labels, deterministically), so a resumed campaign
proposes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np

from gapseek.errors import ConfigError
from gapseek.search.acquisition import expected_improvement, expected_improvement_abs
from gapseek.search.calibration import Calibration, calibrate
from gapseek.search.engines.base import Engine
from gapseek.search.gp import IsoGP, one_thread
from gapseek.search.pool import Pool
from gapseek.search.select import Pick, select_greedy

__all__ = ["ShellEngine"]


class ShellEngine(Engine):
    """See the module. Constants (eV unless said): ``shell_k`` (shell half-width in residual spreads),
    ``shell_min``/``shell_max`` (its bounds), ``min_candidates`` (the shell is widened to hold at least these),
    ``bandwidth`` (locality of the calibration's offset), ``min_t`` (fallback threshold on the slope's t statistic);
    ``model``/``fallback_model``: ``abs`` (a GP of ``|gap - T|``, classic EI; the default) or ``gap`` (a GP of the gap
    minus the calibrated prediction, EI of ``|gap - T|`` in closed form) inside the shell / on the whole pool;
    ``closeness``: EI times ``exp(-closeness * z^2 / 2)``, ``z`` the calibrated distance to ``T`` in shell
    half-widths (0, the default: off; 1 gave no gain on held-out seeds over 13 targets)."""

    name = "shell"

    def __init__(self, shell_k: float = 0.25, shell_min: float = 0.05, shell_max: float = 0.5,
                 min_candidates: int = 300, bandwidth: float = 0.5, min_t: float = 2.0,
                 model: str = "abs", fallback_model: str = "abs", closeness: float = 0.0,
                 max_candidates: int = 20000, rescore: int = 2048) -> None:
        for m in (model, fallback_model):
            if m not in ("abs", "gap"):
                raise ConfigError(f"shell engine models: abs or gap; got {m!r}")
        self.model = model
        self.fallback_model = fallback_model
        self.shell_k = shell_k
        self.shell_min = shell_min
        self.shell_max = shell_max
        self.min_candidates = min_candidates
        self.bandwidth = bandwidth
        self.min_t = min_t
        self.closeness = closeness
        self.max_candidates = max_candidates
        self.rescore = rescore
        self.last: dict | None = None  # what the last proposal decided (for reports and tests)

    def propose(self, pool, observed, observed_y, n, rng, pending=None):
        with one_thread():
            return self._propose(pool, np.asarray(observed, dtype=np.int64), np.asarray(observed_y, dtype=float),
                                 n, pending)

    def candidates(self, pool: Pool, observed: np.ndarray, observed_y: np.ndarray,
                   pending: np.ndarray | None = None) -> tuple[np.ndarray, Calibration, float | None]:
        """The shell (unexplored rows), the calibration, and the shell's half-width (None: the whole pool)."""
        cal = calibrate(pool.prediction[observed], observed_y, pool.target, bandwidth=self.bandwidth,
                        min_t=self.min_t)
        cand = pool.unexplored(observed, pending)
        if not cal.useful or cand.size <= self.min_candidates:
            return cand, cal, None
        dist = np.abs(cal(pool.prediction[cand]) - pool.target)
        w = float(np.clip(self.shell_k * cal.spread, self.shell_min, self.shell_max))
        inside = dist <= w
        n_inside = int(inside.sum())
        if n_inside < self.min_candidates or n_inside > self.max_candidates:  # widened, or narrowed on a big pool
            k = self.min_candidates if n_inside < self.min_candidates else self.max_candidates
            order = np.argsort(dist, kind="stable")[:k]
            w = float(dist[order[-1]])
            return np.sort(cand[order]), cal, w
        return cand[inside], cal, w

    def _propose(self, pool, observed, y, n, pending):
        T, D = pool.target, pool.tolerance
        cand, cal, w = self.candidates(pool, observed, y, pending)
        self.last = {"a": cal.a, "b": cal.b, "spread": cal.spread, "n_local": cal.n_local, "useful": cal.useful,
                     "half_width": w, "candidates": int(cand.size)}
        if cand.size == 0:
            return []
        f = np.abs(y - T)
        model = self.model if w is not None else self.fallback_model
        if model == "gap":  # a GP of the gap (minus the calibrated prediction in a shell), EI of |gap - T|
            base = cal(pool.prediction) if w is not None else np.zeros(len(pool))
            gp = IsoGP(pool.X[observed], y - base[observed])
        else:
            base = None
            gp = IsoGP(pool.X[observed], f)
        state = {"best": max(float(f.min()), D) if f.size else 1.0}  # the incumbent |gap - T|, floored at D

        def believe(rows: np.ndarray, mu: np.ndarray) -> None:  # kriging believer: rows measured at their mean
            gp.believe(pool.X[rows], mu)
            dist = mu if base is None else np.abs(mu + base[rows] - T)
            state["best"] = max(min(state["best"], float(dist.min())), D)

        if pending is not None and len(pending):
            pending = np.asarray(pending, dtype=np.int64)
            believe(pending, gp.predict(pool.X[pending])[0])

        def score(rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
            mu, sd = gp.predict(pool.X[rows])
            if base is None:
                ei = expected_improvement(mu, sd, T, D, state["best"])
            else:
                ei = expected_improvement_abs(mu + base[rows], sd, T, D, state["best"])
            if self.closeness and w is not None:  # prefer, at equal EI, crystals calibrated nearer T
                z = (cal(pool.prediction[rows]) - T) / max(w, 1e-6)
                ei = ei * np.exp(-0.5 * self.closeness * z * z)
            return ei, {"mu": mu, "sd": sd}

        def describe(p: Pick) -> str:
            what = (f"|gap - T| {p.info['mu']:.3f}" if base is None else f"gap {p.info['mu'] + base[p.row]:.3f}")
            return (f"{where}; calibrated {float(cal(pool.prediction[p.row])):.3f} eV; EI={p.value:.3g}, {what} "
                    f"+- {p.info['sd']:.3f} eV")

        where = (f"shell: calibrated CGCNN {cal.a:+.2f} + {cal.b:.2f} x pred within {w:.2f} eV of T"
                 if w is not None else ("whole pool: the CGCNN prediction does not tell gaps near T apart"
                                        if not cal.useful else "whole pool (few candidates left)"))
        picks = select_greedy(cand, n, score, lambda p: believe(np.array([p.row]), np.array([p.info["mu"]])),
                              self.rescore)
        return [(p.row, describe(p)) for p in picks]
