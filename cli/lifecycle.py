"""``rrstore gc``, ``pin`` and ``unpin``: retention from the command line (safe from cron)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from rrstore.lanes import LANES

if TYPE_CHECKING:
    from rrstore.gc import GCResult

from .context import endpoint_needs, global_options, remote_option, state
from .output import emit_json, human_bytes, info


@click.command(name="gc")
@click.option("--older-than", default="7d", show_default=True,
              help="Remove checkpoints older than this (e.g. 7d, 36h, 0s).")
@click.option("--keep-last", type=click.IntRange(min=0), default=0, show_default=True,
              help="Always keep the newest N step checkpoints of each lane.")
@click.option("--keep-lane", "keep_lanes", multiple=True, type=click.Choice(LANES),
              help="Keep every checkpoint of this lane (repeatable).")
@click.option("--grace", default="15m", show_default=True,
              help="Never sweep objects written more recently than this.")
@click.option("--dry-run", is_flag=True, help="Report what would be removed; remove nothing.")
@remote_option("Apply the retention to this remote instead of the local store (safe while others push).")
@click.option("--endpoint-url", default=None, metavar="URL", help="S3 endpoint of a non-AWS server (with --remote).")
@global_options
def gc_command(older_than: str, keep_last: int, keep_lanes: tuple[str, ...], grace: str, dry_run: bool,
               remote: str | None, endpoint_url: str | None) -> int:
    """Delete checkpoints the retention policy does not keep, then every object none of the rest reaches.

    Quiet unless something was removed (or -v), no prompts, no progress when
    not on a terminal: made for cron. Pinned checkpoints are always kept.
    With --remote, the remote's checkpoints (its pins and this store's count);
    see docs/remote-gc.md.
    """
    from rrstore.gc import Retention, parse_duration  # here, not at the top: see cli/checkpoints.py

    st = state()
    endpoint_needs(endpoint_url, remote is not None, "--remote s3://BUCKET/PREFIX")
    policy = Retention(older_than=parse_duration(older_than), keep_last=keep_last,
                       keep_lanes=keep_lanes, grace=parse_duration(grace))
    result: GCResult
    if remote is not None:
        result = st.system().gc_remote(remote or None, endpoint_url, policy, dry_run=dry_run)  # "": configured
    else:
        result = st.system().gc(policy, dry_run=dry_run)
    if st.json:
        emit_json(result.to_json())
    elif result.changed or dry_run or st.verbose:
        for checkpoint_id in result.removed:
            click.echo(f"{'would remove' if dry_run else 'removed'} {checkpoint_id}")
        info(f"{result.message} ({human_bytes(result.bytes_freed)})", st.quiet)
    return 0


def _remote_option(func: Any) -> Any:
    func = click.option("--endpoint-url", default=None, metavar="URL",
                        help="S3 endpoint of a non-AWS server (with --remote).")(func)
    return remote_option("Pin on this remote (kept by gc --remote) instead of the local store.")(func)


@click.command()
@click.argument("checkpoint_id")
@_remote_option
@global_options
def pin(checkpoint_id: str, remote: str | None, endpoint_url: str | None) -> int:
    """Keep CHECKPOINT_ID whatever gc's retention policy says."""
    st = state()
    endpoint_needs(endpoint_url, remote is not None, "--remote s3://BUCKET/PREFIX")
    if remote is not None:
        new = st.system().pin_remote(checkpoint_id, remote or None, endpoint_url)
    else:
        checkpoint_id, new = st.system().pin(checkpoint_id)
    if st.json:
        emit_json({"checkpoint_id": checkpoint_id, "pinned": True, "changed": new})
    else:
        info(f"pinned {checkpoint_id}" if new else f"{checkpoint_id} was already pinned", st.quiet)
    return 0


@click.command()
@click.argument("checkpoint_id")
@_remote_option
@global_options
def unpin(checkpoint_id: str, remote: str | None, endpoint_url: str | None) -> int:
    """Let gc's retention policy apply to CHECKPOINT_ID again."""
    st = state()
    endpoint_needs(endpoint_url, remote is not None, "--remote s3://BUCKET/PREFIX")
    if remote is not None:
        removed = st.system().pin_remote(checkpoint_id, remote or None, endpoint_url, pinned=False)
    else:
        checkpoint_id, removed = st.system().unpin(checkpoint_id)
    if st.json:
        emit_json({"checkpoint_id": checkpoint_id, "pinned": False, "changed": removed})
    else:
        info(f"unpinned {checkpoint_id}" if removed else f"{checkpoint_id} was not pinned", st.quiet)
    return 0


@click.command(name="delete")
@click.argument("checkpoint_ids", nargs=-1, required=True, metavar="ID...")
@click.option("--force", is_flag=True, help="Delete a pinned checkpoint too (and its pin).")
@global_options
def delete_command(checkpoint_ids: tuple[str, ...], force: bool) -> int:
    """Forget checkpoints: remove their refs; their objects go at the next gc.

    Works on a checkpoint that cannot be read, which otherwise blocks gc and
    push. Refuses a pinned one without --force; an unknown id or a pinned one
    changes nothing (exit 12, exit 2). 'forget' is another name for it.

    \b
    Examples:
      rrstore delete standard-step2-20261201_071641-k3f9qz
      rrstore forget latest && rrstore gc --older-than 0s
    """
    st = state()
    deleted = st.system().delete(list(checkpoint_ids), force=force)
    if st.json:
        emit_json({"deleted": list(deleted)})
    else:
        for checkpoint_id in deleted:
            click.echo(checkpoint_id)
        info(f"deleted {len(deleted)} checkpoint(s); their objects go at the next gc", st.quiet)
    return 0
