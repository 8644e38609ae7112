"""Restore round trips on real trees: every byte, exec bit, symlink and empty directory comes back."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
from conftest import git

from rrstore import RollbackRecoverySystem
from rrstore.backends import LocalBackend
from rrstore.objects import ObjectStore

IGNORE_PATTERNS = "*.log\nbuild/\n"


def write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def is_ignored(rel: str) -> bool:
    """What the test trees ignore: ``*.log`` and ``build/``."""
    return rel.endswith(".log") or rel == "build" or rel.startswith("build/")


def in_scope(entries: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    return {p: e for p, e in entries.items() if not is_ignored(p)}


def stats(root: Path, rels: list[str]) -> dict[str, tuple[int, int, int]]:
    out = {}
    for rel in rels:
        st = os.lstat(root / rel)
        out[rel] = (st.st_ino, st.st_mtime_ns, st.st_mode)
    return out


def refs_of(root: Path) -> set[str]:
    folder = root / ".checkpoints" / "refs" / "checkpoints"
    return set(os.listdir(folder)) if folder.is_dir() else set()


def objects_of(root: Path) -> set[str]:
    """Every object id in the project's store (packed or loose)."""
    return set(ObjectStore(LocalBackend(root / ".checkpoints")))


@pytest.fixture(params=["git", "plain"])
def tree(request: pytest.FixtureRequest) -> Path:
    """A populated project, either a git repository (some files committed) or a plain directory."""
    if request.param == "git":
        root: Path = request.getfixturevalue("git_project")
    else:
        root = request.getfixturevalue("project")
        (root / ".rrstoreignore").write_text(IGNORE_PATTERNS)
    populate(root)
    if request.param == "git":
        git(root, "add", "src", "bin", "data", "stable.txt")
        git(root, "commit", "-q", "-m", "tracked part")
    return root


def populate(root: Path) -> None:
    rng = random.Random(1234)
    write(root / "src" / "app.py", b"print('hello')\n")
    write(root / "src" / "lib" / "util.py", b"def f():\n    return 1\n")
    write(root / "bin" / "run.sh", b"#!/bin/sh\necho run\n", 0o755)
    write(root / "data" / "blob.bin", rng.randbytes(300_000))
    write(root / "data" / "zeros.bin", bytes(70_000))
    write(root / "empty.txt", b"")
    write(root / "sp ace ünï €.txt", "grüße\n".encode())
    write(root / "new\nline.txt", b"a name with a newline\n")
    write(root / "stable.txt", b"never changes\n")
    write(root / "f2d", b"a file that becomes a directory\n")
    write(root / "d2f" / "inner.txt", b"a directory that becomes a file\n")
    write(root / "f2l", b"a file that becomes a symlink\n")
    write(root / "l2f-target.txt", b"target\n")
    os.symlink("src/app.py", root / "link")
    os.symlink("does/not/exist", root / "dangling")
    os.symlink("l2f-target.txt", root / "l2f")
    (root / "empty").mkdir()
    (root / "e1" / "e2").mkdir(parents=True)
    write(root / "debug.log", b"log before\n")
    write(root / "build" / "out.o", b"\x7fELF before")


def mutate(root: Path) -> None:
    write(root / "src" / "app.py", b"print('changed')\n", 0o755)
    os.chmod(root / "bin" / "run.sh", 0o644)
    os.chmod(root / "empty.txt", 0o755)
    os.unlink(root / "data" / "blob.bin")
    with open(root / "data" / "zeros.bin", "r+b") as fh:
        fh.seek(35_000)
        fh.write(b"\x01")
    write(root / "sp ace ünï €.txt", "grüsse\n".encode())
    os.unlink(root / "new\nline.txt")
    write(root / "new.txt", b"added after the checkpoint\n")
    write(root / "newdir" / "sub" / "file.txt", b"added in a new directory\n")
    os.unlink(root / "f2d")
    write(root / "f2d" / "inside.txt", b"now a directory\n")
    shutil.rmtree(root / "d2f")
    write(root / "d2f", b"now a file\n")
    os.unlink(root / "f2l")
    os.symlink("stable.txt", root / "f2l")
    os.unlink(root / "l2f")
    write(root / "l2f", b"was a symlink\n")
    os.unlink(root / "link")
    os.symlink("bin/run.sh", root / "link")
    os.unlink(root / "dangling")
    os.symlink("still/dangling/elsewhere", root / "dangling")
    (root / "empty").rmdir()
    write(root / "e1" / "e2" / "now.txt", b"the empty directory is not empty any more\n")
    (root / "grown-empty").mkdir()
    write(root / "debug.log", b"log after\n")
    write(root / "build" / "out.o", b"\x7fELF after")
    write(root / "build" / "more.o", b"more")


