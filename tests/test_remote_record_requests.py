"""Requests a remote's listing and a push with nothing new make, counted on the real SeaweedFS server.

The remote keeps a record index (``index/records``) that push updates, and the local store keeps a
copy of it (``cache/remotes/<16 hex>/records``): ``list --remote`` and a push with nothing new cost
one listing of the remote's refs and a fixed number of requests, however many checkpoints it holds.
Requests are counted with botocore's ``before-call`` event on the S3Backend's own client.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections import Counter
from pathlib import Path

from conftest import SeaweedFS

from rrstore.backends.s3 import S3Backend
from rrstore.checkpoint import CheckpointManager, NewCheckpoint, ProjectView
from rrstore.config import Settings
from rrstore.record import CheckpointRecord
from rrstore.recordindex import INDEX_KEY, RecordIndex, remote_cache_path
from rrstore.remote import list_remote
from rrstore.store.objects import hash_bytes
from rrstore.store.store import Store
from rrstore.transfer import push


class Requests:
    """Every S3 operation the backend's client makes, by name."""

    def __init__(self, backend: S3Backend) -> None:
        self.made: Counter[str] = Counter()
        backend.client.meta.events.register("before-call", self.count)

    def count(self, model, **_: object) -> None:  # type: ignore[no-untyped-def]
        self.made[model.name] += 1

    def total(self) -> int:
        return sum(self.made.values())

    def clear(self) -> None:
        self.made.clear()


def local_store(tmp_path: Path) -> tuple[Store, CheckpointManager]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "a.txt").write_text("one\n")
    store = Store.open(tmp_path / "store", Settings(), create=True)
    manager = CheckpointManager(project, store, ProjectView(project, identify=lambda: "test:project"))
    manager.create(NewCheckpoint("standard", 0, "real"))
    return store, manager


def add_copies(store: Store, base: CheckpointRecord, start: int, count: int) -> None:
    """More checkpoints of the same tree (a record and a ref each: fast)."""
    for n in range(start, start + count):
        record = dataclasses.replace(base, checkpoint_id=f"standard-step{n}-20261201_000000", step_number=n,
                                     step_name=f"step {n}")
        data = record.encode()
        oid = hash_bytes(data)
        store.objects.put(data, oid, loose=True)
        store.refs.create(record.checkpoint_id, oid)


def remote_of(s3_remote: str, seaweedfs: SeaweedFS) -> S3Backend:
    return S3Backend.from_url(s3_remote, endpoint_url=seaweedfs.endpoint)


def measure(store: Store, s3_remote: str, seaweedfs: SeaweedFS) -> dict[str, int]:
    """Requests of: a push with nothing new; a listing; a listing from a store without the local copy."""
    remote = remote_of(s3_remote, seaweedfs)
    requests = Requests(remote)
    counts = {}
    result = push(store, remote, [])
    assert result.transferred == [] and result.success
    counts["push nothing new"] = requests.total()
    requests.clear()
    listed = list_remote(remote, cache=store.path)
    counts["list --remote"] = requests.total()
    requests.clear()
    assert len(listed.checkpoints) == len(list(store.refs)) and not listed.damaged
    cold = list_remote(remote, cache=None)  # a fresh runner: no local copy of the remote's index
    counts["list --remote, no local copy"] = requests.total()
    assert [r.checkpoint_id for r in cold.checkpoints] == [r.checkpoint_id for r in listed.checkpoints]
    return counts


def test_list_remote_and_a_push_with_nothing_new_make_a_bounded_number_of_requests(
        tmp_path: Path, s3_remote: str, seaweedfs: SeaweedFS) -> None:
    store, manager = local_store(tmp_path)
    base = manager.newest()
    assert base is not None
    add_copies(store, base, 1, 19)
    assert push(store, remote_of(s3_remote, seaweedfs), []).transferred  # 20 checkpoints on the remote
    at_20 = measure(store, s3_remote, seaweedfs)

    add_copies(store, base, 20, 40)
    assert len(push(store, remote_of(s3_remote, seaweedfs), []).transferred) == 40
    at_60 = measure(store, s3_remote, seaweedfs)

    assert at_60 == at_20, (at_20, at_60)  # does not grow with the checkpoints the remote holds
    assert at_60["push nothing new"] <= 5
    assert at_60["list --remote"] <= 10 and at_60["list --remote, no local copy"] <= 10


def test_the_remote_listing_is_the_same_without_either_index(
        tmp_path: Path, s3_remote: str, seaweedfs: SeaweedFS) -> None:
    store, manager = local_store(tmp_path)
    base = manager.newest()
    assert base is not None
    add_copies(store, base, 1, 9)
    remote = remote_of(s3_remote, seaweedfs)
    push(store, remote, [])
    index = RecordIndex.decode(remote.read(INDEX_KEY))
    assert len(index.refs) == 10 and len(index.records) == 10  # push left the remote's index whole
    with_index = [r.to_json() for r in list_remote(remote, cache=store.path).checkpoints]

    remote.delete(INDEX_KEY)
    shutil.rmtree(remote_cache_path(store.path, remote.location).parent)
    requests = Requests(remote)
    without = [r.to_json() for r in list_remote(remote, cache=store.path).checkpoints]
    assert without == with_index
    assert requests.made["GetObject"] >= 20  # every ref and record read once ...
    requests.clear()
    assert [r.to_json() for r in list_remote(remote, cache=store.path).checkpoints] == with_index
    assert requests.made["GetObject"] == 1  # ... then kept in the local copy (only config.json read)

    remote.write(INDEX_KEY, b"damaged")  # a damaged remote index is ignored
    shutil.rmtree(remote_cache_path(store.path, remote.location).parent)
    assert [r.to_json() for r in list_remote(remote, cache=store.path).checkpoints] == with_index
