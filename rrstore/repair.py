"""``check --repair`` (verb, beside ``check``): rebuild derived data, replace damaged objects from a source.

Runs under the store's exclusive object lock (like gc), so no checkpoint
or restore works on the store meanwhile. In order: ``config.json`` when it
is missing over surviving objects and refs; each pack index that is damaged
or missing, rebuilt from its (format-2) pack; refs that cannot be read or name
a record that is gone (moved to quarantine); the record index (``index/records``); the stat caches (removed: the
next scan rebuilds them); then, with a source, every damaged or missing
object the check found is fetched, verified by hash and stored again, and
each pack that held a bad copy is rewritten without it (its good objects
copied into a new pack first). A corrupt tree or content object no source
gave back is dropped the same way (its pack rewritten without it, a loose
one moved to quarantine): left in place, every writer would deduplicate
against it and no new checkpoint could ever store that content whole. Once
missing, the next checkpoint of a tree holding that content stores it again,
and ``refill`` (the working tree, from ``RollbackRecoverySystem.check``) is
asked for it at once. A damaged file is never deleted or zero-filled: it is
moved to ``quarantine/<time>/<its key>``. The result is the check that runs
after the repair, listing what was done.
"""

from __future__ import annotations

from collections.abc import Callable

from .archive.safety import Limits, read_archive
from .check import (
    OBJECT_KINDS,
    Checker,
    CheckOptions,
    CheckResult,
    open_for_check,
    quarantine,
    record_index_state,
    stamp,
)
from .errors import CorruptObject, ObjectMissing, RRStoreError
from .lock import locked
from .record import CheckpointRecord
from .recordindex import INDEX_KEY, local_reader
from .store.generation import bump
from .store.objects import LOOSE_MIN, ObjectStore, hash_bytes, loose_oids, object_key
from .store.pack import PREFIX as PACKS
from .store.pack import encode_index, scan_pack
from .store.packindex import midx_key
from .store.refs import PREFIX as REFS
from .store.store import OBJECTS_LOCK, Store, write_config


def repair(store: Store, options: CheckOptions,
           refill: Callable[[set[str]], set[str]] | None = None) -> CheckResult:
    """Check, repair what can be, and check again; see the module docstring.

    ``refill(oids)`` stores again those of the missing ``oids`` it can (e.g. from the working tree)
    and returns them; it runs under this repair's exclusive object lock.
    """
    with locked(store.path, OBJECTS_LOCK, exclusive=True, wait=30.0):
        before = Checker(store, options).run()
        bump(store.backend)  # a repair moves damaged files aside: no stat cache trusts what they held
        work = _Repair(store, stamp())
        work.config(before)
        work.indexes()
        work.merged_indexes()
        wanted = {p.target: p.kind for p in before.problems if p.kind in OBJECT_KINDS}
        fetched = _fetch(options, set(wanted)) if options.source and wanted else {}
        work.scarred.update(p.target[len(PACKS):-len(".pack")] for p in before.problems if p.kind == "pack-damaged")
        if wanted or work.scarred:
            work.replace(wanted, fetched)
        work.unreadable_refs(before, set(fetched))
        work.record_index()
        work.stat_cache()
        lost = {oid for oid, kind in wanted.items()
                if oid not in fetched and oid not in work.indexed_again and not kind.startswith("record")}
        if lost and refill is not None:
            for oid in sorted(refill(lost)):
                work.done.append(f"stored {oid} again from the working tree")
        store.objects.sync()
        store.backend.sync()
        after = Checker(open_for_check(store.path, store.settings), options).run()  # as a new process sees it
    after.repaired = work.done
    after.found_before_repair = len(before.problems)
    return after


