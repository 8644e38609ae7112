"""Recovery planner: the plan for a failure type in a lane, with the concrete checkpoint filled in.

The plan is a sequence of actions, so the seed's automated loop can escalate
with ``recovery_plan[:attempt]``. Where a command restores a checkpoint, the
newest successful step checkpoint of the lane replaces the placeholder: that
is the last state known to have passed the step it was taken before.

Every command is checked against the project (``ProjectFacts``) before it is
shown: ``rrstore workflow --lane X`` only when ``[workflow.X]`` is declared
(and, for a ``--resume`` of a known failed step, only when that step is one
of the workflow's), ``git`` only in a git work tree, the docs check only
when one fits the docs present, any other program only when installed, and
pytest's paths only when the project has them. A command that cannot run
is replaced by its step's ``without`` row, or by no command and the reason;
a plan never suggests a command that fails for want of something the
project lacks.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, overload

from .classify import Classification
from .facts import ProjectFacts
from .plans import GIT_OPERATIONS, LanePlan, PlanStep, PlanTable, build_table
from .vocabulary import FailedStep, FailureType, Lane, RecoveryStrategy

PLACEHOLDER = "<checkpoint-id>"


def format_time(seconds: int | None) -> str:
    return "varies" if seconds is None else f"{seconds}s"


@dataclass(frozen=True)
class RecoveryAction:
    """One step of a plan: what to do, the command that does it, and about how long it takes."""

    step: int
    action: str
    command: str | None
    time_s: int | None
    strategy: RecoveryStrategy | None = None
    detail: str | None = None

    @property
    def time(self) -> str:
        return format_time(self.time_s)

    @property
    def needs_checkpoint(self) -> bool:
        """True when the command still holds the placeholder (the lane has no successful checkpoint)."""
        return self.command is not None and PLACEHOLDER in self.command

    def __str__(self) -> str:
        return f"{self.step}. {self.action}: {self.command or self.detail or ''} ({self.time})"

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "action": self.action, "command": self.command, "detail": self.detail,
                "time_s": self.time_s, "time": self.time,
                "strategy": self.strategy.value if self.strategy else None}


@dataclass
class RecoveryPlan(Sequence[RecoveryAction]):
    """The ordered actions for one failure in one lane, and the strategy to follow."""

    failure_type: FailureType
    lane: Lane
    strategy: RecoveryStrategy
    actions: list[RecoveryAction] = field(default_factory=list)
    checkpoint_id: str | None = None
    notes: list[str] = field(default_factory=list)
    success: bool = True

    @overload
    def __getitem__(self, index: int) -> RecoveryAction: ...

    @overload
    def __getitem__(self, index: slice) -> list[RecoveryAction]: ...

    def __getitem__(self, index: int | slice) -> RecoveryAction | list[RecoveryAction]:
        return self.actions[index]

    def __len__(self) -> int:
        return len(self.actions)

    def __iter__(self) -> Iterator[RecoveryAction]:
        return iter(self.actions)

    @property
    def total_time_s(self) -> int | None:
        """Time of every step, or None when one of them varies."""
        times = [a.time_s for a in self.actions]
        return None if any(t is None for t in times) else sum(t for t in times if t is not None)

    @property
    def message(self) -> str:
        return "\n".join(self.lines())

    def lines(self) -> list[str]:
        """The plan as a human reads it: header, a table of steps, the notes."""
        s = self.strategy
        out = [f"Recovery plan: {self.failure_type} in the {self.lane} lane ({self.lane.characteristics})",
               f"Strategy: {s.name} - {s.description} (when: {s.when_to_use}; time: {s.time_impact})", ""]
        rows = [("STEP", "ACTION", "COMMAND", "TIME")]
        rows += [(str(a.step), a.action, a.command or f"({a.detail or 'by hand'})", a.time) for a in self.actions]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        out += [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows]
        if self.checkpoint_id:
            out.append(f"\nCheckpoint: {self.checkpoint_id} (newest successful checkpoint of the {self.lane} lane)")
        out += [f"Note: {note}" for note in self.notes]
        return out

    def to_json(self) -> dict[str, Any]:
        s = self.strategy
        return {"failure_type": self.failure_type.value, "lane": self.lane.value,
                "lane_characteristics": self.lane.characteristics,
                "strategy": s.value, "strategy_description": s.description,
                "strategy_when": s.when_to_use, "strategy_time_impact": s.time_impact,
                "checkpoint_id": self.checkpoint_id, "total_time_s": self.total_time_s,
                "actions": [a.to_json() for a in self.actions], "notes": self.notes}


class RecoveryPlanner:
    """Looks plans up in the plan table and fills them in for the lane and the project.

    ``newest_success(lane)`` returns that lane's newest good checkpoint id or
    None; the system passes one that reads the store, and the project's root
    and store, so commands are checked against what the project has (see the
    module docstring). Facts are read afresh for every plan: a merge may
    have started since the last one.
    """

    def __init__(self, table: PlanTable | None = None,
                 newest_success: Callable[[str], str | None] | None = None,
                 root: Path | None = None, store: Path | None = None, docs_check: str | None = None) -> None:
        self.table = table if table is not None else build_table()
        self.newest_success = newest_success or (lambda lane: None)
        self.root, self.store, self.docs_check = root, store, docs_check

    def get_recovery_plan(self, failure_type: FailureType | str | Classification = FailureType.UNKNOWN,
                          lane: Lane | str = "standard", step: FailedStep | None = None) -> RecoveryPlan:
        """The plan for ``failure_type`` in ``lane`` (the seed's call, usable as ``plan[:attempt]``).

        Given a ``Classification``, its rule's own plan, strategy and advice
        (a certificate failure is fixed, not retried) override the failure
        type's. Given the failed ``step``, a re-run resumes its workflow only
        when it is one of the lane's declared steps, else re-runs that step.
        """
        if isinstance(failure_type, Classification):
            found, ftype = failure_type, failure_type.failure_type
        else:
            found, ftype = None, FailureType.parse(failure_type)
        chosen = Lane.parse(lane)
        facts = ProjectFacts(self.root, self.store, self.docs_check)
        template, notes = self._template(ftype, chosen, facts, found.plan if found else None)
        needs = any(s.command and "{checkpoint}" in s.command for s in _rows(template.steps))
        checkpoint_id = self.newest_success(chosen.value) if needs else None
        fill = _Filler(chosen, checkpoint_id, facts, step, _module(found))
        actions = [fill.action(i, s) for i, s in enumerate(template.steps, 1)]
        if template.note:
            notes.insert(0, template.note)
        strategy = template.strategy
        if found and found.strategy:
            strategy = found.strategy
        if found and found.advice:
            notes.append(f"{found.rule}: {found.advice}")
        if needs and checkpoint_id is None and any(a.needs_checkpoint for a in actions):
            notes.append(f"no successful checkpoint of the {chosen} lane yet: replace {PLACEHOLDER} "
                         "with an id from 'rrstore list'")
        return RecoveryPlan(ftype, chosen, strategy, actions, checkpoint_id, notes)

    def _template(self, ftype: FailureType, lane: Lane, facts: ProjectFacts,
                  rule_plan: str | None) -> tuple[LanePlan, list[str]]:
        """The table's plan (or the classifier rule's own), or the git operation's while one waits."""
        template = self.table[ftype, lane]
        template = template.by_rule.get(rule_plan or "", template)
        operation, merge_head = facts.operation
        if operation is None:
            return template, []
        head = f" (MERGE_HEAD {merge_head[:12]})" if merge_head else ""
        note = f"a {operation} is in progress{head}: 'git status' shows it; finish or abort it first"
        if ftype is FailureType.GIT_ERROR and template.in_progress is not None and operation in GIT_OPERATIONS:
            return template.in_progress, [note]
        return template, [note]


