"""The object store: bytes keyed by the BLAKE3 of their content, stored as zstd frames, verified on read.

Objects under ``LOOSE_MIN`` go into pack files (see test_pack.py); the tests
here that look at loose files on disk use large objects or ``loose=True``.
"""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import blake3
import pytest
import zstandard

from rrstore.backends import LocalBackend
from rrstore.errors import CorruptObject, ObjectMissing
from rrstore.store.objects import LOOSE_MIN, ObjectStore, hash_bytes, is_oid, object_key

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# Official BLAKE3 test vectors (input: bytes i % 251), i.e. what `b3sum` prints.
KNOWN = {
    b"": "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    b"abc": "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
    bytes(i % 251 for i in range(1024)): "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7",
}


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def objects(store_dir: Path) -> ObjectStore:
    return ObjectStore(LocalBackend(store_dir))


def object_file(store_dir: Path, oid: str) -> Path:
    return store_dir / "objects" / oid[:2] / oid[2:]


def sample(size: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed) % 256 for i in range(size))


@pytest.mark.parametrize("data", list(KNOWN), ids=["empty", "abc", "1024-vector"])
def test_oid_is_the_b3sum_of_the_content(objects: ObjectStore, data: bytes) -> None:
    result = objects.put(data)
    assert result.oid == KNOWN[data]
    assert result.oid == blake3.blake3(data).hexdigest()
    assert hash_bytes(data) == KNOWN[data]


def test_oid_of_large_content_matches_single_threaded_blake3(objects: ObjectStore) -> None:
    data = os.urandom(5 << 20)
    expected = blake3.blake3(data).hexdigest()
    assert hash_bytes(data) == expected
    assert objects.put(data).oid == expected
    assert objects.get(expected) == data


def test_oid_is_lowercase_hex_of_64_chars(objects: ObjectStore) -> None:
    oid = objects.put(b"hello").oid
    assert len(oid) == 64
    assert oid == oid.lower()
    assert is_oid(oid)
    assert not is_oid(oid.upper())
    assert not is_oid(oid[:-1])


def test_put_get_round_trip(objects: ObjectStore) -> None:
    payloads = [b"", b"x", sample(100_000), os.urandom(70_000), b"\0" * 1_000_000]
    oids = [objects.put(p).oid for p in payloads]
    for oid, payload in zip(oids, payloads, strict=True):
        assert objects.get(oid) == payload
    objects.flush()
    reopened = ObjectStore(objects.backend)
    for oid, payload in zip(oids, payloads, strict=True):
        assert reopened.get(oid) == payload


