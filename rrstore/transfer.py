"""Push and pull checkpoints between the local store and a remote one (verbs layer).

A remote holds the same layout as a local store (``config.json``,
``objects/``, ``packs/``, ``refs/checkpoints/``) on any backend, in practice
``S3Backend``. Transfers move whole keys: loose objects, and packs with their
indexes (a pack that holds a needed object is sent whole, extra objects
included). Only what the other side lacks is sent: what each side holds is
read once (``remote_packs.Holdings``: on a remote, through its merged pack
indexes and the local cache of its indexes, without listing ``packs/`` or
``objects/``), and every object reached from a checkpoint that is already
there, loose or in any pack, is skipped. A push writes the remote's merged
index of the packs it sent after them and before any ref.

Write order, on either side, is the store's: content objects and packs (each
``.pack`` before its ``.idx``), then records, then refs. A ref is created
with an exclusive write and never overwritten: if the other side already has
the id with another record, the checkpoint is reported as a conflict. So two
runners pushing at once lose nothing: shared objects are the same bytes under
the same key, and each ref is created once. Ids made by this version carry a
random tail (``record.new_suffix``), so two runners never make the same id;
a conflict left by older ids has a way out: ``rename_conflicts`` renames the
local checkpoint (``CheckpointManager.rename``) and transfers again.

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
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .backends import Backend
from .backends.views import OverlayView
from .checkpoint import CheckpointManager, suggest_ids
from .errors import (
    CheckpointNotFound,
    CorruptObject,
    ObjectMissing,
    RRStoreError,
    StoreNotFound,
    UnsafeTree,
)
from .record import CheckpointRecord
from .recordindex import RecordReader, remote_reader
from .remote import WORKERS, RemoteListing, RemoteNotFound, check_remote_config, list_remote, open_remote
from .remote_lease import Lease, settle
from .remote_packs import Holdings, RemoteCache, missing_after_lapse
from .staging import Staging
from .store.objects import ObjectStore, decode_loose, oid_of_key
from .store.pack import PREFIX as PACKS
from .store.pack import Location, verify_pack
from .store.refs import Refs, plan_refs
from .store.store import STORE_FORMAT, Store, upgraded_config
from .tree import DIR, FILE, TreeCheck, content_oids, read_tree
from .worktree.workers import Progress

# Re-exported: callers (the facade, tests) reach the remote's listing through ``transfer``.
__all__ = ["WORKERS", "Conflict", "RemoteListing", "RemoteNotFound", "TransferResult", "list_remote",
           "open_remote", "pull", "push"]



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
    # ``rename_conflicts``: local id that was a conflict -> the new id the local checkpoint got.
    renamed: dict[str, str] = field(default_factory=dict)

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
        for old, new in self.renamed.items():
            text += f"\nrenamed: the local {old} is now {new} ({old} on the remote is another checkpoint)"
        return text

    def absorb(self, again: TransferResult) -> None:
        """Add the second transfer of ``rename_conflicts`` (whose conflicts are the ones still left)."""
        self.transferred += again.transferred
        self.present += again.present
        self.conflicts = again.conflicts
        self.refused.update(again.refused)
        self.objects += again.objects
        self.packs += again.packs
        self.bytes += again.bytes
        self.objects_skipped += again.objects_skipped

    def to_json(self) -> dict[str, object]:
        return {"direction": self.direction, "remote": self.remote, "transferred": self.transferred,
                "already_present": self.present, "objects": self.objects, "packs": self.packs,
                "bytes": self.bytes, "objects_skipped": self.objects_skipped, "success": self.success,
                "conflicts": [vars(c) for c in self.conflicts], "renamed": self.renamed,
                "refused": [{"checkpoint_id": r.checkpoint_id, "path": r.path, "reason": r.reason}
                            for r in self.refused.values()]}


# push ----------------------------------------------------------------------------------------------


def push(store: Store, remote: Backend, checkpoint_ids: Sequence[str] = (),
         progress: Progress | None = None, workers: int = WORKERS, *,
         rename_conflicts: bool = False) -> TransferResult:
    """Upload checkpoints (all when ``checkpoint_ids`` is empty) and what they reach that the remote lacks.

    A checkpoint no pull would accept (``tree.TreeCheck``) raises UnsafeTree
    when asked for by id, and nothing is sent; pushing all, the others are
    sent and it is listed in ``result.refused``. Raises CheckpointNotFound for an unknown local id, ObjectMissing or
    CorruptObject when the local store is damaged (nothing of that
    checkpoint's refs is then written), and the backend's errors (permission,
    connection) as they come; a conflicting remote ref is reported in the
    result, not raised. With ``rename_conflicts``, the local checkpoint of
    each conflicting id gets a new id (``result.renamed``) and is pushed under it.
    """
    result = _push(store, remote, checkpoint_ids, progress, workers)
    if rename_conflicts and result.conflicts:
        result.absorb(_push(store, remote, _rename(store, result), progress, workers))
    return result


def _rename(store: Store, result: TransferResult) -> list[str]:
    """Give the local checkpoint of each conflict a new id (into ``result.renamed``); the ids to transfer
    again: the new ones on a push, the freed remote ones on a pull."""
    manager = CheckpointManager(store.path, store)
    with store.writing():
        for conflict in result.conflicts:
            result.renamed[conflict.checkpoint_id] = manager.rename(conflict.checkpoint_id)
    return list(result.renamed.values() if result.direction == "push" else result.renamed)


def _push(store: Store, remote: Backend, checkpoint_ids: Sequence[str], progress: Progress | None,
          workers: int) -> TransferResult:
    result = TransferResult("push", remote.location)
    manager = CheckpointManager(store.path, store)
    with store.writing():
        records = _local_records(manager, checkpoint_ids)
        _ensure_remote_config(store, remote)
        remote_refs = Refs(remote)
        index = remote_reader(remote, store.path, workers=workers, update_remote=True)
        wanted = {r.checkpoint_id: r.record_oid for r in records}
        todo = _sort_refs(result, wanted, _refs_of(index, list(wanted)).get)
        if not todo:
            return result
        # chosen through the record indexes: what is sent is read again, by oid, verified
        records = [manager.get(i) for i in todo]
        needed = _safe(store.objects, records, result, checkpoint_ids,
                       f"push to {remote.location} refused, nothing was sent (no pull would accept it)")
        todo = {i: oid for i, oid in todo.items() if i not in result.refused}
        if not todo:
            return result
        local = Holdings(store.backend, workers)
        with Lease(remote, "push") as lease:  # a remote gc waits for it, and it for a gc (remote_lease)
            there = Holdings(remote, workers, RemoteCache.of(store.path, remote.location))
            content, result.objects_skipped = local.keys_of(needed, there)
            record_keys, _ = local.keys_of({oid: [i] for i, oid in todo.items()}, there)
            sent = _Counter(local.size_of(content), progress)
            upload = _Copy(store.backend, store.backend, lambda key, data: remote.write(key, data, durable=True),
                           sent)
            _copy_all(upload, content, workers, needed, list(todo))
            _copy_all(upload, record_keys, workers, needed, list(todo))
            if lease.intact():  # a lapsed pusher writes no index others would trust (docs/remote-gc.md)
                there.record_push(upload.sent)  # the remote's merged index of them: after the packs, before any ref
            remote.sync()
            _create_refs(result, remote_refs, todo)
            reached = {**needed, **{oid: [i] for i, oid in todo.items()}}
            settle(lease, lambda: missing_after_lapse(local, remote, reached, workers),
                   lambda keys: _copy_all(upload, keys, workers, reached, list(todo)))
        there.save_cache()
        sent.fill(result)
        if result.transferred:  # the remote's record index learns the new refs (best effort: only a cache)
            with contextlib.suppress(RRStoreError):
                index.listing(known_records={r.record_oid: r.row() for r in records})
    return result


def _refs_of(index: RecordReader, ids: list[str]) -> dict[str, str | None]:
    """Each id's record oid on the side ``index`` reads (None if absent): one listing of its refs with
    their tokens and its record index; only refs the index does not know are read."""
    found: dict[str, str | None] = dict.fromkeys(ids)
    listing = index.listing(records=False)
    for checkpoint_id in ids:
        found[checkpoint_id] = listing.oids.get(checkpoint_id)
        if checkpoint_id in listing.damaged:
            raise listing.damaged[checkpoint_id]
    return found


def _local_records(manager: CheckpointManager, checkpoint_ids: Sequence[str]) -> list[CheckpointRecord]:
    """The records to send: each asked for (read from the store), or every one (from the record index),
    oldest first: the refs are created in that order, so the remote's 'newest' is the local store's
    (ids no longer sort by time within one second: their random tail)."""
    if not checkpoint_ids:
        every = manager.list_checkpoints(all_projects=True)
        if manager.damaged:  # as reading them one by one would: the first damaged one stops the push
            raise next(iter(manager.damaged.values()))
        return every[::-1]
    ids = list(dict.fromkeys(checkpoint_ids))
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
    try:  # a remote that is a store already costs one GET (no conditional PUT, no probe)
        found = check_remote_config(remote)
    except RemoteNotFound:
        if remote.write("config.json", config, durable=True, exclusive=True):
            return
        found = check_remote_config(remote)
    if found != STORE_FORMAT:
        # a format-1 remote is about to get format-2 refs and packs: say so first (see store.STORE_FORMAT)
        remote.write("config.json", upgraded_config(remote.read("config.json")), durable=True)


# shared by push and pull ---------------------------------------------------------------------------


def _sort_refs(result: TransferResult, wanted: dict[str, str],
               there: Callable[[str], str | None]) -> dict[str, str]:
    """Put the ids the receiving side has already in ``result`` (present, or a conflict); return the rest."""
    plan = plan_refs(wanted, there)
    result.present.extend(plan.present)
    for checkpoint_id, existing in plan.conflicts.items():
        _conflict(result, checkpoint_id, wanted[checkpoint_id], existing)
    return {checkpoint_id: wanted[checkpoint_id] for checkpoint_id in plan.todo}


def _conflict(result: TransferResult, checkpoint_id: str, sent: str, existing: str) -> None:
    """``checkpoint_id`` names record ``sent`` on the sending side, ``existing`` on the receiving one."""
    ours, theirs = (sent, existing) if result.direction == "push" else (existing, sent)
    result.conflicts.append(Conflict(checkpoint_id, ours, theirs))


def _safe(objects: ObjectStore, records: list[CheckpointRecord], result: TransferResult,
          asked: Sequence[str], lead: str) -> dict[str, list[str]]:
    """``_needed`` of the records: transferring every checkpoint (nothing ``asked``), an unsafe one is
    listed in ``result.refused`` and the others go; one asked for by id refuses the whole transfer."""
    try:
        return _needed(objects, records, None if asked else result.refused)
    except UnsafeTree as exc:
        raise exc.with_lead(lead) from None


@dataclass
class _Copy:
    """Copy one key (a loose object, or a pack with its index) to the other side, verified first."""

    source: Backend     # where objects and packs are read
    indexes: Backend    # where pack indexes are read (the pull reads the remote's, fetched once)
    put: Callable[[str, bytes], object]
    counter: _Counter
    sent: dict[str, dict[str, Location]] = field(default_factory=dict)  # pack -> its entries, once copied

    def __call__(self, key: str) -> None:
        if key.startswith(PACKS):
            data, index = self.source.read(f"{key}.pack"), self.indexes.read(f"{key}.idx")
            entries = verify_pack(key[len(PACKS):], data, index)
            self.put(f"{key}.pack", data)
            self.put(f"{key}.idx", index)
            self.sent[key[len(PACKS):]] = entries
            self.counter.add(packs=1, size=len(data) + len(index))
        else:
            frame = self.source.read(key)
            oid = oid_of_key(key)
            assert oid is not None, key  # the keys sent are loose objects' keys or packs'
            decode_loose(oid, frame)  # within the size limit, hashing to its oid
            self.put(key, frame)
            self.counter.add(objects=1, size=len(frame))


def _copy_all(copy: Callable[[str], None], keys: list[str], workers: int, needed: dict[str, list[str]],
              ids: list[str]) -> None:
    """``copy`` every key on the pool; a missing or corrupt object names the checkpoints reaching it."""
    try:
        _each(copy, keys, workers)
    except (ObjectMissing, CorruptObject) as exc:
        raise exc.with_checkpoints(needed.get(exc.oid) or ids) from None


def _create_refs(result: TransferResult, refs: Refs, todo: dict[str, str]) -> None:
    """Create each ref exclusively, last; one taken meanwhile (another runner) is present or a conflict."""
    for checkpoint_id, oid in todo.items():
        if refs.create(checkpoint_id, oid):
            result.transferred.append(checkpoint_id)
            continue
        existing = refs.get(checkpoint_id)
        if existing == oid:
            result.present.append(checkpoint_id)
        else:
            _conflict(result, checkpoint_id, oid, existing or "")


# what the checkpoints reach ------------------------------------------------------------------------


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
    """Counts what was sent, from the pool's threads, and reports progress in bytes (``total``: an
    estimate, ``Holdings.size_of``; ``fill`` ends it at the bytes copied)."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        import threading

        self.total, self.progress = total, progress
        self.objects = self.packs = self.size = 0
        self.lock = threading.Lock()
        if progress is not None:
            progress(0, total)

    def add(self, objects: int = 0, packs: int = 0, size: int = 0) -> None:
        with self.lock:
            self.objects += objects
            self.packs += packs
            self.size += size
            if self.progress is not None:
                self.progress(self.size, self.total)

    def fill(self, result: TransferResult) -> None:
        result.objects, result.packs, result.bytes = self.objects, self.packs, self.size
        if self.progress is not None:
            self.progress(self.size, self.size)


