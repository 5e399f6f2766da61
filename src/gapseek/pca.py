"""Stage 5 — PCA of the store's descriptors, persisted in ``STORE/features.h5`` under ``pca/<vector>``.

``vector``: ``pooled`` (64-d; the default, what ``search``/``campaign``/``suggest`` use unless told otherwise),
``hidden`` (32-d) or ``both`` (96-d, each block standardised first would change its meaning, so they are simply
concatenated). Stores larger than ``batch_rows`` are fitted incrementally (scikit-learn's IncrementalPCA over row
blocks): memory is bounded by one block whatever the store size. A saved PCA records when, on how many rows and by
which command it was fitted (``created``, ``n_rows``, ``origin``), so a campaign can say which one it uses.

Concurrent writers: :func:`save_pca` (``gapseek pca``, and a campaign that fits one) holds ``STORE/.features.h5.lock``
(``flock``) while it writes, and ``gapseek pca`` holds it from the fit to the save, so two of them on one store run
one after the other instead of failing on HDF5's own file lock; a read that meets a file open for writing retries
until the writer is done (a :class:`StoreError` after ``GAPSEEK_LOCK_TIMEOUT`` seconds).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from gapseek.errors import ConfigError, StoreError
from gapseek.search.locks import file_lock, lock_timeout
from gapseek.store import features_path

__all__ = ["DEFAULT_VECTOR", "VECTORS", "PCAResult", "fit_pca", "iter_vectors", "load_pca", "open_h5", "project",
           "read_vectors", "save_pca", "saved_vectors", "store_lock"]

log = logging.getLogger(__name__)

VECTORS = ("hidden", "pooled", "both")
DEFAULT_VECTOR = "pooled"


def open_h5(path: str | Path, mode: str = "r", timeout: float | None = None) -> h5py.File:
    """``h5py.File(path, mode)``, retried while another process holds the file open for writing (HDF5's own file
    lock answers BlockingIOError at once): up to ``timeout`` seconds (default: ``GAPSEEK_LOCK_TIMEOUT``), then a
    one-line :class:`StoreError`."""
    deadline = time.monotonic() + (lock_timeout() if timeout is None else timeout)
    said = False
    while True:
        try:
            return h5py.File(path, mode)
        except OSError as exc:  # BlockingIOError, or an OSError saying so with older h5py
            if not (isinstance(exc, BlockingIOError) or "unable to lock file" in str(exc)):
                raise
            if time.monotonic() >= deadline:
                raise StoreError(f"{path} is held open by another process (HDF5 file lock) and stayed so; run "
                                 "this again when that process has finished") from None
            if not said:
                log.warning("%s is held open by another process (HDF5 file lock); waiting for it", path)
                said = True
            time.sleep(0.1)


def store_lock(store: str | Path, wait: bool = True) -> contextlib.AbstractContextManager:
    """The lock of a store's PCA writers: ``STORE/.features.h5.lock`` (``flock``; re-entrant in a process)."""
    f5 = features_path(store)
    return file_lock(f5.with_name(f".{f5.name}.lock"), f"the store {f5}", wait=wait, error=StoreError)


def _datasets(vector: str) -> tuple[str, ...]:
    """The store datasets a ``vector`` is made of (``both``: hidden, then pooled)."""
    if vector not in VECTORS:
        raise ConfigError(f"vector must be one of {', '.join(VECTORS)}; got {vector!r}")
    return ("hidden", "pooled") if vector == "both" else (vector,)


def iter_vectors(store: str | Path, vector: str, rows: np.ndarray | None = None,
                 block: int = 65_536) -> Iterator[np.ndarray]:
    """Blocks (``b x d``, float64) of the chosen ``vector`` for all rows, or for ``rows`` (sorted, unique), in
    order. Reads contiguous slices (chunk-aligned; about twice as fast as h5py's point selection for a whole
    store) and holds one block at a time in float64. Every block holding one of ``rows`` is read whole, so a few
    rows scattered over a large store cost about as much as all of them."""
    names = _datasets(vector)
    with open_h5(features_path(store), "r") as f:
        n = f[names[0]].shape[0]
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            if rows.size and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= n):
                raise ConfigError(f"rows must be sorted, unique and within the store's {n} rows")
        yielded = False
        for lo in range(0, n, block):
            hi = min(n, lo + block)
            if rows is None:
                take = slice(None)
            else:
                a, b = np.searchsorted(rows, [lo, hi])
                if a == b:
                    continue
                take = rows[a:b] - lo
            yielded = True
            yield np.concatenate([f[name][lo:hi][take] for name in names], axis=1).astype(np.float64)
        if not yielded:
            yield np.zeros((0, sum(int(f[name].shape[1]) for name in names)))


