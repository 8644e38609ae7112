"""Refs (store layer, over a backend): names that point at checkpoint records.

``refs/checkpoints/<ID>`` holds the record's oid on its first line and, on
its second, when the ref was added to this store (``time.time_ns()`` of the
machine that wrote it, in decimal). A ref is the last thing written for a
checkpoint and is always written durably, so a ref that exists reaches only
objects that exist. The second line is what orders checkpoints ('latest',
'newest'): the record's own timestamp may come from an archive or a remote.
Refs of older rrstore versions have only the first line; readers ignore any
line after the second.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from ..backends import Backend
from ..errors import CorruptObject, UsageError
from .objects import is_oid

PREFIX = "refs/checkpoints/"
PINS = "refs/pins/"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def valid_id(text: str) -> bool:
    return bool(_ID.fullmatch(text))  # fullmatch: "$" alone also matches before a final newline


def check_id(checkpoint_id: str) -> str:
    if not valid_id(checkpoint_id):
        raise UsageError(f"invalid checkpoint id {checkpoint_id!r}: use letters, digits, '.', '_' and '-'")
    return checkpoint_id


@dataclass(frozen=True)
class Ref:
    """One ref: the record it names, and when this store got it (None: a one-line ref of an older rrstore)."""

    oid: str
    added_ns: int | None = None


def encode_ref(oid: str, added_ns: int) -> bytes:
    return f"{oid}\n{added_ns}\n".encode("ascii")


def decode_ref(checkpoint_id: str, data: bytes) -> Ref:
    """A ref file's content; the first line must be an oid, a damaged add time only costs the order."""
    lines = data.decode("ascii", "replace").split("\n")
    oid = lines[0].strip()
    if not is_oid(oid):
        raise CorruptObject(f"ref {checkpoint_id}", reason=f"ref does not hold an object id: {oid[:70]!r}",
                            checkpoints=[checkpoint_id])
    added = lines[1].strip() if len(lines) > 1 else ""
    return Ref(oid, int(added) if added.isascii() and added.isdigit() and len(added) < 24 else None)


class Refs:
    def __init__(self, backend: Backend, durable: bool = True) -> None:
        self.backend = backend
        self.durable = durable

    def read(self, checkpoint_id: str) -> Ref | None:
        """The ref of ``checkpoint_id`` (None if there is none); CorruptObject if it names no object."""
        try:
            data = self.backend.read(PREFIX + check_id(checkpoint_id))
        except KeyError:
            return None
        return decode_ref(checkpoint_id, data)

    def get(self, checkpoint_id: str) -> str | None:
        """The record oid ``checkpoint_id`` names, or None."""
        ref = self.read(checkpoint_id)
        return ref.oid if ref is not None else None

    def mtime_ns(self, checkpoint_id: str) -> int | None:
        """When the ref file was last written (for one-line refs, which carry no add time)."""
        try:
            return int(self.backend.stat(PREFIX + check_id(checkpoint_id))[1] * 1_000_000_000)
        except KeyError:
            return None

    def create(self, checkpoint_id: str, oid: str, added_ns: int | None = None) -> bool:
        """Point a new name at ``oid``; False if the name is taken.

        ``added_ns`` (default: now) is recorded as the time this store got the
        checkpoint; an import gives all its refs one time.
        """
        stamp = time.time_ns() if added_ns is None else added_ns
        return self.backend.write(PREFIX + check_id(checkpoint_id), encode_ref(oid, stamp),
                                  durable=self.durable, exclusive=True)

    def update(self, checkpoint_id: str, oid: str) -> None:
        """Point an existing name at another record; it keeps its place in the order."""
        old = self.read(checkpoint_id)
        added = old.added_ns if old is not None else None
        if added is None:
            added = self.mtime_ns(checkpoint_id) or time.time_ns()
        self.backend.write(PREFIX + check_id(checkpoint_id), encode_ref(oid, added), durable=self.durable)

    def delete(self, checkpoint_id: str) -> None:
        self.backend.delete(PREFIX + check_id(checkpoint_id))

    def __iter__(self) -> Iterator[str]:
        for key in self.backend.list(PREFIX):
            name = key[len(PREFIX):]
            if _ID.match(name):
                yield name


class Pins:
    """``refs/pins/<ID>``: checkpoints gc must keep whatever the retention policy says."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def add(self, checkpoint_id: str) -> bool:
        """Pin; False if it was pinned already."""
        return self.backend.write(PINS + check_id(checkpoint_id), b"pinned\n", durable=True, exclusive=True)

    def remove(self, checkpoint_id: str) -> bool:
        """Unpin; False if it was not pinned."""
        try:
            self.backend.delete(PINS + check_id(checkpoint_id))
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        for key in self.backend.list(PINS):
            name = key[len(PINS):]
            if valid_id(name):
                yield name


@dataclass
class RefPlan:
    """How refs one side wants (id -> record oid) meet the refs the other side holds, in the wanted order."""

    todo: list[str] = field(default_factory=list)              # absent there: to create
    present: list[str] = field(default_factory=list)           # there already, naming the same record
    conflicts: dict[str, str] = field(default_factory=dict)    # there, naming another record (id -> that record)


def plan_refs(wanted: Mapping[str, str], there: Callable[[str], str | None]) -> RefPlan:
    """Split ``wanted`` by what ``there(id)`` (the other side's record oid, None if absent) says.

    The one present/conflict/to-do split of push, pull and archive import: a
    ref is created only where it is absent, never overwritten.
    """
    plan = RefPlan()
    for checkpoint_id, oid in wanted.items():
        existing = there(checkpoint_id)
        if existing is None:
            plan.todo.append(checkpoint_id)
        elif existing == oid:
            plan.present.append(checkpoint_id)
        else:
            plan.conflicts[checkpoint_id] = existing
    return plan
