"""Deep trees (issue 8, hole 7): any depth a disk can hold works everywhere; deeper archives are refused.

Each test removes its deep trees itself (``rm -rf``): pytest's own tmp
cleanup recurses and crashes on them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SeaweedFS, run_cli, tree_manifest
from test_archive import b3, crafted, file_entry, one_error_line, store_files, tree

from rrstore import RollbackRecoverySystem
from rrstore.record import CheckpointRecord
from rrstore.tree import MAX_PATH_BYTES


@pytest.fixture
def cleanup(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, emptied with ``rm -rf`` afterwards, whatever the test did."""
    try:
        yield tmp_path
    finally:
        for child in tmp_path.iterdir():
            subprocess.run(["rm", "-rf", str(child)], check=False)


def make_deep(root: Path, depth: int, content: bytes) -> str:
    """``depth`` nested one-letter directories below ``root``, a file at the bottom and one halfway; its path."""
    fd = os.open(root, os.O_RDONLY)
    try:
        for level in range(depth):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
            if level == depth // 2:
                _write_at(fd, "m", b"halfway\n")
        _write_at(fd, "f", content)
    finally:
        os.close(fd)
    return "/".join(["d"] * depth + ["f"])


def _write_at(dir_fd: int, name: str, data: bytes) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def near_path_max(root: Path) -> int:
    """The depth whose deepest file's absolute path is just under PATH_MAX at ``root``."""
    return (MAX_PATH_BYTES - len(os.fsencode(str(root))) - 1 - len("f") - 4) // 2


