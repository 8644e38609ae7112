"""An unchanged re-checkpoint asks the store nothing while its token is unchanged (issue 11), and a
checkpoint still never names a missing object: gc changes the token before it deletes, a pack removed
behind rrstore's back changes it too, and a deletion the token cannot show is caught by the proof
(the checkpoint scans again, checking every object)."""

from __future__ import annotations

import os
import random
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import rrstore.checkpoint
from rrstore import RollbackRecoverySystem
from rrstore.checkpoint import snapshot_oids
from rrstore.gc import Retention
from rrstore.store.generation import GENERATION_KEY, generation, store_token
from rrstore.store.objects import ObjectStore
from rrstore.tree import DIR, FILE, flatten
from rrstore.worktree.statcache import stat_cache_of


def settled_tree(root: Path) -> dict[str, bytes]:
    """20 small files in 4 directories and one chunked file, dated 10 s back (outside the racy window)."""
    rng = random.Random(11)
    files = {f"d{i % 4}/sub/f{i:02d}.txt": f"file {i}\n".encode() * (i + 1) for i in range(20)}
    files["big.bin"] = rng.randbytes(5 << 20)  # above the chunking threshold: an entry with chunks
    then = time.time_ns() - 10 * 10**9
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        os.utime(root / rel, ns=(then, then))
    return files


def on_disk(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and ".checkpoints" not in p.parts}


