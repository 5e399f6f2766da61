"""``gapseek`` command line: parse (:mod:`~gapseek.cli.parser`), call the library, print. The handlers live in
:mod:`~gapseek.cli.featurize`, :mod:`~gapseek.cli.cluster`, :mod:`~gapseek.cli.search` and
:mod:`~gapseek.cli.benchmark`; only the one a command needs is imported."""

from __future__ import annotations

import contextlib
import importlib
import logging
import signal
import sys
import threading
import warnings

from gapseek.cli.parser import build_parser
from gapseek.errors import GapseekError, GapseekWarning

__all__ = ["build_parser", "main"]

log = logging.getLogger("gapseek")


class _Formatter(logging.Formatter):
    """``gapseek: warning: ...`` (``info``, ``debug``), like the CLI's ``gapseek: error: ...``."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return f"gapseek: {record.levelname.lower()}: {record.message}"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` of the CLI: every warning that the filters let through (each once per place, the
    Python default) goes to stderr through the gapseek logger, at any verbosity. (``logging.captureWarnings`` is
    no use here: it sends them to a "py.warnings" logger that, without a handler of its own, drops them.)"""
    if issubclass(category, GapseekWarning):
        log.warning("%s", message)
    else:  # a library's: say whose
        log.warning("%s (%s from %s:%s)", message, category.__name__, filename, lineno)


def _setup_logging(verbose: int) -> None:
    """Log records of gapseek and the warnings to stderr. Call it inside ``warnings.catch_warnings()``."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("gapseek")
    root.handlers[:] = [handler]
    root.setLevel(level)
    warnings.simplefilter("default", GapseekWarning)
    warnings.showwarning = _show_warning


def _handler(name: str):
    """``"MODULE:FUNCTION"`` of gapseek.cli -> the function (its module imported now)."""
    module, _, func = name.partition(":")
    return getattr(importlib.import_module(f"gapseek.cli.{module}"), func)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    with warnings.catch_warnings(), _sigterm_as_interrupt():  # warnings' display ends with the command
        _setup_logging(args.verbose)
        try:
            return int(_handler(args.func)(args) or 0)
        except (GapseekError, OSError) as exc:  # OSError: a path given cannot be read or written
            log.debug("traceback of the error below", exc_info=True)
            print(f"gapseek: error: {exc}", file=sys.stderr)
            return 1
        except _Terminated:
            print("gapseek: terminated (SIGTERM); temporary files removed, finished work kept", file=sys.stderr)
            return 143
        except KeyboardInterrupt:
            print("gapseek: interrupted", file=sys.stderr)
            return 130


class _Terminated(KeyboardInterrupt):
    pass


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (Slurm's time limit, scancel, kill) unwinds like Ctrl-C, so writers remove their temporary files
    and worker processes are stopped, instead of the process vanishing mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise _Terminated()

    old = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
