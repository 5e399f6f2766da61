"""The layout of a feature store file — ``STORE/features.h5``, and the part and block files of a sharded store,
which have the same layout — in one place: dataset names and types, how strings are stored, what the content
checksums cover, the per-shard attributes, and what a row block and a saved PCA are.

Datasets (``n`` featurized crystals): ``ids``, ``paths``, ``formula`` (utf-8), ``prediction`` (n, float32, eV),
``pooled`` (n x 64 float32), ``hidden`` (n x 32 float32), ``n_atoms``, ``n_padded``, ``n_tied`` (int32); group
``failures`` with ``ids``, ``paths``, ``reasons``; optional group ``pca/<vector>`` (``components`` k x d, ``mean``
d, ``explained_variance`` and ``explained_variance_ratio`` k; attributes ``n_components``, ``n_rows``, ``method``,
``created``, ``origin``). Attributes: ``schema_version``, the featurizer's settings (model sha256s, graph and
reader settings, their ``settings_digest``, the gapseek version), ``n_features``, ``n_failures``; a part or block
file also the :class:`ShardInfo` fields. Every dataset carries ``content_sha256``, the sha256 of its content
(:func:`content_bytes`); numeric datasets also HDF5's fletcher32 checksum per chunk.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import h5py
import numpy as np

from gapseek.errors import ConfigError

__all__ = ["CHUNK_ROWS", "CONTENT_ATTR", "FAILURE_DATASETS", "FEATURE_DATASETS", "FEATURES_FILE", "SCHEMA_VERSION",
           "VECTORS", "FeatureRows", "PCAResult", "ShardInfo", "content_bytes", "decode_strings", "encode_strings",
           "vector_datasets"]

FEATURES_FILE = "features.h5"
SCHEMA_VERSION = 1
STR = h5py.string_dtype(encoding="utf-8")
CHUNK_ROWS = 4096
FEATURE_DATASETS = ("ids", "paths", "formula", "prediction", "pooled", "hidden", "n_atoms", "n_padded", "n_tied")
NUMERIC_DATASETS = ("prediction", "pooled", "hidden", "n_atoms", "n_padded", "n_tied")
FAILURE_DATASETS = ("ids", "paths", "reasons")
CONTENT_ATTR = "content_sha256"  # per dataset: sha256 of its content, see content_bytes
COUNT_ATTRS = ("n_features", "n_failures")  # written by the writer on commit
# descriptor vectors a search can use, and the datasets each is made of (``both``: hidden, then pooled)
VECTORS = {"hidden": ("hidden",), "pooled": ("pooled",), "both": ("hidden", "pooled")}


def vector_datasets(vector: str) -> tuple[str, ...]:
    """The datasets a descriptor ``vector`` is made of; a ConfigError naming the valid ones for another name."""
    if vector not in VECTORS:
        raise ConfigError(f"vector must be one of {', '.join(VECTORS)}; got {vector!r}")
    return VECTORS[vector]


@dataclass
class FeatureRows:
    """A block of results in input order: features for some items, failures ``(id, path, reason)`` for the
    others."""

    ids: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    formula: list[str] = field(default_factory=list)
    prediction: list[np.ndarray] = field(default_factory=list)
    pooled: list[np.ndarray] = field(default_factory=list)
    hidden: list[np.ndarray] = field(default_factory=list)
    n_atoms: list[int] = field(default_factory=list)
    n_padded: list[int] = field(default_factory=list)
    n_tied: list[int] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def n_ok(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class ShardInfo:
    """The attributes that belong to one part or block file of a sharded store and to no merged store: the only
    way to write them (:meth:`~gapseek.store.writer.StoreWriter.commit`), and exactly what a merge leaves out.
    A block file sets ``entries_digest`` only."""

    entries_digest: str
    shard_index: int | None = None
    num_shards: int | None = None
    manifest_start: int | None = None
    manifest_stop: int | None = None
    elapsed_s: float | None = None
    peak_rss_mb: float | None = None
    hostname: str | None = None

    def as_attrs(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


SHARD_ATTRS = frozenset(f.name for f in fields(ShardInfo))


@dataclass(frozen=True)
class PCAResult:
    """A PCA of a descriptor ``vector``: ``components`` ``k x d``, ``mean`` ``d``, ``explained_variance`` and
    ``explained_variance_ratio`` ``k``. ``created`` and ``origin`` (the command that fitted it) are set once saved;
    None for a fit not saved yet (or saved by an older gapseek)."""

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


def encode_strings(values) -> list[bytes]:
    """``str`` → utf-8 bytes for an HDF5 string dataset. File names that are not valid UTF-8 (Python holds
    their bytes as lone surrogates) keep their exact bytes, so every path read back opens the same file."""
    return [v.encode("utf-8", "surrogateescape") for v in values]


def decode_strings(values) -> list[str]:
    """Strings read from an HDF5 string dataset (bytes or str, as h5py returns them) as ``str``; the inverse
    of :func:`encode_strings`."""
    return [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v) for v in values]


def content_bytes(values) -> bytes:
    """The bytes a dataset's checksum covers, the same however its rows are split in blocks: numbers as
    little-endian arrays; strings (utf-8 bytes, never NUL inside in HDF5) each followed by a NUL."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
    if len(values) == 0:
        return b""
    return b"\0".join(v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogateescape")
                      for v in values) + b"\0"
