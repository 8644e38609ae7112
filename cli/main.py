"""``rrstore`` command line: parse, call one ``RollbackRecoverySystem`` method, print.

No logic lives here that the Python API lacks. Errors become one line on
stderr and the exit code their class names (see ``rrstore --help``). This
module builds the group from the command modules; none of them imports it.
"""

from __future__ import annotations

from . import signals

signals.install()  # before click and the library import: Ctrl-C from here on ends in one line

import sys  # noqa: E402
import traceback  # noqa: E402

import click  # noqa: E402

from rrstore import __version__  # noqa: E402
from rrstore.errors import RRStoreError, Signalled, exit_code_table, from_oserror  # noqa: E402

from . import archive, checkpoints, lifecycle, maintenance, recovery, remote  # noqa: E402
from .context import State, global_options, report  # noqa: E402


def _exit_help() -> str:
    rows = "\n".join(f"  {code:>3}  {text}" for code, text in exit_code_table())
    return ("\b\nExit codes:\n" + rows + "\n  (status/diff --exit-code: 1 when the tree differs)\n\n"
            "\b\nJSON (--json) output is documented in docs/cli.md.")

@click.group(epilog=_exit_help(), context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rrstore")
@global_options
def cli() -> None:
    """Content-addressed checkpoints of a working tree: checkpoint, restore, recover."""


cli.add_command(checkpoints.checkpoint)
cli.add_command(checkpoints.list_)
cli.add_command(checkpoints.show)
cli.add_command(checkpoints.diff)
cli.add_command(checkpoints.status)
cli.add_command(checkpoints.restore)
cli.add_command(lifecycle.gc_command)
cli.add_command(lifecycle.pin)
cli.add_command(lifecycle.unpin)
cli.add_command(maintenance.check_command)
cli.add_command(archive.export_command)
cli.add_command(archive.import_command)
cli.add_command(archive.verify_command)
cli.add_command(remote.push)
cli.add_command(remote.pull)
cli.add_command(recovery.plan)
cli.add_command(recovery.classify)
cli.add_command(recovery.validate)
cli.add_command(recovery.cleanup)
cli.add_command(recovery.run_command)
cli.add_command(recovery.workflow_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the CLI and exits with the documented code."""
    state = State()
    signals.install()
    signals.running(True)
    try:
        code = cli.main(args=argv, prog_name="rrstore", standalone_mode=False, obj=state)
    except Signalled as exc:
        click.echo(signals.LINES.get(exc.signum, "rrstore: interrupted"), err=True)
        code = exc.exit_code
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        code = 2
    except click.ClickException as exc:
        state.json = state.json or "--json" in (sys.argv[1:] if argv is None else argv)
        code = report(RRStoreError(exc.format_message()), state, exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("rrstore: interrupted", err=True)
        code = 130
    except RRStoreError as exc:
        code = report(exc, state)
    except OSError as exc:
        code = report(from_oserror(exc, exc.filename or "?", "access"), state)
    except Exception as exc:  # a bug: say so in one line, traceback with -v
        click.echo(f"rrstore: internal error: {type(exc).__name__}: {exc} (rerun with -v for details)", err=True)
        if state.verbose:
            traceback.print_exc()
        code = 1
    signals.running(False)  # done: a signal from here on exits at once, with its line
    sys.stdout.flush()
    sys.stderr.flush()
    signals.finishing()  # flushed: nothing is left but exiting with the command's own status
    sys.exit(code if isinstance(code, int) else 0)

