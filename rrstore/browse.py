"""Browse (verb over trees): look inside checkpoints without restoring them.

``ls`` lists a checkpoint's tree (or the subtree or file at a path),
``cat`` streams one file's bytes verified as they go, ``dump`` writes a
plain tar or zip of the files, ``find`` names the checkpoints holding a
path that matches a glob, ``log`` the checkpoints where a path changed.

Paths are tree paths: relative to the project root, ``/``-separated,
whatever the current directory (``git show ID:path``'s rule). A tree records
the exec bit, sizes, BLAKE3 hashes and link targets, not times or owners:
modes shown are 0644/0755 for files, 0755 for directories, 0777 for links
(as ``export --format tar`` writes them), and the checkpoint's time is the
mtime of everything ``dump`` writes.
"""

from __future__ import annotations

import difflib
import os
import re
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from typing import IO, BinaryIO, NamedTuple, cast

from .archive.files import ExportResult, _destination, _shared_lock
from .archive.stream import Writable
from .archive.tar import Content, add_entries
from .checkpoint import CheckpointManager
from .errors import ContentDamaged, CorruptObject, ObjectMissing, PathNotFound, RRStoreError, UsageError
from .record import CheckpointRecord
from .store.objects import ObjectStore
from .tree import DIR, FILE, SYMLINK, Entry, check_expansion, content_oids, read_tree, walk
from .worktree.workers import Progress

BLOCK = 1 << 20  # what cat writes at a time (a whole object when the file is stored in one)
FORMATS = ("tar", "zip")


def tree_path(raw: str) -> str:
    """A user's path as a tree path: '' for the root; '.', empty parts and slashes at either end dropped."""
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"path {raw!r}: '..' cannot name a path inside a checkpoint")
    return "/".join(parts)


def mode_of(entry: Entry) -> int:
    """The permission bits a tree implies (it records only the exec bit)."""
    if entry.kind == DIR:
        return 0o755
    if entry.kind == SYMLINK:
        return 0o777
    return 0o755 if entry.executable else 0o644


class Listed(NamedTuple):
    """One entry of a listing, with its tree path."""

    path: str
    entry: Entry

    @property
    def mode(self) -> str:
        """The permission bits in octal, as ``ls --json`` gives them ("0644")."""
        return f"{mode_of(self.entry):04o}"

    @property
    def size(self) -> int | None:
        if self.entry.kind == SYMLINK:
            return len(os.fsencode(self.entry.target))
        return self.entry.size if self.entry.kind == FILE else None

    @property
    def hash(self) -> str | None:
        """File: BLAKE3 of the content (what b3sum prints); directory: its tree's oid; link: None."""
        return self.entry.oid or None

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"path": self.path, "type": self.entry.kind, "mode": self.mode,
                                  "size": self.size, "hash": self.hash}
        if self.entry.kind == SYMLINK:
            doc["target"] = self.entry.target
        return doc


@dataclass
class FindResult:
    """Every (checkpoint, matching path) pair, newest checkpoint first; ``damaged``: checkpoints not searched."""

    pattern: str
    hits: list[tuple[CheckpointRecord, Listed]] = field(default_factory=list)
    searched: int = 0
    damaged: dict[str, RRStoreError] = field(default_factory=dict)

    def to_json(self) -> list[dict[str, object]]:
        return [{"checkpoint_id": r.checkpoint_id, "lane": r.lane, **hit.to_json()} for r, hit in self.hits]


class Change(NamedTuple):
    """What happened to a path at one checkpoint: added, modified, deleted, mode or type."""

    record: CheckpointRecord
    change: str
    entry: Entry | None  # None when deleted

    def to_json(self, path: str) -> dict[str, object]:
        doc: dict[str, object] = {"checkpoint_id": self.record.checkpoint_id, "lane": self.record.lane,
                                  "timestamp": self.record.timestamp, "change": self.change}
        now = Listed(path, self.entry).to_json() if self.entry is not None else {"path": path}
        return {**doc, **now}


@dataclass
class LogResult:
    """The checkpoints (oldest first) where ``path`` changed, out of ``searched``."""

    path: str
    changes: list[Change] = field(default_factory=list)
    searched: int = 0

    def to_json(self) -> list[dict[str, object]]:
        return [c.to_json(self.path) for c in self.changes]


