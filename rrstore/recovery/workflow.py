"""Workflows: a lane's ordered steps from configuration, run through ``run_step``, and resumed.

A workflow is declared in ``rrstore.toml`` as ``[workflow.LANE]`` (or in
``pyproject.toml`` as ``[tool.rrstore.workflow.LANE]``) with ``steps``,
each ``{ name, command }`` run by the shell, plus optional ``timeout``,
``retries`` and ``backoff`` for the lane or per step.

Resuming reads the checkpoints the last run left: each step's record holds
the state *before* that step, so the failed step's record holds the state
the last successful step ended with. The run continues there only if the
working tree still has that state (or ``restore`` puts it back), since a
later step assumes what the earlier ones left. The recorded durations of
the steps skipped are the time saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkpoint import LANES, CheckpointRecord, check_lane
from ..config import load_section
from ..errors import RestoreFailed, ResumeRefused, StoreNotFound, UsageError
from .run import RUNNING, RetryPolicy, RunHooks, StepResult, StepSpec, run_step
from .settings import check_retries, check_seconds

if TYPE_CHECKING:
    from ..system import RollbackRecoverySystem

_STEP_KEYS = {"name", "command", "timeout", "retries", "backoff"}
_LANE_KEYS = {"steps", "timeout", "retries", "backoff"}


@dataclass(frozen=True)
class WorkflowStep:
    name: str
    command: str
    policy: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True)
class Workflow:
    lane: str
    steps: tuple[WorkflowStep, ...]
    source: str = ""


def _policy(table: dict[str, Any], where: str, base: RetryPolicy | None = None) -> RetryPolicy:
    base = base or RetryPolicy()
    timeout = table.get("timeout", base.timeout)
    retries = table.get("retries", base.retries)
    backoff = table.get("backoff", base.backoff)
    return RetryPolicy(None if timeout is None else check_seconds(timeout, "timeout", where, positive=True),
                       None if retries is None else check_retries(retries, where),
                       None if backoff is None else check_seconds(backoff, "backoff", where))


def _parse(lane: str, table: object, where: str) -> Workflow:
    if lane not in LANES:
        raise UsageError(f"{where}: unknown lane {lane!r} (choose one of {', '.join(LANES)})")
    if not isinstance(table, dict):
        raise UsageError(f"{where}.{lane} must be a table with 'steps'")
    unknown = set(table) - _LANE_KEYS
    if unknown:
        raise UsageError(f"{where}.{lane}: unknown key(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(_LANE_KEYS))})")
    lane_policy = _policy(table, f"{where}.{lane}")
    raw = table.get("steps")
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"{where}.{lane}: 'steps' must be a non-empty array of {{ name, command }} tables")
    steps = []
    for number, item in enumerate(raw, 1):
        at = f"{where}.{lane} step {number}"
        if not isinstance(item, dict):
            raise UsageError(f"{at}: must be a table {{ name = ..., command = ... }}")
        unknown = set(item) - _STEP_KEYS
        if unknown:
            known = ", ".join(sorted(_STEP_KEYS))
            raise UsageError(f"{at}: unknown key(s) {', '.join(sorted(unknown))} (known: {known})")
        for key in ("name", "command"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise UsageError(f"{at}: '{key}' must be a non-empty string")
        steps.append(WorkflowStep(item["name"], item["command"], _policy(item, at, lane_policy)))
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise UsageError(f"{where}.{lane}: step names must differ (resume matches steps by number and name)")
    return Workflow(lane, tuple(steps), where)


def load_workflows(root: Path) -> dict[str, Workflow]:
    """Every workflow the project declares, by lane (checked in full)."""
    section, where = load_section(root, "workflow")
    return {lane: _parse(lane, table, where) for lane, table in section.items()}


def load_workflow(root: Path, lane: str) -> Workflow:
    check_lane(lane)
    flows = load_workflows(root)
    if lane not in flows:
        _, where = load_section(root, "workflow")
        raise UsageError(f"no workflow for the {lane} lane in {where}: declare [workflow.{lane}] with "
                         "steps = [{ name = \"...\", command = \"...\" }, ...]")
    return flows[lane]


@dataclass
class SkippedStep:
    number: int
    name: str
    checkpoint_id: str | None
    wall_time_s: float | None  # None: no recorded run of it

    def to_json(self) -> dict[str, Any]:
        return {"step_number": self.number, "step_name": self.name, "checkpoint_id": self.checkpoint_id,
                "wall_time_s": self.wall_time_s}


@dataclass
class WorkflowResult:
    lane: str
    total_steps: int
    start_step: int = 1
    steps: list[StepResult] = field(default_factory=list)
    skipped: list[SkippedStep] = field(default_factory=list)
    resumed_from: str | None = None  # the checkpoint whose state the resumed run started from
    restore_undo_id: str | None = None
    nothing_to_resume: bool = False

    @property
    def exit_status(self) -> int:
        failed = [s for s in self.steps if not s.success]
        return failed[0].exit_status if failed else 0

    @property
    def success(self) -> bool:
        return self.exit_status == 0

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if not s.success), None)

    @property
    def time_saved_s(self) -> float:
        return round(sum(s.wall_time_s or 0.0 for s in self.skipped), 6)

    @property
    def full_run_s(self) -> float:
        """A full run's estimate: the skipped steps' recorded times plus this run's."""
        return round(self.time_saved_s + sum(s.wall_time_s for s in self.steps), 6)

    @property
    def message(self) -> str:
        return "\n".join(self.report())

    def report(self) -> list[str]:
        """The summary a person reads: what ran, what failed, and the time saved by resuming."""
        if self.nothing_to_resume:
            return [f"nothing to resume: the last run of the {self.lane} lane completed all "
                    f"{self.total_steps} steps"]
        lines = []
        for s in self.steps:
            mark = "✓" if s.success else "✗"
            tries = f", {len(s.attempts)} attempts" if len(s.attempts) > 1 else ""
            lines.append(f"{mark} step {s.record.step_number}/{self.total_steps} {s.record.step_name}: "
                         f"{s.wall_time_s:.2f}s{tries}")
        if self.failed_step is not None:
            f = self.failed_step
            lines.append(f"workflow {self.lane} stopped at step {f.record.step_number}: {f.record.error_message}")
            lines.append(f"resume with: rrstore workflow --lane {self.lane} --resume")
        else:
            lines.append(f"workflow {self.lane} completed ({self.total_steps} steps)")
        if self.restore_undo_id is not None:
            lines.append(f"restored {self.resumed_from} before resuming; undo with: "
                         f"rrstore restore --checkpoint-id {self.restore_undo_id}")
        if self.resumed_from is not None:
            names = ", ".join(f"{s.number} {s.name}" + (f" {s.wall_time_s:.2f}s" if s.wall_time_s is not None
                                                        else " (no recorded time)") for s in self.skipped)
            share = f" ({100 * self.time_saved_s / self.full_run_s:.0f}%)" if self.full_run_s > 0 else ""
            lines.append(f"resumed at step {self.start_step} of {self.total_steps} from {self.resumed_from}; "
                         f"skipped {len(self.skipped)} step(s): {names or 'none'}")
            lines.append(f"time saved: {self.time_saved_s:.2f}s of an estimated full run of "
                         f"{self.full_run_s:.2f}s{share}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {"lane": self.lane, "success": self.success, "exit_status": self.exit_status,
                "total_steps": self.total_steps, "start_step": self.start_step,
                "resumed_from": self.resumed_from, "restore_undo_checkpoint_id": self.restore_undo_id,
                "nothing_to_resume": self.nothing_to_resume,
                "skipped": [s.to_json() for s in self.skipped], "time_saved_s": self.time_saved_s,
                "full_run_s": self.full_run_s, "steps": [s.to_json() for s in self.steps]}


