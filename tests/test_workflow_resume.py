"""Fix, then resume: ``workflow --resume`` continues at the failed step on the tree as the user left it.

A real git repository, a three-step workflow whose step 2 checks a test
file's content (so it fails until the user fixes that file), and step
commands that append their name to a log outside the tree: the log, not
rrstore's own report, proves which steps really ran.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import GIT_ENV, git, run_cli

from rrstore import RollbackRecoverySystem
from rrstore.errors import ResumeRefused, UsageError
from rrstore.recovery.run import RunHooks
from rrstore.recovery.workflow import load_workflows
from rrstore.store.objects import hash_bytes

Cli = Callable[..., subprocess.CompletedProcess[str]]

BUG = "assert 1 + 1 == 3\n"
FIX = "assert 1 + 1 == 2\n"


class Flow:
    """The project, its evidence log and how to read it."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root, self.log = root, log

    def ran(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []

    def system(self) -> RollbackRecoverySystem:
        return RollbackRecoverySystem(root=self.root)


def _toml(log: Path, step1_inputs: str | None = '["src/**", "setup.py"]') -> str:
    py = shlex.quote(sys.executable)
    note = f"echo {{}} >> {shlex.quote(str(log))}"
    check = f"{py} -c \"import sys; sys.exit(open('tests/test_basic.py').read() != {FIX!r})\""
    step1 = f"{note.format('build')}; sleep 0.2; {py} -c \"import app\" 2>/dev/null || true"
    inputs = f", inputs = {step1_inputs}" if step1_inputs else ""
    return ("[recovery]\nretries = 0\n\n[workflow.standard]\nsteps = [\n"
            f"  {{ name = \"build\", command = {json.dumps(step1)}{inputs} }},\n"
            f"  {{ name = \"tests\", command = {json.dumps(note.format('tests') + '; ' + check)},"
            " inputs = [\"tests/\"] },\n"
            f"  {{ name = \"package\", command = {json.dumps(note.format('package'))} }},\n]\n")


def _make(git_project: Path, tmp_path: Path, step1_inputs: str | None = '["src/**", "setup.py"]') -> Flow:
    root, log = git_project, tmp_path / "ran.log"
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("VALUE = 1\n")
    (root / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_basic.py").write_text(BUG)
    (root / "rrstore.toml").write_text(_toml(log, step1_inputs))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "project with a workflow")
    return Flow(root, log)


@pytest.fixture
def flow(git_project: Path, tmp_path: Path) -> Flow:
    return _make(git_project, tmp_path)


@pytest.fixture
def failed(flow: Flow, cli: Cli) -> Flow:
    """The workflow has run once and stopped at step 2 (the test file holds the bug)."""
    first = cli("workflow", "--lane", "standard", cwd=flow.root)
    assert first.returncode == 1, first.stderr
    assert "workflow standard stopped at step 2" in first.stderr
    assert flow.ran() == ["build", "tests"]
    return flow


def _step1_time(flow: Flow) -> float:
    step1 = next(r for r in flow.system().list("standard").checkpoints if r.step_number == 1)
    return float(step1.metrics["step_wall_time_s"])


def test_fix_then_resume_skips_step_1_and_reports_the_time_saved(failed: Flow, cli: Cli) -> None:
    root = failed.root
    (root / "tests" / "test_basic.py").write_text(FIX)  # the user's fix
    (root / "notes.txt").write_text("my notes\n")  # and an untracked file of theirs

    resumed = cli("workflow", "--lane", "standard", "--resume", cwd=root)

    assert resumed.returncode == 0, resumed.stderr
    assert failed.ran() == ["build", "tests", "tests", "package"]  # step 1 did not run again
    err = resumed.stderr
    changed = next(line for line in err.splitlines() if line.startswith("rrstore: changed since"))
    assert "step 1 (build) ended" in changed and "M tests/test_basic.py" in changed and "A notes.txt" in changed
    assert "✓ step 2/3 tests" in err and "(failed in the last run)" in err
    assert "✓ step 3/3 package" in err and "(not reached in the last run)" in err
    assert "skipped 1 step(s): 1 build" in err and "(inputs unchanged)" in err
    saved = _step1_time(failed)
    assert saved >= 0.2  # step 1 sleeps
    assert f"time saved: {saved:.2f}s of an estimated full run" in err
    # the fix and the user's file are untouched
    assert (root / "tests" / "test_basic.py").read_text() == FIX
    assert (root / "notes.txt").read_text() == "my notes\n"

    again = cli("workflow", "--lane", "standard", "--resume", cwd=root)
    assert again.returncode == 0 and "nothing to resume" in again.stderr
    assert failed.ran() == ["build", "tests", "tests", "package"]


def test_changed_inputs_of_step_1_make_it_run_again(failed: Flow, cli: Cli) -> None:
    root = failed.root
    (root / "tests" / "test_basic.py").write_text(FIX)
    (root / "src" / "app.py").write_text("VALUE = 2\n")  # step 1's declared inputs change too

    resumed = cli("workflow", "--lane", "standard", "--resume", "--json", cwd=root)

    assert resumed.returncode == 0, resumed.stderr
    assert failed.ran() == ["build", "tests", "build", "tests", "package"]
    doc = json.loads(resumed.stdout)
    assert doc["start_step"] == 1 and doc["skipped"] == [] and doc["time_saved_s"] == 0
    assert [(s["step_number"], s["reason"]) for s in doc["steps"]] == [
        (1, "inputs changed: re-run"), (2, "failed in the last run"), (3, "not reached in the last run")]
    assert doc["changes"]["modified"] == ["src/app.py", "tests/test_basic.py"]
    assert doc["resumed_from"] is not None


def test_a_step_without_inputs_is_skipped_whatever_changed(git_project: Path, tmp_path: Path, cli: Cli) -> None:
    flow = _make(git_project, tmp_path, step1_inputs=None)
    assert cli("workflow", "--lane", "standard", cwd=flow.root).returncode == 1
    (flow.root / "tests" / "test_basic.py").write_text(FIX)
    (flow.root / "src" / "app.py").write_text("VALUE = 2\n")

    resumed = cli("workflow", "--lane", "standard", "--resume", "--json", cwd=flow.root)

    assert resumed.returncode == 0, resumed.stderr
    assert flow.ran() == ["build", "tests", "tests", "package"]
    skipped = json.loads(resumed.stdout)["skipped"]
    assert [(s["step_number"], s["reason"]) for s in skipped] == [(1, "no inputs declared")]


def test_from_a_step_number_or_name(failed: Flow, cli: Cli) -> None:
    root = failed.root
    (root / "tests" / "test_basic.py").write_text(FIX)

    third = cli("workflow", "--lane", "standard", "--from", "3", cwd=root)
    assert third.returncode == 0, third.stderr
    assert failed.ran() == ["build", "tests", "package"]
    assert "skipped 2 step(s): 1 build" in third.stderr and "(before --from)" in third.stderr
    assert "✓ step 3/3 package" in third.stderr and "(--from)" in third.stderr

    by_name = cli("workflow", "--lane", "standard", "--from", "tests", "--json", cwd=root)
    assert by_name.returncode == 0, by_name.stderr
    assert failed.ran() == ["build", "tests", "package", "tests", "package"]
    doc = json.loads(by_name.stdout)
    assert doc["start_step"] == 2 and [s["reason"] for s in doc["skipped"]] == ["before --from"]
    assert doc["skipped"][0]["wall_time_s"] == pytest.approx(_step1_time(failed))

    for bad in ("nope", "0", "4"):
        refused = cli("workflow", "--lane", "standard", "--from", bad, cwd=root)
        assert refused.returncode == 2
        assert refused.stderr.splitlines()[-1] == (
            f"rrstore: error: --from {bad!r}: the standard workflow has no such step; give a number from 1 to 3 "
            "or a name: 1 'build', 2 'tests', 3 'package'")
    assert failed.ran() == ["build", "tests", "package", "tests", "package"]  # nothing ran


def test_strict_refuses_a_changed_tree_and_runs_nothing(failed: Flow, cli: Cli) -> None:
    root = failed.root
    (root / "tests" / "test_basic.py").write_text(FIX)

    refused = cli("workflow", "--lane", "standard", "--resume", "--strict", cwd=root)

    assert refused.returncode == 21 and refused.stdout == ""
    last = refused.stderr.splitlines()[-1]
    assert last.startswith("rrstore: error: cannot resume the standard lane at step 2: the working tree differs "
                           "from the state step 1 (build) ended with")
    assert "M tests/test_basic.py" in last and "--restore" in last
    assert failed.ran() == ["build", "tests"]
    assert (root / "tests" / "test_basic.py").read_text() == FIX


def test_restore_names_the_file_it_removes_and_undo_brings_it_back(failed: Flow, cli: Cli) -> None:
    root = failed.root
    (root / "tests" / "test_basic.py").write_text(FIX)
    (root / "notes.txt").write_text("my notes\n")

    restored = cli("workflow", "--lane", "standard", "--resume", "--restore", cwd=root)

    assert restored.returncode == 1  # the bug is back, so step 2 fails again
    lines = restored.stderr.splitlines()
    warn = next(i for i, line in enumerate(lines) if line.startswith("rrstore: --restore will remove"))
    assert "notes.txt" in lines[warn] and "undo checkpoint keeps them" in lines[warn]
    assert warn < next(i for i, line in enumerate(lines) if line.startswith("rrstore: == step 2/3"))
    undo_line = next(line for line in lines if line.startswith("rrstore: restored "))
    undo = undo_line.rsplit(" ", 1)[-1]
    assert failed.ran() == ["build", "tests", "tests"]
    assert not (root / "notes.txt").exists() and (root / "tests" / "test_basic.py").read_text() == BUG

    back = cli("restore", "--checkpoint-id", undo, cwd=root)
    assert back.returncode == 0, back.stderr
    assert (root / "notes.txt").read_text() == "my notes\n"
    assert (root / "tests" / "test_basic.py").read_text() == FIX


class Said:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def hooks(self) -> RunHooks:
        return RunHooks(output=lambda fd, data: None, notify=self.lines.append)


def test_the_python_api_resumes_the_same_way(failed: Flow) -> None:
    system = failed.system()
    (failed.root / "tests" / "test_basic.py").write_text(FIX)

    with pytest.raises(ResumeRefused, match="differs from the state step 1"):
        system.workflow("standard", resume=True, strict=True, hooks=Said().hooks())
    refused = system.run("workflow", lane="standard", resume=True, strict=True)
    assert refused.success is False and "M tests/test_basic.py" in refused.message
    with pytest.raises(UsageError, match="no such step"):
        system.workflow("standard", from_step="deploy")
    assert failed.ran() == ["build", "tests"]

    said = Said()
    result = system.workflow("standard", resume=True, hooks=said.hooks())
    assert result.success and result.start_step == 2
    assert [(s.number, s.reason) for s in result.skipped] == [(1, "inputs unchanged")]
    assert result.changes is not None and result.changes.modified == ["tests/test_basic.py"]
    assert result.time_saved_s == pytest.approx(_step1_time(failed)) and result.time_saved_s > 0
    assert any(line.startswith("rrstore: changed since step 1 (build) ended") for line in said.lines)
    assert failed.ran() == ["build", "tests", "tests", "package"]

    by_number = system.workflow("standard", from_step=3, hooks=Said().hooks())
    assert by_number.success and [s.record.step_number for s in by_number.steps] == [3]
    assert failed.ran()[-1] == "package" and len(failed.ran()) == 5


def test_inputs_must_be_an_array_of_patterns(project: Path, cli: Cli) -> None:
    bad = {
        '"src"': "'inputs' must be a non-empty array of paths or globs",
        "[]": "'inputs' must be a non-empty array of paths or globs",
        '[""]': "'inputs' must be a non-empty array of paths or globs",
        "[1]": "'inputs' must be a non-empty array of paths or globs",
        '["!"]': "inputs pattern '!' is not a valid gitignore-style pattern",
        '["# src"]': "is a comment in gitignore syntax",
    }
    for value, message in bad.items():
        (project / "rrstore.toml").write_text(
            f'[workflow.docs]\nsteps = [{{ name = "a", command = "true", inputs = {value} }}]\n')
        with pytest.raises(UsageError, match=message):
            load_workflows(project)
    used = cli("workflow", "--lane", "docs", cwd=project)
    assert used.returncode == 2 and used.stderr.startswith("rrstore: error: ")
    assert "rrstore.toml [workflow].docs step 1: inputs pattern '# src'" in used.stderr

    (project / "rrstore.toml").write_text(
        '[workflow.docs]\nsteps = [{ name = "a", command = "true", inputs = ["src/**", "!src/gen.py"] }]\n')
    assert load_workflows(project)["docs"].steps[0].inputs == ("src/**", "!src/gen.py")


# --- follow-ups: a signal, a one-off run in the lane, steps resume must not skip --------------------------


def _config_check(root: Path) -> dict[str, object]:
    """validate's configuration check, from the real CLI (exit 20: some check failed)."""
    out = run_cli("validate", "--json", cwd=root)
    assert out.returncode in (0, 20), out.stderr
    return next(c for c in json.loads(out.stdout)["checks"] if c["name"] == "configuration valid")


def _records(flow: Flow) -> list[dict[str, object]]:
    return [r.to_dict() for r in flow.system().list("standard").checkpoints]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_a_workflow_stopped_by_a_signal_during_step_2_resumes_at_step_2(
        git_project: Path, tmp_path: Path, cli: Cli, signum: int) -> None:
    flow = _make(git_project, tmp_path)
    marker = tmp_path / "step2-started"
    note = f"echo {{}} >> {shlex.quote(str(flow.log))}"
    # Step 2 says it started, then runs long; once it has started, it finishes at once (the resumed run).
    tests = (f"{note.format('tests')}; test -e {shlex.quote(str(marker))} && exit 0; "
             f"touch {shlex.quote(str(marker))}; sleep 60")
    toml = _toml(flow.log).splitlines()
    toml[6] = f'  {{ name = "tests", command = {json.dumps(tests)} }},'
    (flow.root / "rrstore.toml").write_text("\n".join(toml) + "\n")
    git(flow.root, "commit", "-q", "-am", "step 2 runs long")
    env = {**os.environ, **GIT_ENV}
    env.pop("RRSTORE_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "rrstore", "workflow", "--lane", "standard"], cwd=flow.root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert flow.ran() == ["build", "tests"]
    step2 = next(r for r in _records(flow) if r["step_number"] == 2)
    assert step2["error_message"] == "interrupted before the command finished"

    resumed = cli("workflow", "--lane", "standard", "--resume", cwd=flow.root)

    assert resumed.returncode == 0, resumed.stderr
    assert flow.ran() == ["build", "tests", "tests", "package"]
    assert "✓ step 2/3 tests" in resumed.stderr and "(did not finish in the last run)" in resumed.stderr
    assert "skipped 1 step(s): 1 build" in resumed.stderr and "(inputs unchanged)" in resumed.stderr


def test_a_one_off_run_in_the_lane_does_not_stop_the_workflow_resuming(failed: Flow, cli: Cli) -> None:
    root = failed.root
    (root / "tests" / "test_basic.py").write_text(FIX)
    one_off = cli("run", "--lane", "standard", "--step-number", "5", "--step-name", "tls", "--retries", "0",
                  "--", "true", cwd=root)
    assert one_off.returncode == 0, one_off.stderr

    resumed = cli("workflow", "--lane", "standard", "--resume", cwd=root)

    assert resumed.returncode == 0, resumed.stderr
    assert failed.ran() == ["build", "tests", "tests", "package"]
    assert "skipped 1 step(s): 1 build" in resumed.stderr
    # each record says who ran it, and what
    steps = _toml(failed.log)
    made = {(r["step_number"], r["step_name"]): (r["workflow"], r["command"]) for r in _records(failed)}
    assert made[(5, "tls")] == (None, "true")
    assert made[(1, "build")][0] == "standard" and json.dumps(made[(1, "build")][1]) in steps
    assert made[(3, "package")] == ("standard", f"echo package >> {shlex.quote(str(failed.log))}")


def test_a_store_older_than_the_workflow_field_still_resumes(failed: Flow, cli: Cli) -> None:
    """Records written before ``workflow`` and ``command`` existed are matched by number and name."""
    store = failed.system().open_store()
    for record in failed.system().list("standard").checkpoints:
        doc = record.to_dict()
        del doc["workflow"], doc["command"]
        data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        oid = hash_bytes(data)
        store.objects.put(data, oid, loose=True)
        store.refs.update(record.checkpoint_id, oid)
    assert {(r.workflow, r.command) for r in failed.system().list("standard").checkpoints} == {(None, None)}
    (failed.root / "tests" / "test_basic.py").write_text(FIX)

    resumed = cli("workflow", "--lane", "standard", "--resume", cwd=failed.root)

    assert resumed.returncode == 0, resumed.stderr
    assert failed.ran() == ["build", "tests", "tests", "package"]
    assert "(inputs unchanged)" in resumed.stderr


def test_inputs_that_match_no_file_prove_nothing_so_the_step_runs(git_project: Path, tmp_path: Path,
                                                                   cli: Cli) -> None:
    flow = _make(git_project, tmp_path, step1_inputs='["scr/**"]')  # the typo of src/**
    warning = (f"rrstore: warning: {flow.root / 'rrstore.toml'} [workflow].standard step 1 (build): inputs "
               "pattern 'scr/**' matches no file in the working tree (a typo?): the step re-runs at every resume "
               "until it matches")
    check = _config_check(flow.root)
    assert check["status"] == "pass" and check["details"] == [warning.removeprefix("rrstore: warning: ")]
    first = cli("workflow", "--lane", "standard", cwd=flow.root)
    assert first.returncode == 1 and first.stderr.splitlines()[0] == warning
    (flow.root / "tests" / "test_basic.py").write_text(FIX)

    resumed = cli("workflow", "--lane", "standard", "--resume", "--json", cwd=flow.root)

    assert resumed.returncode == 0, resumed.stderr
    assert flow.ran() == ["build", "tests", "build", "tests", "package"]
    doc = json.loads(resumed.stdout)
    assert doc["skipped"] == [] and doc["steps"][0]["reason"] == "inputs match no file: re-run"
    assert warning in resumed.stderr.splitlines()


def test_a_changed_command_makes_the_step_run_again(failed: Flow, cli: Cli) -> None:
    root = failed.root
    (root / "tests" / "test_basic.py").write_text(FIX)
    config = root / "rrstore.toml"
    config.write_text(config.read_text().replace("echo build >>", "echo rebuilt >>", 1))

    resumed = cli("workflow", "--lane", "standard", "--resume", "--json", cwd=root)

    assert resumed.returncode == 0, resumed.stderr
    assert failed.ran() == ["build", "tests", "rebuilt", "tests", "package"]
    doc = json.loads(resumed.stdout)
    assert doc["skipped"] == []
    assert [(s["step_number"], s["reason"]) for s in doc["steps"]] == [
        (1, "command changed: re-run"), (2, "failed in the last run"), (3, "not reached in the last run")]


def test_an_inputs_pattern_whose_regex_is_invalid_is_a_usage_error(git_project: Path, tmp_path: Path,
                                                                   cli: Cli) -> None:
    flow = _make(git_project, tmp_path, step1_inputs='["src/**", "[z-a]"]')
    message = (f"{flow.root / 'rrstore.toml'} [workflow].standard step 1: inputs pattern '[z-a]' is not a valid "
               "gitignore-style pattern: bad character range z-a")
    with pytest.raises(UsageError) as raised:
        load_workflows(flow.root)
    assert str(raised.value) == message

    used = cli("workflow", "--lane", "standard", cwd=flow.root)
    assert used.returncode == 2 and used.stderr == f"rrstore: error: {message}\n"
    verbose = cli("workflow", "--lane", "standard", "-v", cwd=flow.root)  # a UsageError's traceback, not re's
    assert verbose.returncode == 2 and "re.error: bad character range" not in verbose.stderr
    assert "internal error" not in verbose.stderr
    assert flow.ran() == []
    check = _config_check(flow.root)
    assert check["status"] == "fail" and check["reason"] == message
