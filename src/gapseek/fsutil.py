"""File-system primitives every stage shares: one advisory lock (``fcntl.flock``), an atomic replace of a file's
whole content, and the temporary files of writers that rename into place.

The lock is advisory: it serialises gapseek commands among themselves (a campaign's writers, a store's PCA writers,
the tasks of one shard, a benchmark directory). Its file records the holder (``pid N on HOST since TIME``), for the
messages of those that wait. Where ``flock`` is unavailable (not POSIX, or a file system that refuses it) commands
go on unlocked, and :func:`file_lock` yields ``Lock(held=False)`` so that a caller can say so.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gapseek import config
from gapseek.errors import GapseekError

__all__ = ["Lock", "atomic_write", "file_lock", "host_name", "pid_alive", "remove_stale_temps", "sha256_file",
           "sync_dir", "temp_path", "write_json"]

log = logging.getLogger(__name__)

_NO_FLOCK = (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS)
_held: dict[str, list] = {}  # lock path -> [Lock, depth]: a process re-entering its own lock does not wait


@dataclass
class Lock:
    """What :func:`file_lock` got: ``held`` (False on a file system without flock: the holder goes on unlocked)
    and ``waited`` (seconds spent waiting for another holder)."""

    held: bool
    waited: float = 0.0


def _note(fd: int) -> str:
    """The holder's note in a lock file, or ''."""
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _command(note: str) -> str:
    """``another gapseek command (pid N)`` from a lock file's note (``pid N on HOST since TIME``, or a bare pid
    written by gapseek 0.1)."""
    m = re.match(r"(?:pid )?(\d+)", note)
    return f"another gapseek command (pid {m.group(1)})" if m else "another gapseek command"


@contextlib.contextmanager
def file_lock(path: str | Path, what: str, wait: bool = True, timeout: float | None = None,
              error: type[GapseekError] = GapseekError,
              waiting: Callable[[str], str] | None = None) -> Iterator[Lock]:
    """Hold an exclusive ``flock`` on ``path`` (created if absent) for the block.

    ``wait``: wait for another holder up to ``timeout`` seconds (None: :func:`gapseek.config.lock_timeout`;
    ``math.inf``: as long as it takes), saying so once on the log — ``waiting(note)`` words that line from the
    holder's note (default: "waiting for another gapseek command (pid N), which is writing WHAT") —; otherwise
    fail at once. Failing raises ``error`` naming ``what`` (e.g. "the campaign in DIR") and the holder. Re-entrant
    within a process. A lock file that cannot be created (a read-only folder) or a file system without flock
    yields ``Lock(held=False)``: nothing can be serialised there, the caller goes on."""
    key = os.path.realpath(path)
    if key in _held:
        _held[key][1] += 1
        try:
            yield _held[key][0]
        finally:
            _held[key][1] -= 1
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield Lock(False)
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:  # a read-only directory: nothing can be written there either, go on unlocked
        log.debug("no lock file %s (%s); going on unlocked", path, exc)
        yield Lock(False)
        return
    try:
        patience = config.lock_timeout() if timeout is None else timeout
        t0 = time.monotonic()
        lock = Lock(True)
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                note = _note(fd)
                if not wait:
                    raise error(f"{_command(note)} is writing {what}; wait for it to finish (or end it) and run "
                                "this again") from None
                if time.monotonic() - t0 >= patience:
                    raise error(f"{_command(note)} has held {what} for too long (lock file {path}); wait for it "
                                "to finish (or end it) and run this again; GAPSEEK_LOCK_TIMEOUT sets how many "
                                "seconds to wait") from None
                if not said:
                    log.warning("%s", waiting(note or "another task") if waiting
                                else f"waiting for {_command(note)}, which is writing {what}")
                    said = True
                time.sleep(0.05 if math.isfinite(patience) else 0.2)
            except OSError as exc:  # a file system without flock: go on unlocked
                if exc.errno not in _NO_FLOCK:
                    raise
                log.debug("no lock on %s (%s); going on unlocked", path, exc)
                lock.held = False
                break
        lock.waited = time.monotonic() - t0 if said else 0.0
        if lock.held:
            with contextlib.suppress(OSError):  # who holds it, for the messages of those that wait
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename} since "
                              f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode(), 0)
        _held[key] = [lock, 1]
        try:
            yield lock
        finally:
            del _held[key]
            if lock.held:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock (so does the end of the process, however it ends)


def atomic_write(path: str | Path, data: bytes) -> None:
    """Replace ``path``'s content with ``data`` all at once: written to ``.NAME.tmp`` beside it, fsynced, renamed
    over it, and the directory fsynced. On any failure (no space left, a crash) the old file is untouched; the
    temporary file is removed when the failure is an exception, and a leftover one is overwritten next time."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    sync_dir(path.parent)


def sync_dir(directory: str | Path) -> None:
    """fsync a folder, so that a rename in it survives a power cut (best effort: not every file system can)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 (hex) of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json(path: str | Path, data: dict) -> None:
    """``data`` as indented JSON at ``path``, atomically (:func:`atomic_write`)."""
    atomic_write(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def host_name() -> str:
    """This host's name as it may appear in a file name."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", os.uname().nodename) or "localhost"


def temp_path(directory: str | Path, filename: str) -> Path:
    """``DIR/.FILENAME.HOST.PID.tmp``: where a writer of ``DIR/FILENAME`` writes before the rename. Host and pid in
    the name tell a later run whether the writer is gone (see :func:`remove_stale_temps`)."""
    return Path(directory) / f".{filename}.{host_name()}.{os.getpid()}.tmp"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # alive but another user's / not a pid we can judge: keep its file
        return True
    return True


def remove_stale_temps(directory: str | Path, filename: str) -> list[Path]:
    """Remove the temporary files of ``DIR/FILENAME`` that a writer killed on this host left behind (kill -9, the
    OOM killer, a node's power cut): ``.FILENAME.HOST.PID.tmp`` of this host, and the ``.FILENAME.PID.tmp`` of
    gapseek 0.x, whose process is gone. Those of a live process, or of another host (whose processes cannot be
    seen from here), are kept."""
    directory = Path(directory)
    prefix, removed = f".{filename}.", []
    try:
        candidates = [p for p in directory.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    except OSError:
        return removed
    here = host_name()
    for p in candidates:
        parts = p.name[len(prefix):-len(".tmp")].split(".")
        host, pid = (here, parts[0]) if len(parts) == 1 else tuple(parts) if len(parts) == 2 else ("", "")
        if host != here or not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
            continue
        try:
            p.unlink()
        except OSError:
            continue
        removed.append(p)
        log.info("removed %s, left by an interrupted writer (pid %s is gone)", p, pid)
    return removed
