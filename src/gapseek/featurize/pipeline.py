"""Stages 1-3 together: (id, path) items → :class:`~gapseek.store.FeatureRows`, in input order.

Every item ends either as a row of features or as a failure ``(id, path, reason)``; one bad file never stops
a batch. Work is split into chunks of files handed to supervised child processes
(:mod:`gapseek.supervise`; each reads, builds graphs and — on the CPU — runs the model with one thread); with
a GPU the children build graphs and the parent runs the model on the device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gapseek.errors import CrystalError, is_out_of_memory
from gapseek.featurize.settings import FeaturizeSettings, plan_chunks
from gapseek.featurize.supervise import SupervisedPool
from gapseek.graph import CrystalGraph, atom_classes, build_graph
from gapseek.model.collate import batches_by_atoms, collate, model_rows
from gapseek.model.loading import LoadedModel
from gapseek.store.schema import FeatureRows
from gapseek.structure.cif import Crystal, check_input_size, crystal_from_bytes, read_input
from gapseek.structure.inputs import InputItem

__all__ = ["Featurizer", "GraphWorker", "featurize_items", "graph_all", "read_and_graph", "rows_from"]

log = logging.getLogger(__name__)


_STAGES = {"read": "reading and graph building", "model": "the model"}


@dataclass
class _Graphed:
    item: InputItem
    graph: CrystalGraph | None
    formula: str = ""
    reason: str = ""
    crystal: Crystal | None = None  # between reading and graph building only


# one crystal's result: (formula, prediction, pooled, hidden, n_atoms, n_padded, n_tied), or a failure reason
Outcome = tuple | str


def _reason(exc: BaseException) -> str:
    """A failure reason for an unexpected exception; running out of memory is named as such whatever raised it."""
    text = f"{type(exc).__name__}: {exc}"
    if is_out_of_memory(exc):
        return f"memory: ran out of memory ({text[:200]}); see --memory-limit"
    return f"internal-error: {text[:300]}"


def _guarded(item: InputItem, stage: Callable[[], _Graphed]) -> _Graphed:
    """One stage of one item; every problem becomes the item's ``reason``."""
    try:
        return stage()
    except CrystalError as exc:
        return _Graphed(item, None, reason=exc.reason)
    except Exception as exc:  # never let one file crash a batch; keep the reason
        log.debug("unexpected error on %s", item.path, exc_info=True)
        return _Graphed(item, None, reason=_reason(exc))


def _read_one(item: InputItem, settings: FeaturizeSettings, known: np.ndarray) -> _Graphed:
    def stage() -> _Graphed:
        if item.data is None:
            data = read_input(item.path, settings.read.max_bytes)
        else:  # packed inputs: the bytes index read, under the same limit as a file
            check_input_size(len(item.data), settings.read.max_bytes)
            data = item.data
        if item.sha256 and item.sha256 != hashlib.sha256(data).hexdigest():
            what = ("could not be read when it was indexed" if item.sha256 == "-" * 64
                    else "changed since it was indexed")
            raise CrystalError("stale-input", f"the file {what}; re-run `gapseek index ... --overwrite`")
        crystal = crystal_from_bytes(data, settings.read)
        unknown = sorted({int(z) for z in crystal.numbers if z >= known.size or not known[z]})
        if unknown:
            raise CrystalError("unknown-element", f"atomic numbers {unknown} are not in atom_init.json")
        return _Graphed(item, None, formula=crystal.formula, crystal=crystal)

    return _guarded(item, stage)


def _graph_one(read: _Graphed, settings: FeaturizeSettings) -> _Graphed:
    if read.crystal is None:
        return read

    def stage() -> _Graphed:
        graph = build_graph(read.crystal, settings.graph)
        if settings.reduce:
            atom_classes(graph)  # here, in the worker, rather than serially where batches are formed
        return _Graphed(read.item, graph, formula=read.formula)

    return _guarded(read.item, stage)


def read_and_graph(item: InputItem, settings: FeaturizeSettings, known: np.ndarray) -> _Graphed:
    """Read one input and build its graph; every problem becomes the returned item's ``reason``."""
    return _graph_one(_read_one(item, settings, known), settings)


def graph_all(items: Sequence[InputItem], settings: FeaturizeSettings, known: np.ndarray,
              announce: Callable[[str, list[int]], None]) -> list[_Graphed]:
    """Read every item, then build every graph (~10% faster than alternating), announcing each file before each
    of its steps (the supervisor's culprit when a step dies or overruns)."""
    read = []
    for k, item in enumerate(items):
        announce("read", [k])
        read.append(_read_one(item, settings, known))
    out = []
    for k, r in enumerate(read):
        announce("read", [k])
        out.append(_graph_one(r, settings))
    return out


def rows_from(items: Sequence[InputItem], outcomes: Sequence[Outcome]) -> FeatureRows:
    """Features and failures of ``items`` in input order, from one outcome per item."""
    rows = FeatureRows()
    for item, out in zip(items, outcomes):
        if isinstance(out, str):
            rows.failures.append((item.id, item.path, out))
            continue
        formula, pred, pooled, hidden, n_atoms, n_padded, n_tied = out
        rows.ids.append(item.id)
        rows.paths.append(item.path)
        rows.formula.append(formula)
        rows.prediction.append(pred)
        rows.pooled.append(pooled)
        rows.hidden.append(hidden)
        rows.n_atoms.append(n_atoms)
        rows.n_padded.append(n_padded)
        rows.n_tied.append(n_tied)
    return rows


