"""Stat cache (beside snapshot): skip reading files whose stat has not changed.

Maps a path to the (size, mtime_ns, ctime_ns, inode, mode) it had when it was
hashed, and the hash (and chunk list) that read gave. A cached hash is
trusted only when the stat matches exactly and the file's mtime is older than
the moment the scan that cached it began (git's "racy clean" rule): a file
edited in the same clock tick as its hashing keeps its mtime, so such a file
is hashed again next time instead of trusted.

The file is private to this store and this Python: ``RRSC2 <python
version>\\n`` then a ``marshal`` dump (the fastest loader Python has, which
matters on every unchanged re-checkpoint). A cache that does not load is
ignored and rebuilt: it only ever saves work.
"""

from __future__ import annotations

import marshal
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import RRStoreError
from .fsutil import atomic_write, temp_name

# A change this recent may have happened during a read or a write without
# moving a coarse (one clock tick) timestamp; such files are read again.
SETTLE_NS = 30_000_000

MAGIC = f"RRSC2 {sys.version_info[0]}.{sys.version_info[1]}\n".encode()

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
        self.racy = False

    def load(self) -> StatCache:
        try:
            data = self.path.read_bytes()
        except OSError:
            return self
        try:
            self.entries, self.trusted_before = _decode(data)
        except (ValueError, TypeError, EOFError, IndexError):
            self.entries, self.trusted_before = {}, 0
        return self

    def begin(self) -> None:
        """Note the clock as the scan starts (the racy boundary).

        The earlier of the store filesystem's clock and the system clock, less
        a settle window: the work tree may sit on another filesystem than the
        store, and a boundary too early only costs a re-read.
        """
        self.scan_start = min(fs_now(self.tmp_dir), time.time_ns()) - SETTLE_NS

    def lookup(self, path: str, st: os.stat_result) -> Cached | None:
        hit = self.entries.get(path)
        if hit is None or hit.stamp != stamp(st):
            return None
        if st.st_mtime_ns >= self.trusted_before:
            self.racy = True
            return None
        return hit

    def record(self, path: str, st: os.stat_result, oid: str, chunks: tuple[str, ...]) -> None:
        new = Cached(stamp(st), oid, chunks)
        if self.entries.get(path) != new:
            self.entries[path] = new
            self.changed = True

    def remember_written(self, root: str, written: dict[str, tuple[str, tuple[str, ...], Stamp]]) -> None:
        """Trust files rrstore itself just wrote (restore), so the next scan need not read them.

        Each comes with the stat taken right after it was written; a file
        whose stat moved since (someone edited it meanwhile) is not recorded.
        The boundary is set one settle window before now: a file written in
        the last moments stays racy and is hashed again, as git does with
        files as new as its index.
        """
        for path, (oid, chunks, written_stamp) in written.items():
            try:
                st = os.lstat(f"{root}/{path}")
            except OSError:
                continue
            if stamp(st) == written_stamp:
                self.record(path, st, oid, chunks)
        self.scan_start = min(fs_now(self.tmp_dir), time.time_ns()) - SETTLE_NS
        self.racy = True
        self.save(set(self.entries))

    def save(self, keep: set[str]) -> None:
        """Write the cache for the paths in ``keep`` (the files just scanned)."""
        if set(self.entries) - keep:
            self.entries = {p: c for p, c in self.entries.items() if p in keep}
            self.changed = True
        if not (self.changed or self.racy):
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
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
    paths = list(entries)
    rows = [entries[p] for p in paths]
    body = (scan_start, paths, [c.stamp for c in rows], [c.oid for c in rows], [c.chunks for c in rows])
    return MAGIC + marshal.dumps(body)


def _decode(data: bytes) -> tuple[dict[str, Cached], int]:
    if not data.startswith(MAGIC):
        raise ValueError("not a stat cache of this Python")
    scan_start, paths, stamps, oids, chunks = marshal.loads(data[len(MAGIC):])
    entries = {p: Cached(s, o, c) for p, s, o, c in zip(paths, stamps, oids, chunks, strict=True)}
    return entries, scan_start
