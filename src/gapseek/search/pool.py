"""The candidates of a campaign: which store rows it may measure (:func:`select_candidates`, with the checks that
keep a typo from wasting a campaign) and the engines' view of them (:class:`Pool`, built by :func:`make_pool`
from the store's descriptors through the campaign's PCA). Both only read the store."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gapseek.errors import ConfigError, GapseekWarning, InputError, few
from gapseek.search.filters import allowed_rows, filter_active
from gapseek.search.pca import PCAChoice, ensure_pca, project
from gapseek.store import Store

__all__ = ["Candidates", "Pool", "build_pool", "make_pool", "select_candidates"]

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

    def unexplored(self, observed: np.ndarray, pending: np.ndarray | None = None) -> np.ndarray:
        """The rows an engine may propose now (sorted): proposable, neither ``observed`` nor ``pending``."""
        mask = self.proposable()  # a copy
        mask[np.asarray(observed, dtype=np.int64)] = False  # an empty list is float to numpy
        if pending is not None:
            mask[np.asarray(pending, dtype=np.int64)] = False
        return np.nonzero(mask)[0]


@dataclass(frozen=True)
class Candidates:
    """The store rows of a campaign's pool (sorted), in simulated mode their true gaps (the oracle), and which of
    them the candidate filters let an engine propose (None: every one)."""

    ids: list[str]
    formula: list[str]
    prediction: np.ndarray
    rows: np.ndarray
    truth: np.ndarray | None
    allowed: np.ndarray | None
    n_store: int

    @property
    def whole(self) -> bool:
        """Whether every row of the store is a candidate (rows are sorted and unique)."""
        return self.rows.size == self.n_store


def _labels_span(truth: np.ndarray, settings) -> str:
    rng = (f" (--label-range {settings.label_range[0]:g} {settings.label_range[1]:g})"
           if settings.label_range is not None else "")
    return f"the {truth.size} labelled crystal(s) of the pool{rng} span {truth.min():.3f}-{truth.max():.3f} eV"


def select_candidates(store: Store, settings, labels: dict[str, float] | None = None,
                      drop_missing: bool = False) -> Candidates:
    """The candidates of a campaign with ``settings`` (:class:`~gapseek.search.settings.CampaignSettings`): every
    store row, or with ``labels`` (simulated mode) the labelled rows (in ``label_range``), with their true gaps.

    With labels, a labelled id not in the store is an InputError (a warning with ``drop_missing``), a target that
    no labelled crystal of the pool is within the tolerance of is a ConfigError (nothing to find), and one outside
    the labels' range a GapseekWarning. The candidate filters (:func:`gapseek.search.filters.allowed_rows`) mark
    the rows they leave out (never proposed; still in the pool); filters that leave nothing to propose, or (with
    labels) leave out every crystal within the tolerance of the target, are a ConfigError."""
    ids, formula = store.ids, store.formula
    prediction = store.prediction.astype(np.float64)
    n_atoms = store.column("n_atoms") if settings.max_atoms is not None else None
    index = {cid: k for k, cid in enumerate(ids)}
    rows = np.arange(len(ids))
    truth = None
    if labels is not None:
        missing = [cid for cid in labels if cid not in index]
        if missing:
            msg = f"{len(missing)} labelled id(s) are not featurized in {store.path}: {few(missing)}"
            if not drop_missing:
                raise InputError(msg + " (pass --drop-missing to leave them out)")
            warnings.warn(msg + "; left out", GapseekWarning, stacklevel=2)
        rows = np.array(sorted(index[c] for c in labels if c in index), dtype=np.int64)
        truth = np.array([labels[ids[k]] for k in rows])
        if settings.label_range is not None:
            lo, hi = settings.label_range
            keep = (truth >= lo) & (truth <= hi)
            rows, truth = rows[keep], truth[keep]
    if rows.size == 0:
        raise InputError("the candidate pool is empty (no featurized crystal with a label in range)")
    allowed = None
    if filter_active(settings):
        allowed, notes, unmatched = allowed_rows(settings, [ids[k] for k in rows], [formula[k] for k in rows],
                                                 None if n_atoms is None else n_atoms[rows])
        if unmatched:
            warnings.warn(f"{len(unmatched)} --exclude entr(ies) match no crystal of the pool (neither an id nor a "
                          f"formula of it): {few(unmatched)}", GapseekWarning, stacklevel=2)
        kept = int(allowed.sum())
        if kept == 0:
            raise ConfigError(f"the candidate filters leave no crystal of the {rows.size} in the pool to propose "
                              f"({'; '.join(notes)}): loosen them")
        log.info("candidate filters: %d of %d crystal(s) may be proposed (%s)", kept, rows.size, "; ".join(notes))
    if truth is not None:
        t, d = settings.target, settings.tolerance
        near = np.abs(truth - t) <= d
        findable = int(np.sum(near))
        if findable == 0:
            raise ConfigError(f"no labelled crystal has a gap within {d:g} eV of the target {t:g} eV: "
                              f"{_labels_span(truth, settings)}, so the campaign has nothing to find "
                              f"(a typo in --target?)")
        if allowed is not None and not np.any(near & allowed):
            raise ConfigError(f"the {findable} labelled crystal(s) within {d:g} eV of the target {t:g} eV are all "
                              "left out by the candidate filters, so the campaign has nothing to find: loosen them")
        if not truth.min() <= t <= truth.max():
            warnings.warn(f"target {t:g} eV lies outside the labels' range: {_labels_span(truth, settings)} "
                          f"({findable} within {d:g} eV of the target)", GapseekWarning, stacklevel=2)
    return Candidates(ids, formula, prediction, rows, truth, allowed, len(ids))


def make_pool(store: Store, settings, cand: Candidates, pca: PCAChoice | None = None) -> Pool:
    """The engines' view of the candidates: ``X`` = the PCA coordinates (``settings.features == 'pca'``; ``pca``
    from :func:`gapseek.search.pca.ensure_pca`) or the raw vectors, with the CGCNN prediction as one more column
    when ``settings.prediction_input``, each column standardised."""
    rows, whole = cand.rows, cand.whole
    if settings.features == "pca":
        if pca is None:
            raise ConfigError("a campaign on PCA features needs its PCA (gapseek.search.pca.ensure_pca)")
        if pca.components < settings.components:
            raise ConfigError(f"the PCA given has {pca.components} components; the settings ask for "
                              f"{settings.components}")
        X = project(store, pca.pca, None if whole else rows)[:, : settings.components]
    else:
        X = store.vectors(settings.vector, None if whole else rows)
    if settings.prediction_input:
        X = np.hstack([X, cand.prediction[rows, None]])
    sd = X.std(axis=0)
    X = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    if whole:  # its id index is the pool's
        pool = Pool(cand.ids, cand.formula, X, cand.prediction, settings.target, settings.tolerance,
                    {cid: k for k, cid in enumerate(cand.ids)})
    else:
        pool = Pool([cand.ids[k] for k in rows], [cand.formula[k] for k in rows], X, cand.prediction[rows],
                    settings.target, settings.tolerance)
    if cand.allowed is not None:
        pool.exclude(np.nonzero(~cand.allowed)[0])
        pool.filtered_out = int(np.sum(~cand.allowed))
    return pool


def build_pool(store: Store | str | Path, settings, labels: dict[str, float] | None = None, drop_missing: bool = False,
               on_pca: Callable[[PCAChoice], None] | None = None, origin: str = "a gapseek campaign"
               ) -> tuple[Pool, np.ndarray | None]:
    """A campaign's pool and, in simulated mode (``labels``), the candidates' true gaps, in three steps:
    :func:`select_candidates` (reads, and checks the labels and target), :func:`gapseek.search.pca.ensure_pca` (the
    one write: a PCA fitted now is saved in the store, stamped with ``origin``; after the checks, so that a typo
    fits nothing) and :func:`make_pool` (reads). ``on_pca(choice)`` is told which PCA the engine inputs come from
    (default: its note logged at INFO). ``store``: an open :class:`Store`, or a store to open for the call."""
    if not isinstance(store, Store):
        with Store.open(store) as st:
            return build_pool(st, settings, labels, drop_missing, on_pca, origin)
    cand = select_candidates(store, settings, labels, drop_missing)
    pca = ensure_pca(store, settings, origin)
    if pca is not None:
        (on_pca or (lambda c: log.info("%s", c.note)))(pca)
    return make_pool(store, settings, cand, pca), cand.truth
