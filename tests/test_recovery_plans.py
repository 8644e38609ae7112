"""Vocabulary and recovery plans: every failure type x lane against the seed's tables, overrides, checkpoints."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import recovery_seed as seed
from conftest import git, stop_in

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


SEED_TOOLS = ("ping", "nc", "free", "df", "sleep", "pytest", "ruff", "mypy", "bandit")


def install_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]) -> Path:
    """Put ``names`` on PATH (this machine may lack ping, nc or bandit), for plans that check PATH."""
    folder = tmp_path / "tools"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text("#!/bin/sh\nexit 0\n")
        (folder / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


@pytest.fixture
def full_project(git_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository with an origin, a workflow in every lane, a declared docs check, the tests/ (and
    tests/broken) the seed's commands name, and every tool they run on PATH: every seed command runs."""
    git(git_project, "remote", "add", "origin", "https://example.invalid/demo.git")
    (git_project / "rrstore.toml").write_text(f'[recovery]\ndocs_check = "{DOCS_CHECK}"\n\n{WORKFLOWS}')
    (git_project / "tests" / "broken").mkdir(parents=True)
    install_tools(tmp_path, monkeypatch, (*SEED_TOOLS, "mdl"))
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
    assert "1     Re-run failed tests       pytest -v -x" in text.stdout  # no tests/ here
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


# --- every command of every plan can run in the project it is for -------------------------------

SAFE_TOOLS = {"free", "df", "ping", "nc", "sleep", "pytest", "ruff", "mypy", "bandit", "curl"}
DOC_TOOLS = {"mdl": ".md", "markdownlint-cli2": ".md", "markdownlint": ".md", "pymarkdown": ".md",
             "rst2html": ".rst", "rst2html.py": ".rst", "python": ".rst", "sphinx-build": "conf.py"}
# git verbs that change nothing (or finish what the user started); those that discard work (last column)
# are allowed only after an 'rrstore checkpoint' in the same command, which keeps that work
GIT_SAFE = {("status",), ("log",), ("fetch",), ("commit", "--no-edit"), ("rebase", "--continue"),
            ("cherry-pick", "--continue"), ("revert", "--continue"), ("bisect", "reset")}
GIT_AFTER_CHECKPOINT = {("reset", "--hard"), ("merge", "--abort"), ("rebase", "--abort"),
                        ("cherry-pick", "--abort"), ("revert", "--abort")}


def parse_rrstore(words: list[str]) -> None:
    """Click parses the suggestion as 'rrstore' would (a bad option or value raises, exit 2)."""
    import click
    from rrstore.cli.main import cli

    with click.Context(cli, info_name="rrstore") as ctx:
        command = cli.get_command(ctx, words[0])
        assert command is not None, words
        command.make_context(words[0], list(words[1:]), parent=ctx).close()


