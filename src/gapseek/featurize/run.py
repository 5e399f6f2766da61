"""A whole featurization into a store file in one go: inputs → :func:`~gapseek.featurize.pipeline.featurize_items`
→ :class:`~gapseek.store.StoreWriter` → ``STORE/features.h5`` (sharded stores: :mod:`gapseek.cluster`)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gapseek.featurize.pipeline import featurize_items
from gapseek.featurize.settings import FeaturizeSettings, settings_attrs
from gapseek.model.loading import LoadedModel
from gapseek.store import StoreWriter, counts_by_category
from gapseek.structure.inputs import InputItem

__all__ = ["FeaturizeResult", "example_inputs", "featurize_to_store"]


@dataclass(frozen=True)
class FeaturizeResult:
    """The store file written and what went into it."""

    path: Path
    n_inputs: int
    n_ok: int
    n_failed: int
    seconds: float
    failures_by_category: dict[str, int]

    @property
    def rate(self) -> float:
        """Inputs per second."""
        return self.n_inputs / self.seconds if self.seconds > 0 else float("inf")


def featurize_to_store(items: Sequence[InputItem], out: str | Path, model: LoadedModel,
                       settings: FeaturizeSettings = FeaturizeSettings(), overwrite: bool = False,
                       on_chunk: Callable[[int], None] | None = None,
                       provenance: dict | None = None) -> FeaturizeResult:
    """Featurize ``items`` into ``out/features.h5`` (written whole or not at all; an existing one is replaced only
    with ``overwrite``). ``on_chunk(n)`` after each chunk of ``n`` inputs (a progress bar). ``provenance``: where
    the inputs came from (:func:`gapseek.ingest.source.folder_provenance`), kept in the store."""
    attrs = {**settings_attrs(model, settings), "n_inputs": len(items),
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if provenance is not None:
        attrs["provenance"] = json.dumps(provenance, sort_keys=True)
    t0 = time.perf_counter()
    failures = []
    with StoreWriter(out, attrs=attrs, overwrite=overwrite) as writer:
        for rows in featurize_items(items, model, settings,
                                    on_chunk=(lambda rows, n: on_chunk(n)) if on_chunk else None):
            writer.write(rows)
            failures.extend(rows.failures)
        elapsed = time.perf_counter() - t0
        path = writer.commit({"elapsed_s": elapsed})
    return FeaturizeResult(path, len(items), writer.n_ok, writer.n_failed, elapsed, counts_by_category(failures))


@contextlib.contextmanager
def example_inputs() -> Iterator[Path]:
    """The folder of the example crystals shipped with gapseek (``gapseek demo``), as a real path for the block."""
    with resources.as_file(resources.files("gapseek") / "data" / "examples") as d:
        yield Path(d)