@pytest.mark.parametrize("large", [False, True], ids=["loose=True", "large"])
def test_stored_object_is_one_zstd_frame_under_objects_ab(objects: ObjectStore, store_dir: Path,
                                                          large: bool) -> None:
    """A loose object (``loose=True``, or ``LOOSE_MIN`` bytes and more) is one zstd frame at objects/ab/cdef..."""
    data = b"checkpoint me " * (LOOSE_MIN // 14 + 1 if large else 1000)
    assert (len(data) >= LOOSE_MIN) is large
    result = objects.put(data, loose=not large)
    oid = result.oid
    path = object_file(store_dir, oid)
    assert object_key(oid) == f"objects/{oid[:2]}/{oid[2:]}"
    assert path.is_file()
    frame = path.read_bytes()
    assert frame.startswith(ZSTD_MAGIC)
    assert len(frame) == objects.stored_bytes
    assert len(frame) < len(data)
    assert zstandard.ZstdDecompressor().decompress(frame) == data
    assert os.listdir(store_dir / "tmp") == []
    assert not (store_dir / "packs").exists()  # nothing went into (or waits for) a pack
    objects.flush()
    assert not (store_dir / "packs").exists()


def test_putting_the_same_bytes_twice_stores_once(objects: ObjectStore, store_dir: Path) -> None:
    first = objects.put(b"same bytes")
    second = objects.put(b"same bytes")
    assert first.new is True
    assert second.new is False
    assert second.oid == first.oid
    objects.flush()
    assert objects.stored_bytes > 0
    assert objects.put(b"same bytes").new is False
    assert list(objects) == [first.oid]
    assert list(ObjectStore(LocalBackend(store_dir))) == [first.oid]
    assert not (store_dir / "objects").exists() or not any((store_dir / "objects").rglob("*"))
    # one pack holding it; the same bytes loose are stored once as well
    assert len(list((store_dir / "packs").glob("*.pack"))) == 1
    big = b"same large bytes " * (LOOSE_MIN // 17 + 1)
    assert objects.put(big).new is True
    assert objects.put(big).new is False
    assert ObjectStore(LocalBackend(store_dir)).put(big).new is False
    big_oid = hash_bytes(big)
    assert [p.name for p in (store_dir / "objects").rglob("*") if p.is_file()] == [big_oid[2:]]


def test_has(objects: ObjectStore) -> None:
    oid = hash_bytes(b"not yet")
    assert objects.has(oid) is False
    objects.put(b"not yet")
    assert objects.has(oid) is True


def test_iter_lists_every_object_and_nothing_else(objects: ObjectStore, store_dir: Path) -> None:
    oids = {objects.put(sample(50, seed)).oid for seed in range(12)}
    oids |= {objects.put(sample(60, seed), loose=True).oid for seed in range(3)}
    oids.add(objects.put(sample(LOOSE_MIN, 7)).oid)
    objects.flush()
    (store_dir / "objects" / "README").write_text("not an object")
    (store_dir / "objects" / "ab").mkdir(exist_ok=True)
    (store_dir / "objects" / "ab" / "short").write_text("not an object")
    (store_dir / "packs" / "README").write_text("not a pack")
    (store_dir / "tmp" / "leftover.tmp").write_text("in-flight")
    for store in (objects, ObjectStore(LocalBackend(store_dir))):
        assert set(store) == oids
        assert len(list(store)) == len(oids)


def test_delete(objects: ObjectStore, store_dir: Path) -> None:
    """delete removes loose objects (packed ones leave only when their pack is rewritten)."""
    keep = objects.put(b"keep", loose=True).oid
    gone = objects.put(b"gone", loose=True).oid
    objects.delete(gone)
    assert objects.has(gone) is False
    assert not object_file(store_dir, gone).exists()
    assert set(objects) == {keep}
    assert objects.get(keep) == b"keep"
    with pytest.raises(ObjectMissing):
        objects.get(gone)
    assert objects.put(b"gone", loose=True).new is True
    assert objects.get(gone) == b"gone"
    assert object_file(store_dir, gone).is_file()


def test_missing_object_raises_objectmissing_naming_the_oid(objects: ObjectStore) -> None:
    oid = hash_bytes(b"never stored")
    with pytest.raises(ObjectMissing) as info:
        objects.get(oid)
    assert info.value.oid == oid
    assert oid in str(info.value)


@pytest.mark.parametrize("size", [200_000, LOOSE_MIN + 1000], ids=["packed", "loose"])
def test_compression_level_does_not_change_the_oid(store_dir: Path, tmp_path: Path, size: int) -> None:
    data = sample(size - 1000) + os.urandom(1000)
    fast = ObjectStore(LocalBackend(store_dir), level=1)
    small = ObjectStore(LocalBackend(tmp_path / "other"), level=19)
    negative = ObjectStore(LocalBackend(tmp_path / "third"), level=-5)
    oids = {fast.put(data).oid, small.put(data).oid, negative.put(data).oid}
    assert oids == {blake3.blake3(data).hexdigest()}
    oid = oids.pop()
    assert small.get(oid) == fast.get(oid) == negative.get(oid) == data
    for store in (fast, small, negative):
        store.flush()
    # Dedup holds across settings: a store with another level finds the object present.
    assert ObjectStore(LocalBackend(store_dir), level=19).put(data).new is False
    assert ObjectStore(LocalBackend(store_dir), level=19).get(oid) == data


class TestCorruption:
    """A damaged loose object file is reported as CorruptObject naming the oid, never returned.

    (Damage inside pack files: see test_pack.py.)
    """

    DATA = random.Random(1).randbytes(300) + b"hello world " * 50

    @pytest.fixture
    def stored(self, objects: ObjectStore, store_dir: Path) -> tuple[str, Path, bytes]:
        oid = objects.put(self.DATA, loose=True).oid
        path = object_file(store_dir, oid)
        return oid, path, path.read_bytes()

    @staticmethod
    def assert_corrupt(objects: ObjectStore, oid: str) -> CorruptObject:
        with pytest.raises(CorruptObject) as info:
            objects.get(oid)
        assert info.value.oid == oid
        assert oid in str(info.value)
        return info.value

    def test_flipped_byte_in_the_middle_of_the_frame(self, objects: ObjectStore,
                                                     stored: tuple[str, Path, bytes]) -> None:
        oid, path, frame = stored
        damaged = bytearray(frame)
        damaged[len(frame) // 2] ^= 0x01
        path.write_bytes(bytes(damaged))
        self.assert_corrupt(objects, oid)

    @pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
    def test_every_single_byte_flip_is_refused_or_harmless(self, objects: ObjectStore,
                                                stored: tuple[str, Path, bytes], mask: int) -> None:
        oid, path, frame = stored
        original = objects.get(oid)
        escaped = {}
        for index in range(len(frame)):
            damaged = bytearray(frame)
            damaged[index] ^= mask
            path.write_bytes(bytes(damaged))
            try:
                # A flip zstd ignores (older zstd releases skip some header bits) may decode to the
                # very bytes; anything else returned would be a wrong byte.
                if objects.get(oid) != original:
                    escaped[index] = "returned wrong data"
            except CorruptObject as exc:
                assert exc.oid == oid
            except Exception as exc:  # any other exception is a bug: the caller cannot branch on it
                escaped[index] = repr(exc)
        assert escaped == {}

    def test_frame_header_claiming_a_huge_size(self, objects: ObjectStore,
                                               stored: tuple[str, Path, bytes]) -> None:
        """A header declaring 1 TiB of content must be rejected, not trusted (a decompression bomb)."""
        oid, path, _ = stored
        descriptor = 0xE0  # single segment, 8-byte frame content size
        last_raw_block = (1 | (0 << 1) | (1 << 3)).to_bytes(3, "little")  # last, raw, 1 byte
        path.write_bytes(ZSTD_MAGIC + bytes([descriptor]) + struct.pack("<Q", 1 << 40) + last_raw_block + b"x")
        self.assert_corrupt(objects, oid)

    def test_valid_frame_of_other_bytes(self, objects: ObjectStore, stored: tuple[str, Path, bytes]) -> None:
        oid, path, _ = stored
        other = b"somebody else's content"
        path.write_bytes(zstandard.ZstdCompressor().compress(other))
        error = self.assert_corrupt(objects, oid)
        assert error.actual == blake3.blake3(other).hexdigest()
        assert error.actual in str(error)

    @pytest.mark.parametrize("keep", [0, 3, 10, -1])
    def test_truncated_frame(self, objects: ObjectStore, stored: tuple[str, Path, bytes], keep: int) -> None:
        oid, path, frame = stored
        path.write_bytes(frame[:keep])
        self.assert_corrupt(objects, oid)

    def test_plain_uncompressed_content(self, objects: ObjectStore, stored: tuple[str, Path, bytes]) -> None:
        oid, path, _ = stored
        path.write_bytes(self.DATA)
        self.assert_corrupt(objects, oid)

    def test_corruption_of_one_object_does_not_affect_others(self, objects: ObjectStore,
                                                             stored: tuple[str, Path, bytes]) -> None:
        oid, path, frame = stored
        other = objects.put(b"healthy", loose=True).oid
        packed = objects.put(b"healthy, packed").oid
        objects.flush()
        path.write_bytes(frame[:-4] + b"oops")
        self.assert_corrupt(objects, oid)
        assert objects.get(other) == b"healthy"
        assert objects.get(packed) == b"healthy, packed"


class TestLooseListing:
    """``list_loose``: a bulk reader finds packed objects without a loose probe, and a loose copy still wins,
    even one another process (here: another ObjectStore on the same directory) writes after the listing."""

    DATA = random.Random(7).randbytes(200_000)  # random: stored verbatim in its pack block

    def packed_then_damaged(self, store_dir: Path) -> str:
        writer = ObjectStore(LocalBackend(store_dir))
        oid = writer.put(self.DATA).oid
        writer.flush()
        [pack] = (store_dir / "packs").glob("*.pack")
        body = bytearray(pack.read_bytes())
        at = body.find(self.DATA[1000:1064])
        assert at > 0
        body[at + 10] ^= 0xFF
        os.chmod(pack, 0o644)
        pack.write_bytes(bytes(body))
        return oid

    def test_a_packed_object_is_read_with_no_loose_probe(self, store_dir: Path, monkeypatch) -> None:
        writer = ObjectStore(LocalBackend(store_dir))
        oids = [writer.put(sample(5000, seed)).oid for seed in range(50)]
        writer.flush()
        reader = ObjectStore(LocalBackend(store_dir))
        reader.list_loose()
        probed: list[str] = []
        real_read = LocalBackend.read

        def read(self: LocalBackend, key: str) -> bytes:
            probed.append(key)
            return real_read(self, key)

        monkeypatch.setattr(LocalBackend, "read", read)
        assert [reader.get(oid) for oid in oids] == [sample(5000, seed) for seed in range(50)]
        assert not [key for key in probed if key.startswith("objects/")]

    def test_a_good_loose_copy_put_after_the_listing_wins_over_a_damaged_packed_one(self, store_dir: Path) -> None:
        oid = self.packed_then_damaged(store_dir)
        reader = ObjectStore(LocalBackend(store_dir))
        reader.list_loose()
        with pytest.raises(CorruptObject):
            reader.get(oid)
        reader.put_loose_copy(self.DATA, oid)
        assert reader.get(oid) == self.DATA
        assert object_file(store_dir, oid).is_file()

    def test_a_loose_copy_another_process_writes_after_the_listing_is_read(self, store_dir: Path) -> None:
        oid = self.packed_then_damaged(store_dir)
        reader = ObjectStore(LocalBackend(store_dir))
        reader.list_loose()
        ObjectStore(LocalBackend(store_dir)).put_loose_copy(self.DATA, oid)  # the other process's undo proof
        assert reader.get(oid) == self.DATA  # the damaged packed copy read wrong: the disk is asked again
        record = ObjectStore(LocalBackend(store_dir)).put(b"a record written meanwhile", loose=True).oid
        assert reader.get(record) == b"a record written meanwhile"  # in no pack: the disk is asked before failing
        with pytest.raises(ObjectMissing):
            reader.get(hash_bytes(b"never stored"))

    def test_a_loose_copy_in_the_listing_is_read_before_the_pack(self, store_dir: Path) -> None:
        oid = self.packed_then_damaged(store_dir)
        ObjectStore(LocalBackend(store_dir)).put_loose_copy(self.DATA, oid)
        reader = ObjectStore(LocalBackend(store_dir))
        reader.list_loose()
        assert reader.get(oid) == self.DATA
        object_file(store_dir, oid).unlink()  # gc elsewhere removed it: the (damaged) pack is all that is left
        with pytest.raises(CorruptObject):
            reader.get(oid)
