"""Snapshot (verb over scope, objects and trees): turn a working tree into a root tree.

Files are read, hashed and stored in parallel (blake3 and zstd release the
GIL). A file is read between two ``fstat`` calls; if its size, mtime or ctime
moved, it is read again; a file that never settles is never stored torn: it
is left out of the snapshot (named in ``Snapshot.left_out``, so the state
hash excludes it), or with ``strict`` the snapshot fails (TornRead). With
``store=False`` nothing is written: the same code answers "what is the state
hash of the working tree right now".
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import blake3

from ..errors import RRStoreError, TornRead, from_oserror
from ..heap import one_arena
from ..store.generation import StoreToken, store_token
from ..store.objects import ObjectStore, hash_bytes
from ..tree import DIR, FILE, SYMLINK, Entry, tree_oid
from .gitrepo import NO_GIT, GitState
from .scan import TEMP_MARK, Scope, is_worktree_temp
from .statcache import SETTLE_NS, StatCache, stamp
from .workers import PARALLEL_MIN_SIZE, Progress, run_split

T = TypeVar("T")
READ_TRIES = 4
TORN_REASON = "kept changing while it was read"
CHUNK_THRESHOLD = 4 << 20
# 256 KiB average: on a 100 MB file with ten small edits, a new checkpoint
# stores 4.6% of the file, against 18% at 1 MiB (benchmarks/results/tuning.md).
CHUNK_AVG = 256 << 10


@functools.cache
def chunker() -> Any:
    """FastCDC with the parameters the tree format fixes (imported when first needed)."""
    from pyfastcdc import FastCDC

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
    # The scope's left-out directories plus files that never settled -> why (the record's ``left_out``).
    left_out: dict[str, str] = field(default_factory=dict)
    # Every regular file the scan met (what the stat cache keeps when saved later: ``save_cache``).
    seen: set[str] = field(default_factory=set)
    # Temporary files a killed restore left (removed by a snapshot that stores, or ``store_hashed``).
    leftovers: list[str] = field(default_factory=list)
    # Its cache hits were taken without asking the store (``snapshot``'s ``trust``): if the proof then
    # finds an object gone, the caller scans again without trust.
    trusted: bool = False


class Hot(Exception):
    """The file changed too recently to tell a quiet read from a torn one."""


def settle_window(st: os.stat_result) -> int:
    """How recent a change must be to count as "maybe during the read", in ns.

    Linux stamps files from a coarse clock (one tick, 1-10 ms), so a write
    during a read can leave mtime and ctime unchanged when the file changed
    just before. Filesystems with whole-second or millisecond stamps get a
    window of two seconds.
    """
    return 2_000_000_000 if st.st_ctime_ns % 1_000_000 == 0 else SETTLE_NS


def stable_read(path: str | Path, consume: Callable[[int], tuple[T, int]], *,
                settle: bool = True) -> tuple[T, os.stat_result]:
    """Run ``consume(fd)`` (which returns a result and the bytes it read) while nothing changed the file.

    A read counts only when size, mtime, ctime and inode are the same before
    and after it, it covered the whole file, and the last change (ctime,
    which no one can set by hand) lies outside the settle window before the
    read began. A file changed more recently is read again after the window
    passes (``settle``), or reported as ``Hot`` so a caller can batch the
    waiting. A file that never settles raises TornRead: a torn copy is never
    returned.
    """
    for attempt in range(READ_TRIES):
        started = time.time_ns()
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            before = os.fstat(fd)
            result, length = consume(fd)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        if stamp(before) != stamp(after) or length != after.st_size:
            continue
        window = settle_window(after)
        if after.st_ctime_ns < started - window:
            return result, after
        if not settle:
            raise Hot(str(path))
        if attempt + 1 < READ_TRIES:
            time.sleep(window / 1e9)
    raise TornRead(str(path))


def _read_all(fd: int, limit: int = -1, size: int = 1 << 20) -> tuple[bytes, int]:
    """The file's bytes from the current offset (at most ``limit`` of them, when given).

    Reads ask for ``size`` + 1 bytes (the size ``fstat`` gave, at most 1 MiB), so
    a small file costs a buffer of its own size, not one of 1 MiB: freed 1 MiB
    buffers of many threads fragment the C heap and add to the process's RSS.
    """
    step = min(size + 1, 1 << 20)
    chunks = []
    while limit and (chunk := os.read(fd, step if limit < 0 else min(limit, step))):
        chunks.append(chunk)
        limit -= len(chunk) if limit > 0 else 0
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return data, len(data)


def read_stable(path: str | Path, *, settle: bool = True) -> tuple[bytes, os.stat_result]:
    """The file's bytes, read while nothing changed it (see ``stable_read``)."""
    return stable_read(path, _read_all, settle=settle)


