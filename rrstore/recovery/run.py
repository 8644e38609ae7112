"""Run one step with recovery: checkpoint, run, measure, classify, plan, retry with backoff.

The step's checkpoint is taken *before* it runs, marked failed with
``RUNNING`` (so a runner killed mid-step leaves a truthful record), and
updated afterwards with the outcome, the error and the step's wall time,
CPU time and peak memory. While the plan for the failure says RETRY and
retries remain, the runner waits ``backoff × 2^(attempt−1)`` seconds (the
``sleep`` hook, so tests inject it) and runs the step again, first
restoring the pre-step checkpoint if the failed attempt changed the tree.
A command that cannot run at all (status 126 or 127) is never retried.
Once the outcome is recorded, ``[remote] push`` may push the checkpoint
(``autopush``); that push never changes the step's result.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..checkpoint import NewCheckpoint
from ..diff import against_checkpoint
from ..errors import RestoreFailed, UsageError
from ..record import CheckpointRecord
from .autopush import PushOutcome, PushPolicy, push_checkpoints, push_policy
from .classify import Classification, classify
from .process import Outcome, execute
from .settings import check_retries, check_seconds, load_recovery_settings
from .vocabulary import FailedStep, RecoveryStrategy

if TYPE_CHECKING:
    from .planner import RecoveryPlan, RecoveryPlanner
    from .ports import System

RUNNING = "step did not finish (interrupted, or still running)"
# A step stopped (Ctrl-C, SIGTERM, an rrstore error) before its command finished once: like RUNNING,
# a step that did not finish, which resume runs again.
INTERRUPTED = "interrupted before the command finished"
UNFINISHED = (RUNNING, INTERRUPTED)
# The shell's 'cannot execute' and 'not found': waiting never fixes them, so they are not retried.
NOT_RUNNABLE = (126, 127)


@dataclass
class RetryPolicy:
    """Per-step options; None takes the project's ``[recovery]`` setting."""

    timeout: float | None = None
    retries: int | None = None
    backoff: float | None = None


@dataclass
class RunHooks:
    """How a run talks to the world: injectable sleep, where output goes, human messages."""

    sleep: Callable[[float], None] = time.sleep
    output: Callable[[int, bytes], None] | None = None  # (1 for stdout, 2 for stderr, bytes)
    notify: Callable[[str], None] | None = None
    warning: Callable[[str], None] | None = None  # shown even where notify is quiet; None: notify

    def say(self, message: str) -> None:
        if self.notify is not None:
            self.notify(message)

    def warn(self, message: str) -> None:
        if self.warning is not None:
            self.warning(message)
        else:
            self.say(message)


@dataclass
class Attempt:
    number: int
    exit_status: int
    wall_time_s: float
    cpu_time_s: float
    peak_rss_kib: int
    timed_out: bool = False
    waited_s: float = 0.0  # backoff slept before this attempt
    restored_undo_id: str | None = None  # set when the tree was restored before this attempt
    classification: Classification | None = None

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "exit_status": self.exit_status, "wall_time_s": self.wall_time_s,
                "cpu_time_s": self.cpu_time_s, "peak_rss_kib": self.peak_rss_kib, "timed_out": self.timed_out,
                "waited_s": self.waited_s, "restored_undo_checkpoint_id": self.restored_undo_id,
                "classification": self.classification.to_json() if self.classification else None}


