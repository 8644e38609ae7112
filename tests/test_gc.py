"""gc: retention with an injected clock, mark and sweep of loose objects and packs, pins, cron CLI, concurrency.

Everything runs against real directories, real packs and the real CLI in subprocesses. Time is never
waited for: ``system.gc(policy, now=...)`` takes the clock, and a ``now`` days ahead makes checkpoints
"old" and every object older than the grace period. The CLI has no clock option, so its tests use
``--older-than 0s --grace 0s``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import GIT_ENV

from rrstore import RollbackRecoverySystem
from rrstore.backends import LocalBackend
from rrstore.errors import CheckpointNotFound, CorruptObject, ObjectMissing, RRStoreError, UsageError
from rrstore.gc import Retention, parse_duration
from rrstore.record import CheckpointRecord
from rrstore.store.objects import MAX_SMALL_PACKS, ObjectStore, object_key
from rrstore.store.pack import decode_index
from rrstore.tree import reachable
from rrstore.worktree.gitrepo import project_identity

Cli = Callable[..., subprocess.CompletedProcess[str]]
Manifest = Callable[..., dict[str, tuple[object, ...]]]

DAY = timedelta(days=1)
BIG = 600 << 10  # a large file stored whole
CHUNKED = (4 << 20) + (512 << 10)  # above the 4 MiB chunking threshold: several chunk objects
JSON_KEYS = {"records_removed", "objects_removed", "bytes_freed", "removed", "kept", "dry_run"}


# --- work trees -------------------------------------------------------------------------------------------


def rand(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def text(seed: int) -> bytes:
    rng = random.Random(seed)
    words = ["value", "result", "items", "config", "path", "name", "count", "index", "total", "data"]
    lines = [f'"""Module {seed}."""', "", "import os", ""]
    for j in range(rng.randint(3, 8)):
        lines.append(f"def {rng.choice(words)}_{j}(x):")
        lines.append(f"    return x + {rng.randint(0, 999)}  # {rng.choice(words)}")
    return ("\n".join(lines) + "\n").encode()


def clear(root: Path) -> None:
    for item in root.iterdir():
        if item.name == ".checkpoints":
            continue
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
        else:
            item.unlink()


@dataclass
class State:
    files: dict[str, bytes]
    execs: tuple[str, ...] = ()
    links: tuple[tuple[str, str], ...] = ()
    empty_dirs: tuple[str, ...] = ()


def write_state(root: Path, state: State) -> None:
    """Make ``root`` hold exactly ``state`` (the store aside)."""
    clear(root)
    for rel, data in state.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, 0o755 if rel in state.execs else 0o644)
    for rel, target in state.links:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / rel)
    for rel in state.empty_dirs:
        (root / rel).mkdir(parents=True, exist_ok=True)


def common_files() -> dict[str, bytes]:
    files = {f"src/pkg/mod{i}.py": text(i) for i in range(12)}
    files["bin/run.sh"] = b"#!/bin/sh\necho run\n"
    files["bin/plain.sh"] = b"#!/bin/sh\necho plain\n"
    files["data/shared.bin"] = rand(1, BIG)
    files["data/chunked.bin"] = rand(2, CHUNKED)
    return files


def with_specials(files: dict[str, bytes]) -> State:
    """An executable, a symlink, a dangling symlink and empty directories beside ``files``."""
    return State(files, execs=("bin/run.sh",), links=(("link", "src/pkg/mod1.py"), ("dangling", "nowhere/at/all")),
                 empty_dirs=("empty/inner", "also-empty"))


def state_a() -> State:
    files = common_files()
    files.update({f"a/notes{i}.txt": text(100 + i) for i in range(5)})
    files["data/a_only.bin"] = rand(3, BIG)
    return with_specials(files)


def state_b() -> State:
    files = common_files()
    files["src/pkg/mod0.py"] = text(0) + b"# changed in b\n"
    files["data/chunked.bin"] = files["data/chunked.bin"][:-4096] + rand(9, 4096)  # only the tail chunk differs
    files["b/new.txt"] = text(200)
    return with_specials(files)


def state_c() -> State:
    """Nothing in common with a or b: the pack of its checkpoint holds only its own objects."""
    return State({f"c/unique{i}.txt": text(500 + i) for i in range(6)})


# --- store inspection -------------------------------------------------------------------------------------


def store_of(system: RollbackRecoverySystem) -> Path:
    return system.store_path


def fresh(store: Path) -> ObjectStore:
    """A new ObjectStore on the directory, as another process would open it."""
    return ObjectStore(LocalBackend(store))


def reach(store: Path, record: CheckpointRecord) -> set[str]:
    """The record and every tree and content object the checkpoint reaches."""
    return {record.record_oid, *reachable(fresh(store), record.state_hash)}


def loose_oids(store: Path) -> set[str]:
    folder = store / "objects"
    return {p.parent.name + p.name for p in folder.glob("*/*") if p.is_file()}


def pack_ids(store: Path) -> set[str]:
    return {p.stem for p in (store / "packs").glob("*.pack")}


def packed_oids(store: Path) -> dict[str, set[str]]:
    """oid -> the packs whose on-disk index lists it."""
    out: dict[str, set[str]] = {}
    for idx in (store / "packs").glob("*.idx"):
        for oid in decode_index(idx.stem, idx.read_bytes()):
            out.setdefault(oid, set()).add(idx.stem)
    return out


def stored_bytes(store: Path) -> int:
    """What objects take on disk: loose frames and pack files (indexes aside), as bytes_freed counts them."""
    loose = sum(p.stat().st_size for p in (store / "objects").glob("*/*") if p.is_file())
    return loose + sum(p.stat().st_size for p in (store / "packs").glob("*.pack"))


def store_files(store: Path) -> dict[str, tuple[int, int, str]]:
    """Every file of the store but the lock files: (size, mtime_ns, sha256). 'Unchanged' means equal."""
    out = {}
    for path in sorted(store.rglob("*")):
        rel = path.relative_to(store).as_posix()
        if rel.startswith("locks/") or not path.is_file():
            continue
        st = path.stat()
        out[rel] = (st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def ref_ids(store: Path) -> set[str]:
    folder = store / "refs" / "checkpoints"
    return set(os.listdir(folder)) if folder.is_dir() else set()


def assert_consistent(store: Path) -> dict[str, set[str]]:
    """Every ref reaches only objects that exist and verify; returns id -> reached objects."""
    objects = fresh(store)
    out = {}
    for checkpoint_id in sorted(ref_ids(store)):
        oid = (store / "refs" / "checkpoints" / checkpoint_id).read_text().splitlines()[0]  # line 2: when it was added
        record = CheckpointRecord.decode(oid, objects.get(oid))
        reached = {oid}
        for obj in reachable(objects, record.state_hash):
            objects.get(obj)  # raises ObjectMissing / CorruptObject
            reached.add(obj)
        out[checkpoint_id] = reached
    return out


def between(older: CheckpointRecord, newer: CheckpointRecord) -> datetime:
    """A moment strictly between the two checkpoints' creation times."""
    assert older.created < newer.created
    return older.created + (newer.created - older.created) / 2