def store_file(path: str, objects: ObjectStore, *, store: bool, settle: bool) -> tuple[Stored, os.stat_result]:
    """Hash (and with ``store``, save) one file, read while nothing changed it.

    A large file is streamed through the chunker, so memory stays at a few
    chunks whatever the file's size; a smaller one is read whole (up to the
    threshold: one that grew meanwhile is streamed too).
    """

    def consume(fd: int) -> tuple[Stored, int]:
        size = os.fstat(fd).st_size
        if size <= CHUNK_THRESHOLD:
            data, length = _read_all(fd, CHUNK_THRESHOLD + 1, size)
            if length <= CHUNK_THRESHOLD:
                return store_content(objects, data, store=store), length
            os.lseek(fd, 0, os.SEEK_SET)
        return _store_stream(fd, objects, store=store)

    return stable_read(path, consume, settle=settle)


def _store_stream(fd: int, objects: ObjectStore, *, store: bool) -> tuple[Stored, int]:
    """Chunk, hash and store a large file in one pass: the whole-file hash is fed each chunk as it is cut.

    The file is read once (``stable_read`` reads it again only when it changed meanwhile). Each byte
    is still hashed twice, for its chunk's oid and for the whole-file hash, and must be: a BLAKE3
    digest is the root of a tree over 1 KiB blocks whose chaining values depend on each block's
    position in the input, and content-defined cuts neither fall on 1 KiB boundaries nor start at
    position 0 of the file, so no chunk's hash is a subtree of the file's. That second hash costs
    about 0.24 s of CPU per GiB, against ~6 s for the whole checkpoint (docs/benchmarks.md).
    """
    whole = blake3.blake3()
    result = Stored("")
    chunks = []
    length = 0
    for chunk in chunker().cut_stream(io.FileIO(fd, closefd=False)):
        piece = bytes(chunk.data)  # the stream reuses its buffer
        length += len(piece)
        whole.update(piece)
        oid = hash_bytes(piece)
        chunks.append(oid)
        if store and objects.put(piece, oid).new:
            result.objects_new += 1
            result.bytes_new += len(piece)
    result.oid = whole.hexdigest()
    result.chunks = tuple(chunks)
    return result, length


def tree_names(entries: list[Entry]) -> tuple[str, ...]:
    """What a directory's cached tree is checked against: its entries' names, a subdirectory's with
    its tree oid, a symlink's with its target (a file's content is vouched for by its stat-cache hit)."""
    return tuple(sorted(e.name if e.kind == FILE else f"{e.name}/{e.oid}" if e.kind == DIR
                        else f"{e.name}\0{e.target}" for e in entries))