@dataclass
class StepResult:
    record: CheckpointRecord
    attempts: list[Attempt] = field(default_factory=list)
    plan: RecoveryPlan | None = None
    push: PushOutcome | None = None  # the automatic push after the step (``[remote] push``), if any

    @property
    def checkpoint_id(self) -> str:
        return self.record.checkpoint_id

    @property
    def exit_status(self) -> int:
        return self.attempts[-1].exit_status if self.attempts else 1

    @property
    def success(self) -> bool:
        return self.exit_status == 0

    @property
    def classification(self) -> Classification | None:
        return self.attempts[-1].classification if self.attempts else None

    @property
    def wall_time_s(self) -> float:
        """The last attempt's wall time: what running the step once takes."""
        return self.attempts[-1].wall_time_s if self.attempts else 0.0

    @property
    def message(self) -> str:
        r = self.record
        tries = f" after {len(self.attempts)} attempts" if len(self.attempts) > 1 else ""
        if self.success:
            return f"step {r.step_number} ({r.step_name}) succeeded{tries} in {self.wall_time_s:.2f}s; " \
                   f"checkpoint {r.checkpoint_id}"
        return f"step {r.step_number} ({r.step_name}) failed{tries}: {r.error_message}; checkpoint {r.checkpoint_id}"

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint_id": self.checkpoint_id, "lane": self.record.lane,
                "step_number": self.record.step_number, "step_name": self.record.step_name,
                "success": self.success, "exit_status": self.exit_status,
                "error_message": self.record.error_message, "wall_time_s": self.wall_time_s,
                "attempts": [a.to_json() for a in self.attempts],
                "classification": self.classification.to_json() if self.classification else None,
                "plan": self.plan.to_json() if self.plan else None, "record": self.record.to_dict(),
                "push": self.push.to_json() if self.push else None}


def describe(command: str | Sequence[str]) -> str:
    return command if isinstance(command, str) else shlex.join(command)


@dataclass
class StepSpec:
    lane: str
    step_number: int
    step_name: str
    command: str | Sequence[str]
    workflow: str | None = None  # the lane of the workflow running the step (None: a one-off run)
    run: dict[str, str] = field(default_factory=dict)  # the workflow run it belongs to (recovery.runs)
    push: PushPolicy | None = None  # None: the project's (``autopush.push_policy``)
    push_also: tuple[str, ...] = ()  # pushed with this step's checkpoint when it fails (a workflow's good steps)

    def check(self) -> None:
        if not self.command or (isinstance(self.command, str) and not self.command.strip()):
            raise UsageError("give the command to run (after --)")

    def failed(self, policy: RetryPolicy) -> FailedStep:
        """This step for its plan, with the 'rrstore run' that runs it again as it ran."""
        timeout = f" --timeout {policy.timeout:g}" if policy.timeout is not None else ""
        words = shlex.quote(self.command) if isinstance(self.command, str) else shlex.join(self.command)
        rerun = (f"rrstore run --lane {self.lane} --step-number {self.step_number} "
                 f"--step-name {shlex.quote(self.step_name)}{timeout} -- {words}")
        return FailedStep(self.step_number, self.step_name, rerun)


def run_step(system: System, spec: StepSpec, policy: RetryPolicy | None = None,
             hooks: RunHooks | None = None) -> StepResult:
    """Checkpoint, then run ``spec.command`` until it succeeds or recovery says stop.

    Raises only for rrstore's own failures (checkpoint, restore); the
    command's failure is the result's ``exit_status``.
    """
    spec.check()
    policy, hooks = policy or RetryPolicy(), hooks or RunHooks()
    settings = load_recovery_settings(system.root)
    where = "rrstore run"
    retries = check_retries(settings.retries if policy.retries is None else policy.retries, where)
    backoff = check_seconds(settings.backoff if policy.backoff is None else policy.backoff, "backoff", where)
    if policy.timeout is not None:
        check_seconds(policy.timeout, "timeout", where, positive=True)
    pushing = spec.push or push_policy(system)  # a bad [remote] stops here, before the step runs
    # Planned with the settings the step started under: the command may leave them unreadable (a merge
    # that conflicts in pyproject.toml), and its own exit status and plan must still be reported.
    planner = system.recovery_planner
    made = system.take_checkpoint(NewCheckpoint(spec.lane, spec.step_number, spec.step_name, success=False,
                                                error_message=RUNNING, workflow=spec.workflow,
                                                command=describe(spec.command), run=spec.run))
    result = StepResult(made.record)
    start = time.perf_counter()
    try:
        _attempts(_StepRun(system, spec, policy, retries, backoff, hooks, planner), result)
    finally:  # also on Ctrl-C or an rrstore error: the record says what happened
        result.record = _finish(system, result, time.perf_counter() - start)
    if pushing.wanted(result.success):
        also = spec.push_also if not result.success else ()
        result.push = push_checkpoints(system, pushing, [*also, result.checkpoint_id], hooks)
    return result


