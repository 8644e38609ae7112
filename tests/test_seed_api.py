"""The seed guide's Python examples, run as written (``from rrstore import ...`` for ``scripts.rollback_recovery``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import git

from rrstore import RollbackRecoverySystem


@pytest.fixture
def in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("RRSTORE_DIR", raising=False)
    monkeypatch.chdir(project)
    (project / "workflow.py").write_text("print('step')\n")
    (project / "agent").mkdir()
    (project / "agent" / "backend.py").write_text("API = 1\n")
    return project


def test_create_checkpoint_after_each_step(in_project: Path) -> None:
    system = RollbackRecoverySystem()

    result = system.run('checkpoint', lane='standard', step_number=1, step_name='Quality gates')

    assert result.success is True
    assert result.checkpoint_id.startswith("standard-step1-")
    assert result.checkpoint_id in result.message
    assert (in_project / ".checkpoints").is_dir()


def test_list_checkpoints_programmatically(in_project: Path) -> None:
    system = RollbackRecoverySystem()
    made = []
    for step, name in ((1, 'Start'), (2, 'After QA'), (3, 'After Tests')):
        (in_project / "workflow.py").write_text(f"print({step})\n")
        made.append(system.run('checkpoint', lane='standard', step_number=step, step_name=name).checkpoint_id)

    checkpoints = system.checkpoint_manager.list_checkpoints()

    assert [cp.checkpoint_id for cp in checkpoints] == made[::-1]
    assert [f"{cp.checkpoint_id}: {cp.step_name}" for cp in checkpoints] == [
        f"{made[2]}: After Tests", f"{made[1]}: After QA", f"{made[0]}: Start"]
    latest = checkpoints[0]
    assert latest.lane == 'standard' and latest.step_number == 3
    assert latest.timestamp and len(latest.state_hash) == 64
    assert latest.success is True and latest.error_message is None
    assert {"wall_time_s", "files_scanned", "bytes_new"} <= latest.metrics.keys()

    listed = system.run('list')
    assert listed.success is True
    assert [cp.checkpoint_id for cp in listed.checkpoints] == made[::-1]
    assert listed.message.splitlines()[0] == f"{made[2]}: After Tests (standard)"


def test_multi_step_recovery_restores_the_latest(in_project: Path, manifest) -> None:
    system = RollbackRecoverySystem()
    system.run('checkpoint', lane='standard', step_number=1, step_name='Start')
    good = manifest(in_project)

    # the workflow breaks things
    (in_project / "workflow.py").write_text("raise SystemExit(1)\n")
    os.unlink(in_project / "agent" / "backend.py")
    (in_project / "half-written.tmp").write_bytes(b"\0" * 100)

    checkpoints = system.checkpoint_manager.list_checkpoints()
    if checkpoints:
        latest = checkpoints[0]
        result = system.run('restore', checkpoint_id=latest.checkpoint_id)

    assert result.success is True
    assert manifest(in_project) == good
    assert system.run('status').state_hash == latest.state_hash


def test_failure_checkpoint_from_an_exception(in_project: Path) -> None:
    system = RollbackRecoverySystem()
    message = "database connection refused while running migrations"
    try:
        raise RuntimeError(message)
    except Exception as e:
        result = system.run('checkpoint', lane='standard', step_number=5, step_name=f'Failed: {str(e)[:50]}')
    assert result.success is True
    record = system.checkpoint_manager.list_checkpoints()[0]
    assert record.step_name == "Failed: " + message[:50]


def test_unknown_checkpoint_is_reported_not_raised(in_project: Path) -> None:
    system = RollbackRecoverySystem()
    system.run('checkpoint', lane='standard', step_number=2, step_name='Running tests')
    before = (in_project / "workflow.py").read_bytes()

    result = system.run('restore', checkpoint_id='standard-step2-20251024_143000')

    assert result.success is False
    assert 'Checkpoint not found' in result.message
    assert 'standard-step2-20251024_143000' in result.message
    assert (in_project / "workflow.py").read_bytes() == before


def test_bad_lane_is_reported_not_raised(in_project: Path) -> None:
    result = RollbackRecoverySystem().run('checkpoint', lane='fast', step_number=1, step_name='x')
    assert result.success is False and 'fast' in result.message
    assert not (in_project / ".checkpoints").exists()


def test_no_arguments_finds_the_git_root_from_a_subdirectory(git_project: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RRSTORE_DIR", raising=False)
    (git_project / "pkg" / "deep").mkdir(parents=True)
    (git_project / "pkg" / "deep" / "m.py").write_text("x = 1\n")
    monkeypatch.chdir(git_project / "pkg" / "deep")

    result = RollbackRecoverySystem().run('checkpoint', lane='docs', step_number=1, step_name='Docs')

    assert result.success is True
    assert (git_project / ".checkpoints").is_dir()
    assert not (git_project / "pkg" / "deep" / ".checkpoints").exists()
    record = RollbackRecoverySystem(root=git_project).show(result.checkpoint_id)
    assert record.git_commit == git(git_project, "rev-parse", "HEAD").strip()
    assert record.metrics["files_scanned"] == 3  # README.md, .gitignore, pkg/deep/m.py
