"""Requests a push or a pull makes against the real SeaweedFS server, counted by botocore's event hooks
(``request-created``: one per HTTP request, retries included): a transfer costs what is new, not what
the remote holds."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import SeaweedFS, on_every_s3_client, tree_manifest

from rrstore import RollbackRecoverySystem
from rrstore.backends.s3 import S3Backend, parse_remote
from rrstore.remote_packs import REMOTE_MIDX_MAX, cache_dir

Manifest = dict[str, tuple[object, ...]]


class Requests:
    """Every S3 request made by any ``S3Backend`` of this process: (operation, key or prefix)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def hook(self, client: Any) -> None:
        def created(request: Any, operation_name: str, **_: Any) -> None:
            path, _, query = request.url.partition("?")
            if operation_name.startswith("ListObjects"):
                from urllib.parse import parse_qs

                path = parse_qs(query).get("prefix", [""])[0]
            with self.lock:
                self.calls.append((operation_name, path))

        client.meta.events.register("request-created.s3", created)

    def clear(self) -> None:
        with self.lock:
            self.calls.clear()

    def ops(self) -> Counter[str]:
        return Counter(op for op, _ in self.calls)

    def gets(self, ending: str) -> int:
        return sum(1 for op, key in self.calls if op == "GetObject" and key.endswith(ending))

    def listed(self) -> list[str]:
        return [key for op, key in self.calls if op.startswith("ListObjects")]

    def bulk(self) -> list[str]:
        """The listings of ``packs/`` or ``objects/`` (what grows with the remote)."""
        return [key for key in self.listed()
                if (key.endswith("/packs/") and not key.endswith("/index/packs/")) or key.endswith("/objects/")]


@pytest.fixture
def endpoint(seaweedfs: SeaweedFS) -> str:
    return seaweedfs.endpoint


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> Requests:
    counter = Requests()
    on_every_s3_client(monkeypatch, counter.hook)
    return counter


def _step(root: Path, i: int) -> str:
    """One small checkpoint after a one-file change (one new pack)."""
    (root / "src").mkdir(exist_ok=True)
    (root / "src" / "shared.py").write_text("shared = True\n" * 100)
    (root / "src" / f"mod{i % 5}.py").write_text(f"value = {i}\n")
    return RollbackRecoverySystem(root=root).checkpoint("standard", i + 1, f"s{i}").checkpoint_id


def _push_each(root: Path, remote: str, endpoint: str, start: int, count: int) -> list[str]:
    ids = []
    for i in range(start, start + count):
        ids.append(_step(root, i))
        assert RollbackRecoverySystem(root=root).push([ids[-1]], remote, endpoint).transferred == [ids[-1]]
    return ids


def _remote_keys(remote: str, endpoint: str, under: str) -> list[str]:
    bucket, prefix = parse_remote(remote)
    return list(S3Backend(bucket, prefix, endpoint).list(under))


def _push_one(root: Path, remote: str, endpoint: str, i: int, requests: Requests) -> tuple[int, Counter[str], int]:
    cp = _step(root, i)
    requests.clear()
    assert RollbackRecoverySystem(root=root).push([cp], remote, endpoint).transferred == [cp]
    return len(requests.calls), requests.ops(), requests.gets(".idx")


def test_pushing_one_checkpoint_costs_the_same_at_20_and_60_checkpoints(
        tmp_path: Path, s3_remote: str, endpoint: str, requests: Requests) -> None:
    source = tmp_path / "source"
    source.mkdir()
    _push_each(source, s3_remote, endpoint, 0, 20)
    at20 = [_push_one(source, s3_remote, endpoint, 20 + k, requests) for k in range(REMOTE_MIDX_MAX + 1)]
    _push_each(source, s3_remote, endpoint, 30, 60 - 30)
    at60 = [_push_one(source, s3_remote, endpoint, 60 + k, requests) for k in range(REMOTE_MIDX_MAX + 1)]
    for total, ops, idx_gets in at20 + at60:
        # 30, plus the push lease a remote gc waits for (remote_lease: PUT, HEAD, LIST, HEAD + DELETE)
        assert total <= 35, ops
        assert idx_gets == 0, ops  # no pack index of the remote is read to push
    # a push that merges no merged indexes costs the same at 60 as at 20; one that merges (one in
    # REMOTE_MIDX_MAX + 1 of them does, it is among these) stays under the bound above
    assert min(t for t, _, _ in at60) <= min(t for t, _, _ in at20)
    assert sum(o["ListObjectsV2"] for _, o, _ in at60) <= sum(o["ListObjectsV2"] for _, o, _ in at20)
    # the remote's merged indexes stay few
    assert len(_remote_keys(s3_remote, endpoint, "index/packs/")) <= REMOTE_MIDX_MAX


def test_a_push_lists_neither_packs_nor_objects_of_the_remote(
        tmp_path: Path, s3_remote: str, endpoint: str, requests: Requests) -> None:
    source = tmp_path / "source"
    source.mkdir()
    _push_each(source, s3_remote, endpoint, 0, 3)
    _push_one(source, s3_remote, endpoint, 3, requests)
    assert requests.listed() and not requests.bulk(), requests.listed()


