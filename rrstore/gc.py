"""Retention and garbage collection (verb over checkpoints and the object store).

``gc`` first decides which checkpoints the retention policy keeps (young
ones, the newest N of each lane of each project, kept lanes, pinned ones),
whichever project of a shared store runs it, deletes the refs
of the others, marks every object a kept checkpoint reaches, and sweeps the
rest that is older than a grace period. It runs under the store's exclusive
object lock, which checkpoints and restores hold shared while they work, so
an object an in-flight checkpoint reuses is never swept; the grace period
also spares objects written by anything that does not take the lock.
The clock is a parameter, so tests need no sleeping.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .checkpoint import CheckpointManager
from .errors import CorruptObject, ObjectMissing, RRStoreError, StoreDamaged, UsageError
from .lanes import check_lane
from .record import CheckpointRecord, added_ns_of, newest_first
from .store.objects import hash_bytes
from .store.store import sweep_tmp
from .tree import Reach, reachable

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """'7d', '36h', '90m', '0s' (also 'w' for weeks)."""
    match = _DURATION.match(text)
    try:
        if match:
            return timedelta(seconds=float(match.group(1)) * _UNIT[match.group(2)])
    except (OverflowError, ValueError):
        pass
    raise UsageError(f"invalid duration {text!r}: use a number and a unit s, m, h, d or w (e.g. 7d, 36h, 0s)")


@dataclass
class Retention:
    """What gc keeps. Anything matching one rule is kept."""

    older_than: timedelta = timedelta(days=7)
    keep_last: int = 0
    keep_lanes: tuple[str, ...] = ()
    grace: timedelta = timedelta(minutes=15)

    def __post_init__(self) -> None:
        for lane in self.keep_lanes:
            check_lane(lane)
        if self.keep_last < 0:
            raise UsageError("--keep-last must be 0 or more")


@dataclass
class GCResult:
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    objects_removed: int = 0
    bytes_freed: int = 0
    packs_rewritten: int = 0
    tmp_removed: int = 0
    dry_run: bool = False
    success: bool = True

    @property
    def changed(self) -> bool:
        return bool(self.removed or self.objects_removed or self.tmp_removed)

    @property
    def message(self) -> str:
        removed, kept, freed = ("would remove", "would keep", "would free") if self.dry_run else \
            ("removed", "kept", "freed")
        return (f"gc {removed} {len(self.removed)} checkpoint(s) and {self.objects_removed} object(s), "
                f"{kept} {len(self.kept)} checkpoint(s); {freed} {self.bytes_freed} bytes")

    def to_json(self) -> dict[str, object]:
        return {"removed": self.removed, "kept": self.kept, "records_removed": len(self.removed),
                "objects_removed": self.objects_removed, "bytes_freed": self.bytes_freed,
                "packs_rewritten": self.packs_rewritten, "tmp_removed": self.tmp_removed,
                "dry_run": self.dry_run}


def select(records: list[CheckpointRecord], pinned: set[str], policy: Retention,
           now: datetime) -> tuple[list[CheckpointRecord], list[CheckpointRecord]]:
    """Split ``records`` (newest first) into (kept, removed).

    "The newest N" counts per project and lane: one project's gc of a shared store keeps
    another's newest checkpoints. A record older than project identities counts by its root.
    A workflow run in progress (its newest step failed or never finished, within ``older_than``:
    a re-run may still resume it, here or on another runner) keeps every one of its checkpoints,
    however old the first steps are.
    """
    kept, removed = [], []
    per_lane: dict[tuple[str, str], int] = {}
    newest_of_run: dict[str, CheckpointRecord] = {}
    for record in records:
        if record.kind == "step" and record.run.get("id"):
            newest_of_run.setdefault(record.run["id"], record)
    in_progress = {run for run, newest in newest_of_run.items()
                   if not newest.success and now - min(newest.created, newest.added) < policy.older_than}
    for record in records:
        lane = (record.project or f"path:{record.root}", record.lane)
        rank = per_lane.get(lane, 0)
        if record.kind == "step":
            per_lane[lane] = rank + 1
        # a future-dated record ages from when this store got it
        young = now - min(record.created, record.added) < policy.older_than
        if (young or record.checkpoint_id in pinned or record.lane in policy.keep_lanes
                or (record.kind == "step" and rank < policy.keep_last) or record.run.get("id") in in_progress):
            kept.append(record)
        else:
            removed.append(record)
    return kept, removed


def gc(manager: CheckpointManager, policy: Retention, *, now: datetime | None = None,
       dry_run: bool = False) -> GCResult:
    """Apply ``policy`` and sweep unreachable objects; see the module docstring."""
    store = manager.store
    now = (now or datetime.now()).astimezone()  # a naive time is local time
    before = now.timestamp() - policy.grace.total_seconds()
    result = GCResult(dry_run=dry_run)
    with store.collecting():
        records = manager.list_checkpoints(all_projects=True)
        if manager.damaged:  # what it reaches is unknown, so nothing may be swept
            raise manager.unreadable("gc stopped, nothing was removed")
        records = _verified(manager, records)
        for pack, why in store.objects.blind_packs().items():  # what that pack holds is unknown
            raise StoreDamaged("gc stopped, nothing was removed", CorruptObject(
                f"pack index {pack}", reason=f"{why}; run rrstore check --repair"))
        kept, removed = select(records, set(store.pins), policy, now)
        result.kept = [r.checkpoint_id for r in kept]
        result.removed = [r.checkpoint_id for r in removed]
        if not dry_run:
            _check_unchanged(manager, removed)
        live = _mark(manager, kept)
        if not dry_run:
            for record in removed:
                with contextlib.suppress(KeyError):  # removed meanwhile by hand: gone either way
                    store.refs.delete(record.checkpoint_id)
        sweep = store.objects.sweep(live, before, dry_run=dry_run)
        result.objects_removed = sweep.objects_removed
        result.bytes_freed = sweep.bytes_freed
        result.packs_rewritten = sweep.packs_rewritten
        result.tmp_removed = len(sweep_tmp(store.path, before, dry_run=dry_run).removed)
    return result


def _verified(manager: CheckpointManager, records: list[CheckpointRecord]) -> list[CheckpointRecord]:
    """gc deletes by what the records say, and they come from the record index (a cache): every ref
    is read again (what it names decides, not the index's copy of it), and a record is kept from the
    index only when it is the one its ref names, under that id, and hashes to its oid; any other is
    read again from the store (a record of another rrstore version, a crafted index)."""
    listed = {r.checkpoint_id: r for r in records}
    out = []
    for checkpoint_id in manager.store.refs:
        ref = manager.store.refs.read(checkpoint_id)
        if ref is None:  # removed meanwhile: nothing to keep or remove
            continue
        record = listed.get(checkpoint_id)
        if record is None or record.record_oid != ref.oid or hash_bytes(record.encode()) != ref.oid:
            try:
                fresh = CheckpointRecord.decode(ref.oid, manager.store.objects.get(ref.oid))
            except (ObjectMissing, CorruptObject) as exc:
                raise StoreDamaged("gc stopped, nothing was removed",
                                   exc.with_checkpoints([checkpoint_id])) from None
            fresh.record_oid, fresh.added_ns = ref.oid, added_ns_of(ref, fresh.created)
            record = fresh
        out.append(record)
    return newest_first(out)


def _check_unchanged(manager: CheckpointManager, removed: list[CheckpointRecord]) -> None:
    """The refs gc deletes, read again (they were chosen from the record index): each must still
    name the record chosen, else gc stops before anything is removed."""
    for record in removed:
        now = manager.store.refs.get(record.checkpoint_id)
        if now is not None and now != record.record_oid:
            raise RRStoreError(f"gc stopped, nothing was removed: checkpoint {record.checkpoint_id} changed "
                               "while gc ran; run gc again")


def _mark(manager: CheckpointManager, kept: list[CheckpointRecord]) -> set[str]:
    """Every object a kept checkpoint reaches; a damaged one stops gc before anything is removed."""
    reach = Reach()
    for record in kept:
        reach.objects.add(record.record_oid)
        try:
            for _ in reachable(manager.store.objects, record.state_hash, reach):
                pass
        except (ObjectMissing, CorruptObject) as exc:
            raise exc.with_checkpoints([record.checkpoint_id]) from None
    return reach.objects


def forget(manager: CheckpointManager, checkpoint_ids: Sequence[str], *, force: bool = False) -> tuple[str, ...]:
    """Remove the refs of ``checkpoint_ids`` ('latest' allowed); their objects go at the next gc, after its grace.

    Works on a checkpoint that cannot be read (an emptied ref, a lost record), which otherwise
    blocks gc and push. A pinned one is refused unless ``force`` (then its pin goes too). Every id
    is checked before anything is removed: an unknown one (exit 12) or a pinned one (exit 2)
    changes nothing. Returns the ids removed.
    """
    store = manager.store
    with store.writing():  # not while a gc decides what to keep
        ids = list(dict.fromkeys(manager.ref_id(i) for i in checkpoint_ids))
        pins = set(store.pins)
        for checkpoint_id in ids:
            if checkpoint_id in pins and not force:
                raise UsageError(f"checkpoint {checkpoint_id} is pinned: nothing was deleted "
                                 f"(rrstore unpin {checkpoint_id} first, or delete --force)")
        for checkpoint_id in ids:
            store.refs.delete(checkpoint_id)
            if checkpoint_id in pins:
                store.pins.remove(checkpoint_id)
    return tuple(ids)
