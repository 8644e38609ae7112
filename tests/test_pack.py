"""Pack files: small objects stored together in zstd blocks, found through a checksummed index.

Everything goes through real files in a real directory (``LocalBackend``), real zstd and real
subprocesses. The only knob turned is ``rrstore.store.pack.PACK_SIZE`` (configuration), to get several
packs out of a few MiB instead of 64.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import blake3
import pytest
import zstandard

from rrstore import RollbackRecoverySystem
from rrstore.backends import LocalBackend
from rrstore.errors import CorruptObject, ObjectMissing
from rrstore.store import pack as pack_module
from rrstore.store.objects import LOOSE_MIN, ObjectStore, hash_bytes
from rrstore.store.pack import BLOCK_SIZE, INDEX_MAGIC, PACK_MAGIC, Location, decode_index, encode_index
from rrstore.tree import FILE, content_oids, flatten

# Small enough to get several packs from a few MiB, large enough for any block the reader accepts
# (a block holds up to BLOCK_SIZE plus one object below LOOSE_MIN).
SMALL_PACK_SIZE = 1 << 20


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def fresh(store_dir: Path) -> ObjectStore:
    """A new reader on the directory, as another process would open it."""
    return ObjectStore(LocalBackend(store_dir))


def pack_files(store_dir: Path) -> list[Path]:
    return sorted((store_dir / "packs").glob("*.pack")) if (store_dir / "packs").is_dir() else []


def index_files(store_dir: Path) -> list[Path]:
    return sorted((store_dir / "packs").glob("*.idx")) if (store_dir / "packs").is_dir() else []


def loose_files(store_dir: Path) -> list[Path]:
    folder = store_dir / "objects"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def all_entries(store_dir: Path) -> dict[str, list[Location]]:
    """oid -> every location the on-disk indexes give for it."""
    out: dict[str, list[Location]] = {}
    for idx in index_files(store_dir):
        for oid, loc in decode_index(idx.stem, idx.read_bytes()).items():
            out.setdefault(oid, []).append(loc)
    return out


def random_objects(count: int, low: int, high: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(low, high)) for _ in range(count)]


def text_objects(count: int, seed: int = 0) -> list[bytes]:
    """Similar small source files: what a project tree is mostly made of."""
    rng = random.Random(seed)
    words = ["value", "result", "items", "config", "path", "name", "count", "index", "total", "data"]
    out = []
    for i in range(count):
        lines = [f'"""Module {i}: helpers for {rng.choice(words)} handling."""', "", "import os", ""]
        for j in range(rng.randint(3, 8)):
            a, b = rng.choice(words), rng.choice(words)
            lines += [f"def {a}_{b}_{j}({a}, {b}=None):", f"    if {b} is None:",
                      f"        {b} = {rng.randint(0, 999)}", f"    return os.path.join(str({a}), str({b}))", ""]
        out.append("\n".join(lines).encode())
    return out


def put_all(objects: ObjectStore, payloads: list[bytes]) -> list[str]:
    return [objects.put(p).oid for p in payloads]


# --- the index format -------------------------------------------------------------------------------


def test_index_encode_decode_round_trip() -> None:
    rng = random.Random(5)
    pack = "ab" * 32
    entries: dict[str, Location] = {}
    for _ in range(200):
        oid = rng.randbytes(32).hex()
        entries[oid] = (pack, rng.randrange(len(PACK_MAGIC), 1 << 40), rng.randrange(1, 1 << 32),
                        rng.randrange(0, 1 << 32), rng.randrange(0, 1 << 32))
    entries[hash_bytes(b"")] = (pack, len(PACK_MAGIC), 9, 0, 0)

    data = encode_index(entries)

    assert data.startswith(INDEX_MAGIC)
    assert blake3.blake3(data[:-32]).digest() == data[-32:]
    assert decode_index(pack, data) == entries
    shuffled = dict(sorted(entries.items(), key=lambda kv: rng.random()))
    assert encode_index(shuffled) == data  # deterministic: entries are written sorted by oid
    assert decode_index(pack, encode_index({})) == {}


def test_damaged_index_raises_corruptobject_naming_the_pack() -> None:
    pack = "cd" * 32
    entries = {hash_bytes(bytes([i])): (pack, 6 + i * 10, 10, i, 1) for i in range(3)}
    good = encode_index(entries)
    damaged = []
    for index in range(len(good)):  # every single byte, the checksum itself included
        flipped = bytearray(good)
        flipped[index] ^= 0x01
        damaged.append(bytes(flipped))
    damaged += [good[:keep] for keep in (0, 1, len(INDEX_MAGIC), 40, len(good) - 1)]
    damaged += [good + b"\0", b"RRPI2\n" + good[len(INDEX_MAGIC):]]
    # a well-checksummed body whose count does not match its entries
    body = good[:-32]
    wrong_count = body[:len(INDEX_MAGIC)] + (4).to_bytes(4, "little") + body[len(INDEX_MAGIC) + 4:]
    damaged.append(wrong_count + blake3.blake3(wrong_count).digest())
    for data in damaged:
        with pytest.raises(CorruptObject) as info:
            decode_index(pack, data)
        assert pack in str(info.value)


def test_damaged_index_on_disk_costs_speed_not_the_objects(store_dir: Path) -> None:
    """Hole 6: a damaged index is recorded, and its pack is rebuilt in memory when a lookup misses."""
    objects = fresh(store_dir)
    packed = put_all(objects, [b"packed one", b"packed two"])
    loose = objects.put(b"a loose record", loose=True).oid
    objects.flush()
    [idx] = index_files(store_dir)
    data = bytearray(idx.read_bytes())
    data[len(data) // 2] ^= 0x01
    idx.write_bytes(bytes(data))

    reader = fresh(store_dir)
    assert reader.get(loose) == b"a loose record"
    assert reader.get(packed[0]) == b"packed one"
    assert not reader.has(packed[1])  # present only behind a damaged index: a writer stores it again
    assert set(reader.damaged_indexes()) == {idx.stem}
    assert idx.read_bytes() == bytes(data)  # reading never rewrites the damaged file
    with pytest.raises(ObjectMissing) as info:
        reader.get(hash_bytes(b"never stored"))
    assert idx.stem in str(info.value) and "rrstore check --repair" in str(info.value)


def test_damaged_index_of_a_format_1_pack_names_the_index(store_dir: Path) -> None:
    """An RRPK1 pack cannot rebuild its index: the miss says which index and what to run."""
    payload = b"old format object"
    oid = hash_bytes(payload)
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(payload)
    body = pack_module.PACK_MAGIC_V1 + frame
    name = blake3.blake3(body).hexdigest()
    (store_dir / "packs").mkdir(parents=True)
    (store_dir / "packs" / f"{name}.pack").write_bytes(body)
    good = encode_index({oid: (name, len(body) - len(frame), len(frame), 0, len(payload))})
    (store_dir / "packs" / f"{name}.idx").write_bytes(good)
    assert fresh(store_dir).get(oid) == payload  # format 1 stays readable

    (store_dir / "packs" / f"{name}.idx").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ObjectMissing) as info:
        fresh(store_dir).get(oid)
    assert name in str(info.value) and "rrstore check --repair" in str(info.value)
    assert fresh(store_dir).blind_packs().keys() == {name}


def test_scan_rebuilds_the_index_a_pack_was_written_with(store_dir: Path) -> None:
    payloads = random_objects(3 * BLOCK_SIZE // 4000, 2000, 6000, seed=21) + text_objects(50) + [b""]
    objects = fresh(store_dir)
    put_all(objects, payloads)
    objects.flush()
    [pack] = pack_files(store_dir)
    [idx] = index_files(store_dir)
    scan = pack_module.scan_pack(pack.stem, pack.read_bytes())
    assert scan.entries == decode_index(idx.stem, idx.read_bytes())
    assert scan.damaged == [] and scan.lost == [] and scan.blocks >= 3


def test_scan_of_a_damaged_block_loses_only_that_block(store_dir: Path) -> None:
    payloads = random_objects(4 * BLOCK_SIZE // 4000, 2000, 6000, seed=22)
    objects = fresh(store_dir)
    oids = put_all(objects, payloads)
    objects.flush()
    [pack] = pack_files(store_dir)
    entries = {oid: locs[0] for oid, locs in all_entries(store_dir).items()}
    blocks = sorted({loc[1] for loc in entries.values()})
    hit = blocks[1]
    for at in (hit + 2, hit + 40, hit + entries[oids[0]][2] // 2):  # frame header, table, body
        data = bytearray(pack.read_bytes())
        data[at] ^= 0x10
        scan = pack_module.scan_pack(pack.stem, bytes(data))
        survivors = {oid for oid, loc in entries.items() if loc[1] != hit}
        assert survivors <= set(scan.entries)
        assert all(scan.entries[oid] == entries[oid] for oid in scan.entries)
        assert scan.lost or scan.damaged


# --- writing and reading packs ---------------------------------------------------------------------


def test_many_small_objects_land_in_one_pack_and_read_back_verified(store_dir: Path) -> None:
    payloads = random_objects(400, 1, 3000, seed=1) + text_objects(100) + [b""]
    objects = fresh(store_dir)
    oids = put_all(objects, payloads)
    assert len(set(oids)) == len(payloads)
    assert pack_files(store_dir) == [] and index_files(store_dir) == []  # queued, not written yet

    objects.flush()

    [pack] = pack_files(store_dir)
    [idx] = index_files(store_dir)
    assert idx.stem == pack.stem
    data = pack.read_bytes()
    assert data.startswith(PACK_MAGIC)
    assert pack.stem == blake3.blake3(data).hexdigest()  # named by its content
    assert set(decode_index(idx.stem, idx.read_bytes())) == set(oids)
    assert loose_files(store_dir) == []
    assert os.listdir(store_dir / "tmp") == []
    assert objects.stored_bytes == len(data)

    reader = fresh(store_dir)
    for oid, payload in zip(oids, payloads, strict=True):
        assert reader.has(oid)
        assert reader.get(oid) == payload
    assert set(reader) == set(oids)


def test_a_pack_holds_many_blocks(store_dir: Path) -> None:
    payloads = random_objects(5 * BLOCK_SIZE // 4000, 2000, 6000, seed=2)  # ~5 blocks of incompressible bytes
    objects = fresh(store_dir)
    oids = put_all(objects, payloads)
    objects.flush()

    [pack] = pack_files(store_dir)
    entries = {oid: locs[0] for oid, locs in all_entries(store_dir).items()}
    assert set(entries) == set(oids)
    blocks = sorted({(loc[1], loc[2]) for loc in entries.values()})
    assert len(blocks) >= 4
    data = pack.read_bytes()
    assert blocks[0][0] == len(PACK_MAGIC)
    sizes = []
    for (offset, size), following in zip(blocks, [*blocks[1:], (len(data), 0)], strict=True):
        assert offset + size == following[0]  # blocks are back to back, the last one ends the file
        raw = zstandard.ZstdDecompressor().decompress(data[offset:offset + size])
        inside = [loc for loc in entries.values() if loc[1] == offset]
        table = pack_module.decode_table(raw)  # the block's table lists exactly its objects
        assert sorted((oid, off, n) for oid, off, n in table) == sorted(
            (oid, loc[3], loc[4]) for oid, loc in entries.items() if loc[1] == offset)
        assert table[0][1] + sum(loc[4] for loc in inside) == len(raw)  # table, then objects tile the block
        assert len(raw) < BLOCK_SIZE + LOOSE_MIN
        sizes.append(len(raw))
    # every block is full but one (the rest at flush; blocks may land in any order)
    assert sum(size < BLOCK_SIZE for size in sizes) <= 1
    reader = fresh(store_dir)
    for oid, payload in zip(oids, payloads, strict=True):
        assert reader.get(oid) == payload


def test_pack_size_limit_splits_into_several_packs(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pack_module, "PACK_SIZE", SMALL_PACK_SIZE)
    payloads = random_objects(1000, 4000, 10000, seed=3)  # ~7 MiB, incompressible
    objects = fresh(store_dir)
    oids = put_all(objects, payloads)
    written_before_flush = len(pack_files(store_dir))
    assert written_before_flush >= 1  # a full pack is written as it fills, not only at flush
    objects.flush()

    packs = pack_files(store_dir)
    assert len(packs) >= 2 and len(packs) > written_before_flush
    assert {p.stem for p in packs} == {i.stem for i in index_files(store_dir)}
    entries = all_entries(store_dir)
    assert set(entries) == set(oids)
    assert all(len(locs) == 1 for locs in entries.values())  # each object in exactly one pack
    assert objects.stored_bytes == sum(p.stat().st_size for p in packs)
    reader = fresh(store_dir)
    for oid, payload in zip(oids, payloads, strict=True):
        assert reader.get(oid) == payload


def test_objects_put_from_many_threads_are_all_written(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads putting at once (snapshot's pool does) while full packs are written: nothing is lost.

    Every object put must be in a pack on disk after flush, not only in this process's queue.
    """
    monkeypatch.setattr(pack_module, "PACK_SIZE", SMALL_PACK_SIZE // 2)
    shared = random_objects(200, 1000, 8000, seed=40)
    own = [random_objects(300, 1000, 8000, seed=41 + n) for n in range(6)]
    objects = fresh(store_dir)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i, payload in enumerate(own[n]):
                for data in (payload, shared[(i + 33 * n) % len(shared)]):
                    assert objects.get(objects.put(data).oid) == data
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(own))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    objects.flush()

    payloads = shared + [p for mine in own for p in mine]
    oids = {hash_bytes(p) for p in payloads}
    lost = oids - set(all_entries(store_dir))
    assert lost == set(), f"{len(lost)} of {len(oids)} objects were never written to a pack"
    reader = fresh(store_dir)
    for payload in payloads:
        assert reader.get(hash_bytes(payload)) == payload


