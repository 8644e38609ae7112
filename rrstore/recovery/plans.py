"""Recovery plans as data: the seed's tables, adapted per lane, overridable per project.

``PLAN_TABLE`` is the one table the planner reads. Each failure type has a
recommended strategy, an optional note per lane, and ordered steps (the
seed's step, action, command, time). A step may carry lane variants (keys
``docs``, ``standard``, ``heavy`` holding the fields that differ in that
lane) or be limited to some lanes (``lanes``). ``{checkpoint}`` and
``{lane}`` in a command are filled in by the planner.

A project replaces any of it in ``rrstore.toml`` (or ``[tool.rrstore]``)::

    [recovery.plans.test_failure]          # every lane
    strategy = "retry"
    steps = [{ action = "Re-run the last failures", command = "pytest --lf -x", time = 120 }]

    [recovery.plans.test_failure.heavy]    # only the heavy lane
    steps = [{ action = "Re-run with more workers", command = "pytest -n 4", time = "5m" }]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..gc import parse_duration
from .vocabulary import FailureType, Lane, RecoveryStrategy

GATES = "ruff check .; mypy . --ignore-missing-imports; bandit -r ."
MARKDOWN = "mdl docs/*.md"
RESTORE = "rrstore restore --checkpoint-id {checkpoint}"

PLAN_TABLE: dict[str, dict[str, Any]] = {
    "timeout": {
        "strategy": "retry",
        "notes": {
            "docs": "A timeout in the docs lane (<5 min) suggests the standard lane (<15 min).",
            "standard": "A timeout in the standard lane (<15 min) suggests the heavy lane (<20 min).",
            "heavy": "The heavy lane (<20 min) is the heaviest: split the step or raise its timeout.",
        },
        "steps": [
            {"action": "Check resources", "command": "free -h; df -h", "time": 30},
            {"action": "Resume checkpoint", "command": RESTORE, "time": 60, "strategy": "resume"},
            {"action": "Try heavier lane", "command": "rrstore workflow --lane heavy", "detail": "Retry with HEAVY",
             "time": 1200, "strategy": "retry",
             "docs": {"command": "rrstore workflow --lane standard", "detail": "Retry with STANDARD", "time": 900},
             "heavy": {"action": "Split the step or raise its timeout", "command": None,
                       "detail": "HEAVY is the heaviest lane", "time": None, "strategy": "manual"}},
        ],
    },
    "test_failure": {
        "strategy": "manual",
        "notes": {"docs": "In the docs lane, check the markdown first (mdl docs/*.md)."},
        "steps": [
            {"action": "Check documentation", "command": MARKDOWN, "time": 30, "lanes": ["docs"]},
            {"action": "Re-run failed tests", "command": "pytest tests/ -v -x", "time": 180, "strategy": "retry"},
            {"action": "Run with detailed output", "command": "pytest -v --tb=short", "time": 180},
            {"action": "Skip and continue", "command": "pytest --ignore=tests/broken", "time": 120, "strategy": "skip"},
            {"action": "Manual review", "detail": "Fix failing tests", "time": None, "strategy": "manual"},
        ],
    },
    "quality_gate": {
        "strategy": "manual",
        "notes": {"docs": "In the docs lane the gates are markdown checks (mdl docs/*.md)."},
        "steps": [
            {"action": "Run gates individually", "command": GATES, "detail": "ruff, mypy and bandit one by one",
             "time": 120, "docs": {"command": MARKDOWN, "detail": "markdown lint"}},
            {"action": "Fix issues automatically", "command": "ruff check --fix", "time": 60,
             "docs": {"action": "Fix markdown issues", "command": None,
                      "detail": "mdl has no fixer: edit the lines it names", "strategy": "manual"}},
            {"action": "Re-run gates", "command": GATES, "detail": "Verify fixes", "time": 60, "strategy": "retry",
             "docs": {"command": MARKDOWN}},
        ],
    },
    "resource_exhaustion": {
        "strategy": "resume",
        "notes": {
            "docs": "The docs lane is the lightest: free disk space or memory (or move the store elsewhere).",
            "standard": "Resource exhaustion in the standard lane suggests a lighter lane: docs.",
            "heavy": "Resource exhaustion in the heavy lane suggests a lighter lane: standard.",
        },
        "steps": [
            {"action": "Clean up temp files", "command": "git clean -fd",
             "detail": "removes untracked files: 'rrstore checkpoint' first keeps them", "time": 30},
            {"action": "Clear caches", "command": "rrstore cleanup",
             "detail": "__pycache__, *.pyc, *.pyo, .pytest_cache; never a tracked file", "time": 20},
            {"action": "Clear pytest cache", "command": "pytest --cache-clear", "time": 30},
            {"action": "Downgrade lane", "command": "rrstore workflow --lane docs", "detail": "Try lighter lane",
             "time": None, "strategy": "retry",
             "heavy": {"command": "rrstore workflow --lane standard"},
             "docs": {"action": "Free disk space or memory", "command": "df -h; free -h",
                      "detail": "DOCS is the lightest lane", "strategy": "manual"}},
        ],
    },
    "network_error": {
        "strategy": "retry",
        "steps": [
            {"action": "Check connectivity", "command": "ping 8.8.8.8; nc -zv github.com 22", "time": 30},
            {"action": "Wait and retry", "command": "sleep 60 && rrstore workflow --lane {lane} --resume",
             "detail": "Wait 60s then retry", "time": 60, "strategy": "retry"},
            {"action": "Use checkpoint", "command": RESTORE + " && rrstore workflow --lane {lane} --resume",
             "detail": "Resume from checkpoint", "time": 120, "strategy": "resume"},
        ],
    },
    "git_error": {
        "strategy": "rollback",
        "steps": [
            {"action": "Check status", "command": "git status; git log", "time": 30},
            {"action": "Fetch latest", "command": "git fetch origin", "time": 60},
            {"action": "Reset changes", "command": "git reset --hard", "time": 20, "strategy": "rollback"},
            {"action": "Manual recovery", "command": RESTORE, "detail": "Restore from checkpoint", "time": None,
             "strategy": "manual"},
        ],
    },
    # Not in the seed's tables: the escalation of its 'Multi-Step Recovery' (retry; validate and
    # clean up; restore), so the 'Automated Recovery Loop' can run recovery_plan[:attempt].
    "unknown": {
        "strategy": "retry",
        "notes": {"docs": "In the docs lane, check the markdown too (mdl docs/*.md)."},
        "steps": [
            {"action": "Validate state", "command": "rrstore validate", "time": 30},
            {"action": "Clean up failed state", "command": "rrstore cleanup", "time": 30},
            {"action": "Check documentation", "command": MARKDOWN, "time": 30, "lanes": ["docs"]},
            {"action": "Restore last good checkpoint", "command": RESTORE, "time": 60, "strategy": "rollback"},
            {"action": "Manual review", "detail": "read the step's output; 'rrstore classify' names the failure",
             "time": None, "strategy": "manual"},
        ],
    },
}

_STEP_KEYS = {"action", "command", "detail", "time", "strategy"}
_TABLE_KEYS = {"strategy", "steps", "note"}


@dataclass(frozen=True)
class PlanStep:
    """One row of a plan before the planner fills in the checkpoint."""

    action: str
    command: str | None = None
    detail: str | None = None
    time_s: int | None = None
    strategy: RecoveryStrategy | None = None


@dataclass(frozen=True)
class LanePlan:
    strategy: RecoveryStrategy
    steps: tuple[PlanStep, ...]
    note: str | None = None


PlanTable = dict[tuple[FailureType, Lane], LanePlan]


def parse_time(value: object, where: str) -> int | None:
    """Seconds from 30, '30s', '5m' or 'varies' (None)."""
    if value is None or value == "varies":
        return None
    if isinstance(value, bool):
        raise UsageError(f"{where}: time must be seconds, a duration such as '5m', or 'varies'")
    if isinstance(value, int | float) and value >= 0:
        return int(value)
    if isinstance(value, str):
        try:
            return int(parse_duration(value).total_seconds())
        except UsageError:
            pass
    raise UsageError(f"{where}: time must be seconds, a duration such as '5m', or 'varies', not {value!r}")


def _step(raw: dict[str, Any], where: str) -> PlanStep:
    unknown = set(raw) - _STEP_KEYS
    if unknown:
        known = ", ".join(sorted(_STEP_KEYS))
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {known})")
    action = raw.get("action")
    if not isinstance(action, str) or not action.strip():
        raise UsageError(f"{where}: 'action' must be a non-empty string")
    for key in ("command", "detail"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise UsageError(f"{where}: '{key}' must be a string")
    strategy = raw.get("strategy")
    return PlanStep(action, raw.get("command"), raw.get("detail"), parse_time(raw.get("time"), where),
                    _strategy(strategy, where) if strategy is not None else None)


def _strategy(value: object, where: str) -> RecoveryStrategy:
    try:
        return RecoveryStrategy.parse(str(value))
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _builtin(failure_type: FailureType, lane: Lane) -> LanePlan:
    entry = PLAN_TABLE[failure_type.value]
    steps = []
    for i, row in enumerate(entry["steps"], 1):
        if "lanes" in row and lane.value not in row["lanes"]:
            continue
        fields = {k: v for k, v in row.items() if k in _STEP_KEYS}
        fields.update(row.get(lane.value, {}))
        steps.append(_step(fields, f"built-in plan {failure_type} step {i}"))
    note = entry.get("notes", {}).get(lane.value)
    return LanePlan(RecoveryStrategy.parse(entry["strategy"]), tuple(steps), note)


def _apply(plan: LanePlan, table: dict[str, Any], where: str) -> LanePlan:
    """``plan`` with what a configuration table sets (strategy, steps, note) replaced."""
    strategy, steps, note = plan.strategy, plan.steps, plan.note
    if "strategy" in table:
        strategy = _strategy(table["strategy"], where)
    if "steps" in table:
        raw = table["steps"]
        if not isinstance(raw, list) or not raw or not all(isinstance(s, dict) for s in raw):
            raise UsageError(f"{where}: 'steps' must be a non-empty array of tables")
        steps = tuple(_step(s, f"{where} step {i}") for i, s in enumerate(raw, 1))
    if "note" in table:
        if not isinstance(table["note"], str):
            raise UsageError(f"{where}: 'note' must be a string")
        note = table["note"]
    return LanePlan(strategy, steps, note)


def build_table(overrides: dict[str, Any] | None = None, source: str = "configuration") -> PlanTable:
    """Every (failure type, lane) plan: the built-in table with the project's overrides applied.

    Overrides are checked in full, so a typo is an error rather than a plan
    that silently stays the default.
    """
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise UsageError(f"{source}: recovery.plans must be a table")
    known = {f.value for f in FailureType}
    for name in overrides:
        if name not in known:
            raise UsageError(f"{source}: recovery.plans.{name}: unknown failure type "
                             f"(choose one of {', '.join(sorted(known))})")
    table: PlanTable = {}
    for failure_type in FailureType:
        custom = overrides.get(failure_type.value, {})
        where = f"{source}: recovery.plans.{failure_type}"
        if not isinstance(custom, dict):
            raise UsageError(f"{where} must be a table")
        unknown = set(custom) - _TABLE_KEYS - {lane.value for lane in Lane}
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        for lane in Lane:
            plan = _apply(_builtin(failure_type, lane), custom, where)
            lane_custom = custom.get(lane.value, {})
            if not isinstance(lane_custom, dict) or set(lane_custom) - _TABLE_KEYS:
                raise UsageError(f"{where}.{lane}: must be a table of {', '.join(sorted(_TABLE_KEYS))}")
            table[failure_type, lane] = _apply(plan, lane_custom, f"{where}.{lane}")
    return table

