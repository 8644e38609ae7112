"""Retention and garbage collection on a shared remote (verbs layer, beside ``gc`` and ``transfer``).

``gc_remote`` applies ``gc.select`` (the local retention: age, newest N per lane, kept lanes, pins) to a
remote's checkpoints and deletes what no kept checkpoint reaches, while other runners push. It runs
under the remote's exclusive ``gc`` lease (``remote_lease``): pushes in flight finish first, new ones
wait, and every step that others rely on is taken only while the lease is intact. Order:

1. the lease; the server's time (the lease's LastModified) is the clock for every age;
2. every ref read again and its record hash-checked (a crafted record index decides nothing);
3. ``select``; mark every object a kept checkpoint reaches (trees read locally where the running
   store has them, else from the remote);
4. delete the refs of removed checkpoints (so a removed checkpoint disappears whole, first);
5. replace each merged index naming a pack to delete by one of its surviving packs (written first);
6. delete each dead pack (``.idx`` first, then ``.pack``) and each dead loose object, only if older
   than ``grace`` by the server's clock. Packs holding live and dead objects are left whole and
   counted (``packs_with_garbage``): nothing is rewritten on a remote;
7. refresh the remote's record index and release the lease.

A gc killed at any step leaves only garbage (refs first, indexes before packs); its lease goes
stale after its lifetime and the next gc finishes the work. docs/remote-gc.md argues each case.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .backends import Backend
from .backends.views import OverlayView
from .errors import CheckpointNotFound, CorruptObject, ObjectMissing, PermissionDenied, RRStoreError, StoreDamaged
from .gc import GCResult, Retention, select
from .record import CheckpointRecord, newest_first
from .recordindex import remote_reader
from .remote import WORKERS, check_remote_config
from .remote_lease import Lease, _stats, server_time
from .remote_packs import Holdings, RemoteCache
from .store.objects import ObjectStore, hash_bytes, oid_of_key
from .store.pack import PREFIX as PACKS
from .store.pack import decode_index
from .store.packindex import encode_midx, midx_key
from .store.refs import PREFIX as REFS
from .store.refs import Pins, Refs
from .store.store import Store
from .tree import Reach, reachable


@dataclass
class RemoteGCResult(GCResult):
    """``GCResult`` of a remote, with what only a remote has: whole packs removed, packs left holding
    garbage (live objects beside dead ones), and how long gc waited for pushes in flight."""

    remote: str = ""
    packs_removed: int = 0
    packs_with_garbage: int = 0
    waited: float = 0.0

    @property
    def message(self) -> str:
        removed, kept, freed = ("would remove", "would keep", "would free") if self.dry_run else \
            ("removed", "kept", "freed")
        return (f"gc {removed} {len(self.removed)} checkpoint(s), {self.packs_removed} pack(s) and "
                f"{self.objects_removed} object(s) from {self.remote}, {kept} {len(self.kept)} checkpoint(s) "
                f"({self.packs_with_garbage} pack(s) kept whole beside garbage); {freed} {self.bytes_freed} bytes")

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), "remote": self.remote, "packs_removed": self.packs_removed,
                "packs_with_garbage": self.packs_with_garbage, "waited_seconds": round(self.waited, 1)}


@dataclass
class _Plan:
    """What the sweep deletes: packs (whole), loose objects, and how much."""

    packs: list[str] = field(default_factory=list)
    loose: list[str] = field(default_factory=list)
    present: set[str] = field(default_factory=set)  # packs whose .idx and .pack are both there
    mixed: int = 0
    objects: int = 0
    size: int = 0


def gc_remote(remote: Backend, policy: Retention, *, store: Store | None = None, dry_run: bool = False,
              workers: int = WORKERS) -> RemoteGCResult:
    """Apply ``policy`` to ``remote`` and sweep what no kept checkpoint reaches; see the module docstring.

    ``store`` (the running project's, optional) lends its pins, its cache of the remote's indexes, and
    its objects for reading trees. A dry run takes no lease and changes nothing. Raises RemoteLocked
    (exit 11) when pushes or another gc keep it from starting, StoreDamaged (nothing removed) when a
    ref, record or tree a decision needs cannot be read, and stops (RRStoreError) if its lease lapses.
    """
    check_remote_config(remote)
    result = RemoteGCResult(dry_run=dry_run, remote=remote.location)
    lease = None if dry_run else Lease(remote, "gc")
    with lease if lease is not None else contextlib.nullcontext(), tempfile.TemporaryDirectory() as scratch:
        # without a store, a throwaway cache: Holdings reads the merged indexes only through one, and
        # gc must see every one of them (step 5 replaces those naming a dead pack)
        cache = RemoteCache.of(store.path, remote.location) if store is not None else \
            RemoteCache(Path(scratch) / "cache", Path(scratch) / "tmp")
        now = lease.now if lease is not None else _clock(remote)
        result.waited = lease.waited if lease is not None else 0.0
        records = _records(remote, store, workers)
        pins = set(Pins(remote)) | (set(store.pins) if store is not None else set())
        kept, removed = select(records, pins, policy, datetime.fromtimestamp(now).astimezone())
        result.kept = [r.checkpoint_id for r in kept]
        result.removed = [r.checkpoint_id for r in removed]
        there = Holdings(remote, workers, cache)
        there.complete()
        live = _mark(ObjectStore(OverlayView(store.backend, there.listed)) if store is not None
                     else ObjectStore(there.listed), kept)
        plan = _plan(remote, there, live, now - policy.grace.total_seconds())
        result.packs_removed, result.packs_with_garbage = len(plan.packs), plan.mixed
        result.objects_removed, result.bytes_freed = plan.objects, plan.size
        if lease is not None:
            _sweep(remote, lease, removed, there, plan, workers)
            with contextlib.suppress(RRStoreError):  # derived data: the next listing rebuilds it
                remote_reader(remote, store.path if store else None, workers=workers, update_remote=True).listing()
            there.save_cache()
    return result


def pin_remote(remote: Backend, checkpoint_id: str, pinned: bool = True) -> bool:
    """Pin (or unpin) a checkpoint of the remote (``refs/pins/ID`` there): every ``gc --remote`` keeps it.
    Under a shared lease, so a gc never decides with a pin half made. False if nothing changed;
    CheckpointNotFound when pinning an id the remote does not have."""
    check_remote_config(remote)
    with Lease(remote, "push"):
        if not pinned:
            return Pins(remote).remove(checkpoint_id)
        if Refs(remote).get(checkpoint_id) is None:
            raise CheckpointNotFound(checkpoint_id, where=remote.location,
                                     list_command=f"rrstore list --remote {remote.location} --all-projects")
        return Pins(remote).add(checkpoint_id)


def _clock(remote: Backend) -> float:
    """The server's time for a dry run; this machine's where the remote refuses the clock key's write."""
    try:
        return server_time(remote)
    except PermissionDenied:
        return time.time()


def _records(remote: Backend, store: Store | None, workers: int) -> list[CheckpointRecord]:
    """Every checkpoint of the remote, newest first by when the remote got it (its ref's LastModified):
    each ref read again, each record kept from the record index only if it hashes to the oid the ref
    names, else read again. Anything unreadable stops gc before it removes anything."""
    added = {key[len(REFS):]: modified for key, modified in _stats(remote, REFS)}
    listing = remote_reader(remote, store.path if store else None, workers=workers).listing()
    for checkpoint_id, exc in listing.damaged.items():
        raise StoreDamaged("gc stopped, nothing was removed", _with(exc, checkpoint_id))
    refs, objects = Refs(remote), ObjectStore(remote)

    def verified(checkpoint_id: str) -> CheckpointRecord | None:
        ref = refs.read(checkpoint_id)
        if ref is None:
            return None
        record = listing.records.get(checkpoint_id)
        if record is None or record.record_oid != ref.oid or hash_bytes(record.encode()) != ref.oid:
            try:
                record = CheckpointRecord.decode(ref.oid, objects.get(ref.oid))
            except (ObjectMissing, CorruptObject) as exc:
                raise StoreDamaged("gc stopped, nothing was removed", exc.with_checkpoints([checkpoint_id])) from None
            record.record_oid = ref.oid
        record.added_ns = int(added.get(checkpoint_id, record.created.timestamp()) * 1e9)
        return record

    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = list(pool.map(verified, sorted(set(added) & set(listing.oids))))
    return newest_first([r for r in found if r is not None])


def _with(exc: RRStoreError, checkpoint_id: str) -> RRStoreError:
    return exc.with_checkpoints([checkpoint_id]) if isinstance(exc, (ObjectMissing, CorruptObject)) else exc


def _mark(objects: ObjectStore, kept: list[CheckpointRecord]) -> set[str]:
    """Every object a kept checkpoint reaches; a tree that cannot be read stops gc (nothing removed)."""
    objects.list_loose()
    reach = Reach()
    for record in kept:
        reach.objects.add(record.record_oid)
        try:
            for _ in reachable(objects, record.state_hash, reach):
                pass
        except (ObjectMissing, CorruptObject) as exc:
            raise StoreDamaged("gc stopped, nothing was removed", exc.with_checkpoints([record.checkpoint_id])) \
                from None
    return reach.objects


def _plan(remote: Backend, there: Holdings, live: set[str], before: float) -> _Plan:
    """Dead packs (none of the objects their own ``.idx`` lists is live), dead loose objects, both
    older than ``before`` (server time), and packs that hold both kinds. A ``.pack`` without its
    ``.idx`` (a killed gc's or push's leftover) is dead unless a live object is nowhere else."""
    times: dict[str, tuple[int, float]] = {}
    for prefix in (PACKS, "objects/"):
        for key, size, modified in _sized(remote, prefix):
            times[key] = (size, modified)
    plan = _Plan()
    packs = {key[len(PACKS):].rsplit(".", 1)[0] for key in times
             if key.startswith(PACKS) and key.endswith((".pack", ".idx"))}
    found: set[str] = set()
    for pack in sorted(packs):
        idx, data = f"{PACKS}{pack}.idx", f"{PACKS}{pack}.pack"
        old = all(times[k][1] <= before for k in (idx, data) if k in times)
        if idx in times and data in times:
            plan.present.add(pack)
        count = 0
        if idx in times:
            try:
                entries = decode_index(pack, there.listed.read(idx))
            except (KeyError, CorruptObject):
                continue  # unknown content: never deleted (check reports it)
            alive = live.intersection(entries)
            found |= alive
            if alive:
                plan.mixed += len(alive) < len(entries)
                continue
            count = len(entries)
        if old:
            plan.packs.append(pack)
            plan.objects += count
            plan.size += sum(times[k][0] for k in (idx, data) if k in times)
    for key, (size, modified) in times.items():
        oid = oid_of_key(key) if key.startswith("objects/") else None
        if oid is not None and oid in live:
            found.add(oid)
        elif oid is not None and modified <= before:
            plan.loose.append(key)
            plan.objects += 1
            plan.size += size
    if live - found:  # a live object in no indexed pack nor loose: an index-less pack may hold it
        plan.packs = [p for p in plan.packs if f"{PACKS}{p}.idx" in times]
    return plan


def _sized(remote: Backend, prefix: str) -> Iterator[tuple[str, int, float]]:
    listing = getattr(remote, "list_stats", None)
    if listing is not None:
        yield from listing(prefix)
        return
    for key in list(remote.list(prefix)):
        with contextlib.suppress(KeyError):
            yield (key, *remote.stat(key))


def _sweep(remote: Backend, lease: Lease, removed: list[CheckpointRecord], there: Holdings, plan: _Plan,
           workers: int) -> None:
    """Steps 4-6 of the module docstring, in that order (each step's deletes in parallel), each
    delete only while the lease is intact."""
    refs = Refs(remote)
    for record in removed:
        if refs.get(record.checkpoint_id) not in (None, record.record_oid):
            raise RRStoreError(f"gc stopped: checkpoint {record.checkpoint_id} changed on {remote.location} "
                               "while gc ran; run gc again")
    _delete_all(remote, lease, [f"{REFS}{r.checkpoint_id}" for r in removed], workers)
    dead = set(plan.packs)
    stale = [name for name, members in there.merged.items() if members & dead]
    if stale:
        survivors = {p for name in stale for p in there.merged[name]} & plan.present - dead
        members = {p: there.reader.members[p] for p in survivors if p in there.reader.members}
        _guard(lease)
        fresh = ""
        if members:
            fresh, data = encode_midx(members)
            remote.write(midx_key(fresh), data, durable=True)
        _delete_all(remote, lease, [midx_key(name) for name in stale if name != fresh], workers)
    _delete_all(remote, lease, [f"{PACKS}{p}.idx" for p in plan.packs], workers)  # an index before its pack
    _delete_all(remote, lease, [f"{PACKS}{p}.pack" for p in plan.packs] + plan.loose, workers)


def _delete_all(remote: Backend, lease: Lease, keys: list[str], workers: int) -> None:
    """Delete ``keys`` (one gone already is fine) on a thread pool, each after checking the lease;
    all of them are gone when this returns, or it raises."""
    def delete(key: str) -> None:
        _guard(lease)
        with contextlib.suppress(KeyError):
            remote.delete(key)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(delete, keys):
            pass


def _guard(lease: Lease) -> None:
    if not lease.intact():
        raise RRStoreError(f"gc stopped: its lease on {lease.remote.location} lapsed (was the process paused?); "
                           "what it removed so far was unreachable; run gc again")

