"""Shell completion (CLI layer): checkpoint ids for every ``ID`` parameter, and ``rrstore completion SHELL``.

click's own machinery does the work (``_RRSTORE_COMPLETE=bash_complete`` and
friends, ``click.shell_completion``); this module only supplies the values.
``main.LazyGroup.get_command`` hands every command it resolves to
``attach``, so a parameter whose metavar is ``ID`` (``[ID]``, ``ID...``)
completes checkpoint ids whichever module defines it. Lanes need nothing:
``--lane`` is a ``click.Choice(LANES)``, which completes itself.

Completion runs on every Tab: it lists ref names (one directory listing),
never reads a ref, a record or an object, and says nothing when there is no
store or anything goes wrong (a traceback in the middle of a command line
helps nobody).
"""

from __future__ import annotations

import re
import warnings

import click
from click.shell_completion import CompletionItem, FishComplete, add_completion_class

from .context import State, global_options

SHELLS = ("bash", "zsh", "fish")
ID_METAVAR = re.compile(r"^\[?ID\]?(\.\.\.)?\]?$")  # ID, [ID], ID..., [ID...]


def store_ids(ctx: click.Context, pinned: bool = False) -> list[str] | None:
    """The checkpoint ids (``pinned``: the pinned ones) of the store the command line names (``--store``,
    ``-C``, ``RRSTORE_DIR``, the project's), sorted; None without a store. A shared store's other
    projects' ids are offered too."""
    from rrstore.backends.local import LocalBackend
    from rrstore.store.refs import Pins, Refs
    from rrstore.system import RollbackRecoverySystem

    st = ctx.find_root().ensure_object(State)
    with warnings.catch_warnings():  # a settings warning would land in the middle of the command line
        warnings.simplefilter("ignore")
        store = RollbackRecoverySystem(root=st.root, store=st.store).store_path
    if not (store / "config.json").is_file():
        return None
    return sorted((Pins if pinned else Refs)(LocalBackend(store)))


def _matching(ctx: click.Context, incomplete: str, pinned: bool = False) -> list[CompletionItem]:
    try:
        ids = store_ids(ctx, pinned)
    except Exception:  # completion offers nothing rather than a traceback at the prompt
        ids = None
    if ids is None:
        return []
    return [CompletionItem(i) for i in ([] if pinned else ["latest"]) + ids if i.startswith(incomplete)]


def complete_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``latest`` and the store's ids that start with ``incomplete``; nothing without a store."""
    return _matching(ctx, incomplete)


def complete_pinned(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """For ``unpin``: the pinned ids that start with ``incomplete``."""
    return _matching(ctx, incomplete, pinned=True)


def complete_latest(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """For ids of a remote (``pull``): only ``latest``; listing a remote on each Tab would cost requests."""
    return [CompletionItem("latest")] if "latest".startswith(incomplete) else []


class CheckpointId(click.types.StringParamType):
    """A string parameter naming a checkpoint: converts as a string, completes as an id."""

    name = "checkpoint id"

    def shell_complete(self, ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[CompletionItem]:
        return complete_ids(ctx, param, incomplete)


CHECKPOINT_ID = CheckpointId()


def names_checkpoints(param: click.Parameter) -> bool:
    """Whether ``param`` takes checkpoint ids: its metavar is ``ID`` (the convention every command follows)."""
    return bool(param.metavar and ID_METAVAR.match(param.metavar))


def attach(command: click.Command) -> click.Command:
    """Give every ``ID`` parameter of ``command`` (and of its subcommands) id completion; idempotent.
    A parameter with its own ``shell_complete`` or a type other than a string keeps its own."""
    for param in command.params:
        if names_checkpoints(param) and type(param.type) is click.types.StringParamType:
            param.type = CHECKPOINT_ID
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            attach(sub)
    return command


# click 8.4.0's fish script splits each line of the response on a newline (``string split \n`` in a
# plain Python string), while its fish_complete prints type, value and help on three lines: fish
# completes nothing and prints errors. This script reads the response three lines at a time; it
# replaces click's only while click's own is the broken one.
_FISH_FIXED = """\
function %(complete_func)s;
    set -l response (env %(complete_var)s=fish_complete COMP_WORDS=(commandline -cp) \
COMP_CWORD=(commandline -t) %(prog_name)s);

    for i in (seq 1 3 (count $response));
        set -l kind $response[$i];
        set -l value $response[(math $i + 1)];
        set -l help $response[(math $i + 2)];
        if test "$kind" = "dir";
            __fish_complete_directories $value;
        else if test "$kind" = "file";
            __fish_complete_path $value;
        else if test "$kind" = "plain";
            if test "$help" != "_";
                printf '%%s\\t%%s\\n' $value $help;
            else;
                printf '%%s\\n' $value;
            end;
        end;
    end;
end;

complete --no-files --command %(prog_name)s --arguments \
"(%(complete_func)s)";
"""


class _FishComplete(FishComplete):
    source_template = _FISH_FIXED


if "(string split \n $completion)" in FishComplete.source_template:
    add_completion_class(_FishComplete, "fish")


@click.command(name="completion")
@click.argument("shell", type=click.Choice(SHELLS))
@global_options
def completion_command(shell: str) -> int:
    """Print the completion script for SHELL: commands, options, lanes and checkpoint ids.

    \b
    Install (once, in the shell's startup file):
      bash: eval "$(rrstore completion bash)"     in ~/.bashrc
      zsh:  eval "$(rrstore completion zsh)"      in ~/.zshrc
      fish: rrstore completion fish > ~/.config/fish/completions/rrstore.fish

    \b
    Examples:
      rrstore completion bash >> ~/.bashrc
      rrstore completion fish > ~/.config/fish/completions/rrstore.fish
    """
    from click.shell_completion import get_completion_class

    ctx = click.get_current_context()
    cls = get_completion_class(shell)
    assert cls is not None  # every name in SHELLS is one of click's
    click.echo(cls(ctx.find_root().command, {}, "rrstore", "_RRSTORE_COMPLETE").source())
    return 0
