"""Push and pull checkpoints between the local store and a remote one (verbs layer).

A remote holds the same layout as a local store (``config.json``,
``objects/``, ``packs/``, ``refs/checkpoints/``) on any backend, in practice
``S3Backend``. Transfers move whole keys: loose objects, and packs with their
indexes (a pack that holds a needed object is sent whole, extra objects
included). Only what the other side lacks is sent: the receiving side's keys
and pack indexes are read once, and every object reached from a checkpoint
that is already there, loose or in any pack, is skipped.

Write order, on either side, is the store's: content objects and packs (each
``.pack`` before its ``.idx``), then records, then refs. A ref is created
with an exclusive write and never overwritten: if the other side already has
the id with another record, the checkpoint is reported as a conflict. So two
runners pushing at once lose nothing: shared objects are the same bytes under
the same key, and each ref is created once.

Everything is verified before it is stored: push checks every object it
uploads (so local damage never spreads to the shared remote), and pull
downloads into the local ``tmp/``, verifies every object (each object of a
pack against its index, and the pack against its name), and only then
renames the files into place. A pull that meets a missing or corrupt object
leaves the local store as it was. Both directions first read every tree the
checkpoints reach and refuse, with UnsafeTree and nothing transferred, a
checkpoint holding a name that is never written or a symlink leading out of
its tree (``tree.TreeCheck``: the rule archive import applies).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import zstandard

from .backends import Backend
from .backends.s3 import S3Backend
from .backends.views import ListedView, OverlayView
from .checkpoint import CheckpointManager, suggest_ids
from .errors import (
    CheckpointNotFound,
    CorruptObject,
    ObjectMissing,
    RRStoreError,
    StoreNotFound,
    UnsafeTree,
    from_oserror,
)
from .fsutil import syncfs, temp_name
from .record import CheckpointRecord, added_ns_of, newest_first
from .store.objects import ObjectStore, decode_loose, hash_bytes, is_oid, object_key
from .store.pack import MAX_BLOCK, PACK_MAGICS, Location, PackReader, decode_index
from .store.pack import PREFIX as PACKS
from .store.refs import Refs
from .store.store import READABLE_FORMATS, STORE_FORMAT, Store, upgraded_config
from .tree import DIR, FILE, TreeCheck, content_oids, read_tree

Progress = Callable[[int, int], None]
# Requests in flight at once; S3 latency, not bandwidth, bounds a transfer of small keys.
WORKERS = 8


class RemoteNotFound(StoreNotFound):
    """The remote location holds no rrstore store (no ``config.json``)."""

    def __init__(self, location: str) -> None:
        RRStoreError.__init__(self, f"no rrstore store at {location} (push a checkpoint there first)")
        self.path = location


@dataclass
class Conflict:
    """The id exists on both sides, naming different records."""

    checkpoint_id: str
    local_record: str
    remote_record: str


@dataclass
class TransferResult:
    """What a push or pull did. ``conflicts`` were left alone on both sides."""

    direction: str
    remote: str
    transferred: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    objects: int = 0
    packs: int = 0
    bytes: int = 0
    objects_skipped: int = 0
    # A transfer of every checkpoint sends the others and leaves out these unsafe ones (UnsafeTree).
    refused: dict[str, UnsafeTree] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return not self.conflicts and not self.refused

    def refusal(self) -> UnsafeTree | None:
        """One UnsafeTree (exit 17) naming every refused checkpoint, the first one's reason; None if none."""
        if not self.refused:
            return None
        first = next(iter(self.refused.values()))
        verb = "pushed to" if self.direction == "push" else "pulled from"
        return first.with_lead(f"{len(self.refused)} checkpoint(s) refused, not {verb} {self.remote} (every "
                               f"other checkpoint was): {', '.join(self.refused)}; the first")

    @property
    def message(self) -> str:
        verb = "pushed to" if self.direction == "push" else "pulled from"
        text = (f"{len(self.transferred)} checkpoint(s) {verb} {self.remote}, {len(self.present)} already there; "
                f"sent {self.objects} object(s) and {self.packs} pack(s), {self.bytes} bytes; "
                f"{self.objects_skipped} object(s) already there")
        if self.direction == "pull":
            text = text.replace("sent", "fetched")
        for c in self.conflicts:
            text += (f"\nconflict: {c.checkpoint_id} is record {c.local_record[:12]} locally but "
                     f"{c.remote_record[:12]} on the remote; left unchanged on both sides")
        for refused in self.refused.values():
            text += f"\nrefused: {refused.detail}"
        return text

    def to_json(self) -> dict[str, object]:
        return {"direction": self.direction, "remote": self.remote, "transferred": self.transferred,
                "already_present": self.present, "objects": self.objects, "packs": self.packs,
                "bytes": self.bytes, "objects_skipped": self.objects_skipped, "success": self.success,
                "conflicts": [vars(c) for c in self.conflicts],
                "refused": [{"checkpoint_id": r.checkpoint_id, "path": r.path, "reason": r.reason}
                            for r in self.refused.values()]}


