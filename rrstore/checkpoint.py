"""Checkpoints: the manager that takes, finds and lists them (a verb, above the working tree).

A record is a canonical-JSON object in the object store; ``refs/checkpoints/ID``
names it. Creating a checkpoint writes, in this order: file blobs, trees,
the record, then the ref (after a write barrier), so a ref never reaches a
missing object, and a process killed at any instant leaves earlier
checkpoints intact. Before the record, the writer proves it: every object
the new trees reach is looked up in the written packs' indexes or as a
loose file, and a checkpoint that cannot show one records nothing.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from .errors import (
    UNREADABLE_WAY_OUT,
    CheckpointNotFound,
    CorruptObject,
    NoProjectCheckpoint,
    ObjectMissing,
    ObjectsNotWritten,
    RRStoreError,
    StoreDamaged,
    UsageError,
)
from .lanes import check_lane
from .record import (
    KINDS,
    CheckpointRecord,
    added_ns_of,
    id_prefix,
    new_suffix,
    newest_first,
    owned_by,
    seed_prefix,
)
from .recordindex import RecordReader, local_reader
from .store.objects import hash_bytes
from .store.refs import PREFIX as REFS
from .store.refs import Refs, valid_id
from .store.store import Store
from .tree import DIR, FILE, SYMLINK, Entry, link_climb, reachable
from .worktree.gitrepo import earlier_identities, known_commits, project_identity
from .worktree.scan import scan_scope
from .worktree.snapshot import TORN_REASON, Snapshot, snapshot
from .worktree.statcache import StatCache, stat_cache_of
from .worktree.workers import Progress


class ProjectView:
    """Which checkpoints are the project's at ``root``, in a store several projects may share.

    A record belongs when its ``project`` is this project's identity (``gitrepo.project_identity``,
    asked of git once, when first needed), or one it had before (``gitrepo.earlier_identities``:
    its path before its first commit, its first commit before it had a remote). A record of another
    git identity belongs too when it was taken at this very root and its ``git_commit`` is a commit
    this repository has: the same repository, whose remote URL changed since (a fork, a move). A
    different repository checked out at the same path has none of its commits and stays foreign.
    A record older than project identities (``project`` empty) belongs to the root it was taken in;
    one naming neither project nor root (made by hand, never by rrstore) to whoever holds it.
    """

    def __init__(self, root: Path, identify: Callable[[], str] | None = None) -> None:
        self.root = root
        self._identify = identify or (lambda: project_identity(root))
        self._identity: str | None = None
        self._earlier: set[str] | None = None
        self._commits: dict[str, bool] = {}  # commit id -> whether this repository has it

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = self._identify()
        return self._identity

    def owns(self, record: CheckpointRecord) -> bool:
        if not record.project:
            return record.root in ("", str(self.root))
        if record.project == self.identity:
            return True
        if record.project.startswith(("path:", "git:root-")):
            if self._earlier is None:
                self._earlier = earlier_identities(self.root, self.identity)
            if record.project in self._earlier:
                return True
        if not self._may_be_renamed(record):
            return False
        self._learn([record])
        return self._commits[record.git_commit or ""]

    def mine(self, records: list[CheckpointRecord]) -> list[CheckpointRecord]:
        """Those of ``records`` this project owns; their commits asked of git in one call."""
        self._learn(records)
        return [r for r in records if self.owns(r)]

    def _may_be_renamed(self, record: CheckpointRecord) -> bool:
        """Another git identity, taken at this root, at a commit: maybe this repository under an old URL."""
        return (record.project.startswith("git:") and record.root == str(self.root)
                and bool(record.git_commit) and record.project != self.identity)

    def _learn(self, records: list[CheckpointRecord]) -> None:
        asked = {r.git_commit for r in records if r.git_commit and r.git_commit not in self._commits
                 and self._may_be_renamed(r)}
        if asked:
            found = known_commits(self.root, asked)
            self._commits.update((sha, sha in found) for sha in asked)


def others_note(project: str, others: int) -> str:
    """What an empty view says when the store holds ``others`` checkpoints of other projects."""
    return f"no checkpoints of this project ({project}); {others} of other projects: add --all-projects"


def latest_of(records: list[CheckpointRecord], view: ProjectView, *,
              all_projects: bool = False) -> CheckpointRecord:
    """What 'latest' names among ``records`` (newest first): the project's newest step checkpoint.

    Raises NoProjectCheckpoint when only other projects' are there, CheckpointNotFound when none is.
    """
    mine = records if all_projects else view.mine(records)
    newest = next((r for r in mine if r.kind == "step"), None)
    if newest is None and len(mine) < len(records):
        raise NoProjectCheckpoint("latest", view.identity, len(records) - len(mine))
    if newest is None:
        raise CheckpointNotFound("latest")
    return newest


def suggest_ids(wrong: str, refs: Refs, limit: int = 3) -> list[str]:
    """Up to ``limit`` ids for 'did you mean': those starting with ``wrong``, then similar ones, each
    group newest first in the order 'latest' follows (when the store got them). Reads each candidate's ref."""
    import difflib

    ids = list(refs)
    starts = [i for i in ids if i.startswith(wrong)]
    similar = [i for i in difflib.get_close_matches(wrong, ids, n=limit, cutoff=0.6) if i not in starts]

    def added(checkpoint_id: str) -> tuple[int, str]:
        try:
            ref = refs.read(checkpoint_id)
        except RRStoreError:
            return (0, checkpoint_id)
        stamp = ref.added_ns if ref is not None else None
        return (stamp if stamp is not None else refs.mtime_ns(checkpoint_id) or 0, checkpoint_id)

    return (sorted(starts, key=added, reverse=True) + sorted(similar, key=added, reverse=True))[:limit]