class _Repair:
    def __init__(self, store: Store, when: str) -> None:
        self.store = store
        self.when = when
        self.done: list[str] = []
        self.scarred: set[str] = set()   # packs whose rebuilt index had to leave damaged objects out
        self.indexed_again: set[str] = set()  # "corrupt" objects whose pack held them whole: index rebuilt

    def _quarantine(self, key: str, *, copy: bool = False) -> None:
        where = quarantine(self.store.path, key, self.when, copy=copy)
        self.done.append(f"{'copied' if copy else 'moved'} {key} to {where}")

    def config(self, before: CheckResult) -> None:
        kinds = {p.kind for p in before.problems}
        if not kinds & {"config-missing", "config-damaged"}:
            return
        if before.checkpoints == 0 and not before.packs:
            return  # nothing survives that proves this is a store
        if "config-damaged" in kinds:
            self._quarantine("config.json")
        (self.store.path / "tmp").mkdir(exist_ok=True)
        write_config(self.store.path)
        self.done.append("wrote config.json")

    def indexes(self) -> None:
        """Rebuild every damaged or missing index of a format-2 pack from the pack."""
        packs = self.store.objects.pack_reader()
        packs.refresh()
        for pack in sorted(set(packs.damaged) | packs.orphans):
            key = f"{PACKS}{pack}.pack"
            try:
                scan = scan_pack(pack, self.store.backend.read(key))
            except (KeyError, CorruptObject):
                continue  # a format-1 pack: only a source can bring its objects back
            if pack in packs.damaged:
                self._quarantine(f"{PACKS}{pack}.idx")
            self.store.backend.write(f"{PACKS}{pack}.idx", encode_index(scan.entries), durable=True)
            if scan.lost or scan.damaged:
                self.scarred.add(pack)
            self.done.append(f"rebuilt {PACKS}{pack}.idx from its pack ({len(scan.entries)} objects)")
        packs.refresh()

    def merged_indexes(self) -> None:
        """Quarantine damaged merged pack indexes and write one fresh merged index of every pack."""
        packs = self.store.objects.pack_reader()
        packs.refresh()
        damaged = sorted(packs.midx_damaged)
        for name in damaged:
            self._quarantine(midx_key(name))
        fresh = self.store.objects.merge_indexes()
        if fresh is not None and damaged:
            self.done.append(f"rebuilt the merged pack index as {midx_key(fresh)}")

    def unreadable_refs(self, before: CheckResult, fetched: set[str]) -> None:
        """Each ref that cannot be read, or whose record is gone (and no source gave it back): pointed
        again at the record that names its id when the store still holds one (a record names its own
        id, so an emptied or garbled ref loses nothing), else moved to quarantine: the checkpoint is
        lost already, and while its ref is listed 'latest' and gc refuse to guess."""
        broken: list[str] = []
        for problem in before.problems:
            if problem.kind == "ref-unreadable":
                broken.append(problem.target[len(REFS):])
            elif problem.kind in ("record-missing", "record-corrupt") and problem.target not in fetched:
                broken += problem.checkpoints
        found = _records_naming(self.store, set(broken)) if broken else {}
        for checkpoint_id in dict.fromkeys(broken):
            key = f"{REFS}{checkpoint_id}"
            if (self.store.path / key).is_file():
                self._quarantine(key)
            record = found.get(checkpoint_id)
            if record is not None and self.store.refs.create(checkpoint_id, record.record_oid,
                                                             int(record.created.timestamp() * 1e9)):
                self.done.append(f"pointed {key} again at its record {record.record_oid}")

    def record_index(self) -> None:
        """Rebuild a damaged or missing record index from the refs and records (the damaged one quarantined)."""
        state = record_index_state(self.store)
        if state is None or (state == "missing" and next(iter(self.store.refs), None) is None):
            return
        if state.startswith("damaged"):
            self._quarantine(INDEX_KEY)
        listing = local_reader(self.store.backend, self.store.objects).listing()
        if record_index_state(self.store) is None:
            self.done.append(f"rebuilt {INDEX_KEY} ({len(listing.oids)} checkpoint(s))")

    def stat_cache(self) -> None:
        folder = self.store.path / "cache"
        for path in sorted(folder.glob("stat-*")) if folder.is_dir() else []:
            path.unlink()
            self.done.append(f"removed cache/{path.name} (rebuilt by the next scan)")

    def _index_lies(self, pack: str, oid: str) -> bool:
        """Whether ``pack`` holds a good copy of ``oid`` that its index (whole, by its checksum) points
        past; if so the index is rebuilt from the pack, so nothing good is ever dropped as corrupt."""
        key = f"{PACKS}{pack}.pack"
        try:
            scan = scan_pack(pack, self.store.backend.read(key))
        except (KeyError, CorruptObject):
            return False
        if oid not in scan.entries:
            return False
        self._quarantine(f"{PACKS}{pack}.idx")
        self.store.backend.write(f"{PACKS}{pack}.idx", encode_index(scan.entries), durable=True)
        self.done.append(f"rebuilt {PACKS}{pack}.idx from its pack: its entry for {oid} pointed at other bytes")
        if scan.lost or scan.damaged:
            self.scarred.add(pack)
        packs = self.store.objects.pack_reader()
        for name in sorted(m for m, members in packs.midx.items() if pack in members):
            self._quarantine(midx_key(name))  # it holds the same wrong entry
        packs.retake(pack, scan.entries)
        self.store.objects.merge_indexes()
        return True

    def _drop_corrupt(self, wanted: dict[str, str], fetched: dict[str, bytes]) -> set[str]:
        """The packs to rewrite without the corrupt trees and contents no source gave back (a loose one
        is moved to quarantine at once): left in place, writers would deduplicate against them."""
        packs = self.store.objects.pack_reader()
        rewrite: set[str] = set()
        for oid, kind in sorted(wanted.items()):
            if oid in fetched or not kind.endswith("-corrupt") or kind.startswith("record"):
                continue  # a missing object has no bad copy; a record is never deduplicated against
            if self.store.backend.exists(object_key(oid)) and self._loose_was_bad(oid):
                self.indexed_again.add(oid)  # the packed copy, read first from now on, is whole
                continue
            loc = packs.index.get(oid)
            if loc is not None and self._index_lies(loc[0], oid):
                self.indexed_again.add(oid)  # the bytes were good, the index entry was not
                continue
            if loc is not None:
                rewrite.add(loc[0])
                self.done.append(f"dropped the corrupt copy of {oid} "
                                 "(a checkpoint holding its content stores it again)")
        return rewrite

    def _loose_was_bad(self, oid: str) -> bool:
        """Move a corrupt loose copy of ``oid`` to quarantine (reads take it before any packed one);
        whether a whole copy (packed) is read from then on."""
        self._quarantine(object_key(oid))
        self.store.objects.reload()  # forget the loose copy
        try:
            self.store.objects.get(oid)
        except (ObjectMissing, CorruptObject):
            return False
        self.done.append(f"{oid} reads whole from its pack now")
        return True

    def replace(self, wanted: dict[str, str], fetched: dict[str, bytes]) -> None:
        """Store each fetched object again; rewrite each pack that held a bad copy without it.

        Every object of such a pack that still reads back verified is copied
        into the new pack first; one that does not was damaged already and
        survives only in quarantine, with the rest of the old pack. A corrupt
        tree or content object that was not fetched goes the same way (a loose
        one is moved to quarantine), so that writers store it again.
        """
        objects = self.store.objects
        packs = objects.pack_reader()
        writer = objects._pack_writer()
        fresh = len(writer.packs_written)  # before any add: a full queue flushes on its own
        rewrite = set(self.scarred)
        for oid, data in sorted(fetched.items()):
            loc = packs.index.get(oid)
            if loc is not None:
                rewrite.add(loc[0])
            if wanted[oid].startswith("record") or len(data) >= LOOSE_MIN:
                if self.store.backend.exists(object_key(oid)):
                    self._quarantine(object_key(oid))
                objects.put(data, oid, loose=True)
            else:
                writer.add(oid, data)
            self.done.append(f"stored {oid} again from the source")
        rewrite |= self._drop_corrupt(wanted, fetched)
        for pack in sorted(rewrite):
            entries = packs.members.get(pack, {})
            for _, _, oid in sorted((loc[1], loc[3], oid) for oid, loc in entries.items()):
                if oid in fetched:
                    continue
                try:
                    writer.add(oid, objects.get(oid))
                except (ObjectMissing, CorruptObject):
                    continue
        # The damaged files are copied to quarantine before the rewrite lands: a rewrite can reproduce the
        # pack as it was before the damage, hence its very name, and then replaces the damaged file itself.
        damaged = [f"{PACKS}{pack}{ext}" for pack in sorted(rewrite) for ext in (".idx", ".pack")]
        for key in damaged:
            if self.store.backend.exists(key):
                self._quarantine(key, copy=True)
        objects.flush()
        new = set(writer.packs_written[fresh:])
        for pack in sorted(rewrite):
            if pack not in new:  # the same name means the rewrite itself: keep it, as gc does
                for key in (f"{PACKS}{pack}.idx", f"{PACKS}{pack}.pack"):
                    if self.store.backend.exists(key):
                        self.store.backend.delete(key)  # its copy is in quarantine
            self.done.append(f"rewrote pack {pack} without its damaged copies")
        packs.refresh()


