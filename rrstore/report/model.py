"""The report's data (reports layer, above recovery): workflow runs per lane, store growth, one diff.

Everything comes from what the store already holds, read through the
facade's port (``recovery.ports.System``):

- **Runs**: step records grouped by ``record.run["id"]`` (``recovery.runs``);
  step records of one-off ``rrstore run`` steps and plain checkpoints that
  belong to no run are grouped per lane and day. A step starts at its
  record's ``timestamp`` (the checkpoint taken just before the command ran)
  and lasts ``metrics["step_total_time_s"]``, every attempt and backoff
  included, as ``run_step`` recorded it (``step_wall_time_s`` for the last
  attempt alone). A plain checkpoint ran no command: it has no duration.
- **Failures**: the record keeps ``exit status N: TYPE: EVIDENCE``
  (``run._finish``); the evidence line is classified again to find the rule
  that decided (its own strategy and plan), and kept as recorded when that
  gives another type. The plan is the planner's for that classification
  *now* (this project's facts and newest good checkpoint).
- **Growth**: per checkpoint in the order this store got them, the sizes its
  record measured when it was taken: ``bytes_scanned`` (logical),
  ``bytes_new`` (new content, before compression) and
  ``compressed_bytes_new`` (what it added to the store). ``stored_now`` is
  the size of ``objects/`` and ``packs/`` today, after any gc.
- **Diff**: ``System.diff`` of two checkpoints (``rrstore diff A B``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..errors import RRStoreError
from ..record import CheckpointRecord
from ..recovery.classify import Classification, classify
from ..recovery.run import UNFINISHED, RetryPolicy, StepSpec
from ..recovery.vocabulary import FailureType

if TYPE_CHECKING:
    from ..diff import DiffResult
    from ..recovery.ports import System

RUNS_SHOWN = 10  # newest runs per lane, by default
LONGEST_S = 366 * 24 * 3600.0  # a recorded duration beyond a year is no duration
# ``run._finish``'s error message of a failed command: the exit status, failure type and evidence line.
_RECORDED = re.compile(r"exit status (-?\d{1,10})(?:: ([a-z_]+): (.*))?", re.DOTALL)


@dataclass
class Failure:
    """Why a step failed: its classification, and the plan the planner gives for it."""

    failure_type: str
    evidence: str
    exit_status: int | None
    rule: str
    plan: dict[str, Any] | None = None
    plan_error: str | None = None  # why no plan could be made (the project's settings unreadable)
    found: Classification | None = field(default=None, repr=False, compare=False)  # what the planner is given

    def to_json(self) -> dict[str, Any]:
        return {"failure_type": self.failure_type, "evidence": self.evidence, "exit_status": self.exit_status,
                "rule": self.rule, "plan": self.plan, "plan_error": self.plan_error}


@dataclass
class Step:
    """One step record as a bar: when it started, how long it ran, how it ended."""

    checkpoint_id: str
    step_number: int
    step_name: str
    status: str  # passed, failed, unfinished (killed, interrupted) or checkpoint (no command ran)
    start: datetime
    duration_s: float | None
    attempts: int = 0
    exit_status: int | None = None
    command: str | None = None
    error_message: str | None = None
    failure: Failure | None = None

    @property
    def end_s(self) -> float:
        """When it ended, as a Unix time (a step without a duration ends where it starts)."""
        return self.start.timestamp() + (self.duration_s or 0.0)

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint_id": self.checkpoint_id, "step_number": self.step_number,
                "step_name": self.step_name, "status": self.status,
                "start": self.start.isoformat(timespec="microseconds"), "duration_s": self.duration_s,
                "attempts": self.attempts, "exit_status": self.exit_status, "command": self.command,
                "error_message": self.error_message, "failure": self.failure.to_json() if self.failure else None}


@dataclass
class Run:
    """One workflow run (or a lane's checkpoints of one day outside any run), its steps in time order."""

    run_id: str  # "" for the steps of no run
    lane: str
    label: str
    steps: list[Step]
    ci_run: str = ""
    ci_attempts: list[str] = field(default_factory=list)
    git_branch: str | None = None
    git_commit: str | None = None

    @property
    def start(self) -> datetime:
        return self.steps[0].start

    @property
    def span_s(self) -> float:
        """From its first step's start to its last step's end, in seconds (records of one run may
        disagree on time zones, or a crafted one carry none: Unix times compare them all)."""
        return max(s.end_s for s in self.steps) - self.start.timestamp()

    @property
    def end(self) -> datetime:
        try:
            return self.start + timedelta(seconds=self.span_s)
        except OverflowError:  # a record dated near year 9999
            return self.start

    @property
    def status(self) -> str:
        """failed when its newest attempt at any step failed, unfinished when one never ended, else passed."""
        last: dict[int, str] = {}
        for step in self.steps:
            last[step.step_number] = step.status
        for status in ("failed", "unfinished"):
            if status in last.values():
                return status
        return "passed"

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "lane": self.lane, "label": self.label, "status": self.status,
                "ci_run": self.ci_run, "ci_attempts": self.ci_attempts, "git_branch": self.git_branch,
                "git_commit": self.git_commit, "start": self.start.isoformat(timespec="microseconds"),
                "end": self.end.isoformat(timespec="microseconds"), "steps": [s.to_json() for s in self.steps]}


