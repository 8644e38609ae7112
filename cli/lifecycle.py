"""``rrstore gc``, ``pin`` and ``unpin``: retention from the command line (safe from cron)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rrstore.lanes import LANES
from rrstore.schedule import CRON_SCHEDULE, SYSTEMD_CALENDAR

if TYPE_CHECKING:
    from rrstore.gc import GCResult
    from rrstore.schedule import GCJob

from .completion import complete_pinned
from .context import chosen_remote, endpoint_needs, global_options, remote_option, state
from .output import emit_json, human_bytes, info


def _schedule_options(func: Any) -> Any:
    opts = [
        click.option("--cron-line", "cron", is_flag=False, flag_value=CRON_SCHEDULE, default=None,
                     metavar="[SCHEDULE]",
                     help=f"Print a crontab line running this gc instead (schedule: five fields or @daily; "
                          f"bare: '{CRON_SCHEDULE}')."),
        click.option("--systemd-unit", "systemd", is_flag=False, flag_value=SYSTEMD_CALENDAR, default=None,
                     metavar="[CALENDAR]",
                     help=f"Print a systemd service and timer running this gc instead (OnCalendar=; "
                          f"bare: {SYSTEMD_CALENDAR})."),
        click.option("--log", type=click.Path(path_type=Path, dir_okay=False), default=None, metavar="FILE",
                     help="With --cron-line/--systemd-unit: append the scheduled gc's output to FILE "
                          "(default: cron mails it, systemd keeps it in the journal)."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


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
@_schedule_options
@global_options
def gc_command(older_than: str, keep_last: int, keep_lanes: tuple[str, ...], grace: str, dry_run: bool,
               remote: str | None, endpoint_url: str | None, cron: str | None, systemd: str | None,
               log: Path | None) -> int:
    """Delete checkpoints the retention policy does not keep, then every object none of the rest reaches.

    Quiet unless something was removed (or -v), no prompts, no progress when
    not on a terminal: made for cron. Pinned checkpoints are always kept.
    With --remote, the remote's checkpoints (its pins and this store's count);
    see 'rrstore help remote-gc'. --cron-line and --systemd-unit print, instead,
    what runs this very gc from cron or a systemd timer (absolute paths throughout).

    \b
    Examples:
      rrstore gc --older-than 14d --keep-last 5 --dry-run
      rrstore gc --older-than 14d --keep-last 5 --cron-line '0 3 * * 0'   # a line for crontab -e
    """
    from rrstore.gc import Retention, parse_duration  # here, not at the top: see cli/checkpoints.py

    st = state()
    endpoint_needs(endpoint_url, remote is not None, "--remote s3://BUCKET/PREFIX")
    policy = Retention(older_than=parse_duration(older_than), keep_last=keep_last,
                       keep_lanes=keep_lanes, grace=parse_duration(grace))
    if cron is not None or systemd is not None or log is not None:
        from rrstore.schedule import gc_args

        args = gc_args(older_than, keep_last, keep_lanes, grace, dry_run=dry_run,
                       remote=chosen_remote(remote, endpoint_url), endpoint_url=endpoint_url)
        return _print_schedule(args, cron, systemd, log)
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


def _print_schedule(args: tuple[str, ...], cron: str | None, systemd: str | None, log: Path | None) -> int:
    """``--cron-line`` / ``--systemd-unit``: the job that runs gc with ``args`` for this project's store."""
    from rrstore.schedule import (
        check_cron_schedule,
        check_systemd_calendar,
        cron_command,
        cron_line,
        running_program,
        systemd_units,
    )

    if (cron is None) == (systemd is None):
        raise click.UsageError("--log needs --cron-line or --systemd-unit" if log is not None
                               else "--cron-line and --systemd-unit exclude each other")
    st = state()
    schedule = check_cron_schedule(cron) if cron is not None else None  # bad input first, then the store
    calendar = check_systemd_calendar(systemd) if systemd is not None else ""
    job = _job(args, running_program(sys.argv[0], sys.executable), log)
    if schedule is not None:
        if st.json:
            emit_json({"line": cron_line(job, schedule), "schedule": schedule, "command": cron_command(job)})
        else:
            click.echo(cron_line(job, schedule))
        return 0
    units = systemd_units(job, calendar)
    if st.json:
        emit_json(units)
    else:
        click.echo("\n".join(f"# {name}\n{text}" for name, text in units.items()), nl=False)
    return 0


def _job(args: tuple[str, ...], program: tuple[str, ...], log: Path | None) -> GCJob:
    """This project's root and store, absolute; the local store must exist (else exit 10, as gc would)."""
    from rrstore.schedule import GCJob

    system = state().system()
    if "--remote" not in args:
        system.open_store()  # StoreNotFound: the scheduled gc would fail every night
    return GCJob(program, system.root.absolute(), system.store_path.absolute(), args,
                 Path(os.path.abspath(log)) if log is not None else None)


def _remote_option(func: Any) -> Any:
    func = click.option("--endpoint-url", default=None, metavar="URL",
                        help="S3 endpoint of a non-AWS server (with --remote).")(func)
    return remote_option("Pin on this remote (kept by gc --remote) instead of the local store.")(func)


@click.command()
@click.argument("checkpoint_id", metavar="ID")
@_remote_option
@global_options
def pin(checkpoint_id: str, remote: str | None, endpoint_url: str | None) -> int:
    """Keep checkpoint ID whatever gc's retention policy says.

    \b
    Examples:
      rrstore pin latest
      rrstore pin standard-step3-20261201_071641-k3f9qz --remote s3://ci-checkpoints/proj
    """
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
@click.argument("checkpoint_id", metavar="ID", shell_complete=complete_pinned)
@_remote_option
@global_options
def unpin(checkpoint_id: str, remote: str | None, endpoint_url: str | None) -> int:
    """Let gc's retention policy apply to checkpoint ID again.

    \b
    Examples:
      rrstore unpin standard-step3-20261201_071641-k3f9qz
    """
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
