"""Words and numbers the report's formats share: sizes, durations, statuses."""

from __future__ import annotations

import re
from datetime import datetime

STATUS_WORDS = {"passed": "passed", "failed": "failed", "unfinished": "did not finish",
                "checkpoint": "checkpoint (no command ran)"}
STATUS_MARKS = {"passed": "✓", "failed": "✗", "unfinished": "…", "checkpoint": "•"}
# What a terminal or a renderer acts on instead of showing: C0 controls, DEL, C1 controls, the line and
# paragraph separators, the bidi controls (text shown in another order than it is), and lone surrogates
# (no encoding holds one; JSON and 'surrogateescape' file names can).
UNSHOWN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def result_text(status: str, exit_status: int | None) -> str:
    """A step's result as both outputs word it: "failed (exit 2)"."""
    result = STATUS_WORDS.get(status, status)
    return result if exit_status in (None, 0) else f"{result} (exit {exit_status})"


def printable(text: object) -> str:
    """``text`` with each character of ``UNSHOWN`` written as its Python escape (``\\x1b``, ``\\udcff``).

    Every text from a record goes through this before any format escapes it: a record from a shared
    or imported store can then neither move a terminal's cursor, end a line of a table, nor make a
    report that cannot be encoded.
    """
    return UNSHOWN.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), str(text))


def size_text(n: float) -> str:
    """Bytes as a person reads them (1024-based, as ``rrstore list`` prints them)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop returns


def duration_text(seconds: float | None) -> str:
    """``0.25s``, ``4m 05s``, ``2h 03m``; "no duration" when none was recorded."""
    if seconds is None:
        return "no duration recorded"
    if seconds < 60:
        return f"{seconds:.2f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def when_text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %z").strip()


def ratio_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"
