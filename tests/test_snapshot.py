"""Snapshots: file entries, state-hash invariants, and torn-read detection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest
from conftest import git, write

from rrstore import RollbackRecoverySystem
from rrstore.backends import LocalBackend
from rrstore.errors import TornRead
from rrstore.store.objects import ObjectStore
from rrstore.tree import DIR, FILE, SYMLINK, Entry, flatten, read_tree
from rrstore.worktree.snapshot import read_stable

EMPTY_B3 = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"


def state_hash(root: Path) -> str:
    return RollbackRecoverySystem(root=root).checkpoint("standard", 1, "snapshot test").record.state_hash


def stored_tree(root: Path) -> tuple[ObjectStore, str, dict[str, Entry]]:
    system = RollbackRecoverySystem(root=root)
    state = system.checkpoint("standard", 1, "snapshot test").record.state_hash
    objects = system.checkpoint_manager.store.objects
    return objects, state, flatten(objects, state)


@pytest.fixture(params=["git", "plain"])
def root(request: pytest.FixtureRequest) -> Path:
    """A project root of either kind, holding a small tree (committed in the git case)."""
    base: Path = request.getfixturevalue("git_project" if request.param == "git" else "project")
    write(base, "src/main.py", "print('hello')\n")
    write(base, "src/util/helpers.py", "def f():\n    return 1\n")
    write(base, "data/blob.bin", bytes(range(256)) * 64)
    write(base, "run.sh", "#!/bin/sh\necho run\n").chmod(0o755)
    os.symlink("src/main.py", base / "main-link")
    if request.param == "git":
        git(base, "add", "-A")
        git(base, "commit", "-q", "-m", "tree")
    return base


# --- entries ------------------------------------------------------------------------------------


def test_file_entries_carry_b3sum_size_and_exec_bit(root: Path) -> None:
    objects, _, tree = stored_tree(root)
    for rel in ("src/main.py", "src/util/helpers.py", "data/blob.bin", "run.sh"):
        content = (root / rel).read_bytes()
        entry = tree[rel]
        assert entry.kind == FILE
        assert entry.oid == blake3.blake3(content).hexdigest()
        assert entry.size == len(content)
        assert objects.get(entry.oid) == content
    assert tree["run.sh"].executable is True
    assert tree["src/main.py"].executable is False
    assert tree["main-link"] == Entry("main-link", SYMLINK, target="src/main.py")


def test_empty_file(root: Path) -> None:
    write(root, "empty.txt", b"")
    write(root, "src/also-empty", b"")
    objects, _, tree = stored_tree(root)
    for rel in ("empty.txt", "src/also-empty"):
        assert tree[rel].kind == FILE
        assert tree[rel].oid == EMPTY_B3
        assert tree[rel].size == 0
    assert objects.get(EMPTY_B3) == b""


def test_empty_directory_is_an_empty_tree(root: Path) -> None:
    (root / "empty").mkdir()
    objects, _, tree = stored_tree(root)
    assert tree["empty"].kind == DIR
    assert read_tree(objects, tree["empty"].oid) == []


def test_symlink_to_directory_is_stored_as_link_and_not_followed(root: Path, tmp_path: Path) -> None:
    write(tmp_path, "elsewhere/one.txt", "1\n")
    os.symlink(tmp_path / "elsewhere", root / "ext")
    os.symlink("src", root / "src-link")
    os.symlink("nowhere/at/all", root / "dangling")
    _, before, tree = stored_tree(root)
    assert tree["ext"] == Entry("ext", SYMLINK, target=str(tmp_path / "elsewhere"))
    assert tree["src-link"] == Entry("src-link", SYMLINK, target="src")
    assert tree["dangling"] == Entry("dangling", SYMLINK, target="nowhere/at/all")
    assert not [p for p in tree if p.startswith(("ext/", "src-link/"))]
    # What a link points at outside the tree is not part of the state.
    write(tmp_path, "elsewhere/one.txt", "changed\n")
    write(tmp_path, "elsewhere/two.txt", "new\n")
    assert state_hash(root) == before


# --- state hash invariants -----------------------------------------------------------------------


def test_state_hash_is_the_root_tree_oid(root: Path) -> None:
    objects, state, tree = stored_tree(root)
    top = {e.name for e in read_tree(objects, state)}
    assert top == {p for p in tree if "/" not in p}


def test_unchanged_tree_keeps_its_state_hash(root: Path) -> None:
    assert state_hash(root) == state_hash(root)


def test_changing_only_mtime_keeps_the_state_hash(root: Path) -> None:
    before = state_hash(root)
    for rel in ("src/main.py", "data/blob.bin", "run.sh", "src"):
        os.utime(root / rel, ns=(1_000_000_000, 1_000_000_000))
    os.utime(root / "main-link", ns=(5_000_000_000, 5_000_000_000), follow_symlinks=False)
    assert state_hash(root) == before


def test_rewriting_identical_content_keeps_the_state_hash(root: Path) -> None:
    before = state_hash(root)
    content = (root / "src/main.py").read_bytes()
    (root / "src/main.py").unlink()
    write(root, "src/main.py", content)
    assert state_hash(root) == before


def test_permission_bits_other_than_exec_do_not_matter(root: Path) -> None:
    before = state_hash(root)
    (root / "src/main.py").chmod(0o600)
    (root / "run.sh").chmod(0o700)
    assert state_hash(root) == before


def test_changing_the_exec_bit_changes_the_state_hash(root: Path) -> None:
    before = state_hash(root)
    (root / "src/main.py").chmod(0o755)
    after = state_hash(root)
    assert after != before
    (root / "src/main.py").chmod(0o644)
    assert state_hash(root) == before


def unlink(root: Path, rel: str) -> bool:
    (root / rel).unlink()
    return True


def relink(root: Path, rel: str, target: str) -> bool:
    unlink(root, rel)
    os.symlink(target, root / rel)
    return True


CHANGES: dict[str, Callable[[Path], object]] = {
    "content": lambda r: write(r, "src/main.py", "print('bye')\n"),
    "one byte": lambda r: write(r, "data/blob.bin", bytes(range(256)) * 63 + bytes(range(255)) + b"\x00"),
    "rename": lambda r: (r / "src/main.py").rename(r / "src/Main.py"),
    "new file": lambda r: write(r, "src/new.py", ""),
    "delete": lambda r: unlink(r, "src/util/helpers.py"),
    "new empty dir": lambda r: (r / "src/empty").mkdir(),
    "link target": lambda r: relink(r, "main-link", "src/util/helpers.py"),
    "link to file": lambda r: (unlink(r, "main-link"), write(r, "main-link", "src/main.py")),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_any_content_change_changes_the_state_hash(root: Path, change: Callable[[Path], object]) -> None:
    before = state_hash(root)
    change(root)
    assert state_hash(root) != before


def test_same_size_edit_with_the_old_mtime_put_back_changes_the_state_hash(root: Path) -> None:
    """Tools like rsync -t or tar keep mtimes; the content still decides the state."""
    path = root / "src/main.py"
    before = state_hash(root)
    old = os.stat(path)
    write(root, "src/main.py", "print('HELLO')\n")
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert os.stat(path).st_size == old.st_size
    assert os.stat(path).st_mtime_ns == old.st_mtime_ns
    assert state_hash(root) != before


def test_same_size_edit_right_after_a_checkpoint_changes_the_state_hash(root: Path) -> None:
    system = RollbackRecoverySystem(root=root)
    for step in range(1, 6):
        content = f"print({step})\n"
        write(root, "src/main.py", content)
        record = system.checkpoint("standard", step, f"step {step}").record
        tree = flatten(system.checkpoint_manager.store.objects, record.state_hash)
        assert tree["src/main.py"].oid == blake3.blake3(content.encode()).hexdigest(), step


def build_tree(root: Path, order: list[int], mtime: int) -> None:
    items: list[Callable[[], object]] = [
        lambda: write(root, "a.txt", "alpha\n"),
        lambda: write(root, "dir/b.txt", "bravo\n"),
        lambda: write(root, "dir/sub/c.bin", bytes(1000)),
        lambda: write(root, "exe", "#!/bin/sh\n").chmod(0o755),
        lambda: write(root, "empty-file", b""),
        lambda: (root / "empty-dir").mkdir(),
        lambda: write(root, "ünï cödé/file name.txt", "u\n"),
        lambda: write(root, "zzz/last", "z\n"),
    ]
    for index in order:
        items[index]()
    (root / "dir" / "link").symlink_to("b.txt")
    for path in root.rglob("*"):
        if ".checkpoints" not in path.parts and ".git" not in path.parts:
            os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


def test_identical_trees_in_different_directories_have_the_same_state_hash(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "elsewhere" / "second"
    first.mkdir()
    second.mkdir(parents=True)
    build_tree(first, [0, 1, 2, 3, 4, 5, 6, 7], 1_500_000_000_000_000_000)
    first_hash = state_hash(first)
    build_tree(second, [7, 5, 3, 1, 6, 4, 2, 0], 1_700_000_000_123_456_789)
    (second / "a.txt").chmod(0o600)
    assert state_hash(second) == first_hash


def test_identical_trees_inside_and_outside_git_have_the_same_state_hash(tmp_path: Path) -> None:
    plain, repo = tmp_path / "plain", tmp_path / "repo"
    plain.mkdir()
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    build_tree(repo, [3, 2, 1, 0, 4, 5, 6, 7], 1_600_000_000_000_000_000)
    git(repo, "add", "a.txt", "dir")
    git(repo, "commit", "-q", "-m", "part of it")
    build_tree(plain, [0, 1, 2, 3, 4, 5, 6, 7], 1_500_000_000_000_000_000)
    assert state_hash(repo) == state_hash(plain)


def test_unchanged_directory_is_the_same_tree_object(root: Path) -> None:
    objects, first, tree1 = stored_tree(root)
    before = set(objects)
    write(root, "src/main.py", "print('changed')\n")
    objects, second, tree2 = stored_tree(root)
    assert second != first
    assert tree2["data"].oid == tree1["data"].oid
    assert tree2["src/util"].oid == tree1["src/util"].oid
    assert tree2["src"].oid != tree1["src"].oid
    # What is new: the changed file, src's tree, the root tree, and checkpoint records; nothing else.
    changed = {tree2["src/main.py"].oid, tree2["src"].oid, second}
    new = set(objects) - before
    assert changed <= new
    assert new - changed
    assert all(json.loads(objects.get(oid))["format"] == "rrstore-checkpoint-1" for oid in new - changed)


def test_hash_only_snapshot_stores_nothing(root: Path) -> None:
    system = RollbackRecoverySystem(root=root)
    stored = system.checkpoint("standard", 1, "base").record.state_hash
    objects = system.checkpoint_manager.store.objects
    before = set(objects)
    write(root, "src/new.py", "never stored\n")
    snap = system.checkpoint_manager.snapshot(store=False)
    assert snap.root_oid != stored
    assert set(objects) == before
    assert not objects.has(blake3.blake3(b"never stored\n").hexdigest())
    assert snap.root_oid == system.checkpoint("standard", 2, "now").record.state_hash


# --- torn reads ----------------------------------------------------------------------------------

RECORD = bytes(range(256)) * 16  # 4 KiB

APPENDER = """
import os, sys, time
path, cap, deadline = sys.argv[1], int(sys.argv[2]), time.time() + float(sys.argv[3])
record = bytes(range(256)) * 16
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
while time.time() < deadline and os.fstat(fd).st_size < cap:
    os.write(fd, record)
    time.sleep(0.0002)
