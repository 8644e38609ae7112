"""Store statistics (a verb over the whole local store): what the checkpoints hold and what it costs.

``stats`` answers what ``du -sh .checkpoints/*/`` cannot: how many
checkpoints each lane and kind has, how many bytes they name (logical: the
sum of file sizes over every checkpoint; unique: each distinct content
once), what the store spends on disk (``objects/`` and ``packs/``, and the
whole directory part by part), the ratios between them, the biggest file
contents (with a path and the checkpoints naming each), the biggest
directories of the newest step checkpoint, and how many stored bytes each
day's checkpoints were first to reach.

A packed object has no file of its own: its stored bytes are its share of
its block (``block size * length // bytes of the block's objects``, all from
the pack index), a loose one's are its file's size. Growth per day walks the
checkpoints in the order this store got them and gives each object to the
first one that reaches it, by the UTC day that checkpoint was added.

Cost: one walk of the store directory (a stat per file), the pack indexes,
one read of each distinct tree (each tree of the newest checkpoint once
more); memory grows with the distinct objects, like gc's mark. Damage (a
record or tree that cannot be read, a content object missing) is counted
and named in the result with the checkpoints it affects, never raised.
"""

from __future__ import annotations

import heapq
import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

from .checkpoint import CheckpointManager
from .errors import CorruptObject, ObjectMissing, RRStoreError
from .record import CheckpointRecord
from .store.objects import ObjectStore, is_oid
from .store.pack import PREFIX as PACKS
from .tree import DIR, FILE, Entry, content_oids, read_tree

# The parts of a store directory ``stats`` sizes one by one; anything else is "other".
PARTS = ("objects", "packs", "index", "cache", "refs", "tmp", "locks", "quarantine")
EMPTY: frozenset[str] = frozenset()
Top = tuple[int, str]  # (-size, content hash): sorts biggest first, then by hash


@dataclass
class Usage:
    """Files below one part of the store: their count, bytes (st_size) and disk use (st_blocks, as du counts)."""

    files: int = 0
    bytes: int = 0
    disk: int = 0

    def add(self, st: os.stat_result) -> None:
        self.files += 1
        self.bytes += st.st_size
        self.disk += st.st_blocks * 512

    def to_json(self) -> dict[str, int]:
        return {"files": self.files, "bytes": self.bytes, "disk": self.disk}


@dataclass
class BigFile:
    hash: str
    size: int
    path: str
    checkpoints: list[str]

    def to_json(self) -> dict[str, object]:
        return {"hash": self.hash, "size": self.size, "path": self.path, "checkpoints": self.checkpoints}


@dataclass
class Day:
    day: str
    checkpoints: int = 0
    objects: int = 0
    stored_bytes: int = 0

    def to_json(self) -> dict[str, object]:
        return {"day": self.day, "checkpoints": self.checkpoints, "objects": self.objects,
                "stored_bytes": self.stored_bytes}


@dataclass
class Lane:
    checkpoints: int = 0
    logical_bytes: int = 0

    def to_json(self) -> dict[str, int]:
        return {"checkpoints": self.checkpoints, "logical_bytes": self.logical_bytes}


@dataclass
class BadObject:
    """An object a checkpoint reaches that cannot be read (``check``'s kinds) and the checkpoints reaching it."""

    kind: str
    oid: str
    reason: str
    checkpoints: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "oid": self.oid, "reason": self.reason, "checkpoints": self.checkpoints}