@dataclass(frozen=True)
class _StepRun:
    """What every attempt of one ``run_step`` shares: the step, its policy with ``retries`` and
    ``backoff`` resolved against ``[recovery]``, the hooks, and the planner of the settings it started
    under."""

    system: System
    spec: StepSpec
    policy: RetryPolicy
    retries: int
    backoff: float
    hooks: RunHooks
    planner: RecoveryPlanner


def _attempts(run: _StepRun, result: StepResult) -> None:
    """Run the command until it succeeds, the plan says not to retry, or no retries are left."""
    system, spec, policy, hooks = run.system, run.spec, run.policy, run.hooks
    retries, backoff = run.retries, run.backoff
    label = f"step {spec.step_number} ({spec.step_name})"
    for number in range(1, retries + 2):
        waited, undo = 0.0, None
        if number > 1:
            waited = backoff * 2 ** (number - 2)
            hooks.say(f"rrstore: {label}: waiting {waited:g}s before attempt {number} of {retries + 1}")
            hooks.sleep(waited)
            undo = _restore_if_changed(system, result.record, hooks)
        outcome: Outcome = execute(spec.command, system.root, policy.timeout, hooks.output)
        attempt = Attempt(number, outcome.exit_status, round(outcome.wall_time_s, 6), round(outcome.cpu_time_s, 6),
                          outcome.peak_rss_kib, outcome.timed_out, waited, undo)
        result.attempts.append(attempt)
        if outcome.exit_status == 0:
            result.plan = None
            return
        attempt.classification = found = classify(outcome.text(), outcome.exit_status)
        result.plan = plan = run.planner.get_recovery_plan(found, spec.lane, spec.failed(policy))
        hooks.say(f"rrstore: {label} failed (attempt {number}, exit status {outcome.exit_status}): {found.message}")
        earlier = [a.classification.failure_type for a in result.attempts[:-1] if a.classification]
        if found.failure_type not in earlier:  # the plan once per kind of failure, not at every retry
            hooks.say(plan.message)
        if plan.strategy is not RecoveryStrategy.RETRY:
            hooks.say(f"rrstore: strategy {plan.strategy.name} for {found.failure_type}: not retrying")
            return
        if outcome.exit_status in NOT_RUNNABLE:
            hooks.say(f"rrstore: {label}: the command cannot run (exit status {outcome.exit_status}): not retrying")
            return
        if number > retries:
            hooks.say(f"rrstore: {label}: no retries left ({retries} allowed)")
            return


def _restore_if_changed(system: System, record: CheckpointRecord, hooks: RunHooks) -> str | None:
    """Put the tree back to the pre-step state if the failed attempt changed it; the undo id, if any."""
    manager = system.checkpoint_manager
    snap = manager.snapshot(store=False)
    if snap.root_oid == record.state_hash or not against_checkpoint(manager.store.objects, record,
                                                                    snap.entries).changed:
        return None  # unchanged but for what the checkpoint left out (restore leaves that alone)
    restored = system.restore(record.checkpoint_id)
    if restored.failures:
        raise RestoreFailed(restored.failures, restored.undo_checkpoint_id)
    hooks.say(f"rrstore: the failed attempt changed the tree: restored {record.checkpoint_id} "
              f"(undo with 'rrstore restore --checkpoint-id {restored.undo_checkpoint_id}')")
    return restored.undo_checkpoint_id


def _finish(system: System, result: StepResult, total_s: float) -> CheckpointRecord:
    record = result.record
    metrics = dict(record.metrics)
    if result.attempts:
        last = result.attempts[-1]
        metrics.update(step_wall_time_s=last.wall_time_s, step_cpu_time_s=last.cpu_time_s,
                       step_peak_rss_kib=max(a.peak_rss_kib for a in result.attempts),
                       step_total_time_s=round(total_s, 6), exit_status=last.exit_status,
                       attempts=len(result.attempts))
        record.success = last.exit_status == 0
        found = last.classification
        record.error_message = None if record.success else (
            f"exit status {last.exit_status}: {found.failure_type}: {found.evidence}" if found
            else f"exit status {last.exit_status}")[:500]
    else:
        record.error_message = INTERRUPTED
    record.metrics = metrics
    manager = system.checkpoint_manager
    with manager.store.writing():
        return manager.update(record)
