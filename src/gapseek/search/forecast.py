"""What a campaign can expect before the lab spends money: trials to a first hit and hits within the budget.

From the labelled crystals (prior: CGCNN prediction and measured gap) and the predictions of the candidates,
nothing else. The model behind it is the one the ``shell`` engine uses to place its shell:

- **Calibration** (:func:`gapseek.search.calibration.calibrate`): ``gap ~ a + b * prediction`` near ``T``.
- **Residuals**: the non-metal labels' residuals ``gap - (a + b * prediction)``, each weighted by how near ``T``
  its calibrated prediction lies (a Gaussian of width ``bandwidth``), smoothed by a Gaussian kernel of width ``h``
  (``h = max(0.3 * spread, MIN_H)``, 0.02 eV). The empirical residuals keep their heavy tails, which a Gaussian of the
  robust spread would not.
- **Metals**: a candidate is a metal (gap 0) with the weighted share of metals among the labels near ``T``.
- A candidate's **hit probability** ``p_i = P(|gap_i - T| <= D)`` follows; hits are taken as independent.

The **engine** forecast is for picking in order of ``p_i`` (the calibrated ranking; the default engine also learns
inside its shell, so its realised first hits may be earlier: the benchmark says by how much); **random** is for
draws without replacement from all candidates. Intervals come from refitting everything on bootstrap resamples of
the labels (the uncertainty of the model, not the luck of one campaign; ``first_hit_quantiles`` gives that).
The random forecast assumes the labels are a random sample of the pool (as ``--prior N`` draws them); a prior the
lab chose (e.g. crystals near T) overstates the pool's share of hits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.special import ndtr

from gapseek.errors import ConfigError
from gapseek.search.calibration import Calibration, calibrate, leaves_metals_out

__all__ = ["Forecast", "forecast", "forecast_pool", "hit_probabilities"]


@dataclass(frozen=True)
class Forecast:
    """Expected first hit (trials, censored at ``budget + 1``), expected hits within ``budget``, the chance of at
    least one hit, for the engine (picking by hit probability) and for random; ``*_interval``: 80% bootstrap
    intervals of those expectations. ``first_hit_quantiles``: the engine's first hit at 10/50/90% (the spread one
    campaign can show; ``budget + 1`` = no hit)."""

    target: float
    tolerance: float
    budget: int
    candidates: int
    labels: int
    engine_first_hit: float
    engine_first_hit_interval: tuple[float, float]
    engine_hits: float
    engine_hits_interval: tuple[float, float]
    engine_found: float
    random_first_hit: float
    random_first_hit_interval: tuple[float, float]
    random_hits: float
    random_hits_interval: tuple[float, float]
    random_found: float
    pool_hits: float
    first_hit_quantiles: tuple[int, int, int]
    calibration: dict = field(default_factory=dict)

    @property
    def acceleration(self) -> float:
        return self.random_first_hit / self.engine_first_hit

    def to_json(self) -> dict:
        d = asdict(self)
        d["acceleration"] = round(self.acceleration, 3)
        d["note"] = ("expected values; *_interval: 80% bootstrap intervals over the labels; first hits count a "
                     "campaign without a hit as budget + 1; the engine forecast is for picking by calibrated hit "
                     "probability, random's assumes the labels are a random sample of the pool")
        return d

    def lines(self) -> list[str]:
        b = self.budget
        lo, hi = self.engine_first_hit_interval
        rlo, rhi = self.random_first_hit_interval
        q = self.first_hit_quantiles
        return [
            f"forecast for T = {self.target:g} +- {self.tolerance:g} eV, budget {b}, {self.candidates} candidates, "
            f"from {self.labels} labels (80% intervals):",
            f"  engine: first hit after {self.engine_first_hit:.0f} trials [{lo:.0f}, {hi:.0f}] "
            f"(one campaign: 10/50/90% at {_t(q[0], b)}/{_t(q[1], b)}/{_t(q[2], b)}), "
            f"{self.engine_hits:.1f} hits in {b} [{self.engine_hits_interval[0]:.1f}, "
            f"{self.engine_hits_interval[1]:.1f}], P(a hit) {self.engine_found:.2f}",
            f"  random: first hit after {self.random_first_hit:.0f} trials [{rlo:.0f}, {rhi:.0f}], "
            f"{self.random_hits:.1f} hits in {b}, P(a hit) {self.random_found:.2f}; ~{self.pool_hits:.0f} hits "
            f"in the pool",
        ]


def _t(t: int, budget: int) -> str:
    return f">{budget}" if t > budget else str(t)


MIN_H = 0.02  # eV: the smallest kernel width for the residuals
METAL_GAP = 1e-3  # eV: a label at or below this is a metal


@dataclass(frozen=True)
class _HitModel:
    """The calibration, the non-metal labels' residuals (``m``) with their weights near T, the kernel width, and
    the weighted share of metals near T."""

    cal: Calibration
    residuals: np.ndarray
    weights: np.ndarray
    h: float
    metal_share: float

    @classmethod
    def fit(cls, lp: np.ndarray, lg: np.ndarray, target: float, bandwidth: float) -> _HitModel:
        if lp.shape != lg.shape or lp.ndim != 1:
            raise ConfigError("labels: as many predictions as gaps, one each")
        if lp.size < 8:
            raise ConfigError(f"a forecast needs at least 8 labelled crystals; got {lp.size}")
        cal = calibrate(lp, lg, target, bandwidth=bandwidth, metal_gap=METAL_GAP)
        c_lab = cal(lp)
        near = np.exp(-0.5 * ((c_lab - target) / bandwidth) ** 2) + 1e-12
        metal = lg <= METAL_GAP
        away_from_0 = leaves_metals_out(target, METAL_GAP)
        metal_share = float(np.sum(near * metal) / np.sum(near)) if away_from_0 else 0.0
        keep = ~metal if away_from_0 else np.ones(lp.size, dtype=bool)
        if not keep.any():
            raise ConfigError("a forecast needs labelled crystals that are not metals")
        return cls(cal, lg[keep] - c_lab[keep], near[keep] / near[keep].sum(), max(0.3 * cal.spread, MIN_H),
                   metal_share)

    def p(self, calibrated: np.ndarray, target: float, tolerance: float) -> np.ndarray:
        """``n`` hit probabilities of crystals with these calibrated predictions (``n``)."""
        p = np.zeros(calibrated.size)
        r, h = self.residuals[None, :], self.h
        for s in range(0, calibrated.size, 4096):  # blocks: n x m stays small for 500,000 candidates
            mu = calibrated[s:s + 4096, None] + r
            p[s:s + 4096] = (ndtr((target + tolerance - mu) / h) - ndtr((target - tolerance - mu) / h)) @ self.weights
        return p * (1.0 - self.metal_share)

    def params(self) -> dict:
        return {"a": self.cal.a, "b": self.cal.b, "spread": self.cal.spread, "kernel_h": self.h,
                "metal_share": self.metal_share, "useful": self.cal.useful}


def hit_probabilities(prediction: np.ndarray, label_prediction: np.ndarray, label_gap: np.ndarray, target: float,
                      tolerance: float, bandwidth: float = 0.5) -> tuple[np.ndarray, dict]:
    """``n`` hit probabilities ``P(|gap - T| <= D)`` of the crystals whose CGCNN predictions are ``prediction``
    (``n``), from the labels (``m`` predictions and gaps); and the model's parameters (see the module)."""
    model = _HitModel.fit(np.asarray(label_prediction, dtype=float), np.asarray(label_gap, dtype=float), target,
                          bandwidth)
    return model.p(model.cal(np.asarray(prediction, dtype=float)), target, tolerance), model.params()