# --- visibility -------------------------------------------------------------------------------------


def test_queued_objects_are_readable_here_and_invisible_elsewhere_until_flush(store_dir: Path) -> None:
    writer = fresh(store_dir)
    other = fresh(store_dir)
    payloads = text_objects(20, seed=6)
    oids = put_all(writer, payloads)

    for oid, payload in zip(oids, payloads, strict=True):
        assert writer.has(oid)
        assert writer.get(oid) == payload
        assert not other.has(oid)
        with pytest.raises(ObjectMissing):
            other.get(oid)
    assert set(other) == set() and set(fresh(store_dir)) == set()

    writer.flush()

    for oid, payload in zip(oids, payloads, strict=True):
        assert writer.get(oid) == payload
        assert other.get(oid) == payload  # a reader that already loaded the indexes finds the new pack
        assert fresh(store_dir).get(oid) == payload
    assert set(fresh(store_dir)) == set(oids)


def test_has_sees_objects_another_store_flushed_after_its_first_look(store_dir: Path) -> None:
    """has() agrees with get(): an object another process has flushed is present for both."""
    writer = fresh(store_dir)
    other = fresh(store_dir)
    oid = writer.put(b"written by another process").oid
    assert other.has(oid) is False
    writer.flush()
    assert other.has(oid) is True
    assert other.get(oid) == b"written by another process"


