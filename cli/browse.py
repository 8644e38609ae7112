"""``rrstore ls``, ``cat``, ``dump``, ``find`` and ``log``: look inside checkpoints without restoring.

Paths are tree paths, relative to the project root. Plain output shows a
path as it is unless it holds a control character (a newline) or cannot be
printed: then it is quoted as a JSON string; ``--json`` carries every path exactly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from rrstore.lanes import LANES

from .context import global_options, state
from .output import emit_json, info, progress

if TYPE_CHECKING:
    from rrstore.browse import Listed


def shown(path: str) -> str:
    """``path`` for a line of plain output: as it is, or JSON-quoted when it would break the line."""
    return path if path.isprintable() and not path.startswith('"') else json.dumps(path)


def long_line(item: Listed) -> str:
    size = "-" if item.size is None else str(item.size)
    tail = f" -> {shown(item.entry.target)}" if item.entry.kind == "symlink" else ""
    return f"{item.entry.kind:<7} {item.mode} {size:>10} {item.hash or '-':<64} {shown(item.path)}{tail}"


LANE = click.option("--lane", type=click.Choice(LANES), default=None, help="Only checkpoints of this lane.")


@click.command(name="ls")
@click.argument("checkpoint_id", metavar="ID")
@click.argument("path", default="", required=False)
@click.option("-l", "--long", "long_", is_flag=True, help="Type, mode, size, BLAKE3 hash and path of each entry.")
@click.option("-r", "--recursive", is_flag=True, help="Every entry below PATH, not only its own.")
@global_options
def ls_command(checkpoint_id: str, path: str, long_: bool, recursive: bool) -> int:
    """List the files of a checkpoint.

    The directory at PATH (the root by default), every entry below it with
    -r, or the file there; ID may be 'latest'. A file's hash is its BLAKE3,
    as b3sum prints it. PATH is relative to the project root.

    \b
    Examples:
      rrstore ls latest
      rrstore ls -lr lint-step1-20261201_101500-ab3d5f src/ --json
    """
    st = state()
    items = st.system().browser.ls(checkpoint_id, path, recursive=recursive)
    if st.json:
        emit_json([item.to_json() for item in items])
    elif items:
        click.echo("\n".join(long_line(item) if long_ else shown(item.path if recursive else item.entry.name)
                             for item in items))
    return 0


@click.command(name="cat")
@click.argument("checkpoint_id", metavar="ID")
@click.argument("path")
@global_options
def cat_command(checkpoint_id: str, path: str) -> int:
    """Print one file of a checkpoint, verified as it streams.

    Each piece is checked before it is written; a damaged one stops it with
    exit 13, and what was written is then not to be trusted. A symlink
    prints its target. PATH is relative to the project root.

    \b
    Examples:
      rrstore cat latest src/app.py
      rrstore cat lint-step1-20261201_101500-ab3d5f logo.png > logo.png
    """
    st = state()
    if st.json:
        raise click.UsageError("--json cannot be used with cat (stdout carries the file)")
    entry = st.system().browser.cat(checkpoint_id, path, sys.stdout.buffer)
    sys.stdout.buffer.flush()
    if entry.kind == "symlink":
        info(f"rrstore: {path} is a symlink: printed its target", st.quiet)
    return 0


@click.command(name="dump")
@click.argument("checkpoint_id", metavar="ID")
@click.argument("path", default="", required=False)
@click.option("--format", "fmt", type=click.Choice(["tar", "zip"]), default="tar", show_default=True,
              help="A plain tar or zip of the files (for tar -x / unzip), not an rrstore archive.")
@click.option("-o", "--output", default="-", metavar="FILE", show_default=True,
              help="File to write ('-': stdout). Never half-written: it appears complete or not at all.")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@global_options
def dump_command(checkpoint_id: str, path: str, fmt: str, output: str, force: bool) -> int:
    """Write a checkpoint's files as a plain tar or zip.

    All of them, or those at or below PATH, with paths as in the tree, each
    file checked against its hash as it is written; to stdout (never a
    terminal) or -o FILE.

    \b
    Examples:
      rrstore dump latest | tar -tv
      rrstore dump latest src --format zip -o src.zip
    """
    st = state()
    target: Path | BinaryIO = Path(output)
    if output == "-":
        if st.json:
            raise click.UsageError("--json cannot be used with --output - (stdout carries the archive)")
        if sys.stdout.isatty():
            raise click.UsageError("refusing to write an archive to a terminal; redirect stdout or give -o FILE")
        target = sys.stdout.buffer
    with progress("dump", st.show_progress) as cb:
        result = st.system().browser.dump(checkpoint_id, target, fmt, path, force=force, progress=cb)
    if output == "-":
        sys.stdout.buffer.flush()
    elif st.json:
        emit_json(result.to_json())
    else:
        info(f"dumped {result.objects} entries ({result.bytes} bytes of files) of {result.checkpoints[0]} "
             f"to {result.output} as {fmt}", st.quiet)
    return 0


@click.command(name="find")
@click.argument("pattern")
@LANE
@global_options
def find_command(pattern: str, lane: str | None) -> int:
    """Find the checkpoints holding a path that matches PATTERN.

    Newest first, with the path's hash in each. Without '/' the pattern
    matches names ('*.py'); with '/' whole paths ('src/**/test_*.py'; '**'
    spans directories).

    \b
    Examples:
      rrstore find '*.lock'
      rrstore find 'src/**/config.py' --lane standard --json
    """
    from rrstore.errors import CheckpointsUnreadable

    st = state()
    result = st.system().browser.find(pattern, lane)
    if st.json:
        emit_json(result.to_json())
    elif result.hits:
        click.echo("\n".join(f"{r.checkpoint_id} {hit.entry.kind:<7} {hit.hash or '-':<64} {shown(hit.path)}"
                             for r, hit in result.hits))
    if not result.hits:
        info(f"rrstore: no path matches {pattern!r} in {result.searched} checkpoint(s)", st.quiet)
    if result.damaged:
        raise CheckpointsUnreadable(result.damaged)
    return 0


@click.command(name="log")
@click.argument("path")
@LANE
@global_options
def log_command(path: str, lane: str | None) -> int:
    """List the checkpoints where PATH changed.

    Oldest first: added (A), modified (M), deleted (D), exec bit changed
    (X) or type changed (T), with its hash after the change.

    \b
    Examples:
      rrstore log src/app.py
      rrstore log pyproject.toml --lane standard --json
    """
    st = state()
    result = st.system().browser.log(path, lane)
    if st.json:
        emit_json(result.to_json())
    elif result.changes:
        tags = {"added": "A", "modified": "M", "deleted": "D", "mode": "X", "type": "T"}
        click.echo("\n".join(f"{tags[c.change]} {c.record.checkpoint_id} {c.record.timestamp} "
                             f"{(c.entry.oid if c.entry is not None else '') or '-'}" for c in result.changes))
    if not result.changes:
        info(f"rrstore: {result.path} is in none of {result.searched} checkpoint(s)", st.quiet)
    return 0
