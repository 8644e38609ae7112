"""Rendering for the command line: JSON on stdout, messages and progress on stderr."""

from __future__ import annotations

import json
import sys
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


@contextmanager
def progress(label: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback that draws on a terminal once work passes one second."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    start = time.monotonic()
    last = [0.0]
    drawn = [False]

    def update(done: int, total: int) -> None:
        now = time.monotonic()
        if now - start < 1.0 or (now - last[0] < 0.1 and done < total):
            return
        last[0] = now
        drawn[0] = True
        pct = f" {100 * done // total:3d}%" if total else ""
        sys.stderr.write(f"\r{label}: {done}/{total}{pct}")
        sys.stderr.flush()

    try:
        yield update
    finally:
        if drawn[0]:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
