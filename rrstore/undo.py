"""Undo proof (verb beside restore): the undo checkpoint provably holds what a restore will change.

An undo checkpoint deduplicates: a file unchanged since an earlier
checkpoint is not stored again, its entry names objects already in the
store, and one of them may be damaged (a flipped bit in a pack nobody has
read since). So before restore changes anything, every object the undo
checkpoint needs for the paths restore will overwrite or delete is read back
and hash-checked: their contents, every tree of the undo checkpoint (its
restore reads them all), and the record. An object that fails is stored again as a loose object from the
bytes still in the working tree (``ObjectStore.get`` prefers a loose copy, so
every later reader gets the good one) and checked again. A file whose bytes
changed meanwhile cannot give them back: the proof fails (``UndoUnproven``)
and restore writes nothing. The cost is one read of what the restore
changes plus one of each directory's tree (small, packed together), never
of the whole store or of unchanged file contents.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import blake3

from .errors import CorruptObject, ObjectMissing, RRStoreError, UndoUnproven
from .record import CheckpointRecord
from .store.objects import hash_bytes
from .store.store import Store
from .tree import DIR, FILE, Entry, content_oids, tree_oid
from .worktree.snapshot import CHUNK_THRESHOLD, Snapshot, chunker, stable_read
from .worktree.workers import PARALLEL_MIN_SIZE, run_split

if TYPE_CHECKING:
    from .restore import RestorePlan  # only its type: restore imports this module to prove its undo point


@dataclass
class UndoProof:
    """What proving an undo checkpoint took: objects read back, and those stored again."""

    checked: int = 0
    repaired: list[str] = field(default_factory=list)


def at_risk(plan: RestorePlan, current: dict[str, Entry]) -> list[str]:
    """The paths of ``current`` that carrying out ``plan`` overwrites, deletes or changes."""
    return sorted({p for p in (*plan.remove, *plan.write, *plan.chmod) if p in current})


def prove_undo(store: Store, root: Path, snap: Snapshot, record: CheckpointRecord, paths: list[str],
               workers: int) -> UndoProof:
    """Read back every object ``record`` (taken as ``snap``) needs for ``paths``; store bad ones again.

    Raises UndoUnproven when a damaged object's file changed since the
    snapshot, and CorruptObject when a copy stored again still reads wrong.
    """
    needed = _Needed(snap)
    needed.add_record(record)
    needed.add_trees()
    for path in paths:
        needed.add_path(path)
    objects = store.objects
    objects.list_loose()  # restore has listed already; a good copy stored below is noted in the listing
    ordered = sorted(needed.sizes, key=objects.locality)

    def check(oid: str) -> str | None:
        try:
            objects.get(oid)
        except (CorruptObject, ObjectMissing):
            return oid
        return None

    large = lambda oid: needed.sizes[oid] >= PARALLEL_MIN_SIZE  # noqa: E731
    bad = [oid for oid in run_split(ordered, large, check, workers) if oid is not None]
    proof = UndoProof(checked=len(ordered))
    if not bad:
        return proof
    needed.store_again(store, root, set(bad))
    store.barrier()
    for oid in bad:
        objects.get(oid)  # the loose copy now; raises if even that reads wrong
    proof.repaired = sorted(bad)
    return proof


class _Needed:
    """The objects an undo checkpoint needs for some of its paths, and where their bytes are now."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.sizes: dict[str, int] = {snap.root_oid: 0}
        self.files: dict[str, str] = {}  # content oid -> a path holding it
        self.trees: dict[str, str] = {snap.root_oid: ""}  # tree oid -> a directory it describes
        self.dirs: set[str] = {""}
        self.records: dict[str, bytes] = {}

    def add_record(self, record: CheckpointRecord) -> None:
        self.sizes[record.record_oid] = 0
        self.records[record.record_oid] = record.encode()

    def add_trees(self) -> None:
        """Every directory's tree: restoring the undo reads the whole tree, even with ``--path``, so a
        damaged tree reused from an earlier checkpoint anywhere in it would make the undo unrestorable."""
        for path, entry in self.snap.entries.items():
            if entry.kind == DIR:
                self.sizes[entry.oid] = 0
                self.trees.setdefault(entry.oid, path)

    def add_path(self, path: str) -> None:
        entries = self.snap.entries
        entry = entries.get(path)
        if entry is None:
            return
        if entry.kind == FILE:
            for oid in content_oids(entry):
                self.sizes[oid] = entry.size
                self.files.setdefault(oid, path)
        elif entry.kind == DIR:
            self.sizes[entry.oid] = 0
            self.trees.setdefault(entry.oid, path)
        parent = path.rpartition("/")[0]
        while parent not in self.dirs:
            self.dirs.add(parent)
            above = entries[parent].oid
            self.sizes[above] = 0
            self.trees.setdefault(above, parent)
            parent = parent.rpartition("/")[0]

    def store_again(self, store: Store, root: Path, bad: set[str]) -> None:
        """Store each of ``bad`` again from what it was made of: a file's bytes, a directory, a record."""
        by_path: dict[str, set[str]] = {}
        for oid in bad:
            if oid in self.records:
                store.objects.put_loose_copy(self.records[oid], oid)
            elif oid in self.trees:
                self._tree_again(store, oid)
            else:
                by_path.setdefault(self.files[oid], set()).add(oid)
        for path, oids in sorted(by_path.items()):
            _file_again(store, root, path, self.snap.entries[path], oids)

    def _tree_again(self, store: Store, oid: str) -> None:
        folder = self.trees[oid]
        children = [e for p, e in self.snap.entries.items() if p and p.rpartition("/")[0] == folder]
        rebuilt, data = tree_oid(children)
        if rebuilt != oid:  # cannot happen: the snapshot built this tree from these entries
            raise RRStoreError(f"cannot rebuild the tree of {folder or 'the root'} for the undo checkpoint")
        store.objects.put_loose_copy(data, oid)


def _file_again(store: Store, root: Path, path: str, entry: Entry, bad: set[str]) -> None:
    """Read ``path`` again while it is quiet and store its pieces named in ``bad``.

    The whole file (and its chunk list) must still be what the snapshot
    recorded: otherwise its old bytes are gone and UndoUnproven says so.
    """
    objects = store.objects

    def consume(fd: int) -> tuple[tuple[str, tuple[str, ...]], int]:
        whole = blake3.blake3()
        chunks: list[str] = []
        length = 0
        pieces: Iterator[bytes]
        if entry.chunks:
            pieces = (bytes(c.data) for c in chunker().cut_stream(io.FileIO(fd, closefd=False)))
        else:
            pieces = iter([_read_at_most(fd, CHUNK_THRESHOLD + 1)])
        for piece in pieces:
            oid = hash_bytes(piece)
            whole.update(piece)
            length += len(piece)
            chunks.append(oid)
            if oid in bad:  # bytes that hash to their oid are right whatever the file is now
                objects.put_loose_copy(piece, oid)
        return (whole.hexdigest(), tuple(chunks) if entry.chunks else ()), length

    full = f"{root}/{path}"
    try:
        (oid, chunks), _ = stable_read(full, consume)
    except (OSError, RRStoreError):
        raise UndoUnproven(full) from None
    if oid != entry.oid or chunks != entry.chunks:
        raise UndoUnproven(full)


def _read_at_most(fd: int, limit: int) -> bytes:
    parts = []
    while limit > 0 and (part := os.read(fd, min(limit, 1 << 20))):
        parts.append(part)
        limit -= len(part)
    return b"".join(parts)