def is_run_record(record: CheckpointRecord) -> bool:
    """A step checkpoint that ``run_step`` made (finished, or left as RUNNING when killed)."""
    return record.kind == "step" and ("exit_status" in record.metrics or record.error_message == RUNNING)


@dataclass
class ResumePoint:
    start_step: int
    record: CheckpointRecord | None  # the state to start from (None: from scratch)
    skipped: list[SkippedStep]
    complete: bool = False


def find_resume_point(records: list[CheckpointRecord], flow: Workflow) -> ResumePoint:
    """Where the last run of ``flow`` stopped, from the lane's records (newest first)."""
    runs = [r for r in records if r.lane == flow.lane and is_run_record(r)]
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
    if number == 1:  # nothing succeeded: start over, from whatever the tree is now
        return ResumePoint(1, None, [])
    skipped = []
    for earlier in range(1, number):
        name = flow.steps[earlier - 1].name
        done = next((r for r in runs if r.step_number == earlier and r.step_name == name and r.success
                     and r.order <= last.order), None)
        wall = float(done.metrics.get("step_wall_time_s", 0.0)) if done else None
        skipped.append(SkippedStep(earlier, name, done.checkpoint_id if done else None, wall))
    return ResumePoint(number, last, skipped)


def _check_tree(system: RollbackRecoverySystem, point: ResumePoint, flow: Workflow,
                restore: bool, result: WorkflowResult) -> None:
    """The tree must be the state the last good step left; with ``restore`` put it back first."""
    record = point.record
    assert record is not None
    if system.checkpoint_manager.snapshot(store=False).root_oid == record.state_hash:
        return
    before = point.start_step - 1
    if not restore:
        changes = system.diff(record.checkpoint_id)
        paths = [f"M {p}" for p in changes.modified] + [f"A {p}" for p in changes.added] + \
                [f"D {p}" for p in changes.removed]
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        raise ResumeRefused(
            f"cannot resume the {flow.lane} lane at step {point.start_step}: the working tree differs from the "
            f"state step {before} ({flow.steps[before - 1].name}) ended with, checkpoint {record.checkpoint_id}: "
            f"{shown}; add --restore to restore that checkpoint first", record.checkpoint_id)
    restored = system.restore(record.checkpoint_id)
    if restored.failures:
        raise RestoreFailed(restored.failures, restored.undo_checkpoint_id)
    result.restore_undo_id = restored.undo_checkpoint_id


