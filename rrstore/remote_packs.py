"""What one side of a transfer holds (verbs layer, beside ``remote``), read at a cost that does not
grow with the remote: its merged pack indexes, and local copies of its pack indexes.

A remote written by this rrstore keeps merged pack indexes under ``index/packs/`` (``store.packindex``):
each push writes one for the packs it uploaded (after the packs and their ``.idx``, before any ref) and
merges the smallest ones when there are more than ``REMOTE_MIDX_MAX``. So a transfer lists
``index/packs/`` (a handful of keys) instead of ``packs/`` and ``objects/``, and reads a merged index
once: merged indexes and pack indexes are immutable, so they are kept under
``<store>/cache/remotes/<16 hex of BLAKE3(location)>/`` (``midx/<name>.midx``, ``idx/<pack>.idx``) and
checked again when read (a merged index by its name, an ``.idx`` by its trailer). The cache decides only
what to fetch: a pack is still checked against its name and index (``verify_pack``) before it is stored.

A remote without any merged index (an older rrstore's) is listed the old way, and the first push writes
one covering its packs. An object that the merged indexes do not name, on the side it must be read from
(a pack an older rrstore pushed after them, a loose object), makes that side list ``packs/`` and
``objects/`` once (``complete``). A push of an object they do not name sends it: at worst a pack is sent
twice, the same bytes under the same key.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3

from .backends import Backend
from .backends.views import ListedView
from .errors import CorruptObject, ObjectMissing, RRStoreError
from .fsutil import atomic_write
from .remote import WORKERS
from .store.objects import loose_oids, object_key
from .store.pack import PREFIX as PACKS
from .store.pack import Location, PackReader, decode_index, index_size
from .store.packindex import MIDX_PREFIX, decode_midx, encode_midx, midx_key, midx_name

# More merged indexes than this on a remote and a push merges the smallest of them.
REMOTE_MIDX_MAX = 6


def cache_dir(store_path: Path, location: str) -> Path:
    """Where the store at ``store_path`` keeps copies of the remote ``location``'s indexes."""
    return store_path / "cache" / "remotes" / blake3.blake3(location.encode()).hexdigest()[:16]


class RemoteCache:
    """Local copies of a remote's merged and pack indexes: derived, checked when read, never required.

    A copy that fails its check is removed and fetched again; a cache that cannot be written (a
    read-only store, a full disk) is simply not kept. New copies are written by ``save``, once the
    transfer succeeded: a refused pull leaves the store exactly as it was, its cache included.
    """

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.tmp = tmp
        self.pending: dict[str, bytes] = {}
        self.lock = threading.Lock()

    @classmethod
    def of(cls, store_path: Path, location: str) -> RemoteCache:
        return cls(cache_dir(store_path, location), store_path / "tmp")

    def _path(self, key: str) -> Path | None:
        if key.startswith(PACKS) and key.endswith(".idx"):
            return self.root / "idx" / key[len(PACKS):]
        if midx_name(key) is not None:
            return self.root / "midx" / key[len(MIDX_PREFIX):]
        return None

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if not _intact(key, data):
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return data

    def put(self, key: str, data: bytes) -> None:
        """Keep ``data`` for ``save`` (a key that is no index, or bytes failing their check, are not kept)."""
        if self._path(key) is not None and _intact(key, data):
            with self.lock:
                self.pending[key] = data

    def save(self) -> None:
        """Write the copies kept since the last ``save``."""
        with self.lock:
            pending, self.pending = self.pending, {}
        for key, data in pending.items():
            path = self._path(key)
            assert path is not None
            with contextlib.suppress(OSError, RRStoreError):
                path.parent.mkdir(parents=True, exist_ok=True)
                self.tmp.mkdir(parents=True, exist_ok=True)
                atomic_write(path, data, self.tmp, fsync=False)


def _intact(key: str, data: bytes) -> bool:
    """A merged index that hashes to its name, or a pack index whose trailer matches."""
    try:
        name = midx_name(key)
        if name is not None:
            decode_midx(name, data)
        else:
            decode_index(key[len(PACKS):-4], data)
    except CorruptObject:
        return False
    return True