def lookup(objects: ObjectStore, root: str, path: str,
           memo: dict[tuple[str, str], Entry | None] | None = None) -> Entry | None:
    """The entry at tree path ``path`` below tree ``root`` (a directory entry for ''), None if absent.

    ``memo`` (tree oid, name) -> entry, shared across lookups of one path in many checkpoints: a
    directory unchanged between them is then read once.
    """
    entry = Entry("", DIR, root)
    for name in path.split("/") if path else ():
        if entry.kind != DIR:
            return None
        key = (entry.oid, name)
        if memo is not None and key in memo:
            found = memo[key]
        else:
            found = next((e for e in read_tree(objects, entry.oid) if e.name == name), None)
            if memo is not None:
                memo[key] = found
        if found is None:
            return None
        entry = found
    return entry


def _close_names(objects: ObjectStore, root: str, path: str) -> list[str]:
    """Paths beside ``path`` whose names are close to its last one (for the not-found message)."""
    parent, _, name = path.rpartition("/")
    holder = lookup(objects, root, parent)
    if holder is None or holder.kind != DIR:
        return []
    names = [e.name for e in read_tree(objects, holder.oid)]
    return [f"{parent}/{n}" if parent else n for n in difflib.get_close_matches(name, names, 3)]


class Pattern:
    """A ``find`` glob. Without '/': matched against each name (as ``find -name``); with '/': against the
    whole tree path, '*' and '?' within one name, '**' across names ('**/' also matches no directory)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.by_path = "/" in pattern.strip("/")
        self.regex = re.compile(translate(pattern.strip("/") if self.by_path else pattern.rstrip("/")), re.DOTALL)

    def matches(self, name: str, path: str) -> bool:
        return self.regex.fullmatch(path if self.by_path else name) is not None


def translate(glob: str) -> str:
    """A regular expression for ``glob``: fnmatch's '*', '?', '[...]' kept within a name, '**' across."""
    out, i = [], 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := glob.find("]", i + 1 if glob[i:i + 1] in ("!", "]") else i)) >= 0:
            body = glob[i:end].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
    return "".join(out)


class _Finder:
    """Matches of one pattern below each tree, cached per tree oid (and per path where the pattern needs
    it): a directory unchanged across checkpoints is the same tree, read and matched once."""

    def __init__(self, objects: ObjectStore, pattern: Pattern) -> None:
        self.objects = objects
        self.pattern = pattern
        self.memo: dict[tuple[str, str], list[tuple[str, Entry]]] = {}
        self.read = 0  # entries of the trees read, over every checkpoint

    def _key(self, oid: str, prefix: str) -> tuple[str, str]:
        return oid, prefix if self.pattern.by_path else ""

    def below(self, root: str) -> list[tuple[str, Entry]]:
        """(tree path, entry) of every match below tree ``root``; iterative, so any depth works."""
        pending: dict[tuple[str, str], list[Entry]] = {}
        stack = [(root, "", False)]
        while stack:
            oid, prefix, ready = stack.pop()
            key = self._key(oid, prefix)
            if key in self.memo:
                continue
            if not ready:
                entries = pending[key] = read_tree(self.objects, oid)
                self.read += len(entries)
                check_expansion(root, self.read)  # per path, a crafted tree's paths are distinct keys
                stack.append((oid, prefix, True))
                stack.extend((e.oid, f"{prefix}{e.name}/", False) for e in entries if e.kind == DIR)
                continue
            hits: list[tuple[str, Entry]] = []
            for entry in pending.pop(key):
                path = f"{prefix}{entry.name}"
                if self.pattern.matches(entry.name, path):
                    hits.append((entry.name, entry))
                if entry.kind == DIR:
                    below = self.memo[self._key(entry.oid, path + "/")]
                    check_expansion(oid, len(hits) + len(below))
                    hits.extend((f"{entry.name}/{rel}", e) for rel, e in below)
            self.memo[key] = hits
        return self.memo[self._key(root, "")]


def change_at(was: Entry | None, now: Entry | None) -> str | None:
    """How a path's entry went from ``was`` to ``now`` (None: unchanged)."""
    if was is None:
        return None if now is None else "added"
    if now is None:
        return "deleted"
    if was.kind != now.kind:
        return "type"
    if was.oid != now.oid or was.target != now.target:
        return "modified"
    return "mode" if was.executable != now.executable else None


