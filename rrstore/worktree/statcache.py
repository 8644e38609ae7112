"""Stat cache (beside snapshot): skip reading files whose stat has not changed.

Maps a path to the (size, mtime_ns, ctime_ns, inode, mode) it had when it was
hashed, and the hash (and chunk list) that read gave. A cached hash is
trusted only when the stat matches exactly and the file's mtime is older than
the moment the scan that cached it began (git's "racy clean" rule): a file
edited in the same clock tick as its hashing keeps its mtime, so such a file
is hashed again next time instead of trusted.

It also keeps each directory's tree oid from the last scan, with the names
that tree was built from (a subdirectory's name with its tree oid, a
symlink's with its target), so an unchanged directory is not encoded and
hashed again. A cached tree is trusted only when every file directly in the
directory was a cache hit by the rule above (so a file changed with the same
size and mtime inside the racy window makes its directory, and so every
directory above it, be built again), the names are the same, and each
subdirectory's tree oid is the one cached with them.

It also keeps the store's token (``store.generation``) under which every
object its entries and trees name was in the store: a storing scan that
finds the same token trusts its hits without asking the store (no
``ObjectStore.has``). Any entry or tree recorded without being stored (a
``status`` scan, a restore) drops the token, and only a storing scan sets it
(``vouch``). The token saves work and proves nothing: a checkpoint still
proves its objects before its ref is written.

The cache is trusted like git's index, so it is only trusted when rrstore
wrote it: ``RRSC5 <python version>\n``, a 32-byte keyed BLAKE3 MAC, then a
``marshal`` dump (the fastest loader Python has, which matters on every
unchanged re-checkpoint) of the work tree's realpath and ``st_dev``, the
entries, the directory trees and the store token. The key is a per-user secret kept outside the store
(``$XDG_CACHE_HOME/rrstore/statcache.key``, else ``~/.cache/rrstore/``,
mode 0600), so a cache edited, damaged, crafted or copied from another tree
fails the MAC or the binding and is dropped and rebuilt: it only ever costs
a re-read. The MAC is one hash over the file (about 6 ms for 200k entries);
every oid and chunk list is checked for shape once at load, in one pass over
all of them (a cache holding a malformed one is dropped). No
key (no writable cache directory) means no cache.
"""

from __future__ import annotations

import contextlib
import itertools
import marshal
import os
import stat as stat_mod
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import blake3

from ..errors import RRStoreError
from ..fsutil import AtomicFile, atomic_write, temp_name
from ..store.generation import StoreToken
from ..store.objects import OID_LEN, hash_bytes

# A change this recent may have happened during a read or a write without
# moving a coarse (one clock tick) timestamp; such files are read again.
SETTLE_NS = 30_000_000

MAGIC = f"RRSC5 {sys.version_info[0]}.{sys.version_info[1]}\n".encode()
MAC_LEN = 32
KEY_LEN = 32

Stamp = tuple[int, int, int, int, int]


def stamp(st: os.stat_result) -> Stamp:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)


# A directory's cached tree: (tree oid, the sorted names it was built from: ``tree_names``).
CachedTree = tuple[str, tuple[str, ...]]


class Cached(NamedTuple):
    """One file's cached hash. A NamedTuple: a load builds one per entry, and a dataclass costs more."""

    stamp: Stamp
    oid: str
    chunks: tuple[str, ...]


def key_path() -> Path:
    """Where the user's stat-cache key lives: outside every store, so a store never vouches for itself."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rrstore" / "statcache.key"


def user_key() -> bytes | None:
    """The per-user MAC key, created (0600) on first use; None when it cannot be had safely."""
    path = key_path()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return _new_key(path)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None  # someone else could read or have written it: no cache rather than a forgeable one
        key = os.read(fd, KEY_LEN + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return key if len(key) == KEY_LEN else _new_key(path, replace=True)


def _new_key(path: Path, *, replace: bool = False) -> bytes | None:
    """Write a fresh random key; a concurrent first use keeps whichever key landed first."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = os.urandom(KEY_LEN)
        with AtomicFile(path, temp=temp_name(path.parent, "key"), fsync=True, exclusive=not replace,
                        mode=0o600) as out:
            out.write(key)
        if out.installed:
            return key
        return user_key() if not replace else None  # another rrstore's key landed first: use that one
    except OSError:
        return None


def _binding(root: Path | None) -> tuple[str, int]:
    """What ties a cache to its work tree: the root's realpath and device."""
    if root is None:
        return "", 0
    try:
        return os.path.realpath(root), os.stat(root).st_dev
    except OSError:
        return "", -1


