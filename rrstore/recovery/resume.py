"""Where a resumed workflow starts (recovery layer): the failed step, an earlier one, or ``--from``.

Each step's record holds the state *before* that step, so the failed step's
record holds the state the last successful step ended with: the *base* of
the resume. The run continues at the failed step on the working tree as it
is (the user's fix), after saying what changed since the base; ``strict``
refuses any change instead, and ``restore`` puts the base back first
(naming the paths it removes; the undo checkpoint keeps them).

Only the checkpoints a run of this workflow made count (``record.workflow``;
a one-off ``rrstore run`` in the lane is not one of its steps; records
older than the field count when number and name match). A step stopped by
a signal before its command finished resumes like a failed one.

A step before the failed one is skipped only while its recorded command is
the declared one and the state of its declared ``inputs`` (see
``rrstore.recovery.inputs``) equals their state in the step's own successful
checkpoint, the tree it succeeded on; inputs that match no file prove
nothing, so that step runs. The first step that must run is where the run
starts, and every later step runs. A step without declared inputs is
skipped as before. The recorded durations of the steps skipped are the
time saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..diff import DiffResult, against_checkpoint, change_lines, left_out_note
from ..errors import RestoreFailed, ResumeRefused, StoreNotFound, UsageError
from ..record import CheckpointRecord
from ..tree import Entry, flatten
from .inputs import input_state, matches_any
from .run import UNFINISHED, RunHooks
from .runs import ChosenRun, fill_in, find_run, is_run_record, note_ignored_outputs, pull_needed, shown

if TYPE_CHECKING:
    from .ports import System
    from .workflow import Workflow, WorkflowStep

@dataclass(frozen=True)
class ResumeOptions:
    """How to resume: ``from_step`` (a number or a step name) overrides the failed step.

    ``restore``, ``from_step`` and ``strict`` each imply ``resume``.
    """

    resume: bool = False
    restore: bool = False
    from_step: int | str | None = None
    strict: bool = False
    # Continue a run from this shared remote (s3://bucket/prefix), pulling what it needs (``runs``).
    remote: str | None = None
    endpoint_url: str | None = None
    run: str | None = None  # the run to continue (``record.run["id"]``); None: chosen as ``runs`` says

    @property
    def resuming(self) -> bool:
        return (self.resume or self.restore or self.strict or self.from_step is not None
                or self.remote is not None or self.run is not None)


@dataclass
class SkippedStep:
    number: int
    name: str
    checkpoint_id: str | None
    wall_time_s: float | None  # None: no recorded run of it
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"step_number": self.number, "step_name": self.name, "checkpoint_id": self.checkpoint_id,
                "wall_time_s": self.wall_time_s, "reason": self.reason}


@dataclass
class ResumePoint:
    """Where to start: ``base`` is the state to start from (None: the tree as it is, from scratch)."""

    start_step: int
    base: CheckpointRecord | None
    skipped: list[SkippedStep]
    done: list[CheckpointRecord | None] = field(default_factory=list)  # each skipped step's success
    reasons: dict[int, str] = field(default_factory=dict)  # why each step from start_step runs
    complete: bool = False


@dataclass
class ResumeResult:
    """What resuming decided and did, for the workflow's report."""

    point: ResumePoint
    changes: DiffResult | None = None  # base -> working tree, before any restore
    restore_undo_id: str | None = None
    restore_removed: list[str] = field(default_factory=list)
    run: ChosenRun | None = None  # the run continued, when chosen by run (``--remote``, ``--run``)
    pulled: list[str] = field(default_factory=list)  # checkpoints pulled from the remote for it
    filled: list[str] = field(default_factory=list)  # paths the earlier steps made, restored from the base


def ran_in(record: CheckpointRecord, flow: Workflow) -> bool:
    """Whether a run of ``flow`` made ``record``: its workflow is the lane's; a record older than the
    field (no workflow, no command) may be one, and is matched by number and name as before."""
    if record.workflow is not None:
        return record.workflow == flow.lane
    return record.command is None


def _runs(records: list[CheckpointRecord], flow: Workflow) -> list[CheckpointRecord]:
    return [r for r in records if r.lane == flow.lane and is_run_record(r) and ran_in(r, flow)]


def resolve_step(flow: Workflow, value: int | str) -> int:
    """``--from``'s step number, from a number (1-based) or a step name; a UsageError lists the steps."""
    count = len(flow.steps)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= count:
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() and 1 <= int(text) <= count:
            return int(text)
        names = [s.name for s in flow.steps]
        if value in names:
            return names.index(value) + 1
    steps = ", ".join(f"{n} {s.name!r}" for n, s in enumerate(flow.steps, 1))
    raise UsageError(f"--from {value!r}: the {flow.lane} workflow has no such step; "
                     f"give a number from 1 to {count} or a name: {steps}")