def aware_now() -> datetime:
    return datetime.now().astimezone()


def restore_matches(system: RollbackRecoverySystem, root: Path, checkpoint_id: str,
                    want: dict[str, tuple[object, ...]], manifest: Manifest, scramble: State) -> None:
    """Put other content in the tree, restore ``checkpoint_id`` and compare the full manifest."""
    write_state(root, scramble)
    assert manifest(root) != want
    result = system.restore(checkpoint_id)
    assert not result.failures
    assert manifest(root) == want


# --- scenario: a (old), c (old, nothing shared), b (young, shares with a) ---------------------------------


@dataclass
class Scenario:
    system: RollbackRecoverySystem
    store: Path
    a: CheckpointRecord
    c: CheckpointRecord
    b: CheckpointRecord
    packs_a: set[str]
    packs_c: set[str]
    want_b: dict[str, tuple[object, ...]]

    @property
    def now(self) -> datetime:
        """With the default 7-day rule: a and c are old, b is young."""
        return between(self.c, self.b) + timedelta(days=7)


def build(root: Path, manifest: Manifest) -> Scenario:
    system = RollbackRecoverySystem(root=root)
    write_state(root, state_a())
    a = system.checkpoint("standard", 1, "a").record
    store = store_of(system)
    packs_a = pack_ids(store)
    write_state(root, state_c())
    c = system.checkpoint("standard", 2, "c").record
    packs_c = pack_ids(store) - packs_a
    write_state(root, state_b())
    b = system.checkpoint("standard", 3, "b").record
    return Scenario(system, store, a, c, b, packs_a, packs_c, manifest(root))


@pytest.fixture
def scenario(project: Path, manifest: Manifest) -> Scenario:
    return build(project, manifest)


# --- retention and sweep through the API ------------------------------------------------------------------


def test_old_checkpoints_and_only_their_objects_go_kept_ones_restore_identically(
        scenario: Scenario, project: Path, manifest: Manifest) -> None:
    s = scenario
    reach_a, reach_b, reach_c = reach(s.store, s.a), reach(s.store, s.b), reach(s.store, s.c)
    packs_b = pack_ids(s.store) - s.packs_a - s.packs_c
    dead = (reach_a | reach_c) - reach_b
    shared = reach_a & reach_b
    # orphans, as a killed checkpoint leaves them: a loose object and a pack nothing reaches
    orphans = fresh(s.store)
    orphan_loose = orphans.put(b"orphan loose object", loose=True).oid
    orphan_packed = orphans.put(b"orphan packed object").oid
    orphans.flush()
    [orphan_pack] = pack_ids(s.store) - s.packs_a - s.packs_c - packs_b
    dead |= {orphan_loose, orphan_packed}
    loose, packed = loose_oids(s.store), packed_oids(s.store)
    # the scenario covers what it claims: dead objects loose (records, the orphan) and packed, shared ones packed
    assert {s.a.record_oid, s.c.record_oid, orphan_loose} <= dead & loose
    assert len(dead & set(packed)) > 3 and len(shared & set(packed)) > 3
    assert len(s.packs_a) == 1 and len(s.packs_c) == 1
    [pack_a], [pack_c] = s.packs_a, s.packs_c
    assert {p for oid in shared & set(packed) for p in packed[oid]} == {pack_a}  # shared small files live in a's pack
    assert all(packed[oid] == {pack_c} for oid in reach_c if oid in packed)  # c's pack holds only c's objects
    assert reach_c & reach_b == set()

    disk_before = stored_bytes(s.store)
    result = s.system.gc(Retention(), now=s.now)

    assert result.removed == [s.c.checkpoint_id, s.a.checkpoint_id]
    assert result.kept == [s.b.checkpoint_id]
    assert result.bytes_freed == disk_before - stored_bytes(s.store) > 0
    assert result.success and not result.dry_run
    assert ref_ids(s.store) == {s.b.checkpoint_id}
    assert [r.checkpoint_id for r in s.system.list().checkpoints] == [s.b.checkpoint_id]
    # exactly what b reaches is left, whether it was loose or packed
    assert set(fresh(s.store)) == reach_b
    assert result.objects_removed == len(dead)
    objects = fresh(s.store)
    for oid in dead:
        assert not objects.has(oid)
        with pytest.raises(ObjectMissing):
            objects.get(oid)
    for oid in reach_b:
        objects.get(oid)
    assert loose_oids(s.store) == (loose & reach_b)
    # a's pack had dead and live objects: rewritten (the old file gone, its live objects elsewhere);
    # c's pack had only dead ones: deleted
    assert pack_a not in pack_ids(s.store) and pack_c not in pack_ids(s.store)
    assert result.packs_rewritten >= 1
    for gone in (pack_c, orphan_pack):
        assert not list((s.store / "packs").glob(f"{gone}.*"))
    assert packs_b <= pack_ids(s.store)  # b's own pack had nothing dead: left alone
    assert_consistent(s.store)

    restore_matches(s.system, project, s.b.checkpoint_id, s.want_b, manifest, state_a())


