"""Leases on a shared remote (verbs layer, beside ``transfer``): who pushes, checks or collects garbage.

A remote has no lock server, so a lease is an object ``locks/<kind>-<ttl>-<random>`` whose S3
``LastModified`` (the server's clock, never a runner's) says when its holder last renewed it.
A holder renews it every ``ttl / 6`` on a thread; anyone judges it stale once the server's time is
more than its ``ttl`` (in its name, so one listing tells all; capped at ``MAX_TTL``) past that
``LastModified``.

Kinds: ``push`` and ``check`` are shared (any number at once), ``gc`` is exclusive. Each side first
writes its own lease, then lists ``locks/`` (S3 listings are strongly consistent after a PUT), so of
a pusher and a gc racing to start at least one sees the other: a pusher that sees a fresh gc lease
withdraws and waits; a gc keeps its lease (new pushers then wait) and waits for the shared leases it
saw to go; a gc that sees another fresh gc lease withdraws and fails (two never run together).

A holder also knows whether its lease stayed fresh in everyone's eyes: between two renewals (from
the start of one PUT to the end of the next) no more than ``ttl / 2`` may pass on its monotonic
clock, which a pause (SIGSTOP, a suspended laptop) makes jump. ``intact`` says so before an action
others rely on; ``confirm`` says whether it held throughout, up to now. docs/remote-gc.md holds the
protocol and the failure cases it covers.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

from .backends import Backend
from .errors import RRStoreError, StoreLocked

LOCKS = "locks/"
SHARED = ("push", "check")
DEFAULT_TTL = 120.0   # seconds a lease stays fresh without a renewal
MIN_TTL = 2.0
MAX_TTL = 3600.0      # a lease claiming more is held to this (a crafted or broken lock blocks no one for long)
WAIT = 900.0          # how long a pusher waits for a gc, or a gc for the pushes in flight
_NAME = re.compile(r"(push|check|gc|clock)-(\d{1,6})-[0-9a-f]{16}").fullmatch
POLL = 0.5            # seconds between looks while waiting (plus up to as much again at random)


class RemoteLocked(StoreLocked):
    """The remote is busy: a gc runs (for a push or check), or pushes or another gc do (for a gc)."""

    def __init__(self, location: str, holders: list[str], waited: float) -> None:
        RRStoreError.__init__(self, f"{location} is busy ({', '.join(holders)}) after waiting {waited:.0f}s; "
                                    "run again later (a lease of a killed process goes stale on its own)")
        self.path = location
        self.holder = ", ".join(holders)


@dataclass
class LockInfo:
    """One lease seen in a listing: its key, kind, declared lifetime and server time of its last renewal."""

    key: str
    kind: str
    ttl: float
    modified: float

    def fresh(self, now: float) -> bool:
        return now - self.modified <= self.ttl


def lease_ttl() -> float:
    """The lifetime this process gives its leases: ``RRSTORE_LEASE_TTL`` seconds, else ``DEFAULT_TTL``. Each
    lease carries its own in its body, so runners with different settings still judge each other right."""
    try:
        return float(os.environ.get("RRSTORE_LEASE_TTL") or DEFAULT_TTL)
    except ValueError:
        return DEFAULT_TTL


def list_locks(remote: Backend) -> list[LockInfo]:
    """Every lease on the remote, from one listing: a key is ``locks/<kind>-<ttl seconds>-<16 hex>``."""
    out = []
    for key, modified in _stats(remote, LOCKS):
        match = _NAME(key[len(LOCKS):])
        if match is not None:  # anything else there is not a lease (a local store keeps its flock files there)
            out.append(LockInfo(key, match.group(1), _clamp(float(match.group(2))), modified))
    return out


def _clamp(ttl: float) -> float:
    """S3 keeps whole seconds: below 2 s the ttl/2 margin would not cover that rounding."""
    return min(MAX_TTL, max(MIN_TTL, ttl))


def _stats(remote: Backend, prefix: str) -> Iterator[tuple[str, float]]:
    """(key, server modification time) of each key under ``prefix``: from the listing where the backend
    gives it (S3), else a stat per key. A key gone meanwhile is left out."""
    listing = getattr(remote, "list_stats", None)
    if listing is not None:
        for key, _size, modified in listing(prefix):
            yield key, modified
        return
    for key in list(remote.list(prefix)):
        with contextlib.suppress(KeyError):
            yield key, remote.stat(key)[1]


def server_time(remote: Backend) -> float:
    """The remote's clock now: the LastModified of a key written for the purpose (then removed)."""
    key = f"{LOCKS}clock-{int(DEFAULT_TTL)}-{secrets.token_hex(8)}"
    remote.write(key, b"rrstore: reading the server's clock; safe to delete\n")
    try:
        return remote.stat(key)[1]
    finally:
        with contextlib.suppress(KeyError, RRStoreError):
            remote.delete(key)