def _wall(record: CheckpointRecord | None) -> float | None:
    return float(record.metrics.get("step_wall_time_s", 0.0)) if record else None


def _newest(runs: list[CheckpointRecord], number: int, name: str, *, success: bool | None = None,
            before: tuple[int, float, str] | None = None) -> CheckpointRecord | None:
    return next((r for r in runs if r.step_number == number and r.step_name == name
                 and (success is None or r.success is success) and (before is None or r.order <= before)), None)


def find_resume_point(records: list[CheckpointRecord], flow: Workflow) -> ResumePoint:
    """Where the last run of ``flow`` stopped, from the lane's records (newest first)."""
    runs = _runs(records, flow)
    if not runs:
        return ResumePoint(1, None, [])
    last = runs[0]
    number = last.step_number
    if not 1 <= number <= len(flow.steps) or flow.steps[number - 1].name != last.step_name:
        raise ResumeRefused(f"cannot resume the {flow.lane} lane: its last run stopped at step {number} "
                            f"({last.step_name}), which the workflow in {flow.source} no longer has there; "
                            f"run it from the start: rrstore workflow --lane {flow.lane}", last.checkpoint_id)
    if last.success:
        if number == len(flow.steps):
            return ResumePoint(number + 1, None, [], complete=True)
        raise ResumeRefused(f"cannot resume the {flow.lane} lane: its last run stopped after step {number} "
                            f"({last.step_name}) without recording the state it ended with; "
                            f"run it from the start: rrstore workflow --lane {flow.lane}", last.checkpoint_id)
    how = "did not finish in the last run" if last.error_message in UNFINISHED else "failed in the last run"
    reasons = {number: how} | {n: "not reached in the last run" for n in range(number + 1, len(flow.steps) + 1)}
    if number == 1:  # nothing succeeded: start over, from whatever the tree is now
        return ResumePoint(1, None, [], reasons=reasons)
    point = ResumePoint(number, last, [], reasons=reasons)
    for earlier in range(1, number):
        name = flow.steps[earlier - 1].name
        done = _newest(runs, earlier, name, success=True, before=last.order)
        point.skipped.append(SkippedStep(earlier, name, done.checkpoint_id if done else None, _wall(done)))
        point.done.append(done)
    return point


def from_point(records: list[CheckpointRecord], flow: Workflow, number: int) -> ResumePoint:
    """Start at step ``number``; its newest recorded run, if any, holds the state to start from."""
    runs = _runs(records, flow)
    base = _newest(runs, number, flow.steps[number - 1].name)
    reasons = {number: "--from"} | {n: "after the --from step" for n in range(number + 1, len(flow.steps) + 1)}
    point = ResumePoint(number, base, [], reasons=reasons)
    for earlier in range(1, number):
        name = flow.steps[earlier - 1].name
        done = _newest(runs, earlier, name, success=True)
        point.skipped.append(SkippedStep(earlier, name, done.checkpoint_id if done else None, _wall(done),
                                         "before --from"))
        point.done.append(done)
    return point


def _base_label(flow: Workflow, base: CheckpointRecord) -> str:
    number = base.step_number
    if number <= 1:
        return f"the start of the last run (checkpoint {base.checkpoint_id})"
    return f"step {number - 1} ({flow.steps[number - 2].name}) ended (checkpoint {base.checkpoint_id})"


def _restore_base(system: System, base: CheckpointRecord, hooks: RunHooks,
                  done: ResumeResult) -> None:
    """Put the base state back, first naming what the restore removes (the undo checkpoint keeps it)."""
    planned = system.restore(base.checkpoint_id, dry_run=True)
    if planned.plan.remove:
        hooks.say(f"rrstore: --restore will remove {len(planned.plan.remove)} path(s) that checkpoint "
                  f"{base.checkpoint_id} does not hold (untracked or added since): {shown(planned.plan.remove)}; "
                  "the undo checkpoint keeps them")
    restored = system.restore(base.checkpoint_id)
    if restored.failures:
        raise RestoreFailed(restored.failures, restored.undo_checkpoint_id)
    done.restore_undo_id, done.restore_removed = restored.undo_checkpoint_id, list(restored.plan.remove)
    if restored.undo_checkpoint_id:
        hooks.say(f"rrstore: restored {base.checkpoint_id}; undo with: "
                  f"rrstore restore --checkpoint-id {restored.undo_checkpoint_id}")


