"""The recovery path costs what changed: a restore after churn touches and reads only what differs,
an unchanged re-checkpoint reads no file and encodes no tree, and ``--version`` loads no store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import git

import rrstore.restore
import rrstore.tree
import rrstore.worktree.snapshot
from rrstore import RollbackRecoverySystem
from rrstore.diff import diff
from rrstore.tree import flatten
from rrstore.worktree.statcache import Cached, stamp, stat_cache_of


def settled(root: Path) -> None:
    """Date every file 10 s back, outside any scan's racy window, so the stat cache may vouch for it."""
    then = time.time_ns() - 10 * 10**9
    for folder, _, files in os.walk(root):
        if "/.git" in folder + "/" or "/.checkpoints" in folder + "/":
            continue
        for name in files:
            os.utime(os.path.join(folder, name), ns=(then, then))


def many_files(root: Path) -> dict[str, bytes]:
    """12 directories, each with 8 files and a subdirectory of 4: 25 trees, 144 files."""
    files = {}
    for d in range(12):
        for f in range(8):
            files[f"d{d}/f{f}.txt"] = b"file %d of d%d\n" % (f, d) * (f + 1)
        for f in range(4):
            files[f"d{d}/s/g{f}.txt"] = b"nested %d of d%d\n" % (f, d)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


READ_TREE = rrstore.tree.read_tree


def count_tree_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The oids of every tree read from now on (``rrstore.tree.read_tree`` calls)."""
    read: list[str] = []

    def counting(objects: object, oid: str) -> object:
        read.append(oid)
        return READ_TREE(objects, oid)  # type: ignore[arg-type]

    monkeypatch.setattr(rrstore.tree, "read_tree", counting)
    return read


def identity(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_ino, st.st_mtime_ns


def test_restore_after_churn_touches_and_reads_only_what_changed(git_project: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = git_project
    files = many_files(root)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "many files")
    settled(root)
    system = RollbackRecoverySystem(root=root)
    base = system.checkpoint("standard", 1, "before churn").checkpoint_id
    changed = {"d1/f0.txt": b"changed\n", "d1/s/g1.txt": b"changed too\n"}
    for rel, data in changed.items():
        (root / rel).write_bytes(data)
    (root / "d2/new.txt").write_bytes(b"added\n")
    (root / "d3/f2.txt").unlink()
    churned = {rel: (root / rel).read_bytes() for rel in [*changed, "d2/new.txt"]}
    untouched = {rel: identity(root / rel) for rel in files if rel not in changed and rel != "d3/f2.txt"}
    read = count_tree_reads(monkeypatch)
    result = RollbackRecoverySystem(root=root).restore(base)

    assert result.success and result.undo_checkpoint_id
    assert sorted(result.plan.write) == ["d1/f0.txt", "d1/s/g1.txt", "d3/f2.txt"]
    assert result.plan.remove == ["d2/new.txt"]
    assert {rel: (root / rel).read_bytes() for rel in files} == files  # byte-identical
    assert not (root / "d2/new.txt").exists()
    assert {rel: identity(root / rel) for rel in untouched} == untouched  # not rewritten, not even touched
    # the target's trees read: the root and the four directories that differ, of 25
    assert len(read) <= 5, len(read)
    # the undo checkpoint (made from the same scan) gives the churned tree back
    monkeypatch.setattr(rrstore.tree, "read_tree", READ_TREE)
    undo = RollbackRecoverySystem(root=root).restore(result.undo_checkpoint_id)
    assert undo.success
    assert {rel: (root / rel).read_bytes() for rel in churned} == churned
    assert not (root / "d3/f2.txt").exists()


def test_an_unchanged_recheckpoint_reads_no_file_and_encodes_no_tree(git_project: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root = git_project
    many_files(root)
    settled(root)
    system = RollbackRecoverySystem(root=root)
    first = system.checkpoint("standard", 1, "cold").record
    reads: list[str] = []
    encoded: list[int] = []
    real_store_file, real_tree_oid = rrstore.worktree.snapshot.store_file, rrstore.worktree.snapshot.tree_oid

    def store_file(path: str, *args: object, **kwargs: object) -> object:
        reads.append(path)
        return real_store_file(path, *args, **kwargs)  # type: ignore[arg-type]

    def tree_oid(entries: list[object]) -> object:
        encoded.append(len(entries))
        return real_tree_oid(entries)  # type: ignore[arg-type]

    monkeypatch.setattr(rrstore.worktree.snapshot, "store_file", store_file)
    monkeypatch.setattr(rrstore.worktree.snapshot, "tree_oid", tree_oid)
    again = RollbackRecoverySystem(root=root).checkpoint("standard", 2, "unchanged").record
    status = RollbackRecoverySystem(root=root).status()
    assert again.state_hash == first.state_hash == status.state_hash and status.clean
    assert reads == [] and encoded == []
    # one file changed: it alone is read, and only the trees above it are encoded again
    (root / "d4/s/g2.txt").write_bytes(b"edited\n")
    third = RollbackRecoverySystem(root=root).checkpoint("standard", 3, "one edit").record
    assert third.state_hash != first.state_hash
    assert {Path(p).relative_to(root).as_posix() for p in reads} == {"d4/s/g2.txt"}  # (twice if hot)
    assert len(encoded) == 3  # d4/s, d4 and the root, of 25


def test_a_cached_tree_is_not_trusted_when_a_file_below_changed_inside_the_racy_window(project: Path) -> None:
    """A file rewritten with the same stamp (size, mtime, ctime) in the tick its hash was cached: the
    racy rule makes it be read again, so its directory's cached tree is not trusted either."""
    root = project
    (root / "d" / "s").mkdir(parents=True)
    (root / "d" / "s" / "f.txt").write_bytes(b"aaaa")
    (root / "d" / "g.txt").write_bytes(b"other")
    settled(root)
    system = RollbackRecoverySystem(root=root)
    first = system.checkpoint("standard", 1, "cached").record
    store = root / ".checkpoints"

    def forge(boundary_after_mtime: bool) -> None:
        """Rewrite f.txt (same size), then make the cache claim its new stamp holds the old bytes."""
        path = root / "d" / "s" / "f.txt"
        cache = stat_cache_of(store, root)
        old = cache.entries["d/s/f.txt"]
        path.write_bytes(b"bbbb")
        st = os.lstat(path)
        cache.entries["d/s/f.txt"] = Cached(stamp(st), old.oid, old.chunks)
        cache.scan_start = st.st_mtime_ns + (1 if boundary_after_mtime else 0)
        cache.changed = True
        cache.save(set(cache.entries))
        assert cache_trees(store, root)  # the trees of the first scan are cached

    forge(boundary_after_mtime=False)  # mtime == the boundary: inside the racy window
    seen = RollbackRecoverySystem(root=root).status()
    (store / "cache").joinpath(stat_cache_of(store, root).path.name).unlink()
    fresh = RollbackRecoverySystem(root=root).status()  # no cache at all: every file read
    assert seen.state_hash == fresh.state_hash != first.state_hash

    # control: outside the window the cache vouches for the file (the rule files have always had)
    (root / "d" / "s" / "f.txt").write_bytes(b"aaaa")
    settled(root)
    RollbackRecoverySystem(root=root).checkpoint("standard", 2, "cached again")
    forge(boundary_after_mtime=True)
    assert RollbackRecoverySystem(root=root).status().state_hash == first.state_hash