@dataclass
class Growth:
    """One checkpoint's sizes as recorded when taken, and the store's totals up to it."""

    checkpoint_id: str
    added: datetime
    logical_bytes: int
    new_bytes: int
    stored_bytes: int
    total_logical: int
    total_new: int
    total_stored: int

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint_id": self.checkpoint_id, "added": self.added.isoformat(timespec="microseconds"),
                "logical_bytes": self.logical_bytes, "new_bytes": self.new_bytes,
                "stored_bytes": self.stored_bytes, "total_logical": self.total_logical,
                "total_new": self.total_new, "total_stored": self.total_stored}


@dataclass
class DiffSection:
    old_id: str
    new_id: str
    result: DiffResult

    def to_json(self) -> dict[str, Any]:
        return {"old": self.old_id, "new": self.new_id, **self.result.to_json()}


@dataclass
class Report:
    """What ``rrstore report`` shows, in every format (``--html``, ``--markdown``, ``--json``)."""

    generated: datetime
    store: str
    project: str
    lanes: dict[str, list[Run]]
    growth: list[Growth]
    stored_now: int
    damaged: list[str] = field(default_factory=list)
    diff: DiffSection | None = None
    # Each damaged id's error, for the caller to report as ``list`` does (exit 13 once shown).
    damage: dict[str, RRStoreError] = field(default_factory=dict, repr=False)

    def days(self) -> list[dict[str, Any]]:
        """Growth per day (the local day each checkpoint was added): checkpoints, sizes, totals."""
        out: dict[str, dict[str, Any]] = {}
        for point in self.growth:
            day = out.setdefault(point.added.date().isoformat(), {"day": point.added.date().isoformat(),
                                                                  "checkpoints": 0, "logical_bytes": 0,
                                                                  "new_bytes": 0, "stored_bytes": 0})
            day["checkpoints"] += 1
            for key in ("logical_bytes", "new_bytes", "stored_bytes"):
                day[key] += getattr(point, key)
            day.update(total_logical=point.total_logical, total_new=point.total_new, total_stored=point.total_stored)
        return list(out.values())

    def to_json(self) -> dict[str, Any]:
        return {"generated": self.generated.isoformat(timespec="seconds"), "store": self.store,
                "project": self.project, "lanes": {k: [r.to_json() for r in v] for k, v in self.lanes.items()},
                "growth": [g.to_json() for g in self.growth], "days": self.days(), "stored_now": self.stored_now,
                "damaged": self.damaged, "diff": self.diff.to_json() if self.diff else None}


def ratio(logical: int, stored: int) -> float | None:
    """How many times ``logical`` bytes fit in ``stored`` (None when nothing is stored)."""
    return round(logical / stored, 2) if stored else None


@dataclass(frozen=True)
class ReportOptions:
    lane: str | None = None
    runs: int = RUNS_SHOWN
    diff: tuple[str, str] | None = None


def build_report(system: System, options: ReportOptions | None = None) -> Report:
    """The report of ``system``'s store: this project's runs, the whole store's growth, the chosen diff.

    Raises StoreNotFound without a store, CheckpointNotFound for an unknown diff id; a damaged
    record is left out and named in ``damaged`` (its error in ``damage``).
    """
    options = options or ReportOptions()
    manager = system.checkpoint_manager
    every = manager.list_checkpoints(all_projects=True)
    damage = dict(manager.damaged)
    mine = manager.view.mine(every)
    lanes: dict[str, list[Run]] = {}
    plans = _Plans(system)
    for lane, runs in group_runs([r for r in mine if options.lane in (None, r.lane)]).items():
        lanes[lane] = runs[-options.runs:] if options.runs > 0 else []
        for run in lanes[lane]:
            for step in run.steps:
                plans.fill(run.lane, step)
    section = None
    if options.diff is not None:
        old, new = (manager.get(i).checkpoint_id for i in options.diff)
        section = DiffSection(old, new, system.diff(old, new))
    return Report(datetime.now().astimezone(), str(system.store_path), manager.project, lanes,
                  growth(every), stored_now(system), sorted(damage), section, damage)


