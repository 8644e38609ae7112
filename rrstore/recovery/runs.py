"""Workflow runs (recovery layer): the run a step belongs to, and the run a resume continues.

A *run* is one execution of a lane's workflow, over as many attempts and
runners as it takes: its step records share ``run["id"]`` (``record.run``).
The id comes from CI when the environment names the run, GitHub Actions'
``GITHUB_RUN_ID`` (so re-running a failed job, ``GITHUB_RUN_ATTEMPT`` 2,
continues its first attempt's run) or GitLab's ``CI_PIPELINE_ID``, else it
is rrstore's own random one; a resume keeps the id of the run it continues.
``ci_run`` and ``attempt`` (``GITHUB_RUN_ATTEMPT`` or GitLab's ``CI_JOB_ID``)
say which CI job wrote each record. Run grouping reads these fields, never
checkpoint ids.

Continuing a run from a shared remote on a fresh runner (an empty store):
the run is chosen from the remote's record listing (``--run ID``; else the
CI run the environment names, when the remote has it; else the newest run
of the lane on the current git branch), only the checkpoints the resume
reads are pulled (the failed step's, which holds the state the last good
step left; a skipped step's own only when its declared inputs must be
compared), and what the earlier steps made that the fresh clone lacks is
restored from it (``fill_in``), leaving the user's fix alone.
"""

from __future__ import annotations

import os
import secrets
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..diff import against_checkpoint
from ..errors import RestoreFailed, RunNotFound, StoreNotFound
from ..record import CheckpointRecord
from ..worktree.gitrepo import current_branch, differ_from_commit, tracked_at, tracked_paths
from .run import UNFINISHED

if TYPE_CHECKING:
    from .ports import System
    from .run import RunHooks
    from .workflow import Workflow


SHOWN = 10  # paths named in one message; the rest are counted


def shown(items: list[str]) -> str:
    return ", ".join(items[:SHOWN]) + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def is_run_record(record: CheckpointRecord) -> bool:
    """A step checkpoint that ``run_step`` made: finished, stopped by a signal, or left RUNNING when killed."""
    return record.kind == "step" and ("exit_status" in record.metrics or record.error_message in UNFINISHED)


def ci_run(env: Mapping[str, str]) -> tuple[str, str]:
    """The run id and attempt the CI environment names: ("", "") outside CI."""
    if env.get("GITHUB_RUN_ID"):
        return f"github-{env['GITHUB_RUN_ID']}", env.get("GITHUB_RUN_ATTEMPT", "")
    if env.get("CI_PIPELINE_ID"):
        return f"gitlab-{env['CI_PIPELINE_ID']}", env.get("CI_JOB_ID", "")
    return "", ""


def run_identity(env: Mapping[str, str], continuing: str = "") -> dict[str, str]:
    """The ``run`` of the records a workflow writes: the run it continues, else CI's, else a new one."""
    ci, attempt = ci_run(env)
    return {"id": continuing or ci or f"rrstore-{secrets.token_hex(8)}", "ci_run": ci, "attempt": attempt}


def run_of(record: CheckpointRecord) -> str:
    return record.run.get("id", "")


@dataclass
class ChosenRun:
    """The run a resume continues: its id, its step records (newest first), and why it was chosen."""

    run_id: str
    records: list[CheckpointRecord]
    why: str

    def to_json(self) -> dict[str, object]:
        newest = self.records[0]
        return {"id": self.run_id, "chosen_by": self.why, "git_branch": newest.git_branch,
                "git_commit": newest.git_commit, "checkpoints": [r.checkpoint_id for r in self.records]}


def choose_run(records: list[CheckpointRecord], flow: Workflow, run: str | None, branch: str | None,
               ci: str = "") -> ChosenRun | None:
    """The run to continue among ``records`` (newest first): ``run`` if given; else the CI run ``ci``
    when the records hold it (a re-run); else the newest run of ``flow`` on ``branch``."""
    runs = [r for r in records if r.lane == flow.lane and r.workflow == flow.lane and is_run_record(r) and run_of(r)]
    if run:
        wanted, why = run, "--run"
    elif ci and any(run_of(r) == ci for r in runs):
        wanted, why = ci, f"this CI run ({ci})"
    else:
        newest = next((r for r in runs if r.git_branch == branch), None)
        if newest is None:
            return None
        wanted, why = run_of(newest), f"the newest run on branch {branch}" if branch else "the newest detached run"
    mine = [r for r in runs if run_of(r) == wanted]
    return ChosenRun(wanted, mine, why) if mine else None


