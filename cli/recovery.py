"""``rrstore plan``, ``classify``, ``validate``, ``cleanup``, ``run`` and ``workflow``: recovery.

Each command calls one ``RollbackRecoverySystem`` method and renders its
result: data (plans, checks, JSON) on stdout, messages on stderr. ``run``
and ``workflow`` stream the step's own output as it comes (to stderr with
``--json``, so stdout stays one JSON document) and exit with the step's
status.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click

from rrstore.errors import UsageError, ValidationFailed, from_oserror
from rrstore.lanes import LANES
from rrstore.recovery.vocabulary import FailureType

from .context import chosen_remote, endpoint_needs, global_options, remote_option, report, state
from .output import emit_json, human_bytes, info

FAILURE_TYPES = [f.value for f in FailureType]


@click.command()
@click.option("--failure-type", type=click.Choice(FAILURE_TYPES), default="unknown", show_default=True,
              help="What failed (see 'rrstore classify').")
@click.option("--lane", type=click.Choice(LANES), default="standard", show_default=True, help="Workflow lane.")
@global_options
def plan(failure_type: str, lane: str) -> int:
    """Print the recovery plan for a failure in a lane: steps, commands, times, strategy.

    \b
    Examples:
      rrstore plan --failure-type test_failure --lane standard
    """
    st = state()
    result = st.system().plan(failure_type, lane)
    if st.json:
        emit_json(result.to_json())
    else:
        for line in result.lines():
            click.echo(line)
    return 0


def _read_log(source: str) -> str:
    if source == "-":
        return sys.stdin.buffer.read().decode("utf-8", errors="replace")
    try:
        return Path(source).read_bytes().decode("utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        raise UsageError(f"--log: no such file: {source}") from None
    except OSError as exc:
        raise from_oserror(exc, source, "read") from exc


@click.command()
@click.option("--exit-code", type=int, default=None, help="The failed step's exit status.")
@click.option("--log", "log", default=None, metavar="FILE|-", help="The step's output ('-' reads stdin).")
@global_options
def classify(exit_code: int | None, log: str | None) -> int:
    """Name the failure type of a step from its exit status and output, with the deciding line.

    \b
    Examples:
      rrstore classify --exit-code 1 --log build.log
      rrstore classify --log - < pytest.log
    """
    st = state()
    if exit_code is None and log is None:
        raise click.UsageError("give --exit-code N, --log FILE (or -), or both")
    result = st.system().classify(_read_log(log) if log is not None else "", exit_code)
    if st.json:
        emit_json(result.to_json())
    else:
        click.echo(result.failure_type.value)
        if not st.quiet:
            where = f" (line {result.line})" if result.line else ""
            click.echo(f"evidence{where}: {result.evidence}")
    return 0


@click.command()
@click.option("--checkpoint", "--checkpoint-id", "checkpoint_id", default=None, metavar="ID",
              help="Also check that the working tree matches this checkpoint ('latest' allowed).")
@global_options
def validate(checkpoint_id: str | None) -> int:
    """Check the state before recovery: files, git, clean tree, dependencies, configuration, store.

    With -v/--verbose, the store check reads every tree (deep validation) and
    each check lists its details.

    \b
    Examples:
      rrstore validate
      rrstore validate --checkpoint latest -v
    """
    st = state()
    result = st.system().validate(verbose=bool(st.verbose), checkpoint_id=checkpoint_id)
    if st.json:
        emit_json(result.to_json())
    else:
        for check in result.checks:
            click.echo(check.line)
            if st.verbose:
                for detail in check.details:
                    click.echo(f"    {detail}")
        if result.success:
            info(result.message, st.quiet)
    if not result.success:  # reported like any error, but -v here asks for detail, not a traceback
        failure = ValidationFailed(result.message, [c.name for c in result.failed])
        return report(failure, replace(st, verbose=0))
    return 0


@click.command()
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@global_options
def cleanup(dry_run: bool) -> int:
    """Remove failed execution state: interrupted writes in the store, git's stale index.lock, caches.

    Never removes a tracked file, a checkpoint, or rrstore's own lock files.

    \b
    Examples:
      rrstore cleanup --dry-run
      rrstore cleanup
    """
    st = state()
    result = st.system().cleanup(dry_run=dry_run)
    if st.json:
        emit_json(result.to_json())
    else:
        verb = "would remove" if dry_run else "removed"
        for item in result.removed:
            click.echo(f"{verb} {item.kind} {item.path} ({item.files} file(s), {human_bytes(item.bytes)})")
        for path, why in result.errors.items():
            click.echo(f"rrstore: warning: cannot remove {path}: {why}", err=True)
        info(f"{result.message} ({human_bytes(result.bytes_freed)})", st.quiet)
    return 0


def _hooks(json_mode: bool, quiet: bool):  # type: ignore[no-untyped-def]
    from rrstore.recovery.process import passthrough
    from rrstore.recovery.run import RunHooks

    def to_stderr(fd: int, data: bytes) -> None:
        passthrough(2, data)

    def say(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    def warn(message: str) -> None:  # a failed push: shown even with --quiet
        click.echo(message, err=True)

    return RunHooks(output=to_stderr if json_mode else passthrough, notify=say, warning=warn)


@click.command(name="run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--lane", type=click.Choice(LANES), required=True, help="Workflow lane.")
@click.option("--step-number", type=click.IntRange(min=0), required=True, help="Step number in the workflow.")
@click.option("--step-name", required=True, help="What the step does.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Stop the step after this long (exit status 124, classified as timeout).")
@click.option("--retries", type=click.IntRange(min=0), default=None,
              help="Retries when the plan says RETRY (default: [recovery] retries, else 2).")
@click.option("--backoff", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Wait before retry N: backoff × 2^(N-1) (default: [recovery] backoff, else 30).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- COMMAND...")
@global_options
def run_command(lane: str, step_number: int, step_name: str, timeout: float | None, retries: int | None,
                backoff: float | None, command: tuple[str, ...]) -> int:
    """Checkpoint, run COMMAND, and recover: classify a failure, print the plan, retry with backoff.

    One argument is run by the shell ('ruff check . && pytest'); several are
    run directly. Exits with the command's final status.

    \b
    Examples:
      rrstore run --lane standard --step-number 2 --step-name tests -- pytest -x
      rrstore run --lane docs --step-number 1 --step-name build --timeout 600 -- 'make html'
    """
    from rrstore.recovery.run import RetryPolicy

    st = state()
    argv: str | list[str] = command[0] if len(command) == 1 else list(command)
    result = st.system().run_step(lane, step_number, step_name, argv,
                                  policy=RetryPolicy(timeout, retries, backoff), hooks=_hooks(st.json, st.quiet))
    if st.json:
        emit_json(result.to_json())
    else:
        info(result.message, st.quiet)
    return result.exit_status


@click.command(name="workflow")
@click.option("--lane", type=click.Choice(LANES), required=True, help="The lane whose [workflow.LANE] to run.")
@click.option("--resume", is_flag=True,
              help="Continue the last run at the step that failed, on the working tree as it is.")
@click.option("--from", "from_step", default=None, metavar="N|NAME",
              help="Start at this step (number or name), skipping those before it (implies --resume).")
@click.option("--strict", is_flag=True,
              help="Refuse (exit 21) if the tree changed since the last good step (implies --resume).")
@click.option("--restore", is_flag=True,
              help="First restore the state the last good step ended with, undoably (implies --resume).")
@remote_option("Continue a run stored on this remote, as on a fresh runner: pulls only what the resume "
               "needs (implies --resume); steps push there too under [remote] push.")
@click.option("--endpoint-url", default=None, metavar="URL",
              help="S3 endpoint of a non-AWS server (with --remote).")
@click.option("--run", "run_id", default=None, metavar="RUN",
              help="The run to continue (its id, in 'workflow --json' and 'show --json'); default: the "
                   "newest run of the lane on the current git branch (implies --resume).")
@global_options
def workflow_command(lane: str, resume: bool, from_step: str | None, strict: bool, restore: bool,
                     remote: str | None, endpoint_url: str | None, run_id: str | None) -> int:
    """Run a lane's configured steps in order through 'run', stopping at the first failure.

    When resuming, prints what changed since the last good step, which
    steps run and which are skipped and why, and the time saved. Exits with
    the failed step's status (0 when every step passed).

    \b
    Examples:
      rrstore workflow --lane standard
      rrstore workflow --lane standard --resume
    """
    st = state()
    endpoint_needs(endpoint_url, remote is not None, "--remote s3://BUCKET/PREFIX")
    result = st.system().workflow(lane, resume=resume, restore=restore, from_step=from_step, strict=strict,
                                  remote=chosen_remote(remote, endpoint_url), endpoint_url=endpoint_url, run=run_id,
                                  hooks=_hooks(st.json, st.quiet))
    if st.json:
        emit_json(result.to_json())
    elif not st.quiet:
        for line in result.report():
            click.echo(line, err=True)
    sys.stdout.flush()
    return result.exit_status