@dataclass
class StoreStats:
    """What ``rrstore stats`` prints; see the module docstring for how each figure is counted."""

    store: str
    lanes: dict[str, Lane] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    pinned: int = 0
    files: int = 0
    logical_bytes: int = 0
    unique_files: int = 0
    unique_bytes: int = 0
    referenced_bytes: int = 0
    usage: dict[str, Usage] = field(default_factory=lambda: {part: Usage() for part in (*PARTS, "other")})
    biggest_files: list[BigFile] = field(default_factory=list)
    biggest_dirs_of: str | None = None
    biggest_dirs: list[tuple[str, int, int]] = field(default_factory=list)  # (path, bytes, files)
    growth: list[Day] = field(default_factory=list)
    damaged_checkpoints: dict[str, str] = field(default_factory=dict)
    damaged_objects: list[BadObject] = field(default_factory=list)

    @property
    def checkpoints(self) -> int:
        return sum(lane.checkpoints for lane in self.lanes.values())

    @property
    def stored_bytes(self) -> int:
        """Bytes of the files in ``objects/`` and ``packs/``: what the checkpoints' data costs on disk."""
        return self.usage["objects"].bytes + self.usage["packs"].bytes

    @property
    def total(self) -> Usage:
        return Usage(*(sum(getattr(u, name) for u in self.usage.values()) for name in ("files", "bytes", "disk")))

    @property
    def dedup_ratio(self) -> float | None:
        return round(self.logical_bytes / self.unique_bytes, 3) if self.unique_bytes else None

    @property
    def compression_ratio(self) -> float | None:
        return round(self.unique_bytes / self.stored_bytes, 3) if self.stored_bytes else None

    @property
    def success(self) -> bool:
        return not (self.damaged_checkpoints or self.damaged_objects)

    def to_json(self) -> dict[str, object]:
        return {
            "store": self.store, "success": self.success,
            "checkpoints": {"total": self.checkpoints, "pinned": self.pinned, "kinds": dict(sorted(self.kinds.items())),
                            "lanes": {name: lane.to_json() for name, lane in sorted(self.lanes.items())}},
            "files": self.files, "logical_bytes": self.logical_bytes, "unique_files": self.unique_files,
            "unique_bytes": self.unique_bytes, "stored_bytes": self.stored_bytes,
            "referenced_bytes": self.referenced_bytes, "unreferenced_bytes": self.stored_bytes - self.referenced_bytes,
            "dedup_ratio": self.dedup_ratio, "compression_ratio": self.compression_ratio,
            "store_usage": {**{name: u.to_json() for name, u in self.usage.items()}, "total": self.total.to_json()},
            "biggest_files": [f.to_json() for f in self.biggest_files],
            "biggest_dirs": {"checkpoint_id": self.biggest_dirs_of,
                             "dirs": [{"path": p, "bytes": b, "files": n} for p, b, n in self.biggest_dirs]},
            "growth": [d.to_json() for d in self.growth],
            "damaged_checkpoints": self.damaged_checkpoints,
            "damaged_objects": [b.to_json() for b in self.damaged_objects],
        }


def stats(manager: CheckpointManager, *, top: int = 10) -> StoreStats:
    """The figures of the store ``manager`` opened (every project's checkpoints); ``top`` biggest files and dirs."""
    store = manager.store
    result = StoreStats(str(store.path))
    with store.writing(read_only=True):  # not while a gc rewrites packs
        records = manager.list_checkpoints(all_projects=True)
        loose = measure(store.path, result.usage)  # after the listing, which may rewrite the record index
        result.damaged_checkpoints = {i: str(exc) for i, exc in sorted(manager.damaged.items())}
        result.pinned = sum(1 for _ in store.pins)
        tally = Tally(store.objects, StoredShare(store.objects, loose), max(top, 0))
        for record in reversed(records):  # oldest first: each object goes to the first checkpoint reaching it
            tally.checkpoint(record, result)
        tally.finish(records, result)
    return result


def measure(path: Path, usage: dict[str, Usage]) -> dict[str, int]:
    """Add every file below store ``path`` to its part of ``usage``; the loose objects' sizes by oid."""
    loose: dict[str, int] = {}
    for top, dirs, files in os.walk(path):
        rel = os.path.relpath(top, path)
        part = rel.split(os.sep, 1)[0]
        into = usage[part] if part in PARTS else usage["other"]
        for name in files:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue  # gone since the listing (a tmp file, a lock)
            if not stat.S_ISREG(st.st_mode):
                continue
            into.add(st)
            if part == "objects" and rel.count(os.sep) == 1 and is_oid(os.path.basename(rel) + name):
                loose[os.path.basename(rel) + name] = st.st_size
        dirs.sort()
    return loose


