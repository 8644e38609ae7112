"""``rrstore pre-commit``: the checkpoint a git commit takes first (the pre-commit framework's hook runs it).

The pre-commit framework stashes what is not staged before it runs a hook
and puts it back after, so the tree checkpointed here is the one the commit
records (plus untracked files, which it leaves alone). The hook has a
deadline: a store that is busy (a gc holds it) or slow never holds up the
commit, it goes on without the checkpoint and says so. Any other failure
stops the commit with rrstore's own line and exit code; ``SKIP=rrstore-checkpoint
git commit`` commits anyway.
"""

from __future__ import annotations

import signal

import click

from rrstore.errors import Signalled, StoreLocked
from rrstore.lanes import LANES

from . import signals
from .context import global_options, state
from .output import emit_json, info


@click.command(name="pre-commit")
@click.option("--lane", type=click.Choice(LANES), default="standard", show_default=True, help="Workflow lane.")
@click.option("--step-number", type=click.IntRange(min=0), default=0, show_default=True,
              help="Step number in the record.")
@click.option("--step-name", default="pre-commit", show_default=True, help="Step name in the record.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              metavar="SECONDS", help="Give up after this long (exit 0, no checkpoint): never hold up a commit.")
@global_options
def pre_commit(lane: str, step_number: int, step_name: str, time_limit: float) -> int:
    """Checkpoint the tree a commit records (hook rrstore-checkpoint of the pre-commit framework).

    Prints the id. A store busy with another rrstore (a gc) or a checkpoint
    that takes longer than --time-limit ends it with a warning and exit 0:
    the commit goes on without a checkpoint. Any other failure exits with
    its code and so stops the commit (SKIP=rrstore-checkpoint git commit
    commits anyway).

    \b
    Examples:
      rrstore pre-commit
      rrstore pre-commit --lane docs --time-limit 10
    """
    st = state()
    system = st.system()
    try:
        with signals.time_limit(time_limit):
            result = system.checkpoint(lane, step_number, step_name)
    except StoreLocked as exc:
        info(f"rrstore: warning: no checkpoint before this commit: {exc}", st.quiet)
        return 0
    except Signalled as exc:
        if exc.signum != signal.SIGALRM:
            raise
        info(f"rrstore: warning: no checkpoint before this commit: not done after {time_limit:g} s "
             "(raise --time-limit in the hook's args; what was stored so far is reused next time)", st.quiet)
        return 0
    if st.json:
        emit_json(result.record.to_json())
    else:
        click.echo(result.checkpoint_id)
        info(result.message, st.quiet)
    return 0
