"""Snapshot (verb over scope, objects and trees): turn a working tree into a root tree.

Files are read, hashed and stored in parallel (blake3 and zstd release the
GIL). A file is read between two ``fstat`` calls; if its size, mtime or ctime
moved, it is read again, and after three tries the snapshot fails instead of
storing a torn copy. With ``store=False`` nothing is written: the same code
answers "what is the state hash of the working tree right now".
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pyfastcdc import FastCDC

from .errors import TornRead, from_oserror
from .gitrepo import NO_GIT, GitState
from .objects import ObjectStore, hash_bytes
from .scan import Scope
from .statcache import StatCache
from .tree import DIR, FILE, SYMLINK, Entry, tree_oid

Progress = Callable[[int, int], None]
READ_TRIES = 3
CHUNK_THRESHOLD = 4 << 20
CHUNK_AVG = 1 << 20
PARALLEL_MIN_SIZE = 256 << 10


@functools.cache
def chunker() -> FastCDC:
    return FastCDC(CHUNK_AVG, min_size=CHUNK_AVG // 4, max_size=CHUNK_AVG * 4)


@dataclass
class SnapshotStats:
    files: int = 0
    symlinks: int = 0
    dirs: int = 0
    bytes_scanned: int = 0
    objects_new: int = 0
    bytes_new: int = 0
    stored_bytes_new: int = 0
    skipped: list[str] = field(default_factory=list)


@dataclass
class Snapshot:
    root_oid: str
    entries: dict[str, Entry]
    stats: SnapshotStats
    git: GitState = NO_GIT


def default_workers() -> int:
    return max(2, min(16, (os.cpu_count() or 2) * 2))


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def read_stable(path: str | Path) -> tuple[bytes, os.stat_result]:
    """The file's bytes, read while nothing changed it (else TornRead)."""
    for _ in range(READ_TRIES):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        try:
            before = os.fstat(fd)
            chunks = []
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if _stamp(before) == _stamp(after) and len(data) == after.st_size:
            return data, after
    raise TornRead(str(path))


class _Builder:
    """Collects per-path entries, then folds them into tree objects bottom-up."""

    def __init__(self, objects: ObjectStore | None, stats: SnapshotStats) -> None:
        self.objects = objects
        self.stats = stats
        self.children: dict[str, list[Entry]] = {"": []}
        self.entries: dict[str, Entry] = {}

    def add(self, path: str, entry: Entry) -> None:
        self.entries[path] = entry
        parent = path.rpartition("/")[0]
        self._ensure_dir(parent)
        self.children[parent].append(entry)

    def _ensure_dir(self, path: str) -> None:
        while path not in self.children:
            self.children[path] = []
            path = path.rpartition("/")[0]

    def add_dir(self, path: str) -> None:
        self._ensure_dir(path)

    def build(self) -> str:
        for path in sorted(self.children, key=lambda p: p.count("/") + (1 if p else 0), reverse=True):
            oid, data = tree_oid(self.children[path])
            if self.objects is not None:
                result = self.objects.put(data, oid)
                if result.new:
                    self.stats.objects_new += 1
                    self.stats.bytes_new += len(data)
                    self.stats.stored_bytes_new += result.stored_size
            if path:
                name = path.rpartition("/")[2]
                entry = Entry(name, DIR, oid)
                self.entries[path] = entry
                self.children[path.rpartition("/")[0]].append(entry)
                self.stats.dirs += 1
            else:
                return oid
        raise AssertionError("root tree missing")


def store_content(objects: ObjectStore, data: bytes, *, store: bool) -> tuple[str, tuple[str, ...], int, int]:
    """Hash a file's bytes and (with ``store``) save them: (oid, chunks, new bytes, stored bytes).

    Files above ``CHUNK_THRESHOLD`` are cut into content-defined chunks so an
    edit stores only the chunks around it; the entry keeps the whole-file hash.
    """
    oid = hash_bytes(data)
    chunks: tuple[str, ...] = ()
    pieces = [(oid, data)]
    if len(data) > CHUNK_THRESHOLD:
        pieces = [(hash_bytes(c.data), c.data) for c in chunker().cut_buf(data)]
        chunks = tuple(p[0] for p in pieces)
    new = stored = 0
    if store:
        for piece_oid, piece in pieces:
            result = objects.put(piece, piece_oid)
            if result.new:
                new += len(piece)
                stored += result.stored_size
    return oid, chunks, new, stored


