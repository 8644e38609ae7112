"""Object store (store layer, over a backend): immutable bytes keyed by BLAKE3.

An object's id (``oid``) is the lowercase hex BLAKE3-256 of its uncompressed
bytes; it is stored as one zstd frame under ``objects/<oid[:2]>/<oid[2:]>``.
Compression settings never change an oid, so deduplication holds across
settings and machines. Every read is verified against its oid.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import blake3
import zstandard

from ..backends import Backend
from ..errors import CorruptObject, MissingBehindIndex, ObjectMissing, RRStoreError
from .generation import bump
from .pack import PREFIX as PACKS
from .pack import Location, PackGone, PackReader, PackWriter, decode_index
from .packindex import UNCOVERED_MAX

OID_LEN = 64
# No object is larger: whole files are stored only up to the chunking
# threshold (4 MiB, worktree.snapshot.CHUNK_THRESHOLD), chunks are at most
# 1 MiB (4 x CHUNK_AVG); trees and records stay far below (a tree of a
# million names is ~150 MiB). A frame declaring more is refused before any
# memory is allocated for it, and put() refuses to write one.
MAX_OBJECT_SIZE = 256 << 20
# Objects smaller than this go into packs; larger ones are loose files. File
# contents are at most 4 MiB (see MAX_OBJECT_SIZE above), so in practice
# everything but checkpoint records is packed: a cold checkpoint writes a
# few large files instead of one per object, and one flush makes them durable.
LOOSE_MIN = 16 << 20
# gc rewrites packs smaller than this into one once there are more than
# MAX_SMALL_PACKS of them (each checkpoint that changes anything adds one).
SMALL_PACK = 8 << 20
MAX_SMALL_PACKS = 16
_HEX = frozenset("0123456789abcdef")


def hash_bytes(data: bytes) -> str:
    """The oid of ``data``; equal to what ``b3sum`` prints for the same bytes."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO) if len(data) > 1 << 22 else blake3.blake3()
    hasher.update(data)
    return hasher.hexdigest()


def is_oid(text: object) -> bool:
    return isinstance(text, str) and len(text) == OID_LEN and set(text) <= _HEX


def object_key(oid: str) -> str:
    return f"objects/{oid[:2]}/{oid[2:]}"


def oid_of_key(key: str) -> str | None:
    """The oid a loose object's key names (``objects/ab/cdef…`` -> ``abcdef…``); None for any other key."""
    parts = key.split("/")
    if len(parts) == 3 and is_oid(parts[1] + parts[2]):
        return parts[1] + parts[2]
    return None


def loose_oids(backend: Backend) -> Iterator[str]:
    """The oids of the loose objects under ``backend``'s ``objects/`` (one listing; stray names skipped)."""
    for key in backend.list("objects/"):
        oid = oid_of_key(key)
        if oid is not None:
            yield oid


