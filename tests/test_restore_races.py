"""Restore against a user editing the tree while it writes: an edit made after the scan is never lost.

The undo checkpoint is the scan the plan was made from, so an edit made since
is in no checkpoint: restore must leave that path alone and say so (a partial
restore, exit 3), and restore every other path as usual.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from rrstore import RollbackRecoverySystem
from rrstore import restore as restore_mod
from rrstore.errors import RestoreFailed
from rrstore.store.objects import hash_bytes
from rrstore.tree import FILE, Entry, content_oids, flatten
from rrstore.worktree.guard import CHANGED, Changed, ScanGuard
from rrstore.worktree.statcache import SETTLE_NS, Cached, StatCache, stamp

FILES = 40


def build(root: Path) -> dict[str, bytes]:
    """A small tree: 40 files in 4 directories; returns path -> bytes."""
    files = {f"d{i % 4}/f{i:02d}.txt": f"original {i:02d}\n".encode() for i in range(FILES)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def change(root: Path, rels: list[str], tag: bytes) -> None:
    """Rewrite ``rels`` with bytes of the same length (a size check alone would miss it)."""
    for rel in rels:
        data = (root / rel).read_bytes()
        (root / rel).write_bytes(tag + data[len(tag):])


def held(system: RollbackRecoverySystem, rel: str) -> bytes:
    """What a checkpoint taken now holds for ``rel`` (the stat cache decides which files it reads)."""
    objects = system.checkpoint_manager.store.objects
    entry = flatten(objects, system.checkpoint("standard", 9, "now").record.state_hash)[rel]
    return b"".join(objects.get(oid) for oid in content_oids(entry))


def settle() -> None:
    """Wait until what was just written is older than the stat cache's racy window (so it is trusted)."""
    time.sleep(2 * SETTLE_NS / 1e9)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and ".checkpoints" not in p.parts}


@pytest.fixture
def checkpointed(project: Path) -> tuple[RollbackRecoverySystem, str, dict[str, bytes]]:
    files = build(project)
    system = RollbackRecoverySystem(root=project)
    return system, system.checkpoint("standard", 1, "A").checkpoint_id, files


def test_edits_made_after_the_undo_point_are_left_alone_and_reported(project: Path, monkeypatch,
                                                                      checkpointed) -> None:
    system, checkpoint_id, files = checkpointed
    changed = sorted(files)[:10]
    change(project, changed, b"CHANGED!")
    (project / "d0" / "new.txt").write_bytes(b"made after A\n")  # the restore removes it
    os.symlink("d1", project / "link")  # and this link
    edited = changed[:5]
    real_undo_point = restore_mod._undo_point

    def undo_point_then_user_edits(*args, **kwargs):  # type: ignore[no-untyped-def]
        undo_id = real_undo_point(*args, **kwargs)
        change(project, edited, b"USER-ED!")
        (project / "d0" / "new.txt").write_bytes(b"user's edit\n")
        os.unlink(project / "link")
        os.symlink("d2", project / "link")
        return undo_id

    monkeypatch.setattr(restore_mod, "_undo_point", undo_point_then_user_edits)
    result = system.restore(checkpoint_id)

    left_alone = [*edited, "d0/new.txt", "link"]
    assert sorted(result.failures) == sorted(left_alone)
    assert set(result.failures.values()) == {CHANGED}
    assert not result.success and RestoreFailed(result.failures, result.undo_checkpoint_id).exit_code == 3
    now = tree_bytes(project)
    for rel in edited:
        assert now[rel].startswith(b"USER-ED!"), rel
    assert now["d0/new.txt"] == b"user's edit\n"
    assert os.readlink(project / "link") == "d2"
    assert {p: b for p, b in now.items() if p not in left_alone} == {p: b for p, b in files.items()
                                                                     if p not in left_alone}
    # what it left alone it did not write or remove: the counts say what was done
    assert f"{len(changed) - len(edited)} written, 0 removed," in result.message
    shown = result.to_json()
    assert shown["written"] == sorted(set(changed) - set(edited)) and shown["removed"] == []