def snapshot(scope: Scope, objects: ObjectStore, *, store: bool = True, workers: int = 0,
             progress: Progress | None = None, cache: StatCache | None = None) -> Snapshot:
    """Hash (and with ``store``, save) everything in ``scope``; return the root tree.

    With a ``cache``, a file whose stat is unchanged since it was last hashed
    is not read again (when storing, only if its objects are still present).
    """
    stats = SnapshotStats()
    if cache is not None:
        cache.begin()
    builder = _Builder(objects if store else None, stats)
    root = os.fspath(scope.root)
    misses: list[str] = []
    sizes: dict[str, int] = {}
    seen: set[str] = set()
    for rel in scope.paths:
        full = f"{root}/{rel}"
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise from_oserror(exc, full, "read") from exc
        name = rel.rpartition("/")[2]
        if stat.S_ISREG(st.st_mode):
            seen.add(rel)
            hit = cache.lookup(rel, st) if cache is not None else None
            if hit is not None and (not store or all(objects.has(o) for o in hit.chunks or (hit.oid,))):
                builder.add(rel, Entry(name, FILE, hit.oid, st.st_size, bool(st.st_mode & stat.S_IXUSR),
                                       chunks=hit.chunks))
                stats.files += 1
                stats.bytes_scanned += st.st_size
            else:
                misses.append(rel)
                sizes[rel] = st.st_size
        elif stat.S_ISLNK(st.st_mode):
            builder.add(rel, Entry(name, SYMLINK, target=os.readlink(full)))
            stats.symlinks += 1
        elif stat.S_ISDIR(st.st_mode) and not os.listdir(full):
            builder.add_dir(rel)
        else:
            stats.skipped.append(rel)
    for rel in scope.empty_dirs:
        builder.add_dir(rel)

    def one(rel: str) -> tuple[str, Entry, int, int]:
        full = f"{root}/{rel}"
        try:
            data, st = read_stable(full)
        except OSError as exc:
            raise from_oserror(exc, full, "read") from exc
        oid, chunks, new, stored = store_content(objects, data, store=store)
        if cache is not None:
            cache.record(rel, st, oid, chunks)
        entry = Entry(rel.rpartition("/")[2], FILE, oid, len(data), bool(st.st_mode & stat.S_IXUSR), chunks=chunks)
        return rel, entry, new, stored

    def account(rel: str, entry: Entry, new: int, stored: int) -> None:
        builder.add(rel, entry)
        stats.files += 1
        stats.bytes_scanned += entry.size
        if new:
            stats.objects_new += 1
            stats.bytes_new += new
            stats.stored_bytes_new += stored
        if progress is not None:
            progress(stats.files, total)

    # Small files are hashed in this thread: per file the work is mostly
    # Python, and threads would only fight over the GIL (measured: 400k futex
    # calls, 3x slower). Large files go to the pool, where blake3 and zstd run
    # without the GIL.
    total = stats.files + len(misses)
    large = [rel for rel in misses if sizes[rel] >= PARALLEL_MIN_SIZE]
    with ThreadPoolExecutor(max_workers=max(1, min(len(large), workers or default_workers()))) as pool:
        futures = [pool.submit(one, rel) for rel in large]
        for rel in misses:
            if sizes[rel] < PARALLEL_MIN_SIZE:
                account(*one(rel))
        for future in futures:
            account(*future.result())
    root_oid = builder.build()
    if cache is not None:
        cache.save(seen)
    return Snapshot(root_oid, builder.entries, stats, scope.git)