def _survival(p_sorted: np.ndarray, budget: int) -> np.ndarray:
    """``P(no hit in the first t picks)``, ``t = 0..budget``."""
    q = np.concatenate([[1.0], np.cumprod(1.0 - p_sorted[:budget])])
    return np.pad(q, (0, budget + 1 - q.size), constant_values=q[-1]) if q.size < budget + 1 else q


def _one(prediction, lp, lg, target, tolerance, budget, bandwidth, sample, nearest):
    """Engine survival, engine hits, random survival, random hits, pool hits, parameters. The engine's best
    ``budget`` hit probabilities are looked for among the ``nearest`` candidates in calibrated prediction (the
    probability is a smooth function of it, flat over that window), random's share of hits is estimated on the
    candidates of ``sample`` (all, or a fixed random subsample)."""
    model = _HitModel.fit(lp, lg, target, bandwidth)
    c = model.cal(prediction)
    d = np.abs(c - target)
    near = np.argpartition(d, nearest - 1)[:nearest] if nearest < c.size else np.arange(c.size)
    top = np.sort(model.p(c[near], target, tolerance))[::-1][:budget]
    s_eng = _survival(top, budget)
    n = prediction.size
    pool_hits = float(model.p(c[sample], target, tolerance).mean() * n) if sample.size else 0.0
    frac = min(pool_hits / max(n, 1), 1.0)
    s_rand = (1.0 - frac) ** np.arange(budget + 1)
    return s_eng, float(top.sum()), s_rand, frac * budget, pool_hits, model.params()


