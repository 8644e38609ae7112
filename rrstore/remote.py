"""A remote store, read (verbs layer, beside transfer): open it, check its config, list its checkpoints,
and read what one side of a transfer holds.

A remote holds the layout of a local store on any backend (in practice
``S3Backend``). Nothing here writes: ``transfer`` pushes and pulls, and
uses ``remote_packs.Holdings`` to send only what the other side lacks.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .backends import Backend
from .backends.s3 import S3Backend
from .errors import CorruptObject, ObjectMissing, RRStoreError, StoreNotFound
from .record import CheckpointRecord, added_ns_of, newest_first
from .store.objects import ObjectStore
from .store.refs import Refs
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


def list_remote(remote: Backend, lane: str | None = None, workers: int = WORKERS) -> RemoteListing:
    """The remote's checkpoint records, newest first (records are loose: one GET each, in parallel)."""
    check_remote_config(remote)
    refs = Refs(remote)
    objects = ObjectStore(remote)

    def load(checkpoint_id: str) -> CheckpointRecord | RRStoreError | None:
        try:
            ref = refs.read(checkpoint_id)
            if ref is None:
                return None
            record = CheckpointRecord.decode(ref.oid, objects.get(ref.oid))
        except (ObjectMissing, CorruptObject) as exc:
            return exc.with_checkpoints([checkpoint_id])
        record.added_ns = added_ns_of(ref, record.created)  # the remote's push order (no stat per ref)
        return record

    ids = list(refs)
    records, damaged = [], {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for checkpoint_id, got in zip(ids, pool.map(load, ids), strict=True):
            if isinstance(got, RRStoreError):
                damaged[checkpoint_id] = got
            elif got is not None and (lane is None or got.lane == lane):
                records.append(got)
    return RemoteListing(newest_first(records), damaged)