class StoredShare:
    """The stored bytes of one object: a loose file's size, or a packed object's share of its block."""

    def __init__(self, objects: ObjectStore, loose: dict[str, int]) -> None:
        self.loose = loose
        self.packs = objects.pack_reader()
        self.packs.refresh()
        if self.packs.damaged or self.packs.orphans:
            self.packs.rebuild_missing()  # read through an index rebuilt in memory, as ``get`` would
        self.present = {key[len(PACKS):-5] for key in objects.backend.list(PACKS) if key.endswith(".pack")}
        self.blocks: Counter[tuple[str, int]] = Counter()
        for entries in (*self.packs.members.values(), *self.packs.rebuilt.values()):
            for loc in entries.values():
                self.blocks[(loc[0], loc[1])] += loc[4]

    def of(self, oid: str) -> int | None:
        """Its stored bytes, or None when the store holds no copy of it."""
        if oid in self.loose:
            return self.loose[oid]
        loc = self.packs.index.get(oid) or self.packs.fallback.get(oid)
        if loc is None or loc[0] not in self.present:  # no index names it, or its pack file is gone
            return None
        return loc[2] * loc[4] // (self.blocks[(loc[0], loc[1])] or 1)


@dataclass(frozen=True)
class Summary:
    """One tree's figures, computed once per distinct tree: logical bytes and files below it, its ``top``
    biggest distinct contents, and the damaged objects it reaches."""

    bytes: int
    files: int
    top: tuple[Top, ...]
    bad: frozenset[str]


NO_SUMMARY = Summary(0, 0, (), EMPTY)


@dataclass
class _Open:
    """A tree being summed on the walk's stack."""

    oid: str
    entries: Iterator[Entry]
    bytes: int = 0
    files: int = 0
    tops: set[Top] = field(default_factory=set)
    bad: set[str] = field(default_factory=set)

    def take(self, below: Summary) -> None:
        self.bytes += below.bytes
        self.files += below.files
        self.tops.update(below.top)
        self.bad.update(below.bad)

    def close(self, top: int) -> Summary:
        return Summary(self.bytes, self.files, tuple(heapq.nsmallest(top, self.tops)),
                       frozenset(self.bad) if self.bad else EMPTY)


