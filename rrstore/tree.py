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

import itertools
import json
import os
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

from .config import Settings
from .errors import CorruptObject, RRStoreError, UnsafeTree
from .store.objects import ObjectStore, canonical_json, hash_bytes, is_oid

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
    """The structural rule a tree's syntax enforces: one path component (see ``never_written`` for the rest).

    The name must also be one a file system can hold: a lone surrogate that
    ``os.fsencode`` cannot turn into bytes (JSON can carry ``\\ud800``; a scan
    never produces one) would fail at restore, so the tree is refused instead.
    """
    return (isinstance(name, str) and name not in ("", ".", "..")
            and "/" not in name and "\0" not in name and (name.isascii() or _encodable(name)))


def _encodable(name: str) -> bool:
    """Writable, and the one spelling of its bytes (what ``os.fsdecode`` gives, as a scan does): else
    two names of one tree could be one file on disk (a link and a directory through it)."""
    try:
        return os.fsdecode(os.fsencode(name)) == name
    except UnicodeEncodeError:
        return False


# --- names and links that are never written (docs/store-format.md, "Names that are never written") ------------
#
# A tree may be well formed and still hostile: an entry named ``.git`` writes
# into git's own directory (a hook there runs on the next git command), one
# named like the store writes over the store's refs and config. Trees come
# from checkpoints, archives and remotes alike, so the rule lives here, once;
# archive verify/import, pull, push and restore call it, and the scan uses it
# to keep such paths out of every checkpoint.