@dataclass
class RemoteListing:
    """The remote's readable checkpoint records, newest first, and the ids it could not read."""

    checkpoints: list[CheckpointRecord]
    damaged: dict[str, RRStoreError]


def open_remote(url: str, endpoint_url: str | None = None) -> S3Backend:
    """The backend for a remote URL (``s3://bucket/prefix``)."""
    return S3Backend.from_url(url, endpoint_url=endpoint_url)


# what each side holds ------------------------------------------------------------------------------


class _Holdings:
    """One side's objects, read once: loose oids and the pack index (oid -> location)."""

    def __init__(self, backend: Backend, workers: int = WORKERS) -> None:
        self.backend = backend
        self.keys: set[str] = set()
        self.loose: set[str] = set()
        for key in backend.list("objects/"):
            parts = key.split("/")
            if len(parts) == 3 and is_oid(parts[1] + parts[2]):
                self.loose.add(parts[1] + parts[2])
        self.keys.update(object_key(oid) for oid in self.loose)
        self.keys.update(backend.list(PACKS))
        self.listed = ListedView(backend, self.keys)
        self.listed.prefetch(sorted(k for k in self.keys if k.endswith(".idx")), workers)
        self.reader = PackReader(self.listed)
        self.reader.refresh()

    def has(self, oid: str) -> bool:
        return oid in self.loose or oid in self.reader.index

    def key_of(self, oid: str) -> str | None:
        """Where ``oid`` lives: its loose key, or the pack's key without extension; None if absent."""
        if oid in self.loose:
            return object_key(oid)
        loc = self.reader.index.get(oid)
        return f"{PACKS}{loc[0]}" if loc is not None else None

    def keys_of(self, needed: dict[str, list[str]], target: _Holdings) -> tuple[list[str], int]:
        """Loose keys and pack names (``packs/<id>``, no extension) holding what ``target`` lacks,
        and how many of the needed objects ``target`` has already.

        ``needed`` maps each oid to the checkpoints that reach it, named if it is missing here.
        """
        keys: set[str] = set()
        present = 0
        for oid, ids in needed.items():
            if target.has(oid):
                present += 1
                continue
            key = self.key_of(oid)
            if key is None:
                raise ObjectMissing(oid, ids)
            keys.add(key)
        # Packs first: the big ones bound how long the transfer takes.
        return sorted(keys, key=lambda k: (not k.startswith(PACKS), k)), present


# verification ----------------------------------------------------------------------------------------


def verify_loose(oid: str, frame: bytes) -> None:
    """A loose object's frame decodes, within the size limit, to bytes that hash to ``oid``."""
    decode_loose(oid, frame)


def verify_pack(pack: str, data: bytes, index: bytes) -> dict[str, Location]:
    """Check a pack against its name and every object in it against its index; return the entries."""
    if not data.startswith(PACK_MAGICS) or blake3.blake3(data).hexdigest() != pack:
        raise CorruptObject(f"pack {pack}", reason="pack bytes do not hash to the pack's name")
    entries = decode_index(pack, index)
    dec = zstandard.ZstdDecompressor()
    blocks: dict[int, bytes] = {}
    for oid, (_, block_offset, block_size, offset, length) in sorted(entries.items(), key=lambda e: e[1][1]):
        block = blocks.get(block_offset)
        if block is None:
            frame = data[block_offset:block_offset + block_size]
            try:
                size = zstandard.frame_content_size(frame)
                if not 0 <= size <= MAX_BLOCK:
                    raise CorruptObject(oid, reason=f"pack {pack} block declares {size} bytes")
                block = dec.decompress(frame, max_output_size=max(size, 1))
            except zstandard.ZstdError as exc:
                raise CorruptObject(oid, reason=f"pack {pack} block is not a valid zstd frame ({exc})") from None
            blocks = {block_offset: block}  # entries are sorted by block: keep one
        actual = hash_bytes(block[offset:offset + length])
        if offset + length > len(block) or actual != oid:
            raise CorruptObject(oid, actual=actual, reason=f"in pack {pack}: hashes to {actual}")
    return entries


