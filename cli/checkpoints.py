"""Commands on the checkpoints of one working tree: checkpoint, list, show, diff, status, restore.

The library is imported inside each command (``st.system()`` loads it anyway): ``rrstore --help``
imports this module for the summaries and should not load the object store to print them.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from rrstore.errors import CheckpointsUnreadable, RestoreFailed
from rrstore.lanes import LANES

if TYPE_CHECKING:
    from rrstore.diff import DiffResult
    from rrstore.record import CheckpointRecord

from .context import endpoint_needs, global_options, remote_option, state
from .output import emit_json, human_bytes, info, progress


def _record_line(r: CheckpointRecord) -> str:
    return f"{r.checkpoint_id}: {r.step_name} ({r.lane})"


def _project_label(r: CheckpointRecord) -> str:
    """The project column of ``list --all-projects``: a record older than project identities shows its root."""
    return r.project or f"(root {r.root})"


ALL_PROJECTS = click.option("--all-projects", is_flag=True,
                            help="Every project's checkpoints in a shared store, not only this project's.")


def _warn_future(r: CheckpointRecord) -> None:
    """A record dated after the store got it: said on stderr, so stdout stays data."""
    click.echo(f"rrstore: warning: checkpoint {r.checkpoint_id} is future-dated: its record says {r.timestamp}, "
               f"but this store got it at {r.added.isoformat(timespec='seconds')}; it is ordered by the latter",
               err=True)


@click.command()
@click.option("--lane", type=click.Choice(LANES), required=True, help="Workflow lane.")
@click.option("--step-number", type=click.IntRange(min=0), required=True, help="Step number in the workflow.")
@click.option("--step-name", required=True, help="What the step does.")
@click.option("--status", "status", type=click.Choice(["success", "failed"]), default=None,
              help="Outcome of the step this checkpoint records [default: failed with --error, else success].")
@click.option("--error", "error", default=None, help="Error message of a failed step (implies --status failed).")
@click.option("--strict", is_flag=True, default=False,
              help="Abort (exit 1, nothing recorded) if a file keeps changing while it is read, "
                   "instead of leaving it out.")
@global_options
def checkpoint(lane: str, step_number: int, step_name: str, status: str | None, error: str | None,
               strict: bool) -> int:
    """Record the working tree as a new checkpoint and print its id.

    \b
    Examples:
      rrstore checkpoint --lane standard --step-number 1 --step-name build
      rrstore checkpoint --lane heavy --step-number 3 --step-name tests --error "2 failed" --json
    """
    from rrstore.checkpoint import left_out_warning, links_out_warning

    st = state()
    success = None if status is None else status == "success"
    with progress("checkpoint", st.show_progress) as cb:
        result = st.system().checkpoint(lane, step_number, step_name, success=success,
                                        error_message=error, progress=cb, strict=strict)
    if st.json:
        emit_json({**result.record.to_json(), "pinned": False})  # the record as list and show print it
    else:
        click.echo(result.checkpoint_id)
        info(result.message, st.quiet)
    if result.skipped and not st.quiet:
        shown = ", ".join(result.skipped[:3]) + (" …" if len(result.skipped) > 3 else "")
        click.echo(f"rrstore: warning: skipped {len(result.skipped)} path(s) that cannot be checkpointed "
                   f"(special files, nested repositories): {shown}", err=True)
    for warning in (left_out_warning(result.record.left_out), links_out_warning(result.links_out)):
        if warning and not st.quiet:
            click.echo(warning, err=True)
    return 0


def _status_label(record: CheckpointRecord) -> str:
    """The STATUS column: an undo point restore took is no step's outcome, so it says ``undo``."""
    return "undo" if record.kind == "pre-restore" else record.status


def _run_label(record: CheckpointRecord) -> str:
    """The workflow run a step record belongs to (``record.run["id"]``), "-" for none."""
    return record.run.get("id") or "-"