def snapshot_oids(snap: Snapshot) -> set[str]:
    """Every tree and content oid a snapshot's root reaches, from the snapshot in memory (no tree is read)."""
    oids = {snap.root_oid}
    for entry in snap.entries.values():
        if entry.kind == FILE and entry.chunks:
            oids.update(entry.chunks)
        elif entry.kind == FILE or entry.kind == DIR:
            oids.add(entry.oid)
    return oids


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@dataclass
class NewCheckpoint:
    """Options of one checkpoint; bundled so the call stays short."""

    lane: str
    step_number: int
    step_name: str
    success: bool = True
    error_message: str | None = None
    kind: str = "step"
    # Abort (TornRead) on a file that never settles instead of leaving it out.
    strict: bool = False
    workflow: str | None = None  # the record's ``workflow`` and ``command`` (a step that ``run_step`` runs)
    command: str | None = None
    run: dict[str, str] = field(default_factory=dict)  # the record's ``run`` (a workflow's step)


def check_spec(spec: NewCheckpoint) -> None:
    """Refuse a bad lane, step number or kind before anything is scanned or written."""
    check_lane(spec.lane)
    if spec.step_number < 0:
        raise UsageError(f"step number must be 0 or more, not {spec.step_number}")
    if spec.kind not in KINDS:
        raise UsageError(f"unknown checkpoint kind {spec.kind!r}")


def left_out_warning(left_out: dict[str, str]) -> str | None:
    """The one line a checkpoint prints about what it left out on purpose (None if nothing)."""
    if not left_out:
        return None
    shown = list(left_out.items())[:5]
    named = ", ".join(f"{path} ({why})" for path, why in shown)
    more = f" and {len(left_out) - 5} more" if len(left_out) > 5 else ""
    hints = []
    if any(why != TORN_REASON for why in left_out.values()):
        hints.append("include a directory with scope_include = [...] in rrstore.toml")
    if TORN_REASON in left_out.values():
        hints.append("--strict aborts instead")
    return f"rrstore: warning: left out {named}{more}; {'; '.join(hints)}"