# push ----------------------------------------------------------------------------------------------


def push(store: Store, remote: Backend, checkpoint_ids: Sequence[str] = (),
         progress: Progress | None = None, workers: int = WORKERS) -> TransferResult:
    """Upload checkpoints (all when ``checkpoint_ids`` is empty) and what they reach that the remote lacks.

    A checkpoint no pull would accept (``tree.TreeCheck``) raises UnsafeTree
    when asked for by id, and nothing is sent; pushing all, the others are
    sent and it is listed in ``result.refused``. Raises CheckpointNotFound for an unknown local id, ObjectMissing or
    CorruptObject when the local store is damaged (nothing of that
    checkpoint's refs is then written), and the backend's errors (permission,
    connection) as they come; a conflicting remote ref is reported in the
    result, not raised.
    """
    result = TransferResult("push", remote.location)
    manager = CheckpointManager(store.path, store)
    with store.writing():
        records = _local_records(manager, checkpoint_ids)
        _ensure_remote_config(store, remote)
        remote_refs = Refs(remote)
        theirs = _refs_of(remote_refs, [r.checkpoint_id for r in records], workers)
        todo = []
        for record in records:
            existing = theirs[record.checkpoint_id]
            if existing == record.record_oid:
                result.present.append(record.checkpoint_id)
            elif existing is not None:
                result.conflicts.append(Conflict(record.checkpoint_id, record.record_oid, existing))
            else:
                todo.append(record)
        if not todo:
            return result
        try:  # every checkpoint: send the safe ones, list the others; an id asked for refuses the push
            needed = _needed(store.objects, todo, None if checkpoint_ids else result.refused)
        except UnsafeTree as exc:
            raise exc.with_lead(f"push to {remote.location} refused, nothing was sent "
                                "(no pull would accept it)") from None
        todo = [r for r in todo if r.checkpoint_id not in result.refused]
        if not todo:
            return result
        local, there = _Holdings(store.backend, workers), _Holdings(remote, workers)
        content, result.objects_skipped = local.keys_of(needed, there)
        record_keys, _ = local.keys_of({r.record_oid: [r.checkpoint_id] for r in todo}, there)
        sent = _Counter(len(content) + len(record_keys), progress)

        def upload(key: str) -> None:
            if key.startswith(PACKS):
                data, index = store.backend.read(f"{key}.pack"), store.backend.read(f"{key}.idx")
                verify_pack(key[len(PACKS):], data, index)
                remote.write(f"{key}.pack", data, durable=True)
                remote.write(f"{key}.idx", index, durable=True)
                sent.add(packs=1, size=len(data) + len(index))
            else:
                frame = store.backend.read(key)
                verify_loose(_oid_of(key), frame)
                remote.write(key, frame, durable=True)
                sent.add(objects=1, size=len(frame))

        try:
            _each(upload, content, workers)
            _each(upload, record_keys, workers)
        except (ObjectMissing, CorruptObject) as exc:
            raise exc.with_checkpoints(needed.get(exc.oid) or [r.checkpoint_id for r in todo]) from None
        remote.sync()
        for record in todo:
            if remote_refs.create(record.checkpoint_id, record.record_oid):
                result.transferred.append(record.checkpoint_id)
            else:
                _settle(result, record.checkpoint_id, record.record_oid, remote_refs.get(record.checkpoint_id))
        sent.fill(result)
    return result


def _refs_of(refs: Refs, ids: list[str], workers: int) -> dict[str, str | None]:
    """Each id's record oid on the side ``refs`` reads (None if absent): one listing, then GETs in parallel."""
    listed = set(refs)
    found: dict[str, str | None] = dict.fromkeys(ids)

    def get(checkpoint_id: str) -> None:
        found[checkpoint_id] = refs.get(checkpoint_id)

    _each(get, [i for i in ids if i in listed], workers)
    return found


def _local_records(manager: CheckpointManager, checkpoint_ids: Sequence[str]) -> list[CheckpointRecord]:
    ids = list(dict.fromkeys(checkpoint_ids)) or sorted(manager.store.refs)
    records: list[CheckpointRecord] = []
    for checkpoint_id in ids:
        record = manager.get(checkpoint_id)
        if record.checkpoint_id not in {r.checkpoint_id for r in records}:
            records.append(record)
    return records


