"""What a campaign searches for and with what: :class:`CampaignSettings`, validated where it lives (an unknown
engine, vector or feature set, a negative target, filters no crystal can pass are errors naming the valid
choices), and how it is kept in ``campaign.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from gapseek.errors import ConfigError
from gapseek.search.engines import ENGINES
from gapseek.search.filters import check_elements
from gapseek.store.schema import VECTORS

__all__ = ["FEATURES", "FILTER_FIELDS", "CampaignSettings", "settings_changes", "settings_json"]

FEATURES = ("pca", "full")


@dataclass(frozen=True)
class CampaignSettings:
    """What a campaign searches for and with what.

    ``features``: ``pca`` (the store's PCA of ``vector``, ``components`` of them, fitted if absent) or ``full``
    (the raw vectors). ``label_range``: keep only pool crystals whose known gap lies in it (simulated mode;
    the write-up's setting is 2.3-2.8 eV). ``prediction_input``: the CGCNN prediction as one more input
    column (engines may also use it as the prior mean: engine ``gp``). ``budget``: trials of a simulated
    campaign; None for a lab campaign (it measures until the lab stops).

    Candidate filters (:mod:`gapseek.search.filters`; crystals they leave out are never proposed, the prior may
    hold them): ``require_elements`` (every one present), ``exclude_elements`` (none present), ``max_elements``
    (distinct elements), ``max_atoms`` (the store's ``n_atoms``), ``exclude`` (ids or reduced formulas). A
    ``campaign.json`` written before they existed has none: no filter.
    """

    target: float
    tolerance: float = 0.01
    engine: str = "shell"
    vector: str = "pooled"
    features: str = "pca"
    components: int = 3
    budget: int | None = 30
    batch: int = 1
    seed: int = 0
    label_range: tuple[float, float] | None = None
    prediction_input: bool = False
    require_elements: tuple[str, ...] = ()
    exclude_elements: tuple[str, ...] = ()
    max_elements: int | None = None
    max_atoms: int | None = None
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        def as_tuple(value) -> tuple[str, ...]:
            if value is None:
                return ()
            if isinstance(value, str):  # "Fe,O"
                value = value.split(",")
            return tuple(str(v).strip() for v in value if str(v).strip())

        for name in ("require_elements", "exclude_elements"):  # frozen: set once here, as read from JSON or given
            object.__setattr__(self, name, check_elements(as_tuple(getattr(self, name)), "--" + name.replace("_", "-")))
        object.__setattr__(self, "exclude", as_tuple(self.exclude))
        both = sorted(set(self.require_elements) & set(self.exclude_elements))
        if both:
            raise ConfigError(f"{', '.join(both)} both required (--require-elements) and excluded "
                              "(--exclude-elements): no crystal can pass")
        for name in ("max_elements", "max_atoms"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number >= 1 (or not given: no "
                                  f"limit); got {value!r}")
        if self.max_elements is not None and len(self.require_elements) > self.max_elements:
            raise ConfigError(f"--require-elements names {len(self.require_elements)} elements, more than "
                              f"--max-elements {self.max_elements}: no crystal can pass")
        if not (np.isfinite(self.target) and self.target >= 0):
            raise ConfigError(f"the target is a band gap, >= 0 eV; got --target {self.target:g}")
        if not (np.isfinite(self.tolerance) and self.tolerance > 0):
            raise ConfigError(f"tolerance must be > 0; got {self.tolerance}")
        if self.features not in FEATURES:
            raise ConfigError(f"features must be one of {', '.join(FEATURES)}; got {self.features!r}")
        if self.vector not in VECTORS:
            raise ConfigError(f"vector must be one of {', '.join(VECTORS)}; got {self.vector!r}")
        if isinstance(self.components, bool) or not isinstance(self.components, int) or self.components < 1:
            raise ConfigError(f"components must be a whole number >= 1; got {self.components!r}")
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}; valid: {', '.join(ENGINES)}")
        if (self.budget is not None and self.budget < 1) or self.batch < 1:
            raise ConfigError("budget and batch must be >= 1")


FILTER_FIELDS = ("require_elements", "exclude_elements", "max_elements", "max_atoms", "exclude")


def settings_json(settings: CampaignSettings) -> dict:
    """``campaign.json``'s settings: every field, but the candidate filters only when set (so a campaign without
    them reads as before, for an older gapseek too; one with them is refused by a gapseek that would ignore
    them)."""
    out = asdict(settings)
    for name in FILTER_FIELDS:
        if out[name] in ((), [], None):
            del out[name]
    return out


def settings_changes(stored: CampaignSettings, given: CampaignSettings, ignore: tuple[str, ...] = ()) -> list[str]:
    """``["target: 2.534 -> 2.6", ...]``: the fields that differ, stored value first."""
    return [f"{f.name}: {getattr(stored, f.name)!r} -> {getattr(given, f.name)!r}" for f in fields(stored)
            if f.name not in ignore and getattr(stored, f.name) != getattr(given, f.name)]
