"""``check`` and ``check --repair`` (verb over the whole store): find every damage, rebuild what is derived.

``check`` walks refs -> records -> trees -> file contents and reports every
problem with the checkpoints it affects, never stopping at the first:
unreadable refs, missing or corrupt records, trees and contents, damaged or
missing pack indexes, index files whose pack is gone, index entries that
point past their pack, a missing or bad ``config.json``. Records and trees
are always read and hash-checked (the walk needs them); ``read_data``
decompresses and re-hashes every reachable content object too, in pack
order so each block is decompressed once. ``subset`` reads only the packs
(and loose objects) whose name, read as a fraction (first 8 hex digits over
2^32), falls below that percentage: the same packs every time for the same
store, about that share of them.

``repair`` (``rrstore check --repair``, under the store's exclusive object
lock, like gc) rebuilds derived data: pack indexes from their packs, the
stat cache (removed: it is rebuilt), ``config.json`` over surviving objects
and refs. With a ``source`` (an archive or ``s3://`` remote) it fetches
damaged and missing objects, verifies each by hash, stores them again, and
rewrites each pack that held a bad copy without it. Nothing damaged is ever
deleted or zero-filled: it is moved to ``quarantine/<time>/<key>``.
All walks are iterative (trees may be thousands deep).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from .backends import LocalBackend
from .backends.s3 import S3Options
from .config import Settings
from .errors import CorruptObject, ObjectMissing, RRStoreError, StoreConfigDamaged, StoreNotFound
from .record import CheckpointRecord, added_ns_of, is_future_dated, owned_by
from .recordindex import INDEX_KEY, RecordIndex
from .store.objects import ObjectStore
from .store.pack import PREFIX as PACKS
from .store.pack import PackReader, scan_pack
from .store.packindex import midx_key
from .store.store import Store, _check_config
from .tree import DIR, FILE, Entry, content_oids, read_tree

EMPTY: frozenset[str] = frozenset()
OBJECT_KINDS = ("record-missing", "record-corrupt", "tree-missing", "tree-corrupt",
                "object-missing", "object-corrupt")


@dataclass
class CheckOptions:
    """What ``check`` reads and whether it repairs; ``subset`` is a percentage of packs (implies read_data)."""

    read_data: bool = False
    subset: float | None = None
    repair: bool = False
    source: str | None = None
    endpoint_url: str | None = None
    s3_options: S3Options | None = None  # region, profile, ... of an s3:// source ([remote] settings)


@dataclass
class Problem:
    """One damage: its kind (see docs/cli.md), the object or file, why, and the checkpoints it affects."""

    kind: str
    target: str
    reason: str
    checkpoints: list[str] = field(default_factory=list)

    @property
    def line(self) -> str:
        affected = ", ".join(self.checkpoints) if self.checkpoints else "none known"
        return f"{self.kind} {self.target}: {self.reason} (affected checkpoints: {affected})"

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "target": self.target, "reason": self.reason,
                "checkpoints": self.checkpoints}


def record_index_state(store: Store) -> str | None:
    """None when the store's record index reads back whole; else "missing" or "damaged (why)"."""
    try:
        data = store.backend.read(INDEX_KEY)
    except KeyError:
        return "missing"
    except RRStoreError as exc:
        return f"unreadable ({exc})"
    try:
        RecordIndex.decode(data)
    except ValueError as exc:
        return f"damaged: {exc}"
    return None


