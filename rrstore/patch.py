"""Patch (a verb over diff): the content of what changed, as a git-style unified diff.

``rrstore diff -p`` prints what ``git diff`` would for the same two states,
so ``git apply`` and ``patch -p1`` take it: ``diff --git`` headers, mode
lines, an ``index`` line with git's blob ids (SHA-1 of ``blob SIZE\\0`` and
the content, as ``git hash-object`` prints them), hunks with ``-U`` lines of
context and ``\\ No newline at end of file``. A symlink's content is its
target. A file with a NUL byte in its first 8000 bytes is binary, as git
decides: it gets one ``Binary files a/P and b/P differ`` line. A file larger
than ``TEXT_MAX_BYTES`` is reported the same way (git's
``core.bigFileThreshold`` does so too), which bounds memory to two such
files whatever the tree holds. Empty directories have no content: a patch
leaves them out (the path list names them).

Stored content is hash-checked as it is read (each object, and a chunked
file's whole BLAKE3 and size); working-tree content is read from the files.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import blake3

from .checkpoint import CheckpointManager
from .diff import DiffResult, compare_with_tree, diff, quote_path
from .errors import CorruptObject
from .store.objects import ObjectStore
from .tree import DIR, SYMLINK, Entry, flatten

TEXT_MAX_BYTES = 16 << 20  # larger: "Binary files ... differ", as git's core.bigFileThreshold
BINARY_PROBE = 8000  # git's buffer_is_binary looks at this many bytes for a NUL
NO_NEWLINE = b"\n\\ No newline at end of file\n"
NULL_BLOB = b"0" * 7
READ_SIZE = 1 << 20
_LINE = re.compile(rb"[^\n]*\n|[^\n]+\Z")


class Blob(NamedTuple):
    """One side's content as a patch needs it: ``lines`` is None for binary (or too large) content."""

    mode: bytes
    blob_id: bytes  # git's, abbreviated to 7 hex digits as git prints it
    lines: list[bytes] | None


