"""Every environment variable gapseek reads, with its default, in one place. Nothing is read at import: each
function reads the environment when called, so a test (or a job script) can set a variable just before.

| variable | used for | default |
| --- | --- | --- |
| ``GAPSEEK_MODEL_DIR`` | a folder with ``band-gap.pth.tar`` and ``atom_init.json`` | the user cache |
| ``GAPSEEK_CACHE_DIR`` | the user cache | ``$XDG_CACHE_HOME/gapseek``, else ``~/.cache/gapseek`` |
| ``GAPSEEK_MODEL_URL`` | a mirror of the upstream repository for the model download | upstream, pinned commit |
| ``GAPSEEK_LOCK_TIMEOUT`` | seconds a command waits for another's lock (campaigns, a store's PCA) | 600 |
| ``SLURM_ARRAY_TASK_ID`` + ``GAPSEEK_SHARD_OFFSET`` | the shard of an array task | no array: every shard |
| ``GAPSEEK_SLURM_DIR`` | where the sbatch scripts are, for the commands gapseek prints | the source checkout |
| ``MP_API_KEY`` | the Materials Project API key (``gapseek ingest mp``; never logged or written) | none |
| ``MP_API_ENDPOINT`` | another Materials Project API server (a mirror, a local test server) | the client's default |
"""

from __future__ import annotations

import os
from pathlib import Path

from gapseek.errors import ConfigError

__all__ = ["LOCK_TIMEOUT", "array_task_shard", "cache_dir", "lock_timeout", "model_dir", "model_url", "mp_api_endpoint",
           "mp_api_key", "slurm_dir"]

LOCK_TIMEOUT = 600.0  # seconds; GAPSEEK_LOCK_TIMEOUT overrides it


def _get(name: str) -> str | None:
    """The variable's value, None when unset or empty."""
    return os.environ.get(name) or None


def model_dir() -> Path | None:
    """``$GAPSEEK_MODEL_DIR``: a folder holding the model files, or None."""
    value = _get("GAPSEEK_MODEL_DIR")
    return Path(value) if value else None


def cache_dir() -> Path:
    """The user cache: ``$GAPSEEK_CACHE_DIR``, else ``$XDG_CACHE_HOME/gapseek``, else ``~/.cache/gapseek``."""
    value = _get("GAPSEEK_CACHE_DIR")
    if value:
        return Path(value)
    return Path(_get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "gapseek"


def model_url() -> str | None:
    """``$GAPSEEK_MODEL_URL``: a mirror to download the model from, or None (upstream)."""
    return _get("GAPSEEK_MODEL_URL")


def lock_timeout() -> float:
    """Seconds to wait for another command's lock: ``$GAPSEEK_LOCK_TIMEOUT`` (a number), else :data:`LOCK_TIMEOUT`."""
    try:
        return max(0.0, float(os.environ.get("GAPSEEK_LOCK_TIMEOUT", LOCK_TIMEOUT)))
    except ValueError:
        return LOCK_TIMEOUT


def array_task_shard() -> int | None:
    """The shard of this Slurm array task: ``$SLURM_ARRAY_TASK_ID + $GAPSEEK_SHARD_OFFSET`` (or None outside an
    array job)."""
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    if task is None:
        return None
    offset = os.environ.get("GAPSEEK_SHARD_OFFSET", "0")
    try:
        return int(task) + int(offset)
    except ValueError:
        raise ConfigError(f"SLURM_ARRAY_TASK_ID={task!r} and GAPSEEK_SHARD_OFFSET={offset!r} must be whole "
                          "numbers") from None


def slurm_dir() -> Path | None:
    """``$GAPSEEK_SLURM_DIR``: the folder of the sbatch scripts, or None."""
    value = _get("GAPSEEK_SLURM_DIR")
    return Path(value) if value else None


def mp_api_key() -> str | None:
    """``$MP_API_KEY``: the Materials Project API key, or None. A secret: never log or write it."""
    return _get("MP_API_KEY")


def mp_api_endpoint() -> str | None:
    """``$MP_API_ENDPOINT``: the Materials Project API server to use instead of the client's default, or None."""
    return _get("MP_API_ENDPOINT")