class CachedView(ListedView):
    """A backend seen through the keys known to exist (``keys``), with its indexes read through a
    ``RemoteCache``. Loose objects are asked of the backend itself until ``objects/`` was listed
    (``loose_listed``): records are loose, and a merged index does not name them."""

    def __init__(self, backend: Backend, keys: set[str], cache: RemoteCache | None) -> None:
        super().__init__(backend, keys)
        self.cache = cache
        self.loose_listed = False
        self.lock = threading.Lock()

    def read(self, key: str) -> bytes:
        if key.startswith("objects/") and not self.loose_listed:
            frame = self.backend.read(key)
            self.keys.add(key)  # known to exist now (a record read): a transfer copies it from there
            return frame
        if key not in self.keys:
            raise KeyError(key)
        data = self._cache.get(key)
        if data is None and self.cache is not None:
            data = self.cache.get(key)
        if data is None:
            data = self.backend.read(key)
            if self.cache is not None:
                self.cache.put(key, data)
        if key.endswith((".idx", ".midx")):
            self._cache[key] = data
        return data

    def exists(self, key: str) -> bool:
        if key.startswith("objects/") and not self.loose_listed:
            return self.backend.exists(key)
        return key in self.keys

    def prefetch(self, keys: list[str], workers: int) -> None:
        """Read ``keys`` (indexes) in parallel and keep them; one gone meanwhile is left out."""
        def fetch(key: str) -> None:
            with contextlib.suppress(KeyError):
                self.read(key)

        todo = [k for k in keys if k not in self._cache]
        if len(todo) <= 1:
            for key in todo:
                fetch(key)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(fetch, todo):
                pass

    def keep(self, key: str, data: bytes) -> None:
        """``key`` now exists with ``data`` (this process wrote it): known, and cached."""
        self.keys.add(key)
        self._cache[key] = data
        if self.cache is not None:
            self.cache.put(key, data)


