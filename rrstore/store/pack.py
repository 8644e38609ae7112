"""Pack files (inside the object store layer): many small objects in one file.

Small objects are appended to *blocks* of about ``BLOCK_SIZE`` uncompressed
bytes; each block is one zstd frame, so neighbouring small files (a source
tree's siblings) compress together, at close to whole-stream ratio, instead
of one frame and one file per object. A pack is ``RRPK2\\n`` followed by its
blocks; it is named by the BLAKE3 of its bytes and written once, atomically,
followed by its index. An index lists, sorted by oid, where each object
lives: ``<32sQIII>`` = oid, block offset, block length, offset and length
inside the uncompressed block, then a BLAKE3 of everything before it.

A block's uncompressed bytes begin with a table (``<I>`` count, then
``<32sI>`` oid and length per object) followed by the objects, so a pack
describes itself: ``scan_pack`` rebuilds its index from the pack alone, and a
damaged block loses only its own objects. The index is derived data: a
damaged one is recorded by ``PackReader`` and its pack is rebuilt in memory
when a lookup misses, never blocking work that does not need it. Packs of
the first format (``RRPK1\\n``, bare blocks) stay readable, but their index
cannot be rebuilt from them. A pack without an index is invisible to normal
lookups (an interrupted write, or a lost index that ``check --repair`` rebuilds).
"""

from __future__ import annotations

import contextlib
import os
import queue
import struct
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import zstandard

from ..backends import Backend
from ..errors import CorruptObject, RRStoreError, from_oserror
from ..fsutil import temp_name
from ..heap import one_arena

PACK_MAGIC = b"RRPK2\n"
PACK_MAGIC_V1 = b"RRPK1\n"
PACK_MAGICS = (PACK_MAGIC, PACK_MAGIC_V1)
INDEX_MAGIC = b"RRPI1\n"
_ENTRY = struct.Struct("<32sQIII")
_COUNT = struct.Struct("<I")
_TABLE = struct.Struct("<32sI")  # one object of a block's table: oid, length
_FRAME_MAGIC = b"\x28\xb5\x2f\xfd"  # zstd frame magic: where a scan resynchronises after damage
# 1 MiB blocks: ratio 4.9 on Python's standard library at zstd level 3, against
# 4.1 at 256 KiB and 2.9 per file; decompressing one costs about a millisecond
# (benchmarks/results/tuning.md).
BLOCK_SIZE = 1 << 20
PACK_SIZE = 64 << 20
PREFIX = "packs/"
# Blocks per compression thread that may wait to be compressed before a
# caller's ``add`` waits: what bounds a writer's memory (with 2 cores, 4 MiB of
# raw bytes queued, plus the block being filled and those being compressed).
QUEUE_BLOCKS = 2
# What a reader accepts as one block's size: far above what rrstore writes
# (BLOCK_SIZE plus one object), low enough to refuse a decompression bomb.
MAX_BLOCK = 256 << 20
# Decompressed blocks a reader keeps (about 1 MiB each): bulk readers go in pack order, so each
# block serves its objects in turn; a few per thread is enough, and memory stays small (8 MiB).
CACHE_BLOCKS = 8


# (pack id, block offset, block size, offset in block, length): a plain tuple,
# because an index of 50k entries is loaded on every command that reads packs.
Location = tuple[str, int, int, int, int]


def encode_index(entries: dict[str, Location]) -> bytes:
    out = [INDEX_MAGIC, _COUNT.pack(len(entries))]
    for oid in sorted(entries):
        _, block_offset, block_size, offset, length = entries[oid]
        out.append(_ENTRY.pack(bytes.fromhex(oid), block_offset, block_size, offset, length))
    body = b"".join(out)
    return body + blake3.blake3(body).digest()


def index_size(count: int) -> int:
    """The bytes of a pack index of ``count`` objects (magic, count, entries, BLAKE3)."""
    return len(INDEX_MAGIC) + _COUNT.size + count * _ENTRY.size + 32