def test_round_trip_restores_every_byte_mode_symlink_and_empty_dir(tree: Path, cli, manifest) -> None:
    before = manifest(tree)
    assert before["empty"] == ("dir",) and before["e1/e2"] == ("dir",)
    assert before["dangling"] == ("symlink", "does/not/exist")
    cp = cli("checkpoint", "--lane", "standard", "--step-number", "1", "--step-name", "before", cwd=tree)
    assert cp.returncode == 0, cp.stderr
    checkpoint_id = cp.stdout.strip()

    mutate(tree)
    mutated = manifest(tree)
    kept = stats(tree, ["stable.txt", "src/lib/util.py", "debug.log", "build/out.o", "build/more.o"])

    out = cli("--json", "restore", "--checkpoint-id", checkpoint_id, cwd=tree)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["success"] is True and result["failures"] == {}

    after = manifest(tree)
    assert in_scope(after) == in_scope(before)
    # unchanged files were not rewritten; ignored files were not touched
    assert stats(tree, list(kept)) == kept
    assert (tree / "debug.log").read_bytes() == b"log after\n"
    assert (tree / "build" / "out.o").read_bytes() == b"\x7fELF after"
    assert (tree / "build" / "more.o").read_bytes() == b"more"
    assert not (tree / "newdir").exists()

    system = RollbackRecoverySystem(root=tree)
    record = system.show(checkpoint_id)
    assert system.status().state_hash == record.state_hash

    # the pre-restore checkpoint holds the mutated state and undoes the restore
    undo_id = result["undo_checkpoint_id"]
    assert undo_id and undo_id != checkpoint_id
    assert undo_id in refs_of(tree)
    undo = cli("restore", "--checkpoint-id", undo_id, cwd=tree)
    assert undo.returncode == 0, undo.stderr
    assert in_scope(manifest(tree)) == in_scope(mutated)
    assert manifest(tree) == mutated


def test_ignored_file_in_a_removed_directory_survives_and_status_matches(tree: Path, manifest) -> None:
    system = RollbackRecoverySystem(root=tree)
    record = system.checkpoint("standard", 1, "base").record
    write(tree / "newdir" / "sub" / "file.txt", b"added in a new directory\n")
    write(tree / "newdir" / "trace.log", b"ignored, inside a directory restore removes\n")

    result = system.restore(record.checkpoint_id)

    assert result.success, result.failures
    assert (tree / "newdir" / "trace.log").read_bytes() == b"ignored, inside a directory restore removes\n"
    assert not (tree / "newdir" / "sub").exists()
    # a directory that holds only ignored files is not part of the snapshot, in git or not
    assert system.status().state_hash == record.state_hash


def test_restore_rewrites_only_files_that_differ(tree: Path, manifest) -> None:
    system = RollbackRecoverySystem(root=tree)
    checkpoint_id = system.checkpoint("standard", 1, "base").checkpoint_id
    write(tree / "src" / "app.py", b"print('edited')\n")
    unchanged = [p for p, e in manifest(tree).items() if e[0] == "file" and p != "src/app.py"]
    kept = stats(tree, unchanged)

    result = system.restore(checkpoint_id)

    assert result.plan.write == ["src/app.py"]
    assert result.plan.remove == [] and result.plan.mkdir == [] and result.plan.symlink == []
    assert (tree / "src" / "app.py").read_bytes() == b"print('hello')\n"
    assert stats(tree, unchanged) == kept


def test_restore_of_identical_tree_changes_nothing_and_adds_no_checkpoint(tree: Path, cli) -> None:
    system = RollbackRecoverySystem(root=tree)
    checkpoint_id = system.checkpoint("standard", 1, "base").checkpoint_id
    everything = [str(p.relative_to(tree)) for p in tree.rglob("*") if not {".git", ".checkpoints"} & set(p.parts)]
    kept = stats(tree, everything)
    refs = refs_of(tree)

    out = cli("--json", "restore", "--checkpoint-id", checkpoint_id, cwd=tree)

    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["undo_checkpoint_id"] is None
    assert result["written"] == [] and result["removed"] == []
    assert refs_of(tree) == refs
    assert stats(tree, everything) == kept


