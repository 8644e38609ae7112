"""Archives (a verb over checkpoints, trees and the object store): export, verify, import.

``export`` writes the selected checkpoints and every object they reach, each
once, as one zstd stream in format ``rrstore-archive-1`` (docs/store-format.md,
section 8); ``export_tar`` writes one checkpoint's files as a ``.tar.zst`` that
any ``tar --zstd`` extracts. ``verify_archive`` reads an archive under hard
limits and checks all of it: every object hashes to its oid, every record and
tree parses, no tree holds a name that is never written (``.git``, the
store, ``..``: ``tree.TreeCheck``) or a symlink leading out, nothing reached is
missing and nothing else is there, and the trailer checksum matches.
``import_archive`` does all of that before anything enters the store, then
adds the objects and, last, the refs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import (
    ArchiveError,
    PermissionDenied,
    UnsafeTree,
    UsageError,
    from_oserror,
)
from ..fsutil import AtomicFile
from ..record import CheckpointRecord
from ..store.objects import ObjectStore
from ..store.refs import plan_refs
from ..store.store import Store
from ..tree import DIR, FILE, TreeCheck, content_oids, decode_tree
from ..worktree.workers import Progress
from .location import S3Options
from .safety import RECORD, Limits, VerifyResult, read_archive
from .stream import ArchiveWriter
from .tar import write_tar

__all__ = ["ExportResult", "ImportResult", "Limits", "VerifyResult", "export", "export_tar", "import_archive",
           "verify_archive"]


@dataclass
class ExportResult:
    output: str
    format: str
    checkpoints: list[str]
    objects: int = 0
    bytes: int = 0
    archive_bytes: int = 0
    success: bool = True

    @property
    def message(self) -> str:
        what = "entries" if self.format == "tar" else "object(s)"
        return (f"exported {len(self.checkpoints)} checkpoint(s) to {self.output}: {self.objects} {what}, "
                f"{self.bytes} bytes, {self.archive_bytes} bytes compressed")

    def to_json(self) -> dict[str, object]:
        return {"output": self.output, "format": self.format, "checkpoints": self.checkpoints,
                "objects": self.objects, "bytes": self.bytes, "archive_bytes": self.archive_bytes}


@dataclass
class ImportResult:
    path: str
    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    objects: int = 0
    objects_new: int = 0
    bytes_new: int = 0
    success: bool = True

    @property
    def message(self) -> str:
        return (f"imported {len(self.added)} checkpoint(s) from {self.path} ({len(self.unchanged)} already "
                f"present): {self.objects_new} of {self.objects} object(s) new, {self.bytes_new} bytes")

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "added": self.added, "unchanged": self.unchanged,
                "checkpoints": self.added + self.unchanged, "objects": self.objects,
                "objects_new": self.objects_new, "bytes_new": self.bytes_new}


# --- export ------------------------------------------------------------------------------------------


class _Counting:
    """Counts what passes to the real output."""

    def __init__(self, out: BinaryIO | AtomicFile) -> None:
        self.out = out
        self.count = 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()


@contextmanager
def _destination(output: str | os.PathLike[str] | BinaryIO, force: bool) -> Iterator[tuple[_Counting, str]]:
    """A stream to write to: ``output`` itself, or a temporary file renamed onto the path when complete.

    An existing path is refused unless ``force``; a failed export leaves nothing at the destination.
    """
    if not isinstance(output, str | os.PathLike):
        yield _Counting(output), "-"
        return
    dest = Path(output)
    if dest.is_dir():
        raise UsageError(f"output {dest} is a directory")
    if not force and os.path.lexists(dest):
        raise UsageError(f"output {dest} exists; choose another name, or pass --force to replace it")
    try:
        with AtomicFile(dest, fsync=True, exclusive=not force, mode=0o666) as fh:
            yield _Counting(fh), str(dest)
    except OSError as exc:
        raise from_oserror(exc, str(dest)) from exc
    if not fh.installed:  # appeared meanwhile
        raise UsageError(f"output {dest} exists; choose another name, or pass --force to replace it")


@contextmanager
def _shared_lock(store: Store) -> Iterator[None]:
    """The store's shared object lock, so a gc sweeps nothing being read; none on a read-only store."""
    with ExitStack() as stack:
        with suppress(PermissionDenied):
            stack.enter_context(store.writing())
        yield


