"""Snapshot (verb over scope, objects and trees): turn a working tree into a root tree.

Files are read, hashed and stored in parallel (blake3 and zstd release the
GIL). A file is read between two ``fstat`` calls; if its size, mtime or ctime
moved, it is read again, and after three tries the snapshot fails instead of
storing a torn copy. With ``store=False`` nothing is written: the same code
answers "what is the state hash of the working tree right now".
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RRStoreError, TornRead, from_oserror
from .objects import ObjectStore, hash_bytes
from .scan import Scope
from .statcache import StatCache
from .tree import DIR, FILE, SYMLINK, Entry, tree_oid

Progress = Callable[[int, int], None]
READ_TRIES = 3


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


def default_workers() -> int:
    return max(2, min(16, (os.cpu_count() or 2) * 2))


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def read_stable(path: Path) -> tuple[bytes, os.stat_result]:
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
    root = scope.root
    files: list[tuple[str, os.stat_result]] = []
    for rel in scope.paths:
        try:
            st = os.lstat(root / rel)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise from_oserror(exc, str(root / rel), "read") from exc
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(root / rel)
            builder.add(rel, Entry(rel.rpartition("/")[2], SYMLINK, target=target))
            stats.symlinks += 1
        elif stat.S_ISREG(st.st_mode):
            files.append((rel, st))
        elif stat.S_ISDIR(st.st_mode) and not os.listdir(root / rel):
            builder.add_dir(rel)
        else:
            stats.skipped.append(rel)
    for rel in scope.empty_dirs:
        builder.add_dir(rel)

    def one(item: tuple[str, os.stat_result]) -> tuple[str, Entry, int, int]:
        rel, st = item
        hit = cache.lookup(rel, st) if cache is not None else None
        if hit is not None and (not store or all(objects.has(o) for o in hit.chunks or (hit.oid,))):
            entry = Entry(rel.rpartition("/")[2], FILE, hit.oid, st.st_size, bool(st.st_mode & stat.S_IXUSR),
                          chunks=hit.chunks)
            return rel, entry, 0, 0
        try:
            data, st = read_stable(root / rel)
        except RRStoreError:
            raise
        except OSError as exc:
            raise from_oserror(exc, str(root / rel), "read") from exc
        oid = hash_bytes(data)
        new = stored = 0
        if store:
            result = objects.put(data, oid)
            if result.new:
                new, stored = len(data), result.stored_size
        executable = bool(st.st_mode & stat.S_IXUSR)
        if cache is not None:
            cache.record(rel, st, oid, ())
        return rel, Entry(rel.rpartition("/")[2], FILE, oid, len(data), executable), new, stored

    total = len(files)
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for done, (rel, entry, new, stored) in enumerate(pool.map(one, files), 1):
            builder.add(rel, entry)
            stats.files += 1
            stats.bytes_scanned += entry.size
            if new:
                stats.objects_new += 1
                stats.bytes_new += new
                stats.stored_bytes_new += stored
            if progress is not None:
                progress(done, total)
    root_oid = builder.build()
    if cache is not None:
        cache.save({rel for rel, _ in files})
    return Snapshot(root_oid, builder.entries, stats)
