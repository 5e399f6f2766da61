"""Stage 5 — PCA of a store's descriptors: fitted here, kept in the store (:meth:`gapseek.store.Store.save_pca`).

``vector``: ``pooled`` (64-d; the default, what ``search``/``campaign``/``suggest`` use unless told otherwise),
``hidden`` (32-d) or ``both`` (96-d: the two concatenated; standardising each block first would change its
meaning). Stores larger than ``batch_rows`` are fitted incrementally (scikit-learn's IncrementalPCA over row
blocks): memory is bounded by one block whatever the store size. A saved PCA records when, on how many rows and by
which command it was fitted, so a campaign can say which one it uses.

A campaign's PCA (:func:`choose_pca`): the store's saved one when it fits the campaign's settings, otherwise one
fitted now; saving that one is the explicit step :func:`ensure_pca`, which the search asks for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from gapseek.errors import ConfigError, StoreError
from gapseek.store import PCAResult, Store
from gapseek.store.schema import vector_datasets

__all__ = ["DEFAULT_VECTOR", "PCAChoice", "choose_pca", "ensure_pca", "fit_pca", "project"]

log = logging.getLogger(__name__)

DEFAULT_VECTOR = "pooled"


def fit_pca(store: Store, n_components: int = 3, vector: str = DEFAULT_VECTOR, batch_rows: int = 100_000) -> PCAResult:
    """A PCA of ``store``'s ``vector`` with ``n_components`` components (not saved)."""
    from sklearn.decomposition import PCA, IncrementalPCA

    vector_datasets(vector)  # an unknown vector fails here, naming the valid ones
    n, d = len(store), store.vector_dim(vector)
    if n < 2:
        raise StoreError(f"{store.path} holds {n} featurized crystal(s); PCA needs at least 2")
    if not 1 <= n_components <= min(n, d):
        raise ConfigError(f"--components must be between 1 and {min(n, d)} for this store; got {n_components}")
    if n <= batch_rows:
        pca = PCA(n_components=n_components, svd_solver="full").fit(store.vectors(vector))
        method = "full"
    else:
        pca = IncrementalPCA(n_components=n_components)
        for block in store.iter_vectors(vector, block=batch_rows):
            if block.shape[0] >= n_components:
                pca.partial_fit(block)
        method = f"incremental, blocks of {batch_rows} rows"
    return PCAResult(vector, pca.components_, pca.mean_, pca.explained_variance_, pca.explained_variance_ratio_,
                     n, method)


def project(store: Store, pca: PCAResult, rows: np.ndarray | None = None) -> np.ndarray:
    """``n x k`` PCA coordinates of all rows (or ``rows``: sorted, unique), block by block (bounded memory)."""
    return np.concatenate([pca.transform(b) for b in store.iter_vectors(pca.vector, rows)], axis=0)


@dataclass(frozen=True)
class PCAChoice:
    """The PCA a campaign's engine inputs come from: ``pca`` (its leading ``components`` are used), whether it was
    fitted now (then ``replaces``: whether the store holds an older one of its vector), and ``note``, one line for
    the user saying which it is (and, once :func:`ensure_pca` has tried, whether it was saved)."""

    pca: PCAResult
    components: int
    fitted_now: bool
    note: str
    replaces: bool = False


def _when(stamp: str | None) -> str:
    """``2024-05-01T10:20:30+0200`` -> ``2024-05-01 10:20``."""
    return stamp[:16].replace("T", " ") if stamp else "an unrecorded date"


def choose_pca(store: Store, settings) -> PCAChoice | None:
    """Which PCA a campaign with ``settings`` (:class:`~gapseek.search.settings.CampaignSettings`) uses; None with
    ``features='full'``. The store's saved PCA of ``settings.vector`` (its leading ``settings.components``) when it
    has at least that many components and was fitted on the store's current rows; otherwise one fitted now with
    ``settings.components``, NOT saved (:func:`ensure_pca` saves it), its ``note`` saying why it was needed."""
    if settings.features != "pca":
        return None
    n, k, v = len(store), settings.components, settings.vector
    stored = store.pca(v)
    if stored is None:
        others = [w for w in store.pca_vectors() if w != v]
        why = f"the store has no PCA of {v}" + (
            f" (it has one of {' and '.join(others)}: --vector {others[0]} would use it)" if others else "")
    elif stored.n_components < k:
        why = (f"the store's {v} PCA (fitted by {stored.origin or 'gapseek'} on {_when(stored.created)}) has "
               f"{stored.n_components} component(s), {k} asked")
    elif stored.n_rows != n:
        why = (f"the store's {v} PCA was fitted on {stored.n_rows} rows (on {_when(stored.created)}); the store now "
               f"holds {n}")
    else:
        share = float(stored.explained_variance_ratio[:k].sum())
        used = (f"its first {k} of {stored.n_components} components" if stored.n_components > k
                else f"its {k} component(s)")
        return PCAChoice(stored, k, False, f"PCA: the store's {v} PCA fitted by {stored.origin or 'gapseek'} on "
                                           f"{_when(stored.created)} ({stored.n_rows} rows), {used}, "
                                           f"{share:.0%} of the variance")
    pca = fit_pca(store, k, v)
    share = float(pca.explained_variance_ratio.sum())
    return PCAChoice(pca, k, True, f"PCA: {why}; fitted {k} component(s) of {v} now ({n} rows, {share:.0%} of "
                                   "the variance)", replaces=stored is not None)


def ensure_pca(store: Store, settings, origin: str = "a gapseek campaign") -> PCAChoice | None:
    """:func:`choose_pca`, and a PCA fitted now saved in the store (stamped with ``origin``). A store that cannot
    be written (read-only) keeps its old PCA; the campaign still runs on the new fit, and the note says so."""
    choice = choose_pca(store, settings)
    if choice is None or not choice.fitted_now:
        return choice
    try:
        store.save_pca(choice.pca, origin=origin)
        saved = f"saved in {store.path}:/pca/{settings.vector}" + (" in place of the old one" if choice.replaces
                                                                   else "")
    except OSError as exc:  # a read-only store: the campaign still runs, on this fit
        saved = f"NOT saved ({exc})"
    return replace(choice, note=f"{choice.note}, {saved}")
