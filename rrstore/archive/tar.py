"""One checkpoint's files as a ``.tar.zst`` (below the archive verbs): what ``tar --zstd -xf`` extracts.

Deterministic: paths in the trees' byte order, directories before what
they hold, fixed modes, owners 0 and the checkpoint's time as every mtime,
so the same checkpoint always gives the same tar stream. Every file's
content is checked against its tree as it is written.
"""

from __future__ import annotations

import tarfile
from typing import IO, cast

import blake3

from ..errors import CorruptObject
from ..record import CheckpointRecord
from ..store.objects import ObjectStore
from ..tree import DIR, FILE, SYMLINK, Entry, content_oids, flatten
from ..worktree.workers import Progress
from .stream import Writable, compressor


class Content:
    """A file entry's content as a readable stream (chunks read one at a time, whole hash checked)."""

    def __init__(self, objects: ObjectStore, entry: Entry) -> None:
        self.objects = objects
        self.entry = entry
        self.oids = iter(content_oids(entry))
        self.current = memoryview(b"")
        self.offset = 0
        self.length = 0
        self.hasher = blake3.blake3() if entry.chunks else None

    def read(self, size: int = -1) -> bytes:
        pieces, want = [], size if size >= 0 else 1 << 62
        while want:
            if self.offset == len(self.current):
                oid = next(self.oids, None)
                if oid is None:
                    if size >= 0 and self.length + size - want < self.entry.size:
                        raise CorruptObject(self.entry.oid, reason=f"content is shorter than the "
                                                                   f"{self.entry.size} bytes its tree says")
                    break
                self.current, self.offset = memoryview(self.objects.get(oid)), 0
            piece = self.current[self.offset:self.offset + want]
            self.offset += len(piece)
            want -= len(piece)
            pieces.append(piece)
        data = b"".join(pieces)
        self.length += len(data)
        if self.hasher is not None:
            self.hasher.update(data)
        return data

    def check(self) -> None:
        if self.read(1) or self.length != self.entry.size:
            raise CorruptObject(self.entry.oid, reason=f"content is not the {self.entry.size} bytes its tree says")
        if self.hasher is not None and self.hasher.hexdigest() != self.entry.oid:
            raise CorruptObject(self.entry.oid, actual=self.hasher.hexdigest())


def write_tar(objects: ObjectStore, record: CheckpointRecord, out: Writable, level: int,
              progress: Progress | None = None) -> tuple[int, int]:
    """Write ``record``'s files to ``out`` as one zstd-compressed tar stream; (entries, content bytes)."""
    mtime = int(record.created.timestamp())
    entries = flatten(objects, record.state_hash)
    zstd_writer = compressor(level).stream_writer(cast("IO[bytes]", out), closefd=False)
    with zstd_writer as zstd, \
            tarfile.open(fileobj=zstd, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8",
                         errors="surrogateescape") as tar:
        size = add_entries(tar, objects, entries, mtime, progress)
    return len(entries), size


def add_entries(tar: tarfile.TarFile, objects: ObjectStore, entries: dict[str, Entry], mtime: int,
                progress: Progress | None = None) -> int:
    """Add ``entries`` (path -> entry, parents first) to ``tar``, each file checked as written; content bytes.

    Files are 0644 or 0755 (the exec bit), directories 0755, symlinks links;
    owners 0 and ``mtime`` everywhere (a tree records no times). Shared by
    ``export --format tar`` and ``dump --format tar`` (``browse``).
    """
    size, total = 0, sum(e.size for e in entries.values() if e.kind == FILE)
    for path, entry in entries.items():
        info = tarfile.TarInfo(path)
        info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
        if entry.kind == DIR:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        elif entry.kind == SYMLINK:
            info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, entry.target
            tar.addfile(info)
        else:
            info.mode, info.size = (0o755 if entry.executable else 0o644), entry.size
            content = Content(objects, entry)
            tar.addfile(info, content)
            content.check()
            size += entry.size
            if progress:
                progress(size, total)
    return size
