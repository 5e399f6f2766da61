"""gapseek: CGCNN descriptors at cluster scale, and Bayesian search for target band gaps."""

from __future__ import annotations

from gapseek.errors import (
    ChecksumError,
    ConfigError,
    CrystalError,
    GapseekError,
    GapseekWarning,
    InputError,
    ModelError,
    StoreError,
)

__version__ = "0.1.0"

__all__ = [
    "ChecksumError",
    "ConfigError",
    "CrystalError",
    "GapseekError",
    "GapseekWarning",
    "InputError",
    "ModelError",
    "StoreError",
    "__version__",
]
