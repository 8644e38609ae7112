"""Workflows: a lane's ordered steps from configuration, run through ``run_step``, and resumed.

A workflow is declared in ``rrstore.toml`` as ``[workflow.LANE]`` (or in
``pyproject.toml`` as ``[tool.rrstore.workflow.LANE]``) with ``steps``,
each ``{ name, command }`` run by the shell, plus optional ``timeout``,
``retries`` and ``backoff`` for the lane or per step, and ``inputs`` per
step (paths or globs the step reads; see ``rrstore.recovery.inputs``).

Where a resumed run starts, and which steps it skips, is decided in
``resume``: at the failed (or interrupted) step on the tree as it is, or
earlier when a skipped step's command or declared inputs changed since it
succeeded. Each step's record names the workflow that ran it, so resume
sees only this workflow's steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import load_section
from ..diff import DiffResult, change_lines
from ..errors import UsageError
from ..lanes import check_lane
from .autopush import PushOutcome, push_policy
from .inputs import check_inputs, unmatched
from .resume import ResumeOptions, SkippedStep, plan_resume, shown
from .run import RetryPolicy, RunHooks, StepResult, StepSpec, run_step
from .runs import ChosenRun, run_identity, run_of
from .settings import check_retries, check_seconds

if TYPE_CHECKING:
    from .ports import System

_STEP_KEYS = {"name", "command", "timeout", "retries", "backoff", "inputs"}
_LANE_KEYS = {"steps", "timeout", "retries", "backoff"}


@dataclass(frozen=True)
class WorkflowStep:
    name: str
    command: str
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    inputs: tuple[str, ...] = ()  # gitignore-style patterns; () : none declared


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
    check_lane(lane, where)
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
        inputs = check_inputs(item["inputs"], at) if "inputs" in item else ()
        steps.append(WorkflowStep(item["name"], item["command"], _policy(item, at, lane_policy), inputs))
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
        steps = 'steps = [{ name = "...", command = "..." }, ...]'
        if where == "workflow":  # no settings file declares anything
            raise UsageError(f"no rrstore.toml or pyproject.toml [tool.rrstore] declares [workflow.{lane}]: "
                             f"add the table [workflow.{lane}] with {steps} to rrstore.toml "
                             "(rrstore help recovery: Workflows and resume)")
        raise UsageError(f"no workflow for the {lane} lane in {where}: declare [workflow.{lane}] with {steps}")
    return flows[lane]


def input_warnings(system: System, flows: list[Workflow]) -> list[str]:
    """One line per declared inputs pattern that matches no file in the working tree (a typo, most
    often: such a step proves nothing and re-runs at every resume). Lists the tree only when a step
    declares inputs."""
    from ..worktree.scan import scan_scope

    if not any(step.inputs for flow in flows for step in flow.steps):
        return []
    paths = scan_scope(system.root, [system.store_path], include=system.settings.scope_include).paths
    return [f"{flow.source}.{flow.lane} step {number} ({step.name}): inputs pattern {pattern!r} matches no "
            "file in the working tree (a typo?): the step re-runs at every resume until it matches"
            for flow in flows for number, step in enumerate(flow.steps, 1) for pattern in unmatched(paths, step.inputs)]


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
    reasons: dict[int, str] = field(default_factory=dict)  # why each step that ran ran (when resuming)
    changes: DiffResult | None = None  # what changed since ``resumed_from``, before any restore
    restore_removed: list[str] = field(default_factory=list)  # paths the restore removed (in its undo)
    run: dict[str, str] = field(default_factory=dict)  # the ``record.run`` of the steps this run wrote
    continued: ChosenRun | None = None  # the run resumed, when chosen by run (--remote, --run)
    pulled: list[str] = field(default_factory=list)  # checkpoints pulled from the remote to resume
    filled: list[str] = field(default_factory=list)  # paths of earlier steps restored from the base

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
        """The summary a person reads: what ran and why, what failed, what was skipped and why, time saved."""
        if self.nothing_to_resume:
            return [f"nothing to resume: the last run of the {self.lane} lane completed all "
                    f"{self.total_steps} steps"]
        lines = self._run_lines()
        for s in self.steps:
            mark = "✓" if s.success else "✗"
            tries = f", {len(s.attempts)} attempts" if len(s.attempts) > 1 else ""
            why = self.reasons.get(s.record.step_number)
            lines.append(f"{mark} step {s.record.step_number}/{self.total_steps} {s.record.step_name}: "
                         f"{s.wall_time_s:.2f}s{tries}" + (f" ({why})" if why else ""))
        if self.failed_step is not None:
            f = self.failed_step
            lines.append(f"workflow {self.lane} stopped at step {f.record.step_number}: {f.record.error_message}")
            lines.append(f"resume with: rrstore workflow --lane {self.lane} --resume")
        else:
            lines.append(f"workflow {self.lane} completed ({self.total_steps} steps)")
        if self.changes is not None:
            lines.append(f"changes since {self.resumed_from}: {shown(change_lines(self.changes, order='MAD'))}")
        if self.restore_undo_id is not None:
            removed = f" (removed {shown(self.restore_removed)}; kept there)" if self.restore_removed else ""
            lines.append(f"restored {self.resumed_from} before resuming; undo with: "
                         f"rrstore restore --checkpoint-id {self.restore_undo_id}{removed}")
        if self.resumed_from is not None or self.skipped:
            lines.extend(self._resume_lines())
        return lines

    def _run_lines(self) -> list[str]:
        if not self.run:
            return []
        ci = f" (CI run {self.run['ci_run']}, attempt {self.run['attempt'] or '?'})" if self.run.get("ci_run") else ""
        if self.continued is None:
            return [f"run {self.run['id']}{ci}"]
        pulled = f"; pulled {len(self.pulled)} checkpoint(s) from the remote" if self.pulled else ""
        filled = f"; restored {len(self.filled)} path(s) earlier steps made" if self.filled else ""
        return [f"run {self.run['id']}{ci}: continues {self.continued.why}{pulled}{filled}"]

    def _resume_lines(self) -> list[str]:
        names = ", ".join(f"{s.number} {s.name}" + (f" {s.wall_time_s:.2f}s" if s.wall_time_s is not None
                                                    else " (no recorded time)") + (f" ({s.reason})" if s.reason
                                                                                   else "")
                          for s in self.skipped)
        share = f" ({100 * self.time_saved_s / self.full_run_s:.0f}%)" if self.full_run_s > 0 else ""
        where = f"resumed at step {self.start_step} of {self.total_steps} from {self.resumed_from}" \
            if self.resumed_from is not None else f"started at step {self.start_step} of {self.total_steps}"
        return [f"{where}; skipped {len(self.skipped)} step(s): {names or 'none'}",
                f"time saved: {self.time_saved_s:.2f}s of an estimated full run of {self.full_run_s:.2f}s{share}"]

    def to_json(self) -> dict[str, Any]:
        steps = [s.to_json() | {"reason": self.reasons.get(s.record.step_number)} for s in self.steps]
        return {"lane": self.lane, "success": self.success, "exit_status": self.exit_status,
                "total_steps": self.total_steps, "start_step": self.start_step,
                "resumed_from": self.resumed_from, "restore_undo_checkpoint_id": self.restore_undo_id,
                "restore_removed": self.restore_removed, "nothing_to_resume": self.nothing_to_resume,
                "changes": self.changes.to_json() if self.changes is not None else None,
                "skipped": [s.to_json() for s in self.skipped], "time_saved_s": self.time_saved_s,
                "full_run_s": self.full_run_s, "steps": steps, "run": self.run or None,
                "continued_run": self.continued.to_json() if self.continued is not None else None,
                "pulled": self.pulled, "filled_in": self.filled,
                "push": [p.to_json() for p in self.pushes]}

    @property
    def pushes(self) -> list[PushOutcome]:
        """The automatic pushes of this run, in order (``[remote] push``)."""
        return [s.push for s in self.steps if s.push is not None]


def _good_so_far(system: System, result: WorkflowResult) -> tuple[str, ...]:
    """The checkpoints of this run's steps that passed so far, the skipped ones' first (those this store
    holds: a resume from a remote pulls only some): what a failed step pushes beside its own."""
    ids = [s.checkpoint_id for s in result.skipped if s.checkpoint_id]
    refs = system.checkpoint_manager.store.refs if ids else None  # none skipped: the store may not exist yet
    skipped = [i for i in ids if refs is not None and refs.get(i) is not None]
    return (*skipped, *(s.checkpoint_id for s in result.steps if s.success))


def run_workflow(system: System, lane: str, options: ResumeOptions | None = None,
                 hooks: RunHooks | None = None) -> WorkflowResult:
    """Run the lane's steps in order, stopping at the first failure; resuming continues the last run."""
    flow = load_workflow(system.root, lane)
    options, hooks = options or ResumeOptions(), hooks or RunHooks()
    result, continuing = WorkflowResult(lane, len(flow.steps)), ""
    for line in input_warnings(system, [flow]):
        hooks.say(f"rrstore: warning: {line}")
    if options.resuming:
        done = plan_resume(system, flow, options, hooks)
        point = done.point
        result.start_step, result.nothing_to_resume = point.start_step, point.complete
        if point.complete:
            return result
        result.skipped, result.reasons = point.skipped, point.reasons
        result.resumed_from = point.base.checkpoint_id if point.base is not None else None
        result.changes, result.restore_undo_id = done.changes, done.restore_undo_id
        result.restore_removed = done.restore_removed
        result.continued, result.pulled, result.filled = done.run, done.pulled, done.filled
        continuing = done.run.run_id if done.run is not None else run_of(point.base) if point.base else ""
    result.run = run_identity(os.environ, continuing)
    pushing = push_policy(system, options.remote, options.endpoint_url)
    for number in range(result.start_step, len(flow.steps) + 1):
        step = flow.steps[number - 1]
        hooks.say(f"rrstore: == step {number}/{len(flow.steps)} ({lane}): {step.name}: {step.command}")
        spec = StepSpec(lane, number, step.name, step.command, workflow=lane, run=result.run, push=pushing,
                        push_also=_good_so_far(system, result))
        outcome = run_step(system, spec, step.policy, hooks)
        result.steps.append(outcome)
        if not outcome.success:
            break
    return result
