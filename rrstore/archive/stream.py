"""The ``rrstore-archive-1`` format (below the archive verbs): writing its stream, and reading its frames.

The format is documented in docs/store-format.md, section 8: one header
line of canonical JSON, then tagged entries (``O`` + oid and size + the
object's bytes), then a trailer (``T`` + counts + the BLAKE3 of everything
before it), all in zstd frames. ``Source`` decompresses a little at a time
under a size budget and the ``read_*`` functions parse one part each; what
the entries must be (kinds, order, names, links) is ``safety``'s check.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, NamedTuple, Protocol, cast

import blake3
import zstandard

from .. import __version__
from ..errors import ArchiveError
from ..record import CheckpointRecord
from ..store.objects import canonical_json, is_oid
from ..store.refs import valid_id

ARCHIVE_FORMAT = "rrstore-archive-1"
TAG_OBJECT, TAG_TRAILER = b"O", b"T"
_OBJECT = struct.Struct("<32sQ")   # raw oid, size
_TRAILER = struct.Struct("<QQ")    # object count, object bytes
MAX_HEADER = 16 << 20
# Frames needing a larger window are refused (the decoder's memory stays bounded).
MAX_WINDOW = 1 << 27
# Uncompressed bytes decompressed (and hashed) per step.
PIECE = 1 << 20



class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


def compressor(level: int) -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(level=level, threads=-1, write_checksum=True)


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
        self._write(canonical_json(doc) + b"\n")

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


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class FrameWalk:
    """Checks, as the compressed bytes pass, that they are a whole number of zstd frames.

    The decoder reports a stream cut inside its last frame only when data is
    missing; cut in the frame's checksum, the content is all there. This walk
    reads only frame and block headers (a few bytes per 128 KiB block) as the
    bytes go by, so a stream that cannot seek (an S3 GET) is checked too.
    """

    def __init__(self) -> None:
        self.head = bytearray()   # header bytes gathered so far
        self.want = 5             # header bytes needed: magic and descriptor, or a block header (3)
        self.skip = 0             # bytes to pass over before the next header
        self.in_frame = False     # between a frame's header and its last block
        self.checksum = 0         # bytes of checksum after the current frame's last block
        self.inside = "its last frame"

    def feed(self, data: bytes) -> None:
        at, end = 0, len(data)
        while at < end:
            if self.skip:
                step = min(self.skip, end - at)
                self.skip -= step
                at += step
                continue
            step = min(self.want - len(self.head), end - at)
            self.head += data[at:at + step]
            at += step
            if len(self.head) == self.want:
                self._header()

    def _next(self, skip: int, *, in_frame: bool, inside: str = "its last frame") -> None:
        self.head.clear()
        self.skip, self.in_frame, self.inside = skip, in_frame, inside
        self.want = 3 if in_frame else 5

    def _header(self) -> None:
        head = self.head
        if self.in_frame:
            header = int.from_bytes(head[:3], "little")
            last, kind, size = bool(header & 1), header >> 1 & 3, header >> 3
            self._next((1 if kind == 1 else size) + (self.checksum if last else 0), in_frame=not last)
            return
        magic = int.from_bytes(head[:4], "little")
        if magic & 0xFFFFFFF0 == 0x184D2A50:   # skippable frame: magic, 4-byte size, data
            if len(head) < 8:
                self.want = 8
                return
            self._next(int.from_bytes(head[4:8], "little"), in_frame=False)
            return
        descriptor = head[4]
        single, checksum, dict_flag, fcs_flag = descriptor >> 5 & 1, descriptor >> 2 & 1, descriptor & 3, \
            descriptor >> 6
        rest = (0 if single else 1) + (0, 1, 2, 4)[dict_flag] + ((1 if single else 0), 2, 4, 8)[fcs_flag]
        self.checksum = 4 * checksum
        self._next(rest, in_frame=True, inside="a frame header")

    def problem(self) -> str:
        """Why the bytes fed are not a whole number of frames ('' if they are)."""
        if self.head:   # a header begun: a frame's (between frames) or a block's (inside one)
            where = "its last frame" if self.in_frame else "a frame header"
        elif self.skip:
            where = self.inside
        elif self.in_frame:
            where = "its last frame"
        else:
            return ""
        return f"truncated: the compressed stream stops inside {where}"


class _Watched:
    """The compressed input as read: counted, and walked by ``FrameWalk``."""

    def __init__(self, fh: Readable) -> None:
        self.fh = fh
        self.count = 0
        self.frames = FrameWalk()

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.count += len(data)
        self.frames.feed(data)
        return data


class Source:
    """The archive's uncompressed stream, decompressed at most ``PIECE`` bytes at a time under a size budget.

    ``fh`` is read front to back only (never seeked), so it may be a network stream.
    """

    def __init__(self, path: str, fh: Readable, budget: int) -> None:
        self.path = path
        self.raw = _Watched(fh)
        self.budget = budget
        dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
        self.reader = dctx.stream_reader(cast("IO[bytes]", self.raw), read_size=PIECE, read_across_frames=True,
                                         closefd=False)
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
        return self.raw.count

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
        """Nothing may follow the trailer, and the input must end where its last zstd frame does."""
        if self.at < len(self.buf) or self._step():
            raise self.fail("unexpected data after the trailer")
        while self.raw.read(PIECE):
            pass  # what the decoder left unread (it stops at the end of its last frame)
        problem = self.raw.frames.problem()
        if problem:
            raise self.fail(problem)


@dataclass
class Header:
    """What an archive's header line says: its checkpoints (id -> record oid, in order) and where it came from."""

    refs: dict[str, str]
    created: str
    rrstore_version: str


