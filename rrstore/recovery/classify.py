"""Failure classifier: names the failure type of a step from its exit status and output.

The rules are a table, tried in order; the first that matches decides, and
the line it matched is kept as evidence so a person can check the call.
They were written against real output of the tools (pytest, unittest,
ruff, mypy, flake8, bandit, git, curl, pip, coreutils ``timeout``, a full
file system; see ``tests/fixtures/recovery``). The order encodes which cause
explains the others:

1. resource exhaustion (a test or git run that died of MemoryError or a full
   disk failed *because* of it);
2. the ``timeout`` utility's statuses 124 and 137 (128 + SIGKILL) without
   out-of-memory evidence: the output of a killed step is cut off anywhere;
3. network errors (before timeouts: 'Connection timed out' is the network's);
4. timeout messages; 5. test failures; 6. quality-gate findings;
7. git errors (after tests: a test's captured output may quote git);
8. otherwise unknown.

Lines that only echo source code (pytest's ``>`` lines, ruff's ``|`` frames,
bandit's numbered listings, traceback source lines) are not evidence: a
source line that mentions 'Connection refused' is not a network failure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .vocabulary import FailureType

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
ECHOED_SOURCE = re.compile(r"^(>\s|\s*\d*\s*\|(\s|$)|\d+\t)")
TRACEBACK_FILE = re.compile(r'^\s*File ".*", line \d+')
# Only the end of a long log is read: failures are reported last.
MAX_LINES = 20_000


@dataclass(frozen=True)
class Rule:
    """``patterns`` tried in order (the first that matches picks the evidence line).

    With ``exit_codes`` the rule applies only to those statuses; a rule
    without patterns then matches on the status alone.
    """

    failure_type: FailureType
    name: str
    patterns: tuple[re.Pattern[str], ...] = ()
    exit_codes: frozenset[int] = frozenset()


def _p(*texts: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(t) for t in texts)


_OOM = (r"\bMemoryError\b", r"[Oo]ut of memory", r"Cannot allocate memory", r"\bOOM[- ]?[Kk]illed\b",
        r"\boom[-_]kill", r"Killed process \d+", r"std::bad_alloc", r"memory allocation failed")
_DISK = (r"No space left on device", r"Disk quota exceeded", r"\bENOSPC\b", r"\bErrno 28\b")

RULES: tuple[Rule, ...] = (
    Rule(FailureType.RESOURCE_EXHAUSTION, "out of memory or disk space", _p(*_DISK, *_OOM)),
    Rule(FailureType.TIMEOUT, "killed on timeout (exit status 124 or 137)",
         _p(r"Timeout exceeded", r"^timeout: sending signal", r"\bKilled\b"), frozenset({124, 137})),
    Rule(FailureType.NETWORK_ERROR, "connection or name resolution failure", _p(
        r"Could not resolve host", r"Temporary failure in name resolution", r"Name or service not known",
        r"nodename nor servname provided", r"[Nn]o address associated with hostname", r"getaddrinfo failed",
        r"Could not resolve hostname", r"Failed to resolve", r"Connection refused", r"Couldn't connect to server",
        r"Failed to connect to", r"Failed to establish a new connection", r"Connection timed out",
        r"Connection reset by peer", r"Network is unreachable", r"No route to host",
        r"\bConnect(ion)?(Refused|Timeout|Reset)?Error\b", r"\bConnectTimeout\b", r"TLS handshake timeout",
        r"Could not connect to")),
    Rule(FailureType.TIMEOUT, "timeout message", _p(
        r"Timeout exceeded", r"Failed: Timeout", r"\+{3,} Timeout \+{3,}", r"^timeout: sending signal",
        r"\btimed out after\b", r"\bTimeoutExpired\b", r"\bTimeoutError\b", r"[Dd]eadline exceeded",
        r"\bexceeded the (maximum )?(execution )?time(out)?\b")),
    Rule(FailureType.TEST_FAILURE, "failed test", _p(
        r"^FAILED \S+::\S+", r"^ERROR \S+::\S+", r"^(FAIL|ERROR): test", r"^FAILED \((failures|errors)=\d+",
        r"ERROR collecting \S+", r"Interrupted: \d+ errors? during collection",
        r"^=*\s*\d+ (failed|errors?)\b.* in [\d.]+s", r"\b\d+ failed\b", r"\bAssertionError\b",
        r"^E\s+(assert|Failed)\b", r"^--- FAIL: ", r"^not ok \d+")),
    Rule(FailureType.QUALITY_GATE, "lint, type or security finding", _p(
        r"^\S+:\d+:\d+: [A-Z]+\d+ ", r"^\S+\.pyi?:\d+: error: ", r"^[A-Z]{1,3}\d{3,4} (\[\*\] )?\S",
        r"^>> Issue: \[B\d+", r"^unformatted: ", r"^Would reformat: ", r"^\d+ files? would be reformatted",
        r"^would reformat ", r"^Found \d+ errors? in \d+ files?", r"^Found \d+ errors?\.",
        r"^\s*--> \S+:\d+:\d+")),
    Rule(FailureType.GIT_ERROR, "git error", _p(
        r"^CONFLICT \(", r"Automatic merge failed", r"[Mm]erge conflict", r"Authentication failed",
        r"Permission denied \(publickey", r"could not read Username", r"^error: pathspec ",
        r"^error: Your local changes", r"^error: failed to push", r"^ ! \[rejected\]", r"^fatal: ",
        r"[Gg]it command failed", r"[Cc]annot read object", r"unable to read (tree|object)")),
)


@dataclass(frozen=True)
class Classification:
    """The failure type and the line of output (1-based ``line``) that decided it."""

    failure_type: FailureType
    evidence: str
    line: int | None = None
    rule: str = "no rule matched"
    exit_code: int | None = None

    @property
    def message(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.failure_type}: {self.evidence}{where}"

    def to_json(self) -> dict[str, Any]:
        return {"failure_type": self.failure_type.value, "evidence": self.evidence, "line": self.line,
                "rule": self.rule, "exit_code": self.exit_code}


def exit_text(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code == 124:
        return "exit status 124 (stopped by timeout)"
    if code > 128:
        import signal

        try:
            return f"exit status {code} (killed by {signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exit status {code}"


def evidence_lines(output: str | Iterable[str]) -> list[tuple[int, str]]:
    """(line number, text) of the lines that may be evidence: ANSI colours removed, echoed source dropped."""
    lines = output.splitlines() if isinstance(output, str) else [line.rstrip("\n") for line in output]
    first = max(0, len(lines) - MAX_LINES)
    out = []
    after_file = False
    for number, raw in enumerate(lines[first:], first + 1):
        text = ANSI.sub("", raw).rstrip()
        echoed = (after_file and text.startswith("    ")) or bool(ECHOED_SOURCE.match(text))
        after_file = bool(TRACEBACK_FILE.match(text))
        if text.strip() and not echoed:
            out.append((number, text))
    return out


def classify(output: str | Iterable[str] = "", exit_code: int | None = None) -> Classification:
    """The failure type of a step that exited with ``exit_code`` and printed ``output``."""
    lines = evidence_lines(output)
    for rule in RULES:
        if rule.exit_codes and exit_code not in rule.exit_codes:
            continue
        for pattern in rule.patterns:
            for number, text in lines:
                if pattern.search(text):
                    return Classification(rule.failure_type, text.strip(" _=!"), number, rule.name, exit_code)
        if rule.exit_codes:  # the status alone decides
            return Classification(rule.failure_type, exit_text(exit_code), None, rule.name, exit_code)
    last = lines[-1] if lines else None
    evidence = f"{exit_text(exit_code)}; last line: {last[1].strip(' _=!')}" if last else exit_text(exit_code)
    return Classification(FailureType.UNKNOWN, evidence, last[0] if last else None, "no rule matched", exit_code)