class Tally:
    """The walk: each distinct tree summed once (iteratively, post-order), each object given once to
    the day of the first checkpoint reaching it.

    A global top-N content is in the top N of every tree holding it (fewer
    distinct contents are bigger there), so the roots' ``top`` say which
    checkpoints name each biggest file without a set of contents per tree.
    """

    def __init__(self, objects: ObjectStore, share: StoredShare, top: int) -> None:
        self.objects = objects
        self.share = share
        self.top = top
        self.trees: dict[str, Summary] = {}
        self.unique: set[str] = set()
        self.unique_bytes = 0
        self.seen: set[str] = set()
        self.bad: dict[str, BadObject] = {}
        self.roots: dict[str, Summary] = {}
        self.days: dict[str, Day] = {}
        self.day = Day("")

    def checkpoint(self, record: CheckpointRecord, result: StoreStats) -> None:
        name = record.added.astimezone(UTC).date().isoformat()
        self.day = self.days.setdefault(name, Day(name))
        self.day.checkpoints += 1
        bad: set[str] = set()
        if not self._give(record.record_oid):
            self._damage("record-missing", record.record_oid, "not in the store (listed from the record index)")
            bad.add(record.record_oid)
        summary = self.summary(record.state_hash)
        self.roots[record.checkpoint_id] = summary
        lane = result.lanes.setdefault(record.lane, Lane())
        lane.checkpoints += 1
        lane.logical_bytes += summary.bytes
        result.kinds[record.kind] = result.kinds.get(record.kind, 0) + 1
        result.files += summary.files
        result.logical_bytes += summary.bytes
        for oid in sorted(bad | summary.bad):
            self.bad[oid].checkpoints.append(record.checkpoint_id)

    def _give(self, oid: str) -> bool:
        """Give a newly reached object's stored bytes to the current day; False when the store has no copy."""
        if oid in self.seen:
            return oid not in self.bad
        self.seen.add(oid)
        size = self.share.of(oid)
        if size is None:
            return False
        self.day.objects += 1
        self.day.stored_bytes += size
        return True

    def _damage(self, kind: str, oid: str, reason: str) -> None:
        self.bad.setdefault(oid, BadObject(kind, oid, reason))

    def summary(self, root: str) -> Summary:
        stack: list[_Open] = []
        self._enter(root, stack)
        while stack:
            node = stack[-1]
            entry = next(node.entries, None)
            if entry is None:
                stack.pop()
                done = self.trees[node.oid] = node.close(self.top)
                if stack:
                    stack[-1].take(done)
            elif entry.kind == DIR:
                self._enter(entry.oid, stack)
            elif entry.kind == FILE:
                stack[-1].take(self._file(entry))
        return self.trees.get(root, NO_SUMMARY)

    def _enter(self, oid: str, stack: list[_Open]) -> None:
        if oid not in self.trees:
            try:
                if not self._give(oid):
                    raise ObjectMissing(oid)
                stack.append(_Open(oid, iter(read_tree(self.objects, oid))))
                return
            except ObjectMissing:
                self._damage("tree-missing", oid, "not in the store")
            except CorruptObject as exc:
                self._damage("tree-corrupt", oid, exc.reason or str(exc))
            except RRStoreError as exc:
                self._damage("tree-corrupt", oid, str(exc))
            self.trees[oid] = Summary(0, 0, (), frozenset({oid}))
        if stack:
            stack[-1].take(self.trees[oid])

    def _file(self, entry: Entry) -> Summary:
        """A file entry as a summary of one file (its content given to the day when first seen)."""
        if entry.oid not in self.unique:
            self.unique.add(entry.oid)
            self.unique_bytes += entry.size
            for oid in content_oids(entry):
                if not self._give(oid):
                    self._damage("object-missing", oid, "not in the store")
        bad = frozenset(o for o in content_oids(entry) if o in self.bad) if self.bad else EMPTY
        return Summary(entry.size, 1, ((-entry.size, entry.oid),), bad)

    def finish(self, records: list[CheckpointRecord], result: StoreStats) -> None:
        """The figures that need the whole walk: unique sizes, biggest files and dirs, growth, damage."""
        result.unique_files, result.unique_bytes = len(self.unique), self.unique_bytes
        result.growth = [self.days[d] for d in sorted(self.days)]
        result.referenced_bytes = sum(d.stored_bytes for d in result.growth)
        result.damaged_objects = sorted(self.bad.values(), key=lambda b: (b.kind, b.oid))
        for bad in result.damaged_objects:
            bad.checkpoints.reverse()  # newest first, as everywhere
        tops = heapq.nsmallest(self.top, {t for s in self.roots.values() for t in s.top})
        for key in tops:
            naming = [r for r in records if key in self.roots[r.checkpoint_id].top]
            path = self._path(naming[0].state_hash, key) if naming else ""
            result.biggest_files.append(BigFile(key[1], -key[0], path, [r.checkpoint_id for r in naming]))
        newest = next((r for r in records if r.kind == "step"), records[0] if records else None)
        if newest is not None and self.top:
            result.biggest_dirs_of = newest.checkpoint_id
            result.biggest_dirs = self._dirs(newest.state_hash)

    def _path(self, root: str, key: Top) -> str:
        """A path of content ``key`` in tree ``root``: down the subtrees whose top holds it."""
        oid, prefix = root, ""
        while True:
            try:
                entries = read_tree(self.objects, oid)
            except RRStoreError:
                return ""
            for entry in entries:
                if entry.kind == FILE and entry.oid == key[1]:
                    return prefix + entry.name
            down = next((e for e in entries if e.kind == DIR and key in self.trees.get(e.oid, NO_SUMMARY).top), None)
            if down is None:
                return ""
            oid, prefix = down.oid, f"{prefix}{down.name}/"

    def _dirs(self, root: str) -> list[tuple[str, int, int]]:
        """The ``top`` biggest directories at any depth of tree ``root``, by logical bytes, then path."""
        found: list[tuple[int, str, int]] = []
        stack = [(root, "")]
        while stack:
            oid, prefix = stack.pop()
            try:
                entries = read_tree(self.objects, oid)
            except RRStoreError:
                continue
            for entry in entries:
                if entry.kind == DIR:
                    below = self.trees.get(entry.oid, NO_SUMMARY)
                    found.append((-below.bytes, prefix + entry.name, below.files))
                    stack.append((entry.oid, f"{prefix}{entry.name}/"))
            if len(found) > 4 * self.top:
                found = heapq.nsmallest(self.top, found)
        return [(path, -neg, files) for neg, path, files in heapq.nsmallest(self.top, found)]
