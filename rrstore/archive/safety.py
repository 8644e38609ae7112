"""Reading an archive safely (below the archive verbs): the limits, and the one checking pass.

The reader is the one place that trusts nothing: it decompresses a little
at a time under a size budget (``Limits``), hashes every object, parses
every record and tree, refuses what ``tree.TreeCheck`` refuses (names that
are never written, symlinks that lead out of a tree), and requires each
object exactly once, after whatever reaches it, so the kind of every object
is known when it arrives and the whole check runs in one pass with bounded
memory. The bytes themselves are read by ``stream``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import blake3

from ..errors import CorruptObject, UnsafeTree
from ..record import CheckpointRecord
from ..store.objects import MAX_OBJECT_SIZE, hash_bytes
from ..tree import DIR, FILE, Entry, TreeCheck, decode_tree, valid_name
from ..worktree.workers import Progress
from .location import S3Options, opened
from .stream import ARCHIVE_FORMAT, ObjectHead, Source, read_header, read_object_head, read_trailer

RECORD, TREE, BLOB = 0, 1, 2   # what an object must be; a lower value is the stricter need
_KIND = {RECORD: "record", TREE: "tree", BLOB: "file content"}

Sink = Callable[[str, bytes, int], None]


@dataclass(frozen=True)
class Limits:
    """What a reader accepts: the stream inflates to at most max(floor, ratio x compressed size)."""

    ratio: int = 1000
    floor: int = 1 << 30
    max_object: int = MAX_OBJECT_SIZE

    def budget(self, compressed: int) -> int:
        return max(self.floor, self.ratio * compressed)


@dataclass
class VerifyResult:
    path: str
    refs: dict[str, str]          # checkpoint id -> record oid, in the archive's order
    created: str = ""
    rrstore_version: str = ""
    objects: int = 0
    bytes: int = 0
    archive_bytes: int = 0
    digest: str = ""
    success: bool = True

    @property
    def message(self) -> str:
        return (f"archive {self.path} is valid: {len(self.refs)} checkpoint(s), {self.objects} object(s), "
                f"{self.bytes} bytes ({self.archive_bytes} compressed)")

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "valid": True, "format": ARCHIVE_FORMAT, "created": self.created,
                "rrstore_version": self.rrstore_version, "checkpoints": list(self.refs),
                "objects": self.objects, "bytes": self.bytes, "archive_bytes": self.archive_bytes,
                "blake3": self.digest}


@dataclass(frozen=True)
class Where:
    """Where an object is first reached: a checkpoint, and the path in its tree ('' for the root)."""

    checkpoint_id: str
    path: str

    def child(self, name: str) -> Where:
        return Where(self.checkpoint_id, f"{self.path}/{name}" if self.path else name)

    def show(self) -> str:
        return f"checkpoint {self.checkpoint_id}, path {self.path or '/'}"


@dataclass(frozen=True)
class Expected:
    """An object something reached but that has not arrived yet: what it must be, and its size if known."""

    kind: int
    where: Where
    size: int | None


@dataclass(frozen=True)
class Arrived:
    """An object that arrived and passed its checks."""

    kind: int
    size: int


@dataclass(frozen=True)
class Chunked:
    """A file stored in chunks: the chunks' sizes must add up to the file's, checked once all arrived."""

    size: int
    chunks: tuple[str, ...]
    where: Where


def _bad_name(data: bytes) -> str:
    """Say which name makes a tree invalid, when that is the problem ('' otherwise)."""
    try:
        names = [e.get("name") for e in json.loads(data)["entries"] if isinstance(e, dict)]
    except (ValueError, TypeError, KeyError, RecursionError):
        return ""
    bad = next((n for n in names if not valid_name(n)), None)
    return "" if bad is None else (f"invalid name {bad!r} in tree (a name is one path component: not empty, "
                                   "'.' or '..', and without '/' or NUL)")


@dataclass
class _Options:
    """What one pass is asked to do besides checking: where verified objects go, and progress."""

    limits: Limits
    sink: Sink | None
    progress: Progress | None
    size: int


class _Reader:
    """One full pass over an archive, checking everything; ``sink`` receives each verified object.

    An object must arrive after whatever reaches it (the header reaches the
    records, a record its root tree, a tree its entries), so its kind is
    known when it arrives; it must arrive once, and only if something
    reaches it.
    """

    def __init__(self, src: Source, options: _Options) -> None:
        self.src = src
        self.limits, self.sink, self.progress, self.size = options.limits, options.sink, options.progress, options.size
        self.expected: dict[str, Expected] = {}
        self.arrived: dict[str, Arrived] = {}
        self.chunked: list[Chunked] = []
        self.trees = TreeCheck()
        self.roots: dict[str, str] = {}
        self.result = VerifyResult(src.path, {}, archive_bytes=options.size)

    def run(self) -> VerifyResult:
        self._header()
        while (head := read_object_head(self.src)) is not None:
            self._object(head)
            if self.progress:
                self.progress(min(self.src.consumed, self.size), self.size)
        self._trailer()
        if self.progress:  # the whole file read, trailer too
            self.progress(self.src.consumed, max(self.size, self.src.consumed))
        self._complete()
        return self.result

    def _header(self) -> None:
        header = read_header(self.src)
        for checkpoint_id, record in header.refs.items():
            self._expect(record, RECORD, Where(checkpoint_id, ""), None)
        self.result.refs = header.refs
        self.result.created, self.result.rrstore_version = header.created, header.rrstore_version

    def _expect(self, oid: str, kind: int, where: Where, size: int | None) -> None:
        fail = self.src.fail
        got = self.arrived.get(oid)
        if got is not None:
            if kind != BLOB and got.kind != kind:
                raise fail(f"{where.show()}: {_KIND[kind]} {oid} came earlier as {_KIND[got.kind]}; "
                           "objects must come after what reaches them")
            if size is not None and size != got.size:
                raise fail(f"{where.show()}: the tree says {size} bytes, the content has {got.size}")
            return
        old = self.expected.get(oid)
        if old is None:
            self.expected[oid] = Expected(kind, where, size)
            return
        if {kind, old.kind} == {RECORD, TREE}:
            raise fail(f"{where.show()}: object {oid} is reached both as a record and as a tree")
        if old.size is not None and size is not None and old.size != size:
            raise fail(f"{where.show()}: two tree entries give {oid} different sizes")
        if kind < old.kind:
            self.expected[oid] = Expected(kind, where, size if old.size is None else old.size)
        elif old.size is None and size is not None:
            self.expected[oid] = Expected(old.kind, old.where, size)

    def _object(self, head: ObjectHead) -> None:
        src, fail = self.src, self.src.fail
        oid, size = head
        if size > self.limits.max_object:
            raise fail(f"object {oid} claims {size} bytes, more than the {self.limits.max_object}-byte "
                       "object limit")
        src.reserve(size)
        if oid in self.arrived:
            raise fail(f"object {oid} comes twice")
        if oid not in self.expected:
            raise fail(f"object {oid} is not reached by the archive's checkpoints (at least not before it comes)")
        want = self.expected.pop(oid)
        data, actual = self._content(want.kind, size)
        if actual != oid:
            raise fail(f"{want.where.show()}: {_KIND[want.kind]} {oid} has been altered (its bytes hash to {actual})")
        if want.size is not None and want.size != size:
            raise fail(f"{want.where.show()}: the tree says {want.size} bytes, the content has {size}")
        self.arrived[oid] = Arrived(want.kind, size)
        if want.kind == RECORD:
            self._record(oid, data, want.where)
        elif want.kind == TREE:
            self._tree(oid, data, want.where)
        if self.sink is not None:
            self.sink(oid, data, want.kind)
        self.result.objects += 1
        self.result.bytes += size

    def _content(self, kind: int, size: int) -> tuple[bytes, str]:
        """The object's bytes and their hash; file content nobody keeps is hashed in pieces (b'')."""
        if kind == BLOB and self.sink is None:
            hasher = blake3.blake3()
            for piece in self.src.pieces(size):
                hasher.update(piece)
            return b"", hasher.hexdigest()
        data = self.src.read(size)
        return data, hash_bytes(data)

    def _record(self, oid: str, data: bytes, where: Where) -> None:
        checkpoint_id = where.checkpoint_id
        try:
            record = CheckpointRecord.decode(oid, data)
        except CorruptObject as exc:
            raise self.src.fail(f"checkpoint {checkpoint_id}: {exc.reason}") from None
        if record.checkpoint_id != checkpoint_id:
            raise self.src.fail(f"the header's checkpoint {checkpoint_id} names the record of "
                                f"{record.checkpoint_id!r}")
        self.roots[checkpoint_id] = record.state_hash
        self._expect(record.state_hash, TREE, where, None)

    def _tree(self, oid: str, data: bytes, where: Where) -> None:
        try:
            entries = decode_tree(oid, data)
            self.trees.add(oid, entries, (where.checkpoint_id, where.path))
        except CorruptObject as exc:
            raise self.src.fail(f"{where.show()}: {_bad_name(data) or exc.reason}") from None
        except UnsafeTree as exc:
            raise self.src.fail(exc.detail) from None
        for entry in entries:
            self._entry(entry, where.child(entry.name))

    def _entry(self, entry: Entry, child: Where) -> None:
        if entry.kind == DIR:
            self._expect(entry.oid, TREE, child, None)
        elif entry.kind == FILE and entry.chunks:
            self.chunked.append(Chunked(entry.size, entry.chunks, child))
            for chunk in entry.chunks:
                self._expect(chunk, BLOB, child, None)
        elif entry.kind == FILE:
            self._expect(entry.oid, BLOB, child, entry.size)

    def _trailer(self) -> None:
        trailer = read_trailer(self.src)
        if (trailer.objects, trailer.size) != (self.result.objects, self.result.bytes):
            raise self.src.fail(f"the trailer counts {trailer.objects} objects of {trailer.size} bytes, the stream "
                                f"holds {self.result.objects} of {self.result.bytes}")
        self.src.check_end()
        self.result.digest = trailer.digest

    def _complete(self) -> None:
        fail = self.src.fail
        if self.expected:
            oid, want = next(iter(self.expected.items()))
            raise fail(f"it lacks {len(self.expected)} object(s) its checkpoints reach, e.g. {_KIND[want.kind]} "
                       f"{oid} ({want.where.show()})")
        for chunked in self.chunked:
            if sum(self.arrived[c].size for c in chunked.chunks) != chunked.size:
                raise fail(f"{chunked.where.show()}: the tree says {chunked.size} bytes, the chunks hold another size")
        try:
            for checkpoint_id, root in self.roots.items():
                self.trees.check_root(checkpoint_id, root)
        except UnsafeTree as exc:
            raise fail(exc.detail) from None


def read_archive(path: str | os.PathLike[str], limits: Limits, sink: Sink | None,
                 progress: Progress | None, endpoint_url: str | None = None,
                 options: S3Options | None = None) -> VerifyResult:
    """One full, checking pass over the archive at ``path`` (a file or s3://BUCKET/KEY, streamed);
    ``sink`` gets each verified object and its kind."""
    with opened(path, endpoint_url, options) as (fh, size):
        src = Source(os.fspath(path), fh, limits.budget(size))
        return _Reader(src, _Options(limits, sink, progress, size)).run()
