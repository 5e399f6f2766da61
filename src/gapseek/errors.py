"""One exception hierarchy and one warning class for the whole package."""

from __future__ import annotations


class GapseekError(Exception):
    """Base class of every error gapseek raises on purpose."""


class ConfigError(GapseekError, ValueError):
    """A setting or command-line option is invalid."""


class InputError(GapseekError):
    """An input path or input list cannot be used."""


class ModelError(GapseekError):
    """The CGCNN model files are missing, unreadable or not the expected ones."""


class ChecksumError(ModelError):
    """A model file does not have the expected sha256."""


class StoreError(GapseekError):
    """A feature store is missing, corrupt or written by an incompatible version."""


class CorruptStoreError(StoreError):
    """A store, part or block file fails its content check (a chunk that cannot be read, or data that does not
    match the checksum written with it)."""


class StoreWriteError(StoreError):
    """A store file could not be written (e.g. no space left on device); its temporary file was removed and any
    earlier version of the file is unchanged."""


class CampaignError(GapseekError):
    """A campaign directory cannot be used as it is: a corrupt or missing log or campaign.json, a store with other
    content than the one it was started on, or another gapseek command holding its lock too long."""


class IngestError(GapseekError):
    """A download from a crystal database failed or cannot start (unreachable server, a refused API key, a
    folder holding another query's download). What was written stays, and the same command resumes."""


class CrystalError(GapseekError):
    """One input crystal cannot be featurized; ``category`` is a short machine-readable tag.

    These never escape a batch: the featurizer turns them into failure records
    ``(id, path, reason)`` with ``reason = f"{category}: {detail}"``.
    """

    def __init__(self, category: str, detail: str) -> None:
        super().__init__(f"{category}: {detail}")
        self.category = category
        self.detail = detail

    @property
    def reason(self) -> str:
        return f"{self.category}: {self.detail}"


class GapseekWarning(UserWarning):
    """The one warning class of the package."""


class FitWarning(GapseekWarning):
    """A model fit of the search (a GP's hyperparameters) met numerical trouble: the warnings the fitting library
    raised, summed up in one, or a fit that failed and kept the previous hyperparameters."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says an allocation failed: a MemoryError, or a C/C++ library's error text for one
    (std::bad_alloc, numpy's "Unable to allocate", "out of memory")."""
    text = str(exc)
    return isinstance(exc, MemoryError) or "alloc" in text or "out of memory" in text


def few(items, limit: int = 5, sep: str = ", ") -> str:
    """``a, b, c and 7 more``: the first ``limit`` items of a list for an error message, and how many are left."""
    items = [str(x) for x in items]
    rest = len(items) - limit
    return sep.join(items[:limit]) + (f" and {rest} more" if rest > 0 else "")