# pull ----------------------------------------------------------------------------------------------


def pull(store: Store, remote: Backend, checkpoint_ids: Sequence[str],
         progress: Progress | None = None, workers: int = WORKERS, *,
         rename_conflicts: bool = False) -> TransferResult:
    """Download checkpoints ('latest' allowed; none: every checkpoint of the remote) and what they reach
    that the local store lacks. A checkpoint this store must not hold (``tree.TreeCheck``) raises
    UnsafeTree when asked for by id, nothing changed; pulling all, it is listed in ``result.refused``.

    Every object is verified before any file becomes visible; a missing or
    corrupt remote object raises ObjectMissing or CorruptObject with the
    local store unchanged. An id the local store has with another record is
    a conflict in the result, left alone; with ``rename_conflicts`` the local
    checkpoint gets a new id (``result.renamed``) and the remote's is pulled.
    """
    result = _pull(store, remote, checkpoint_ids, progress, workers)
    if rename_conflicts and result.conflicts:
        result.absorb(_pull(store, remote, _rename(store, result), progress, workers))
    return result


def _pull(store: Store, remote: Backend, checkpoint_ids: Sequence[str], progress: Progress | None,
          workers: int) -> TransferResult:
    result = TransferResult("pull", remote.location)
    wanted = _wanted(remote, checkpoint_ids, workers, store)
    with store.writing():
        todo = _sort_refs(result, wanted, store.refs.get)
        if not todo:
            return result
        local = Holdings(store.backend, workers)
        there = Holdings(remote, workers, RemoteCache.of(store.path, remote.location))
        records = [_remote_record(there, checkpoint_id, oid) for checkpoint_id, oid in todo.items()]
        needed = _needed_there(store, there, records, result, checkpoint_ids)
        todo = {i: oid for i, oid in todo.items() if i not in result.refused}
        if not todo:
            return result
        needed.update((oid, [checkpoint_id]) for checkpoint_id, oid in todo.items())
        keys, result.objects_skipped = there.keys_of(needed, local)
        got = _Counter(there.size_of(keys), progress)
        with Staging(store) as staged:
            copy = _Copy(remote, there.listed, staged.add, got)

            def fetch(key: str) -> None:
                try:
                    copy(key)
                except KeyError:
                    raise RRStoreError(f"{remote.location}/{key} disappeared during the pull "
                                       "(a gc on the remote?); nothing was changed, retry") from None

            _copy_all(fetch, keys, workers, needed, list(todo))
            staged.install(durable=store.settings.fsync != "never")
        store.objects.reload()
        _create_refs(result, store.refs, todo)
        there.save_cache()
        got.fill(result)
    return result


