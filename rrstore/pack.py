"""Pack files (inside the object store layer): many small objects in one file.

Small objects are appended to *blocks* of about ``BLOCK_SIZE`` uncompressed
bytes; each block is one zstd frame, so neighbouring small files (a source
tree's siblings) compress together, at close to whole-stream ratio, instead
of one frame and one file per object. A pack is ``RRPK1\\n`` followed by its
blocks; it is named by the BLAKE3 of its bytes and written once, atomically,
followed by its index. An index lists, sorted by oid, where each object
lives: ``<32sQIII>`` = oid, block offset, block length, offset and length
inside the uncompressed block, then a BLAKE3 of everything before it. A pack
without an index is invisible (an interrupted write) and is swept by cleanup.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import blake3
import zstandard

from .backends import Backend
from .errors import CorruptObject

PACK_MAGIC = b"RRPK1\n"
INDEX_MAGIC = b"RRPI1\n"
_ENTRY = struct.Struct("<32sQIII")
_COUNT = struct.Struct("<I")
# 1 MiB blocks: ratio 4.9 on Python's standard library at zstd level 3, against
# 4.1 at 256 KiB and 2.9 per file; decompressing one costs about a millisecond
# (benchmarks/results/tuning.md).
BLOCK_SIZE = 1 << 20
PACK_SIZE = 64 << 20
PREFIX = "packs/"
# Queued raw bytes that force a pack out even before it reaches PACK_SIZE
# compressed (well-compressing trees would otherwise hold ~5x that in memory).
MAX_PENDING = 128 << 20
# What a reader accepts as one block's size: far above what rrstore writes
# (BLOCK_SIZE plus one object), low enough to refuse a decompression bomb.
MAX_BLOCK = 256 << 20


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


def decode_index(pack: str, data: bytes) -> dict[str, Location]:
    """The entries of one index; a damaged index is a CorruptObject naming the pack."""
    body, digest = data[:-32], data[-32:]
    if not body.startswith(INDEX_MAGIC) or blake3.blake3(body).digest() != digest:
        raise CorruptObject(f"pack index {pack}", reason="index checksum mismatch")
    (count,) = _COUNT.unpack_from(body, len(INDEX_MAGIC))
    start = len(INDEX_MAGIC) + _COUNT.size
    if len(body) != start + count * _ENTRY.size:
        raise CorruptObject(f"pack index {pack}", reason="index length does not match its count")
    return {raw.hex(): (pack, boff, bsize, off, length)
            for raw, boff, bsize, off, length in _ENTRY.iter_unpack(body[start:])}


def loc_length(loc: Location) -> int:
    return loc[4]


class PackGone(Exception):
    """A pack listed by a loaded index no longer exists (gc replaced it): reload and retry."""


class PackWriter:
    """Buffers small objects into blocks and blocks into a pack; ``flush`` writes it.

    Full blocks are compressed on background threads (zstd runs without the
    GIL) while the caller goes on reading and hashing files; frames are
    appended in whatever order they finish, since the index records offsets.
    """

    def __init__(self, backend: Backend, level: int, durable: bool,
                 on_written: Callable[[dict[str, Location]], None], *, sync_packs: bool = True) -> None:
        self.backend = backend
        self.on_written = on_written
        self.level = level
        self.durable = durable
        self.sync_packs = sync_packs or durable
        self.packs_written: list[str] = []
        self.pending_bytes = 0
        self.lock = threading.Lock()
        # One flush at a time, so a flush returns only once everything queued
        # before it is written (a worker's flush at PACK_SIZE may still be
        # writing when another thread flushes).
        self.flushing = threading.Lock()
        self.local = threading.local()
        self.pending: dict[str, bytes] = {}
        self.written = 0
        self.pool: Any = None
        self.inflight: list[Any] = []
        self.block: list[tuple[str, bytes]] = []
        self.block_bytes = 0
        self._new_pack()

    def _new_pack(self) -> None:
        """Start the next pack; the open block (other threads may be filling it) carries over."""
        self.body = bytearray(PACK_MAGIC)
        self.entries: dict[str, Location] = {}

    def add(self, oid: str, data: bytes) -> bool:
        """Queue ``data``; False if it is already queued."""
        with self.lock:
            if oid in self.pending:
                return False
            self.pending[oid] = data
            self.pending_bytes += len(data)
            self.block.append((oid, data))
            self.block_bytes += len(data)
            if self.block_bytes < BLOCK_SIZE:
                return True
            self._submit_block()
            full = len(self.body) >= PACK_SIZE or self.pending_bytes >= MAX_PENDING
        if full:
            self.flush()
        return True

    def _submit_block(self) -> None:
        if not self.block:
            return
        block, self.block, self.block_bytes = self.block, [], 0
        if self.pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=max(1, min(4, (os.cpu_count() or 2) - 1)))
        self.inflight.append(self.pool.submit(self._compress, block))

    def _compress(self, block: list[tuple[str, bytes]]) -> None:
        try:
            comp = getattr(self.local, "comp", None)
            if comp is None:
                comp = self.local.comp = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
            frame = comp.compress(b"".join(data for _, data in block))
        except BaseException:
            self._forget(block)
            raise
        with self.lock:
            block_offset = len(self.body)
            self.body += frame
            offset = 0
            for oid, data in block:
                self.entries[oid] = ("", block_offset, len(frame), offset, len(data))
                offset += len(data)

    def flush(self) -> None:
        """Write everything queued as one more pack (and its index).

        Returns once every object queued before the call is in a written pack.
        If that fails (a full disk), the objects it held are dropped from the
        queue, so nothing still counts them as stored, and a pack written
        without its index is removed (no index names it, so no one can rely on it).
        """
        with self.flushing:
            self._flush()

    def _flush(self) -> None:
        with self.lock:
            self._submit_block()
            inflight, self.inflight = self.inflight, []
        failed: BaseException | None = None
        for future in inflight:
            try:
                future.result()
            except BaseException as exc:  # every block is waited for, then the first failure raised
                failed = failed or exc
        if failed is not None:
            raise failed
        with self.lock:
            if not self.entries:
                return
            data = bytes(self.body)
            staged = self.entries
            self._new_pack()
        try:
            pack, entries = self._write(data, staged)
        except BaseException:
            self._forget(staged.items())
            raise
        self.on_written(entries)
        with self.lock:
            self.written += len(data)
            self.packs_written.append(pack)
            for oid in entries:
                if self.pending.pop(oid, None) is not None:
                    self.pending_bytes -= loc_length(entries[oid])

    def _write(self, data: bytes, staged: dict[str, Location]) -> tuple[str, dict[str, Location]]:
        """Write one pack, then its index; if the index fails, take back a pack that was not there before."""
        pack = blake3.blake3(data).hexdigest()
        key = f"{PREFIX}{pack}"
        existed = self.backend.exists(f"{key}.pack")  # the same bytes, already stored (or awaiting repair)
        # The pack is durable before its index exists: an index never names a
        # pack that a power cut could leave empty, even in "batch" fsync mode.
        self.backend.write(f"{key}.pack", data, durable=self.sync_packs)
        entries = {oid: (pack, *loc[1:]) for oid, loc in staged.items()}
        try:
            self.backend.write(f"{key}.idx", encode_index(entries), durable=self.durable)
        except BaseException:
            if not existed and not self.backend.exists(f"{key}.idx"):
                with contextlib.suppress(Exception):
                    self.backend.delete(f"{key}.pack")
            raise
        return pack, entries

    def _forget(self, items: Iterable[tuple[str, object]]) -> None:
        """Drop objects that will not be written from the queue (their write failed)."""
        with self.lock:
            for oid, _ in items:
                data = self.pending.pop(oid, None)
                if data is not None:
                    self.pending_bytes -= len(data)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None


class PackReader:
    """The union of all pack indexes, and a small cache of decompressed blocks."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.version: object = None
        self.index: dict[str, Location] = {}
        self.members: dict[str, dict[str, Location]] = {}
        self.loaded: set[str] = set()
        self.lock = threading.Lock()
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
        """Load indexes of packs not seen yet and forget packs that are gone (gc rewrote them)."""
        self.version = self.backend.version(PREFIX)
        with self.lock:
            known = set(self.loaded)  # a pack this process adds during the listing is not "gone"
        names = [k[len(PREFIX):-4] for k in self.backend.list(PREFIX) if k.endswith(".idx")]
        gone = known - set(names)
        if gone:
            with self.lock:
                self.index = {oid: loc for oid, loc in self.index.items() if loc[0] not in gone}
                self.loaded -= gone
                for pack in gone:
                    self.members.pop(pack, None)
        for pack in names:
            if pack in self.loaded:
                continue
            try:
                entries = decode_index(pack, self.backend.read(f"{PREFIX}{pack}.idx"))
            except KeyError:
                continue
            with self.lock:
                self.index.update(entries)
                self.members[pack] = entries
                self.loaded.add(pack)

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
                while len(self.cache) > 64:
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
        try:
            size = zstandard.frame_content_size(frame)
            if not 0 <= size <= MAX_BLOCK:
                raise CorruptObject(oid, reason=f"pack {pack} block declares {size} bytes")
            return dec.decompress(frame, max_output_size=max(size, 1))
        except zstandard.ZstdError as exc:
            raise CorruptObject(oid, reason=f"pack {pack} block is not a valid zstd frame ({exc})") from None