def _settle_tree(system: System, flow: Workflow, options: ResumeOptions, hooks: RunHooks,
                 done: ResumeResult) -> dict[str, Entry]:
    """Say what changed since the base; refuse (``strict``) or restore it; the tree's entries after."""
    base = done.point.base
    assert base is not None
    manager = system.checkpoint_manager
    snap = manager.snapshot(store=False)
    if snap.root_oid == base.state_hash:
        hooks.say(f"rrstore: no change since {_base_label(flow, base)}")
        return snap.entries
    with manager.explain_damage():
        done.changes = against_checkpoint(manager.store.objects, base, snap.entries)
    if not done.changes.changed:  # only what the base left out differs: restore leaves it alone too
        hooks.say(f"rrstore: no change since {_base_label(flow, base)}{left_out_note(done.changes)}")
        done.changes = None
        return snap.entries
    lines = change_lines(done.changes, order="MAD")
    if options.strict and not options.restore:
        number = done.point.start_step
        ended = f"step {number - 1} ({flow.steps[number - 2].name}) ended with" if number > 1 else \
            "the last run started from"
        raise ResumeRefused(
            f"cannot resume the {flow.lane} lane at step {number}: the working tree differs from the state "
            f"{ended}, checkpoint {base.checkpoint_id}: {shown(lines)}; add --restore to restore that "
            "checkpoint first, or drop --strict to resume on the tree as it is", base.checkpoint_id)
    hooks.say(f"rrstore: changed since {_base_label(flow, base)}: {shown(lines)}")
    if not options.restore:
        return snap.entries
    _restore_base(system, base, hooks, done)
    return manager.snapshot(store=False).entries


def _why_run(system: System, step: WorkflowStep, done: CheckpointRecord | None,
             current: dict[str, Entry]) -> str | None:
    """Why a step before the failed one must run again, or None to skip it (its ``reason`` then)."""
    if done is not None and done.command is not None and done.command != step.command:
        return "command changed: re-run"
    if not step.inputs:
        return None
    if done is None:
        return "inputs declared, but no successful run of it is recorded: re-run"
    if not matches_any(current, step.inputs):
        return "inputs match no file: re-run"
    with system.checkpoint_manager.explain_damage():
        then = input_state(flatten(system.checkpoint_manager.store.objects, done.state_hash), step.inputs)
    return None if then == input_state(current, step.inputs) else "inputs changed: re-run"


def _check_skipped(system: System, flow: Workflow, point: ResumePoint,
                   current: dict[str, Entry]) -> None:
    """Skip each earlier step only while its command and inputs are as it found them; else start there."""
    for index, (skip, done) in enumerate(zip(point.skipped, point.done, strict=True)):
        step = flow.steps[skip.number - 1]
        why = _why_run(system, step, done, current)
        if why is None:
            skip.reason = "inputs unchanged" if step.inputs else "no inputs declared"
            continue
        start = skip.number
        point.reasons.update({start: why} | {n: f"after step {start} re-ran" for n in range(start + 1,
                                                                                           point.start_step)})
        point.start_step, point.skipped, point.done = start, point.skipped[:index], point.done[:index]
        return


def _records(system: System, flow: Workflow, options: ResumeOptions) -> tuple[list[CheckpointRecord],
                                                                                ChosenRun | None]:
    """The records the resume point is found in: the chosen run's (``--remote``, ``--run``), else the lane's."""
    if options.remote is not None or options.run is not None:
        chosen = find_run(system, flow, options.run, options.remote, options.endpoint_url)
        return chosen.records, chosen
    try:
        return system.checkpoint_manager.list_checkpoints(flow.lane), None
    except StoreNotFound:  # nothing ran yet: start from the beginning
        return [], None


def plan_resume(system: System, flow: Workflow, options: ResumeOptions,
                hooks: RunHooks) -> ResumeResult:
    """Decide where the run starts and which steps it skips; pull and restore first when asked."""
    records, chosen = _records(system, flow, options)
    if options.from_step is not None:
        point = from_point(records, flow, resolve_step(flow, options.from_step))
    else:
        point = find_resume_point(records, flow)
    done = ResumeResult(point, run=chosen)
    if point.complete:
        return done
    if options.remote is not None:
        done.pulled = pull_needed(system, flow, point.base, point.done, options.remote, options.endpoint_url, hooks)
        if point.base is not None and not options.restore:
            done.filled = fill_in(system, point.base, hooks)
    if point.base is None:
        if options.restore:
            hooks.say(f"rrstore: no earlier run of the {flow.lane} lane to restore: running from step "
                      f"{point.start_step}")
        return done
    current = _settle_tree(system, flow, options, hooks, done)
    if options.from_step is None:
        _check_skipped(system, flow, point, current)
    if options.remote is not None:
        note_ignored_outputs(len(point.skipped), hooks)
    return done
