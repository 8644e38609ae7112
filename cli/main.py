"""``rrstore`` command line: parse, call one ``RollbackRecoverySystem`` method, print.

No logic lives here that the Python API lacks. Errors become one line on
stderr and the exit code their class names (see ``rrstore --help``).
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from rrstore import __version__
from rrstore.checkpoint import LANES, CheckpointRecord
from rrstore.errors import RestoreFailed, RRStoreError, exit_code_table, from_oserror
from rrstore.system import RollbackRecoverySystem

from .output import emit_json, human_bytes, info, progress


@dataclass
class State:
    """Global options; given before or after the command name, the later wins."""

    store: Path | None = None
    root: Path | None = None
    json: bool = False
    quiet: bool = False
    verbose: int = 0
    _system: RollbackRecoverySystem | None = None

    def system(self) -> RollbackRecoverySystem:
        if self._system is None:
            self._system = RollbackRecoverySystem(root=self.root, store=self.store)
        return self._system

    @property
    def show_progress(self) -> bool:
        return not (self.quiet or self.json)


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value not in (None, False, 0):
        setattr(ctx.find_root().ensure_object(State), param.name or "", value)
    return value


def global_options(func: Any) -> Any:
    opts = [
        click.option("--store", type=click.Path(path_type=Path), expose_value=False, callback=_remember,
                     help="Store directory (default: .checkpoints in the project root; env RRSTORE_DIR)."),
        click.option("-C", "--root", type=click.Path(path_type=Path), expose_value=False, callback=_remember,
                     help="Project root (default: the enclosing git work tree, else the current directory)."),
        click.option("--json", "json", is_flag=True, expose_value=False, callback=_remember,
                     help="Print machine-readable JSON on stdout."),
        click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_remember,
                     help="Print only data, no messages."),
        click.option("-v", "--verbose", count=True, expose_value=False, callback=_remember,
                     help="More detail (tables; tracebacks on errors)."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _state() -> State:
    return click.get_current_context().find_root().ensure_object(State)


def _exit_help() -> str:
    rows = "\n".join(f"  {code:>3}  {text}" for code, text in exit_code_table())
    return ("\b\nExit codes:\n" + rows + "\n  (status/diff --exit-code: 1 when the tree differs)\n\n"
            "\b\nJSON (--json) output is documented in docs/cli.md.")


@click.group(epilog=_exit_help(), context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rrstore")
@global_options
def cli() -> None:
    """Content-addressed checkpoints of a working tree: checkpoint, restore, recover."""


def _record_line(r: CheckpointRecord) -> str:
    return f"{r.checkpoint_id}: {r.step_name} ({r.lane})"


@cli.command()
@click.option("--lane", type=click.Choice(LANES), required=True, help="Workflow lane.")
@click.option("--step-number", type=click.IntRange(min=0), required=True, help="Step number in the workflow.")
@click.option("--step-name", required=True, help="What the step does.")
@click.option("--status", "status", type=click.Choice(["success", "failed"]), default="success",
              show_default=True, help="Outcome of the step this checkpoint records.")
@click.option("--error", "error", default=None, help="Error message of a failed step.")
@global_options
def checkpoint(lane: str, step_number: int, step_name: str, status: str, error: str | None) -> int:
    """Record the working tree as a new checkpoint and print its id."""
    st = _state()
    with progress("checkpoint", st.show_progress) as cb:
        result = st.system().checkpoint(lane, step_number, step_name, success=status == "success",
                                        error_message=error, progress=cb)
    if st.json:
        emit_json(result.record.to_dict())
    else:
        click.echo(result.checkpoint_id)
        info(result.message, st.quiet)
    if result.skipped and not st.quiet:
        shown = ", ".join(result.skipped[:3]) + (" …" if len(result.skipped) > 3 else "")
        click.echo(f"rrstore: warning: skipped {len(result.skipped)} path(s) that cannot be checkpointed "
                   f"(special files, nested repositories): {shown}", err=True)
    return 0


@cli.command(name="list")
@click.option("--lane", type=click.Choice(LANES), default=None, help="Only this lane.")
@click.option("--remote", default=None, metavar="s3://BUCKET/PREFIX", help="List a remote store instead.")
@click.option("--endpoint-url", default=None, metavar="URL", help="S3 endpoint of a non-AWS server (with --remote).")
@global_options
def list_(lane: str | None, remote: str | None, endpoint_url: str | None) -> int:
    """List checkpoints, newest first."""
    st = _state()
    listing = st.system().list_remote(remote, endpoint_url, lane) if remote else st.system().list(lane)
    records = listing.checkpoints
    for checkpoint_id, exc in listing.damaged.items():
        click.echo(f"rrstore: warning: cannot read checkpoint {checkpoint_id}: {exc}", err=True)
    if st.json:
        emit_json([r.to_dict() for r in records])
    elif st.verbose:
        header = f"{'ID':<36} {'LANE':<8} {'STEP':>4} {'STATUS':<7} {'FILES':>7} {'NEW':>10} {'STATE':<12} NAME"
        click.echo(header)
        for r in records:
            m = r.metrics
            click.echo(f"{r.checkpoint_id:<36} {r.lane:<8} {r.step_number:>4} {r.status:<7} "
                       f"{m.get('files_scanned', 0):>7} {human_bytes(m.get('bytes_new', 0)):>10} "
                       f"{r.state_hash[:12]:<12} {r.step_name}")
    else:
        for r in records:
            click.echo(_record_line(r))
    return 0


@cli.command()
@click.argument("checkpoint_id")
@global_options
def show(checkpoint_id: str) -> int:
    """Print one checkpoint's record ('latest' names the newest)."""
    st = _state()
    record = st.system().show(checkpoint_id)
    doc = record.to_dict()
    if st.json:
        emit_json(doc)
        return 0
    for key in ("checkpoint_id", "lane", "step_number", "step_name", "timestamp", "state_hash",
                "git_commit", "git_branch", "git_dirty", "success", "error_message", "kind"):
        click.echo(f"{key}: {doc[key]}")
    for key, value in sorted(record.metrics.items()):
        click.echo(f"metrics.{key}: {value}")
    return 0