def decode_index(pack: str, data: bytes) -> dict[str, Location]:
    """The entries of one index; a damaged index is a CorruptObject naming the pack."""
    body, digest = data[:-32], data[-32:]
    if (len(body) < len(INDEX_MAGIC) + _COUNT.size or not body.startswith(INDEX_MAGIC)
            or blake3.blake3(body).digest() != digest):
        raise CorruptObject(f"pack index {pack}", reason="index checksum mismatch")
    (count,) = _COUNT.unpack_from(body, len(INDEX_MAGIC))
    start = len(INDEX_MAGIC) + _COUNT.size
    if len(body) != start + count * _ENTRY.size:
        raise CorruptObject(f"pack index {pack}", reason="index length does not match its count")
    return {raw.hex(): (pack, boff, bsize, off, length)
            for raw, boff, bsize, off, length in _ENTRY.iter_unpack(body[start:])}


def encode_table(block: list[tuple[str, bytes]]) -> bytes:
    """The table a block begins with: what it holds, so the pack can rebuild its index."""
    return b"".join([_COUNT.pack(len(block)), *(_TABLE.pack(bytes.fromhex(oid), len(data)) for oid, data in block)])


@dataclass
class PackScan:
    """What ``scan_pack`` found: the entries of every intact object, and what was lost.

    ``damaged`` lists (oid, reason) for objects whose table survived but whose
    bytes do not hash to their oid; ``lost`` lists (block offset, reason) for
    blocks that do not decode at all (their objects are unknown).
    """

    entries: dict[str, Location] = field(default_factory=dict)
    damaged: list[tuple[str, str]] = field(default_factory=list)
    lost: list[tuple[int, str]] = field(default_factory=list)
    blocks: int = 0


def scan_pack(pack: str, data: bytes) -> PackScan:
    """Rebuild the index of a format-2 pack from its bytes, verifying every object.

    Walks the frames front to back; a frame that does not decode loses only
    its own objects, and the walk resumes at the next zstd frame magic. A
    format-1 pack (no tables) or something that is no pack at all raises
    CorruptObject: its index cannot be rebuilt from it.
    """
    if data.startswith(PACK_MAGIC_V1):
        raise CorruptObject(f"pack {pack}", reason="a format-1 pack (RRPK1) does not list its objects, "
                                                  "so its index cannot be rebuilt from it")
    if not data.startswith(PACK_MAGIC):
        raise CorruptObject(f"pack {pack}", reason="not a pack (bad magic)")
    scan = PackScan()
    dec = zstandard.ZstdDecompressor()
    view = memoryview(data)
    pos = len(PACK_MAGIC)
    while pos < len(data):
        try:
            block, size = _frame_at(view, pos, dec)
        except CorruptObject as exc:
            scan.lost.append((pos, exc.reason))
            nxt = data.find(_FRAME_MAGIC, pos + 1)
            if nxt < 0:
                break
            pos = nxt
            continue
        try:
            table = decode_table(block)
        except CorruptObject as exc:
            scan.lost.append((pos, exc.reason))
            pos += size
            continue
        scan.blocks += 1
        for oid, offset, length in table:
            actual = blake3.blake3(block[offset:offset + length]).hexdigest()
            if actual != oid:
                scan.damaged.append((oid, f"pack {pack} block at {pos}: content hashes to {actual}"))
            elif oid not in scan.entries:
                scan.entries[oid] = (pack, pos, size, offset, length)
        pos += size
    return scan


def _frame_at(view: memoryview, pos: int, dec: zstandard.ZstdDecompressor) -> tuple[bytes, int]:
    """The decompressed block whose frame starts at ``pos``, and the frame's compressed length."""
    try:
        declared = zstandard.frame_content_size(bytes(view[pos:pos + 18]))
        if not 0 <= declared <= MAX_BLOCK:
            raise CorruptObject("block", reason=f"block at {pos} declares {declared} bytes")
        dobj = dec.decompressobj()
        out: list[bytes] = []
        end = pos
        while not dobj.eof:
            if end >= len(view):
                raise CorruptObject("block", reason=f"block at {pos} is cut off")
            piece = view[end:end + (1 << 17)]
            end += len(piece)
            out.append(dobj.decompress(piece))
        block = b"".join(out)
    except zstandard.ZstdError as exc:
        raise CorruptObject("block", reason=f"block at {pos} is not a valid zstd frame ({exc})") from None
    if len(block) != declared:
        raise CorruptObject("block", reason=f"block at {pos} holds {len(block)} bytes, declares {declared}")
    return block, end - pos - len(dobj.unused_data)