def _ensure_remote_config(store: Store, remote: Backend) -> None:
    """Make the remote a store (exclusive create of config.json), or check it is one."""
    try:
        config = store.backend.read("config.json")
    except KeyError:
        raise StoreNotFound(str(store.path)) from None
    if not remote.write("config.json", config, durable=True, exclusive=True) \
            and _check_remote_config(remote) != STORE_FORMAT:
        # a format-1 remote is about to get format-2 refs and packs: say so first (see store.STORE_FORMAT)
        remote.write("config.json", upgraded_config(remote.read("config.json")), durable=True)


def _check_remote_config(remote: Backend) -> str:
    try:
        raw = remote.read("config.json")
    except KeyError:
        raise RemoteNotFound(remote.location) from None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise RRStoreError(f"{remote.location}/config.json is not valid JSON; is this an rrstore store?") from None
    found = doc.get("format") if isinstance(doc, dict) else doc
    if found not in READABLE_FORMATS:
        raise RRStoreError(f"{remote.location}: unsupported store format {found!r}")
    return str(found)


class _Reach:
    """The trees checkpoints reach, each read and checked once (``TreeCheck``), and what each holds.

    A checkpoint that proves unsafe (UnsafeTree) may have left trees checked whose subtrees were not
    walked: those are ``incomplete``, walked again (from memory) by the next checkpoint reaching them.
    """

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.check = TreeCheck()
        self.held: dict[str, tuple[list[tuple[str, str]], list[str]]] = {}  # tree -> (subdirs, contents)
        self.incomplete: set[str] = set()

    def walk(self, record: CheckpointRecord) -> None:
        """Read and check every tree ``record`` reaches; raise UnsafeTree, ObjectMissing or CorruptObject."""
        walked: set[str] = set()  # a tree met twice in one checkpoint is walked once
        stack = [(record.state_hash, "")]
        try:
            while stack:
                oid, path = stack.pop()
                if oid in walked or (oid in self.held and oid not in self.incomplete):
                    continue
                walked.add(oid)
                if oid not in self.held:
                    entries = read_tree(self.objects, oid)
                    self.check.add(oid, entries, (record.checkpoint_id, path))
                    self.held[oid] = ([(e.name, e.oid) for e in entries if e.kind == DIR],
                                      [c for e in entries if e.kind == FILE for c in content_oids(e)])
                for name, sub in self.held[oid][0]:
                    stack.append((sub, f"{path}/{name}" if path else name))
            self.check.check_root(record.checkpoint_id, record.state_hash)
        except UnsafeTree:
            self.incomplete.update(o for o in walked if o in self.held)
            raise
        except (ObjectMissing, CorruptObject) as exc:
            self.incomplete.update(o for o in walked if o in self.held)
            raise exc.with_checkpoints([record.checkpoint_id]) from None
        self.incomplete.difference_update(walked)

    def collect(self, record: CheckpointRecord, needed: dict[str, list[str]], trees: set[str]) -> None:
        """Add every object ``record`` reaches (walked already) to ``needed``, naming ``record`` where new."""
        ids = [record.checkpoint_id]
        stack = [record.state_hash]
        while stack:
            oid = stack.pop()
            if oid in trees:
                continue
            trees.add(oid)
            needed.setdefault(oid, ids)
            subdirs, contents = self.held[oid]
            for content in contents:
                needed.setdefault(content, ids)
            stack.extend(sub for _, sub in subdirs)


def _needed(objects: ObjectStore, records: Iterable[CheckpointRecord],
            refused: dict[str, UnsafeTree] | None = None) -> dict[str, list[str]]:
    """Every object the records reach -> the id that first reaches it (for error messages), trees proven safe.

    Walks the trees itself rather than through ``tree.reachable``, so the one
    read of each tree also feeds ``TreeCheck``: a checkpoint holding a name
    that is never written (``.git``, the store) or a symlink leading out
    raises UnsafeTree before anything is transferred, whichever side made it.
    Push and pull thus refuse what archive import refuses. With ``refused``
    (a transfer of every checkpoint), such a checkpoint is instead put there,
    and the others are still needed.
    """
    reach = _Reach(objects)
    needed: dict[str, list[str]] = {}
    trees: set[str] = set()
    for record in records:
        try:
            reach.walk(record)
        except UnsafeTree as exc:
            if refused is None:
                raise
            refused[record.checkpoint_id] = exc
            continue
        reach.collect(record, needed, trees)
    return needed


