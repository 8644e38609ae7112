"""gc's sweep of loose objects and packs: consolidation, rewrites seen by other processes, and damage that
stops gc before it removes anything.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from gc_helpers import (
    DAY,
    Cli,
    Manifest,
    Scenario,
    State,
    assert_consistent,
    between,
    build,
    fresh,
    pack_ids,
    packed_oids,
    reach,
    restore_matches,
    small_state,
    store_files,
    store_of,
    stored_bytes,
    text,
    write_state,
)

from rrstore import RollbackRecoverySystem
from rrstore.backends import LocalBackend
from rrstore.errors import CorruptObject, ObjectMissing, RRStoreError
from rrstore.gc import Retention
from rrstore.store.objects import MAX_SMALL_PACKS, ObjectStore, object_key
from rrstore.store.pack import decode_index


@pytest.fixture
def scenario(project: Path, manifest: Manifest) -> Scenario:
    """Checkpoints a (old), c (old, nothing shared) and b (young, shares with a): see ``gc_helpers.build``."""
    return build(project, manifest)


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


def test_a_pack_rewritten_into_the_same_bytes_is_not_deleted(tmp_path: Path) -> None:
    """Rewriting a pack that lost nothing can give the identical pack (same name): it must survive."""

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