def decode_table(block: bytes) -> list[tuple[str, int, int]]:
    """(oid, offset, length) of every object in a format-2 block; CorruptObject if the table is inconsistent."""
    if len(block) < _COUNT.size:
        raise CorruptObject("block", reason="block too short for its table")
    (count,) = _COUNT.unpack_from(block, 0)
    offset = _COUNT.size + count * _TABLE.size
    if offset > len(block):
        raise CorruptObject("block", reason=f"block table claims {count} objects")
    out = []
    for raw, length in _TABLE.iter_unpack(block[_COUNT.size:offset]):
        out.append((raw.hex(), offset, length))
        offset += length
    if offset != len(block):
        raise CorruptObject("block", reason="block table does not add up to the block's size")
    return out


def loc_length(loc: Location) -> int:
    return loc[4]


class PackGone(Exception):
    """A pack listed by a loaded index no longer exists (gc replaced it): reload and retry."""


class _PackFile:
    """One pack being written: frames appended to a temporary file, hashed as they arrive.

    The file stays open until its objects have left the writer's queue, so a
    queued object can still be read from it (``PackWriter.get``) after the
    backend has renamed or uploaded it.
    """

    def __init__(self, staging: Path) -> None:
        staging.mkdir(parents=True, exist_ok=True)
        self.path = temp_name(staging, "pack")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        self.hasher = blake3.blake3()
        self.size = 0
        self.entries: dict[str, Location] = {}
        self.failed: BaseException | None = None
        # A process that ends without flushing (a failed checkpoint) takes its file with it.
        self.leftover = weakref.finalize(self, _unlink_quietly, str(self.path))
        try:
            self.append(PACK_MAGIC)
        except BaseException:
            self.discard()
            raise

    def append(self, data: bytes) -> int:
        """Write ``data`` at the end; its offset. A short or failed write leaves the file unusable."""
        offset = self.size
        view = memoryview(data)
        while view:
            view = view[os.pwrite(self.fd, view, offset + len(data) - len(view)):]
        self.hasher.update(data)
        self.size += len(data)
        return offset

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def discard(self) -> None:
        self.close()
        self.leftover.detach()
        _unlink_quietly(str(self.path))


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@dataclass(frozen=True)
class _Queued:
    """Where a compressed, not yet written object is: its pack file and location there."""

    pack: _PackFile
    loc: Location


