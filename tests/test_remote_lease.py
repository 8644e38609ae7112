"""Leases on a remote (``rrstore/remote_lease.py``) against a real SeaweedFS server: who waits for whom,
stale leases, and a lapse noticed by its holder."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import SeaweedFS

from rrstore.backends.s3 import S3Backend, parse_remote
from rrstore.remote_lease import LOCKS, Lease, RemoteLocked, list_locks


@pytest.fixture
def remote(s3_remote: str, seaweedfs: SeaweedFS) -> S3Backend:
    bucket, prefix = parse_remote(s3_remote)
    return S3Backend(bucket, prefix, endpoint_url=seaweedfs.endpoint)


def test_a_second_gc_fails_at_once_and_a_push_waits_for_the_gc(remote: S3Backend) -> None:
    with Lease(remote, "gc", ttl=30) as gc:
        assert [i.key for i in list_locks(remote)] == [gc.key] and gc.key.startswith(f"{LOCKS}gc-30-")
        with pytest.raises(RemoteLocked, match="another gc"):
            Lease(remote, "gc", wait=5).acquire()
        with pytest.raises(RemoteLocked, match="busy"):
            Lease(remote, "push", wait=1).acquire()  # gave up waiting
        assert [i.key for i in list_locks(remote)] == [gc.key]  # those that gave up left nothing behind
        pushed: list[float] = []

        def push() -> None:
            with Lease(remote, "push"):
                pushed.append(time.monotonic())

        waiting = threading.Thread(target=push)
        waiting.start()
        time.sleep(1.5)
        assert not pushed  # still waiting for the gc
        released = time.monotonic()
    waiting.join(30)
    assert pushed and pushed[0] >= released
    assert not list_locks(remote)


def test_gc_waits_for_the_pushes_in_flight_while_new_ones_wait_for_it(remote: S3Backend) -> None:
    push = Lease(remote, "push", ttl=30)
    push.acquire()
    with pytest.raises(RemoteLocked, match="push-30-"):
        Lease(remote, "gc", wait=1).acquire()
    assert {i.kind for i in list_locks(remote)} == {"push"}  # the gc that gave up left nothing

    def release_once_gc_waits() -> None:
        while not any(i.kind == "gc" for i in list_locks(remote)):
            time.sleep(0.02)
        time.sleep(0.6)
        push.release()

    threading.Thread(target=release_once_gc_waits).start()
    with Lease(remote, "gc", ttl=30) as gc:
        assert gc.waited >= 0.5 and gc.intact()
        assert {i.kind for i in list_locks(remote)} == {"gc"}


def test_a_stale_lease_blocks_no_one_and_a_paused_holder_knows_its_lease_lapsed(remote: S3Backend) -> None:
    dead = Lease(remote, "gc", ttl=2)
    dead.renew()  # written, never renewed again: a killed gc
    time.sleep(3.2)
    with Lease(remote, "push", ttl=2) as push:  # the dead gc's lease is stale by the server's clock
        assert push.intact() and push.confirm()
        push._stop.set()  # the holder stops renewing, as a paused process does
        if push._thread is not None:
            push._thread.join()
        time.sleep(1.2)
        assert not push.intact() and not push.confirm()
        push.reacquire()
        assert push.intact()
