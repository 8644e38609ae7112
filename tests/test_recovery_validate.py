"""``validate``: the seed's checks and the store's health, in real git repositories and plain folders."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import git

from rrstore import RollbackRecoverySystem
from rrstore.errors import CheckpointNotFound
from rrstore.store.objects import object_key

Cli = Callable[..., subprocess.CompletedProcess[str]]


def statuses(result) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {c.name.split(" matches ")[0]: c.status for c in result.checks}


@pytest.fixture
def repo(git_project: Path) -> Path:
    """A committed git project that declares dependencies this environment has."""
    (git_project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "1"\n'
        'dependencies = ["click>=8", "blake3", "tomli>=1; python_version < \'3.11\'"]\n')
    (git_project / ".gitignore").write_text("*.log\nbuild/\n.checkpoints/\n")
    git(git_project, "add", "-A")
    git(git_project, "commit", "-q", "-m", "project")
    return git_project


def test_a_healthy_repository_passes_every_check(repo: Path) -> None:
    system = RollbackRecoverySystem(root=repo)
    made = system.checkpoint("standard", 1, "Start")

    result = system.validate(checkpoint_id=made.checkpoint_id)

    assert result.success, [c.line for c in result.checks]
    assert statuses(result) == {"critical files exist": "pass", "git repository accessible": "pass",
                                "working directory clean": "pass", "dependencies installed": "pass",
                                "configuration valid": "pass", "store healthy": "pass", "working tree": "pass"}
    lines = [c.line for c in result.checks]
    assert lines[0] == "✓ critical files exist: pyproject.toml"
    assert lines[1].startswith("✓ git repository accessible: HEAD ") and lines[1].endswith(" on main")
    assert "2 from pyproject.toml resolve (1 skipped by their markers)" in lines[3]  # tomli: python < 3.11
    assert result.message == "State validation passed"


def test_every_failure_is_reported_not_just_the_first(repo: Path) -> None:
    system = RollbackRecoverySystem(root=repo)
    made = system.checkpoint("standard", 1, "Start")
    os.unlink(repo / "pyproject.toml")  # a critical file goes, the tree is dirty, the checkpoint differs
    (repo / "rrstore.toml").write_text('[recovery]\ncritical_files = ["pyproject.toml", "README.md"]\n'
                                       'cache_patterns = ["__pycache__"]\n')

    result = system.validate(checkpoint_id=made.checkpoint_id)

    assert not result.success
    failed = {c.name.split(" matches ")[0]: c for c in result.failed}
    assert set(failed) == {"critical files exist", "working directory clean", "working tree"}
    assert failed["critical files exist"].reason == "missing: pyproject.toml"
    assert "2 uncommitted change(s)" in failed["working directory clean"].reason
    assert "D pyproject.toml" in failed["working tree"].details and "A rrstore.toml" in failed["working tree"].details
    assert result.message.startswith("validation failed: 3 of 7 checks failed (critical files exist, ")


def test_missing_and_unmet_dependencies(repo: Path) -> None:
    (repo / "pyproject.toml").write_text('[project]\nname = "demo"\ndependencies = ["click>=999", '
                                         '"no-such-package-rrstore-test", "ok ok"]\n')
    check = next(c for c in RollbackRecoverySystem(root=repo).validate().checks if c.name == "dependencies installed")
    assert check.status == "fail"
    assert check.details[0].startswith("click ") and check.details[0].endswith("does not satisfy >=999")
    assert check.details[1:] == ["no-such-package-rrstore-test is not installed", "'ok ok' is not a valid requirement"]


def test_plain_folder_skips_what_does_not_apply(project: Path) -> None:
    system = RollbackRecoverySystem(root=project)
    (project / "notes.txt").write_text("x")
    before = statuses(system.validate())
    assert before == {"critical files exist": "skip", "git repository accessible": "skip",
                      "working directory clean": "skip", "dependencies installed": "skip",
                      "configuration valid": "pass", "store healthy": "skip"}
    system.checkpoint("docs", 1, "notes")
    assert statuses(system.validate())["working directory clean"] == "pass"  # compared with the newest checkpoint
    (project / "notes.txt").write_text("changed")
    after = system.validate()
    clean = next(c for c in after.checks if c.name == "working directory clean")
    assert clean.status == "fail" and clean.details == ["M notes.txt"]


def test_store_damage_and_bad_configuration(project: Path) -> None:
    system = RollbackRecoverySystem(root=project)
    (project / "a.txt").write_text("a" * 100)
    made = system.checkpoint("standard", 1, "one")
    store = system.open_store()
    from rrstore.tree import read_tree

    blob = next(e.oid for e in read_tree(store.objects, made.record.state_hash) if e.name == "a.txt")
    assert statuses(system.validate())["store healthy"] == "pass"
    # remove the file's object wherever it is stored (loose, or inside a pack: rewrite without it)
    loose = store.path / object_key(blob)
    if loose.exists():
        os.unlink(loose)
    else:
        store.objects.sweep({made.record.record_oid, made.record.state_hash}, before=2**40)
    assert statuses(system.validate())["store healthy"] == "pass"  # shallow: records and root trees only
    deep = next(c for c in system.validate(verbose=True).checks if c.name == "store healthy")
    assert deep.status == "fail" and blob in deep.reason

    (project / "rrstore.toml").write_text("fsync = 'sometimes'\n")  # broken after the system was made
    config = next(c for c in system.validate().checks if c.name == "configuration valid")
    assert config.status == "fail" and "fsync must be one of" in config.reason
    (project / "rrstore.toml").write_text("[workflow.standard]\nsteps = []\n")
    broken = next(c for c in system.validate().checks if c.name == "configuration valid")
    assert broken.status == "fail" and "'steps' must be a non-empty array" in broken.reason


def test_unknown_checkpoint_is_an_error(project: Path) -> None:
    system = RollbackRecoverySystem(root=project)
    (project / "a").write_text("a")
    system.checkpoint("docs", 1, "a")
    with pytest.raises(CheckpointNotFound):
        system.validate(checkpoint_id="docs-step9-nope")
    assert system.run("validate", checkpoint_id="docs-step9-nope").success is False


def test_cli_validate(repo: Path, cli: Cli) -> None:
    ok = cli("validate", cwd=repo)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    assert ok.stdout.splitlines()[0] == "✓ critical files exist: pyproject.toml"
    assert "- store healthy: no store at" in ok.stdout and ok.stderr == "State validation passed\n"

    (repo / "README.md").write_text("changed\n")
    bad = cli("validate", "--verbose", cwd=repo)
    assert bad.returncode == 20
    assert "✗ working directory clean: 1 uncommitted change(s): README.md" in bad.stdout
    assert "     M README.md" in bad.stdout  # --verbose lists details
    assert bad.stderr.splitlines() == ["rrstore: error: validation failed: 1 of 6 checks failed "
                                       "(working directory clean)"]

    as_json = cli("validate", "--json", cwd=repo)
    assert as_json.returncode == 20
    doc = json.loads(as_json.stdout)
    assert doc["success"] is False and len(doc["checks"]) == 6
    assert set(doc["checks"][0]) == {"name", "status", "ok", "reason", "details"}
    assert json.loads(as_json.stderr) == {"error": "ValidationFailed", "exit_code": 20,
                                          "message": "validation failed: 1 of 6 checks failed "
                                                     "(working directory clean)"}

    missing = cli("validate", "--checkpoint", "nope", cwd=repo)
    assert missing.returncode == 10 and len(missing.stderr.splitlines()) == 1  # no store yet


# the project's environment (issue 9): the dependency check asks the interpreter the project runs ------------


@pytest.fixture(autouse=True)
def _the_tests_interpreter_is_active(monkeypatch: pytest.MonkeyPatch) -> None:
    """The projects above run in the tests' own interpreter: said as an activated venv says it
    (VIRTUAL_ENV), so their dependency check does not hang on whichever python3 PATH holds."""
    if sys.prefix != sys.base_prefix:
        monkeypatch.setenv("VIRTUAL_ENV", sys.prefix)
    else:
        monkeypatch.delenv("VIRTUAL_ENV", raising=False)


def make_venv(where: Path, *installed: str) -> Path:
    """A real venv (no pip: fast) in which each of ``installed`` is "installed": its dist-info, as pip leaves it."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, capture_output=True)
    site = where / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert site.is_dir()
    for name in installed:
        info = site / f"{name.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    return where


