"""Steps that recover by themselves (``run``) and workflows that resume (``workflow``).

The failing step replays real tool output captured in tests/fixtures/recovery,
so the classifier sees what it would see in CI. Sleeps are injected: the
backoff is recorded, never waited.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from rrstore import FailureType, RecoveryStrategy, RollbackRecoverySystem
from rrstore.errors import ResumeRefused, UsageError
from rrstore.recovery.run import RUNNING, RetryPolicy, RunHooks
from rrstore.recovery.workflow import load_workflows

Cli = Callable[..., subprocess.CompletedProcess[str]]

FIXTURES = Path(__file__).parent / "fixtures" / "recovery"

# Step 2 of the workflow: its behaviour is set by a file outside the tree, as a flaky service would be.
# It always writes leftover.txt first, so a failed attempt leaves the tree changed.
STEP2 = """
state="$1"
count=$(cat "$state/count" 2>/dev/null || echo 0); count=$((count + 1)); echo "$count" > "$state/count"
echo half-done > leftover.txt
case "$(cat "$state/mode")" in
  transient) if [ "$count" -eq 1 ]; then cat "$state/network.log" >&2; exit 7; fi ;;
  network) cat "$state/network.log" >&2; exit 7 ;;
  tests) cat "$state/pytest.log"; exit 1 ;;