def test_dry_run_removes_nothing_and_reports_what_gc_then_removes(scenario: Scenario) -> None:
    s = scenario
    before = store_files(s.store)
    dry = s.system.gc(Retention(), now=s.now, dry_run=True)
    assert store_files(s.store) == before
    assert dry.dry_run
    assert dry.removed == [s.c.checkpoint_id, s.a.checkpoint_id] and dry.kept == [s.b.checkpoint_id]
    assert dry.objects_removed > 0 and dry.bytes_freed > 0
    assert "would remove" in dry.message

    real = RollbackRecoverySystem(root=s.system.root).gc(Retention(), now=s.now)
    assert (real.removed, real.kept, real.objects_removed) == (dry.removed, dry.kept, dry.objects_removed)
    assert real.to_json()["records_removed"] == dry.to_json()["records_removed"] == 2
    assert real.bytes_freed > 0


def test_a_second_gc_right_after_removes_nothing(scenario: Scenario) -> None:
    s = scenario
    first = s.system.gc(Retention(), now=s.now)
    assert first.changed
    after_first = store_files(s.store)
    second = s.system.gc(Retention(), now=s.now)
    assert not second.changed
    assert (second.removed, second.objects_removed, second.packs_rewritten, second.tmp_removed) == ([], 0, 0, 0)
    assert second.kept == [s.b.checkpoint_id]
    assert store_files(s.store) == after_first
    # also from another process's point of view (a fresh system, a later clock)
    third = RollbackRecoverySystem(root=s.system.root).gc(Retention(), now=s.now)
    assert not third.changed and third.objects_removed == 0
    assert store_files(s.store) == after_first


def test_everything_old_with_nothing_kept_empties_the_store(scenario: Scenario) -> None:
    s = scenario
    result = s.system.gc(Retention(), now=s.b.created + 30 * DAY)
    assert sorted(result.removed) == sorted([s.a.checkpoint_id, s.b.checkpoint_id, s.c.checkpoint_id])
    assert result.kept == []
    assert ref_ids(s.store) == set()
    assert set(fresh(s.store)) == set()
    assert pack_ids(s.store) == set() and loose_oids(s.store) == set()


def test_grace_period_spares_young_unreachable_objects(scenario: Scenario) -> None:
    s = scenario
    dead = (reach(s.store, s.a) | reach(s.store, s.c)) - reach(s.store, s.b)
    tmp = s.store / "tmp"
    old_tmp, young_tmp = tmp / "leftover-old", tmp / "leftover-young"
    old_tmp.write_bytes(b"interrupted write")
    young_tmp.write_bytes(b"in-flight write")
    hour_ago = time.time() - 3600
    os.utime(old_tmp, (hour_ago, hour_ago))

    # the real clock: a and c are old by the rule (0s), but everything was written seconds ago
    young = s.system.gc(Retention(older_than=timedelta(0), keep_last=1), now=aware_now())
    assert young.removed == [s.c.checkpoint_id, s.a.checkpoint_id]
    assert young.objects_removed == 0 and young.bytes_freed == 0 and young.packs_rewritten == 0
    assert young.tmp_removed == 1
    assert not old_tmp.exists() and young_tmp.exists()
    objects = fresh(s.store)
    for oid in dead:
        objects.get(oid)  # not swept yet

    # a day later every one of them is past the grace period
    later = s.system.gc(Retention(older_than=timedelta(0), keep_last=1), now=aware_now() + DAY)
    assert later.removed == [] and later.kept == [s.b.checkpoint_id]
    assert later.objects_removed == len(dead)
    assert later.tmp_removed == 1 and not young_tmp.exists()
    assert set(fresh(s.store)) == reach(s.store, s.b)


def test_naive_now_is_taken_as_local_time(scenario: Scenario) -> None:
    s = scenario
    naive = s.now.astimezone().replace(tzinfo=None)
    result = s.system.gc(Retention(), now=naive, dry_run=True)
    assert result.removed == [s.c.checkpoint_id, s.a.checkpoint_id]


# --- keep-last, keep-lane, pins ---------------------------------------------------------------------------


def small_state(step: int) -> State:
    return State({"counter.txt": f"{step}\n".encode(), "same.txt": b"same\n"})


