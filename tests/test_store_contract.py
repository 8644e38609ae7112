"""The object database's contract: ObjectStore, Refs and Pins behave alike over every backend.

Written once and run over the local directory, the in-memory backend and S3
on the session's real SeaweedFS server (like dulwich's ``ObjectStoreTests``
mixin, run over its memory and disk stores). Each store is made with
``Store.over(backend, settings)``, the one way a database is built over a
backend; ``reopen`` gives what a second process would see (a fresh backend
object over the same keys, so no cache of the first is shared). The
backend contract itself is ``tests/test_backend.py`` (its ``BACKENDS`` include
memory).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from rrstore.backends import Backend, LocalBackend
from rrstore.backends.memory import MemoryBackend
from rrstore.backends.s3 import S3Backend
from rrstore.config import Settings
from rrstore.errors import CorruptObject, ObjectMissing, UsageError
from rrstore.store.objects import LOOSE_MIN, ObjectStore, hash_bytes, object_key
from rrstore.store.pack import PREFIX as PACKS
from rrstore.store.refs import PREFIX as REFS
from rrstore.store.refs import Ref
from rrstore.store.store import Store

SMALL = [f"small object {i}\n".encode() * (i + 1) for i in range(40)]


@dataclass
class Place:
    """A fresh, empty backend, how to see it again as another process would, and a local folder for locks."""

    backend: Backend
    reopen: Callable[[], Backend]
    locks: Path

    def store(self, backend: Backend | None = None) -> Store:
        return Store.over(backend or self.backend, Settings(), self.locks)

    def again(self) -> Store:
        """The same database opened afresh: nothing cached from earlier stores."""
        return self.store(self.reopen())


def _local(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    root = tmp_path / "store"
    return Place(LocalBackend(root), lambda: LocalBackend(root), root)


def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    backend = MemoryBackend()
    return Place(backend, lambda: backend, tmp_path / "locks")


def _s3(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    server = request.getfixturevalue("seaweedfs")
    request.getfixturevalue("s3_env")
    bucket, prefix = server.new_prefix()
    return Place(S3Backend(bucket, prefix, endpoint_url=server.endpoint),
                 lambda: S3Backend(bucket, prefix, endpoint_url=server.endpoint), tmp_path / "locks")


PLACES: dict[str, Callable[[pytest.FixtureRequest, Path], Place]] = {
    "local": _local, "memory": _memory, "s3": _s3}


@pytest.fixture(params=sorted(PLACES))
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    made = PLACES[request.param](request, tmp_path)
    made.locks.mkdir()  # as Store.open makes a local store's folder
    return made


@pytest.fixture
def objects(place: Place) -> ObjectStore:
    return place.store().objects


def _packs(backend: Backend) -> list[str]:
    return sorted(key for key in backend.list(PACKS))


class TestObjectStoreContract:
    """put/get/has/iter/delete of bytes by BLAKE3, loose and packed, whatever the backend."""

    def test_a_small_object_is_readable_while_queued_and_after_the_flush(self, place: Place,
                                                                        objects: ObjectStore) -> None:
        put = objects.put(b"hello\n")
        assert put.oid == hash_bytes(b"hello\n") and put.new is True
        assert objects.get(put.oid) == b"hello\n" and objects.has(put.oid)
        assert objects.missing([put.oid]) == [put.oid]  # queued is not yet written: no ref may reach it
        assert _packs(place.backend) == []
        objects.flush()
        assert objects.missing([put.oid]) == []
        assert place.again().objects.get(put.oid) == b"hello\n"

    def test_the_same_bytes_are_stored_once(self, place: Place, objects: ObjectStore) -> None:
        assert objects.put(b"twice").new is True
        assert objects.put(b"twice").new is False  # queued
        objects.flush()
        assert objects.put(b"twice").new is False  # packed
        again = place.again().objects
        assert again.put(b"twice").new is False  # seen through the index another process wrote
        again.flush()
        assert len(_packs(place.backend)) == 2  # one pack and its index

    def test_one_flush_writes_one_pack_and_its_index(self, place: Place, objects: ObjectStore) -> None:
        oids = [objects.put(data).oid for data in SMALL]
        objects.flush()
        listing = _packs(place.backend)
        assert [key.rsplit(".", 1)[1] for key in listing] == ["idx", "pack"]
        assert listing[0][:-4] == listing[1][:-5]
        again = place.again().objects
        assert [again.get(oid) for oid in oids] == SMALL
        assert all(again.has(oid) for oid in oids)

    def test_a_loose_object_is_one_zstd_frame_under_objects(self, place: Place, objects: ObjectStore) -> None:
        record = b'{"a record": true}'
        put = objects.put(record, loose=True)
        frame = place.backend.read(object_key(put.oid))
        assert zstandard.ZstdDecompressor().decompress(frame) == record
        assert _packs(place.backend) == []
        assert place.again().objects.get(put.oid) == record

    def test_an_object_of_loose_size_is_never_packed(self, place: Place, objects: ObjectStore) -> None:
        big = b"0123456789abcdef" * (LOOSE_MIN // 16 + 1)
        put = objects.put(big)
        assert place.backend.exists(object_key(put.oid))
        objects.flush()
        assert _packs(place.backend) == []
        assert place.again().objects.get(put.oid) == big

    def test_iter_lists_every_object_loose_and_packed_and_nothing_else(self, place: Place,
                                                                       objects: ObjectStore) -> None:
        packed = {objects.put(data).oid for data in SMALL[:5]}
        objects.flush()
        loose = {objects.put(b"record %d" % i, loose=True).oid for i in range(3)}
        place.backend.write("objects/zz/not-an-object", b"stray")
        place.backend.write("refs/checkpoints/x", f"{sorted(loose)[0]}\n1\n".encode())
        assert sorted(place.again().objects) == sorted(packed | loose)

    def test_a_missing_object_is_objectmissing_naming_its_oid(self, objects: ObjectStore) -> None:
        objects.put(b"something else", loose=True)
        oid = hash_bytes(b"never stored")
        assert not objects.has(oid)
        with pytest.raises(ObjectMissing) as caught:
            objects.get(oid)
        assert caught.value.oid == oid and oid in str(caught.value)

    def test_delete_removes_a_loose_object_only(self, place: Place, objects: ObjectStore) -> None:
        gone = objects.put(b"to delete", loose=True).oid
        kept = objects.put(b"to keep", loose=True).oid
        objects.delete(gone)
        again = place.again().objects
        assert not again.has(gone) and again.get(kept) == b"to keep"
        with pytest.raises(ObjectMissing):
            again.get(gone)
        with pytest.raises(KeyError):
            again.delete(gone)

    def test_a_reader_sees_a_pack_another_process_wrote_after_it_loaded_its_indexes(self, place: Place) -> None:
        reader = place.store().objects
        first = reader.put(b"first", loose=True).oid
        assert list(reader) == [first]  # indexes loaded: no pack yet
        writer = place.again().objects
        later = writer.put(b"written by another process").oid
        writer.flush()
        assert reader.has(later)
        assert reader.get(later) == b"written by another process"
        reader.reload()
        assert sorted(reader) == sorted([first, later])

    def test_sweep_removes_dead_objects_and_rewrites_packs_around_live_ones(self, place: Place,
                                                                           objects: ObjectStore) -> None:
        live = {objects.put(data).oid for data in SMALL[:3]}
        dead = {objects.put(data).oid for data in SMALL[3:6]}
        dead.add(objects.put(b"dead record", loose=True).oid)
        live.add(objects.put(b"live record", loose=True).oid)
        objects.flush()
        result = place.again().objects.sweep(live, time.time() + 60)
        assert result.objects_removed == len(dead) and result.packs_rewritten == 1
        after = place.again().objects
        assert set(after) == live
        assert all(after.get(oid) for oid in live)
        assert len(_packs(place.backend)) == 2


class TestDamageContract:
    """Every read is verified: damage is CorruptObject naming the oid, and touches no other object."""

    def test_a_loose_object_holding_other_bytes_is_corrupt(self, place: Place, objects: ObjectStore) -> None:
        oid = objects.put(b"the real content", loose=True).oid
        neighbour = objects.put(b"a neighbour", loose=True).oid
        place.backend.write(object_key(oid), zstandard.ZstdCompressor(write_content_size=True).compress(b"forged"))
        again = place.again().objects
        with pytest.raises(CorruptObject) as caught:
            again.get(oid)
        assert caught.value.oid == oid and caught.value.actual == hash_bytes(b"forged")
        assert again.get(neighbour) == b"a neighbour"

    def test_a_loose_object_that_is_no_zstd_frame_is_corrupt(self, place: Place, objects: ObjectStore) -> None:
        oid = objects.put(b"the real content", loose=True).oid
        place.backend.write(object_key(oid), b"the real content")
        with pytest.raises(CorruptObject, match=oid):
            place.again().objects.get(oid)

    def test_a_damaged_pack_block_is_corrupt(self, place: Place, objects: ObjectStore) -> None:
        oids = [objects.put(data).oid for data in SMALL]
        objects.flush()
        pack = next(key for key in _packs(place.backend) if key.endswith(".pack"))
        data = bytearray(place.backend.read(pack))
        data[-64:-8] = bytes(56)  # the block's compressed objects (its table of oids comes first)
        place.backend.write(pack, bytes(data))
        again = place.again().objects
        for oid in oids:
            with pytest.raises(CorruptObject, match=oid):
                again.get(oid)

    def test_a_damaged_pack_index_costs_speed_never_the_object(self, place: Place, objects: ObjectStore) -> None:
        oids = [objects.put(data).oid for data in SMALL]
        objects.flush()
        index = next(key for key in _packs(place.backend) if key.endswith(".idx"))
        place.backend.write(index, b"RRPI1\nnot an index")
        again = place.again().objects
        assert [again.get(oid) for oid in oids] == SMALL
        assert list(again.damaged_indexes()) == [index[len(PACKS):-4]]


class TestRefsContract:
    """Names of checkpoint records: exclusive create, update in place, read, delete, iteration, pins."""

    OID = hash_bytes(b"a record")
    OTHER = hash_bytes(b"another record")

    def test_create_is_exclusive_and_records_the_add_time(self, place: Place) -> None:
        refs = place.store().refs
        assert refs.create("docs-step1-x", self.OID, added_ns=1234) is True
        assert refs.create("docs-step1-x", self.OTHER) is False
        assert place.again().refs.read("docs-step1-x") == Ref(self.OID, 1234)
        assert place.backend.read(REFS + "docs-step1-x") == f"{self.OID}\n1234\n".encode()

    def test_create_without_a_time_stamps_now(self, place: Place) -> None:
        refs = place.store().refs
        before = time.time_ns()
        refs.create("docs-step1-x", self.OID)
        ref = place.again().refs.read("docs-step1-x")
        assert ref is not None and ref.added_ns is not None and before <= ref.added_ns <= time.time_ns()

    def test_update_points_at_another_record_and_keeps_the_place_in_the_order(self, place: Place) -> None:
        refs = place.store().refs
        refs.create("docs-step1-x", self.OID, added_ns=42)
        refs.update("docs-step1-x", self.OTHER)
        assert place.again().refs.read("docs-step1-x") == Ref(self.OTHER, 42)
        assert place.again().refs.get("docs-step1-x") == self.OTHER

    def test_read_of_an_unknown_id_is_none(self, place: Place) -> None:
        refs = place.store().refs
        assert refs.read("never-made") is None and refs.get("never-made") is None
        assert refs.mtime_ns("never-made") is None

    def test_a_one_line_ref_of_format_1_reads_without_an_add_time(self, place: Place) -> None:
        place.backend.write(REFS + "old-step1-x", f"{self.OID}\n".encode())
        refs = place.store().refs
        assert refs.read("old-step1-x") == Ref(self.OID, None)
        mtime = refs.mtime_ns("old-step1-x")
        assert mtime is not None and abs(mtime - time.time_ns()) < 3600 * 10**9
        refs.update("old-step1-x", self.OTHER)  # gets its file time as its add time, keeps its place
        updated = place.again().refs.read("old-step1-x")
        assert updated is not None and updated.oid == self.OTHER and updated.added_ns is not None

    def test_a_ref_naming_no_object_is_corrupt(self, place: Place) -> None:
        place.backend.write(REFS + "bad-step1-x", b"not an oid\n1\n")
        with pytest.raises(CorruptObject) as caught:
            place.store().refs.read("bad-step1-x")
        assert caught.value.checkpoints == ["bad-step1-x"]

    def test_delete_and_iteration_in_name_order(self, place: Place) -> None:
        refs = place.store().refs
        for name in ("b-step1", "a-step2", "c-step3"):
            refs.create(name, self.OID)
        place.backend.write(REFS + ".not-a-name", b"ignored")
        refs.delete("a-step2")
        assert list(place.again().refs) == ["b-step1", "c-step3"]
        with pytest.raises(KeyError):
            refs.delete("a-step2")

    def test_an_invalid_id_is_refused_before_any_request(self, place: Place) -> None:
        refs = place.store().refs
        for bad in ("../escape", "", "-dash-first", "a/b", "trailing-newline\n"):
            with pytest.raises(UsageError):
                refs.create(bad, self.OID)
        assert list(place.backend.list("")) == []

    def test_pins(self, place: Place) -> None:
        pins = place.store().pins
        assert pins.add("docs-step1-x") is True
        assert pins.add("docs-step1-x") is False
        assert pins.add("docs-step2-y") is True
        assert list(place.again().pins) == ["docs-step1-x", "docs-step2-y"]
        assert pins.remove("docs-step1-x") is True
        assert pins.remove("docs-step1-x") is False
        assert list(place.again().pins) == ["docs-step2-y"]


class TestStoreOver:
    """``Store.over``: the settings reach the layers, and the locks live in the local folder given."""

    def test_settings_reach_objects_and_refs(self, place: Place) -> None:
        store = Store.over(place.backend, Settings(compression_level=9, fsync="never"), place.locks)
        assert store.objects.level == 9 and store.objects.sync_packs is False and store.refs.durable is False
        assert store.backend is place.backend and store.path == place.locks

    def test_writing_holds_the_lock_in_the_local_folder(self, place: Place) -> None:
        store = place.store()
        with store.writing():
            oid = store.objects.put(b"under the lock").oid
            store.barrier()
        assert (place.locks / "locks").is_dir()
        assert place.again().objects.get(oid) == b"under the lock"

    def test_a_non_local_backend_needs_a_folder_for_its_locks(self) -> None:
        with pytest.raises(TypeError):
            Store.over(MemoryBackend(), Settings())
        assert Store.over(LocalBackend(Path("/nonexistent/store")), Settings()).path == Path("/nonexistent/store")


def test_memory_lists_in_the_local_backends_order_and_versions_alike(tmp_path: Path) -> None:
    """The memory backend is a stand-in for the local one: same order, same folder semantics."""
    keys = ["b", "a/z", "a/b/c", "a/a", "a/b/a", "aa/x", "a.b/y", "config.json", "packs/1.idx", "packs/1.pack"]
    local, memory = LocalBackend(tmp_path / "store"), MemoryBackend()
    for key in keys:
        local.write(key, key.encode())
        memory.write(key, key.encode())
    for prefix in ("", "a/", "a", "a/b/", "packs/", "nothing/", "b"):
        assert list(memory.list(prefix)) == list(local.list(prefix)), prefix
    for backend in (local, memory):
        assert backend.version("nothing/") is None
        before = backend.version("packs/")
        assert before is not None
        backend.delete("packs/1.idx")
        emptied = backend.version("packs/")
        assert emptied is not None and emptied != before
        backend.delete("packs/1.pack")
        assert backend.version("packs/") is not None  # a folder, once made, stays
        with pytest.raises(ValueError):
            list(backend.list("../"))
