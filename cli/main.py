"""``rrstore`` command line: parse, call one ``RollbackRecoverySystem`` method, print.

No logic lives here that the Python API lacks. Errors become one line on
stderr and the exit code their class names (see ``rrstore --help``). This
module builds the group from the command modules; none of them imports it.
"""

from __future__ import annotations

from . import signals

signals.install()  # before click and the library import: Ctrl-C from here on ends in one line

import importlib  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

import click  # noqa: E402

from rrstore import __version__  # noqa: E402
from rrstore.errors import RRStoreError, Signalled, exit_code_table, from_oserror  # noqa: E402

from . import completion  # noqa: E402
from .context import State, global_options, report  # noqa: E402

# Command name -> (module of this package, attribute). A command's module, and the library parts it
# uses, are imported only when that command runs (or help lists it): ``rrstore --version`` imports
# neither the store nor the verbs (python -X importtime shows what each command loads).
COMMANDS: dict[str, tuple[str, str]] = {
    "checkpoint": ("checkpoints", "checkpoint"), "list": ("checkpoints", "list_"),
    "show": ("checkpoints", "show"), "diff": ("checkpoints", "diff"), "status": ("checkpoints", "status"),
    "restore": ("checkpoints", "restore"), "gc": ("lifecycle", "gc_command"), "pin": ("lifecycle", "pin"),
    "unpin": ("lifecycle", "unpin"), "delete": ("lifecycle", "delete_command"),
    "forget": ("lifecycle", "delete_command"),
    "check": ("maintenance", "check_command"),
    "export": ("archive", "export_command"), "import": ("archive", "import_command"),
    "verify": ("archive", "verify_command"), "push": ("remote", "push"), "pull": ("remote", "pull"),
    "plan": ("recovery", "plan"), "classify": ("recovery", "classify"), "validate": ("recovery", "validate"),
    "cleanup": ("recovery", "cleanup"), "run": ("recovery", "run_command"),
    "workflow": ("recovery", "workflow_command"), "report": ("report", "report_command"),
    "completion": ("completion", "completion_command"), "help": ("reference", "help_command"),
    "pre-commit": ("hooks", "pre_commit"), "stats": ("stats", "stats_command"),
    "ls": ("browse", "ls_command"), "cat": ("browse", "cat_command"), "dump": ("browse", "dump_command"),
    "find": ("browse", "find_command"), "log": ("browse", "log_command"),
}
# A second name of a command (in COMMANDS too, for the same object) -> its first: help says "Alias of ...".
ALIASES: dict[str, str] = {"forget": "delete"}


class LazyGroup(click.Group):
    """A group whose commands are imported by name when first resolved (click's documented pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attr = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(f"{__package__}.{module}"), attr)
            self.add_command(command, cmd_name)
        command = self.commands.get(cmd_name)
        return completion.attach(examples_last(command)) if command is not None else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's command list, with an alias shown as one ("forget  Alias of delete.")."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        rows = []
        for name in names:
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, f"Alias of {ALIASES[name]}." if name in ALIASES
                             else command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


_EXAMPLES = re.compile(r"\n[ \t]*\x08\n[ \t]*Examples:\n")


def examples_last(command: click.Command) -> click.Command:
    """Move the ``Examples:`` block that ends a command's docstring into its epilog, so ``--help`` ends
    with the examples (click prints the options between help and epilog); idempotent."""
    found = list(_EXAMPLES.finditer(command.help or ""))
    if found and command.epilog is None and command.help is not None:
        at = found[-1].start()
        command.help, command.epilog = command.help[:at].rstrip() + "\n", command.help[at:].lstrip("\n")
    return command


def _exit_help() -> str:
    rows = "\n".join(f"  {code:>3}  {text}" for code, text in exit_code_table())
    return ("\b\nExit codes:\n" + rows + "\n  (status/diff --exit-code: 1 when the tree differs)\n\n"
            "\b\nJSON (--json) shapes: rrstore help json [COMMAND]. The whole reference: rrstore help.")


@click.group(cls=LazyGroup, epilog=_exit_help(), context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rrstore")
@global_options
def cli() -> None:
    """Content-addressed checkpoints of a working tree: checkpoint, restore, recover."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the CLI and exits with the documented code."""
    state = State()
    interrupted = False
    signals.install()
    signals.running(True)
    try:
        code = cli.main(args=argv, prog_name="rrstore", standalone_mode=False, obj=state)
    except Signalled as exc:
        click.echo(signals.LINES.get(exc.signum, "rrstore: interrupted"), err=True)
        code = exc.exit_code
        interrupted = True
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
    if interrupted:  # workers may still be inside blake3/zstd: the interpreter's finalisation would end
        os._exit(code)  # them with pthread_exit, which aborts (SIGABRT, "exception not rethrown")
    sys.exit(code if isinstance(code, int) else 0)

