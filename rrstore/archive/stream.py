"""The ``rrstore-archive-1`` stream (below the archive verbs): writing it, and reading it safely.

The format is documented in docs/store-format.md, section 8. The reader is
the one place that trusts nothing: it decompresses a little at a time under
a size budget, hashes every object, parses every record and tree, refuses
what ``tree.TreeCheck`` refuses (names that are never written, symlinks that
lead out of a tree), and requires each object exactly
once, after whatever reaches it, so the kind of every object is known when it
arrives and the whole check runs in one pass with bounded memory.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import IO, BinaryIO, Protocol, cast

import blake3
import zstandard

from .. import __version__
from ..errors import ArchiveError, CorruptObject, UnsafeTree, UsageError, from_oserror
from ..record import CheckpointRecord
from ..store.objects import MAX_OBJECT_SIZE, hash_bytes, is_oid
from ..store.refs import valid_id
from ..tree import DIR, FILE, TreeCheck, decode_tree, valid_name

ARCHIVE_FORMAT = "rrstore-archive-1"
TAG_OBJECT, TAG_TRAILER = b"O", b"T"
_OBJECT = struct.Struct("<32sQ")   # raw oid, size
_TRAILER = struct.Struct("<QQ")    # object count, object bytes
MAX_HEADER = 16 << 20
# Frames needing a larger window are refused (the decoder's memory stays bounded).
MAX_WINDOW = 1 << 27
# Uncompressed bytes decompressed (and hashed) per step.
PIECE = 1 << 20
RECORD, TREE, BLOB = 0, 1, 2   # what an object must be; a lower value is the stricter need
_KIND = {RECORD: "record", TREE: "tree", BLOB: "file content"}

Progress = Callable[[int, int], None]
Sink = Callable[[str, bytes, int], None]
Where = tuple[str, str]   # (checkpoint id, path in its tree) where an object is first reached


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


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


def _show(where: Where, name: str = "") -> str:
    checkpoint_id, path = where
    full = f"{path}/{name}" if path and name else path or name
    return f"checkpoint {checkpoint_id}, path {full or '/'}"


def compressor(level: int) -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(level=level, threads=-1, write_checksum=True)


def _canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


class ArchiveWriter:
    """The uncompressed archive stream, hashed as it is written, into one multi-threaded zstd frame."""

    def __init__(self, out: Writable, level: int) -> None:
        self.zstd = compressor(level).stream_writer(cast("IO[bytes]", out), closefd=False)
        self.hasher = blake3.blake3()
        self.written: set[str] = set()
        self.bytes = 0

    def _write(self, data: bytes) -> None:
        self.hasher.update(data)
        self.zstd.write(data)

    def header(self, records: list[CheckpointRecord]) -> None:
        doc = {"format": ARCHIVE_FORMAT, "rrstore_version": __version__,
               "created": datetime.now().astimezone().isoformat(timespec="seconds"),
               "checkpoints": [{"id": r.checkpoint_id, "record": r.record_oid} for r in records]}
        self._write(_canonical(doc) + b"\n")

    def object(self, oid: str, data: bytes) -> None:
        self._write(TAG_OBJECT + _OBJECT.pack(bytes.fromhex(oid), len(data)))
        self._write(data)
        self.written.add(oid)
        self.bytes += len(data)

    def finish(self) -> None:
        self._write(TAG_TRAILER + _TRAILER.pack(len(self.written), self.bytes))
        self.zstd.write(self.hasher.digest())
        self.zstd.close()


# --- reading -------------------------------------------------------------------------------------------


class _Source:
    """The archive's uncompressed stream, decompressed at most ``PIECE`` bytes at a time under a size budget."""

    def __init__(self, path: str, fh: BinaryIO, budget: int) -> None:
        self.path = path
        self.fh = fh
        self.budget = budget
        dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
        self.reader = dctx.stream_reader(fh, read_size=PIECE, read_across_frames=True, closefd=False)
        self.inflated = 0      # uncompressed bytes decompressed
        self.offset = 0        # uncompressed bytes parsed
        self.buf = bytearray()
        self.at = 0
        self.hasher = blake3.blake3()

    def fail(self, reason: str) -> ArchiveError:
        return ArchiveError(self.path, reason)

    @property
    def consumed(self) -> int:
        """Compressed bytes read so far."""
        return self.fh.tell()

    def _step(self) -> bool:
        """Decompress up to PIECE more bytes; False at the end of the stream."""
        try:
            out = self.reader.read(PIECE)
        except zstandard.ZstdError as exc:
            raise self.fail(f"damaged compressed data ({exc})") from None
        if not out:
            return False
        self.inflated += len(out)
        if self.inflated > self.budget:
            raise self._bomb()
        if self.at > PIECE and self.at * 2 > len(self.buf):
            del self.buf[:self.at]
            self.at = 0
        self.buf += out
        return True

    def _bomb(self) -> ArchiveError:
        return self.fail(f"it inflates to more than {self.budget} bytes from {self.consumed} compressed "
                         "bytes; refused as a decompression bomb")

    def reserve(self, size: int) -> None:
        if self.offset + size > self.budget:
            raise self._bomb()

    def _take(self, size: int, hashed: bool) -> bytes:
        data = bytes(self.buf[self.at:self.at + size])
        self.at += size
        self.offset += size
        if hashed:
            self.hasher.update(data)
        return data

    def pieces(self, size: int) -> Iterator[bytes]:
        while size:
            want = min(size, PIECE)
            while len(self.buf) - self.at < want:
                if not self._step():
                    raise self.fail("truncated: the stream ends inside an object")
            piece = self._take(want, True)
            size -= len(piece)
            yield piece

    def read(self, size: int, *, hashed: bool = True, what: str = "an object") -> bytes:
        while len(self.buf) - self.at < size:
            if not self._step():
                raise self.fail(f"truncated: the stream ends inside {what}")
        return self._take(size, hashed)

    def line(self, limit: int) -> bytes:
        while (end := self.buf.find(b"\n", self.at)) < 0 and len(self.buf) - self.at <= limit:
            if not self._step():
                raise self.fail("truncated, or not an rrstore archive: the stream ends before its header line does")
        if end < 0 or end - self.at > limit:
            raise self.fail(f"not an rrstore archive (no header line in the first {limit} bytes)")
        return self._take(end + 1 - self.at, True)

    def check_end(self) -> None:
        """Nothing may follow the trailer, and the file must end where its last zstd frame does."""
        if self.at < len(self.buf) or self._step():
            raise self.fail("unexpected data after the trailer")
        problem = _frames_problem(self.fh)
        if problem:
            raise self.fail(problem)