def test_keep_last_counts_step_checkpoints_per_lane_and_keep_lane_keeps_a_lane(project: Path) -> None:
    system = RollbackRecoverySystem(root=project)
    made: dict[str, CheckpointRecord] = {}
    for n, (lane, step) in enumerate([("standard", 1), ("standard", 2), ("docs", 1), ("heavy", 1),
                                      ("standard", 3), ("heavy", 2)]):
        write_state(project, small_state(n))
        made[f"{lane}{step}"] = system.checkpoint(lane, step, f"{lane} {step}").record
    write_state(project, small_state(99))
    undo_id = system.restore(made["standard1"].checkpoint_id).undo_checkpoint_id  # a pre-restore in 'standard'
    assert undo_id is not None
    undo = system.show(undo_id)
    assert undo.kind == "pre-restore" and undo.lane == "standard"
    ids = {k: r.checkpoint_id for k, r in made.items()}
    now = undo.created + 30 * DAY

    def split(policy: Retention) -> tuple[set[str], set[str]]:
        result = system.gc(policy, now=now, dry_run=True)
        return set(result.kept), set(result.removed)

    everything = {*ids.values(), undo_id}
    assert split(Retention()) == (set(), everything)
    kept, removed = split(Retention(keep_last=2))
    # the undo point is newer than standard3 but neither counts towards nor is kept by keep-last
    assert kept == {ids["standard3"], ids["standard2"], ids["docs1"], ids["heavy2"], ids["heavy1"]}
    assert removed == {ids["standard1"], undo_id}
    kept, _ = split(Retention(keep_last=1))
    assert kept == {ids["standard3"], ids["docs1"], ids["heavy2"]}
    kept, _ = split(Retention(keep_lanes=("heavy",)))
    assert kept == {ids["heavy1"], ids["heavy2"]}
    kept, _ = split(Retention(keep_lanes=("standard",)))
    assert kept == {ids["standard1"], ids["standard2"], ids["standard3"], undo_id}
    kept, _ = split(Retention(keep_last=1, keep_lanes=("docs", "heavy")))
    assert kept == {ids["standard3"], ids["docs1"], ids["heavy1"], ids["heavy2"]}
    # young ones are kept whatever keep-last says
    kept, _ = split(Retention(older_than=now - between(made["docs1"], made["heavy1"])))
    assert kept == {ids["heavy1"], ids["standard3"], ids["heavy2"], undo_id}

    result = system.gc(Retention(keep_last=1, keep_lanes=("docs",)), now=now)
    assert ref_ids(store_of(system)) == {ids["standard3"], ids["docs1"], ids["heavy2"]}
    assert set(result.removed) == everything - {ids["standard3"], ids["docs1"], ids["heavy2"]}
    assert_consistent(store_of(system))


@pytest.mark.parametrize("bad", [{"keep_last": -1}, {"keep_lanes": ("nightly",)}])
def test_retention_refuses_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        Retention(**bad)  # type: ignore[arg-type]


def test_pin_and_unpin_through_the_api(scenario: Scenario, project: Path, manifest: Manifest) -> None:
    s = scenario
    system = s.system
    a_id = s.a.checkpoint_id
    assert system.pin(a_id) == (a_id, True)
    assert system.pin(a_id) == (a_id, False)
    assert system.pinned() == {a_id}
    assert system.pin("latest") == (s.b.checkpoint_id, True)  # 'latest' pins the real id
    assert system.pinned() == {a_id, s.b.checkpoint_id}
    assert system.unpin("latest") == (s.b.checkpoint_id, True)
    assert (s.store / "refs" / "pins" / a_id).is_file() and not (s.store / "refs" / "pins" / "latest").exists()
    with pytest.raises(CheckpointNotFound):
        system.pin("standard-step9-19990101_000000")

    far = s.b.created + 30 * DAY
    result = system.gc(Retention(), now=far)
    assert result.kept == [a_id]
    assert set(result.removed) == {s.b.checkpoint_id, s.c.checkpoint_id}
    assert set(fresh(s.store)) == reach(s.store, s.a)
    want_a = manifest_of_state(project, state_a(), manifest)
    restore_matches(system, project, a_id, want_a, manifest, state_c())

    assert system.unpin(a_id) == (a_id, True)
    assert system.unpin(a_id) == (a_id, False)
    assert system.pinned() == set()
    later = system.gc(Retention(), now=far + DAY)
    assert a_id in later.removed
    assert a_id not in ref_ids(s.store)


def manifest_of_state(root: Path, state: State, manifest: Manifest) -> dict[str, tuple[object, ...]]:
    write_state(root, state)
    return manifest(root)


def test_pin_latest_and_unpin_through_the_cli(project: Path, cli: Cli) -> None:
    system = RollbackRecoverySystem(root=project)
    write_state(project, small_state(1))
    old = system.checkpoint("standard", 1, "old").checkpoint_id
    write_state(project, small_state(2))
    newest = system.checkpoint("standard", 2, "newest").checkpoint_id
    store = store_of(system)

    out = cli("pin", "latest", cwd=project)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == f"pinned {newest}" and out.stdout == ""
    assert set(os.listdir(store / "refs" / "pins")) == {newest}
    out = cli("pin", "latest", "--json", cwd=project)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"checkpoint_id": newest, "pinned": True, "changed": False}

    out = cli("gc", "--older-than", "0s", "--grace", "0s", cwd=project)
    assert out.returncode == 0, out.stderr
    assert ref_ids(store) == {newest}
    assert old in out.stdout and newest not in out.stdout

    out = cli("unpin", newest, cwd=project)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == f"unpinned {newest}"
    out = cli("unpin", newest, "--json", cwd=project)
    assert json.loads(out.stdout) == {"checkpoint_id": newest, "pinned": False, "changed": False}
    out = cli("gc", "--older-than", "0s", "--grace", "0s", "--json", cwd=project)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["removed"] == [newest]
    assert ref_ids(store) == set()

    out = cli("pin", "standard-step9-19990101_000000", cwd=project)
    assert out.returncode == 12
    assert len(out.stderr.splitlines()) == 1 and out.stdout == ""