def _quiet(stage: str, ks: list[int]) -> None:
    pass


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

    def graph_items(self, items: Sequence[InputItem], announce=_quiet) -> list[_Graphed]:
        return graph_all(items, self.settings, self._known, announce)

    def model_outcomes(self, graphed: Sequence[_Graphed], isolate: bool = False, announce=_quiet) -> list[Outcome]:
        """Model forward over graphed items (one crystal per batch with ``isolate``); one outcome per item."""
        ok = [k for k, g in enumerate(graphed) if g.graph is not None]
        outputs: dict[int, tuple[float, np.ndarray, np.ndarray] | str] = {}
        sizes = [1 if isolate else model_rows(graphed[k].graph, self.settings.reduce) for k in ok]  # type: ignore[arg-type]
        for batch in batches_by_atoms(ok, sizes, 1 if isolate else self.settings.batch_atoms):
            announce("model", batch)
            self._forward(batch, graphed, outputs)
        result: list[Outcome] = []
        for k, g in enumerate(graphed):
            out = g.reason if g.graph is None else outputs[k]
            if isinstance(out, str):
                result.append(out)
            else:
                assert g.graph is not None
                result.append((g.formula, out[0], out[1], out[2], g.graph.n_atoms, g.graph.n_padded, g.graph.n_tied))
        return result

    def run_model(self, graphed: Sequence[_Graphed]) -> FeatureRows:
        """Model forward over graphed items; output rows (and failures) in input order."""
        return rows_from([g.item for g in graphed], self.model_outcomes(graphed))

    # the worker protocol of :class:`~gapseek.supervise.SupervisedPool` (in a child process)
    def start(self) -> None:
        torch.set_num_threads(1)

    def run(self, items: Sequence[InputItem], isolate: bool, announce) -> list[Outcome]:
        return self.model_outcomes(self.graph_items(items, announce), isolate, announce)

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


# ------------------------------------------------------------------------------------ supervision
class GraphWorker:
    """The worker of a GPU run: children read and build graphs; the parent runs the model on the device."""

    def __init__(self, settings: FeaturizeSettings, known: np.ndarray) -> None:
        self.settings = settings
        self.known = known

    def start(self) -> None:
        torch.set_num_threads(1)

    def run(self, items: Sequence[InputItem], isolate: bool, announce) -> list[_Graphed]:
        return graph_all(items, self.settings, self.known, announce)


def graph_worker_context():
    """The start method of a GPU run's workers: a fork server that has imported gapseek (and torch, without
    initialising CUDA) once, so replacing a worker or starting the next block's costs milliseconds, not the
    seconds of a fresh interpreter importing torch."""
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["gapseek.featurize.pipeline"])
    return ctx


def _warm_up(settings: FeaturizeSettings, known: np.ndarray) -> None:
    from importlib.resources import files

    example = files("gapseek") / "data" / "examples" / "NaCl.cif"
    read_and_graph(InputItem("warm-up", str(example)), settings, known)


def featurize_items(
    items: Sequence[InputItem],
    model: LoadedModel,
    settings: FeaturizeSettings = FeaturizeSettings(),
    on_chunk: Callable[[FeatureRows, int], None] | None = None,
) -> Iterator[FeatureRows]:
    """Featurize ``items``; yields one :class:`FeatureRows` per chunk, in input order.

    Every file is read and graphed in a supervised child process (:class:`~gapseek.supervise.SupervisedPool`),
    whatever ``workers`` is: a file that hangs, crashes the process or exhausts its memory costs one failure
    record and at most ``timeout`` seconds. On the CPU the children also run the model (one thread each: several
    featurize processes per node must not each start a thread per core, and results must not depend on the
    thread count); with a GPU they build graphs and this process runs the model on the device.
    """
    import multiprocessing as mp

    feat = Featurizer(model, settings)
    units = [items[s:e] for s, e in plan_chunks(len(items), settings.chunk_size)]
    on_gpu = feat.device != "cpu"
    if on_gpu:  # CUDA does not survive a fork: children come from a fork server that never touched it
        worker: Featurizer | GraphWorker = GraphWorker(dataclasses.replace(settings, device="cpu"), feat._known)
        ctx = graph_worker_context()
    else:  # forked children share the loaded model, and the imports and tables warmed up here
        _warm_up(settings, feat._known)
        worker, ctx = feat, mp.get_context("fork")
    pool = SupervisedPool(worker, min(settings.workers, max(1, len(units))), settings.timeout,
                          int(settings.memory_limit * 2**30), ctx, describe=lambda st: _STAGES.get(st, st))
    for unit, outcomes in zip(units, pool.run(units)):
        if on_gpu:
            graphed = [_Graphed(it, None, reason=o) if isinstance(o, str) else o for it, o in zip(unit, outcomes)]
            outcomes = feat.model_outcomes(graphed)
        rows = rows_from(unit, outcomes)
        if on_chunk:
            on_chunk(rows, len(unit))
        yield rows
    if pool.restarts:
        log.info("%d worker process(es) were replaced after a timeout or a crash", pool.restarts)
