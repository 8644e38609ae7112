"""Trees (layer above objects): one canonical object per directory.

A tree object is canonical JSON (sorted keys, no whitespace, ASCII with
``\\u`` escapes) of ``{"format": "rrstore-tree-1", "entries": [...]}`` with
entries sorted by the UTF-8 bytes of their names. Entry kinds:

* ``file``: ``hash`` (BLAKE3 of the content, as ``b3sum`` prints it),
  ``size``, ``exec`` (bool), and ``chunks`` (list of oids) only when the
  content is stored in pieces; otherwise the content is the object ``hash``.
* ``dir``: ``tree``, the oid of the subdirectory's tree object.
* ``symlink``: ``target``, the link text, never followed.

Identical directories therefore give identical oids wherever and whenever
they are checkpointed; the root tree's oid is the state hash.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import NamedTuple

from .errors import CorruptObject
from .objects import ObjectStore, hash_bytes, is_oid

TREE_FORMAT = "rrstore-tree-1"
FILE, DIR, SYMLINK = "file", "dir", "symlink"


class Entry(NamedTuple):
    """One name in a directory. ``oid`` is the content hash (file) or tree oid (dir).

    A NamedTuple, not a frozen dataclass: a snapshot builds one per file, and
    a frozen dataclass costs several times more to construct.
    """

    name: str
    kind: str
    oid: str = ""
    size: int = 0
    executable: bool = False
    target: str = ""
    chunks: tuple[str, ...] = ()

    def same_content(self, other: Entry) -> bool:
        """Equal for restore purposes: kind, content/target and exec bit."""
        return (self.kind == other.kind and self.oid == other.oid
                and self.executable == other.executable and self.target == other.target)

    def to_json(self) -> dict[str, object]:
        if self.kind == FILE:
            out: dict[str, object] = {"name": self.name, "type": FILE, "hash": self.oid,
                                      "size": self.size, "exec": self.executable}
            if self.chunks:
                out["chunks"] = list(self.chunks)
            return out
        if self.kind == DIR:
            return {"name": self.name, "type": DIR, "tree": self.oid}
        return {"name": self.name, "type": SYMLINK, "target": self.target}


def valid_name(name: object) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..")
            and "/" not in name and "\0" not in name)


def name_key(name: str) -> bytes:
    return os.fsencode(name)


def encode_tree(entries: list[Entry]) -> bytes:
    """Canonical bytes of a directory; the caller's order does not matter."""
    ordered = sorted(entries, key=lambda e: name_key(e.name))
    doc = {"format": TREE_FORMAT, "entries": [e.to_json() for e in ordered]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def tree_oid(entries: list[Entry]) -> tuple[str, bytes]:
    data = encode_tree(entries)
    return hash_bytes(data), data


def decode_tree(oid: str, data: bytes) -> list[Entry]:
    """Parse and validate a tree; anything malformed is a CorruptObject."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise CorruptObject(oid, reason="not a tree object (invalid JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != TREE_FORMAT or not isinstance(doc.get("entries"), list):
        raise CorruptObject(oid, reason="not a tree object")
    entries: list[Entry] = []
    seen: set[str] = set()
    for raw in doc["entries"]:
        entry = _decode_entry(oid, raw)
        if entry.name in seen:
            raise CorruptObject(oid, reason=f"duplicate name {entry.name!r} in tree")
        seen.add(entry.name)
        entries.append(entry)
    return entries


def _decode_entry(oid: str, raw: object) -> Entry:
    if not isinstance(raw, dict) or not valid_name(raw.get("name")):
        raise CorruptObject(oid, reason=f"invalid tree entry {raw!r:.80}")
    name, kind = raw["name"], raw.get("type")
    if kind == FILE:
        chunks = raw.get("chunks", [])
        size = raw.get("size")
        ok = (is_oid(raw.get("hash")) and type(size) is int and size >= 0
              and isinstance(raw.get("exec"), bool) and isinstance(chunks, list)
              and all(is_oid(c) for c in chunks))
        if ok:
            return Entry(name, FILE, raw["hash"], raw["size"], raw["exec"], chunks=tuple(chunks))
    elif kind == DIR:
        if is_oid(raw.get("tree")):
            return Entry(name, DIR, raw["tree"])
    elif kind == SYMLINK:
        target = raw.get("target")
        if isinstance(target, str) and target and "\0" not in target:
            return Entry(name, SYMLINK, target=target)
    raise CorruptObject(oid, reason=f"invalid {kind!s} entry {name!r} in tree")


def read_tree(objects: ObjectStore, oid: str) -> list[Entry]:
    return decode_tree(oid, objects.get(oid))


def walk(objects: ObjectStore, root: str, prefix: str = "") -> Iterator[tuple[str, Entry]]:
    """Every entry below tree ``root`` as (relative path, entry), parents first."""
    for entry in read_tree(objects, root):
        path = f"{prefix}{entry.name}"
        yield path, entry
        if entry.kind == DIR:
            yield from walk(objects, entry.oid, path + "/")


def flatten(objects: ObjectStore, root: str) -> dict[str, Entry]:
    """Path -> entry for the whole tree (directories included, for empty ones)."""
    return dict(walk(objects, root))


class Reach:
    """What a walk has seen so far, shared across the checkpoints of one walk.

    ``objects`` holds every oid yielded; ``trees`` the trees already walked.
    They differ: a file whose bytes happen to equal a tree's encoding is the
    same object, yet seeing it as a file must not stop the tree's walk.
    """

    def __init__(self) -> None:
        self.objects: set[str] = set()
        self.trees: set[str] = set()


def reachable(objects: ObjectStore, root: str, reach: Reach | None = None) -> Iterator[str]:
    """Every tree and content object below tree ``root`` (itself included), each once.

    Pass the same ``reach`` across several roots: a directory unchanged between
    checkpoints is the same tree object, so it is read only once in all.
    """
    reach = Reach() if reach is None else reach
    if root in reach.trees:
        return
    reach.trees.add(root)
    if root not in reach.objects:
        reach.objects.add(root)
        yield root
    for entry in read_tree(objects, root):
        if entry.kind == DIR:
            yield from reachable(objects, entry.oid, reach)
        elif entry.kind == FILE:
            for oid in content_oids(entry):
                if oid not in reach.objects:
                    reach.objects.add(oid)
                    yield oid


def content_oids(entry: Entry) -> tuple[str, ...]:
    """The objects that hold a file entry's content."""
    return entry.chunks if entry.chunks else (entry.oid,)