def run_workflow(system: RollbackRecoverySystem, lane: str, *, resume: bool = False, restore: bool = False,
                 hooks: RunHooks | None = None) -> WorkflowResult:
    """Run the lane's steps in order, stopping at the first failure; ``resume`` continues the last run."""
    flow = load_workflow(system.root, lane)
    hooks = hooks or RunHooks()
    result = WorkflowResult(lane, len(flow.steps))
    if resume:
        try:
            records = system.checkpoint_manager.list_checkpoints(lane)
        except StoreNotFound:  # nothing ran yet: start from the beginning
            records = []
        point = find_resume_point(records, flow)
        if point.complete:
            result.nothing_to_resume = True
            result.start_step = point.start_step
            return result
        if point.record is not None:
            _check_tree(system, point, flow, restore, result)
            result.resumed_from = point.record.checkpoint_id
        elif restore:
            hooks.say(f"rrstore: no earlier run of the {lane} lane to restore: running from step 1")
        result.start_step, result.skipped = point.start_step, point.skipped
    for number in range(result.start_step, len(flow.steps) + 1):
        step = flow.steps[number - 1]
        hooks.say(f"rrstore: == step {number}/{len(flow.steps)} ({lane}): {step.name}: {step.command}")
        outcome = run_step(system, StepSpec(lane, number, step.name, step.command), step.policy, hooks)
        result.steps.append(outcome)
        if not outcome.success:
            break
    return result
