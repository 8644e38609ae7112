"""Recovery plans as data: the seed's tables, adapted per lane, overridable per project.

``PLAN_TABLE`` is the one table the planner reads. Each failure type has a
recommended strategy, an optional note per lane, and ordered steps (the
seed's step, action, command, time). A step may carry lane variants (keys
``docs``, ``standard``, ``heavy`` holding the fields that differ in that
lane) or be limited to some lanes (``lanes``). ``without`` holds the fields
that replace the step's where its command cannot run in the project (no
workflow declared for that lane, no git, no documentation checker, a
program not installed); a ``without`` may hold its own, tried next. The
planner fills in ``{checkpoint}``, ``{lane}``, ``{docs_check}`` (the check
chosen from the docs present), ``{remote}`` (the git remote to fetch),
``{keep}`` (``git clean`` options that spare rrstore's configuration and
store), ``{tests}`` (pytest's test directory, if any) and ``{rerun}`` (the
failed step's own ``rrstore run ...``, when the planner is told the step);
see ``facts.ProjectFacts``. A rule of the classifier may name its own plan
(``rules``), which a classification from that rule gets: a missing module
or a certificate is fixed first, then the step re-run. Nothing here deletes an untracked file
without naming it first, and a git command that discards work runs only
after a checkpoint that keeps it.

A project replaces any of it in ``rrstore.toml`` (or ``[tool.rrstore]``)::

    [recovery.plans.test_failure]          # every lane
    strategy = "retry"
    steps = [{ action = "Re-run the last failures", command = "pytest --lf -x", time = 120 }]

    [recovery.plans.test_failure.heavy]    # only the heavy lane
    steps = [{ action = "Re-run with more workers", command = "pytest -n 4", time = "5m" }]
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..gc import parse_duration
from ..worktree.gitrepo import OPERATION_ADVICE
from .vocabulary import FailureType, Lane, RecoveryStrategy

GATES = "ruff check .; mypy . --ignore-missing-imports; bandit -r ."
DOCS = "{docs_check}"
RESTORE = "rrstore restore --checkpoint-id {checkpoint}"
# A git command that discards work runs only after a checkpoint that keeps that work (and fails
# with it: '&&'), recorded as failed so no plan ever suggests restoring it as a good state.
RESUME = "rrstore workflow --lane {lane} --resume"
# Run the failed step again: resume its workflow when it is one of the lane's declared steps, else
# the same 'rrstore run ...' ({rerun}, known when the planner is told the step), else in words.
RERUN = {"command": RESUME, "strategy": "retry", "detail": "re-run the failed step",
         "without": {"command": "{rerun}", "without": {"command": None}}}
KEEP_FIRST = "rrstore checkpoint --lane {lane} --step-number 0 --step-name before-{verb} --status failed && "

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
             "without": {"command": None, "detail": "Retry with HEAVY: re-run the step with the heavy lane's "
                                                    "limit ('rrstore run --lane heavy --timeout 1200 ...')"},
             "docs": {"command": "rrstore workflow --lane standard", "detail": "Retry with STANDARD", "time": 900,
                      "without": {"command": None, "detail": "Retry with STANDARD: re-run the step with the "
                                                             "standard lane's limit ('rrstore run --lane standard "
                                                             "--timeout 900 ...')"}},
             "heavy": {"action": "Split the step or raise its timeout", "command": None,
                       "detail": "HEAVY is the heaviest lane", "time": None, "strategy": "manual"}},
        ],
    },
    "test_failure": {
        "strategy": "manual",
        "notes": {"docs": "In the docs lane, check the documentation first (step 1)."},
        "steps": [
            {"action": "Check documentation", "command": DOCS, "time": 30, "lanes": ["docs"]},
            {"action": "Re-run failed tests", "command": "pytest {tests} -v -x", "time": 180, "strategy": "retry"},
            {"action": "Run with detailed output", "command": "pytest -v --tb=short", "time": 180},
            {"action": "Skip and continue", "command": "pytest --ignore=tests/broken", "time": 120, "strategy": "skip",
             "without": {"command": None, "detail": "Skip and continue: re-run pytest with --ignore=PATH for the "
                                                    "tests to skip"}},
            {"action": "Manual review", "detail": "Fix failing tests", "time": None, "strategy": "manual"},
        ],
        # A classification rule's own plan (classify.Rule.plan): the fix first, then the re-run.
        "rules": {
            "missing_module": {
                "strategy": "manual",
                "steps": [
                    {"action": "Install the missing module", "time": None, "strategy": "manual",
                     "detail": "install {module} (the project's dependencies) in the interpreter the step runs"},
                    {"action": "Check the project's environment", "command": "rrstore validate", "time": 30,
                     "detail": "names the interpreter it checks and the dependencies missing there"},
                    {"action": "Re-run the step", **RERUN, "time": 180},
                ],
            },
        },
    },
    "quality_gate": {
        "strategy": "manual",
        "notes": {"docs": "In the docs lane the gates are the documentation checks."},
        "steps": [
            {"action": "Run gates individually", "command": GATES, "detail": "ruff, mypy and bandit one by one",
             "time": 120, "docs": {"command": DOCS, "detail": "documentation check"}},
            {"action": "Fix issues automatically", "command": "ruff check --fix", "time": 60,
             "docs": {"action": "Fix documentation issues", "command": None,
                      "detail": "edit the lines the documentation check names", "strategy": "manual"}},
            {"action": "Re-run gates", "command": GATES, "detail": "Verify fixes", "time": 60, "strategy": "retry",
             "docs": {"command": DOCS}},
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
            {"action": "Clean up temp files", "command": "git clean -n -d {keep}",
             "detail": "lists the untracked files 'git clean -f -d {keep}' would delete (never rrstore's "
                       "configuration or store); 'rrstore checkpoint' first keeps them", "time": 30,
             "without": {"command": "rrstore cleanup --dry-run",
                         "detail": "lists the caches and leftovers 'rrstore cleanup' removes"}},
            {"action": "Clear caches", "command": "rrstore cleanup",
             "detail": "__pycache__, *.pyc, *.pyo, .pytest_cache; never a tracked file", "time": 20},
            {"action": "Clear pytest cache", "command": "pytest --cache-clear", "time": 30},
            {"action": "Downgrade lane", "command": "rrstore workflow --lane docs", "detail": "Try lighter lane",
             "time": None, "strategy": "retry",
             "without": {"command": None, "detail": "Try lighter lane: re-run the step in the docs lane"},
             "heavy": {"command": "rrstore workflow --lane standard",
                       "without": {"command": None,
                                   "detail": "Try lighter lane: re-run the step in the standard lane"}},
             "docs": {"action": "Free disk space or memory", "command": "df -h; free -h",
                      "detail": "DOCS is the lightest lane", "strategy": "manual"}},
        ],
    },
    "network_error": {
        "strategy": "retry",
        "steps": [
            {"action": "Check connectivity", "command": "ping 8.8.8.8; nc -zv github.com 22", "time": 30,
             "without": {"command": "curl -sS -o /dev/null --max-time 10 https://github.com",
                         "detail": "name resolution, a connection and TLS to github.com"}},
            {"action": "Wait and retry", "command": "sleep 60 && " + RESUME,
             "detail": "Wait 60s then retry", "time": 60, "strategy": "retry",
             "without": {"command": "sleep 60 && {rerun}", "detail": "Wait 60s, then re-run the failed step",
                         "without": {"command": "sleep 60"}}},
            {"action": "Use checkpoint", "command": RESTORE + " && " + RESUME,
             "detail": "Resume from checkpoint", "time": 120, "strategy": "resume",
             "without": {"command": RESTORE + " && {rerun}",
                         "detail": "Restore the checkpoint, then re-run the failed step",
                         "without": {"command": RESTORE}}},
        ],
        "rules": {
            "certificate": {
                "strategy": "manual",
                "steps": [
                    {"action": "Fix the certificate or CA bundle", "time": None, "strategy": "manual",
                     "detail": "point the client at the right CA bundle (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, "
                               "pip --cert, npm cafile) or fix the server's certificate"},
                    {"action": "Re-run the step", **RERUN, "time": 60},
                ],
            },
        },
    },
    "git_error": {
        "strategy": "rollback",
        "steps": [
            {"action": "Check status", "command": "git status; git log", "time": 30},
            {"action": "Fetch latest", "command": "git fetch {remote}", "time": 60},
            {"action": "Reset changes", "command": KEEP_FIRST.replace("{verb}", "reset") + "git reset --hard",
             "detail": "keeps the changes in a checkpoint, then resets tracked files to HEAD", "time": 20,
             "strategy": "rollback"},
            {"action": "Manual recovery", "command": RESTORE, "detail": "Restore from checkpoint", "time": None,
             "strategy": "manual"},
        ],
        # While a merge, rebase, cherry-pick, revert or bisect waits (rrstore.worktree.gitrepo.OPERATIONS), git
        # refuses most commands until it is finished or aborted: these steps replace the ones above.
        "in_progress": {
            "strategy": "manual",
            "steps": [
                {"action": "See the {operation} in progress", "command": "git status",
                 "detail": "names the conflicted paths", "time": 30},
                {"action": "Finish the {operation}", "command": "{finish}",
                 "detail": "{finish_when}", "time": 60, "strategy": "manual"},
                {"action": "Or abort the {operation}", "command": KEEP_FIRST.replace("{verb}", "abort") + "{abort}",
                 "detail": "keeps the work in a checkpoint, then returns to the state before the {operation}",
                 "time": 20, "strategy": "rollback"},
                {"action": "Manual recovery", "command": RESTORE, "detail": "Restore from checkpoint",
                 "time": None, "strategy": "manual"},
            ],
        },
    },
    # Not in the seed's tables: the escalation of its 'Multi-Step Recovery' (retry; validate and
    # clean up; restore), so the 'Automated Recovery Loop' can run recovery_plan[:attempt].
    "unknown": {
        "strategy": "retry",
        "notes": {"docs": "In the docs lane, check the documentation too (step 3)."},
        "steps": [
            {"action": "Validate state", "command": "rrstore validate", "time": 30},
            {"action": "Clean up failed state", "command": "rrstore cleanup", "time": 30},
            {"action": "Check documentation", "command": DOCS, "time": 30, "lanes": ["docs"]},
            {"action": "Restore last good checkpoint", "command": RESTORE, "time": 60, "strategy": "rollback"},
            {"action": "Manual review", "detail": "read the step's output; 'rrstore classify' names the failure",
             "time": None, "strategy": "manual"},
        ],
    },
}

# How to finish and abort each operation rrstore.worktree.gitrepo.operation_in_progress names (the commands are
# gitrepo.OPERATION_ADVICE, which validate prints too), and when finishing is right.
_FINISH_WHEN = {
    "merge": "once the conflicted files are fixed and 'git add'-ed",
    "rebase": "once the conflicted files are fixed and 'git add'-ed (repeat per stop)",
    "cherry-pick": "once the conflicted files are fixed and 'git add'-ed",
    "revert": "once the conflicted files are fixed and 'git add'-ed",
    "bisect": "once 'git bisect good' / 'git bisect bad' named the first bad commit",
}
GIT_OPERATIONS: dict[str, dict[str, str]] = {
    operation: {"finish": finish, "abort": abort, "finish_when": _FINISH_WHEN[operation]}
    for operation, (finish, abort) in OPERATION_ADVICE.items()
}

_STEP_KEYS = {"action", "command", "detail", "time", "strategy", "without"}
_TABLE_KEYS = {"strategy", "steps", "note"}


@dataclass(frozen=True)
class PlanStep:
    """One row of a plan before the planner fills in the checkpoint.

    ``fallback`` is the row to show instead when the command cannot run in
    this project (a lane without a declared workflow, no git, no docs checker).
    """

    action: str
    command: str | None = None
    detail: str | None = None
    time_s: int | None = None
    strategy: RecoveryStrategy | None = None
    fallback: PlanStep | None = None


@dataclass(frozen=True)
class LanePlan:
    strategy: RecoveryStrategy
    steps: tuple[PlanStep, ...]
    note: str | None = None
    in_progress: LanePlan | None = None  # the plan while a git operation waits (git_error's built-in)
    by_rule: dict[str, LanePlan] = field(default_factory=dict)  # classify.Rule.plan -> its own plan


PlanTable = dict[tuple[FailureType, Lane], LanePlan]
# The words after 'rrstore' of a suggested command -> what rrstore's parser says is wrong, or None.
# The CLI passes its click parser (the library never imports the CLI; see build_table).
CommandCheck = Callable[[list[str]], str | None]
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_SAMPLES = {"checkpoint": "standard-step1-20260101_000000", "lane": "standard"}


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
    without = raw.get("without")
    fallback = None
    if without is not None:
        if not isinstance(without, dict):
            raise UsageError(f"{where}: 'without' must be a table of the step's keys")
        fallback = _step({**{k: v for k, v in raw.items() if k != "without"}, **without}, f"{where} without")
    return PlanStep(action, raw.get("command"), raw.get("detail"), parse_time(raw.get("time"), where),
                    _strategy(strategy, where) if strategy is not None else None, fallback)


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
    in_progress = None
    if "in_progress" in entry:
        in_progress = _fixed(entry["in_progress"], f"built-in plan {failure_type} (operation in progress)")
    by_rule = {name: _fixed(plan, f"built-in plan {failure_type} ({name})")
               for name, plan in entry.get("rules", {}).items()}
    return LanePlan(RecoveryStrategy.parse(entry["strategy"]), tuple(steps), note, in_progress, by_rule)


def _fixed(entry: dict[str, Any], where: str) -> LanePlan:
    """A built-in plan that is the same in every lane (an operation in progress, a rule's own)."""
    return LanePlan(RecoveryStrategy.parse(entry["strategy"]),
                    tuple(_step(row, f"{where} step {i}") for i, row in enumerate(entry["steps"], 1)))


def check_commands(step: PlanStep, where: str, check: CommandCheck) -> None:
    """A UsageError naming ``where`` when an ``rrstore ...`` of ``step`` (or its fallbacks) does not parse."""
    row: PlanStep | None = step
    while row is not None:
        text = _PLACEHOLDER.sub(lambda m: _SAMPLES.get(m.group(1), "x"), row.command or "")
        for part in re.split(r"&&|\|\||;", text):
            try:
                words = shlex.split(part)
            except ValueError:
                continue
            problem = check(words[1:]) if words[:1] == ["rrstore"] else None
            if problem:
                raise UsageError(f"{where}: '{part.strip()}' does not run: {problem}")
        row = row.fallback


def _apply(plan: LanePlan, table: dict[str, Any], where: str, check: CommandCheck | None = None) -> LanePlan:
    """``plan`` with what a configuration table sets (strategy, steps, note) replaced."""
    strategy, steps, note, in_progress, by_rule = plan.strategy, plan.steps, plan.note, plan.in_progress, plan.by_rule
    if "strategy" in table:
        strategy = _strategy(table["strategy"], where)
    if "steps" in table:
        raw = table["steps"]
        if not isinstance(raw, list) or not raw or not all(isinstance(s, dict) for s in raw):
            raise UsageError(f"{where}: 'steps' must be a non-empty array of tables")
        steps = tuple(_step(s, f"{where} step {i}") for i, s in enumerate(raw, 1))
        for i, step in enumerate(steps, 1):
            if check is not None:
                check_commands(step, f"{where} step {i}", check)
        in_progress, by_rule = None, {}  # the project's own steps apply whatever git is doing or the rule
    if "note" in table:
        if not isinstance(table["note"], str):
            raise UsageError(f"{where}: 'note' must be a string")
        note = table["note"]
    return LanePlan(strategy, steps, note, in_progress, by_rule)


def build_table(overrides: dict[str, Any] | None = None, source: str = "configuration",
                check: CommandCheck | None = None) -> PlanTable:
    """Every (failure type, lane) plan: the built-in table with the project's overrides applied.

    Overrides are checked in full, so a typo is an error rather than a plan
    that silently stays the default; with ``check`` (the CLI's click
    parser), every ``rrstore ...`` an override's step suggests must parse.
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
            plan = _apply(_builtin(failure_type, lane), custom, where, check)
            lane_custom = custom.get(lane.value, {})
            if not isinstance(lane_custom, dict) or set(lane_custom) - _TABLE_KEYS:
                raise UsageError(f"{where}.{lane}: must be a table of {', '.join(sorted(_TABLE_KEYS))}")
            table[failure_type, lane] = _apply(plan, lane_custom, f"{where}.{lane}", check)
    return table