def export(store: Store, records: list[CheckpointRecord], output: str | os.PathLike[str] | BinaryIO,
           progress: Progress | None = None, *, force: bool = False) -> ExportResult:
    """Write ``records`` and every object they reach, each once, as one archive.

    Objects go records first, then trees (each after the tree that reaches
    it), then file contents grouped by path, so the versions of one file sit
    side by side and compress against each other. Refuses (before anything
    is written at ``output``) a checkpoint holding a symlink that leads out
    of its tree, since no import would accept it.
    """
    records = list({r.checkpoint_id: r for r in records}.values())
    if not records:
        raise UsageError("nothing to export: give at least one checkpoint id")
    objects = store.objects
    with _shared_lock(store), _destination(output, force) as (out, name):
        writer = ArchiveWriter(out, store.settings.compression_level)
        writer.header(records)
        for record in records:
            writer.object(record.record_oid, objects.get(record.record_oid))
        trees = TreeCheck()
        sizes: dict[str, int] = {}
        by_path = _write_trees(objects, records, writer, trees, sizes)
        try:
            for record in records:
                trees.check_root(record.checkpoint_id, record.state_hash)
        except UnsafeTree as exc:
            raise _unexportable(exc) from None
        todo = [oid for oids in by_path.values() for oid in oids if oid not in writer.written]
        done, total = 0, sum(sizes[oid] for oid in todo)
        for oid in todo:
            data = objects.get(oid)
            writer.object(oid, data)
            done += len(data)
            if progress:
                progress(done, total)
        if progress:
            progress(done, done)  # a chunk's size was an estimate
        writer.finish()
    return ExportResult(name, "rrstore", [r.checkpoint_id for r in records], len(writer.written),
                        writer.bytes, out.count)


def _unexportable(exc: UnsafeTree) -> UnsafeTree:
    """Refused as push refuses it (UnsafeTree, exit 17): one rule for everything that leaves this store."""
    return exc.with_lead("export refused, nothing was written (no import would accept it; --format tar keeps it)")


def _write_trees(objects: ObjectStore, records: list[CheckpointRecord], writer: ArchiveWriter,
                 trees: TreeCheck, sizes: dict[str, int]) -> dict[str, list[str]]:
    """Write every tree once, parents first; return file contents to write, grouped by path, and
    put their sizes in ``sizes`` (for progress: a chunk's is its file's share, an estimate).

    Kept apart from ``tree.reachable``: the export needs each object's kind
    (trees precede contents, so a reader learns what an object must be
    before it arrives) and its path, and must not let a blob that happens to
    equal a tree's bytes hide that tree's subdirectories.
    """
    by_path: dict[str, list[str]] = {}
    queued: set[str] = set()
    for record in records:
        stack = [(record.state_hash, "")]
        while stack:
            oid, path = stack.pop()
            if oid in trees:
                continue
            data = objects.get(oid)
            entries = decode_tree(oid, data)
            try:
                trees.add(oid, entries, (record.checkpoint_id, path))
            except UnsafeTree as exc:
                raise _unexportable(exc) from None
            if oid not in writer.written:
                writer.object(oid, data)
            for entry in reversed(entries):
                child = f"{path}/{entry.name}" if path else entry.name
                if entry.kind == DIR and entry.oid not in trees:
                    stack.append((entry.oid, child))
                elif entry.kind == FILE:
                    contents = content_oids(entry)
                    for content in contents:
                        if content not in queued:
                            queued.add(content)
                            sizes[content] = entry.size // len(contents)
                            by_path.setdefault(child, []).append(content)
    return by_path


# --- tar export --------------------------------------------------------------------------------------


def export_tar(store: Store, record: CheckpointRecord, output: str | os.PathLike[str] | BinaryIO,
               progress: Progress | None = None, *, force: bool = False) -> ExportResult:
    """One checkpoint's files as a zstd-compressed tarball that ``tar --zstd -xf`` extracts.

    Paths are relative, in the trees' byte order, directories (empty ones
    too) before what they hold; files are 0644 or 0755 (the exec bit),
    symlinks are links; every mtime is the checkpoint's time and owners are
    0, so the same checkpoint always gives the same tar stream (``tar.write_tar``).
    """
    with _shared_lock(store), _destination(output, force) as (out, name):
        entries, size = write_tar(store.objects, record, out, store.settings.compression_level, progress)
    return ExportResult(name, "tar", [record.checkpoint_id], entries, size, out.count)


def _phase(progress: Progress | None, index: int, count: int) -> Progress | None:
    """Progress of pass ``index`` of ``count`` over the same file, as one bar."""
    if progress is None:
        return None
    return lambda done, total: progress(index * total + done, count * total)