def group_runs(records: list[CheckpointRecord]) -> dict[str, list[Run]]:
    """Step records by lane, then by run (oldest run first, each run's steps in the order added)."""
    groups: dict[tuple[str, str, str], list[CheckpointRecord]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.order):
        if record.kind != "step":
            continue
        run_id = record.run.get("id", "")
        day = "" if run_id else record.created.date().isoformat()
        groups[(record.lane, run_id, day)].append(record)
    lanes: dict[str, list[Run]] = defaultdict(list)
    for (lane, run_id, day), members in groups.items():
        newest = members[-1]
        label = f"run {run_id}" if run_id else f"steps outside a workflow run on {day}"
        attempts = list(dict.fromkeys(r.run.get("attempt", "") for r in members if r.run.get("attempt")))
        lanes[lane].append(Run(run_id, lane, label, [step_of(r) for r in members], newest.run.get("ci_run", ""),
                               attempts, newest.git_branch, newest.git_commit))
    for runs in lanes.values():
        runs.sort(key=lambda run: (run.start.timestamp(), run.label))
    return dict(sorted(lanes.items()))


def step_of(record: CheckpointRecord) -> Step:
    """The bar of one step record (its duration as ``run_step`` measured it; None if no command ran)."""
    m = record.metrics
    exit_status = _int(m.get("exit_status"))
    ran = "exit_status" in m
    if record.error_message in UNFINISHED:
        status = "unfinished"
    elif not ran:
        status = "checkpoint"
    else:
        status = "passed" if record.success else "failed"
    duration = _amount(m.get("step_total_time_s", m.get("step_wall_time_s")), LONGEST_S) if ran else None
    failure = recorded_failure(record.error_message, exit_status) if status == "failed" else None
    return Step(record.checkpoint_id, record.step_number, record.step_name, status, record.created,
                duration, int(_amount(m.get("attempts"), 2**31) or 0), exit_status, record.command,
                record.error_message, failure)


def _amount(value: object, limit: float) -> float | None:
    """A recorded measure as a number from 0 to ``limit``; None for anything else (a crafted record's
    metrics may hold strings, NaN or 1e308: the report shows 'no duration', never fails)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 <= value <= limit else None  # NaN compares False


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -2**31 <= value <= 2**31:
        return None
    return int(value)


def recorded_failure(message: str | None, exit_status: int | None) -> Failure:
    """The classification a failed step's record keeps (``exit status N: TYPE: EVIDENCE``)."""
    found = _RECORDED.fullmatch(message or "")
    if found is None or found.group(2) is None:
        return Failure(FailureType.UNKNOWN.value, message or "", exit_status, "not recorded")
    status, kind, evidence = int(found.group(1)), found.group(2), found.group(3)
    again = classify(evidence, status)
    if again.failure_type.value == kind:
        return Failure(kind, evidence, status, again.rule, found=again)
    try:
        recorded = Classification(FailureType.parse(kind), evidence, exit_code=status, rule="as recorded")
    except RRStoreError:  # a type this rrstore does not know (a newer one's): no plan for it
        return Failure(kind, evidence, status, "as recorded")
    return Failure(kind, evidence, status, "as recorded", found=recorded)


class _Plans:
    """The planner's plan for each failed step, made once per distinct failure (the same failure in
    every run of a lane is one plan: each costs a look at the project, git included)."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.made: dict[tuple[object, ...], tuple[dict[str, Any] | None, str | None]] = {}

    def fill(self, lane: str, step: Step) -> None:
        """Fill in the plan for ``step``'s failure, as ``run_step`` would make it for that step today."""
        failure = step.failure
        if failure is None or failure.found is None:
            return
        key = (lane, failure.found, step.step_number, step.step_name, step.command)
        if key not in self.made:
            self.made[key] = self._make(lane, step, failure.found)
        failure.plan, failure.plan_error = self.made[key]

    def _make(self, lane: str, step: Step, found: Classification) -> tuple[dict[str, Any] | None, str | None]:
        rerun = StepSpec(lane, step.step_number, step.step_name, step.command).failed(RetryPolicy()) \
            if step.command else None
        try:
            return self.system.recovery_planner.get_recovery_plan(found, lane, rerun).to_json(), None
        except RRStoreError as exc:
            return None, str(exc)


def growth(records: list[CheckpointRecord]) -> list[Growth]:
    """Every checkpoint in the order this store got it, with the running totals of its recorded sizes."""
    out: list[Growth] = []
    logical = new = stored = 0
    for record in sorted(records, key=lambda r: r.order):
        m = record.metrics
        size, fresh, packed = (int(_amount(m.get(k), 2**53) or 0)
                               for k in ("bytes_scanned", "bytes_new", "compressed_bytes_new"))
        logical, new, stored = logical + size, new + fresh, stored + packed
        out.append(Growth(record.checkpoint_id, record.added, size, fresh, packed, logical, new, stored))
    return out


def stored_now(system: System) -> int:
    """Bytes under the store's ``objects/`` and ``packs/`` now (the backend's own sizes)."""
    backend = system.open_store().backend
    total = 0
    for prefix in ("objects/", "packs/"):
        for key in backend.list(prefix):
            try:
                total += backend.stat(key)[0]
            except KeyError:  # swept since the listing
                continue
    return total