def _settle(result: TransferResult, checkpoint_id: str, ours: str, theirs: str | None) -> None:
    """The ref was taken meanwhile (another runner): same record is fine, another is a conflict."""
    if theirs == ours:
        result.present.append(checkpoint_id)
    else:
        result.conflicts.append(Conflict(checkpoint_id, ours, theirs or ""))


def _oid_of(key: str) -> str:
    """``objects/ab/cdef…`` -> ``abcdef…``."""
    return key[8:10] + key[11:]


def _each(work: Callable[[str], None], keys: list[str], workers: int) -> None:
    """``work(key)`` for every key on a thread pool; the first error cancels what has not started."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(work, key) for key in keys]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


class _Counter:
    """Counts what was sent, from the pool's threads, and reports progress."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        import threading

        self.total, self.progress = total, progress
        self.done = self.objects = self.packs = self.size = 0
        self.lock = threading.Lock()
        if progress is not None:
            progress(0, total)

    def add(self, objects: int = 0, packs: int = 0, size: int = 0) -> None:
        with self.lock:
            self.done += 1
            self.objects += objects
            self.packs += packs
            self.size += size
            if self.progress is not None:
                self.progress(self.done, self.total)

    def fill(self, result: TransferResult) -> None:
        result.objects, result.packs, result.bytes = self.objects, self.packs, self.size


# pull ----------------------------------------------------------------------------------------------


def pull(store: Store, remote: Backend, checkpoint_ids: Sequence[str],
         progress: Progress | None = None, workers: int = WORKERS) -> TransferResult:
    """Download checkpoints ('latest' allowed; none: every checkpoint of the remote) and what they reach
    that the local store lacks. A checkpoint this store must not hold (``tree.TreeCheck``) raises
    UnsafeTree when asked for by id, nothing changed; pulling all, it is listed in ``result.refused``.

    Every object is verified before any file becomes visible; a missing or
    corrupt remote object raises ObjectMissing or CorruptObject with the
    local store unchanged. An id the local store has with another record is
    a conflict in the result, left alone.
    """
    result = TransferResult("pull", remote.location)
    _check_remote_config(remote)
    remote_refs = Refs(remote)
    wanted: dict[str, str] = {}
    if not checkpoint_ids:  # every checkpoint of the remote
        wanted = {i: oid for i, oid in _refs_of(remote_refs, sorted(remote_refs), workers).items() if oid}
    for checkpoint_id in dict.fromkeys(checkpoint_ids):
        resolved = _remote_id(remote, remote_refs, checkpoint_id)
        oid = remote_refs.get(resolved)
        if oid is None:
            raise CheckpointNotFound(resolved, suggest_ids(resolved, remote_refs))
        wanted[resolved] = oid
    with store.writing():
        todo: dict[str, str] = {}
        for checkpoint_id, oid in wanted.items():
            ours = store.refs.get(checkpoint_id)
            if ours == oid:
                result.present.append(checkpoint_id)
            elif ours is not None:
                result.conflicts.append(Conflict(checkpoint_id, ours, oid))
            else:
                todo[checkpoint_id] = oid
        if not todo:
            return result
        local, there = _Holdings(store.backend, workers), _Holdings(remote, workers)
        records = [_remote_record(there, checkpoint_id, oid) for checkpoint_id, oid in todo.items()]
        both = ObjectStore(OverlayView(store.backend, there.listed))
        try:  # every checkpoint: fetch the safe ones, list the others; an id asked for refuses the pull
            needed = _needed(both, records, None if checkpoint_ids else result.refused)
        except UnsafeTree as exc:
            raise exc.with_lead(f"pull from {remote.location} refused, nothing was changed") from None
        todo = {i: oid for i, oid in todo.items() if i not in result.refused}
        if not todo:
            return result
        needed.update((oid, [checkpoint_id]) for checkpoint_id, oid in todo.items())
        keys, result.objects_skipped = there.keys_of(needed, local)
        staged = _Staging(store)
        got = _Counter(len(keys), progress)

        def fetch(key: str) -> None:
            try:
                if key.startswith(PACKS):
                    data, index = remote.read(f"{key}.pack"), there.listed.read(f"{key}.idx")
                    verify_pack(key[len(PACKS):], data, index)
                    staged.add(f"{key}.pack", data)
                    staged.add(f"{key}.idx", index)
                    got.add(packs=1, size=len(data) + len(index))
                else:
                    frame = remote.read(key)
                    verify_loose(_oid_of(key), frame)
                    staged.add(key, frame)
                    got.add(objects=1, size=len(frame))
            except KeyError:
                raise RRStoreError(f"{remote.location}/{key} disappeared during the pull "
                                   "(a gc on the remote?); nothing was changed, retry") from None

        try:
            _each(fetch, keys, workers)
        except (ObjectMissing, CorruptObject) as exc:
            staged.discard()
            raise exc.with_checkpoints(needed.get(exc.oid) or list(todo)) from None
        except BaseException:
            staged.discard()
            raise
        staged.install(durable=store.settings.fsync != "never")
        store.objects.reload()
        for checkpoint_id, oid in todo.items():
            if store.refs.create(checkpoint_id, oid):
                result.transferred.append(checkpoint_id)
            else:
                _settle(result, checkpoint_id, store.refs.get(checkpoint_id) or "", oid)
        got.fill(result)
    return result


