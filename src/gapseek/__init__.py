"""gapseek: CGCNN descriptors at cluster scale, and Bayesian search for target band gaps.

The data flow reads off the packages: :mod:`gapseek.structure` (CIF -> crystal) -> :mod:`gapseek.graph` ->
:mod:`gapseek.model` -> :mod:`gapseek.featurize` -> :mod:`gapseek.store` (sharded over a cluster by
:mod:`gapseek.cluster`) -> :mod:`gapseek.search` (PCA, pool, engines, campaigns, benchmarks, reports); the command
line, :mod:`gapseek.cli`, only parses, calls and prints. Importing gapseek runs nothing and imports no torch.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from gapseek.errors import (
    CampaignError,
    ChecksumError,
    ConfigError,
    CrystalError,
    FitWarning,
    GapseekError,
    GapseekWarning,
    InputError,
    ModelError,
    StoreError,
)

try:
    __version__ = version("gapseek")  # one place: pyproject.toml
except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
    __version__ = "0+unknown"

__all__ = [
    "CampaignError",
    "ChecksumError",
    "ConfigError",
    "CrystalError",
    "FitWarning",
    "GapseekError",
    "GapseekWarning",
    "InputError",
    "ModelError",
    "StoreError",
    "__version__",
]
