"""``cleanup``: store leftovers, git's stale index.lock and caches go; tracked files and rrstore's locks never do."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import git

from rrstore import RollbackRecoverySystem
from rrstore.errors import StoreLocked
from rrstore.lock import _still_there, locked

Cli = Callable[..., subprocess.CompletedProcess[str]]

OLD = time.time() - 3600


def old(path: Path) -> Path:
    os.utime(path, (OLD, OLD), follow_symlinks=False)
    return path


@pytest.fixture
def messy(git_project: Path) -> tuple[RollbackRecoverySystem, Path]:
    """A repository after a failed run: caches, a tracked .pyc, a venv, store leftovers, a stale git lock."""
    root = git_project
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("X = 1\n")
    (root / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"p" * 300)
    (root / "pkg" / "__pycache__" / "deep").mkdir()
    (root / "pkg" / "__pycache__" / "deep" / "x.pyc").write_bytes(b"q" * 50)
    (root / "vendored.pyc").write_bytes(b"tracked on purpose")
    git(root, "add", "-f", "vendored.pyc", "pkg/mod.py")
    git(root, "commit", "-q", "-m", "vendor a pyc")
    (root / "old.pyo").write_bytes(b"o" * 7)
    (root / ".pytest_cache" / "v").mkdir(parents=True)
    (root / ".pytest_cache" / "v" / "lastfailed").write_text("{}")
    (root / ".venv" / "lib" / "__pycache__").mkdir(parents=True)
    (root / ".venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (root / ".venv" / "lib" / "__pycache__" / "site.pyc").write_bytes(b"v")
    system = RollbackRecoverySystem(root=root)
    system.checkpoint("standard", 1, "before the failure")
    tmp = system.store_path / "tmp"
    (tmp / "interrupted.tmp").write_bytes(b"t" * 1000)
    old(tmp / "interrupted.tmp")
    (tmp / "in-flight.tmp").write_bytes(b"young")
    (system.store_path / "locks" / "dead-process.lock").write_text("pid 999999\n")
    (root / ".git" / "index.lock").write_bytes(b"")
    old(root / ".git" / "index.lock")
    return system, root


def test_cleanup_removes_failed_state_and_nothing_else(messy: tuple[RollbackRecoverySystem, Path]) -> None:
    system, root = messy
    before_ids = [r.checkpoint_id for r in system.list().checkpoints]

    preview = system.cleanup(dry_run=True)
    assert preview.dry_run and (root / "old.pyo").exists() and (root / ".git" / "index.lock").exists()

    result = system.cleanup()

    removed = {(r.kind, r.path): (r.files, r.bytes) for r in result.removed}
    store = os.path.relpath(system.store_path, root)
    assert removed == {
        ("tmp", f"{store}/tmp/interrupted.tmp"): (1, 1000),
        ("git-lock", ".git/index.lock"): (1, 0),
        ("cache", "pkg/__pycache__/"): (2, 350),
        ("cache", "old.pyo"): (1, 7),
        ("cache", ".pytest_cache/"): (1, 2),
    }
    assert {(r.kind, r.path) for r in preview.removed} == set(removed)  # the dry run listed the same
    assert result.bytes_freed == 1000 + 350 + 7 + 2 and result.success
    assert (system.store_path / "locks" / "dead-process.lock").exists()  # rrstore's own locks are never stale
    assert result.kept_tracked == ["vendored.pyc"] and (root / "vendored.pyc").exists()
    assert not (root / "pkg" / "__pycache__").exists() and (root / "pkg" / "mod.py").exists()
    assert (root / ".venv" / "lib" / "__pycache__" / "site.pyc").exists()  # virtualenvs are left alone
    assert (system.store_path / "tmp" / "in-flight.tmp").exists()  # young: may belong to a running checkpoint
    assert [r.checkpoint_id for r in system.list().checkpoints] == before_ids
    assert system.validate().checks[-1].status == "pass"  # every checkpoint still readable
    git(root, "status")  # the stale lock no longer blocks git
    assert "cleanup removed 5 item(s) (6 file(s)), freeing 1359 bytes" in result.message
    assert system.cleanup().removed == []


def test_a_held_lock_and_a_young_git_lock_stay(messy: tuple[RollbackRecoverySystem, Path]) -> None:
    system, root = messy
    os.utime(root / ".git" / "index.lock")  # a git command may be running right now
    (system.store_path / "locks" / "held.lock").write_text("pid 999999\n")  # a dead pid, but held right now
    with locked(system.store_path, "held", exclusive=False):
        kinds = {r.kind: r.path for r in system.cleanup().removed}
        assert (system.store_path / "locks" / "held.lock").exists()
    assert "git-lock" not in kinds and (root / ".git" / "index.lock").exists()
    assert "lock" not in kinds and "lock" not in {r.kind for r in system.cleanup().removed}
    assert (system.store_path / "locks" / "held.lock").exists()
    assert (system.store_path / "locks" / "worktree.lock").exists()


def test_a_lock_removed_while_waiting_is_taken_again_on_the_new_file(project: Path) -> None:
    store = project / "store"
    (store / "locks").mkdir(parents=True)
    path = store / "locks" / "objects.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        assert _still_there(fd, path)
        os.unlink(path)  # someone removes an unheld lock file (by hand, or an older cleanup)
        assert not _still_there(fd, path)
        path.write_text("")  # someone else made a new one
        assert not _still_there(fd, path)
    finally:
        os.close(fd)

    # the race itself: the file is removed between our open and flock, another process locks the new one
    import rrstore.lock as lock_module

    real_open = lock_module._open
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with locked(store, "objects", exclusive=True):
            inside.set()
            release.wait(10)

    holder = threading.Thread(target=hold)

    def racing_open(folder: Path, where: Path) -> int:
        fd = real_open(folder, where)
        if not holder.is_alive() and not inside.is_set():
            os.unlink(where)
            holder.start()
            assert inside.wait(5)
        return fd

    lock_module._open = racing_open  # type: ignore[assignment]
    try:
        with pytest.raises(StoreLocked), locked(store, "objects", exclusive=True, wait=0.3):
            pass  # without the check, this would hold a lock on the removed file beside the holder
    finally:
        lock_module._open = real_open  # type: ignore[assignment]
        release.set()
        holder.join()


def test_tracked_files_are_safe_from_a_sub_folder_root_and_nested_repositories(git_project: Path) -> None:
    sub = git_project / "app"
    (sub / "__pycache__").mkdir(parents=True)
    (sub / "__pycache__" / "tracked.pyc").write_bytes(b"t")
    (sub / "__pycache__" / "junk.pyc").write_bytes(b"j")
    git(git_project, "add", "-f", "app/__pycache__/tracked.pyc")
    nested = sub / "vendor"
    (nested / "__pycache__").mkdir(parents=True)
    git(nested, "init", "-q")
    (nested / "__pycache__" / "theirs.pyc").write_bytes(b"n")

    result = RollbackRecoverySystem(root=sub).cleanup()

    assert result.kept_tracked == ["__pycache__/tracked.pyc"]
    assert [(r.path, r.files) for r in result.removed] == [("__pycache__/", 1)]
    assert (sub / "__pycache__" / "tracked.pyc").exists() and not (sub / "__pycache__" / "junk.pyc").exists()
    assert (nested / "__pycache__" / "theirs.pyc").exists()


def test_configured_patterns_and_plain_folders(project: Path) -> None:
    (project / "rrstore.toml").write_text('[recovery]\ncache_patterns = [".mypy_cache", "*.log"]\n')
    (project / ".mypy_cache").mkdir()
    (project / ".mypy_cache" / "x.json").write_text("{}")
    (project / "run.log").write_text("log")
    (project / "__pycache__").mkdir()
    (project / "__pycache__" / "a.pyc").write_text("kept: not a configured pattern")
    result = RollbackRecoverySystem(root=project).cleanup()
    assert sorted(r.path for r in result.removed) == [".mypy_cache/", "run.log"]
    assert (project / "__pycache__" / "a.pyc").exists()


def test_cli_cleanup(messy: tuple[RollbackRecoverySystem, Path], cli: Cli) -> None:
    _, root = messy
    dry = cli("cleanup", "--dry-run", cwd=root)
    assert dry.returncode == 0 and "would remove cache pkg/__pycache__/ (2 file(s), 350 B)" in dry.stdout
    assert dry.stderr.startswith("cleanup would remove 5 item(s)")
    done = cli("cleanup", "--json", cwd=root)
    doc = json.loads(done.stdout)
    assert set(doc) == {"removed", "bytes_freed", "kept_tracked", "errors", "dry_run"}
    assert doc["bytes_freed"] == 1359 and doc["kept_tracked"] == ["vendored.pyc"]
    assert set(doc["removed"][0]) == {"path", "kind", "files", "bytes"}
    assert json.loads(cli("cleanup", "--json", cwd=root).stdout)["removed"] == []