def shell_parts(command: str) -> list[list[str]]:
    """The simple commands of a '&&' / ';' list, as the shell splits them (quotes respected)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&")
    lexer.whitespace_split = True
    parts: list[list[str]] = [[]]
    for token in lexer:
        if token in (";", "&&"):
            parts.append([])
        else:
            parts[-1].append(token)
    assert all(parts), command
    return parts


def check_command(command: str, root: Path | None, workflows: set[str]) -> None:
    split = shell_parts(command)
    parts = [shlex.join(words) for words in split]
    for number, words in enumerate(split):
        tool = words[0]
        if tool == "rrstore":
            parse_rrstore(words[1:])
            if words[1] == "workflow":
                assert words[words.index("--lane") + 1] in workflows, command
        elif tool == "git":
            verb = tuple(words[1:3])
            if words[1] == "clean":
                assert "-n" in words and not {"-f", "--force"} & set(words), command
                assert {"rrstore.toml", ".checkpoints"} <= set(words), command
            elif verb in GIT_AFTER_CHECKPOINT:
                assert number > 0 and parts[number - 1].startswith("rrstore checkpoint "), command
                assert "--status failed" in parts[number - 1], "a kept state is never suggested as a good one"
            else:
                assert verb in GIT_SAFE or verb[:1] in GIT_SAFE, command
            assert root is None or (root / ".git").exists(), command
        elif tool in DOC_TOOLS or tool.endswith(tuple(f"/{t}" for t in DOC_TOOLS)):
            kind = "conf.py" if "sphinx" in words[:3] else DOC_TOOLS[tool.rsplit("/", 1)[-1]]
            assert root is not None, command
            assert shutil.which(tool) or (root / tool).is_file(), f"{tool} is installed: {command}"
            if kind == "conf.py":
                assert (root / words[words.index("dummy") + 1] / "conf.py").is_file(), command
            else:  # the files it is given are this project's, of the kind it checks
                targets = [w for w in words[1:] if not w.startswith("-") and w not in ("scan", "/dev/null", "docutils")]
                assert targets and all((root / t).exists() for t in targets), command
                assert any(root.rglob(f"*{kind}")), command
        else:
            assert tool in SAFE_TOOLS, command
            assert shutil.which(tool), f"{tool} is installed: {command}"
            if tool == "pytest":  # the paths it is given are this project's
                paths = [w.split("=", 1)[-1] for w in words[1:] if not w.startswith("-") or w.startswith("--ignore=")]
                assert root is None or all((root / p).exists() for p in paths), command


def _projects(tmp_path: Path) -> dict[str, tuple[Path | None, set[str]]]:
    """Projects of every kind a plan must fit: (root, lanes with a workflow)."""
    def repo(name: str) -> Path:
        root = tmp_path / name
        root.mkdir()
        git(root, "init", "-q", "-b", "main")
        return root

    plain = tmp_path / "plain"
    plain.mkdir()
    bare_git = repo("git")
    rst = repo("rst")
    (rst / "docs").mkdir()
    (rst / "docs" / "index.rst").write_text("Index\n=====\n")
    (rst / "rrstore.toml").write_text('[workflow.heavy]\nsteps = [{ name = "t", command = "true" }]\n')
    sphinx = repo("sphinx")
    (sphinx / "doc" / "source").mkdir(parents=True)
    (sphinx / "doc" / "source" / "conf.py").write_text("project = 'demo'\n")
    (sphinx / "doc" / "source" / "index.rst").write_text("Index\n=====\n")
    markdown = repo("markdown")
    (markdown / "README.md").write_text("# demo\n")
    (markdown / "rrstore.toml").write_text("[workflow.standard]\nsteps = 3\n")  # broken: no workflow offered
    linted = repo("linted")
    (linted / "docs").mkdir()
    (linted / "docs" / "guide.md").write_text("# guide\n")
    tool = linted / ".venv" / "bin" / "pymarkdown"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    git(linted, "remote", "add", "upstream", "https://example.invalid/x.git")
    (linted / "rrstore.toml").write_text(WORKFLOWS)
    return {"no project": (None, set()), "plain directory": (plain, set()), "git, nothing declared": (bare_git, set()),
            "rst docs, heavy workflow": (rst, {"heavy"}), "sphinx": (sphinx, set()),
            "markdown, broken workflow": (markdown, set()), "linted markdown, all workflows": (linted, set(LANE_NAMES))}


def test_every_plan_command_exists_in_its_project_and_parses(tmp_path: Path) -> None:
    for kind, (root, workflows) in _projects(tmp_path).items():
        planner = planner_for(root)
        for failure in FailureType:
            for lane in Lane:
                plan = planner.get_recovery_plan(failure, lane)
                for action in plan:
                    assert action.command or action.detail, (kind, failure, lane, action)
                    if action.command:
                        check_command(action.command, root, workflows)


def test_workflow_commands_only_for_declared_lanes(tmp_path: Path) -> None:
    projects = _projects(tmp_path)
    undeclared = planner_for(projects["git, nothing declared"][0]).get_recovery_plan("timeout", "standard")
    assert undeclared[2].command is None and "rrstore workflow" not in str(undeclared.to_json())
    assert undeclared[2].detail == ("Retry with HEAVY: re-run the step with the heavy lane's limit "
                                    "('rrstore run --lane heavy --timeout 1200 ...'): no [workflow.heavy] declared")
    network = planner_for(projects["markdown, broken workflow"][0]).get_recovery_plan("network_error", "standard")
    assert [a.command for a in network][1:] == ["sleep 60", RESTORE]
    assert network[1].detail == "Wait 60s, then re-run the failed step: no [workflow.standard] declared"
    heavy = planner_for(projects["rst docs, heavy workflow"][0])
    assert heavy.get_recovery_plan("timeout", "standard")[2].command == "rrstore workflow --lane heavy"
    assert heavy.get_recovery_plan("timeout", "docs")[2].command is None  # no [workflow.standard] there


def test_the_docs_check_follows_the_docs_present(tmp_path: Path) -> None:
    projects = _projects(tmp_path)

    def docs(kind: str) -> RecoveryAction:
        return planner_for(projects[kind][0]).get_recovery_plan("quality_gate", "docs")[0]

    rst = docs("rst docs, heavy workflow").command or ""
    # docutils' own front end where it is installed, else the module of the interpreter rrstore runs
    assert rst.endswith(" --strict docs/index.rst /dev/null")
    assert rst.split(" --strict")[0] in ("rst2html", "rst2html.py", "python -m docutils")
    sphinx = docs("sphinx")  # only when installed (see the tests at the end of this file)
    assert sphinx.command == "sphinx-build -W -b dummy doc/source doc/_build/dummy" if shutil.which("sphinx-build") \
        else sphinx.command is None and "Sphinx is not installed" in (sphinx.detail or "")
    assert docs("linted markdown, all workflows").command == ".venv/bin/pymarkdown scan docs"
    unlinted = docs("markdown, broken workflow")
    assert unlinted.command is None and "no Markdown linter is installed" in (unlinted.detail or "")
    nothing = docs("git, nothing declared")
    assert nothing.command is None and "no documentation here" in (nothing.detail or "")
    assert docs("no project").command is None


def test_the_rst_check_really_checks(tmp_path: Path) -> None:
    root = _projects(tmp_path)["rst docs, heavy workflow"][0]
    assert root is not None
    command = planner_for(root).get_recovery_plan("test_failure", "docs")[0].command
    assert command is not None
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    assert subprocess.run(command, shell=True, cwd=root, capture_output=True, env=env).returncode == 0
    (root / "docs" / "index.rst").write_text("Index\n=====\n\nbroken *emphasis\n")
    done = subprocess.run(command, shell=True, cwd=root, capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "Inline emphasis start-string without end-string" in done.stderr


def test_a_declared_docs_check_wins_and_is_checked(project: Path) -> None:
    (project / "docs").mkdir()
    (project / "docs" / "a.md").write_text("# a\n")
    (project / "rrstore.toml").write_text('[recovery]\ndocs_check = "make -C docs lint"\n')
    assert RollbackRecoverySystem(root=project).plan("unknown", "docs")[2].command == "make -C docs lint"
    (project / "rrstore.toml").write_text("[recovery]\ndocs_check = 3\n")
    with pytest.raises(UsageError, match="docs_check must be a non-empty string"):
        RollbackRecoverySystem(root=project).plan("unknown", "docs")


def test_git_fetch_names_a_configured_remote_only(git_project: Path) -> None:
    system = RollbackRecoverySystem(root=git_project)
    fetch = system.plan("git_error")[1]
    assert fetch.command is None and fetch.detail == "no git remote is configured"
    git(git_project, "remote", "add", "upstream", "https://example.invalid/x.git")
    assert system.plan("git_error")[1].command == "git fetch upstream"
    git(git_project, "remote", "add", "origin", "https://example.invalid/y.git")
    assert system.plan("git_error")[1].command == "git fetch origin"


def test_the_cleanup_suggestion_names_what_it_deletes_and_spares_rrstore(git_project: Path, cli: Cli) -> None:
    (git_project / "rrstore.toml").write_text("[recovery]\nretries = 1\n")  # untracked, as in the issue
    (git_project / "scratch").mkdir()
    (git_project / "scratch" / "tmp.bin").write_bytes(b"junk")
    (git_project / "notes.txt").write_text("mine\n")
    made = cli("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "s", cwd=git_project)
    assert made.returncode == 0, made.stderr
    step = RollbackRecoverySystem(root=git_project).plan("resource_exhaustion", "standard")[0]
    assert step.command == f"git clean -n -d {KEEP}"
    (git_project / ".checkpoints" / ".gitignore").unlink()  # a store git does not ignore (an older one)
    assert "?? .checkpoints/" in git(git_project, "status", "--porcelain")

    listed = subprocess.run(step.command, shell=True, cwd=git_project, capture_output=True, text=True, check=True)
    assert sorted(listed.stdout.splitlines()) == ["Would remove notes.txt", "Would remove scratch/"]
    forced = step.command.replace(" -n ", " -f ")
    assert forced in (step.detail or "")  # the detail names the deleting form
    subprocess.run(forced, shell=True, cwd=git_project, capture_output=True, check=True)
    assert not (git_project / "notes.txt").exists() and not (git_project / "scratch").exists()
    assert (git_project / "rrstore.toml").read_text() == "[recovery]\nretries = 1\n"
    after = cli("list", "--json", cwd=git_project)
    assert after.returncode == 0 and len(json.loads(after.stdout)) == 1  # the store is intact
    # and what went is in the checkpoint taken before
    assert cli("restore", "latest", cwd=git_project).returncode == 0
    assert (git_project / "notes.txt").read_text() == "mine\n"


def test_outside_git_the_cleanup_suggestion_is_rrstores_dry_run(project: Path, cli: Cli) -> None:
    plan = RollbackRecoverySystem(root=project).plan("resource_exhaustion", "standard")
    assert [a.command for a in plan][:2] == ["rrstore cleanup --dry-run", "rrstore cleanup"]
    (project / "__pycache__").mkdir()
    (project / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    dry = cli(*shlex.split(plan[0].command or "")[1:], cwd=project)
    assert dry.returncode == 0 and "__pycache__" in dry.stdout + dry.stderr
    assert (project / "__pycache__").exists()
    git_plan = RollbackRecoverySystem(root=project).plan("git_error", "standard")
    assert [a.command for a in git_plan] == [None, None, None, RESTORE]
    assert git_plan[0].detail == "not a git repository"


# --- the git-error plan names the operation in progress ------------------------------------------

def git_env() -> dict[str, str]:
    from conftest import GIT_ENV

    return {**os.environ, **GIT_ENV, "GIT_EDITOR": "true"}


@pytest.mark.parametrize(("operation", "finish", "abort"), [("merge", "git commit --no-edit", "git merge --abort"),
                                                            ("rebase", "git rebase --continue", "git rebase --abort")])
def test_git_error_plan_during_a_real_conflict(git_project: Path, operation: str, finish: str, abort: str) -> None:
    stop_in(git_project, operation)
    system = RollbackRecoverySystem(root=git_project)

    plan = system.plan("git_error", "standard")

    assert plan.strategy is RecoveryStrategy.MANUAL
    assert [a.action for a in plan] == [f"See the {operation} in progress", f"Finish the {operation}",
                                        f"Or abort the {operation}", "Manual recovery"]
    keep = "rrstore checkpoint --lane standard --step-number 0 --step-name before-abort --status failed && "
    assert [a.command for a in plan] == ["git status", finish, keep + abort, RESTORE]
    assert any(n.startswith(f"a {operation} is in progress") for n in plan.notes), plan.notes
    if operation == "merge":
        head = git(git_project, "rev-parse", "other").strip()
        assert f"(MERGE_HEAD {head[:12]})" in plan.message
    # other failures in the meantime keep their plan, and say what git is doing
    tests = system.plan("test_failure", "standard")
    assert tests[0].command == "pytest -v -x" and f"a {operation} is in progress" in tests.message  # no tests/

    # the abort step runs as written: the work is kept in a checkpoint, then git is back where it was
    (git_project / "f.txt").write_text("resolved by hand\n")
    done = subprocess.run(plan[2].command or "", shell=True, cwd=git_project, capture_output=True, text=True,
                          env={**git_env(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    assert system.plan("git_error", "standard")[0].action == "Check status"  # nothing in progress any more
    kept = [r for r in system.list("standard").checkpoints if r.step_name == "before-abort"]
    assert len(kept) == 1 and kept[0].success is False and kept[0].git_operation == operation
    assert system.plan("git_error", "standard").checkpoint_id is None  # never suggested as a good state


@pytest.mark.parametrize("operation", ["merge", "rebase"])
def test_the_finish_step_completes_a_resolved_operation(git_project: Path, operation: str) -> None:
    stop_in(git_project, operation)
    finish = RollbackRecoverySystem(root=git_project).plan("git_error")[1].command or ""
    (git_project / "f.txt").write_text("both\n")
    git(git_project, "add", "f.txt")
    done = subprocess.run(finish, shell=True, cwd=git_project, capture_output=True, text=True, env=git_env())
    assert done.returncode == 0, done.stderr
    assert git(git_project, "status", "--porcelain") == "" and (git_project / "f.txt").read_text() == "both\n"
    assert not (git_project / ".git" / "MERGE_HEAD").exists()
    assert not (git_project / ".git" / "rebase-merge").exists()


def test_project_steps_for_git_errors_apply_during_an_operation(git_project: Path) -> None:
    (git_project / "rrstore.toml").write_text('[recovery.plans.git_error]\nsteps = [{ action = "Call the owner" }]\n')
    git(git_project, "add", "rrstore.toml")
    git(git_project, "commit", "-q", "-m", "config")
    stop_in(git_project, "merge")
    plan = RollbackRecoverySystem(root=git_project).plan("git_error")
    assert [a.action for a in plan] == ["Call the owner"] and "a merge is in progress" in plan.message


# --- a classification's own strategy ------------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures" / "recovery"


def test_a_certificate_failure_is_not_retried_a_read_timeout_is(project: Path) -> None:
    from rrstore.recovery.classify import classify

    planner = RollbackRecoverySystem(root=project).recovery_planner
    cert = classify((FIXTURES / "curl_tls_self_signed.log").read_text(), 60)
    plan = planner.get_recovery_plan(cert, "standard")
    assert plan.failure_type is FailureType.NETWORK_ERROR and plan.strategy is RecoveryStrategy.MANUAL
    assert any(n.startswith("certificate verification failure: ") and "CA bundle" in n for n in plan.notes)
    stalled = classify((FIXTURES / "pip_read_timeout.log").read_text(), 1)
    assert planner.get_recovery_plan(stalled, "standard").strategy is RecoveryStrategy.RETRY
    missing = classify((FIXTURES / "python_module_not_found.log").read_text(), 1)
    assert planner.get_recovery_plan(missing, "standard").strategy is RecoveryStrategy.MANUAL


def test_rrstore_run_does_not_retry_a_certificate_failure(project: Path, cli: Cli) -> None:
    step = f"cat {shlex.quote(str(FIXTURES / 'curl_tls_self_signed.log'))}; exit 60"
    done = cli("run", "--lane", "standard", "--step-number", "1", "--step-name", "fetch", "--retries", "2",
               "--backoff", "0", "--json", "--", step, cwd=project)
    doc = json.loads(done.stdout)
    assert done.returncode == 60 and len(doc["attempts"]) == 1, done.stderr
    assert doc["plan"]["strategy"] == "manual" and doc["plan"]["failure_type"] == "network_error"
    assert "strategy MANUAL for network_error: not retrying" in done.stderr
    stalled = f"cat {shlex.quote(str(FIXTURES / 'npm_etimedout.log'))}; exit 1"
    again = cli("run", "--lane", "standard", "--step-number", "2", "--step-name", "npm", "--retries", "1",
                "--backoff", "0", "--json", "--", stalled, cwd=project)
    assert again.returncode == 1 and len(json.loads(again.stdout)["attempts"]) == 2  # transient: retried


def test_git_clean_spares_the_store_where_it_really_is(git_project: Path, tmp_path: Path) -> None:
    def clean(store: Path) -> str | None:
        return RecoveryPlanner(root=git_project, store=store).get_recovery_plan("resource_exhaustion")[0].command

    assert clean(git_project / "ci" / "store") == "git clean -n -d -e rrstore.toml -e .rrstoreignore -e ci/store"
    assert clean(tmp_path / "elsewhere") == "git clean -n -d -e rrstore.toml -e .rrstoreignore"  # out of reach


# --- follow-ups of issue 9: plans that suggest only what exists and agrees with the strategy --------

def test_a_checkpoint_taken_mid_merge_is_never_the_last_good_one(git_project: Path) -> None:
    system = RollbackRecoverySystem(root=git_project)
    good = system.checkpoint("standard", 1, "before merge", success=True).checkpoint_id
    stop_in(git_project, "merge")
    mid = system.checkpoint("standard", 2, "during merge", success=True)
    assert mid.record.git_operation == "merge" and "<<<<<<<" in (git_project / "f.txt").read_text()

    plan = system.plan("git_error", "standard")

    assert plan.checkpoint_id == good and plan[-1].command == f"rrstore restore --checkpoint-id {good}"
    assert system.plan("unknown", "standard").checkpoint_id == good


def path_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real: tuple[str, ...] = ("git",),
            stubs: tuple[str, ...] = ()) -> Path:
    """PATH holds only ``real`` (this machine's programs) and ``stubs`` (installed, do nothing)."""
    folder = tmp_path / "only-these"
    folder.mkdir()
    for name in real:
        found = shutil.which(name)
        assert found, name
        (folder / name).symlink_to(found)
    for name in stubs:
        (folder / name).write_text("#!/bin/sh\nexit 0\n")
        (folder / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))
    return folder


