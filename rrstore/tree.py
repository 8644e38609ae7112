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
    """Every entry below tree ``root`` as (relative path, entry), parents first.

    Iterative (a stack of directory iterators), so any depth a disk can hold
    walks; a path longer than ``MAX_PATH_BYTES`` is a CorruptObject: no
    working tree can hold it, so nothing built on the walk (restore, diff,
    tar export) starts on it.
    """
    stack = [(prefix, iter(read_tree(objects, root)))]
    while stack:
        base, entries = stack[-1]
        for entry in entries:
            path = f"{base}{entry.name}"
            if len(path) > _SHORT_PATH and path_too_long(path):
                raise CorruptObject(root, reason=f"path {path[:40]}… is longer than the {MAX_PATH_BYTES} "
                                    "bytes a path may have (PATH_MAX); no working tree can hold it")
            yield path, entry
            if entry.kind == DIR:
                stack.append((path + "/", iter(read_tree(objects, entry.oid))))
                break
        else:
            stack.pop()


def flatten(objects: ObjectStore, root: str) -> dict[str, Entry]:
    """Path -> entry for the whole tree (directories included, for empty ones)."""
    return dict(walk(objects, root))


# PATH_MAX on Linux is 4096 bytes with the terminating NUL: the longest path a
# system call takes. A tree path longer than that can never be written, at any root.
MAX_PATH_BYTES = 4095
_SHORT_PATH = MAX_PATH_BYTES // 4  # a str this short encodes to at most MAX_PATH_BYTES bytes


def path_bytes(name: str) -> int:
    """Length of a tree path or name as the filesystem sees it (UTF-8, surrogateescape)."""
    return len(name) if name.isascii() else len(os.fsencode(name))


def path_too_long(path: str) -> bool:
    """True when a relative tree path cannot exist on disk (longer than PATH_MAX allows)."""
    return path_bytes(path) > MAX_PATH_BYTES


class Reach:
    """What a walk has seen so far, shared across the checkpoints of one walk.

    ``objects`` holds every oid yielded; ``trees`` the trees already walked.
    They differ: a file whose bytes happen to equal a tree's encoding is the
    same object, yet seeing it as a file must not stop the tree's walk.
    ``longest`` is, per tree walked, the length in bytes of the longest path
    below it (see ``too_long``).
    """

    def __init__(self) -> None:
        self.objects: set[str] = set()
        self.trees: set[str] = set()
        self.longest: dict[str, int] = {}

    def too_long(self, root: str) -> bool:
        """True when tree ``root`` (walked by ``reachable``) holds a path no disk can hold."""
        return self.longest.get(root, 0) > MAX_PATH_BYTES


def reachable(objects: ObjectStore, root: str, reach: Reach | None = None) -> Iterator[str]:
    """Every tree and content object below tree ``root`` (itself included), each once.

    Pass the same ``reach`` across several roots: a directory unchanged between
    checkpoints is the same tree object, so it is read only once in all.
    Iterative, in the order a recursive walk would give, so depth costs no stack.
    """
    reach = Reach() if reach is None else reach
    if root in reach.trees:
        return
    reach.trees.add(root)
    if root not in reach.objects:
        reach.objects.add(root)
        yield root
    # frames: (tree oid, its entries, longest path below it so far, the subdirectory being walked)
    stack: list[tuple[str, Iterator[Entry], list[int]]] = [(root, iter(read_tree(objects, root)), [0])]
    while stack:
        oid, entries, longest = stack[-1]
        for entry in entries:
            size = path_bytes(entry.name)
            if entry.kind == DIR:
                child = entry.oid
                if child not in reach.trees:
                    reach.trees.add(child)
                    if child not in reach.objects:
                        reach.objects.add(child)
                        yield child
                    longest.append(size)  # name of the subdirectory now walked, settled when it pops
                    stack.append((child, iter(read_tree(objects, child)), [0]))
                    break
                longest[0] = max(longest[0], _below(size, reach.longest.get(child, 0)))
            else:
                longest[0] = max(longest[0], size)
                if entry.kind == FILE:
                    for content in content_oids(entry):
                        if content not in reach.objects:
                            reach.objects.add(content)
                            yield content
        else:
            stack.pop()
            below = longest[0]
            reach.longest[oid] = below
            if stack:
                parent = stack[-1][2]
                name_size = parent.pop()
                parent[0] = max(parent[0], _below(name_size, below))


def _below(name_size: int, longest: int) -> int:
    """Longest path through a subdirectory: its name, then '/' and its own longest path if any."""
    return name_size + 1 + longest if longest else name_size


def longest_through(name: str, longest: int) -> int:
    """Bytes of the longest path through subdirectory ``name`` whose own longest path is ``longest``."""
    return _below(path_bytes(name), longest)


def content_oids(entry: Entry) -> tuple[str, ...]:
    """The objects that hold a file entry's content."""
    return entry.chunks if entry.chunks else (entry.oid,)
