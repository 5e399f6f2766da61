"""Supervised child processes: one input can cost one failure record, never a batch.

Inputs are worked on in child processes the parent watches. A child announces each step before it takes it
(``read`` of item ``k`` of its task, ``model`` of a batch of items) on a board in shared memory, so when it
dies or overruns the time limit the parent knows the culprit without waking up for every file:

* a step that runs past ``timeout`` seconds: the child is killed (SIGKILL: C code cannot ignore it) and the
  culprit recorded as ``timeout: ...``;
* a child killed by a signal (SIGFPE, SIGSEGV, SIGABRT, the kernel's OOM SIGKILL) or exiting early: the culprit
  is recorded as ``crashed: SIGFPE ...``;
* a model batch of several crystals that dies: the task is redone one crystal per batch to find the culprit.

The rest of the task is handed to a fresh child, so everything else is still done, with the same bits as
without the culprit. Each child may also get an address-space cap (``RLIMIT_AS``), so a memory bomb fails
in its own child (``memory: ...``) instead of taking the node down.

A *worker* is any object with ``start()`` (run once in the child) and ``run(items, isolate, announce)`` that
returns one outcome per item; with the fork start method it is inherited, with spawn it is pickled.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any, Protocol

from gapseek.errors import GapseekError

__all__ = ["SupervisedPool", "Worker", "WorkerError", "peak_rss_mb", "signal_name"]

log = logging.getLogger(__name__)

Announce = Callable[[str, list[int]], None]
_MAX_SILENT_DEATHS = 3  # a child that dies this often before its first step: something is wrong with all of them
POLL = 1.0  # seconds between looks at the children's boards (a time limit is enforced within about this)
STARTUP_GRACE = 300.0  # seconds a fresh child may take to start (spawned children import torch) before its first step


class WorkerError(GapseekError):
    """The child processes cannot work at all (they die before touching any input)."""


class Worker(Protocol):
    def start(self) -> None: ...

    def run(self, items: Sequence[Any], isolate: bool, announce: Announce) -> list[Any]: ...


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def peak_rss_mb() -> float:
    """The peak resident memory, MB, of this process or of any worker process it has waited for (the work runs in
    the workers, so this process's own peak alone says little)."""
    import resource

    return max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024.0


def _show(item: Any) -> str:
    """An item for a log line: its path, with bytes that are not UTF-8 as escapes."""
    text = str(getattr(item, "path", item))
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _set_memory_limit(extra_bytes: int) -> None:
    """Cap this process's address space at its current size plus ``extra_bytes`` (Linux; no-op elsewhere)."""
    try:
        import resource

        with open("/proc/self/statm") as fh:
            now = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = now + extra_bytes
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (OSError, ValueError, ImportError) as exc:  # not Linux, or not allowed: run without the cap
        log.debug("no memory cap in the worker: %s", exc)


_STAGE_CODES = {"read": 1.0, "model": 2.0}
_STAGE_NAMES = {1: "read", 2: "model"}


class _Board:
    """Where a child posts the step it is on (stage, item, start time) in shared memory, so the parent learns
    the culprit of a death or an overrun without waking up for every file. A sequence counter (odd while a
    post is being written) keeps the parent from reading half a post."""

    def __init__(self, ctx) -> None:
        self.cells = ctx.RawArray("d", 4)  # seq, stage code, item, start (time.monotonic, system-wide)

    def post(self, stage: float, k: int) -> None:
        c = self.cells
        c[0] += 1.0
        c[1], c[2], c[3] = stage, float(k), time.monotonic()
        c[0] += 1.0

    def clear(self) -> None:
        self.post(0.0, 0)

    def read(self) -> tuple[int, int, float]:
        c = self.cells
        while True:
            seq = c[0]
            stage, k, t = int(c[1]), int(c[2]), c[3]
            if seq == c[0] and not int(seq) % 2:
                return stage, k, t


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent dies (a parent killed by Slurm or kill -9 must not
    leave a child spinning in C code)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child_main(conn, board: _Board, worker: Worker, memory_limit: int) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # not the parent's unwinding handler (inherited through fork): SIGTERM ends a worker at once, even inside C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if memory_limit > 0:
        _set_memory_limit(memory_limit)
    worker.start()

    def announce(stage: str, ks: list[int]) -> None:
        if stage == "model":  # a batch: its members go by pipe (a few per chunk), before the post
            conn.send((stage, ks))
        board.post(_STAGE_CODES[stage], ks[0])

    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if task is None:
            return
        items, isolate = task
        conn.send(("done", worker.run(items, isolate, announce)))


@dataclass
class _Task:
    unit: int
    positions: list[int]  # positions in the unit of the items still to do
    isolate: bool = False
    silent_deaths: int = 0


@dataclass
class _Child:
    proc: Any
    conn: Any
    board: _Board
    task: _Task | None = None
    batch: list[int] = field(default_factory=list)  # the members of the model batch last announced
    given: float = 0.0  # when the task was handed over
    grace: float = 0.0  # seconds allowed before the first step
    used: bool = False

    def step(self) -> tuple[str, list[int], float] | None:
        """``(stage, items, started)`` of the step the child is on, None before its first step of the task."""
        stage, k, t = self.board.read()
        if stage == 0:
            return None
        return _STAGE_NAMES[stage], (self.batch if stage == 2 else [k]), t

    def deadline(self, timeout: float) -> float:
        if self.task is None:
            return float("inf")
        step = self.step()
        return step[2] + timeout if step else self.given + self.grace


class SupervisedPool:
    """Up to ``processes`` supervised children working through units (lists of items) in order.

    Args:
        worker: what each child runs (see the module's docstring).
        processes: children at most.
        timeout: seconds one step may take; ``0`` = no limit.
        memory_limit: bytes of address space a child may add to what it holds at start; ``0`` = no cap.
        context: a :mod:`multiprocessing` context (``fork`` shares the parent's loaded model for free).
        describe: ``stage -> words`` for failure reasons (e.g. ``"read" -> "reading and graph building"``).
    """

    def __init__(self, worker: Worker, processes: int, timeout: float, memory_limit: int, context,
                 describe: Callable[[str], str] = str) -> None:
        self.worker = worker
        self.processes = max(1, processes)
        self.timeout = timeout if timeout > 0 else float("inf")
        self.memory_limit = memory_limit
        self.ctx = context
        self.describe = describe
        self._children: list[_Child] = []
        self._poll_s = min(POLL, self.timeout / 4)
        self.restarts = 0

    # ------------------------------------------------------------------------------------------ children
    def _start(self) -> _Child:
        parent, child = self.ctx.Pipe(duplex=True)
        board = _Board(self.ctx)
        proc = self.ctx.Process(target=_child_main, args=(child, board, self.worker, self.memory_limit),
                                daemon=True, name="gapseek-worker")
        proc.start()
        child.close()
        c = _Child(proc, parent, board)
        self._children.append(c)
        return c

    def _give(self, c: _Child, task: _Task, units: Sequence[Sequence[Any]]) -> None:
        # a fresh child first runs worker.start() (imports, tables): that is not any input's time
        c.grace = self.timeout if c.used else max(self.timeout, STARTUP_GRACE)
        c.board.clear()  # the child is idle: nobody else writes the board now
        c.task, c.batch, c.used, c.given = task, [], True, time.monotonic()
        items = [units[task.unit][p] for p in task.positions]
        try:
            c.conn.send((items, task.isolate))
        except (BrokenPipeError, OSError):
            pass  # it died already; the next wait sees it

    def _remove(self, c: _Child, kill: bool) -> int | None:
        if kill and c.proc.is_alive():
            c.proc.kill()
        c.proc.join(timeout=30)
        c.conn.close()
        self._children.remove(c)
        return c.proc.exitcode

    def close(self) -> None:
        """Stop every child (those at work are killed)."""
        for c in list(self._children):
            if c.task is None:
                try:
                    c.conn.send(None)
                except OSError:
                    pass
                c.proc.join(timeout=5)
            self._remove(c, kill=True)

    # ----------------------------------------------------------------------------------------------- run
    def run(self, units: Sequence[Sequence[Any]]) -> Iterator[list[Any]]:
        """Yield, unit by unit in order, one outcome per item: the worker's, or a failure reason (``str``) for
        an item whose child died or overran."""
        outcomes: list[list[Any] | None] = [None] * len(units)
        missing = [len(u) for u in units]
        queue = deque(_Task(u, list(range(len(units[u])))) for u in range(len(units)))
        emitted = 0
        try:
            while emitted < len(units):
                while emitted < len(units) and missing[emitted] == 0:
                    out = outcomes[emitted] or []
                    outcomes[emitted] = None
                    emitted += 1
                    yield out
                if emitted == len(units):
                    break
                while queue:
                    idle = next((c for c in self._children if c.task is None), None)
                    if idle is None and len(self._children) >= self.processes:
                        break
                    self._give(idle or self._start(), queue.popleft(), units)
                busy = [c for c in self._children if c.task is not None]
                now = time.monotonic()
                # steps are posted on the boards without a wake-up: look again at least every POLL seconds
                wait_s = max(0.0, min(min(c.deadline(self.timeout) for c in busy) - now, self._poll_s))
                wait([c.conn for c in busy] + [c.proc.sentinel for c in busy], timeout=wait_s + 0.01)
                for c in busy:
                    self._poll(c, units, outcomes, missing, queue)
        finally:
            self.close()

    def _poll(self, c: _Child, units, outcomes, missing, queue) -> None:
        died = False
        try:
            while c.conn.poll():
                msg = c.conn.recv()
                if msg[0] == "done":
                    task = c.task
                    assert task is not None
                    self._fill(task, msg[1], task.positions, outcomes, missing, units)
                    c.task, c.batch = None, []
                    return
                c.batch = msg[1]
        except (EOFError, OSError):
            died = True
        step = c.step()
        where = self.describe(step[0]) if step else "starting the worker"
        if not died and c.proc.is_alive():
            if time.monotonic() < c.deadline(self.timeout):
                return
            reason = f"timeout: {where} took over {self.timeout:g} s; the worker was killed"
            self._remove(c, kill=True)
        else:
            code = self._remove(c, kill=False)
            if code is not None and code < 0:
                hint = " (killed from outside: out of memory?)" if -code == signal.SIGKILL else ""
                reason = f"crashed: {signal_name(-code)} in {where}{hint}"
            else:
                reason = f"crashed: the worker exited with code {code} in {where}"
        self.restarts += 1
        self._after_failure(c.task, step[:2] if step else None, reason, units, outcomes, missing, queue)

    def _fill(self, task: _Task, result: list[Any], positions: list[int], outcomes, missing, units) -> None:
        if outcomes[task.unit] is None:
            outcomes[task.unit] = [None] * len(units[task.unit])
        unit = outcomes[task.unit]
        for p, r in zip(positions, result):
            unit[p] = r
        missing[task.unit] -= len(positions)

    def _after_failure(self, task: _Task | None, step, reason: str, units, outcomes, missing, queue) -> None:
        if task is None:
            return
        if step is None:  # died before its first step: try again, but not forever
            task.silent_deaths += 1
            if task.silent_deaths >= _MAX_SILENT_DEATHS:
                raise WorkerError(f"worker processes die before reading any input ({reason}); "
                                  "check --memory-limit and the node's limits")
            queue.appendleft(task)
            return
        stage, ks = step
        if stage == "model" and len(ks) > 1:  # one of a batch: redo the task one crystal per batch
            log.warning("a worker died in a model batch of %d crystals (%s); redoing them one by one", len(ks), reason)
            queue.appendleft(_Task(task.unit, task.positions, isolate=True))
            return
        culprits = [task.positions[k] for k in ks]
        log.warning("%s: %s", ", ".join(_show(units[task.unit][p]) for p in culprits), reason)
        self._fill(task, [reason] * len(culprits), culprits, outcomes, missing, units)
        gone = set(culprits)
        rest = [p for p in task.positions if p not in gone]
        if rest:  # in normal batches again: the others get the bits they get in a run without the culprit
            queue.appendleft(_Task(task.unit, rest))