@dataclass
class Patch:
    """The changes from one state to another, and their content on demand (``chunks``)."""

    changes: DiffResult
    old: dict[str, Entry]
    new: dict[str, Entry]
    objects: ObjectStore
    root: Path | None  # the working tree, when the new side is it
    context: int
    explain: Callable[[], AbstractContextManager[None]]  # names the checkpoints a damaged object hurts

    def chunks(self) -> Iterator[bytes]:
        """The patch as bytes, file by file in path order; raises CorruptObject/ObjectMissing for
        damaged stored content (with the checkpoints it affects) and OSError for an unreadable file."""
        paths = sorted([*self.changes.added, *self.changes.removed, *self.changes.modified])
        with self.explain():
            for path in paths:
                yield from self._sections(path, self.old.get(path), self.new.get(path))

    def _sections(self, path: str, was: Entry | None, now: Entry | None) -> Iterator[bytes]:
        was = None if was is None or was.kind == DIR else was
        now = None if now is None or now.kind == DIR else now
        if was is not None and now is not None and was.kind != now.kind:  # file <-> symlink: as git,
            yield from self._sections(path, was, None)                  # a deletion then an addition
            yield from self._sections(path, None, now)
            return
        if was is None and now is None:  # an empty directory came or went
            return
        if was is not None and now is not None and was.oid == now.oid and was.target == now.target:
            a, b = _name("a/", path), _name("b/", path)  # the exec bit alone changed: nothing to read
            yield b"diff --git %s %s\nold mode %s\nnew mode %s\n" % (a, b, _mode(was), _mode(now))
            return
        old = None if was is None else self._blob(path, was, stored=True)
        new = None if now is None else self._blob(path, now, stored=self.root is None)
        yield section(path, old, new, self.context)

    def _blob(self, path: str, entry: Entry, *, stored: bool) -> Blob:
        if entry.kind == SYMLINK:
            target = os.fsencode(entry.target)
            return read_blob(_mode(entry), [target], len(target))
        if stored:
            return read_blob(_mode(entry), stored_pieces(self.objects, entry), entry.size)
        assert self.root is not None
        fd = os.open(self.root / path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            return read_blob(_mode(entry), iter(lambda: f.read(READ_SIZE), b""), os.fstat(f.fileno()).st_size)


def _mode(entry: Entry) -> bytes:
    return b"120000" if entry.kind == SYMLINK else b"100755" if entry.executable else b"100644"


def checkpoint_patch(manager: CheckpointManager, old_id: str, new_id: str | None, context: int = 3) -> Patch:
    """The patch from checkpoint ``old_id`` to ``new_id`` (None: the working tree, hashed and not
    stored; what the record left out is no change, as in ``rrstore diff``)."""
    objects = manager.store.objects
    with manager.explain_damage():
        old = manager.get(old_id)
        if new_id is None:
            now = manager.snapshot(store=False).entries
            changes, before = compare_with_tree(objects, old, now)
            return Patch(changes, before, now, objects, manager.root, context, manager.explain_damage)
        before, after = flatten(objects, old.state_hash), flatten(objects, manager.get(new_id).state_hash)
    return Patch(diff(before, after), before, after, objects, None, context, manager.explain_damage)


def stored_pieces(objects: ObjectStore, entry: Entry) -> Iterator[bytes]:
    """A stored file's content, object by object, each hash-checked as read; a chunked file's whole
    size and BLAKE3 are checked after its last chunk (CorruptObject if they differ from its entry)."""
    if not entry.chunks:
        yield objects.get(entry.oid)  # the object's key is the file's BLAKE3: get checks it
        return
    hasher, size = blake3.blake3(), 0
    for oid in entry.chunks:
        data = objects.get(oid)
        hasher.update(data)
        size += len(data)
        yield data
    if size != entry.size or hasher.hexdigest() != entry.oid:
        raise CorruptObject(entry.oid, actual=hasher.hexdigest(),
                            reason="" if size == entry.size else f"chunks hold {size} bytes, "
                                                                 f"not the {entry.size} its tree says")


def read_blob(mode: bytes, pieces: Iterable[bytes], size: int) -> Blob:
    """Hash ``pieces`` as git would and keep them as lines when they are text of at most
    ``TEXT_MAX_BYTES``; a binary or larger content is streamed through, never held."""
    sha = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    kept: list[bytes] | None = [] if size <= TEXT_MAX_BYTES else None
    head, length = b"", 0
    for piece in pieces:
        sha.update(piece)
        length += len(piece)
        if len(head) < BINARY_PROBE:
            head += piece[:BINARY_PROBE - len(head)]
            if b"\0" in head:
                kept = None
        if kept is not None:
            kept.append(piece)
            if length > TEXT_MAX_BYTES:  # the file grew since it was measured
                kept = None
    blob_id = sha.hexdigest()[:7].encode()
    if kept is None:
        return Blob(mode, blob_id, None)
    data = b"".join(kept)
    kept.clear()  # not three copies at once: the pieces, the whole, its lines
    return Blob(mode, blob_id, split_lines(data))


def split_lines(data: bytes) -> list[bytes]:
    """Lines ending in ``\\n`` (the last may lack it); a CR or form feed is no line break to git."""
    return _LINE.findall(data)  # one pass, one copy: the lines


def _name(prefix: str, path: str) -> bytes:
    return quote_path(prefix + path).encode("ascii")


def section(path: str, old: Blob | None, new: Blob | None, context: int) -> bytes:
    """One file's part of the patch: its headers, then its hunks or the line saying it is binary."""
    a, b = _name("a/", path), _name("b/", path)
    out = [b"diff --git %s %s\n" % (a, b)]
    if old is None and new is not None:
        out.append(b"new file mode %s\nindex %s..%s\n" % (new.mode, NULL_BLOB, new.blob_id))
        a = b"/dev/null"
    elif new is None and old is not None:
        out.append(b"deleted file mode %s\nindex %s..%s\n" % (old.mode, old.blob_id, NULL_BLOB))
        b = b"/dev/null"
    elif old is not None and new is not None:
        if old.mode != new.mode:
            out.append(b"old mode %s\nnew mode %s\n" % (old.mode, new.mode))
        mode = b"" if old.mode != new.mode else b" " + old.mode
        out.append(b"index %s..%s%s\n" % (old.blob_id, new.blob_id, mode))
    before = [] if old is None else old.lines
    after = [] if new is None else new.lines
    if before is None or after is None:
        out.append(b"Binary files %s and %s differ\n" % (a, b))
    elif before or after:
        out.append(b"--- %s%s\n+++ %s%s\n" % (a, _tab(a), b, _tab(b)))
        out.extend(hunks(before, after, context))
    return b"".join(out)


def _tab(label: bytes) -> bytes:
    """git ends a ``---``/``+++`` label holding a space with a tab, so ``patch`` finds where the name ends."""
    return b"\t" if b" " in label else b""


def _range(start: int, stop: int) -> bytes:
    """A hunk header's ``start,count`` (``start`` alone for one line; a count of 0 names the line before)."""
    length = stop - start
    if length == 1:
        return b"%d" % (start + 1)
    return b"%d,%d" % (start + 1 if length else start, length)


def hunks(before: list[bytes], after: list[bytes], context: int) -> Iterator[bytes]:
    """Unified-diff hunks from ``before`` to ``after`` with ``context`` lines around each change."""
    heading, searched = b"", 0
    for group in grouped(opcodes(before, after), context):
        first, last = group[0], group[-1]
        heading = _heading(before, first[1], searched) or heading
        searched = first[1]
        yield b"@@ -%s +%s @@%s\n" % (_range(first[1], last[2]), _range(first[3], last[4]),
                                      b" " + heading if heading else b"")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                yield b"".join(_line(b" ", line) for line in before[i1:i2])
                continue
            yield b"".join(_line(b"-", line) for line in before[i1:i2])
            yield b"".join(_line(b"+", line) for line in after[j1:j2])


Opcode = tuple[str, int, int, int, int]


def opcodes(before: list[bytes], after: list[bytes]) -> list[Opcode]:
    """difflib's opcodes, with the common head and tail taken off first: difflib's matcher costs
    each line of what it is given, and an edit to a large file leaves most of it alike."""
    limit = min(len(before), len(after))
    head = 0
    while head < limit and before[head] == after[head]:
        head += 1
    tail = 0
    while tail < limit - head and before[-1 - tail] == after[-1 - tail]:
        tail += 1
    ops: list[Opcode] = [("equal", 0, head, 0, head)] if head else []
    middle = difflib.SequenceMatcher(None, before[head:len(before) - tail], after[head:len(after) - tail])
    ops += [(tag, i1 + head, i2 + head, j1 + head, j2 + head) for tag, i1, i2, j1, j2 in middle.get_opcodes()
            if i1 != i2 or j1 != j2]
    if tail:
        ops.append(("equal", len(before) - tail, len(before), len(after) - tail, len(after)))
    return ops


def grouped(ops: list[Opcode], context: int) -> Iterator[list[Opcode]]:
    """The opcodes in hunks: each change with up to ``context`` equal lines around it, changes closer
    than twice that in one hunk (``difflib.SequenceMatcher.get_grouped_opcodes``, over given opcodes)."""
    if all(op[0] == "equal" for op in ops):
        return
    ops = list(ops)
    if ops[0][0] == "equal":
        _, i1, i2, j1, j2 = ops[0]
        ops[0] = ("equal", max(i1, i2 - context), i2, max(j1, j2 - context), j2)
    if ops[-1][0] == "equal":
        _, i1, i2, j1, j2 = ops[-1]
        ops[-1] = ("equal", i1, min(i2, i1 + context), j1, min(j2, j1 + context))
    group: list[Opcode] = []
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal" and i2 - i1 > 2 * context:
            group.append((tag, i1, i1 + context, j1, j1 + context))
            yield group
            group = []
            i1, j1 = i2 - context, j2 - context
        group.append((tag, i1, i2, j1, j2))
    if group and not (len(group) == 1 and group[0][0] == "equal"):
        yield group


def _heading(lines: list[bytes], start: int, searched: int) -> bytes:
    """git's default hunk heading: the last line before ``start`` (and from ``searched`` on, the lines
    before having been searched for an earlier hunk) that starts with a letter, ``_`` or ``$``, cut to
    80 bytes and stripped of trailing white space (xdiff's ``def_ff``)."""
    for line in reversed(lines[searched:start]):
        if line[:1].isalpha() or line[:1] in (b"_", b"$"):
            return line[:80].rstrip(b" \t\n\r")
    return b""


def _line(sign: bytes, line: bytes) -> bytes:
    return sign + line if line.endswith(b"\n") else sign + line + NO_NEWLINE