def forecast(prediction: np.ndarray, label_prediction: np.ndarray, label_gap: np.ndarray, target: float,
             tolerance: float, budget: int, n_boot: int = 100, seed: int = 0, bandwidth: float = 0.5,
             random_sample: int = 5000, nearest: int = 3000) -> Forecast:
    """The forecast for candidates with CGCNN predictions ``prediction`` (``n``, the crystals a campaign may
    propose) from labelled crystals (``m`` predictions and gaps). Deterministic for a given ``seed``."""
    if budget < 1:
        raise ConfigError(f"budget must be at least 1; got {budget}")
    prediction = np.asarray(prediction, dtype=float)
    lp, lg = np.asarray(label_prediction, dtype=float), np.asarray(label_gap, dtype=float)
    rng = np.random.default_rng(seed)
    if prediction.size == 0:
        raise ConfigError("no candidate left to forecast for")
    # random's pool share from a fixed subsample (cheap, unbiased); the engine's picks among the nearest
    sample = (np.sort(rng.choice(prediction.size, random_sample, replace=False)) if prediction.size > random_sample
              else np.arange(prediction.size))
    nearest = max(nearest, 20 * budget)
    s_eng, hits, s_rand, rhits, pool_hits, params = _one(prediction, lp, lg, target, tolerance, budget,
                                                         bandwidth, sample, nearest)
    boots = []
    for _ in range(n_boot):
        k = rng.integers(0, lp.size, lp.size)
        try:
            boots.append(_one(prediction, lp[k], lg[k], target, tolerance, budget, bandwidth, sample, nearest))
        except ConfigError:  # a resample without non-metals: skipped
            continue

    def interval(values: list[float], point: float) -> tuple[float, float]:
        if not values:
            return (point, point)
        lo, hi = np.percentile(values, [10, 90])
        return (float(lo), float(hi))

    mix = np.mean([b[0] for b in boots] + [s_eng], axis=0)  # survival over the model's uncertainty
    cdf = 1.0 - mix
    quantiles = tuple(int(np.searchsorted(cdf, q) if cdf[-1] >= q else budget + 1) for q in (0.1, 0.5, 0.9))
    return Forecast(
        target=float(target), tolerance=float(tolerance), budget=int(budget), candidates=int(prediction.size),
        labels=int(lp.size),
        engine_first_hit=float(s_eng.sum()), engine_first_hit_interval=interval([b[0].sum() for b in boots],
                                                                                float(s_eng.sum())),
        engine_hits=hits, engine_hits_interval=interval([b[1] for b in boots], hits),
        engine_found=float(1.0 - s_eng[-1]),
        random_first_hit=float(s_rand.sum()), random_first_hit_interval=interval([b[2].sum() for b in boots],
                                                                                 float(s_rand.sum())),
        random_hits=rhits, random_hits_interval=interval([b[3] for b in boots], rhits),
        random_found=float(1.0 - s_rand[-1]), pool_hits=pool_hits,
        first_hit_quantiles=quantiles,  # type: ignore[arg-type]
        calibration={k: (round(v, 4) if isinstance(v, float) else v) for k, v in params.items()})


def forecast_pool(pool, observed: np.ndarray, observed_y: np.ndarray, budget: int, n_boot: int = 100,
                  seed: int = 0) -> Forecast:
    """The forecast for a campaign on ``pool`` (:class:`gapseek.search.pool.Pool`) whose labelled rows are
    ``observed`` (``m``) with gaps ``observed_y`` (``m``): the candidates are the rows an engine may still propose."""
    observed = np.asarray(observed, dtype=np.int64)
    left = pool.proposable()
    left[observed] = False
    return forecast(pool.prediction[left], pool.prediction[observed], np.asarray(observed_y, dtype=float),
                    pool.target, pool.tolerance, budget, n_boot=n_boot, seed=seed)
