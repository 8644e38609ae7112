"""Store generation (store layer, beside ``objects``): a token that changes whenever objects may go.

Objects are immutable and only gc (``ObjectStore.sweep``) and ``check --repair`` remove them, each
under the store's exclusive object lock. Each first writes a fresh random generation to
``index/generation`` (durably), then deletes: so a stat cache that recorded the token while every
object it names was present can trust those objects while the token is the same, and a snapshot
skips ``ObjectStore.has`` for its cache hits (``worktree.snapshot``). The token also carries the
identity of ``packs/`` (``Backend.version``), so a pack removed by anything that does not write the
generation (an older rrstore's gc, a hand) changes it too.

The token only saves work, it never proves anything: a writer still proves every object its
checkpoint reaches after its flush (``ObjectStore.missing``), and a checkpoint whose proof fails
after a trusted scan scans again checking each object (``CheckpointManager.create``). A missing or
malformed generation file is replaced by a fresh one: a new random value only makes tokens differ.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ..backends import Backend
from ..errors import RRStoreError
from .pack import PREFIX as PACKS

GENERATION_KEY = "index/generation"
_HEX = frozenset("0123456789abcdef")
_LEN = 32


class StoreToken(NamedTuple):
    """What a stat cache records of the store it vouches for (marshal-able: two strings)."""

    generation: str
    packs: str


def _fresh(backend: Backend, *, replace: bool) -> str | None:
    """Write a new random generation (``replace``: whatever is there; else only where none is)."""
    value = os.urandom(_LEN // 2).hex()
    try:
        if backend.write(GENERATION_KEY, f"{value}\n".encode(), durable=replace, exclusive=not replace):
            return value
    except (OSError, RRStoreError):
        return None
    return generation(backend, create=False)  # another writer's landed first


def generation(backend: Backend, *, create: bool = True) -> str | None:
    """The store's generation; with ``create`` a missing or malformed one is written afresh (None when
    that fails: a read-only store, whose caches are then never trusted)."""
    try:
        text = backend.read(GENERATION_KEY).decode("ascii").strip()
    except KeyError:
        return _fresh(backend, replace=False) if create else None
    except (OSError, RRStoreError, UnicodeDecodeError):
        text = ""
    if len(text) == _LEN and set(text) <= _HEX:
        return text
    return _fresh(backend, replace=True) if create else None


def bump(backend: Backend) -> None:
    """A new generation, durable before the caller deletes anything (raises if it cannot be written:
    a deletion the token would not show must not happen)."""
    backend.write(GENERATION_KEY, f"{os.urandom(_LEN // 2).hex()}\n".encode(), durable=True)


def store_token(backend: Backend) -> StoreToken | None:
    """The current token (one read and one stat locally), or None where the backend cannot tell."""
    gen = generation(backend)
    packs = backend.version(PACKS)
    if gen is None or packs is None:
        return None
    return StoreToken(gen, repr(packs))
