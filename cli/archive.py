"""``rrstore export``, ``import`` and ``verify``: archives from the command line.

An archive goes to a file (or stdout with ``--output -``); human messages and
progress go to stderr, checkpoint ids (or JSON with ``--json``) to stdout.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import click

from .context import endpoint_needs, global_options, state
from .output import emit_json, info, progress


@click.command(name="export")
@click.argument("checkpoint_ids", nargs=-1, required=True, metavar="ID...")
@click.option("-o", "--output", required=True, metavar="FILE",
              help="Archive to write: a file, '-' for stdout, or s3://BUCKET/KEY. Never half-written: "
                   "it appears complete or not at all.")
@click.option("--format", "fmt", type=click.Choice(["rrstore", "tar"]), default="rrstore", show_default=True,
              help="rrstore: checkpoints with every object they reach, for 'rrstore import'. "
                   "tar: one checkpoint's files as a .tar.zst for 'tar --zstd -xf'.")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@click.option("--endpoint-url", default=None, metavar="URL", help="S3 endpoint for an s3:// output (non-AWS servers).")
@global_options
def export_command(checkpoint_ids: tuple[str, ...], output: str, fmt: str, force: bool,
                   endpoint_url: str | None) -> int:
    """Write checkpoints (ids or 'latest') to one compressed archive, each object once.

    \b
    Examples:
      rrstore export latest -o backup.rra
      rrstore export latest --format tar -o - | tar -t
    """
    st = state()
    endpoint_needs(endpoint_url, output.startswith("s3://"), "an --output s3://BUCKET/KEY")
    if fmt == "tar" and len(checkpoint_ids) != 1:
        raise click.UsageError("--format tar exports exactly one checkpoint")
    if output == "-":
        if st.json:
            raise click.UsageError("--json cannot be used with --output - (stdout carries the archive)")
        if sys.stdout.isatty():
            raise click.UsageError("refusing to write an archive to a terminal; redirect stdout or give a file")
    target: str | Path | BinaryIO = output if output.startswith("s3://") else Path(output)
    if output == "-":
        target = sys.stdout.buffer
    with progress("export", st.show_progress) as cb:
        result = st.system().export(list(checkpoint_ids), target, fmt, progress=cb, force=force,
                                    endpoint_url=endpoint_url)
    if st.json:
        emit_json(result.to_json())
    else:
        info(result.message, st.quiet)
    return 0


def archive_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """ARCHIVE (a file or s3://BUCKET/KEY, kept a string: a Path would mangle the URL) and ``--endpoint-url``."""
    func = click.option("--endpoint-url", default=None, metavar="URL",
                        help="S3 endpoint for an s3:// archive (non-AWS servers), as for export.")(func)
    return click.argument("archive", metavar="ARCHIVE")(func)


def _endpoint(archive: str, endpoint_url: str | None) -> None:
    endpoint_needs(endpoint_url, archive.startswith("s3://"), "an ARCHIVE s3://BUCKET/KEY")


@click.command(name="import")
@archive_options
@global_options
def import_command(archive: str, endpoint_url: str | None) -> int:
    """Check an archive (a file or s3://BUCKET/KEY) completely, then add its checkpoints to the store
    (created if needed).

    Importing the same archive again changes nothing. An archive that is
    damaged, truncated or unsafe, or holds a checkpoint id the store has with
    another record, is refused with exit code 16 before anything is written.
    An archive on S3 is streamed (twice: check, then store), never copied locally.

    \b
    Examples:
      rrstore import backup.rra
      rrstore import s3://ci-checkpoints/runs/a.rra --endpoint-url http://127.0.0.1:8333
    """
    st = state()
    _endpoint(archive, endpoint_url)
    with progress("import", st.show_progress) as cb:
        result = st.system().import_archive(archive, progress=cb, endpoint_url=endpoint_url)
    if st.json:
        emit_json(result.to_json())
    else:
        for checkpoint_id in result.added + result.unchanged:
            click.echo(checkpoint_id)
        info(result.message, st.quiet)
    return 0


@click.command(name="verify")
@archive_options
@global_options
def verify_command(archive: str, endpoint_url: str | None) -> int:
    """Check an archive (a file or s3://BUCKET/KEY, streamed) completely without importing it.

    \b
    Examples:
      rrstore verify backup.rra
    """
    st = state()
    _endpoint(archive, endpoint_url)
    with progress("verify", st.show_progress) as cb:
        result = st.system().verify_archive(archive, progress=cb, endpoint_url=endpoint_url)
    if st.json:
        emit_json(result.to_json())
    else:
        for checkpoint_id in result.refs:
            click.echo(checkpoint_id)
        info(result.message, st.quiet)
    return 0
