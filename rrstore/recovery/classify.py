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
3. a certificate that does not verify (a network error that retrying does
   not cure, so its rule says MANUAL: before the transient ones it causes);
4. network errors, read timeouts and overloaded servers (HTTP 429, 502-504)
   included (before timeouts: 'Connection timed out', a socket's
   'TimeoutError: timed out' and curl's own limit, exit 28 'Operation timed
   out after N milliseconds', are the network's: ``timeout`` is the step's
   own time limit);
5. timeout messages; 6. test failures, then a module that is not installed
   (a dependency to install: retrying does not bring it);
7. quality-gate findings; 8. git errors (after tests: a test's captured
   output may quote git); 9. otherwise unknown.

A rule may carry its own ``strategy`` and ``advice`` where it knows more
than its failure type does (a certificate failure is a network error that
no retry fixes); the planner follows them when given the classification.

Lines that only echo source code (pytest's ``>`` lines, ruff's ``|`` frames,
bandit's numbered listings, traceback source lines) are not evidence: a
source line that mentions 'Connection refused' is not a network failure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .vocabulary import FailureType, RecoveryStrategy

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
ECHOED_SOURCE = re.compile(r"^(>\s|\s*\d*\s*\|(\s|$)|\d+\t)")
TRACEBACK_FILE = re.compile(r'^\s*File ".*", line \d+')
# Only the end of a long log is read: failures are reported last.
MAX_LINES = 20_000


@dataclass(frozen=True)
class Rule:
    """``patterns`` tried in order (the first that matches picks the evidence line).

    With ``exit_codes`` the rule applies only to those statuses; a rule
    without patterns then matches on the status alone. ``strategy`` and
    ``advice`` override the failure type's plan where the rule knows better.
    """

    failure_type: FailureType
    name: str
    patterns: tuple[re.Pattern[str], ...] = ()
    exit_codes: frozenset[int] = frozenset()
    strategy: RecoveryStrategy | None = None
    advice: str | None = None
    plan: str | None = None  # the failure type's plan of that name (plans.PLAN_TABLE 'rules') replaces its own


def _p(*texts: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(t) for t in texts)


_OOM = (r"\bMemoryError\b", r"[Oo]ut of memory", r"Cannot allocate memory", r"\bOOM[- ]?[Kk]illed\b",
        r"\boom[-_]kill", r"Killed process \d+", r"std::bad_alloc", r"memory allocation failed")
_DISK = (r"No space left on device", r"Disk quota exceeded", r"\bENOSPC\b", r"\bErrno 28\b")

RULES: tuple[Rule, ...] = (
    Rule(FailureType.RESOURCE_EXHAUSTION, "out of memory or disk space", _p(*_DISK, *_OOM)),
    Rule(FailureType.TIMEOUT, "killed on timeout (exit status 124 or 137)",
         _p(r"Timeout exceeded", r"^timeout: sending signal", r"\bKilled\b"), frozenset({124, 137})),
    Rule(FailureType.NETWORK_ERROR, "certificate verification failure", _p(
        r"CERTIFICATE_VERIFY_FAILED", r"SSL certificate problem", r"certificate verify failed",
        r"problem confirming the ssl certificate", r"server certificate verification failed",
        r"\b(SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|CERT_HAS_EXPIRED)\b"),
         strategy=RecoveryStrategy.MANUAL,
         advice="the server's TLS certificate did not verify: retrying does not help. Point the client at the "
                "right CA bundle (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, pip --cert, npm cafile) or fix the "
                "server's certificate", plan="certificate"),
    Rule(FailureType.NETWORK_ERROR, "read timeout or overloaded server (transient)", _p(
        r"Read timed out", r"\bReadTimeout(Error)?\b",
        r"^curl: \(28\) (Operation|Resolving|Connection) timed out after \d+ milliseconds",
        r"\b(socket\.timeout|TimeoutError): timed out$",
        r"\bETIMEDOUT\b", r"\bESOCKETTIMEDOUT\b", r"network timeout at:",
        r"HTTP Error (429|50[234])\b", r"returned error: (429|50[234])\b",
        r"\b(429|50[234]) (Client Error|Server Error|Too Many Requests|Service Unavailable|Bad Gateway|"
        r"Gateway Time-?out)\b", r"too many (429|50[234]) error responses", r"\bcode E(429|50[234])\b")),
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
    Rule(FailureType.TEST_FAILURE, "missing module (a dependency to install)", _p(
        r"\bModuleNotFoundError: No module named ", r"^ImportError: No module named "),
         strategy=RecoveryStrategy.MANUAL,
         advice="a module the step imports is not installed: install the project's dependencies in the "
                "interpreter the step runs ('rrstore validate' says which one it checks), then re-run",
         plan="missing_module"),
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
    strategy: RecoveryStrategy | None = None  # the rule's own, where it overrides the failure type's
    advice: str | None = None
    plan: str | None = None  # the rule's own plan (fix first, then re-run), where it has one

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
                    return Classification(rule.failure_type, text.strip(" _=!"), number, rule.name, exit_code,
                                          rule.strategy, rule.advice, rule.plan)
        if rule.exit_codes:  # the status alone decides
            return Classification(rule.failure_type, exit_text(exit_code), None, rule.name, exit_code)
    last = lines[-1] if lines else None
    evidence = f"{exit_text(exit_code)}; last line: {last[1].strip(' _=!')}" if last else exit_text(exit_code)
    return Classification(FailureType.UNKNOWN, evidence, last[0] if last else None, "no rule matched", exit_code)