class ObjectHead(NamedTuple):
    """The start of one object entry: the oid it claims and its size in bytes."""

    oid: str
    size: int


class Trailer(NamedTuple):
    """The trailer's counts (objects, their bytes) and the stream's BLAKE3, checked against its checksum."""

    objects: int
    size: int
    digest: str


def read_header(src: Source) -> Header:
    """Parse and check the header line: the format, and each checkpoint's id and record oid, once each."""
    fail = src.fail
    try:
        doc = json.loads(src.line(MAX_HEADER))
    except (ValueError, RecursionError):
        raise fail("not an rrstore archive (the header is not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != ARCHIVE_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise fail(f"not an {ARCHIVE_FORMAT} archive (format {found!r})")
    listed = doc.get("checkpoints")
    if not isinstance(listed, list) or not listed:
        raise fail("the header lists no checkpoints")
    refs: dict[str, str] = {}
    for item in listed:
        ok = isinstance(item, dict) and isinstance(item.get("id"), str) and valid_id(item["id"])
        if not ok or not is_oid(item.get("record")):
            raise fail(f"bad checkpoint entry in the header: {item!r:.120}")
        if item["id"] in refs or item["record"] in refs.values():
            raise fail(f"checkpoint {item['id']} is listed twice")
        refs[item["id"]] = item["record"]
    return Header(refs, str(doc.get("created", "")), str(doc.get("rrstore_version", "")))


def read_object_head(src: Source) -> ObjectHead | None:
    """The next object entry's head; None when the trailer comes next (any other tag is an error)."""
    tag = src.read(1, what="the object list")
    if tag == TAG_TRAILER:
        return None
    if tag != TAG_OBJECT:
        raise src.fail(f"unknown entry tag {tag!r} at byte {src.offset - 1} of the stream")
    raw, size = _OBJECT.unpack(src.read(_OBJECT.size))
    return ObjectHead(raw.hex(), size)


def read_trailer(src: Source) -> Trailer:
    """The trailer (after its tag): its counts, and the stream's digest once it matches the stored checksum."""
    count, total = _TRAILER.unpack(src.read(_TRAILER.size, what="the trailer"))
    computed = src.hasher.digest()
    stored = src.read(32, hashed=False, what="the trailer")
    if stored != computed:
        raise src.fail("the trailer checksum does not match the stream: the archive was altered")
    return Trailer(count, total, computed.hex())