def test_sync_makes_queued_objects_visible(store_dir: Path) -> None:
    writer = fresh(store_dir)
    oid = writer.put(b"synced").oid
    assert not fresh(store_dir).has(oid)
    writer.sync()
    assert fresh(store_dir).get(oid) == b"synced"


def test_pack_without_its_index_is_not_counted_as_present(store_dir: Path) -> None:
    """A pack without index (an interrupted write, or a lost index) is never deduplicated against;
    ``get`` still finds its objects, verified, by rebuilding its entries in memory from the pack."""
    objects = fresh(store_dir)
    lost = put_all(objects, [b"first of an interrupted pack", b"second of it"])
    objects.flush()
    kept = objects.put(b"a loose record", loose=True).oid
    [idx] = index_files(store_dir)
    idx.unlink()
    (store_dir / "tmp" / f"{idx.name}.1234.abcdef.tmp").write_bytes(b"half an index")

    reader = fresh(store_dir)
    assert set(reader) == {kept}
    assert reader.get(kept) == b"a loose record"
    for oid in lost:
        assert reader.has(oid) is False
    assert reader.get(lost[0]) == b"first of an interrupted pack"
    with pytest.raises(ObjectMissing):
        reader.get(hash_bytes(b"never stored"))

    # writing them again works, and then they are readable
    assert [reader.put(p).new for p in (b"first of an interrupted pack", b"second of it")] == [True, True]
    reader.flush()
    again = fresh(store_dir)
    assert again.get(lost[0]) == b"first of an interrupted pack"
    assert again.get(lost[1]) == b"second of it"
    assert set(again) == {kept, *lost}