class _Builder:
    """Collects per-path entries, then folds them into tree objects bottom-up.

    With a stat cache, a directory whose files all hit it (none is in ``read``) and whose names and
    subtrees are those cached with its tree reuses that tree's oid: nothing is encoded or hashed
    (when storing, the tree object must still be in the store, unless ``check`` is off: the cache
    vouches for it).
    """

    def __init__(self, objects: ObjectStore | None, stats: SnapshotStats, cache: StatCache | None = None) -> None:
        self.objects = objects
        self.stats = stats
        self.cache = cache
        self.check = True
        self.children: dict[str, list[Entry]] = {"": []}
        self.entries: dict[str, Entry] = {}
        self.read: set[str] = set()  # directories holding a file that was read (no stat-cache hit)

    def add(self, path: str, entry: Entry, *, hit: bool = True) -> None:
        self.entries[path] = entry
        parent = path.rpartition("/")[0]
        self._ensure_dir(parent)
        self.children[parent].append(entry)
        if not hit:
            self.read.add(parent)

    def _ensure_dir(self, path: str) -> None:
        while path not in self.children:
            self.children[path] = []
            path = path.rpartition("/")[0]

    def add_dir(self, path: str) -> None:
        self._ensure_dir(path)

    def build(self) -> str:
        trees: dict[str, tuple[str, tuple[str, ...]]] = {}
        for path in sorted(self.children, key=lambda p: p.count("/") + (1 if p else 0), reverse=True):
            children = self.children[path]
            oid = None
            if self.cache is not None:
                names = tree_names(children)
                if path not in self.read:
                    oid = self.cache.tree(path, names)
                    if oid is not None and self.objects is not None and self.check and not self.objects.has(oid):
                        oid = None  # its tree object is gone (a status scan never stored it; gc): store it
            if oid is None:
                oid, data = tree_oid(children)
                if self.objects is not None and self.objects.put(data, oid).new:
                    self.stats.objects_new += 1
                    self.stats.bytes_new += len(data)
            if self.cache is not None:
                trees[path] = (oid, names)
            if path:
                name = path.rpartition("/")[2]
                entry = Entry(name, DIR, oid)
                self.entries[path] = entry
                self.children[path.rpartition("/")[0]].append(entry)
                self.stats.dirs += 1
            else:
                if self.cache is not None:
                    self.cache.remember_trees(trees)
                return oid
        raise AssertionError("root tree missing")


@dataclass
class Stored:
    """What storing one file's content cost."""

    oid: str
    chunks: tuple[str, ...] = ()
    objects_new: int = 0
    bytes_new: int = 0


def store_content(objects: ObjectStore, data: bytes, *, store: bool) -> Stored:
    """Hash a file's bytes and (with ``store``) save them.

    Files above ``CHUNK_THRESHOLD`` are cut into content-defined chunks so an
    edit stores only the chunks around it; the entry keeps the whole-file
    hash. The chunker's parameters are fixed by the tree format, so the same
    content always gives the same chunk list and the same state hash.
    """
    result = Stored(hash_bytes(data))
    pieces = [(result.oid, data)]
    if len(data) > CHUNK_THRESHOLD:
        pieces = [(hash_bytes(c.data), c.data) for c in chunker().cut_buf(data)]
        result.chunks = tuple(p[0] for p in pieces)
    if store:
        for piece_oid, piece in pieces:
            if objects.put(piece, piece_oid).new:
                result.objects_new += 1
                result.bytes_new += len(piece)
    return result


