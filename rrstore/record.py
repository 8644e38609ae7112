"""Checkpoint records (layer above trees and refs): what a checkpoint says about itself.

A record is a canonical-JSON object in the object store, named by
``refs/checkpoints/ID``; its field names are the seed's checkpoint data. It
imports no snapshot or verb: whatever reads a record (list, transfer,
archives, recovery) needs only this module.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field, fields
from datetime import datetime

from . import __version__
from .errors import CorruptObject
from .store.objects import canonical_json, is_oid
from .store.refs import Ref

# Checkpoint ids (docs/store-format.md, "Refs and checkpoint ids"): the seed's form
# ``<lane>-step<N>-<YYYYmmdd_HHMMSS>`` (``id_prefix``), then ``-`` and a random tail of
# ``SUFFIX_LENGTH`` lowercase base32 characters (``new_suffix``), so that stores that never
# saw each other (two runners, two copies of one CI cache) never make the same id.
ID_TIME = "%Y%m%d_%H%M%S"
SUFFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
SUFFIX_LENGTH = 6
# An id of rrstore's own making, old or new: the seed's prefix, then nothing (before issue 12),
# a collision counter ``-2``, ``-3`` … (before issue 12) or a random tail.
_SEED_ID = re.compile(r"(.+?-step[0-9]+-[0-9]{8}_[0-9]{6})(?:-[0-9a-z]{1,16})?")
RECORD_FORMAT = "rrstore-checkpoint-1"
KINDS = ("step", "pre-restore")


@dataclass
class CheckpointRecord:
    """What the seed calls checkpoint data; field names are the JSON keys."""

    checkpoint_id: str
    lane: str
    step_number: int
    step_name: str
    timestamp: str
    state_hash: str
    git_commit: str | None = None
    git_branch: str | None = None
    git_dirty: bool | None = None
    success: bool = True
    error_message: str | None = None
    metrics: dict[str, float | int] = field(default_factory=dict)
    kind: str = "step"
    root: str = ""
    hostname: str = ""
    rrstore_version: str = __version__
    # The git operation waiting for the user when the checkpoint was taken (gitrepo.OPERATIONS).
    git_operation: str | None = None
    git_merge_head: str | None = None
    # Whose checkpoint this is across stores and clones (see ``project_identity``); "" in older records.
    project: str = ""
    # Paths the scope left out on purpose, each with why (a venv, a cache directory, a file that
    # never settled): restore leaves them alone.
    left_out: dict[str, str] = field(default_factory=dict)
    # Who ran the step: the lane of the workflow that ran it (None for a one-off ``rrstore run``, a
    # plain checkpoint, and records written before the field) and the command as run (None when no
    # command ran, and in older records). Resume counts only its own workflow's steps.
    workflow: str | None = None
    command: str | None = None
    # The workflow run the step belongs to (``recovery.runs``): ``id`` groups a run's steps across
    # runners and attempts, ``ci_run`` and ``attempt`` name the CI job that ran this one ("" outside
    # CI). Empty for a checkpoint outside a workflow and in records written before the field.
    run: dict[str, str] = field(default_factory=dict)
    record_oid: str = field(default="", compare=False)
    # When this store got the checkpoint (its ref's add time, in ns): not part
    # of the record, so it never changes the record's oid.
    added_ns: int = field(default=0, compare=False)

    @property
    def status(self) -> str:
        return "success" if self.success else "failed"

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.timestamp)

    @property
    def added(self) -> datetime:
        """When this store got the checkpoint (local time); the record's own time if unknown."""
        if not self.added_ns:
            return self.created
        return datetime.fromtimestamp(self.added_ns / 1e9).astimezone()

    @property
    def future_dated(self) -> bool:
        """The record claims a time later than when this store got it (beyond the clock-skew allowance)."""
        return is_future_dated(self.created, self.added_ns)

    @property
    def order(self) -> tuple[int, float, str]:
        """Sort key of 'newest': the order checkpoints were added to this store, then the record's time."""
        return (self.added_ns, self.created.timestamp(), self.checkpoint_id)

    def to_dict(self) -> dict[str, object]:
        """The record as stored (the keys of its canonical JSON); the dicts copied, as ``asdict`` would."""
        doc: dict[str, object] = {name: getattr(self, name) for name in _STORED}
        doc["metrics"] = dict(self.metrics)
        doc["left_out"] = dict(self.left_out)
        doc["run"] = dict(self.run)
        doc["format"] = RECORD_FORMAT
        return doc

    def to_json(self) -> dict[str, object]:
        """What ``list``/``show --json`` print: the record, when this store got it, and whether it is future-dated."""
        doc = self.to_dict()
        doc["added"] = self.added.isoformat(timespec="microseconds")
        doc["future_dated"] = self.future_dated
        return doc

    def encode(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def decode(cls, oid: str, data: bytes) -> CheckpointRecord:
        try:
            doc = json.loads(data)
        except ValueError:
            raise CorruptObject(oid, reason="not a checkpoint record (invalid JSON)") from None
        return cls.from_dict(oid, doc)

    @classmethod
    def from_dict(cls, oid: str, doc: object) -> CheckpointRecord:
        """The record whose stored form (``to_dict``) is ``doc``, checked as ``decode`` checks it
        (the record index keeps records in this form); CorruptObject if it is not one."""
        if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT:
            raise CorruptObject(oid, reason="not a checkpoint record")
        given = dict(doc)
        del given["format"]
        if not given.keys() <= _NAMES:  # fields of a newer rrstore: ignored
            given = {k: v for k, v in given.items() if k in _NAMES}
        try:
            record = cls(**given, record_oid=oid)
            record.created  # noqa: B018 - validates the timestamp
        except (TypeError, ValueError) as exc:
            raise CorruptObject(oid, reason=f"bad checkpoint record ({exc})") from None
        for name, kinds in _FIELD_TYPE_LIST:
            value = getattr(record, name)
            if type(value) not in kinds and (not isinstance(value, kinds) or isinstance(value, bool)):
                raise CorruptObject(oid, reason=f"bad checkpoint record (field {name} is {value!r})")
        _check_maps(oid, record)
        if not is_oid(record.state_hash) or record.kind not in KINDS or not _commit_ok(record.git_commit):
            raise CorruptObject(oid, reason="bad checkpoint record (state_hash, kind or git_commit)")
        return record


    def row(self) -> list[object]:
        """The stored fields as a list, in ``ROW_FIELDS`` order (the record index's compact form)."""
        return [getattr(self, name) for name in _STORED]

    @classmethod
    def from_row(cls, oid: str, row: object) -> CheckpointRecord:
        """The record a ``row`` (in ``ROW_FIELDS`` order) holds, checked as ``decode`` checks it;
        CorruptObject if it is not one."""
        if not isinstance(row, list) or len(row) != len(_STORED):
            raise CorruptObject(oid, reason="not a checkpoint record (row)")
        for at, kinds in _ROW_TYPES:
            value = row[at]
            if type(value) not in kinds and (not isinstance(value, kinds) or isinstance(value, bool)):
                raise CorruptObject(oid, reason=f"bad checkpoint record (field {_STORED[at]} is {value!r})")
        try:
            record = cls(*row, oid)  # type: ignore[arg-type,call-arg]
            record.created  # noqa: B018 - validates the timestamp
        except (TypeError, ValueError) as exc:
            raise CorruptObject(oid, reason=f"bad checkpoint record ({exc})") from None
        _check_maps(oid, record)
        if not _OID(record.state_hash) or record.kind not in KINDS or not _commit_ok(record.git_commit):
            raise CorruptObject(oid, reason="bad checkpoint record (state_hash, kind or git_commit)")
        return record


def _check_maps(oid: str, record: CheckpointRecord) -> None:
    """The record's str -> str fields hold only strings (a crafted record may hold anything)."""
    for name in ("left_out", "run"):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in getattr(record, name).items()):
            raise CorruptObject(oid, reason=f"bad checkpoint record (field {name})")


