"""Shared CLI plumbing: global options, the per-invocation State, and the error reporter.

Every command module imports this one and none imports ``main``, so the
command modules and ``main`` form no import cycle (pip-tools keeps its
options the same way, in ``piptools/scripts/options.py``).
"""

from __future__ import annotations

import functools
import traceback
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rrstore.errors import RRStoreError

if TYPE_CHECKING:  # imported when a command first needs it: ``rrstore --version`` loads no store
    from rrstore.system import RollbackRecoverySystem

# Commands that must work while the project's settings are in doubt (a conflicted pyproject.toml):
# restore gets out of such a state, validate reports it (its configuration check names the doubt).
RESCUE_COMMANDS = ("restore", "validate")


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
            from rrstore.config import rescue_settings
            from rrstore.system import RollbackRecoverySystem

            ctx = click.get_current_context(silent=True)
            rescue = ctx is not None and ctx.info_name in RESCUE_COMMANDS
            with rescue_settings(self.store is not None) if rescue else nullcontext():
                self._system = RollbackRecoverySystem(root=self.root, store=self.store)
            current = click.get_current_context(silent=True)
            group = current.find_root().command if current is not None else None
            if isinstance(group, click.Group):  # plan overrides' rrstore commands must parse as this CLI's
                self._system.command_check = functools.partial(click_says, group)
        return self._system

    @property
    def show_progress(self) -> bool:
        return not (self.quiet or self.json)


def click_says(group: click.Group, words: list[str]) -> str | None:
    """What click says of ``rrstore WORDS`` (None: it parses), without running or printing anything."""
    if not words:
        return "no command named"
    if {"-h", "--help", "--version"} & set(words):
        return None  # eager options print: their command parses
    try:
        with click.Context(group, info_name="rrstore", resilient_parsing=False) as ctx:
            name, command, rest = group.resolve_command(ctx, list(words))
            if command is None:
                return f"No such command {words[0]!r}."
            command.make_context(name or words[0], rest, parent=ctx).close()
    except click.ClickException as exc:
        return exc.format_message()
    return None


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value not in (None, False, 0):
        setattr(ctx.find_root().ensure_object(State), param.name or "", value)
    return value


def global_options(func: Any) -> Any:
    opts = [
        click.option("--store", type=click.Path(path_type=Path), expose_value=False, callback=_remember,
                     help="Store directory (default: .checkpoints in the project root; env RRSTORE_DIR)."),
        click.option("-C", "--root", type=click.Path(path_type=Path), expose_value=False, callback=_remember,
                     help="Project root (default: the enclosing git work tree, else the nearest directory "
                          "holding the store or an rrstore.toml, else the current directory)."),
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


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """The library's ConfigWarning as one ``rrstore: warning:`` line on stderr; others as Python shows them."""
    from rrstore.config import ConfigWarning  # loaded already whenever the library warns

    if issubclass(category, ConfigWarning):
        click.echo(f"rrstore: warning: {message}", err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning
warnings.showwarning = _show_warning


def state() -> State:
    return click.get_current_context().find_root().ensure_object(State)


def remote_option(help: str) -> Any:
    """``--remote`` with an optional value: bare ``--remote`` means the configured remote (``RRSTORE_REMOTE``,
    else ``[remote] url``; see ``RollbackRecoverySystem.remote_target``), passed on as ""."""
    return click.option("--remote", is_flag=False, flag_value="", default=None, metavar="[s3://BUCKET/PREFIX]",
                        help=f"{help} Bare --remote: RRSTORE_REMOTE, else url in [remote] of rrstore.toml.")


def chosen_remote(remote: str | None, endpoint_url: str | None) -> str | None:
    """The URL a command's ``--remote`` names (None when not given): bare ``--remote`` resolved by precedence
    (a UsageError when nothing names one). For commands where no ``--remote`` means the local store."""
    if remote is None:
        return None
    return remote or state().system().remote_target(None, endpoint_url).url


def endpoint_needs(endpoint_url: str | None, remote: bool, option: str) -> None:
    """``--endpoint-url`` only means something with a remote: without one it would be silently ignored."""
    if endpoint_url is not None and not remote:
        raise click.UsageError(f"--endpoint-url needs {option}")


def report(exc: RRStoreError, state: State, code: int | None = None) -> int:
    code = exc.exit_code if code is None else code
    kind = type(exc).__name__ if code == exc.exit_code else "UsageError"
    if state.json:
        import json

        details = exc.details() if code == exc.exit_code else {}
        click.echo(json.dumps({"error": kind, "message": str(exc), "exit_code": code, **details}), err=True)
    else:
        click.echo(f"rrstore: error: {exc}", err=True)
    if state.verbose:
        traceback.print_exc()
    return code