def find_run(system: System, flow: Workflow, run: str | None, remote: str | None = None,
             endpoint_url: str | None = None) -> ChosenRun:
    """The run to continue, from the remote's listing (or this store's); RunNotFound names what is there."""
    branch = current_branch(system.root)
    if remote is not None:
        records = system.list_remote(remote, endpoint_url, flow.lane).checkpoints
    else:
        try:
            records = system.checkpoint_manager.list_checkpoints(flow.lane)
        except StoreNotFound:
            records = []
    chosen = choose_run(records, flow, run, branch, ci_run(os.environ)[0])
    if chosen is not None:
        return chosen
    where = remote or str(system.store_path)
    listing = shlex.join(["rrstore", "list", "-v", "--lane", flow.lane, *(["--remote", remote] if remote else []),
                          *(["--endpoint-url", endpoint_url] if remote and endpoint_url else [])])
    what = f"no run {run!r} of the {flow.lane} workflow" if run else \
        f"no run of the {flow.lane} workflow on branch {branch or '(detached HEAD)'}"
    raise RunNotFound(f"{what} on {where}: nothing to resume (run it from the start: rrstore workflow --lane "
                      f"{flow.lane}; see its checkpoints and their runs: {listing})", run or "", where=where)


def pull_needed(system: System, flow: Workflow, base: CheckpointRecord | None,
                done: list[CheckpointRecord | None], remote: str, endpoint_url: str | None,
                hooks: RunHooks) -> list[str]:
    """Pull what the resume reads: ``base`` and each skipped step's success whose inputs it compares."""
    wanted = [base] + [d for d in done if d is not None and flow.steps[d.step_number - 1].inputs]
    ids = list(dict.fromkeys(r.checkpoint_id for r in wanted if r is not None))
    if ids:
        pulled = system.pull(ids, remote, endpoint_url)
        hooks.say(f"rrstore: {pulled.message}")
    return ids


IGNORED_NOTE = ("rrstore: note: what the skipped step(s) wrote where git ignores it (a build/ in .gitignore) is "
                "in no checkpoint and was not restored on this runner; name such a directory in the "
                "scope_include setting (rrstore.toml) to carry it")


def note_ignored_outputs(skipped: int, hooks: RunHooks) -> None:
    """One line when a resume from a remote skips steps: their outputs in ignored paths are not here
    (checkpoints hold what git tracks and untracked files it does not ignore, plus ``scope_include``)."""
    if skipped:
        hooks.say(IGNORED_NOTE)


def fill_in(system: System, base: CheckpointRecord, hooks: RunHooks) -> list[str]:
    """Restore from ``base`` what earlier steps made that this tree lacks (a fresh clone): paths git
    tracks neither now nor at the run's commit that are missing, and tracked ones still as at the
    run's commit but changed by a step. What the user changed since (the fix, a file it deleted
    too) is left alone. The paths restored (undoably)."""
    manager = system.checkpoint_manager
    snap = manager.snapshot(store=False)
    if snap.root_oid == base.state_hash:
        return []
    with manager.explain_damage():
        changes = against_checkpoint(manager.store.objects, base, snap.entries)
    if not changes.removed and not changes.modified:
        return []
    tracked = tracked_paths(system.root) or set()  # all of them: the paths may be too many for one command line
    paths = _made_by_steps(system, base, changes.removed, tracked, hooks)
    stale = [p for p in changes.modified if p in tracked]
    differ = differ_from_commit(system.root, base.git_commit, stale) if base.git_commit and stale else None
    paths += [p for p in stale if p not in differ] if differ is not None else []
    if not paths:
        return []
    restored = system.restore(base.checkpoint_id, paths=[str(system.root / p) for p in paths])
    if restored.failures:
        raise RestoreFailed(restored.failures, restored.undo_checkpoint_id)
    undo = f" (undo with: rrstore restore --checkpoint-id {restored.undo_checkpoint_id})" \
        if restored.undo_checkpoint_id else ""
    hooks.say(f"rrstore: restored {len(paths)} path(s) the earlier steps made from checkpoint "
              f"{base.checkpoint_id}: {shown(paths)}{undo}")
    return paths


def _made_by_steps(system: System, base: CheckpointRecord, removed: list[str], tracked: set[str],
                   hooks: RunHooks) -> list[str]:
    """Those of ``removed`` (in ``base``, missing here) that a step made: git tracks them neither now
    nor at the run's commit. A path tracked then and missing now is one the fix deleted (``git rm``).

    When this clone lacks the run's commit (a shallow clone), a deleted file cannot be told from a
    step's output: none is restored (the safe side), and one line says how to fetch the commit.
    """
    missing = [p for p in removed if p not in tracked]
    if not missing:
        return []
    then = tracked_at(system.root, base.git_commit) if base.git_commit else set()
    if then is None:
        hooks.say(f"rrstore: warning: this clone lacks the run's commit {base.git_commit}: {len(missing)} "
                  f"missing path(s) the earlier steps may have made are not restored (a file the fix "
                  f"deleted looks the same): {shown(missing)}; fetch the commit (git fetch --unshallow, "
                  f"or a deeper clone) and resume again")
        return []
    return [p for p in missing if p not in then]
