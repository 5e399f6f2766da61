"""Small file-system primitives shared by campaigns and the PCA writer: an advisory lock file (``fcntl.flock``,
re-entrant within a process) and an atomic replace of a file's whole content (temporary file, fsync, rename).

The lock is advisory: it serialises gapseek commands among themselves. Where ``flock`` is unavailable (not POSIX,
or a file system that refuses it) commands go on unlocked, as before, with a debug log line.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from gapseek.errors import GapseekError

__all__ = ["LOCK_TIMEOUT", "atomic_write", "file_lock", "lock_timeout"]

log = logging.getLogger(__name__)

LOCK_TIMEOUT = 600.0  # seconds a command waits for another's lock; GAPSEEK_LOCK_TIMEOUT overrides it

_held: dict[str, list] = {}  # lock path -> [descriptor, depth]: a process re-entering its own lock does not wait


def lock_timeout() -> float:
    """Seconds to wait for a lock: ``$GAPSEEK_LOCK_TIMEOUT`` (a number), else :data:`LOCK_TIMEOUT`."""
    try:
        return max(0.0, float(os.environ.get("GAPSEEK_LOCK_TIMEOUT", LOCK_TIMEOUT)))
    except ValueError:
        return LOCK_TIMEOUT


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        pid = ""
    return f"another gapseek command (pid {pid})" if pid else "another gapseek command"


@contextlib.contextmanager
def file_lock(path: str | Path, what: str, wait: bool = True, timeout: float | None = None,
              error: type[GapseekError] = GapseekError) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if absent; it records the holder's pid). ``wait``: wait
    for another holder up to ``timeout`` seconds (default :func:`lock_timeout`), saying so once on the log;
    otherwise fail at once. Failing raises ``error`` naming ``what`` (e.g. "the campaign in DIR") and the holder.
    Re-entrant: a process already holding ``path`` goes on."""
    key = os.path.realpath(path)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # a read-only directory: nothing can be written there either, go on unlocked
        log.debug("no lock file %s (%s); going on unlocked", path, exc)
        yield
        return
    try:
        deadline = time.monotonic() + (lock_timeout() if timeout is None else timeout)
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    raise error(f"{_holder(fd)} is writing {what}; wait for it to finish (or end it) and "
                                "run this again") from None
                if time.monotonic() >= deadline:
                    raise error(f"{_holder(fd)} has held {what} for too long (lock file {path}); wait for it "
                                "to finish (or end it) and run this again; GAPSEEK_LOCK_TIMEOUT sets how many "
                                "seconds to wait") from None
                if not said:
                    log.warning("waiting for %s, which is writing %s", _holder(fd), what)
                    said = True
                time.sleep(0.05)
            except OSError as exc:  # a file system without flock: go on unlocked
                if exc.errno not in (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                log.debug("no lock on %s (%s); going on unlocked", path, exc)
                break
        with contextlib.suppress(OSError):  # who holds it, for the message of a command that waits
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        _held[key] = [fd, 1]
        try:
            yield
        finally:
            del _held[key]
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock


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
    with contextlib.suppress(OSError):  # the rename itself survives a power cut
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
