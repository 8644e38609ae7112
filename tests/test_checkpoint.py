"""Checkpoints: ids, records, deduplication, ordering, and surviving a kill mid-way."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Self

import blake3
import pytest
from conftest import GIT_ENV, git

import rrstore.checkpoint as checkpoint_module
from rrstore import RollbackRecoverySystem
from rrstore.backends import LocalBackend
from rrstore.store.objects import ObjectStore
from rrstore.tree import FILE, content_oids, flatten

# The seed's form, then the random tail every id gets (issue 12; old ids ended at the time or in -2).
ID_RE = re.compile(r"^(docs|standard|heavy)-step(\d+)-(\d{8}_\d{6})-[a-z2-7]{6}$")
RECORD_FIELDS = {"checkpoint_id", "lane", "step_number", "step_name", "timestamp", "state_hash", "git_commit",
                 "git_branch", "git_dirty", "success", "error_message", "metrics"}
METRICS = {"wall_time_s", "cpu_time_s", "files_scanned", "bytes_scanned", "bytes_new", "compressed_bytes_new"}


def write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def store_objects(store: Path) -> set[str]:
    """Every object id the store holds (packed or loose), as a fresh reader sees them."""
    return set(ObjectStore(LocalBackend(store)))


def read_object(store: Path, oid: str) -> bytes:
    """The verified bytes of ``oid``, read by a fresh reader."""
    return ObjectStore(LocalBackend(store)).get(oid)


def ref_names(store: Path) -> set[str]:
    return set(os.listdir(store / "refs" / "checkpoints"))


def small_tree(root: Path) -> None:
    write(root / "a" / "b" / "c.txt", b"deep file\n")
    write(root / "a" / "x.bin", os.urandom(50_000))
    write(root / "run.sh", b"#!/bin/sh\n", 0o755)
    os.symlink("a/b/c.txt", root / "link")
    (root / "empty").mkdir()


def test_id_has_the_seed_form_and_names_its_creation_time(project: Path) -> None:
    small_tree(project)
    system = RollbackRecoverySystem(root=project)
    for lane, step in (("docs", 0), ("standard", 3), ("heavy", 12)):
        result = system.checkpoint(lane, step, "Running tests")
        match = ID_RE.match(result.checkpoint_id)
        assert match, result.checkpoint_id
        assert match.group(1) == lane and int(match.group(2)) == step
        created = result.record.created
        assert created.tzinfo is not None
        assert datetime.strptime(match.group(3), "%Y%m%d_%H%M%S") == created.replace(tzinfo=None, microsecond=0)
        assert result.success is True


class FrozenNow(datetime):
    """``datetime`` whose ``now()`` is one fixed instant: the clock a checkpoint id is made from, held still."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> Self:
        return cls(2026, 12, 1, 12, 0, 0, 250_000, tzinfo=tz)


