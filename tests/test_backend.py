"""The backend contract: every backend (the local directory, S3 on a real SeaweedFS server) passes these tests.

To run the contract against a new backend, add one line to ``BACKENDS``: a name
and a factory taking pytest's ``request`` and ``tmp_path`` and returning a
fresh, empty backend (``request`` reaches other fixtures, e.g. a server).
Tests specific to one implementation live in their own class below the contract.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from rrstore.backends import Backend, LocalBackend
from rrstore.backends.memory import MemoryBackend
from rrstore.backends.s3 import PROBE_KEY, S3Backend


def s3_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A fresh prefix on the session's SeaweedFS server (started by the ``seaweedfs`` fixture)."""
    server = request.getfixturevalue("seaweedfs")
    request.getfixturevalue("s3_env")
    bucket, prefix = server.new_prefix()
    return S3Backend(bucket, prefix, endpoint_url=server.endpoint)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Backend]] = {
    "local": lambda request, tmp_path: LocalBackend(tmp_path / "store"),
    "memory": lambda request, tmp_path: MemoryBackend(),
    "s3": s3_backend,
}

INVALID_KEYS = ["", "..", "../escape", "a/../../escape", "a/..", "/etc/passwd", "/abs/key",
                "a//b", "a/", "./a", "a/./b", "nul\0byte"]


def _staged(backend: Backend, data: bytes) -> Path:
    """A finished file in the backend's staging directory, as a pack writer leaves it."""
    folder = backend.staging()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"staged.{os.getpid()}.{os.urandom(6).hex()}.tmp"
    path.write_bytes(data)
    return path


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return BACKENDS[request.param](request, tmp_path)