esac
rm -f leftover.txt
echo "tests passed"
"""


class Recorder:
    """Injected hooks: sleeps and messages are recorded, output is collected."""

    def __init__(self) -> None:
        self.slept: list[float] = []
        self.said: list[str] = []
        self.out = bytearray()

    def hooks(self) -> RunHooks:
        return RunHooks(sleep=self.slept.append, output=lambda fd, data: self.out.extend(data),
                        notify=self.said.append)


@pytest.fixture
def flow(project: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A project with a three-step standard workflow; returns (root, state folder of step 2)."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "network.log").write_bytes((FIXTURES / "curl_connection_refused.log").read_bytes())
    (state / "pytest.log").write_bytes((FIXTURES / "pytest_assertion.log").read_bytes())
    (state / "step2.sh").write_text(STEP2)
    (state / "mode").write_text("ok")
    (project / "src.py").write_text("VALUE = 1\n")
    step2 = f"sh {shlex.quote(str(state / 'step2.sh'))} {shlex.quote(str(state))}"
    (project / "rrstore.toml").write_text(
        "[recovery]\nbackoff = 2\nretries = 2\n\n"
        "[workflow.standard]\nsteps = [\n"
        '  { name = "quality gates", command = "sleep 0.3; echo gates passed" },\n'
        f"  {{ name = \"tests\", command = {json.dumps(step2)} }},\n"
        '  { name = "package", command = "echo packaged > dist.txt" },\n]\n')
    return project, state


def records(system: RollbackRecoverySystem) -> list[tuple[int, str, bool]]:
    return [(r.step_number, r.step_name, r.success) for r in system.list("standard").checkpoints if r.kind == "step"]


def test_three_step_workflow_retries_then_resumes_and_reports_time_saved(flow: tuple[Path, Path]) -> None:
    root, state = flow
    system = RollbackRecoverySystem(root=root)

    # 1. step 2 fails once (a refused connection): retried after the backoff, with the tree restored first
    (state / "mode").write_text("transient")
    rec = Recorder()
    first = system.workflow("standard", hooks=rec.hooks())

    assert first.success and first.exit_status == 0 and [s.success for s in first.steps] == [True] * 3
    tests = first.steps[1]
    assert [a.exit_status for a in tests.attempts] == [7, 0]
    assert tests.attempts[0].classification is not None
    assert tests.attempts[0].classification.failure_type is FailureType.NETWORK_ERROR
    assert rec.slept == [2.0]  # backoff × 2^0, injected
    assert tests.attempts[1].waited_s == 2.0 and tests.attempts[1].restored_undo_id is not None
    undo = system.show(tests.attempts[1].restored_undo_id)
    assert undo.kind == "pre-restore"  # the failed attempt's leftover.txt was restored away (and kept there)
    assert "leftover.txt" in system.diff(tests.checkpoint_id, undo.checkpoint_id).added
    assert not (root / "leftover.txt").exists() and (root / "dist.txt").read_text() == "packaged\n"
    assert tests.record.success and tests.record.metrics["attempts"] == 2
    assert any("Recovery plan: network_error in the standard lane" in m for m in rec.said)

    # 2. step 2 fails for good: retries exhausted with exponential backoff, step 3 never runs
    (state / "mode").write_text("network")
    (state / "count").write_text("0")
    rec = Recorder()
    second = system.workflow("standard", hooks=rec.hooks())

    assert not second.success and second.exit_status == 7 and len(second.steps) == 2
    assert rec.slept == [2.0, 4.0]  # backoff × 2^(attempt-1) for attempts 2 and 3
    failed = second.steps[1]
    assert len(failed.attempts) == 3 and failed.plan is not None
    assert failed.plan.strategy is RecoveryStrategy.RETRY
    assert failed.record.success is False
    assert (failed.record.error_message or "").startswith("exit status 7: network_error: curl: (7) Failed to connect")
    step1_time = second.steps[0].record.metrics["step_wall_time_s"]
    assert step1_time >= 0.3
    assert "resume with: rrstore workflow --lane standard --resume" in second.message

    # 3. a strict resume refuses: the failed step left the tree changed since step 1 ended
    assert (root / "leftover.txt").exists()
    with pytest.raises(ResumeRefused, match=r"differs from the state step 1 \(quality gates\) ended with"):
        system.workflow("standard", resume=True, strict=True, hooks=Recorder().hooks())
    refused = system.run("workflow", lane="standard", resume=True, strict=True, hooks=Recorder().hooks())
    assert refused.success is False and "A leftover.txt" in refused.message and "--restore" in refused.message

    # 4. the service is back: resume restores step 2's starting state and runs 2 and 3 only
    (state / "mode").write_text("ok")
    rec = Recorder()
    resumed = system.workflow("standard", resume=True, restore=True, hooks=rec.hooks())

    assert resumed.success and resumed.start_step == 2
    assert [s.record.step_name for s in resumed.steps] == ["tests", "package"]
    assert resumed.resumed_from == failed.checkpoint_id and resumed.restore_undo_id is not None
    assert [(s.number, s.name, s.wall_time_s) for s in resumed.skipped] == [(1, "quality gates", step1_time)]
    assert resumed.time_saved_s == pytest.approx(step1_time)
    assert resumed.full_run_s == pytest.approx(step1_time + sum(s.wall_time_s for s in resumed.steps))
    report = resumed.message
    assert "resumed at step 2 of 3" in report and "skipped 1 step(s): 1 quality gates" in report
    assert f"time saved: {step1_time:.2f}s of an estimated full run of {resumed.full_run_s:.2f}s" in report
    doc = resumed.to_json()
    assert json.loads(json.dumps(doc)) == doc and doc["time_saved_s"] == resumed.time_saved_s
    assert b"gates passed" not in rec.out  # step 1 really was skipped

    # 5. a completed run leaves nothing to resume
    again = system.workflow("standard", resume=True, hooks=Recorder().hooks())
    assert again.nothing_to_resume and again.success and again.steps == []
    assert records(system)[:2] == [(3, "package", True), (2, "tests", True)]


def test_a_permanent_test_failure_is_not_retried(flow: tuple[Path, Path]) -> None:
    root, state = flow
    (state / "mode").write_text("tests")
    rec = Recorder()
    result = RollbackRecoverySystem(root=root).workflow("standard", hooks=rec.hooks())

    assert result.exit_status == 1 and rec.slept == []
    step = result.steps[1]
    assert len(step.attempts) == 1 and step.plan is not None and step.plan.strategy is RecoveryStrategy.MANUAL
    assert step.classification is not None
    assert step.classification.evidence == "FAILED tests/test_calc.py::test_add - assert 0 == 4"
    assert any("strategy MANUAL for test_failure: not retrying" in m for m in rec.said)
    assert b"1 failed, 1 passed" in rec.out  # the step's output was streamed through


def test_run_step_records_metrics_timeout_and_status(project: Path) -> None:
    system = RollbackRecoverySystem(root=project)
    (project / "a.txt").write_text("a")
    busy = (f"{shlex.quote(sys.executable)} -c \"b = bytearray(64 * 1024 * 1024); "
            "import time; t = time.process_time()\nwhile time.process_time() - t < 0.2: pass\"")
    ok = system.run_step("heavy", 1, "allocate", busy, hooks=Recorder().hooks())
    m = ok.record.metrics
    assert ok.success and ok.record.success and ok.record.error_message is None
    assert m["step_peak_rss_kib"] > 64 * 1024 and m["step_cpu_time_s"] >= 0.2
    assert m["step_wall_time_s"] >= m["step_cpu_time_s"] * 0.9 and m["exit_status"] == 0
    assert system.show(ok.checkpoint_id).metrics == m  # the update is in the store

    rec = Recorder()
    slow = system.run_step("heavy", 2, "slow", ["sleep", "30"], policy=RetryPolicy(timeout=0.5, retries=0),
                           hooks=rec.hooks())
    assert slow.exit_status == 124 and slow.attempts[0].timed_out and slow.attempts[0].wall_time_s < 10
    assert slow.classification is not None and slow.classification.failure_type is FailureType.TIMEOUT
    assert "Timeout exceeded" in slow.classification.evidence and rec.slept == []

    missing = system.run_step("heavy", 3, "typo", ["no-such-program-xyz"], hooks=Recorder().hooks())
    assert missing.exit_status == 127 and len(missing.attempts) == 1  # never retried: it cannot run

    signalled = system.run_step("heavy", 4, "crash", "kill -SEGV $$", policy=RetryPolicy(retries=0),
                                hooks=Recorder().hooks())
    assert signalled.exit_status == 139 and "SIGSEGV" in (signalled.record.error_message or "")

    with pytest.raises(UsageError, match="give the command"):
        system.run_step("heavy", 5, "nothing", "  ")
    with pytest.raises(UsageError, match="unknown lane"):
        system.run_step("fast", 1, "x", "true")


def test_run_verb_matches_the_seed_dispatcher(project: Path) -> None:
    system = RollbackRecoverySystem(root=project)
    result = system.run("run", lane="docs", step_number=1, step_name="echo", command="echo hi",
                        hooks=Recorder().hooks())
    assert result.success and result.checkpoint_id.startswith("docs-step1-")
    assert system.run("run", lane="docs", step_number=1, step_name="x", command="true",
                      policy=RetryPolicy(retries=-1)).success is False


def test_resume_edge_cases(flow: tuple[Path, Path]) -> None:
    root, state = flow
    system = RollbackRecoverySystem(root=root)
    fresh = system.workflow("standard", resume=True, hooks=Recorder().hooks())  # nothing ran yet: from step 1
    assert fresh.start_step == 1 and fresh.success and fresh.resumed_from is None

    # a runner killed during step 2 leaves its record RUNNING: resume continues at step 2
    system.checkpoint("standard", 2, "tests", success=False, error_message=RUNNING)
    killed = system.workflow("standard", resume=True, hooks=Recorder().hooks())
    assert killed.start_step == 2 and killed.success and killed.skipped[0].name == "quality gates"

    # the workflow changed since: the recorded step is not there any more
    (state / "mode").write_text("tests")
    assert system.workflow("standard", hooks=Recorder().hooks()).exit_status == 1
    text = (root / "rrstore.toml").read_text().replace('name = "tests"', 'name = "unit tests"')
    (root / "rrstore.toml").write_text(text)
    with pytest.raises(ResumeRefused, match="no longer has there"):
        system.workflow("standard", resume=True, restore=True, hooks=Recorder().hooks())


def test_workflow_configuration(project: Path) -> None:
    (project / "pyproject.toml").write_text(
        '[tool.rrstore.workflow.docs]\ntimeout = 60\nsteps = [{ name = "lint", command = "true", retries = 0 },'
        ' { name = "build", command = "true", backoff = 1.5 }]\n')
    flows = load_workflows(project)
    assert list(flows) == ["docs"] and [s.name for s in flows["docs"].steps] == ["lint", "build"]
    assert flows["docs"].steps[0].policy == RetryPolicy(60.0, 0, None)
    assert flows["docs"].steps[1].policy == RetryPolicy(60.0, None, 1.5)

    where = r"pyproject.toml \[tool.rrstore.workflow\]"
    with pytest.raises(UsageError, match=rf"no workflow for the heavy lane in .*{where}"):
        RollbackRecoverySystem(root=project).workflow("heavy")
    bad = {
        "[workflow.fast]\nsteps = [{ name = \"a\", command = \"true\" }]\n": "unknown lane 'fast'",
        "[workflow.docs]\nsteps = []\n": "'steps' must be a non-empty array",
        "[workflow.docs]\nsteps = [{ name = \"a\" }]\n": "'command' must be a non-empty string",
        "[workflow.docs]\nsteps = [{ name = \"a\", command = \"x\", retry = 1 }]\n": r"unknown key\(s\) retry",
        "[workflow.docs]\nsteps = [{ name = \"a\", command = \"x\" }, { name = \"a\", command = \"y\" }]\n":
            "step names must differ",
        "[workflow.docs]\ntimeout = 0\nsteps = [{ name = \"a\", command = \"x\" }]\n": "timeout must be a number",
    }
    for text, message in bad.items():
        (project / "rrstore.toml").write_text(text)
        with pytest.raises(UsageError, match=message):
            load_workflows(project)


def test_cli_run_and_workflow(flow: tuple[Path, Path], cli: Cli) -> None:
    root, state = flow
    text = (root / "rrstore.toml").read_text().replace("backoff = 2", "backoff = 0")
    (root / "rrstore.toml").write_text(text)

    done = cli("run", "--lane", "docs", "--step-number", "1", "--step-name", "echo", "--retries", "0", "--",
               "sh", "-c", "echo out; echo err >&2; exit 3", cwd=root)
    assert done.returncode == 3
    assert done.stdout == "out\n"  # the command's stdout is ours; everything rrstore says goes to stderr
    assert "err" in done.stderr and "step 1 (echo) failed" in done.stderr

    as_json = cli("run", "--json", "--lane", "docs", "--step-number", "2", "--step-name", "ok", "--retries", "0",
                  "--", "echo hello --json", cwd=root)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)  # stdout holds only the JSON: the command's output went to stderr
    assert "hello --json" in as_json.stderr
    assert {"checkpoint_id", "success", "exit_status", "attempts", "classification", "plan", "record"} <= set(doc)
    assert doc["record"]["metrics"]["exit_status"] == 0 and doc["record"]["success"] is True

    (state / "mode").write_text("tests")
    failed = cli("workflow", "--lane", "standard", cwd=root)
    assert failed.returncode == 1 and "gates passed" in failed.stdout
    assert "workflow standard stopped at step 2" in failed.stderr

    refused = cli("workflow", "--lane", "standard", "--resume", "--strict", cwd=root)
    assert refused.returncode == 21 and refused.stdout == ""
    assert refused.stderr.splitlines()[-1].startswith("rrstore: error: cannot resume the standard lane at step 2")
    assert len([line for line in refused.stderr.splitlines() if "error" in line]) == 1

    (state / "mode").write_text("ok")
    resumed = cli("workflow", "--lane", "standard", "--restore", "--json", cwd=root)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["start_step"] == 2 and report["skipped"][0]["step_name"] == "quality gates"
    assert report["time_saved_s"] >= 0.3 and len(report["steps"]) == 2

    usage = cli("run", "--lane", "docs", "--step-number", "1", "--step-name", "x", cwd=root)
    assert usage.returncode == 2 and usage.stderr.startswith("rrstore: error: Missing argument")
    nowf = cli("workflow", "--lane", "heavy", cwd=root)
    assert nowf.returncode == 2 and "no workflow for the heavy lane" in nowf.stderr