RECORD_MAX = 1 << 20  # a loose object larger than this (compressed) is file content, never a record


def _records_naming(store: Store, ids: set[str]) -> dict[str, CheckpointRecord]:
    """The store's loose records that name one of ``ids``, by id; of two for one id (a step's record
    replaced when it finished) the one written last, which is the one its ref named."""
    found: dict[str, tuple[int, CheckpointRecord]] = {}
    for oid in loose_oids(store.backend):
        try:
            st = (store.path / object_key(oid)).stat()
            if st.st_size > RECORD_MAX:
                continue
            record = CheckpointRecord.decode(oid, store.objects.get(oid))
        except (OSError, RRStoreError):
            continue
        if record.checkpoint_id in ids and st.st_mtime_ns >= found.get(record.checkpoint_id, (-1, None))[0]:
            found[record.checkpoint_id] = (st.st_mtime_ns, record)
    return {checkpoint_id: record for checkpoint_id, (_, record) in found.items()}


def _fetch(options: CheckOptions, wanted: set[str]) -> dict[str, bytes]:
    """The objects of ``wanted`` that ``options.source`` (an archive path or s3:// remote) holds, each
    hash-checked."""
    source = options.source or ""
    found: dict[str, bytes] = {}

    def keep(oid: str, data: bytes, *_: object) -> None:
        if oid in wanted and hash_bytes(data) == oid:
            found[oid] = data

    if source.startswith("s3://"):
        from .transfer import open_remote

        remote = ObjectStore(open_remote(source, options.endpoint_url, options.s3_options))
        for oid in sorted(wanted):
            try:
                keep(oid, remote.get(oid))
            except (ObjectMissing, CorruptObject):
                continue
    else:
        sink: Callable[[str, bytes, int], None] = keep
        try:
            read_archive(source, Limits(), sink, None)
        except RRStoreError:
            if not found:
                raise
    return found