def test_edits_made_while_restore_writes_are_left_alone(project: Path, checkpointed) -> None:
    """The tester's repro: during the write phase, edit the files the restore has yet to overwrite."""
    system, checkpoint_id, files = checkpointed
    changed = sorted(files)[::4]
    change(project, changed, b"CHANGED!")
    edited: list[str] = []
    calls: list[int] = []

    def user_edits(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 1:  # one file written (progress counts bytes)
            for rel in changed:
                if (project / rel).read_bytes().startswith(b"CHANGED!"):  # not restored yet
                    change(project, [rel], b"USER-ED!")
                    edited.append(rel)

    result = system.restore(checkpoint_id, progress=user_edits)

    assert len(edited) == len(changed) - 1
    assert sorted(result.failures) == sorted(edited) and not result.success
    now = tree_bytes(project)
    assert all(now[rel].startswith(b"USER-ED!") for rel in edited)
    assert {p: b for p, b in now.items() if p not in edited} == {p: b for p, b in files.items()
                                                                 if p not in edited}
    assert result.undo_checkpoint_id is not None
    again = system.restore(checkpoint_id)  # nothing changes meanwhile now: the edits go, into an undo point
    assert again.success and tree_bytes(project) == files


def test_a_file_touched_without_a_change_of_content_is_still_left_alone(project: Path, monkeypatch,
                                                                        checkpointed) -> None:
    """The stamp is what is compared: a rewrite with the very same bytes counts as an edit too."""
    system, checkpoint_id, files = checkpointed
    rel = sorted(files)[0]
    change(project, [rel], b"CHANGED!")
    real_undo_point = restore_mod._undo_point

    def undo_point_then_rewrite(*args, **kwargs):  # type: ignore[no-untyped-def]
        undo_id = real_undo_point(*args, **kwargs)
        data = (project / rel).read_bytes()
        os.unlink(project / rel)
        (project / rel).write_bytes(data)  # a new inode, the same bytes
        return undo_id

    monkeypatch.setattr(restore_mod, "_undo_point", undo_point_then_rewrite)
    result = system.restore(checkpoint_id)

    assert list(result.failures) == [rel]
    assert (project / rel).read_bytes().startswith(b"CHANGED!")


def test_a_stamp_from_the_racy_window_is_not_trusted_the_file_is_hashed_again(project: Path) -> None:
    """An edit in the clock tick of the scan's lstat keeps every stat field: only the bytes tell."""
    path = project / "a.txt"
    path.write_bytes(b"what is there now\n")
    st = os.lstat(path)
    objects = RollbackRecoverySystem(root=project).open_store(create=True).objects
    cache = StatCache(project / "cache", project)
    scanned = {"a.txt": Entry("a.txt", FILE, hash_bytes(b"what the scan hashed\n"), st.st_size)}
    cache.entries["a.txt"] = Cached(stamp(st), scanned["a.txt"].oid, ())

    cache.scan_start = st.st_ctime_ns  # changed at the scan's start: racy
    with pytest.raises(Changed):
        ScanGuard(scanned, cache, objects, ["a.txt"]).check("a.txt", str(path), st)
    cache.scan_start = st.st_ctime_ns + 1  # changed before the scan began: the stamp is proof enough
    ScanGuard(scanned, cache, objects, ["a.txt"]).check("a.txt", str(path), st)
    cache.scan_start = st.st_ctime_ns  # racy, and the bytes are the scan's: touched, not changed
    same = {"a.txt": scanned["a.txt"]._replace(oid=hash_bytes(path.read_bytes()))}
    ScanGuard(same, cache, objects, ["a.txt"]).check("a.txt", str(path), st)


def test_a_file_whose_only_change_is_its_exec_bit_is_left_alone_when_edited(project: Path, monkeypatch,
                                                                           checkpointed) -> None:
    """The reviewer's repro: a chmod-only path was not guarded, and the stat cache then filed the
    checkpoint's hash under the edited file's stat, so the next checkpoint stored the old bytes."""
    system, checkpoint_id, files = checkpointed
    rel = sorted(files)[0]
    os.chmod(project / rel, 0o755)  # the plan: only its exec bit changes
    real_undo_point = restore_mod._undo_point

    def undo_point_then_user_saves(*args, **kwargs):  # type: ignore[no-untyped-def]
        undo_id = real_undo_point(*args, **kwargs)
        (project / rel).write_bytes(b"the user's save\n")
        settle()
        return undo_id

    monkeypatch.setattr(restore_mod, "_undo_point", undo_point_then_user_saves)
    result = system.restore(checkpoint_id)

    assert result.failures == {rel: CHANGED}
    assert "0 modes" in result.message and result.to_json()["modes_changed"] == []
    assert (project / rel).read_bytes() == b"the user's save\n" and os.stat(project / rel).st_mode & 0o111
    assert held(system, rel) == b"the user's save\n"


def test_an_edit_right_after_a_file_is_replaced_is_not_taken_for_the_restored_bytes(
        project: Path, monkeypatch, checkpointed) -> None:
    """The stamp the stat cache keeps for a written file must be of rrstore's write, not of an edit
    that landed between the rename and the stamp."""
    system, checkpoint_id, files = checkpointed
    rel = sorted(files)[0]
    change(project, [rel], b"CHANGED!")

    class EditedAfterInstall(restore_mod.AtomicFile):
        def install(self) -> bool:
            installed = super().install()
            self.dest.write_bytes(b"the user's save\n")
            settle()
            return installed

    monkeypatch.setattr(restore_mod, "AtomicFile", EditedAfterInstall)
    result = system.restore(checkpoint_id)

    assert result.success  # the edit came after the write: nothing to leave alone
    assert (project / rel).read_bytes() == b"the user's save\n"
    assert held(system, rel) == b"the user's save\n"


def test_a_hard_link_whose_other_name_was_replaced_is_not_changed(project: Path) -> None:
    """Renaming over one name of a file drops its link count, which moves the ctime of the other:
    that alone is not a change (the tester's repro: exit 3 on an untouched tree)."""
    (project / "f").write_bytes(b"a\n")
    (project / "g").write_bytes(b"b\n")
    system = RollbackRecoverySystem(root=project)
    checkpoint_id = system.checkpoint("standard", 1, "A").checkpoint_id
    os.unlink(project / "f")
    os.unlink(project / "g")
    (project / "f").write_bytes(b"same\n")
    os.link(project / "f", project / "g")
    settle()  # the scan's stamps are then trusted, not hashed again

    result = system.restore(checkpoint_id)

    assert result.success, result.failures
    assert tree_bytes(project) == {"f": b"a\n", "g": b"b\n"}


def test_a_stamp_whose_ctime_alone_moved_is_checked_by_its_bytes(project: Path) -> None:
    path = project / "a.txt"
    path.write_bytes(b"what the scan hashed\n")
    seen = os.lstat(path)
    objects = RollbackRecoverySystem(root=project).open_store(create=True).objects
    cache = StatCache(project / "cache", project)
    scanned = {"a.txt": Entry("a.txt", FILE, hash_bytes(path.read_bytes()), seen.st_size)}
    cache.entries["a.txt"] = Cached(stamp(seen), scanned["a.txt"].oid, ())
    cache.scan_start = seen.st_ctime_ns + 1  # not racy: the stamp alone would do
    os.link(path, project / "b.txt")  # the ctime moves, nothing else
    ScanGuard(scanned, cache, objects, ["a.txt"]).check("a.txt", str(path), os.lstat(path))

    path.write_bytes(b"what the user saved!\n")  # the same size, the mtime put back: only the bytes tell
    os.utime(path, ns=(seen.st_atime_ns, seen.st_mtime_ns))
    now = os.lstat(path)
    assert stamp(now)[:2] == stamp(seen)[:2] and stamp(now)[2] != stamp(seen)[2]
    with pytest.raises(Changed):
        ScanGuard(scanned, cache, objects, ["a.txt"]).check("a.txt", str(path), now)


def test_hard_links_that_only_change_their_exec_bit_are_restored(project: Path) -> None:
    """A chmod of one name changes the mode of the other: that one then has the mode it is to get."""
    (project / "f").write_bytes(b"a script\n")
    os.link(project / "f", project / "g")
    os.chmod(project / "f", 0o755)
    system = RollbackRecoverySystem(root=project)
    checkpoint_id = system.checkpoint("standard", 1, "A").checkpoint_id
    os.chmod(project / "f", 0o644)
    settle()

    result = system.restore(checkpoint_id)

    assert result.success, result.failures
    assert os.stat(project / "f").st_mode & 0o777 == os.stat(project / "g").st_mode & 0o777 == 0o755
