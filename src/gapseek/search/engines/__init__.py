"""Engines: which unexplored crystals a campaign measures next, behind one interface
(:class:`~gapseek.search.engines.base.Engine`), by name (:data:`ENGINES`, :func:`make_engine`)."""

from __future__ import annotations

from collections.abc import Callable

from gapseek.errors import ConfigError
from gapseek.search.engines.base import Engine
from gapseek.search.engines.baseline import PredictedEngine, RandomEngine
from gapseek.search.engines.gp import GPEngine
from gapseek.search.engines.shell import ShellEngine

__all__ = ["DEFAULT_ENGINE", "ENGINES", "ENGINE_NOTES", "Engine", "GPEngine", "PredictedEngine", "RandomEngine",
           "ShellEngine", "make_engine"]


def _gpyopt() -> Engine:
    from gapseek.search.engines.gpyopt import GPyOptEngine  # GPyOpt is archived: the engine stands apart

    return GPyOptEngine()


ENGINES: dict[str, Callable[[], Engine]] = {
    "shell": ShellEngine,
    "random": RandomEngine,
    "predicted": PredictedEngine,
    "gp": GPEngine,
    "gp-ei": lambda: GPEngine(acquisition="ei"),
    "gp-noprior": lambda: GPEngine(prior_mean="none"),
    "gp-abs": lambda: GPEngine(acquisition="ei-f", prior_mean="none"),
    "gp-iso": lambda: GPEngine(ard=False),
    "gp-abs-iso": lambda: GPEngine(acquisition="ei-f", prior_mean="none", ard=False),
    "gpyopt": _gpyopt,
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
    """A new engine by name; an unknown name is a ConfigError listing the valid ones."""
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}; valid: {', '.join(ENGINES)}")
    return ENGINES[name]()