def ok(out: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert out.returncode == 0 and "Traceback" not in out.stderr, (out.returncode, out.stderr[-2000:])
    return out


def healthy(root: Path) -> None:
    """``validate -v`` walks every tree of every checkpoint and finds each object (the tree may differ)."""
    out = run_cli("validate", "-v", cwd=root)
    assert out.returncode in (0, 20) and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "✓ store healthy" in out.stdout, out.stdout


def checkpoint(root: Path, step: int) -> str:
    out = ok(run_cli("checkpoint", "--lane", "docs", "--step-number", str(step), "--step-name", "deep",
                     "-q", cwd=root))
    return out.stdout.strip()


@pytest.mark.parametrize("depth", [1000, 0], ids=["1000-deep", "near-PATH_MAX"])
def test_a_deep_tree_checkpoints_diffs_restores_collects_validates_and_travels(depth: int,
                                                                               cleanup: Path) -> None:
    project, other = cleanup / "project", cleanup / "other"
    project.mkdir()
    other.mkdir()
    depth = depth or near_path_max(project)
    deep = make_deep(project, depth, b"old bottom\n")
    (project / "top.txt").write_bytes(b"top\n")
    first = checkpoint(project, 1)
    before = tree_manifest(project)
    assert len(before) > depth

    _write_at_path(project, deep, b"new bottom\n")
    second = checkpoint(project, 2)
    changed = ok(run_cli("diff", first, second, cwd=project)).stdout
    assert deep in changed and "top.txt" not in changed

    ok(run_cli("restore", "--checkpoint-id", first, cwd=project))
    assert tree_manifest(project) == before
    ok(run_cli("gc", "--dry-run", cwd=project))
    healthy(project)

    archive = cleanup / "deep.rra"
    ok(run_cli("export", first, "-o", str(archive), cwd=project))
    ok(run_cli("verify", str(archive), cwd=other))
    ok(run_cli("import", str(archive), cwd=other))
    ok(run_cli("restore", "--force", "--checkpoint-id", first, cwd=other))  # another project
    assert tree_manifest(other) == before


def _write_at_path(root: Path, rel: str, data: bytes) -> None:
    """Write a file whose absolute path may be too long for one system call: walk down by dir fds."""
    fd = os.open(root, os.O_RDONLY)
    try:
        *dirs, name = rel.split("/")
        for part in dirs:
            inner = os.open(part, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        _write_at(fd, name, data)
    finally:
        os.close(fd)


def deep_archive(depth: int) -> bytes:
    """A crafted one-checkpoint archive: ``depth`` nested directories named 'd', a file at the bottom."""
    content = b"deep\n"
    sub = tree(file_entry("f", content))
    subtrees = [sub]
    for _ in range(depth - 1):
        sub = tree({"name": "d", "type": "dir", "tree": sub[0]})
        subtrees.append(sub)
    return crafted({"name": "d", "type": "dir", "tree": sub[0]}, subtrees=tuple(reversed(subtrees)),
                   extra=((b3(content), content),))


def test_a_10000_level_archive_is_refused_by_verify_and_import(cleanup: Path) -> None:
    project = cleanup / "project"
    project.mkdir()
    (project / "a.txt").write_bytes(b"mine\n")
    checkpoint(project, 1)
    store = project / ".checkpoints"
    before, tree_before = store_files(store), tree_manifest(project)
    path = cleanup / "deep.rra"
    path.write_bytes(deep_archive(10_000))
    for command in ("verify", "import"):
        line = one_error_line(run_cli(command, str(path), cwd=project), 16)
        assert "PATH_MAX" in line and len(line) < 400, line
    assert store_files(store) == before and tree_manifest(project) == tree_before


def plant_too_deep(project: Path) -> str:
    """Put a 10,000-level checkpoint into ``project``'s store as an older rrstore's import would; its id."""
    store = RollbackRecoverySystem(root=project).checkpoint_manager.store
    content = b"deep\n"
    store.objects.put(content, b3(content))
    oid, data = tree(file_entry("f", content))
    store.objects.put(data, oid)
    for _ in range(10_000):
        oid, data = tree({"name": "d", "type": "dir", "tree": oid})
        store.objects.put(data, oid)
    record = CheckpointRecord(checkpoint_id="deep-step1-20260102_030405", lane="docs", step_number=1,
                              step_name="deep", timestamp="2026-01-02T03:04:05.000000+00:00", state_hash=oid)
    record_data = record.encode()
    store.objects.put(record_data, b3(record_data))
    store.objects.flush()
    assert store.refs.create(record.checkpoint_id, b3(record_data))
    return record.checkpoint_id


def test_a_store_already_holding_a_too_deep_tree_still_collects_validates_and_refuses_to_restore(
        cleanup: Path) -> None:
    """A store that took such a tree in before the check (an older rrstore): gc is not blocked."""
    project = cleanup / "project"
    project.mkdir()
    (project / "a.txt").write_bytes(b"mine\n")
    checkpoint(project, 1)
    deep = plant_too_deep(project)
    tree_before = tree_manifest(project)

    ok(run_cli("gc", "--dry-run", cwd=project))
    healthy(project)
    out = run_cli("restore", "--checkpoint-id", deep, cwd=project)
    assert out.returncode == 13 and "PATH_MAX" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.splitlines()) == 1
    assert tree_manifest(project) == tree_before


def test_pull_refuses_a_remote_checkpoint_too_deep_for_any_disk(cleanup: Path, seaweedfs: SeaweedFS,
                                                                s3_remote: str, s3_env: dict[str, str]) -> None:
    """A hand-built remote (consistent hashes) holding a 10,000-level tree: pull refuses, writes nothing."""
    source, target = cleanup / "source", cleanup / "target"
    source.mkdir()
    target.mkdir()
    (source / "a.txt").write_bytes(b"source\n")
    checkpoint(source, 1)
    deep = plant_too_deep(source)
    bucket, _, prefix = s3_remote.removeprefix("s3://").partition("/")
    client = seaweedfs.client()
    store = source / ".checkpoints"
    for path in sorted(store.rglob("*")):
        rel = path.relative_to(store).as_posix()
        if path.is_file() and rel.split("/")[0] in ("config.json", "objects", "packs", "refs"):
            client.put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=path.read_bytes())
    (target / "own.txt").write_bytes(b"mine\n")
    checkpoint(target, 1)
    before, tree_before = store_files(target / ".checkpoints"), tree_manifest(target)
    out = run_cli("pull", deep, "--remote", s3_remote, "--endpoint-url", seaweedfs.endpoint, cwd=target,
                  env=s3_env)
    assert out.returncode == 17 and "PATH_MAX" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.splitlines()) == 1
    assert store_files(target / ".checkpoints") == before and tree_manifest(target) == tree_before


def test_cleanup_walks_a_tree_1000_deep_and_removes_the_cache_at_its_bottom(cleanup: Path) -> None:
    """Python 3.11's os.walk recurses: 'rrstore cleanup' crashed with RecursionError on such a tree."""
    project = cleanup / "project"
    project.mkdir()
    deepest = make_deep(project, 1000, b"keep me\n")
    bottom = os.path.dirname(deepest)
    fd = os.open(project / bottom, os.O_RDONLY)  # a __pycache__ at the bottom (path too long for pathlib)
    try:
        os.mkdir("__pycache__", dir_fd=fd)
        inner = os.open("__pycache__", os.O_RDONLY, dir_fd=fd)
        _write_at(inner, "x.pyc", b"stale\n")
        os.close(inner)
    finally:
        os.close(fd)
    out = run_cli("cleanup", cwd=project)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    found = subprocess.run(["find", str(project), "-name", "__pycache__"], capture_output=True, text=True).stdout
    assert found == ""
    assert subprocess.run(["find", str(project), "-name", "f"], capture_output=True, text=True).stdout.strip()