def _rows(steps: Sequence[PlanStep]) -> Iterator[PlanStep]:
    """Every row and fallback row of ``steps``."""
    for step in steps:
        current: PlanStep | None = step
        while current is not None:
            yield current
            current = current.fallback


_MODULE = re.compile(r"No module named '?([\w.]+)'?")


def _module(found: Classification | None) -> str:
    match = _MODULE.search(found.evidence) if found else None
    return f"the module {match.group(1)!r}" if match else "the module"


# 'rrstore workflow --lane X' needs [workflow.X]; checked on the filled-in command.
_WORKFLOW = re.compile(r"\brrstore workflow --lane (\S+)")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


class Filled(NamedTuple):
    """A filled-in command (None: it cannot run here) and why (None: nothing to say)."""

    command: str | None
    reason: str | None = None


class _Filler:
    """Fills one plan's placeholders and swaps in a step's fallback where its command cannot run."""

    def __init__(self, lane: Lane, checkpoint_id: str | None, facts: ProjectFacts, step: FailedStep | None,
                 module: str) -> None:
        self.lane, self.checkpoint_id, self.facts, self.step = lane, checkpoint_id, facts, step
        operation = facts.operation[0]
        self.words = GIT_OPERATIONS.get(operation or "", {}) | {"operation": operation or "operation",
                                                                  "module": module}

    def action(self, number: int, step: PlanStep) -> RecoveryAction:
        filled = self.command(step.command)
        first = filled.reason if filled.command is None else None
        while filled.command is None and step.command is not None and step.fallback is not None:
            step = step.fallback  # the next fallback row, while the command cannot run here
            filled = self.command(step.command)
        reasons = [r for r in dict.fromkeys((first, filled.reason)) if r]
        detail = self.text(step.detail)
        if reasons:
            detail = f"{detail}: {'; '.join(reasons)}" if detail else "; ".join(reasons)
        return RecoveryAction(number, self.text(step.action) or step.action, filled.command, step.time_s,
                              step.strategy, detail)

    def text(self, value: str | None) -> str | None:
        if value is None:
            return None
        for key, word in self.words.items():
            value = value.replace("{" + key + "}", word)
        return value.replace("{keep}", self.facts.keep)

    def command(self, command: str | None) -> Filled:
        """The filled-in command, or None and why it cannot run here.

        Of a ``;`` list, the commands that cannot run are left out (and
        named); of an ``&&`` chain, every command must run.
        """
        if command is None:
            return Filled(None)
        if " {tests}" in command:  # pytest's test directory, or none: then pytest looks for itself
            command = command.replace(" {tests}", f" {self.facts.tests}" if self.facts.tests else "")
        filled = self.text(command.replace("{lane}", self.lane.value)
                           .replace("{checkpoint}", self.checkpoint_id or PLACEHOLDER)) or ""
        for key, check in (("{docs_check}", self.facts.docs), ("{remote}", self.facts.remote)):
            if key in filled:
                if check.command is None:
                    return Filled(None, check.reason)
                filled = filled.replace(key, check.command)
        if "{rerun}" in filled and self.step is None:
            return Filled(None, "the failed step's command is not known here")
        kept, reasons = [], []
        for listed in filled.split(";"):
            chain = [self.part(part.strip()) for part in listed.split("&&")]
            why = [c.reason for c in chain if c.command is None]
            if why:
                reasons += why
            else:
                kept.append(" && ".join(c.command or "" for c in chain))
        reason = "; ".join(dict.fromkeys(r for r in reasons if r)) or None
        if not kept:
            return Filled(None, reason)
        # the step's own command line goes in last: its quoted ';' and '&&' are not the plan's
        return Filled("; ".join(kept).replace("{rerun}", self.step.rerun if self.step else ""), reason)

    def part(self, part: str) -> Filled:
        """One simple command: its program and paths exist here (a project bin dir's program named by path)."""
        if part == "{rerun}" or part.startswith("rrstore "):
            return self.rrstore(part)
        if part.startswith("git "):
            return Filled(part) if self.facts.git else Filled(None, "not a git repository")
        try:
            words = shlex.split(part)
        except ValueError:  # a project's own shell syntax: shown as written
            return Filled(part)
        first = next((i for i, w in enumerate(words) if not _ASSIGNMENT.match(w)), None)
        if first is None:
            return Filled(part)
        program = self.facts.program(words[first])
        if program.command is None:
            return Filled(None, program.reason)
        if words[first] == "pytest":
            missing = [p for p in _pytest_paths(words[first + 1:]) if not self.facts.path_exists(p)]
            if missing:
                return Filled(None, f"{', '.join(missing)}: no such path in the project")
        if program.command != words[first]:
            at = part.index(words[first])
            part = part[:at] + program.command + part[at + len(words[first]):]
        return Filled(part)

    def rrstore(self, part: str) -> Filled:
        declared = _WORKFLOW.match(part)
        if declared is None:
            return Filled(part)
        lane = declared.group(1)
        steps = self.facts.workflow_steps.get(lane)
        if steps is None:
            return Filled(None, f"no [workflow.{lane}] declared")
        step = self.step
        if step is not None and "--resume" in part.split() and lane == self.lane.value \
                and not (0 < step.number <= len(steps) and steps[step.number - 1] == step.name):
            return Filled(None, f"step {step.number} ({step.name}) is not a step of [workflow.{lane}]")
        return Filled(part)


def _pytest_paths(args: list[str]) -> list[str]:
    """The paths pytest is given: its arguments that are not options, and --ignore's."""
    paths = []
    for arg in args:
        if arg.startswith("--ignore="):
            paths.append(arg.split("=", 1)[1])
        elif not arg.startswith("-"):
            paths.append(arg.split("::", 1)[0])
    return paths