class StatCache:
    """Loaded once per snapshot, consulted per file, saved once if anything changed."""

    def __init__(self, path: Path, tmp_dir: Path, root: Path | None = None) -> None:
        self.path = path
        self.tmp_dir = tmp_dir
        self.root = root
        self.entries: dict[str, Cached] = {}
        self.trees: dict[str, CachedTree] = {}  # directory path ("" the root) -> its last tree
        self.trusted_before = 0
        # The store token under which every object named here was present (None: not vouched for).
        self.token: StoreToken | None = None
        self.scan_start = 0
        self.changed = False
        self.racy = False
        self.key: bytes | None = None
        self.dropped = ""  # why a cache on disk was not used ("" when it was, or there was none)

    def load(self) -> StatCache:
        """Read the cache if rrstore wrote it for this work tree; anything else is dropped (rebuilt on save)."""
        self.key = user_key()
        try:
            data = self.path.read_bytes()
        except OSError:
            return self
        if self.key is None:
            self.dropped = "no key"
            return self
        try:
            self.entries, self.trees, self.trusted_before, self.token = _decode(data, self.key,
                                                                                _binding(self.root))
        except Exception as exc:  # any damage at all: the cache only saves time
            self.entries, self.trees, self.trusted_before, self.token = {}, {}, 0, None
            self.dropped = str(exc) or type(exc).__name__
            self.changed = True
        return self

    def begin(self) -> None:
        """Note the clock as the scan starts (the racy boundary).

        The earlier of the store filesystem's clock and the system clock, less
        a settle window: the work tree may sit on another filesystem than the
        store, and a boundary too early only costs a re-read.
        """
        self.scan_start = min(fs_now(self.tmp_dir), time.time_ns()) - SETTLE_NS

    def lookup(self, path: str, st: os.stat_result) -> Cached | None:
        hit = self.entries.get(path)
        if hit is None or hit.stamp != stamp(st):  # equal to a real stamp: five ints
            return None
        if st.st_mtime_ns >= self.trusted_before:
            self.racy = True
            return None
        return hit  # its oid and chunks were checked at load (``_decode``), or recorded from a read

    def tree(self, path: str, names: tuple[str, ...]) -> str | None:
        """The cached tree oid of directory ``path``, if it was built from ``names``.

        The caller asks only for a directory whose files were all cache hits
        (``lookup``) in this scan: with the same names and subtrees, its tree
        is the one cached.
        """
        cached = self.trees.get(path)
        if cached is None or cached[1] != names:
            return None
        return cached[0]  # checked at load

    def remember_trees(self, trees: dict[str, CachedTree]) -> None:
        """Keep the trees a scan just built (every directory of it) for the next scan."""
        if trees != self.trees:
            self.trees = trees
            self.changed = True
            self.token = None  # unless the scan stored them (``vouch``)

    def record(self, path: str, st: os.stat_result, oid: str, chunks: tuple[str, ...]) -> None:
        new = Cached(stamp(st), oid, chunks)
        if self.entries.get(path) != new:
            self.entries[path] = new
            self.changed = True
            self.token = None  # unless the scan stored it (``vouch``)

    def forget(self, path: str) -> None:
        """Drop ``path``'s entry (a read that failed: what it named may not be stored)."""
        if self.entries.pop(path, None) is not None:
            self.changed = True

    def trusted(self, token: StoreToken | None) -> bool:
        """Whether every object named here is in a store whose token is ``token`` (see the module
        docstring); a scan then need not ask the store for its hits' objects."""
        return token is not None and token == self.token

    def vouch(self, token: StoreToken | None) -> None:
        """A storing scan's word: every entry kept and every tree is in the store, whose token was
        ``token`` once they were (None: the store changed meanwhile, so nothing is vouched for)."""
        if token != self.token:
            self.token = token
            self.changed = True

    def remember_written(self, root: str, written: dict[str, tuple[str, tuple[str, ...], Stamp]],
                         keep: set[str] | None = None) -> None:
        """Trust files rrstore itself just wrote (restore), so the next scan need not read them.

        ``keep``: the files of the scan the restore planned from (``save``'s ``keep``, so one write
        saves both); by default every entry is kept.

        Each comes with the stat taken right after it was written; a file
        whose stat moved since (someone edited it meanwhile) is not recorded.
        The boundary is set one settle window before now: a file written in
        the last moments stays racy and is hashed again, as git does with
        files as new as its index.
        """
        for path, (oid, chunks, written_stamp) in written.items():
            try:
                st = os.lstat(f"{root}/{path}")
            except OSError:
                continue
            if stamp(st) == written_stamp:
                self.record(path, st, oid, chunks)
        self._forget_trees_above(written)
        self.scan_start = min(fs_now(self.tmp_dir), time.time_ns()) - SETTLE_NS
        self.racy = True
        self.save(set(self.entries) if keep is None else keep | written.keys())

    def _forget_trees_above(self, paths: Iterable[str]) -> None:
        """Drop the cached trees of every directory above ``paths``: their files' entries changed."""
        for path in paths:
            parent = path.rpartition("/")[0]
            while True:
                if self.trees.pop(parent, None) is not None:
                    self.changed = True
                if not parent:
                    break
                parent = parent.rpartition("/")[0]

    def save(self, keep: set[str]) -> None:
        """Write the cache for the paths in ``keep`` (the files just scanned)."""
        if set(self.entries) - keep:
            self.entries = {p: c for p, c in self.entries.items() if p in keep}
            self.changed = True
        if not (self.changed or self.racy):
            return
        try:
            if self.key is None:  # no key: a cache nobody could check is not written
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            data = _encode(self.entries, self.scan_start, self.key, _binding(self.root), self.trees, self.token)
            atomic_write(self.path, data, self.tmp_dir, fsync=False)
        except (OSError, RRStoreError):
            pass  # a cache that cannot be written only costs time