# --- packs ------------------------------------------------------------------------------------------------


def test_many_small_packs_are_consolidated_and_stay_readable(project: Path, manifest: Manifest) -> None:
    system = RollbackRecoverySystem(root=project)
    records, manifests = [], []
    for step in range(MAX_SMALL_PACKS + 3):
        state = State({"counter.txt": f"{step}\n".encode(), f"notes/n{step}.txt": text(1000 + step),
                       "lib/same.py": text(7)})
        write_state(project, state)
        records.append(system.checkpoint("standard", step, f"step {step}").record)
        manifests.append(manifest(project))
    store = store_of(system)
    before = pack_ids(store)
    assert len(before) > MAX_SMALL_PACKS
    live = set().union(*(reach(store, r) for r in records))

    result = system.gc(Retention(older_than=timedelta(days=365)), now=records[-1].created + DAY)

    assert result.removed == [] and result.objects_removed == 0
    after = pack_ids(store)
    assert len(after) < len(before) and len(after) <= MAX_SMALL_PACKS
    assert not (after & before)  # every old small pack was merged away
    assert set(fresh(store)) == live
    objects = fresh(store)
    for oid in live:
        objects.get(oid)
    assert_consistent(store)
    again = system.gc(Retention(older_than=timedelta(days=365)), now=records[-1].created + DAY)
    assert not again.changed and again.packs_rewritten == 0 and pack_ids(store) == after
    restore_matches(system, project, records[0].checkpoint_id, manifests[0], manifest, small_state(5))


def test_sweep_removes_a_dead_object_held_by_two_packs(tmp_path: Path) -> None:
    """Two writers racing can leave one object in two packs; once dead, it must go from both."""
    store = tmp_path / "store"
    first, second = fresh(store), fresh(store)
    dead, live1, live2 = b"dead in both packs", b"live in pack one", b"live in pack two"
    second.put(live2)  # loads (empty) indexes before the first writer flushes
    for data in (dead, live1):
        first.put(data)
    dead_oid = second.put(dead).oid
    first.flush()
    second.flush()
    assert len(packed_oids(store)[dead_oid]) == 2
    live = {fresh(store).put(live1).oid, fresh(store).put(live2).oid}

    gc_objects = fresh(store)
    result = gc_objects.sweep(live, time.time() + 60)
    assert not fresh(store).has(dead_oid)
    assert dead_oid not in packed_oids(store)
    assert result.objects_removed >= 1
    assert set(fresh(store)) == live
    again = fresh(store).sweep(live, time.time() + 60)
    assert again.objects_removed == 0


def varied_files(count: int) -> dict[str, bytes]:
    """A source-like tree: files of one kind per directory (each kind compresses well with its own)."""
    rng = random.Random(11)
    files = {}
    for i in range(count):
        files[f"py/m{i}.py"] = text(i)
        files[f"js/d{i}.json"] = json.dumps({"id": i, "values": [rng.randint(0, 10**6) for _ in range(40)]},
                                            indent=2).encode()
        files[f"hex/h{i}.txt"] = rng.randbytes(1500).hex().encode()
        files[f"csv/c{i}.csv"] = "\n".join(",".join(f"{rng.random():.4f}" for _ in range(8))
                                            for _ in range(20)).encode()
    return files


def test_gc_in_another_process_that_rewrites_a_partly_dead_pack_does_not_grow_the_store(project: Path) -> None:
    """Cron's gc loads the indexes from disk; dropping 3 tiny objects must not cost compression."""
    files = varied_files(120)
    write_state(project, State({**files, "tiny.txt": b"one\n"}))
    system = RollbackRecoverySystem(root=project)
    a = system.checkpoint("standard", 1, "a").record
    write_state(project, State({**files, "tiny.txt": b"two\n"}))
    b = system.checkpoint("standard", 2, "b").record
    store = store_of(system)
    before = stored_bytes(store)

    result = RollbackRecoverySystem(root=project).gc(Retention(), now=between(a, b) + timedelta(days=7))

    assert result.removed == [a.checkpoint_id]
    assert result.objects_removed == 3  # a's record, the old tiny.txt, the old root tree
    assert result.bytes_freed == before - stored_bytes(store)
    assert stored_bytes(store) <= before, (before, stored_bytes(store))
    assert result.bytes_freed >= 0
    assert_consistent(store)


def test_stale_reader_gets_a_live_object_after_gc_rewrote_its_pack(scenario: Scenario) -> None:
    s = scenario
    [pack_a] = s.packs_a
    packed = packed_oids(s.store)
    shared = sorted(oid for oid in reach(s.store, s.a) & reach(s.store, s.b) if packed.get(oid) == {pack_a})
    dead = sorted(oid for oid in reach(s.store, s.a) - reach(s.store, s.b) if packed.get(oid) == {pack_a})
    assert shared and dead
    expected = {oid: fresh(s.store).get(oid) for oid in shared}

    stale = fresh(s.store)
    assert stale.has(shared[0])  # indexes loaded now, before gc
    s.system.gc(Retention(), now=s.now)
    assert pack_a not in pack_ids(s.store)

    for oid in shared:
        assert stale.get(oid) == expected[oid]
    with pytest.raises(ObjectMissing):
        stale.get(dead[0])