def _frames_problem(fh: BinaryIO) -> str:
    """Why the file is not a whole number of zstd frames ('' if it is), from frame and block headers only.

    The decoder reports a stream cut inside its last frame only when data is
    missing; cut in the frame's checksum, the content is all there. This walk
    reads a few bytes per 128 KiB block.
    """
    end = os.fstat(fh.fileno()).st_size
    at = 0
    while at < end:
        fh.seek(at)
        head = fh.read(14)
        if len(head) < 8:
            return "truncated: the compressed stream stops inside a frame header"
        magic = struct.unpack_from("<I", head)[0]
        if magic & 0xFFFFFFF0 == 0x184D2A50:   # skippable frame
            at += 8 + struct.unpack_from("<I", head, 4)[0]
            continue
        descriptor = head[4]
        single, checksum, dict_flag, fcs_flag = descriptor >> 5 & 1, descriptor >> 2 & 1, descriptor & 3, \
            descriptor >> 6
        at += 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag] + ((1 if single else 0), 2, 4, 8)[fcs_flag]
        last = False
        while not last:
            fh.seek(at)
            block = fh.read(3)
            if len(block) < 3:
                return "truncated: the compressed stream stops inside its last frame"
            header = int.from_bytes(block, "little")
            last, kind, size = bool(header & 1), header >> 1 & 3, header >> 3
            at += 3 + (1 if kind == 1 else size)
        at += 4 * checksum
    return "truncated: the compressed stream stops inside its last frame" if at > end else ""


def _bad_name(data: bytes) -> str:
    """Say which name makes a tree invalid, when that is the problem ('' otherwise)."""
    try:
        names = [e.get("name") for e in json.loads(data)["entries"] if isinstance(e, dict)]
    except (ValueError, TypeError, KeyError, RecursionError):
        return ""
    bad = next((n for n in names if not valid_name(n)), None)
    return "" if bad is None else (f"invalid name {bad!r} in tree (a name is one path component: not empty, "
                                   "'.' or '..', and without '/' or NUL)")