def _needed_there(store: Store, there: Holdings, records: list[CheckpointRecord], result: TransferResult,
                  asked: Sequence[str]) -> dict[str, list[str]]:
    """``_safe`` of remote records, their trees read from wherever they are (local first). A tree
    the remote's merged indexes do not name makes it list its packs and objects once, then retry."""
    lead = f"pull from {result.remote} refused, nothing was changed"
    while True:
        both = ObjectStore(OverlayView(store.backend, there.listed))
        both.list_loose()  # a tree is looked up in the indexes, with no probe for a loose copy first
        try:
            return _safe(both, records, result, asked, lead)
        except ObjectMissing:
            if there.complete_listing:
                raise
            there.complete()
            result.refused.clear()


def _wanted(remote: Backend, checkpoint_ids: Sequence[str], workers: int, store: Store) -> dict[str, str]:
    """The remote's ids to pull (every one when none given; 'latest' resolved) -> their record oids.

    Every one: the remote's refs through its record index (one listing, the index, the refs it
    lacks). Ids given: one GET of each ref, no listing.
    """
    check_remote_config(remote)
    remote_refs = Refs(remote)
    wanted: dict[str, str] = {}
    if not checkpoint_ids:  # every checkpoint of the remote
        listing = remote_reader(remote, store.path, workers=workers).listing(records=False)
        if listing.damaged:
            raise next(iter(listing.damaged.values()))
        # oldest first, as push sends them: the local 'newest' after the pull is the remote's
        added = {i: (e.added_ns or 0, i) for i, e in listing.index.refs.items()}
        wanted = {i: listing.oids[i] for i in sorted(listing.oids, key=lambda i: added.get(i, (0, i)))}
    for checkpoint_id in dict.fromkeys(checkpoint_ids):
        resolved = _remote_id(remote, remote_refs, checkpoint_id, store)
        oid = remote_refs.get(resolved)
        if oid is None:
            raise CheckpointNotFound(resolved, suggest_ids(resolved, remote_refs))
        wanted[resolved] = oid
    return wanted


def _remote_id(remote: Backend, refs: Refs, checkpoint_id: str, store: Store) -> str:
    """``latest`` names the remote's newest step checkpoint; other ids are taken as given."""
    if checkpoint_id != "latest":
        return checkpoint_id
    newest = next((r for r in list_remote(remote, cache=store.path).checkpoints if r.kind == "step"), None)
    if newest is None:
        raise CheckpointNotFound(checkpoint_id)
    return newest.checkpoint_id


def _remote_record(there: Holdings, checkpoint_id: str, oid: str) -> CheckpointRecord:
    """Read and check a remote record: it must be whole and name the id its ref has."""
    try:
        record = CheckpointRecord.decode(oid, ObjectStore(there.listed).get(oid))
    except (ObjectMissing, CorruptObject) as exc:
        raise exc.with_checkpoints([checkpoint_id]) from None
    if record.checkpoint_id != checkpoint_id:
        raise CorruptObject(oid, reason=f"ref {checkpoint_id} names the record of {record.checkpoint_id}",
                            checkpoints=[checkpoint_id])
    return record