def test_long_lived_system_checkpoints_correctly_after_another_process_ran_gc(project: Path) -> None:
    """An agent keeps one RollbackRecoverySystem; cron runs gc in between two of its checkpoints."""
    agent = RollbackRecoverySystem(root=project)
    first = State({"x.txt": b"version one\n", "keep.txt": b"keep\n"})
    write_state(project, first)
    a = agent.checkpoint("standard", 1, "one").record
    write_state(project, State({"x.txt": b"version two\n", "keep.txt": b"keep\n"}))
    b = agent.checkpoint("standard", 2, "two").record

    cron = RollbackRecoverySystem(root=project)
    result = cron.gc(Retention(), now=between(a, b) + timedelta(days=7))
    assert result.removed == [a.checkpoint_id] and result.objects_removed > 0

    write_state(project, first)  # back to content whose objects gc just swept
    c = agent.checkpoint("standard", 3, "one again").record
    reached = assert_consistent(store_of(agent))
    assert c.checkpoint_id in reached


# --- damage stops gc before it removes anything -----------------------------------------------------------


def damage_record(s: Scenario) -> str:
    (s.store / object_key(s.a.record_oid)).write_bytes(b"not a zstd frame")
    return s.a.checkpoint_id


def delete_record(s: Scenario) -> str:
    (s.store / object_key(s.a.record_oid)).unlink()
    return s.a.checkpoint_id


def junk_ref(s: Scenario) -> str:
    (s.store / "refs" / "checkpoints" / s.c.checkpoint_id).write_text("junk\n")
    return s.c.checkpoint_id


@pytest.mark.parametrize("damage", [damage_record, delete_record, junk_ref])
def test_unreadable_record_stops_gc_before_anything_is_removed(
        scenario: Scenario, project: Path, cli: Cli, damage: Callable[[Scenario], str]) -> None:
    s = scenario
    bad_id = damage(s)
    before = store_files(s.store)
    with pytest.raises(RRStoreError) as info:
        s.system.gc(Retention(), now=s.now)
    assert bad_id in str(info.value)
    assert store_files(s.store) == before

    out = cli("gc", "--older-than", "0s", "--grace", "0s", cwd=project)
    assert store_files(s.store) == before
    assert "Traceback" not in out.stderr and out.stdout == ""
    [line] = out.stderr.splitlines()
    assert bad_id in line and "nothing was removed" in line
    assert out.returncode == 13, (out.returncode, out.stderr)


def block_of(store: Path, oid: str) -> tuple[Path, int, int]:
    [(pack, loc)] = [(idx.stem, decode_index(idx.stem, idx.read_bytes())[oid])
                     for idx in (store / "packs").glob("*.idx")
                     if oid in decode_index(idx.stem, idx.read_bytes())]
    return store / "packs" / f"{pack}.pack", loc[1], loc[2]


def flip_tree_block(store: Path, tree: str) -> None:
    """Damage the zstd frame header of the tree's block: the whole block no longer decodes.

    (A flipped byte in the middle of a 1 MiB block may only change another
    object's literal bytes, which a tree read cannot notice.)
    """
    pack, offset, _ = block_of(store, tree)
    data = bytearray(pack.read_bytes())
    data[offset] ^= 0xFF
    pack.write_bytes(bytes(data))


def drop_tree_pack(store: Path, tree: str) -> None:
    pack, _, _ = block_of(store, tree)
    pack.with_suffix(".idx").unlink()
    pack.unlink()


@pytest.mark.parametrize("damage", [flip_tree_block, drop_tree_pack])
def test_damaged_tree_of_a_kept_checkpoint_stops_gc_before_anything_is_removed(
        scenario: Scenario, project: Path, cli: Cli, damage: Callable[[Path, str], None]) -> None:
    s = scenario
    damage(s.store, s.b.state_hash)
    before = store_files(s.store)
    with pytest.raises((CorruptObject, ObjectMissing)) as info:
        s.system.gc(Retention(), now=s.now)
    assert s.b.checkpoint_id in str(info.value)
    assert store_files(s.store) == before

    out = cli("gc", "--older-than", "0s", "--grace", "0s", "--keep-last", "1", cwd=project)
    assert out.returncode == 13, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and out.stdout == ""
    [line] = out.stderr.splitlines()
    assert s.b.checkpoint_id in line
    assert store_files(s.store) == before


# --- durations ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text_in", "expected"), [
    ("7d", timedelta(days=7)), ("36h", timedelta(hours=36)), ("90m", timedelta(minutes=90)),
    ("0s", timedelta(0)), ("2w", timedelta(weeks=2)), ("15m", timedelta(minutes=15)),
    ("45s", timedelta(seconds=45)), ("1.5h", timedelta(minutes=90)),
])
def test_parse_duration_accepts(text_in: str, expected: timedelta) -> None:
    assert parse_duration(text_in) == expected


@pytest.mark.parametrize("junk", ["", "7", "d", "7x", "-1d", "7dd", "1e3s", "seven days", "7d3h", "1.2.3d",
                                  "99999999999w"])
