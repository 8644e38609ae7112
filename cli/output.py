"""Rendering for the command line: JSON on stdout, messages and progress on stderr."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True))


def info(message: str, quiet: bool) -> None:
    if not quiet:
        click.echo(message, err=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# Seconds before a progress line appears (quick commands draw nothing); tests set 0.
PROGRESS_DELAY_ENV = "RRSTORE_PROGRESS_DELAY"
_INTERVAL = 0.1  # at most ten lines a second


def _delay() -> float:
    try:
        return max(0.0, float(os.environ.get(PROGRESS_DELAY_ENV, "1")))
    except ValueError:
        return 1.0


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


class _Bar:
    """``label: 12.0 MiB / 40.0 MiB  30%  8.1 MiB/s  ETA 0:03`` on stderr, redrawn in place.

    The library calls it per file or object, from pool threads too: a call between draws costs one
    clock read and a comparison. Without a total (0) or past an estimated one: bytes and rate only.
    Drawn by click's own helpers (already loaded): rich.progress would add ~28 ms of imports to
    every command (docs/benchmarks.md), click's progressbar counts items, not bytes.
    """

    def __init__(self, label: str, delay: float) -> None:
        self.label = label
        self.start = time.monotonic()  # the rate's base: the first call may come after parallel work did
        self.next = self.start + delay
        self.lock = threading.RLock()  # Ctrl-C during a draw: ``close`` runs in the drawing thread
        self.drawn = self.closed = False
        self.shown = (-1, -1)
        try:  # a wrapped line cannot be cleared; a bare pty says 0
            self.width = (os.get_terminal_size(sys.stderr.fileno()).columns or 80) - 1
        except (OSError, ValueError):
            self.width = 79

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now < self.next and (done < total or not self.drawn):
            return
        self.next = now + _INTERVAL
        with self.lock:
            if not self.closed and (done, total) != self.shown:
                rate = done / (now - self.start) if now > self.start else 0.0
                self.drawn, self.shown = True, (done, total)  # first: a Ctrl-C during the write still clears
                click.echo("\r" + self.line(done, total, rate)[:self.width] + "\x1b[K", err=True, nl=False)

    def line(self, done: int, total: int, rate: float) -> str:
        if total <= 0 or done > total:
            return f"{self.label}: {human_bytes(done)}  {human_bytes(rate)}/s"
        eta = _clock((total - done) / rate) if rate else "-:--"
        return (f"{self.label}: {human_bytes(done)} / {human_bytes(total)}  {100 * done // total:3d}%  "
                f"{human_bytes(rate)}/s  ETA {eta}")

    def close(self) -> None:
        """Clear the line (on success, error or Ctrl-C alike); later calls from threads draw nothing."""
        with self.lock:
            self.closed = True
            if self.drawn:
                click.echo("\r\x1b[K", err=True, nl=False)


@contextmanager
def progress(label: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback (bytes done, total) that draws on a terminal once work passes a second
    (``RRSTORE_PROGRESS_DELAY``); None when not enabled (--quiet, --json) or stderr is no terminal."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    bar = _Bar(label, _delay())
    try:
        yield bar
    finally:
        bar.close()
