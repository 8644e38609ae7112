"""SIGINT and SIGTERM on the command line: any command ends in one line with exit 130 or 143.

Installed first thing when ``rrstore.cli.main`` is imported, before click
and the library load. While the process starts (and once the command is
done) a signal ends it at once with its line: nothing has been changed
then. While a command runs, the first signal raises ``Signalled`` in the
main thread, so every ``finally`` and cleanup handler runs (temporary files
removed, locks released) and ``main`` prints the line; a second signal is
ignored until that unwinding is done (``kill -9`` still ends it). Once the
output is flushed, signals are ignored (``finishing``): the exit status is
then the command's own.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from rrstore.errors import Signalled

LINES: dict[int, str] = {signal.SIGINT: "rrstore: interrupted", signal.SIGTERM: "rrstore: terminated (SIGTERM)"}
_state = {"running": False, "seen": False}


def _handle(signum: int, frame: FrameType | None) -> None:
    if not _state["running"]:
        os.write(2, (LINES.get(signum, "rrstore: interrupted") + "\n").encode())
        os._exit(128 + signum)
    if not _state["seen"]:
        _state["seen"] = True
        raise Signalled(signum)


def install() -> None:
    """Catch SIGINT and SIGTERM from now on (start-up mode: exit at once)."""
    try:
        for signum in LINES:
            signal.signal(signum, _handle)
    except ValueError:  # not the main thread (rrstore's CLI called from a thread): leave Python's default
        pass


def running(active: bool) -> None:
    """Raise ``Signalled`` (``active``) or exit at once (start-up and the way out) on the next signal."""
    _state["running"] = active
    _state["seen"] = False


def finishing() -> None:
    """Ignore SIGINT and SIGTERM for the last instants of the exit: the command is done and has said so.

    Python's finalisation puts a handler it installed back to the default,
    so a signal then would kill the process (exit -2/-15, no line) after the
    command finished; an ignored signal is left ignored, and the exit code
    stays the command's.
    """
    try:
        for signum in LINES:
            signal.signal(signum, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass



@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``Signalled(SIGALRM)`` in the main thread after ``seconds``: the work unwinds as on SIGTERM.

    So a command with a deadline (the pre-commit hook) stops cleanly, every
    temporary file removed and every lock released, wherever it was waiting.
    """
    previous = signal.signal(signal.SIGALRM, _handle)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except Signalled as exc:
        if exc.signum == signal.SIGALRM:
            _state["seen"] = False  # the deadline was ours: a SIGINT or SIGTERM from now on counts again
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