class TestBackendContract:
    """Bytes by key: what every layer above relies on, whatever the backend."""

    def test_write_then_read_returns_the_same_bytes(self, backend: Backend) -> None:
        data = bytes(range(256)) * 3 + b"\0\r\n"
        assert backend.write("objects/ab/cdef", data) is True
        assert backend.read("objects/ab/cdef") == data

    def test_empty_value_round_trips(self, backend: Backend) -> None:
        backend.write("refs/checkpoints/empty", b"")
        assert backend.exists("refs/checkpoints/empty")
        assert backend.read("refs/checkpoints/empty") == b""

    def test_large_value_round_trips(self, backend: Backend) -> None:
        data = os.urandom(3 << 20)
        backend.write("objects/big/value", data, durable=True)
        assert backend.read("objects/big/value") == data

    def test_plain_write_replaces_existing_value(self, backend: Backend) -> None:
        backend.write("refs/checkpoints/x", b"old")
        assert backend.write("refs/checkpoints/x", b"new") is True
        assert backend.read("refs/checkpoints/x") == b"new"

    def test_durable_write_is_readable(self, backend: Backend) -> None:
        assert backend.write("config.json", b"{}\n", durable=True) is True
        assert backend.read("config.json") == b"{}\n"

    def test_exclusive_write_creates_a_new_key(self, backend: Backend) -> None:
        assert backend.write("refs/checkpoints/a", b"first", exclusive=True) is True
        assert backend.read("refs/checkpoints/a") == b"first"

    def test_exclusive_write_refuses_to_overwrite(self, backend: Backend) -> None:
        backend.write("refs/checkpoints/a", b"first")
        assert backend.write("refs/checkpoints/a", b"second", exclusive=True) is False
        assert backend.write("refs/checkpoints/a", b"third", exclusive=True, durable=True) is False
        assert backend.read("refs/checkpoints/a") == b"first"

    def test_concurrent_exclusive_writes_have_exactly_one_winner(self, backend: Backend) -> None:
        results: dict[int, bool] = {}
        start = threading.Barrier(8)

        def race(i: int) -> None:
            start.wait()
            results[i] = backend.write("refs/checkpoints/race", f"writer {i}".encode(), exclusive=True)

        threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [i for i, won in results.items() if won]
        assert len(winners) == 1
        assert backend.read("refs/checkpoints/race") == f"writer {winners[0]}".encode()

    @pytest.mark.parametrize("durable", [False, True])
    def test_install_stores_a_staged_file_under_a_key_and_takes_the_file(self, backend: Backend,
                                                                      durable: bool) -> None:
        data = os.urandom(3 << 20) + b"end"
        backend.write("packs/abc.pack", b"old value")
        staged = _staged(backend, data)
        backend.install("packs/abc.pack", staged, durable=durable)
        assert backend.read("packs/abc.pack") == data
        assert backend.read_range("packs/abc.pack", len(data) - 3, 10) == b"end"
        assert not staged.exists()
        assert sorted(backend.list("packs/")) == ["packs/abc.pack"]

    def test_install_makes_the_key_s_folder(self, backend: Backend) -> None:
        staged = _staged(backend, b"fresh")
        backend.install("packs/deep/new.pack", staged)
        assert backend.read("packs/deep/new.pack") == b"fresh"
        assert backend.exists("packs/deep/new.pack")

    def test_install_refuses_an_invalid_key_and_keeps_the_file(self, backend: Backend) -> None:
        staged = _staged(backend, b"x")
        with pytest.raises(ValueError):
            backend.install("../escape", staged)
        assert staged.read_bytes() == b"x"
        staged.unlink()

    def test_exists(self, backend: Backend) -> None:
        assert backend.exists("objects/ab/cdef") is False
        backend.write("objects/ab/cdef", b"x")
        assert backend.exists("objects/ab/cdef") is True
        assert backend.exists("objects/ab/cdeg") is False

    def test_stat_gives_size_and_modification_time(self, backend: Backend) -> None:
        import time

        before = time.time()
        backend.write("packs/abc.pack", b"x" * 1000)
        size, mtime = backend.stat("packs/abc.pack")
        assert size == 1000
        assert before - 5 <= mtime <= time.time() + 5  # S3 keeps whole seconds; clocks may differ a little
        with pytest.raises(KeyError):
            backend.stat("packs/missing.pack")

    def test_read_range(self, backend: Backend) -> None:
        backend.write("packs/p.pack", b"0123456789")
        assert backend.read_range("packs/p.pack", 2, 3) == b"234"
        assert backend.read_range("packs/p.pack", 8, 10) == b"89"
        assert backend.read_range("packs/p.pack", 10, 5) == b""
        assert backend.read_range("packs/p.pack", 50, 5) == b""
        backend.write("packs/empty.pack", b"")
        assert backend.read_range("packs/empty.pack", 0, 4) == b""
        with pytest.raises(KeyError):
            backend.read_range("packs/missing.pack", 0, 4)

    def test_a_folder_is_not_a_key(self, backend: Backend) -> None:
        """Only written keys exist; the folders above them are not keys (as in S3)."""
        backend.write("objects/ab/cdef", b"x")
        for folder in ("objects", "objects/ab"):
            assert backend.exists(folder) is False, folder
            with pytest.raises(KeyError):
                backend.read(folder)
            with pytest.raises(KeyError):
                backend.delete(folder)
        assert backend.read("objects/ab/cdef") == b"x"

    def test_missing_key_read_raises_keyerror(self, backend: Backend) -> None:
        with pytest.raises(KeyError):
            backend.read("objects/00/missing")
        backend.write("objects/00/present", b"x")
        with pytest.raises(KeyError):
            backend.read("objects/00/missing")

    def test_missing_key_delete_raises_keyerror(self, backend: Backend) -> None:
        with pytest.raises(KeyError):
            backend.delete("refs/checkpoints/never-written")

    def test_delete_removes_only_that_key(self, backend: Backend) -> None:
        backend.write("refs/checkpoints/a", b"a")
        backend.write("refs/checkpoints/b", b"b")
        backend.delete("refs/checkpoints/a")
        assert backend.exists("refs/checkpoints/a") is False
        with pytest.raises(KeyError):
            backend.read("refs/checkpoints/a")
        assert backend.read("refs/checkpoints/b") == b"b"
        assert list(backend.list("refs/")) == ["refs/checkpoints/b"]
        with pytest.raises(KeyError):
            backend.delete("refs/checkpoints/a")

    def test_a_deleted_key_can_be_written_again(self, backend: Backend) -> None:
        backend.write("refs/checkpoints/a", b"one")
        backend.delete("refs/checkpoints/a")
        assert backend.write("refs/checkpoints/a", b"two", exclusive=True) is True
        assert backend.read("refs/checkpoints/a") == b"two"

    def test_list_returns_every_key_under_the_prefix(self, backend: Backend) -> None:
        keys = ["objects/ab/cdef", "objects/ab/0123", "objects/ff/ffff", "refs/checkpoints/docs-step1-x",
                "refs/checkpoints/docs-step2-y", "config.json"]
        for key in keys:
            backend.write(key, key.encode())
        assert sorted(backend.list("objects/")) == ["objects/ab/0123", "objects/ab/cdef", "objects/ff/ffff"]
        assert sorted(backend.list("refs/checkpoints/")) == ["refs/checkpoints/docs-step1-x",
                                                             "refs/checkpoints/docs-step2-y"]
        assert sorted(backend.list("objects/ab/")) == ["objects/ab/0123", "objects/ab/cdef"]
        assert sorted(backend.list("")) == sorted(keys)

    def test_list_tokens_gives_the_keys_of_list_in_its_order(self, backend: Backend) -> None:
        keys = ["objects/ab/cdef", "objects/ab/0123", "objects/ff/ffff", "refs/checkpoints/a", "config.json"]
        for key in keys:
            backend.write(key, key.encode())
        for prefix in ("objects/", "refs/checkpoints/", "objects/ab/", "", "packs/"):
            assert [key for key, _ in backend.list_tokens(prefix)] == list(backend.list(prefix))

    def test_a_token_changes_when_a_value_is_replaced_even_by_one_of_the_same_size(
            self, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("rrstore.backends.local.RACY_NS", 0)  # local: no key is "too recent"
        backend.write("refs/checkpoints/a", b"one")
        backend.write("refs/checkpoints/b", b"bee")
        before = dict(backend.list_tokens("refs/checkpoints/"))
        assert all(before.values()) and before == dict(backend.list_tokens("refs/checkpoints/"))
        backend.write("refs/checkpoints/a", b"two")
        after = dict(backend.list_tokens("refs/checkpoints/"))
        assert after["refs/checkpoints/a"] != before["refs/checkpoints/a"]
        assert after["refs/checkpoints/b"] == before["refs/checkpoints/b"]

    def test_list_of_an_unknown_prefix_is_empty(self, backend: Backend) -> None:
        assert list(backend.list("objects/")) == []
        backend.write("objects/ab/cdef", b"x")
        assert list(backend.list("packs/")) == []

    def test_list_with_an_escaping_prefix_reveals_nothing_outside_the_store(
            self, backend: Backend, tmp_path: Path) -> None:
        (tmp_path / "outside-secret").write_text("not a store key")
        backend.write("objects/ab/cdef", b"x")
        try:
            listed = list(backend.list("../"))
        except ValueError:
            return
        assert listed == []

    @pytest.mark.parametrize("key", INVALID_KEYS)
    def test_invalid_key_raises_valueerror(self, backend: Backend, key: str) -> None:
        with pytest.raises(ValueError):
            backend.write(key, b"x")
        with pytest.raises(ValueError):
            backend.read(key)
        with pytest.raises(ValueError):
            backend.exists(key)
        with pytest.raises(ValueError):
            backend.delete(key)

    def test_invalid_write_creates_nothing(self, backend: Backend, tmp_path: Path) -> None:
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        for key in INVALID_KEYS:
            with pytest.raises(ValueError):
                backend.write(key, b"escaped")
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
        assert list(backend.list("")) == []

    def test_no_temporary_keys_left_after_writes(self, backend: Backend) -> None:
        written = {f"objects/{i:02x}/{i:062x}" for i in range(20)}
        for key in sorted(written):
            backend.write(key, key.encode(), durable=key.endswith("1"))
        backend.write("refs/checkpoints/a", b"1", exclusive=True)
        backend.write("refs/checkpoints/a", b"2", exclusive=True)
        backend.write("refs/checkpoints/a", b"3")
        written.add("refs/checkpoints/a")
        assert list(backend.list("tmp/")) == []
        assert set(backend.list("")) == written

    def test_sync_keeps_every_written_value(self, backend: Backend) -> None:
        backend.sync()
        for i in range(5):
            backend.write(f"objects/0{i}/value", bytes([i]) * 100)
        backend.sync()
        backend.sync()
        for i in range(5):
            assert backend.read(f"objects/0{i}/value") == bytes([i]) * 100


class TestLocalBackend:
    """What only the local directory backend promises: plain files under its root."""

    def test_keys_are_files_under_the_root(self, tmp_path: Path) -> None:
        backend = LocalBackend(tmp_path / "store")
        backend.write("objects/ab/cdef", b"payload")
        assert (tmp_path / "store" / "objects" / "ab" / "cdef").read_bytes() == b"payload"

    def test_tmp_directory_is_empty_after_writes(self, tmp_path: Path) -> None:
        backend = LocalBackend(tmp_path / "store")
        for i in range(10):
            backend.write(f"objects/aa/{i}", b"x" * i, durable=bool(i % 2))
        backend.write("refs/checkpoints/one", b"1", exclusive=True)
        assert backend.write("refs/checkpoints/one", b"2", exclusive=True) is False
        assert os.listdir(tmp_path / "store" / "tmp") == []

    def test_a_token_changes_when_a_file_is_rewritten_in_place_with_its_old_mtime(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("rrstore.backends.local.RACY_NS", 0)
        backend = LocalBackend(tmp_path)
        backend.write("refs/checkpoints/a", b"one")
        path = tmp_path / "refs/checkpoints/a"
        old = path.stat()
        [(_, before)] = backend.list_tokens("refs/checkpoints/")
        path.write_bytes(b"two")  # by hand: same inode, same size
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))  # and the old mtime put back
        [(_, after)] = backend.list_tokens("refs/checkpoints/")
        assert after != before  # the ctime changed

    def test_a_key_changed_just_now_has_no_token(self, tmp_path: Path) -> None:
        backend = LocalBackend(tmp_path)
        backend.write("refs/checkpoints/a", b"one")
        assert list(backend.list_tokens("refs/checkpoints/")) == [("refs/checkpoints/a", "")]

    def test_sync_on_a_store_not_yet_created_is_harmless(self, tmp_path: Path) -> None:
        backend = LocalBackend(tmp_path / "not-yet")
        backend.sync()
        assert not (tmp_path / "not-yet").exists()

    def test_invalid_key_never_touches_a_file_outside_the_root(self, tmp_path: Path) -> None:
        victim = tmp_path / "victim"
        victim.write_bytes(b"keep me")
        backend = LocalBackend(tmp_path / "store")
        with pytest.raises(ValueError):
            backend.write("../victim", b"overwritten")
        with pytest.raises(ValueError):
            backend.delete("../victim")
        assert victim.read_bytes() == b"keep me"