class Watch:
    """Counts what a checkpoint asks: ``has`` calls (their oids) and the scans ``create`` runs (trust or not)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.asked: list[str] = []
        self.scans: list[bool] = []
        real_has, real_snapshot = ObjectStore.has, rrstore.checkpoint.snapshot

        def has(store: ObjectStore, oid: str) -> bool:
            self.asked.append(oid)
            return real_has(store, oid)

        def snapshot(*args: object, **kwargs: object) -> object:
            self.scans.append(bool(kwargs.get("trust")))
            return real_snapshot(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(ObjectStore, "has", has)
        monkeypatch.setattr(rrstore.checkpoint, "snapshot", snapshot)

    def reset(self) -> None:
        self.asked.clear()
        self.scans.clear()


def checkpoint(root: Path, step: int) -> tuple[str, set[str]]:
    """A checkpoint by a fresh system (a new process would load the cache the same way): its id and
    every tree and content oid it reaches."""
    result = RollbackRecoverySystem(root=root).checkpoint("standard", step, f"step {step}")
    store = RollbackRecoverySystem(root=root).open_store()
    entries = flatten(store.objects, result.record.state_hash)
    oids = {result.record.state_hash}
    for entry in entries.values():
        if entry.kind == FILE:
            oids.update(entry.chunks or (entry.oid,))
        elif entry.kind == DIR:
            oids.add(entry.oid)
    return result.checkpoint_id, oids


def assert_complete(root: Path, checkpoint_id: str, files: dict[str, bytes]) -> None:
    """``rrstore check`` finds nothing wrong and the checkpoint restores byte-identically."""
    system = RollbackRecoverySystem(root=root)
    result = system.check()
    assert result.success, result.message
    for rel in files:
        (root / rel).write_bytes(b"scribbled over\n")
    (root / "stray.txt").write_bytes(b"not in the checkpoint\n")
    assert system.restore(checkpoint_id).success
    assert on_disk(root) == files


def delete_packs_by_hand(store: Path) -> None:
    """What a foreign tool (or an older rrstore's gc) does: every pack, its index and the merged
    indexes removed, the generation left as it was."""
    for path in [*(store / "packs").iterdir(), *(store / "index" / "packs").glob("*")]:
        path.unlink()


def test_an_unchanged_recheckpoint_asks_the_store_nothing_and_restores(project: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    files = settled_tree(project)
    checkpoint(project, 1)  # cold: every file read and stored, the cache saved under the store's token
    watch = Watch(monkeypatch)
    second, oids = checkpoint(project, 2)
    assert watch.scans == [True]
    assert not oids & set(watch.asked), "has() asked for a tree or content oid"
    assert len(watch.asked) <= 1  # at most the new record (a loose object: ``put`` looks before writing)
    watch.reset()
    status = RollbackRecoverySystem(root=project).status()
    assert status.clean and watch.asked == []
    assert_complete(project, second, files)


def test_a_recheckpoint_after_gc_swept_what_the_cache_names_stores_it_again(project: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    files = settled_tree(project)
    first, oids = checkpoint(project, 1)
    store = RollbackRecoverySystem(root=project).open_store()
    token = store_token(store.backend)
    policy = Retention(older_than=timedelta(0), grace=timedelta(0))
    swept = RollbackRecoverySystem(root=project).gc(policy, now=datetime.now() + timedelta(seconds=2))
    assert swept.removed == [first] and swept.objects_removed >= len(oids)
    assert store_token(store.backend) != token
    watch = Watch(monkeypatch)
    again, again_oids = checkpoint(project, 2)
    assert again_oids == oids
    assert watch.scans == [True]  # the token changed, so the one scan checked: no second scan was needed
    assert len(oids & set(watch.asked)) >= len(files)  # each file's content asked for
    assert_complete(project, again, files)


def test_gc_writes_a_new_generation_before_it_deletes_anything(project: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    settled_tree(project)
    checkpoint(project, 1)
    store = RollbackRecoverySystem(root=project).open_store()
    before = generation(store.backend)
    seen: list[str | None] = []
    backend_type = type(store.backend)
    real_delete = backend_type.delete

    def delete(backend: object, key: str) -> None:
        if not key.startswith("refs/"):
            seen.append(generation(store.backend, create=False))
        real_delete(backend, key)  # type: ignore[arg-type]

    monkeypatch.setattr(backend_type, "delete", delete)
    policy = Retention(older_than=timedelta(0), grace=timedelta(0))
    RollbackRecoverySystem(root=project).gc(policy, now=datetime.now() + timedelta(seconds=2))
    assert seen, "gc deleted no object or pack"
    assert before is not None and before not in seen and len(set(seen)) == 1  # one bump, before the first


def test_packs_removed_behind_rrstores_back_change_the_token(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = settled_tree(project)
    checkpoint(project, 1)
    store_path = RollbackRecoverySystem(root=project).open_store().path
    gen = (store_path / GENERATION_KEY).read_bytes()
    delete_packs_by_hand(store_path)
    assert (store_path / GENERATION_KEY).read_bytes() == gen
    watch = Watch(monkeypatch)
    again, oids = checkpoint(project, 2)
    assert watch.scans == [True] and len(oids & set(watch.asked)) >= len(files)  # checked in the one scan
    assert_complete(project, again, files)


def test_a_deletion_the_token_cannot_show_is_caught_by_the_proof(project: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Packs deleted in the same clock tick as the token was read (the directory's stamp unchanged):
    simulated by vouching the cache for the token as it is after the deletion."""
    files = settled_tree(project)
    checkpoint(project, 1)
    store = RollbackRecoverySystem(root=project).open_store()
    delete_packs_by_hand(store.path)
    cache = stat_cache_of(store.path, project)
    cache.vouch(store_token(store.backend))
    cache.scan_start = cache.trusted_before
    cache.save(set(cache.entries))
    watch = Watch(monkeypatch)
    again, _ = checkpoint(project, 2)
    assert watch.scans == [True, False]  # the trusted scan's proof failed: scanned again, checking
    assert_complete(project, again, files)


def test_a_cache_naming_objects_the_store_never_had_is_caught_by_the_proof(project: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache under the store's current token (written with the user's key) whose file entry and
    directory tree name oids that were never stored: the checkpoint still records the real tree."""
    files = settled_tree(project)
    _, oids = checkpoint(project, 1)
    store = RollbackRecoverySystem(root=project).open_store()
    cache = stat_cache_of(store.path, project)
    rel = "d1/sub/f01.txt"
    cache.entries[rel] = cache.entries[rel]._replace(oid="e" * 64)
    cache.trees["d2/sub"] = ("f" * 64, cache.trees["d2/sub"][1])
    cache.changed = True
    cache.vouch(store_token(store.backend))
    cache.scan_start = cache.trusted_before
    cache.save(set(cache.entries))
    again_cache = stat_cache_of(store.path, project)
    assert again_cache.trusted(store_token(store.backend)) and again_cache.entries[rel].oid == "e" * 64
    watch = Watch(monkeypatch)
    again, again_oids = checkpoint(project, 2)
    assert watch.scans == [True, False]
    assert again_oids == oids  # the real content, not the cache's claims
    assert_complete(project, again, files)


def test_a_status_scan_that_saw_a_change_takes_away_the_caches_word(project: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """status hashes a new file without storing it: the cache it saves vouches for nothing, so the next
    checkpoint checks (and stores) instead of leaning on its proof."""
    files = settled_tree(project)
    checkpoint(project, 1)
    files["new.txt"] = b"only hashed by status\n"
    (project / "new.txt").write_bytes(files["new.txt"])
    then = time.time_ns() - 10 * 10**9
    os.utime(project / "new.txt", ns=(then, then))
    assert not RollbackRecoverySystem(root=project).status().clean
    store = RollbackRecoverySystem(root=project).open_store()
    assert stat_cache_of(store.path, project).token is None
    watch = Watch(monkeypatch)
    again, _ = checkpoint(project, 2)
    assert watch.scans == [True] and watch.asked  # checked, in one scan
    assert_complete(project, again, files)


def test_snapshot_oids_match_what_the_checkpoint_reaches(project: Path) -> None:
    """The proof covers every object a trusted scan did not ask about (``snapshot_oids`` = the reach)."""
    settled_tree(project)
    checkpoint(project, 1)
    manager = RollbackRecoverySystem(root=project).checkpoint_manager
    with manager.store.writing():
        snap = manager.snapshot(store=True, trust=True)
    assert snap.trusted
    _, reached = checkpoint(project, 2)
    assert snapshot_oids(snap) == reached


def test_a_generation_that_moves_during_the_scan_leaves_the_cache_vouching_for_nothing(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Objects removed while a scan ran (a gc by a caller that skipped the lock): the cache saved by that
    scan must not vouch for its hits under the new generation."""
    import rrstore.worktree.snapshot as snapshot_module
    from rrstore.store.generation import bump

    settled_tree(project)
    checkpoint(project, 1)
    store = RollbackRecoverySystem(root=project).open_store()
    real_remove = snapshot_module._remove_leftovers

    def remove_and_bump(root: str, paths: list[str]) -> None:  # runs after the scan, before the flush
        bump(store.backend)
        real_remove(root, paths)

    monkeypatch.setattr(snapshot_module, "_remove_leftovers", remove_and_bump)
    checkpoint(project, 2)
    assert stat_cache_of(store.path, project).token is None
    monkeypatch.setattr(snapshot_module, "_remove_leftovers", real_remove)
    checkpoint(project, 3)  # a scan with an unmoving generation vouches again
    assert stat_cache_of(store.path, project).trusted(store_token(store.backend))


def test_a_file_left_out_as_torn_keeps_no_entry_the_cache_could_vouch_for(project: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Its entry may name content that was never stored (hashed by a status scan): dropped, not vouched."""
    import rrstore.worktree.snapshot as snapshot_module
    from rrstore.errors import TornRead

    settled_tree(project)
    checkpoint(project, 1)
    rel = "d3/sub/f03.txt"
    (project / rel).write_bytes(b"edited, hashed by status only\n")
    then = time.time_ns() - 5 * 10**9
    os.utime(project / rel, ns=(then, then))
    RollbackRecoverySystem(root=project).status()
    real_store_file = snapshot_module.store_file

    def torn_once(path: str, *args: object, **kwargs: object) -> object:
        if path.endswith(rel):
            raise TornRead(path)
        return real_store_file(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(snapshot_module, "store_file", torn_once)
    result = RollbackRecoverySystem(root=project).checkpoint("standard", 2, "torn")
    assert rel in result.record.left_out
    store = RollbackRecoverySystem(root=project).open_store()
    cache = stat_cache_of(store.path, project)
    assert rel not in cache.entries and cache.trusted(store_token(store.backend))
