"""``rrstore report`` (reports layer, above recovery and below the facade): a look at the store.

``build_report`` gathers the data (``model``), ``render_html`` and
``render_markdown`` turn it into a self-contained page or a CI summary, and
``Report.to_json`` is the ``--json`` form. It reads the facade through
``recovery.ports.System`` and writes nothing to the store.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import from_oserror
from ..fsutil import AtomicFile
from .html import render_html
from .markdown import render_markdown
from .model import Report, ReportOptions, build_report

__all__ = ["Report", "ReportOptions", "build_report", "render_html", "render_markdown", "write_text"]


def write_text(path: Path, text: str) -> None:
    """Write a rendered report to ``path`` whole or not at all (a temporary file beside it, renamed)."""
    try:
        with AtomicFile(path) as out:
            out.write(text.encode())
    except OSError as exc:
        raise from_oserror(exc, str(path)) from exc