def _remote_id(remote: Backend, refs: Refs, checkpoint_id: str) -> str:
    """``latest`` names the remote's newest step checkpoint; other ids are taken as given."""
    if checkpoint_id != "latest":
        return checkpoint_id
    newest = next((r for r in list_remote(remote).checkpoints if r.kind == "step"), None)
    if newest is None:
        raise CheckpointNotFound(checkpoint_id)
    return newest.checkpoint_id


def _remote_record(there: _Holdings, checkpoint_id: str, oid: str) -> CheckpointRecord:
    """Read and check a remote record: it must be whole and name the id its ref has."""
    try:
        record = CheckpointRecord.decode(oid, ObjectStore(there.listed).get(oid))
    except (ObjectMissing, CorruptObject) as exc:
        raise exc.with_checkpoints([checkpoint_id]) from None
    if record.checkpoint_id != checkpoint_id:
        raise CorruptObject(oid, reason=f"ref {checkpoint_id} names the record of {record.checkpoint_id}",
                            checkpoints=[checkpoint_id])
    return record


class _Staging:
    """Verified downloads in the store's ``tmp/``, renamed into place together once all arrived."""

    def __init__(self, store: Store) -> None:
        import threading

        self.root = store.path
        self.tmp = store.path / "tmp"
        self.files: list[tuple[Path, str]] = []
        self.lock = threading.Lock()

    def add(self, key: str, data: bytes) -> None:
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            path = temp_name(self.tmp, key.rsplit("/", 1)[-1])
            with open(path, "xb") as fh:
                fh.write(data)
        except OSError as exc:
            raise from_oserror(exc, str(self.tmp)) from exc
        with self.lock:
            self.files.append((path, key))

    def discard(self) -> None:
        for path, _ in self.files:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.files.clear()

    def install(self, durable: bool) -> None:
        """Rename into place: objects and packs first, indexes last (an index makes its pack visible).

        With ``durable``, one syncfs afterwards, before any ref may point at them
        (the store's batch discipline: no ref ever reaches a file not yet on disk).
        """
        ordered = sorted(self.files, key=lambda f: (f[1].endswith(".idx"), f[1]))
        try:
            for path, key in ordered:
                dest = self.root / key
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, dest)
        except OSError as exc:
            self.discard()
            raise from_oserror(exc, str(self.root)) from exc
        self.files.clear()
        if durable and ordered:
            syncfs(self.root)


# listing ---------------------------------------------------------------------------------------------


def list_remote(remote: Backend, lane: str | None = None, workers: int = WORKERS) -> RemoteListing:
    """The remote's checkpoint records, newest first (records are loose: one GET each, in parallel)."""
    _check_remote_config(remote)
    refs = Refs(remote)
    objects = ObjectStore(remote)

    def load(checkpoint_id: str) -> CheckpointRecord | RRStoreError | None:
        try:
            ref = refs.read(checkpoint_id)
            if ref is None:
                return None
            record = CheckpointRecord.decode(ref.oid, objects.get(ref.oid))
        except (ObjectMissing, CorruptObject) as exc:
            return exc.with_checkpoints([checkpoint_id])
        record.added_ns = added_ns_of(ref, record.created)  # the remote's push order (no stat per ref)
        return record

    ids = list(refs)
    records, damaged = [], {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for checkpoint_id, got in zip(ids, pool.map(load, ids), strict=True):
            if isinstance(got, RRStoreError):
                damaged[checkpoint_id] = got
            elif got is not None and (lane is None or got.lane == lane):
                records.append(got)
    return RemoteListing(newest_first(records), damaged)
