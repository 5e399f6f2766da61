"""How a featurization runs (:class:`FeaturizeSettings`) and what of it determines the outputs
(:func:`settings_attrs`, recorded in every store file)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch

from gapseek import __version__
from gapseek.errors import ConfigError
from gapseek.graph import GraphSettings
from gapseek.model.loading import LoadedModel
from gapseek.structure.cif import ReadSettings

__all__ = ["FeaturizeSettings", "plan_chunks", "settings_attrs"]


@dataclass(frozen=True)
class FeaturizeSettings:
    """How a featurization runs.

    Attributes:
        read: CIF reading (reader, disorder policy, atom cap).
        graph: graph construction (the pretrained model's conventions by default).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (a GPU when torch sees one).
        workers: supervised worker processes reading, building graphs (and running the model on the CPU);
            even with 1, the work runs in a child process, so one bad file cannot stop the run.
        batch_atoms: model rows per batch (atoms, or classes of equivalent atoms with ``reduce``); large
            batches of big cells are slower per crystal.
        chunk_size: files per unit of work handed to a worker.
        timeout: seconds one file may take to be read and graphed (and one model batch to run); past it the
            worker process is killed and the file recorded as ``timeout``; ``0`` disables.
        memory_limit: GiB of address space each worker process may add to what it holds at start
            (``RLIMIT_AS``); a file that needs more is recorded as ``memory`` or ``crashed``; ``0`` disables.
        reduce: run the model once per class of equivalent atoms (:func:`~gapseek.graph.equivalent_atoms`)
            rather than once per atom; same outputs up to float32 rounding, ~2x faster.
    """

    read: ReadSettings = field(default_factory=ReadSettings)
    graph: GraphSettings = field(default_factory=GraphSettings)
    device: str = "cpu"
    workers: int = 1
    batch_atoms: int = 512
    chunk_size: int = 256
    timeout: float = 120.0
    memory_limit: float = 4.0
    reduce: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1; got {self.workers}")
        if self.batch_atoms < 1 or self.chunk_size < 1:
            raise ConfigError("batch_atoms and chunk_size must be >= 1")
        if self.timeout < 0:
            raise ConfigError(f"timeout must be >= 0 seconds; got {self.timeout}")
        if self.memory_limit < 0:
            raise ConfigError(f"memory_limit must be >= 0 GiB; got {self.memory_limit}")
        if not (self.device in ("cpu", "auto") or self.device.startswith("cuda")):
            raise ConfigError(f"device must be cpu, cuda, cuda:N or auto; got {self.device!r}")

    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {self.device}: torch sees no CUDA GPU on this machine")
        return self.device


def plan_chunks(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in order."""
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def settings_attrs(model: LoadedModel, settings: FeaturizeSettings) -> dict:
    """What determines the outputs: the model files and the reading/graph/model settings (and their digest)."""
    attrs = {
        "gapseek_version": __version__,
        "model_sha256": model.checkpoint_sha256,
        "atom_init_sha256": model.atom_init_sha256,
        "model_epoch": int(model.epoch or -1),
        "reader": settings.read.reader,
        "disorder": settings.read.disorder,
        "max_atoms": settings.read.max_atoms,
        "reduce_equivalent": int(settings.reduce),
        "batch_atoms": settings.batch_atoms,
        "chunk_size": settings.chunk_size,
        **settings.graph.as_attrs(),
    }
    key = {k: v for k, v in attrs.items() if k != "gapseek_version"}
    attrs["settings_digest"] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return attrs
