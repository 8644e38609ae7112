"""Examine one checkpoint (a verb, for ``show``): its record, its pin, and what of it is damaged.

``show`` must say what is wrong with a checkpoint instead of failing on the
first unreadable object: the ref (empty, garbled, naming another checkpoint's
record), the record (missing, corrupt), and every tree and content object its
tree reaches (missing, corrupt; with ``read_data`` content is re-hashed too),
each with the paths where it sits. The kinds are ``check``'s
(``check.OBJECT_KINDS`` and ``ref-unreadable``), so one vocabulary names
damage everywhere. Cost: one read of each distinct tree of the checkpoint,
an index lookup per content object (``read_data``: a read of each).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .check import _reason
from .errors import CorruptObject, ObjectMissing, RRStoreError
from .record import CheckpointRecord, added_ns_of, owned_by
from .store.objects import ObjectStore, object_key
from .store.pack import PREFIX as PACKS
from .store.store import Store
from .tree import DIR, FILE, Entry, content_oids, read_tree

# What gets a damaged checkpoint back or out of the way (``{id}``: its id).
WAY_OUT = ("run 'rrstore check --repair' (with --from ARCHIVE or --from s3://BUCKET/PREFIX to bring back "
           "lost objects), or forget the checkpoint with 'rrstore delete {id}'")


@dataclass
class Damage:
    """One damaged thing of a checkpoint: ``check``'s kind, the object (or ref), why, and where it sits."""

    kind: str
    target: str
    reason: str
    paths: list[str] = field(default_factory=list)

    @property
    def line(self) -> str:
        where = f" at {', '.join(self.paths)}" if self.paths else ""
        return f"{self.kind} {self.target}{where}: {self.reason}"

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "target": self.target, "reason": self.reason, "paths": self.paths}


@dataclass
class Examined:
    """A checkpoint as ``show`` prints it: the record (None when it cannot be read), pinned, damage."""

    checkpoint_id: str
    record: CheckpointRecord | None
    pinned: bool
    damage: list[Damage] = field(default_factory=list)
    read_data: bool = False

    @property
    def damaged(self) -> bool:
        return bool(self.damage)

    @property
    def way_out(self) -> str:
        return WAY_OUT.format(id=self.checkpoint_id)

    def to_json(self) -> dict[str, object]:
        """The record's JSON (``show --json``) with ``pinned``, and ``damage`` when damaged: a whole
        checkpoint's is the record as ``list --json`` and ``checkpoint --json`` print it."""
        doc: dict[str, object] = self.record.to_json() if self.record is not None else {
            "checkpoint_id": self.checkpoint_id}
        doc["pinned"] = self.pinned
        if self.damage:
            doc["damage"] = [d.to_json() for d in self.damage]
        return doc


def examine(store: Store, checkpoint_id: str, *, read_data: bool = False) -> Examined:
    """The record of ``checkpoint_id`` and everything damaged in it; never raises for damage.

    Takes an id whose ref exists (``CheckpointManager.ref_id`` resolves 'latest' and refuses an
    unknown one first); a ref gone meanwhile is reported as damage, not as an unknown id.
    """
    pinned = checkpoint_id in set(store.pins)
    result = Examined(checkpoint_id, None, pinned, read_data=read_data)
    ref_key = f"refs/checkpoints/{checkpoint_id}"
    try:
        ref = store.refs.read(checkpoint_id)
    except CorruptObject as exc:
        result.damage.append(Damage("ref-unreadable", ref_key, _reason(exc)))
        return result
    if ref is None:
        result.damage.append(Damage("ref-unreadable", ref_key, "the ref is gone"))
        return result
    try:
        record = CheckpointRecord.decode(ref.oid, store.objects.get(ref.oid))
    except ObjectMissing as exc:
        result.damage.append(Damage("record-missing", ref.oid, _reason(exc)))
        return result
    except CorruptObject as exc:
        result.damage.append(Damage("record-corrupt", ref.oid, _reason(exc)))
        return result
    try:
        owned_by(checkpoint_id, record)
    except CorruptObject as exc:
        result.damage.append(Damage("ref-unreadable", ref_key, exc.reason))
        return result
    record.added_ns = added_ns_of(ref, record.created, store.refs.mtime_ns(checkpoint_id))
    result.record = record
    result.damage = TreeExam(store.objects, read_data).run(record.state_hash)
    return result


class TreeExam:
    """Every damaged tree and content object below one root, with the paths they sit at.

    Iterative; each distinct tree is read once (an identical directory at two
    paths is damaged at both, and both are named), each content object looked
    up (``read_data``: read and re-hashed) once.
    """

    def __init__(self, objects: ObjectStore, read_data: bool) -> None:
        self.objects = objects
        self.read_data = read_data
        self.trees: dict[str, list[Entry] | Damage] = {}
        self.contents: dict[str, Damage | None] = {}
        self.found: dict[str, Damage] = {}
        self.packs: dict[str, bool] = {}  # pack id -> its file is there
        if read_data:
            objects.list_loose()

    def run(self, root: str) -> list[Damage]:
        stack = [("", root)]
        while stack:
            path, oid = stack.pop()
            entries = self._tree(oid, path)
            if entries is None:
                continue
            for entry in entries:
                where = f"{path}{entry.name}"
                if entry.kind == DIR:
                    stack.append((where + "/", entry.oid))
                elif entry.kind == FILE:
                    for content in content_oids(entry):
                        self._content(content, where)
        return sorted(self.found.values(), key=lambda d: (d.kind, d.paths, d.target))

    def _gone(self, oid: str) -> str | None:
        """Why ``oid`` is lost although an index names it (its pack file is gone), else None."""
        loc = self.objects.pack_reader().index.get(oid)
        if loc is None or self.objects.backend.exists(object_key(oid)):
            return None
        if loc[0] not in self.packs:
            self.packs[loc[0]] = self.objects.backend.exists(f"{PACKS}{loc[0]}.pack")
        return None if self.packs[loc[0]] else f"pack {loc[0]} is missing (its index remains)"

    def _tree(self, oid: str, path: str) -> list[Entry] | None:
        if oid not in self.trees and (gone := self._gone(oid)) is not None:
            self.trees[oid] = self.found[oid] = Damage("tree-missing", oid, gone)
        if oid not in self.trees:
            try:
                self.trees[oid] = read_tree(self.objects, oid)
            except ObjectMissing as exc:
                self.trees[oid] = self.found[oid] = Damage("tree-missing", oid, _reason(exc))
            except CorruptObject as exc:
                self.trees[oid] = self.found[oid] = Damage("tree-corrupt", oid, _reason(exc))
        got = self.trees[oid]
        if isinstance(got, Damage):
            got.paths.append(path.rstrip("/") or ".")
            return None
        return got

    def _content(self, oid: str, path: str) -> None:
        if oid not in self.contents:
            self.contents[oid] = self._look(oid)
            if (damage := self.contents[oid]) is not None:
                self.found[oid] = damage
        if (damage := self.contents[oid]) is not None:
            damage.paths.append(path)

    def _look(self, oid: str) -> Damage | None:
        if (gone := self._gone(oid)) is not None:
            return Damage("object-missing", oid, gone)
        if not self.read_data and (self.objects.packed(oid) or self.objects.has(oid)):
            return None
        try:
            self.objects.get(oid)  # a pack with a damaged index: read through the index rebuilt in memory
        except ObjectMissing as exc:
            return Damage("object-missing", oid, _reason(exc))
        except CorruptObject as exc:
            return Damage("object-corrupt", oid, _reason(exc))
        except RRStoreError as exc:
            return Damage("object-corrupt", oid, str(exc))
        return None