@pytest.fixture
def s3(seaweedfs, s3_env) -> S3Backend:  # type: ignore[no-untyped-def]
    bucket, prefix = seaweedfs.new_prefix()
    return S3Backend(bucket, prefix, endpoint_url=seaweedfs.endpoint)


class TestS3Backend:
    """What only the S3 backend promises, on the real SeaweedFS server of the test session."""

    def test_the_server_is_probed_once_for_conditional_writes_and_the_probe_is_never_listed(
            self, s3: S3Backend) -> None:
        assert s3.conditional_writes is None
        assert s3.write("refs/checkpoints/a", b"1", exclusive=True) is True
        assert s3.conditional_writes is True  # SeaweedFS answers 412 to If-None-Match: * on an existing key
        assert list(s3.list("")) == ["refs/checkpoints/a"]
        assert s3.exists(PROBE_KEY) is True

    def test_without_conditional_writes_exclusive_still_refuses_an_existing_key(self, s3: S3Backend) -> None:
        racy = S3Backend(s3.bucket, s3.prefix, endpoint_url=s3.endpoint_url, conditional_writes=False)
        assert racy.write("refs/checkpoints/a", b"first", exclusive=True) is True
        assert racy.write("refs/checkpoints/a", b"second", exclusive=True) is False
        assert racy.read("refs/checkpoints/a") == b"first"
        assert not racy.exists(PROBE_KEY)

    def test_prefixes_do_not_see_each_other(self, s3: S3Backend) -> None:
        sibling = S3Backend(s3.bucket, s3.prefix + "2", endpoint_url=s3.endpoint_url)
        s3.write("objects/ab/cd", b"mine")
        sibling.write("objects/ab/cd", b"theirs")
        assert list(s3.list("")) == ["objects/ab/cd"] and s3.read("objects/ab/cd") == b"mine"
        assert list(sibling.list("objects/")) == ["objects/ab/cd"]
        assert s3.location == f"s3://{s3.bucket}/{s3.prefix}"

    def test_an_object_store_works_over_s3(self, s3: S3Backend) -> None:
        from rrstore.store.objects import ObjectStore, hash_bytes

        objects = ObjectStore(s3)
        small = [f"small object {i}".encode() * 50 for i in range(100)]
        for data in small:
            objects.put(data)
        objects.flush()  # one pack and its index on the server
        record = objects.put(b'{"a record": true}', loose=True)
        assert sorted(k.split(".")[-1] for k in s3.list("packs/")) == ["idx", "pack"]
        fresh = ObjectStore(s3)
        for data in small:
            assert fresh.get(hash_bytes(data)) == data
            assert fresh.has(hash_bytes(data))
        assert fresh.get(record.oid) == b'{"a record": true}'
        assert not fresh.has("0" * 64)
        assert set(fresh) == {hash_bytes(d) for d in small} | {record.oid}

    def test_errors_name_what_failed(self, seaweedfs, s3_env, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
        from conftest import _free_ports

        from rrstore.errors import PermissionDenied, RRStoreError

        with pytest.raises(RRStoreError, match="bucket 'no-such-bucket' does not exist"):
            list(S3Backend("no-such-bucket", "p", endpoint_url=seaweedfs.endpoint).list("refs/"))
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not the secret")
        with pytest.raises(PermissionDenied):
            S3Backend("any", "p", endpoint_url=seaweedfs.endpoint).read("config.json")
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        dead = f"http://127.0.0.1:{_free_ports(1)[0]}"
        with pytest.raises(RRStoreError, match=f"cannot reach the S3 endpoint {dead}"):
            S3Backend("any", "p", endpoint_url=dead).exists("config.json")