@click.command(name="list")
@click.option("--lane", type=click.Choice(LANES), default=None, help="Only this lane.")
@remote_option("List a remote store instead.")
@click.option("--endpoint-url", default=None, metavar="URL", help="S3 endpoint of a non-AWS server (with --remote).")
@ALL_PROJECTS
@global_options
def list_(lane: str | None, remote: str | None, endpoint_url: str | None, all_projects: bool) -> int:
    """List this project's checkpoints, newest first.

    -v prints a table: lane, step, status ('undo' for the point a restore
    took), whether it is pinned, files, new bytes, state, workflow run.

    \b
    Examples:
      rrstore list -v
      rrstore list --lane standard --json
    """
    st = state()
    endpoint_needs(endpoint_url, remote is not None, "--remote s3://BUCKET/PREFIX")
    system = st.system()
    listing = (system.list_remote(remote or None, endpoint_url, lane, all_projects=all_projects,
                                  pins=bool(st.verbose or st.json))
               if remote is not None else system.list(lane, all_projects=all_projects))
    records = listing.checkpoints
    pins = listing.pinned or set()
    if not st.json:  # with --json the error object at the end carries each id and its error
        for checkpoint_id, exc in listing.damaged.items():
            click.echo(f"rrstore: warning: cannot read checkpoint {checkpoint_id}: {exc}", err=True)
    if st.json:
        emit_json([{**r.to_json(), "pinned": r.checkpoint_id in pins} for r in records])
    elif st.verbose:
        width = max([len("PROJECT"), *(len(_project_label(r)) for r in records)])
        project = f"{'PROJECT':<{width}} " if all_projects else ""
        wide = max([36, *(len(r.checkpoint_id) for r in records)])  # ids with a tail are 37 and more
        runs = max([3, *(len(_run_label(r)) for r in records)])  # the id workflow --run takes
        lines = [f"{'ID':<{wide}} {'LANE':<8} {'STEP':>4} {'STATUS':<7} {'PINNED':<6} {'FILES':>7} {'NEW':>10} "
                 f"{'STATE':<12} "
                 f"{'RUN':<{runs}} {project}NAME"]
        for r in records:
            m = r.metrics
            mark = "  [future-dated]" if r.future_dated else ""
            project = f"{_project_label(r):<{width}} " if all_projects else ""
            pinned = "yes" if r.checkpoint_id in pins else "-"
            lines.append(f"{r.checkpoint_id:<{wide}} {r.lane:<8} {r.step_number:>4} {_status_label(r):<7} "
                         f"{pinned:<6} {m.get('files_scanned', 0):>7} {human_bytes(m.get('bytes_new', 0)):>10} "
                         f"{r.state_hash[:12]:<12} {_run_label(r):<{runs}} {project}{r.step_name}{mark}")
        click.echo("\n".join(lines))  # one write: a line each costs a write and a flush
        for r in records:
            if r.future_dated:
                _warn_future(r)
    elif records:
        click.echo("\n".join(f"{_record_line(r)} {_project_label(r)}" if all_projects else _record_line(r)
                             for r in records))
    if listing.note:
        info(f"rrstore: {listing.note}", st.quiet)
    if listing.damaged:
        raise CheckpointsUnreadable(listing.damaged)
    return 0


@click.command()
@click.argument("checkpoint_id", metavar="ID")
@click.option("--read-data", is_flag=True,
              help="Also read and re-hash every file content of the checkpoint (finds corrupt contents).")
@global_options
def show(checkpoint_id: str, read_data: bool) -> int:
    """Print one checkpoint's record and pin ('latest' names the newest), and what of it is damaged.

    A damaged checkpoint (its ref, record, trees or file contents) is shown
    as far as it can be read, each damage on a 'damage:' line with its paths,
    and exits 13 with the way out (check --repair, or delete).

    \b
    Examples:
      rrstore show latest
      rrstore show standard-step2-20261201_071641-k3f9qz --json --read-data
    """
    from rrstore.errors import CheckpointDamaged

    st = state()
    result = st.system().examine(checkpoint_id, read_data=read_data)
    if st.json:
        emit_json(result.to_json())
    elif result.record is not None:
        _print_record(result.record, result.pinned)
    else:
        click.echo(f"checkpoint_id: {result.checkpoint_id}\npinned: {result.pinned}")
    if not st.json:
        for damage in result.damage:
            click.echo(f"damage: {damage.line}")
    if result.damaged:
        raise CheckpointDamaged(result.checkpoint_id, [d.line for d in result.damage], result.way_out)
    return 0


def _print_record(record: CheckpointRecord, pinned: bool) -> None:
    """``show``'s text: one ``key: value`` a line, in the order docs/cli.md gives."""
    doc = record.to_json()
    for key in ("checkpoint_id", "lane", "step_number", "step_name", "timestamp", "added", "state_hash",
                "git_commit", "git_branch", "git_dirty", "success", "error_message", "kind"):
        click.echo(f"{key}: {doc[key]}")
    click.echo(f"pinned: {pinned}")
    for key in ("git_operation", "git_merge_head"):  # only while git waited for the user
        if doc.get(key):
            click.echo(f"{key}: {doc[key]}")
    if record.future_dated:
        click.echo("future_dated: True")
        _warn_future(record)
    for key, value in sorted(record.metrics.items()):
        click.echo(f"metrics.{key}: {value}")


@click.command()
@click.argument("old_id", metavar="ID")
@click.argument("new_id", required=False, metavar="[ID]")
@click.option("-p", "--patch", is_flag=True, help="Print a unified diff of the content (git's format).")
@click.option("-U", "--unified", "context", type=click.IntRange(min=0), default=None, metavar="N",
              help="Lines of context around each change (implies -p) [default: 3].")