# A full git object name (SHA-1 or SHA-256), as git prints it: all a record's ``git_commit`` may hold.
_COMMIT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}").fullmatch


def is_commit_id(text: object) -> bool:
    """Whether ``text`` is a full git commit id: never an option (``--output=…``) or a revision expression."""
    return isinstance(text, str) and _COMMIT_ID(text) is not None


def _commit_ok(commit: str | None) -> bool:
    """rrstore records git's own ``branch.oid`` or None; anything else is a crafted or damaged record,
    which git must never be handed (it would read ``--output=F`` as an option and write F)."""
    return commit is None or _COMMIT_ID(commit) is not None


_OID = re.compile(r"[0-9a-f]{64}").fullmatch  # ``is_oid`` for a str, in C (from_row runs per record per listing)
_STORED = tuple(f.name for f in fields(CheckpointRecord) if f.name not in ("record_oid", "added_ns"))
_NAMES = frozenset(f.name for f in fields(CheckpointRecord)) - {"record_oid"}

_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "checkpoint_id": (str,), "lane": (str,), "step_number": (int,), "step_name": (str,),
    "timestamp": (str,), "state_hash": (str,), "git_commit": (str, type(None)),
    "git_branch": (str, type(None)), "git_dirty": (bool, type(None)), "success": (bool,),
    "error_message": (str, type(None)), "metrics": (dict,), "kind": (str,),
    "git_operation": (str, type(None)), "git_merge_head": (str, type(None)), "project": (str,),
    "left_out": (dict,), "workflow": (str, type(None)), "command": (str, type(None)), "run": (dict,),
}
_FIELD_TYPE_LIST = tuple(_FIELD_TYPES.items())
# The order of ``row``: every stored field (the dataclass's order, record_oid and added_ns last).
ROW_FIELDS = _STORED
_ROW_TYPES = tuple((_STORED.index(name), kinds) for name, kinds in _FIELD_TYPES.items())
assert [f.name for f in fields(CheckpointRecord)][-2:] == ["record_oid", "added_ns"]