# Code points HFS+ ignores in names (git's is_hfs_dotgit list): ".g\u200cit" is ".git" there.
_HFS_IGNORED = dict.fromkeys(map(ord, "\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                                      "\u206a\u206b\u206c\u206d\u206e\u206f\ufeff"))
_RESERVED = {
    ".git": "git's own directory (a hook written there runs on the next git command)",
    "git~1": "the NTFS short name of git's own directory",
    Settings.store: "the default store directory (writing it would overwrite a store's refs and config)",
}
# First characters of names that can fold to a reserved one without HFS+-ignored code points.
_FIRST = frozenset(c for name in _RESERVED for c in (name[0], name[0].upper()))


def fold_name(name: str) -> str:
    """``name`` as a case-insensitive, NTFS or HFS+ file system may see it: the form reserved names are compared in.

    Case folded, HFS+-ignored code points dropped, an NTFS stream suffix
    (``:...``) and trailing dots and spaces dropped (NTFS ignores them):
    ``.GIT``, ``.git.``, ``.git::$INDEX_ALLOCATION`` and ``.g\u200cit`` all
    fold to ``.git``.
    """
    if not name.isascii():
        name = name.translate(_HFS_IGNORED).casefold()
    return name.partition(":")[0].rstrip(". ").lower() or name


def never_written(name: str) -> str:
    """Why ``name`` may never be a tree entry, at any depth ('' when it may).

    Structural: empty, ``.``, ``..``, or holding ``/`` or NUL. Reserved, in
    any case: ``.git`` (git honours nested ones: submodules, nested
    repositories) and ``.checkpoints`` (the default store: a nested project's
    store is as much a store). The configured store's own path is known only
    where a tree meets a working tree; ``check_paths`` takes it.
    """
    if not valid_name(name):
        return "is not one path component (empty, '.', '..', or holding '/' or NUL)"
    if name[0] not in _FIRST and name.isascii():
        return ""
    reason = _RESERVED.get(fold_name(name))
    return f"{name!r} is never written: {reason}" if reason else ""


def _holds_reserved(bad: str) -> bool:
    return any(never_written(n) for n in bad.split("/"))


def _may_hold_reserved(low: str) -> bool:
    """Whether the NUL-joined, lowercased ASCII paths ``low`` may hold a reserved name as a whole component."""
    for name in _RESERVED:
        at = low.find(name)
        while at >= 0:
            end = at + len(name)
            if at == 0 or low[at - 1] in "/\0":
                while end < len(low) and low[end] in ". ":
                    end += 1
                if end == len(low) or low[end] in "/\0:":
                    return True
            at = low.find(name, end)
    return False


def paths_never_written(paths: Sequence[str]) -> list[str]:
    """The paths among ``paths`` (``/``-separated, as git lists them) holding a name that is never written.

    For the scan and restore, which see every path of a tree: one pass of
    ``str.find`` over the ASCII paths joined, so ``.gitignore`` and
    ``.github`` cost little, and the exact per-name check only on a possible
    match and for non-ASCII paths. About 15 ms per 100,000 paths.
    """
    joined = "\0".join(paths)
    odd: set[str] = set()
    if not joined.isascii():
        odd = {p for p in paths if not p.isascii() and _holds_reserved(p)}
        joined = "\0".join(p for p in paths if p.isascii())
    if _may_hold_reserved(joined.lower()):
        return [p for p in paths if _holds_reserved(p)]
    return [p for p in paths if p in odd] if odd else []


def link_climb(target: str) -> int | None:
    """Directories a relative link climbs above its own; None if absolute or '..' follows a name.

    Only leading '..' are accepted: after a name, '..' is resolved through
    whatever that name is (maybe another link), so it cannot be judged safe.
    A link may climb no higher than the root of its checkpoint's tree
    (``TreeCheck``); an absolute one (None) is never accepted from outside.
    """
    if target.startswith("/"):
        return None
    up, named = 0, False
    for part in target.split("/"):
        if part == "..":
            if named:
                return None
            up += 1
        elif part not in ("", "."):
            named = True
    return up


def check_paths(checkpoint_id: str, paths: Iterable[str], store: Sequence[str] = ()) -> None:
    """Raise UnsafeTree if a flattened tree holds a name never written or the store's own path.

    ``paths`` holds every path of the tree, directories included (as
    ``flatten`` gives them, names already checked for structure by
    ``decode_tree``). ``store`` is the store's path relative to the root (one
    spelling per way of reaching it), when the store lives inside the root.
    Restore calls it before it changes anything: about 15 ms per 100,000
    paths, plus a case-folded look at the paths as deep as a store kept at a
    custom path inside the root.
    """
    paths = list(paths)
    bad = paths_never_written(paths)
    if bad:
        parts = bad[0].split("/")
        at = next(i for i, name in enumerate(parts) if never_written(name))
        raise UnsafeTree(checkpoint_id, "/".join(parts[:at + 1]), never_written(parts[at]))
    # A store path with a reserved component (the default .checkpoints) was refused by name above.
    inside = {"/".join(fold_name(n) for n in rel.split("/")) for rel in store
              if rel and not _holds_reserved(rel)}
    depths = {rel.count("/") for rel in inside}
    for path in paths if inside else ():
        if path.count("/") in depths and "/".join(fold_name(n) for n in path.split("/")) in inside:
            raise UnsafeTree(checkpoint_id, path, "is the store's own directory (writing it would overwrite "
                                                  "the store's refs and config)")


class TreeCheck:
    """Proves trees safe to write anywhere: no name never written, no link leaving its checkpoint's tree.

    Fed each tree once (``add``), in any order; a tree can sit at several
    depths (and in several checkpoints), so the link check is done per root:
    ``need`` = how far a tree's links climb above it, ``max(own links,
    need(subdirectory) - 1)``, and a root must need 0 (``check_root``). The
    archive reader, archive export, push and pull all use it.
    """

    def __init__(self) -> None:
        self.info: dict[str, tuple[int, str, str, list[tuple[str, str]]]] = {}
        self.need: dict[str, int] = {}
        self.leaf: dict[str, int] = {}  # per tree: bytes of its longest non-directory name
        self.longest: dict[str, int] = {}  # per tree: bytes of the longest path below it

    def __contains__(self, oid: str) -> bool:
        return oid in self.info

    def add(self, oid: str, entries: list[Entry], where: tuple[str, str]) -> None:
        """Raise UnsafeTree for a name never written or an absolute (or unjudgeable) link in ``entries``."""
        checkpoint_id, path = where
        climb, worst, target, subdirs = 0, "", "", []
        for entry in entries:
            reason = never_written(entry.name)
            if reason:
                raise UnsafeTree(checkpoint_id, f"{path}/{entry.name}" if path else entry.name, reason)
            if entry.kind == DIR:
                subdirs.append((entry.name, entry.oid))
            elif entry.kind == SYMLINK:
                up = link_climb(entry.target)
                if up is None:
                    raise UnsafeTree(checkpoint_id, f"{path}/{entry.name}" if path else entry.name,
                                     f"symlink to {entry.target!r} leads out of the tree")
                if up > climb:
                    climb, worst, target = up, entry.name, entry.target
        self.info[oid] = (climb, worst, target, subdirs)
        self.leaf[oid] = max((path_bytes(e.name) for e in entries if e.kind != DIR), default=0)

    def _needs(self, root: str) -> int:
        stack, open_ = [(root, False)], set()
        while stack:
            oid, children_done = stack.pop()
            if oid in self.need or oid not in self.info:
                continue
            own, _, _, subdirs = self.info[oid]
            if children_done or oid in open_:
                self.need[oid] = max([own] + [self.need.get(sub, 0) - 1 for _, sub in subdirs])
                self.longest[oid] = max([self.leaf[oid]] + [longest_through(name, self.longest.get(sub, 0))
                                                            for name, sub in subdirs])
                continue
            open_.add(oid)
            stack.append((oid, True))
            stack.extend((sub, False) for _, sub in subdirs if sub not in self.need)
        return self.need.get(root, 0)

    def check_root(self, checkpoint_id: str, root: str) -> None:
        """Raise UnsafeTree naming a link below ``root`` that climbs out of it, or a path no disk can hold."""
        if self._needs(root) <= 0:
            self._check_length(checkpoint_id, root)
            return
        oid, path, depth = root, "", 0
        while True:
            own, worst, target, subdirs = self.info[oid]
            if own > depth:
                raise UnsafeTree(checkpoint_id, f"{path}/{worst}" if path else worst,
                                 f"symlink to {target!r} leads out of the tree")
            name, oid = next((n, s) for n, s in subdirs if self.need.get(s, 0) - 1 > depth)
            path, depth = f"{path}/{name}" if path else name, depth + 1

    def _check_length(self, checkpoint_id: str, root: str) -> None:
        """Refuse a tree holding a path longer than PATH_MAX: restore could never write it."""
        size = self.longest.get(root, 0)
        if size <= MAX_PATH_BYTES:
            return
        oid, path = root, ""
        while True:  # follow the longest path down, to name where it goes
            below = [(longest_through(n, self.longest.get(s, 0)), n, s) for n, s in self.info[oid][3]]
            best = max(below, default=(0, "", ""))
            if best[0] < self.leaf[oid] or not best[1]:
                break
            oid, path = best[2], f"{path}/{best[1]}" if path else best[1]
        raise UnsafeTree(checkpoint_id, path[:40] + "…", f"{size} bytes long, longer than the {MAX_PATH_BYTES} "
                         "bytes a path may have (PATH_MAX); no working tree can hold it")


def name_key(name: str) -> bytes:
    return os.fsencode(name)


def encode_tree(entries: list[Entry]) -> bytes:
    """Canonical bytes of a directory; the caller's order does not matter.

    Refuses what ``decode_tree`` would refuse (a duplicate or malformed
    name), so no writer can store a tree that cannot be read back.
    """
    ordered = sorted(entries, key=lambda e: name_key(e.name))
    for before, entry in itertools.pairwise(ordered):
        if before.name == entry.name:
            raise RRStoreError(f"refusing to write a tree with the name {entry.name!r} twice")
    for entry in ordered:
        if not valid_name(entry.name):
            raise RRStoreError(f"refusing to write a tree entry named {entry.name!r}")
    doc = {"format": TREE_FORMAT, "entries": [e.to_json() for e in ordered]}
    return canonical_json(doc)


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


# A tree names its subtrees by oid, so a crafted one of 40 trees, each naming the next twice, expands to
# 2^40 paths (a "tree bomb", as git bombs are for git): walks stop past this many entries, four times
# the biggest working trees (a million files with node_modules). Measured on a 43-object bomb: `find`
# stops in 19 s at 4.5 GB peak with 10 million; `ls -r` and `restore` read a tree per directory, slower.
MAX_ENTRIES = 4_000_000


def check_expansion(root: str, count: int) -> None:
    """CorruptObject once a walk of ``root`` has met more than ``MAX_ENTRIES`` entries."""
    if count > MAX_ENTRIES:
        raise CorruptObject(root, reason=f"expands to more than {MAX_ENTRIES} entries (its directories name the "
                            "same trees again and again: a crafted tree, never one a scan makes)")


def _read_recent(objects: ObjectStore, oid: str, recent: dict[str, list[Entry]]) -> list[Entry]:
    """``read_tree``, the last 256 trees a walk met kept decoded (a directory copied many times, or a
    tree bomb, is read once)."""
    entries = recent.get(oid)
    if entries is None:
        entries = recent[oid] = read_tree(objects, oid)
        if len(recent) > 256:
            del recent[next(iter(recent))]
    return entries


def walk(objects: ObjectStore, root: str, prefix: str = "") -> Iterator[tuple[str, Entry]]:
    """Every entry below tree ``root`` as (relative path, entry), parents first.

    Iterative (a stack of directory iterators), so any depth a disk can hold
    walks; a path longer than ``MAX_PATH_BYTES`` is a CorruptObject: no
    working tree can hold it, so nothing built on the walk (restore, diff,
    tar export) starts on it.
    """
    stack = [(prefix, iter(read_tree(objects, root)))]
    count = 0
    recent: dict[str, list[Entry]] = {}
    while stack:
        base, entries = stack[-1]
        for entry in entries:
            count += 1
            if count > MAX_ENTRIES:
                check_expansion(root, count)
            path = f"{base}{entry.name}"
            if len(path) > _SHORT_PATH and path_too_long(path):
                raise CorruptObject(root, reason=f"path {path[:40]}… is longer than the {MAX_PATH_BYTES} "
                                    "bytes a path may have (PATH_MAX); no working tree can hold it")
            yield path, entry
            if entry.kind == DIR:
                stack.append((path + "/", iter(_read_recent(objects, entry.oid, recent))))
                break
        else:
            stack.pop()


def flatten(objects: ObjectStore, root: str) -> dict[str, Entry]:
    """Path -> entry for the whole tree (directories included, for empty ones)."""
    return dict(walk(objects, root))


def flatten_except(objects: ObjectStore, root: str, known: Mapping[str, str],
                   paths: Collection[str] | None = None) -> tuple[dict[str, Entry], list[str]]:
    """``flatten``, but for the directories whose tree is ``known[path]`` already: (path -> entry, those
    directories).

    Such a directory's own entry is kept; nothing below it is read, so comparing two trees costs the
    directories that differ, not the whole tree. ``known[""]`` equal to ``root``: nothing is read.
    With ``paths``, a directory neither on the way to one of them nor below one is not read either
    (and listed with the known ones): a restore of some paths needs no other tree, so a damaged one
    elsewhere does not stop it.
    """
    if known.get("") == root:
        return {}, [""]
    out: dict[str, Entry] = {}
    same: list[str] = []
    stack = [("", root)]
    recent: dict[str, list[Entry]] = {}
    while stack:
        base, oid = stack.pop()
        for entry in _read_recent(objects, oid, recent):
            path = f"{base}{entry.name}"
            if len(path) > _SHORT_PATH and path_too_long(path):
                raise CorruptObject(root, reason=f"path {path[:40]}… is longer than the {MAX_PATH_BYTES} "
                                    "bytes a path may have (PATH_MAX); no working tree can hold it")
            out[path] = entry
            if len(out) > MAX_ENTRIES:
                check_expansion(root, len(out))
            if entry.kind == DIR:
                if known.get(path) == entry.oid or (paths is not None and not _toward(path, paths)):
                    same.append(path)
                else:
                    stack.append((path + "/", entry.oid))
    return out, same


def _toward(path: str, paths: Collection[str]) -> bool:
    """Whether directory ``path`` is one of ``paths``, lies below one, or holds one."""
    return under(path, paths) or any(p.startswith(f"{path}/") for p in paths)


def split_below(entries: dict[str, Entry], dirs: set[str]) -> tuple[dict[str, Entry], list[str]]:
    """(the entries not strictly below a directory of ``dirs``, the paths that are); one look-up per parent."""
    memo: dict[str, bool] = {}
    outside: dict[str, Entry] = {}
    below: list[str] = []
    for path, entry in entries.items():
        parent = path.rpartition("/")[0]
        hit = memo.get(parent)
        if hit is None:
            hit = memo[parent] = under(parent, dirs)
        if hit:
            below.append(path)
        else:
            outside[path] = entry
    return outside, below


def under(path: str, prefixes: Collection[str]) -> bool:
    """True if ``path`` is one of ``prefixes`` or lies below one ("" holds everything; one look-up per parent)."""
    while True:
        if path in prefixes:
            return True
        if not path:
            return False
        path = path.rpartition("/")[0]


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
    """

    def __init__(self) -> None:
        self.objects: set[str] = set()
        self.trees: set[str] = set()


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
    stack: list[Iterator[Entry]] = [iter(read_tree(objects, root))]
    while stack:
        for entry in stack[-1]:
            if entry.kind == DIR:
                child = entry.oid
                if child not in reach.trees:
                    reach.trees.add(child)
                    if child not in reach.objects:
                        reach.objects.add(child)
                        yield child
                    stack.append(iter(read_tree(objects, child)))
                    break
            elif entry.kind == FILE:
                for content in content_oids(entry):
                    if content not in reach.objects:
                        reach.objects.add(content)
                        yield content
        else:
            stack.pop()


def _below(name_size: int, longest: int) -> int:
    """Longest path through a subdirectory: its name, then '/' and its own longest path if any."""
    return name_size + 1 + longest if longest else name_size


def longest_through(name: str, longest: int) -> int:
    """Bytes of the longest path through subdirectory ``name`` whose own longest path is ``longest``."""
    return _below(path_bytes(name), longest)


def content_oids(entry: Entry) -> tuple[str, ...]:
    """The objects that hold a file entry's content."""
    return entry.chunks if entry.chunks else (entry.oid,)
