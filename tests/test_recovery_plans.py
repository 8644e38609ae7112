"""Vocabulary and recovery plans: every failure type x lane against the seed's tables, overrides, checkpoints."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import recovery_seed as seed
from conftest import git

from rrstore import FailureType, Lane, RecoveryStrategy, RollbackRecoverySystem
from rrstore.errors import UsageError
from rrstore.recovery.planner import PLACEHOLDER, RecoveryAction, RecoveryPlanner
from rrstore.recovery.plans import GATES

Cli = Callable[..., subprocess.CompletedProcess[str]]

RESTORE = "rrstore restore --checkpoint-id <checkpoint-id>"
LANE_NAMES = [lane.value for lane in Lane]
DOCS_CHECK = "mdl docs/*.md"  # what the seed's docs lane runs; declared by the project below
KEEP = "-e rrstore.toml -e .rrstoreignore -e .checkpoints"

# The seed's command column where it is words (or a script of the seed's own), and what rrstore runs instead.
WORDS = {
    "Retry with HEAVY": "rrstore workflow --lane heavy",
    "See commands below": GATES,  # the seed's example under the table: ruff, mypy, bandit
    "Verify fixes": GATES,
    "Fix failing tests": None,
    "Try lighter lane": "rrstore workflow --lane docs",  # from the standard lane
    "Wait 60s then retry": "sleep 60 && rrstore workflow --lane standard --resume",
    "Resume from checkpoint": RESTORE + " && rrstore workflow --lane standard --resume",
    "Restore from checkpoint": RESTORE,
    "`rollback_recovery.py restore`": RESTORE,
    # rrstore's cleanup removes every cache the seed's example lists, and never a tracked file
    "`rm -rf __pycache__`": "rrstore cleanup",
    # the seed's destructive commands: first name what would go (sparing rrstore's config and store),
    # or keep it in a checkpoint that is never suggested as a good state
    "`git clean -fd`": f"git clean -n -d {KEEP}",
    "`git reset --hard`": "rrstore checkpoint --lane standard --step-number 0 --step-name before-reset "
                          "--status failed && git reset --hard",
}

# How the docs and heavy lanes differ from the seed's (standard-lane) rows: (failure, lane, step) -> fields.
ADAPTED: dict[tuple[str, str, int], dict[str, object]] = {
    ("timeout", "docs", 3): {"command": "rrstore workflow --lane standard", "time_s": 900},
    ("timeout", "heavy", 3): {"action": "Split the step or raise its timeout", "command": None, "time_s": None,
                              "strategy": RecoveryStrategy.MANUAL},
    ("quality_gate", "docs", 1): {"command": DOCS_CHECK},
    ("quality_gate", "docs", 2): {"action": "Fix documentation issues", "command": None,
                                  "strategy": RecoveryStrategy.MANUAL},
    ("quality_gate", "docs", 3): {"command": DOCS_CHECK},
    ("resource_exhaustion", "docs", 4): {"action": "Free disk space or memory", "command": "df -h; free -h",
                                         "strategy": RecoveryStrategy.MANUAL},
    ("resource_exhaustion", "heavy", 4): {"command": "rrstore workflow --lane standard"},
}
# Rows only some lanes have (the docs lane checks the docs), and where they sit in the plan.
EXTRA = {("test_failure", "docs"): {1: "Check documentation"}}
WORKFLOWS = "".join(f'[workflow.{lane}]\nsteps = [{{ name = "check", command = "true" }}]\n' for lane in LANE_NAMES)


@pytest.fixture
def full_project(git_project: Path) -> Path:
    """A git repository with an origin, a workflow in every lane and a declared docs check: every seed command runs."""
    git(git_project, "remote", "add", "origin", "https://example.invalid/demo.git")
    (git_project / "rrstore.toml").write_text(f'[recovery]\ndocs_check = "{DOCS_CHECK}"\n\n{WORKFLOWS}')
    return git_project


def planner_for(root: Path | None) -> RecoveryPlanner:
    if root is None:
        return RecoveryPlanner()
    return RollbackRecoverySystem(root=root).recovery_planner


def seed_rows_of(actions: list[RecoveryAction], failure: str, lane: str) -> list[RecoveryAction]:
    extra = EXTRA.get((failure, lane), {})
    assert [actions[i - 1].action for i in extra] == list(extra.values())
    return [a for a in actions if a.step not in extra]


@pytest.mark.parametrize("lane", LANE_NAMES)
@pytest.mark.parametrize("failure", sorted(seed.TITLES.values()))
def test_every_failure_and_lane_follows_the_seed_table(failure: str, lane: str, full_project: Path) -> None:
    table = seed.plan_tables()[failure]
    plan = planner_for(full_project).get_recovery_plan(FailureType(failure), lane=lane)

    assert plan.failure_type is FailureType(failure) and plan.lane is Lane(lane)
    assert [a.step for a in plan] == list(range(1, len(plan) + 1))
    rows = seed_rows_of(list(plan), failure, lane)
    assert len(rows) == len(table)
    for ours, theirs in zip(rows, table, strict=True):
        expected: dict[str, object] = {
            "action": theirs.action, "time_s": theirs.seconds,
            "command": WORDS.get(theirs.command, theirs.literal),
        }
        expected.update(ADAPTED.get((failure, lane, theirs.step), {}))
        if isinstance(expected["command"], str):
            expected["command"] = (expected["command"].replace("--lane standard --resume", f"--lane {lane} --resume")
                                   .replace("checkpoint --lane standard", f"checkpoint --lane {lane}"))
        got = {"action": ours.action, "time_s": ours.time_s, "command": ours.command}
        assert got == {k: expected[k] for k in got}, (failure, lane, theirs.step)
        if "strategy" in expected:
            assert ours.strategy is expected["strategy"]
        assert ours.command or ours.detail, "a row without a command says what to do"


def test_the_standard_lane_is_the_seed_table_itself() -> None:
    planner = RecoveryPlanner()  # no project: the rows stay, whatever their commands
    for failure, table in seed.plan_tables().items():
        plan = planner.get_recovery_plan(failure, "standard")
        assert [(a.step, a.action, a.time) for a in plan] == [(s.step, s.action, s.time) for s in table]


@pytest.mark.parametrize("lane", LANE_NAMES)
def test_unknown_failures_escalate_as_the_seeds_multi_step_recovery(lane: str) -> None:
    plan = RecoveryPlanner().get_recovery_plan(FailureType.UNKNOWN, lane=lane)
    commands = [a.command for a in plan if a.action != "Check documentation"]
    # attempt 2 of the seed: validate and clean up; attempt 3: restore from a checkpoint; then a person
    assert commands == ["rrstore validate", "rrstore cleanup", RESTORE, None]
    assert plan.strategy is RecoveryStrategy.RETRY
    assert ("Check documentation" in [a.action for a in plan]) == (lane == "docs")
    assert [a.action for a in plan[:2]] == ["Validate state", "Clean up failed state"]


def test_lane_notes_suggest_the_next_lane() -> None:
    planner = RecoveryPlanner()
    assert "heavy lane" in " ".join(planner.get_recovery_plan("timeout", "standard").notes)
    assert "standard lane" in " ".join(planner.get_recovery_plan("timeout", "docs").notes)
    assert "lighter lane: docs" in " ".join(planner.get_recovery_plan("resource_exhaustion", "standard").notes)
    assert "lighter lane: standard" in " ".join(planner.get_recovery_plan("resource_exhaustion", "heavy").notes)
    for failure in ("test_failure", "quality_gate", "unknown"):
        assert "documentation" in " ".join(planner.get_recovery_plan(failure, "docs").notes)


def test_strategies_and_lanes_carry_the_seeds_words() -> None:
    assert {s.name: (s.description, s.when_to_use, s.time_impact) for s in RecoveryStrategy} == seed.strategies()
    assert {lane.value: lane.characteristics for lane in Lane} == seed.lane_characteristics()
    assert [lane.time_limit_s for lane in Lane] == [300, 900, 1200]
    assert Lane.STANDARD.heavier is Lane.HEAVY and Lane.STANDARD.lighter is Lane.DOCS
    assert Lane.HEAVY.heavier is None and Lane.DOCS.lighter is None
    assert [f.value for f in FailureType] == ["timeout", "test_failure", "quality_gate", "resource_exhaustion",
                                              "network_error", "git_error", "unknown"]
    assert FailureType.parse("TEST_FAILURE") is FailureType.TEST_FAILURE
    with pytest.raises(UsageError, match="unknown failure type 'flaky'"):
        FailureType.parse("flaky")
    with pytest.raises(UsageError, match="unknown lane 'fast'"):
        RecoveryPlanner().get_recovery_plan(FailureType.TIMEOUT, lane="fast")


def test_plan_is_a_sequence_usable_as_the_seeds_loop_uses_it() -> None:
    plan = RecoveryPlanner().get_recovery_plan(FailureType.UNKNOWN, lane="standard")
    for attempt in range(1, 4):
        assert [a.step for a in plan[:attempt]] == list(range(1, attempt + 1))
    assert plan[0].action == "Validate state" and len(plan) == 4 and list(plan) == plan.actions
    assert plan.total_time_s is None  # a manual step varies
    doc = plan.to_json()
    assert json.loads(json.dumps(doc)) == doc
    assert doc["strategy"] == "retry" and doc["actions"][0]["time"] == "30s"


def _checkpoint(system: RollbackRecoverySystem, root: Path, lane: str, step: int, ok: bool = True) -> str:
    (root / "work.txt").write_text(f"{lane} {step} {ok}\n")
    return system.checkpoint(lane, step, f"step {step}", success=ok).checkpoint_id


def test_restore_commands_name_the_newest_successful_checkpoint_of_the_lane(project: Path) -> None:
    system = RollbackRecoverySystem(root=project)
    assert system.plan("timeout", "standard").checkpoint_id is None  # no store yet: a placeholder
    good = _checkpoint(system, project, "standard", 1)
    _checkpoint(system, project, "standard", 2, ok=False)  # failed: never suggested
    other = _checkpoint(system, project, "heavy", 1)
    system.restore(good)  # its undo point (kind pre-restore) is newer, but never suggested either

    plan = system.recovery_planner.get_recovery_plan(FailureType.TIMEOUT, lane="standard")

    assert plan.checkpoint_id == good
    assert plan[1].command == f"rrstore restore --checkpoint-id {good}" and not plan[1].needs_checkpoint
    assert f"Checkpoint: {good}" in plan.message
    assert system.plan("git_error", "heavy")[3].command == f"rrstore restore --checkpoint-id {other}"
    docs = system.plan("network_error", "docs")
    assert docs.checkpoint_id is None and docs[2].needs_checkpoint and PLACEHOLDER in (docs[2].command or "")
    assert any("no successful checkpoint of the docs lane" in n for n in docs.notes)
    assert system.plan("quality_gate", "standard").checkpoint_id is None  # no restore step: not looked up


def test_plans_are_overridable_in_rrstore_toml(project: Path) -> None:
    (project / "rrstore.toml").write_text(
        '[recovery.plans.test_failure]\nstrategy = "retry"\nnote = "flaky suite: retry first"\n'
        'steps = [{ action = "Re-run the last failures", command = "pytest --lf -x", time = "2m", '
        'strategy = "retry" }]\n\n'
        '[recovery.plans.test_failure.heavy]\n'
        'steps = [{ action = "Re-run in parallel", command = "pytest -n 4", time = 300 },'
        ' { action = "Ask the owners", time = "varies" }]\n')
    system = RollbackRecoverySystem(root=project)

    standard = system.plan(FailureType.TEST_FAILURE, "standard")
    heavy = system.plan("test_failure", "heavy")

    assert [(a.action, a.command, a.time_s) for a in standard] == [("Re-run the last failures", "pytest --lf -x", 120)]
    assert standard.strategy is RecoveryStrategy.RETRY and standard.notes == ["flaky suite: retry first"]
    assert [(a.action, a.time) for a in heavy] == [("Re-run in parallel", "300s"), ("Ask the owners", "varies")]
    assert heavy.strategy is RecoveryStrategy.RETRY  # inherited from the failure's table
    assert len(system.plan("timeout", "standard")) == 3  # the others keep the built-in plans


def test_overrides_in_pyproject_and_their_mistakes(project: Path) -> None:
    (project / "pyproject.toml").write_text(
        '[tool.rrstore.recovery.plans.git_error]\nsteps = [{ action = "Call the release manager" }]\n')
    assert [a.action for a in RollbackRecoverySystem(root=project).plan("git_error")] == ["Call the release manager"]

    bad = {
        '[recovery.plans.flaky]\nsteps = [{ action = "x" }]\n': "unknown failure type",
        '[recovery.plans.timeout]\nsteps = [{ command = "x" }]\n': "'action' must be a non-empty string",
        '[recovery.plans.timeout]\nsteps = [{ action = "x", tiem = 3 }]\n': "unknown key(s) tiem",
        '[recovery.plans.timeout]\nstrategy = "pray"\n': "unknown recovery strategy 'pray'",
        '[recovery.plans.timeout]\nsteps = [{ action = "x", time = "soon" }]\n': "time must be seconds",
        '[recovery.plans.timeout.fast]\nsteps = []\n': "unknown key(s) fast",
        '[recovery]\nretrys = 3\n': "unknown setting(s) retrys",
    }
    for text, message in bad.items():
        (project / "rrstore.toml").write_text(text)
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
            RollbackRecoverySystem(root=project).plan("timeout")
        assert "rrstore.toml" in str(caught.value)


def test_run_dispatches_plan_and_reports_errors(project: Path) -> None:
    system = RollbackRecoverySystem(root=project)
    assert system.run("plan", failure_type="network_error", lane="heavy").strategy is RecoveryStrategy.RETRY
    failed = system.run("plan", failure_type="flaky", lane="standard")
    assert failed.success is False and "unknown failure type" in failed.message


def test_cli_plan_text_json_and_errors(project: Path, cli: Cli) -> None:
    text = cli("plan", "--failure-type", "test_failure", "--lane", "standard", cwd=project)
    assert text.returncode == 0, text.stderr
    assert "Strategy: MANUAL" in text.stdout
    assert "1     Re-run failed tests       pytest tests/ -v -x" in text.stdout
    assert text.stdout.splitlines()[-1].endswith("varies")

    as_json = cli("plan", "--failure-type", "timeout", "--lane", "heavy", "--json", cwd=project)
    doc = json.loads(as_json.stdout)
    assert set(doc) == {"failure_type", "lane", "lane_characteristics", "strategy", "strategy_description",
                        "strategy_when", "strategy_time_impact", "checkpoint_id", "total_time_s", "actions", "notes"}
    assert set(doc["actions"][0]) == {"step", "action", "command", "detail", "time_s", "time", "strategy"}
    assert doc["actions"][2]["action"] == "Split the step or raise its timeout"

    wrong = cli("plan", "--failure-type", "flaky", cwd=project)
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert len(wrong.stderr.splitlines()) == 1 and wrong.stderr.startswith("rrstore: error: ")