"""

REWRITER = """
import os, sys, time
path, size, deadline = sys.argv[1], int(sys.argv[2]), time.time() + float(sys.argv[3])
blocks = [bytes([65 + k]) * (1 << 20) for k in range(26)]
fd = os.open(path, os.O_WRONLY)
version = 0
last, gap = time.monotonic_ns(), 0
while time.time() < deadline:
    version += 1
    for offset in range(0, size, 1 << 20):
        os.pwrite(fd, blocks[version % 26], offset)
        now = time.monotonic_ns()
        if now - last > gap:  # the longest pause between two writes, for the reader's test to judge
            gap = now - last
            with open(path + ".gap", "w") as out:
                out.write(str(gap))
        last = now
"""


def start_writer(script: str, path: Path, limit: int, seconds: float) -> subprocess.Popen[bytes]:
    """A real concurrent writer in another process; bounded in size and time whatever happens."""
    return subprocess.Popen([sys.executable, "-c", script, str(path), str(limit), str(seconds)])


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def test_read_stable_of_a_quiet_file(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    path = write(tmp_path, "quiet.bin", data)
    got, st = read_stable(path)
    assert got == data
    assert st.st_size == len(data)
    assert st.st_ino == path.stat().st_ino


def test_read_stable_of_a_file_being_appended_never_returns_a_torn_copy(tmp_path: Path) -> None:
    path = write(tmp_path, "growing.log", RECORD * 2048)  # 8 MiB to start with
    writer = start_writer(APPENDER, path, 64 << 20, 10)
    try:
        start = path.stat().st_size
        deadline = time.monotonic() + 5
        while path.stat().st_size == start and time.monotonic() < deadline:
            time.sleep(0.001)
        assert path.stat().st_size > start, "the writer never started"
        outcomes = []
        for _ in range(3):
            try:
                data, st = read_stable(path)
            except TornRead as exc:
                assert exc.path == str(path)
                outcomes.append("torn")
                continue
            assert len(data) == st.st_size
            assert data == (RECORD * (len(data) // len(RECORD) + 1))[:len(data)]
            outcomes.append("stable")
        assert writer.poll() is None, "the writer stopped before the reads were done"
    finally:
        stop(writer)
    assert len(outcomes) == 3
    data, st = read_stable(path)
    assert len(data) == st.st_size == path.stat().st_size


def test_read_stable_never_returns_a_file_rewritten_in_place_while_read(tmp_path: Path) -> None:
    """Same size, new content every few milliseconds: a mix of two versions must never come back.

    Unless the writer itself stopped mid-rewrite for longer than the settle window (a loaded machine
    deschedules it): a half-rewritten file whose last change is that old looks settled to any reader
    that judges by stat, git's racy rules included. The writer logs its longest pause; only then may
    a torn copy come back."""
    size = 16 << 20
    path = write(tmp_path, "rewritten.db", b"A" * size)
    writer = start_writer(REWRITER, path, size, 10)
    torn: list[str] = []
    results = {"torn_read_raised": 0, "stable": 0}
    try:
        time.sleep(0.1)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                data, st = read_stable(path)
            except TornRead:
                results["torn_read_raised"] += 1
                continue
            results["stable"] += 1
            assert len(data) == st.st_size == size
            if data.count(data[:1]) != size:
                torn.append("".join(chr(data[offset]) for offset in range(0, size, 1 << 20)))
            del data
        assert writer.poll() is None, "the writer stopped before the reads were done"
    finally:
        stop(writer)
    from rrstore.worktree.statcache import SETTLE_NS

    paused = int((tmp_path / "rewritten.db.gap").read_text() or 0)
    if torn and paused >= SETTLE_NS:
        pytest.skip(f"the writer paused {paused / 1e6:.0f} ms mid-rewrite (settle window {SETTLE_NS / 1e6:.0f} ms)")
    assert torn == [], f"read_stable returned {len(torn)} torn copies (1 MiB blocks: {torn[:3]}); {results}"


def test_a_chunked_file_is_read_once_and_its_entry_is_the_whole_file_b3sum(project: Path, monkeypatch) -> None:
    """Issue 11: the chunks and the whole-file hash come from one pass over the file, never a second read."""
    import io

    from rrstore.worktree.snapshot import CHUNK_THRESHOLD, settle_window

    content = blake3.blake3(b"seed").digest(length=3 * CHUNK_THRESHOLD + 12345)
    big = project / "big.bin"
    big.write_bytes(content)
    time.sleep(settle_window(os.stat(big)) / 1e9 + 0.05)  # quiet: the one re-read (of a file just changed) is not due
    opens: list[int] = []
    read: dict[int, int] = {}  # fd of big.bin -> bytes read from it
    real_open, real_read = os.open, os.read

    def counting_open(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kwargs: int | None) -> int:
        fd = real_open(path, flags, mode, **kwargs)  # type: ignore[arg-type]
        if os.fspath(path) == str(big):
            opens.append(fd)
            read[fd] = 0
        return fd

    def counting_read(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        if fd in read:
            read[fd] += len(data)
        return data

    class CountingFileIO(io.FileIO):
        def readinto(self, buffer: object) -> int | None:  # type: ignore[override]
            n = super().readinto(buffer)  # type: ignore[arg-type]
            if self.fileno() in read:
                read[self.fileno()] += n or 0
            return n

    monkeypatch.setattr(os, "open", counting_open)
    monkeypatch.setattr(os, "read", counting_read)
    monkeypatch.setattr(io, "FileIO", CountingFileIO)

    record = RollbackRecoverySystem(root=project).checkpoint("standard", 1, "one large file").record

    monkeypatch.undo()
    assert len(opens) == 1 and sum(read.values()) == len(content)  # one open, every byte read once
    entry = flatten(ObjectStore(LocalBackend(project / ".checkpoints")), record.state_hash)["big.bin"]
    assert len(entry.chunks) > 1
    assert entry.oid == blake3.blake3(content).hexdigest()  # what b3sum prints for the file