def verify_archive(path: str | os.PathLike[str], progress: Progress | None = None, *,
                   limits: Limits | None = None, endpoint_url: str | None = None,
                   options: S3Options | None = None) -> VerifyResult:
    """Check an archive completely without touching any store; ArchiveError says what is wrong.

    ``path`` may be ``s3://BUCKET/KEY`` (``endpoint_url`` for a non-AWS
    server; ``options``: region, profile): the archive is streamed, never copied locally. It must be
    self-contained: every object its checkpoints reach is in it. Memory
    stays bounded whatever the input: objects are hashed in pieces, the
    stream may inflate only so far (``Limits``), no object may exceed the
    store's object limit, and no frame may need a window over 128 MiB.
    """
    return read_archive(path, limits or Limits(), None, progress, endpoint_url, options)


class _Put:
    """Pass-two sink: each verified object into the store (small ones packed), records held back.

    Records are written by ``records()`` only after every other object is
    flushed: an import that fails on the way (a full disk) leaves no record
    behind. They are small (one per checkpoint), so holding them costs little.
    """

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.new = 0
        self.new_bytes = 0
        self.held: list[tuple[str, bytes]] = []

    def __call__(self, oid: str, data: bytes, kind: int) -> None:
        if kind == RECORD:
            self.held.append((oid, data))
        else:
            self._put(oid, data, loose=False)

    def _put(self, oid: str, data: bytes, *, loose: bool) -> None:
        if self.objects.put(data, oid, loose=loose).new:
            self.new += 1
            self.new_bytes += len(data)

    def records(self) -> None:
        for oid, data in self.held:
            self._put(oid, data, loose=True)
        self.held.clear()


def import_archive(store: Store | Callable[[], Store], path: str | os.PathLike[str],
                   progress: Progress | None = None, *, limits: Limits | None = None,
                   endpoint_url: str | None = None, options: S3Options | None = None) -> ImportResult:
    """Add an archive's checkpoints to a store, after checking all of it; importing twice changes nothing.

    ``store`` may be a function that opens (or creates) the store: it is
    called only once the archive has passed every check, so a bad archive
    creates nothing. Pass one verifies (``verify_archive``); a checkpoint id
    the store already holds with another record is a conflict, refused
    before any write. Pass two reads the archive again, re-verifying every
    object as it puts it, then writes the objects out, then the records (so a
    failure before, such as a full disk, leaves no record behind), makes them
    durable, and only then creates the refs, exclusively, all with one add time.
    An archive on S3 (``s3://BUCKET/KEY``) is streamed twice the same way,
    never copied locally: nothing in the format needs a seek.
    """
    limits = limits or Limits()
    name = os.fspath(path)
    try:
        verified = verify_archive(path, _phase(progress, 0, 2), limits=limits, endpoint_url=endpoint_url,
                                  options=options)
        if not isinstance(store, Store):
            store = store()
        added, unchanged = _plan_refs(store, verified)
    except ArchiveError as exc:
        raise ArchiveError(exc.path, f"{exc.reason}; nothing was imported") from None
    result = ImportResult(name, added, unchanged, verified.objects)
    put = _Put(store.objects)
    with store.writing():
        again = read_archive(path, limits, put, _phase(progress, 1, 2), endpoint_url, options)
        if again.digest != verified.digest:
            raise ArchiveError(name, "the file changed while it was imported; no checkpoint was added")
        store.objects.flush()
        put.records()
        store.barrier()
        now = time.time_ns()  # one add time for the whole import: its checkpoints keep their own order
        for checkpoint_id in added:
            oid = verified.refs[checkpoint_id]
            if not store.refs.create(checkpoint_id, oid, now) and store.refs.get(checkpoint_id) != oid:
                raise ArchiveError(name, f"checkpoint {checkpoint_id} was created meanwhile with another record")
    result.objects_new, result.bytes_new = put.new, put.new_bytes
    return result


def _plan_refs(store: Store, verified: VerifyResult) -> tuple[list[str], list[str]]:
    """(ids to add, ids already there with the same record); another record under an id is a conflict."""
    plan = plan_refs(verified.refs, store.refs.get)
    if plan.conflicts:
        conflicts = list(plan.conflicts)
        raise ArchiveError(verified.path, f"conflict: the store already has checkpoint(s) {', '.join(conflicts[:3])}"
                                          f"{' …' if len(conflicts) > 3 else ''} with a different record")
    return plan.todo, plan.present