def test_two_checkpoints_in_the_same_second_get_distinct_ids(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(project / "f.txt", b"x")
    system = RollbackRecoverySystem(root=project)
    system.checkpoint("standard", 1, "warm up")
    monkeypatch.setattr(checkpoint_module, "datetime", FrozenNow)
    first, second, third = (system.checkpoint("standard", 2, name).checkpoint_id for name in ("one", "two", "three"))
    assert len({first, second, third}) == 3
    assert all(ID_RE.match(i) and i.startswith("standard-step2-20261201_120000-") for i in (first, second, third))
    names = {r.checkpoint_id: r.step_name for r in system.list().checkpoints}
    assert names[first] == "one" and names[second] == "two" and names[third] == "three"


def test_concurrent_checkpoints_get_unique_ids(project: Path) -> None:
    write(project / "f.txt", b"x")
    env = {**os.environ, **GIT_ENV}
    env.pop("RRSTORE_DIR", None)
    args = [sys.executable, "-m", "rrstore", "checkpoint", "--lane", "heavy", "--step-number", "4", "--step-name"]
    procs = [subprocess.Popen([*args, f"p{i}"], cwd=project, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [e for _, e in outs]
    ids = [o.strip() for o, _ in outs]
    assert len(set(ids)) == 4
    assert all(ID_RE.match(i) for i in ids)
    assert ref_names(project / ".checkpoints") == set(ids)


def test_record_fields_in_a_git_repository(git_project: Path) -> None:
    write(git_project / "src" / "m.py", b"x = 1\n")
    write(git_project / "src" / "run.sh", b"#!/bin/sh\n", 0o755)
    git(git_project, "add", "-A")
    git(git_project, "commit", "-q", "-m", "code")
    write(git_project / "ignored.log", b"not in scope" * 100)
    system = RollbackRecoverySystem(root=git_project)

    record = system.checkpoint("standard", 3, "Running tests").record
    doc = json.loads(json.dumps(record.to_dict()))

    assert doc.keys() >= RECORD_FIELDS
    assert doc["lane"] == "standard" and doc["step_number"] == 3 and doc["step_name"] == "Running tests"
    assert datetime.fromisoformat(doc["timestamp"]).tzinfo is not None
    assert doc["git_commit"] == git(git_project, "rev-parse", "HEAD").strip()
    assert doc["git_branch"] == "main"
    assert doc["git_dirty"] is False
    assert doc["success"] is True and doc["error_message"] is None
    assert re.fullmatch(r"[0-9a-f]{64}", doc["state_hash"])
    m = doc["metrics"]
    assert m.keys() >= METRICS
    scope = ["README.md", ".gitignore", "src/m.py", "src/run.sh"]
    assert m["files_scanned"] == len(scope)
    assert m["bytes_scanned"] == sum((git_project / p).stat().st_size for p in scope)
    assert m["bytes_new"] >= m["bytes_scanned"] > 0
    assert m["compressed_bytes_new"] > 0
    assert m["wall_time_s"] > 0 and m["cpu_time_s"] >= 0
    assert all(isinstance(m[k], int | float) and not isinstance(m[k], bool) for k in METRICS)
    assert system.show(record.checkpoint_id).to_dict() == record.to_dict()

    write(git_project / "src" / "m.py", b"x = 2\n")
    dirty = system.checkpoint("standard", 4, "edited").record
    assert dirty.git_dirty is True
    assert dirty.git_commit == record.git_commit
    git(git_project, "checkout", "-q", "-b", "feature")
    assert system.checkpoint("standard", 5, "on a branch").record.git_branch == "feature"


def test_record_outside_git_has_no_git_facts(project: Path) -> None:
    small_tree(project)
    record = RollbackRecoverySystem(root=project).checkpoint("docs", 1, "Docs").record
    assert (record.git_commit, record.git_branch, record.git_dirty) == (None, None, None)
    assert record.metrics["files_scanned"] == 3


def test_failed_status_and_error_are_recorded(project: Path, cli) -> None:
    small_tree(project)
    out = cli("checkpoint", "--lane", "standard", "--step-number", "5", "--step-name", "Tests",
              "--status", "failed", "--error", "3 tests failed: test_a, test_b, test_c", cwd=project)
    assert out.returncode == 0, out.stderr
    checkpoint_id = out.stdout.strip()
    record = RollbackRecoverySystem(root=project).show(checkpoint_id)
    assert record.success is False
    assert record.error_message == "3 tests failed: test_a, test_b, test_c"
    shown = json.loads(cli("show", checkpoint_id, "--json", cwd=project).stdout)
    assert shown["success"] is False and shown["error_message"] == record.error_message
    table = cli("list", "-v", cwd=project).stdout.splitlines()
    row = next(line for line in table if line.startswith(checkpoint_id))
    assert "failed" in row.split()


def test_state_hash_depends_on_content_not_time_or_place(project: Path, tmp_path: Path) -> None:
    small_tree(project)
    first = RollbackRecoverySystem(root=project).checkpoint("standard", 1, "here").record
    copy = tmp_path / "elsewhere"
    shutil.copytree(project, copy, symlinks=True, ignore=shutil.ignore_patterns(".checkpoints"))
    os.utime(copy / "a" / "x.bin", (1_000_000, 1_000_000))
    again = RollbackRecoverySystem(root=copy).checkpoint("heavy", 9, "there").record
    assert again.state_hash == first.state_hash

    os.chmod(copy / "run.sh", 0o644)
    assert RollbackRecoverySystem(root=copy).status().state_hash != first.state_hash
    os.chmod(copy / "run.sh", 0o755)
    os.unlink(copy / "link")
    os.symlink("a/x.bin", copy / "link")
    assert RollbackRecoverySystem(root=copy).status().state_hash != first.state_hash


def test_file_entries_carry_the_blake3_of_the_content(project: Path) -> None:
    small_tree(project)
    system = RollbackRecoverySystem(root=project)
    record = system.checkpoint("standard", 1, "x").record
    entries = flatten(system.open_store().objects, record.state_hash)
    files = {p: e for p, e in entries.items() if e.kind == FILE}
    assert set(files) == {"a/b/c.txt", "a/x.bin", "run.sh"}
    for path, entry in files.items():
        assert entry.oid == blake3.blake3((project / path).read_bytes()).hexdigest()
        assert entry.size == (project / path).stat().st_size
    assert files["run.sh"].executable and not files["a/x.bin"].executable


def test_unchanged_tree_stores_no_new_content(project: Path) -> None:
    small_tree(project)
    store = project / ".checkpoints"
    system = RollbackRecoverySystem(root=project)
    system.checkpoint("standard", 1, "first")
    before = store_objects(store)

    second = system.checkpoint("standard", 2, "second").record

    assert store_objects(store) - before == {second.record_oid}
    assert second.metrics["bytes_new"] == 0 and second.metrics["compressed_bytes_new"] == 0

    # one changed file costs its blob plus the trees on its path (and the record), nothing else
    write(project / "a" / "b" / "c.txt", b"deep file, edited\n")
    third = system.checkpoint("standard", 3, "third").record
    new = store_objects(store) - before - {second.record_oid, third.record_oid}
    blob = blake3.blake3(b"deep file, edited\n").hexdigest()
    assert blob in new
    kinds = {oid: json.loads(read_object(store, oid)).get("format") for oid in new - {blob}}
    assert sorted(kinds.values()) == ["rrstore-tree-1"] * 3  # a/b, a, root
    trees = sum(len(read_object(store, oid)) for oid in kinds)
    assert len(b"deep file, edited\n") <= third.metrics["bytes_new"] <= len(b"deep file, edited\n") + trees


def test_list_is_newest_first(project: Path, cli) -> None:
    write(project / "f.txt", b"x")
    system = RollbackRecoverySystem(root=project)
    made = []
    for step, name in ((1, "Building"), (2, "Quality gates"), (3, "Running tests")):
        write(project / "f.txt", name.encode())
        made.append(system.checkpoint("standard", step, name).checkpoint_id)
    records = system.checkpoint_manager.list_checkpoints()
    assert [r.checkpoint_id for r in records] == made[::-1]
    stamps = [r.created for r in records]
    assert stamps == sorted(stamps, reverse=True)
    out = cli("list", cwd=project)
    assert out.stdout.splitlines() == [f"{made[2]}: Running tests (standard)", f"{made[1]}: Quality gates (standard)",
                                       f"{made[0]}: Building (standard)"]


def _check_store_consistent(root: Path) -> list[str]:
    """Every ref reaches only objects that exist and verify; returns the ids."""
    system = RollbackRecoverySystem(root=root)
    store = system.open_store()
    ids = sorted(ref_names(root / ".checkpoints"))
    for checkpoint_id in ids:
        oid = (root / ".checkpoints" / "refs" / "checkpoints" / checkpoint_id).read_text().splitlines()[0]
        assert store.objects.has(oid), f"ref {checkpoint_id} points at missing object {oid}"
        record = system.show(checkpoint_id)
        for entry in flatten(store.objects, record.state_hash).values():
            if entry.kind == FILE:
                for content in content_oids(entry):
                    store.objects.get(content)
    return ids


def test_killed_checkpoint_leaves_earlier_checkpoints_intact(project: Path, cli, manifest) -> None:
    small_tree(project)
    system = RollbackRecoverySystem(root=project)
    first = system.checkpoint("standard", 1, "first").checkpoint_id
    state1 = manifest(project)
    write(project / "a" / "b" / "c.txt", b"second version\n")
    os.unlink(project / "link")
    os.symlink("nowhere", project / "link")
    second = system.checkpoint("standard", 2, "second").checkpoint_id
    state2 = manifest(project)
    store = project / ".checkpoints"
    refs_before = ref_names(store)

    for d in range(12):  # ~120 MB of incompressible data in 1200 files: seconds of work to interrupt
        folder = project / "big" / f"d{d:02}"
        folder.mkdir(parents=True)
        for i in range(100):
            (folder / f"f{i:03}.bin").write_bytes(os.urandom(100_000))
    objects_before = len(store_objects(store))
    env = {**os.environ, **GIT_ENV}
    env.pop("RRSTORE_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "rrstore", "checkpoint", "--lane", "heavy", "--step-number", "3",
                             "--step-name", "killed"], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        if len(store_objects(store)) >= objects_before + 40:
            break
        time.sleep(0.005)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert alive, "the checkpoint finished before it could be killed; make the tree bigger"
    assert proc.returncode == -signal.SIGKILL
    assert len(store_objects(store)) > objects_before  # it really was mid-way

    assert ref_names(store) == refs_before
    assert _check_store_consistent(project) == sorted(refs_before)
    for oid in store_objects(store):  # nothing half-written is visible as an object
        assert blake3.blake3(read_object(store, oid)).hexdigest() == oid
    listed = cli("list", cwd=project)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [f"{second}: second (standard)", f"{first}: first (standard)"]

    shutil.rmtree(project / "big")  # keep the pre-restore checkpoints small
    out = cli("restore", "--checkpoint-id", first, cwd=project)
    assert out.returncode == 0, out.stderr
    assert manifest(project) == state1
    out = cli("restore", "--checkpoint-id", second, cwd=project)
    assert out.returncode == 0, out.stderr
    assert manifest(project) == state2
    _check_store_consistent(project)


def test_checkpoint_when_a_tracked_directory_became_a_file(git_project: Path) -> None:
    write(git_project / "d" / "x.txt", b"tracked\n")
    git(git_project, "add", "-A")
    git(git_project, "commit", "-q", "-m", "d")
    shutil.rmtree(git_project / "d")
    write(git_project / "d", b"now a file\n")
    system = RollbackRecoverySystem(root=git_project)

    record = system.checkpoint("standard", 1, "d is a file").record

    entries = flatten(system.open_store().objects, record.state_hash)
    assert entries["d"].kind == FILE
    assert entries["d"].oid == blake3.blake3(b"now a file\n").hexdigest()
    assert "d/x.txt" not in entries


def test_checkpoint_when_a_tracked_directory_became_a_symlink(git_project: Path, tmp_path: Path) -> None:
    write(git_project / "src" / "app.py", b"inside\n")
    git(git_project, "add", "-A")
    git(git_project, "commit", "-q", "-m", "src")
    outside = tmp_path / "outside"
    write(outside / "app.py", b"outside the tree\n")
    shutil.rmtree(git_project / "src")
    os.symlink(outside, git_project / "src")
    system = RollbackRecoverySystem(root=git_project)

    record = system.checkpoint("standard", 1, "src is a symlink").record

    # the checkpoint is readable, holds the link as a link, and took nothing from outside the tree
    entries = flatten(system.open_store().objects, record.state_hash)
    assert entries["src"].kind == "symlink" and entries["src"].target == str(outside)
    assert "src/app.py" not in entries
    assert not system.open_store().objects.has(blake3.blake3(b"outside the tree\n").hexdigest())


def _reachable_oids(store: Path, record_state: str) -> set[str]:
    """Every tree and content oid a checkpoint's root tree reaches, read by a fresh reader."""
    from rrstore.tree import DIR

    objects = ObjectStore(LocalBackend(store))
    found = {record_state}
    for entry in flatten(objects, record_state).values():
        if entry.kind == DIR:
            found.add(entry.oid)
        elif entry.kind == FILE:
            found.update(content_oids(entry))
    return found


def test_two_threads_creating_the_pack_writer_lose_no_object(project: Path, manifest,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Hole 1 of issue 8: the first puts of two large files hashed at the same moment.

    The writer is created lazily on first use; the injected pause holds the
    first creation open until a second thread also starts one (before the
    fix it did, and every object put into the first writer meanwhile was
    never written). With the fix the second thread waits, the pause times
    out, and one writer takes every object.
    """
    import threading

    from rrstore.store import objects as objects_module
    from rrstore.store.pack import PackWriter

    made: list[int] = []
    second = threading.Event()
    guard = threading.Lock()

    class RacingWriter(PackWriter):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            with guard:
                made.append(1)
                nth = len(made)
            if nth == 1:
                second.wait(timeout=1.0)  # a second creation starts meanwhile (before the fix)
            else:
                second.set()
                time.sleep(0.4)  # ... and finishes last, while the first writer is in use
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(objects_module, "PackWriter", RacingWriter)
    for n in range(6):  # six large files, each on a worker thread, each > CHUNK_THRESHOLD
        write(project / f"big{n}.bin", os.urandom((5 << 20) + n * 4096))
    state = manifest(project)
    system = RollbackRecoverySystem(root=project)

    record = system.checkpoint("standard", 1, "six large files").record

    store = project / ".checkpoints"
    held = store_objects(store)
    missing = _reachable_oids(store, record.state_hash) - held
    assert not missing, f"{len(missing)} object(s) the checkpoint reaches were never written"
    monkeypatch.setattr(objects_module, "PackWriter", PackWriter)
    for n in range(6):
        os.unlink(project / f"big{n}.bin")
    restored = RollbackRecoverySystem(root=project).restore(record.checkpoint_id)
    assert not restored.failures
    assert manifest(project) == state


def test_checkpoint_whose_objects_were_not_written_records_nothing(project: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's proof: objects still only queued (a flush that never happened) abort the checkpoint
    with exit 13's family, and no record and no ref is written."""
    from rrstore.errors import ObjectsNotWritten

    small_tree(project)
    system = RollbackRecoverySystem(root=project)
    first = system.checkpoint("standard", 1, "first").checkpoint_id
    store = project / ".checkpoints"
    write(project / "a" / "x.bin", os.urandom(60_000))
    write(project / "new.txt", b"new\n")
    refs, loose = ref_names(store), sorted(p.name for p in (store / "objects").rglob("*") if p.is_file())
    monkeypatch.setattr(ObjectStore, "flush", lambda self: None)

    with pytest.raises(ObjectsNotWritten) as caught:
        RollbackRecoverySystem(root=project).checkpoint("standard", 2, "lost")

    assert caught.value.exit_code == 13
    assert str(caught.value).startswith("checkpoint aborted: 4 object(s) were not written (first: ")
    assert str(caught.value).endswith("); no checkpoint was recorded")
    assert ref_names(store) == refs
    assert sorted(p.name for p in (store / "objects").rglob("*") if p.is_file()) == loose
    monkeypatch.undo()
    assert [r.checkpoint_id for r in RollbackRecoverySystem(root=project).list().checkpoints] == [first]