def test_programs_that_are_not_installed_are_never_suggested(git_project: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    tools = path_of(tmp_path, monkeypatch, stubs=("sleep", "curl", "ruff", "mypy", "pytest", "df"))
    system = RollbackRecoverySystem(root=git_project)

    connectivity = system.plan("network_error", "standard")[0]
    assert connectivity.command == "curl -sS -o /dev/null --max-time 10 https://github.com"
    said = connectivity.detail or ""
    assert "ping is not installed (not on PATH" in said and "; nc is not installed (not on PATH" in said
    gates = system.plan("quality_gate", "standard")
    assert gates[0].command == gates[2].command == "ruff check .; mypy . --ignore-missing-imports"
    assert "bandit is not installed (not on PATH or in the project's .venv/bin" in (gates[0].detail or "")
    resources = system.plan("timeout", "standard")[0]
    assert resources.command == "df -h" and "free is not installed" in (resources.detail or "")

    (tools / "ping").write_text("#!/bin/sh\nexit 0\n")
    (tools / "ping").chmod(0o755)
    assert system.plan("network_error", "standard")[0].command == "ping 8.8.8.8"
    (tools / "curl").unlink()
    (tools / "ping").unlink()
    nothing = system.plan("network_error", "standard")[0]
    assert nothing.command is None and "curl is not installed" in (nothing.detail or "")
    bandit = git_project / ".venv" / "bin" / "bandit"  # the project's own bin dir: named by its path
    bandit.parent.mkdir(parents=True)
    bandit.write_text("#!/bin/sh\nexit 0\n")
    bandit.chmod(0o755)
    assert system.plan("quality_gate", "standard")[0].command == \
        "ruff check .; mypy . --ignore-missing-imports; .venv/bin/bandit -r ."
    (tools / "pytest").unlink()
    rerun = system.plan("test_failure", "standard")[0]
    assert rerun.command is None and rerun.detail == "pytest is not installed (not on PATH or in the project's " \
                                                     ".venv/bin, venv/bin, node_modules/.bin)"


def test_pytest_is_given_the_test_directory_the_project_has(git_project: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path_of(tmp_path, monkeypatch, stubs=("pytest",))
    system = RollbackRecoverySystem(root=git_project)

    def commands() -> list[str | None]:
        return [a.command for a in system.plan("test_failure", "standard")]

    assert commands() == ["pytest -v -x", "pytest -v --tb=short", None, None]  # no tests/: pytest finds them
    skip = system.plan("test_failure", "standard")[2]
    assert skip.detail == "Skip and continue: re-run pytest with --ignore=PATH for the tests to skip: " \
                          "tests/broken: no such path in the project"
    (git_project / "test").mkdir()
    assert commands()[0] == "pytest test/ -v -x"
    (git_project / "tests" / "broken").mkdir(parents=True)
    assert commands()[:3] == ["pytest tests/ -v -x", "pytest -v --tb=short", "pytest --ignore=tests/broken"]


def test_sphinx_is_suggested_only_where_it_is_installed(git_project: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    (git_project / "doc").mkdir()
    (git_project / "doc" / "conf.py").write_text("project = 'demo'\n")
    (git_project / "doc" / "index.rst").write_text("Index\n=====\n")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(git_project / ".venv")], check=True)
    tools = path_of(tmp_path, monkeypatch)
    system = RollbackRecoverySystem(root=git_project)
    python = git_project / ".venv" / "bin" / "python"

    missing = system.plan("quality_gate", "docs")[0]
    assert missing.command is None
    assert f"Sphinx is not installed (no sphinx-build, and {python} (the project's .venv) cannot import sphinx)" \
        in (missing.detail or "")

    # importable in the project's interpreter (not rrstore's): its '-m sphinx', which really runs there
    site = next((git_project / ".venv" / "lib").glob("python3*/site-packages"))
    (site / "sphinx").mkdir()
    (site / "sphinx" / "__init__.py").write_text("")
    (site / "sphinx" / "__main__.py").write_text("import sys\nprint('sphinx', *sys.argv[1:])\n")
    module = system.plan("quality_gate", "docs")[0].command or ""
    assert module == ".venv/bin/python -m sphinx -W -b dummy doc doc/_build/dummy"
    ran = subprocess.run(module, shell=True, cwd=git_project, capture_output=True, text=True, check=True)
    assert ran.stdout == "sphinx -W -b dummy doc doc/_build/dummy\n"

    (git_project / ".venv" / "bin" / "sphinx-build").write_text("#!/bin/sh\nexit 0\n")
    (git_project / ".venv" / "bin" / "sphinx-build").chmod(0o755)
    assert system.plan("test_failure", "docs")[0].command == ".venv/bin/sphinx-build -W -b dummy doc doc/_build/dummy"
    (tools / "sphinx-build").write_text("#!/bin/sh\nexit 0\n")
    (tools / "sphinx-build").chmod(0o755)
    assert system.plan("unknown", "docs")[2].command == "sphinx-build -W -b dummy doc doc/_build/dummy"


def _first(plan: list[RecoveryAction], strategy: RecoveryStrategy) -> int:
    return next((a.step for a in plan if a.strategy is strategy), 10**6)


def test_a_manual_rule_fixes_first_then_re_runs(project: Path) -> None:
    from rrstore.recovery.classify import RULES, classify

    planner = RollbackRecoverySystem(root=project).recovery_planner
    missing = planner.get_recovery_plan(classify((FIXTURES / "python_module_not_found.log").read_text(), 1))
    assert missing.strategy is RecoveryStrategy.MANUAL
    assert [a.action for a in missing] == ["Install the missing module", "Check the project's environment",
                                           "Re-run the step"]
    assert missing[0].detail == "install the module 'nope' (the project's dependencies) in the interpreter the " \
                                "step runs"
    assert missing[1].command == "rrstore validate" and "pytest" not in str(missing.to_json()["actions"])
    assert missing[2].command is None and missing[2].detail == "re-run the failed step: no [workflow.standard] declared"

    cert = planner.get_recovery_plan(classify((FIXTURES / "curl_tls_self_signed.log").read_text(), 60), "heavy")
    assert [a.action for a in cert] == ["Fix the certificate or CA bundle", "Re-run the step"]
    assert "Wait and retry" not in cert.message and "retrying does not help" in cert.message
    # whatever rule says MANUAL: the fix (a manual step) comes before any retry
    samples = {"certificate verification failure": "curl_tls_self_signed.log",
               "missing module (a dependency to install)": "python_module_not_found.log"}
    for rule in RULES:
        if rule.strategy is RecoveryStrategy.MANUAL:
            plan = planner.get_recovery_plan(classify((FIXTURES / samples[rule.name]).read_text(), 1), "standard")
            assert plan.strategy is RecoveryStrategy.MANUAL and plan[0].strategy is RecoveryStrategy.MANUAL, rule.name
            assert _first(list(plan), RecoveryStrategy.MANUAL) < _first(list(plan), RecoveryStrategy.RETRY), rule.name


def test_rrstore_run_of_a_missing_module_plans_the_install_then_its_own_re_run(project: Path, cli: Cli) -> None:
    step = f"{shlex.quote(sys.executable)} -c 'import rrstore_test_not_installed'"
    done = cli("run", "--lane", "standard", "--step-number", "1", "--step-name", "import", "--json", "--", step,
               cwd=project)
    doc = json.loads(done.stdout)
    assert done.returncode == 1 and len(doc["attempts"]) == 1, done.stderr
    actions = doc["plan"]["actions"]
    assert actions[0]["action"] == "Install the missing module"
    assert "the module 'rrstore_test_not_installed'" in actions[0]["detail"]
    rerun = f"rrstore run --lane standard --step-number 1 --step-name import -- {shlex.quote(step)}"
    assert actions[-1]["command"] == rerun
    parse_rrstore(shlex.split(rerun)[1:])
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    again = subprocess.run(rerun, shell=True, cwd=project, capture_output=True, text=True, env=env)
    assert again.returncode == 1 and "No module named 'rrstore_test_not_installed'" in again.stderr  # it ran


def test_a_one_off_step_is_re_run_a_workflow_step_resumed(git_project: Path, cli: Cli) -> None:
    refused = FIXTURES / "curl_connection_refused.log"
    (git_project / "rrstore.toml").write_text(
        '[recovery]\nretries = 0\n\n[workflow.standard]\nsteps = [{ name = "lint", command = "true" }, '
        f'{{ name = "fetch", command = "cat {refused}; exit 7" }}]\n')

    def plan(*args: str) -> list[dict[str, object]]:
        done = cli("run", "--lane", "standard", *args, "--retries", "0", "--json", "--", f"cat {refused}; exit 7",
                   cwd=git_project)
        assert done.returncode == 7, done.stderr
        doc = json.loads(done.stdout)
        assert doc["plan"]["failure_type"] == "network_error"
        actions: list[dict[str, object]] = doc["plan"]["actions"]
        return actions

    one_off = plan("--step-number", "5", "--step-name", "tls")
    again = f"rrstore run --lane standard --step-number 5 --step-name tls -- {shlex.quote(f'cat {refused}; exit 7')}"
    assert one_off[1]["command"] == f"sleep 60 && {again}"
    assert one_off[1]["detail"] == "Wait 60s, then re-run the failed step: step 5 (tls) is not a step of " \
                                   "[workflow.standard]"
    assert str(one_off[2]["command"]).endswith(f" && {again}") and "workflow" not in str(one_off[2]["command"])
    parse_rrstore(shlex.split(again)[1:])
    assert "rrstore workflow" not in json.dumps(plan("--step-number", "2", "--step-name", "tls"))  # nor is step 2 tls

    declared = plan("--step-number", "2", "--step-name", "fetch")
    assert declared[1]["command"] == "sleep 60 && rrstore workflow --lane standard --resume"
    flow = cli("workflow", "--lane", "standard", "--json", cwd=git_project)
    assert flow.returncode == 7
    assert "sleep 60 && rrstore workflow --lane standard --resume" in flow.stdout


def test_an_overrides_rrstore_command_is_parsed_by_rrstores_own_cli(project: Path, cli: Cli) -> None:
    (project / "rrstore.toml").write_text(
        '[recovery.plans.unknown]\nsteps = [{ action = "Restore", command = "rrstore restore --bogus" }]\n')
    for args in (("plan",), ("plan", "--failure-type", "timeout", "--lane", "docs")):
        done = cli(*args, cwd=project)
        assert done.returncode == 2 and done.stdout == "", done.stderr
        [line] = done.stderr.splitlines()
        said = (f"rrstore: error: {project / 'rrstore.toml'} [recovery]: recovery.plans.unknown step 1: "
                "'rrstore restore --bogus' does not run: ")
        # then click's own words, which differ between click versions (8.2: "No such option: --bogus")
        assert line.startswith(said) and "No such option" in line and "--bogus" in line[len(said):], line
    validated = cli("validate", "--json", cwd=project)
    checks = {c["name"]: c for c in json.loads(validated.stdout)["checks"]}
    assert checks["configuration valid"]["status"] == "fail"
    assert "recovery.plans.unknown step 1: 'rrstore restore --bogus' does not run" in \
        checks["configuration valid"]["reason"]

    # a lane's table, a fallback, an unknown command: named each; placeholders stand for real values
    (project / "rrstore.toml").write_text(
        '[recovery.plans.timeout.heavy]\nsteps = [{ action = "Back", command = '
        '"rrstore restore --checkpoint-id {checkpoint} && rrstore workflow --lane {lane} --resume" },\n'
        '  { action = "List", command = "rrstore list", without = { command = "free -h; rrstore lsit -a" } }]\n')
    wrong = cli("plan", "--failure-type", "timeout", "--lane", "heavy", cwd=project)
    assert wrong.returncode == 2, wrong.stderr
    [line] = wrong.stderr.splitlines()  # click 8.5 adds "Did you mean 'list'?", the 8.2 floor does not
    assert line.startswith(f"rrstore: error: {project / 'rrstore.toml'} [recovery]: recovery.plans.timeout.heavy "
                           "step 2: 'rrstore lsit -a' does not run: No such command 'lsit'."), line
    (project / "rrstore.toml").write_text((project / "rrstore.toml").read_text().replace("lsit -a", "list --json"))
    fine = cli("plan", "--failure-type", "timeout", "--lane", "heavy", "--json", cwd=project)
    assert fine.returncode == 0, fine.stderr
    assert json.loads(fine.stdout)["actions"][1]["command"] == "rrstore list"


def test_every_rule_plan_command_exists_in_its_project_and_parses(tmp_path: Path) -> None:
    from rrstore.recovery.classify import classify
    from rrstore.recovery.vocabulary import FailedStep

    found = [classify((FIXTURES / name).read_text(), 1) for name in
             ("curl_tls_self_signed.log", "python_module_not_found.log", "curl_read_timeout.log")]
    steps = [None, FailedStep(1, "check", "rrstore run --lane standard --step-number 1 --step-name check -- true"),
             FailedStep(7, "tls", "rrstore run --lane heavy --step-number 7 --step-name tls -- 'curl -sS x; exit 60'")]
    for kind, (root, workflows) in _projects(tmp_path).items():
        planner = planner_for(root)
        for classification in found:
            for lane in Lane:
                for step in steps:
                    for action in planner.get_recovery_plan(classification, lane, step):
                        assert action.command or action.detail, (kind, classification.rule, lane, action)
                        if action.command:
                            check_command(action.command, root, workflows)


def test_docutils_is_the_project_interpreters(git_project: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (git_project / "docs").mkdir()
    (git_project / "docs" / "index.rst").write_text("Index\n=====\n\nbroken *emphasis\n")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(git_project / ".venv")], check=True)
    path_of(tmp_path, monkeypatch)  # no rst2html
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    system = RollbackRecoverySystem(root=git_project)

    without = system.plan("quality_gate", "docs")[0]
    assert without.command is None and "docutils is not installed" in (without.detail or "")

    pytest.importorskip("docutils")  # the tests' own interpreter has it: activated, the project runs it
    monkeypatch.setenv("VIRTUAL_ENV", sys.prefix)
    command = system.plan("quality_gate", "docs")[0].command or ""
    python = Path(sys.prefix) / "bin" / "python"
    assert command == f"{shlex.quote(str(python))} -m docutils --strict docs/index.rst /dev/null"
    done = subprocess.run(command, shell=True, cwd=git_project, capture_output=True, text=True)
    assert done.returncode != 0 and "Inline emphasis start-string without end-string" in done.stderr