@contextmanager
def _opened(path: str | os.PathLike[str]) -> Iterator[tuple[BinaryIO, int]]:
    if os.fspath(path) == "-":
        raise UsageError("an archive is read from a file, not from stdin ('-'); save it to a file first")
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        raise UsageError(f"no such archive: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not an archive") from None
    except OSError as exc:
        raise from_oserror(exc, str(path), "read") from exc
    with fh:
        yield fh, os.fstat(fh.fileno()).st_size


class _Reader:
    """One full pass over an archive, checking everything; ``sink`` receives each verified object.

    An object must arrive after whatever reaches it (the header reaches the
    records, a record its root tree, a tree its entries), so its kind is
    known when it arrives; it must arrive once, and only if something
    reaches it.
    """

    def __init__(self, src: _Source, limits: Limits, sink: Sink | None,
                 progress: Progress | None, size: int) -> None:
        self.src = src
        self.limits = limits
        self.sink = sink
        self.progress = progress
        self.size = size
        self.expected: dict[str, tuple[int, Where, int | None]] = {}
        self.arrived: dict[str, tuple[int, int]] = {}   # oid -> (kind, size)
        self.chunked: list[tuple[int, tuple[str, ...], Where]] = []
        self.trees = TreeCheck()
        self.roots: dict[str, str] = {}
        self.result = VerifyResult(src.path, {}, archive_bytes=size)

    def run(self) -> VerifyResult:
        self._header()
        while (tag := self.src.read(1, what="the object list")) == TAG_OBJECT:
            self._object()
            if self.progress:
                self.progress(min(self.src.consumed, self.size), self.size)
        if tag != TAG_TRAILER:
            raise self.src.fail(f"unknown entry tag {tag!r} at byte {self.src.offset - 1} of the stream")
        self._trailer()
        self._complete()
        return self.result

    def _header(self) -> None:
        fail = self.src.fail
        try:
            doc = json.loads(self.src.line(MAX_HEADER))
        except (ValueError, RecursionError):
            raise fail("not an rrstore archive (the header is not JSON)") from None
        if not isinstance(doc, dict) or doc.get("format") != ARCHIVE_FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else None
            raise fail(f"not an {ARCHIVE_FORMAT} archive (format {found!r})")
        listed = doc.get("checkpoints")
        if not isinstance(listed, list) or not listed:
            raise fail("the header lists no checkpoints")
        for item in listed:
            ok = isinstance(item, dict) and isinstance(item.get("id"), str) and valid_id(item["id"])
            if not ok or not is_oid(item.get("record")):
                raise fail(f"bad checkpoint entry in the header: {item!r:.120}")
            if item["id"] in self.result.refs or item["record"] in self.expected:
                raise fail(f"checkpoint {item['id']} is listed twice")
            self.result.refs[item["id"]] = item["record"]
            self._expect(item["record"], RECORD, (item["id"], ""), None)
        self.result.created = str(doc.get("created", ""))
        self.result.rrstore_version = str(doc.get("rrstore_version", ""))

    def _expect(self, oid: str, kind: int, where: Where, size: int | None) -> None:
        fail = self.src.fail
        if oid in self.arrived:
            got, got_size = self.arrived[oid]
            if kind != BLOB and got != kind:
                raise fail(f"{_show(where)}: {_KIND[kind]} {oid} came earlier as {_KIND[got]}; "
                           "objects must come after what reaches them")
            if size is not None and size != got_size:
                raise fail(f"{_show(where)}: the tree says {size} bytes, the content has {got_size}")
            return
        old = self.expected.get(oid)
        if old is None:
            self.expected[oid] = (kind, where, size)
            return
        old_kind, old_where, old_size = old
        if {kind, old_kind} == {RECORD, TREE}:
            raise fail(f"{_show(where)}: object {oid} is reached both as a record and as a tree")
        if old_size is not None and size is not None and old_size != size:
            raise fail(f"{_show(where)}: two tree entries give {oid} different sizes")
        if kind < old_kind:
            self.expected[oid] = (kind, where, size if old_size is None else old_size)
        elif old_size is None and size is not None:
            self.expected[oid] = (old_kind, old_where, size)

    def _object(self) -> None:
        src, fail = self.src, self.src.fail
        raw, size = _OBJECT.unpack(src.read(_OBJECT.size))
        oid = raw.hex()
        if size > self.limits.max_object:
            raise fail(f"object {oid} claims {size} bytes, more than the {self.limits.max_object}-byte "
                       "object limit")
        src.reserve(size)
        if oid in self.arrived:
            raise fail(f"object {oid} comes twice")
        if oid not in self.expected:
            raise fail(f"object {oid} is not reached by the archive's checkpoints (at least not before it comes)")
        kind, where, want = self.expected.pop(oid)
        data = b""
        if kind == BLOB and self.sink is None:
            hasher = blake3.blake3()
            for piece in src.pieces(size):
                hasher.update(piece)
            actual = hasher.hexdigest()
        else:
            data = src.read(size)
            actual = hash_bytes(data)
        if actual != oid:
            raise fail(f"{_show(where)}: {_KIND[kind]} {oid} has been altered (its bytes hash to {actual})")
        if want is not None and want != size:
            raise fail(f"{_show(where)}: the tree says {want} bytes, the content has {size}")
        self.arrived[oid] = (kind, size)
        if kind == RECORD:
            self._record(oid, data, where)
        elif kind == TREE:
            self._tree(oid, data, where)
        if self.sink is not None:
            self.sink(oid, data, kind)
        self.result.objects += 1
        self.result.bytes += size

    def _record(self, oid: str, data: bytes, where: Where) -> None:
        checkpoint_id = where[0]
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
        checkpoint_id, path = where
        try:
            entries = decode_tree(oid, data)
            self.trees.add(oid, entries, where)
        except CorruptObject as exc:
            raise self.src.fail(f"{_show(where)}: {_bad_name(data) or exc.reason}") from None
        except UnsafeTree as exc:
            raise self.src.fail(exc.detail) from None
        for entry in entries:
            child = (checkpoint_id, f"{path}/{entry.name}" if path else entry.name)
            if entry.kind == DIR:
                self._expect(entry.oid, TREE, child, None)
            elif entry.kind == FILE and entry.chunks:
                self.chunked.append((entry.size, entry.chunks, child))
                for chunk in entry.chunks:
                    self._expect(chunk, BLOB, child, None)
            elif entry.kind == FILE:
                self._expect(entry.oid, BLOB, child, entry.size)

    def _trailer(self) -> None:
        src = self.src
        count, total = _TRAILER.unpack(src.read(_TRAILER.size, what="the trailer"))
        computed = src.hasher.digest()
        stored = src.read(32, hashed=False, what="the trailer")
        if stored != computed:
            raise src.fail("the trailer checksum does not match the stream: the archive was altered")
        if (count, total) != (self.result.objects, self.result.bytes):
            raise src.fail(f"the trailer counts {count} objects of {total} bytes, the stream holds "
                           f"{self.result.objects} of {self.result.bytes}")
        src.check_end()
        self.result.digest = computed.hex()

    def _complete(self) -> None:
        fail = self.src.fail
        if self.expected:
            oid, (kind, where, _) = next(iter(self.expected.items()))
            raise fail(f"it lacks {len(self.expected)} object(s) its checkpoints reach, e.g. {_KIND[kind]} "
                       f"{oid} ({_show(where)})")
        for size, chunks, where in self.chunked:
            if sum(self.arrived[c][1] for c in chunks) != size:
                raise fail(f"{_show(where)}: the tree says {size} bytes, the chunks hold another size")
        try:
            for checkpoint_id, root in self.roots.items():
                self.trees.check_root(checkpoint_id, root)
        except UnsafeTree as exc:
            raise fail(exc.detail) from None


def read_archive(path: str | os.PathLike[str], limits: Limits, sink: Sink | None,
                 progress: Progress | None) -> VerifyResult:
    """One full, checking pass over the archive at ``path``; ``sink`` gets each verified object and its kind."""
    with _opened(path) as (fh, size):
        src = _Source(os.fspath(path), fh, limits.budget(size))
        return _Reader(src, limits, sink, progress, size).run()