class PackWriter:
    """Streams small objects into blocks, blocks into pack files, pack files into the backend.

    Memory stays bounded whatever is stored: a caller's ``add`` blocks while
    more than ``QUEUE_BLOCKS`` blocks per compression thread wait to be
    compressed; one compression thread per core appends each finished frame
    to the open pack's temporary file (frames land in whatever order they
    finish, since the index records offsets) and drops the raw bytes. A pack
    that reaches ``PACK_SIZE`` goes to one flushing thread (fsync, install
    under its name, index), so the threads reading files never wait for a
    disk flush. ``pending`` maps every object queued and not yet in a written
    pack to its raw bytes (before compression) or its place in a pack file
    (after), for ``has``/``get`` of queued objects and dedup.
    """

    def __init__(self, backend: Backend, level: int, durable: bool,
                 on_written: Callable[[dict[str, Location]], None], *, sync_packs: bool = True,
                 threads: int = 0) -> None:
        self.backend = backend
        self.on_written = on_written
        self.level = level
        self.durable = durable
        self.sync_packs = sync_packs or durable
        self.threads = threads or compression_threads()
        self.packs_written: list[str] = []
        self.lock = threading.Lock()
        self.moved = threading.Condition(self.lock)  # a block compressed, a pack flushed
        # One flush at a time, so a flush returns only once everything queued before it is written.
        self.flushing = threading.Lock()
        self.file_lock = threading.Lock()  # the open pack file: appends, sealing
        self.pending: dict[str, bytes | _Queued] = {}
        self.written = 0
        self.queued_bytes = 0  # raw bytes of blocks handed to compression and not yet compressed
        self.peak_queued = 0
        self.block: list[tuple[str, bytes]] = []
        self.block_bytes = 0
        self.blocks: queue.SimpleQueue[tuple[int, list[tuple[str, bytes]]] | None] = queue.SimpleQueue()
        self.inflight: set[int] = set()  # sequence numbers of blocks not yet appended
        self.submitted = 0
        self.open: _PackFile | None = None
        self.sealed: queue.SimpleQueue[tuple[int, _PackFile] | None] = queue.SimpleQueue()
        self.sealed_count = 0
        self.flushed_count = 0
        self.failure: BaseException | None = None
        self.workers: list[threading.Thread] = []

    @property
    def bound(self) -> int:
        """Raw bytes the compression queue may hold before ``add`` waits."""
        return QUEUE_BLOCKS * self.threads * BLOCK_SIZE

    def add(self, oid: str, data: bytes) -> bool:
        """Queue ``data``; False if it is already queued. Waits while the compression queue is full;
        raises the failure of a pack written in the background since the last flush (a full disk)."""
        with self.lock:
            self._raise_failure()
            if oid in self.pending:
                return False
            self.pending[oid] = data
            self.block.append((oid, data))
            self.block_bytes += len(data)
            if self.block_bytes >= BLOCK_SIZE:
                self._submit_block()
                while self.queued_bytes > self.bound and self.failure is None:
                    self.moved.wait()
        return True

    def get(self, oid: str) -> bytes | None:
        """The bytes of a queued object (from memory, or read back from its pack file), else None."""
        with self.lock:
            queued = self.pending.get(oid)
            if queued is None or isinstance(queued, bytes):
                return queued
            _, block_offset, block_size, offset, length = queued.loc
            frame = os.pread(queued.pack.fd, block_size, block_offset)
        block = decode_block(oid, "in progress", frame, zstandard.ZstdDecompressor())
        data = block[offset:offset + length]
        if blake3.blake3(data).hexdigest() != oid:
            raise CorruptObject(oid, reason="a pack being written reads back wrong")
        return data

    def _raise_failure(self) -> None:
        failed, self.failure = self.failure, None
        if failed is not None:
            raise failed

    def _submit_block(self) -> None:
        """Hand the open block to the compression threads (the caller holds ``lock``)."""
        if not self.block:
            return
        block, self.block, self.block_bytes = self.block, [], 0
        if not self.workers:
            self._start()
        self.submitted += 1
        self.inflight.add(self.submitted)
        self.queued_bytes += sum(len(data) for _, data in block)
        self.peak_queued = max(self.peak_queued, self.queued_bytes)
        self.blocks.put((self.submitted, block))

    def _start(self) -> None:
        one_arena()  # blocks are made by the readers' threads and freed by the compressors'
        self.workers = [threading.Thread(target=self._compress_loop, name=f"rrstore-zstd-{n}", daemon=True)
                        for n in range(self.threads)]
        self.workers.append(threading.Thread(target=self._flush_loop, name="rrstore-pack-flush", daemon=True))
        for worker in self.workers:
            worker.start()

    def _compress_loop(self) -> None:
        comp = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
        while (item := self.blocks.get()) is not None:
            seq, block = item
            del item  # the raw bytes go as soon as their frame is appended
            self._compress(seq, block, comp)
            del block

    def _compress(self, seq: int, block: list[tuple[str, bytes]], comp: zstandard.ZstdCompressor) -> None:
        raw = sum(len(data) for _, data in block)
        try:
            table = encode_table(block)
            frame = comp.compress(b"".join([table, *(data for _, data in block)]))
            self._append(block, len(table), frame)
        except BaseException as exc:
            self._forget(oid for oid, _ in block)
            with self.lock:
                self.failure = self.failure or _named(exc, self.backend)
        finally:
            with self.lock:
                self.queued_bytes -= raw
                self.inflight.discard(seq)
                self.moved.notify_all()

    def _append(self, block: list[tuple[str, bytes]], table: int, frame: bytes) -> None:
        """Append one frame to the open pack; hand the pack to the flusher once it is full."""
        with self.file_lock:
            pack = self.open
            if pack is None:
                pack = self.open = _PackFile(self.backend.staging())
            try:
                block_offset = pack.append(frame)
            except BaseException as exc:  # the file is cut short: every object in it is lost
                pack.failed = exc
                self._seal()
                raise
            offset = table
            queued = {}
            for oid, data in block:
                loc = ("", block_offset, len(frame), offset, len(data))
                pack.entries[oid] = loc
                queued[oid] = _Queued(pack, loc)
                offset += len(data)
            with self.lock:
                self.pending.update(queued)  # the raw bytes go
            if pack.size >= PACK_SIZE:
                self._seal()

    def _seal(self) -> int:
        """Close the open pack to appends and queue it for the flusher (the caller holds ``file_lock``);
        the count of packs sealed so far."""
        pack, self.open = self.open, None
        if pack is not None:
            with self.lock:
                self.sealed_count += 1
                count = self.sealed_count
            self.sealed.put((count, pack))
        return self.sealed_count

    def _flush_loop(self) -> None:
        while (item := self.sealed.get()) is not None:
            count, pack = item
            try:
                self._write(pack)
            except BaseException as exc:
                self._forget(pack.entries)
                pack.discard()
                with self.lock:
                    self.failure = self.failure or _named(exc, self.backend)
            finally:
                with self.lock:
                    self.flushed_count = count
                    self.moved.notify_all()

    def _write(self, pack: _PackFile) -> None:
        """Install one pack, then its index; if the index fails, take back a pack that was not there before."""
        if pack.failed is not None:
            raise pack.failed
        name = pack.hasher.hexdigest()
        key = f"{PREFIX}{name}"
        existed = self.backend.exists(f"{key}.pack")  # the same bytes, already stored (or awaiting repair)
        # The pack is durable before its index exists: an index never names a
        # pack that a power cut could leave empty, even in "batch" fsync mode.
        pack.leftover.detach()  # from here the file is the backend's (renamed or uploaded)
        self.backend.install(f"{key}.pack", pack.path, durable=self.sync_packs)
        entries = {oid: (name, *loc[1:]) for oid, loc in pack.entries.items()}
        try:
            self.backend.write(f"{key}.idx", encode_index(entries), durable=self.durable)
        except BaseException:
            if not existed and not self.backend.exists(f"{key}.idx"):
                with contextlib.suppress(Exception):
                    self.backend.delete(f"{key}.pack")
            raise
        self.on_written(entries)  # indexed before it leaves the queue: ``has`` never misses both
        with self.lock:
            self.written += pack.size
            self.packs_written.append(name)
            for oid in entries:
                if isinstance(self.pending.get(oid), _Queued):
                    del self.pending[oid]
            pack.close()

    def flush(self) -> None:
        """Write everything queued as packs (and their indexes).

        Returns once every object queued before the call is in a written pack.
        If that fails (a full disk), the objects it held are dropped from the
        queue, so nothing still counts them as stored, and a pack written
        without its index is removed (no index names it, so no one can rely on it).
        """
        with self.flushing:
            with self.lock:
                self._submit_block()
                last = self.submitted
                while any(seq <= last for seq in self.inflight):
                    self.moved.wait()
            with self.file_lock:
                count = self._seal()
            with self.lock:
                while self.flushed_count < count:
                    self.moved.wait()
                self._raise_failure()

    def _forget(self, oids: Iterable[str]) -> None:
        """Drop objects that will not be written from the queue (their write failed)."""
        with self.lock:
            for oid in oids:
                self.pending.pop(oid, None)

    def close(self) -> None:
        """Stop the threads (after ``flush``; they start again on the next ``add``)."""
        workers, self.workers = self.workers, []
        if not workers:
            return
        for _ in range(len(workers) - 1):
            self.blocks.put(None)
        self.sealed.put(None)
        for worker in workers:
            worker.join()
        with self.file_lock:
            pack, self.open = self.open, None
        if pack is not None:  # nothing flushed it: its objects were never written
            self._forget(pack.entries)
            pack.discard()


