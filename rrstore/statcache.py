"""Stat cache (beside snapshot): skip reading files whose stat has not changed.

Maps a path to the (size, mtime_ns, ctime_ns, inode, mode) it had when it was
hashed, and the hash (and chunk list) that read gave. A cached hash is
trusted only when the stat matches exactly and the file's mtime is older than
the moment the scan that cached it began (git's "racy clean" rule): a file
edited in the same clock tick as its hashing keeps its mtime, so such a file
is hashed again next time instead of trusted.

Binary, little-endian: ``RRSC1\\n``, int64 scan start (filesystem clock, ns),
uint32 count, then per entry ``<HQqqQIB`` (path length, size, mtime, ctime,
inode, mode, chunk count), the path bytes, the 32-byte hash and 32 bytes per
chunk. A cache that does not parse is ignored: it only ever saves work.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import RRStoreError
from .fsutil import atomic_write, temp_name

MAGIC = b"RRSC1\n"
_HEAD = struct.Struct("<qI")
_ENTRY = struct.Struct("<HQqqQIB")

Stamp = tuple[int, int, int, int, int]


def stamp(st: os.stat_result) -> Stamp:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)


@dataclass(frozen=True)
class Cached:
    stamp: Stamp
    oid: str
    chunks: tuple[str, ...]


class StatCache:
    """Loaded once per snapshot, consulted per file, saved once if anything changed."""

    def __init__(self, path: Path, tmp_dir: Path) -> None:
        self.path = path
        self.tmp_dir = tmp_dir
        self.entries: dict[str, Cached] = {}
        self.trusted_before = 0
        self.scan_start = 0
        self.changed = False

    def load(self) -> StatCache:
        try:
            data = self.path.read_bytes()
        except OSError:
            return self
        try:
            self.entries, self.trusted_before = _decode(data)
        except (struct.error, ValueError, UnicodeDecodeError):
            self.entries, self.trusted_before = {}, 0
        return self

    def begin(self) -> None:
        """Note the filesystem's clock as the scan starts (the racy boundary)."""
        self.scan_start = fs_now(self.tmp_dir)

    def lookup(self, path: str, st: os.stat_result) -> Cached | None:
        hit = self.entries.get(path)
        if hit is None or hit.stamp != stamp(st) or st.st_mtime_ns >= self.trusted_before:
            return None
        return hit

    def record(self, path: str, st: os.stat_result, oid: str, chunks: tuple[str, ...]) -> None:
        new = Cached(stamp(st), oid, chunks)
        if self.entries.get(path) != new:
            self.entries[path] = new
            self.changed = True

    def save(self, keep: set[str]) -> None:
        """Write the cache for the paths in ``keep`` (the files just scanned)."""
        if set(self.entries) - keep:
            self.entries = {p: c for p, c in self.entries.items() if p in keep}
            self.changed = True
        if not self.changed and self.trusted_before == self.scan_start:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, _encode(self.entries, self.scan_start), self.tmp_dir, fsync=False)
        except (OSError, RRStoreError):
            pass  # a cache that cannot be written only costs time


def fs_now(folder: Path) -> int:
    """The current time as the filesystem holding ``folder`` stamps files."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temp_name(folder, "clock")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            return os.fstat(fd).st_mtime_ns
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError:
        return 0


def _encode(entries: dict[str, Cached], scan_start: int) -> bytes:
    out = [MAGIC, _HEAD.pack(scan_start, len(entries))]
    for path, c in entries.items():
        raw = os.fsencode(path)
        out.append(_ENTRY.pack(len(raw), *c.stamp, len(c.chunks)))
        out.append(raw)
        out.append(bytes.fromhex(c.oid))
        out.extend(bytes.fromhex(x) for x in c.chunks)
    return b"".join(out)


def _decode(data: bytes) -> tuple[dict[str, Cached], int]:
    if not data.startswith(MAGIC):
        raise ValueError("not a stat cache")
    pos = len(MAGIC)
    scan_start, count = _HEAD.unpack_from(data, pos)
    pos += _HEAD.size
    entries: dict[str, Cached] = {}
    unpack = _ENTRY.unpack_from
    for _ in range(count):
        plen, size, mtime, ctime, ino, mode, nchunks = unpack(data, pos)
        pos += _ENTRY.size
        path = os.fsdecode(data[pos:pos + plen])
        pos += plen
        oid = data[pos:pos + 32].hex()
        pos += 32
        chunks = tuple(data[pos + 32 * i:pos + 32 * (i + 1)].hex() for i in range(nchunks))
        pos += 32 * nchunks
        if pos > len(data):
            raise ValueError("truncated stat cache")
        entries[path] = Cached((size, mtime, ctime, ino, mode), oid, chunks)
    return entries, scan_start