class Holdings:
    """One side's objects (local or remote): loose oids and the pack index (oid -> location).

    Locally (no ``cache``) ``packs/`` and ``objects/`` are listed (cheap) and the pack reader reads the
    merged indexes plus the few pack indexes they do not cover. On a remote (``cache`` given) that has
    merged indexes, only ``index/packs/`` is listed; ``complete`` lists the rest when needed.
    """

    def __init__(self, backend: Backend, workers: int = WORKERS, cache: RemoteCache | None = None) -> None:
        self.backend = backend
        self.workers = workers
        self.keys: set[str] = set()
        self.loose: set[str] = set()
        self.listed = CachedView(backend, self.keys, cache)
        self.complete_listing = False
        self.merged = self._merged_indexes() if cache is not None else {}
        if not self.merged:
            self.complete()
        else:
            self.reader = PackReader(self.listed)
            self.reader.refresh()

    def _merged_indexes(self) -> dict[str, set[str]]:
        """The remote's merged indexes (name -> packs), fetched (or read from the cache) and known as keys."""
        for _ in range(3):
            names = sorted(n for n in map(midx_name, self.backend.list(MIDX_PREFIX)) if n is not None)
            keys = [midx_key(n) for n in names]
            self.keys.update(keys)
            self.listed.prefetch(keys, self.workers)
            if all(k in self.listed._cache for k in keys):
                break
            self.keys.difference_update(keys)  # one was merged away meanwhile: list again
        merged: dict[str, set[str]] = {}
        for name in names:
            data = self.listed._cache.get(midx_key(name))
            if data is None:
                continue
            try:
                members = decode_midx(name, data)
            except CorruptObject:
                continue  # ignored: its packs are found by listing (``complete``)
            merged[name] = set(members)
            for pack in members:
                self.keys.update((f"{PACKS}{pack}.pack", f"{PACKS}{pack}.idx"))
        return merged

    def complete(self) -> None:
        """List ``packs/`` and ``objects/`` (the old way: what merged indexes may not name) and read
        the index of every pack no merged index covers (through the cache)."""
        if self.complete_listing:
            return
        self.complete_listing = True
        self.loose = set(loose_oids(self.backend))
        self.keys.update(object_key(oid) for oid in self.loose)
        self.keys.update(self.backend.list(PACKS))
        self.keys.update(self.backend.list(MIDX_PREFIX))
        self.listed.loose_listed = True
        covered: set[str] = set().union(*self.merged.values()) if self.merged else set()
        if self.listed.cache is not None:
            self.listed.prefetch(sorted(k for k in self.keys if k.startswith(PACKS) and k.endswith(".idx")
                                        and k[len(PACKS):-4] not in covered), self.workers)
        self.reader = PackReader(self.listed)
        self.reader.refresh()

    def save_cache(self) -> None:
        """Keep local copies of the indexes read or written (after a transfer that succeeded)."""
        if self.listed.cache is not None:
            self.listed.cache.save()

    def has(self, oid: str) -> bool:
        return oid in self.loose or oid in self.reader.index or object_key(oid) in self.keys

    def key_of(self, oid: str) -> str | None:
        """Where ``oid`` lives: its loose key, or the pack's key without extension; None if absent."""
        if oid in self.loose or object_key(oid) in self.keys:
            return object_key(oid)
        loc = self.reader.index.get(oid)
        return f"{PACKS}{loc[0]}" if loc is not None else None

    def size_of(self, keys: list[str]) -> int:
        """About how many bytes copying ``keys`` reads, from the pack indexes in memory (no request):
        a pack ends where its last block does, its ``.idx`` holds one entry per object; a loose
        object (a record, a few KiB) counts nothing. For progress only."""
        total = 0
        for key in keys:
            entries = self.reader.members.get(key[len(PACKS):]) if key.startswith(PACKS) else None
            if entries:
                total += max(loc[1] + loc[2] for loc in entries.values()) + index_size(len(entries))
        return total

    def keys_of(self, needed: dict[str, list[str]], target: Holdings) -> tuple[list[str], int]:
        """Loose keys and pack names (``packs/<id>``, no extension) holding what ``target`` lacks,
        and how many of the needed objects ``target`` has already.

        ``needed`` maps each oid to the checkpoints that reach it, named if it is missing here
        (after ``complete``: the merged indexes may not name everything).
        """
        keys: set[str] = set()
        present = 0
        for oid, ids in needed.items():
            if target.has(oid):
                present += 1
                continue
            key = self.key_of(oid)
            if key is None and not self.complete_listing:
                self.complete()
                key = self.key_of(oid)
            if key is None:
                raise ObjectMissing(oid, ids)
            keys.add(key)
        # Packs first: the big ones bound how long the transfer takes.
        return sorted(keys, key=lambda k: (not k.startswith(PACKS), k)), present

    # after a push ------------------------------------------------------------------------------------

    def record_push(self, sent: dict[str, dict[str, Location]]) -> None:
        """Write a merged index of the packs just uploaded (and of any pack no merged index covered:
        a remote an older rrstore wrote), then merge the smallest ones if there are too many.

        Called after the packs and their ``.idx`` are written, before any ref. Derived data:
        a failure here is not raised (the next push, or a listing, finds those packs).
        """
        covered: set[str] = set().union(*self.merged.values()) if self.merged else set()
        members = dict(sent)
        for pack, entries in self.reader.members.items():
            if pack not in covered and pack not in members:
                members[pack] = entries
        with contextlib.suppress(RRStoreError, OSError):
            if members:
                self._write_merged(members)
            if len(self.merged) > REMOTE_MIDX_MAX:
                self._consolidate()

    def _write_merged(self, members: dict[str, dict[str, Location]]) -> str:
        name, data = encode_midx(members)
        key = midx_key(name)
        if key not in self.keys:
            self.backend.write(key, data, durable=True)
        self.listed.keep(key, data)
        self.merged[name] = set(members)
        for pack, entries in members.items():
            self.reader.members.setdefault(pack, entries)
        return name

    def _consolidate(self) -> None:
        """Merge the smallest merged indexes into one (geometrically: a file is merged once the
        smaller ones add up to half of it), then delete the ones merged."""
        def size(name: str) -> int:
            return sum(len(self.reader.members.get(p, ())) for p in self.merged[name])

        order = sorted(self.merged, key=lambda n: (size(n), n))
        chosen: list[str] = []
        total = 0
        for i, name in enumerate(order):
            if len(chosen) >= 2 and len(order) - i + 1 <= REMOTE_MIDX_MAX // 2 and size(name) >= 2 * total:
                break
            chosen.append(name)
            total += size(name)
        packs = set().union(*(self.merged[n] for n in chosen))
        if any(p not in self.reader.members for p in packs):
            return  # a pack whose entries are unknown here would be dropped: leave them as they are
        fresh = self._write_merged({p: self.reader.members[p] for p in packs})
        for name in chosen:
            if name == fresh:
                continue
            with contextlib.suppress(KeyError):
                self.backend.delete(midx_key(name))
            del self.merged[name]


def missing_after_lapse(local: Holdings, remote: Backend, needed: dict[str, list[str]], workers: int) -> list[str]:
    """Keys (loose objects, packs) of ``local`` holding what ``needed`` names and ``remote`` lacks, read
    from a full listing of the remote that trusts none of its merged indexes: what a push whose lease
    lapsed sends again (a remote gc may have removed it meanwhile; docs/remote-gc.md)."""
    there = Holdings(remote, workers)

    def held(oid: str) -> bool:
        key = there.key_of(oid)
        return key is not None and (not key.startswith(PACKS) or f"{key}.pack" in there.keys)

    gone = {oid: ids for oid, ids in needed.items() if not held(oid)}
    return local.keys_of(gone, there)[0] if gone else []