class _Parents:
    """Remembers which directories are real (not symlinks), so no path is read through a link."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.known: dict[str, bool] = {"": True}

    def real(self, parent: str) -> bool:
        known = self.known.get(parent)
        if known is not None:
            return known
        chain = []  # the unknown folders from ``parent`` up, checked top-down (no recursion: any depth)
        while known is None:
            chain.append(parent)
            parent = parent.rpartition("/")[0]
            known = self.known.get(parent)
        for folder in reversed(chain):
            if known:
                try:
                    known = stat.S_ISDIR(os.lstat(f"{self.root}/{folder}").st_mode)
                except OSError:
                    known = False
            self.known[folder] = known
        return known


def _remove_leftovers(root: str, paths: list[str]) -> None:
    """Delete temporary files a killed restore left in the tree (a writer holds the work-tree lock)."""
    for rel in paths:
        full = f"{root}/{rel}"
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(full).st_mode):
                os.unlink(full)


def snapshot(scope: Scope, objects: ObjectStore, *, store: bool = True, workers: int = 0,
             progress: Progress | None = None, cache: StatCache | None = None,
             strict: bool = False, save_cache: bool = True, trust: bool = False) -> Snapshot:
    """Hash (and with ``store``, save) everything in ``scope``; return the root tree.

    With a ``cache``, a file whose stat is unchanged since it was last hashed
    is not read again (when storing, only if its objects are still present:
    with ``trust``, taken on the cache's word while the store's token is the
    one it was saved with, which ``Snapshot.trusted`` says; the caller's
    proof, ``ObjectStore.missing``, must then be followed by a scan without
    ``trust`` if it finds an object gone).
    ``scope.extra`` paths are held like the others when they exist (one
    lstat each, none for a directory above a scoped file); an extra
    directory only when it is empty. Paths below a symlinked or replaced
    directory are left out: git still lists tracked paths there, but they
    are not in this working tree. A file that never gives a stable read
    (a log being written) is left out and named in ``left_out``, or with
    ``strict`` raises TornRead and nothing is recorded. Without ``save_cache``
    the caller saves the stat cache (``cache.save(snap.seen)``) once it knows
    the scan is used (a restore refused after it leaves the store as it was).
    """
    one_arena()  # before the readers' threads start: see rrstore.heap
    written_before = objects.stored_bytes
    if cache is not None:
        cache.begin()
    run = _SnapshotRun(scope, objects, store=store, cache=cache, strict=strict, progress=progress)
    run.trust(trust)
    run.scan()
    run.read_misses(workers)
    return run.finish(written_before, save_cache)


@dataclass(frozen=True)
class _NotRead:
    """A file a first read did not take: ``hot`` (changed just now: read again after one shared
    wait), else it never settled (left out as torn)."""

    rel: str
    hot: bool


class _SnapshotRun:
    """One snapshot's state: the scan fills the builder from the stat cache and lists the files it
    must read (``misses``); reading them adds their entries; ``finish`` builds the trees.

    Only the calling thread changes this state: the reads run in a pool too (``run_split``) and
    return what they found, which ``read_misses`` records as it consumes them.
    """

    def __init__(self, scope: Scope, objects: ObjectStore, *, store: bool, cache: StatCache | None,
                 strict: bool, progress: Progress | None) -> None:
        self.scope, self.objects, self.store = scope, objects, store
        self.cache, self.strict, self.progress = cache, strict, progress
        self.root = os.fspath(scope.root)
        self.stats = SnapshotStats()
        self.builder = _Builder(objects if store else None, self.stats, cache)
        self.parents = _Parents(self.root)
        self.extra = set(scope.extra)
        self.misses: list[str] = []  # regular files the cache cannot answer for: read after the scan
        self.sizes: dict[str, int] = {}  # their sizes, which decide who reads them (here or the pool)
        self.seen: set[str] = set()  # every regular file met: what the stat cache keeps
        self.leftovers: list[str] = []  # temporary files a killed restore left: removed when storing
        self.torn: list[str] = []  # files that never settled: left out
        self.total = 0  # bytes to read (the misses' sizes from the scan's lstat) and read so far: ``progress``
        self.read = 0
        self.token: StoreToken | None = None  # the store's token as the scan began (when storing)
        self.trusted = False  # hits are taken without ``has`` (the cache vouches for their objects)

    def trust(self, wanted: bool) -> None:
        """When storing with a cache: note the store's token, and with ``wanted`` trust the cache's
        hits if it was saved under that very token (``StatCache.trusted``)."""
        if self.store and self.cache is not None:
            self.token = store_token(self.objects.backend)
            self.trusted = wanted and self.cache.trusted(self.token)
            self.builder.check = not self.trusted

    # the scan ------------------------------------------------------------

    def scan(self) -> None:
        """One lstat per scoped path: entries for what the cache answers, ``misses`` for the rest."""
        for rel in self.scope.paths:
            self._visit(rel)
        for rel in self.scope.empty_dirs:
            if self.parents.real(rel.rpartition("/")[0]):
                self.builder.add_dir(rel)
        self.total = sum(self.sizes.values())

    def _visit(self, rel: str) -> None:
        extra = bool(self.extra) and rel in self.extra
        if extra and self.parents.known.get(rel):
            return  # an extra path that is a directory already seen above a scoped file
        if not self.parents.real(rel.rpartition("/")[0]):
            return
        if TEMP_MARK in rel and is_worktree_temp(rel):
            self.leftovers.append(rel)  # below real directories only: never removed through a link
            return
        full = f"{self.root}/{rel}"
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise from_oserror(exc, full, "read") from exc
        if stat.S_ISREG(st.st_mode):
            self._regular(rel, st)
        elif stat.S_ISLNK(st.st_mode):
            self.builder.add(rel, Entry(rel.rpartition("/")[2], SYMLINK, target=os.readlink(full)))
            self.stats.symlinks += 1
        elif stat.S_ISDIR(st.st_mode) and not os.listdir(full):
            self.builder.add_dir(rel)
        elif not extra:  # an extra directory with content is held by its content
            self.stats.skipped.append(rel)

    def _regular(self, rel: str, st: os.stat_result) -> None:
        """A regular file: its entry from the stat cache (when storing, only if its objects are still
        present), else a miss to read."""
        self.seen.add(rel)
        hit = self.cache.lookup(rel, st) if self.cache is not None else None
        if hit is not None and (not self.store or self.trusted or (
                all(map(self.objects.has, hit.chunks)) if hit.chunks else self.objects.has(hit.oid))):
            # positional: the hot path of an unchanged re-checkpoint builds one per file
            self.builder.add(rel, Entry(rel.rpartition("/")[2], FILE, hit.oid, st.st_size,
                                        bool(st.st_mode & stat.S_IXUSR), "", hit.chunks))
            self.stats.files += 1
            self.stats.bytes_scanned += st.st_size
        else:
            self.misses.append(rel)
            self.sizes[rel] = st.st_size

    # reading the misses --------------------------------------------------

    def read_misses(self, workers: int) -> None:
        """Read every miss (large ones in a pool); files changed just now once more after one wait."""
        hot: list[str] = []
        results = run_split(self.misses, lambda rel: self.sizes[rel] >= PARALLEL_MIN_SIZE, self._first_read,
                            workers)
        for done in results:
            if isinstance(done, _NotRead):
                (hot if done.hot else self.torn).append(done.rel)
            else:
                self._account(*done)
        if hot:
            time.sleep(SETTLE_NS / 1e9)
            for rel in hot:
                again = self._read(rel, settle=True)
                if again is None:
                    self.torn.append(rel)
                else:
                    self._account(*again)
        if self.progress is not None and self.misses:  # ends at the bytes read: a file may have grown or torn
            self.progress(self.read, self.read)

    def _first_read(self, rel: str) -> tuple[str, Entry, Stored] | _NotRead:
        """Run in worker threads too: changes none of this run's lists, only the stat cache's entry
        for ``rel`` (one dict item per path, as before) and the object store (thread-safe)."""
        try:
            return self._read(rel, settle=False) or _NotRead(rel, hot=False)
        except Hot:
            return _NotRead(rel, hot=True)

    def _read(self, rel: str, settle: bool) -> tuple[str, Entry, Stored] | None:
        """Hash (and store) one file; None when it never settled (unless ``strict``: TornRead)."""
        full = f"{self.root}/{rel}"
        try:
            stored, st = store_file(full, self.objects, store=self.store, settle=settle)
        except TornRead:
            if self.cache is not None:
                self.cache.forget(rel)  # what it names may not be stored: it must vouch for nothing
            if self.strict:
                raise
            return None
        except OSError as exc:
            raise from_oserror(exc, full, "read") from exc
        if self.cache is not None:
            self.cache.record(rel, st, stored.oid, stored.chunks)
        entry = Entry(rel.rpartition("/")[2], FILE, stored.oid, st.st_size, bool(st.st_mode & stat.S_IXUSR),
                      chunks=stored.chunks)
        return rel, entry, stored

    def _account(self, rel: str, entry: Entry, stored: Stored) -> None:
        self.builder.add(rel, entry, hit=False)
        self.stats.files += 1
        self.stats.bytes_scanned += entry.size
        self.stats.objects_new += stored.objects_new
        self.stats.bytes_new += stored.bytes_new
        if self.progress is not None:
            self.read += entry.size
            self.progress(self.read, self.total)

    # the trees -----------------------------------------------------------

    def finish(self, written_before: int, save_cache: bool = True) -> Snapshot:
        """Build the trees bottom up; when storing, remove leftovers and flush the pack."""
        root_oid = self.builder.build()
        if self.store:
            _remove_leftovers(self.root, self.leftovers)
            self.objects.flush()
            self.stats.stored_bytes_new = self.objects.stored_bytes - written_before
            self._vouch()
        if self.cache is not None and save_cache:
            self.cache.save(self.seen)
        left_out = {**self.scope.left_out, **{rel: TORN_REASON for rel in sorted(self.torn)}}
        return Snapshot(root_oid, self.builder.entries, self.stats, self.scope.git, left_out, self.seen,
                        [] if self.store else self.leftovers, self.trusted)

    def _vouch(self) -> None:
        """After the flush: every entry the cache keeps was a hit or is stored, every tree too; the
        cache records the store's token as it is now (our packs added), unless the generation moved
        since the scan began (something removed objects meanwhile: then it vouches for nothing)."""
        if self.cache is None:
            return
        now = store_token(self.objects.backend)
        same = now is not None and self.token is not None and now.generation == self.token.generation
        self.cache.vouch(now if same else None)


def store_hashed(snap: Snapshot, root: str, objects: ObjectStore, touched: Callable[[str], bool]) -> bool:
    """Store what a hash-only snapshot (``store=False``) reaches and the store lacks, so it can be
    recorded as if it had stored (restore's undo checkpoint is the scan its plan was made from).

    A file the caller will overwrite or delete (``touched``) is always read again, so an edit made
    since the scan is caught even when the scanned bytes were stored already; any other file is
    read again only when no pack holds its objects. A tree is encoded again only when no pack
    holds it (pieces of content and trees are packed: ``ObjectStore.packed``). False when a file
    no longer holds what the scan hashed (the caller scans again, storing); the objects stored by
    then are only unreferenced.
    """
    written_before = objects.stored_bytes
    stats = snap.stats
    children: dict[str, list[Entry]] = {}
    for path, entry in snap.entries.items():
        children.setdefault(path.rpartition("/")[0], []).append(entry)
        if entry.kind != FILE or (not touched(path)
                                  and all(objects.packed(oid) for oid in entry.chunks or (entry.oid,))):
            continue
        try:
            stored, _ = store_file(f"{root}/{path}", objects, store=True, settle=True)
        except (TornRead, OSError):
            return False
        if (stored.oid, stored.chunks) != (entry.oid, entry.chunks):
            return False
        stats.objects_new += stored.objects_new
        stats.bytes_new += stored.bytes_new
    trees = [("", snap.root_oid), *((p, e.oid) for p, e in snap.entries.items() if e.kind == DIR)]
    for path, oid in trees:
        if objects.packed(oid):
            continue
        rebuilt, data = tree_oid(children.get(path, []))
        if rebuilt != oid:  # cannot happen: the scan built this tree from these entries
            raise RRStoreError(f"cannot rebuild the tree of {path or 'the root'} for the undo checkpoint")
        if objects.put(data, oid).new:
            stats.objects_new += 1
            stats.bytes_new += len(data)
    _remove_leftovers(root, snap.leftovers)
    objects.flush()
    stats.stored_bytes_new = objects.stored_bytes - written_before
    return True