@dataclass
class CheckpointResult:
    checkpoint_id: str
    record: CheckpointRecord
    success: bool = True
    skipped: list[str] = field(default_factory=list)
    # Symlinks leading out of the tree -> target (``links_leading_out``): push and export refuse them.
    links_out: dict[str, str] = field(default_factory=dict)

    @property
    def message(self) -> str:
        m = self.record.metrics
        return (f"checkpoint {self.checkpoint_id}: {m['files_scanned']} files, "
                f"{m['bytes_new']} new bytes stored ({m['compressed_bytes_new']} compressed), "
                f"{m['wall_time_s']:.2f}s")


def links_leading_out(entries: dict[str, Entry]) -> dict[str, str]:
    """The symlinks of a flattened tree that lead out of it (absolute, or climbing above its root) -> target.

    The rule ``tree.TreeCheck`` applies to what leaves the store: push, pull and export refuse a
    checkpoint holding one, restore writes it back as it was.
    """
    out = {}
    for path, entry in entries.items():
        if entry.kind == SYMLINK:
            climb = link_climb(entry.target)
            if climb is None or climb > path.count("/"):
                out[path] = entry.target
    return out


def links_out_warning(links: dict[str, str]) -> str | None:
    """The one line a checkpoint prints about the symlinks leading out of its tree (None if none)."""
    if not links:
        return None
    shown = list(links.items())[:3]
    more = f" and {len(links) - 3} more" if len(links) > 3 else ""
    if len(links) == 1:
        [(path, target)] = shown
        return (f"rrstore: warning: {path} is a symlink leading out of the tree ({target}): "
                "push and export will refuse checkpoints that hold it")
    named = ", ".join(f"{path} ({target})" for path, target in shown)
    return (f"rrstore: warning: {named}{more} are symlinks leading out of the tree: "
            "push and export will refuse checkpoints that hold them")


