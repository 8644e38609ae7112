"""Run a command the way a CI step runs: stream its output, time it, stop it on timeout.

The command runs in its own session so a timeout stops the whole process
group (a shell's children too): SIGTERM first, SIGKILL after
``KILL_GRACE`` seconds. A stopped command exits 124, as with coreutils
``timeout``, and its output gets a 'Timeout exceeded' line, so the
classifier sees the same evidence either way. Wall time is measured here;
CPU time and peak memory come from ``wait4``, which covers the command
and the children it waited for. The last ``TAIL_BYTES`` of output are
kept for the classifier; the rest is only streamed.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_STATUS = 124
KILL_GRACE = 5.0
TAIL_BYTES = 1 << 20
# After the command exits, how long to drain output its background children may still hold open.
DRAIN_AFTER_EXIT = 1.0

Sink = Callable[[int, bytes], None]


@dataclass
class Outcome:
    exit_status: int
    wall_time_s: float
    cpu_time_s: float
    peak_rss_kib: int
    timed_out: bool
    tail: bytes

    def text(self) -> str:
        return self.tail.decode("utf-8", errors="replace")


def passthrough(fd: int, data: bytes) -> None:
    """Default sink: the command's stdout to ours, its stderr to ours."""
    stream = sys.stdout if fd == 1 else sys.stderr
    stream.flush()
    raw = getattr(stream, "buffer", None)
    if raw is not None:
        raw.write(data)
        raw.flush()
    else:
        stream.write(data.decode("utf-8", errors="replace"))
        stream.flush()


def execute(command: str | Sequence[str], cwd: Path, timeout: float | None = None,
            sink: Sink | None = None) -> Outcome:
    """Run ``command`` (a string through ``/bin/sh -c``, a list directly) in ``cwd`` to its end."""
    sink = sink or passthrough
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(command if isinstance(command, str) else list(command),
                                shell=isinstance(command, str), cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:  # as a shell reports it: 127 not found, 126 not executable
        name = command if isinstance(command, str) else command[0]
        message = f"rrstore: cannot run {name}: {exc.strerror or exc}\n".encode()
        sink(2, message)
        status = 127 if isinstance(exc, FileNotFoundError) else 126
        return Outcome(status, time.perf_counter() - start, 0.0, 0, False, message)
    try:
        return _follow(proc, start, timeout, sink)
    except BaseException:  # Ctrl-C or a bug: never leave the step running behind us
        _signal_group(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            proc.wait()
        raise
    finally:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _follow(proc: subprocess.Popen[bytes], start: float, timeout: float | None, sink: Sink) -> Outcome:
    selector = selectors.DefaultSelector()
    for stream, fd in ((proc.stdout, 1), (proc.stderr, 2)):
        if stream is not None:
            selector.register(stream, selectors.EVENT_READ, fd)
    tail = bytearray()
    status: int | None = None
    usage = None
    exited_at = stopped_at = None
    deadline = start + timeout if timeout else None
    while True:
        now = time.perf_counter()
        if status is None:
            pid, wait_status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, usage, exited_at = wait_status, ru, now
                proc.returncode = os.waitstatus_to_exitcode(wait_status)
        if status is not None and (not selector.get_map() or now - (exited_at or now) > DRAIN_AFTER_EXIT):
            break
        if status is None and deadline is not None and now >= deadline:
            if stopped_at is None:
                stopped_at = now
                _signal_group(proc.pid, signal.SIGTERM)
                note = f"\nrrstore: Timeout exceeded: the step ran longer than {timeout:g}s and was stopped\n"
                sink(2, note.encode())
                tail += note.encode()
            elif now - stopped_at > KILL_GRACE:
                _signal_group(proc.pid, signal.SIGKILL)
        for key, _ in selector.select(timeout=0.05) if selector.get_map() else _pause():
            data = os.read(key.fd, 65536)
            if not data:
                selector.unregister(key.fileobj)
                continue
            sink(key.data, data)
            tail += data
            if len(tail) > 2 * TAIL_BYTES:
                del tail[:-TAIL_BYTES]
    selector.close()
    wall = time.perf_counter() - start
    assert status is not None and usage is not None
    code = os.waitstatus_to_exitcode(status)
    code = TIMEOUT_STATUS if stopped_at is not None else (128 - code if code < 0 else code)
    return Outcome(code, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, stopped_at is not None,
                   bytes(tail[-TAIL_BYTES:]))


def _pause() -> list[tuple[selectors.SelectorKey, int]]:
    time.sleep(0.05)
    return []


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