def fs_now(folder: Path) -> int:
    """The current time as the filesystem holding ``folder`` stamps files."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temp_name(folder, "clock")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            return os.fstat(fd).st_mtime_ns
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError:
        return 0


def _mac(key: bytes, body: bytes) -> bytes:
    return blake3.blake3(MAGIC + body, key=key).digest()


def _encode(entries: dict[str, Cached], scan_start: int, key: bytes, binding: tuple[str, int],
            trees: dict[str, CachedTree] | None = None, token: StoreToken | None = None) -> bytes:
    paths = list(entries)
    rows = [entries[p] for p in paths]
    body = marshal.dumps((binding[0], binding[1], scan_start, paths, [c.stamp for c in rows],
                          [c.oid for c in rows], [c.chunks for c in rows], trees or {},
                          None if token is None else tuple(token)))
    return MAGIC + _mac(key, body) + body


def _decode(data: bytes, key: bytes, binding: tuple[str, int]
            ) -> tuple[dict[str, Cached], dict[str, CachedTree], int, StoreToken | None]:
    """The entries, directory trees, racy boundary and store token of a cache rrstore wrote for this
    tree; ValueError otherwise.

    One keyed hash over the whole file proves rrstore wrote it; the fields
    are then checked for shape (lengths and container types), and every oid
    (files, chunks, trees) in one pass: MAC'd yet malformed means written by
    a buggy rrstore, and none of it is trusted.
    """
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + MAC_LEN:
        raise ValueError("not a stat cache of this Python")
    body = data[len(MAGIC) + MAC_LEN:]
    # a plain comparison: a local cache has no remote timing oracle, and hmac would load OpenSSL at start-up
    if data[len(MAGIC):len(MAGIC) + MAC_LEN] != _mac(key, body):
        raise ValueError("MAC does not match (damaged, edited or another user's)")
    doc = marshal.loads(body)
    if type(doc) is not tuple or len(doc) != 9:
        raise ValueError("malformed")
    real, dev, scan_start, paths, stamps, oids, chunks, trees, token = doc
    if (real, dev) != binding:
        raise ValueError("written for another work tree")
    if type(scan_start) is not int or not all(type(x) is list for x in (paths, stamps, oids, chunks)):
        raise ValueError("malformed")
    if not len(paths) == len(stamps) == len(oids) == len(chunks) or type(trees) is not dict:
        raise ValueError("malformed")
    if not all(type(t) is tuple and len(t) == 2 and type(t[1]) is tuple for t in trees.values()):
        raise ValueError("malformed")
    if not set(map(type, chunks)) <= {tuple}:
        raise ValueError("malformed chunk list")
    if not _all_oids([*oids, *itertools.chain.from_iterable(chunks), *(t[0] for t in trees.values())]):
        raise ValueError("malformed oid")
    if token is not None and (type(token) is not tuple or len(token) != 2 or set(map(type, token)) != {str}):
        raise ValueError("malformed store token")
    entries = dict(zip(paths, map(Cached._make, zip(stamps, oids, chunks, strict=True)), strict=True))
    return entries, trees, scan_start, None if token is None else StoreToken(*token)


def _all_oids(items: list[object]) -> bool:
    """Whether every item is an oid (64 lowercase hex digits), checked in C-speed passes, not per item."""
    if not items:
        return True
    if set(map(type, items)) != {str} or set(map(len, items)) != {OID_LEN}:  # type: ignore[arg-type]
        return False
    joined = "".join(items)  # type: ignore[arg-type]
    return joined.isascii() and not joined.encode("ascii").translate(None, b"0123456789abcdef")


def stat_cache_of(store_path: Path, root: Path) -> StatCache:
    """The stat cache of work tree ``root`` in the store at ``store_path`` (a store may serve several)."""
    name = hash_bytes(os.fsencode(os.path.realpath(root)))[:16]
    return StatCache(store_path / "cache" / f"stat-{name}", store_path / "tmp", root).load()