def test_dry_run_changes_nothing_on_disk(tree: Path, cli, manifest) -> None:
    system = RollbackRecoverySystem(root=tree)
    checkpoint_id = system.checkpoint("standard", 1, "base").checkpoint_id
    mutate(tree)
    everything = [str(p.relative_to(tree)) for p in tree.rglob("*") if not {".git", ".checkpoints"} & set(p.parts)]
    kept = stats(tree, everything)
    before, refs, objects = manifest(tree), refs_of(tree), objects_of(tree)

    out = cli("restore", "--checkpoint-id", checkpoint_id, "--dry-run", cwd=tree)

    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "W src/app.py" in lines
    assert "D new.txt" in lines
    assert "X bin/run.sh" in lines
    assert "would restore" in out.stderr
    assert manifest(tree) == before
    assert stats(tree, everything) == kept
    assert refs_of(tree) == refs
    assert objects_of(tree) == objects


def test_path_restores_only_that_subset(tree: Path, cli, manifest) -> None:
    system = RollbackRecoverySystem(root=tree)
    checkpoint_id = system.checkpoint("standard", 1, "base").checkpoint_id
    original = manifest(tree)
    mutate(tree)
    mutated = manifest(tree)

    out = cli("restore", "--checkpoint-id", checkpoint_id, "--path", "src", "--path", "bin", cwd=tree)

    assert out.returncode == 0, out.stderr
    expected = {p: e for p, e in mutated.items() if p.split("/")[0] not in ("src", "bin")}
    expected.update({p: e for p, e in original.items() if p.split("/")[0] in ("src", "bin")})
    assert manifest(tree) == expected
    assert (tree / "src" / "app.py").read_bytes() == b"print('hello')\n"
    assert manifest(tree)["src/app.py"][3] is False
    assert manifest(tree)["bin/run.sh"][3] is True


def test_restore_from_subdirectory_path_is_relative_to_cwd(tree: Path, cli, manifest) -> None:
    system = RollbackRecoverySystem(root=tree)
    checkpoint_id = system.checkpoint("standard", 1, "base").checkpoint_id
    write(tree / "src" / "app.py", b"edited\n")
    write(tree / "src" / "lib" / "util.py", b"edited too\n")

    out = cli("-C", str(tree), "restore", "--checkpoint-id", checkpoint_id, "--path", "lib", cwd=tree / "src")

    assert out.returncode == 0, out.stderr
    assert (tree / "src" / "lib" / "util.py").read_bytes() == b"def f():\n    return 1\n"
    assert (tree / "src" / "app.py").read_bytes() == b"edited\n"


def test_restore_never_writes_through_a_symlinked_directory(tree: Path, tmp_path: Path, manifest) -> None:
    system = RollbackRecoverySystem(root=tree)
    checkpoint_id = system.checkpoint("standard", 1, "base").checkpoint_id
    original = manifest(tree)
    outside = tmp_path / "outside"
    write(outside / "app.py", b"outside the tree\n")
    shutil.rmtree(tree / "src")
    os.symlink(outside, tree / "src")

    result = system.restore(checkpoint_id)

    assert (outside / "app.py").read_bytes() == b"outside the tree\n"
    assert sorted(os.listdir(outside)) == ["app.py"]
    assert result.success, result.failures
    assert in_scope(manifest(tree)) == in_scope(original)
    # the undo point recorded the symlink as a symlink, and is itself restorable
    assert result.undo_checkpoint_id is not None
    undo = system.restore(result.undo_checkpoint_id)
    assert undo.success, undo.failures
    assert os.readlink(tree / "src") == str(outside)
    assert (outside / "app.py").read_bytes() == b"outside the tree\n"


def test_git_restore_leaves_git_metadata_and_status_alone(git_project: Path, cli) -> None:
    root = git_project
    populate(root)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "all")
    head = git(root, "rev-parse", "HEAD")
    system = RollbackRecoverySystem(root=root)
    checkpoint_id = system.checkpoint("standard", 1, "base").checkpoint_id
    mutate(root)

    out = cli("restore", "--checkpoint-id", checkpoint_id, cwd=root)

    assert out.returncode == 0, out.stderr
    assert git(root, "rev-parse", "HEAD") == head
    # everything restored matches the commit; the store never shows up in git status
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""
