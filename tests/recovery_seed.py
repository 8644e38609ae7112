"""What the recovery tests read from the seed guide: plan tables, strategies, lanes, two examples.

Parsed from the guide itself (``shared/seed`` beside the repository when it
is there, else the vendored copy in ``tests/fixtures/seed``), so the tests
check the code against the user's tables, not against a retyped copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENDORED = REPO / "tests" / "fixtures" / "seed" / "ROLLBACK_RECOVERY_GUIDE.md"
SHARED = REPO.parent / "shared" / "seed" / "ROLLBACK_RECOVERY_GUIDE.md"

TITLES = {"Timeout Failure": "timeout", "Test Failure": "test_failure", "Quality Gate Failure": "quality_gate",
          "Resource Exhaustion": "resource_exhaustion", "Network Error": "network_error", "Git Error": "git_error"}


def guide() -> str:
    return (SHARED if SHARED.is_file() else VENDORED).read_text()


def headings(text: str) -> list[tuple[int, int, str]]:
    """(offset, level, line) of every markdown heading outside fenced code (where '#' starts a comment)."""
    out, offset, fenced = [], 0, False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (found := re.match(r"^(#+) ", line)):
            out.append((offset, len(found.group(1)), line.rstrip("\n")))
        offset += len(line)
    return out


def section(text: str, heading: str) -> str:
    """The body under ``heading`` (a full heading line such as '### Automated Recovery Loop')."""
    level = len(heading.split()[0])
    start = text.index(heading + "\n") + len(heading) + 1
    ends = [at for at, depth, _ in headings(text) if at >= start and depth <= level]
    return text[start:ends[0]] if ends else text[start:]


def table_rows(text: str) -> list[list[str]]:
    """Body rows of the first markdown table in ``text``, cells stripped."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


@dataclass(frozen=True)
class SeedStep:
    step: int
    action: str
    command: str  # as written: `literal` in backticks, or words
    time: str

    @property
    def literal(self) -> str | None:
        return self.command[1:-1] if self.command.startswith("`") and self.command.endswith("`") else None

    @property
    def seconds(self) -> int | None:
        return None if self.time == "varies" else int(self.time.rstrip("s"))


def plan_tables() -> dict[str, list[SeedStep]]:
    """failure type -> the seed's recovery plan rows."""
    body = section(guide(), "## Failure Types & Recovery")
    out = {}
    for _, _, line in headings(body):
        match = re.match(r"^### \d+\. (.+)$", line)
        if not match:
            continue
        sub = section(body, line)
        plan = sub[sub.index("**Recovery Plan**"):]
        out[TITLES[match.group(1)]] = [SeedStep(int(r[0]), r[1], r[2], r[3]) for r in table_rows(plan)]
    return out


def strategies() -> dict[str, tuple[str, str, str]]:
    """strategy name -> (description, when to use, time impact)."""
    rows = table_rows(section(guide(), "### Available Strategies"))
    return {r[0].strip("*"): (r[1], r[2], r[3]) for r in rows}


def lane_characteristics() -> dict[str, str]:
    body = section(guide(), "## Lane-Specific Recovery")
    out = {}
    for _, _, line in headings(body):
        match = re.match(r"^### (\w+) Lane Recovery$", line)
        if match:
            found = re.search(r"\*\*Characteristics\*\*: (.+)", section(body, line))
            assert found
            out[match.group(1).lower()] = found.group(1).strip()
    return out


def example(heading: str) -> str:
    """The python code block under ``heading``, with only the import line adapted to rrstore."""
    body = section(guide(), heading)
    code = body[body.index("```python\n") + len("```python\n"):]
    code = code[:code.index("```")]
    return code.replace("from scripts.rollback_recovery import", "from rrstore import")