def test_a_pull_reads_only_the_indexes_of_the_packs_it_needs_and_restores_byte_identically(
        tmp_path: Path, s3_remote: str, endpoint: str, requests: Requests) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    ids = _push_each(source, s3_remote, endpoint, 0, 25)
    expected = tree_manifest(source)
    (target / "own.txt").write_text("mine\n")
    # the target holds the first checkpoint already: the last one needs only its own pack and the
    # packs of the files it shares with the first
    assert RollbackRecoverySystem(root=target).pull([ids[0]], s3_remote, endpoint).transferred == [ids[0]]
    requests.clear()
    pulled = RollbackRecoverySystem(root=target).pull([ids[-1]], s3_remote, endpoint)
    assert pulled.transferred == [ids[-1]]
    assert requests.gets(".idx") <= pulled.packs, requests.ops()
    assert pulled.packs <= 6  # one pack per checkpoint: the last one's, and the few it still shares
    assert not requests.bulk(), requests.listed()
    assert len(requests.calls) <= 30, requests.ops()
    (target / "own.txt").unlink()
    RollbackRecoverySystem(root=target).restore(ids[-1], undo=False, force=True)
    assert tree_manifest(target) == expected


def test_a_remote_without_merged_indexes_is_listed_once_and_gets_one(
        tmp_path: Path, s3_remote: str, endpoint: str, requests: Requests,
        manifest: Callable[..., Manifest]) -> None:
    """What an older rrstore left (no ``index/``): listed the old way once, the first push writes a
    merged index of all its packs, and the pushes after it list only ``index/packs/``."""
    source = tmp_path / "source"
    source.mkdir()
    _push_each(source, s3_remote, endpoint, 0, 5)
    bucket, prefix = parse_remote(s3_remote)
    remote = S3Backend(bucket, prefix, endpoint)
    for key in list(remote.list("index/")):
        remote.delete(key)
    _push_one(source, s3_remote, endpoint, 5, requests)
    assert requests.bulk()
    assert len(_remote_keys(s3_remote, endpoint, "index/packs/")) == 1
    _push_one(source, s3_remote, endpoint, 6, requests)
    assert requests.listed() and not requests.bulk()
    assert requests.gets(".idx") == 0


def test_a_pack_no_merged_index_names_is_still_pulled(
        tmp_path: Path, s3_remote: str, endpoint: str, requests: Requests) -> None:
    """An older rrstore pushed a pack after the merged indexes were written: pull finds it by listing."""
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    _push_each(source, s3_remote, endpoint, 0, 3)
    bucket, prefix = parse_remote(s3_remote)
    remote = S3Backend(bucket, prefix, endpoint)
    merged_before = set(remote.list("index/packs/"))
    newest = _push_each(source, s3_remote, endpoint, 3, 1)[0]
    for key in set(remote.list("index/packs/")) - merged_before:
        remote.delete(key)  # as if that push had written no merged index
    expected = tree_manifest(source)
    pulled = RollbackRecoverySystem(root=target).pull([newest], s3_remote, endpoint)
    assert pulled.transferred == [newest]
    RollbackRecoverySystem(root=target).restore(newest, undo=False, force=True)
    assert tree_manifest(target) == expected


def test_a_damaged_cached_index_is_fetched_again(tmp_path: Path, s3_remote: str, endpoint: str,
                                                 requests: Requests) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    ids = _push_each(source, s3_remote, endpoint, 0, 2)
    expected = tree_manifest(source)
    bucket, prefix = parse_remote(s3_remote)
    location = S3Backend(bucket, prefix, endpoint).location
    assert RollbackRecoverySystem(root=target).pull([ids[0]], s3_remote, endpoint).transferred == [ids[0]]
    cached = sorted((cache_dir(target / ".checkpoints", location)).rglob("*.*idx"))
    assert cached
    for path in cached:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    requests.clear()
    assert RollbackRecoverySystem(root=target).pull([ids[1]], s3_remote, endpoint).transferred == [ids[1]]
    assert requests.gets(".midx") >= 1  # the damaged copies were not used
    RollbackRecoverySystem(root=target).restore(ids[1], undo=False, force=True)
    assert tree_manifest(target) == expected


def test_objects_loose_on_the_remote_are_found_by_listing(
        tmp_path: Path, s3_remote: str, endpoint: str, requests: Requests) -> None:
    """Objects a remote holds loose (no merged index names them: an older store's) are pulled after
    one listing of the remote's ``objects/``, and restore byte-identically."""
    import zstandard

    from rrstore.store.objects import object_key
    from rrstore.store.pack import decode_index
    from rrstore.store.packindex import decode_midx, midx_name

    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    _push_each(source, s3_remote, endpoint, 0, 2)
    bucket, prefix = parse_remote(s3_remote)
    remote = S3Backend(bucket, prefix, endpoint)
    merged_before = set(remote.list("index/packs/"))
    newest = _push_each(source, s3_remote, endpoint, 2, 1)[0]
    objects = RollbackRecoverySystem(root=source).open_store().objects
    for key in set(remote.list("index/packs/")) - merged_before:  # the newest push's packs become loose objects
        name = midx_name(key)
        assert name is not None
        for pack in decode_midx(name, remote.read(key)):
            for oid in decode_index(pack, remote.read(f"packs/{pack}.idx")):
                remote.write(object_key(oid), zstandard.ZstdCompressor(write_content_size=True).compress(
                    objects.get(oid)))
            remote.delete(f"packs/{pack}.idx")
            remote.delete(f"packs/{pack}.pack")
        remote.delete(key)
    expected = tree_manifest(source)
    requests.clear()
    assert RollbackRecoverySystem(root=target).pull([newest], s3_remote, endpoint).transferred == [newest]
    assert any(key.endswith("/objects/") for key in requests.listed())
    RollbackRecoverySystem(root=target).restore(newest, undo=False, force=True)
    assert tree_manifest(target) == expected
