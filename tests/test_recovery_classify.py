"""The classifier on real output of real tools (tests/fixtures/recovery, captured by its capture.sh)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from rrstore import FailureType, RecoveryStrategy, RollbackRecoverySystem
from rrstore.recovery.classify import classify, evidence_lines

Cli = Callable[..., subprocess.CompletedProcess[str]]

FIXTURES = Path(__file__).parent / "fixtures" / "recovery"
STATUS = {name: int(code) for name, code in
          (line.split() for line in (FIXTURES / "exit_status.txt").read_text().splitlines())}

# fixture -> (failure type, text the deciding line must contain)
EXPECTED = {
    "pytest_assertion": (FailureType.TEST_FAILURE, "FAILED tests/test_calc.py::test_add - assert 0 == 4"),
    "pytest_collection_error": (FailureType.TEST_FAILURE, "ERROR collecting tests/test_broken.py"),
    "unittest_failure": (FailureType.TEST_FAILURE, "FAIL: test_eq (test_ut.T.test_eq)"),
    "pytest_timeout_plugin": (FailureType.TIMEOUT, "Timeout (>1.0s) from pytest-timeout"),
    "ruff_check": (FailureType.QUALITY_GATE, "F401 [*] `os` imported but unused"),
    "ruff_format_check": (FailureType.QUALITY_GATE, "unformatted: File would be reformatted"),
    "mypy_errors": (FailureType.QUALITY_GATE, 'pkg/mod.py:7: error: Name "undefined_name" is not defined'),
    "flake8_errors": (FailureType.QUALITY_GATE, ": E225 missing whitespace around operator"),
    "bandit_findings": (FailureType.QUALITY_GATE, ">> Issue: [B404:blacklist]"),
    "git_not_a_repository": (FailureType.GIT_ERROR, "fatal: not a git repository"),
    "git_merge_conflict": (FailureType.GIT_ERROR, "CONFLICT (content): Merge conflict in f.txt"),
    "git_pathspec": (FailureType.GIT_ERROR, "error: pathspec 'no-such-branch' did not match"),
    "git_index_lock": (FailureType.GIT_ERROR, "index.lock': File exists."),
    "git_authentication_failed": (FailureType.GIT_ERROR, "fatal: Authentication failed for"),
    "curl_connection_refused": (FailureType.NETWORK_ERROR, "Failed to connect to 127.0.0.1 port 9"),
    "python_connection_refused": (FailureType.NETWORK_ERROR, "ConnectionRefusedError: [Errno 111] Connection refused"),
    "git_could_not_resolve_host": (FailureType.NETWORK_ERROR, "Could not resolve host: github.com"),
    "python_name_resolution": (FailureType.NETWORK_ERROR, "Temporary failure in name resolution"),
    "pip_connection_refused": (FailureType.NETWORK_ERROR, "Failed to establish a new connection"),
    "curl_connection_timed_out": (FailureType.NETWORK_ERROR, "port 8766 after"),
    "timeout_sleep": (FailureType.TIMEOUT, "exit status 124 (stopped by timeout)"),
    "timeout_verbose": (FailureType.TIMEOUT, "timeout: sending signal TERM"),
    "timeout_kill": (FailureType.TIMEOUT, "Killed"),
    "timeout_pytest": (FailureType.TIMEOUT, "exit status 124"),
    "python_memory_error": (FailureType.RESOURCE_EXHAUSTION, "MemoryError"),
    "pytest_memory_error": (FailureType.RESOURCE_EXHAUSTION, "E       MemoryError"),
    "git_out_of_memory": (FailureType.RESOURCE_EXHAUSTION, "Cannot allocate memory"),
    "dd_no_space": (FailureType.RESOURCE_EXHAUSTION, "dd: error writing 'big': No space left on device"),
    "python_no_space": (FailureType.RESOURCE_EXHAUSTION, "OSError: [Errno 28] No space left on device"),
    "git_no_space": (FailureType.RESOURCE_EXHAUSTION, "No space left on device"),
    # capture_transient.sh: transient network failures, certificates, a missing module
    "requests_read_timeout": (FailureType.NETWORK_ERROR, "ReadTimeoutError: HTTPConnectionPool(host='127.0.0.1', "
                                                         "port=8770): Read timed out. (read timeout=1)"),
    "pip_read_timeout": (FailureType.NETWORK_ERROR, "WARNING: Retrying (Retry(total=0"),
    "python_socket_timeout": (FailureType.NETWORK_ERROR, "TimeoutError: timed out"),
    "curl_read_timeout": (FailureType.NETWORK_ERROR, "curl: (28) Operation timed out after 1001 milliseconds with 0 "
                                                     "bytes received"),
    "npm_network_timeout": (FailureType.NETWORK_ERROR, "npm error network timeout at: http://127.0.0.1:8770/left-pad"),
    "npm_etimedout": (FailureType.NETWORK_ERROR, "npm error code ETIMEDOUT"),
    "curl_http_503": (FailureType.NETWORK_ERROR, "curl: (22) The requested URL returned error: 503"),
    "python_http_503": (FailureType.NETWORK_ERROR, "urllib.error.HTTPError: HTTP Error 503: Service Unavailable"),
    "npm_http_503": (FailureType.NETWORK_ERROR, "npm error 503 Service Unavailable - GET http://127.0.0.1:8771"),
    "curl_http_429": (FailureType.NETWORK_ERROR, "curl: (22) The requested URL returned error: 429"),
    "python_http_429": (FailureType.NETWORK_ERROR, "urllib.error.HTTPError: HTTP Error 429: Too Many Requests"),
    "python_tls_self_signed": (FailureType.NETWORK_ERROR, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
    "requests_tls_self_signed": (FailureType.NETWORK_ERROR, "[SSL: CERTIFICATE_VERIFY_FAILED]"),
    "curl_tls_self_signed": (FailureType.NETWORK_ERROR, "curl: (60) SSL certificate problem: self-signed certificate"),
    "pip_tls_self_signed": (FailureType.NETWORK_ERROR, "There was a problem confirming the ssl certificate"),
    "python_module_not_found": (FailureType.TEST_FAILURE, "ModuleNotFoundError: No module named 'nope'"),
}
CERTIFICATES = {name for name in EXPECTED if "_tls_" in name}
TRANSIENT = {name for name, (kind, _) in EXPECTED.items()
             if kind is FailureType.NETWORK_ERROR and name not in CERTIFICATES}


def log(name: str) -> str:
    return (FIXTURES / f"{name}.log").read_text(errors="replace")


def test_every_captured_fixture_has_an_expectation() -> None:
    assert set(STATUS) == set(EXPECTED) == {p.stem for p in FIXTURES.glob("*.log")}
    kinds = {t for t, _ in EXPECTED.values()}
    assert kinds == set(FailureType) - {FailureType.UNKNOWN}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_tool_output_is_classified_with_its_evidence(name: str) -> None:
    kind, evidence = EXPECTED[name]
    found = classify(log(name), STATUS[name])

    assert found.failure_type is kind, found.message
    assert evidence in found.evidence
    if found.line is not None:  # the evidence is that line of the log, verbatim
        assert log(name).splitlines()[found.line - 1].strip(" _=!") == found.evidence
    assert found.exit_code == STATUS[name]


def test_certificates_and_missing_modules_are_not_retried_transient_failures_are() -> None:
    for name in CERTIFICATES:
        found = classify(log(name), STATUS[name])
        assert found.rule == "certificate verification failure" and found.strategy is RecoveryStrategy.MANUAL
        assert found.advice and "retrying does not help" in found.advice
    for name in TRANSIENT:
        found = classify(log(name), STATUS[name])
        assert found.strategy is None and found.advice is None, name  # the network plan: RETRY
    missing = classify(log("python_module_not_found"), 1)
    assert missing.rule == "missing module (a dependency to install)" and missing.strategy is RecoveryStrategy.MANUAL
    assert missing.advice and "rrstore validate" in missing.advice
    # pycodestyle's E502 is a finding, not an HTTP status (npm's 'code E503' is one: npm_http_503)
    assert classify("pkg/m.py:3:9: E502 the backslash is redundant between brackets\n", 1).failure_type \
        is FailureType.QUALITY_GATE
    # a timeout of the step itself (not a socket's) stays a timeout
    assert classify("TimeoutError: step took longer than 30 s\n", 1).failure_type is FailureType.TIMEOUT


def test_exit_status_137_is_a_timeout_unless_memory_ran_out() -> None:
    assert classify("", 137).failure_type is FailureType.TIMEOUT
    assert classify(log("timeout_kill"), 137).failure_type is FailureType.TIMEOUT
    # the same kill with memory evidence in the output: the system ran out, not the clock
    found = classify(log("python_memory_error"), 137)
    assert found.failure_type is FailureType.RESOURCE_EXHAUSTION and found.evidence == "MemoryError"


def test_the_exit_status_decides_only_for_timeouts() -> None:
    assert classify(log("pytest_assertion"), 124).failure_type is FailureType.TIMEOUT
    assert classify(log("pytest_assertion")).failure_type is FailureType.TEST_FAILURE  # no status given
    unknown = classify("Segmentation fault (core dumped)\n", 139)
    assert unknown.failure_type is FailureType.UNKNOWN
    assert unknown.evidence == "exit status 139 (killed by SIGSEGV); last line: Segmentation fault (core dumped)"
    assert classify("", 1).evidence == "exit status 1"


def test_echoed_source_is_not_evidence() -> None:
    # ruff shows the offending source; a source line that mentions a network error is not one
    lint = log("ruff_check").replace("7 |     return undefined_name", '7 |     raise OSError("Connection refused")')
    assert classify(lint, 1).failure_type is FailureType.QUALITY_GATE
    # pytest's '>' line quotes the test's source
    tests = log("pytest_assertion").replace(">       assert add(2, 2) == 4", '>       assert "No space left on device"')
    assert classify(tests, 1).failure_type is FailureType.TEST_FAILURE
    numbers = [n for n, _ in evidence_lines(log("ruff_check"))]
    assert 4 not in numbers  # '1 | import os'


def test_colours_and_long_logs(tmp_path: Path) -> None:
    coloured = "\x1b[31mFAILED\x1b[0m tests/test_x.py::test_y - assert 1 == 2\n"
    found = classify(coloured, 1)
    assert found.failure_type is FailureType.TEST_FAILURE and "\x1b" not in found.evidence
    noise = "".join(f"collected line {i}\n" for i in range(50_000))
    assert classify(noise + log("mypy_errors"), 1).failure_type is FailureType.QUALITY_GATE


def test_system_classify_and_run_verb(project: Path) -> None:
    system = RollbackRecoverySystem(root=project)
    assert system.classify(log("git_merge_conflict"), 1).failure_type is FailureType.GIT_ERROR
    assert system.run("classify", output=log("dd_no_space"), exit_code=1).failure_type == "resource_exhaustion"


def test_cli_classify(project: Path, cli: Cli) -> None:
    done = cli("classify", "--exit-code", "1", "--log", str(FIXTURES / "pytest_assertion.log"), cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["test_failure",
                                        "evidence (line 12): FAILED tests/test_calc.py::test_add - assert 0 == 4"]

    piped = cli("classify", "--exit-code", "128", "--log", "-", "--json", cwd=project, stdin=log("git_index_lock"))
    doc = json.loads(piped.stdout)
    assert doc == {"failure_type": "git_error", "evidence": doc["evidence"], "line": 1, "rule": "git error",
                   "exit_code": 128}
    assert doc["evidence"].startswith("fatal: Unable to create")

    status_only = cli("classify", "--exit-code", "124", "-q", cwd=project)
    assert status_only.stdout == "timeout\n"

    for args, message in ((["classify"], "give --exit-code"),
                          (["classify", "--log", "missing.log"], "no such file: missing.log"),
                          (["classify", "--exit-code", "x"], "'x' is not a valid integer")):
        wrong = cli(*args, cwd=project)
        assert wrong.returncode == 2 and message in wrong.stderr and len(wrong.stderr.splitlines()) == 1


def test_curls_own_time_limit_on_a_stalled_server_is_a_network_error() -> None:
    """``timeout`` is the step's own time limit (the lane's, or 'timeout'/'rrstore run --timeout'); a
    server that stalls until curl's --max-time gives up (exit 28) is the network's, and is retried."""
    found = classify(log("curl_read_timeout"), STATUS["curl_read_timeout"])
    assert STATUS["curl_read_timeout"] == 28
    assert (found.failure_type, found.rule, found.line) == (FailureType.NETWORK_ERROR,
                                                            "read timeout or overloaded server (transient)", 1)
    resolving = "curl: (28) Resolving timed out after 5000 milliseconds"  # curl's other stalls, same rule
    assert classify(resolving, 28).failure_type is FailureType.NETWORK_ERROR
    # a step stopped by its own limit stays a timeout, whatever it printed before
    assert classify(log("curl_read_timeout") + "Timeout exceeded\n", 124).failure_type is FailureType.TIMEOUT