class Lease:
    """A lease of ``kind`` on ``remote``, held in a ``with`` block (renewed on a thread, removed at the end)."""

    def __init__(self, remote: Backend, kind: str, *, ttl: float | None = None, wait: float = WAIT) -> None:
        self.remote = remote
        self.kind = kind
        self.ttl = float(int(_clamp(ttl or lease_ttl())))
        self.wait = wait
        self.key = f"{LOCKS}{kind}-{int(self.ttl)}-{secrets.token_hex(8)}"
        self.body = json.dumps({"kind": kind, "ttl": self.ttl, "host": socket.gethostname(), "pid": os.getpid(),
                                "note": "an rrstore lease; stale once ttl seconds pass without a renewal"}).encode()
        self.now = 0.0            # server time of the last renewal
        self.valid_until = 0.0    # monotonic: renew before this or the lease may have lapsed
        self.lapsed = False
        self.waited = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # holding ---------------------------------------------------------------------------------------

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lease (waiting as the module docstring says); RemoteLocked after ``wait`` seconds."""
        start = time.monotonic()
        while True:
            self.lapsed = False
            self.renew()
            blocking = self._blocking()
            if not blocking:
                break
            if self.kind != "gc" or any(b.kind == "gc" for b in blocking):
                self._drop()
            if self.kind == "gc" and any(b.kind == "gc" for b in blocking):
                raise RemoteLocked(self.remote.location, [f"another gc: {b.key}" for b in blocking], 0)
            self.waited = time.monotonic() - start
            if self.waited > self.wait:
                self._drop()
                raise RemoteLocked(self.remote.location, [b.key for b in blocking], self.waited)
            time.sleep(POLL + random.random() * POLL)
        self.waited = time.monotonic() - start
        self.lapsed = False
        self._stop.clear()
        self._thread = threading.Thread(target=self._renewing, name=f"rrstore-lease-{self.kind}", daemon=True)
        self._thread.start()

    def _blocking(self) -> list[LockInfo]:
        """The fresh leases that keep this one from going on; stale ones are removed (best effort)."""
        out = []
        for info in list_locks(self.remote):
            if info.key == self.key:
                continue
            if not info.fresh(self.now):
                if self.now - info.modified > 2 * info.ttl:  # long dead (or a killed run's clock key): tidy up
                    with contextlib.suppress(KeyError, RRStoreError):
                        self.remote.delete(info.key)
                continue
            if info.kind not in (*SHARED, "gc"):
                continue
            if info.kind == "gc" or self.kind == "gc":
                out.append(info)
        return out

    def renew(self, *, clock: bool = True) -> None:
        """Write the lease again, noting a lapse since the last renewal; with ``clock`` read back its
        LastModified as ``now`` (the server's time: a HEAD more)."""
        with self._lock:
            began = time.monotonic()
            self.remote.write(self.key, self.body)
            if clock:
                self.now = self.remote.stat(self.key)[1]
            if self.valid_until and time.monotonic() > self.valid_until:
                self.lapsed = True
            self.valid_until = began + self.ttl / 2

    def _renewing(self) -> None:
        while not self._stop.wait(self.ttl / 6):
            with contextlib.suppress(RRStoreError, KeyError, OSError):  # a failed renewal shows as a lapse
                self.renew(clock=False)

    def intact(self) -> bool:
        """Whether the lease has been fresh for everyone throughout, and is for a while yet."""
        return not self.lapsed and time.monotonic() < self.valid_until

    def confirm(self) -> bool:
        """Whether the lease never lapsed since it was taken and is fresh for everyone still: then
        everything done under it, up to now, happened while no conflicting lease could be taken."""
        return self.intact()

    def reacquire(self) -> None:
        """Take the lease again after a lapse (waiting for a gc that may have started meanwhile)."""
        self.release()
        self.valid_until = 0.0
        self.acquire()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._drop()

    def _drop(self) -> None:
        with contextlib.suppress(KeyError, RRStoreError):
            self.remote.delete(self.key)
        self.valid_until = 0.0


def settle(lease: Lease, missing: Callable[[], list[str]], send: Callable[[list[str]], None]) -> None:
    """After a push created its refs: if its lease lapsed at any moment (a pause), a remote gc may have
    removed what it deduplicated against. Take the lease again and ``send`` what is ``missing``, until
    a round held its lease throughout: a push that returns has its checkpoints whole on the remote."""
    for _attempt in range(3):
        if lease.confirm():
            return
        lease.reacquire()
        keys = missing()
        if keys:
            send(keys)
    raise RRStoreError(f"push to {lease.remote.location}: its lease kept lapsing (is this process being paused?); "
                       "its checkpoints may lack objects there: run push again")