class CheckpointManager:
    """Creates, finds and lists the checkpoints of one working tree in one store.

    A store may be shared by several projects (``RRSTORE_DIR``, pulled checkpoints): 'latest',
    the lists and 'newest' see only this project's checkpoints (``ProjectView``) unless asked for
    ``all_projects``; an explicit id finds any checkpoint.
    """

    def __init__(self, root: Path, store: Store, view: ProjectView | None = None) -> None:
        self.root = root
        self.store = store
        self.damaged: dict[str, RRStoreError] = {}
        self.view = view or ProjectView(root)
        self._stat_cache: StatCache | None = None
        self._reader: RecordReader | None = None

    def stat_cache(self) -> StatCache:
        """The work tree's stat cache, loaded once per manager (a restore's scan and its
        ``remember_written`` share it; each save writes the file)."""
        if self._stat_cache is None:
            self._stat_cache = stat_cache_of(self.store.path, self.root)
        return self._stat_cache

    @property
    def project(self) -> str:
        """This project's identity (``gitrepo.project_identity``), which new records carry."""
        return self.view.identity

    def owns(self, record: CheckpointRecord) -> bool:
        """Whether ``record`` is one of this project's checkpoints."""
        return self.view.owns(record)

    # reading ---------------------------------------------------------------

    def _load(self, checkpoint_id: str) -> CheckpointRecord | None:
        refs = self.store.refs
        ref = refs.read(checkpoint_id)
        if ref is None:
            return None
        try:
            record = owned_by(checkpoint_id, CheckpointRecord.decode(ref.oid, self.store.objects.get(ref.oid)))
        except (ObjectMissing, CorruptObject) as exc:
            raise exc.with_checkpoints([checkpoint_id]) from None
        mtime = refs.mtime_ns(checkpoint_id) if ref.added_ns is None else None
        record.added_ns = added_ns_of(ref, record.created, mtime)
        return record

    def get(self, checkpoint_id: str, *, all_projects: bool = False) -> CheckpointRecord:
        """The record of ``checkpoint_id``; 'latest' names this project's (or with ``all_projects``
        the store's) newest step checkpoint.

        Undo points taken by restore are not 'latest': restoring 'latest' twice
        must not bring back the state the first restore replaced.
        """
        if checkpoint_id == "latest":
            records = self.list_checkpoints(all_projects=True)
            if self.damaged:  # the damaged one may be the newest: refuse to guess
                raise self.unreadable("cannot tell which checkpoint is 'latest'")
            chosen = latest_of(records, self.view, all_projects=all_projects)
            # chosen through the record index; what is returned is read again by its oid, verified
            try:
                again = CheckpointRecord.decode(chosen.record_oid, self.store.objects.get(chosen.record_oid))
            except (ObjectMissing, CorruptObject) as exc:
                raise exc.with_checkpoints([chosen.checkpoint_id]) from None
            again.added_ns = chosen.added_ns
            return again
        record = self._load(checkpoint_id) if valid_id(checkpoint_id) else None
        if record is None:
            raise CheckpointNotFound(checkpoint_id, self.suggest(checkpoint_id))
        return record

    def ref_id(self, checkpoint_id: str) -> str:
        """The id of an existing ref, readable or not ('latest' resolved): what delete and show take, so
        that a damaged checkpoint can be named; CheckpointNotFound when there is no such ref."""
        if checkpoint_id == "latest":
            return self.get(checkpoint_id).checkpoint_id
        if not valid_id(checkpoint_id) or not self.store.backend.exists(REFS + checkpoint_id):
            raise CheckpointNotFound(checkpoint_id, self.suggest(checkpoint_id))
        return checkpoint_id

    def suggest(self, wrong: str) -> list[str]:
        return suggest_ids(wrong, self.store.refs)

    def list_checkpoints(self, lane: str | None = None, *, all_projects: bool = False) -> list[CheckpointRecord]:
        """This project's readable records (every project's with ``all_projects``), newest (last
        added to this store) first (the seed's ``list_checkpoints()``).

        A damaged record does not hide the others: its id and error are kept in
        ``self.damaged`` for the caller to report (whose it is cannot be read).
        Served from the record index: for listing and choosing; what writes from a record
        reads it again (``get``, ``_load``).
        """
        listing = self.records_reader.listing()
        self.damaged = listing.damaged
        records = [r for r in listing.records.values() if lane is None or r.lane == lane]
        return newest_first(records if all_projects else self.view.mine(records))

    @property
    def records_reader(self) -> RecordReader:
        """Every ref and record of the store, through its record index (``recordindex``): one listing
        of the refs and one file, plus the refs and records that changed since the index was written."""
        if self._reader is None:
            self._reader = local_reader(self.store.backend, self.store.objects)
        return self._reader

    def newest(self, records: list[CheckpointRecord] | None = None, *,
               all_projects: bool = False) -> CheckpointRecord | None:
        """The newest checkpoint taken for a step (not a restore's undo point): of ``records``, else
        this project's (every project's with ``all_projects``)."""
        for record in self.list_checkpoints(all_projects=all_projects) if records is None else records:
            if record.kind == "step":
                return record
        return None

    def checkpoints_reaching(self, oid: str) -> list[str]:
        """Ids whose record, trees or files include ``oid`` (for error messages)."""
        hits = []
        for checkpoint_id in self.store.refs:
            ref = self.store.refs.get(checkpoint_id)
            if ref == oid:
                hits.append(checkpoint_id)
                continue
            try:
                record = self._load(checkpoint_id)
                if record is not None and oid in set(reachable(self.store.objects, record.state_hash)):
                    hits.append(checkpoint_id)
            except RRStoreError:
                hits.append(checkpoint_id)
        return hits

    def unreadable(self, lead: str) -> StoreDamaged:
        """The error of a verb that must see every checkpoint when ``list_checkpoints`` left some out
        (``self.damaged``): the first one's damage and the way out."""
        cause = next(iter(self.damaged.values()))
        return StoreDamaged(lead, RRStoreError(f"{cause}; {UNREADABLE_WAY_OUT}"))

    @contextmanager
    def explain_damage(self) -> Iterator[None]:
        """Name the checkpoints a missing or corrupt object affects."""
        try:
            yield
        except (ObjectMissing, CorruptObject) as exc:
            if exc.checkpoints:
                raise
            raise exc.with_checkpoints(self.checkpoints_reaching(exc.oid)) from None

    # writing ---------------------------------------------------------------

    def create(self, spec: NewCheckpoint, progress: Progress | None = None,
               extra: list[str] | None = None) -> tuple[CheckpointRecord, Snapshot]:
        """Snapshot the working tree and record it under a new, unique id (and return both).

        ``extra`` paths are held too when they exist, even if ignored (see ``snapshot``).
        The scan trusts the stat cache's word that its hits' objects are stored while the store's
        token is unchanged (``worktree.snapshot``); if the proof finds one gone all the same (deleted
        behind rrstore's back), the tree is scanned again checking every object, and stored.
        """
        check_spec(spec)
        started = (time.perf_counter(), time.process_time())
        snap = self.snapshot(store=True, progress=progress, extra=extra, strict=spec.strict, trust=True)
        try:
            return self.record_snapshot(spec, snap, started), snap
        except ObjectsNotWritten:
            if not snap.trusted:
                raise
        snap = self.snapshot(store=True, progress=progress, extra=extra, strict=spec.strict)
        return self.record_snapshot(spec, snap, started), snap

    def record_snapshot(self, spec: NewCheckpoint, snap: Snapshot,
                        started: tuple[float, float] | None = None) -> CheckpointRecord:
        """Record a stored snapshot (``snapshot(store=True)``) under a new, unique id.

        Before the record and its ref are written, every object the snapshot's
        trees reach must be in a written pack or loose (``ObjectStore.missing``):
        a checkpoint that cannot show one raises ObjectsNotWritten and records nothing.
        ``started``: the wall and CPU clocks when the snapshot began (its metrics).
        """
        check_spec(spec)
        wall0, cpu0 = started or (time.perf_counter(), time.process_time())
        missing = self.store.objects.missing(snapshot_oids(snap))
        if missing:
            raise ObjectsNotWritten(missing)
        git = snap.git
        now = datetime.now().astimezone()
        stats = snap.stats
        metrics: dict[str, float | int] = {
            "files_scanned": stats.files,
            "symlinks": stats.symlinks,
            "dirs": stats.dirs,
            "bytes_scanned": stats.bytes_scanned,
            "objects_new": stats.objects_new,
            "bytes_new": stats.bytes_new,
            "compressed_bytes_new": stats.stored_bytes_new,
        }
        record = CheckpointRecord(
            checkpoint_id="", lane=spec.lane, step_number=spec.step_number, step_name=spec.step_name,
            timestamp=now.isoformat(timespec="microseconds"), state_hash=snap.root_oid,
            git_commit=git.commit, git_branch=git.branch, git_dirty=git.dirty,
            git_operation=git.operation, git_merge_head=git.merge_head,
            success=spec.success, error_message=spec.error_message, metrics=metrics, kind=spec.kind,
            root=str(self.root), hostname=os.uname().nodename, left_out=snap.left_out, project=self.project,
            workflow=spec.workflow, command=spec.command, run=dict(spec.run),
        )
        base = id_prefix(spec.lane, spec.step_number, now)
        for _ in range(100):  # a taken name (one in 2**30 per id of that second) draws another tail
            record.checkpoint_id = f"{base}-{new_suffix()}"
            metrics["wall_time_s"] = round(time.perf_counter() - wall0, 6)
            metrics["cpu_time_s"] = round(time.process_time() - cpu0, 6)
            metrics["peak_rss_kib"] = _rss_kib()
            oid = self._put_record(record)
            added = time.time_ns()
            if self.store.refs.create(record.checkpoint_id, oid, added):
                record.record_oid, record.added_ns = oid, added
                return record
        raise RRStoreError(f"could not find a free checkpoint id for {base}")

    def refill(self, wanted: set[str]) -> set[str]:
        """Those of the missing ``wanted`` objects found in the working tree, stored again.

        Storing a scan of the tree puts every object the store lacks, so a
        tree or content dropped as corrupt comes back if the tree holds it (content-addressed: any bytes that hash
        to the oid are that object). Called by ``check --repair`` under its
        exclusive object lock; what else the scan stores is reached by no ref
        and goes at the next gc.
        """
        self.store.objects.reload()  # the repair has just rewritten packs
        self.snapshot(store=True, git_state=False, save_cache=False)  # a cache hit on a dropped object is a miss
        return wanted - set(self.store.objects.missing(wanted))

    def rename(self, checkpoint_id: str) -> str:
        """Give checkpoint ``checkpoint_id`` a new id of the same seed prefix; return it. The way out
        of an id that names another record on the other side of a push or pull (``--rename-conflicts``).

        The record is stored again with the new id (nothing else changes), the new ref created
        with the old one's add time (its place in 'latest' and every order) and its pin, and only
        then are the old ref and pin removed: a crash in between leaves both names, never neither,
        and renaming again gives the same new id (its tail comes from the old record's oid).
        """
        ref = self.store.refs.read(checkpoint_id) if valid_id(checkpoint_id) else None
        record = self._load(checkpoint_id) if ref is not None else None
        if ref is None or record is None:
            raise CheckpointNotFound(checkpoint_id, self.suggest(checkpoint_id))
        base = seed_prefix(checkpoint_id) or checkpoint_id[:192]
        for attempt in range(100):
            renamed = replace(record, checkpoint_id=f"{base}-{new_suffix(ref.oid if attempt == 0 else None)}")
            oid = self._put_record(renamed)
            new_id = renamed.checkpoint_id
            if self.store.refs.create(new_id, oid, record.added_ns) or self.store.refs.get(new_id) == oid:
                break
        else:
            raise RRStoreError(f"could not find a free checkpoint id for {base}")
        pins = self.store.pins
        pinned = checkpoint_id in set(pins)
        if pinned:
            pins.add(new_id)
        self.store.refs.delete(checkpoint_id)
        if pinned:
            pins.remove(checkpoint_id)
        return new_id

    def update(self, record: CheckpointRecord) -> CheckpointRecord:
        """Replace the record behind an existing id (e.g. to mark a step failed)."""
        oid = self._put_record(record)
        self.store.refs.update(record.checkpoint_id, oid)
        record.record_oid = oid
        return record

    def _put_record(self, record: CheckpointRecord) -> str:
        """Store ``record`` as a loose object and make it and everything before it durable (the
        write barrier), so the ref written next never names a missing object. Returns its oid."""
        data = record.encode()
        oid = hash_bytes(data)
        self.store.objects.put(data, oid, loose=True)
        self.store.barrier()
        return oid

    def snapshot(self, *, store: bool, progress: Progress | None = None,
                 extra: list[str] | None = None, strict: bool = False, git_state: bool | None = None,
                 save_cache: bool = True, trust: bool = False) -> Snapshot:
        """The working tree as a tree; ``store=False`` only hashes.

        ``extra``: paths to hold when they exist although the scope leaves them
        out (restore's undo checkpoint holds every path the restore overwrites).
        Venvs and cache directories (unless in the ``scope_include`` setting)
        and files that never settle (unless ``strict``) are left out and
        named in ``Snapshot.left_out``. ``git_state`` (default: ``store``):
        ask git for what a record holds. Without ``save_cache`` the caller
        saves the stat cache (``self.stat_cache().save(snap.seen)``). ``trust``: see ``create``.
        """
        settings = self.store.settings
        scope = scan_scope(self.root, [self.store.path], git_state=store if git_state is None else git_state,
                           extra=extra, include=settings.scope_include)
        return snapshot(scope, self.store.objects, store=store, workers=settings.workers,
                        progress=progress, cache=self.stat_cache(), strict=strict, save_cache=save_cache,
                        trust=trust)