# --- damage -----------------------------------------------------------------------------------------


def _block_holding(store_dir: Path, oid: str) -> tuple[Path, int, int]:
    [loc] = all_entries(store_dir)[oid]
    return store_dir / "packs" / f"{loc[0]}.pack", loc[1], loc[2]


def test_flipped_byte_inside_a_block_is_corruptobject_naming_the_oid(store_dir: Path) -> None:
    payloads = random_objects(5 * BLOCK_SIZE // 4000, 2000, 6000, seed=7)  # several blocks, stored verbatim
    objects = fresh(store_dir)
    oids = put_all(objects, payloads)
    objects.flush()
    target = len(payloads) // 2
    pack, block_offset, block_size = _block_holding(store_dir, oids[target])
    assert block_offset > len(PACK_MAGIC)  # not the first block
    data = bytearray(pack.read_bytes())
    at = data.find(payloads[target][100:164], block_offset, block_offset + block_size)
    assert at > 0
    data[at + 5] ^= 0x40
    pack.write_bytes(bytes(data))

    reader = fresh(store_dir)
    with pytest.raises(CorruptObject) as info:
        reader.get(oids[target])
    assert info.value.oid == oids[target]
    assert oids[target] in str(info.value)
    entries = all_entries(store_dir)
    for oid, payload in zip(oids, payloads, strict=True):  # objects in other blocks are unaffected
        if entries[oid][0][1] != block_offset:
            assert reader.get(oid) == payload


@pytest.mark.parametrize("mask", [0x01, 0xFF])
def test_every_byte_flip_in_a_compressed_block_is_detected(store_dir: Path, mask: int) -> None:
    """Whatever byte of a block is damaged, each of its objects comes back intact or as CorruptObject."""
    payloads = text_objects(10, seed=8)
    objects = fresh(store_dir)
    oids = put_all(objects, payloads)
    objects.flush()
    pack, block_offset, block_size = _block_holding(store_dir, oids[0])
    assert all(_block_holding(store_dir, oid)[1] == block_offset for oid in oids)  # one block
    good = pack.read_bytes()
    escaped: dict[int, str] = {}
    for index in range(block_offset, block_offset + block_size):
        damaged = bytearray(good)
        damaged[index] ^= mask
        pack.write_bytes(bytes(damaged))
        reader = fresh(store_dir)
        for oid, payload in zip(oids, payloads, strict=True):
            try:
                if reader.get(oid) != payload:
                    escaped[index] = f"wrong bytes for {oid}"
            except CorruptObject as exc:
                if exc.oid != oid:
                    escaped[index] = f"CorruptObject names {exc.oid}, not {oid}"
            except Exception as exc:  # any other exception is a bug: callers cannot branch on it
                escaped[index] = repr(exc)
    assert escaped == {}


def test_truncated_pack_is_corruptobject_for_the_objects_cut_off(store_dir: Path) -> None:
    payloads = random_objects(4 * BLOCK_SIZE // 4000, 2000, 6000, seed=9)
    objects = fresh(store_dir)
    oids = put_all(objects, payloads)
    objects.flush()
    [pack] = pack_files(store_dir)
    good = pack.read_bytes()
    entries = {oid: locs[0] for oid, locs in all_entries(store_dir).items()}
    block_ends = sorted({loc[1] + loc[2] for loc in entries.values()})
    assert len(block_ends) >= 3
    cuts = [0, 3, len(PACK_MAGIC), len(PACK_MAGIC) + 10, block_ends[0], block_ends[1] - 100, len(good) - 1]
    for cut in cuts:
        pack.write_bytes(good[:cut])
        reader = fresh(store_dir)
        for oid, payload in zip(oids, payloads, strict=True):
            _, offset, size, _, _ = entries[oid]
            if offset + size <= cut:
                assert reader.get(oid) == payload
            else:
                with pytest.raises(CorruptObject) as info:
                    reader.get(oid)
                assert info.value.oid == oid, cut

    pack.unlink()  # the index survives its pack
    with pytest.raises(CorruptObject) as info:
        fresh(store_dir).get(oids[0])
    assert info.value.oid == oids[0]


# --- several writers --------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import random, sys, time
    from pathlib import Path
    from rrstore.store import pack
    from rrstore.backends import LocalBackend
    from rrstore.store.objects import LOOSE_MIN, ObjectStore

    store, go, lo, hi = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    pack.PACK_SIZE = int(sys.argv[5])

    def payload(i):
        rng = random.Random(i)
        return rng.randbytes(LOOSE_MIN + i if i % 250 == 0 else rng.randint(1, 6000))

    objects = ObjectStore(LocalBackend(store))
    while not go.exists():
        time.sleep(0.001)
    for i in range(lo, hi):
        objects.put(payload(i))
    objects.flush()
    print(hi - lo)
""")


def test_two_processes_writing_overlapping_objects_at_once(store_dir: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    ranges = [(0, 1500), (500, 2000)]
    procs = [subprocess.Popen([sys.executable, str(script), str(store_dir), str(go), str(lo), str(hi),
                               str(SMALL_PACK_SIZE)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for lo, hi in ranges]
    time.sleep(0.3)  # let both import and wait at the start line
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert [out.strip() for out, _ in outs] == ["1500", "1500"]

    def payload(i: int) -> bytes:
        rng = random.Random(i)
        return rng.randbytes(LOOSE_MIN + i if i % 250 == 0 else rng.randint(1, 6000))

    expected = {hash_bytes(payload(i)): i for i in range(2000)}
    reader = fresh(store_dir)
    for oid, i in expected.items():
        assert reader.get(oid) == payload(i)
    listed = list(reader)
    assert sorted(listed) == sorted(expected)
    assert {p.stem for p in pack_files(store_dir)} == {i.stem for i in index_files(store_dir)}
    assert os.listdir(store_dir / "tmp") == []


# --- dedup and listing ------------------------------------------------------------------------------


def test_same_small_bytes_are_queued_and_stored_once(store_dir: Path) -> None:
    objects = fresh(store_dir)
    first = objects.put(b"twice")
    second = objects.put(b"twice")
    assert (first.new, second.new) == (True, False)
    assert second.oid == first.oid
    objects.flush()
    [pack] = pack_files(store_dir)
    stored = objects.stored_bytes
    assert list(decode_index(pack.stem, (store_dir / "packs" / f"{pack.stem}.idx").read_bytes())) == [first.oid]

    assert objects.put(b"twice").new is False  # after the flush: found in the pack
    objects.flush()
    later = fresh(store_dir)
    assert later.put(b"twice").new is False  # and by another process
    later.flush()
    assert pack_files(store_dir) == [pack]  # no second pack for nothing new
    assert objects.stored_bytes == stored and later.stored_bytes == 0
    assert loose_files(store_dir) == []
    assert list(fresh(store_dir)) == [first.oid]


def test_iteration_lists_packed_and_loose_oids_exactly_once(store_dir: Path, tmp_path: Path) -> None:
    objects = fresh(store_dir)
    packed = set(put_all(objects, [b"p1", b"p2", b"shared"]))
    loose = {objects.put(b"l1", loose=True).oid, objects.put(os.urandom(LOOSE_MIN)).oid}
    objects.flush()
    # the same object in a second pack and as a loose file (as two racing writers could leave it)
    other_dir = tmp_path / "other"
    other = fresh(other_dir)
    other_packed = set(put_all(other, [b"shared", b"p3"]))
    shared = other.put(b"shared").oid
    other.flush()
    third_dir = tmp_path / "third"
    fresh(third_dir).put(b"shared", loose=True)
    for path in [*pack_files(other_dir), *index_files(other_dir)]:
        os.link(path, store_dir / "packs" / path.name)
    for path in loose_files(third_dir):
        target = store_dir / path.relative_to(third_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    assert len(pack_files(store_dir)) == 2 and len(all_entries(store_dir)[shared]) == 2

    listed = list(fresh(store_dir))
    assert sorted(listed) == sorted(packed | loose | other_packed)
    assert len(listed) == len(set(listed))
    assert fresh(store_dir).get(shared) == b"shared"


# --- compression ------------------------------------------------------------------------------------


def test_similar_small_files_compress_together(store_dir: Path) -> None:
    payloads = text_objects(2000, seed=10)
    objects = fresh(store_dir)
    put_all(objects, payloads)
    objects.flush()
    compressor = zstandard.ZstdCompressor(level=objects.level, write_content_size=True)
    one_frame_each = sum(len(compressor.compress(p)) for p in payloads)
    packed = sum(p.stat().st_size for p in pack_files(store_dir))
    indexes = sum(p.stat().st_size for p in index_files(store_dir))
    assert objects.stored_bytes == packed
    assert packed < 0.6 * one_frame_each, (packed, one_frame_each)
    assert packed + indexes < one_frame_each  # even counting the index


# --- what a checkpoint writes -----------------------------------------------------------------------


def test_checkpoint_packs_all_content_and_keeps_only_records_loose(project: Path) -> None:
    """File contents are at most 4 MiB per object (chunks), so everything but the record is packed."""
    (project / "src").mkdir()
    for i in range(50):
        (project / "src" / f"m{i}.py").write_text(f"x = {i}\n")
    big = os.urandom(9 << 20)
    (project / "big.bin").write_bytes(big)
    system = RollbackRecoverySystem(root=project)

    record = system.checkpoint("standard", 1, "packed").record

    store = project / ".checkpoints"
    loose = {f"{p.parent.name}{p.name}" for p in loose_files(store)}
    assert loose == {record.record_oid}
    packed = set(all_entries(store))
    assert hash_bytes(b"x = 7\n") in packed and record.state_hash in packed
    big_entry = flatten(fresh(store), record.state_hash)["big.bin"]
    assert len(big_entry.chunks) >= 3 and set(big_entry.chunks) <= packed
    assert {p.stem for p in pack_files(store)} == {i.stem for i in index_files(store)}
    reader = fresh(store)  # nothing left queued: another process reads everything
    assert set(reader) == loose | packed
    for oid in loose | packed:
        assert hash_bytes(reader.get(oid)) == oid


def test_checkpoint_of_small_and_medium_files_stores_every_blob(project: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of 256-512 KiB are put from the snapshot's worker threads while the main thread puts the small
    ones; with packs filling up meanwhile, every blob the committed tree names must be in the store."""
    monkeypatch.setattr(pack_module, "PACK_SIZE", SMALL_PACK_SIZE // 4)
    rng = random.Random(11)
    system = RollbackRecoverySystem(root=project)
    for step in (1, 2):  # two rounds of all-new content: more packs fill up while threads are putting
        for i in range(1500):
            (project / f"s{i:04}.bin").write_bytes(rng.randbytes(rng.randint(1000, 6000)))
        for i in range(80):
            (project / f"m{i:03}.bin").write_bytes(rng.randbytes(300_000))

        record = system.checkpoint("standard", step, "mixed sizes").record

        reader = fresh(project / ".checkpoints")
        files = {p: e for p, e in flatten(reader, record.state_hash).items() if e.kind == FILE}
        assert len(files) == 1580
        missing = sorted(p for p, e in files.items() if not all(reader.has(o) for o in content_oids(e)))
        assert missing == [], f"{len(missing)} files of checkpoint {step} have no blob in the store: {missing[:3]}"
        for path, entry in files.items():
            assert reader.get(entry.oid) == (project / path).read_bytes()


# --- a flush that fails -------------------------------------------------------------------------------




def _fill(mnt: Path, leave_pages: int) -> Path:
    """Fill the tmpfs so that exactly ``leave_pages`` pages stay free."""
    st = os.statvfs(mnt)
    filler = mnt / "filler"
    filler.write_bytes(b"\0" * ((st.f_bfree - leave_pages) * st.f_bsize))
    assert os.statvfs(mnt).f_bfree == leave_pages
    return filler


@pytest.mark.parametrize("room", ["none", "pack only"])
def test_failed_flush_leaves_nothing_that_counts_as_stored(tiny_tmpfs: Path, tmp_path: Path, room: str) -> None:
    """A full disk during a pack's write: the objects must not stay 'queued' (a later put or has() in the
    same process would take them as stored, and a checkpoint would reach them), and no pack without an
    index is left to fill the disk."""
    from rrstore.errors import DiskFull

    payloads = random_objects(40, 5_000, 9_000, seed=5)
    probe = ObjectStore(LocalBackend(tmp_path / "probe"))
    put_all(probe, payloads)
    probe.flush()
    (pack_size,) = [p.stat().st_size for p in pack_files(tmp_path / "probe")]
    store = tiny_tmpfs / "store"
    objects = ObjectStore(LocalBackend(store))
    (store / "packs").mkdir(parents=True)
    (store / "tmp").mkdir()
    pages = -(-pack_size // 4096)
    filler = _fill(tiny_tmpfs, pages if room == "pack only" else pages - 2)
    oids = put_all(objects, payloads)

    with pytest.raises(DiskFull):
        objects.flush()

    assert pack_files(store) == [] and index_files(store) == []
    assert os.listdir(store / "tmp") == []
    assert not any(objects.has(oid) for oid in oids)
    filler.unlink()  # room again: the same objects are written now, by the same store
    assert all(objects.put(p).new for p in payloads)
    objects.flush()
    reader = fresh(store)
    assert [reader.get(oid) for oid in oids] == payloads