def read_vectors(store: str | Path, vector: str, rows: np.ndarray | None = None) -> np.ndarray:
    """``n x d`` float64 descriptors of the chosen ``vector`` (all rows, or ``rows``: sorted, unique)."""
    return np.concatenate(list(iter_vectors(store, vector, rows)), axis=0)


def project(store: str | Path, pca: PCAResult, rows: np.ndarray | None = None) -> np.ndarray:
    """``n x k`` PCA coordinates of all rows (or ``rows``), computed block by block (bounded memory)."""
    return np.concatenate([pca.transform(b) for b in iter_vectors(store, pca.vector, rows)], axis=0)


@dataclass(frozen=True)
class PCAResult:
    """``components``: ``k x d``; ``mean``: ``d``; ``explained_variance_ratio``: ``k``. ``created`` and ``origin``
    (the command that fitted it) are set once saved; None for a fit not saved yet (or saved by an older gapseek)."""

    vector: str
    components: np.ndarray
    mean: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    n_rows: int
    method: str
    created: str | None = None
    origin: str | None = None

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``n x d -> n x k``."""
        return (X - self.mean) @ self.components.T


def fit_pca(store: str | Path, n_components: int = 3, vector: str = DEFAULT_VECTOR,
            batch_rows: int = 100_000) -> PCAResult:
    from sklearn.decomposition import PCA, IncrementalPCA

    f5 = features_path(store)
    with open_h5(f5, "r") as f:
        n = int(f["ids"].shape[0])
        d = sum(int(f[v].shape[1]) for v in _datasets(vector))
    if n < 2:
        raise StoreError(f"{f5} holds {n} featurized crystal(s); PCA needs at least 2")
    if not 1 <= n_components <= min(n, d):
        raise ConfigError(f"--components must be between 1 and {min(n, d)} for this store; got {n_components}")
    if n <= batch_rows:
        pca = PCA(n_components=n_components, svd_solver="full").fit(read_vectors(f5, vector))
        method = "full"
    else:
        pca = IncrementalPCA(n_components=n_components)
        for block in iter_vectors(f5, vector, block=batch_rows):
            if block.shape[0] >= n_components:
                pca.partial_fit(block)
        method = f"incremental, blocks of {batch_rows} rows"
    return PCAResult(vector, pca.components_, pca.mean_, pca.explained_variance_, pca.explained_variance_ratio_,
                     n, method)


def save_pca(store: str | Path, result: PCAResult, origin: str = "gapseek pca") -> Path:
    """Save ``result`` as ``/pca/<vector>`` (replacing the one there), stamped with the time and ``origin``; holds
    the store's lock (:func:`store_lock`) meanwhile."""
    f5 = features_path(store)
    with store_lock(f5), open_h5(f5, "r+") as f:
        g = f.require_group("pca")
        if result.vector in g:
            del g[result.vector]
        h = g.create_group(result.vector)
        h["components"] = result.components
        h["mean"] = result.mean
        h["explained_variance"] = result.explained_variance
        h["explained_variance_ratio"] = result.explained_variance_ratio
        h.attrs.update({"n_components": result.components.shape[0], "n_rows": result.n_rows,
                        "method": result.method, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "origin": origin})
    return f5


def load_pca(store: str | Path, vector: str) -> PCAResult | None:
    """The saved PCA of ``vector``, or None."""
    with open_h5(features_path(store), "r") as f:
        if "pca" not in f or vector not in f["pca"]:
            return None
        h = f["pca"][vector]
        created, origin = h.attrs.get("created"), h.attrs.get("origin")
        return PCAResult(vector, h["components"][()], h["mean"][()], h["explained_variance"][()],
                         h["explained_variance_ratio"][()], int(h.attrs["n_rows"]), str(h.attrs["method"]),
                         None if created is None else str(created), None if origin is None else str(origin))


def saved_vectors(store: str | Path) -> list[str]:
    """The vectors with a saved PCA in the store."""
    with open_h5(features_path(store), "r") as f:
        return [v for v in VECTORS if "pca" in f and v in f["pca"]]
