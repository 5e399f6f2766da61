"""Stage 4 — the store: the only package that knows the HDF5 layouts (:mod:`~gapseek.store.schema` for feature
files, :mod:`~gapseek.store.manifest` for the manifest of an indexed store). Everything else reads through
:class:`Store` and writes through :class:`StoreWriter`."""

from gapseek.store.check import file_problem, verify_file
from gapseek.store.features import FeatureTable, Store, counts_by_category, export_csv, features_path, open_store
from gapseek.store.schema import FEATURES_FILE, FeatureRows, PCAResult, ShardInfo
from gapseek.store.writer import StoreWriter

__all__ = ["FEATURES_FILE", "FeatureRows", "FeatureTable", "PCAResult", "ShardInfo", "Store", "StoreWriter",
           "counts_by_category", "export_csv", "features_path", "file_problem", "open_store", "verify_file"]
