"""Settings in the states users live in (issue 9): a pyproject.toml left with real git merge conflict
markers, with and without rrstore's own [tool.rrstore] table in it, and the messages validate and
workflow give when a project declares nothing or declares it wrong."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import GIT_ENV, git, run_cli, tree_manifest

from rrstore import RollbackRecoverySystem
from rrstore.errors import UsageError

BASE = '[project]\nname = "demo"\nversion = "1"\ndependencies = ["click>=8"]\n'


def merge(repo: Path, branch: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), "merge", branch], capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV, "HOME": str(repo)})


def branches(repo: Path, base: str, ours: str, theirs: str) -> None:
    """Commit ``base`` as pyproject.toml, then branch ``dep`` changing it to ``theirs`` and main to ``ours``."""
    (repo / "pyproject.toml").write_text(base)
    (repo / ".gitignore").write_text("*.log\nbuild/\n.checkpoints/\nckpts/\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "pyproject")
    git(repo, "checkout", "-q", "-b", "dep")
    (repo / "pyproject.toml").write_text(theirs)
    git(repo, "commit", "-q", "-am", "theirs")
    git(repo, "checkout", "-q", "main")
    (repo / "pyproject.toml").write_text(ours)
    git(repo, "commit", "-q", "-am", "ours")


def conflict(repo: Path) -> None:
    done = merge(repo, "dep")
    assert done.returncode == 1 and "CONFLICT (content): Merge conflict in pyproject.toml" in done.stdout
    assert "<<<<<<< HEAD" in (repo / "pyproject.toml").read_text()


def dependency_conflict(repo: Path, rrstore_table: str = "") -> None:
    """main and dep change the same dependencies line (line 4); ``rrstore_table`` is the same on both."""
    branches(repo, BASE + rrstore_table, BASE.replace("click>=8", "click>=7") + rrstore_table,
             BASE.replace('"click>=8"', '"click>=8", "blake3"') + rrstore_table)


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("rrstore: warning:")]


IGNORED = "pyproject.toml does not parse (line 4: merge conflict markers); ignored"


def test_a_dependency_conflict_leaves_every_command_working(git_project: Path, tmp_path: Path) -> None:
    """Each of these exited 2 with 'invalid TOML in …/pyproject.toml: Invalid statement (at line 4, column 1)'."""
    repo = git_project
    dependency_conflict(repo)
    (repo / "f.txt").write_text("before\n")
    made = run_cli("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "good", "--json",
                   cwd=repo)
    assert made.returncode == 0, made.stderr
    good = json.loads(made.stdout)["checkpoint_id"]
    conflict(repo)
    (repo / "f.txt").write_text("broken\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    runs = {
        ("list",): 0, ("status",): 0, ("plan", "--failure-type", "git_error"): 0,
        ("classify", "--exit-code", "1"): 0, ("check",): 0, ("cleanup", "--dry-run"): 0,
        ("validate",): 20, ("--store", str(repo / ".checkpoints"), "list"): 0,
        ("checkpoint", "--lane", "standard", "--step-number", "2", "--step-name", "in-conflict"): 0,
        ("restore", "--dry-run", good): 0,
    }
    for args, code in runs.items():
        done = run_cli(*args, cwd=repo)
        assert done.returncode == code, (args, done.stderr)
        if args[0] != "classify":  # classify reads no settings
            said = warnings_in(done.stderr)
            assert len(said) == 1 and IGNORED in said[0], (args, done.stderr)
        assert "invalid TOML" not in done.stderr
    from_outside = run_cli("-C", str(repo), "list", cwd=elsewhere)
    assert from_outside.returncode == 0 and good in from_outside.stdout, from_outside.stderr

    restored = run_cli("restore", good, cwd=repo)
    assert restored.returncode == 0, restored.stderr
    assert (repo / "f.txt").read_text() == "before\n"


def test_run_of_a_merge_that_conflicts_returns_its_status_and_plan(git_project: Path) -> None:
    """It updated the record but exited 2 and printed no plan: the plan was read after the conflict.
    Here the merge even leaves the [tool.rrstore] settings in doubt (the two sides' workers differ)."""
    repo = git_project
    table = '\n[tool.rrstore]\nworkers = 1\n\n[tool.rrstore.recovery]\nretries = 0\n'
    branches(repo, BASE + table, BASE + table.replace("workers = 1", "workers = 3"),
             BASE + table.replace("workers = 1", "workers = 2"))

    ran = run_cli("run", "--lane", "standard", "--step-number", "1", "--step-name", "merge", "--", "git", "merge",
                  "dep", cwd=repo)

    assert ran.returncode == 1, ran.stderr
    assert "Recovery plan: git_error in the standard lane" in ran.stderr
    assert "Finish the merge" in ran.stderr and "rrstore: error" not in ran.stderr
    assert run_cli("list", cwd=repo).returncode == 2  # in doubt now, as the next command says
    git(repo, "merge", "--abort")
    record = json.loads(run_cli("list", "--json", cwd=repo).stdout)
    assert record[0]["success"] is False and record[0]["error_message"].startswith("exit status 1: git_error")


def test_a_workflow_whose_step_conflicts_returns_its_status_and_plan(git_project: Path) -> None:
    repo = git_project
    dependency_conflict(repo, '\n[tool.rrstore.recovery]\nretries = 0\n[tool.rrstore.workflow.standard]\n'
                              'steps = [{ name = "merge", command = "git merge dep" }, '
                              '{ name = "after", command = "true" }]\n')

    ran = run_cli("workflow", "--lane", "standard", cwd=repo)

    assert ran.returncode == 1, ran.stderr
    assert "Recovery plan: git_error in the standard lane" in ran.stderr
    assert "workflow standard stopped at step 1" in ran.stderr and "rrstore: error" not in ran.stderr


def test_the_rrstore_table_both_sides_agree_on_is_used(git_project: Path) -> None:
    """A conflict outside [tool.rrstore]: its store setting still applies, so the checkpoints are found."""
    repo = git_project
    dependency_conflict(repo, '\n[tool.rrstore]\nstore = "ckpts"\n')
    made = run_cli("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "good", cwd=repo)
    assert made.returncode == 0 and (repo / "ckpts" / "config.json").is_file(), made.stderr
    conflict(repo)

    listed = run_cli("list", "--json", cwd=repo)

    assert listed.returncode == 0, listed.stderr
    assert [r["step_name"] for r in json.loads(listed.stdout)] == ["good"]
    said = warnings_in(listed.stderr)
    assert len(said) == 1 and "using the [tool.rrstore] settings both sides of the conflict agree on" in said[0]
    assert not (repo / ".checkpoints").exists()


@pytest.mark.parametrize("style", ["diff3", "zdiff3"])
def test_the_base_section_of_a_diff3_conflict_is_no_side(git_project: Path, style: str) -> None:
    """diff3 adds the merge base between '||||||| ' and '=======': it is neither side, so it is dropped."""
    repo = git_project
    git(repo, "config", "merge.conflictStyle", style)
    dependency_conflict(repo, '\n[tool.rrstore]\nstore = "ckpts"\n')
    made = run_cli("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "good", cwd=repo)
    assert made.returncode == 0, made.stderr
    conflict(repo)
    assert "||||||| " in (repo / "pyproject.toml").read_text()

    listed = run_cli("list", "--json", cwd=repo)

    assert listed.returncode == 0, listed.stderr
    assert [r["step_name"] for r in json.loads(listed.stdout)] == ["good"]


def conflicting_settings(repo: Path, store: str = "") -> str:
    """A conflict inside [tool.rrstore] (workers differ), after a checkpoint of f.txt = 'good'; its id."""
    table = f'\n[tool.rrstore]\n{store}workers = 1\n'
    branches(repo, BASE + table, BASE + table.replace("workers = 1", "workers = 3"),
             BASE + table.replace("workers = 1", "workers = 2"))
    (repo / "f.txt").write_text("good\n")
    made = run_cli("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "good", "--json",
                   cwd=repo)
    assert made.returncode == 0, made.stderr
    conflict(repo)
    (repo / "f.txt").write_text("broken\n")
    return str(json.loads(made.stdout)["checkpoint_id"])


def test_settings_in_doubt_are_an_error_that_names_the_conflict_and_the_way_out(git_project: Path) -> None:
    repo = git_project
    conflicting_settings(repo)

    for args in (("list",), ("status",), ("checkpoint", "--lane", "standard", "--step-number", "2",
                                          "--step-name", "x")):
        done = run_cli(*args, cwd=repo)
        assert done.returncode == 2, (args, done.stderr)
        line = done.stderr.strip()
        assert line == (f"rrstore: error: {repo / 'pyproject.toml'} has merge conflict markers (line 7) and its "
                        "two sides do not agree on the [tool.rrstore] settings: resolve the conflict, or put the "
                        "settings in rrstore.toml (which wins over pyproject.toml); meanwhile 'rrstore restore' "
                        "and 'rrstore validate' still work, with the default settings, when the store is at "
                        ".checkpoints or given with --store"), args

    (repo / "rrstore.toml").write_text("workers = 2\n")  # the way out the error names
    assert run_cli("list", cwd=repo).returncode == 0


def test_restore_works_while_the_settings_are_in_doubt(git_project: Path) -> None:
    repo = git_project
    good = conflicting_settings(repo)
    before = tree_manifest(repo)

    restored = run_cli("restore", "--json", good, cwd=repo)

    assert restored.returncode == 0, restored.stderr
    said = warnings_in(restored.stderr)
    assert len(said) == 1 and "settings are in doubt: going on with the default settings" in said[0]
    assert (repo / "f.txt").read_text() == "good\n"
    undo = json.loads(restored.stdout)["undo_checkpoint_id"]
    assert run_cli("restore", undo, cwd=repo).returncode == 0  # nothing lost: the conflict comes back
    assert tree_manifest(repo) == before


def test_restore_in_doubt_needs_the_store_found_without_the_settings(git_project: Path) -> None:
    """The store the settings name is not guessed: at a configured path, restore needs --store."""
    repo = git_project
    good = conflicting_settings(repo, store='store = "ckpts"\n')

    guessed = run_cli("restore", good, cwd=repo)
    assert guessed.returncode == 2 and "given with --store" in guessed.stderr
    assert (repo / "f.txt").read_text() == "broken\n"

    given = run_cli("--store", "ckpts", "restore", good, cwd=repo)
    assert given.returncode == 0, given.stderr
    assert (repo / "f.txt").read_text() == "good\n"


def test_validate_names_the_conflict_in_its_dependency_and_configuration_checks(git_project: Path) -> None:
    repo = git_project
    dependency_conflict(repo)
    conflict(repo)

    done = run_cli("validate", "--json", cwd=repo)

    assert done.returncode == 20
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    deps = checks["dependencies installed"]
    assert (deps["status"], deps["reason"]) == (
        "fail", "pyproject.toml does not parse (line 4: merge conflict markers)")
    config = checks["configuration valid"]
    assert config["status"] == "fail" and config["reason"] == (
        "pyproject.toml does not parse (line 4: merge conflict markers); rrstore's settings: "
        "defaults (no rrstore.toml, no [tool.rrstore] in pyproject.toml)")


def test_validate_in_doubt_reports_instead_of_refusing(git_project: Path) -> None:
    repo = git_project
    conflicting_settings(repo)

    done = run_cli("validate", "--json", cwd=repo)

    assert done.returncode == 20, done.stderr
    config = next(c for c in json.loads(done.stdout)["checks"] if c["name"] == "configuration valid")
    assert config["status"] == "fail" and "two sides do not agree on the [tool.rrstore] settings" in config["reason"]


def test_a_broken_pyproject_without_a_conflict(project: Path) -> None:
    """Not a conflict, a plain syntax error: ignored when it holds no rrstore settings, else an error."""
    (project / "pyproject.toml").write_text('[project]\nname = "demo"\nthis is not toml\n')
    with pytest.warns(UserWarning, match=r"does not parse \(line 3: .*\); ignored: it holds no \[tool.rrstore\]"):
        system = RollbackRecoverySystem(root=project)
    assert system.settings.source == "defaults"

    # names rrstore without settings of it (a console script, a package): still ignored
    (project / "pyproject.toml").write_text('[project.scripts]\nrrstore = "rrstore.cli.main:main"\n'
                                            '[tool.setuptools.package-dir]\n"rrstore.cli" = "cli"\n[project\n')
    with pytest.warns(UserWarning, match=r"does not parse \(line 5: .*\); ignored: it holds no \[tool.rrstore\]"):
        assert RollbackRecoverySystem(root=project).settings.source == "defaults"

    (project / "pyproject.toml").write_text('[tool.rrstore]\nworkers = 2\n[project\n')
    with pytest.raises(UsageError, match=r"invalid TOML in .*pyproject.toml: .*; it holds \[tool.rrstore\] "
                                         r"settings: fix the file, or put the settings in rrstore.toml"):
        RollbackRecoverySystem(root=project)


def check(root: Path, name: str) -> tuple[str, str]:
    found = next(c for c in RollbackRecoverySystem(root=root).validate().checks if c.name == name)
    return found.status, found.reason


def test_configuration_from_the_defaults_says_so(project: Path) -> None:
    assert check(project, "configuration valid") == ("pass", "defaults (no rrstore.toml, no pyproject.toml)")
    (project / "pyproject.toml").write_text(BASE)
    assert check(project, "configuration valid") == (
        "pass", "defaults (no rrstore.toml, no [tool.rrstore] in pyproject.toml)")
    (project / "pyproject.toml").write_text(BASE + "[tool.rrstore]\nworkers = 2\n")
    assert check(project, "configuration valid") == ("pass", f"{project / 'pyproject.toml'} [tool.rrstore]")


def test_a_dependencies_string_is_malformed_not_missing(project: Path) -> None:
    (project / "pyproject.toml").write_text('[project]\nname = "demo"\ndependencies = "requests"\n')
    assert check(project, "dependencies installed") == (
        "fail", 'pyproject.toml [project] dependencies is malformed: it must be an array of requirement '
                'strings (dependencies = ["requests>=2"]), not a string')
    (project / "pyproject.toml").write_text('[project]\nname = "demo"\ndependencies = ["click", 3]\n')
    status, reason = check(project, "dependencies installed")
    assert status == "fail" and reason.endswith("not an array holding int")


def test_requirements_whose_markers_do_not_apply_are_counted_apart(project: Path) -> None:
    (project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\ndependencies = ["click>=8", "blake3", "no-such-dist-rrstore; python_version < '
        "'3'\", \"also-absent-rrstore; sys_platform == 'no-such-platform'\"]\n")
    status, reason = check(project, "dependencies installed")
    assert status == "pass" and reason.endswith(": 2 from pyproject.toml resolve (2 skipped by their markers)")


def test_a_workflow_without_any_settings_file_says_which_table_to_add(project: Path) -> None:
    done = run_cli("workflow", "--lane", "docs", cwd=project)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "rrstore: error: no rrstore.toml or pyproject.toml [tool.rrstore] declares [workflow.docs]: add the "
        'table [workflow.docs] with steps = [{ name = "...", command = "..." }, ...] to rrstore.toml '
        "(rrstore help recovery: Workflows and resume)")
