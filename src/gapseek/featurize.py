"""Stage 1-3 together: (id, path) items → :class:`~gapseek.store.FeatureRows`, in input order.

Every item ends either as a row of features or as a failure ``(id, path, reason)``; one bad file never stops
a batch. Work is split into chunks of files; with ``workers > 1`` chunks run in a process pool (each
worker reads, builds graphs and — on the CPU — runs the model with one thread); with a GPU the workers
build graphs and the parent runs the model on the device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from gapseek import __version__
from gapseek.batching import batches_by_atoms, collate, model_rows
from gapseek.cif import Crystal, ReadSettings, read_crystal
from gapseek.errors import ConfigError, CrystalError
from gapseek.graph import CrystalGraph, GraphSettings, atom_classes, build_graph
from gapseek.inputs import InputItem
from gapseek.model import LoadedModel, load_model
from gapseek.store import FeatureRows

__all__ = ["FeaturizeSettings", "Featurizer", "featurize_items", "plan_chunks", "settings_attrs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeaturizeSettings:
    """How a featurization runs.

    Attributes:
        read: CIF reading (reader, disorder policy, atom cap).
        graph: graph construction (the pretrained model's conventions by default).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (a GPU when torch sees one).
        workers: processes building graphs (and running the model on the CPU); 1 = in this process.
        batch_atoms: model rows per batch (atoms, or classes of equivalent atoms with ``reduce``); large
            batches of big cells are slower per crystal.
        chunk_size: files per unit of work handed to a worker.
        timeout: seconds allowed per file for reading and graph building; ``0`` disables.
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
    reduce: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1; got {self.workers}")
        if self.batch_atoms < 1 or self.chunk_size < 1:
            raise ConfigError("batch_atoms and chunk_size must be >= 1")
        if self.timeout < 0:
            raise ConfigError(f"timeout must be >= 0 seconds; got {self.timeout}")
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


class _Timeout(Exception):
    pass


@contextmanager
def _time_limit(seconds: float):
    """Raise _Timeout after ``seconds`` of wall time (SIGALRM; main thread only, else no limit)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _handler(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, _handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class _Graphed:
    item: InputItem
    graph: CrystalGraph | None
    formula: str = ""
    reason: str = ""
    crystal: Crystal | None = None


def _guarded(item: InputItem, settings: FeaturizeSettings, stage: Callable[[], _Graphed]) -> _Graphed:
    """Run one stage of one item under the per-file time limit; any failure becomes a reason."""
    try:
        with _time_limit(settings.timeout):
            return stage()
    except CrystalError as exc:
        return _Graphed(item, None, reason=exc.reason)
    except _Timeout:
        return _Graphed(item, None, reason=f"timeout: reading and graph building took over {settings.timeout:g} s")
    except MemoryError:
        return _Graphed(item, None, reason="out-of-memory: reading or graph building ran out of memory")
    except Exception as exc:  # never let one file crash a batch; keep the reason
        log.debug("unexpected error on %s", item.path, exc_info=True)
        return _Graphed(item, None, reason=f"internal-error: {type(exc).__name__}: {exc}")


def _read_one(item: InputItem, settings: FeaturizeSettings, known: np.ndarray) -> _Graphed:
    def stage() -> _Graphed:
        crystal = read_crystal(item.path, settings.read)
        unknown = sorted({int(z) for z in crystal.numbers if z >= known.size or not known[z]})
        if unknown:
            raise CrystalError("unknown-element", f"atomic numbers {unknown} are not in atom_init.json")
        return _Graphed(item, None, formula=crystal.formula, crystal=crystal)

    return _guarded(item, settings, stage)


def _graph_read(read: _Graphed, settings: FeaturizeSettings) -> _Graphed:
    if read.crystal is None:
        return read

    def stage() -> _Graphed:
        graph = build_graph(read.crystal, settings.graph)
        if settings.reduce:
            atom_classes(graph)  # here, in the worker, rather than serially where batches are formed
        return _Graphed(read.item, graph, formula=read.formula)

    return _guarded(read.item, settings, stage)


class Featurizer:
    """Reads, graphs and runs the model on items. Thin over pure stage functions."""

    def __init__(self, model: LoadedModel, settings: FeaturizeSettings = FeaturizeSettings()) -> None:
        self.model = model
        self.settings = settings
        self.device = settings.resolved_device()
        self.model.model.to(self.device)
        zmax = model.atom_init.shape[0]
        self._known = np.zeros(zmax, dtype=bool)
        for z in model.known_elements:
            if z < zmax:
                self._known[z] = True

    def graph_items(self, items: Sequence[InputItem]) -> list[_Graphed]:
        # stage by stage over the whole chunk (read all, then graph all): ~15% faster than alternating
        read = [_read_one(it, self.settings, self._known) for it in items]
        return [_graph_read(r, self.settings) for r in read]

    def run_model(self, graphed: Sequence[_Graphed]) -> FeatureRows:
        """Model forward over graphed items; output rows (and failures) in input order."""
        ok = [g for g in graphed if g.graph is not None]
        outputs: dict[int, tuple[float, np.ndarray, np.ndarray] | str] = {}
        sizes = [model_rows(g.graph, self.settings.reduce) for g in ok]  # type: ignore[arg-type]
        for batch in batches_by_atoms(list(range(len(ok))), sizes, self.settings.batch_atoms):
            self._forward(batch, ok, outputs)
        rows = FeatureRows()
        k = 0
        for g in graphed:
            if g.graph is None:
                rows.failures.append((g.item.id, g.item.path, g.reason))
                continue
            out = outputs[k]
            k += 1
            if isinstance(out, str):
                rows.failures.append((g.item.id, g.item.path, out))
                continue
            pred, pooled, hidden = out
            rows.ids.append(g.item.id)
            rows.paths.append(g.item.path)
            rows.formula.append(g.formula)
            rows.prediction.append(pred)
            rows.pooled.append(pooled)
            rows.hidden.append(hidden)
            rows.n_atoms.append(g.graph.n_atoms)
            rows.n_padded.append(g.graph.n_padded)
            rows.n_tied.append(g.graph.n_tied)
        return rows

    def _forward(self, batch: list[int], ok: Sequence[_Graphed], outputs: dict) -> None:
        try:
            graphs = [ok[i].graph for i in batch]
            b = collate(graphs, self.model.atom_init, self.settings.graph, self.settings.reduce).to(self.device)
            pred, pooled, hidden = (t.float().cpu().numpy() for t in self.model.model(b))
        except Exception as exc:
            if len(batch) > 1:  # isolate the culprit
                for i in batch:
                    self._forward([i], ok, outputs)
                return
            outputs[batch[0]] = f"model-error: {type(exc).__name__}: {exc}"
            return
        for j, i in enumerate(batch):
            if not (np.isfinite(pred[j]) and np.isfinite(pooled[j]).all() and np.isfinite(hidden[j]).all()):
                outputs[i] = "model-error: non-finite output"
            else:
                outputs[i] = (float(pred[j]), pooled[j], hidden[j])

    def process(self, items: Sequence[InputItem]) -> FeatureRows:
        return self.run_model(self.graph_items(items))


# ----------------------------------------------------------------------------------- process pool
_WORKER: Featurizer | None = None


def _worker_init(checkpoint: str, atom_init: str, sha: str, settings: FeaturizeSettings) -> None:
    global _WORKER
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    # workers always work on the CPU; with a GPU they only build graphs and the parent runs the model
    worker_settings = dataclasses.replace(settings, device="cpu", workers=1)
    _WORKER = Featurizer(load_model(checkpoint, atom_init, expected_sha256=sha), worker_settings)


def _worker_process(items: Sequence[InputItem]) -> FeatureRows:
    assert _WORKER is not None
    return _WORKER.process(items)


def _worker_graph(items: Sequence[InputItem]) -> list[_Graphed]:
    assert _WORKER is not None
    return _WORKER.graph_items(items)


def featurize_items(
    items: Sequence[InputItem],
    model: LoadedModel,
    settings: FeaturizeSettings = FeaturizeSettings(),
    on_chunk: Callable[[FeatureRows, int], None] | None = None,
) -> Iterator[FeatureRows]:
    """Featurize ``items``; yields one :class:`FeatureRows` per chunk, in input order."""
    feat = Featurizer(model, settings)
    chunks = plan_chunks(len(items), settings.chunk_size)
    if settings.workers == 1 or len(chunks) <= 1:
        # one thread, like every pool worker: several featurize processes per node (array tasks, MPI ranks)
        # must not each start a thread per core, and results must not depend on the thread count
        threads = torch.get_num_threads()
        if feat.device == "cpu":
            torch.set_num_threads(1)
        try:
            for s, e in chunks:
                rows = feat.process(items[s:e])
                if on_chunk:
                    on_chunk(rows, e - s)
                yield rows
        finally:
            torch.set_num_threads(threads)
        return

    import multiprocessing as mp

    on_gpu = feat.device != "cpu"
    ctx = mp.get_context("spawn" if on_gpu else "fork")
    init = (str(model.checkpoint_path), str(model.atom_init_path), model.checkpoint_sha256, settings)
    with ctx.Pool(settings.workers, initializer=_worker_init, initargs=init) as pool:
        fn = _worker_graph if on_gpu else _worker_process
        for (s, e), res in zip(chunks, pool.imap(fn, (items[s:e] for s, e in chunks))):
            rows = feat.run_model(res) if on_gpu else res
            if on_chunk:
                on_chunk(rows, e - s)
            yield rows