def test_parse_duration_refuses_junk(junk: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_duration(junk)
    assert "duration" in str(info.value)


@pytest.mark.parametrize("args", [("--older-than", "7x"), ("--grace", "soon"), ("--keep-last", "-1"),
                                  ("--keep-lane", "nightly"), ("--older-than", "99999999999w")])
def test_cli_bad_values_are_usage_errors(project: Path, cli: Cli, args: tuple[str, str]) -> None:
    write_state(project, small_state(1))
    RollbackRecoverySystem(root=project).checkpoint("standard", 1, "one")
    store = project / ".checkpoints"
    before = store_files(store)
    out = cli("gc", *args, cwd=project)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert store_files(store) == before


# --- the CLI from cron ------------------------------------------------------------------------------------


def test_cron_gc_is_silent_when_nothing_to_remove_and_reports_removals(project: Path, cli: Cli) -> None:
    system = RollbackRecoverySystem(root=project)
    ids = []
    for step in range(3):
        write_state(project, State({"f.txt": f"{step}\n".encode(), "big.bin": rand(step, BIG)}))
        ids.append(system.checkpoint("standard", step, f"s{step}").checkpoint_id)
    store = store_of(system)

    for args in ((), ("--keep-last", "3"), ("--older-than", "0s", "--keep-lane", "standard")):
        out = cli("gc", *args, cwd=project, stdin="")
        assert (out.returncode, out.stdout, out.stderr) == (0, "", ""), args
    assert ref_ids(store) == set(ids)

    out = cli("gc", "--older-than", "0s", "--grace", "0s", "--keep-last", "1", cwd=project, stdin="")
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == sorted(["removed", ids[0], "removed", ids[1]])
    [summary] = out.stderr.splitlines()
    assert "removed 2 checkpoint(s)" in summary and "kept 1 checkpoint(s); freed " in summary
    assert "\x1b" not in out.stdout + out.stderr  # no colour, no progress when not on a terminal
    assert ref_ids(store) == {ids[2]}

    out = cli("gc", "--older-than", "0s", "--grace", "0s", "--keep-last", "1", cwd=project)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    out = cli("gc", "-q", "--older-than", "0s", "--grace", "0s", cwd=project)
    assert out.returncode == 0 and out.stdout.split() == ["removed", ids[2]] and out.stderr == ""
    assert ref_ids(store) == set()


def test_cli_json_shape_and_dry_run(project: Path, cli: Cli) -> None:
    system = RollbackRecoverySystem(root=project)
    ids = []
    for step in range(3):
        write_state(project, State({"f.txt": f"{step}\n".encode(), "big.bin": rand(step, BIG)}))
        ids.append(system.checkpoint("docs", step, f"s{step}").checkpoint_id)
    store = store_of(system)
    before = store_files(store)

    out = cli("gc", "--older-than", "0s", "--grace", "0s", "--keep-last", "1", "--dry-run", "--json", cwd=project)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    dry = json.loads(out.stdout)
    assert set(dry) >= JSON_KEYS
    assert dry["dry_run"] is True
    assert sorted(dry["removed"]) == sorted(ids[:2]) and dry["kept"] == [ids[2]]
    assert dry["records_removed"] == 2 and dry["objects_removed"] > 0 and dry["bytes_freed"] > 0
    assert store_files(store) == before

    out = cli("gc", "--older-than", "0s", "--grace", "0s", "--keep-last", "1", "--json", cwd=project)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    real = json.loads(out.stdout)
    assert set(real) == set(dry)
    assert real["dry_run"] is False
    for key in ("removed", "kept", "records_removed", "objects_removed"):
        assert real[key] == dry[key], key
    for key in ("records_removed", "objects_removed", "bytes_freed"):
        assert type(real[key]) is int and real[key] >= 0
    assert all(isinstance(i, str) for i in real["removed"] + real["kept"])
    assert ref_ids(store) == {ids[2]}

    out = cli("gc", "--older-than", "0s", "--grace", "0s", "--keep-last", "1", "--json", cwd=project)
    assert out.returncode == 0 and out.stderr == ""
    again = json.loads(out.stdout)
    assert (again["records_removed"], again["objects_removed"], again["bytes_freed"]) == (0, 0, 0)
    assert again["removed"] == [] and again["kept"] == [ids[2]]


# --- concurrency with real processes ----------------------------------------------------------------------


def cli_env() -> dict[str, str]:
    env = {**os.environ, **GIT_ENV}
    env.pop("RRSTORE_DIR", None)
    return env


def spawn(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "rrstore", *args], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def object_lock_held(store: Path) -> bool:
    """True when another process holds the store's object lock (probe without waiting)."""
    path = store / "locks" / "objects.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we got
    return False


def big_state() -> State:
    """Some hundred small files and ~100 MB of large ones: a checkpoint that takes about a second."""
    rng = random.Random(42)
    files = {f"d{d}/f{f:03}.txt": rng.randbytes(rng.randint(100, 4000)) for d in range(4) for f in range(150)}
    files.update({f"large/big{i:02}.bin": rng.randbytes(5 << 20) for i in range(20)})
    files["tool.sh"] = b"#!/bin/sh\necho tool\n"
    return State(files, execs=("tool.sh",), links=(("link", "d0/f000.txt"),), empty_dirs=("empty/dir",))


def add_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def test_checkpoint_running_while_gc_runs_stays_restorable(project: Path, manifest: Manifest) -> None:
    state = big_state()
    # an old checkpoint of part of the tree: its objects are what the new checkpoint reuses
    part = {k: v for k, v in state.files.items() if k.startswith(("d0/", "d1/", "large/big0"))}
    write_state(project, State({**part, "d0/f000.txt": b"old version\n"}))
    system = RollbackRecoverySystem(root=project)
    old = system.checkpoint("standard", 1, "old").record
    store = store_of(system)
    write_state_over = {k: v for k, v in state.files.items() if k not in part or k == "d0/f000.txt"}
    add_files(project, write_state_over)
    os.chmod(project / "tool.sh", 0o755)
    os.symlink("d0/f000.txt", project / "link")
    (project / "empty" / "dir").mkdir(parents=True)
    want = manifest(project)

    checkpoint = spawn(project, "checkpoint", "--lane", "heavy", "--step-number", "2", "--step-name", "big")
    deadline = time.monotonic() + 10
    seen_lock = False
    while checkpoint.poll() is None and time.monotonic() < deadline:
        if object_lock_held(store):
            seen_lock = True
            break
        time.sleep(0.01)
    gc_proc = spawn(project, "gc", "--older-than", "0s", "--grace", "0s", "--keep-lane", "heavy", "--json")
    ck_out, ck_err = checkpoint.communicate(timeout=60)
    gc_out, gc_err = gc_proc.communicate(timeout=60)
    assert checkpoint.returncode == 0, ck_err
    assert gc_proc.returncode == 0, gc_err
    new_id = ck_out.strip()
    report = json.loads(gc_out)
    assert report["removed"] == [old.checkpoint_id]
    if seen_lock:  # gc started while the checkpoint held the lock: it waited, then kept it
        assert report["kept"] == [new_id]
        assert report["objects_removed"] > 0

    assert ref_ids(store) == {new_id}
    reached = assert_consistent(store)
    assert set(fresh(store)) == reached[new_id]
    # scramble part of the tree, restore, compare everything
    for i in range(0, 20, 3):
        (project / "large" / f"big{i:02}.bin").unlink()
    for i in range(10):
        (project / "d1" / f"f{i:03}.txt").write_bytes(b"scrambled")
    (project / "link").unlink()
    os.chmod(project / "tool.sh", 0o644)
    (project / "empty" / "dir").rmdir()
    assert manifest(project) != want
    assert RollbackRecoverySystem(root=project).restore(new_id).failures == {}
    assert manifest(project) == want


def test_checkpoint_waits_for_a_running_gc_then_completes(project: Path, manifest: Manifest) -> None:
    write_state(project, small_state(1))
    system = RollbackRecoverySystem(root=project)
    system.checkpoint("standard", 1, "first")
    store = system.open_store()
    write_state(project, small_state(2))
    want = manifest(project)
    with store.collecting():  # what gc holds while it marks and sweeps
        proc = spawn(project, "checkpoint", "--lane", "standard", "--step-number", "2", "--step-name", "second")
        time.sleep(0.8)
        assert proc.poll() is None  # waiting for the lock, not failing
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    new_id = out.strip()
    assert new_id in ref_ids(store.path)
    assert_consistent(store.path)
    write_state(project, small_state(3))
    assert system.restore(new_id).failures == {}
    assert manifest(project) == want


def test_two_gcs_at_once_both_succeed_and_lose_nothing(project: Path, manifest: Manifest) -> None:
    system = RollbackRecoverySystem(root=project)
    ids = []
    for step in range(5):
        write_state(project, State({"f.txt": f"{step}\n".encode(), "big.bin": rand(step, BIG),
                                    "lib/same.py": text(3), f"n/{step}.txt": text(step)}))
        ids.append(system.checkpoint("standard", step, f"s{step}").checkpoint_id)
    want = manifest(project)
    store = store_of(system)

    procs = [spawn(project, "gc", "--older-than", "0s", "--grace", "0s", "--keep-last", "2", "--json")
             for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    reports = [json.loads(out) for out, _ in outs]
    removed = [i for r in reports for i in r["removed"]]
    assert sorted(removed) == sorted(ids[:3])  # each removed once, by one of them
    assert all(r["kept"] == [ids[4], ids[3]] for r in reports)
    assert sum(r["objects_removed"] for r in reports) > 0

    assert ref_ids(store) == {ids[3], ids[4]}
    reached = assert_consistent(store)
    assert set(fresh(store)) == reached[ids[3]] | reached[ids[4]]
    write_state(project, State({"other": b"x"}))
    assert system.restore(ids[4]).failures == {}
    assert manifest(project) == want


def test_a_pack_rewritten_into_the_same_bytes_is_not_deleted(tmp_path: Path) -> None:
    """Rewriting a pack that lost nothing can give the identical pack (same name): it must survive."""
    from rrstore.backends import LocalBackend
    from rrstore.store.objects import ObjectStore

    root = tmp_path / "store"
    objects = ObjectStore(LocalBackend(root))
    payload = {objects.put(f"object {i}\n".encode() * 10).oid for i in range(20)}
    objects.flush()
    pack = next((root / "packs").glob("*.pack"))
    objects._retire.append(pack.stem)  # what a sweep does with a pack it rewrites
    writer = objects._pack_writer()
    for oid in sorted(payload, key=objects.locality):
        writer.add(oid, objects.get(oid))
    result = objects.sweep(payload, before=0.0)  # nothing is old enough to sweep on its own
    assert result.objects_removed == 0
    fresh_store = ObjectStore(LocalBackend(root))
    for oid in payload:
        assert fresh_store.get(oid)


def test_a_future_dated_record_ages_from_when_the_store_got_it(project: Path, tmp_path: Path) -> None:
    """A record dated 9999-12-31 (from an archive) must not be 'young' forever: retention counts from its
    add time, so it goes once that is older than --older-than like any other checkpoint."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "f.txt").write_text("from the future\n")
    other = RollbackRecoverySystem(root=source)
    record = other.checkpoint("standard", 5, "time traveller").record
    record.timestamp = "9999-12-31T23:59:59.000000+00:00"
    record.project = project_identity(project)  # one project's, so keep-last counts the two together
    with other.open_store().writing():
        other.checkpoint_manager.update(record)
    other.export([record.checkpoint_id], tmp_path / "future.rra")
    (project / "f.txt").write_text("local\n")
    system = RollbackRecoverySystem(root=project)
    system.import_archive(tmp_path / "future.rra")
    local = system.checkpoint("standard", 1, "local").checkpoint_id

    result = system.gc(Retention(older_than=7 * DAY, keep_last=1), now=datetime.now() + 8 * DAY)

    assert result.removed == [record.checkpoint_id] and result.kept == [local]