def canonical_json(doc: object) -> bytes:
    """The one byte form of a JSON document that is hashed (a tree, a record, an archive header):
    sorted keys, no spaces, ASCII only, so equal documents get equal oids everywhere."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


@dataclass
class SweepResult:
    objects_removed: int = 0
    bytes_freed: int = 0
    packs_rewritten: int = 0


@dataclass(frozen=True)
class PutResult:
    oid: str
    new: bool


class ObjectStore:
    """put/get/has/iter/delete of bytes; compression, packing and verification live here.

    Objects under ``LOOSE_MIN`` bytes go into pack files (see ``pack``), larger
    ones are loose files. Queued pack objects become visible to other
    processes at ``flush`` (which ``sync`` includes), so callers flush before
    they write anything that refers to them.
    """

    def __init__(self, backend: Backend, level: int = 3, durable: bool = False, sync_packs: bool = True) -> None:
        self.backend = backend
        self.level = level
        self.durable = durable
        self.sync_packs = sync_packs
        self._local = threading.local()
        self._reader = PackReader(backend)
        self._reader_ready = False
        self._writer: PackWriter | None = None
        self._writer_lock = threading.Lock()
        self._loose_bytes = 0
        self._retire: list[str] = []
        # The loose oids from one listing of ``objects/`` (None until a bulk reader asks for it): with
        # it, ``get`` finds a packed object in the index without first probing for a loose file.
        self._loose: set[str] | None = None
        self._merged_at = 0  # packs written when the need for a merged index was last considered
        self._bumped = False  # this sweep wrote a new store generation (before its first deletion)

    @property
    def stored_bytes(self) -> int:
        """Compressed bytes this process has written (loose frames and packs)."""
        return self._loose_bytes + (self._writer.written if self._writer else 0)

    def _packs(self) -> PackReader:
        if not self._reader_ready:
            self._reader.refresh()
            self._reader_ready = True
        return self._reader

    def _pack_writer(self) -> PackWriter:
        """The one pack writer of this store, created on first use.

        Snapshot workers reach this at the same moment with their first
        chunks; without the lock two of them could each create a writer, and
        whatever was queued in the one that lost was never written (issue 8,
        hole 1: a checkpoint that exited 0 with chunks in no pack).
        """
        writer = self._writer
        if writer is None:
            with self._writer_lock:
                writer = self._writer
                if writer is None:
                    writer = self._writer = PackWriter(self.backend, self.level, self.durable, self._reader.add,
                                                       sync_packs=self.sync_packs)
        return writer

    def _compressor(self) -> zstandard.ZstdCompressor:
        comp = getattr(self._local, "comp", None)
        if comp is None:
            comp = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
            self._local.comp = comp
        return comp

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        dec = getattr(self._local, "dec", None)
        if dec is None:
            dec = zstandard.ZstdDecompressor()
            self._local.dec = dec
        return dec

    def put(self, data: bytes, oid: str | None = None, *, loose: bool = False) -> PutResult:
        """Store ``data`` unless already present; ``oid`` skips re-hashing.

        ``loose`` keeps a small object out of packs (checkpoint records: one
        per checkpoint, read by ``list`` without loading any pack index).
        """
        if len(data) > MAX_OBJECT_SIZE:
            raise RRStoreError(f"object of {len(data)} bytes exceeds the {MAX_OBJECT_SIZE}-byte object limit")
        oid = oid or hash_bytes(data)
        if len(data) < LOOSE_MIN and not loose:
            # Small objects live in packs (or are queued for one); a loose copy
            # of the same bytes could only be a record, so no stat is spent on it.
            packs = self._packs()
            if oid in packs.index or (packs.refresh_if_changed() and oid in packs.index):
                return PutResult(oid, False)
            return PutResult(oid, self._pack_writer().add(oid, data))
        if self.has(oid):
            return PutResult(oid, False)
        self._write_loose(oid, data)
        return PutResult(oid, True)

    def _write_loose(self, oid: str, data: bytes) -> None:
        frame = self._compressor().compress(data)
        self.backend.write(object_key(oid), frame, durable=self.durable)
        self._loose_bytes += len(frame)
        if self._loose is not None:
            self._loose.add(oid)

    def put_loose_copy(self, data: bytes, oid: str) -> None:
        """Store a good copy of ``oid`` as a loose object, even where a (damaged) copy is packed.

        ``get`` reads a loose object before it looks in packs, so from now on
        every reader gets these bytes: restore, export, push (which sends the
        loose copy) and gc (which rewrites a pack from ``get``).
        """
        _verified(oid, data)
        self._write_loose(oid, data)

    def list_loose(self) -> None:
        """List ``objects/`` once, so that ``get`` reads a packed object from its pack with no failed
        probe for a loose file first: for readers of many objects (restore, check, the undo proof, gc).

        A loose copy still wins: one in the listing, or written later through this store, is read
        before any pack. One another process writes after the listing is found too: ``get`` probes
        for it when the packs miss the object or hold a copy that reads wrong, before failing.
        Costs one listing (loose objects are few: records and good copies); taken once.
        """
        if self._loose is None:
            self._loose = set(loose_oids(self.backend))

    def get(self, oid: str) -> bytes:
        """The verified bytes of ``oid``; raises ObjectMissing or CorruptObject."""
        if self._writer is not None and (queued := self._writer.get(oid)) is not None:
            return queued
        loose = self._loose
        if loose is not None and oid not in loose:
            return self._get_listed(oid)
        try:
            frame = self.backend.read(object_key(oid))
        except KeyError:
            if loose is not None:
                loose.discard(oid)  # removed since the listing (gc in another process)
            return self._get_packed(oid)
        return decode_loose(oid, frame, self._decompressor())

    def _get_listed(self, oid: str) -> bytes:
        """``get`` of an oid the loose listing does not hold: from its pack when an index names it.

        The disk is asked before any failure, since another process may have written a loose copy
        after the listing (a good copy of a damaged packed object, a new record).
        """
        packs = self._packs()
        if oid in packs.index or oid in packs.fallback:
            try:
                return self._get_packed(oid)
            except (CorruptObject, ObjectMissing):  # a damaged copy, or a pack gc removed meanwhile
                late = self._late_loose(oid)
                if late is None:
                    raise
                return late
        late = self._late_loose(oid)
        return late if late is not None else self._get_packed(oid)

    def _late_loose(self, oid: str) -> bytes | None:
        """A loose copy of ``oid`` written after the listing (noted in it), or None."""
        try:
            frame = self.backend.read(object_key(oid))
        except KeyError:
            return None
        if self._loose is not None:
            self._loose.add(oid)
        return decode_loose(oid, frame, self._decompressor())

    def _get_packed(self, oid: str) -> bytes:
        packs = self._packs()
        loc = packs.index.get(oid) or packs.fallback.get(oid)
        if loc is None:
            packs.refresh()  # a full listing: a directory stamp can miss an index added in the same tick
            loc = self._lookup_damaged(oid)
        try:
            return _verified(oid, packs.read(oid, loc))
        except PackGone:
            packs.refresh()
            loc = self._lookup_damaged(oid)
            try:
                return _verified(oid, packs.read(oid, loc))
            except PackGone:
                raise CorruptObject(oid, reason=f"pack {loc[0]} is missing") from None

    def _lookup_damaged(self, oid: str) -> Location:
        """``oid``'s location after a miss: packs whose index is damaged or missing are
        rebuilt in memory from the packs (speed lost, never the object); else ObjectMissing,
        naming the damaged indexes when there are any."""
        packs = self._reader
        loc = packs.index.get(oid) or packs.fallback.get(oid)
        if loc is None and packs.via_midx and packs.load_own_indexes():
            loc = packs.index.get(oid)
        if loc is None and (packs.damaged or packs.orphans) and packs.rebuild_missing():
            loc = packs.fallback.get(oid)
        if loc is None:
            if packs.damaged:
                raise MissingBehindIndex(oid, sorted(packs.damaged))
            raise ObjectMissing(oid)
        return loc

    def damaged_indexes(self) -> dict[str, str]:
        """Pack id -> why its index is unusable, for every damaged index (after a fresh listing)."""
        self._packs().refresh()
        return dict(self._reader.damaged)

    def blind_packs(self) -> dict[str, str]:
        """Packs whose index is damaged and whose content cannot be rebuilt: gc must not sweep."""
        self._packs().refresh()
        return self._reader.blind()

    def pack_reader(self) -> PackReader:
        """The loaded pack indexes (for ``check``: damaged ones, orphans, rebuilt entries)."""
        return self._packs()

    def locality(self, oid: str) -> tuple[str, int, int]:
        """Where ``oid`` is stored, as a sort key: reading in this order walks each pack
        front to back, so every block is decompressed once (loose objects sort first)."""
        packs = self._packs()
        loc = packs.index.get(oid) or packs.fallback.get(oid)
        return (loc[0], loc[1], loc[3]) if loc is not None else ("", 0, 0)

    def has(self, oid: str) -> bool:
        """Stored or queued for the next pack (what ``put`` deduplicates against)."""
        packs = self._packs()
        # Queued before indexed: a flush adds a pack's entries to the index
        # before it drops them from the queue, so no window misses both.
        if self._writer is not None and oid in self._writer.pending:
            return True
        if oid in packs.index:
            return True
        if self.backend.exists(object_key(oid)):
            return True
        # Not the in-memory rebuild of a damaged or missing index (``get`` reads those):
        # a writer stores such an object again rather than lean on a damaged file.
        return packs.refresh_if_changed() and oid in packs.index

    def packed(self, oid: str) -> bool:
        """In a written pack's index or queued for the next pack: ``has`` without its probe for a loose
        file, for objects under ``LOOSE_MIN`` (trees, file contents), which ``put`` only ever packs."""
        if self._writer is not None and oid in self._writer.pending:
            return True
        packs = self._packs()
        return oid in packs.index or (packs.refresh_if_changed() and oid in packs.index)

    def missing(self, oids: Iterable[str]) -> list[str]:
        """Those of ``oids`` that are neither in a written pack's index nor loose.

        Unlike ``has``, an object only queued for a pack counts as missing: this
        is the proof a writer makes, after its flush, before a ref may reach
        the objects. Costs a dict lookup per object; a stat only for an object
        no loaded index holds (records, and anything missing).
        """
        index = self._packs().index
        absent = [oid for oid in oids if oid not in index and not self.backend.exists(object_key(oid))]
        if absent:  # a pack another process wrote meanwhile may hold them
            packs = self._packs()
            packs.refresh()
            absent = [oid for oid in absent if oid not in packs.index]
        return absent

    def __iter__(self) -> Iterator[str]:
        seen = set(self._packs().index)
        yield from seen
        for oid in loose_oids(self.backend):
            if oid not in seen:
                yield oid

    def sweep(self, live: set[str], before: float, *, dry_run: bool = False) -> SweepResult:
        """Remove every object not in ``live`` and last written before ``before`` (a timestamp).

        Loose objects are deleted; a pack whose objects are all dead is deleted;
        a pack with some dead objects is rewritten with the live ones (new pack
        and index first, then the old index, then the old pack), as are packs
        that are many and small. The caller holds the store's exclusive lock.
        Before the first deletion the store gets a new generation (``generation``).
        """
        result = SweepResult()
        self._bumped = False
        listed = self._loose = set(loose_oids(self.backend))  # gc's one listing serves its pack rewrites' reads
        for oid in list(listed):
            if oid in live:
                continue
            key = object_key(oid)
            size, mtime = self.backend.stat(key)
            if mtime < before:
                result.objects_removed += 1
                result.bytes_freed += size
                if not dry_run:
                    self._before_delete()
                    self.delete(oid)
        self._sweep_packs(live, before, dry_run, result)
        return result

    def _sweep_packs(self, live: set[str], before: float, dry_run: bool, result: SweepResult) -> None:
        packs = self._packs()
        packs.refresh()
        sizes = {pack: self.backend.stat(f"{PACKS}{pack}.pack") for pack in packs.members}
        small = [p for p, (size, _) in sizes.items() if size < SMALL_PACK]
        settled = {p for p in small if sizes[p][1] < before}
        consolidate = settled if len(small) > MAX_SMALL_PACKS and len(settled) > 1 else set()
        removed: set[str] = set()
        for pack, entries in list(packs.members.items()):
            size, mtime = sizes[pack]
            if mtime >= before:
                continue
            dead = [oid for oid in entries if oid not in live]
            if not dead and pack not in consolidate:
                continue
            # What a rewrite keeps comes from the pack's own index, never from a merged index (a
            # cache another process may have written): one missing or damaged leaves the pack alone.
            try:
                entries = decode_index(pack, self.backend.read(f"{PACKS}{pack}.idx"))
            except (KeyError, CorruptObject):
                continue
            dead = [oid for oid in entries if oid not in live]
            if not dead and pack not in consolidate:
                continue
            dead_bytes = sum(entries[oid][4] for oid in dead)
            all_bytes = sum(loc[4] for loc in entries.values()) or 1
            removed.update(dead)
            if dry_run:
                result.bytes_freed += size * dead_bytes // all_bytes
                continue
            keep = sorted((loc[1], loc[3], oid) for oid, loc in entries.items() if oid in live)
            if keep:  # in their old order: neighbours that compressed together stay together
                writer = self._pack_writer()
                for _, _, oid in keep:
                    writer.add(oid, self.get(oid))
                result.packs_rewritten += 1
            result.bytes_freed += size
            self._retire.append(pack)
        result.objects_removed += len(removed)
        if not dry_run:
            written = self.stored_bytes
            fresh = len(self._writer.packs_written) if self._writer else 0
            self.flush()
            result.bytes_freed -= self.stored_bytes - written
            # A rewrite can produce the very bytes, hence the very name, of the
            # pack it replaces: such a pack is kept, never deleted.
            new = set(self._writer.packs_written[fresh:]) if self._writer else set()
            for pack in self._retire:
                if pack in new:
                    continue
                self._before_delete()
                self.backend.delete(f"{PACKS}{pack}.idx")
                self.backend.delete(f"{PACKS}{pack}.pack")
            self._retire.clear()
            packs.refresh()
            self.merge_indexes()  # gc leaves one merged index of the packs it kept and wrote

    def _before_delete(self) -> None:
        """Once per sweep, before it removes anything: a new store generation, durable first, so no
        stat cache trusts the objects that go (``generation``)."""
        if not self._bumped:
            bump(self.backend)
            self._bumped = True

    def reload(self) -> None:
        """Forget cached pack indexes and read them again (after taking the store lock:
        a gc in another process may have rewritten packs since they were loaded)."""
        if self._reader_ready:
            self._reader.refresh()
        if self._loose is not None:
            self._loose = set(loose_oids(self.backend))

    def delete(self, oid: str) -> None:
        """Remove a loose object (packed objects leave only when gc rewrites their pack)."""
        self.backend.delete(object_key(oid))
        if self._loose is not None:
            self._loose.discard(oid)

    def flush(self) -> None:
        """Write queued small objects as a pack, so other processes can read them; then, when more
        than ``UNCOVERED_MAX`` packs are covered by no merged index, write one (``merge_indexes``)."""
        if self._writer is not None:
            try:
                self._writer.flush()
            finally:  # the compression and flushing threads stop whether or not the write succeeded
                self._writer.close()
            if len(self._writer.packs_written) > self._merged_at:
                self._merged_at = len(self._writer.packs_written)
                if len(self._reader.uncovered()) > UNCOVERED_MAX:
                    self.merge_indexes()

    def merge_indexes(self) -> str | None:
        """Write a merged index of every current pack (``packindex``) and drop the ones it supersedes.

        Derived data: a failure (a full disk, a read-only store) costs only speed and is not
        raised. Returns the merged index's name, or None.
        """
        try:
            packs = self._packs()
            packs.refresh()
            return packs.write_midx()
        except (OSError, RRStoreError):
            return None

    def sync(self) -> None:
        """Write barrier: make every object written so far visible and durable."""
        self.flush()
        self.backend.sync()


def decode_loose(oid: str, frame: bytes, decompressor: zstandard.ZstdDecompressor | None = None) -> bytes:
    """A loose object's bytes: the frame must declare its size (within the limit) and hash to ``oid``."""
    try:
        size = zstandard.frame_content_size(frame)
        if not 0 <= size <= MAX_OBJECT_SIZE:
            raise CorruptObject(oid, reason=f"frame declares {size} bytes (limit {MAX_OBJECT_SIZE})")
        data = (decompressor or zstandard.ZstdDecompressor()).decompress(frame, max_output_size=max(size, 1))
    except zstandard.ZstdError as exc:
        raise CorruptObject(oid, reason=f"not a valid zstd frame ({exc})") from None
    return _verified(oid, data)


def _verified(oid: str, data: bytes) -> bytes:
    actual = hash_bytes(data)
    if actual != oid:
        raise CorruptObject(oid, actual=actual)
    return data