def declare(repo: Path, *deps: str) -> None:
    listed = ", ".join(json.dumps(d) for d in deps)
    (repo / "pyproject.toml").write_text(f'[project]\nname = "demo"\nversion = "1"\ndependencies = [{listed}]\n')


def dependency_check(root: Path):  # type: ignore[no-untyped-def]
    return next(c for c in RollbackRecoverySystem(root=root).validate().checks if c.name == "dependencies installed")


ONLY_IN_VENV = "rrstore-test-only-in-the-venv"


@pytest.mark.parametrize("folder", [".venv", "venv"])
def test_a_dependency_only_in_the_projects_venv_passes(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                                       folder: str) -> None:
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    make_venv(repo / folder, ONLY_IN_VENV)
    declare(repo, f"{ONLY_IN_VENV}>=1")
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version(ONLY_IN_VENV)  # rrstore's interpreter lacks it: this failed before

    check = dependency_check(repo)

    assert check.status == "pass", check.line
    assert check.reason == f"checked {repo / folder / 'bin' / 'python'} (the project's {folder}): " \
                           "1 from pyproject.toml resolve"


def test_a_dependency_missing_from_the_projects_venv_fails_though_rrstore_has_it(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    make_venv(repo / ".venv")
    declare(repo, "click>=8", f"{ONLY_IN_VENV}; python_version < '3'")  # the marker excludes the second
    assert importlib.metadata.version("click")  # rrstore's own interpreter has it

    check = dependency_check(repo)

    assert check.status == "fail"
    assert check.reason == f"checked {repo / '.venv' / 'bin' / 'python'} (the project's .venv): click is not installed"
    assert check.details == ["click is not installed"]


def test_an_active_virtual_env_wins_over_the_projects_venv(repo: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, cli: Cli) -> None:
    make_venv(repo / ".venv", ONLY_IN_VENV)
    active = make_venv(tmp_path / "active")
    declare(repo, ONLY_IN_VENV)
    monkeypatch.setenv("VIRTUAL_ENV", str(active))

    out = cli("validate", cwd=repo)

    python = active / "bin" / "python"
    assert out.returncode == 20
    assert f"✗ dependencies installed: checked {python} (the active VIRTUAL_ENV): {ONLY_IN_VENV} is not installed" \
        in out.stdout.splitlines()
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    assert dependency_check(repo).status == "pass"  # without it, the project's .venv is the one


def test_the_configured_python_then_python3_on_path(repo: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    tools = make_venv(tmp_path / "tools", ONLY_IN_VENV)
    declare(repo, ONLY_IN_VENV)
    (repo / "rrstore.toml").write_text(f'[recovery]\npython = "{tools}/bin/python"\n')
    check = dependency_check(repo)
    assert check.status == "pass" and check.reason.startswith(
        f"checked {tools}/bin/python (python in {repo / 'rrstore.toml'} [recovery]): ")

    (repo / "rrstore.toml").write_text('[recovery]\npython = "no-such-python-rrstore"\n')
    missing = dependency_check(repo)
    assert missing.status == "fail" and missing.reason.startswith("'no-such-python-rrstore' (python in ")
    assert missing.reason.endswith(") is not on PATH")
    (repo / "rrstore.toml").write_text("[recovery]\npython = 3\n")
    config = next(c for c in RollbackRecoverySystem(root=repo).validate().checks if c.name == "configuration valid")
    assert config.status == "fail" and "python must be a non-empty string" in config.reason

    os.unlink(repo / "rrstore.toml")
    (repo / "venv" / "bin").mkdir(parents=True)  # a folder named venv without a pyvenv.cfg is not one
    os.symlink(sys.executable, repo / "venv" / "bin" / "python")
    bare = make_venv(tmp_path / "bare")
    monkeypatch.setenv("PATH", f"{bare / 'bin'}{os.pathsep}{os.environ['PATH']}")
    fallback = dependency_check(repo)
    assert fallback.status == "fail"
    assert fallback.reason == f"checked {bare / 'bin' / 'python3'} (python3 on PATH): {ONLY_IN_VENV} is not installed"


@pytest.mark.parametrize("broken", ["missing", "crashes", "not-python"])
def test_a_broken_interpreter_is_one_clear_failing_check(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         cli: Cli, broken: str) -> None:
    venv = tmp_path / "broken"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    if broken != "missing":
        says = "echo 'Fatal Python error: failed to get the Python codec' >&2; exit 1" if broken == "crashes" \
            else "echo hello"
        python.write_text(f"#!/bin/sh\n{says}\n")
        python.chmod(0o755)
    monkeypatch.setenv("VIRTUAL_ENV", str(venv))

    out = cli("validate", "--json", cwd=repo)

    assert out.returncode == 20 and "Traceback" not in out.stdout + out.stderr
    checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
    why = {"missing": "No such file or directory", "crashes": "Fatal Python error: failed to get the Python codec",
           "not-python": "it did not answer as a Python 3.8+ does"}[broken]
    assert checks["dependencies installed"]["reason"] == f"cannot run {python} (the active VIRTUAL_ENV): {why}"
    assert [name for name, c in checks.items() if not c["ok"]] == ["dependencies installed"]
