"""A remote store, read (verbs layer, beside transfer): open it, check its config, list its checkpoints,
and read what one side of a transfer holds.

A remote holds the layout of a local store on any backend (in practice
``S3Backend``). Nothing here writes: ``transfer`` pushes and pulls, and
uses ``Holdings`` to send only what the other side lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .backends import Backend
from .backends.s3 import S3Backend
from .backends.views import ListedView
from .errors import ObjectMissing, RRStoreError, StoreNotFound
from .record import CheckpointRecord, newest_first
from .recordindex import remote_reader
from .store.objects import loose_oids, object_key
from .store.pack import PREFIX as PACKS
from .store.pack import PackReader
from .store.store import check_config

# Requests in flight at once; S3 latency, not bandwidth, bounds a transfer of small keys.
WORKERS = 8


class RemoteNotFound(StoreNotFound):
    """The remote location holds no rrstore store (no ``config.json``)."""

    def __init__(self, location: str) -> None:
        RRStoreError.__init__(self, f"no rrstore store at {location} (push a checkpoint there first)")
        self.path = location


@dataclass
class RemoteListing:
    """The remote's readable checkpoint records, newest first, and the ids it could not read."""

    checkpoints: list[CheckpointRecord]
    damaged: dict[str, RRStoreError]


def open_remote(url: str, endpoint_url: str | None = None) -> S3Backend:
    """The backend for a remote URL (``s3://bucket/prefix``)."""
    return S3Backend.from_url(url, endpoint_url=endpoint_url)


def check_remote_config(remote: Backend) -> str:
    """The store format of the remote's ``config.json`` (``store.check_config``); RemoteNotFound if none."""
    try:
        raw = remote.read("config.json")
    except KeyError:
        raise RemoteNotFound(remote.location) from None
    return check_config(raw, remote.location, remote=True)


def list_remote(remote: Backend, lane: str | None = None, workers: int = WORKERS,
                cache: Path | None = None) -> RemoteListing:
    """The remote's checkpoint records, newest first, ordered by the remote's push order.

    One listing of its refs with their change tokens, then its record index (``recordindex``:
    the copy kept in store ``cache``'s ``cache/remotes/`` first, then the remote's
    ``index/records``); only refs and records neither index has are read, in parallel.
    """
    check_remote_config(remote)
    got = remote_reader(remote, cache, workers=workers).listing()
    records = [r for r in got.records.values() if lane is None or r.lane == lane]
    return RemoteListing(newest_first(records), got.damaged)


class Holdings:
    """One side's objects (local or remote), read once: loose oids and the pack index (oid -> location)."""

    def __init__(self, backend: Backend, workers: int = WORKERS) -> None:
        self.backend = backend
        self.keys: set[str] = set()
        self.loose: set[str] = set(loose_oids(backend))
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

    def keys_of(self, needed: dict[str, list[str]], target: Holdings) -> tuple[list[str], int]:
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