class Browser:
    """The browse verbs over one project's checkpoints (``RollbackRecoverySystem.browser``)."""

    def __init__(self, manager: CheckpointManager) -> None:
        self.manager = manager
        self.objects = manager.store.objects

    def _entry(self, record: CheckpointRecord, path: str) -> Entry:
        entry = lookup(self.objects, record.state_hash, path)
        if entry is None:
            raise PathNotFound(record.checkpoint_id, path, _close_names(self.objects, record.state_hash, path))
        return entry

    def ls(self, checkpoint_id: str, path: str = "", *, recursive: bool = False) -> list[Listed]:
        """The entries of the directory at ``path`` (every one below it with ``recursive``), or the one
        file or link there; parents before what they hold, names in the tree's byte order."""
        path = tree_path(path)
        with self.manager.explain_damage():
            record = self.manager.get(checkpoint_id)
            entry = self._entry(record, path)
            if entry.kind != DIR:
                return [Listed(path, entry)]
            prefix = f"{path}/" if path else ""
            if recursive:
                self.objects.list_loose()  # every tree below is read: no loose probe per packed one
                return [Listed(p, e) for p, e in walk(self.objects, entry.oid, prefix)]
            return [Listed(f"{prefix}{e.name}", e) for e in read_tree(self.objects, entry.oid)]

    def cat(self, checkpoint_id: str, path: str, out: BinaryIO) -> Entry:
        """Write the file at ``path`` to ``out``, verified as it streams; the entry written.

        A file stored as one object (up to 4 MiB) is read and hash-checked
        whole before its first byte is written; a larger one is stored in
        chunks, each checked before it is written, the whole-file BLAKE3
        after the last. Every chunk is looked up first, so a missing one
        stops it before anything is written. A damaged piece raises
        ContentDamaged (exit 13) saying how much was written. A link writes
        its target, as ``git show`` does; a directory is a UsageError.
        """
        path = tree_path(path)
        record = self.manager.get(checkpoint_id)
        with _shared_lock(self.manager.store):  # a gc sweeps nothing being read
            with self.manager.explain_damage():
                entry = self._entry(record, path)
            if entry.kind == DIR:
                raise UsageError(f"{path or '/'!r} is a directory in checkpoint {record.checkpoint_id}: "
                                 f"rrstore ls {record.checkpoint_id} {path} lists it")
            if entry.kind == SYMLINK:
                out.write(os.fsencode(entry.target))
            else:
                self._stream(record, path, entry, out)
        return entry

    def _stream(self, record: CheckpointRecord, path: str, entry: Entry, out: BinaryIO) -> None:
        written = 0
        try:
            missing = self.objects.missing(content_oids(entry))
            if missing:
                raise ObjectMissing(missing[0])
            content = Content(self.objects, entry)
            while block := content.read(BLOCK):
                out.write(block)
                written += len(block)
            content.check()
        except (ObjectMissing, CorruptObject) as exc:
            cause = exc.with_checkpoints([record.checkpoint_id])
            raise ContentDamaged(record.checkpoint_id, path, written, cause) from None

    def dump(self, checkpoint_id: str, output: str | os.PathLike[str] | BinaryIO, fmt: str = "tar",
             path: str = "", *, force: bool = False, progress: Progress | None = None) -> ExportResult:
        """The files at or below ``path`` as a plain tar or zip (what ``tar -x`` / ``unzip`` extract), paths
        as in the tree; to ``output`` (a stream, or a file written whole or not at all, see ``export``)."""
        if fmt not in FORMATS:
            raise UsageError(f"unknown dump format {fmt!r}: choose tar or zip")
        path = tree_path(path)
        with self.manager.explain_damage():
            record = self.manager.get(checkpoint_id)
            top = self._entry(record, path)
            entries = {path: top} if path else {}
            if top.kind == DIR:
                self.objects.list_loose()  # every tree and file below is read: no loose probe per packed one
                entries.update(walk(self.objects, top.oid, f"{path}/" if path else ""))
            if fmt == "zip":
                _zip_names(entries)
            with _shared_lock(self.manager.store), _destination(output, force) as (out, name):
                writer = write_tar if fmt == "tar" else write_zip
                size = writer(self.objects, entries, out, record, progress)
        return ExportResult(name, fmt, [record.checkpoint_id], len(entries), size, out.count)

    def find(self, pattern: str, lane: str | None = None) -> FindResult:
        """Every checkpoint (newest first) holding a path that matches ``pattern`` (see ``Pattern``), with
        the entry there. A checkpoint whose trees cannot be read is skipped and named in ``damaged``."""
        if not pattern:
            raise UsageError("find needs a pattern, e.g. '*.py' or 'src/**/test_*.py'")
        finder = _Finder(self.objects, Pattern(pattern))
        records = self.manager.list_checkpoints(lane)
        self.objects.list_loose()  # the trees of every checkpoint are read
        result = FindResult(pattern, searched=len(records), damaged=dict(self.manager.damaged))
        for record in records:
            try:
                hits = finder.below(record.state_hash)
            except (ObjectMissing, CorruptObject) as exc:
                result.damaged[record.checkpoint_id] = exc.with_checkpoints([record.checkpoint_id])
                continue
            result.hits.extend((record, Listed(p, e)) for p, e in hits)
        return result

    def log(self, path: str, lane: str | None = None) -> LogResult:
        """The checkpoints, oldest first, where ``path`` was added, modified, deleted or changed mode or
        type. Each tree on the way is read once, however many checkpoints share it."""
        path = tree_path(path)
        if not path:
            raise UsageError("log needs a path inside the checkpoints, e.g. src/app.py")
        records = list(reversed(self.manager.list_checkpoints(lane)))
        self.objects.list_loose()
        result = LogResult(path, searched=len(records))
        memo: dict[tuple[str, str], Entry | None] = {}
        was: Entry | None = None
        with self.manager.explain_damage():
            for record in records:
                now = lookup(self.objects, record.state_hash, path, memo)
                change = change_at(was, now)
                if change:
                    result.changes.append(Change(record, change, now))
                was = now
        return result


