"""``rrstore push`` and ``pull``: share checkpoints through an S3-compatible remote.

``rrstore list --remote URL`` lives with ``list`` in ``main.py`` and calls
``RollbackRecoverySystem.list_remote``. Checkpoint ids go to stdout (JSON
with ``--json``), the summary and conflicts to stderr. boto3 is imported only
when a command actually talks to the remote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from rrstore.errors import PartialFailure

from .completion import complete_latest
from .context import global_options, state
from .output import emit_json, info, progress


def remote_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--remote`` and ``--endpoint-url``, shared by push and pull; without ``--remote`` (or bare), the
    remote is ``RRSTORE_REMOTE``, else ``[remote] url`` (``RollbackRecoverySystem.remote_target``)."""
    func = click.option("--rename-conflicts", is_flag=True,
                        help="An id both sides have with different records: give the local checkpoint "
                             "a new id (same prefix) and transfer it, instead of exit 3.")(func)
    func = click.option("--endpoint-url", default=None, metavar="URL",
                        help="S3 endpoint of a non-AWS server (MinIO, SeaweedFS, Ceph); default: endpoint_url "
                             "in [remote] of rrstore.toml, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL or the "
                             "AWS config.")(func)
    return click.option("--remote", is_flag=False, flag_value="", default=None, metavar="s3://BUCKET/PREFIX",
                        help="Remote store; default: env RRSTORE_REMOTE, else url in [remote] of "
                             "rrstore.toml (or [tool.rrstore.remote] of pyproject.toml).")(func)


def _finish(result: Any) -> int:
    st = state()
    if st.json:
        emit_json(result.to_json())
    else:
        for checkpoint_id in result.transferred:
            click.echo(checkpoint_id)
        lines = result.message.split("\n")
        for line in lines[:1] + [line for line in lines[1:] if line.startswith("renamed: ")]:
            info(line, st.quiet)
    conflicts = None
    if result.conflicts:
        ids = ", ".join(c.checkpoint_id for c in result.conflicts)
        then = "push them" if result.direction == "push" else "pull the remote's"
        conflicts = PartialFailure(f"{len(result.conflicts)} checkpoint(s) exist on both sides with different "
                                   f"records and were left unchanged: {ids}; rerun with --rename-conflicts "
                                   f"to give the local ones new ids and {then}")
    refusal = result.refusal()  # a transfer of every checkpoint sent the others first
    if refusal is not None:
        if conflicts is not None:
            click.echo(f"rrstore: error: {conflicts}", err=True)
        raise refusal
    if conflicts is not None:
        raise conflicts
    return 0


@click.command()
@click.argument("checkpoint_ids", nargs=-1, metavar="[ID...]")
@remote_options
@global_options
def push(checkpoint_ids: tuple[str, ...], remote: str | None, endpoint_url: str | None, rename_conflicts: bool) -> int:
    """Upload checkpoints (default: all) and every object they reach that the remote lacks.

    Uploads run in parallel; each ref is created only after everything it
    reaches is on the remote, and never replaced: an id the remote has with
    another record is reported as a conflict (exit 3; --rename-conflicts
    gives the local checkpoint a new id and pushes it). Pushing again uploads
    nothing. A checkpoint holding a symlink leading out of its tree is
    refused (exit 17): pushing all, after every other one is sent.

    \b
    Examples:
      rrstore push --remote s3://ci-checkpoints/proj
      rrstore push latest
    """
    st = state()
    with progress("push", st.show_progress) as cb:
        result = st.system().push(list(checkpoint_ids), remote or None, endpoint_url, progress=cb,
                                  rename_conflicts=rename_conflicts)
    return _finish(result)


@click.command()
@click.argument("checkpoint_ids", nargs=-1, metavar="[ID...]", shell_complete=complete_latest)
@remote_options
@click.option("--all-projects", is_flag=True, help="'latest' is the remote's newest, whichever project took it.")
@global_options
def pull(checkpoint_ids: tuple[str, ...], remote: str | None, endpoint_url: str | None, all_projects: bool,
         rename_conflicts: bool) -> int:
    """Download checkpoints (ids or 'latest'; default: all) and what they reach that the local store lacks.

    Every object is verified before anything becomes visible: a missing or
    corrupt remote object stops the pull with exit 13 and the local store
    unchanged. Creates the local store if there is none. A checkpoint holding
    a symlink leading out of its tree is refused (exit 17): pulling all, after
    every other one is in.

    \b
    Examples:
      rrstore pull latest --remote s3://ci-checkpoints/proj
      rrstore pull
    """
    st = state()
    with progress("pull", st.show_progress) as cb:
        result = st.system().pull(list(checkpoint_ids), remote or None, endpoint_url, progress=cb,
                                  all_projects=all_projects, rename_conflicts=rename_conflicts)
    return _finish(result)