@cli.command()
@click.argument("old_id")
@click.argument("new_id", required=False)
@click.option("--exit-code", is_flag=True, help="Exit with 1 when there are differences.")
@global_options
def diff(old_id: str, new_id: str | None, exit_code: bool) -> int:
    """Paths added (A), removed (D) and modified (M) from OLD_ID to NEW_ID or the working tree."""
    st = _state()
    result = st.system().diff(old_id, new_id)
    if st.json:
        emit_json(result.to_json())
    else:
        lines = [("A", p) for p in result.added] + [("D", p) for p in result.removed] + \
                [("M", p) for p in result.modified]
        for tag, path in sorted(lines, key=lambda t: t[1]):
            click.echo(f"{tag} {path}")
    return 1 if exit_code and result.changed else 0


@cli.command()
@click.option("--exit-code", is_flag=True, help="Exit with 1 unless the tree matches the newest checkpoint.")
@global_options
def status(exit_code: bool) -> int:
    """The working tree's state hash and whether it matches the newest checkpoint."""
    st = _state()
    result = st.system().status()
    if st.json:
        emit_json(result.to_json())
    else:
        click.echo(f"state {result.state_hash}")
        click.echo(result.message)
        if result.changes is not None and st.verbose:
            for path in result.changes.added:
                click.echo(f"A {path}")
            for path in result.changes.removed:
                click.echo(f"D {path}")
            for path in result.changes.modified:
                click.echo(f"M {path}")
    return 1 if exit_code and not result.clean else 0


@cli.command()
@click.option("--checkpoint-id", "checkpoint_id", default=None, help="Checkpoint to restore (or 'latest').")
@click.argument("checkpoint_arg", required=False, metavar="[CHECKPOINT_ID]")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--path", "paths", multiple=True, help="Restore only this path (repeatable).")
@global_options
def restore(checkpoint_id: str | None, checkpoint_arg: str | None, dry_run: bool, paths: tuple[str, ...]) -> int:
    """Make the working tree identical to a checkpoint (undoable: the current state is checkpointed first)."""
    st = _state()
    chosen = checkpoint_id or checkpoint_arg
    if not chosen:
        raise click.UsageError("give the checkpoint to restore: --checkpoint-id ID")
    with progress("restore", st.show_progress) as cb:
        result = st.system().restore(chosen, paths=list(paths) or None, dry_run=dry_run, progress=cb)
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


def _report(exc: RRStoreError, state: State, code: int | None = None) -> int:
    code = exc.exit_code if code is None else code
    kind = type(exc).__name__ if code == exc.exit_code else "UsageError"
    if state.json:
        import json

        click.echo(json.dumps({"error": kind, "message": str(exc), "exit_code": code}), err=True)
    else:
        click.echo(f"rrstore: error: {exc}", err=True)
    if state.verbose:
        traceback.print_exc()
    return code


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the CLI and exits with the documented code."""
    state = State()
    try:
        code = cli.main(args=argv, prog_name="rrstore", standalone_mode=False, obj=state)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        code = 2
    except click.ClickException as exc:
        state.json = state.json or "--json" in (sys.argv[1:] if argv is None else argv)
        code = _report(RRStoreError(exc.format_message()), state, exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("rrstore: interrupted", err=True)
        code = 130
    except RRStoreError as exc:
        code = _report(exc, state)
    except OSError as exc:
        code = _report(from_oserror(exc, exc.filename or "?", "access"), state)
    except Exception as exc:  # a bug: say so in one line, traceback with -v
        click.echo(f"rrstore: internal error: {type(exc).__name__}: {exc} (rerun with -v for details)", err=True)
        if state.verbose:
            traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.exit(code if isinstance(code, int) else 0)


# Commands kept in their own modules, registered here (they import this module's helpers).
from . import lifecycle  # noqa: E402

cli.add_command(lifecycle.gc_command)
cli.add_command(lifecycle.pin)
cli.add_command(lifecycle.unpin)

from . import archive  # noqa: E402

cli.add_command(archive.export_command)
cli.add_command(archive.import_command)
cli.add_command(archive.verify_command)

from . import remote  # noqa: E402

cli.add_command(remote.push)
cli.add_command(remote.pull)

from . import recovery  # noqa: E402

cli.add_command(recovery.plan)
cli.add_command(recovery.classify)
cli.add_command(recovery.validate)
cli.add_command(recovery.cleanup)
cli.add_command(recovery.run_command)
cli.add_command(recovery.workflow_command)