@click.option("-z", "nul", is_flag=True, help="Print STATUS NUL PATH NUL records: names exactly as they are.")
@click.option("--exit-code", is_flag=True, help="Exit with 1 when there are differences.")
@global_options
def diff(old_id: str, new_id: str | None, patch: bool, context: int | None, nul: bool, exit_code: bool) -> int:
    """Paths added (A), removed (D) and modified (M) from ID to the second ID or the working tree.

    A name with a newline, quote, control or non-ASCII byte is quoted as git does ("a\\nb");
    -z and --json carry it exactly.

    \b
    Examples:
      rrstore diff standard-step1-20261201_101500-ab3d5f latest
      rrstore diff -p latest | git apply -R
    """
    st = state()
    patch = patch or context is not None
    if sum((patch, nul, st.json)) > 1:
        raise click.UsageError("-p, -z and --json each choose the output: give one of them")
    if patch:
        made = st.system().patch(old_id, new_id, context=3 if context is None else context)
        for chunk in made.chunks():
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        result = made.changes
    else:
        result = st.system().diff(old_id, new_id)
        _print_changes(result, nul, st.json)
    if result.left_out and not st.quiet:  # never a change: restore leaves them alone
        from rrstore.diff import quote_path

        click.echo(f"rrstore: {', '.join(map(quote_path, result.left_out))}: left out of the checkpoint {old_id}, "
                   "not compared", err=True)
    return 1 if exit_code and result.changed else 0


def _print_changes(result: DiffResult, nul: bool, as_json: bool) -> None:
    """``diff``'s path list: JSON, ``-z`` records (raw bytes), or one quoted line per path."""
    import os

    from rrstore.diff import change_lines, tagged

    if as_json:
        emit_json(result.to_json())
    elif nul:
        sys.stdout.buffer.write(b"".join(b"%s\0%s\0" % (tag.encode(), os.fsencode(path))
                                                         for tag, path in tagged(result, by_path=True)))
    elif result.changed:
        click.echo("\n".join(change_lines(result, by_path=True)))


@click.command()
@click.option("--exit-code", is_flag=True, help="Exit with 1 unless the tree matches the newest checkpoint.")
@ALL_PROJECTS
@global_options
def status(exit_code: bool, all_projects: bool) -> int:
    """The working tree's state hash and whether it matches this project's newest checkpoint.

    \b
    Examples:
      rrstore status
      rrstore status --exit-code -v
    """
    from rrstore.diff import change_lines

    st = state()
    result = st.system().status(all_projects=all_projects)
    if result.note:
        info(f"rrstore: {result.note}", st.quiet)
    if st.json:
        emit_json(result.to_json())
    else:
        click.echo(f"state {result.state_hash}")
        click.echo(result.message)
        if result.changes is not None and st.verbose:
            for line in change_lines(result.changes):
                click.echo(line)
    return 1 if exit_code and not result.clean else 0


@click.command()
@click.option("--checkpoint-id", "checkpoint_id", default=None, metavar="ID",
              help="Checkpoint to restore (or 'latest').")
@click.argument("checkpoint_arg", required=False, metavar="[ID]")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--path", "paths", multiple=True, help="Restore only this path (repeatable).")
@click.option("--no-undo", "no_undo", is_flag=True,
              help="Write no undo checkpoint first (works from a read-only store; what the restore "
                   "overwrites or deletes cannot be brought back).")
@click.option("--force", is_flag=True, help="Restore a checkpoint another project took (a shared store).")
@global_options
def restore(checkpoint_id: str | None, checkpoint_arg: str | None, dry_run: bool, paths: tuple[str, ...],
            no_undo: bool, force: bool) -> int:
    """Make the working tree identical to a checkpoint (undoable: the current state is checkpointed first).

    \b
    Examples:
      rrstore restore --checkpoint-id latest --dry-run
      rrstore restore standard-step1-20261201_071500-ab3d5f --path src/
    """
    st = state()
    chosen = checkpoint_id or checkpoint_arg
    if not chosen:
        raise click.UsageError("give the checkpoint to restore: --checkpoint-id ID")
    with progress("restore", st.show_progress) as cb:
        result = st.system().restore(chosen, paths=list(paths) or None, dry_run=dry_run, undo=not no_undo,
                                     progress=cb, force=force)
    for warning in result.warnings:
        click.echo(f"rrstore: warning: {warning}", err=True)
    plan = result.plan
    if st.json:
        emit_json(result.to_json())
    elif dry_run or st.verbose:
        rows = [("D", p) for p in plan.remove] + [("W", p) for p in plan.write] + \
               [("+", p + "/") for p in plan.mkdir] + [("L", p) for p in plan.symlink] + \
               [("X", p) for p in plan.chmod]
        for tag, path in rows:
            click.echo(f"{tag} {path}")
    if not st.json:
        info(result.message, st.quiet)
    if result.failures:
        raise RestoreFailed(result.failures, result.undo_checkpoint_id)
    return 0

