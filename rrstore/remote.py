"""A remote store, read (verbs layer, beside transfer): open it, check its config, list its checkpoints,
and read what one side of a transfer holds.

A remote holds the layout of a local store on any backend (in practice
``S3Backend``). Nothing here writes: ``transfer`` pushes and pulls, and
uses ``remote_packs.Holdings`` to send only what the other side lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .backends import Backend
from .backends.s3 import S3Backend, S3Options
from .errors import RRStoreError, StoreNotFound
from .record import CheckpointRecord, newest_first
from .recordindex import remote_reader
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


def open_remote(url: str, endpoint_url: str | None = None, options: S3Options | None = None) -> S3Backend:
    """The backend for a remote URL (``s3://bucket/prefix``); ``options`` from the project's ``[remote]``
    (``RollbackRecoverySystem.open_remote`` resolves all three by precedence)."""
    return S3Backend.from_url(url, endpoint_url=endpoint_url, options=options)


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