@dataclass
class CheckResult:
    store: str
    read_data: bool = False
    checkpoints: int = 0
    trees: int = 0
    objects: int = 0
    data_read: int = 0
    packs: int = 0
    problems: list[Problem] = field(default_factory=list)
    # accepted, not damage (exit 0): e.g. a record dated in the future, carried in by an archive or remote
    notes: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    found_before_repair: int = 0

    @property
    def success(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return 0 if self.success else CorruptObject.exit_code

    @property
    def damaged(self) -> list[str]:
        """Every checkpoint some problem affects, sorted."""
        return sorted({c for p in self.problems for c in p.checkpoints})

    @property
    def message(self) -> str:
        read = f", {self.data_read} content object(s) re-hashed" if self.read_data else ""
        seen = (f"{self.checkpoints} checkpoint(s), {self.trees} tree(s), {self.objects} content object(s), "
                f"{self.packs} pack(s){read}")
        fixed = f"; {len(self.repaired)} repair(s) done" if self.repaired else ""
        if self.success:
            return f"store healthy: {seen}{fixed}"
        return (f"store damaged: {len(self.problems)} problem(s), {len(self.damaged)} checkpoint(s) affected "
                f"({seen}){fixed}")

    def to_json(self) -> dict[str, object]:
        return {"store": self.store, "success": self.success, "exit_code": self.exit_code,
                "read_data": self.read_data, "checkpoints": self.checkpoints, "trees": self.trees,
                "objects": self.objects, "data_read": self.data_read, "packs": self.packs,
                "damaged_checkpoints": self.damaged, "problems": [p.to_json() for p in self.problems],
                "notes": self.notes, "repaired": self.repaired, "found_before_repair": self.found_before_repair}


def open_for_check(path: Path, settings: Settings) -> Store:
    """The store at ``path`` even without its ``config.json`` (check must open a damaged store)."""
    if not path.is_dir() or not any((path / sub).exists() for sub in ("config.json", "objects", "packs", "refs")):
        raise StoreNotFound(str(path))
    return Store.over(LocalBackend(path), settings)


def check(store: Store, options: CheckOptions | None = None) -> CheckResult:
    """Check the whole store, reading only; see the module docstring (``repair.repair`` repairs)."""
    return Checker(store, options or CheckOptions()).run()


# the walk ------------------------------------------------------------------------------------------


class Walk:
    """Which marks each tree reaches, each tree read once, iteratively (post-order on a stack).

    ``mark(oid)`` names what matters about a content object (its own oid when
    it is damaged, ``pack:<id>`` when it is found only through a rebuilt
    index), or None. A tree that cannot be read marks itself.
    """

    def __init__(self, objects: ObjectStore, mark: Callable[[str], str | None],
                 where: Callable[[str], str | None], problems: dict[str, tuple[str, str]],
                 bad_location: dict[str, tuple[str, str]] | None = None) -> None:
        self.objects = objects
        self.mark = mark
        self.where = where
        self.problems = problems
        self.bad_location = bad_location or {}
        self.below: dict[str, frozenset[str]] = {}
        self.content: dict[str, str | None] = {}
        self.trees = 0

    def marks(self, root: str) -> frozenset[str]:
        stack: list[tuple[str, Iterator[Entry], set[str]]] = []
        self._enter(root, stack)
        while stack:
            oid, entries, found = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                self.below[oid] = frozenset(found) if found else EMPTY
                if stack:
                    stack[-1][2].update(self.below[oid])
            elif entry.kind == DIR:
                if entry.oid in self.below:
                    found.update(self.below[entry.oid])
                else:
                    self._enter(entry.oid, stack)
            elif entry.kind == FILE:
                for content in content_oids(entry):
                    if content not in self.content:
                        self.content[content] = self.mark(content)
                    if (seen := self.content[content]) is not None:
                        found.add(seen)
        return self.below[root]

    def _enter(self, oid: str, stack: list[tuple[str, Iterator[Entry], set[str]]]) -> None:
        if oid in self.below:
            if stack:
                stack[-1][2].update(self.below[oid])
            return
        own: set[str] = set()
        if oid in self.problems and self.problems[oid][0].startswith("tree"):
            entries = None
        elif oid in self.bad_location:
            kind, reason = self.bad_location[oid]
            self.problems[oid] = ("tree-missing" if kind == "object-missing" else "tree-corrupt", reason)
            entries = None
        else:
            try:
                entries = read_tree(self.objects, oid)
                self.trees += 1
            except ObjectMissing as exc:
                self.problems[oid] = ("tree-missing", _reason(exc))
                entries = None
            except CorruptObject as exc:
                self.problems[oid] = ("tree-corrupt", _reason(exc))
                entries = None
        if entries is None:
            self.below[oid] = frozenset({oid})
            if stack:
                stack[-1][2].add(oid)
            return
        where = self.where(oid)
        if where is not None:
            own.add(where)
        stack.append((oid, iter(entries), own))


def _reason(exc: RRStoreError) -> str:
    reason = getattr(exc, "reason", "") or ""
    if reason:
        return reason
    actual = getattr(exc, "actual", "")
    return f"content hashes to {actual}" if actual else "not in the store"


def in_subset(name: str, percent: float) -> bool:
    """Deterministic: the first 8 hex digits of a pack's (or loose object's) name, over 2^32, below ``percent``."""
    return int(name[:8], 16) < percent / 100 * (1 << 32)


class Checker:
    """One run of ``check`` over an opened store."""

    def __init__(self, store: Store, options: CheckOptions) -> None:
        self.store = store
        self.options = options
        self.objects = store.objects
        self.packs: PackReader = store.objects.pack_reader()
        self.result = CheckResult(str(store.path), read_data=options.read_data or options.subset is not None)
        self.problems: dict[str, tuple[str, str]] = {}   # damaged oid -> (kind, reason)
        self.bad_location: dict[str, tuple[str, str]] = {}
        self.index_problems: list[Problem] = []
        self.roots: dict[str, str] = {}      # checkpoint id -> root tree
        self.records: dict[str, str] = {}    # checkpoint id -> record oid

    def run(self) -> CheckResult:
        self.objects.list_loose()  # it reads every record, tree (and content): no loose probe per packed one
        self._config()
        self._packs()
        self._refs()
        self._record_index()
        walk = self._walk(self._present)
        if self.result.read_data:
            known = len(self.problems)
            self._read_data(walk)
            if len(self.problems) > known:
                walk = self._walk(self._known)  # a second walk attributes what the data read found
        self._attribute(walk)
        return self.result

    # structure ---------------------------------------------------------------------------------

    def _config(self) -> None:
        config = self.store.path / "config.json"
        if not config.is_file():
            self.index_problems.append(Problem("config-missing", "config.json", "the store's config.json is missing "
                                                                                "(rebuilt by check --repair)"))
            return
        try:
            _check_config(config)
        except StoreConfigDamaged as exc:
            self.index_problems.append(Problem("config-damaged", "config.json", f"{exc} (rebuilt by check --repair; "
                                                                                "the damaged one is quarantined)"))
        except RRStoreError as exc:
            self.index_problems.append(Problem("config-invalid", "config.json", str(exc)))

    def _packs(self) -> None:
        packs = self.packs
        packs.refresh()
        packs.verify_indexes()
        packs.rebuild_missing()
        for name, why in sorted(packs.midx_damaged.items()):
            self.result.notes.append(f"{midx_key(name)} is damaged ({why}): ignored, its packs' own indexes "
                                     "are read instead (derived data; rebuilt by check --repair)")
        listing = set(self.store.backend.list(PACKS))
        names = {k[len(PACKS):-5] for k in listing if k.endswith(".pack")}
        self.result.packs = len(names)
        sizes = {}
        for pack in names:
            try:
                sizes[pack] = self.store.backend.stat(f"{PACKS}{pack}.pack")[0]
            except KeyError:
                continue
        for pack, why in sorted(packs.damaged.items()):
            more = packs.unrebuildable.get(pack)
            detail = f"{why}; {more}" if more else f"{why}; its objects are read through an index rebuilt in memory"
            self.index_problems.append(Problem("index-damaged", f"{PACKS}{pack}.idx", detail))
        for pack in sorted(packs.orphans):
            more = packs.unrebuildable.get(pack)
            detail = "the pack has no index" + (f"; {more}" if more else "; its objects are read through an "
                                                                          "index rebuilt in memory")
            self.index_problems.append(Problem("index-missing", f"{PACKS}{pack}.pack", detail))
        for target, reason in self._scan_damage():
            self.index_problems.append(Problem("pack-block-damaged", target, reason))
        for oid, loc in packs.index.items():
            pack, block_offset, block_size = loc[0], loc[1], loc[2]
            if pack not in sizes:
                self.bad_location[oid] = ("object-missing", f"pack {pack} is missing (its index remains)")
            elif block_offset + block_size > sizes[pack]:
                self.bad_location[oid] = ("object-corrupt", f"index entry points past the end of pack {pack}")
        for pack in sorted(packs.members):
            if pack not in sizes:
                self.index_problems.append(Problem("pack-missing", f"{PACKS}{pack}.pack",
                                                   "an index names this pack, which is missing"))
        for pack in sorted({loc[0] for oid, loc in packs.index.items()
                            if self.bad_location.get(oid, ("",))[0] == "object-corrupt"}):
            self.index_problems.append(Problem("index-entry-out-of-range", f"{PACKS}{pack}.idx",
                                               "entries point past the end of the pack"))

    def _scan_damage(self) -> list[tuple[str, str]]:
        """Damage the rebuild found in packs without a usable index (lost blocks, bad objects)."""
        out: list[tuple[str, str]] = []
        for pack in sorted(self.packs.rebuilt):
            try:
                scan = scan_pack(pack, self.store.backend.read(f"{PACKS}{pack}.pack"))
            except (KeyError, CorruptObject):
                continue
            out += [(f"{PACKS}{pack}.pack@{offset}", reason) for offset, reason in scan.lost]
            out += [(f"{PACKS}{pack}.pack:{oid}", reason) for oid, reason in scan.damaged]
        return out

    def _refs(self) -> None:
        refs = self.store.refs
        for checkpoint_id in sorted(refs):
            self.result.checkpoints += 1
            try:
                oid = refs.get(checkpoint_id)
            except RRStoreError as exc:
                self.index_problems.append(Problem("ref-unreadable", f"refs/checkpoints/{checkpoint_id}",
                                                   _reason(exc) if isinstance(exc, CorruptObject) else str(exc),
                                                   [checkpoint_id]))
                continue
            if oid is None:
                continue
            self.records[checkpoint_id] = oid
            try:
                record = CheckpointRecord.decode(oid, self.objects.get(oid))
            except ObjectMissing as exc:
                self.problems[oid] = ("record-missing", _reason(exc))
                continue
            except CorruptObject as exc:
                self.problems[oid] = ("record-corrupt", _reason(exc))
                continue
            except RRStoreError as exc:
                self.problems[oid] = ("record-corrupt", str(exc))
                continue
            try:
                owned_by(checkpoint_id, record)
            except CorruptObject as exc:  # the ref is damaged, not the record (another checkpoint's)
                self.index_problems.append(Problem("ref-unreadable", f"refs/checkpoints/{checkpoint_id}",
                                                   exc.reason, [checkpoint_id]))
                continue
            self.roots[checkpoint_id] = record.state_hash
            self._note_future(checkpoint_id, record)

    def _record_index(self) -> None:
        """A damaged record index is a note: it is a cache, rebuilt by the next listing. A missing one
        is not even that: checkpoints do not write it, so a store never listed yet has none."""
        state = record_index_state(self.store)
        if state is not None and state != "missing":
            self.result.notes.append(f"record index {INDEX_KEY} is {state} (a cache: the next listing or "
                                     "check --repair rebuilds it)")

    def _note_future(self, checkpoint_id: str, record: CheckpointRecord) -> None:
        ref = self.store.refs.read(checkpoint_id)
        if ref is None:
            return
        added = added_ns_of(ref, record.created, self.store.refs.mtime_ns(checkpoint_id))
        if is_future_dated(record.created, added):
            self.result.notes.append(f"checkpoint {checkpoint_id} is dated {record.timestamp}, after it was added "
                                     "to this store (future-dated: never 'latest' for that)")

    # content ---------------------------------------------------------------------------------

    def _where(self, oid: str) -> str | None:
        loc = self.packs.index.get(oid)
        if loc is None and (loc := self.packs.fallback.get(oid)) is not None:
            return f"pack:{loc[0]}"
        return None

    def _present(self, oid: str) -> str | None:
        if oid in self.bad_location:
            self.problems.setdefault(oid, self.bad_location[oid])
            return oid
        if oid in self.problems:
            return oid
        if oid in self.packs.index or oid in self.packs.fallback or self.objects.has(oid):
            return self._where(oid)
        self.problems[oid] = ("object-missing", "not in the store")
        return oid

    def _known(self, oid: str) -> str | None:
        return oid if oid in self.problems else self._where(oid)

    def _walk(self, mark: Callable[[str], str | None]) -> Walk:
        walk = Walk(self.objects, mark, self._where, self.problems, self.bad_location)
        for root in self.roots.values():
            walk.marks(root)
        self.result.trees = walk.trees
        self.result.objects = len(walk.content)
        return walk

    def _read_data(self, walk: Walk) -> None:
        percent = self.options.subset
        todo = []
        for oid, mark in walk.content.items():
            if mark == oid:
                continue
            if percent is not None:
                loc = self.packs.index.get(oid) or self.packs.fallback.get(oid)
                if not in_subset(loc[0] if loc else oid, percent):
                    continue
            todo.append(oid)
        todo.sort(key=self.objects.locality)
        for oid in todo:
            self.result.data_read += 1
            try:
                self.objects.get(oid)
            except ObjectMissing as exc:
                self.problems[oid] = ("object-missing", _reason(exc))
            except CorruptObject as exc:
                self.problems[oid] = ("object-corrupt", _reason(exc))
        explained = {self._pack_of(oid) for oid, (kind, _) in self.problems.items() if kind == "object-corrupt"}
        for pack in sorted(self.packs.members):
            if pack not in explained and (percent is None or in_subset(pack, percent)):
                self._pack_bytes(pack)

    def _pack_bytes(self, pack: str) -> None:
        """A pack is named by the BLAKE3 of its bytes: one that no longer hashes to its name changed
        where no object read looks (a block's table, the bytes between frames), which the next
        index rebuild or a copy elsewhere would meet."""
        hasher = blake3.blake3()
        try:
            with open(self.store.path / f"{PACKS}{pack}.pack", "rb") as fh:
                while chunk := fh.read(1 << 20):
                    hasher.update(chunk)
        except OSError:
            return  # a missing pack is reported by _packs
        if hasher.hexdigest() != pack:
            self.index_problems.append(Problem("pack-damaged", f"{PACKS}{pack}.pack",
                                               f"its bytes hash to {hasher.hexdigest()}, not to its name: they "
                                               "changed since it was written (check --repair rewrites it from "
                                               "the objects that still verify)"))

    def _attribute(self, walk: Walk) -> None:
        reaching: dict[str, list[str]] = {}
        for checkpoint_id in sorted(self.records):
            marks = set(walk.below.get(self.roots[checkpoint_id], EMPTY)) if checkpoint_id in self.roots else set()
            if self.records[checkpoint_id] in self.problems:
                marks.add(self.records[checkpoint_id])
            for mark in marks:
                reaching.setdefault(mark, []).append(checkpoint_id)
        out: list[Problem] = []
        for problem in self.index_problems:
            if problem.target.startswith(PACKS) and not problem.checkpoints:
                pack = problem.target[len(PACKS):].split(".")[0]
                hit = set(reaching.get(f"pack:{pack}", []))
                hit.update(c for oid, ids in reaching.items() if oid in self.problems
                           and self._pack_of(oid) == pack for c in ids)
                problem.checkpoints = sorted(hit)
            elif problem.kind.startswith("config"):
                problem.checkpoints = sorted(self.records)
            out.append(problem)
        for oid, (kind, reason) in sorted(self.problems.items(), key=lambda p: (p[1][0], p[0])):
            out.append(Problem(kind, oid, reason, reaching.get(oid, [])))
        self.result.problems = [p for p in out if not self._settled(p)]

    def _pack_of(self, oid: str) -> str:
        loc = self.packs.index.get(oid) or self.packs.fallback.get(oid)
        return loc[0] if loc else ""

    def _settled(self, problem: Problem) -> bool:
        """A pack without index that gained one since the listing was a write in flight, not damage."""
        if problem.kind != "index-missing":
            return False
        return self.store.backend.exists(problem.target[:-len(".pack")] + ".idx")


def quarantine(store_path: Path, key: str, stamp: str, *, copy: bool = False) -> str:
    """Move (or ``copy``) the file of ``key`` to ``quarantine/<stamp>/<key>`` (never deleted); its new path."""
    dest = store_path / "quarantine" / stamp / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copyfile(store_path / key, dest)
    else:
        os.replace(store_path / key, dest)
    return os.path.relpath(dest, store_path)


def stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}"