# A record may be this much ahead of the clock of the store that got it (hosts
# of one team disagree by seconds, rarely minutes) before it counts as future-dated.
CLOCK_SKEW_NS = 5 * 60 * 1_000_000_000


def is_future_dated(created: datetime, added_ns: int) -> bool:
    """Whether a record's time ``created`` lies beyond ``CLOCK_SKEW_NS`` after it was added (``added_ns``).

    Such a record (an archive or a remote can carry one dated 9999-12-31) is
    accepted, never 'newest' for that reason, and flagged by list, show and check.
    """
    return bool(added_ns) and created.timestamp() * 1e9 > added_ns + CLOCK_SKEW_NS


def added_ns_of(ref: Ref, created: datetime, mtime_ns: int | None = None) -> int:
    """When a store got the checkpoint ``ref`` names.

    A ref written by this version says so itself. A one-line ref of an older
    version falls back to the record's time ``created``, clamped to the ref
    file's ``mtime_ns`` when known: a record cannot have been added after its
    ref file was last written.
    """
    if ref.added_ns is not None:
        return ref.added_ns
    stamp = int(created.timestamp() * 1e9)
    return min(stamp, mtime_ns) if mtime_ns is not None else stamp


def owned_by(checkpoint_id: str, record: CheckpointRecord) -> CheckpointRecord:
    """``record`` when it is the record of ``checkpoint_id``; else the ref is damaged (CorruptObject).

    A ref that names another checkpoint's record (rewritten by hand, copied from another store) would
    show that checkpoint twice and hide its own: it is read as a ref that cannot be read.
    """
    if record.checkpoint_id != checkpoint_id:
        raise CorruptObject(f"ref {checkpoint_id}", reason=f"names the record of checkpoint {record.checkpoint_id}",
                            checkpoints=[checkpoint_id])
    return record


def newest_first(records: list[CheckpointRecord]) -> list[CheckpointRecord]:
    """``records`` in the order 'latest' and every 'newest' choice follow: last added first."""
    return sorted(records, key=lambda r: r.order, reverse=True)


def id_prefix(lane: str, step_number: int, when: datetime) -> str:
    """The seed's form of an id, ``<lane>-step<N>-<YYYYmmdd_HHMMSS>`` at ``when``: what users and
    scripts match on, and the prefix of every id rrstore makes."""
    return f"{lane}-step{step_number}-{when.strftime(ID_TIME)}"


def new_suffix(seed: str | None = None) -> str:
    """A random id tail (30 bits from ``secrets``); with ``seed`` (hex, e.g. a record oid) the tail it
    fixes, so that renaming one record twice gives one name."""
    if seed is None:
        return "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))
    bits = int(seed[:8], 16)
    return "".join(SUFFIX_ALPHABET[(bits >> (5 * i)) & 31] for i in range(SUFFIX_LENGTH))


def seed_prefix(checkpoint_id: str) -> str | None:
    """The ``<lane>-step<N>-<YYYYmmdd_HHMMSS>`` an id of rrstore's making starts with (old ids
    ``…_HHMMSS`` and ``…_HHMMSS-2`` as well as new ``…_HHMMSS-k3f9qz``); None for another id."""
    found = _SEED_ID.fullmatch(checkpoint_id)
    return found.group(1) if found else None

