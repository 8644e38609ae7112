"""Recovery planner: the plan for a failure type in a lane, with the concrete checkpoint filled in.

The plan is a sequence of actions, so the seed's automated loop can escalate
with ``recovery_plan[:attempt]``. Where a command restores a checkpoint, the
newest successful step checkpoint of the lane replaces the placeholder: that
is the last state known to have passed the step it was taken before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from .plans import PlanTable, build_table
from .vocabulary import FailureType, Lane, RecoveryStrategy

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
    """Looks plans up in the plan table and fills in the lane and its newest good checkpoint.

    ``newest_success(lane)`` returns that checkpoint's id or None; the
    system passes one that reads the store (and returns None without one).
    """

    def __init__(self, table: PlanTable | None = None,
                 newest_success: Callable[[str], str | None] | None = None) -> None:
        self.table = table if table is not None else build_table()
        self.newest_success = newest_success or (lambda lane: None)

    def get_recovery_plan(self, failure_type: FailureType | str = FailureType.UNKNOWN,
                          lane: Lane | str = "standard") -> RecoveryPlan:
        """The plan for ``failure_type`` in ``lane`` (the seed's call, usable as ``plan[:attempt]``)."""
        ftype, chosen = FailureType.parse(failure_type), Lane.parse(lane)
        template = self.table[ftype, chosen]
        needs = any(s.command and "{checkpoint}" in s.command for s in template.steps)
        checkpoint_id = self.newest_success(chosen.value) if needs else None
        actions = [RecoveryAction(i, s.action, _fill(s.command, chosen, checkpoint_id), s.time_s,
                                  s.strategy, s.detail)
                   for i, s in enumerate(template.steps, 1)]
        notes = [template.note] if template.note else []
        if needs and checkpoint_id is None:
            notes.append(f"no successful checkpoint of the {chosen} lane yet: replace {PLACEHOLDER} "
                         "with an id from 'rrstore list'")
        return RecoveryPlan(ftype, chosen, template.strategy, actions, checkpoint_id, notes)


def _fill(command: str | None, lane: Lane, checkpoint_id: str | None) -> str | None:
    if command is None:
        return None
    return command.replace("{lane}", lane.value).replace("{checkpoint}", checkpoint_id or PLACEHOLDER)
