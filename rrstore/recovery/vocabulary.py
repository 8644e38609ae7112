"""The recovery layer's words: failure types, strategies and lanes (the seed's tables).

These are plain enums whose values are the command-line spellings, so
``FailureType("test_failure")`` parses what a user typed and ``str(ft)``
prints it back. Facts about each member (the seed's descriptions, time
impacts and lane characteristics) are data beside the enum, not branches.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from ..errors import UsageError
from ..lanes import check_lane

E = TypeVar("E", bound=StrEnum)


def _member(cls: type[E], value: object, what: str, text: str) -> E:
    """``value`` when it is already a member, else the member whose value is ``text`` (``value`` as
    the enum normalises it); a UsageError naming the choices when there is none."""
    if isinstance(value, cls):
        return value
    for member in cls:
        if text == member.value:
            return member
    raise UsageError(f"unknown {what} {value!r}: choose one of {', '.join(m.value for m in cls)}")


class FailureType(StrEnum):
    """What went wrong, as far as the output of the failed step tells."""

    TIMEOUT = "timeout"  # the step's own time limit ran out (a client's network timeout is NETWORK_ERROR)
    TEST_FAILURE = "test_failure"
    QUALITY_GATE = "quality_gate"
    RESOURCE_EXHAUSTION = "resource_exhaustion"
    NETWORK_ERROR = "network_error"
    GIT_ERROR = "git_error"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: str | FailureType) -> FailureType:
        """A member from its value or name (any case); a clear usage error otherwise."""
        return _member(cls, value, "failure type", str(value).strip().lower().replace("-", "_"))


@dataclass(frozen=True)
class StrategyFacts:
    description: str
    when_to_use: str
    time_impact: str


class RecoveryStrategy(StrEnum):
    """How to get going again (the seed's 'Available Strategies' table)."""

    RETRY = "retry"
    RESUME = "resume"
    SKIP = "skip"
    ROLLBACK = "rollback"
    MANUAL = "manual"

    @property
    def facts(self) -> StrategyFacts:
        return STRATEGY_FACTS[self]

    @property
    def description(self) -> str:
        return self.facts.description

    @property
    def when_to_use(self) -> str:
        return self.facts.when_to_use

    @property
    def time_impact(self) -> str:
        return self.facts.time_impact

    @classmethod
    def parse(cls, value: str | RecoveryStrategy) -> RecoveryStrategy:
        """A member from its value or name (any case); a clear usage error otherwise."""
        return _member(cls, value, "recovery strategy", str(value).strip().lower())


STRATEGY_FACTS: dict[RecoveryStrategy, StrategyFacts] = {
    RecoveryStrategy.RETRY: StrategyFacts("Retry the failed step", "Transient errors", "+5-60 min"),
    RecoveryStrategy.RESUME: StrategyFacts("Continue from checkpoint", "After cleanup", "+2-10 min"),
    RecoveryStrategy.SKIP: StrategyFacts("Skip failed step", "For optional tests", "-time saved"),
    RecoveryStrategy.ROLLBACK: StrategyFacts("Revert to previous state", "Serious issues", "+10-30 min"),
    RecoveryStrategy.MANUAL: StrategyFacts("Manual intervention", "Complex failures", "+varies"),
}


@dataclass(frozen=True)
class LaneFacts:
    characteristics: str
    time_limit_s: int
    typical_issues: tuple[str, ...]


class Lane(StrEnum):
    """Workflow lanes, lightest first (the seed's 'Lane-Specific Recovery')."""

    DOCS = "docs"
    STANDARD = "standard"
    HEAVY = "heavy"

    @property
    def facts(self) -> LaneFacts:
        return LANE_FACTS[self]

    @property
    def characteristics(self) -> str:
        return self.facts.characteristics

    @property
    def time_limit_s(self) -> int:
        return self.facts.time_limit_s

    @property
    def typical_issues(self) -> tuple[str, ...]:
        return self.facts.typical_issues

    @property
    def heavier(self) -> Lane | None:
        """The next more thorough lane (more time), or None for the heaviest."""
        order = list(Lane)
        index = order.index(self)
        return order[index + 1] if index + 1 < len(order) else None

    @property
    def lighter(self) -> Lane | None:
        """The next lighter lane (fewer resources), or None for the lightest."""
        order = list(Lane)
        index = order.index(self)
        return order[index - 1] if index > 0 else None

    @classmethod
    def parse(cls, value: str | Lane) -> Lane:
        """A member from its exact value (as the CLI spells it); ``lanes.check_lane``'s error otherwise."""
        return value if isinstance(value, Lane) else cls(check_lane(str(value)))


LANE_FACTS: dict[Lane, LaneFacts] = {
    Lane.DOCS: LaneFacts("Lightweight, fast (<5 min)", 300,
                         ("Markdown formatting errors", "Documentation build failures", "Link validation failures")),
    Lane.STANDARD: LaneFacts("Balanced, moderate (<15 min)", 900,
                             ("Test failures", "Quality gate violations", "Resource contention")),
    Lane.HEAVY: LaneFacts("Comprehensive, thorough (<20 min)", 1200,
                          ("Complex test failures", "Performance issues", "Integration problems")),
}


@dataclass(frozen=True)
class FailedStep:
    """The step a plan is for (``rrstore run`` passes it): what re-running it means."""

    number: int
    name: str
    rerun: str  # the command that runs this step again, as it ran ('rrstore run ... -- CMD')
