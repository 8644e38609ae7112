"""Refs (layer above the backend): names that point at checkpoint records.

``refs/checkpoints/<ID>`` holds the record's oid and a newline. A ref is the
last thing written for a checkpoint and is always written durably, so a ref
that exists reaches only objects that exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .backends import Backend
from .errors import CorruptObject, UsageError
from .objects import is_oid

PREFIX = "refs/checkpoints/"
PINS = "refs/pins/"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def valid_id(text: str) -> bool:
    return bool(_ID.match(text))


def check_id(checkpoint_id: str) -> str:
    if not valid_id(checkpoint_id):
        raise UsageError(f"invalid checkpoint id {checkpoint_id!r}: use letters, digits, '.', '_' and '-'")
    return checkpoint_id


class Refs:
    def __init__(self, backend: Backend, durable: bool = True) -> None:
        self.backend = backend
        self.durable = durable

    def get(self, checkpoint_id: str) -> str | None:
        try:
            text = self.backend.read(PREFIX + check_id(checkpoint_id)).decode("ascii", "replace").strip()
        except KeyError:
            return None
        if not is_oid(text):
            raise CorruptObject(f"ref {checkpoint_id}", reason=f"ref does not hold an object id: {text[:70]!r}",
                                checkpoints=[checkpoint_id])
        return text

    def create(self, checkpoint_id: str, oid: str) -> bool:
        """Point a new name at ``oid``; False if the name is taken."""
        return self.backend.write(PREFIX + check_id(checkpoint_id), f"{oid}\n".encode(),
                                  durable=self.durable, exclusive=True)

    def update(self, checkpoint_id: str, oid: str) -> None:
        self.backend.write(PREFIX + check_id(checkpoint_id), f"{oid}\n".encode(), durable=self.durable)

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