def _zip_names(entries: dict[str, Entry]) -> None:
    """Refuse, before anything is written, a name a zip cannot hold (not UTF-8: a zip names in UTF-8)."""
    for path in entries:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"path {path!r} is not UTF-8 and a zip cannot name it: use --format tar") from None


def write_tar(objects: ObjectStore, entries: dict[str, Entry], out: Writable, record: CheckpointRecord,
              progress: Progress | None = None) -> int:
    """``entries`` as a plain (uncompressed) tar stream on ``out``, as ``export --format tar`` writes one."""
    with tarfile.open(fileobj=cast("IO[bytes]", out), mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        return add_entries(tar, objects, entries, int(record.created.timestamp()), progress)


def write_zip(objects: ObjectStore, entries: dict[str, Entry], out: Writable, record: CheckpointRecord,
              progress: Progress | None = None) -> int:
    """``entries`` as a zip on ``out`` (no seeking needed: a pipe works); content bytes written.

    Unix modes go in the external attributes, so ``unzip`` restores the exec
    bit and makes links; every time is the checkpoint's (a zip cannot say
    before 1980). Each file is checked against its tree as it is written.
    """
    stamp = time.localtime(max(record.created.timestamp(), 315532800 + 86400))[:6]
    size = 0
    with zipfile.ZipFile(cast("IO[bytes]", out), "w", zipfile.ZIP_DEFLATED) as zf:
        for done, (path, entry) in enumerate(entries.items(), 1):
            info = zipfile.ZipInfo(path + "/" if entry.kind == DIR else path, stamp)
            info.create_system = 3  # unix: unzip reads the modes below
            if entry.kind == DIR:
                info.external_attr = (0o040000 | 0o755) << 16 | 0x10
                zf.writestr(info, b"")
            elif entry.kind == SYMLINK:
                info.external_attr = (0o120000 | 0o777) << 16
                zf.writestr(info, os.fsencode(entry.target), zipfile.ZIP_STORED)
            else:
                info.external_attr = (0o100000 | mode_of(entry)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                content = Content(objects, entry)
                with zf.open(info, "w", force_zip64=entry.size >= 1 << 31) as dest:
                    while block := content.read(BLOCK):
                        dest.write(block)
                content.check()
                size += entry.size
            if progress:
                progress(done, len(entries))
    return size