def cache_trees(store: Path, root: Path) -> dict[str, object]:
    return dict(stat_cache_of(store, root).trees)


@pytest.mark.parametrize(("flag", "shown"), [("--version", "version"), ("--help", "workflow")])
def test_version_and_help_import_neither_the_store_nor_the_verbs(tmp_path: Path, flag: str, shown: str) -> None:
    """``--help`` lists every command's summary, so it imports every command module: those must not
    load the object store at import time (the verbs import it when they run)."""
    probe = ("import sys\n"
             "from rrstore.cli.main import main\n"
             f"sys.argv = ['rrstore', '{flag}']\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print(' '.join(sorted(m for m in sys.modules if m.startswith('rrstore'))), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0 and shown in done.stdout
    loaded = done.stderr.split()
    assert loaded and "rrstore.cli.main" in loaded
    words = {"rrstore.recovery", "rrstore.recovery.vocabulary"}  # the enums behind --failure-type's choices
    heavy = [m for m in loaded if m.startswith(("rrstore.store", "rrstore.system", "rrstore.checkpoint",
                                                "rrstore.record", "rrstore.worktree", "rrstore.recovery",
                                                "rrstore.tree", "rrstore.gc", "rrstore.diff")) and m not in words]
    assert heavy == []


def test_the_console_script_answers_version_without_click_in_clicks_words(tmp_path: Path) -> None:
    probe = ("import sys\n"
             "from rrstore.cli.entry import main\n"
             "sys.argv = ['rrstore', '--version']\n"
             "main()\n"
             "print(' '.join(sorted(m for m in sys.modules if m.startswith(('rrstore', 'click')))), file=sys.stderr)\n")
    fast = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert fast.returncode == 0, fast.stderr
    assert fast.stderr.split() == ["rrstore", "rrstore.cli", "rrstore.cli.entry"]  # no click, no library module
    full = subprocess.run([sys.executable, "-c", "from rrstore.cli.main import main; main()", "--version"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert full.returncode == 0 and fast.stdout == full.stdout  # click's version_option, word for word
    assert subprocess.run([sys.executable, "-m", "rrstore", "--version"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60).stdout == fast.stdout


def test_a_file_changed_between_the_scan_and_the_undo_point_is_scanned_again(git_project: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The undo checkpoint holds what the restore overwrites: a file edited after the plan's scan
    (its new bytes not stored yet) makes the restore scan again, storing, and plan from that."""
    root = git_project
    many_files(root)
    settled(root)
    system = RollbackRecoverySystem(root=root)
    base = system.checkpoint("standard", 1, "base").checkpoint_id
    (root / "d5/f1.txt").write_bytes(b"edited once\n")
    real_store_hashed = rrstore.restore.store_hashed
    calls = []

    def edit_then_store(*args: object) -> bool:
        calls.append(1)
        (root / "d5/f1.txt").write_bytes(b"edited twice, after the scan\n")
        return real_store_hashed(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(rrstore.restore, "store_hashed", edit_then_store)
    result = RollbackRecoverySystem(root=root).restore(base)
    assert calls == [1] and result.success and result.plan.write == ["d5/f1.txt"]
    assert result.undo_checkpoint_id is not None
    assert (root / "d5/f1.txt").read_bytes() == b"file 1 of d5\n" * 2
    monkeypatch.setattr(rrstore.restore, "store_hashed", real_store_hashed)
    assert RollbackRecoverySystem(root=root).restore(result.undo_checkpoint_id).success
    assert (root / "d5/f1.txt").read_bytes() == b"edited twice, after the scan\n"


def test_an_edit_after_the_scan_to_bytes_already_stored_is_in_the_undo_point(git_project: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The scanned bytes of the file restore overwrites are in a pack already (a copy of another
    file), so nothing would need storing: the file is still read again before the undo point."""
    root = git_project
    many_files(root)
    settled(root)
    base = RollbackRecoverySystem(root=root).checkpoint("standard", 1, "base").checkpoint_id
    (root / "d5/f1.txt").write_bytes((root / "d5/f2.txt").read_bytes())  # bytes the store holds
    real_store_hashed = rrstore.restore.store_hashed

    def edit_then_store(*args: object) -> bool:
        (root / "d5/f1.txt").write_bytes(b"the user's newest work\n")
        return real_store_hashed(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(rrstore.restore, "store_hashed", edit_then_store)
    result = RollbackRecoverySystem(root=root).restore(base)
    monkeypatch.setattr(rrstore.restore, "store_hashed", real_store_hashed)
    assert result.success and result.plan.write == ["d5/f1.txt"] and result.undo_checkpoint_id
    assert RollbackRecoverySystem(root=root).restore(result.undo_checkpoint_id).success
    assert (root / "d5/f1.txt").read_bytes() == b"the user's newest work\n"


def test_status_after_churn_reads_only_the_trees_that_differ(git_project: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = git_project
    many_files(root)
    (root / "d7" / "empty").mkdir()
    system = RollbackRecoverySystem(root=root)
    record = system.checkpoint("standard", 1, "base").record
    (root / "d1/f0.txt").write_bytes(b"changed\n")
    (root / "d2/s/new.txt").write_bytes(b"added\n")
    (root / "d3/f2.txt").unlink()
    read = count_tree_reads(monkeypatch)
    status = RollbackRecoverySystem(root=root).status()
    assert len(read) <= 5, len(read)  # the root, d1, d2, d2/s, d3 of 26
    monkeypatch.setattr(rrstore.tree, "read_tree", READ_TREE)
    manager = system.checkpoint_manager
    full = diff(flatten(manager.store.objects, record.state_hash), manager.snapshot(store=False).entries)
    assert status.changes == full  # what a comparison of the whole trees says, counts included
    assert (full.added, full.removed, full.modified) == (["d2/s/new.txt"], ["d3/f2.txt"], ["d1/f0.txt"])