def compression_threads() -> int:
    """One compression thread per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _named(exc: BaseException, backend: Backend) -> BaseException:
    """An OSError of a pack's temporary file as rrstore's named error (a full disk is DiskFull)."""
    if isinstance(exc, OSError) and not isinstance(exc, RRStoreError):
        return from_oserror(exc, str(backend.staging()))
    return exc


class PackReader:
    """The union of all pack indexes, and a small cache of decompressed blocks.

    Merged indexes (``packindex``: ``index/packs/*.midx``) are loaded first, so only the
    ``.idx`` of packs none of them covers are read (``refresh``); ``write_midx`` writes one.

    A damaged index does not stop the others from loading: it is kept in
    ``damaged`` (pack id -> reason), and packs listed without an index in
    ``orphans``. ``rebuild_missing`` (called when a lookup misses) rebuilds
    their entries in memory from the packs themselves, into ``fallback``
    (oid -> location) and ``rebuilt`` (pack -> entries), never into ``index``
    or ``members``: reads find those objects, but writers do not deduplicate
    against them (a checkpoint stores such an object again, which heals the
    store) and gc never rewrites or deletes their packs.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.version: object = None
        self.index: dict[str, Location] = {}
        self.members: dict[str, dict[str, Location]] = {}
        self.loaded: set[str] = set()
        self.via_midx: set[str] = set()  # loaded packs whose entries came from a merged index only
        self.damaged: dict[str, str] = {}
        self.orphans: set[str] = set()
        self.rebuilt: dict[str, dict[str, Location]] = {}
        self.fallback: dict[str, Location] = {}
        self.unrebuildable: dict[str, str] = {}
        self.midx: dict[str, set[str]] = {}          # loaded merged index -> the packs it lists
        self.midx_damaged: dict[str, str] = {}       # merged index -> why it was ignored
        self.lock = threading.Lock()
        self.rebuild_lock = threading.Lock()
        self.cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self.local = threading.local()

    def refresh_if_changed(self) -> bool:
        """Refresh when the backend says ``packs/`` changed (a cheap check: one stat locally)."""
        version = self.backend.version(PREFIX)
        if version is not None and version == self.version:
            return False
        self.refresh()
        return True

    def refresh(self) -> None:
        """Load indexes of packs not seen yet and forget packs that are gone (gc rewrote them).

        Merged indexes (``packindex``) are read first, then the ``.idx`` of
        packs none of them covers. A pack counts as present while its ``.idx``
        is listed (gc removes the ``.idx`` first), whoever supplies its entries.
        An index that does not decode is recorded in ``damaged`` (a merged one
        in ``midx_damaged``) and skipped.
        """
        self.version = self.backend.version(PREFIX)
        with self.lock:
            known = set(self.loaded)  # a pack this process adds during the listing is not "gone"
        # Merged indexes are listed before packs: every pack a listed merged index names is then listed too.
        midx_names = self._list_midx()
        listing = list(self.backend.list(PREFIX))
        names = [k[len(PREFIX):-4] for k in listing if k.endswith(".idx")]
        listed = set(names)
        packs = {k[len(PREFIX):-5] for k in listing if k.endswith(".pack")}
        gone = known - listed
        stale = {p for p in self.rebuilt if p not in packs or p in known}
        if gone or stale:
            with self.lock:
                self.index = {oid: loc for oid, loc in self.index.items() if loc[0] not in gone}
                self.loaded -= gone
                self.via_midx -= gone
                for pack in gone:
                    self.members.pop(pack, None)
                for pack in stale:
                    self.rebuilt.pop(pack, None)
                self.fallback = {oid: loc for oid, loc in self.fallback.items() if loc[0] not in stale}
        self.orphans = packs - listed - known
        self.damaged = {p: why for p, why in self.damaged.items() if p in listed}
        self.unrebuildable = {p: why for p, why in self.unrebuildable.items() if p in packs and p not in known}
        self._load_midx(midx_names, listed)
        for pack in names:
            if pack in self.loaded:
                continue
            try:
                entries = decode_index(pack, self.backend.read(f"{PREFIX}{pack}.idx"))
            except KeyError:
                continue
            except CorruptObject as exc:
                self.damaged[pack] = exc.reason
                continue
            self._take(pack, entries)

    def _take(self, pack: str, entries: dict[str, Location], *, via_midx: bool = False) -> None:
        with self.lock:
            self.index.update(entries)
            self.members[pack] = entries
            self.loaded.add(pack)
            self.damaged.pop(pack, None)
            self.unrebuildable.pop(pack, None)
            if via_midx:
                self.via_midx.add(pack)
            else:
                self.via_midx.discard(pack)

    def retake(self, pack: str, entries: dict[str, Location]) -> None:
        """Use ``entries`` (its index, just rebuilt from the pack) for ``pack`` in place of what was loaded."""
        with self.lock:
            old = self.members.get(pack, {})
            for oid in old:
                if self.index.get(oid, (None,))[0] == pack:
                    del self.index[oid]
        self._take(pack, entries)

    def load_own_indexes(self) -> bool:
        """After a lookup missed: read the own ``.idx`` of the packs known only through a merged
        index (a cache, which may lack entries or be crafted); their entries replace the merged
        index's. True if that found an object not known before. Once per process and pack."""
        added = False
        for pack in sorted(self.via_midx):
            try:
                entries = decode_index(pack, self.backend.read(f"{PREFIX}{pack}.idx"))
            except KeyError:
                self.via_midx.discard(pack)
                continue
            except CorruptObject as exc:
                self.via_midx.discard(pack)
                self.damaged[pack] = exc.reason
                continue
            added = added or any(oid not in self.index for oid in entries)
            self._take(pack, entries)
        return added

    def _list_midx(self) -> set[str]:
        from .packindex import MIDX_PREFIX, midx_name

        return {n for n in map(midx_name, self.backend.list(MIDX_PREFIX)) if n is not None}

    def _load_midx(self, names: set[str], listed: set[str]) -> None:
        """Load the merged indexes not loaded yet; one removed meanwhile (superseded by a newer one,
        which covers its packs) makes the reader list ``index/packs/`` again, a few times at most."""
        from .packindex import decode_midx, midx_key

        self.midx = {m: p for m, p in self.midx.items() if m in names}
        self.midx_damaged = {m: why for m, why in self.midx_damaged.items() if m in names}
        for _ in range(3):
            vanished = False
            for name in sorted(names - set(self.midx) - set(self.midx_damaged)):
                try:
                    members = decode_midx(name, self.backend.read(midx_key(name)))
                except KeyError:
                    vanished = True
                    continue
                except CorruptObject as exc:
                    self.midx_damaged[name] = exc.reason
                    continue
                self.midx[name] = set(members)
                for pack, entries in members.items():
                    if pack in listed and pack not in self.loaded:
                        self._take(pack, entries, via_midx=True)
            if not vanished:
                return
            names = self._list_midx()

    def uncovered(self) -> set[str]:
        """Loaded packs no loaded merged index covers (each costs a read of its ``.idx``)."""
        covered: set[str] = set().union(*self.midx.values()) if self.midx else set()
        return self.loaded - covered

    def write_midx(self) -> str | None:
        """Write one merged index of every loaded pack, then delete the merged indexes it supersedes
        (every loaded one: their packs still present are all in the new one). Returns its name.

        Safe beside other writers: merged indexes are immutable and content-named, one written
        meanwhile by another process is not loaded here and so not deleted, and locally every
        pack keeps its ``.idx``. The caller refreshes first and ignores failures (derived data).
        """
        from .packindex import encode_midx, midx_key

        with self.lock:
            members = {pack: dict(entries) for pack, entries in self.members.items() if pack in self.loaded}
        if not members:
            return None
        name, data = encode_midx(members)
        if not self.backend.exists(midx_key(name)):
            self.backend.write(midx_key(name), data)
        for old in sorted(set(self.midx) - {name}):
            with contextlib.suppress(KeyError):
                self.backend.delete(midx_key(old))
        self.midx = {name: set(members)}
        return name

    def verify_indexes(self) -> None:
        """Read the ``.idx`` of every pack a merged index covers too, recording damaged ones (``check``)."""
        covered = self.loaded - self.uncovered()
        for pack in sorted(covered):
            try:
                decode_index(pack, self.backend.read(f"{PREFIX}{pack}.idx"))
            except KeyError:
                continue
            except CorruptObject as exc:
                self.damaged[pack] = exc.reason

    def rebuild_missing(self, *, orphans: bool = True) -> bool:
        """Rebuild in memory (into ``fallback``) the entries of packs whose index is damaged
        (and, with ``orphans``, missing), each once; True if that added any entry. Costs a
        read and a decompression of each such pack, once per process."""
        added = False
        with self.rebuild_lock:
            todo = sorted(set(self.damaged) | (self.orphans if orphans else set()))
            for pack in todo:
                if pack in self.rebuilt or pack in self.unrebuildable or pack in self.loaded:
                    continue
                try:
                    found = scan_pack(pack, self.backend.read(f"{PREFIX}{pack}.pack"))
                except KeyError:
                    self.unrebuildable[pack] = "the pack file is missing"
                    continue
                except CorruptObject as exc:
                    self.unrebuildable[pack] = exc.reason
                    continue
                with self.lock:
                    self.rebuilt[pack] = found.entries
                    for oid, loc in found.entries.items():
                        if oid not in self.fallback:
                            self.fallback[oid] = loc
                            added = True
        return added

    def blind(self) -> dict[str, str]:
        """Damaged indexes whose pack could not be rebuilt in memory: what they hold is unknown."""
        self.rebuild_missing(orphans=False)
        return {p: f"{why}; {self.unrebuildable[p]}" for p, why in self.damaged.items() if p in self.unrebuildable}

    def add(self, entries: dict[str, Location]) -> None:
        """Entries of one pack this process just wrote."""
        with self.lock:
            self.index.update(entries)
            for oid, loc in entries.items():
                self.members.setdefault(loc[0], {})[oid] = loc
                self.loaded.add(loc[0])

    def read(self, oid: str, loc: Location) -> bytes:
        """The bytes at ``loc`` (not yet verified against ``oid``: the caller does that)."""
        pack, block_offset, _, offset, length = loc
        key = (pack, block_offset)
        with self.lock:
            block = self.cache.get(key)
            if block is not None:
                self.cache.move_to_end(key)
        if block is None:
            block = self._load_block(oid, loc)
            with self.lock:
                self.cache[key] = block
                while len(self.cache) > CACHE_BLOCKS:
                    self.cache.popitem(last=False)
        if offset + length > len(block):
            raise CorruptObject(oid, reason=f"pack {pack} block at {block_offset} is too short")
        return block[offset:offset + length]

    def _load_block(self, oid: str, loc: Location) -> bytes:
        pack, block_offset, block_size, _, _ = loc
        try:
            frame = self.backend.read_range(f"{PREFIX}{pack}.pack", block_offset, block_size)
        except KeyError:
            raise PackGone(pack) from None
        dec = getattr(self.local, "dec", None)
        if dec is None:
            dec = self.local.dec = zstandard.ZstdDecompressor()
        return decode_block(oid, pack, frame, dec)


def decode_block(oid: str, pack: str, frame: bytes, dec: zstandard.ZstdDecompressor) -> bytes:
    """One block's zstd frame, decompressed; CorruptObject naming ``oid`` if it declares more than
    ``MAX_BLOCK`` bytes (a decompression bomb) or does not decode."""
    try:
        size = zstandard.frame_content_size(frame)
        if not 0 <= size <= MAX_BLOCK:
            raise CorruptObject(oid, reason=f"pack {pack} block declares {size} bytes")
        return dec.decompress(frame, max_output_size=max(size, 1))
    except zstandard.ZstdError as exc:
        raise CorruptObject(oid, reason=f"pack {pack} block is not a valid zstd frame ({exc})") from None


def verify_pack(pack: str, data: bytes, index: bytes) -> dict[str, Location]:
    """Check a pack against its name and every object in it against its index; return the entries.

    What a transfer runs on every pack it moves, before the pack is stored
    on the other side: damage never spreads from one store to another.
    """
    if not data.startswith(PACK_MAGICS) or blake3.blake3(data).hexdigest() != pack:
        raise CorruptObject(f"pack {pack}", reason="pack bytes do not hash to the pack's name")
    entries = decode_index(pack, index)
    dec = zstandard.ZstdDecompressor()
    blocks: dict[int, bytes] = {}
    for oid, (_, block_offset, block_size, offset, length) in sorted(entries.items(), key=lambda e: e[1][1]):
        block = blocks.get(block_offset)
        if block is None:
            block = decode_block(oid, pack, data[block_offset:block_offset + block_size], dec)
            blocks = {block_offset: block}  # entries are sorted by block: keep one
        actual = blake3.blake3(block[offset:offset + length]).hexdigest()
        if offset + length > len(block) or actual != oid:
            raise CorruptObject(oid, actual=actual, reason=f"in pack {pack}: hashes to {actual}")
    return entries
